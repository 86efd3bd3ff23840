import type { Pool, PoolClient } from 'pg'

// Every SQL statement of the service: parameterized, one function each, one round trip each.
// Named statements are prepared once per connection by pg.
export type Db = Pool | PoolClient

export interface User {
  id: string
  name: string
  email: string
  created_at: Date
}

/** The new user, or undefined when the (lower-cased) email is taken. */
export async function insertUser (db: Db, u: { name: string, email: string, passwordHash: string }): Promise<User | undefined> {
  const { rows } = await db.query<User>({
    name: 'insert-user',
    text: `INSERT INTO users (name, email, password_hash) VALUES ($1, $2, $3)
           ON CONFLICT (email) DO NOTHING
           RETURNING id, name, email, created_at`,
    values: [u.name, u.email, u.passwordHash]
  })
  return rows[0]
}

export async function findUserByEmail (db: Db, email: string): Promise<{ id: string, name: string, password_hash: string } | undefined> {
  const { rows } = await db.query({
    name: 'find-user-by-email',
    text: 'SELECT id, name, password_hash FROM users WHERE email = $1',
    values: [email]
  })
  return rows[0]
}

export async function findUserById (db: Db, id: string): Promise<User | undefined> {
  const { rows } = await db.query<User>({
    name: 'find-user-by-id',
    text: 'SELECT id, name, email, created_at FROM users WHERE id = $1',
    values: [id]
  })
  return rows[0]
}

/** Replaces the hash only if it is still the one that was verified (a concurrent change wins). */
export async function updatePasswordHash (db: Db, id: string, oldHash: string, newHash: string): Promise<void> {
  await db.query({
    name: 'update-password-hash',
    text: 'UPDATE users SET password_hash = $3, updated_at = now() WHERE id = $1 AND password_hash = $2',
    values: [id, oldHash, newHash]
  })
}

export async function insertSession (db: Db, s: {
  id: string, userId: string, refreshHash: Buffer, ttl: number, userAgent: string | undefined, ip: string
}): Promise<void> {
  await db.query({
    name: 'insert-session',
    text: `INSERT INTO sessions (id, user_id, refresh_hash, expires_at, user_agent, ip)
           VALUES ($1, $2, $3, now() + make_interval(secs => $4), $5, $6)`,
    values: [s.id, s.userId, s.refreshHash, s.ttl, s.userAgent ?? null, s.ip]
  })
}

/**
 * Swaps the session's current refresh hash for the next one, in one atomic statement: of
 * several concurrent refreshes with one token, exactly one finds `refresh_hash = oldHash`.
 * The session's idle lifetime slides forward with each rotation.
 */
export async function rotateRefreshToken (db: Db, r: { sid: string, sub: string, oldHash: Buffer, newHash: Buffer, ttl: number }): Promise<boolean> {
  const { rowCount } = await db.query({
    name: 'rotate-refresh-token',
    text: `UPDATE sessions
           SET refresh_hash = $4, previous_hash = refresh_hash, rotated_at = now(), last_used_at = now(),
               expires_at = now() + make_interval(secs => $5)
           WHERE id = $1 AND user_id = $2 AND refresh_hash = $3 AND revoked_at IS NULL AND expires_at > now()`,
    values: [r.sid, r.sub, r.oldHash, r.newHash, r.ttl]
  })
  return rowCount === 1
}

/** Without rotation: the token stays valid while its session lives. */
export async function touchSession (db: Db, r: { sid: string, sub: string, hash: Buffer }): Promise<boolean> {
  const { rowCount } = await db.query({
    name: 'touch-session',
    text: `UPDATE sessions SET last_used_at = now()
           WHERE id = $1 AND user_id = $2 AND refresh_hash = $3 AND revoked_at IS NULL AND expires_at > now()`,
    values: [r.sid, r.sub, r.hash]
  })
  return rowCount === 1
}

export interface SessionState {
  refresh_hash: Buffer
  previous_hash: Buffer | null
  in_grace: boolean
  revoked: boolean
  expired: boolean
}

/** Why a refresh did not match: read only on the slow path. */
export async function findSessionState (db: Db, sid: string, sub: string, graceSeconds: number): Promise<SessionState | undefined> {
  const { rows } = await db.query<SessionState>({
    name: 'find-session-state',
    text: `SELECT refresh_hash, previous_hash,
                  coalesce(rotated_at > now() - make_interval(secs => $3), false) AS in_grace,
                  revoked_at IS NOT NULL AS revoked, expires_at <= now() AS expired
           FROM sessions WHERE id = $1 AND user_id = $2`,
    values: [sid, sub, graceSeconds]
  })
  return rows[0]
}

/**
 * Ends the session `sid` (or, with `all`, every live session of the user), provided `sid` is
 * still live: a token of an ended session cannot end the others. Returns how many ended.
 */
export async function endSessions (db: Db, e: { sid: string, sub: string, all: boolean, reason: string }): Promise<number> {
  const { rowCount } = await db.query({
    name: 'end-sessions',
    text: `UPDATE sessions SET revoked_at = now(), revoked_reason = $4
           WHERE user_id = $2 AND revoked_at IS NULL AND ($3 OR id = $1)
             AND EXISTS (SELECT 1 FROM sessions WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL)`,
    values: [e.sid, e.sub, e.all, e.reason]
  })
  return rowCount ?? 0
}

export async function insertAuditEvent (db: Db, e: {
  event: string, userId?: string, sessionId?: string, ip: string, userAgent: string | undefined
}): Promise<void> {
  await db.query({
    name: 'insert-audit-event',
    text: 'INSERT INTO audit_events (event, user_id, session_id, ip, user_agent) VALUES ($1, $2, $3, $4, $5)',
    values: [e.event, e.userId ?? null, e.sessionId ?? null, e.ip, e.userAgent ?? null]
  })
}
