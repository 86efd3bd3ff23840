import t from 'tap'
import { build, claimsOf, createDatabase, PASSWORD, signUp, uniqueEmail } from './helper.js'

const databaseUrl = await createDatabase(t)
const app = await build(t, databaseUrl)

const signIn = async (payload: unknown) => await app.inject({ method: 'POST', url: '/auth/sign-in', payload: payload as object })

t.test('the original curl call → 200 with tokens and the user', async (t) => {
  const user = await signUp(app, { name: 'usuario_test' })
  const res = await app.inject({
    method: 'POST',
    url: '/auth/sign-in',
    headers: { 'content-type': 'application/json' },
    payload: JSON.stringify({ email: user.email, password: PASSWORD })
  })
  t.equal(res.statusCode, 200)
  t.equal(res.headers['cache-control'], 'no-store', 'token responses are not cached')
  const body = res.json()
  t.same(Object.keys(body).sort(), ['access_token', 'expires_in', 'refresh_token', 'token_type', 'user'])
  t.equal(body.token_type, 'Bearer')
  t.equal(body.expires_in, 900)
  t.same(body.user, { id: user.id, username: 'usuario_test' })
  const access = claimsOf(body.access_token)
  const refresh = claimsOf(body.refresh_token)
  t.match(access, { sub: user.id, type: 'access', iss: 'auth-service', sid: String, jti: String, iat: Number, exp: Number })
  t.match(refresh, { sub: user.id, type: 'refresh', sid: access.sid })
  t.equal(JSON.parse(Buffer.from(body.access_token.split('.')[0], 'base64url').toString()).alg, 'HS256')
})

t.test('the email is matched case-insensitively and trimmed', async (t) => {
  const user = await signUp(app)
  t.equal((await signIn({ email: `  ${user.email.toUpperCase()} `, password: PASSWORD })).statusCode, 200)
})

t.test('each sign-in creates its own server-side session', async (t) => {
  const user = await signUp(app)
  const a = (await signIn({ email: user.email, password: PASSWORD })).json()
  const b = (await signIn({ email: user.email, password: PASSWORD })).json()
  t.not(claimsOf(a.refresh_token).sid, claimsOf(b.refresh_token).sid)
  const { rows } = await app.pg.query('SELECT count(*)::int AS n FROM sessions WHERE user_id = $1', [user.id])
  t.equal(rows[0].n, 2)
})

t.test('a wrong password and an unknown email → the same 401 INVALID_CREDENTIALS', async (t) => {
  const user = await signUp(app)
  const wrong = await signIn({ email: user.email, password: 'not the password at all' })
  const unknown = await signIn({ email: uniqueEmail('nobody'), password: 'not the password at all' })
  for (const res of [wrong, unknown]) {
    t.equal(res.statusCode, 401)
    t.equal(res.json().code, 'INVALID_CREDENTIALS')
    t.match(res.headers['www-authenticate'], /^Bearer/)
  }
  t.same(wrong.json(), unknown.json(), 'identical bodies')
})

t.test('invalid bodies → 400 VALIDATION_FAILED', async (t) => {
  const bodies = [
    {}, { email: 'a@b.co' }, { email: 5, password: PASSWORD }, { email: 'a@b.co', password: '' }, { email: 'a@b.co', password: 'x'.repeat(1025) },
    // Found by the fuzz test: a NUL reached PostgreSQL and came back as a 500.
    { email: '\u0000a@b.co', password: PASSWORD }, { email: 'a\ud800@b.co', password: PASSWORD }
  ]
  for (const payload of bodies) {
    const res = await signIn(payload)
    t.equal(res.statusCode, 400, JSON.stringify(payload).slice(0, 60))
    t.equal(res.json().code, 'VALIDATION_FAILED')
  }
})

t.test('a hash made with older argon2 parameters is upgraded at the next successful sign-in', async (t) => {
  const weak = await build(t, await createDatabase(t), { ARGON2_MEMORY_KIB: '4096', ARGON2_ITERATIONS: '1' })
  const user = await signUp(weak)
  await weak.close()
  const current = await build(t, weak.config.DATABASE_URL as string) // the same database, today's parameters
  const hashOf = async () => (await current.pg.query('SELECT password_hash FROM users WHERE id = $1', [user.id])).rows[0].password_hash as string
  const signInNow = async (password: string) => await current.inject({ method: 'POST', url: '/auth/sign-in', payload: { email: user.email, password } })
  t.match(await hashOf(), /\$m=4096,t=1,p=1\$/)
  t.equal((await signInNow('wrong password here')).statusCode, 401)
  t.match(await hashOf(), /\$m=4096,t=1,p=1\$/, 'a failed sign-in changes nothing')
  t.equal((await signInNow(PASSWORD)).statusCode, 200)
  t.match(await hashOf(), /\$m=19456,t=2,p=1\$/, 'upgraded to the configured parameters')
  t.equal((await signInNow(PASSWORD)).statusCode, 200, 'the new hash verifies')
})

t.test('a stored hash with absurd parameters is refused, not computed', async (t) => {
  const user = await signUp(app)
  // m = 4 GiB: computing it would take the process down.
  await app.pg.query("UPDATE users SET password_hash = '$argon2id$v=19$m=4194304,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$MUCXoFZpQ3os2452dutG7FQ9LY6K+yAe+M5Dp/4LaMw' WHERE id = $1", [user.id])
  const res = await signIn({ email: user.email, password: PASSWORD })
  t.equal(res.statusCode, 401)
  t.equal(res.json().code, 'INVALID_CREDENTIALS')
})

t.test('a password longer than the policy minimum set later still signs in (policy applies to new passwords)', async (t) => {
  const lenient = await build(t, await createDatabase(t))
  const user = await signUp(lenient, { password: 'eightchr' + 'X' })
  await lenient.close()
  const strict = await build(t, lenient.config.DATABASE_URL as string, { PASSWORD_MIN_LENGTH: '12' })
  const res = await strict.inject({ method: 'POST', url: '/auth/sign-in', payload: { email: user.email, password: 'eightchrX' } })
  t.equal(res.statusCode, 200)
})

// Eight, not more: the estimate is real time, and test files hashing in parallel slow every
// hash down; eight are refused only by an estimate of over a third of a second per hash.
t.test('a burst right after start: 8 concurrent sign-ins are all served, none refused', async (t) => {
  const databaseUrl = await createDatabase(t)
  const first = await build(t, databaseUrl)
  const user = await signUp(first)
  await first.close()
  const fresh = await build(t, databaseUrl)
  const results = await Promise.all(Array.from({ length: 8 }, async () =>
    await fresh.inject({ method: 'POST', url: '/auth/sign-in', payload: { email: user.email, password: PASSWORD } })))
  t.same(results.map((r) => r.statusCode), results.map(() => 200))
})

t.test('more sign-ins than hashing can serve within a second → the excess gets 503 with Retry-After at once', async (t) => {
  // Slow hashing (t=20, 64 MiB) so that 40 simultaneous sign-ins queue up far more than a second
  // of work on a fast machine too (t=20 alone took 40 ms a hash on one: nothing was refused).
  const slow = await build(t, await createDatabase(t), { ARGON2_ITERATIONS: '20', ARGON2_MEMORY_KIB: '65536' })
  const results = await Promise.all(Array.from({ length: 40 }, async () =>
    await slow.inject({ method: 'POST', url: '/auth/sign-in', payload: { email: uniqueEmail('crowd'), password: 'some password here' } })))
  const refused = results.filter((r) => r.statusCode === 503)
  const served = results.filter((r) => r.statusCode === 401)
  t.equal(refused.length + served.length, 40, 'every request is either served or refused')
  t.ok(refused.length > 0, `some refused (${refused.length})`)
  t.ok(served.length >= 2, `some served (${served.length})`)
  t.ok(refused.every((r) => r.json().code === 'SERVICE_UNAVAILABLE' && Number(r.headers['retry-after']) >= 1))
})
