import fp from 'fastify-plugin'
import fastifyRateLimit from '@fastify/rate-limit'
import { Redis } from 'ioredis'
import type { FastifyInstance } from 'fastify'

/**
 * Per-client-IP rate limits (@fastify/rate-limit). Routes opt in with `config.rateLimit`
 * (see `rateLimit()`), each with a budget of its own. With REDIS_URL the counters live in Redis
 * and are shared by every replica; otherwise in this process.
 */
async function rateLimits (app: FastifyInstance): Promise<void> {
  const { REDIS_URL: url } = app.config
  let redis: Redis | undefined
  if (url !== undefined && app.config.RATE_LIMIT_ENABLED) {
    // Fail fast rather than queue commands while Redis is away (skipOnError lets requests through).
    redis = new Redis(url, { maxRetriesPerRequest: 1, enableOfflineQueue: false, connectTimeout: 1000, lazyConnect: true })
    redis.on('error', (err) => app.log.warn({ err: { message: err.message } }, 'redis unavailable; rate limits not enforced'))
    await redis.connect().catch(() => {}) // the start does not depend on Redis
    app.addHook('onClose', async () => { redis?.disconnect() })
  }
  await app.register(fastifyRateLimit, {
    global: false,
    timeWindow: '1 minute',
    nameSpace: 'auth-rate-limit:',
    // Availability over strictness: when Redis fails, the per-account throttle (PostgreSQL) still holds.
    skipOnError: true,
    ...(redis !== undefined ? { redis } : {})
  })
}

export default fp(rateLimits, { name: 'rate-limits' })

/** A route's `config` for a budget of `max` requests per client IP per minute (none when disabled). */
export function rateLimit (app: FastifyInstance, max: number): { rateLimit?: { max: number, timeWindow: string } } {
  return app.config.RATE_LIMIT_ENABLED ? { rateLimit: { max, timeWindow: '1 minute' } } : {}
}
