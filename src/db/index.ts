import fp from 'fastify-plugin'
import fastifyPostgres from '@fastify/postgres'
import type { FastifyInstance } from 'fastify'
import type { ClientBase } from 'pg'
import { startEmbeddedDatabase } from './embedded.js'
import { MIGRATIONS_TABLE, runMigrations, shippedMigrations } from './migrate.js'
import { prune } from './prune.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** true when the database answers and every shipped migration is applied */
    isDatabaseReady: () => Promise<boolean>
  }
}

async function database (app: FastifyInstance): Promise<void> {
  const { config } = app
  let connectionString = config.DATABASE_URL
  let poolMax = config.DB_POOL_MAX
  if (connectionString === undefined) {
    const db = await startEmbeddedDatabase(config.DATA_DIR)
    // Registered before the pool, so it runs after the pool has closed (hooks run last-in, first-out).
    app.addHook('onClose', db.close)
    connectionString = db.url
    poolMax = 1
    app.log.warn({ dataDir: config.DATA_DIR }, 'DATABASE_URL is not set: using an embedded PostgreSQL (PGlite) kept under DATA_DIR, for development and demos')
  }

  if (config.MIGRATE_ON_START) await runMigrations(connectionString, app.log)

  await app.register(fastifyPostgres, {
    connectionString,
    max: poolMax,
    // A dead database must answer fast 503s, never hang a request or the process.
    connectionTimeoutMillis: config.DB_CONNECT_TIMEOUT_MS,
    statement_timeout: config.DB_STATEMENT_TIMEOUT_MS,
    query_timeout: config.DB_STATEMENT_TIMEOUT_MS + 1000,
    idleTimeoutMillis: 30_000,
    // With PGlite (embedded, or any pglite-socket server) every connection shares one session that
    // outlives it: statements prepared by a connection that has since closed would clash with the
    // new one's ("already exists"). On a real server a new connection has none: a no-op.
    onConnect: async (client: ClientBase) => { await client.query('DEALLOCATE ALL') }
  })
  // pg emits 'error' for idle clients whose connection dies; unhandled, it would crash the process.
  app.pg.pool.on('error', (err) => app.log.warn({ err: { code: (err as { code?: string }).code, message: err.message } }, 'idle database connection lost'))

  const expected = shippedMigrations()
  app.decorate('isDatabaseReady', async () => {
    try {
      const { rows } = await app.pg.query<{ name: string }>(`SELECT name FROM ${MIGRATIONS_TABLE}`)
      const applied = new Set(rows.map((r) => r.name))
      return expected.every((name) => applied.has(name))
    } catch {
      return false
    }
  })
}

export default fp(database, { name: 'database' })

/**
 * The periodic housekeeping job (every PRUNE_INTERVAL_SECONDS, first run shortly after start).
 * Every replica runs it; the advisory lock in prune() lets one of them work at a time.
 */
export function startPruning (app: FastifyInstance): void {
  const { PRUNE_INTERVAL_SECONDS: interval, AUDIT_RETENTION_DAYS: days } = app.config
  if (interval === 0) return
  const run = (): void => {
    prune(app.pg.pool, days)
      .then((result) => { if (result !== null) app.log.info({ pruned: result }, 'housekeeping') })
      .catch((err: Error) => app.log.warn({ err: { message: err.message } }, 'housekeeping failed'))
  }
  let timer: NodeJS.Timeout | undefined
  app.addHook('onReady', async () => {
    timer = setTimeout(function tick () { run(); timer = setTimeout(tick, interval * 1000).unref() }, 5000).unref()
  })
  app.addHook('preClose', async () => { clearTimeout(timer) })
}
