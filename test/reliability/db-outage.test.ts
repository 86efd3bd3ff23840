import t from 'tap'
import { PASSWORD, uniqueEmail } from '../helper.js'
import {
  call, contractErrorProblem, describe, mapLimit, postgresBinDir, sleep, startService, startThrowawayPostgres, type Outcome
} from './processes.js'

// Issue #7, database outage under load: PostgreSQL (a throwaway server of this test's own) is
// crashed while a mixed load runs. Requests get fast 503 SERVICE_UNAVAILABLE (none hangs past the
// configured timeouts), the process stays up, and once the database is back every request
// succeeds again without a restart. Every sign-up that got a 201 can sign in afterwards; every
// session ended with a 204 stays ended.

const CONNECT_TIMEOUT_MS = 1000
const STATEMENT_TIMEOUT_MS = 2000
// The slowest a request may take while the database is away: a connection attempt that times
// out, then a statement that times out (pg's query_timeout is the statement timeout + 1 s, see
// src/db/index.ts), plus a margin for a busy 2-core machine.
const OUTAGE_BOUND_MS = CONNECT_TIMEOUT_MS + STATEMENT_TIMEOUT_MS + 1000 + 2000
const LOOPS = 6
const WARM_MS = 2000
const OUTAGE_MS = 5000
const RECOVERED_MS = 3000
const MAX_REQUESTS = 30_000 // a bound on the load whatever the machine's speed
// Sign-ups and sign-ins each (and twice as many me): few enough hashes at once that the hashing
// queue takes them all instead of shedding some with its own 503.
const BURST = 20

const settings = {
  DB_CONNECT_TIMEOUT_MS: String(CONNECT_TIMEOUT_MS),
  DB_STATEMENT_TIMEOUT_MS: String(STATEMENT_TIMEOUT_MS),
  // The cheapest argon2id the settings allow: the load is about the database, not hashing.
  ARGON2_MEMORY_KIB: '1024',
  ARGON2_ITERATIONS: '1'
}

// The normal answer of each operation of the load.
const NORMAL: Record<string, number> = {
  'POST /auth/sign-up': 201,
  'POST /auth/sign-in': 200,
  'POST /auth/refresh': 200,
  'GET /auth/me': 200,
  'POST /auth/sign-out': 204,
  'GET /health': 200,
  'GET /health/ready': 200
}

interface Recorded extends Outcome {
  /** A 401 TOKEN_REVOKED is a legitimate answer here: an earlier refresh or sign-out of this session got no clear answer. */
  revokedMayBe: boolean
}

const bin = postgresBinDir()
const skip = bin === '' ? 'needs PostgreSQL server binaries (apt-get install postgresql) for a throwaway server' : ''
if (skip !== '') t.plan(0, skip)
else await outage()

async function outage (): Promise<void> {
  t.test('PostgreSQL crashes under a mixed load: fast 503s, the process stays up, all is well once it is back', async (t) => {
    const pg = await startThrowawayPostgres(t, bin)
    const service = startService(t, pg.url, settings)
    const base = await service.listening

    const outcomes: Recorded[] = []
    const signedUp: string[] = [] // emails answered 201
    const signedOut: string[] = [] // refresh tokens of sessions ended with a 204
    // Shared with the loops: `stopped` ends them; `crashAt` and `restartAt` are Date.now() when
    // the crash and the restart began, `readyAt` when the first /health/ready sent after the
    // restart began (before it, the database is surely down) came back 200.
    const run = { stopped: false, crashAt: 0, restartAt: 0, readyAt: 0 }
    t.teardown(() => { run.stopped = true }) // should the test end early, the loops end too

    const send = async (method: string, path: string, opts: { body?: unknown, token?: string } = {}, revokedMayBe = false): Promise<Recorded> => {
      const o = { ...await call(base, method, path, { ...opts, timeoutMs: 20_000 }), revokedMayBe }
      outcomes.push(o)
      // A client backs off a little after a failure instead of spinning on fast 503s.
      if (o.status === undefined || o.status >= 500) await sleep(50)
      return o
    }

    // Each loop: sign up, sign in, then me / refresh (rotating) / me ..., sign out, and again.
    const loop = async (): Promise<void> => {
      let email: string | undefined
      let session: { access: string, refresh: string, unsure: boolean } | undefined
      for (let step = 0; !run.stopped && outcomes.length < MAX_REQUESTS; step++) {
        if (email === undefined) {
          const candidate = uniqueEmail('outage')
          const o = await send('POST', '/auth/sign-up', { body: { name: 'Outage', email: candidate, password: PASSWORD } })
          if (o.status === 201) { email = candidate; signedUp.push(candidate) }
        } else if (session === undefined) {
          const o = await send('POST', '/auth/sign-in', { body: { email, password: PASSWORD } })
          if (o.status === 200) session = { access: o.body.access_token, refresh: o.body.refresh_token, unsure: false }
        } else if (step % 7 === 6) {
          const o = await send('POST', '/auth/sign-out', { token: session.refresh }, session.unsure)
          if (o.status === 204) signedOut.push(session.refresh)
          if (o.status === 204 || o.status === 401) { session = undefined; email = undefined } else session.unsure = true
        } else if (step % 3 === 0) {
          const o = await send('POST', '/auth/refresh', { token: session.refresh }, session.unsure)
          if (o.status === 200) session = { access: o.body.access_token, refresh: o.body.refresh_token, unsure: false }
          // No answer to a rotation: it may have happened, so the token held may now be retired.
          else if (o.status === 401) session = undefined
          else session.unsure = true
        } else {
          await send('GET', '/auth/me', { token: session.access })
        }
      }
    }

    const health: Recorded[] = []
    const poll = async (): Promise<void> => {
      while (!run.stopped) {
        for (const path of ['/health', '/health/ready']) {
          const o = { ...await call(base, 'GET', path, { timeoutMs: 20_000 }), revokedMayBe: false }
          health.push(o)
          if (path === '/health/ready' && o.status === 200 && run.restartAt !== 0 && o.sentAt >= run.restartAt && run.readyAt === 0) run.readyAt = o.endedAt
        }
        await sleep(100)
      }
    }

    const load = [...Array.from({ length: LOOPS }, loop), poll()]
    await sleep(WARM_MS)
    run.crashAt = Date.now()
    const acknowledgedBefore = { signUps: signedUp.length, signOuts: signedOut.length }
    await pg.crash()
    await sleep(OUTAGE_MS)
    run.restartAt = Date.now()
    await pg.start()
    for (let i = 0; i < 300 && run.readyAt === 0; i++) await sleep(100)
    t.ok(run.readyAt !== 0, run.readyAt !== 0
      ? `/health/ready answered 200 ${run.readyAt - run.restartAt} ms after the restart of PostgreSQL began`
      : '/health/ready never answered 200 after PostgreSQL was started again')
    await sleep(RECOVERED_MS)
    run.stopped = true
    await Promise.all(load)

    t.ok(service.alive(), 'the service process is still the one started before the outage')
    const all = [...outcomes, ...health]
    t.same(all.filter((o) => o.status === undefined).map(describe), [], 'every request got an answer: no hang, no dropped connection')

    // The phases: answered before the crash began; in flight at it or sent during the outage;
    // sent once the service was ready again.
    const before = outcomes.filter((o) => o.endedAt < run.crashAt)
    const during = all.filter((o) => o.endedAt >= run.crashAt && o.sentAt < run.readyAt)
    const after = outcomes.filter((o) => o.sentAt >= run.readyAt)
    const allowed = (o: Recorded): boolean => o.status === NORMAL[`${o.method} ${o.path}`] ||
      (o.revokedMayBe && contractErrorProblem(o, 401, 'TOKEN_REVOKED') === '')
    t.same(before.filter((o) => !allowed(o)).map(describe), [], `before the outage: all ${before.length} requests answered normally`)
    t.ok(acknowledgedBefore.signUps > 0 && acknowledgedBefore.signOuts > 0,
      `the load signed ${acknowledgedBefore.signUps} users up and ${acknowledgedBefore.signOuts} sessions out before the outage`)

    const unavailable = during.filter((o) => !allowed(o))
    t.same(unavailable.filter((o) => contractErrorProblem(o, 503, 'SERVICE_UNAVAILABLE') !== '')
      .map((o) => `${describe(o)}: ${contractErrorProblem(o, 503, 'SERVICE_UNAVAILABLE')}`), [],
    'during the outage every other answer is 503 SERVICE_UNAVAILABLE with the contract error body (never a 500)')
    t.ok(unavailable.length > 0, `${unavailable.length} of ${during.length} requests during the outage got 503`)
    t.same(unavailable.filter((o) => /ECONNREFUSED|terminated|127\.0\.0\.1|postgres|pg_/i.test(o.text ?? '')).map(describe), [],
      'no 503 body gives driver or address details')
    const slow = during.filter((o) => o.endedAt - o.sentAt > OUTAGE_BOUND_MS)
    t.same(slow.map(describe), [], `every answer during the outage came within ${OUTAGE_BOUND_MS} ms`)
    const ms = unavailable.map((o) => o.endedAt - o.sentAt).sort((a, b) => a - b)
    t.comment(`503 answer times during the outage: median ${ms[Math.floor(ms.length / 2)] ?? '-'} ms, max ${ms[ms.length - 1] ?? '-'} ms`)

    // Liveness never depends on the database; readiness follows it.
    t.same(health.filter((o) => o.path === '/health' && o.status !== 200).map(describe), [], '/health answered 200 throughout')
    const ready = health.filter((o) => o.path === '/health/ready')
    t.ok(ready.some((o) => o.sentAt >= run.crashAt && o.sentAt < run.readyAt && contractErrorProblem(o, 503, 'SERVICE_UNAVAILABLE') === ''),
      '/health/ready answered 503 SERVICE_UNAVAILABLE during the outage')
    t.same(ready.filter((o) => o.endedAt < run.crashAt && o.status !== 200).map(describe), [], '/health/ready answered 200 before it')
    t.same(ready.filter((o) => o.sentAt >= run.readyAt && o.status !== 200).map(describe), [], '/health/ready answered 200 after it')

    t.ok(after.length > 0, `${after.length} requests of the load after recovery`)
    t.same(after.filter((o) => !allowed(o)).map(describe), [], 'after recovery every request of the load succeeds, without a restart')

    // What was acknowledged holds: every 201 user signs in, every 204 session stays ended.
    const signIns = await mapLimit(signedUp, 8, async (email) =>
      ({ email, o: await call(base, 'POST', '/auth/sign-in', { body: { email, password: PASSWORD }, timeoutMs: 20_000 }) }))
    t.same(signIns.filter(({ o }) => o.status !== 200).map(({ email, o }) => `${email}: ${describe(o)}`), [],
      `all ${signedUp.length} users whose sign-up got a 201 sign in`)
    const refreshes = await mapLimit(signedOut, 8, async (token) => await call(base, 'POST', '/auth/refresh', { token, timeoutMs: 20_000 }))
    t.same(refreshes.filter((o) => contractErrorProblem(o, 401, 'TOKEN_REVOKED') !== '').map(describe), [],
      `the refresh tokens of all ${signedOut.length} sessions ended with a 204 → 401 TOKEN_REVOKED`)

    // A burst after recovery: sign-ups, sign-ins and me at once, all answered normally.
    const sessions = signIns.filter(({ o }) => o.status === 200).slice(0, 2 * BURST).map(({ o }) => o.body.access_token as string)
    const burst = await Promise.all([
      ...Array.from({ length: BURST }, async () => await call(base, 'POST', '/auth/sign-up', { body: { name: 'Burst', email: uniqueEmail('burst'), password: PASSWORD }, timeoutMs: 20_000 })),
      ...signedUp.slice(0, BURST).map(async (email) => await call(base, 'POST', '/auth/sign-in', { body: { email, password: PASSWORD }, timeoutMs: 20_000 })),
      ...sessions.map(async (token) => await call(base, 'GET', '/auth/me', { token, timeoutMs: 20_000 }))
    ])
    t.same(burst.filter((o) => o.status !== NORMAL[`${o.method} ${o.path}`]).map(describe), [], `a burst of ${burst.length} requests after recovery all succeed`)
    t.ok(service.alive(), 'and the process is still up')
    t.notMatch(service.output().out, /Server listening[\s\S]*Server listening/, 'it never restarted')
  })
}
