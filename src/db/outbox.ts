import type { FastifyInstance } from 'fastify'
import type { Db } from './index.js'

// The outbox: what must go out after a commit (mail; webhooks, one kind per endpoint). A row is
// written in the transaction of the change it reports and deleted once delivered. Every replica
// runs a sender per kind, so that a slow or failing mail server or endpoint holds back nothing
// but its own rows; each claims due rows for CLAIM_SECONDS with FOR UPDATE SKIP LOCKED, so no two
// take the same row, and a row whose sender died (kill -9) comes back when its claim runs out.
// Delivery is at least once: a row delivered but not deleted (the sender died, or the database
// went away, in between) is delivered again when its claim runs out.

/** A row as a sender claims it. */
export interface OutboxRow {
  id: string
  kind: string
  user_id: string | null
  payload: Record<string, unknown>
  attempts: number
  /** Queued GIVE_UP_AFTER_SECONDS ago or more (by the database's clock): a failure now is the last. */
  overdue: boolean
}

/** Delivers one row's payload, or throws to have it retried. */
export type Deliver = (row: OutboxRow) => Promise<void>

// A claim outlasts the slowest batch: BATCH rows over two SMTP connections, each attempt bounded
// by the transport's timeouts (src/mail.ts), about 40 s at worst.
const CLAIM_SECONDS = 120
const BATCH = 4
const POLL_MS = 2000
/** Retried for at least this long after the row was written; then dropped, with an error logged. */
export const GIVE_UP_AFTER_SECONDS = 24 * 3600

/** Seconds to wait after the nth failed attempt: 5, 10, 20 … growing to 880 (attempts at most 15 minutes apart, polling included). */
export const retryDelay = (attempts: number): number => Math.min(880, 5 * 2 ** Math.min(attempts - 1, 20))

/** Queues a payload for delivery: call it inside the transaction of the change it reports. */
export async function enqueue (db: Db, kind: string, payload: Record<string, unknown>): Promise<void> {
  await db.query({ name: 'outbox-enqueue', text: 'INSERT INTO outbox (kind, payload) VALUES ($1, $2)', values: [kind, payload] })
}

async function claim (db: Db, kinds: string[]): Promise<OutboxRow[]> {
  const { rows } = await db.query<OutboxRow>({
    name: 'outbox-claim',
    text: `UPDATE outbox SET locked_until = now() + make_interval(secs => $2), attempts = attempts + 1
           WHERE id IN (
             SELECT id FROM outbox
             WHERE kind = ANY ($1) AND next_attempt_at <= now() AND (locked_until IS NULL OR locked_until < now())
             ORDER BY next_attempt_at, id LIMIT $3
             FOR UPDATE SKIP LOCKED)
           RETURNING id, kind, user_id, payload, attempts, created_at < now() - make_interval(secs => $4) AS overdue`,
    values: [kinds, CLAIM_SECONDS, BATCH, GIVE_UP_AFTER_SECONDS]
  })
  return rows
}

async function done (db: Db, id: string): Promise<void> {
  await db.query({ name: 'outbox-done', text: 'DELETE FROM outbox WHERE id = $1', values: [id] })
}

async function retryLater (db: Db, id: string, delaySeconds: number, error: string): Promise<void> {
  await db.query({
    name: 'outbox-retry',
    text: `UPDATE outbox SET locked_until = NULL, last_error = $3, next_attempt_at = now() + make_interval(secs => $2)
           WHERE id = $1`,
    values: [id, delaySeconds, error.slice(0, 500)]
  })
}

export interface OutboxSender {
  /** Look for due rows now (after a commit that queued one), not at the next poll. */
  kick: () => void
}

/**
 * Starts this replica's senders, one for each kind (at ready; stopped before close): each polls
 * every POLL_MS, and at once when kicked; a full batch is followed by the next at once.
 */
export function startOutbox (app: FastifyInstance, handlers: Record<string, Deliver>): OutboxSender {
  const senders = Object.entries(handlers).map(([kind, handler]) => sender(app, kind, handler))
  app.addHook('onReady', async () => { for (const s of senders) s.start() })
  app.addHook('preClose', async () => {
    // Deliveries in flight may finish and settle their rows before the pool closes, within one
    // bound for all (shutdown has 10 s in all); one cut off comes back when its claim runs out.
    await Promise.race([Promise.all(senders.map(async (s) => await s.stop())), new Promise((resolve) => setTimeout(resolve, 3000).unref())])
  })
  return { kick: () => { for (const s of senders) s.kick() } }
}

function sender (app: FastifyInstance, kind: string, handler: Deliver): OutboxSender & { start: () => void, stop: () => Promise<void> } {
  const db = app.pg.pool
  const kinds = [kind]
  let timer: NodeJS.Timeout | undefined
  let running: Promise<void> | undefined
  let again = false
  let stopped = true
  const isStopped = (): boolean => stopped

  async function deliver (row: OutboxRow): Promise<void> {
    try {
      await handler(row)
    } catch (err) {
      const message = (err as Error).message
      if (row.overdue) {
        app.log.error({ outbox: row.id, kind: row.kind, attempts: row.attempts, err: { message } }, 'outbox: giving up on a delivery after 24 hours of attempts')
        await done(db, row.id)
      } else {
        const delay = retryDelay(row.attempts)
        app.log.warn({ outbox: row.id, kind: row.kind, attempts: row.attempts, retryIn: delay, err: { message } }, 'outbox: delivery failed; retrying later')
        await retryLater(db, row.id, delay, message)
      }
      return
    }
    await done(db, row.id)
  }

  async function run (): Promise<void> {
    do {
      again = false
      const rows = await claim(db, kinds)
      // Each row settles on its own: one whose row cannot be settled (the database gone) does
      // not cut the others short; it comes back when its claim runs out.
      const settled = await Promise.allSettled(rows.map(deliver))
      const failed = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected')
      if (failed !== undefined) throw failed.reason
      if (rows.length === BATCH) again = true
    } while (again && !isStopped())
  }

  function tick (): void {
    clearTimeout(timer)
    if (stopped) return
    if (running !== undefined) { again = true; return }
    running = run()
      .catch((err: Error) => app.log.warn({ err: { message: err.message } }, 'outbox: cannot reach the database; retrying'))
      .finally(() => {
        running = undefined
        if (!stopped) timer = setTimeout(tick, again ? 0 : POLL_MS).unref()
      })
  }

  return {
    start: () => { stopped = false; timer = setTimeout(tick, 0).unref() },
    stop: async () => {
      stopped = true
      clearTimeout(timer)
      await running
    },
    kick: () => { if (!stopped) setImmediate(tick) }
  }
}

/** Rows waiting for delivery, for the metrics: of a kind, or of every kind `<kind>:…` (the webhook endpoints). */
export async function waiting (db: Db, kind: string): Promise<number> {
  const { rows } = await db.query<{ n: number }>({
    name: 'outbox-waiting',
    text: "SELECT count(*)::int AS n FROM outbox WHERE kind = $1 OR starts_with(kind, $1 || ':')",
    values: [kind]
  })
  return rows[0].n
}
