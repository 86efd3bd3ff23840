import t from 'tap'
import type { FastifyInstance } from 'fastify'
import { Secret, TOTP } from 'otpauth'
import { bearer, build, claimsOf, createDatabase, logSink, PASSWORD, refresh, signIn, signUp } from './helper.js'
import { linkParts, startMailbox, to } from './mailbox.js'
import { codeFor, freshStep, fromBase32, hotp, stepAt } from './totp.js'
import { matchStep } from '../src/mfa/totp.js'

// The second factor, with codes computed here by a TOTP of the test's own (RFC 6238, checked
// against the RFC's vectors), not by the library the service uses.

const KEY = 'data-encryption-key-for-tests-0123456789abcdef'
const mailbox = await startMailbox(t)
const app = await build(t, await createDatabase(t), { DATA_ENCRYPTION_KEY: KEY, SMTP_URL: mailbox.url })

const sleep = async (ms: number) => await new Promise((resolve) => setTimeout(resolve, ms))

const post = async (path: string, payload: object, headers: Record<string, string> = {}, a: FastifyInstance = app) =>
  await a.inject({ method: 'POST', url: path, payload, headers })
const outcome = (res: { statusCode: number, json: () => any }) => ({ status: res.statusCode, code: res.json()?.code })
const audited = async (event: string, userId: string): Promise<number> => {
  await sleep(150) // audit rows are written just after the answer
  return (await app.pg.query('SELECT count(*)::int AS n FROM audit_events WHERE event = $1 AND user_id = $2', [event, userId])).rows[0].n
}
const me = async (access: string, a = app) => (await a.inject({ method: 'GET', url: '/auth/me', headers: bearer(access) })).json()

/** A new user with TOTP on: its secret, recovery codes and the session that turned it on. */
async function enrolled (a: FastifyInstance = app) {
  const user = await signUp(a)
  const session = await signIn(a, user.email)
  const enrol = await post('/auth/mfa/totp', { password: PASSWORD }, bearer(session.access_token), a)
  if (enrol.statusCode !== 200) throw new Error(`enrol: ${enrol.statusCode} ${enrol.body}`)
  const secret: string = enrol.json().secret
  const step = await freshStep()
  const confirm = await post('/auth/mfa/totp/confirm', { code: codeFor(secret, step) }, bearer(session.access_token), a)
  if (confirm.statusCode !== 200) throw new Error(`confirm: ${confirm.statusCode} ${confirm.body}`)
  return { user, session, secret, step, recoveryCodes: confirm.json().recovery_codes as string[] }
}

/** The mfa_token of a sign-in with the right password. */
async function challenge (email: string, headers: Record<string, string> = {}, a = app): Promise<string> {
  const res = await a.inject({ method: 'POST', url: '/auth/sign-in', payload: { email, password: PASSWORD }, headers })
  if (res.statusCode !== 403 || res.json().code !== 'MFA_REQUIRED') throw new Error(`sign-in: ${res.statusCode} ${res.body}`)
  return res.json().mfa_token
}

/** A step not yet used by the user: tests that verify several times move the last one back (as if time had passed). */
const forgetSteps = async (userId: string) => await app.pg.query('UPDATE totp_secrets SET last_step = 0 WHERE user_id = $1', [userId])

t.test('the TOTP here and the library agree with the RFC 6238 test vectors', async (t) => {
  // RFC 6238, appendix B: SHA-1, the ASCII secret "12345678901234567890", 8 digits.
  const key = Buffer.from('12345678901234567890')
  const vectors: Array<[number, string]> = [[59, '94287082'], [1111111109, '07081804'], [1111111111, '14050471'],
    [1234567890, '89005924'], [2000000000, '69279037'], [20000000000, '65353130']]
  for (const [time, code] of vectors) {
    t.equal(hotp(key, Math.floor(time / 30), 8), code, `this test's TOTP at T=${time}`)
    t.equal(TOTP.generate({ secret: Secret.fromLatin1(key.toString('latin1')), digits: 8, timestamp: time * 1000 }), code, `otpauth at T=${time}`)
    // The service's 6 digits are the low 6 of the 8, and name the step they belong to.
    t.equal(matchStep(key, code.slice(2), time * 1000), Math.floor(time / 30), `the service at T=${time}`)
  }
  // The SHA-256 and SHA-512 vectors check the HOTP here further (the service uses SHA-1 only, as the contract says).
  t.equal(hotp(Buffer.from('12345678901234567890123456789012'), Math.floor(59 / 30), 8, 'sha256'), '46119246')
  t.equal(hotp(Buffer.from('1234567890123456789012345678901234567890123456789012345678901234'), Math.floor(59 / 30), 8, 'sha512'), '90693936')
  t.equal(matchStep(key, '287081', 59_000), null, 'a wrong code')
  t.equal(matchStep(key, '94287082', 59_000), null, '8 digits are not a 6-digit code')
})

t.test('enrolment: password, secret and QR code, a first code turns TOTP on, returns 10 recovery codes and ends the other sessions', async (t) => {
  const user = await signUp(app)
  const session = await signIn(app, user.email)
  const other = await signIn(app, user.email)
  const headers = bearer(session.access_token)
  t.same(outcome(await post('/auth/mfa/totp', { password: 'wrong password!' }, headers)), { status: 401, code: 'INVALID_CREDENTIALS' })
  t.same(outcome(await post('/auth/mfa/totp/confirm', { code: '123456' }, headers)), { status: 404, code: 'NOT_FOUND' }, 'confirm before enrolment')

  const first = await post('/auth/mfa/totp', { password: PASSWORD }, headers)
  t.equal(first.statusCode, 200)
  t.equal(first.headers['cache-control'], 'no-store')
  const replaced = await post('/auth/mfa/totp', { password: PASSWORD }, headers)
  const { secret, otpauth_url: url, qr_svg: svg } = replaced.json()
  t.not(secret, first.json().secret, 'a new call replaces an unconfirmed secret')
  t.match(secret, /^[A-Z2-7]{32}$/, '160 bits, base32')
  t.equal(url, `otpauth://totp/auth-service:${user.email}?secret=${secret}&issuer=auth-service`)
  t.match(svg, /^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"[^>]*>.*<path/s, 'an SVG document')
  t.equal((await me(session.access_token)).mfa_enabled, false, 'not on before the first code')
  t.equal((await signIn(app, user.email)).user.id, user.id, 'sign-in needs no code yet')

  const step = await freshStep()
  t.same(outcome(await post('/auth/mfa/totp/confirm', { code: codeFor(first.json().secret, step) }, headers)), { status: 401, code: 'INVALID_CREDENTIALS' }, 'the replaced secret no longer works')
  t.same(outcome(await post('/auth/mfa/totp/confirm', { code: codeFor(secret, step + 3) }, headers)), { status: 401, code: 'INVALID_CREDENTIALS' }, 'a code of another step')
  const confirmed = await post('/auth/mfa/totp/confirm', { code: codeFor(secret, step) }, headers)
  t.equal(confirmed.statusCode, 200)
  const codes: string[] = confirmed.json().recovery_codes
  t.equal(codes.length, 10)
  t.equal(new Set(codes).size, 10, 'all different')
  for (const code of codes) t.match(code, /^[a-z2-9]{6}-[a-z2-9]{6}-[a-z2-9]{5}$/, 'at least 50 random bits (84)')
  t.equal((await me(session.access_token)).mfa_enabled, true, 'me shows it at once')
  t.same(outcome(await refresh(app, other.refresh_token)), { status: 401, code: 'TOKEN_REVOKED' }, 'the other session ended')
  t.equal((await refresh(app, session.refresh_token)).statusCode, 200, 'the session that turned it on goes on')
  t.same(outcome(await post('/auth/mfa/totp', { password: PASSWORD }, headers)), { status: 409, code: 'MFA_ALREADY_ENABLED' })
  t.same(outcome(await post('/auth/mfa/totp/confirm', { code: codeFor(secret, step + 1) }, headers)), { status: 409, code: 'MFA_ALREADY_ENABLED' })
  const stored = (await app.pg.query('SELECT code_hash FROM recovery_codes WHERE user_id = $1', [user.id])).rows
  t.equal(stored.length, 10, 'the codes are stored')
  t.notOk(stored.some((r) => codes.some((c) => r.code_hash.toString().includes(c.replace(/-/g, '')))), 'as hashes only')
  t.equal(await audited('mfa-enable', user.id), 1)
  t.equal(await audited('mfa-verify-failed', user.id), 2, 'each wrong code is audited')
})

t.test('sign-in with TOTP on: 403 MFA_REQUIRED with an mfa_token, then a code gives the tokens with amr pwd+otp', async (t) => {
  const { user, secret } = await enrolled()
  const res = await app.inject({ method: 'POST', url: '/auth/sign-in', payload: { email: user.email, password: PASSWORD } })
  t.equal(res.statusCode, 403)
  const body = res.json()
  t.same(Object.keys(body).sort(), ['code', 'error', 'message', 'mfa_token', 'statusCode'])
  t.equal(body.code, 'MFA_REQUIRED')
  t.match(body.mfa_token, /^[\w-]{43}$/)
  t.equal(res.headers['cache-control'], 'no-store', 'the mfa_token is not cached')
  const wrongPassword = await app.inject({ method: 'POST', url: '/auth/sign-in', payload: { email: user.email, password: 'not the password' } })
  t.same(outcome(wrongPassword), { status: 401, code: 'INVALID_CREDENTIALS' }, 'a wrong password learns nothing of the second factor')
  const life = (await app.pg.query('SELECT extract(epoch FROM expires_at - now())::int AS s FROM mfa_challenges WHERE user_id = $1 AND used_at IS NULL', [user.id])).rows[0].s
  t.ok(life > 290 && life <= 300, `valid 300 s (${life} s left)`)

  await forgetSteps(user.id)
  const verified = await post('/auth/mfa/verify', { mfa_token: body.mfa_token, code: codeFor(secret, await freshStep()) })
  t.equal(verified.statusCode, 200)
  t.equal(verified.headers['cache-control'], 'no-store')
  const tokens = verified.json()
  t.same(tokens.user, { id: user.id, username: user.name })
  t.same(claimsOf(tokens.access_token).amr, ['pwd', 'otp'])
  t.equal((await me(tokens.access_token)).id, user.id)
  const refreshed = await refresh(app, tokens.refresh_token)
  t.same(claimsOf(refreshed.json().access_token).amr, ['pwd', 'otp'], 'refresh keeps the amr of the sign-in')
  t.same(outcome(await post('/auth/mfa/verify', { mfa_token: body.mfa_token, code: codeFor(secret, stepAt()) })), { status: 401, code: 'TOKEN_REVOKED' }, 'an mfa_token is used once')
  t.equal(await audited('mfa-verify', user.id), 1)

  const plain = await signIn(app, (await signUp(app)).email)
  t.same(claimsOf(plain.access_token).amr, ['pwd'], 'without a second factor: pwd')
})

t.test('codes: the current step and one either side; each step once per user, however it arrives', async (t) => {
  const { user, secret } = await enrolled()
  await forgetSteps(user.id)
  const step = await freshStep(15_000) // seven sign-ins must fit in the step
  for (const delta of [-2, 2]) {
    t.same(outcome(await post('/auth/mfa/verify', { mfa_token: await challenge(user.email), code: codeFor(secret, step + delta) })),
      { status: 401, code: 'INVALID_CREDENTIALS' }, `step ${delta > 0 ? '+' : ''}${delta} is refused`)
  }
  for (const delta of [-1, 0, 1]) {
    t.equal((await post('/auth/mfa/verify', { mfa_token: await challenge(user.email), code: codeFor(secret, step + delta) })).statusCode, 200, `step ${delta} is accepted`)
  }
  await app.pg.query('DELETE FROM sign_in_throttle') // the refused codes above counted toward throttling
  t.same(outcome(await post('/auth/mfa/verify', { mfa_token: await challenge(user.email), code: codeFor(secret, step + 1) })),
    { status: 401, code: 'INVALID_CREDENTIALS' }, 'a replayed code is refused')
  t.same(outcome(await post('/auth/mfa/verify', { mfa_token: await challenge(user.email), code: codeFor(secret, step) })),
    { status: 401, code: 'INVALID_CREDENTIALS' }, 'so is an older step after a newer one')
})

t.test('two verifies racing with one code: exactly one signs in (two mfa_tokens, or one)', async (t) => {
  const { user, secret } = await enrolled()
  for (const sameToken of [false, true]) {
    await forgetSteps(user.id)
    await app.pg.query('DELETE FROM sign_in_throttle')
    const tokens = sameToken ? Array(4).fill(await challenge(user.email)) : await Promise.all([1, 2, 3, 4].map(async () => await challenge(user.email)))
    const code = codeFor(secret, await freshStep())
    const results = await Promise.all(tokens.map(async (mfaToken) => await post('/auth/mfa/verify', { mfa_token: mfaToken, code })))
    t.equal(results.filter((r) => r.statusCode === 200).length, 1, `one of four succeeds (${sameToken ? 'one mfa_token' : 'four mfa_tokens'})`)
    t.ok(results.every((r) => r.statusCode === 200 || r.statusCode === 401), 'the others are 401')
  }
})

t.test('an mfa_token dies after 5 wrong codes, expires, and is no access or refresh token (nor they one)', async (t) => {
  const { user, secret, session } = await enrolled()
  await forgetSteps(user.id)
  const ip = { remoteAddress: '10.9.8.7' }
  const mfaToken = await challenge(user.email)
  for (let i = 1; i <= 5; i++) {
    const res = await app.inject({ method: 'POST', url: '/auth/mfa/verify', payload: { mfa_token: mfaToken, code: '000000' }, ...ip })
    t.same(outcome(res), { status: 401, code: 'INVALID_CREDENTIALS' }, `wrong code ${i}`)
    t.equal(res.headers['www-authenticate'], 'Bearer')
  }
  await app.pg.query('DELETE FROM sign_in_throttle') // throttling is the next test's
  t.same(outcome(await post('/auth/mfa/verify', { mfa_token: mfaToken, code: codeFor(secret, await freshStep()) })),
    { status: 401, code: 'TOKEN_REVOKED' }, 'after 5 wrong codes even the right one is refused')
  t.equal(await audited('mfa-verify-failed', user.id), 5)

  const late = await challenge(user.email)
  await app.pg.query("UPDATE mfa_challenges SET expires_at = now() - interval '1 second' WHERE used_at IS NULL AND failures = 0 AND user_id = $1", [user.id])
  t.same(outcome(await post('/auth/mfa/verify', { mfa_token: late, code: codeFor(secret, stepAt()) })), { status: 401, code: 'TOKEN_EXPIRED' })

  const live = await challenge(user.email)
  t.same(outcome(await app.inject({ method: 'GET', url: '/auth/me', headers: bearer(live) })), { status: 401, code: 'TOKEN_INVALID' }, 'an mfa_token is no access token')
  t.same(outcome(await refresh(app, live)), { status: 401, code: 'TOKEN_INVALID' }, 'nor a refresh token')
  t.same(outcome(await post('/auth/mfa/verify', { mfa_token: session.access_token, code: codeFor(secret, stepAt()) })), { status: 401, code: 'TOKEN_INVALID' }, 'an access token is no mfa_token')
  t.same(outcome(await post('/auth/mfa/verify', { mfa_token: session.refresh_token, code: codeFor(secret, stepAt()) })), { status: 401, code: 'TOKEN_INVALID' }, 'nor a refresh token')
  t.same(outcome(await post('/auth/mfa/verify', { mfa_token: live })), { status: 400, code: 'VALIDATION_FAILED' }, 'a code is required')
  t.equal((await post('/auth/mfa/verify', { mfa_token: live, code: codeFor(secret, await freshStep()) })).statusCode, 200, 'the token still works after all that')
})

t.test('concurrent wrong codes on one mfa_token: at most 5 are checked, then the token is dead', async (t) => {
  const { user, secret } = await enrolled()
  await forgetSteps(user.id)
  const mfaToken = await challenge(user.email)
  const results = await Promise.all(Array.from({ length: 12 }, async (_, i) =>
    await app.inject({ method: 'POST', url: '/auth/mfa/verify', payload: { mfa_token: mfaToken, code: String(100000 + i) }, remoteAddress: `10.7.0.${i + 1}` })))
  const codes = results.map((r) => r.json().code)
  t.equal(codes.filter((c) => c === 'INVALID_CREDENTIALS').length, 5, 'five codes checked')
  t.equal(codes.filter((c) => c === 'TOKEN_REVOKED').length, 7, 'the rest refused unchecked')
  t.same(outcome(await post('/auth/mfa/verify', { mfa_token: mfaToken, code: codeFor(secret, await freshStep()) })), { status: 401, code: 'TOKEN_REVOKED' })
  t.equal(await audited('mfa-verify-failed', user.id), 5)
})

t.test('a sign-in racing the confirmation of TOTP never leaves a password-only session alive', async (t) => {
  const user = await signUp(app)
  const session = await signIn(app, user.email)
  const { secret } = (await post('/auth/mfa/totp', { password: PASSWORD }, bearer(session.access_token))).json()
  const code = codeFor(secret, await freshStep())
  // The sign-ins first: most have read "TOTP off" and are hashing when the confirmation commits.
  const signIns = Array.from({ length: 8 }, async () => await app.inject({ method: 'POST', url: '/auth/sign-in', payload: { email: user.email, password: PASSWORD } }))
  await sleep(15)
  const [confirmed, ...results] = await Promise.all([post('/auth/mfa/totp/confirm', { code }, bearer(session.access_token)), ...signIns])
  t.equal(confirmed.statusCode, 200)
  const signedIn = results.filter((r) => r.statusCode === 200)
  t.equal(signedIn.length + results.filter((r) => r.json().code === 'MFA_REQUIRED').length, 8, 'each sign-in: tokens or MFA_REQUIRED')
  for (const r of signedIn) t.same(outcome(await refresh(app, r.json().refresh_token)), { status: 401, code: 'TOKEN_REVOKED' }, 'a session made before the confirmation was ended by it')
  const live = (await app.pg.query('SELECT count(*)::int AS n FROM sessions WHERE user_id = $1 AND revoked_at IS NULL', [user.id])).rows[0].n
  t.equal(live, 1, 'only the session that turned TOTP on is live')
  t.comment(`${signedIn.length} of 8 sign-ins got in before the confirmation`)
})

t.test('wrong codes count toward per-account throttling, like wrong passwords', async (t) => {
  const { user, secret } = await enrolled()
  await forgetSteps(user.id)
  const ip = '10.1.2.3'
  const mfaToken = await challenge(user.email, {})
  const wrong = async () => await app.inject({ method: 'POST', url: '/auth/mfa/verify', payload: { mfa_token: mfaToken, code: '999999' }, remoteAddress: ip })
  for (let i = 0; i < 5; i++) t.equal((await wrong()).statusCode, 401)
  const signInThrottled = await app.inject({ method: 'POST', url: '/auth/sign-in', payload: { email: user.email, password: PASSWORD }, remoteAddress: ip })
  t.same(outcome(signInThrottled), { status: 429, code: 'RATE_LIMITED' }, 'then even the right password waits, from that IP')
  t.ok(Number(signInThrottled.headers['retry-after']) >= 1)
  const elsewhere = await challenge(user.email, {})
  t.equal(elsewhere.length, 43, 'another IP is not locked out')
  t.same(outcome(await app.inject({ method: 'POST', url: '/auth/mfa/verify', payload: { mfa_token: elsewhere, code: codeFor(secret, await freshStep()) }, remoteAddress: ip })),
    { status: 429, code: 'RATE_LIMITED' }, 'and a code from the throttled IP waits too')
  t.equal((await post('/auth/mfa/verify', { mfa_token: elsewhere, code: codeFor(secret, stepAt()) })).statusCode, 200)
})

t.test('recovery codes: each signs in once, in any case and with or without dashes; regenerating voids the old set', async (t) => {
  const { user, secret, recoveryCodes, session } = await enrolled()
  const first = await post('/auth/mfa/verify', { mfa_token: await challenge(user.email), code: recoveryCodes[0] })
  t.equal(first.statusCode, 200)
  t.same(claimsOf(first.json().access_token).amr, ['pwd', 'otp'])
  t.same(outcome(await post('/auth/mfa/verify', { mfa_token: await challenge(user.email), code: recoveryCodes[0] })), { status: 401, code: 'INVALID_CREDENTIALS' }, 'used once')
  t.equal((await post('/auth/mfa/verify', { mfa_token: await challenge(user.email), code: ` ${recoveryCodes[1].replace(/-/g, '').toUpperCase()} ` })).statusCode, 200, 'upper case, no dashes')
  t.equal(await audited('recovery-code-used', user.id), 2)

  const headers = bearer(session.access_token)
  t.same(outcome(await post('/auth/mfa/recovery-codes', { code: '123456' }, headers)), { status: 401, code: 'INVALID_CREDENTIALS' })
  await forgetSteps(user.id)
  const renewed = await post('/auth/mfa/recovery-codes', { code: codeFor(secret, await freshStep()) }, headers)
  t.equal(renewed.statusCode, 200)
  const fresh: string[] = renewed.json().recovery_codes
  t.equal(fresh.length, 10)
  t.same(outcome(await post('/auth/mfa/verify', { mfa_token: await challenge(user.email), code: recoveryCodes[2] })), { status: 401, code: 'INVALID_CREDENTIALS' }, 'the old set is void')
  t.equal((await post('/auth/mfa/verify', { mfa_token: await challenge(user.email), code: fresh[0] })).statusCode, 200, 'the new set works')
  const third = await post('/auth/mfa/recovery-codes', { code: fresh[1] }, headers)
  t.equal(third.statusCode, 200, 'a recovery code may regenerate too')
  t.equal(await audited('recovery-codes-regenerated', user.id), 2)

  // Two regenerations at once, each with a code of the current set: exactly one answers 200, and
  // its set works. The other is told (503 when it lost the race, 401 when its code was void by then).
  const now = third.json().recovery_codes as string[]
  const both = await Promise.all([now[0], now[1]].map(async (code) => await post('/auth/mfa/recovery-codes', { code }, headers)))
  const winners = both.filter((r) => r.statusCode === 200)
  t.equal(winners.length, 1, `one regeneration wins (${both.map((r) => r.statusCode).join(', ')})`)
  t.ok(both.every((r) => r.statusCode === 200 || ['SERVICE_UNAVAILABLE', 'INVALID_CREDENTIALS'].includes(r.json().code)), 'the other is told')
  const works = async (code: string) => (await post('/auth/mfa/verify', { mfa_token: await challenge(user.email), code })).statusCode === 200
  t.ok(await works(winners[0].json().recovery_codes[0]), 'the set shown works')
  t.notOk(await works(now[2]), 'and the set before it is void')
  await app.pg.query('DELETE FROM sign_in_throttle')
})

t.test('turning TOTP off takes the password and a code; then sign-in asks for the password only', async (t) => {
  const { user, secret, session, recoveryCodes } = await enrolled()
  const headers = bearer(session.access_token)
  const remove = async (payload: object) => await app.inject({ method: 'DELETE', url: '/auth/mfa/totp', payload, headers })
  await forgetSteps(user.id)
  const code = codeFor(secret, await freshStep())
  t.same(outcome(await remove({ password: 'wrong password!', code })), { status: 401, code: 'INVALID_CREDENTIALS' }, 'a wrong password')
  t.same(outcome(await remove({ password: PASSWORD, code: '000000' })), { status: 401, code: 'INVALID_CREDENTIALS' }, 'a wrong code')
  t.same(outcome(await remove({ password: PASSWORD })), { status: 400, code: 'VALIDATION_FAILED' }, 'no code')
  t.same(outcome(await remove({ password: PASSWORD, code: '   ' })), { status: 401, code: 'INVALID_CREDENTIALS' }, 'a blank code is a wrong one')
  t.equal((await remove({ password: PASSWORD, code: recoveryCodes[0] })).statusCode, 204)
  t.equal((await me(session.access_token)).mfa_enabled, false)
  t.same(claimsOf((await signIn(app, user.email)).access_token).amr, ['pwd'])
  t.same(outcome(await remove({ password: PASSWORD, code })), { status: 404, code: 'NOT_FOUND' }, 'not on')
  t.same(outcome(await post('/auth/mfa/recovery-codes', { code }, headers)), { status: 404, code: 'NOT_FOUND' })
  t.equal((await app.pg.query('SELECT count(*)::int AS n FROM recovery_codes WHERE user_id = $1', [user.id])).rows[0].n, 0, 'the recovery codes are gone')
  t.equal(await audited('mfa-disable', user.id), 1)
  t.equal((await post('/auth/mfa/totp', { password: PASSWORD }, headers)).statusCode, 200, 'and it can be enrolled again')
})

t.test("an operator's removal of a lost factor by SQL (what DELETE /admin/users/:id/mfa does; test/admin.test.ts calls it): sign-in asks for the password only, and TOTP can be enrolled again", async (t) => {
  const { user } = await enrolled()
  const pending = await challenge(user.email)
  await app.pg.transact(async (client) => {
    await client.query('UPDATE users SET mfa_enabled = false WHERE id = $1', [user.id])
    await client.query('DELETE FROM totp_secrets WHERE user_id = $1', [user.id])
    await client.query('DELETE FROM mfa_challenges WHERE user_id = $1', [user.id])
  })
  t.equal((await app.pg.query('SELECT count(*)::int AS n FROM recovery_codes WHERE user_id = $1', [user.id])).rows[0].n, 0, 'the recovery codes went with the secret')
  t.same(outcome(await post('/auth/mfa/verify', { mfa_token: pending, code: '123456' })), { status: 401, code: 'TOKEN_INVALID' })
  const session = await signIn(app, user.email)
  t.same(claimsOf(session.access_token).amr, ['pwd'])
  t.equal((await me(session.access_token)).mfa_enabled, false)
  t.equal((await post('/auth/mfa/totp', { password: PASSWORD }, bearer(session.access_token))).statusCode, 200)
})

t.test('with TOTP on, a password change and account deletion need a code too', async (t) => {
  const { user, secret, session } = await enrolled()
  const headers = bearer(session.access_token)
  const change = { current_password: PASSWORD, new_password: 'another horse battery' }
  t.same(outcome(await post('/auth/password', change, headers)), { status: 403, code: 'MFA_REQUIRED' }, 'no code')
  t.same(outcome(await post('/auth/password', { ...change, code: '000000' }, headers)), { status: 401, code: 'INVALID_CREDENTIALS' }, 'a wrong code')
  await forgetSteps(user.id)
  const pending = await challenge(user.email)
  const step = await freshStep()
  t.equal((await post('/auth/password', { ...change, code: codeFor(secret, step) }, headers)).statusCode, 204)
  t.same(outcome(await post('/auth/mfa/verify', { mfa_token: pending, code: codeFor(secret, step + 1) })), { status: 401, code: 'TOKEN_INVALID' },
    'a sign-in waiting for its code, started with the old password, is void')
  t.same(outcome(await post('/auth/email', { new_email: user.email, password: change.new_password, code: codeFor(secret, step + 1) }, headers)),
    { status: 400, code: 'VALIDATION_FAILED' }, 'a change refused on its own merits uses no code')
  const newEmail = `moved-${user.email}`
  t.same(outcome(await post('/auth/email', { new_email: newEmail, password: change.new_password }, headers)), { status: 403, code: 'MFA_REQUIRED' }, 'an email change: no code')
  t.same(outcome(await post('/auth/email', { new_email: newEmail, password: change.new_password, code: '000000' }, headers)), { status: 401, code: 'INVALID_CREDENTIALS' }, 'a wrong code')
  const remove = async (payload: object) => await app.inject({ method: 'DELETE', url: '/auth/me', payload, headers })
  t.same(outcome(await remove({ password: change.new_password })), { status: 403, code: 'MFA_REQUIRED' })
  t.same(outcome(await remove({ password: change.new_password, code: codeFor(secret, step) })), { status: 401, code: 'INVALID_CREDENTIALS' }, 'the step was used')
  t.equal((await remove({ password: change.new_password, code: codeFor(secret, step + 1) })).statusCode, 204)
})

t.test('sign-out everywhere voids the sign-ins waiting for their code; a plain sign-out does not', async (t) => {
  const { user, session, recoveryCodes } = await enrolled()
  const first = await challenge(user.email)
  const other = (await post('/auth/mfa/verify', { mfa_token: await challenge(user.email), code: recoveryCodes[0] })).json()
  t.equal((await app.inject({ method: 'POST', url: '/auth/sign-out', headers: bearer(other.refresh_token) })).statusCode, 204)
  t.not(outcome(await post('/auth/mfa/verify', { mfa_token: first, code: '123456' })).code, 'TOKEN_INVALID', 'still pending after a plain sign-out')
  const second = await challenge(user.email)
  t.equal((await app.inject({ method: 'POST', url: '/auth/sign-out?scope=all', headers: bearer(session.refresh_token) })).statusCode, 204)
  t.same(outcome(await post('/auth/mfa/verify', { mfa_token: second, code: '123456' })), { status: 401, code: 'TOKEN_INVALID' }, 'void after ?scope=all')
  await app.pg.query('DELETE FROM sign_in_throttle')
})

t.test('MFA_ISSUER names the service in the otpauth URL', async (t) => {
  const named = await build(t, await createDatabase(t), { MFA_ISSUER: 'Acme Login' })
  const user = await signUp(named)
  const session = await signIn(named, user.email)
  const { secret, otpauth_url: url } = (await post('/auth/mfa/totp', { password: PASSWORD }, bearer(session.access_token), named)).json()
  t.equal(url, `otpauth://totp/Acme%20Login:${user.email}?secret=${secret}&issuer=Acme%20Login`)
})

t.test('a password reset does not turn TOTP off: the new password still needs a code', async (t) => {
  const { user, secret } = await enrolled()
  const pending = await challenge(user.email)
  t.equal((await post('/auth/password/forgot', { email: user.email })).statusCode, 202)
  const mail = await mailbox.waitFor(to(user.email, 'reset-password'))
  const newPassword = 'a reset horse battery staple'
  t.equal((await post('/auth/password/reset', { token: linkParts(mail.link).token, new_password: newPassword })).statusCode, 204)
  t.same(outcome(await post('/auth/mfa/verify', { mfa_token: pending, code: '123456' })), { status: 401, code: 'TOKEN_INVALID' },
    'a sign-in waiting for its code with the old password is void')
  const res = await app.inject({ method: 'POST', url: '/auth/sign-in', payload: { email: user.email, password: newPassword } })
  t.same(outcome(res), { status: 403, code: 'MFA_REQUIRED' })
  await forgetSteps(user.id)
  t.equal((await post('/auth/mfa/verify', { mfa_token: res.json().mfa_token, code: codeFor(secret, await freshStep()) })).statusCode, 200)
})

t.test('secrets are sealed under DATA_ENCRYPTION_KEY; a new key comes in while the old one still opens them', async (t) => {
  const db = await createDatabase(t)
  const first = await build(t, db, { DATA_ENCRYPTION_KEY: KEY })
  const { user, secret } = await enrolled(first)
  const row = (await first.pg.query('SELECT secret, key_id FROM totp_secrets WHERE user_id = $1', [user.id])).rows[0]
  t.equal(row.secret.length, 12 + 20 + 16, 'iv, ciphertext, tag')
  t.notOk(row.secret.includes(fromBase32(secret)), 'the secret is not in the database')
  t.match(row.key_id, /^[\w-]{12}$/)
  await first.close()

  const second = await build(t, db, { DATA_ENCRYPTION_KEY: KEY.replace('tests', 'later'), DATA_ENCRYPTION_KEYS_OLD: `old-key-never-used-0123456789abcdefghij,${KEY}` })
  let resealed
  for (let i = 0; i < 50; i++) {
    resealed = (await second.pg.query('SELECT secret, key_id FROM totp_secrets WHERE user_id = $1', [user.id])).rows[0]
    if (resealed.key_id !== row.key_id) break
    await sleep(100)
  }
  t.not(resealed.key_id, row.key_id, 're-sealed under the new key at start')
  t.not(resealed.secret.toString('hex'), row.secret.toString('hex'))
  const mfaToken = await challenge(user.email, {}, second)
  t.equal((await post('/auth/mfa/verify', { mfa_token: mfaToken, code: codeFor(secret, await freshStep() + 1) }, {}, second)).statusCode, 200, 'and it still verifies')
})

t.test('a sealed secret opens only in its own row, unaltered; recovery codes work regardless', async (t) => {
  const a = await enrolled()
  const b = await enrolled()
  await app.pg.query('UPDATE totp_secrets SET secret = (SELECT secret FROM totp_secrets WHERE user_id = $1), last_step = 0 WHERE user_id = $2', [a.user.id, b.user.id])
  const step = await freshStep()
  t.same(outcome(await post('/auth/mfa/verify', { mfa_token: await challenge(b.user.email), code: codeFor(a.secret, step) })),
    { status: 401, code: 'INVALID_CREDENTIALS' }, "another user's sealed secret does not open here (the user id is bound in)")
  await app.pg.query("UPDATE totp_secrets SET secret = overlay(secret PLACING '\\x00'::bytea FROM 20 FOR 1), last_step = 0 WHERE user_id = $1", [a.user.id])
  t.same(outcome(await post('/auth/mfa/verify', { mfa_token: await challenge(a.user.email), code: codeFor(a.secret, step) })),
    { status: 401, code: 'INVALID_CREDENTIALS' }, 'an altered one does not open')
  t.equal((await post('/auth/mfa/verify', { mfa_token: await challenge(a.user.email), code: a.recoveryCodes[0] })).statusCode, 200, 'a recovery code still signs in')
  await app.pg.query('DELETE FROM sign_in_throttle')
})

t.test('without DATA_ENCRYPTION_KEY the secret is kept as it is, and production warns at start', async (t) => {
  const log = logSink()
  const plain = await build(t, await createDatabase(t), { NODE_ENV: 'production', LOG_LEVEL: 'warn' }, log.stream)
  t.ok(log.lines.some((l) => JSON.parse(l).msg.startsWith('DATA_ENCRYPTION_KEY is not set: TOTP secrets are stored unencrypted')))
  const { user, secret } = await enrolled(plain)
  const row = (await plain.pg.query('SELECT secret, key_id FROM totp_secrets WHERE user_id = $1', [user.id])).rows[0]
  t.equal(row.key_id, null)
  t.same(row.secret, fromBase32(secret))
  const log2 = logSink()
  await build(t, await createDatabase(t), { NODE_ENV: 'production', LOG_LEVEL: 'warn', DATA_ENCRYPTION_KEY: KEY }, log2.stream)
  t.notOk(log2.lines.some((l) => JSON.parse(l).msg.startsWith('DATA_ENCRYPTION_KEY')), 'no warning with a key')
})
