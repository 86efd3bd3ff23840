import fp from 'fastify-plugin'
import fastifyPostgres from '@fastify/postgres'
import type { FastifyInstance } from 'fastify'
import { MIGRATIONS_TABLE, runMigrations, shippedMigrations } from './migrate.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** true when the database answers and every shipped migration is applied */
    isDatabaseReady: () => Promise<boolean>
  }
}

async function database (app: FastifyInstance): Promise<void> {
  const { config } = app
  if (config.DATABASE_URL === undefined) throw new Error('DATABASE_URL is not set')
  const connectionString = config.DATABASE_URL

  if (config.MIGRATE_ON_START) await runMigrations(connectionString, app.log)

  await app.register(fastifyPostgres, {
    connectionString,
    max: config.DB_POOL_MAX,
    // A dead database must answer fast 503s, never hang a request or the process.
    connectionTimeoutMillis: config.DB_CONNECT_TIMEOUT_MS,
    statement_timeout: config.DB_STATEMENT_TIMEOUT_MS,
    query_timeout: config.DB_STATEMENT_TIMEOUT_MS + 1000,
    idleTimeoutMillis: 30_000
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
