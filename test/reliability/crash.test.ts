import t from 'tap'
import { createDatabase, EMBEDDED, PASSWORD, sql, uniqueEmail } from '../helper.js'
import { call, contractErrorProblem, describe, mapLimit, sleep, startService, type Outcome } from './processes.js'

// Issue #7, crash: kill -9 of the service in the middle of a sign-up load, restart: every
// acknowledged (201) sign-up is there. A 201 is sent only after the INSERT has committed, so
// losing the process must not lose it; requests cut off by the kill were never acknowledged and
// may or may not exist, but never half.

const LOOPS = 16
const LOAD_MS = 4000 // the kill comes in the middle of this, after KILL_AFTER acknowledgements
const KILL_AFTER = 60
const MAX_SIGN_UPS = 3000 // a bound on the load whatever the machine's speed

const settings = {
  // The cheapest argon2id the settings allow: more sign-ups per second, so more are in flight at the kill.
  ARGON2_MEMORY_KIB: '1024',
  ARGON2_ITERATIONS: '1'
}

const skip = EMBEDDED ? 'needs a PostgreSQL server (TEST_DATABASE_URL): a killed process would take its embedded database with it' : ''
if (skip !== '') t.plan(0, skip)
else await crash()

async function crash (): Promise<void> {
  t.test('kill -9 during a sign-up load, restart on the same database: every 201 sign-up is there', async (t) => {
    const databaseUrl = await createDatabase(t)
    const first = startService(t, databaseUrl, settings)
    const base = await first.listening

    const acknowledged: string[] = [] // emails answered 201
    const attempted = new Set<string>()
    const outcomes: Array<Outcome & { email: string }> = []
    const run = { killedAt: 0 } // shared with the loops
    let sent = 0
    const started = Date.now()

    const loop = async (): Promise<void> => {
      while (run.killedAt === 0 && Date.now() - started < LOAD_MS * 2 && sent < MAX_SIGN_UPS) {
        sent++
        const email = uniqueEmail('crash')
        attempted.add(email)
        const o = await call(base, 'POST', '/auth/sign-up', { body: { name: 'Crash Test', email, password: PASSWORD }, timeoutMs: 20_000 })
        outcomes.push({ ...o, email })
        if (o.status === 201) acknowledged.push(email)
        // A fast 503 (the hashing queue is full) means: back off a little, like a client would.
        if (o.status === 503) await sleep(20)
      }
    }
    const loops = Array.from({ length: LOOPS }, loop)

    // Kill once enough sign-ups are acknowledged, so that the check below has something to find.
    const deadline = Date.now() + LOAD_MS * 2
    while (acknowledged.length < KILL_AFTER && Date.now() < deadline) await sleep(20)
    await sleep(200)
    const inFlight = outcomes.length < sent ? sent - outcomes.length : 0
    run.killedAt = Date.now()
    process.kill(first.pid, 'SIGKILL')
    await Promise.all(loops)
    const exit = await first.exited
    t.equal(exit.signal, 'SIGKILL', 'the first process died of SIGKILL')
    t.ok(acknowledged.length >= KILL_AFTER, `${acknowledged.length} sign-ups acknowledged before the kill`)
    t.ok(inFlight > 0, `${inFlight} sign-ups were in flight at the kill`)

    // Before the kill every answer was a 201 or the hashing queue's fast 503; nothing else.
    const beforeKill = outcomes.filter((o) => o.endedAt < run.killedAt && o.status !== undefined)
    const odd = beforeKill.filter((o) => o.status !== 201 && contractErrorProblem(o, 503, 'SERVICE_UNAVAILABLE') !== '')
    t.same(odd.map(describe), [], 'before the kill: only 201 or 503 SERVICE_UNAVAILABLE')
    const second = startService(t, databaseUrl, settings)
    const base2 = await second.listening

    // Every acknowledged sign-up is in the database, whole.
    const rows = await sql<{ email: string, name: string, password_hash: string }>(databaseUrl, 'SELECT email, name, password_hash FROM users')
    const stored = new Set(rows.map((r) => r.email))
    t.same(acknowledged.filter((e) => !stored.has(e)), [], `all ${acknowledged.length} acknowledged emails are in the users table`)
    t.same(rows.filter((r) => !attempted.has(r.email)).map((r) => r.email), [], 'no user the test did not sign up')
    t.same(rows.filter((r) => !r.password_hash.startsWith('$argon2id$') || r.name !== 'Crash Test').map((r) => r.email), [],
      'no half-written user: every row has its name and an argon2id hash')

    // Every stored user, acknowledged or caught by the kill after its commit, can sign in.
    const signIns = await mapLimit(rows.map((r) => r.email), 8, async (email) =>
      ({ email, o: await call(base2, 'POST', '/auth/sign-in', { body: { email, password: PASSWORD }, timeoutMs: 20_000 }) }))
    t.same(signIns.filter(({ o }) => o.status !== 200).map(({ email, o }) => `${email}: ${describe(o)}`), [],
      `all ${rows.length} stored users (${acknowledged.length} acknowledged, ${rows.length - acknowledged.length} unacknowledged) sign in after the restart`)

    // An acknowledged email is taken, whatever its case.
    for (const email of [acknowledged[0], acknowledged[acknowledged.length - 1].toUpperCase()]) {
      const again = await call(base2, 'POST', '/auth/sign-up', { body: { name: 'Again', email, password: PASSWORD } })
      t.equal(contractErrorProblem(again, 409, 'EMAIL_TAKEN'), '', `signing up again as ${email} → 409 EMAIL_TAKEN`)
    }
    t.equal((await call(base2, 'GET', '/health/ready')).status, 200, 'the restarted service is ready')
  })
}
