import t from 'tap'
import { createDatabase, EMBEDDED, PASSWORD, sql, uniqueEmail } from '../helper.js'
import { startMailbox, to, type Caught } from '../mailbox.js'
import { call, mapLimit, sleep, startService } from './processes.js'

// The mail outbox across processes: a kill -9 between the commit and the delivery loses nothing,
// and two replicas on one database send each message once. A real SMTP conversation over loopback
// with the service processes, as in production.

const USERS = 40
const settings = { ARGON2_MEMORY_KIB: '1024', ARGON2_ITERATIONS: '1', EMAIL_COOLDOWN: '0' }
const skip = EMBEDDED ? 'needs a PostgreSQL server (TEST_DATABASE_URL): replicas share one database' : ''
if (skip !== '') t.plan(0, skip)
else await outbox()

async function signUps (base: string, n: number): Promise<string[]> {
  const emails = Array.from({ length: n }, () => uniqueEmail('outbox'))
  await mapLimit(emails, 8, async (email) => {
    const o = await call(base, 'POST', '/auth/sign-up', { body: { name: 'Outbox Test', email, password: PASSWORD } })
    if (o.status !== 201) throw new Error(`sign-up: ${o.status}`)
  })
  return emails
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[xs.length >> 1]

async function outbox (): Promise<void> {
  t.test('kill -9 while mail waits in the outbox (the server refusing with 451), restart: every message arrives, once', async (t) => {
    const mailbox = await startMailbox(t)
    mailbox.refuse(451)
    const databaseUrl = await createDatabase(t)
    const first = startService(t, databaseUrl, { ...settings, SMTP_URL: mailbox.url })
    const base = await first.listening
    const emails = await signUps(base, USERS) // each queues a verification link
    for (const email of emails) {
      const o = await call(base, 'POST', '/auth/password/forgot', { body: { email } })
      t.equal(o.status, 202)
    }
    // Every row has been tried and refused, and is waiting for its retry: then the kill.
    const deadline = Date.now() + 20_000
    let pending = -1
    while (Date.now() < deadline) {
      pending = (await sql(databaseUrl, 'SELECT count(*)::int AS n FROM outbox WHERE attempts = 0 OR locked_until IS NOT NULL'))[0].n
      if (pending === 0) break
      await sleep(200)
    }
    t.equal(pending, 0, 'every message tried once and refused')
    t.equal(mailbox.messages.length, 0)
    process.kill(first.pid, 'SIGKILL')
    await first.exited
    const waiting = (await sql(databaseUrl, 'SELECT count(*)::int AS n FROM outbox'))[0].n
    t.equal(waiting, USERS * 2, 'the outbox holds every message after the kill')

    mailbox.refuse(null)
    const restarted = Date.now()
    const second = startService(t, databaseUrl, { ...settings, SMTP_URL: mailbox.url })
    await second.listening
    await Promise.all(emails.flatMap((e) => [mailbox.waitFor(to(e, 'verify-email'), 40_000), mailbox.waitFor(to(e, 'reset-password'), 40_000)]))
    const seconds = (Date.now() - restarted) / 1000
    await sleep(3000) // room for a duplicate to show
    const perAddress = emails.map((e) => mailbox.messages.filter(to(e)).length)
    t.same([...new Set(perAddress)], [2], 'each address got its two messages, once each')
    t.equal((await sql(databaseUrl, 'SELECT count(*)::int AS n FROM outbox'))[0].n, 0, 'the outbox is empty')
    t.comment(`${USERS * 2} messages waiting at the kill; all delivered ${seconds.toFixed(1)} s after the restart; ${mailbox.messages.length - USERS * 2} duplicates`)
  })

  t.test('two replicas on one database: each message is sent once, within seconds', async (t) => {
    const mailbox = await startMailbox(t)
    const databaseUrl = await createDatabase(t)
    const replicas = [startService(t, databaseUrl, { ...settings, SMTP_URL: mailbox.url, EMAIL_VERIFICATION: 'off' }),
      startService(t, databaseUrl, { ...settings, SMTP_URL: mailbox.url, EMAIL_VERIFICATION: 'off' })]
    const bases = await Promise.all(replicas.map(async (r) => await r.listening))
    const emails = await signUps(bases[0], USERS * 2)
    const delays: number[] = []
    await mapLimit(emails.map((e, i) => [e, i] as const), 8, async ([email, i]) => {
      const asked = Date.now()
      const o = await call(bases[i % 2], 'POST', '/auth/password/forgot', { body: { email } })
      t.equal(o.status, 202)
      const mail: Caught = await mailbox.waitFor(to(email, 'reset-password'), 20_000)
      if (mail !== undefined) delays.push(Date.now() - asked)
    })
    await sleep(3000) // room for a duplicate to show
    const perAddress = emails.map((e) => mailbox.messages.filter(to(e)).length)
    t.same([...new Set(perAddress)], [1], 'one message per address')
    t.equal(mailbox.messages.length, emails.length, 'no duplicates')
    t.comment(`${emails.length} reset mails over two replicas: delay from 202 to delivery median ${median(delays)} ms, max ${Math.max(...delays)} ms; ${mailbox.messages.length - emails.length} duplicates`)
  })
}
