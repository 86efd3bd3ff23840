import t from 'tap'
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import type { FastifyInstance } from 'fastify'
import { bearer, build, createDatabase, logSink, PASSWORD, refresh, signIn, signUp, uniqueEmail } from './helper.js'
import { linkParts, startMailbox, to, type Mailbox } from './mailbox.js'
import { GIVE_UP_AFTER_SECONDS, retryDelay } from '../src/db/outbox.js'

// Verification, reset, email change and deletion, against a real SMTP conversation: the service
// delivers through nodemailer to an SMTP server on loopback, which parses what it receives.

const NEW_PASSWORD = 'a brand new horse battery'
const mailbox = await startMailbox(t)
const app = await build(t, await createDatabase(t), { SMTP_URL: mailbox.url, EMAIL_FROM: 'Acme Login <login@acme.test>', PUBLIC_URL: 'https://auth.acme.test/' })

const post = async (a: FastifyInstance, path: string, payload: object, headers: Record<string, string> = {}) =>
  await a.inject({ method: 'POST', url: path, payload, headers })
const sleep = async (ms: number) => await new Promise((resolve) => setTimeout(resolve, ms))
const count = async (text: string, values: unknown[] = []): Promise<number> => (await app.pg.query(text, values)).rows[0].n
const audited = async (event: string, userId: string): Promise<number> => {
  await sleep(150) // audit rows are written just after the answer
  return await count('SELECT count(*)::int AS n FROM audit_events WHERE event = $1 AND user_id = $2', [event, userId])
}

/** A new user and the token of the verification mail sent at sign-up. */
async function signedUp (a = app, box: Mailbox = mailbox) {
  const user = await signUp(a)
  const mail = await box.waitFor(to(user.email, 'verify-email'))
  return { user, mail, token: linkParts(mail.link).token }
}

async function resetToken (email: string, a = app): Promise<string> {
  const before = mailbox.messages.length
  const res = await post(a, '/auth/password/forgot', { email })
  if (res.statusCode !== 202) throw new Error(`forgot: ${res.statusCode}`)
  const mail = await mailbox.waitFor((m) => mailbox.messages.indexOf(m) >= before && to(email, 'reset-password')(m))
  return linkParts(mail.link).token
}

t.test('sign-up mails a verification link; the link verifies the address once', async (t) => {
  const { user, mail, token } = await signedUp()
  t.equal(mail.subject, 'Confirm your email address for Acme Login')
  t.equal(mail.mail.from?.value[0].address, 'login@acme.test')
  t.equal(mail.mail.from?.value[0].name, 'Acme Login')
  t.match(mail.link, /^https:\/\/auth\.acme\.test\/auth\/confirm#type=verify-email&token=[\w-]{43}$/, 'PUBLIC_URL + /auth/confirm, the token in the fragment')
  t.match(mail.text, /expires in 24 hours/, 'the expiry is stated')
  t.ok(mail.html.includes(mail.link?.replace(/&/g, '&#38;') ?? '-'), 'the HTML part carries the link too')
  t.equal(Buffer.from(token, 'base64url').length, 32, '256 random bits')

  const session = await signIn(app, user.email)
  t.equal((await app.inject({ method: 'GET', url: '/auth/me', headers: bearer(session.access_token) })).json().email_verified, false)
  const rows = (await app.pg.query('SELECT token_hash, purpose, email FROM email_tokens WHERE user_id = $1', [user.id])).rows
  t.equal(rows.length, 1)
  t.not(rows[0].token_hash.toString('base64url'), token, 'only a hash is stored')
  t.equal(await count("SELECT count(*)::int AS n FROM outbox WHERE payload::text LIKE '%' || $1 || '%'", [token]), 0, 'no token in the outbox')

  const res = await post(app, '/auth/email/verify', { token })
  t.equal(res.statusCode, 204)
  t.equal((await app.inject({ method: 'GET', url: '/auth/me', headers: bearer(session.access_token) })).json().email_verified, true, 'me shows it at once')
  const again = await post(app, '/auth/email/verify', { token })
  t.match({ status: again.statusCode, code: again.json().code }, { status: 400, code: 'TOKEN_INVALID' }, 'used once')
  t.equal(await audited('email-verify', user.id), 1)
})

t.test('resend: 202 with the same body for every address; a link only for an unverified account, once per cooldown', async (t) => {
  const { user, token } = await signedUp()
  const before = mailbox.messages.length
  const known = await post(app, '/auth/email/verify/resend', { email: user.email })
  const unknown = await post(app, '/auth/email/verify/resend', { email: uniqueEmail('nobody') })
  t.equal(known.statusCode, 202)
  t.equal(unknown.statusCode, 202)
  t.equal(known.body, unknown.body, 'the same body')
  // The sign-up's own link started no cooldown for resend: this one goes out.
  const resent = await mailbox.waitFor((m) => mailbox.messages.indexOf(m) >= before && to(user.email, 'verify-email')(m))
  t.not(linkParts(resent.link).token, token, 'a fresh token')
  t.equal((await post(app, '/auth/email/verify/resend', { email: user.email.toUpperCase() })).statusCode, 202, 'inside the cooldown: the same answer')
  t.equal((await post(app, '/auth/email/verify', { token })).statusCode, 204, 'the first link still works')
  await sleep(1000)
  t.equal(mailbox.messages.slice(before).filter(to(user.email)).length, 1, 'no second mail inside the cooldown')
  t.equal((await post(app, '/auth/email/verify/resend', { email: 'not an address' })).statusCode, 400)
})

t.test('forgot and reset: the new password works, the old does not, every session ends, a notice goes out', async (t) => {
  const { user } = await signedUp()
  const s1 = await signIn(app, user.email)
  const s2 = await signIn(app, user.email)
  const token = await resetToken(user.email)
  const mail = mailbox.messages.find((m) => m.link?.includes(token))
  t.equal(mail?.subject, 'Reset your Acme Login password')
  t.match(mail?.text, /expires in 1 hour/)

  const weak = await post(app, '/auth/password/reset', { token, new_password: 'password' })
  t.match({ status: weak.statusCode, code: weak.json().code, message: weak.json().message }, { status: 400, code: 'VALIDATION_FAILED', message: /common/ })
  const res = await post(app, '/auth/password/reset', { token, new_password: NEW_PASSWORD })
  t.equal(res.statusCode, 204, 'a refused password did not use the link up')
  t.equal((await post(app, '/auth/sign-in', { email: user.email, password: PASSWORD })).statusCode, 401, 'the old password fails')
  t.equal((await post(app, '/auth/sign-in', { email: user.email, password: NEW_PASSWORD })).statusCode, 200, 'the new one works')
  for (const s of [s1, s2]) t.equal((await refresh(app, s.refresh_token)).json().code, 'TOKEN_REVOKED', 'every earlier session ended')
  await mailbox.waitFor(to(user.email, 'password was reset'))
  const again = await post(app, '/auth/password/reset', { token, new_password: 'yet another horse battery' })
  t.equal(again.json().code, 'TOKEN_INVALID', 'used once')
  const session = await signIn(app, user.email, NEW_PASSWORD)
  t.equal((await app.inject({ method: 'GET', url: '/auth/me', headers: bearer(session.access_token) })).json().email_verified, true, 'the reset link proved the address')
  t.equal(await audited('password-reset-request', user.id), 1)
  t.equal(await audited('password-reset', user.id), 1)
})

t.test('forgot for an unknown address: the same status and body, and no mail', async (t) => {
  const { user } = await signedUp()
  const known = await post(app, '/auth/password/forgot', { email: user.email })
  const nobody = uniqueEmail('nobody')
  const unknown = await post(app, '/auth/password/forgot', { email: nobody })
  t.same([known.statusCode, known.headers['content-type'], known.body], [unknown.statusCode, unknown.headers['content-type'], unknown.body])
  await mailbox.waitFor(to(user.email, 'reset-password'))
  const again = await post(app, '/auth/password/forgot', { email: user.email })
  t.same([again.statusCode, again.body], [known.statusCode, known.body], 'inside the cooldown: the same answer')
  await sleep(500)
  t.equal(mailbox.messages.filter(to(nobody)).length, 0)
  t.equal(mailbox.messages.filter(to(user.email, 'reset-password')).length, 1, 'and no second mail')
  // The cooldown holds for unknown addresses too, so that it cannot tell them apart either.
  t.equal(await count('SELECT count(*)::int AS n FROM email_cooldowns WHERE email = $1', [nobody]), 1)
})

t.test('a new reset link voids the earlier ones; a password change voids them all', async (t) => {
  const cooled = await build(t, await createDatabase(t), { SMTP_URL: mailbox.url, EMAIL_COOLDOWN: '0' })
  const { user } = await signedUp(cooled)
  const first = await resetToken(user.email, cooled)
  const second = await resetToken(user.email, cooled)
  t.equal((await post(cooled, '/auth/password/reset', { token: first, new_password: NEW_PASSWORD })).json().code, 'TOKEN_INVALID', 'the first is void')
  const session = await signIn(cooled, user.email)
  const change = await post(cooled, '/auth/password', { current_password: PASSWORD, new_password: NEW_PASSWORD }, bearer(session.access_token))
  t.equal(change.statusCode, 204)
  t.equal((await post(cooled, '/auth/password/reset', { token: second, new_password: 'yet another horse battery' })).json().code, 'TOKEN_INVALID', 'the password change voided the second')
})

t.test('tokens are bound to their purpose; malformed and expired ones are refused', async (t) => {
  const { user, token: verify } = await signedUp()
  const reset = await resetToken(user.email)
  const asReset = await post(app, '/auth/password/reset', { token: verify, new_password: NEW_PASSWORD })
  t.match({ status: asReset.statusCode, code: asReset.json().code }, { status: 400, code: 'TOKEN_INVALID' }, 'a verify token cannot reset')
  const asVerify = await post(app, '/auth/email/verify', { token: reset })
  t.match({ status: asVerify.statusCode, code: asVerify.json().code }, { status: 400, code: 'TOKEN_INVALID' }, 'a reset token cannot verify')
  for (const bad of ['x', 'A'.repeat(43), reset + 'A', reset.slice(1)]) {
    t.equal((await post(app, '/auth/password/reset', { token: bad, new_password: NEW_PASSWORD })).json().code, 'TOKEN_INVALID', `malformed ${bad.slice(0, 8)}…`)
  }
  for (const bad of ['', 'A'.repeat(5000)]) {
    t.equal((await post(app, '/auth/password/reset', { token: bad, new_password: NEW_PASSWORD })).json().code, 'TOKEN_INVALID', `${bad.length} characters`)
  }
  await app.pg.query("UPDATE email_tokens SET expires_at = now() - interval '1 second' WHERE user_id = $1", [user.id])
  const expired = await post(app, '/auth/password/reset', { token: reset, new_password: NEW_PASSWORD })
  t.match({ status: expired.statusCode, code: expired.json().code }, { status: 400, code: 'TOKEN_EXPIRED' })
  t.equal((await post(app, '/auth/email/verify', { token: verify })).json().code, 'TOKEN_EXPIRED')
  t.equal((await post(app, '/auth/sign-in', { email: user.email, password: PASSWORD })).statusCode, 200, 'nothing changed')
})

t.test('links die with the address or password they were sent under', async (t) => {
  // A reset link mailed to an address the account has since left.
  const { user, token: verify } = await signedUp()
  const reset = await resetToken(user.email)
  const auth = bearer((await signIn(app, user.email)).access_token)
  const moved = uniqueEmail('moved')
  t.equal((await post(app, '/auth/email', { new_email: moved, password: PASSWORD }, auth)).statusCode, 202)
  const change = linkParts((await mailbox.waitFor(to(moved, 'change-email'))).link).token
  t.equal((await post(app, '/auth/email/verify', { token: change })).statusCode, 204)
  t.equal((await post(app, '/auth/password/reset', { token: reset, new_password: NEW_PASSWORD })).json().code, 'TOKEN_INVALID', 'the reset link sent to the old address is void')
  t.equal((await post(app, '/auth/email/verify', { token: verify })).json().code, 'TOKEN_INVALID', 'so is the old address\'s verify link')
  t.equal((await post(app, '/auth/sign-in', { email: moved, password: PASSWORD })).statusCode, 200, 'the password is unchanged')

  // An email change someone asked for with a stolen password, after the owner resets it.
  const owner = await signedUp()
  const thief = bearer((await signIn(app, owner.user.email)).access_token)
  const theirs = uniqueEmail('thief')
  t.equal((await post(app, '/auth/email', { new_email: theirs, password: PASSWORD }, thief)).statusCode, 202)
  const stolen = linkParts((await mailbox.waitFor(to(theirs, 'change-email'))).link).token
  t.equal((await post(app, '/auth/password/reset', { token: await resetToken(owner.user.email), new_password: NEW_PASSWORD })).statusCode, 204)
  t.equal((await post(app, '/auth/email/verify', { token: stolen })).json().code, 'TOKEN_INVALID', 'the pending email change died with the reset')
  t.equal((await post(app, '/auth/sign-in', { email: owner.user.email, password: NEW_PASSWORD })).statusCode, 200, 'the account keeps its address')
})

t.test('an address with a comma in its local part is one recipient, not two', async (t) => {
  const local = `victim,attacker-${Date.now()}`
  await signUp(app, { email: `${local}@example.com` })
  const mail = await mailbox.waitFor((m) => m.to === `"${local}"@example.com`, 10_000)
  t.ok(mail, 'delivered to the whole address, quoted')
  await sleep(300)
  t.equal(mailbox.messages.filter((m) => m.to === `${local.split(',')[1]}@example.com`).length, 0, 'nothing to the part after the comma')
})

t.test('two uses of one link at once: exactly one succeeds', async (t) => {
  const { user } = await signedUp()
  const token = await resetToken(user.email)
  const results = await Promise.all([1, 2, 3].map(async (i) => (await post(app, '/auth/password/reset', { token, new_password: `${NEW_PASSWORD} ${i}` })).statusCode))
  t.same(results.sort(), [204, 400, 400])
})

t.test('email change: confirmed from the new address, a notice to the old one', async (t) => {
  const { user } = await signedUp()
  const session = await signIn(app, user.email)
  const auth = bearer(session.access_token)
  const newEmail = uniqueEmail('moved')
  const wrong = await post(app, '/auth/email', { new_email: newEmail, password: 'not my password' }, auth)
  t.match({ status: wrong.statusCode, code: wrong.json().code }, { status: 401, code: 'INVALID_CREDENTIALS' })
  t.equal((await post(app, '/auth/email', { new_email: 'nope', password: PASSWORD }, auth)).statusCode, 400)
  t.equal((await post(app, '/auth/email', { new_email: newEmail, password: PASSWORD })).statusCode, 401, 'needs an access token')

  const res = await post(app, '/auth/email', { new_email: ` ${newEmail.toUpperCase()} `, password: PASSWORD }, auth)
  t.equal(res.statusCode, 202)
  const mail = await mailbox.waitFor(to(newEmail, 'change-email'))
  t.equal(mail.subject, 'Confirm your new email address for Acme Login')
  const me = async () => (await app.inject({ method: 'GET', url: '/auth/me', headers: auth })).json()
  t.equal((await me()).email, user.email, 'nothing changes before the link is used')
  t.equal((await post(app, '/auth/email/verify', { token: linkParts(mail.link).token })).statusCode, 204)
  t.match(await me(), { email: newEmail, email_verified: true })
  const notice = await mailbox.waitFor(to(user.email, 'email address was changed'))
  t.match(notice.text, newEmail)
  t.equal((await post(app, '/auth/sign-in', { email: newEmail, password: PASSWORD })).statusCode, 200)
  t.equal((await post(app, '/auth/sign-in', { email: user.email, password: PASSWORD })).statusCode, 401)
  t.equal(await audited('email-change-request', user.id), 1)
  t.equal(await audited('email-change', user.id), 1)
})

t.test('email change to an address another account has: the same 202 and no link; taken meanwhile: 409 EMAIL_TAKEN', async (t) => {
  const { user } = await signedUp()
  const other = await signUp(app)
  const auth = bearer((await signIn(app, user.email)).access_token)
  const res = await post(app, '/auth/email', { new_email: other.email, password: PASSWORD }, auth)
  t.equal(res.statusCode, 202)
  t.equal(res.body, (await post(app, '/auth/email', { new_email: uniqueEmail('free'), password: PASSWORD }, auth)).body, 'the same body as for a free address')
  t.equal(await count("SELECT count(*)::int AS n FROM outbox WHERE payload->>'to' = $1 AND payload->>'template' = 'change-email'", [other.email]), 0, 'nothing queued for it')

  const target = uniqueEmail('contested')
  t.equal((await post(app, '/auth/email', { new_email: target, password: PASSWORD }, auth)).statusCode, 202)
  const mail = await mailbox.waitFor(to(target, 'change-email'))
  await signUp(app, { email: target }) // someone signs up with it before the link is used
  const taken = await post(app, '/auth/email/verify', { token: linkParts(mail.link).token })
  t.match({ status: taken.statusCode, code: taken.json().code }, { status: 409, code: 'EMAIL_TAKEN' })
})

t.test('DELETE /auth/me: with the password, the account and its sessions are gone and the email is free', async (t) => {
  const { user } = await signedUp()
  const s1 = await signIn(app, user.email)
  const s2 = await signIn(app, user.email)
  const del = async (password: string, token = s1.access_token) => await app.inject({ method: 'DELETE', url: '/auth/me', payload: { password }, headers: bearer(token) })
  const wrong = await del('not the password')
  t.match({ status: wrong.statusCode, code: wrong.json().code }, { status: 401, code: 'INVALID_CREDENTIALS' })
  t.equal((await app.inject({ method: 'DELETE', url: '/auth/me', headers: bearer(s1.access_token) })).statusCode, 400, 'the password is required')
  t.equal((await del(PASSWORD)).statusCode, 204)
  for (const s of [s1, s2]) t.equal((await refresh(app, s.refresh_token)).json().code, 'TOKEN_REVOKED')
  t.equal((await app.inject({ method: 'GET', url: '/auth/me', headers: bearer(s2.access_token) })).statusCode, 401)
  t.equal((await post(app, '/auth/sign-in', { email: user.email, password: PASSWORD })).statusCode, 401)
  t.equal((await post(app, '/auth/sign-up', { name: 'Again', email: user.email, password: PASSWORD })).statusCode, 201, 'the email is free')
  t.equal(await audited('account-delete', user.id), 1, 'audited under the user id')
  t.equal(await count('SELECT count(*)::int AS n FROM email_tokens WHERE user_id = $1', [user.id]), 0)
})

t.test('EMAIL_VERIFICATION=required: the right password for an unverified address → 403 EMAIL_NOT_VERIFIED and a fresh link', async (t) => {
  const strict = await build(t, await createDatabase(t), { SMTP_URL: mailbox.url, EMAIL_VERIFICATION: 'required' })
  const { user, token } = await signedUp(strict)
  const before = mailbox.messages.length
  const res = await post(strict, '/auth/sign-in', { email: user.email, password: PASSWORD })
  t.match({ status: res.statusCode, code: res.json().code }, { status: 403, code: 'EMAIL_NOT_VERIFIED' })
  t.equal((await post(strict, '/auth/sign-in', { email: user.email, password: 'a wrong password' })).statusCode, 401, 'a wrong password learns nothing')
  await mailbox.waitFor((m) => mailbox.messages.indexOf(m) >= before && to(user.email, 'verify-email')(m))
  t.equal((await post(strict, '/auth/email/verify', { token })).statusCode, 204)
  t.equal((await post(strict, '/auth/sign-in', { email: user.email, password: PASSWORD })).statusCode, 200)
})

t.test('RATE_LIMIT_EMAIL: forgot, resend and email change each have a budget per client IP', async (t) => {
  const limited = await build(t, await createDatabase(t), { SMTP_URL: mailbox.url, RATE_LIMIT_ENABLED: 'true', RATE_LIMIT_EMAIL: '3' })
  const session = await signIn(limited, (await signUp(limited)).email)
  const calls: Array<[string, object, Record<string, string>]> = [
    ['/auth/password/forgot', { email: uniqueEmail() }, {}],
    ['/auth/email/verify/resend', { email: uniqueEmail() }, {}],
    ['/auth/email', { new_email: uniqueEmail(), password: PASSWORD }, bearer(session.access_token)]
  ]
  for (const [path, body, headers] of calls) {
    const statuses = []
    for (let i = 0; i < 4; i++) statuses.push((await post(limited, path, body, headers)).statusCode)
    t.same(statuses, [202, 202, 202, 429], path)
  }
  const res = await post(limited, '/auth/password/forgot', { email: uniqueEmail() })
  t.match({ code: res.json().code, retry: Number(res.headers['retry-after']) > 0 }, { code: 'RATE_LIMITED', retry: true })
  t.equal((await post(limited, '/auth/email/verify', { token: 'x' })).statusCode, 400, 'verify is not limited by it')
})

t.test('EMAIL_VERIFICATION=off: sign-up sends nothing', async (t) => {
  const off = await build(t, await createDatabase(t), { SMTP_URL: mailbox.url, EMAIL_VERIFICATION: 'off' })
  const user = await signUp(off)
  await sleep(500)
  t.equal(mailbox.messages.filter(to(user.email)).length, 0)
  t.equal(await count("SELECT count(*)::int AS n FROM outbox WHERE payload->>'to' = $1", [user.email]), 0)
})

t.test('timing: forgot for unknown and known addresses takes the same time (medians within 50 %)', async (t) => {
  // Enough pairs that a burst of load on a busy machine does not move a median.
  const users = []
  for (let i = 0; i < 81; i++) users.push(await signUp(app))
  const known: number[] = []
  const unknown: number[] = []
  const time = async (email: string): Promise<number> => {
    const start = performance.now()
    const res = await post(app, '/auth/password/forgot', { email })
    t.equal(res.statusCode, 202)
    return performance.now() - start
  }
  // Interleaved, each first in turn, so that machine noise, and the delivery of the mail a known
  // address queued (on the embedded database it shares the one connection), fall on both.
  for (const [i, user] of users.entries()) {
    if (i % 2 === 0) {
      unknown.push(await time(uniqueEmail('unknown')))
      known.push(await time(user.email))
    } else {
      known.push(await time(user.email))
      unknown.push(await time(uniqueEmail('unknown')))
    }
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]
  const ratio = median(unknown) / median(known)
  t.ok(ratio > 0.67 && ratio < 1.5, `median unknown ${median(unknown).toFixed(2)} ms, known ${median(known).toFixed(2)} ms (ratio ${ratio.toFixed(2)})`)
})

t.test('metrics: mail sent, failed and waiting', async (t) => {
  const text = (await app.inject({ method: 'GET', url: '/metrics' })).body
  t.match(text, /^auth_mail_sent_total [1-9]\d*$/m)
  t.match(text, /^auth_mail_failed_total \d+$/m)
  t.match(text, /^auth_mail_waiting \d+$/m)
})

t.test('an SMTP server that refuses (451) and one that is down: the mail arrives once it answers', async (t) => {
  const { user } = await signedUp()
  mailbox.refuse(451)
  t.equal((await post(app, '/auth/password/forgot', { email: user.email })).statusCode, 202, 'the request does not wait for the mail server')
  await sleep(1500)
  t.equal(mailbox.messages.filter(to(user.email, 'reset-password')).length, 0)
  const row = (await app.pg.query("SELECT attempts, last_error, next_attempt_at - now() AS wait FROM outbox WHERE payload->>'to' = $1", [user.email])).rows[0]
  t.match(row, { attempts: 1, last_error: /451/ }, 'one failed attempt, kept with its error')
  mailbox.refuse(null)
  const mail = await mailbox.waitFor(to(user.email, 'reset-password'), 12_000)
  t.ok(mail, 'delivered on the first retry (within 10 s)')
  await sleep(300) // the row is deleted once the server has acknowledged the message
  t.equal(await count("SELECT count(*)::int AS n FROM outbox WHERE payload->>'to' = $1", [user.email]), 0, 'the row is gone once delivered')
  const reset = await post(app, '/auth/password/reset', { token: linkParts(mail.link).token, new_password: NEW_PASSWORD })
  t.equal(reset.statusCode, 204, 'the link minted on the successful attempt works')

  // A mail server that is not there at all (connection refused), then comes up on its port.
  const gone = await startMailbox(t)
  await gone.close()
  const lonely = await build(t, await createDatabase(t), { SMTP_URL: gone.url })
  const late = await signUp(lonely)
  await sleep(1500)
  t.match((await lonely.pg.query('SELECT attempts, last_error FROM outbox')).rows, [{ attempts: 1, last_error: /ECONNREFUSED/ }], 'tried, refused, kept')
  const back = await startMailbox(t, { port: gone.port })
  const arrived = await back.waitFor(to(late.email, 'verify-email'), 12_000)
  t.equal((await post(lonely, '/auth/email/verify', { token: linkParts(arrived.link).token })).statusCode, 204, 'delivered once the server is up, and the link works')
})

t.test('retries: 5 s, then doubling to at most 15 minutes; after 24 hours of failures a message is dropped', async (t) => {
  t.same(Array.from({ length: 12 }, (_, i) => retryDelay(i + 1)), [5, 10, 20, 40, 80, 160, 320, 640, 880, 880, 880, 880])
  t.equal(GIVE_UP_AFTER_SECONDS, 86_400)
  const user = await signUp(app)
  await mailbox.waitFor(to(user.email, 'verify-email'))
  mailbox.refuse(550)
  t.equal((await post(app, '/auth/password/forgot', { email: user.email })).statusCode, 202)
  const row = async () => (await app.pg.query("SELECT attempts, last_error FROM outbox WHERE payload->>'to' = $1", [user.email])).rows[0]
  // attempts counts a claim; last_error is written once the failure is settled (else its retry time would overwrite ours).
  for (let i = 0; i < 50 && (await row())?.last_error == null; i++) await sleep(100)
  t.match(await row(), { attempts: 1, last_error: /550/ }, 'refused once, waiting for its retry')
  // As if it had been failing since yesterday: the next failure is the last.
  await app.pg.query("UPDATE outbox SET created_at = now() - interval '25 hours', next_attempt_at = now() WHERE payload->>'to' = $1", [user.email])
  for (let i = 0; i < 50 && (await row()) !== undefined; i++) await sleep(100)
  mailbox.refuse(null)
  t.equal(await row(), undefined, 'dropped')
  await sleep(2500) // a poll
  t.equal(mailbox.messages.filter(to(user.email, 'reset-password')).length, 0, 'never sent')
})

t.test('the development outbox: without SMTP_URL, mail is written under DATA_DIR/mail/ and its link logged', async (t) => {
  const dir = t.testdir()
  const log = logSink()
  const dev = await build(t, await createDatabase(t), { DATA_DIR: dir, LOG_LEVEL: 'info' }, log.stream)
  const user = await signUp(dev)
  let files: string[] = []
  for (let i = 0; i < 50 && files.length === 0; i++) {
    await sleep(100)
    try { files = readdirSync(join(dir, 'mail')) } catch {}
  }
  t.equal(files.length, 1)
  t.match(files[0], /\.eml$/)
  const eml = readFileSync(join(dir, 'mail', files[0]), 'utf8')
  t.match(eml, `To: ${user.email}`)
  t.match(eml, /Content-Type: text\/plain/)
  t.match(eml, /Content-Type: text\/html/)
  const line = log.lines.map((l) => JSON.parse(l)).find((l) => l.msg === 'mail written to the development outbox')
  t.match(line, { to: user.email, link: /^http:\/\/localhost:5000\/auth\/confirm#type=verify-email&token=[\w-]{43}$/ })
  t.equal((await post(dev, '/auth/email/verify', { token: linkParts(line.link).token })).statusCode, 204)
})

t.test('production without SMTP_URL: the email endpoints are 404 and absent from the docs; the start log says so', async (t) => {
  const log = logSink()
  const prod = await build(t, await createDatabase(t), { NODE_ENV: 'production', LOG_LEVEL: 'info' }, log.stream)
  for (const path of ['/auth/password/forgot', '/auth/password/reset', '/auth/email/verify', '/auth/email/verify/resend', '/auth/email']) {
    const res = await post(prod, path, { email: 'a@example.com' })
    t.match({ status: res.statusCode, code: res.json().code }, { status: 404, code: 'NOT_FOUND' }, path)
  }
  t.equal((await prod.inject({ method: 'GET', url: '/auth/confirm' })).statusCode, 404)
  const doc = (await prod.inject({ method: 'GET', url: '/docs/json' })).json()
  const paths = Object.keys(doc.paths)
  t.notOk(doc.tags.some((tag: { name: string }) => tag.name === 'email'), 'nor their tag')
  t.notOk(paths.some((p) => p.startsWith('/auth/email') || p.startsWith('/auth/password/') || p === '/auth/confirm'), 'not in the OpenAPI document')
  t.ok(paths.includes('/auth/me'), 'deletion stays (it needs no mail)')
  t.ok(log.lines.some((l) => l.includes('SMTP_URL is not set in production')))
  const user = await signUp(prod)
  t.ok((await signIn(prod, user.email)).access_token, 'sign-up and sign-in work without mail')
  await t.rejects(build(t, await createDatabase(t), { NODE_ENV: 'production', EMAIL_VERIFICATION: 'required' }), /EMAIL_VERIFICATION/)
})
