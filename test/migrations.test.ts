import { execFile } from 'node:child_process'
import { readdirSync } from 'node:fs'
import { promisify } from 'node:util'
import pg from 'pg'
import t from 'tap'
import { build, createDatabase, newSession, signIn } from './helper.js'

const execFileAsync = promisify(execFile)
const SHIPPED = readdirSync('migrations').filter((f) => f.endsWith('.sql')).length
const TABLES = ['audit_events', 'pgmigrations', 'sessions', 'sign_in_email_failures', 'sign_in_throttle', 'users']

/** `npm run <script> [-- args]` as a user runs it: node-pg-migrate reads DATABASE_URL. */
async function npmRun (script: string, databaseUrl: string, ...args: string[]): Promise<void> {
  await execFileAsync('npm', ['run', '--silent', script, ...(args.length > 0 ? ['--', ...args] : [])], {
    env: { ...process.env, DATABASE_URL: databaseUrl }
  })
}

// One connection, closed at once: an embedded test database serves one at a time.
async function rows (databaseUrl: string, text: string): Promise<Array<Record<string, unknown>>> {
  const client = new pg.Client({ connectionString: databaseUrl })
  await client.connect()
  try {
    return (await client.query(text)).rows
  } finally {
    await client.end()
  }
}

const applied = async (url: string) => (await rows(url, 'SELECT name FROM pgmigrations ORDER BY id')).map((r) => r.name)
const tables = async (url: string) => (await rows(url, `SELECT table_name FROM information_schema.tables
  WHERE table_schema = 'public' ORDER BY table_name`)).map((r) => r.table_name)
const hasExpiresIndex = async (url: string) => (await rows(url, "SELECT 1 FROM pg_indexes WHERE indexname = 'sessions_expires_at_idx'")).length === 1

t.test('npm run migrate:down undoes the last migration and keeps the data; npm run migrate applies it again', async (t) => {
  const url = await createDatabase(t)
  let email = ''
  await t.test('a user signs up and in on the migrated database', async (t) => {
    email = (await newSession(await build(t, url))).email
  })
  t.equal((await applied(url)).length, SHIPPED)
  t.notOk(await hasExpiresIndex(url), 'the last migration dropped the expires_at index')

  await npmRun('migrate:down', url)
  t.equal((await applied(url)).length, SHIPPED - 1, 'one migration undone')
  t.ok(await hasExpiresIndex(url), 'its Down recreated the index')
  await t.test('readiness reports the pending migration', async (t) => {
    const res = await (await build(t, url, { MIGRATE_ON_START: 'false' })).inject({ url: '/health/ready' })
    t.equal(res.statusCode, 503)
    t.equal(res.json().code, 'SERVICE_UNAVAILABLE')
  })

  await npmRun('migrate', url)
  t.equal((await applied(url)).length, SHIPPED)
  t.notOk(await hasExpiresIndex(url))
  await t.test('ready again, and the user signs in with the same password', async (t) => {
    const app = await build(t, url, { MIGRATE_ON_START: 'false' })
    t.equal((await app.inject({ url: '/health/ready' })).statusCode, 200)
    t.ok((await signIn(app, email)).access_token)
  })
})

t.test('every Down in turn leaves only the migrations table; migrating up from there gives the same tables', async (t) => {
  const url = await createDatabase(t)
  await t.test('migrated at start', async (t) => { await build(t, url) })
  t.same(await tables(url), TABLES)

  await npmRun('migrate:down', url, String(SHIPPED))
  t.same(await tables(url), ['pgmigrations'])
  t.same(await applied(url), [])

  await npmRun('migrate', url)
  t.same(await tables(url), TABLES)
  await t.test('the service works on it', async (t) => {
    const session = await newSession(await build(t, url, { MIGRATE_ON_START: 'false' }))
    t.ok(session.refresh_token)
  })
})
