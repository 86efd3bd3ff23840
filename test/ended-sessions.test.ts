import { spawn } from 'node:child_process'
import { createServer } from 'node:net'
import t, { type Test } from 'tap'
import type { FastifyInstance } from 'fastify'
import { Redis } from 'ioredis'
import { bearer, build, claimsOf, createDatabase, EMBEDDED, newSession, PASSWORD, pemKeyPair, refresh, signIn, signUp, sql } from './helper.js'
import { linkParts, startMailbox, to } from './mailbox.js'
import { codeFor, freshStep } from './totp.js'
import { LISTENER_QUERY } from '../src/ended-sessions.js'

// Whatever ends a session, its access tokens are refused (401 TOKEN_REVOKED) within 1 s, on the
// replica that ended it and on another one sharing the database, with no database query per
// request (src/ended-sessions.ts). "Replicas" here are two apps in this process on one database;
// test/reliability/ has them as processes, with PostgreSQL restarted under load.

const REDIS_URL = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379'
const LIMIT_MS = 1000
const sleep = async (ms: number) => await new Promise((resolve) => setTimeout(resolve, ms))
const mailbox = await startMailbox(t)
const ADMIN_KEY = 'admin-key-for-tests-0123456789abcdefghijklmnop'
const env = { SMTP_URL: mailbox.url, ADMIN_API_KEYS: ADMIN_KEY }
const url = await createDatabase(t)
const a = await build(t, url, env)
// An embedded database is one session for every connection: a second app on it would not hear
// the notifications of the first (they come back on the connection that committed).
const b = EMBEDDED ? undefined : await build(t, url, env)
const replicas = (): Array<[string, FastifyInstance]> => [['this replica', a], ...(b !== undefined ? [['another replica', b] as [string, FastifyInstance]] : [])]

const me = async (app: FastifyInstance, access: string) => await app.inject({ method: 'GET', url: '/auth/me', headers: bearer(access) })
const post = async (app: FastifyInstance, path: string, payload: object, headers: Record<string, string> = {}) =>
  await app.inject({ method: 'POST', url: path, payload, headers })

/**
 * Milliseconds until `access` is refused by `app` with 401 TOKEN_REVOKED (polled every 10 ms, for
 * at most 5 s). `me` answers from a cache (the profile) and a cached verification: no database.
 */
async function refusedAfter (app: FastifyInstance, access: string, since: number): Promise<number> {
  while (Date.now() - since < 5000) {
    const res = await me(app, access)
    if (res.statusCode === 401) {
      if (res.json().code !== 'TOKEN_REVOKED') throw new Error(`refused with ${res.body}`)
      return Date.now() - since
    }
    await sleep(10)
  }
  throw new Error('still accepted after 5 s')
}

/** The access tokens are accepted everywhere first (and so cached), then refused within 1 s once `end` has run. */
async function endsWithin (t: Test, victims: string[], end: () => Promise<unknown>): Promise<void> {
  for (const access of victims) for (const [, app] of replicas()) t.equal((await me(app, access)).statusCode, 200, 'accepted before')
  const start = Date.now()
  await end()
  for (const access of victims) {
    for (const [name, app] of replicas()) {
      const ms = await refusedAfter(app, access, start)
      t.ok(ms < LIMIT_MS, `refused by ${name} after ${ms} ms`)
      const sessions = await app.inject({ method: 'GET', url: '/auth/sessions', headers: bearer(access) })
      t.equal(sessions.json().code, 'TOKEN_REVOKED', `and by another endpoint of ${name}`)
    }
  }
}

const sid = (token: string) => claimsOf(token).sid as string

async function freePort (): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as { port: number }
  await new Promise((resolve) => server.close(resolve))
  return port
}

t.test('sign-out: that session\'s access token', async (t) => {
  const s = await newSession(a)
  await endsWithin(t, [s.access_token], async () => await post(a, '/auth/sign-out', {}, bearer(s.refresh_token)))
})

t.test('sign-out ?scope=all: every session\'s; another user\'s token still works', async (t) => {
  const user = await signUp(a)
  const [one, two] = [await signIn(a, user.email), await signIn(a, user.email)]
  const other = await newSession(a)
  await endsWithin(t, [one.access_token, two.access_token], async () => await post(a, '/auth/sign-out?scope=all', {}, bearer(one.refresh_token)))
  for (const [name, app] of replicas()) t.equal((await me(app, other.access_token)).statusCode, 200, `bystander on ${name}`)
})

t.test('a session revoked from another one', async (t) => {
  const user = await signUp(a)
  const [laptop, phone] = [await signIn(a, user.email), await signIn(a, user.email)]
  await endsWithin(t, [phone.access_token], async () =>
    await a.inject({ method: 'DELETE', url: `/auth/sessions/${sid(phone.access_token)}`, headers: bearer(laptop.access_token) }))
  t.equal((await me(a, laptop.access_token)).statusCode, 200, 'the session that revoked it goes on')
})

t.test('a password change: the other sessions; the one that changed it goes on', async (t) => {
  const user = await signUp(a)
  const [keeper, other] = [await signIn(a, user.email), await signIn(a, user.email)]
  await endsWithin(t, [other.access_token], async () =>
    await post(a, '/auth/password', { current_password: PASSWORD, new_password: 'a brand new passphrase' }, bearer(keeper.access_token)))
  for (const [name, app] of replicas()) t.equal((await me(app, keeper.access_token)).statusCode, 200, `kept on ${name}`)
})

t.test('a password reset: every session', async (t) => {
  const s = await newSession(a)
  const before = mailbox.messages.length
  t.equal((await post(a, '/auth/password/forgot', { email: s.email })).statusCode, 202)
  const mail = await mailbox.waitFor((m) => mailbox.messages.indexOf(m) >= before && to(s.email, 'reset-password')(m))
  await endsWithin(t, [s.access_token], async () =>
    await post(a, '/auth/password/reset', { token: linkParts(mail.link).token, new_password: 'a brand new passphrase' }))
})

t.test('deleting the account: every session', async (t) => {
  const user = await signUp(a)
  const [one, two] = [await signIn(a, user.email), await signIn(a, user.email)]
  await endsWithin(t, [one.access_token, two.access_token], async () =>
    await a.inject({ method: 'DELETE', url: '/auth/me', payload: { password: PASSWORD }, headers: bearer(one.access_token) }))
})

t.test('refresh-token reuse: the session', async (t) => {
  const s = await newSession(a)
  t.equal((await refresh(a, s.refresh_token)).statusCode, 200)
  await endsWithin(t, [s.access_token], async () => t.equal((await refresh(a, s.refresh_token)).json().code, 'TOKEN_REVOKED'))
})

t.test('turning TOTP on: the other sessions', async (t) => {
  const user = await signUp(a)
  const [keeper, other] = [await signIn(a, user.email), await signIn(a, user.email)]
  const { secret } = (await post(a, '/auth/mfa/totp', { password: PASSWORD }, bearer(keeper.access_token))).json()
  const step = await freshStep()
  await endsWithin(t, [other.access_token], async () =>
    t.equal((await post(a, '/auth/mfa/totp/confirm', { code: codeFor(secret, step) }, bearer(keeper.access_token))).statusCode, 200))
  t.equal((await me(a, keeper.access_token)).statusCode, 200, 'the session that turned it on goes on')
})

t.test('by an operator: a ban, a new password, all sessions ended, the user deleted', async (t) => {
  const admin = async (method: 'PATCH' | 'DELETE', path: string, payload?: object) =>
    await a.inject({ method, url: path, headers: bearer(ADMIN_KEY), ...(payload !== undefined ? { payload } : {}) })
  for (const [how, end] of [
    ['ban', async (id: string) => await admin('PATCH', `/admin/users/${id}`, { banned_until: new Date(Date.now() + 60_000).toISOString() })],
    ['password', async (id: string) => await admin('PATCH', `/admin/users/${id}`, { password: 'set by an operator' })],
    ['sessions', async (id: string) => await admin('DELETE', `/admin/users/${id}/sessions`)],
    ['deletion', async (id: string) => await admin('DELETE', `/admin/users/${id}`)]
  ] as const) {
    await t.test(how, async (t) => {
      const user = await signUp(a)
      const [one, two] = [await signIn(a, user.email), await signIn(a, user.email)]
      await endsWithin(t, [one.access_token, two.access_token], async () => t.ok((await end(user.id)).statusCode < 300))
    })
  }
})

t.test('SQL run by hand, on the database: PostgreSQL announces it too', async (t) => {
  const s = await newSession(a)
  await endsWithin(t, [s.access_token], async () =>
    await a.pg.query("UPDATE sessions SET revoked_at = now(), revoked_reason = 'by hand' WHERE id = $1", [sid(s.access_token)]))
  const [noted] = (await a.pg.query('SELECT reason FROM ended_sessions WHERE session_id = $1', [sid(s.access_token)])).rows
  t.equal(noted.reason, 'by hand', 'noted with its reason')
})

t.test('refresh, rotation and a new session add nothing: their access tokens work', async (t) => {
  const s = await newSession(a)
  const next = (await refresh(a, s.refresh_token)).json()
  for (const [name, app] of replicas()) {
    t.equal((await me(app, s.access_token)).statusCode, 200, `the first access token on ${name}`)
    t.equal((await me(app, next.access_token)).statusCode, 200, `the refreshed one on ${name}`)
  }
  t.equal((await a.pg.query('SELECT count(*)::int AS n FROM ended_sessions WHERE session_id = $1', [sid(s.access_token)])).rows[0].n, 0)
})

t.test('a replica started after the end learns it from the table', async (t) => {
  const s = await newSession(a)
  t.equal((await post(a, '/auth/sign-out', {}, bearer(s.refresh_token))).statusCode, 204)
  await a.close()
  const late = await build(t, url, env)
  t.equal((await me(late, s.access_token)).json().code, 'TOKEN_REVOKED', 'refused at once after the start')
  t.equal((await me(late, (await newSession(late)).access_token)).statusCode, 200, 'a live session is not')
})

t.test('with keys (the plugin\'s per-request path and its trusted hook): refused too', async (t) => {
  const db = await createDatabase(t)
  const app = await build(t, db, { ...env, JWT_PRIVATE_KEY: pemKeyPair('Ed25519').privateKey })
  const s = await newSession(app)
  // Verified through request.jwtVerify (no cached verification: a fresh token each time).
  const second = (await refresh(app, s.refresh_token)).json()
  t.equal((await post(app, '/auth/sign-out', {}, bearer(second.refresh_token))).statusCode, 204)
  for (const access of [s.access_token, second.access_token]) t.equal((await me(app, access)).json().code, 'TOKEN_REVOKED')
})

t.test('across a lost LISTEN connection: the ended session is not missed', { skip: EMBEDDED && 'needs a PostgreSQL server' }, async (t) => {
  const db = await createDatabase(t)
  const [one, two] = [await build(t, db, env), await build(t, db, env)]
  const s = await newSession(one)
  t.equal((await me(two, s.access_token)).statusCode, 200)
  // Every LISTEN connection drops (as in a database restart); a session ends before they are back.
  const listeners = `FROM pg_stat_activity WHERE datname = current_database() AND ${LISTENER_QUERY}`
  const killed = await sql(db, `SELECT pg_terminate_backend(pid) AS ok ${listeners}`)
  t.equal(killed.length, 2, 'one LISTEN connection per replica')
  const start = Date.now()
  t.equal((await post(one, '/auth/sign-out', {}, bearer(s.refresh_token))).statusCode, 204)
  const ms = await refusedAfter(two, s.access_token, start)
  t.ok(ms < LIMIT_MS, `refused by the other replica ${ms} ms later, after its reconnect (every 250 ms) and catch-up`)
  const relistened = await sql(db, `SELECT count(*)::int AS n ${listeners}`)
  t.equal(relistened[0].n, 2, 'both listen again')
})

t.test('with Redis away at start: the replicas subscribe once it is there', async (t) => {
  const port = await freePort()
  const redisUrl = `redis://127.0.0.1:${port}`
  const db = await createDatabase(t)
  const [one, two] = [await build(t, db, { ...env, REDIS_URL: redisUrl }), await build(t, db, { ...env, REDIS_URL: redisUrl })]
  const redis = spawn('redis-server', ['--bind', '127.0.0.1', '--port', String(port), '--save', '', '--appendonly', 'no'], { stdio: 'ignore' })
  t.teardown(() => { redis.kill('SIGKILL') })
  const probe = new Redis(redisUrl, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => 100 })
  probe.on('error', () => {})
  for (let i = 0; i < 100; i++) {
    try { await probe.connect(); break } catch { await sleep(100) }
  }
  // Subscribed once each replica's own reconnect has found it: the channel counts both.
  let subscribers = 0
  for (let i = 0; i < 60 && subscribers < 2; i++) {
    subscribers = Number((await probe.call('PUBSUB', 'NUMSUB', 'auth_session_ended') as [string, number])[1])
    if (subscribers < 2) await sleep(100)
  }
  probe.disconnect()
  t.equal(subscribers, 2, 'both replicas subscribed')
  const s = await newSession(one)
  t.equal((await me(two, s.access_token)).statusCode, 200)
  const start = Date.now()
  t.equal((await post(one, '/auth/sign-out', {}, bearer(s.refresh_token))).statusCode, 204)
  const ms = await refusedAfter(two, s.access_token, start)
  t.ok(ms < LIMIT_MS, `refused by the other replica after ${ms} ms`)
})

t.test('with Redis (REDIS_URL): published by the replica that ends sessions, heard by the others', async (t) => {
  const redis = new Redis(REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 1, connectTimeout: 2000 })
  await redis.connect()
  redis.disconnect()
  const db = await createDatabase(t)
  const [one, two] = [await build(t, db, { ...env, REDIS_URL }), await build(t, db, { ...env, REDIS_URL })]
  for (const [how, end] of [
    ['sign-out', async (app: FastifyInstance, s: { refresh_token: string }) => await post(app, '/auth/sign-out', {}, bearer(s.refresh_token))],
    ['account deletion', async (app: FastifyInstance, s: { access_token: string }) =>
      await app.inject({ method: 'DELETE', url: '/auth/me', payload: { password: PASSWORD }, headers: bearer(s.access_token) })]
  ] as const) {
    const s = await newSession(one)
    t.equal((await me(two, s.access_token)).statusCode, 200)
    const start = Date.now()
    await end(one, s)
    const ms = await refusedAfter(two, s.access_token, start)
    t.ok(ms < LIMIT_MS, `${how}: refused by the other replica after ${ms} ms`)
  }
})
