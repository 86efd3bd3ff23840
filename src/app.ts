import { randomUUID } from 'node:crypto'
import type { ServerResponse } from 'node:http'
import Fastify, { LogController, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import fastifyEnv from '@fastify/env'
import { checkConfig, commaList, ConfigSchema, configError, earlySettings, settingsOf, trustProxy, type Config, type Env } from './config.js'
import database, { openDatabase, startPruning } from './db/index.js'
import { AppError, clientErrorHandler, errorBody, registerErrorHandler, unavailable, validationFailed } from './errors.js'
import { createPasswords } from './passwords.js'
import tokens from './tokens.js'
import endedSessions from './ended-sessions.js'
import healthRoutes from './health.js'
import jwksRoutes from './jwks.js'
import observe, { createMetrics } from './observe.js'
import rateLimits from './rate-limit.js'
import { registerDocs } from './docs.js'
import { ErrorBody, MfaRequiredBody } from './schemas.js'
import accountRoutes, { createProfileCache } from './account/routes.js'
import sessionRoutes from './sessions/routes.js'
import recoveryRoutes from './recovery/routes.js'
import mfaRoutes from './mfa/routes.js'
import adminRoutes from './admin/routes.js'
import { createSecondFactor, resealSecrets } from './mfa/factor.js'
import { deliverMail } from './recovery/mail.js'
import { createMailer, mailEnabled } from './mail.js'
import { startOutbox, type Deliver, type OutboxSender } from './db/outbox.js'
import { startWebhooks } from './webhooks.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** The settings, validated by @fastify/env against ConfigSchema. */
    config: Config
    /** This replica's outbox senders: kick() after a commit that queued mail. */
    outbox: OutboxSender
  }
}

export const BODY_LIMIT = 16 * 1024

// Never log a password, a token or an Authorization header. Explicit paths, not wildcards:
// `*.password` made pino's redaction cost ~20 % of the CPU of a `me` request (bench/README.md).
// The service logs no bodies or headers itself; these catch one logged by mistake.
const SECRET_FIELDS = ['password', 'current_password', 'new_password', 'access_token', 'refresh_token', 'token', 'code', 'mfa_token']
const REDACT = [
  'req.headers.authorization', 'req.headers.cookie', 'headers.authorization', 'headers.cookie',
  ...SECRET_FIELDS.flatMap((f) => [`body.${f}`, `req.body.${f}`, `request.body.${f}`])
]

const REQUEST_ID = /^[\w.:-]{1,128}$/

// One JSON line per request, with its id (the child logger adds reqId), instead of Fastify's two.
class RequestLog extends LogController {
  override incomingRequest (): void {}
  override requestCompleted (err: Error | null, request: FastifyRequest, reply: FastifyReply): void {
    request.log[reply.statusCode >= 500 ? 'error' : 'info']({
      method: request.method,
      // The path only: a client may wrongly put a token in the query string (?access_token=).
      url: request.url.split('?')[0],
      statusCode: reply.statusCode,
      ms: Math.round(reply.elapsedTime * 10) / 10,
      ip: request.ip,
      ...(err !== null ? { err } : {})
    }, 'request')
  }
}

export interface BuildOptions {
  /** Where log lines go (stdout by default); tests read them to check what is logged. */
  logStream?: NodeJS.WritableStream
}

/**
 * The whole service as one Fastify instance, built the same way for production and tests, from
 * the settings as given (the environment). A bad setting throws ConfigError, naming it.
 */
export async function buildApp (env: Env, opts: BuildOptions = {}): Promise<FastifyInstance> {
  const settings = settingsOf(env)
  const early = earlySettings(settings)
  const app = Fastify({
    logger: { level: early.LOG_LEVEL, redact: { paths: REDACT, censor: '[redacted]' }, ...(opts.logStream !== undefined ? { stream: opts.logStream } : {}) },
    trustProxy: trustProxy(early),
    bodyLimit: BODY_LIMIT,
    // Take the proxy's X-Request-Id when it looks like one, so log lines can be joined up.
    requestIdHeader: false,
    genReqId: (req) => {
      const id = req.headers['x-request-id']
      return typeof id === 'string' && REQUEST_ID.test(id) ? id : randomUUID()
    },
    logController: new RequestLog(),
    return503OnClosing: false,
    // Answers Fastify and Node would otherwise write themselves, in the contract's error shape.
    frameworkErrors: (err, _request, reply) => {
      const appErr = validationFailed(err.code === 'FST_ERR_MAX_PARAM_LENGTH' ? 'A path segment is too long' : 'The URL is not validly encoded')
      ;(reply as FastifyReply).send(appErr) // through the error handler, like any other error
    },
    clientErrorHandler,
    // An HTTP/1.1 request without Host is answered normally (nothing here depends on Host),
    // instead of with Node's bodiless 400.
    http: { requireHostHeader: false },
    // The contract forbids type coercion: "name": 12345 is a 400, not "12345".
    ajv: { customOptions: { coerceTypes: false } }
  }).withTypeProvider<TypeBoxTypeProvider>()

  // Settings: @fastify/env validates them with the one schema and decorates app.config.
  try {
    // env: false: the settings given, never process.env read again behind them (an empty
    // JWT_SECRET_KEY= dropped by settingsOf would otherwise come back and be refused).
    await app.register(fastifyEnv, { schema: structuredClone(ConfigSchema), data: settings, env: false })
  } catch (err) {
    throw configError(err, settings)
  }
  const { config } = app
  checkConfig(config)

  // Node answers an Expect other than 100-continue with a bodiless 417 unless told otherwise.
  app.server.on('checkExpectation', (_req, res: ServerResponse) => {
    const body = JSON.stringify(errorBody(new AppError(417, 'VALIDATION_FAILED', 'Only Expect: 100-continue is supported')))
    res.writeHead(417, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(body) }).end(body)
  })

  // Per-request hooks take a callback, not a promise: one less promise and microtask per request.
  // While shutting down, a request that still arrives (on a kept-alive connection) gets the
  // contract's 503 rather than Fastify's own (return503OnClosing is off for that), and answers
  // to requests in flight close their connection, so that closing need not wait on idle clients.
  let closing = false
  app.addHook('preClose', async () => { closing = true })
  app.addHook('onRequest', (request, reply, done) => {
    reply.header('x-request-id', request.id)
    done(closing ? unavailable('The service is shutting down; retry shortly', 1) : undefined)
  })
  app.addHook('onSend', (_request, reply, payload, done) => {
    if (closing) reply.header('connection', 'close')
    done(null, payload)
  })

  // JSON only. An empty body is allowed through (the original refresh call sends
  // `Content-Type: application/json` with no body); routes that need a body reject it.
  const parseJson = app.getDefaultJsonParser('error', 'error')
  app.removeAllContentTypeParsers()
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (request, body, done) => {
    if (body === '') done(null, undefined)
    else parseJson(request, body as string, done)
  })

  // Load order: settings, database, tokens, error handler, shared plugins, then the capabilities.
  try {
    await register(app, config)
  } catch (err) {
    // What started (the embedded database, the pool) stops: a failed start leaves nothing running.
    await app.close().catch(() => {})
    throw err
  }
  return app
}

async function register (app: FastifyInstance, config: Config): Promise<void> {
  await app.register(database, await openDatabase(app))
  await app.register(endedSessions)
  await app.register(tokens)
  registerErrorHandler(app)
  app.addSchema(ErrorBody)
  app.addSchema(MfaRequiredBody)
  const metrics = config.METRICS_ENABLED ? createMetrics() : null
  app.decorate('passwords', await createPasswords(config, metrics?.argon2))

  // Before every route: @fastify/swagger builds the OpenAPI document from routes as they are added.
  await registerDocs(app)
  await app.register(observe, { metrics, queueDepth: () => app.passwords.queue.depth })
  await app.register(rateLimits)
  startPruning(app)

  // Mail and webhooks go through the outbox: queued with the change they report, delivered after the commit.
  const mail = mailEnabled(config) ? createMailer(config, app.log) : null
  if (mail === null) app.log.warn('SMTP_URL is not set in production: no mail is sent, and the email endpoints (verification, password reset, email change) are off')
  else app.addHook('onClose', async () => { mail.close() })
  const handlers: Record<string, Deliver> = {}
  if (mail !== null) {
    handlers.mail = async (row) => {
      try {
        if (await deliverMail(app.pg.pool, config, mail, row) === 'sent') metrics?.mailSent.inc()
      } catch (err) {
        metrics?.mailFailed.inc()
        throw err
      }
    }
  }
  for (const [kind, deliver] of Object.entries(startWebhooks(app))) {
    handlers[kind] = async (row) => {
      try {
        await deliver(row)
        metrics?.webhooksSent.inc()
      } catch (err) {
        metrics?.webhooksFailed.inc()
        throw err
      }
    }
  }
  app.decorate('outbox', startOutbox(app, handlers))
  app.decorate('profiles', createProfileCache())
  app.decorate('secondFactor', createSecondFactor(app))
  if (config.DATA_ENCRYPTION_KEY === undefined && config.NODE_ENV === 'production') {
    app.log.warn('DATA_ENCRYPTION_KEY is not set: TOTP secrets are stored unencrypted; generate a key with: openssl rand -base64 48')
  }
  // Secrets sealed under a retired key (or none) are re-sealed under the current one, in the background.
  app.addHook('onReady', async () => {
    resealSecrets(app.pg.pool, app.secondFactor, app.log).catch((err: Error) => app.log.warn({ err: { message: err.message } }, 'TOTP secrets not re-sealed; retried at the next start'))
  })

  await app.register(healthRoutes)
  await app.register(jwksRoutes)
  await app.register(accountRoutes)
  await app.register(sessionRoutes)
  await app.register(mfaRoutes)
  if (mail !== null) await app.register(recoveryRoutes)
  // Without keys the admin paths do not exist (404, and absent from the docs).
  if (commaList(config.ADMIN_API_KEYS).length > 0) await app.register(adminRoutes)
}
