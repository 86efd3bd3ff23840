import t from 'tap'
import { randomUUID } from 'node:crypto'
import { prune } from '../src/db/prune.js'
import { bearer, build, createDatabase, EMBEDDED, PASSWORD, refresh, signUp, uniqueEmail } from './helper.js'

const databaseUrl = await createDatabase(t)
const SETTINGS = { AUDIT_RETENTION_DAYS: 90, JWT_ACCESS_TTL: 900 }
const app = await build(t, databaseUrl)

const eventsOf = async (userId: string) =>
  (await app.pg.query('SELECT event, user_id, session_id, ip, user_agent, created_at FROM audit_events WHERE user_id = $1 ORDER BY id', [userId])).rows
// Audit rows are written after the answer is sent: give them a moment.
const settle = async () => await new Promise((resolve) => setTimeout(resolve, 150))

t.test('each security event leaves an audit row with user, session, IP, user agent and time', async (t) => {
  const headers = { 'user-agent': 'audit-test/1.0' }
  const email = uniqueEmail('audited')
  const up = await app.inject({ method: 'POST', url: '/auth/sign-up', headers, payload: { name: 'A', email, password: PASSWORD } })
  const userId = up.json().user.id
  await app.inject({ method: 'POST', url: '/auth/sign-in', headers, payload: { email, password: 'wrong password here' } })
  const session = (await app.inject({ method: 'POST', url: '/auth/sign-in', headers, payload: { email, password: PASSWORD } })).json()
  const refreshWith = async (token: string) => await app.inject({ method: 'POST', url: '/auth/refresh', headers: { ...headers, ...bearer(token) } })
  await refreshWith(session.refresh_token)
  await refreshWith(session.refresh_token) // reuse
  const second = (await app.inject({ method: 'POST', url: '/auth/sign-in', headers, payload: { email, password: PASSWORD } })).json()
  await app.inject({ method: 'POST', url: '/auth/sign-out', headers: { ...headers, ...bearer(second.refresh_token) } })
  await settle()

  const rows = await eventsOf(userId)
  t.same(rows.map((r) => r.event), ['sign-up', 'sign-in-failed', 'sign-in', 'refresh-reuse', 'sign-in', 'sign-out'])
  t.ok(rows.every((r) => r.ip === '127.0.0.1' && r.user_agent === 'audit-test/1.0' && r.created_at instanceof Date))
  const sid = (token: string) => JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString()).sid
  t.equal(rows[3].session_id, sid(session.refresh_token), 'reuse detection names the session')
  t.equal(rows[5].session_id, sid(second.refresh_token))
})

t.test('a failed sign-in for an unknown email is audited without a user', async (t) => {
  const email = uniqueEmail('ghost')
  const before = (await app.pg.query("SELECT count(*)::int AS n FROM audit_events WHERE event = 'sign-in-failed' AND user_id IS NULL")).rows[0].n
  await app.inject({ method: 'POST', url: '/auth/sign-in', payload: { email, password: 'whatever password' } })
  await settle()
  const after = (await app.pg.query("SELECT count(*)::int AS n FROM audit_events WHERE event = 'sign-in-failed' AND user_id IS NULL")).rows[0].n
  t.equal(after - before, 1)
})

t.test('pruning removes exactly what is due and keeps the rest', async (t) => {
  const db = app.pg.pool
  const user = await signUp(app)
  const sessions: Record<string, string> = {}
  for (const name of ['live', 'expiredLongAgo', 'expiredYesterday', 'revokedLongAgo', 'revokedYesterday']) {
    sessions[name] = (await newSessionFor(user.email)).sid
  }
  async function newSessionFor (email: string) {
    const s = (await app.inject({ method: 'POST', url: '/auth/sign-in', payload: { email, password: PASSWORD } })).json()
    return { sid: JSON.parse(Buffer.from(s.refresh_token.split('.')[1], 'base64url').toString()).sid as string }
  }
  await db.query("UPDATE sessions SET expires_at = now() - interval '8 days' WHERE id = $1", [sessions.expiredLongAgo])
  await db.query("UPDATE sessions SET expires_at = now() - interval '1 day' WHERE id = $1", [sessions.expiredYesterday])
  await db.query("UPDATE sessions SET revoked_at = now() - interval '8 days' WHERE id = $1", [sessions.revokedLongAgo])
  await db.query("UPDATE sessions SET revoked_at = now() - interval '1 day' WHERE id = $1", [sessions.revokedYesterday])
  await db.query("INSERT INTO audit_events (event, user_id, created_at) VALUES ('old', $1, now() - interval '91 days'), ('recent', $1, now() - interval '89 days')", [user.id])
  const stale = uniqueEmail('stale')
  const fresh = uniqueEmail('fresh')
  await db.query(`INSERT INTO sign_in_throttle (email, ip, failures, last_failure_at)
                  VALUES ($1, '10.0.0.1', 3, now() - interval '2 days'), ($2, '10.0.0.1', 3, now())`, [stale, fresh])
  await db.query(`INSERT INTO sign_in_email_failures (email, window_start, failures)
                  VALUES ($1, now() - interval '2 hours', 3), ($2, now(), 3)`, [stale, fresh])
  await db.query('INSERT INTO email_cooldowns (email, purpose, until) VALUES ($1, \'reset-password\', now() - interval \'1 second\'), ($2, \'reset-password\', now() + interval \'1 minute\')', [stale, fresh])
  await db.query(`INSERT INTO email_tokens (token_hash, user_id, purpose, email, stamp, expires_at)
                  VALUES ('\\x01', $1, 'reset-password', $2, '\\x00', now() - interval '1 second'), ('\\x02', $1, 'reset-password', $2, '\\x00', now() + interval '1 hour')`, [user.id, user.email])
  await db.query(`INSERT INTO mfa_challenges (token_hash, user_id, expires_at)
                  VALUES ('\\x03', $1, now() - interval '25 hours'), ('\\x04', $1, now() - interval '23 hours')`, [user.id])
  // Notes of ended sessions: kept an hour past the access-token lifetime (900 s here).
  const [gone, kept] = [randomUUID(), randomUUID()]
  await db.query(`INSERT INTO ended_sessions (session_id, user_id, ended_at)
                  VALUES ($1, $3, now() - interval '76 minutes'), ($2, $3, now() - interval '74 minutes')`, [gone, kept, user.id])
  await settle()

  const result = await prune(db, SETTINGS)
  t.ok(result !== null)
  t.ok((result?.sessions ?? 0) >= 2 && (result?.auditEvents ?? 0) >= 1)
  const left = (await db.query('SELECT id FROM sessions WHERE user_id = $1', [user.id])).rows.map((r) => r.id).sort()
  t.same(left, [sessions.live, sessions.expiredYesterday, sessions.revokedYesterday].sort())
  const events = (await db.query("SELECT event FROM audit_events WHERE user_id = $1 AND event IN ('old', 'recent')", [user.id])).rows
  t.same(events.map((r) => r.event), ['recent'])
  const throttled = await db.query('SELECT email FROM sign_in_throttle WHERE email IN ($1, $2) UNION ALL SELECT email FROM sign_in_email_failures WHERE email IN ($1, $2)', [stale, fresh])
  t.same(throttled.rows.map((r) => r.email), [fresh, fresh], 'stale throttle rows go, live ones stay')
  t.same((await db.query('SELECT email FROM email_cooldowns WHERE email IN ($1, $2)', [stale, fresh])).rows.map((r) => r.email), [fresh], 'past cooldowns go')
  t.same((await db.query("SELECT encode(token_hash, 'hex') AS h FROM email_tokens WHERE user_id = $1 AND length(token_hash) = 1", [user.id])).rows.map((r) => r.h), ['02'], 'expired mailed tokens go')
  t.same((await db.query("SELECT encode(token_hash, 'hex') AS h FROM mfa_challenges WHERE user_id = $1", [user.id])).rows.map((r) => r.h), ['04'],
    'sign-in challenges go a day after they expire (till then a late one is told TOKEN_EXPIRED)')
  t.same((await db.query('SELECT session_id FROM ended_sessions WHERE session_id IN ($1, $2)', [gone, kept])).rows.map((r) => r.session_id), [kept],
    'ended sessions are forgotten an hour after their access tokens have expired')
  t.equal((await refresh(app, (await app.inject({ method: 'POST', url: '/auth/sign-in', payload: { email: user.email, password: PASSWORD } })).json().refresh_token)).statusCode, 200, 'the service goes on')
})

t.test('one pruner at a time: while one holds the lock, another skips', { skip: EMBEDDED && 'needs a second connection (PostgreSQL server)' }, async (t) => {
  const holder = await app.pg.pool.connect()
  try {
    await holder.query('BEGIN')
    await holder.query('SELECT pg_advisory_xact_lock(7316540021)')
    const other = await build(t, databaseUrl)
    t.equal(await prune(other.pg.pool, SETTINGS), null)
    await holder.query('COMMIT')
    t.ok(await prune(other.pg.pool, SETTINGS))
  } finally {
    holder.release()
  }
})
