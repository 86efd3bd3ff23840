import { createHash } from 'node:crypto'
import { Webhook } from 'standardwebhooks'
import type { FastifyInstance } from 'fastify'
import type { Pool } from 'pg'
import { commaList, type Config } from './config.js'
import type { Deliver, OutboxRow } from './db/outbox.js'

// Signed webhooks (Standard Webhooks: webhook-id, webhook-timestamp, webhook-signature). Database
// triggers queue each event into the outbox in the transaction of the change, one row per
// endpoint (migrations/…_operators.sql); this replica's outbox delivers them, a sender per
// endpoint, retried like mail. The endpoints are set in the database at start, from WEBHOOK_URLS.

/** How long an endpoint has to answer. */
const TIMEOUT_MS = 10_000

/** An endpoint's outbox kind: its URL stays out of the database and the logs (it may hold a secret). */
const endpointKind = (url: string): string => 'webhook:' + createHash('sha256').update(url).digest('hex').slice(0, 16)

const webhookUrls = (config: Pick<Config, 'WEBHOOK_URLS'>): string[] => commaList(config.WEBHOOK_URLS)

/** What is posted: the event, as queued. */
interface Event { id: string, type: string, timestamp: string, data: Record<string, unknown> }

/** The outbox handlers, one per endpoint of WEBHOOK_URLS; `closing` cuts deliveries in flight short. */
function webhookHandlers (config: Config, closing: AbortSignal): Record<string, Deliver> {
  const urls = webhookUrls(config)
  if (urls.length === 0 || config.WEBHOOK_SECRET === undefined) return {}
  const signer = new Webhook(config.WEBHOOK_SECRET)
  return Object.fromEntries(urls.map((url) => [endpointKind(url), async (row: OutboxRow) => {
    const { id, type, timestamp, data } = row.payload as unknown as Event
    const body = JSON.stringify({ type, timestamp, data })
    // Signed at each attempt (the timestamp is the attempt's); the id stays the event's.
    const now = new Date()
    const res = await fetch(url, {
      method: 'POST',
      body,
      redirect: 'manual',
      signal: AbortSignal.any([AbortSignal.timeout(TIMEOUT_MS), closing]),
      headers: {
        'content-type': 'application/json',
        'user-agent': 'auth-service-webhooks',
        'webhook-id': id,
        'webhook-timestamp': String(Math.floor(now.getTime() / 1000)),
        'webhook-signature': signer.sign(id, now, body)
      }
    })
    await res.body?.cancel()
    if (res.status < 200 || res.status >= 300) throw new Error(`the endpoint answered ${res.status}`)
  }]))
}

/**
 * Makes the database's endpoints this replica's (at start): the triggers queue events for these.
 * Every replica should have the same WEBHOOK_URLS: the last one started with some decides. One
 * started without any (a one-off, a misconfigured replica) leaves them alone and says so. The
 * number of endpoints dropped, and of those left alone.
 */
async function setEndpoints (pool: Pool, config: Config): Promise<{ dropped: number, others: number }> {
  const kinds = webhookUrls(config).map(endpointKind)
  if (kinds.length === 0) {
    const { rows } = await pool.query<{ n: number }>('SELECT count(*)::int AS n FROM webhook_endpoints')
    return { dropped: 0, others: rows[0].n }
  }
  const { rows } = await pool.query<{ dropped: number }>(`
    WITH gone AS (DELETE FROM webhook_endpoints WHERE kind <> ALL ($1::text[]) RETURNING 1),
         added AS (INSERT INTO webhook_endpoints (kind) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING)
    SELECT count(*)::int AS dropped FROM gone`, [kinds])
  return { dropped: rows[0].dropped, others: 0 }
}

/** Sets the endpoints when the app is ready, and gives the senders' handlers (stopped at close). */
export function startWebhooks (app: FastifyInstance): Record<string, Deliver> {
  const { log } = app
  app.addHook('onReady', async () => {
    try {
      const { dropped, others } = await setEndpoints(app.pg.pool, app.config)
      if (dropped > 0) log.warn({ dropped }, 'webhooks: endpoints set by another replica are dropped: give every replica the same WEBHOOK_URLS')
      if (others > 0) log.warn({ endpoints: others }, 'webhooks: WEBHOOK_URLS is not set here, but events are queued for endpoints set by other replicas; if webhooks are off everywhere: DELETE FROM webhook_endpoints')
    } catch (err) {
      log.warn({ err: { message: (err as Error).message } }, 'webhooks: cannot set the endpoints in the database; events go where they went before')
    }
  })
  // Registered before the outbox's own hook: deliveries in flight end at once, and are retried later.
  const closing = new AbortController()
  app.addHook('preClose', async () => { closing.abort() })
  return webhookHandlers(app.config, closing.signal)
}
