import t from 'tap'
import { bearer, build, createDatabase, logSink, PASSWORD, uniqueEmail } from './helper.js'
import { codeFor, freshStep } from './totp.js'

const databaseUrl = await createDatabase(t)

t.test('logs are JSON lines, one per request with its id, and never hold a password, token or Authorization header', async (t) => {
  const log = logSink()
  const app = await build(t, databaseUrl, { LOG_LEVEL: 'trace' }, log.stream)
  const email = uniqueEmail('logged')
  const secrets: string[] = [PASSWORD]

  const requests = [
    { method: 'POST' as const, url: '/auth/sign-up', payload: { name: 'Logged', email, password: PASSWORD } },
    { method: 'POST' as const, url: '/auth/sign-in', payload: { email, password: 'a wrong password value' } }
  ]
  secrets.push('a wrong password value')
  for (const r of requests) await app.inject(r)
  const signIn = (await app.inject({ method: 'POST', url: '/auth/sign-in', payload: { email, password: PASSWORD } })).json()
  secrets.push(signIn.access_token, signIn.refresh_token)
  const refreshed = (await app.inject({ method: 'POST', url: '/auth/refresh', headers: bearer(signIn.refresh_token) })).json()
  secrets.push(refreshed.access_token, refreshed.refresh_token)
  await app.inject({ method: 'GET', url: '/auth/me', headers: bearer(refreshed.access_token) })
  await app.inject({ method: 'POST', url: '/auth/refresh', headers: bearer(signIn.refresh_token) }) // reuse: logged as a warning
  await app.inject({ method: 'POST', url: '/auth/refresh', payload: { refresh_token: 'not.a.token' } })
  await app.inject({ method: 'POST', url: '/auth/sign-out', headers: { authorization: 'Bearer garbage-token-value' } })
  await app.inject({ method: 'GET', url: `/auth/me?access_token=${signIn.access_token}` }) // a client's mistake
  secrets.push('not.a.token', 'garbage-token-value')

  t.ok(log.lines.length > 0)
  const entries = log.lines.map((l) => JSON.parse(l))
  const requestLines = entries.filter((e) => e.msg === 'request')
  t.equal(requestLines.length, 9, 'one line per request')
  t.ok(requestLines.every((e) => typeof e.reqId === 'string' && typeof e.statusCode === 'number' && typeof e.ms === 'number'))
  t.ok(entries.some((e) => e.msg.includes('reuse detected')), 'refresh reuse is logged')
  for (const secret of secrets) {
    t.notOk(log.lines.some((l) => l.includes(secret)), `never logged: ${secret.slice(0, 12)}…`)
  }
  t.notOk(log.lines.some((l) => /authorization|bearer /i.test(l)), 'no Authorization header')
})

t.test('the second factor: no secret, code, recovery code or mfa_token in the logs; `code` and `mfa_token` are redacted if a body is logged', async (t) => {
  const log = logSink()
  const app = await build(t, databaseUrl, { LOG_LEVEL: 'trace' }, log.stream)
  const email = uniqueEmail('logged-mfa')
  await app.inject({ method: 'POST', url: '/auth/sign-up', payload: { name: 'Logged', email, password: PASSWORD } })
  const session = (await app.inject({ method: 'POST', url: '/auth/sign-in', payload: { email, password: PASSWORD } })).json()
  const { secret } = (await app.inject({ method: 'POST', url: '/auth/mfa/totp', payload: { password: PASSWORD }, headers: bearer(session.access_token) })).json()
  const step = await freshStep()
  const confirmCode = codeFor(secret, step)
  const codes: string[] = (await app.inject({ method: 'POST', url: '/auth/mfa/totp/confirm', payload: { code: confirmCode }, headers: bearer(session.access_token) })).json().recovery_codes
  const { mfa_token: mfaToken } = (await app.inject({ method: 'POST', url: '/auth/sign-in', payload: { email, password: PASSWORD } })).json()
  await app.inject({ method: 'POST', url: '/auth/mfa/verify', payload: { mfa_token: mfaToken, code: '000000' } })
  const verified = await app.inject({ method: 'POST', url: '/auth/mfa/verify', payload: { mfa_token: mfaToken, code: codes[0] } })
  t.equal(verified.statusCode, 200)
  app.log.info({ body: { code: codes[1], mfa_token: mfaToken } }, 'a body logged by mistake')

  for (const s of [secret, confirmCode, ...codes.slice(0, 2), mfaToken, verified.json().access_token]) {
    t.notOk(log.lines.some((l) => l.includes(s)), `never logged: ${String(s).slice(0, 6)}…`)
  }
  t.ok(log.lines.some((l) => l.includes('a body logged by mistake') && l.includes('[redacted]')), 'the logged body is redacted')
})
