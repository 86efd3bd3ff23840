import fp from 'fastify-plugin'
import pg from 'pg'
import { Redis } from 'ioredis'
import type { FastifyInstance } from 'fastify'

// Ended sessions, as every replica knows them, so that their access tokens are refused without a
// database query per request. The database notes each ended session (migrations/…_operators.sql:
// a trigger writes ended_sessions and NOTIFYs its id at commit); each replica keeps the ids in
// memory until the last access token of the session has expired. How ids reach a replica:
// - PostgreSQL: LISTEN on a connection of its own (a session-mode connection: a transaction-mode
//   pooler cannot carry it), reconnected when it drops.
// - Redis (REDIS_URL): the replica that ends sessions publishes their ids; the others subscribe.
// Either way the replica reads ended_sessions at start, after a reconnect (NOTIFY and Redis
// pub/sub do not replay) and every CATCH_UP_MS (an id published by nobody: SQL run by hand, a
// replica that died between its commit and its publish).

/** The NOTIFY channel of the trigger, and the Redis channel. */
const CHANNEL = 'auth_session_ended'
/** The LISTEN connections in pg_stat_activity: their last query is the LISTEN or a catch-up read (not the asking one's). */
export const LISTENER_QUERY = "(query LIKE 'LISTEN%' OR query LIKE '%FROM ended_sessions%') AND pid <> pg_backend_pid()"
// Short: a session ended while this replica is not listening is accepted here until it is again.
const RECONNECT_MS = 250
const CATCH_UP_MS = 30_000
// Read again on each catch-up, for ids of transactions that ended a session before the last
// read and committed after it (ended_at is when the row was ended, not the commit).
const OVERLAP_SECONDS = 60
// Kept this much past the access-token lifetime: for clocks a little apart, and tokens issued by a
// refresh that committed just before the session ended.
const MARGIN_MS = 60_000

declare module 'fastify' {
  interface FastifyInstance {
    endedSessions: EndedSessions
  }
}

export interface EndedSessions {
  /** The session has ended (as far as this replica knows): its access tokens are refused. */
  has: (sid: string) => boolean
  /**
   * Sessions this replica has just ended (after the commit): refused here at once and, with
   * Redis, announced to the others (with PostgreSQL the trigger's NOTIFY announces them).
   */
  add: (ids: string[]) => void
}

async function endedSessions (app: FastifyInstance): Promise<void> {
  const { config, log } = app
  const pool = app.pg.pool
  const ttlMs = config.JWT_ACCESS_TTL * 1000
  // Session id → when (ms) its last access token has expired, and the id can be forgotten.
  const ended = new Map<string, number>()
  const remember = (id: string, until = Date.now() + ttlMs): void => {
    ended.set(id, Math.max(ended.get(id) ?? 0, until + MARGIN_MS))
  }

  // Reads what ended since the last read (and OVERLAP_SECONDS before it), within the access-token
  // lifetime; through the LISTEN connection when there is one (the pool may be busy).
  let since: Date | null = null // the newest ended_at read so far
  async function catchUp (db: pg.ClientBase | pg.Pool = pool): Promise<void> {
    const { rows } = await db.query<{ session_id: string, ms_left: number, ended_at: Date }>({
      name: 'ended-sessions-catch-up',
      text: `SELECT session_id, ended_at, extract(epoch FROM ended_at + make_interval(secs => $1) - now()) * 1000 AS ms_left
             FROM ended_sessions
             WHERE ended_at > greatest(now() - make_interval(secs => $1), $2::timestamptz - make_interval(secs => $3))`,
      values: [config.JWT_ACCESS_TTL, since, OVERLAP_SECONDS]
    })
    const now = Date.now()
    for (const r of rows) {
      remember(r.session_id, now + Number(r.ms_left))
      if (since === null || r.ended_at > since) since = r.ended_at
    }
  }
  const catchUpLogged = (): void => {
    catchUp().catch((err: Error) => log.warn({ err: { message: err.message } }, 'ended sessions: cannot read them; retrying'))
  }

  let stopped = false
  const timers = new Set<NodeJS.Timeout>()
  const later = (fn: () => void, ms: number): void => {
    const timer = setTimeout(() => { timers.delete(timer); if (!stopped) fn() }, ms).unref()
    timers.add(timer)
  }
  const closers: Array<() => Promise<void>> = []
  let publish: (ids: string[]) => void = () => {}

  if (config.REDIS_URL !== undefined) {
    const options = { lazyConnect: true, connectTimeout: 1000, maxRetriesPerRequest: 1, enableOfflineQueue: false }
    const sub = new Redis(config.REDIS_URL, options)
    const pub = new Redis(config.REDIS_URL, options)
    for (const r of [sub, pub]) r.on('error', (err) => log.warn({ err: { message: err.message } }, 'ended sessions: redis unavailable; retrying'))
    sub.on('message', (_channel: string, message: string) => { for (const id of message.split(',')) remember(id) })
    // 'ready' at the first connection and after each reconnect (also when Redis was away at
    // start): subscribe (again: harmless), then read what was missed meanwhile.
    sub.on('ready', () => {
      if (stopped) return
      sub.subscribe(CHANNEL).catch(() => {}).finally(catchUpLogged)
    })
    publish = (ids) => { pub.publish(CHANNEL, ids.join(',')).catch(() => {}) } // missed ids come with the next catch-up
    app.addHook('onReady', async () => {
      await Promise.all([sub.connect(), pub.connect()]).catch(() => {}) // the start does not depend on Redis
    })
    closers.push(async () => { sub.disconnect(); pub.disconnect() })
  } else {
    app.addHook('onReady', async () => {
      const { rows } = await pool.query<{ version: string }>('SELECT version()')
      if (rows[0].version.includes('PGlite')) {
        // PGlite is one session shared by every connection: LISTEN once, and each notification
        // comes back on the connection whose commit sent it, a connection of the pool.
        const seen = new WeakSet<pg.PoolClient>()
        pool.on('acquire', (client) => {
          if (seen.has(client)) return
          seen.add(client)
          client.on('notification', (n) => { if (n.channel === CHANNEL && n.payload !== undefined) remember(n.payload) })
        })
        await pool.query(`LISTEN ${CHANNEL}`)
      } else {
        await listen()
      }
    })
  }

  /**
   * A connection of its own that LISTENs, catches up, and is probed by the periodic catch-up;
   * when it drops or fails, another (every RECONNECT_MS), and a catch-up. TCP keep-alive after 10 s
   * idle finds a peer gone without a word (a failover, a dropped NAT entry).
   */
  let listener: { client: pg.Client, lost: (err?: Error) => void } | undefined
  let listening = false
  closers.push(async () => { await listener?.client.end().catch(() => {}) })
  async function listen (): Promise<void> {
    const client = new pg.Client({ ...(pool.options as pg.ClientConfig), keepAlive: true, keepAliveInitialDelayMillis: 10_000 })
    let lost = false
    const onLost = (err?: Error): void => {
      if (lost || stopped) return
      lost = true
      client.end().catch(() => {})
      // Said once when the connection goes, not at every attempt while the database is away.
      if (listening) log.warn({ err: { message: err?.message ?? 'connection ended' } }, 'ended sessions: LISTEN connection lost; reconnecting')
      listening = false
      later(() => { listen().catch(() => {}) }, RECONNECT_MS)
    }
    listener = { client, lost: onLost }
    client.on('error', onLost)
    client.on('end', () => onLost())
    client.on('notification', (n) => { if (n.payload !== undefined) remember(n.payload) })
    try {
      await client.connect()
      await client.query(`LISTEN ${CHANNEL}`)
      listening = true
      await catchUp(client)
    } catch (err) {
      onLost(err as Error)
    }
  }

  app.addHook('onReady', async () => {
    // The LISTEN connection has read them already (or will, once it is there).
    if (listener === undefined) await catchUp().catch((err: Error) => log.warn({ err: { message: err.message } }, 'ended sessions: cannot read them at start; retrying'))
    later(function tick () {
      const current = listener
      if (current !== undefined && listening) catchUp(current.client).catch(current.lost) // a failure here means a dead connection
      else catchUpLogged()
      later(tick, CATCH_UP_MS)
    }, CATCH_UP_MS)
    // Forget ids whose tokens have all expired.
    later(function sweep () {
      const now = Date.now()
      for (const [id, until] of ended) if (until <= now) ended.delete(id)
      later(sweep, 60_000)
    }, 60_000)
  })
  app.addHook('preClose', async () => {
    stopped = true
    for (const timer of timers) clearTimeout(timer)
    await Promise.all(closers.map(async (close) => await close()))
  })

  app.decorate('endedSessions', {
    // An id kept past its time is harmless: the tokens it would refuse have expired.
    has: (sid: string) => ended.has(sid),
    add: (ids: string[]) => {
      if (ids.length === 0) return
      for (const id of ids) remember(id)
      publish(ids)
    }
  } satisfies EndedSessions)
}

export default fp(endedSessions, { name: 'ended-sessions', dependencies: ['database'] })
