import t from 'tap'
import { build, createDatabase, PASSWORD, uniqueEmail } from './helper.js'

const databaseUrl = await createDatabase(t)
const app = await build(t, databaseUrl)

const signUp = async (payload: unknown) => await app.inject({ method: 'POST', url: '/auth/sign-up', payload: payload as object })

t.test('the original curl call (with a policy-meeting password) → 201 with the user', async (t) => {
  const email = uniqueEmail('test')
  const res = await app.inject({
    method: 'POST',
    url: '/auth/sign-up',
    headers: { 'content-type': 'application/json' },
    payload: JSON.stringify({ name: 'usuario_test', email, password: PASSWORD })
  })
  t.equal(res.statusCode, 201)
  t.equal(res.headers['content-type'], 'application/json; charset=utf-8')
  const body = res.json()
  t.equal(body.msg, 'User registered successfully')
  t.match(body.user, { id: String, username: 'usuario_test', email, email_verified: false })
  t.same(Object.keys(body.user).sort(), ['email', 'email_verified', 'id', 'username'], 'no hash or other field leaves')
})

t.test('sign-up trims name and email and stores the email lower-cased', async (t) => {
  const email = uniqueEmail('MiXeD').replace('example.com', 'Example.COM')
  const res = await signUp({ name: '  Ana María  ', email: `  ${email} `, password: PASSWORD, extra: 'ignored' })
  t.equal(res.statusCode, 201)
  t.equal(res.json().user.username, 'Ana María')
  t.equal(res.json().user.email, email.toLowerCase())
  const { rows } = await app.pg.query('SELECT name, email, password_hash FROM users WHERE id = $1', [res.json().user.id])
  t.same(rows[0].email, email.toLowerCase())
  t.match(rows[0].password_hash, /^\$argon2id\$v=19\$m=19456,t=2,p=1\$/, 'argon2id with the contract defaults')
})

t.test('an email already taken, in any case → 409 EMAIL_TAKEN', async (t) => {
  const email = uniqueEmail()
  t.equal((await signUp({ name: 'a', email, password: PASSWORD })).statusCode, 201)
  const res = await signUp({ name: 'b', email: email.toUpperCase(), password: PASSWORD })
  t.equal(res.statusCode, 409)
  t.equal(res.json().code, 'EMAIL_TAKEN')
})

t.test('30 concurrent sign-ups with one email (mixed case) → exactly one 201, the rest 409', async (t) => {
  const email = uniqueEmail('race')
  const results = await Promise.all(Array.from({ length: 30 }, async (_, i) =>
    await signUp({ name: `racer ${i}`, email: i % 2 === 0 ? email : email.toUpperCase(), password: PASSWORD })))
  const statuses = results.map((r) => r.statusCode)
  t.equal(statuses.filter((s) => s === 201).length, 1)
  t.equal(statuses.filter((s) => s === 409).length, 29)
  t.ok(results.filter((r) => r.statusCode === 409).every((r) => r.json().code === 'EMAIL_TAKEN'))
})

t.test('invalid fields → 400 VALIDATION_FAILED naming the field', async (t) => {
  const ok = { name: 'Valid Name', email: uniqueEmail(), password: PASSWORD }
  const cases: Array<[string, unknown, RegExp]> = [
    ['a number as name (no coercion)', { ...ok, name: 12345 }, /name/],
    ['a missing name', { email: ok.email, password: PASSWORD }, /name/],
    ['a blank name', { ...ok, name: '   ' }, /name/],
    ['a name of 101 characters', { ...ok, name: 'x'.repeat(101) }, /name/],
    ['a name with a control character', { ...ok, name: 'bad\u0007name' }, /name/],
    ['a missing email', { name: 'x', password: PASSWORD }, /email/],
    ['an invalid email', { ...ok, email: 'not-an-email' }, /email/],
    ['an email with spaces inside', { ...ok, email: 'a b@example.com' }, /email/],
    ['an email of 260 characters', { ...ok, email: `${'a'.repeat(64)}@${'b'.repeat(63)}.${'c'.repeat(63)}.${'d'.repeat(63)}.com` }, /email/],
    ['a numeric password', { ...ok, password: 12345678 }, /password/],
    ['a password of 7 characters', { ...ok, password: 'Xy7#qP2' }, /password/],
    ['a password of 1025 characters', { ...ok, password: 'x'.repeat(1025) }, /password/],
    ['a boolean email', { ...ok, email: true }, /email/],
    // JSON lets "\ud800" through; UTF-8 cannot hold it (it would be stored as U+FFFD).
    ['a name with an unpaired surrogate', { ...ok, name: 'ab\ud800' }, /name/],
    ['an email with an unpaired surrogate', { ...ok, email: 'a\udc00b@example.com' }, /email/],
    ['a password with an unpaired surrogate', { ...ok, password: 'long enough \ud800 password' }, /password/]
  ]
  for (const [what, payload, field] of cases) {
    const res = await signUp(payload)
    t.equal(res.statusCode, 400, what)
    t.equal(res.json().code, 'VALIDATION_FAILED', what)
    t.match(res.json().message, field, `${what}: the message names the field`)
  }
})

t.test('a name of exactly 100 characters and a password of exactly 1024 are accepted', async (t) => {
  const res = await signUp({ name: 'n'.repeat(100), email: uniqueEmail(), password: 'p'.repeat(1023) + 'q' })
  t.equal(res.statusCode, 201)
})

t.test('a common password, in any case → 400 whose message says "common"', async (t) => {
  for (const password of ['password123', 'PassWord123', 'iloveyou', 'qwertyuiop']) {
    const res = await signUp({ name: 'x', email: uniqueEmail(), password })
    t.equal(res.statusCode, 400, password)
    t.equal(res.json().code, 'VALIDATION_FAILED')
    t.match(res.json().message, /common/)
  }
})

t.test('passwords are never trimmed', async (t) => {
  const email = uniqueEmail()
  const password = '  spaced out password  '
  t.equal((await signUp({ name: 'x', email, password })).statusCode, 201)
  const trimmed = await app.inject({ method: 'POST', url: '/auth/sign-in', payload: { email, password: password.trim() } })
  t.equal(trimmed.statusCode, 401)
  const exact = await app.inject({ method: 'POST', url: '/auth/sign-in', payload: { email, password } })
  t.equal(exact.statusCode, 200)
})
