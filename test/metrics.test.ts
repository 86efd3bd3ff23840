import t from 'tap'
import type { FastifyInstance } from 'fastify'
import { build, createDatabase, newSession, PASSWORD, refresh, signUp, uniqueEmail } from './helper.js'

const databaseUrl = await createDatabase(t)
const app = await build(t, databaseUrl)

async function scrape (a: FastifyInstance = app): Promise<string> {
  const res = await a.inject({ method: 'GET', url: '/metrics' })
  t.equal(res.statusCode, 200)
  return res.body
}
/** The value of one sample, 0 when absent. */
function sample (text: string, name: string, labels: Record<string, string> = {}): number {
  const want = Object.entries(labels).map(([k, v]) => `${k}="${v}"`)
  for (const line of text.split('\n')) {
    if (!line.startsWith(name + '{') && !line.startsWith(name + ' ')) continue
    const labelPart = line.slice(name.length).split(' ')[0]
    if (want.every((w) => labelPart.includes(w))) return Number(line.split(' ').at(-1))
  }
  return 0
}

t.test('GET /metrics → Prometheus text with process and pool metrics', async (t) => {
  const res = await app.inject({ method: 'GET', url: '/metrics' })
  t.equal(res.statusCode, 200)
  t.match(res.headers['content-type'], /^text\/plain; version=0\.0\.4/)
  t.match(res.body, /^process_cpu_user_seconds_total /m)
  t.match(res.body, /^nodejs_eventloop_lag_seconds /m)
  t.match(res.body, /^db_pool_connections\{state="total"\} \d+/m)
  t.match(res.body, /^auth_argon2_queue_depth 0/m)
})

t.test('a wrong password increments sign_in/invalid_credentials by one, and the 401 request count', async (t) => {
  const user = await signUp(app)
  const before = await scrape()
  const res = await app.inject({ method: 'POST', url: '/auth/sign-in', payload: { email: user.email, password: 'not the password at all' } })
  t.equal(res.statusCode, 401)
  const after = await scrape()
  const diff = (name: string, labels: Record<string, string>) => sample(after, name, labels) - sample(before, name, labels)
  t.equal(diff('auth_outcomes_total', { action: 'sign_in', outcome: 'invalid_credentials' }), 1)
  t.equal(diff('auth_outcomes_total', { action: 'sign_in', outcome: 'success' }), 0)
  t.equal(diff('http_request_duration_seconds_count', { route: '/auth/sign-in', status_code: '401' }), 1)
  t.ok(diff('auth_argon2_duration_seconds_count', {}) >= 1, 'argon2 work is timed')
})

t.test('refresh outcomes: rotated, reuse_detected, token_revoked, token_expired', async (t) => {
  const before = await scrape()
  const session = await newSession(app)
  const next = (await refresh(app, session.refresh_token)).json().refresh_token
  await refresh(app, session.refresh_token) // reuse: ends the session
  await refresh(app, next) // the session has ended
  await app.pg.query("UPDATE sessions SET expires_at = now() - interval '1 second' WHERE id = (SELECT id FROM sessions ORDER BY created_at DESC LIMIT 1)")
  const other = await newSession(app)
  await app.pg.query("UPDATE sessions SET expires_at = now() - interval '1 second' WHERE user_id = $1", [other.user.id])
  await refresh(app, other.refresh_token)
  const after = await scrape()
  for (const outcome of ['rotated', 'reuse_detected', 'token_revoked', 'token_expired']) {
    t.equal(sample(after, 'auth_outcomes_total', { action: 'refresh', outcome }) - sample(before, 'auth_outcomes_total', { action: 'refresh', outcome }), 1, outcome)
  }
})

t.test('METRICS_ENABLED=false: no /metrics route', async (t) => {
  const quiet = await build(t, await createDatabase(t), { METRICS_ENABLED: 'false' })
  t.equal((await quiet.inject({ method: 'GET', url: '/metrics' })).statusCode, 404)
  t.equal((await quiet.inject({ method: 'POST', url: '/auth/sign-up', payload: { name: 'q', email: uniqueEmail(), password: PASSWORD } })).statusCode, 201, 'the service works without it')
})
