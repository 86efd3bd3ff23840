import type { Db } from '../db/index.js'

// The statements of verification, reset, email change and the mail they send. Each request is one
// statement (CTEs), so that what it changes and the mail it queues commit together. The outbox row
// holds what to send (template, address, user), never a token: the sender mints the token as it
// delivers (mintToken), so no usable token is ever stored, not even for the seconds before delivery.

// What a token is bound to besides its user: the password hash and email when it was minted.
// A token whose stamp no longer matches its user is void.
const STAMP = (u: string): string => `sha256(convert_to(${u}.password_hash || ' ' || ${u}.email, 'UTF8'))`

export type Purpose = 'verify-email' | 'reset-password' | 'change-email'
export type Template = Purpose | 'password-reset-notice' | 'email-change-notice'

/** What the outbox keeps of a message to send (with the user's id in its own column). */
export interface MailIntent {
  template: Template
  to: string
  new_email?: string
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
             INSERT INTO outbox (kind, user_id, payload)
             SELECT 'mail', id, jsonb_build_object('template', $2::text, 'to', email) FROM account
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
             INSERT INTO outbox (kind, user_id, payload)
             SELECT 'mail', $1, jsonb_build_object('template', 'change-email', 'to', $2::text)
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
 * outbox row still exists and no newer one of its kind for the user is queued (the newest request
 * wins), the user does, and the address is still theirs (for change-email: still free); a verify
 * link only while the address is unverified. A new reset or change-email token voids the user's
 * earlier ones of its purpose. False: the message is no longer due, and is not sent.
 */
export async function mintToken (db: Db, m: { hash: Buffer, outboxId: string, userId: string, purpose: Purpose, email: string, ttl: number }): Promise<boolean> {
  const { rows } = await db.query({
    name: 'mint-email-token',
    text: `WITH due AS (
             SELECT u.id, ${STAMP('u')} AS stamp FROM users u
             WHERE u.id = $3 AND EXISTS (SELECT 1 FROM outbox WHERE id = $2)
               AND ($4::text = 'verify-email' OR NOT EXISTS (
                 SELECT 1 FROM outbox o WHERE o.user_id = $3 AND o.id > $2 AND o.kind = 'mail' AND o.payload->>'template' = $4))
               AND CASE $4::text
                 WHEN 'change-email' THEN NOT EXISTS (SELECT 1 FROM users WHERE email = $5)
                 WHEN 'verify-email' THEN u.email = $5 AND u.email_verified_at IS NULL
                 ELSE u.email = $5 END
           ), voided AS (
             DELETE FROM email_tokens WHERE user_id IN (SELECT id FROM due) AND purpose = $4 AND $4::text <> 'verify-email'
           )
           INSERT INTO email_tokens (token_hash, user_id, purpose, email, stamp, expires_at)
           SELECT $1, id, $4, $5, stamp, now() + make_interval(secs => $6) FROM due
           RETURNING 1`,
    values: [m.hash, m.outboxId, m.userId, m.purpose, m.email, m.ttl]
  })
  return rows.length > 0
}

/**
 * A stored token, for the checks before it is used: its purpose, whether it has expired, and
 * whether it is still current (its user's password and email unchanged since it was minted).
 */
export async function findToken (db: Db, hash: Buffer): Promise<{ user_id: string, purpose: Purpose, expired: boolean, current: boolean } | undefined> {
  const { rows } = await db.query<{ user_id: string, purpose: Purpose, expired: boolean, current: boolean }>({
    name: 'find-email-token',
    text: `SELECT t.user_id, t.purpose, t.expires_at <= now() AS expired, t.stamp = ${STAMP('u')} AS current
           FROM email_tokens t JOIN users u ON u.id = t.user_id WHERE t.token_hash = $1`,
    values: [hash]
  })
  return rows[0]
}

// Uses a token: deletes it if it is live (unexpired, current) and of the purpose, returning it.
const USE = (purpose: Purpose): string => `DELETE FROM email_tokens t USING users u
             WHERE t.token_hash = $1 AND t.purpose = '${purpose}' AND t.expires_at > now()
               AND u.id = t.user_id AND t.stamp = ${STAMP('u')}
             RETURNING t.user_id, t.email`

/** Uses a verify-email token: the address it was sent to, if still the user's, is verified. The user id, or undefined if the token was not live. */
export async function verifyEmail (db: Db, hash: Buffer): Promise<string | undefined> {
  const { rows } = await db.query<{ user_id: string }>({
    name: 'verify-email',
    text: `WITH used AS (
             ${USE('verify-email')}
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
 * verified; the old address gets a notice; reset and change-email links still out are void (their
 * stamp no longer matches), and their queued mail is dropped. Throws pg's unique violation (23505)
 * if another account took the address meanwhile (the token then stays unused). The old and new
 * address, or undefined if the token was not live.
 */
export async function changeEmail (db: Db, hash: Buffer): Promise<{ old_email: string, new_email: string } | undefined> {
  const { rows } = await db.query<{ old_email: string, new_email: string }>({
    name: 'change-email',
    text: `WITH used AS (
             ${USE('change-email')}
           ), changed AS (
             UPDATE users u SET email = used.email, email_verified_at = now(), updated_at = now()
             FROM used, users o WHERE u.id = used.user_id AND o.id = u.id
             RETURNING u.id, o.email AS old_email, u.email AS new_email
           ), unsent AS (
             DELETE FROM outbox WHERE user_id IN (SELECT id FROM changed) AND kind = 'mail'
               AND payload->>'template' IN ('reset-password', 'change-email', 'verify-email')
           ), notice AS (
             INSERT INTO outbox (kind, user_id, payload)
             SELECT 'mail', id, jsonb_build_object('template', 'email-change-notice', 'to', old_email, 'new_email', new_email) FROM changed
           )
           SELECT old_email, new_email FROM changed`,
    values: [hash]
  })
  return rows[0]
}

/**
 * Uses a reset-password token: the new password hash is set, every session ends, the address
 * counts as verified (the link reached it), and a notice is queued. Every other link still out
 * is void (their stamp no longer matches): deleted here, with its queued mail. The ids of the
 * sessions that ended, or undefined if the token was not live.
 */
export async function resetPassword (db: Db, hash: Buffer, passwordHash: string): Promise<string[] | undefined> {
  const { rows } = await db.query<{ ended: string[] }>({
    name: 'reset-password',
    text: `WITH used AS (
             ${USE('reset-password')}
           ), changed AS (
             UPDATE users u SET password_hash = $2, password_changed_at = now(), updated_at = now(), email_verified_at = coalesce(u.email_verified_at, now())
             FROM used WHERE u.id = used.user_id
             RETURNING u.id, u.email
           ), ended AS (
             UPDATE sessions SET revoked_at = now(), revoked_reason = 'password-reset'
             WHERE user_id IN (SELECT id FROM changed) AND revoked_at IS NULL
             RETURNING id
           ), voided AS (
             DELETE FROM email_tokens WHERE user_id IN (SELECT id FROM changed) AND token_hash <> $1
           ), challenges AS (
             -- Sign-ins waiting for their second factor were started with the old password.
             DELETE FROM mfa_challenges WHERE user_id IN (SELECT id FROM changed)
           ), unsent AS (
             DELETE FROM outbox WHERE user_id IN (SELECT id FROM changed) AND kind = 'mail'
               AND payload->>'template' IN ('reset-password', 'change-email')
           ), notice AS (
             INSERT INTO outbox (kind, user_id, payload)
             SELECT 'mail', id, jsonb_build_object('template', 'password-reset-notice', 'to', email) FROM changed
           )
           SELECT ARRAY(SELECT id FROM ended) AS ended FROM changed`,
    values: [hash, passwordHash]
  })
  return rows[0]?.ended
}
