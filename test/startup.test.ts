import { setTimeout as sleep } from 'node:timers/promises'
import pg from 'pg'
import { PG_MIGRATE_LOCK_ID } from 'node-pg-migrate'
import t from 'tap'
import { createDatabase, EMBEDDED, sql, spawnServer } from './helper.js'

// Four slow starts in one file: more than tap's default 120 s per file on a busy machine.
t.setTimeout(400_000)

// Fastify gives each plugin 10 s to load. Neither a first start of the embedded database on a
// busy CPU nor a wait for the migration lock may be cut off by that.

t.test('four first starts of the embedded database at once on one CPU all come up', async (t) => {
  const dir = t.testdir({ 1: {}, 2: {}, 3: {}, 4: {} }) // a fresh, empty DATA_DIR each
  const started = Date.now()
  const servers = [1, 2, 3, 4].map((i) =>
    spawnServer(t, undefined, { DATA_DIR: `${dir}/${i}`, LOG_LEVEL: 'info' }, { cpus: '0', startTimeoutMs: 240_000 }))
  const bases = await Promise.all(servers.map(async (s) => await s.listening))
  const seconds = (Date.now() - started) / 1000
  t.comment(`all four answering after ${seconds.toFixed(1)} s`)
  for (const [i, base] of bases.entries()) {
    t.equal((await fetch(`${base}/health/ready`)).status, 200, `server ${i + 1} is ready`)
    t.match(servers[i].output().out, /starting the embedded database for the first time/, 'the log says what it waits for')
  }
})

t.test('a replica waits for the migration lock as long as another holds it, then becomes ready', { skip: EMBEDDED && 'needs a PostgreSQL server (TEST_DATABASE_URL)' }, async (t) => {
  const databaseUrl = await createDatabase(t)
  // This test plays the replica that is migrating: it holds node-pg-migrate's lock for 15 s.
  const holder = new pg.Client({ connectionString: databaseUrl })
  await holder.connect()
  t.teardown(async () => await holder.end())
  await holder.query('SELECT pg_advisory_lock($1)', [PG_MIGRATE_LOCK_ID])
  const lockedAt = Date.now()

  const server = spawnServer(t, databaseUrl, {}, { startTimeoutMs: 60_000 })
  let listening = false
  server.listening.then(() => { listening = true }, () => {})
  while (!server.output().out.includes('waiting for the migration lock')) {
    if (Date.now() - lockedAt > 30_000) break
    await sleep(100)
  }
  t.match(server.output().out, /waiting for the migration lock/, 'the log says what it waits for')
  // At least 15 s in all, and 12 s of them after the replica began to wait: past the 10 s plugin timeout.
  await sleep(Math.max(12_000, 15_000 - (Date.now() - lockedAt)))
  t.notOk(listening, 'still waiting, past the plugin timeout')
  t.equal((await sql(databaseUrl, "SELECT count(*)::int AS n FROM pg_tables WHERE tablename = 'pgmigrations'"))[0].n, 0, 'nothing migrated meanwhile')

  await holder.query('SELECT pg_advisory_unlock($1)', [PG_MIGRATE_LOCK_ID])
  const base = await server.listening
  t.equal((await fetch(`${base}/health/ready`)).status, 200, 'ready once the lock is released')
  t.match(server.output().out, /got the migration lock after waiting/)
  t.ok(server.child.exitCode === null, 'running')
})
