import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import t from 'tap'
import { shippedMigrations } from '../src/db/migrate.js'
import { build, createDatabase, newSession, signIn, sql } from './helper.js'

const execFileAsync = promisify(execFile)
const SHIPPED = shippedMigrations()

/** `npm run <script> [-- args]` as a user runs it: node-pg-migrate reads DATABASE_URL. */
async function npmRun (script: string, databaseUrl: string, ...args: string[]): Promise<void> {
  await execFileAsync('npm', ['run', '--silent', script, ...(args.length > 0 ? ['--', ...args] : [])], {
    env: { ...process.env, DATABASE_URL: databaseUrl }
  })
}

const applied = async (url: string) => (await sql(url, 'SELECT name FROM pgmigrations ORDER BY id')).map((r) => r.name)

/** The schema the migrations made (node-pg-migrate's own table left out), one line per item. */
const schema = async (url: string) => (await sql(url, `
  SELECT 'column ' || table_name || '.' || column_name || ' ' || concat_ws(' ', data_type, is_nullable, column_default) AS item
    FROM information_schema.columns WHERE table_schema = 'public' AND table_name <> 'pgmigrations'
  UNION ALL SELECT 'index ' || indexdef FROM pg_indexes WHERE schemaname = 'public' AND tablename <> 'pgmigrations'
  UNION ALL SELECT 'constraint ' || conrelid::regclass || ' ' || pg_get_constraintdef(oid)
    FROM pg_constraint WHERE connamespace = 'public'::regnamespace AND conrelid::regclass::text <> 'pgmigrations'
  UNION ALL SELECT 'table ' || relname || ' ' || coalesce(array_to_string(reloptions, ','), '')
    FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind = 'r' AND relname <> 'pgmigrations'
  ORDER BY 1`)).map((r) => r.item)

t.test('npm run migrate:down undoes the last migration and keeps the data; npm run migrate applies it again', async (t) => {
  const url = await createDatabase(t)
  let email = ''
  await t.test('a user signs up and in on the migrated database', async (t) => {
    email = (await newSession(await build(t, url))).email
  })
  const migrated = await schema(url)
  t.same(await applied(url), SHIPPED)

  await npmRun('migrate:down', url)
  t.same(await applied(url), SHIPPED.slice(0, -1), 'the last one undone')
  t.notSame(await schema(url), migrated)
  await t.test('readiness reports the pending migration', async (t) => {
    const res = await (await build(t, url, { MIGRATE_ON_START: 'false' })).inject({ url: '/health/ready' })
    t.equal(res.statusCode, 503)
    t.equal(res.json().code, 'SERVICE_UNAVAILABLE')
  })

  await npmRun('migrate', url)
  t.same(await applied(url), SHIPPED)
  t.same(await schema(url), migrated)
  await t.test('ready again, and the user signs in with the same password', async (t) => {
    const app = await build(t, url, { MIGRATE_ON_START: 'false' })
    t.equal((await app.inject({ url: '/health/ready' })).statusCode, 200)
    t.ok((await signIn(app, email)).access_token)
  })
})

t.test("each migration's Down gives back the schema its Up started from", async (t) => {
  // The schema after each Up, applied one at a time to an empty database.
  const reference = await createDatabase(t)
  const after = [await schema(reference)]
  for (let i = 0; i < SHIPPED.length; i++) {
    await npmRun('migrate', reference, '1')
    after.push(await schema(reference))
    t.notSame(after[i + 1], after[i], `${SHIPPED[i]} changes the schema`)
  }

  // Migrated at start by the service, then undone one at a time.
  const url = await createDatabase(t)
  await t.test('migrated at start', async (t) => { await build(t, url) })
  t.same(await schema(url), after[SHIPPED.length])
  for (let i = SHIPPED.length - 1; i >= 0; i--) {
    await npmRun('migrate:down', url)
    t.same(await schema(url), after[i], `${SHIPPED[i]} undone`)
  }
  t.same(await applied(url), [])

  await npmRun('migrate', url)
  t.same(await schema(url), after[SHIPPED.length])
  await t.test('the service works on it', async (t) => {
    t.ok((await newSession(await build(t, url, { MIGRATE_ON_START: 'false' }))).refresh_token)
  })
})
