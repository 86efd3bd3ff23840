import http from 'node:http'
import t from 'tap'
import { createDatabase, EMBEDDED, PASSWORD, uniqueEmail } from '../helper.js'
import { call, contractErrorProblem, describe, logLines, mapLimit, sleep, startService, within, type Outcome } from './processes.js'

// Issue #7, graceful shutdown: SIGTERM under load. Every request accepted before the signal
// completes with its normal answer, new connections are refused or get 503, exit code 0 within
// 10 s. Clients use keep-alive, as real ones do, so the signal finds busy and idle connections.

const LOOPS = 8
const HELD = 3 // sign-ins read by the service before the signal whose bodies arrive after it
const LOAD_BEFORE_SIGNAL_MS = 2000
const NORMAL: Record<string, number> = { 'POST /auth/sign-in': 200, 'POST /auth/refresh': 200, 'GET /auth/me': 200, 'GET /health': 200 }
// What a client sees when no server takes its new connection, or one drops it before any answer.
const REFUSED = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE'])

interface Sent extends Outcome { loop: number }

const skip = EMBEDDED ? 'needs a PostgreSQL server (TEST_DATABASE_URL)' : ''
if (skip !== '') t.plan(0, skip)
else await shutdown()

async function shutdown (): Promise<void> {
  t.test('SIGTERM under keep-alive load: accepted requests finish normally, new connections are refused or 503, exit 0 within 10 s', async (t) => {
    const databaseUrl = await createDatabase(t)
    // Default argon2id costs: a sign-in takes long enough that some are surely in flight at the signal.
    const service = startService(t, databaseUrl)
    const base = await service.listening

    const emails = Array.from({ length: LOOPS }, () => uniqueEmail('shutdown'))
    const setup = await mapLimit(emails, 4, async (email) => await call(base, 'POST', '/auth/sign-up', { body: { name: 'Shutdown', email, password: PASSWORD } }))
    for (const o of setup) if (o.status !== 201) throw new Error(`setup sign-up failed: ${describe(o)}`)

    const outcomes: Sent[] = []
    // Shared with the loops: `closingAt` is Date.now() when the service's log said it is shutting
    // down; `stopped`: the process has exited, or the test gives up.
    const run = { closingAt: 0, stopped: false }
    t.teardown(() => { run.stopped = true }) // should the test end early, the loops end too
    const agents: http.Agent[] = []
    t.teardown(() => { for (const a of agents) a.destroy() })

    const loop = async (n: number): Promise<void> => {
      // One kept-alive connection per loop, like a client with a connection pool of one.
      const agent = new http.Agent({ keepAlive: true, maxSockets: 1 })
      agents.push(agent)
      const send = async (method: string, path: string, opts: { body?: unknown, token?: string } = {}): Promise<Sent> => {
        const o = { ...await call(base, method, path, { ...opts, agent, timeoutMs: 20_000 }), loop: n }
        outcomes.push(o)
        return o
      }
      let session: { access: string, refresh: string } | undefined
      for (let i = 0; !run.stopped && outcomes.length < 20_000; i++) {
        let o: Sent
        if (session === undefined || i % 10 === 0) {
          o = await send('POST', '/auth/sign-in', { body: { email: emails[n], password: PASSWORD } })
          if (o.status === 200) session = { access: o.body.access_token, refresh: o.body.refresh_token }
        } else if (i % 3 === 0) {
          o = await send('POST', '/auth/refresh', { token: session.refresh })
          if (o.status === 200) session = { access: o.body.access_token, refresh: o.body.refresh_token }
        } else {
          o = await send('GET', '/auth/me', { token: session.access })
        }
        // After the signal, keep knocking (new connections must be refused), but not in a busy loop.
        if (o.status !== 200) await sleep(25)
      }
    }

    // After the service says it is closing: a new connection every 25 ms, each must be refused or get 503.
    const probe = async (): Promise<void> => {
      while (!run.stopped) {
        if (run.closingAt !== 0) outcomes.push({ ...await call(base, 'GET', '/health', { timeoutMs: 20_000 }), loop: -1 })
        await sleep(25)
      }
    }

    const load = [...Array.from({ length: LOOPS }, async (_, n) => await loop(n)), probe()]
    await sleep(LOAD_BEFORE_SIGNAL_MS)

    // Requests surely accepted before the signal, whatever the timing: the service has read
    // their headers (it answered 100 Continue); their bodies come only once it is closing.
    let release = (): void => {}
    const released = new Promise<void>((resolve) => { release = resolve })
    const accepted = { count: 0 }
    const held = emails.slice(0, HELD).map(async (email) => await call(base, 'POST', '/auth/sign-in', {
      body: { email, password: PASSWORD }, timeoutMs: 20_000, holdBodyUntil: released, onContinue: () => { accepted.count++ }
    }))
    for (let i = 0; i < 500 && accepted.count < HELD; i++) await sleep(20)
    t.equal(accepted.count, HELD, `the service read the headers of ${HELD} held sign-ins before the signal`)

    const signalAt = Date.now()
    process.kill(service.pid, 'SIGTERM')
    run.closingAt = await service.waitForOutput(/"msg":"shutting down"/, 10_000).catch(() => Date.now())
    // Let the close get under way (listener closed, idle connections dropped) before the bodies come.
    await sleep(300)
    release()
    const heldOutcomes = await Promise.all(held)
    const exit = await within(service.exited, 15_000)
    run.stopped = true
    await Promise.all(load)

    for (const o of heldOutcomes) {
      t.equal(o.status, 200, `a sign-in accepted before the signal whose body came during the close → 200 (got ${o.status ?? o.error ?? '?'})`)
      t.ok(typeof o.body?.access_token === 'string', 'with its tokens')
      t.equal(o.headers?.connection, 'close', 'and Connection: close, so the client does not reuse the connection')
    }

    t.ok(exit !== undefined, 'the process exited')
    t.equal(exit?.code, 0, 'exit code 0')
    t.equal(exit?.signal, null, 'not killed by a signal')
    const tookMs = (exit?.at ?? Infinity) - signalAt
    t.ok(tookMs < 10_000, `exited ${tookMs} ms after SIGTERM (limit 10 s)`)

    const before = outcomes.filter((o) => o.sentAt < signalAt)
    const inFlight = before.filter((o) => o.endedAt > signalAt && o.status !== undefined)
    t.ok(inFlight.length > 0, `${inFlight.length} requests were in flight at the signal and got an answer`)
    t.ok(before.length > LOOPS * 5, `${before.length} requests before the signal`)

    // Every answer is the request's normal one, or a 503 in the contract's shape for a request
    // that reached the service while it closed.
    const wrong = outcomes.filter((o) => o.status !== undefined && o.status !== NORMAL[`${o.method} ${o.path}`] &&
      contractErrorProblem(o, 503, 'SERVICE_UNAVAILABLE') !== '')
    t.same(wrong.map((o) => `${describe(o)}: ${contractErrorProblem(o, 503, 'SERVICE_UNAVAILABLE')}`), [],
      'every answer is 200 or 503 SERVICE_UNAVAILABLE with the contract error body')
    t.same(outcomes.filter((o) => o.cutOff).map(describe), [], 'no answer was cut off after its status line')
    t.same(outcomes.filter((o) => o.error === 'TIMEOUT').map(describe), [], 'no request hung')
    t.same(outcomes.filter((o) => o.error !== undefined && !REFUSED.has(o.error)).map(describe), [],
      'requests without an answer failed only at the connection (refused or dropped unanswered)')

    // Accepted = the service answered it. Its log has a line for every answer it sent, with the
    // request id this client chose: each must have reached the client, with the same status.
    const byId = new Map([...setup, ...heldOutcomes, ...outcomes].map((o) => [o.requestId, o]))
    const answered = logLines(service.output().out).filter((l) => typeof l.reqId === 'string' && l.reqId.startsWith('rel-') &&
      (l.msg === 'request' || /server is closing/.test(String(l.msg))))
    const lost = answered.filter((l) => byId.get(l.reqId)?.status !== (l.statusCode ?? l.res?.statusCode))
      .map((l) => `${String(l.reqId)} ${String(l.method ?? '')} ${String(l.url ?? '')} logged ${String(l.statusCode ?? l.res?.statusCode)}, client saw ${byId.get(l.reqId) !== undefined ? describe(byId.get(l.reqId) as Outcome) : 'nothing'}`)
    t.same(lost, [], `all ${answered.length} answers the service logged reached the client intact`)
    t.ok(answered.length > 0, 'the log has the answers')

    // Before the signal nothing goes unanswered but the kept-alive race every HTTP client knows:
    // the server closes an idle connection just as the client reuses it (the server never read it).
    const unansweredBefore = before.filter((o) => o.status === undefined)
    t.same(unansweredBefore.filter((o) => !o.reused).map(describe), [], 'every request sent before the signal on a new connection was answered')
    t.comment(`${unansweredBefore.length} requests sent before the signal on a kept-alive connection were dropped unread`)

    // New connections once the service is closing: refused, or a 503 (checked above), never served.
    const fresh = outcomes.filter((o) => o.sentAt >= run.closingAt && !o.reused)
    t.ok(fresh.length > 0, `${fresh.length} new connections tried after the service began closing`)
    t.same(fresh.filter((o) => o.status !== undefined && o.status !== 503).map(describe), [], 'no new connection after the signal was served')
    const tally = (list: Outcome[]): string => JSON.stringify(list.reduce<Record<string, number>>((m, o) => {
      const k = String(o.status ?? o.error)
      m[k] = (m[k] ?? 0) + 1
      return m
    }, {}))
    t.comment(`before the signal: ${tally(before)}; after it: ${tally(outcomes.filter((o) => o.sentAt >= signalAt))}; new connections after closing began: ${tally(fresh)}`)
  })
}
