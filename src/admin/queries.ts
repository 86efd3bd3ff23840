import type { PoolClient } from 'pg'
import type { Db } from '../db/index.js'

// The statements of the admin API: parameterized, one function each.

/** A user as the admin API shows it. */
export interface AdminUser {
  id: string
  username: string
  email: string
  email_verified: boolean
  mfa_enabled: boolean
  banned_until: Date | null
  created_at: Date
  last_sign_in_at: Date | null
}

// A user as the API shows it, from rows aliased `u`. The last sign-in is read, not kept: the newest
// session (sessions stay a week after they end), else the newest sign-in in the audit trail
// (AUDIT_RETENTION_DAYS): a sign-in writes nothing more for it.
const USER_FIELDS = `u.id, u.name AS username, u.email, u.email_verified_at IS NOT NULL AS email_verified, u.mfa_enabled,
  u.banned_until, u.created_at,
  coalesce((SELECT max(s.created_at) FROM sessions s WHERE s.user_id = u.id),
           (SELECT max(a.created_at) FROM audit_events a WHERE a.user_id = u.id AND a.event IN ('sign-in', 'mfa-verify', 'recovery-code-used'))) AS last_sign_in_at`

/** Where a page of the list starts: after this user (created_at as PostgreSQL writes it, so exact to the microsecond). */
export interface UserCursor { createdAt: string, id: string }

/**
 * A page of users, newest first, keyset on (created_at, id): users signing up meanwhile come
 * before the first page, never into a later one. One more row than `limit` tells whether a page follows.
 */
export async function listUsers (db: Db, l: { limit: number, after: UserCursor | null, emailPrefix: string | null }): Promise<Array<AdminUser & { cursor_at: string }>> {
  const { rows } = await db.query<AdminUser & { cursor_at: string }>({
    name: 'admin-list-users',
    text: `SELECT ${USER_FIELDS}, u.created_at::text AS cursor_at FROM users u
           WHERE ($1::text IS NULL OR starts_with(u.email, $1))
             AND ($2::timestamptz IS NULL OR (u.created_at, u.id) < ($2::timestamptz, $3::uuid))
           ORDER BY u.created_at DESC, u.id DESC
           LIMIT $4`,
    values: [l.emailPrefix, l.after?.createdAt ?? null, l.after?.id ?? null, l.limit + 1]
  })
  return rows
}

export async function findUser (db: Db, id: string): Promise<AdminUser | undefined> {
  const { rows } = await db.query<AdminUser>({ name: 'admin-find-user', text: `SELECT ${USER_FIELDS} FROM users u WHERE u.id = $1`, values: [id] })
  return rows[0]
}

/**
 * A new user, or undefined when the email is taken. `mail`: a link queued for the address in the
 * same statement (a reset-password link when the operator set no password).
 */
export async function createUser (db: Db, u: {
  name: string, email: string, passwordHash: string, verified: boolean, mail: 'verify-email' | 'reset-password' | null
}): Promise<AdminUser | undefined> {
  const { rows } = await db.query<AdminUser>({
    name: 'admin-create-user',
    text: `WITH inserted AS (
             INSERT INTO users (name, email, password_hash, email_verified_at) VALUES ($1, $2, $3, CASE WHEN $4 THEN now() END)
             ON CONFLICT (email) DO NOTHING
             RETURNING *
           ), queued AS (
             INSERT INTO outbox (kind, user_id, payload)
             SELECT 'mail', id, jsonb_build_object('template', $5::text, 'to', email) FROM inserted WHERE $5 IS NOT NULL
           )
           SELECT ${USER_FIELDS} FROM inserted u`,
    values: [u.name, u.email, u.passwordHash, u.verified, u.mail]
  })
  return rows[0]
}

export interface UserChanges {
  name?: string
  email?: string
  emailVerified?: boolean
  passwordHash?: string
  /** null lifts a ban */
  bannedUntil?: Date | null
}

/**
 * Applies the changes to the user, in the caller's transaction: the user row first (its lock is
 * what a sign-in making a session or a challenge waits for), then what follows from it. A new
 * email is unverified unless `emailVerified` says otherwise, and voids the links mailed for the
 * old one; a new password voids every mailed link; a new password or a ban in the future ends
 * every session and waiting sign-in (endEverything). The user and the ids of the sessions that
 * ended; undefined when there is no such user. Throws 23505 when the email is taken.
 */
export async function updateUser (client: PoolClient, id: string, c: UserChanges): Promise<{ user: AdminUser, ended: string[] } | undefined> {
  const banning = c.bannedUntil != null && c.bannedUntil.getTime() > Date.now()
  const { rows } = await client.query<AdminUser & { email_changed: boolean }>({
    name: 'admin-update-user',
    text: `WITH prior AS (
             SELECT id, email FROM users WHERE id = $1 FOR NO KEY UPDATE
           ), updated AS (
             UPDATE users u SET
               name = coalesce($2, u.name),
               email = coalesce($3, u.email),
               email_verified_at = CASE
                 WHEN $4::boolean IS FALSE THEN NULL
                 WHEN $3 IS NOT NULL AND $3 <> prior.email THEN CASE WHEN $4 THEN now() END
                 WHEN $4 THEN coalesce(u.email_verified_at, now())
                 ELSE u.email_verified_at END,
               password_hash = coalesce($5, u.password_hash),
               password_changed_at = CASE WHEN $5 IS NOT NULL THEN now() ELSE u.password_changed_at END,
               banned_until = CASE WHEN $6 THEN $7::timestamptz ELSE u.banned_until END,
               updated_at = now()
             FROM prior WHERE u.id = prior.id
             RETURNING u.*, u.email <> prior.email AS email_changed
           )
           SELECT ${USER_FIELDS}, u.email_changed FROM updated u`,
    values: [id, c.name ?? null, c.email ?? null, c.emailVerified ?? null, c.passwordHash ?? null, 'bannedUntil' in c, c.bannedUntil ?? null]
  })
  const row = rows[0]
  if (row === undefined) return undefined
  const { email_changed: emailChanged, ...user } = row
  if (emailChanged || c.passwordHash !== undefined) {
    await client.query({
      name: 'admin-void-links',
      text: `WITH voided AS (DELETE FROM email_tokens WHERE user_id = $1)
             DELETE FROM outbox WHERE user_id = $1 AND kind = 'mail' AND payload->>'template' IN ('verify-email', 'reset-password', 'change-email')`,
      values: [id]
    })
  }
  const ended = c.passwordHash !== undefined || banning ? await endEverything(client, id, banning ? 'ban' : 'admin-password') : []
  return { user, ended }
}

/**
 * Ends every live session of the user and every sign-in waiting for its second factor, in the
 * caller's transaction; the ids of the sessions that ended. Sessions first, then challenges (the
 * order sign-out everywhere takes them in: no deadlock), then sessions again, each a statement
 * of its own: a verify that held a challenge has committed its session by then, and it ends too.
 */
export async function endEverything (client: PoolClient, userId: string, reason: string): Promise<string[]> {
  const end = async (): Promise<string[]> => (await client.query<{ id: string }>({
    name: 'admin-end-sessions',
    text: 'UPDATE sessions SET revoked_at = now(), revoked_reason = $2 WHERE user_id = $1 AND revoked_at IS NULL RETURNING id',
    values: [userId, reason]
  })).rows.map((r) => r.id)
  const ended = await end()
  await client.query({ name: 'admin-delete-challenges', text: 'DELETE FROM mfa_challenges WHERE user_id = $1', values: [userId] })
  return [...ended, ...await end()]
}

/**
 * Removes the second factor: TOTP off, the secret and its recovery codes deleted, waiting sign-ins
 * void. False when there is no such user. The user row, then challenges, then the secret: a verify
 * takes the latter two in that order too, and never the user row.
 */
export async function removeSecondFactor (client: PoolClient, id: string): Promise<boolean> {
  const { rowCount } = await client.query({ name: 'admin-mfa-off', text: 'UPDATE users SET mfa_enabled = false, updated_at = now() WHERE id = $1', values: [id] })
  if (rowCount !== 1) return false
  await client.query({ name: 'admin-mfa-challenges', text: 'DELETE FROM mfa_challenges WHERE user_id = $1', values: [id] })
  await client.query({ name: 'admin-mfa-secret', text: 'DELETE FROM totp_secrets WHERE user_id = $1', values: [id] })
  return true
}

export interface AuditEvent {
  id: string
  event: string
  user_id: string | null
  session_id: string | null
  ip: string | null
  user_agent: string | null
  created_at: Date
}

/**
 * A page of the audit trail, newest first, keyset on the id; one more row than `limit`. Two
 * statements, so that each keeps a plan that uses its index (the user's, or the ids').
 */
export async function listAuditEvents (db: Db, l: { limit: number, before: string | null, userId: string | null }): Promise<AuditEvent[]> {
  const fields = 'SELECT id, event, user_id, session_id, ip, user_agent, created_at FROM audit_events'
  const before = l.before ?? '9223372036854775807'
  const { rows } = l.userId === null
    ? await db.query<AuditEvent>({ name: 'admin-list-audit', text: `${fields} WHERE id < $1 ORDER BY id DESC LIMIT $2`, values: [before, l.limit + 1] })
    : await db.query<AuditEvent>({
      name: 'admin-list-audit-user',
      text: `${fields} WHERE user_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3`,
      values: [l.userId, before, l.limit + 1]
    })
  return rows
}
