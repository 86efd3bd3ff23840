import t from 'tap'
import type { LightMyRequestResponse } from 'fastify'
import { bearer, build, claimsOf, createDatabase, newSession, PASSWORD, refresh, signIn, signUp } from './helper.js'

const databaseUrl = await createDatabase(t)
const app = await build(t, databaseUrl)

const NEW_PASSWORD = 'a new horse battery staple'

const changePassword = async (token: string | undefined, payload: Record<string, unknown>) =>
  await app.inject({ method: 'POST', url: '/auth/password', headers: token === undefined ? {} : bearer(token), payload })
const signInStatus = async (email: string, password: string) =>
  (await app.inject({ method: 'POST', url: '/auth/sign-in', payload: { email, password } })).statusCode
const hashOf = async (userId: string) =>
  (await app.pg.query('SELECT password_hash FROM users WHERE id = $1', [userId])).rows[0].password_hash as string
const liveSessions = async (userId: string) =>
  (await app.pg.query('SELECT count(*)::int AS n FROM sessions WHERE user_id = $1 AND revoked_at IS NULL', [userId])).rows[0].n as number
const eventsOf = async (userId: string, event: string) =>
  (await app.pg.query('SELECT session_id FROM audit_events WHERE user_id = $1 AND event = $2', [userId, event])).rows
// Audit rows are written after the answer is sent: give them a moment.
const settle = async () => await new Promise((resolve) => setTimeout(resolve, 150))

/** What a client sees of an answer: status, error code and the WWW-Authenticate challenge. */
const outcome = (res: LightMyRequestResponse) => ({
  status: res.statusCode,
  code: res.statusCode >= 400 ? res.json().code : undefined,
  challenge: res.headers['www-authenticate']
})
const unauthorized = (code: string) => ({ status: 401, code, challenge: /^Bearer/ })

t.test('password change → 204: the new password signs in, the old one does not', async (t) => {
  const user = await signUp(app)
  const session = await signIn(app, user.email)
  const res = await changePassword(session.access_token, { current_password: PASSWORD, new_password: NEW_PASSWORD })
  t.equal(res.statusCode, 204)
  t.equal(res.body, '')
  t.equal(await signInStatus(user.email, PASSWORD), 401, 'old password')
  t.equal(await signInStatus(user.email, NEW_PASSWORD), 200, 'new password')
})

t.test('a password change ends every other session; the session that made it goes on', async (t) => {
  const user = await signUp(app)
  const current = await signIn(app, user.email)
  const others = [await signIn(app, user.email), await signIn(app, user.email)]
  const bystander = await newSession(app)
  t.equal((await changePassword(current.access_token, { current_password: PASSWORD, new_password: NEW_PASSWORD })).statusCode, 204)
  for (const [i, s] of others.entries()) {
    t.match(outcome(await refresh(app, s.refresh_token)), unauthorized('TOKEN_REVOKED'), `other session ${i + 1}`)
  }
  t.equal((await refresh(app, current.refresh_token)).statusCode, 200, 'the current session still refreshes')
  const { rows } = await app.pg.query('SELECT id, revoked_reason FROM sessions WHERE user_id = $1 AND revoked_at IS NOT NULL ORDER BY id', [user.id])
  t.same(rows.map((r) => r.revoked_reason), ['password-change', 'password-change'])
  t.equal((await refresh(app, bystander.refresh_token)).statusCode, 200, 'another user is untouched')
})

t.test('a wrong current password → 401 INVALID_CREDENTIALS, and nothing changes', async (t) => {
  const user = await signUp(app)
  const current = await signIn(app, user.email)
  const other = await signIn(app, user.email)
  const before = await hashOf(user.id)
  const res = await changePassword(current.access_token, { current_password: 'not the password at all', new_password: NEW_PASSWORD })
  t.match(outcome(res), unauthorized('INVALID_CREDENTIALS'))
  t.equal(await hashOf(user.id), before, 'the hash is the same')
  t.equal(await liveSessions(user.id), 2, 'no session ended')
  t.equal((await refresh(app, other.refresh_token)).statusCode, 200)
  t.equal(await signInStatus(user.email, PASSWORD), 200, 'the old password still signs in')
})

t.test('a short or common new password → 400 VALIDATION_FAILED naming new_password, and nothing changes', async (t) => {
  const user = await signUp(app)
  const session = await signIn(app, user.email)
  const other = await signIn(app, user.email)
  const before = await hashOf(user.id)
  for (const newPassword of ['short', 'password123', 'Password123']) {
    const res = await changePassword(session.access_token, { current_password: PASSWORD, new_password: newPassword })
    t.equal(res.statusCode, 400, newPassword)
    t.equal(res.json().code, 'VALIDATION_FAILED', newPassword)
    t.match(res.json().message, /new_password/, newPassword)
  }
  t.match((await changePassword(session.access_token, { current_password: PASSWORD, new_password: 'password123' })).json().message, /common/)
  t.equal(await hashOf(user.id), before)
  t.equal((await refresh(app, other.refresh_token)).statusCode, 200, 'no session ended')
})

t.test('missing, mistyped or over-long fields → 400 VALIDATION_FAILED', async (t) => {
  const session = await newSession(app)
  for (const [what, body] of Object.entries({
    'no new_password': { current_password: PASSWORD },
    'no current_password': { new_password: NEW_PASSWORD },
    'a number': { current_password: PASSWORD, new_password: 123456789 },
    'new_password over 1024': { current_password: PASSWORD, new_password: 'x'.repeat(1025) },
    'current_password over 1024': { current_password: 'x'.repeat(1025), new_password: NEW_PASSWORD }
  })) {
    t.match(outcome(await changePassword(session.access_token, body)), { status: 400, code: 'VALIDATION_FAILED' }, what)
  }
})

t.test('passwords are never trimmed: a new password with spaces around it is kept as given', async (t) => {
  const user = await signUp(app)
  const session = await signIn(app, user.email)
  t.equal((await changePassword(session.access_token, { current_password: PASSWORD, new_password: `  ${NEW_PASSWORD}  ` })).statusCode, 204)
  t.equal(await signInStatus(user.email, NEW_PASSWORD), 401)
  t.equal(await signInStatus(user.email, `  ${NEW_PASSWORD}  `), 200)
})

t.test('without a token → 401 TOKEN_MISSING; with a refresh token → 401 TOKEN_INVALID; nothing changes', async (t) => {
  const user = await signUp(app)
  const session = await signIn(app, user.email)
  const body = { current_password: PASSWORD, new_password: NEW_PASSWORD }
  t.match(outcome(await changePassword(undefined, body)), unauthorized('TOKEN_MISSING'))
  t.match(outcome(await changePassword(session.refresh_token, body)), unauthorized('TOKEN_INVALID'))
  t.equal(await signInStatus(user.email, PASSWORD), 200)
})

t.test('a user whose row is gone → 401 TOKEN_INVALID, or TOKEN_REVOKED once its ended sessions are announced', async (t) => {
  const user = await signUp(app)
  const session = await signIn(app, user.email)
  await app.pg.query('DELETE FROM users WHERE id = $1', [user.id])
  t.match(outcome(await changePassword(session.access_token, { current_password: PASSWORD, new_password: NEW_PASSWORD })), { status: 401, code: /^TOKEN_(INVALID|REVOKED)$/ })
})

t.test('password changes are audited: password-change and password-change-failed, naming the session', async (t) => {
  const user = await signUp(app)
  const session = await signIn(app, user.email)
  await changePassword(session.access_token, { current_password: 'not the password at all', new_password: NEW_PASSWORD })
  await changePassword(session.access_token, { current_password: PASSWORD, new_password: NEW_PASSWORD })
  await settle()
  const sid = claimsOf(session.access_token).sid
  t.same(await eventsOf(user.id, 'password-change-failed'), [{ session_id: sid }])
  t.same(await eventsOf(user.id, 'password-change'), [{ session_id: sid }])
})
