import { mkdirSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { PGlite } from '@electric-sql/pglite'
import { PGLiteSocketServer } from '@electric-sql/pglite-socket'

export interface EmbeddedDatabase {
  /** A connection string for pg and node-pg-migrate: the same SQL and migrations run unchanged. */
  url: string
  close: () => Promise<void>
}

/**
 * PostgreSQL compiled to WebAssembly (PGlite), in this process, served over a Unix socket in
 * a private temporary folder. `dataDir` undefined keeps it in memory (tests).
 *
 * PGlite is a single session: the socket server multiplexes connections onto it, and could
 * interleave the protocol messages of two busy connections. So the service holds exactly one
 * connection (the pool is forced to one); the limit of two lets the migration runner's
 * connection close while the pool's opens.
 */
export async function startEmbeddedDatabase (dataDir?: string): Promise<EmbeddedDatabase> {
  let db: PGlite
  if (dataDir === undefined) {
    db = await PGlite.create()
  } else {
    const dir = resolve(dataDir, 'pgdata')
    mkdirSync(dir, { recursive: true, mode: 0o700 })
    db = await PGlite.create(dir)
  }
  const socketDir = mkdtempSync(join(tmpdir(), 'auth-pglite-')) // mode 0700: only this user connects
  const server = new PGLiteSocketServer({ db, path: join(socketDir, '.s.PGSQL.5432'), maxConnections: 2 })
  await server.start()
  return {
    url: `postgres://postgres@localhost/postgres?host=${encodeURIComponent(socketDir)}`,
    close: async () => {
      await server.stop()
      await db.close()
      rmSync(socketDir, { recursive: true, force: true })
    }
  }
}
