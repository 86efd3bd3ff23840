import type { Db } from '../db/index.js'

// The statements of verification, reset, email change and the mail they send. Each request is one
// statement (CTEs), so that what it changes and the mail it queues commit together. The outbox row
// holds what to send (template, address, user), never a token: the sender mints the token as it
// delivers (mintToken), so no usable token is ever stored, not even for the seconds before delivery.

export type Purpose = 'verify-email' | 'reset-password' | 'change-email'
export type Template = Purpose | 'password-reset-notice' | 'email-change-notice'

/** What the outbox keeps of a message to send. */
export interface MailIntent {
  template: Template
  to: string
  user_id?: string
}

/**
 * Queues `template` for the account of `email` (when there is one, it matches `verified` and the
 * address is outside its cooldown), and starts the cooldown for the address whether or not it has
 * an account: one statement, the same work for known and unknown addresses. Returns the account's
 * id (whether or not mail was queued) and whether mail was queued.
 */
export async function requestMail (db: Db, r: { email: string, template: 'verify-email' | 'reset-password', cooldown: number }): Promise<{ userId: string | null, queued: boolean }> {
  const { rows } = await db.query<{ user_id: string | null, queued: boolean }>({
    name: 'request-mail',
    text: `WITH cool AS (
             INSERT INTO email_cooldowns (email, purpose, until) VALUES ($1, $2, now() + make_interval(secs => $3))
             ON CONFLICT (email, purpose) DO UPDATE SET until = EXCLUDED.until WHERE email_cooldowns.until <= now()
             RETURNING 1
           ), account AS (
             SELECT id, email, email_verified_at FROM users WHERE email = $1
           ), queued AS (
             INSERT INTO outbox (kind, payload)
             SELECT 'mail', jsonb_build_object('template', $2::text, 'to', email, 'user_id', id) FROM account
             WHERE EXISTS (SELECT 1 FROM cool) AND ($2::text <> 'verify-email' OR email_verified_at IS NULL)
             RETURNING 1
           )
           SELECT (SELECT id FROM account) AS user_id, EXISTS (SELECT 1 FROM queued) AS queued`,
    values: [r.email, r.template, r.cooldown]
  })
  return { userId: rows[0].user_id, queued: rows[0].queued }
}

/**
 * Queues a change-email link to `newEmail` for the user, unless another account has that address
 * or it is inside its cooldown; true when queued. Nothing changes until the link is used.
 */
export async function requestEmailChange (db: Db, r: { userId: string, newEmail: string, cooldown: number }): Promise<boolean> {
  const { rows } = await db.query<{ queued: boolean }>({
    name: 'request-email-change',
    text: `WITH cool AS (
             INSERT INTO email_cooldowns (email, purpose, until) VALUES ($2, 'change-email', now() + make_interval(secs => $3))
             ON CONFLICT (email, purpose) DO UPDATE SET until = EXCLUDED.until WHERE email_cooldowns.until <= now()
             RETURNING 1
           ), queued AS (
             INSERT INTO outbox (kind, payload)
             SELECT 'mail', jsonb_build_object('template', 'change-email', 'to', $2::text, 'user_id', $1::uuid)
             WHERE EXISTS (SELECT 1 FROM cool) AND NOT EXISTS (SELECT 1 FROM users WHERE email = $2)
             RETURNING 1
           )
           SELECT EXISTS (SELECT 1 FROM queued) AS queued`,
    values: [r.userId, r.newEmail, r.cooldown]
  })
  return rows[0].queued
}

/**
 * Stores the hash of a token the sender is about to mail, while the message is still due: its
 * outbox row still exists (a password change or reset deletes queued reset links), the user does,
 * and the address is still theirs (for change-email: still free); a verify link only while the
 * address is unverified. A new reset or change-email token voids the user's earlier ones of its
 * purpose. False: the message is no longer due, and is not sent.
 */
export async function mintToken (db: Db, m: { hash: Buffer, outboxId: string, userId: string, purpose: Purpose, email: string, ttl: number }): Promise<boolean> {
  const { rows } = await db.query({
    name: 'mint-email-token',
    text: `WITH due AS (
             SELECT id FROM users u
             WHERE id = $3 AND EXISTS (SELECT 1 FROM outbox WHERE id = $2)
               AND CASE $4::text
                 WHEN 'change-email' THEN NOT EXISTS (SELECT 1 FROM users WHERE email = $5)
                 WHEN 'verify-email' THEN u.email = $5 AND u.email_verified_at IS NULL
                 ELSE u.email = $5 END
           ), voided AS (
             DELETE FROM email_tokens WHERE user_id IN (SELECT id FROM due) AND purpose = $4 AND $4::text <> 'verify-email'
           )
           INSERT INTO email_tokens (token_hash, user_id, purpose, email, expires_at)
           SELECT $1, id, $4, $5, now() + make_interval(secs => $6) FROM due
           RETURNING 1`,
    values: [m.hash, m.outboxId, m.userId, m.purpose, m.email, m.ttl]
  })
  return rows.length > 0
}

/** A stored token, for the checks before it is used: its purpose and whether it has expired. */
export async function findToken (db: Db, hash: Buffer): Promise<{ user_id: string, purpose: Purpose, expired: boolean } | undefined> {
  const { rows } = await db.query<{ user_id: string, purpose: Purpose, expired: boolean }>({
    name: 'find-email-token',
    text: 'SELECT user_id, purpose, expires_at <= now() AS expired FROM email_tokens WHERE token_hash = $1',
    values: [hash]
  })
  return rows[0]
}

/** Uses a verify-email token: the address it was sent to, if still the user's, is verified. The user id, or undefined if the token was not live. */
export async function verifyEmail (db: Db, hash: Buffer): Promise<string | undefined> {
  const { rows } = await db.query<{ user_id: string }>({
    name: 'verify-email',
    text: `WITH used AS (
             DELETE FROM email_tokens WHERE token_hash = $1 AND purpose = 'verify-email' AND expires_at > now()
             RETURNING user_id, email
           ), verified AS (
             UPDATE users u SET email_verified_at = now() FROM used
             WHERE u.id = used.user_id AND u.email = used.email AND u.email_verified_at IS NULL
           )
           SELECT user_id FROM used`,
    values: [hash]
  })
  return rows[0]?.user_id
}

/**
 * Uses a change-email token: the account's email becomes the address the link was sent to, now
 * verified, and the old address gets a notice. Throws pg's unique violation (23505) if another
 * account took the address meanwhile (the token then stays unused). The user id, or undefined.
 */
export async function changeEmail (db: Db, hash: Buffer): Promise<{ user_id: string, old_email: string, new_email: string } | undefined> {
  const { rows } = await db.query<{ user_id: string, old_email: string, new_email: string }>({
    name: 'change-email',
    text: `WITH used AS (
             DELETE FROM email_tokens WHERE token_hash = $1 AND purpose = 'change-email' AND expires_at > now()
             RETURNING user_id, email
           ), old AS (
             SELECT u.id, u.email FROM users u JOIN used ON u.id = used.user_id
           ), changed AS (
             UPDATE users u SET email = used.email, email_verified_at = now(), updated_at = now() FROM used
             WHERE u.id = used.user_id
             RETURNING u.id, u.email
           ), notice AS (
             INSERT INTO outbox (kind, payload)
             SELECT 'mail', jsonb_build_object('template', 'email-change-notice', 'to', old.email, 'new_email', changed.email)
             FROM old JOIN changed ON changed.id = old.id WHERE old.email <> changed.email
           )
           SELECT old.id AS user_id, old.email AS old_email, changed.email AS new_email FROM old JOIN changed ON changed.id = old.id`,
    values: [hash]
  })
  return rows[0]
}

/**
 * Uses a reset-password token: the new password hash is set, every session ends, every other
 * reset token and queued reset link of the user is void, the address counts as verified (the
 * link reached it), and a notice is queued. The user id, or undefined if the token was not live.
 */
export async function resetPassword (db: Db, hash: Buffer, passwordHash: string): Promise<string | undefined> {
  const { rows } = await db.query<{ id: string }>({
    name: 'reset-password',
    text: `WITH used AS (
             DELETE FROM email_tokens WHERE token_hash = $1 AND purpose = 'reset-password' AND expires_at > now()
             RETURNING user_id, email
           ), changed AS (
             UPDATE users u SET password_hash = $2, updated_at = now(),
               email_verified_at = CASE WHEN u.email = used.email THEN coalesce(u.email_verified_at, now()) ELSE u.email_verified_at END
             FROM used WHERE u.id = used.user_id
             RETURNING u.id, u.email
           ), ended AS (
             UPDATE sessions SET revoked_at = now(), revoked_reason = 'password-reset'
             WHERE user_id IN (SELECT id FROM changed) AND revoked_at IS NULL
           ), voided AS (
             DELETE FROM email_tokens
             WHERE user_id IN (SELECT id FROM changed) AND purpose = 'reset-password' AND token_hash <> $1
           ), unsent AS (
             DELETE FROM outbox
             WHERE kind = 'mail' AND payload->>'template' = 'reset-password' AND payload->>'user_id' IN (SELECT id::text FROM changed)
           ), notice AS (
             INSERT INTO outbox (kind, payload)
             SELECT 'mail', jsonb_build_object('template', 'password-reset-notice', 'to', email) FROM changed
           )
           SELECT id FROM changed`,
    values: [hash, passwordHash]
  })
  return rows[0]?.id
}

/** The current address and password hash of a user, for an email change. */
export async function findAccount (db: Db, userId: string): Promise<{ email: string, password_hash: string } | undefined> {
  const { rows } = await db.query<{ email: string, password_hash: string }>({
    name: 'find-account',
    text: 'SELECT email, password_hash FROM users WHERE id = $1',
    values: [userId]
  })
  return rows[0]
}
