import type { Db } from '../db/index.js'

// The statements of sign-up, me and password change.

export interface User {
  id: string
  name: string
  email: string
  email_verified_at: Date | null
  created_at: Date
}

/** What `me` shows: the user, and whether TOTP is on. */
export interface MeRow extends User { mfa_enabled: boolean }

/**
 * The new user, or undefined when the (lower-cased) email is taken. With `verify`, a verification
 * link is queued for the address in the same statement.
 */
export async function insertUser (db: Db, u: { name: string, email: string, passwordHash: string, verify: boolean }): Promise<User | undefined> {
  const { rows } = await db.query<User>({
    name: 'insert-user',
    text: `WITH inserted AS (
             INSERT INTO users (name, email, password_hash) VALUES ($1, $2, $3)
             ON CONFLICT (email) DO NOTHING
             RETURNING id, name, email, email_verified_at, created_at
           ), queued AS (
             INSERT INTO outbox (kind, user_id, payload)
             SELECT 'mail', id, jsonb_build_object('template', 'verify-email', 'to', email) FROM inserted WHERE $4
           )
           SELECT * FROM inserted`,
    values: [u.name, u.email, u.passwordHash, u.verify]
  })
  return rows[0]
}

export async function findUserById (db: Db, id: string): Promise<MeRow | undefined> {
  const { rows } = await db.query<MeRow>({
    name: 'find-user-by-id',
    text: 'SELECT id, name, email, email_verified_at, created_at, mfa_enabled FROM users WHERE id = $1',
    values: [id]
  })
  return rows[0]
}

/**
 * Deletes the user (with `passwordHash`: only if the hash is still the one that was verified; null
 * for an operator, DELETE /admin/users/:id): sessions and mailed
 * tokens go with it (ON DELETE CASCADE), and so does mail still queued for it. Audit rows keep the
 * user id, and never held the email. The ids of the sessions that ended, or undefined when nothing
 * was deleted.
 */
export async function deleteUser (db: Db, id: string, passwordHash: string | null): Promise<string[] | undefined> {
  const { rows } = await db.query<{ ended: string[] }>({
    name: 'delete-user',
    text: `WITH deleted AS (
             DELETE FROM users WHERE id = $1 AND ($2::text IS NULL OR password_hash = $2) RETURNING id
           ), unsent AS (
             DELETE FROM outbox WHERE user_id IN (SELECT id FROM deleted)
           )
           -- The sessions as they were before the statement (its snapshot): the live ones, deleted with the user.
           SELECT ARRAY(SELECT id FROM sessions WHERE user_id = deleted.id AND revoked_at IS NULL) AS ended FROM deleted`,
    values: [id, passwordHash]
  })
  return rows[0]?.ended
}

/**
 * Sets the new hash, ends every other live session of the user and voids mailed links, in one atomic statement;
 * the session `keepSid` (the one making the change) goes on. The hash is replaced only if it
 * is still the one that was verified: of two concurrent changes, the second finds it changed
 * and nothing happens (undefined). The ids of the sessions that ended.
 */
export async function changePassword (db: Db, c: { userId: string, oldHash: string, newHash: string, keepSid: string }): Promise<string[] | undefined> {
  const { rows } = await db.query<{ ended: string[] }>({
    name: 'change-password',
    text: `WITH changed AS (
             UPDATE users SET password_hash = $3, password_changed_at = now(), updated_at = now()
             WHERE id = $1 AND password_hash = $2
             RETURNING id
           ), ended AS (
             UPDATE sessions SET revoked_at = now(), revoked_reason = 'password-change'
             WHERE user_id IN (SELECT id FROM changed) AND id <> $4 AND revoked_at IS NULL
             RETURNING id
           ), voided AS (
             -- Links mailed before the change are void already (their stamp names the old hash):
             -- deleted, with reset and email-change links still queued.
             DELETE FROM email_tokens WHERE user_id IN (SELECT id FROM changed)
           ), challenges AS (
             -- Sign-ins waiting for their second factor were started with the old password.
             DELETE FROM mfa_challenges WHERE user_id IN (SELECT id FROM changed)
           ), unsent AS (
             DELETE FROM outbox WHERE user_id IN (SELECT id FROM changed) AND kind = 'mail'
               AND payload->>'template' IN ('reset-password', 'change-email')
           )
           SELECT ARRAY(SELECT id FROM ended) AS ended FROM changed`,
    values: [c.userId, c.oldHash, c.newHash, c.keepSid]
  })
  return rows[0]?.ended
}
