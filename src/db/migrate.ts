import { readdirSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { runner } from 'node-pg-migrate'
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
 * with 'wait', replicas starting together queue behind one another instead of failing.
 */
export async function runMigrations (databaseUrl: string, log: FastifyBaseLogger): Promise<void> {
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
  if (applied.length > 0) log.info({ migrations: applied.map((m) => m.name) }, 'migrations applied')
}
