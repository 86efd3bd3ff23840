import t from 'tap'
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import { buildApp } from '../src/app.js'
import { ConfigError } from '../src/config.js'
import { bearer, build, claimsOf, createDatabase, newSession, PASSWORD, refresh, signIn, signUp, testEnv, uniqueEmail } from './helper.js'
import { linkParts, startMailbox, to } from './mailbox.js'
import { codeFor, freshStep } from './totp.js'

// The admin API (ADMIN_API_KEYS) and token introspection: every operation, its errors, bans.

const KEY = 'admin-key-for-tests-0123456789abcdefghijklmnop'
const OLD_KEY = 'an-older-admin-key-still-accepted-0123456789'
const mailbox = await startMailbox(t)
const url = await createDatabase(t)
const app = await build(t, url, { ADMIN_API_KEYS: `${KEY}, ${OLD_KEY}`, SMTP_URL: mailbox.url })
const admin = bearer(KEY)
const sleep = async (ms: number) => await new Promise((resolve) => setTimeout(resolve, ms))

type Method = 'GET' | 'POST' | 'PATCH' | 'DELETE'
const call = async (method: Method, path: string, payload?: object, headers: Record<string, string> = admin, a: FastifyInstance = app) =>
  await a.inject({ method, url: path, ...(payload !== undefined ? { payload } : {}), headers })
const outcome = (res: LightMyRequestResponse) => ({ status: res.statusCode, code: res.statusCode >= 400 ? res.json().code : undefined })
const me = async (access: string) => await app.inject({ method: 'GET', url: '/auth/me', headers: bearer(access) })
const signInStatus = async (email: string, password = PASSWORD) =>
  outcome(await app.inject({ method: 'POST', url: '/auth/sign-in', payload: { email, password } }))
const events = async (userId: string): Promise<string[]> => {
  await sleep(150) // audit rows are written just after the answer
  return (await call('GET', `/admin/audit?user_id=${userId}`)).json().events.map((e: { event: string }) => e.event)
}

t.test('without ADMIN_API_KEYS the admin paths and introspection do not exist, nor in the docs', async (t) => {
  const plain = await build(t, url)
  for (const [method, path] of [['GET', '/admin/users'], ['GET', '/admin/audit'], ['POST', '/admin/users'], ['POST', '/auth/introspect']] as const) {
    t.same(outcome(await call(method, path, method === 'POST' ? {} : undefined, admin, plain)), { status: 404, code: 'NOT_FOUND' }, `${method} ${path}`)
  }
  const doc = (await plain.inject({ url: '/docs/json' })).json()
  t.notOk(Object.keys(doc.paths).some((p) => p.startsWith('/admin') || p === '/auth/introspect'))
  t.notOk(doc.tags.some((tag: { name: string }) => tag.name === 'admin'))
  t.notOk('adminKey' in doc.components.securitySchemes)
  const documented = (await app.inject({ url: '/docs/json' })).json()
  t.ok(documented.paths['/admin/users/{id}'].patch, 'with keys they are documented')
})

t.test('a key shorter than 32 bytes stops the start, naming the setting and not the key', async (t) => {
  await t.rejects(buildApp(testEnv(url, { ADMIN_API_KEYS: `${KEY},short-key` })), { name: 'ConfigError', message: /^ADMIN_API_KEYS: each key/ })
  t.ok(ConfigError)
})

t.test('the key: missing → 401 TOKEN_MISSING; wrong, or a user\'s token → 401 TOKEN_INVALID; every listed key opens', async (t) => {
  const session = await newSession(app)
  t.same(outcome(await call('GET', '/admin/users', undefined, {})), { status: 401, code: 'TOKEN_MISSING' })
  t.same(outcome(await call('GET', '/admin/users', undefined, bearer(KEY + 'x'))), { status: 401, code: 'TOKEN_INVALID' })
  t.same(outcome(await call('GET', '/admin/users', undefined, bearer(session.access_token))), { status: 401, code: 'TOKEN_INVALID' }, 'an access token')
  t.same(outcome(await call('GET', '/admin/users', undefined, bearer(session.refresh_token))), { status: 401, code: 'TOKEN_INVALID' }, 'a refresh token')
  t.equal((await call('GET', '/admin/users', undefined, bearer(OLD_KEY))).statusCode, 200, 'the second key')
  t.equal((await call('GET', '/admin/users', undefined, { authorization: `bearer   ${KEY}` })).statusCode, 200, 'scheme in any case')
  t.same(outcome(await me(KEY)), { status: 401, code: 'TOKEN_INVALID' }, 'an admin key is no user token')
  t.same(outcome(await call('POST', '/admin/users', { name: 'x', email: uniqueEmail(), password: PASSWORD }, {})), { status: 401, code: 'TOKEN_MISSING' }, 'no change without a key')
})

t.test('create: 201 with the user; 409 for a taken email; 400 for bad fields', async (t) => {
  const email = uniqueEmail('Created')
  const res = await call('POST', '/admin/users', { name: ' Ada ', email: ` ${email} `, password: PASSWORD, email_verified: true })
  t.equal(res.statusCode, 201)
  const user = res.json()
  t.match(user, { username: 'Ada', email: email.toLowerCase(), email_verified: true, mfa_enabled: false, banned_until: null, last_sign_in_at: null })
  t.match(user.created_at, /^\d{4}-\d\d-\d\dT.*Z$/)
  t.same(Object.keys(user).sort(), ['banned_until', 'created_at', 'email', 'email_verified', 'id', 'last_sign_in_at', 'mfa_enabled', 'username'])
  t.same(await signInStatus(email), { status: 200, code: undefined }, 'signs in with that password')
  t.match((await call('GET', `/admin/users/${user.id as string}`)).json(), { last_sign_in_at: /Z$/ }, 'the sign-in is shown')
  t.same(outcome(await call('POST', '/admin/users', { name: 'Again', email: email.toUpperCase(), password: PASSWORD })), { status: 409, code: 'EMAIL_TAKEN' })
  for (const body of [{ name: 'x', email: 'not-an-email', password: PASSWORD }, { name: '', email: uniqueEmail(), password: PASSWORD },
    { name: 'x', email: uniqueEmail(), password: 'short' },
    { name: 'x', email: uniqueEmail(), password: PASSWORD, email_verified: 'yes' }, { email: uniqueEmail(), password: PASSWORD }]) {
    t.same(outcome(await call('POST', '/admin/users', body)), { status: 400, code: 'VALIDATION_FAILED' }, JSON.stringify(body))
  }
})

t.test('create without a password: a reset-password link is mailed; it sets the password and confirms the address', async (t) => {
  const email = uniqueEmail('invited')
  const res = await call('POST', '/admin/users', { name: 'Invited', email })
  t.equal(res.statusCode, 201)
  t.equal(res.json().email_verified, false)
  const mail = await mailbox.waitFor(to(email, 'reset-password'))
  const reset = await app.inject({ method: 'POST', url: '/auth/password/reset', payload: { token: linkParts(mail.link).token, new_password: 'chosen by the invitee' } })
  t.equal(reset.statusCode, 204)
  t.same(await signInStatus(email, 'chosen by the invitee'), { status: 200, code: undefined })
  t.equal((await call('GET', `/admin/users/${res.json().id as string}`)).json().email_verified, true)
  t.same(await events(res.json().id), ['sign-in', 'password-reset', 'admin-user-create'], 'audited, newest first')
})

t.test('list: newest first, keyset pages that neither skip nor repeat while users sign up; an email prefix', async (t) => {
  const prefix = `page-${Date.now()}`
  const made: string[] = []
  for (let i = 0; i < 7; i++) made.push((await signUp(app, { email: `${prefix}-${i}@example.com` })).id)
  const seen: string[] = []
  let cursor: string | null = null
  let pages = 0
  do {
    const res: LightMyRequestResponse = await call('GET', `/admin/users?limit=3&email=${prefix.toUpperCase()}${cursor !== null ? `&cursor=${cursor}` : ''}`)
    t.equal(res.statusCode, 200)
    const body = res.json()
    seen.push(...body.users.map((u: { id: string }) => u.id))
    cursor = body.next_cursor
    pages++
    // Sign-ups between pages: newer than every page, so in none of the later ones.
    await signUp(app, { email: `${prefix}-late-${pages}@example.com` })
  } while (cursor !== null && pages < 10)
  t.equal(pages, 3)
  t.same(seen, [...made].reverse(), 'each once, newest first')
  const all = (await call('GET', '/admin/users?limit=100')).json()
  t.ok(all.users.length > 10)
  t.equal((await call('GET', '/admin/users')).json().users.length, Math.min(50, all.users.length), 'default limit 50')
  for (const q of ['limit=0', 'limit=101', 'limit=abc', 'limit=-1', 'limit=1.5', 'cursor=nonsense', 'cursor=WyJ4Il0', `cursor=${Buffer.from('["2026-01-01 00:00:00+00","x"]').toString('base64url')}`]) {
    t.same(outcome(await call('GET', `/admin/users?${q}`)), { status: 400, code: 'VALIDATION_FAILED' }, q)
  }
  t.same((await call('GET', '/admin/users?email=nobody-has-this-prefix')).json(), { users: [], next_cursor: null })
})

t.test('get: 200, 404 for an unknown id, 400 for a malformed one', async (t) => {
  const user = await signUp(app)
  t.match((await call('GET', `/admin/users/${user.id}`)).json(), { id: user.id, email: user.email, username: user.name })
  t.same(outcome(await call('GET', '/admin/users/00000000-0000-4000-8000-000000000000')), { status: 404, code: 'NOT_FOUND' })
  t.same(outcome(await call('GET', '/admin/users/not-a-uuid')), { status: 400, code: 'VALIDATION_FAILED' })
})

t.test('update: name, email (a new one unverified), verification; 409, 404 and 400', async (t) => {
  const user = await signUp(app)
  const id = user.id
  t.match((await call('PATCH', `/admin/users/${id}`, { name: 'Renamed', email_verified: true })).json(), { username: 'Renamed', email_verified: true })
  const email = uniqueEmail('moved')
  t.match((await call('PATCH', `/admin/users/${id}`, { email: email.toUpperCase() })).json(), { email, email_verified: false }, 'a new address is unverified')
  t.match((await call('PATCH', `/admin/users/${id}`, { email: uniqueEmail('moved'), email_verified: true })).json(), { email_verified: true }, 'unless told')
  t.same(await signInStatus(email), { status: 401, code: 'INVALID_CREDENTIALS' }, 'the address before is not the account\'s any more')
  const other = await signUp(app)
  t.same(outcome(await call('PATCH', `/admin/users/${id}`, { email: other.email })), { status: 409, code: 'EMAIL_TAKEN' })
  t.same(outcome(await call('PATCH', '/admin/users/00000000-0000-4000-8000-000000000000', { name: 'x' })), { status: 404, code: 'NOT_FOUND' })
  for (const body of [{ name: '' }, { email: 'nope' }, { password: 'short' }, { banned_until: 'tomorrow' }, { banned_until: 12 }, {}, { banned_untill: null }]) {
    t.same(outcome(await call('PATCH', `/admin/users/${id}`, body)), { status: 400, code: 'VALIDATION_FAILED' }, JSON.stringify(body))
  }
  t.same(await events(id), ['admin-user-update', 'admin-user-update', 'admin-user-update', 'sign-up'])
})

t.test('a new password ends every session; the old password stops working', async (t) => {
  const s = await newSession(app)
  const id = claimsOf(s.access_token).sub as string
  t.equal((await call('PATCH', `/admin/users/${id}`, { password: 'set by an operator' })).statusCode, 200)
  t.same(outcome(await refresh(app, s.refresh_token)), { status: 401, code: 'TOKEN_REVOKED' })
  t.same(outcome(await me(s.access_token)), { status: 401, code: 'TOKEN_REVOKED' })
  t.same(await signInStatus(s.email), { status: 401, code: 'INVALID_CREDENTIALS' })
  t.same(await signInStatus(s.email, 'set by an operator'), { status: 200, code: undefined })
  t.same((await events(id)).slice(0, 3), ['sign-in', 'sign-in-failed', 'admin-password-set'])
})

t.test('bans: the right password → 403 ACCOUNT_DISABLED, a wrong one 401; sessions end; lifted by null or by time', async (t) => {
  const s = await newSession(app)
  const id = claimsOf(s.access_token).sub as string
  const until = new Date(Date.now() + 3600_000).toISOString()
  const banned = await call('PATCH', `/admin/users/${id}`, { banned_until: until })
  t.equal(banned.json().banned_until, until)
  t.same(outcome(await refresh(app, s.refresh_token)), { status: 401, code: 'TOKEN_REVOKED' }, 'refresh refused')
  t.same(outcome(await me(s.access_token)), { status: 401, code: 'TOKEN_REVOKED' }, 'the access token too')
  t.same(await signInStatus(s.email), { status: 403, code: 'ACCOUNT_DISABLED' })
  t.same(await signInStatus(s.email, 'a wrong password'), { status: 401, code: 'INVALID_CREDENTIALS' }, 'a wrong password learns nothing')
  t.equal((await call('PATCH', `/admin/users/${id}`, { banned_until: null })).json().banned_until, null)
  t.same(await signInStatus(s.email), { status: 200, code: undefined }, 'lifted')
  const past = await call('PATCH', `/admin/users/${id}`, { banned_until: new Date(Date.now() - 1000).toISOString() })
  t.equal(past.statusCode, 200)
  t.same(await signInStatus(s.email), { status: 200, code: undefined }, 'a ban that has run out holds nothing')
  t.same((await events(id)).slice(0, 7), ['sign-in', 'admin-unban', 'sign-in', 'admin-unban', 'sign-in-failed', 'sign-in-disabled', 'admin-ban'])
})

t.test('a ban with TOTP on: the right password → 403 ACCOUNT_DISABLED, not MFA_REQUIRED', async (t) => {
  const s = await newSession(app)
  const id = claimsOf(s.access_token).sub as string
  const { secret } = (await call('POST', '/auth/mfa/totp', { password: PASSWORD }, bearer(s.access_token))).json()
  t.equal((await call('POST', '/auth/mfa/totp/confirm', { code: codeFor(secret, await freshStep()) }, bearer(s.access_token))).statusCode, 200)
  const waiting = await app.inject({ method: 'POST', url: '/auth/sign-in', payload: { email: s.email, password: PASSWORD } })
  t.equal(waiting.json().code, 'MFA_REQUIRED')
  t.equal((await call('PATCH', `/admin/users/${id}`, { banned_until: new Date(Date.now() + 60_000).toISOString() })).statusCode, 200)
  t.same(await signInStatus(s.email), { status: 403, code: 'ACCOUNT_DISABLED' })
  const verify = await app.inject({ method: 'POST', url: '/auth/mfa/verify', payload: { mfa_token: waiting.json().mfa_token, code: '000000' } })
  t.equal(verify.json().code, 'TOKEN_INVALID', 'a sign-in waiting for its code is void')
})

t.test('delete: 204, every session ends, then 404', async (t) => {
  const s = await newSession(app)
  const id = claimsOf(s.access_token).sub as string
  t.equal((await call('DELETE', `/admin/users/${id}`)).statusCode, 204)
  t.same(outcome(await me(s.access_token)), { status: 401, code: 'TOKEN_REVOKED' })
  t.same(outcome(await refresh(app, s.refresh_token)), { status: 401, code: 'TOKEN_REVOKED' })
  t.same(await signInStatus(s.email), { status: 401, code: 'INVALID_CREDENTIALS' })
  t.same(outcome(await call('DELETE', `/admin/users/${id}`)), { status: 404, code: 'NOT_FOUND' })
  t.same(await events(id), ['admin-user-delete', 'sign-in', 'sign-up'], 'the trail keeps the id')
})

t.test('end all sessions: 204, refresh and access tokens refused; the user signs in again; 404 for an unknown id', async (t) => {
  const user = await signUp(app)
  const [one, two] = [await signIn(app, user.email), await signIn(app, user.email)]
  t.equal((await call('DELETE', `/admin/users/${user.id}/sessions`)).statusCode, 204)
  for (const s of [one, two]) {
    t.same(outcome(await refresh(app, s.refresh_token)), { status: 401, code: 'TOKEN_REVOKED' })
    t.same(outcome(await me(s.access_token)), { status: 401, code: 'TOKEN_REVOKED' })
  }
  t.same(await signInStatus(user.email), { status: 200, code: undefined })
  t.same(outcome(await call('DELETE', '/admin/users/00000000-0000-4000-8000-000000000000/sessions')), { status: 404, code: 'NOT_FOUND' })
  t.equal((await events(user.id))[1], 'admin-sessions-end')
})

t.test('remove the second factor: TOTP off, the password alone signs in; idempotent; 404 for an unknown id', async (t) => {
  const s = await newSession(app)
  const id = claimsOf(s.access_token).sub as string
  const { secret } = (await call('POST', '/auth/mfa/totp', { password: PASSWORD }, bearer(s.access_token))).json()
  t.equal((await call('POST', '/auth/mfa/totp/confirm', { code: codeFor(secret, await freshStep()) }, bearer(s.access_token))).statusCode, 200)
  t.equal((await call('GET', `/admin/users/${id}`)).json().mfa_enabled, true)
  t.same(await signInStatus(s.email), { status: 403, code: 'MFA_REQUIRED' })
  t.equal((await call('DELETE', `/admin/users/${id}/mfa`)).statusCode, 204)
  t.equal((await call('GET', `/admin/users/${id}`)).json().mfa_enabled, false)
  t.same(await signInStatus(s.email), { status: 200, code: undefined })
  t.equal((await me(s.access_token)).json().mfa_enabled, false, 'me says so at once')
  t.equal((await call('DELETE', `/admin/users/${id}/mfa`)).statusCode, 204, 'again: nothing to remove')
  t.equal((await call('POST', '/auth/mfa/totp', { password: PASSWORD }, bearer(s.access_token))).statusCode, 200, 'the user may enrol again')
  t.same(outcome(await call('DELETE', '/admin/users/00000000-0000-4000-8000-000000000000/mfa')), { status: 404, code: 'NOT_FOUND' })
  t.ok((await events(id)).includes('admin-mfa-remove'))
})

t.test('the audit trail: newest first, pages by cursor, a user filter; 400 for bad paging', async (t) => {
  const user = await signUp(app)
  for (let i = 0; i < 3; i++) await signIn(app, user.email)
  await sleep(150)
  const first = (await call('GET', `/admin/audit?user_id=${user.id}&limit=2`)).json()
  t.equal(first.events.length, 2)
  t.match(first.events[0], { event: 'sign-in', user_id: user.id, ip: '127.0.0.1', created_at: /Z$/ })
  t.type(first.events[0].id, 'number')
  const second = (await call('GET', `/admin/audit?user_id=${user.id}&limit=2&cursor=${first.next_cursor as string}`)).json()
  t.same(second.events.map((e: { event: string }) => e.event), ['sign-in', 'sign-up'])
  t.equal(second.next_cursor, null)
  t.ok(first.events[1].id > second.events[0].id)
  t.ok((await call('GET', '/admin/audit')).json().events.length > 0)
  for (const q of ['limit=0', 'limit=500', 'user_id=nope', 'cursor=abc']) {
    t.same(outcome(await call('GET', `/admin/audit?${q}`)), { status: 400, code: 'VALIDATION_FAILED' }, q)
  }
})

t.test('introspection (RFC 7662): form-encoded or JSON; active only for a valid token of a live session', async (t) => {
  const introspect = async (token: string, form = true, headers = admin) => await app.inject({
    method: 'POST',
    url: '/auth/introspect',
    headers: { ...headers, 'content-type': form ? 'application/x-www-form-urlencoded' : 'application/json' },
    payload: form ? new URLSearchParams({ token }).toString() : JSON.stringify({ token })
  })
  const s = await newSession(app)
  const claims = claimsOf(s.access_token)
  const active = await introspect(s.access_token)
  t.equal(active.statusCode, 200)
  t.equal(active.headers['cache-control'], 'no-store')
  t.same(active.json(), { active: true, sub: claims.sub, sid: claims.sid, token_type: 'access', exp: claims.exp, iat: claims.iat, iss: claims.iss, jti: claims.jti, amr: ['pwd'] })
  t.match((await introspect(s.refresh_token, false)).json(), { active: true, token_type: 'refresh', sid: claims.sid }, 'JSON, a refresh token')
  const next = (await refresh(app, s.refresh_token)).json()
  t.same((await introspect(s.refresh_token)).json(), { active: false }, 'a rotated refresh token')
  t.equal((await introspect(next.refresh_token)).json().active, true, 'its successor')
  t.equal((await app.inject({ method: 'POST', url: '/auth/sign-out', headers: bearer(next.refresh_token) })).statusCode, 204)
  t.same((await introspect(s.access_token)).json(), { active: false }, 'the session ended')
  t.same((await introspect(next.refresh_token)).json(), { active: false })
  for (const token of ['garbage', s.access_token.slice(0, -3) + 'AAA', 'a.b.c']) t.same((await introspect(token)).json(), { active: false }, token)
  t.same(outcome(await introspect(s.access_token, true, { authorization: '' })), { status: 401, code: 'TOKEN_MISSING' })
  t.same(outcome(await introspect(s.access_token, true, bearer((await newSession(app)).access_token))), { status: 401, code: 'TOKEN_INVALID' }, 'a user token does not open it')
  const post = async (payload: string, type: string) => outcome(await app.inject({ method: 'POST', url: '/auth/introspect', headers: { ...admin, 'content-type': type }, payload }))
  t.same(await post('', 'application/x-www-form-urlencoded'), { status: 400, code: 'VALIDATION_FAILED' }, 'no token')
  t.same(await post('token=a&token=b', 'application/x-www-form-urlencoded'), { status: 400, code: 'VALIDATION_FAILED' }, 'two tokens')
  t.same(await post('token=a', 'text/plain'), { status: 415, code: 'UNSUPPORTED_MEDIA_TYPE' })
  t.same(await post('{"token": 5}', 'application/json'), { status: 400, code: 'VALIDATION_FAILED' })
  t.same(outcome(await app.inject({ method: 'POST', url: '/auth/sign-in', headers: { 'content-type': 'application/x-www-form-urlencoded' }, payload: 'email=a&password=b' })),
    { status: 415, code: 'UNSUPPORTED_MEDIA_TYPE' }, 'form bodies only here')
})

t.test('races: sign-ins with the old password around a new one, verifies around a ban: no session outlives the change, no deadlock', async (t) => {
  const user = await signUp(app)
  const signInOld = async () => (await app.inject({ method: 'POST', url: '/auth/sign-in', payload: { email: user.email, password: PASSWORD } })).statusCode
  const first = Array.from({ length: 8 }, signInOld)
  const patched = call('PATCH', `/admin/users/${user.id}`, { password: 'set by an operator' })
  const after = Array.from({ length: 8 }, signInOld)
  const statuses = await Promise.all([...first, ...after])
  t.equal((await patched).statusCode, 200)
  t.ok(statuses.every((s) => s === 200 || s === 401), `sign-ins answered ${[...new Set(statuses)].join(', ')}`)
  const live = async (id: string) => (await app.pg.query('SELECT count(*)::int AS n FROM sessions WHERE user_id = $1 AND revoked_at IS NULL', [id])).rows[0].n
  t.equal(await live(user.id), 0, 'every session made with the old password has ended')

  // TOTP on, five sign-ins waiting for their code; their verifies race a ban.
  const s = await newSession(app)
  const id = claimsOf(s.access_token).sub as string
  const { secret } = (await call('POST', '/auth/mfa/totp', { password: PASSWORD }, bearer(s.access_token))).json()
  const confirmed = await call('POST', '/auth/mfa/totp/confirm', { code: codeFor(secret, await freshStep()) }, bearer(s.access_token))
  const codes: string[] = confirmed.json().recovery_codes
  const tokens: string[] = []
  for (let i = 0; i < 5; i++) tokens.push((await app.inject({ method: 'POST', url: '/auth/sign-in', payload: { email: s.email, password: PASSWORD } })).json().mfa_token)
  const verifies = tokens.map(async (mfaToken, i) => (await app.inject({ method: 'POST', url: '/auth/mfa/verify', payload: { mfa_token: mfaToken, code: codes[i] } })).statusCode)
  const ban = call('PATCH', `/admin/users/${id}`, { banned_until: new Date(Date.now() + 60_000).toISOString() })
  const answers = await Promise.all(verifies)
  t.equal((await ban).statusCode, 200, 'the ban is applied (no deadlock)')
  t.ok(answers.every((a) => a === 200 || a === 401), `verifies answered ${[...new Set(answers)].join(', ')}`)
  t.equal(await live(id), 0, 'no session outlives the ban')
})
