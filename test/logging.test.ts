import t from 'tap'
import { bearer, build, createDatabase, logSink, PASSWORD, uniqueEmail } from './helper.js'

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
