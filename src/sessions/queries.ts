import type { Db } from '../db/index.js'
import { RETRY_AFTER, THROTTLE_JOINS } from '../throttle.js'

// The statements of sign-in, refresh, sign-out and the session list: parameterized, one function
// each, one round trip each. Named statements are prepared once per connection by pg.

/** Replaces the hash only if it is still the one that was verified (a concurrent change wins). */
export async function updatePasswordHash (db: Db, id: string, oldHash: string, newHash: string): Promise<void> {
  await db.query({
    name: 'update-password-hash',
    text: 'UPDATE users SET password_hash = $3, updated_at = now() WHERE id = $1 AND password_hash = $2',
    values: [id, oldHash, newHash]
  })
}

/** Why a password-only sign-in made no session: TOTP is on, a ban holds, or the password has changed (or the user is gone). */
export type NoSession = 'mfa' | 'banned' | 'changed'

/**
 * A password-only sign-in's session, made only while the password has not changed since it was
 * verified (password_changed_at, which a rehash leaves alone), TOTP is off and no ban holds:
 * checked under a share lock of the user row. A TOTP confirmation, a ban and a password change
 * update that row, so each either waits for this insert (and then ends the session) or this
 * insert waits for it and, re-reading the row, makes nothing (mfa/queries.ts, enableTotp;
 * admin/queries.ts; account/queries.ts). Concurrent sign-ins of one user share the lock: none
 * waits for another, and none writes to the row. null when the session was made, else why not.
 */
export async function insertSession (db: Db, s: {
  id: string, userId: string, passwordChanged: string | null, refreshHash: Buffer, ttl: number, userAgent: string | undefined, ip: string
}): Promise<NoSession | null> {
  const { rows } = await db.query<{ mfa: boolean, banned: boolean, made: boolean }>({
    name: 'insert-session',
    text: `WITH account AS (
             SELECT id, mfa_enabled, coalesce(banned_until > now(), false) AS banned FROM users
             WHERE id = $2 AND password_changed_at IS NOT DISTINCT FROM $7::timestamptz FOR SHARE
           ), made AS (
             INSERT INTO sessions (id, user_id, refresh_hash, expires_at, user_agent, ip)
             SELECT $1, id, $3, now() + make_interval(secs => $4), $5, $6 FROM account WHERE NOT mfa_enabled AND NOT banned
             RETURNING id
           )
           SELECT a.mfa_enabled AS mfa, a.banned, EXISTS (SELECT 1 FROM made) AS made FROM account a`,
    values: [s.id, s.userId, s.refreshHash, s.ttl, s.userAgent ?? null, s.ip, s.passwordChanged]
  })
  const r = rows[0]
  if (r === undefined) return 'changed'
  return r.made ? null : r.banned ? 'banned' : 'mfa'
}

export interface Rotation { sid: string, sub: string, oldHash: Buffer, newHash: Buffer }

/**
 * Swaps each session's current refresh hash for the next one, all in one statement (a batch:
 * src/db/batch.ts); true for each rotation that took place. Of several rotations with one token,
 * in one batch or in concurrent ones, exactly one finds `refresh_hash = oldHash`. The session's
 * idle lifetime slides forward with each rotation.
 */
export async function rotateRefreshTokens (db: Db, rotations: Rotation[], ttl: number): Promise<boolean[]> {
  const query = {
    name: 'rotate-refresh-tokens',
    text: `UPDATE sessions s
           SET refresh_hash = r.new_hash, previous_hash = s.refresh_hash, rotated_at = now(), last_used_at = now(),
               expires_at = now() + make_interval(secs => $5)
           FROM unnest($1::uuid[], $2::uuid[], $3::bytea[], $4::bytea[]) WITH ORDINALITY AS r(id, user_id, old_hash, new_hash, n)
           WHERE s.id = ANY ($1::uuid[]) AND s.id = r.id AND s.user_id = r.user_id AND s.refresh_hash = r.old_hash
             AND s.revoked_at IS NULL AND s.expires_at > now()
           RETURNING r.n`,
    values: [rotations.map((r) => r.sid), rotations.map((r) => r.sub), rotations.map((r) => r.oldHash), rotations.map((r) => r.newHash), ttl]
  }
  let rows: Array<{ n: string }> | undefined
  for (let attempt = 1; rows === undefined; attempt++) {
    try {
      rows = (await db.query<{ n: string }>(query)).rows
    } catch (err) {
      // A deadlock with another statement (a sign-out of all sessions, say) rolled the batch back
      // whole: again, up to three times (the other may not have taken its lock yet when the first
      // retry comes).
      if ((err as { code?: string }).code !== '40P01' || attempt === 3) throw err
    }
  }
  // A session appears once in the result even when several rotations in the batch named it:
  // `n` says which one took place.
  const done = new Set(rows.map((r) => rotations[Number(r.n) - 1]))
  return rotations.map((r) => done.has(r))
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
 * Ends the session `sid` (or, with `all`, every live session of the user and the sign-ins still
 * waiting for their second factor), provided `sid` is still live: a token of an ended session
 * cannot end the others. Returns the ids of the sessions that ended.
 */
export async function endSessions (db: Db, e: { sid: string, sub: string, all: boolean, reason: string }): Promise<string[]> {
  const { rows } = await db.query<{ id: string }>({
    name: 'end-sessions',
    text: `WITH ended AS (
             UPDATE sessions SET revoked_at = now(), revoked_reason = $4
             WHERE user_id = $2 AND revoked_at IS NULL AND ($3 OR id = $1)
               AND EXISTS (SELECT 1 FROM sessions WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL)
             RETURNING id, user_id
           ), challenges AS (
             DELETE FROM mfa_challenges WHERE $3 AND user_id IN (SELECT user_id FROM ended)
           )
           SELECT id FROM ended`,
    values: [e.sid, e.sub, e.all, e.reason]
  })
  return rows.map((r) => r.id)
}

export interface SessionRow {
  id: string
  created_at: Date
  last_used_at: Date
  expires_at: Date
  user_agent: string | null
  ip: string | null
}

/** The user's live sessions (neither ended nor expired), newest first. */
export async function listSessions (db: Db, userId: string): Promise<SessionRow[]> {
  const { rows } = await db.query<SessionRow>({
    name: 'list-sessions',
    text: `SELECT id, created_at, last_used_at, expires_at, user_agent, ip FROM sessions
           WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > now()
           ORDER BY created_at DESC, id`,
    values: [userId]
  })
  return rows
}

/**
 * Ends one live session of the user. false when there is none with that id: unknown, already
 * ended, or another user's (the same answer for all three, so ids of others cannot be probed).
 */
export async function revokeSession (db: Db, r: { id: string, userId: string, reason: string }): Promise<boolean> {
  const { rowCount } = await db.query({
    name: 'revoke-session',
    text: `UPDATE sessions SET revoked_at = now(), revoked_reason = $3
           WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL AND expires_at > now()`,
    values: [r.id, r.userId, r.reason]
  })
  return rowCount === 1
}

export interface SignInState {
  id: string | null
  name: string | null
  password_hash: string | null
  email_verified: boolean
  /** TOTP is on: the password alone does not sign in */
  mfa_enabled: boolean
  /** banned_until is in the future: the right password is refused */
  banned: boolean
  /** when the password was last changed, as PostgreSQL writes it (exact to the microsecond) */
  password_changed: string | null
  /** seconds this (email, IP) or this email must still wait; null when it may try */
  retry_after: number | null
  /** this (email, IP) has failures on record (a success must clear them) */
  has_failures: boolean
}

/**
 * The user for `email` (if any) and whether sign-in is throttled for (email, IP), in one round
 * trip. Unknown emails are throttled exactly like known ones.
 */
export async function findSignInState (db: Db, email: string, ip: string): Promise<SignInState> {
  const { rows } = await db.query<SignInState>({
    name: 'find-sign-in-state',
    text: `SELECT u.id, u.name, u.password_hash, u.email_verified_at IS NOT NULL AS email_verified,
                  coalesce(u.mfa_enabled, false) AS mfa_enabled, coalesce(u.banned_until > now(), false) AS banned,
                  u.password_changed_at::text AS password_changed,
                  t.failures IS NOT NULL AS has_failures, ${RETRY_AFTER} AS retry_after
           FROM (SELECT $1::text AS email) k
           LEFT JOIN users u ON u.email = k.email
           ${THROTTLE_JOINS('k.email', '$2')}`,
    values: [email, ip]
  })
  const state = rows[0]
  if (state.retry_after !== null && state.retry_after <= 0) state.retry_after = null
  return state
}
