import fp from 'fastify-plugin'
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics, type Metric } from 'prom-client'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { Db } from './db/index.js'
import { waiting } from './db/outbox.js'
import { httpErrors, noAuth } from './schemas.js'

/** What an auth request amounted to: set by handlers, or by the error handler from the error code. */
export interface AuthEvent {
  outcome: string
  userId?: string
  sessionId?: string
}

declare module 'fastify' {
  interface FastifyRequest {
    event: AuthEvent | null
  }
  interface FastifyContextConfig {
    /** The route's name in auth_outcomes_total and the audit trail (sign_in, password_reset, ...). */
    action?: string
  }
}

// The security events kept in audit_events, by action and outcome (`*`: any action).
const AUDITED: Record<string, string> = {
  'sign_up:success': 'sign-up',
  'sign_in:success': 'sign-in',
  'sign_in:invalid_credentials': 'sign-in-failed',
  'sign_in:throttled': 'sign-in-throttled',
  'sign_in:account_disabled': 'sign-in-disabled',
  'refresh:reuse_detected': 'refresh-reuse',
  'sign_out:success': 'sign-out',
  'session_revoke:success': 'session-revoke',
  'password:success': 'password-change',
  'password:invalid_credentials': 'password-change-failed',
  'email_verify:verified': 'email-verify',
  'email_verify:changed': 'email-change',
  'email_change:success': 'email-change-request',
  'password_forgot:accepted': 'password-reset-request', // for an account only (see below)
  'password_reset:success': 'password-reset',
  'account_delete:success': 'account-delete',
  'mfa_enable:success': 'mfa-enable',
  'mfa_disable:success': 'mfa-disable',
  'mfa_verify:success': 'mfa-verify',
  'mfa_verify:recovery_code': 'recovery-code-used',
  'recovery_codes:success': 'recovery-codes-regenerated',
  'admin_user_create:success': 'admin-user-create',
  'admin_user_update:success': 'admin-user-update',
  'admin_user_update:password_set': 'admin-password-set',
  'admin_user_update:banned': 'admin-ban',
  'admin_user_update:unbanned': 'admin-unban',
  'admin_user_delete:success': 'admin-user-delete',
  'admin_sessions_end:success': 'admin-sessions-end',
  'admin_mfa_remove:success': 'admin-mfa-remove',
  // A wrong TOTP or recovery code, wherever one is asked for (any action).
  '*:invalid_code': 'mfa-verify-failed'
}

export type Metrics = ReturnType<typeof createMetrics>

type Labels = Record<string, string | number>

/**
 * The request-duration histogram, counted here: prom-client's `Histogram.observe` (label checks,
 * a key string, float-keyed buckets) cost ~3 µs a request, 9 % of the CPU of a `me`
 * (bench/README.md). prom-client still writes it out: a registry takes any metric with `get()`.
 * Same name, labels, buckets and text as a prom-client Histogram.
 */
export class RequestDurations {
  readonly name = 'http_request_duration_seconds'
  readonly help = 'HTTP requests by route and status: duration (its _count is the request count)'
  readonly type = 'histogram'
  readonly aggregator = 'sum'
  private readonly bounds = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 2.5]
  private readonly les = [...this.bounds, '+Inf' as const]
  // By "method route status": per bucket the observations not above its bound (and above the last).
  private readonly series = new Map<string, { labels: Labels, counts: number[], sum: number }>()

  observe (method: string, route: string, statusCode: number, seconds: number): void {
    const key = `${method} ${route} ${statusCode}`
    let s = this.series.get(key)
    if (s === undefined) {
      s = { labels: { method, route, status_code: statusCode }, counts: new Array<number>(this.bounds.length + 1).fill(0), sum: 0 }
      this.series.set(key, s)
    }
    let b = 0
    while (b < this.bounds.length && seconds > this.bounds[b]) b++
    s.counts[b]++
    s.sum += seconds
  }

  get (): { name: string, help: string, type: string, aggregator: string, values: Array<{ metricName: string, labels: Labels, value: number }> } {
    const values = []
    for (const { labels, counts, sum } of this.series.values()) {
      let seen = 0
      for (const [i, le] of this.les.entries()) {
        seen += counts[i]
        values.push({ metricName: `${this.name}_bucket`, labels: { le, ...labels }, value: seen })
      }
      values.push({ metricName: `${this.name}_sum`, labels, value: sum }, { metricName: `${this.name}_count`, labels, value: seen })
    }
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values }
  }

  reset (): void { this.series.clear() }
}

/** Prometheus metrics, in a registry of this app's own (tests build many apps in one process). */
export function createMetrics () {
  const registry = new Registry()
  collectDefaultMetrics({ register: registry })
  const registers = [registry]
  const http = new RequestDurations()
  registry.registerMetric(http as unknown as Metric) // prom-client's type lists its own classes only
  return {
    registry,
    http,
    outcomes: new Counter({
      name: 'auth_outcomes_total',
      help: 'Auth requests by action (sign_up, sign_in, refresh, sign_out, session_revoke, password) and outcome (success, invalid_credentials, rate_limited, rotated, token_expired, token_revoked, reuse_detected, ...)',
      labelNames: ['action', 'outcome'],
      registers
    }),
    mailSent: new Counter({ name: 'auth_mail_sent_total', help: 'Mail handed to the mail server (or the development outbox)', registers }),
    mailFailed: new Counter({ name: 'auth_mail_failed_total', help: 'Failed mail delivery attempts (each is retried, for at least 24 hours)', registers }),
    webhooksSent: new Counter({ name: 'auth_webhooks_sent_total', help: 'Webhook deliveries an endpoint took (2xx)', registers }),
    webhooksFailed: new Counter({ name: 'auth_webhooks_failed_total', help: 'Failed webhook delivery attempts (each is retried, for at least 24 hours)', registers }),
    argon2: new Histogram({
      name: 'auth_argon2_duration_seconds',
      help: 'Time of each argon2 hash or verify, queueing excluded',
      buckets: [0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1],
      registers
    }),
    registers
  }
}

/** Request metrics and the audit trail, both from one onResponse hook (after the answer is sent). */
async function observe (app: FastifyInstance, { metrics, queueDepth }: { metrics: Metrics | null, queueDepth: () => number }): Promise<void> {
  app.decorateRequest('event', null)

  if (metrics !== null) {
    const { registers } = metrics
    // eslint-disable-next-line no-new
    new Gauge({ name: 'auth_argon2_queue_depth', help: 'Sign-ins and sign-ups waiting for a hashing slot', registers, collect () { this.set(queueDepth()) } })
    // eslint-disable-next-line no-new
    new Gauge({
      name: 'db_pool_connections',
      help: 'Database pool connections by state (total, idle, waiting = requests waiting for one)',
      labelNames: ['state'],
      registers,
      collect () {
        const pool = app.pg.pool
        this.set({ state: 'total' }, pool.totalCount)
        this.set({ state: 'idle' }, pool.idleCount)
        this.set({ state: 'waiting' }, pool.waitingCount)
      }
    })
    // eslint-disable-next-line no-new
    new Gauge({
      name: 'auth_mail_waiting',
      help: 'Mail in the outbox, not yet delivered',
      registers,
      async collect () {
        // A scrape while the database is away keeps the last value.
        try { this.set(await waiting(app.pg.pool, 'mail')) } catch {}
      }
    })
    // eslint-disable-next-line no-new
    new Gauge({
      name: 'auth_webhooks_waiting',
      help: 'Webhook deliveries in the outbox, not yet taken, all endpoints together',
      registers,
      async collect () {
        try { this.set(await waiting(app.pg.pool, 'webhook')) } catch {}
      }
    })
    const schema = {
      tags: ['service'],
      operationId: 'getMetrics',
      summary: 'Prometheus metrics (text format)',
      security: noAuth,
      response: { 200: { description: 'Prometheus text exposition format', content: { 'text/plain': { schema: { type: 'string' } } } }, ...httpErrors }
    }
    app.get('/metrics', { schema }, async (_request, reply) => {
      return await reply.type(metrics.registry.contentType).send(await metrics.registry.metrics())
    })
  }

  app.addHook('onResponse', (request, reply, done) => {
    // The answer has gone already: a failure here is logged, never passed on.
    try { record(request, reply) } catch (err) { request.log.error({ err }, 'metrics or audit failed') }
    done()
  })

  function record (request: FastifyRequest, reply: FastifyReply): void {
    const route = request.routeOptions.url ?? 'unmatched'
    metrics?.http.observe(request.method, route, reply.statusCode, reply.elapsedTime / 1000)
    const action = request.routeOptions.config.action
    if (action === undefined) return
    const event = request.event ?? { outcome: reply.statusCode < 400 ? 'success' : `status_${reply.statusCode}` }
    metrics?.outcomes.inc({ action, outcome: event.outcome })
    const audited = AUDITED[`${action}:${event.outcome}`] ?? AUDITED[`*:${event.outcome}`]
    // A reset asked for an address without an account is nobody's event.
    if (audited === undefined || (audited === 'password-reset-request' && event.userId === undefined)) return
    // Not awaited by the client: the answer has already gone. A failure is logged, not fatal.
    insertAuditEvent(app.pg.pool, {
      event: audited,
      userId: event.userId,
      sessionId: event.sessionId,
      ip: request.ip,
      userAgent: request.headers['user-agent']?.slice(0, 512)
    }).catch((err: Error) => request.log.warn({ err: { message: err.message }, event: audited }, 'audit event not written'))
  }
}

/** One row of the audit trail. */
export async function insertAuditEvent (db: Db, e: {
  event: string, userId?: string, sessionId?: string, ip: string, userAgent: string | undefined
}): Promise<void> {
  await db.query({
    name: 'insert-audit-event',
    text: 'INSERT INTO audit_events (event, user_id, session_id, ip, user_agent) VALUES ($1, $2, $3, $4, $5)',
    values: [e.event, e.userId ?? null, e.sessionId ?? null, e.ip, e.userAgent ?? null]
  })
}

export default fp(observe, { name: 'observe' })
