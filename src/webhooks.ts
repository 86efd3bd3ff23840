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
export const endpointKind = (url: string): string => 'webhook:' + createHash('sha256').update(url).digest('hex').slice(0, 16)

export const webhookUrls = (config: Pick<Config, 'WEBHOOK_URLS'>): string[] => commaList(config.WEBHOOK_URLS)

/** What is posted: the event, as queued. */
interface Event { id: string, type: string, timestamp: string, data: Record<string, unknown> }

/** The outbox handlers, one per endpoint of WEBHOOK_URLS. */
export function webhookHandlers (config: Config): Record<string, Deliver> {
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
      signal: AbortSignal.timeout(TIMEOUT_MS),
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
 * Every replica should have the same WEBHOOK_URLS: the last one started decides.
 */
export async function setEndpoints (pool: Pool, config: Config): Promise<void> {
  const kinds = webhookUrls(config).map(endpointKind)
  await pool.query(`WITH gone AS (DELETE FROM webhook_endpoints WHERE kind <> ALL ($1::text[]))
                    INSERT INTO webhook_endpoints (kind) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING`, [kinds])
}

/** Sets the endpoints when the app is ready, and registers the senders' handlers. */
export function startWebhooks (app: FastifyInstance): Record<string, Deliver> {
  app.addHook('onReady', async () => {
    await setEndpoints(app.pg.pool, app.config).catch((err: Error) => {
      app.log.warn({ err: { message: err.message } }, 'webhooks: cannot set the endpoints in the database; events go where they went before')
    })
  })
  return webhookHandlers(app.config)
}
