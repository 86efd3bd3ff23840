import { readdirSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import pg from 'pg'
import { PG_MIGRATE_LOCK_ID, runner } from 'node-pg-migrate'
import type { FastifyBaseLogger } from 'fastify'

// migrations/ sits two levels up from both src/db and dist/db.
export const MIGRATIONS_DIR = fileURLToPath(new URL('../../migrations', import.meta.url))
export const MIGRATIONS_TABLE = 'pgmigrations'

/** Names of the migrations this build ships, in order (what readiness expects to find applied). */
export function shippedMigrations (): string[] {
  return readdirSync(MIGRATIONS_DIR)
    .filter((f) => f.endsWith('.sql'))
    .map((f) => f.replace(/\.sql$/, ''))
    .sort()
}

/**
 * Applies pending migrations. node-pg-migrate holds a PostgreSQL advisory lock while it runs;
 * with 'wait', replicas starting together queue behind one another instead of failing, for as
 * long as the one holding the lock takes (no time limit: a long migration is not an error).
 * `announceLockWait`: first see whether another process holds the lock, and say so in the log.
 */
export async function runMigrations (databaseUrl: string, log: FastifyBaseLogger,
  { announceLockWait, connectTimeoutMs }: { announceLockWait: boolean, connectTimeoutMs: number }): Promise<void> {
  const waited = announceLockWait && await migrationLockHeld(databaseUrl, connectTimeoutMs)
  if (waited) log.warn('waiting for the migration lock: another process is applying migrations; this one goes on when it is done')
  const applied = await runner({
    databaseUrl,
    dir: MIGRATIONS_DIR,
    migrationsTable: MIGRATIONS_TABLE,
    direction: 'up',
    singleTransaction: true,
    advisoryLockMode: 'wait',
    checkOrder: true,
    log: (msg: string) => log.debug(msg)
  })
  if (waited) log.info('got the migration lock after waiting; migrations up to date')
  if (applied.length > 0) log.info({ migrations: applied.map((m) => m.name) }, 'migrations applied')
}

/** Whether another session holds node-pg-migrate's lock right now (taken and let go at once when free). */
async function migrationLockHeld (databaseUrl: string, connectTimeoutMs: number): Promise<boolean> {
  const client = new pg.Client({ connectionString: databaseUrl, connectionTimeoutMillis: connectTimeoutMs })
  client.on('error', () => {}) // a connection lost mid-query fails the query, which is enough
  await client.connect()
  try {
    const { rows } = await client.query<{ got: boolean }>('SELECT pg_try_advisory_lock($1) AS got', [PG_MIGRATE_LOCK_ID])
    if (rows[0].got) await client.query('SELECT pg_advisory_unlock($1)', [PG_MIGRATE_LOCK_ID])
    return !rows[0].got
  } finally {
    await client.end()
  }
}
