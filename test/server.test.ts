import { once } from 'node:events'
import t from 'tap'
import { createDatabase, EMBEDDED, PASSWORD, spawnServer, uniqueEmail } from './helper.js'

t.test('a bad setting stops the start with one line naming the variable', async (t) => {
  const { child, output } = spawnServer(t, 'postgres://postgres@127.0.0.1:5432/postgres', { PORT: 'abc' })
  const [code] = await once(child, 'exit')
  t.equal(code, 1)
  t.match(output().err.trim(), /^configuration error: PORT: must be integer/)
  t.equal(output().err.trim().split('\n').length, 1, 'one line')
})

t.test('SIGTERM: requests in flight finish, then the process exits 0 within 10 s', async (t) => {
  const databaseUrl = await createDatabase(t)
  // Slow hashing (about half a second) so that a sign-up is surely in flight at the signal.
  const server = spawnServer(t, databaseUrl, { ARGON2_ITERATIONS: '20', ARGON2_MEMORY_KIB: '19456' })
  const base = await server.listening
  t.equal((await fetch(`${base}/health`)).status, 200)

  const inFlight = fetch(`${base}/auth/sign-up`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ name: 'In Flight', email: uniqueEmail('sigterm'), password: PASSWORD })
  })
  await new Promise((resolve) => setTimeout(resolve, 100))
  const signalAt = Date.now()
  server.child.kill('SIGTERM')
  const res = await inFlight
  t.equal(res.status, 201, 'the in-flight sign-up completed with its normal answer')
  const [code] = await once(server.child, 'exit')
  t.equal(code, 0)
  t.ok(Date.now() - signalAt < 10_000, 'within 10 s')
  t.match(server.output().out, /shutting down/)
})

t.test('replicas starting together apply migrations once, under a lock', { skip: EMBEDDED && 'needs a shared PostgreSQL server (TEST_DATABASE_URL)' }, async (t) => {
  const databaseUrl = await createDatabase(t)
  const servers = [1, 2, 3].map(() => spawnServer(t, databaseUrl))
  const bases = await Promise.all(servers.map(async (s) => await s.listening))
  for (const base of bases) t.equal((await fetch(`${base}/health/ready`)).status, 200)
  for (const s of servers) s.child.kill('SIGTERM')
  await Promise.all(servers.map(async (s) => await once(s.child, 'exit')))
})
