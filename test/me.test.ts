import t from 'tap'
import { createSigner } from 'fast-jwt'
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import { bearer, build, claimsOf, createDatabase, newSession, signIn, signUp, SECRET } from './helper.js'

const databaseUrl = await createDatabase(t)
const app = await build(t, databaseUrl)
// JWT_AUDIENCE set, on a database of its own (an embedded database serves one app).
const audApp = await build(t, await createDatabase(t), { JWT_AUDIENCE: 'svc-a' })

const sign = createSigner({ key: SECRET, algorithm: 'HS256' })
const now = () => Math.floor(Date.now() / 1000)
const b64 = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url')

const me = async (authorization?: string, on: FastifyInstance = app) =>
  await on.inject({ method: 'GET', url: '/auth/me', headers: authorization === undefined ? {} : { authorization } })

/** What a client sees of an answer: status, error code and the WWW-Authenticate challenge. */
const outcome = (res: LightMyRequestResponse) => ({
  status: res.statusCode,
  code: res.statusCode >= 400 ? res.json().code : undefined,
  challenge: res.headers['www-authenticate']
})
const unauthorized = (code?: string) => ({ status: 401, challenge: /^Bearer/, ...(code !== undefined ? { code } : {}) })

/** The claims of a real access token, minus `drop`, plus `change`, signed with the service's secret. */
const resigned = (token: string, change: Record<string, unknown> = {}, drop: string[] = []) => {
  const claims = { ...claimsOf(token), ...change }
  for (const name of drop) delete claims[name]
  return sign(claims)
}

t.test('me → 200 with exactly id, username, email, email_verified, mfa_enabled and an ISO 8601 created_at', async (t) => {
  const user = await signUp(app, { name: 'Me Myself' })
  const { access_token: token } = await signIn(app, user.email)
  const res = await me(`Bearer ${token}`)
  t.equal(res.statusCode, 200)
  t.equal(res.headers['content-type'], 'application/json; charset=utf-8')
  const body = res.json()
  t.same(Object.keys(body).sort(), ['created_at', 'email', 'email_verified', 'id', 'mfa_enabled', 'username'])
  t.match(body, { id: user.id, username: 'Me Myself', email: user.email, email_verified: false, mfa_enabled: false })
  t.match(body.created_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/)
  t.ok(Math.abs(Date.parse(body.created_at) - Date.now()) < 60_000, 'created_at is the sign-up time')
})

t.test('the Authorization scheme is case-insensitive and may be followed by several spaces → 200', async (t) => {
  const { access_token: token } = await newSession(app)
  for (const header of [`bearer ${token}`, `BEARER ${token}`, `BeArEr ${token}`, `Bearer    ${token}`]) {
    t.equal((await me(header)).statusCode, 200, header.slice(0, 12))
  }
})

t.test('anything after the token → 401', async (t) => {
  const { access_token: token } = await newSession(app)
  t.match(outcome(await me(`Bearer ${token} extra`)), unauthorized())
  t.match(outcome(await me(`Bearer ${token} ${token}`)), unauthorized())
})

t.test('a scheme other than Bearer, or no token after it → 401 TOKEN_MISSING', async (t) => {
  const { access_token: token } = await newSession(app)
  t.match(outcome(await me('Basic dXNlcjpwYXNz')), unauthorized('TOKEN_MISSING'))
  t.match(outcome(await me(`Token ${token}`)), unauthorized('TOKEN_MISSING'))
  t.match(outcome(await me('Bearer')), unauthorized('TOKEN_MISSING'))
})

t.test('no Authorization header → 401 TOKEN_MISSING', async (t) => {
  t.match(outcome(await me()), unauthorized('TOKEN_MISSING'))
})

t.test('me with a refresh token → 401 TOKEN_INVALID', async (t) => {
  const { refresh_token: token } = await newSession(app)
  t.match(outcome(await me(`Bearer ${token}`)), unauthorized('TOKEN_INVALID'))
})

t.test('me with an expired access token → 401 TOKEN_EXPIRED', async (t) => {
  const { access_token: token } = await newSession(app)
  t.match(outcome(await me(`Bearer ${resigned(token, { iat: now() - 1000, exp: now() - 100 })}`)), unauthorized('TOKEN_EXPIRED'))
})

t.test('an access token accepted (and remembered) while valid → 401 TOKEN_EXPIRED once it expires', async (t) => {
  const session = await newSession(app)
  const exp = now() + 2
  const token = resigned(session.access_token, { exp })
  t.equal((await me(`Bearer ${token}`)).statusCode, 200, 'valid')
  t.equal((await me(`Bearer ${token}`)).statusCode, 200, 'valid again (from the cache of verified tokens)')
  await new Promise((resolve) => setTimeout(resolve, exp * 1000 - Date.now() + 50))
  t.match(outcome(await me(`Bearer ${token}`)), unauthorized('TOKEN_EXPIRED'))
})

t.test('me with a tampered access token → 401 TOKEN_INVALID', async (t) => {
  const { access_token: token } = await newSession(app)
  const other = await newSession(app)
  const [header, payload, signature] = token.split('.')
  const flipped = (signature[0] === 'A' ? 'B' : 'A') + signature.slice(1)
  const otherUser = b64({ ...claimsOf(token), sub: other.user.id })
  t.match(outcome(await me(`Bearer ${header}.${otherUser}.${signature}`)), unauthorized('TOKEN_INVALID'), 'payload')
  t.match(outcome(await me(`Bearer ${header}.${payload}.${flipped}`)), unauthorized('TOKEN_INVALID'), 'signature')
  t.match(outcome(await me('Bearer abc.def.ghi')), unauthorized('TOKEN_INVALID'), 'garbage')
})

t.test('me with an alg "none" token → 401 TOKEN_INVALID', async (t) => {
  const { access_token: token } = await newSession(app)
  const unsigned = `${b64({ alg: 'none', typ: 'JWT' })}.${b64(claimsOf(token))}.`
  t.match(outcome(await me(`Bearer ${unsigned}`)), unauthorized('TOKEN_INVALID'))
})

t.test('a correctly signed token without sid, type, exp or jti → 401 TOKEN_INVALID', async (t) => {
  const { access_token: token } = await newSession(app)
  t.equal((await me(`Bearer ${resigned(token)}`)).statusCode, 200, 'control: re-signed as it is, it works')
  t.match(outcome(await me(`Bearer ${resigned(token, {}, ['sid'])}`)), unauthorized('TOKEN_INVALID'), 'no sid')
  t.match(outcome(await me(`Bearer ${resigned(token, {}, ['type'])}`)), unauthorized('TOKEN_INVALID'), 'no type')
  t.match(outcome(await me(`Bearer ${resigned(token, {}, ['exp'])}`)), unauthorized('TOKEN_INVALID'), 'no exp: a token that never expires is refused')
  t.match(outcome(await me(`Bearer ${resigned(token, {}, ['jti'])}`)), unauthorized('TOKEN_INVALID'), 'no jti')
})

t.test('a correctly signed token from another issuer → 401 TOKEN_INVALID', async (t) => {
  const { access_token: token } = await newSession(app)
  t.match(outcome(await me(`Bearer ${resigned(token, { iss: 'someone-else' })}`)), unauthorized('TOKEN_INVALID'))
})

t.test('JWT_AUDIENCE=svc-a: its own tokens work, a token for svc-b → 401 TOKEN_INVALID', async (t) => {
  const { access_token: token } = await newSession(audApp)
  t.equal((await me(`Bearer ${token}`, audApp)).statusCode, 200)
  t.match(outcome(await me(`Bearer ${resigned(token, { aud: 'svc-b' })}`, audApp)), unauthorized('TOKEN_INVALID'))
})

t.test('JWT_AUDIENCE=svc-a: a token without aud → 401 TOKEN_INVALID', async (t) => {
  const { access_token: token } = await newSession(audApp)
  t.match(outcome(await me(`Bearer ${resigned(token, {}, ['aud'])}`, audApp)), unauthorized('TOKEN_INVALID'))
})

t.test('after sign-out the access token is refused too: 401 TOKEN_REVOKED (test/ended-sessions.test.ts has every way)', async (t) => {
  const session = await newSession(app)
  t.equal((await me(`Bearer ${session.access_token}`)).statusCode, 200)
  const out = await app.inject({ method: 'POST', url: '/auth/sign-out', headers: bearer(session.refresh_token) })
  t.equal(out.statusCode, 204)
  t.match(outcome(await me(`Bearer ${session.access_token}`)), unauthorized('TOKEN_REVOKED'))
})
