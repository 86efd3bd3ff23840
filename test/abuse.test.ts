import { randomInt } from 'node:crypto'
import t from 'tap'
import type { FastifyInstance } from 'fastify'
import { build, createDatabase, PASSWORD, signUp, uniqueEmail } from './helper.js'

const databaseUrl = await createDatabase(t)
const app = await build(t, databaseUrl)

// A client address of its own per test, so that budgets never mix (Redis counters outlive a run).
const newIp = () => `10.${randomInt(256)}.${randomInt(256)}.${randomInt(1, 255)}`
const signInFrom = async (a: FastifyInstance, ip: string, email: string, password: string) =>
  await a.inject({ method: 'POST', url: '/auth/sign-in', remoteAddress: ip, payload: { email, password } })

t.test('per-IP rate limits: each endpoint its own budget, 429 RATE_LIMITED with Retry-After', async (t) => {
  const limited = await build(t, await createDatabase(t), { RATE_LIMIT_ENABLED: 'true', RATE_LIMIT_SIGN_IN: '3', RATE_LIMIT_SIGN_UP: '2', RATE_LIMIT_REFRESH: '2' })
  const ip = newIp()
  for (let i = 0; i < 3; i++) {
    const res = await signInFrom(limited, ip, uniqueEmail(), 'some password here')
    t.equal(res.statusCode, 401, `sign-in ${i + 1} is served`)
    t.equal(res.headers['x-ratelimit-limit'], '3')
  }
  const over = await signInFrom(limited, ip, uniqueEmail(), 'some password here')
  t.equal(over.statusCode, 429)
  t.equal(over.json().code, 'RATE_LIMITED')
  t.ok(Number(over.headers['retry-after']) > 0, 'Retry-After')
  t.equal(over.headers['x-ratelimit-remaining'], '0')
  t.equal((await signInFrom(limited, newIp(), uniqueEmail(), 'some password here')).statusCode, 401, 'another IP has its own budget')
  const signUp = await limited.inject({ method: 'POST', url: '/auth/sign-up', remoteAddress: ip, payload: { name: 'x', email: uniqueEmail(), password: PASSWORD } })
  t.equal(signUp.statusCode, 201, 'sign-up has a budget of its own')
  const refresh = await limited.inject({ method: 'POST', url: '/auth/refresh', remoteAddress: ip })
  t.equal(refresh.statusCode, 401, 'refresh too')
})

t.test('RATE_LIMIT_ENABLED=false: no limits (the tests default)', async (t) => {
  const ip = newIp()
  const results = await Promise.all(Array.from({ length: 110 }, async () =>
    await app.inject({ method: 'POST', url: '/auth/refresh', remoteAddress: ip })))
  t.ok(results.every((r) => r.statusCode === 401))
})

t.test('with REDIS_URL the per-IP counters are shared by every replica', async (t) => {
  const env = { RATE_LIMIT_ENABLED: 'true', RATE_LIMIT_SIGN_IN: '4', REDIS_URL: process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379' }
  const a = await build(t, await createDatabase(t), env)
  const b = await build(t, await createDatabase(t), env)
  const ip = newIp()
  const statuses = []
  for (const replica of [a, b, a, b, a]) statuses.push((await signInFrom(replica, ip, uniqueEmail(), 'some password here')).statusCode)
  t.same(statuses, [401, 401, 401, 401, 429], 'the fifth, on either replica, is over the budget of four')
})

t.test('5 failed sign-ins for one email from one IP → 429 with Retry-After, even for the right password', async (t) => {
  const user = await signUp(app)
  const ip = newIp()
  for (let i = 0; i < 5; i++) t.equal((await signInFrom(app, ip, user.email, 'wrong password here')).statusCode, 401)
  const right = await signInFrom(app, ip, user.email, PASSWORD)
  t.equal(right.statusCode, 429)
  t.equal(right.json().code, 'RATE_LIMITED')
  t.ok(Number(right.headers['retry-after']) >= 1)
  t.equal((await signInFrom(app, newIp(), user.email, PASSWORD)).statusCode, 200, 'the owner, from another IP, is not locked out')
})

t.test('the delay grows with each further failure; a success resets the count', async (t) => {
  const user = await signUp(app)
  const ip = newIp()
  const waitOf = async (): Promise<number> => {
    // Let the current delay pass, then fail once more.
    await app.pg.query('UPDATE sign_in_throttle SET blocked_until = now() WHERE email = $1 AND ip = $2', [user.email, ip])
    t.equal((await signInFrom(app, ip, user.email, 'wrong password here')).statusCode, 401)
    return Number((await signInFrom(app, ip, user.email, 'wrong password here')).headers['retry-after'])
  }
  for (let i = 0; i < 4; i++) await signInFrom(app, ip, user.email, 'wrong password here')
  const delays = [await waitOf(), await waitOf(), await waitOf()]
  t.ok(delays[0] < delays[1] && delays[1] < delays[2], `growing: ${delays.join(', ')} s`)
  await app.pg.query('UPDATE sign_in_throttle SET blocked_until = now() WHERE email = $1 AND ip = $2', [user.email, ip])
  t.equal((await signInFrom(app, ip, user.email, PASSWORD)).statusCode, 200)
  for (let i = 0; i < 4; i++) t.equal((await signInFrom(app, ip, user.email, 'wrong password here')).statusCode, 401, 'counting from zero again')
  t.equal((await signInFrom(app, ip, user.email, PASSWORD)).statusCode, 200)
})

t.test('an unknown email is throttled exactly like a known one', async (t) => {
  const ip = newIp()
  const email = uniqueEmail('nobody')
  for (let i = 0; i < 5; i++) t.equal((await signInFrom(app, ip, email, 'wrong password here')).statusCode, 401)
  const res = await signInFrom(app, ip, email, 'wrong password here')
  t.equal(res.statusCode, 429)
  t.equal(res.json().code, 'RATE_LIMITED')
})

t.test('100 failures within an hour from all IPs together throttle the email for every IP', async (t) => {
  const user = await signUp(app)
  // 99 failures from 33 addresses (3 each: none of them reaches its own threshold of 5).
  for (let i = 0; i < 33; i++) {
    const ip = newIp()
    for (let j = 0; j < 3; j++) await signInFrom(app, ip, user.email, 'wrong password here')
  }
  t.equal((await signInFrom(app, newIp(), user.email, PASSWORD)).statusCode, 200, 'after 99, a fresh IP still signs in')
  await signInFrom(app, newIp(), user.email, 'wrong password here') // the 100th
  const res = await signInFrom(app, newIp(), user.email, PASSWORD)
  t.equal(res.statusCode, 429, 'now even a fresh IP with the right password waits')
  t.ok(Number(res.headers['retry-after']) > 0)
  await new Promise((resolve) => setTimeout(resolve, 150)) // audit rows are written just after the answer
  const rows = (await app.pg.query("SELECT count(*)::int AS n FROM audit_events WHERE event = 'sign-in-throttled' AND user_id = $1", [user.id])).rows
  t.equal(rows[0].n, 1, 'the throttled attempt is audited')
})

t.test('timing: unknown email and wrong password take the same time (medians within 25 %)', async (t) => {
  const user = await signUp(app)
  const unknown: number[] = []
  const wrong: number[] = []
  const time = async (email: string): Promise<number> => {
    const start = performance.now()
    const res = await signInFrom(app, newIp(), email, 'wrong password here')
    t.equal(res.statusCode, 401)
    return performance.now() - start
  }
  for (let i = 0; i < 21; i++) { // interleaved, so that machine noise falls on both
    unknown.push(await time(uniqueEmail('unknown')))
    wrong.push(await time(user.email))
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]
  const ratio = median(unknown) / median(wrong)
  t.ok(ratio > 0.75 && ratio < 1.25, `median unknown ${median(unknown).toFixed(1)} ms, wrong password ${median(wrong).toFixed(1)} ms (ratio ${ratio.toFixed(2)})`)
})

t.test('password change shares the sign-in budget per IP', async (t) => {
  const limited = await build(t, await createDatabase(t), { RATE_LIMIT_ENABLED: 'true', RATE_LIMIT_SIGN_IN: '2' })
  const ip = newIp()
  const statuses = []
  for (let i = 0; i < 3; i++) {
    statuses.push((await limited.inject({ method: 'POST', url: '/auth/password', remoteAddress: ip, payload: { current_password: 'x', new_password: 'y' } })).statusCode)
  }
  t.same(statuses, [401, 401, 429])
})
