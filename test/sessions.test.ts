import t from 'tap'
import { randomUUID } from 'node:crypto'
import type { LightMyRequestResponse } from 'fastify'
import { bearer, build, claimsOf, createDatabase, newSession, refresh, signIn, signUp } from './helper.js'

const databaseUrl = await createDatabase(t)
const app = await build(t, databaseUrl)

const listSessions = async (token?: string) =>
  await app.inject({ method: 'GET', url: '/auth/sessions', headers: token === undefined ? {} : bearer(token) })
const endSession = async (id: string, token?: string) =>
  await app.inject({ method: 'DELETE', url: `/auth/sessions/${id}`, headers: token === undefined ? {} : bearer(token) })
const sidOf = (token: string) => claimsOf(token).sid as string

/** What a client sees of an answer: status, error code and the WWW-Authenticate challenge. */
const outcome = (res: LightMyRequestResponse) => ({
  status: res.statusCode,
  code: res.statusCode >= 400 ? res.json().code : undefined,
  challenge: res.headers['www-authenticate']
})
const unauthorized = (code: string) => ({ status: 401, code, challenge: /^Bearer/ })
const ISO = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/
// Audit rows are written after the answer is sent: give them a moment.
const settle = async () => await new Promise((resolve) => setTimeout(resolve, 150))

t.test('list → 200: exactly the fields, newest first, current marks the asking session', async (t) => {
  const user = await signUp(app)
  const laptop = await signIn(app, user.email, undefined, { 'user-agent': 'laptop-browser/1.0' })
  const phone = await signIn(app, user.email, undefined, { 'user-agent': 'phone-app/2.0' })
  const res = await listSessions(laptop.access_token)
  t.equal(res.statusCode, 200)
  t.equal(res.headers['content-type'], 'application/json; charset=utf-8')
  const sessions = res.json()
  t.same(sessions.map((s: { id: string }) => s.id), [sidOf(phone.access_token), sidOf(laptop.access_token)], 'newest first')
  for (const s of sessions) {
    t.same(Object.keys(s).sort(), ['created_at', 'current', 'expires_at', 'id', 'ip', 'last_used_at', 'user_agent'])
    t.match(s.created_at, ISO)
    t.match(s.last_used_at, ISO)
    t.match(s.expires_at, ISO)
    t.ok(Date.parse(s.expires_at) > Date.now(), 'expires in the future')
    t.equal(s.ip, '127.0.0.1')
  }
  t.match(sessions, [
    { user_agent: 'phone-app/2.0', current: false },
    { user_agent: 'laptop-browser/1.0', current: true }
  ])
  const fromPhone = (await listSessions(phone.access_token)).json()
  t.same(fromPhone.map((s: { current: boolean }) => s.current), [true, false], 'current follows the token')
})

t.test('a session without a user agent lists user_agent null', async (t) => {
  const user = await signUp(app)
  // light-my-request sends its own User-Agent unless told otherwise.
  const res = await app.inject({ method: 'POST', url: '/auth/sign-in', headers: { 'user-agent': undefined }, payload: { email: user.email, password: user.password } })
  const session = res.json()
  const [listed] = (await listSessions(session.access_token)).json()
  t.equal(listed.user_agent, null)
})

t.test('ended and expired sessions are not listed, nor other users\' sessions', async (t) => {
  const user = await signUp(app)
  const live = await signIn(app, user.email)
  const signedOut = await signIn(app, user.email)
  const expired = await signIn(app, user.email)
  await newSession(app) // another user
  await app.inject({ method: 'POST', url: '/auth/sign-out', headers: bearer(signedOut.refresh_token) })
  await app.pg.query("UPDATE sessions SET expires_at = now() - interval '1 second' WHERE id = $1", [sidOf(expired.refresh_token)])
  const sessions = (await listSessions(live.access_token)).json()
  t.same(sessions.map((s: { id: string }) => s.id), [sidOf(live.access_token)])
})

t.test('list without a token → 401 TOKEN_MISSING; with a refresh token → 401 TOKEN_INVALID', async (t) => {
  const session = await newSession(app)
  t.match(outcome(await listSessions()), unauthorized('TOKEN_MISSING'))
  t.match(outcome(await listSessions(session.refresh_token)), unauthorized('TOKEN_INVALID'))
})

t.test('ending another of one\'s sessions → 204: its refresh token → 401 TOKEN_REVOKED, the asking session goes on', async (t) => {
  const user = await signUp(app)
  const laptop = await signIn(app, user.email)
  const phone = await signIn(app, user.email)
  const res = await endSession(sidOf(phone.refresh_token), laptop.access_token)
  t.equal(res.statusCode, 204)
  t.equal(res.body, '')
  t.match(outcome(await refresh(app, phone.refresh_token)), unauthorized('TOKEN_REVOKED'))
  t.equal((await refresh(app, laptop.refresh_token)).statusCode, 200, 'the other session still refreshes')
  const listed = (await listSessions(laptop.access_token)).json()
  t.same(listed.map((s: { id: string }) => s.id), [sidOf(laptop.access_token)], 'no longer listed')
})

t.test('ending one\'s current session → 204; its refresh and access tokens stop working', async (t) => {
  const session = await newSession(app)
  t.equal((await endSession(sidOf(session.access_token), session.access_token)).statusCode, 204)
  t.match(outcome(await refresh(app, session.refresh_token)), unauthorized('TOKEN_REVOKED'))
  t.match(outcome(await app.inject({ method: 'GET', url: '/auth/me', headers: bearer(session.access_token) })), unauthorized('TOKEN_REVOKED'),
    'the access token too (test/ended-sessions.test.ts: on every replica)')
})

t.test('another user\'s session id → 404 NOT_FOUND, and that session still works', async (t) => {
  const mine = await newSession(app)
  const theirs = await newSession(app)
  const res = await endSession(sidOf(theirs.refresh_token), mine.access_token)
  t.equal(res.statusCode, 404)
  t.equal(res.json().code, 'NOT_FOUND')
  t.equal((await refresh(app, theirs.refresh_token)).statusCode, 200)
})

t.test('an unknown id or an already ended session → 404 NOT_FOUND', async (t) => {
  const user = await signUp(app)
  const session = await signIn(app, user.email)
  const other = await signIn(app, user.email)
  t.match(outcome(await endSession(randomUUID(), session.access_token)), { status: 404, code: 'NOT_FOUND' })
  t.equal((await endSession(sidOf(other.refresh_token), session.access_token)).statusCode, 204)
  t.match(outcome(await endSession(sidOf(other.refresh_token), session.access_token)), { status: 404, code: 'NOT_FOUND' }, 'twice')
})

t.test('a malformed id → 400 VALIDATION_FAILED', async (t) => {
  const session = await newSession(app)
  t.match(outcome(await endSession('abc', session.access_token)), { status: 400, code: 'VALIDATION_FAILED' })
  // The uuid format allows a urn:uuid: prefix that PostgreSQL refuses (a 500 before).
  t.match(outcome(await endSession(`urn:uuid:${sidOf(session.access_token)}`, session.access_token)), { status: 400, code: 'VALIDATION_FAILED' })
  // Longer than the router's limit for a path parameter.
  t.match(outcome(await endSession('a'.repeat(101), session.access_token)), { status: 400, code: 'VALIDATION_FAILED' })
})

t.test('ending a session without a token → 401 TOKEN_MISSING; with a refresh token → 401 TOKEN_INVALID; nothing ends', async (t) => {
  const session = await newSession(app)
  const sid = sidOf(session.refresh_token)
  t.match(outcome(await endSession(sid)), unauthorized('TOKEN_MISSING'))
  t.match(outcome(await endSession(sid, session.refresh_token)), unauthorized('TOKEN_INVALID'))
  t.equal((await refresh(app, session.refresh_token)).statusCode, 200, 'the session goes on')
})

t.test('ending a session is audited as session-revoke, naming the ended session', async (t) => {
  const user = await signUp(app)
  const laptop = await signIn(app, user.email)
  const phone = await signIn(app, user.email)
  await endSession(sidOf(phone.refresh_token), laptop.access_token)
  await settle()
  const { rows } = await app.pg.query("SELECT session_id FROM audit_events WHERE user_id = $1 AND event = 'session-revoke'", [user.id])
  t.same(rows.map((r) => r.session_id), [sidOf(phone.refresh_token)])
})
