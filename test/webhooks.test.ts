import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import t from 'tap'
import { Webhook } from 'standardwebhooks'
import { buildApp } from '../src/app.js'
import { bearer, build, claimsOf, createDatabase, newSession, PASSWORD, refresh, signIn, signUp, testEnv } from './helper.js'
import { codeFor, freshStep } from './totp.js'

// Signed webhooks against local receivers: every event type of the contract, the Standard
// Webhooks signature (checked here by hand and by the standardwebhooks package), retries with one
// webhook-id, and an endpoint that fails or hangs holding back neither another nor a request.

const SECRET = 'whsec_' + randomBytes(32).toString('base64')
const ADMIN_KEY = 'admin-key-for-tests-0123456789abcdefghijklmnop'
const sleep = async (ms: number) => await new Promise((resolve) => setTimeout(resolve, ms))

interface Delivery { id: string, timestamp: string, signature: string, body: string, event: { type: string, timestamp: string, data: Record<string, string> }, at: number }

/**
 * A receiver on loopback. `answer` decides each request's fate: a status, or 'hang' (no answer
 * until the test ends). Every request is kept, answered or not.
 */
async function receiver (answer: (d: Delivery, n: number) => number | 'hang' = () => 204) {
  const got: Delivery[] = []
  const hanging: ServerResponse[] = []
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8')
      const d = {
        id: String(req.headers['webhook-id']),
        timestamp: String(req.headers['webhook-timestamp']),
        signature: String(req.headers['webhook-signature']),
        body,
        event: JSON.parse(body),
        at: Date.now()
      }
      got.push(d)
      const status = answer(d, got.filter((g) => g.id === d.id).length)
      if (status === 'hang') hanging.push(res)
      else res.writeHead(status).end()
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(async () => {
    for (const res of hanging) res.destroy()
    server.closeAllConnections()
    await new Promise((resolve) => server.close(resolve))
  })
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hooks`
  const waitFor = async (match: (d: Delivery) => boolean, ms = 10_000): Promise<Delivery> => {
    const until = Date.now() + ms
    while (Date.now() < until) {
      const found = got.find(match)
      if (found !== undefined) return found
      await sleep(25)
    }
    throw new Error(`no matching delivery within ${ms} ms (${got.length} received)`)
  }
  return { url, got, waitFor }
}

/** The signature as the Standard Webhooks spec defines it, computed here: HMAC-SHA256 of "id.timestamp.body". */
function signatureValid (d: Delivery): boolean {
  const key = Buffer.from(SECRET.slice('whsec_'.length), 'base64')
  const expected = createHmac('sha256', key).update(`${d.id}.${d.timestamp}.${d.body}`).digest()
  return d.signature.split(' ').some((s) => {
    const [version, sig] = s.split(',')
    const given = Buffer.from(sig ?? '', 'base64')
    return version === 'v1' && given.length === expected.length && timingSafeEqual(given, expected)
  })
}

const ofType = (type: string, data: Record<string, string> = {}) => (d: Delivery) =>
  d.event.type === type && Object.entries(data).every(([k, v]) => d.event.data[k] === v)

const healthy = await receiver()
// Fails each event's first delivery (500), then takes it.
const flaky = await receiver((_d, n) => n === 1 ? 500 : 200)
const url = await createDatabase(t)
const app = await build(t, url, { WEBHOOK_URLS: `${healthy.url}, ${flaky.url}`, WEBHOOK_SECRET: SECRET, ADMIN_API_KEYS: ADMIN_KEY })

t.test('every event type, signed, with user_id and session_id; each endpoint gets each event', async (t) => {
  const user = await signUp(app)
  const created = await healthy.waitFor(ofType('user.created', { user_id: user.id }))
  t.match(created.event, { type: 'user.created', timestamp: /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/, data: { user_id: user.id } })
  t.match(created.id, /^msg_[0-9a-f]{32}$/)
  t.ok(Math.abs(Number(created.timestamp) - Date.now() / 1000) < 30, 'webhook-timestamp: seconds, now')
  t.ok(signatureValid(created), 'the signature, checked by hand')
  t.same(new Webhook(SECRET).verify(created.body, { 'webhook-id': created.id, 'webhook-timestamp': created.timestamp, 'webhook-signature': created.signature }), created.event, 'and by standardwebhooks')
  t.notOk(signatureValid({ ...created, body: created.body.replace(user.id, user.id.replace(/.$/, '0')) }), 'a changed body fails the check')

  const s = await signIn(app, user.email)
  const sid = claimsOf(s.access_token).sid as string
  await healthy.waitFor(ofType('session.created', { user_id: user.id, session_id: sid }))
  const other = await signIn(app, user.email)
  t.equal((await app.inject({ method: 'POST', url: '/auth/password', headers: bearer(s.access_token), payload: { current_password: PASSWORD, new_password: 'another passphrase here' } })).statusCode, 204)
  await healthy.waitFor(ofType('password.changed', { user_id: user.id }))
  await healthy.waitFor(ofType('session.ended', { session_id: claimsOf(other.access_token).sid as string, reason: 'password-change' }))

  t.equal((await refresh(app, s.refresh_token)).statusCode, 200)
  t.equal((await refresh(app, s.refresh_token)).json().code, 'TOKEN_REVOKED')
  await healthy.waitFor(ofType('refresh_token.reused', { user_id: user.id, session_id: sid }))
  await healthy.waitFor(ofType('session.ended', { session_id: sid, reason: 'refresh-reuse' }))

  const again = await signIn(app, user.email, 'another passphrase here')
  const { secret } = (await app.inject({ method: 'POST', url: '/auth/mfa/totp', headers: bearer(again.access_token), payload: { password: 'another passphrase here' } })).json()
  const step = await freshStep()
  t.equal((await app.inject({ method: 'POST', url: '/auth/mfa/totp/confirm', headers: bearer(again.access_token), payload: { code: codeFor(secret, step) } })).statusCode, 200)
  await healthy.waitFor(ofType('mfa.enabled', { user_id: user.id }))
  t.equal((await app.inject({ method: 'DELETE', url: `/admin/users/${user.id}/mfa`, headers: bearer(ADMIN_KEY) })).statusCode, 204)
  await healthy.waitFor(ofType('mfa.disabled', { user_id: user.id }))
  t.equal((await app.inject({ method: 'PATCH', url: `/admin/users/${user.id}`, headers: bearer(ADMIN_KEY), payload: { name: 'Renamed' } })).statusCode, 200)
  await healthy.waitFor(ofType('user.updated', { user_id: user.id }))
  t.equal((await app.inject({ method: 'POST', url: '/auth/sign-out', headers: bearer(again.refresh_token) })).statusCode, 204)
  await healthy.waitFor(ofType('session.ended', { session_id: claimsOf(again.access_token).sid as string, reason: 'sign-out' }))
  const last = await signIn(app, user.email, 'another passphrase here')
  t.equal((await app.inject({ method: 'DELETE', url: `/admin/users/${user.id}`, headers: bearer(ADMIN_KEY) })).statusCode, 204)
  await healthy.waitFor(ofType('user.deleted', { user_id: user.id }))
  await healthy.waitFor(ofType('session.ended', { session_id: claimsOf(last.access_token).sid as string, reason: 'deleted' }))

  const mine = (d: Delivery) => d.event.data.user_id === user.id
  const types = healthy.got.filter(mine).map((d) => d.event.type)
  t.same([...new Set(types)].sort(), ['mfa.disabled', 'mfa.enabled', 'password.changed', 'refresh_token.reused', 'session.created', 'session.ended', 'user.created', 'user.deleted', 'user.updated'])
  t.equal(new Set(healthy.got.filter(mine).map((d) => d.id)).size, healthy.got.filter(mine).length, 'a healthy endpoint gets each event once')
  t.ok(healthy.got.every(signatureValid), 'every delivery signed')
  // The other endpoint gets the same events (under ids of its own).
  await flaky.waitFor(ofType('user.deleted', { user_id: user.id }), 30_000)
  t.same([...new Set(flaky.got.filter(mine).map((d) => d.event.type))].sort(), [...new Set(types)].sort())
  t.equal(healthy.got.filter((d) => d.event.data.user_id === user.id && d.event.type === 'password.changed').length, 1, 'a rehash or a sign-in is no password change')
})

t.test('a failed delivery is retried within 10 s with the same webhook-id and a fresh signature', async (t) => {
  const user = await signUp(app)
  const first = await flaky.waitFor(ofType('user.created', { user_id: user.id }))
  const retry = await flaky.waitFor((d) => d.id === first.id && d !== first, 15_000)
  t.ok(retry.at - first.at < 10_000, `retried ${retry.at - first.at} ms after the 500`)
  t.ok(signatureValid(retry))
  t.equal(retry.body, first.body, 'the same event')
  await sleep(2500) // a poll: nothing more once it was taken
  t.equal(flaky.got.filter((d) => d.id === first.id).length, 2)
  const { rows } = await app.pg.query("SELECT count(*)::int AS n FROM outbox WHERE kind LIKE 'webhook:%' AND payload->>'id' = $1", [first.id])
  t.equal(rows[0].n, 0, 'delivered rows are gone')
  const metrics = (await app.inject({ url: '/metrics' })).body
  t.match(metrics, /^auth_webhooks_sent_total [1-9]\d*$/m)
  t.match(metrics, /^auth_webhooks_failed_total [1-9]\d*$/m, 'the flaky endpoint\'s first answers')
  t.match(metrics, /^auth_webhooks_waiting \d+$/m)
})

t.test('an endpoint that hangs holds back neither another endpoint nor a request', async (t) => {
  const stuck = await receiver(() => 'hang')
  const fine = await receiver()
  const db = await createDatabase(t)
  const a = await build(t, db, { WEBHOOK_URLS: `${stuck.url},${fine.url}`, WEBHOOK_SECRET: SECRET })
  const started = Date.now()
  const users = []
  for (let i = 0; i < 6; i++) users.push(await signUp(a))
  t.ok(Date.now() - started < 5000, `6 sign-ups in ${Date.now() - started} ms while an endpoint hangs`)
  for (const u of users) {
    const d = await fine.waitFor(ofType('user.created', { user_id: u.id }), 6000)
    t.ok(d.at - started < 6000, `the other endpoint got it ${d.at - started} ms after the first sign-up`)
  }
  t.ok(stuck.got.length >= 1, 'the hanging endpoint was tried')
})

t.test('without WEBHOOK_URLS nothing is queued; settings are checked at start', async (t) => {
  const db = await createDatabase(t)
  const plain = await build(t, db)
  const s = await newSession(plain)
  t.equal((await plain.inject({ method: 'POST', url: '/auth/sign-out', headers: bearer(s.refresh_token) })).statusCode, 204)
  t.equal((await plain.pg.query("SELECT count(*)::int AS n FROM outbox WHERE kind LIKE 'webhook:%'")).rows[0].n, 0)
  for (const [env, message] of [
    [{ WEBHOOK_URLS: 'https://example.com/hook' }, /^WEBHOOK_SECRET: required/],
    [{ WEBHOOK_URLS: 'https://example.com/hook', WEBHOOK_SECRET: 'not-whsec' }, /^WEBHOOK_SECRET: must be/],
    [{ WEBHOOK_URLS: 'https://example.com/hook', WEBHOOK_SECRET: 'whsec_' + randomBytes(8).toString('base64') }, /^WEBHOOK_SECRET: must be/],
    [{ WEBHOOK_URLS: 'ftp://example.com/x', WEBHOOK_SECRET: SECRET }, /^WEBHOOK_URLS: each/]
  ] as const) {
    await t.rejects(buildApp(testEnv(db, env)), { name: 'ConfigError', message }, JSON.stringify(env).slice(0, 80))
  }
})
