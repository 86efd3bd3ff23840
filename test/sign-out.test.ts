import t from 'tap'
import { createSigner } from 'fast-jwt'
import type { LightMyRequestResponse } from 'fastify'
import { bearer, build, claimsOf, createDatabase, newSession, refresh, signIn, signUp } from './helper.js'

const databaseUrl = await createDatabase(t)
const app = await build(t, databaseUrl)

const signOut = async (token: string, query = '') =>
  await app.inject({ method: 'POST', url: `/auth/sign-out${query}`, headers: bearer(token) })

/** What a client sees of an answer: status, error code and the WWW-Authenticate challenge. */
const outcome = (res: LightMyRequestResponse) => ({
  status: res.statusCode,
  code: res.statusCode >= 400 ? res.json().code : undefined,
  challenge: res.headers['www-authenticate']
})
const unauthorized = (code: string) => ({ status: 401, code, challenge: /^Bearer/ })

t.test('sign-out → 204 with an empty body; that refresh token → 401 TOKEN_REVOKED', async (t) => {
  const { refresh_token: token } = await newSession(app)
  const res = await app.inject({
    method: 'POST',
    url: '/auth/sign-out',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` }
  })
  t.equal(res.statusCode, 204)
  t.equal(res.body, '')
  t.match(outcome(await refresh(app, token)), unauthorized('TOKEN_REVOKED'))
})

t.test('sign-out ends only that session: another session of the same user keeps working', async (t) => {
  const user = await signUp(app)
  const laptop = await signIn(app, user.email)
  const phone = await signIn(app, user.email)
  t.equal((await signOut(laptop.refresh_token)).statusCode, 204)
  t.equal((await refresh(app, phone.refresh_token)).statusCode, 200)
})

t.test('sign-out ?scope=all ends every session of the user, and no one else\'s', async (t) => {
  const user = await signUp(app)
  const sessions = [await signIn(app, user.email), await signIn(app, user.email), await signIn(app, user.email)]
  const bystander = await newSession(app)
  t.equal((await signOut(sessions[1].refresh_token, '?scope=all')).statusCode, 204)
  for (const [i, s] of sessions.entries()) {
    t.match(outcome(await refresh(app, s.refresh_token)), unauthorized('TOKEN_REVOKED'), `session ${i + 1}`)
  }
  const { rows } = await app.pg.query('SELECT count(*)::int AS live FROM sessions WHERE user_id = $1 AND revoked_at IS NULL', [user.id])
  t.equal(rows[0].live, 0, 'no live session left in the database')
  t.equal((await refresh(app, bystander.refresh_token)).statusCode, 200, 'another user is untouched')
})

t.test('signing out twice with one token → the second is 401 TOKEN_REVOKED', async (t) => {
  const { refresh_token: token } = await newSession(app)
  t.equal((await signOut(token)).statusCode, 204)
  t.match(outcome(await signOut(token)), unauthorized('TOKEN_REVOKED'))
})

t.test('a token of an ended session cannot end the others with ?scope=all', async (t) => {
  const user = await signUp(app)
  const ended = await signIn(app, user.email)
  const live = await signIn(app, user.email)
  t.equal((await signOut(ended.refresh_token)).statusCode, 204)
  t.match(outcome(await signOut(ended.refresh_token, '?scope=all')), unauthorized('TOKEN_REVOKED'))
  t.equal((await refresh(app, live.refresh_token)).statusCode, 200, 'the live session goes on')
})

t.test('a forged token with a real sid and sub (another secret) → 401 and changes nothing', async (t) => {
  const { refresh_token: token } = await newSession(app)
  const forge = createSigner({ key: 'another-secret-that-is-long-enough-9876543210', algorithm: 'HS256' })
  const forged = forge(claimsOf(token))
  t.match(outcome(await signOut(forged)), unauthorized('TOKEN_INVALID'))
  t.match(outcome(await signOut(forged, '?scope=all')), unauthorized('TOKEN_INVALID'))
  const { rows } = await app.pg.query('SELECT revoked_at FROM sessions WHERE id = $1', [claimsOf(token).sid])
  t.equal(rows[0].revoked_at, null)
  t.equal((await refresh(app, token)).statusCode, 200, 'the session still refreshes')
})

t.test('sign-out with an access token → 401 TOKEN_INVALID', async (t) => {
  const session = await newSession(app)
  t.match(outcome(await signOut(session.access_token)), unauthorized('TOKEN_INVALID'))
  t.equal((await refresh(app, session.refresh_token)).statusCode, 200, 'the session goes on')
})

t.test('sign-out without a token → 401 TOKEN_MISSING', async (t) => {
  t.match(outcome(await app.inject({ method: 'POST', url: '/auth/sign-out' })), unauthorized('TOKEN_MISSING'))
})

t.test('sign-out ?scope=bogus → 400 VALIDATION_FAILED, and the session goes on', async (t) => {
  const { refresh_token: token } = await newSession(app)
  const res = await signOut(token, '?scope=bogus')
  t.equal(res.statusCode, 400)
  t.equal(res.json().code, 'VALIDATION_FAILED')
  t.equal((await refresh(app, token)).statusCode, 200)
})

t.test('sign-out with the refresh token in the JSON body → 204', async (t) => {
  const { refresh_token: token } = await newSession(app)
  const res = await app.inject({ method: 'POST', url: '/auth/sign-out', payload: { refresh_token: token } })
  t.equal(res.statusCode, 204)
  t.match(outcome(await refresh(app, token)), unauthorized('TOKEN_REVOKED'))
})
