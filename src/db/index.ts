import fp from 'fastify-plugin'
import fastifyPostgres from '@fastify/postgres'
import type { FastifyInstance } from 'fastify'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import type { ClientBase, Pool, PoolClient } from 'pg'
import { startEmbeddedDatabase } from './embedded.js'
import { MIGRATIONS_TABLE, runMigrations, shippedMigrations } from './migrate.js'
import { prune } from './prune.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** true when the database answers and every shipped migration is applied */
    isDatabaseReady: () => Promise<boolean>
  }
}

export type Db = Pool | PoolClient

export interface DatabaseLocation {
  /** A connection string for pg and node-pg-migrate */
  url: string
  poolMax: number
}

/**
 * Starts the embedded database (without DATABASE_URL) and applies the migrations. buildApp awaits
 * this itself, not inside a plugin: a first embedded start on a busy CPU, or a replica waiting on
 * the migration lock while another migrates, may take longer than Fastify's plugin timeout (10 s),
 * and must not be cut off by it. Both say in the log what they wait for.
 */
export async function openDatabase (app: FastifyInstance): Promise<DatabaseLocation> {
  const { config } = app
  if (config.DATABASE_URL !== undefined) {
    if (config.MIGRATE_ON_START) await runMigrations(config.DATABASE_URL, app.log, { announceLockWait: true, connectTimeoutMs: config.DB_CONNECT_TIMEOUT_MS })
    return { url: config.DATABASE_URL, poolMax: config.DB_POOL_MAX }
  }
  const first = !existsSync(join(config.DATA_DIR, 'pgdata', 'PG_VERSION'))
  if (first) app.log.info({ dataDir: config.DATA_DIR }, 'starting the embedded database for the first time: creating it under DATA_DIR takes a few seconds')
  const db = await startEmbeddedDatabase(config.DATA_DIR)
  app.log.warn({ dataDir: config.DATA_DIR }, 'DATABASE_URL is not set: using an embedded PostgreSQL (PGlite) kept under DATA_DIR, for development and demos')
  try {
    // A single process: nobody else can hold the migration lock.
    if (config.MIGRATE_ON_START) await runMigrations(db.url, app.log, { announceLockWait: false, connectTimeoutMs: config.DB_CONNECT_TIMEOUT_MS })
  } catch (err) {
    await db.close()
    throw err
  }
  // Added before the pool's hook, so it runs after the pool has closed (hooks run last-in, first-out).
  app.addHook('onClose', db.close)
  // The embedded database serves one connection at a time (src/db/embedded.ts).
  return { url: db.url, poolMax: 1 }
}

/** The pool (@fastify/postgres) on a database that openDatabase has made ready, and readiness. */
async function database (app: FastifyInstance, { url: connectionString, poolMax }: DatabaseLocation): Promise<void> {
  const { config } = app
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
  const { PRUNE_INTERVAL_SECONDS: interval } = app.config
  if (interval === 0) return
  const run = (): void => {
    prune(app.pg.pool, app.config)
      .then((result) => { if (result !== null) app.log.info({ pruned: result }, 'housekeeping') })
      .catch((err: Error) => app.log.warn({ err: { message: err.message } }, 'housekeeping failed'))
  }
  let timer: NodeJS.Timeout | undefined
  app.addHook('onReady', async () => {
    timer = setTimeout(function tick () { run(); timer = setTimeout(tick, interval * 1000).unref() }, 5000).unref()
  })
  app.addHook('preClose', async () => { clearTimeout(timer) })
}
