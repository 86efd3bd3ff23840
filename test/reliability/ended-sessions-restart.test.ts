import http from 'node:http'
import t from 'tap'
import { claimsOf, PASSWORD, sql, uniqueEmail } from '../helper.js'
import { LISTENER_QUERY } from '../../src/ended-sessions.js'
import {
  call, contractErrorProblem, describe, logLines, mapLimit, postgresBinDir, sleep, startService, startThrowawayPostgres, type Outcome
} from './processes.js'

// Ended sessions across a PostgreSQL restart (src/ended-sessions.ts): two replicas (processes) on
// a throwaway PostgreSQL server that is crashed and started again under a load of `GET /auth/me`,
// while sessions are signed out before the crash, around it and while it is down (retried, as a
// client does, until a clear answer), and the moment it is back (before the replicas' LISTEN
// connections are, most likely). Once the database is back and both replicas are ready, within
// a grace for the LISTEN reconnect (every 250 ms) and its catch-up read: every session whose sign-out got
// a 204, and every one the database says has ended, is refused with 401 TOKEN_REVOKED by both
// replicas; every other session is still accepted by both.

const SESSIONS = 40
const PER_GROUP = 10 // signed out before the crash, around it and while it is down, as it comes back
const KEPT = SESSIONS - 3 * PER_GROUP // never signed out
const BEFORE_MS = 2000 // the "before" sign-outs are spread over this
const OUTAGE_MS = 3000 // from the crash to the restart
const AFTER_SPACING_MS = 50 // between the sign-outs sent as the database comes back
const RETRY_MS = 200 // a client's pause before it retries a sign-out that got no clear answer
const RETRY_FOR_MS = 20_000 // and how long after the restart it goes on trying
// The LISTEN reconnect (every 250 ms) and the catch-up read, with a margin for a busy 2-core machine.
const GRACE_MS = 3000
const LOAD_LOOPS = 6
const LOAD_PAUSE_MS = 2 // each loop's pause between requests: the load runs to the end on a fast machine too
const MAX_REQUESTS = 60_000 // the load's bounds, whatever the machine's speed
const MAX_LOAD_MS = 45_000

const settings = {
  DB_CONNECT_TIMEOUT_MS: '1000',
  DB_STATEMENT_TIMEOUT_MS: '2000',
  // The cheapest argon2id the settings allow: the test is about ended sessions, not hashing.
  ARGON2_MEMORY_KIB: '1024',
  ARGON2_ITERATIONS: '1'
}

interface Session { sid: string, access: string, refresh: string }

type Group = 'before' | 'during' | 'after'
interface Ending {
  s: Session
  group: Group
  /** The replica the sign-outs go to. */
  via: number
  attempts: Outcome[]
  /**
   * 'ended': a 204. 'ended-earlier': a 401 TOKEN_REVOKED after attempts without a clear answer,
   * one of which ended it. undefined: no clear answer at all (the database says).
   */
  answer?: 'ended' | 'ended-earlier'
  /** Date.now() when the clear answer came back. */
  clearAt: number
}

interface Me { s: Session, replica: number, o: Outcome }

const revoked = (o: Outcome): boolean => contractErrorProblem(o, 401, 'TOKEN_REVOKED') === ''
const max = (xs: number[]): string => xs.length === 0 ? '-' : String(Math.max(...xs))

const bin = postgresBinDir()
const skip = bin === '' ? 'needs PostgreSQL server binaries (apt-get install postgresql) for a throwaway server' : ''
if (skip !== '') t.plan(0, skip)
else await restart()

async function restart (): Promise<void> {
  t.test('PostgreSQL restarted under load while sessions end: no ended session is accepted once it is back', async (t) => {
    const pg = await startThrowawayPostgres(t, bin)
    const names = ['A', 'B']
    // PGAPPNAME (read by pg): pg_stat_activity tells whose LISTEN connection is whose.
    const services = names.map((name) => startService(t, pg.url, { ...settings, PGAPPNAME: `replica-${name}` }))
    const bases = await Promise.all(services.map(async (s) => await s.listening))
    const agents = bases.map(() => new http.Agent({ keepAlive: true, maxSockets: LOAD_LOOPS + 4 }))
    t.teardown(() => { for (const a of agents) a.destroy() })
    const get = async (replica: number, s: Session): Promise<Outcome> =>
      await call(bases[replica], 'GET', '/auth/me', { token: s.access, agent: agents[replica], timeoutMs: 10_000 })

    // The sessions, made on replica A.
    const sessions = await mapLimit(Array.from({ length: SESSIONS }, (_, i) => i), 8, async (i): Promise<Session> => {
      const email = uniqueEmail('restart')
      const up = await call(bases[0], 'POST', '/auth/sign-up', { body: { name: 'Restart', email, password: PASSWORD }, timeoutMs: 20_000 })
      if (up.status !== 201) throw new Error(`sign-up: ${describe(up)}`)
      const o = await call(bases[0], 'POST', '/auth/sign-in', { body: { email, password: PASSWORD }, timeoutMs: 20_000 })
      if (o.status !== 200) throw new Error(`sign-in: ${describe(o)}`)
      return { sid: claimsOf(o.body.access_token).sid as string, access: o.body.access_token, refresh: o.body.refresh_token }
    })
    const first = (await Promise.all(sessions.flatMap((s) => [0, 1].map(async (r) => await get(r, s)))))
    t.same(first.filter((o) => o.status !== 200).map(describe), [], `all ${SESSIONS} access tokens are accepted by both replicas first`)

    // Shared with the loops: `stopped` ends them; Date.now() when the crash began, when the
    // restart began and ended (pg_ctl start -w: it accepts connections), and when each replica's
    // first /health/ready sent after the restart began answered 200.
    const run = { stopped: false, crashAt: 0, restartAt: 0, backAt: 0, readyAt: [0, 0] }
    t.teardown(() => { run.stopped = true }) // should the test end early, the loops end too
    const loadStart = Date.now()

    // The load: `me` with every access token on both replicas, in turn.
    const load: Me[] = []
    let next = 0
    const meLoop = async (): Promise<void> => {
      while (!run.stopped && load.length < MAX_REQUESTS && Date.now() - loadStart < MAX_LOAD_MS) {
        const k = next++ % (2 * SESSIONS)
        const s = sessions[k % SESSIONS]
        const replica = Math.floor(k / SESSIONS)
        const o = await get(replica, s)
        load.push({ s, replica, o })
        await sleep(o.status === undefined || o.status >= 500 ? 50 : LOAD_PAUSE_MS)
      }
    }
    const readiness: Outcome[][] = [[], []]
    const poll = async (replica: number): Promise<void> => {
      while (!run.stopped && Date.now() - loadStart < MAX_LOAD_MS) {
        const o = await call(bases[replica], 'GET', '/health/ready', { timeoutMs: 10_000 })
        readiness[replica].push(o)
        if (o.status === 200 && run.restartAt !== 0 && o.sentAt >= run.restartAt && run.readyAt[replica] === 0) run.readyAt[replica] = o.endedAt
        await sleep(100)
      }
    }
    const loops = [...Array.from({ length: LOAD_LOOPS }, meLoop), poll(0), poll(1)]

    // Sign-outs: retried after an unclear answer (no answer, a 503) until a clear one, as a client would.
    const endings: Ending[] = []
    const signOut = async (s: Session, group: Group, via: number): Promise<void> => {
      const e: Ending = { s, group, via, attempts: [], clearAt: 0 }
      endings.push(e)
      for (;;) {
        const o = await call(bases[via], 'POST', '/auth/sign-out', { token: s.refresh, timeoutMs: 10_000 })
        e.attempts.push(o)
        if (o.status === 204 || o.status === 401) {
          e.answer = o.status === 204 ? 'ended' : 'ended-earlier'
          e.clearAt = o.endedAt
          return
        }
        if (run.stopped || (run.backAt !== 0 && Date.now() - run.backAt > RETRY_FOR_MS)) return
        await sleep(RETRY_MS)
      }
    }
    const group = (g: number): Session[] => sessions.slice(KEPT + g * PER_GROUP, KEPT + (g + 1) * PER_GROUP)
    const [beforeGroup, duringGroup, afterGroup] = [group(0), group(1), group(2)]
    const kept = sessions.slice(0, KEPT)
    const pending: Array<Promise<void>> = []

    // Before: one at a time, via either replica, while the load runs.
    for (const [j, s] of beforeGroup.entries()) {
      await signOut(s, 'before', j % 2)
      await sleep(BEFORE_MS / PER_GROUP)
    }

    // The crash (pg_ctl stop -m immediate), with sign-outs sent as it begins and while it is down.
    run.crashAt = Date.now()
    const crashing = { done: false }
    const crash = pg.crash().finally(() => { crashing.done = true })
    let j = 0
    for (; j < PER_GROUP / 2 && !crashing.done; j++) {
      pending.push(signOut(duringGroup[j], 'during', j % 2))
      await sleep(20)
    }
    await crash
    const crashMs = Date.now() - run.crashAt
    for (; j < PER_GROUP; j++) {
      pending.push(signOut(duringGroup[j], 'during', j % 2))
      await sleep(OUTAGE_MS / PER_GROUP)
    }
    await sleep(run.crashAt + OUTAGE_MS - Date.now())

    // The restart, and sign-outs the moment it accepts connections again.
    run.restartAt = Date.now()
    await pg.start()
    run.backAt = Date.now()
    // When each replica LISTENs again (polled): a session that ends before that, its NOTIFY
    // misses the replica, which has only its catch-up read to learn of it.
    const listenAgainAt = [0, 0]
    const listens = (async () => {
      while (listenAgainAt.includes(0) && Date.now() - run.backAt < RETRY_FOR_MS) {
        const rows = await sql<{ name: string }>(pg.url, `SELECT application_name AS name FROM pg_stat_activity WHERE ${LISTENER_QUERY}`).catch(() => [])
        for (const [r, name] of names.entries()) if (listenAgainAt[r] === 0 && rows.some((row) => row.name === `replica-${name}`)) listenAgainAt[r] = Date.now()
        await sleep(25)
      }
    })()
    for (const [j, s] of afterGroup.entries()) {
      pending.push(signOut(s, 'after', j % 2))
      await sleep(AFTER_SPACING_MS)
    }

    for (let i = 0; i < 300 && run.readyAt.includes(0); i++) await sleep(100)
    t.ok(!run.readyAt.includes(0), `both replicas are ready again: ${run.readyAt.map((at, r) => `${names[r]} ${at === 0 ? 'never' : `${at - run.restartAt} ms`}`).join(', ')} after the restart began`)
    await Promise.all([...pending, listens])
    const bothReadyAt = Math.max(...run.readyAt)
    const settledAt = Math.max(bothReadyAt, ...endings.map((e) => e.clearAt))

    // What the database says ended (a sign-out without a clear answer may or may not have).
    const rows = await sql<{ id: string, revoked_at: Date | null }>(pg.url, 'SELECT id, revoked_at FROM sessions WHERE id = ANY($1::uuid[])', [sessions.map((s) => s.sid)])
    const endedInDb = new Set(rows.filter((r) => r.revoked_at !== null).map((r) => r.id))
    t.equal(rows.length, SESSIONS, 'every session is in the database')
    const acknowledged = endings.filter((e) => e.answer !== undefined)
    t.same(acknowledged.filter((e) => !endedInDb.has(e.s.sid)).map((e) => `${e.group} ${e.s.sid}: ${e.attempts.map(describe).join('; ')}`), [],
      `every sign-out answered 204 (or 401 TOKEN_REVOKED after an unclear attempt) ended its session in the database (${acknowledged.length})`)
    t.same(endings.filter((e) => e.answer === 'ended-earlier' && (e.attempts.length < 2 || !revoked(e.attempts[e.attempts.length - 1]))).map((e) => e.attempts.map(describe).join('; ')), [],
      'a sign-out is refused only after an attempt of its own without a clear answer, and then with TOKEN_REVOKED')
    t.same(endings.flatMap((e) => e.attempts).filter((o) => o.status !== undefined && ![204, 401, 503].includes(o.status)).map(describe), [],
      'sign-outs are answered 204, 401 or 503, never anything else')
    t.same(kept.filter((s) => endedInDb.has(s.sid)).map((s) => s.sid), [], 'the sessions never signed out have not ended')

    // Within the grace after both are ready: every session the database says has ended is refused
    // by both replicas, every other one accepted by both. Polled, to measure when it holds.
    const checks = sessions.flatMap((s) => [0, 1].map((replica) => ({ s, replica, o: undefined as Outcome | undefined, okAt: 0 })))
    const right = (c: typeof checks[number]): boolean => c.o !== undefined &&
      (endedInDb.has(c.s.sid) ? revoked(c.o) : c.o.status === 200)
    const oneEach = names.map((name) => ({ name: `replica-${name}`, n: 1 }))
    let listening: Array<{ name: string, n: number }> = []
    for (;;) {
      await mapLimit(checks.filter((c) => c.okAt === 0), 8, async (c) => {
        c.o = await get(c.replica, c.s)
        if (right(c)) c.okAt = c.o.endedAt
      })
      listening = await sql<{ name: string, n: number }>(pg.url,
        `SELECT application_name AS name, count(*)::int AS n FROM pg_stat_activity WHERE ${LISTENER_QUERY} GROUP BY 1 ORDER BY 1`)
      if ((checks.every((c) => c.okAt !== 0) && JSON.stringify(listening) === JSON.stringify(oneEach)) || Date.now() > settledAt + GRACE_MS) break
      await sleep(100)
    }
    // Each check again, at the end: a right answer must stay right.
    await mapLimit(checks, 8, async (c) => { c.o = await get(c.replica, c.s); if (!right(c)) c.okAt = 0 })
    const checkedAt = Date.now()
    run.stopped = true
    await Promise.all(loops)

    const what = (c: typeof checks[number]): string => {
      const e = endings.find((e) => e.s === c.s)
      return `${names[c.replica]} ${c.s.sid} (${e === undefined ? 'kept' : `${e.group}, ${e.answer ?? 'unclear'}, via ${names[e.via]}`}): ${describe(c.o as Outcome)}`
    }
    const signedOut = (c: typeof checks[number]): boolean => endings.some((e) => e.s === c.s && e.answer === 'ended')
    t.same(checks.filter((c) => signedOut(c) && c.okAt === 0).map(what), [],
      `every session whose sign-out got a 204 (${endings.filter((e) => e.answer === 'ended').length}) is refused with 401 TOKEN_REVOKED by both replicas within ${GRACE_MS} ms of both being ready`)
    t.same(checks.filter((c) => !signedOut(c) && endedInDb.has(c.s.sid) && c.okAt === 0).map(what), [],
      `every other session the database says has ended (${endings.filter((e) => e.answer !== 'ended' && endedInDb.has(e.s.sid)).length}) is refused by both replicas too`)
    t.same(checks.filter((c) => !endedInDb.has(c.s.sid) && c.okAt === 0).map(what), [],
      `every session that has not ended (${SESSIONS - endedInDb.size}, ${KEPT} never signed out) is accepted by both replicas: no false revocation`)
    t.same(listening, oneEach, 'each replica LISTENs again, on one connection')

    // The load, session by session and replica by replica, in the order the answers were sent.
    for (const r of [0, 1]) {
      t.ok(readiness[r].some((o) => o.sentAt >= run.crashAt && o.endedAt < run.restartAt && contractErrorProblem(o, 503, 'SERVICE_UNAVAILABLE') === ''),
        `replica ${names[r]} saw the outage: /health/ready answered 503 while PostgreSQL was down`)
    }
    t.same(load.filter(({ o }) => o.status === undefined).map(({ o }) => describe(o)), [], 'every request of the load got an answer')
    t.same(load.filter(({ o }) => o.status !== undefined && o.status !== 200 && !revoked(o) && contractErrorProblem(o, 503, 'SERVICE_UNAVAILABLE') !== '').map(({ o }) => describe(o)), [],
      'the load is answered 200, 401 TOKEN_REVOKED or 503 SERVICE_UNAVAILABLE')
    t.same(load.filter(({ s, o }) => !endedInDb.has(s.sid) && revoked(o)).map(({ s, replica, o }) => `${names[replica]} ${s.sid}: ${describe(o)}`), [],
      'no session that has not ended is refused by the load: no false revocation at any time')
    const broken: string[] = []
    for (const s of sessions) {
      for (const replica of [0, 1]) {
        const seen = load.filter((m) => m.s === s && m.replica === replica).sort((a, b) => a.o.sentAt - b.o.sentAt)
        const refusedAt = seen.find(({ o }) => revoked(o))?.o.endedAt
        if (refusedAt === undefined) continue
        for (const { o } of seen) if (o.sentAt > refusedAt && o.status === 200) broken.push(`${names[replica]} ${s.sid}: ${describe(o)}, refused before`)
      }
    }
    t.same(broken, [], 'once a replica has refused an ended session, it never accepts it again (its memory outlives the outage)')

    // How long each replica went on accepting an ended session after its 204. The replica that
    // answered the 204 refuses it at once; the other, while the database is up, as soon as the
    // NOTIFY arrives; for a session that ended near the crash or after it, within the grace once
    // the database is back and both replicas are ready.
    const lags: Array<{ group: Group, same: boolean, when: 'before' | 'during' | 'after', accepted: number, refused: number }> = []
    const late: string[] = []
    for (const e of endings) {
      if (e.answer === undefined) continue
      const endAt = e.clearAt
      const when = endAt < run.crashAt ? 'before' : endAt < run.backAt ? 'during' : 'after'
      const deadline = endAt + GRACE_MS < run.crashAt ? endAt + GRACE_MS : Math.max(endAt, bothReadyAt) + GRACE_MS
      for (const replica of [0, 1]) {
        const same = e.answer === 'ended' && replica === e.via
        const seen = load.filter((m) => m.s === e.s && m.replica === replica && m.o.sentAt > endAt).sort((a, b) => a.o.sentAt - b.o.sentAt)
        const accepted = seen.filter(({ o }) => o.status === 200)
        const lastAccepted = accepted.length === 0 ? 0 : accepted[accepted.length - 1].o.sentAt
        const firstRefused = seen.find(({ o }) => revoked(o) && o.sentAt >= lastAccepted)?.o.endedAt
        const check = checks.find((c) => c.s === e.s && c.replica === replica)
        const refusedAt = firstRefused ?? (check !== undefined && check.okAt !== 0 ? check.okAt : checkedAt)
        lags.push({ group: e.group, same, when, accepted: lastAccepted === 0 ? 0 : lastAccepted - endAt, refused: refusedAt - endAt })
        for (const { o } of accepted) {
          if (same || o.sentAt > deadline) late.push(`${names[replica]} ${e.s.sid} (${e.group}, ${e.answer} via ${names[e.via]} at ${endAt - run.crashAt} ms from the crash): ${describe(o)} sent ${o.sentAt - endAt} ms after`)
        }
      }
    }
    t.same(late, [], 'no ended session is accepted by the replica that ended it after its answer, nor by the other past its grace')

    const byWhen = (w: string): Ending[] => endings.filter((e) => e.answer !== undefined && (e.clearAt < run.crashAt ? 'before' : e.clearAt < run.backAt ? 'during' : 'after') === w)
    t.comment(`load: ${load.length} me requests in ${Math.round((checkedAt - loadStart) / 100) / 10} s on both replicas, each token on each replica every ` +
      `${Math.round((checkedAt - loadStart) / (load.length / (2 * SESSIONS)))} ms on average ` +
      `(${load.filter(({ o }) => o.status === 200).length} accepted, ${load.filter(({ o }) => revoked(o)).length} refused, ${load.filter(({ o }) => o.status === 503).length} 503)`)
    t.comment(`PostgreSQL: crashed in ${crashMs} ms, down ${run.restartAt - run.crashAt} ms, back (pg_ctl start returned) ${run.backAt - run.restartAt} ms after the restart began; ` +
      `replicas ready ${run.readyAt.map((at, r) => `${names[r]} ${at - run.backAt} ms`).join(', ')} and LISTENing ${listenAgainAt.map((at, r) => `${names[r]} ${at === 0 ? 'never' : `${at - run.backAt} ms`}`).join(', ')} after it was back`)
    const missed = endings.filter((e) => e.answer === 'ended' && e.clearAt > run.crashAt && e.clearAt < listenAgainAt[1 - e.via])
    t.comment(`about ${missed.length} sessions ended (204) after the crash and before the other replica LISTENed again (polled every 25 ms): only its catch-up read could tell it`)
    t.comment(`sign-outs answered 204 before the crash: ${byWhen('before').length}, while it was down or starting: ${byWhen('during').length}, once back: ${byWhen('after').length}; ` +
      `${endings.reduce((n, e) => n + e.attempts.filter((o) => o.status !== 204 && o.status !== 401).length, 0)} attempts without a clear answer; ` +
      `${endings.filter((e) => e.answer === 'ended-earlier').length} refused as already ended; ${endings.filter((e) => e.answer === undefined).length} never clear ` +
      `(${endings.filter((e) => e.answer === undefined && endedInDb.has(e.s.sid)).length} of them ended in the database)`)
    for (const e of endings.filter((e) => e.answer !== 'ended')) {
      t.comment(`sign-out without a clear first answer (${e.answer ?? 'never clear'}, ${endedInDb.has(e.s.sid) ? 'ended' : 'not ended'} in the database): ` +
        e.attempts.filter((o, k) => k === 0 || o.status !== 503 || k === e.attempts.length - 1)
          .map((o) => `${describe(o)}, sent ${o.sentAt - run.crashAt} ms from the crash`).join('; '))
    }
    for (const w of ['before', 'during', 'after'] as const) {
      const l = lags.filter((x) => x.when === w)
      if (l.length === 0) continue
      t.comment(`ended ${w === 'during' ? 'while down or starting' : w === 'before' ? 'before the crash' : 'once back'}: max ms from the 204 to the first refusal the load saw: ` +
        `same replica ${max(l.filter((x) => x.same).map((x) => x.refused))}, other replica ${max(l.filter((x) => !x.same).map((x) => x.refused))}; ` +
        `last accepted by the other replica ${max(l.filter((x) => !x.same).map((x) => x.accepted))} ms after`)
    }
    for (const [r, service] of services.entries()) {
      const lost = logLines(service.output().out).filter((l) => /LISTEN connection lost/.test(String(l.msg)))
      t.comment(`replica ${names[r]}: ${lost.length} LISTEN connections lost or not made (${[...new Set(lost.map((l) => String(l.err?.message).replace(/:\d+$/, '')))].join(' | ')})`)
    }
    t.comment(`final check: all right ${Math.max(...checks.map((c) => c.okAt)) - bothReadyAt} ms after both replicas were ready (grace ${GRACE_MS} ms)`)
  })
}
