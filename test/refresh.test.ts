import { createHash } from 'node:crypto'
import t from 'tap'
import { createSigner } from 'fast-jwt'
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import pg from 'pg'
import { bearer, build, claimsOf, createDatabase, EMBEDDED, newSession, refresh, SECRET } from './helper.js'
import * as q from '../src/sessions/queries.js'

const databaseUrl = await createDatabase(t)
const app = await build(t, databaseUrl)
// Other settings, each on a database of its own (an embedded database serves one app).
const audApp = await build(t, await createDatabase(t), { JWT_AUDIENCE: 'svc-a' })
const graceApp = await build(t, await createDatabase(t), { REFRESH_REUSE_GRACE: '30' })
const fixedApp = await build(t, await createDatabase(t), { REFRESH_TOKEN_ROTATION: 'false' })

const sign = createSigner({ key: SECRET, algorithm: 'HS256' })
const now = () => Math.floor(Date.now() / 1000)
const sha256 = (s: string) => createHash('sha256').update(s).digest()
const b64 = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url')

/** What a client sees of an answer: status, error code and the WWW-Authenticate challenge. */
const outcome = (res: LightMyRequestResponse) => ({
  status: res.statusCode,
  code: res.statusCode >= 400 ? res.json().code : undefined,
  challenge: res.headers['www-authenticate']
})
const unauthorized = (code: string) => ({ status: 401, code, challenge: /^Bearer/ })

const sessionRow = async (sid: unknown) =>
  (await app.pg.query('SELECT * FROM sessions WHERE id = $1', [sid])).rows[0]

/** Resolves once a statement of `db`'s database waits for a row lock (a few seconds at most). */
async function lockWaited (db: FastifyInstance): Promise<void> {
  for (let i = 0; i < 100; i++) {
    const { rows } = await db.pg.query("SELECT count(*)::int AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()")
    if (rows[0].n > 0) return
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  throw new Error('no statement waited for a lock')
}

t.test('the original client call (JSON content type, token in the header, no body) → 200 with a rotated pair', async (t) => {
  const session = await newSession(app)
  const res = await app.inject({
    method: 'POST',
    url: '/auth/refresh',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${session.refresh_token}` }
  })
  t.equal(res.statusCode, 200)
  t.equal(res.headers['cache-control'], 'no-store')
  t.equal(res.headers['content-type'], 'application/json; charset=utf-8')
  const body = res.json()
  t.match(body, { access_token: String, refresh_token: String, token_type: 'Bearer', expires_in: 900 })
  t.not(body.refresh_token, session.refresh_token, 'a new refresh token')
})

t.test('refresh with the token in the JSON body → 200', async (t) => {
  const session = await newSession(app)
  const res = await app.inject({ method: 'POST', url: '/auth/refresh', payload: { refresh_token: session.refresh_token } })
  t.equal(res.statusCode, 200)
  t.match(res.json(), { access_token: String, refresh_token: String, token_type: 'Bearer' })
})

t.test('the refreshed access token works on /auth/me', async (t) => {
  const session = await newSession(app)
  const { access_token: access } = (await refresh(app, session.refresh_token)).json()
  const me = await app.inject({ method: 'GET', url: '/auth/me', headers: bearer(access) })
  t.equal(me.statusCode, 200)
  t.equal(me.json().id, session.user.id)
})

t.test('issued tokens carry sub, sid, type, iat, exp, jti, iss and the configured lifetimes', async (t) => {
  const session = await newSession(app)
  const body = (await refresh(app, session.refresh_token)).json()
  const sid = claimsOf(session.refresh_token).sid
  t.ok(await sessionRow(sid), 'sid is the id of a sessions row')
  for (const [token, type, ttl] of [
    [session.access_token, 'access', 900], [session.refresh_token, 'refresh', 2592000],
    [body.access_token, 'access', 900], [body.refresh_token, 'refresh', 2592000]
  ] as const) {
    const claims = claimsOf(token)
    t.match(claims, { sub: session.user.id, sid, type, iat: Number, exp: Number, jti: String, iss: 'auth-service' }, type)
    t.equal(Number(claims.exp) - Number(claims.iat), ttl, `${type} lifetime`)
    t.notOk('aud' in claims, 'no aud without JWT_AUDIENCE')
  }
})

t.test('with JWT_AUDIENCE set, issued tokens carry aud', async (t) => {
  const session = await newSession(audApp)
  const body = (await refresh(audApp, session.refresh_token)).json()
  for (const token of [session.access_token, session.refresh_token, body.access_token, body.refresh_token]) {
    t.equal(claimsOf(token).aud, 'svc-a')
  }
})

t.test('a retired refresh token used again → 401 TOKEN_REVOKED and the whole session ends', async (t) => {
  const { refresh_token: a } = await newSession(app)
  const first = await refresh(app, a)
  t.equal(first.statusCode, 200)
  const b = first.json().refresh_token
  t.match(outcome(await refresh(app, a)), unauthorized('TOKEN_REVOKED'), 'the retired token')
  t.match(outcome(await refresh(app, b)), unauthorized('TOKEN_REVOKED'), 'its successor too')
  const row = await sessionRow(claimsOf(a).sid)
  t.type(row.revoked_at, Date, 'the session row is revoked')
})

t.test('20 concurrent refreshes with one token → exactly one 200, 19 × 401 TOKEN_REVOKED, no 5xx', async (t) => {
  const { refresh_token: token } = await newSession(app)
  const results = await Promise.all(Array.from({ length: 20 }, async () => await refresh(app, token)))
  const statuses = results.map((r) => r.statusCode)
  t.equal(statuses.filter((s) => s === 200).length, 1)
  t.equal(statuses.filter((s) => s >= 500).length, 0)
  const losers = results.filter((r) => r.statusCode !== 200)
  t.equal(losers.length, 19)
  t.ok(losers.every((r) => r.statusCode === 401 && r.json().code === 'TOKEN_REVOKED'), 'every loser is 401 TOKEN_REVOKED')
})

t.test('40 concurrent refreshes of 40 sessions: all rotate, sharing a few statements (group commit)', async (t) => {
  const sessions = await Promise.all(Array.from({ length: 40 }, async () => await newSession(app)))
  const results = await Promise.all(sessions.map(async (s) => await refresh(app, s.refresh_token)))
  t.same(results.map((r) => r.statusCode), sessions.map(() => 200))
  const sids = sessions.map((s) => claimsOf(s.refresh_token).sid)
  const { rows } = await app.pg.query('SELECT id, refresh_hash, rotated_at FROM sessions WHERE id = ANY ($1)', [sids])
  const bySid = new Map(rows.map((r) => [r.id, r]))
  t.ok(results.every((r, i) => bySid.get(sids[i]).refresh_hash.equals(sha256(claimsOf(r.json().refresh_token).jti as string))),
    'each session holds the hash of the token its own answer carried')
  // now() is one value per transaction: rotations committed together share their rotated_at.
  const commits = new Set(rows.map((r) => r.rotated_at.getTime())).size
  t.ok(commits <= 5, `40 rotations in ${commits} statements`)
})

t.test('a rotation updates the session row in place (a HOT update: no new index entries)', async (t) => {
  const sessions = await Promise.all(Array.from({ length: 5 }, async () => await newSession(app)))
  const rotations = sessions.map((s) => {
    const { sid, sub, jti } = claimsOf(s.refresh_token) as { sid: string, sub: string, jti: string }
    return { sid, sub, oldHash: sha256(jti), newHash: sha256('next:' + jti) }
  })
  // pg_stat_xact_user_tables: this connection's counts not yet reported (nothing is reported
  // inside a transaction), so the difference is the rotation statement's.
  const client = await app.pg.pool.connect()
  const counts = async () => (await client.query<{ upd: number, hot: number }>(
    "SELECT n_tup_upd::int AS upd, n_tup_hot_upd::int AS hot FROM pg_stat_xact_user_tables WHERE relname = 'sessions'")).rows[0]
  try {
    await client.query('BEGIN')
    const before = await counts()
    t.same(await q.rotateRefreshTokens(client, rotations, 3600), rotations.map(() => true))
    const after = await counts()
    t.same({ updated: after.upd - before.upd, hot: after.hot - before.hot }, { updated: 5, hot: 5 }, 'all 5 updates were HOT')
  } finally {
    await client.query('ROLLBACK')
    client.release()
  }
})

t.test('one batch with a token twice and other sessions: one of the pair wins, the reuse ends that session only', async (t) => {
  const pair = await newSession(app)
  const others = await Promise.all(Array.from({ length: 6 }, async () => await newSession(app)))
  const tokens = [pair.refresh_token, ...others.map((s) => s.refresh_token), pair.refresh_token]
  const results = await Promise.all(tokens.map(async (token) => await refresh(app, token)))
  const pairStatuses = [results[0], results[7]].map((r) => r.statusCode).sort()
  t.same(pairStatuses, [200, 401], 'exactly one of the two with one token succeeds')
  t.same(results.slice(1, 7).map((r) => r.statusCode), [200, 200, 200, 200, 200, 200], 'the other sessions rotate')
  t.type((await sessionRow(claimsOf(pair.refresh_token).sid)).revoked_at, Date, 'the reused session is ended')
})

t.test('a batch rolled back by a deadlock is run again', { skip: EMBEDDED && 'needs a second connection (PostgreSQL server)' }, async (t) => {
  // On a database of its own, two sessions: A inserted first, so the batch locks A, then B.
  // Another transaction holds B, then asks for A: a deadlock. The batch waits first, so its
  // check (after deadlock_timeout, 1 s) finds it and PostgreSQL rolls the batch back; the other
  // transaction checks only after 5 s.
  const url = await createDatabase(t)
  const own = await build(t, url)
  const a = await newSession(own)
  const b = await newSession(own)
  const [sidA, sidB] = [a, b].map((s) => claimsOf(s.refresh_token).sid as string)
  const rotation = (s: typeof a, sid: string) => {
    const jti = claimsOf(s.refresh_token).jti as string
    return { sid, sub: s.user.id, oldHash: sha256(jti), newHash: sha256(jti + '+1') }
  }
  const other = new pg.Client({ connectionString: url })
  await other.connect()
  t.teardown(async () => await other.end())
  await other.query("SET deadlock_timeout = '5s'")
  await other.query('BEGIN')
  await other.query('UPDATE sessions SET last_used_at = now() WHERE id = $1', [sidB])
  const batch = q.rotateRefreshTokens(own.pg.pool, [rotation(a, sidA), rotation(b, sidB)], 3600)
  await lockWaited(own) // the batch waits for B's lock; now ask for A's
  await other.query('UPDATE sessions SET last_used_at = now() WHERE id = $1', [sidA])
  await other.query('COMMIT')
  t.same(await batch, [true, true], 'both rotations took place')
  // A backend reports its statistics when idle, within about 10 s.
  const deadlocks = async () => Number((await own.pg.query('SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()')).rows[0].deadlocks)
  let seen = await deadlocks()
  for (let i = 0; i < 150 && seen === 0; i++) {
    await new Promise((resolve) => setTimeout(resolve, 100))
    seen = await deadlocks()
  }
  t.equal(seen, 1, 'PostgreSQL saw one deadlock')
})

t.test('a batch cancelled by the statement timeout fails whole with 503, and every token in it still works', { skip: EMBEDDED && 'needs a second connection (PostgreSQL server)' }, async (t) => {
  // Concurrent refreshes share one statement (src/db/batch.ts). Another transaction holds two
  // sessions' rows: the first refresh's batch waits on one of them, the next four queue behind it
  // as one batch, which waits on the other. PostgreSQL cancels each at DB_STATEMENT_TIMEOUT_MS and
  // rolls it back whole: the three sessions nobody locked fail with the locked one, as a retryable
  // 503, and since nothing was rotated, their tokens work once the lock is gone.
  const url = await createDatabase(t)
  const own = await build(t, url, { DB_STATEMENT_TIMEOUT_MS: '1000' })
  const sessions = []
  for (let i = 0; i < 5; i++) sessions.push(await newSession(own))
  const sids = sessions.map((s) => claimsOf(s.refresh_token).sid as string)
  const other = new pg.Client({ connectionString: url })
  await other.connect()
  t.teardown(async () => await other.end())
  await other.query('BEGIN')
  await other.query('SELECT 1 FROM sessions WHERE id = ANY ($1::uuid[]) FOR UPDATE', [[sids[0], sids[1]]])
  const first = refresh(own, sessions[0].refresh_token)
  await lockWaited(own)
  const rest = await Promise.all(sessions.slice(1).map(async (s) => await refresh(own, s.refresh_token)))
  const answers = [await first, ...rest]
  t.same(answers.map((r) => r.statusCode), [503, 503, 503, 503, 503], 'every refresh of both batches: 503')
  for (const r of answers) {
    t.equal(r.json().code, 'SERVICE_UNAVAILABLE')
    t.ok(Number(r.headers['retry-after']) > 0, 'with Retry-After')
  }
  await other.query('ROLLBACK')
  const again = await Promise.all(sessions.map(async (s) => await refresh(own, s.refresh_token)))
  t.same(again.map((r) => r.statusCode), [200, 200, 200, 200, 200], 'each token, retried, rotates')
})

t.test('REFRESH_REUSE_GRACE=30: a retired token within the grace gets the same successor; the session goes on', async (t) => {
  const { refresh_token: a } = await newSession(graceApp)
  const b = (await refresh(graceApp, a)).json().refresh_token
  const retry = await refresh(graceApp, a)
  t.equal(retry.statusCode, 200)
  t.equal(claimsOf(retry.json().refresh_token).jti, claimsOf(b).jti, 'same successor as the first answer')
  t.equal((await refresh(graceApp, b)).statusCode, 200, 'the successor still works')
})

t.test('REFRESH_REUSE_GRACE=30: a retired token back after the grace → 401 TOKEN_REVOKED and the session ends', async (t) => {
  const { refresh_token: a } = await newSession(graceApp)
  const b = (await refresh(graceApp, a)).json().refresh_token
  await graceApp.pg.query("UPDATE sessions SET rotated_at = now() - interval '31 seconds' WHERE id = $1", [claimsOf(a).sid])
  t.match(outcome(await refresh(graceApp, a)), unauthorized('TOKEN_REVOKED'), 'the retired token')
  t.match(outcome(await refresh(graceApp, b)), unauthorized('TOKEN_REVOKED'), 'its successor too')
})

t.test('REFRESH_REUSE_GRACE=30: concurrent refreshes with one token all succeed', async (t) => {
  const { refresh_token: token } = await newSession(graceApp)
  const results = await Promise.all(Array.from({ length: 5 }, async () => await refresh(graceApp, token)))
  t.same(results.map((r) => r.statusCode), [200, 200, 200, 200, 200])
  t.equal(new Set(results.map((r) => claimsOf(r.json().refresh_token).jti)).size, 1, 'one successor for all')
})

t.test('REFRESH_TOKEN_ROTATION=false: one refresh token works again and again until sign-out', async (t) => {
  const { refresh_token: token } = await newSession(fixedApp)
  for (let i = 1; i <= 3; i++) {
    const res = await refresh(fixedApp, token)
    t.equal(res.statusCode, 200, `refresh ${i}`)
    t.match(res.json(), { access_token: String, token_type: 'Bearer', expires_in: 900 })
    t.notOk('refresh_token' in res.json(), 'no refresh token without rotation')
  }
  const signOut = await fixedApp.inject({ method: 'POST', url: '/auth/sign-out', headers: bearer(token) })
  t.equal(signOut.statusCode, 204)
  t.match(outcome(await refresh(fixedApp, token)), unauthorized('TOKEN_REVOKED'))
})

t.test('refresh with an access token → 401 TOKEN_INVALID', async (t) => {
  const session = await newSession(app)
  t.match(outcome(await refresh(app, session.access_token)), unauthorized('TOKEN_INVALID'))
})

t.test('refresh without a token → 401 TOKEN_MISSING', async (t) => {
  t.match(outcome(await app.inject({ method: 'POST', url: '/auth/refresh' })), unauthorized('TOKEN_MISSING'))
  const jsonNoBody = await app.inject({ method: 'POST', url: '/auth/refresh', headers: { 'content-type': 'application/json' } })
  t.match(outcome(jsonNoBody), unauthorized('TOKEN_MISSING'))
  t.match(outcome(await app.inject({ method: 'POST', url: '/auth/refresh', payload: {} })), unauthorized('TOKEN_MISSING'))
})

t.test('refresh with a tampered payload or signature → 401 TOKEN_INVALID, and the session is unharmed', async (t) => {
  const { refresh_token: token } = await newSession(app)
  const other = await newSession(app)
  const [header, payload, signature] = token.split('.')
  const otherUser = b64({ ...claimsOf(token), sub: other.user.id })
  const flipped = (signature[0] === 'A' ? 'B' : 'A') + signature.slice(1)
  t.match(outcome(await refresh(app, `${header}.${otherUser}.${signature}`)), unauthorized('TOKEN_INVALID'), 'payload')
  t.match(outcome(await refresh(app, `${header}.${payload}.${flipped}`)), unauthorized('TOKEN_INVALID'), 'signature')
  t.match(outcome(await refresh(app, 'not.a.jwt')), unauthorized('TOKEN_INVALID'), 'garbage')
  t.equal((await refresh(app, token)).statusCode, 200, 'the real token still works')
})

t.test('refresh with a token signed with another secret → 401 TOKEN_INVALID', async (t) => {
  const { refresh_token: token } = await newSession(app)
  const forge = createSigner({ key: 'another-secret-that-is-long-enough-9876543210', algorithm: 'HS256' })
  t.match(outcome(await refresh(app, forge(claimsOf(token)))), unauthorized('TOKEN_INVALID'))
  t.equal((await refresh(app, token)).statusCode, 200, 'the session is unharmed')
})

t.test('an expired refresh token → 401 TOKEN_EXPIRED, and the session is not ended', async (t) => {
  const { refresh_token: token } = await newSession(app)
  const expired = sign({ ...claimsOf(token), iat: now() - 3600, exp: now() - 60 })
  t.match(outcome(await refresh(app, expired)), unauthorized('TOKEN_EXPIRED'))
  t.equal((await sessionRow(claimsOf(token).sid)).revoked_at, null)
  t.equal((await refresh(app, token)).statusCode, 200, 'the current token still works')
})

t.test('an expired token with a bad signature → 401 TOKEN_INVALID, not TOKEN_EXPIRED', async (t) => {
  const { refresh_token: token } = await newSession(app)
  const forge = createSigner({ key: 'another-secret-that-is-long-enough-9876543210', algorithm: 'HS256' })
  const forged = forge({ ...claimsOf(token), iat: now() - 3600, exp: now() - 60 })
  t.match(outcome(await refresh(app, forged)), unauthorized('TOKEN_INVALID'))
})

t.test('a refresh_token of the wrong JSON type → 400 VALIDATION_FAILED', async (t) => {
  const res = await app.inject({ method: 'POST', url: '/auth/refresh', payload: { refresh_token: 12345 } })
  t.equal(res.statusCode, 400)
  t.equal(res.json().code, 'VALIDATION_FAILED')
})

t.test('a correctly signed token whose sid or sub is not a UUID → 401 TOKEN_INVALID, not a 500', async (t) => {
  const { refresh_token: token } = await newSession(app)
  t.match(outcome(await refresh(app, sign({ ...claimsOf(token), sid: 'not-a-uuid' }))), unauthorized('TOKEN_INVALID'))
  t.match(outcome(await refresh(app, sign({ ...claimsOf(token), sub: "1' OR '1'='1" }))), unauthorized('TOKEN_INVALID'))
})

t.test('a refresh token with a wrong iss → 401 TOKEN_INVALID', async (t) => {
  const { refresh_token: token } = await newSession(app)
  t.match(outcome(await refresh(app, sign({ ...claimsOf(token), iss: 'someone-else' }))), unauthorized('TOKEN_INVALID'))
})

t.test('an alg "none" refresh token → 401 TOKEN_INVALID', async (t) => {
  const { refresh_token: token } = await newSession(app)
  const unsigned = `${b64({ alg: 'none', typ: 'JWT' })}.${b64(claimsOf(token))}.`
  t.match(outcome(await refresh(app, unsigned)), unauthorized('TOKEN_INVALID'))
})

t.test('refresh tokens are stored only as SHA-256 hashes of their jti', async (t) => {
  const session = await newSession(app)
  const { sid, jti } = claimsOf(session.refresh_token) as { sid: string, jti: string }
  const next = (await refresh(app, session.refresh_token)).json().refresh_token
  const row = await sessionRow(sid)
  t.same(row.refresh_hash, sha256(String(claimsOf(next).jti)), 'refresh_hash = sha256(current jti)')
  t.same(row.previous_hash, sha256(jti), 'previous_hash = sha256(retired jti)')
  const secrets = [session.refresh_token, next, jti, String(claimsOf(next).jti)]
  for (const [column, value] of Object.entries(row)) {
    if (value === null) continue
    const forms = Buffer.isBuffer(value)
      ? [value.toString('utf8'), value.toString('hex'), value.toString('base64'), value.toString('base64url')]
      : [String(value)]
    t.notOk(secrets.some((s) => forms.some((f) => f.includes(s))), `${column} holds no token or jti`)
  }
})

t.test('rotation moves the session expiry forward', async (t) => {
  const { refresh_token: token } = await newSession(app)
  const sid = claimsOf(token).sid
  await app.pg.query("UPDATE sessions SET expires_at = now() + interval '1 hour' WHERE id = $1", [sid])
  const before: Date = (await sessionRow(sid)).expires_at
  t.equal((await refresh(app, token)).statusCode, 200)
  const after: Date = (await sessionRow(sid)).expires_at
  t.ok(after.getTime() > before.getTime() + 29 * 86400_000, 'about 30 days from now')
})

t.test('refresh on a session whose expires_at has passed → 401 TOKEN_EXPIRED', async (t) => {
  const { refresh_token: token } = await newSession(app)
  await app.pg.query("UPDATE sessions SET expires_at = now() - interval '1 second' WHERE id = $1", [claimsOf(token).sid])
  t.match(outcome(await refresh(app, token)), unauthorized('TOKEN_EXPIRED'))
})

t.test('REFRESH_TOKEN_ROTATION=false: an expired session → 401 TOKEN_EXPIRED', async (t) => {
  const { refresh_token: token } = await newSession(fixedApp)
  await fixedApp.pg.query("UPDATE sessions SET expires_at = now() - interval '1 second' WHERE id = $1", [claimsOf(token).sid])
  t.match(outcome(await refresh(fixedApp, token)), unauthorized('TOKEN_EXPIRED'))
})
