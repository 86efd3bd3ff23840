import t from 'tap'
import type { FastifyInstance } from 'fastify'
import { Registry } from 'prom-client'
import { RequestDurations } from '../src/observe.js'
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

t.test('request durations: each request counted once, in cumulative buckets', async (t) => {
  const before = await scrape()
  for (let i = 0; i < 3; i++) await app.inject({ method: 'GET', url: '/health' })
  const after = await scrape()
  const labels = { method: 'GET', route: '/health', status_code: '200' }
  const diff = (name: string, more: Record<string, string> = {}) => sample(after, name, { ...more, ...labels }) - sample(before, name, { ...more, ...labels })
  t.equal(diff('http_request_duration_seconds_count'), 3)
  t.equal(diff('http_request_duration_seconds_bucket', { le: '+Inf' }), 3)
  t.ok(diff('http_request_duration_seconds_sum') > 0, 'their time is summed')
  const buckets = [...after.matchAll(/^http_request_duration_seconds_bucket\{le="([^"]+)",method="GET",route="\/health",status_code="200"\} (\d+)$/gm)]
  t.same(buckets.map((m) => m[1]), ['0.001', '0.0025', '0.005', '0.01', '0.025', '0.05', '0.1', '0.25', '0.5', '1', '2', '2.5', '+Inf'], 'le first, ascending')
  const counts = buckets.map((m) => Number(m[2]))
  t.same(counts, [...counts].sort((a, b) => a - b), 'each bucket holds the ones below it')
})

t.test('request durations: a value on a bound counts in that bucket; Prometheus text as prom-client writes it', async (t) => {
  const durations = new RequestDurations()
  const registry = new Registry()
  registry.registerMetric(durations as never)
  for (const seconds of [0.001, 0.0011, 0.02, 3]) durations.observe('POST', '/auth/refresh', 200, seconds)
  const text = await registry.metrics()
  const bucket = (le: string) => sample(text, 'http_request_duration_seconds_bucket', { le, route: '/auth/refresh' })
  t.same(['0.001', '0.0025', '0.025', '2.5', '+Inf'].map(bucket), [1, 2, 3, 3, 4])
  t.match(text, /^# TYPE http_request_duration_seconds histogram$/m)
  t.match(text, /^http_request_duration_seconds_count\{method="POST",route="\/auth\/refresh",status_code="200"\} 4$/m)
  t.equal(sample(text, 'http_request_duration_seconds_sum', { route: '/auth/refresh' }), 0.001 + 0.0011 + 0.02 + 3)
  registry.resetMetrics()
  t.notMatch(await registry.metrics(), /http_request_duration_seconds_count/, 'reset empties it')
})

t.test('METRICS_ENABLED=false: no /metrics route', async (t) => {
  const quiet = await build(t, await createDatabase(t), { METRICS_ENABLED: 'false' })
  t.equal((await quiet.inject({ method: 'GET', url: '/metrics' })).statusCode, 404)
  t.equal((await quiet.inject({ method: 'POST', url: '/auth/sign-up', payload: { name: 'q', email: uniqueEmail(), password: PASSWORD } })).statusCode, 201, 'the service works without it')
})
