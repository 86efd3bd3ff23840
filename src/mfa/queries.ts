import type { PoolClient } from 'pg'
import type { Db } from '../db/index.js'
import { RETRY_AFTER, THROTTLE_JOINS } from '../throttle.js'

// The statements of the second factor: the TOTP secret, recovery codes and sign-in challenges.

/** A proven second factor: a TOTP time step, or a recovery code (by hash). */
export type Factor = { step: number } | { codeHash: Buffer }

export interface Credentials {
  email: string
  password_hash: string
  /** sealed (src/encryption.ts) under key_id; null: no secret, not even an unconfirmed one */
  secret: Buffer | null
  key_id: string | null
  /** TOTP is on */
  confirmed: boolean
  /** the current set of recovery codes */
  codes_id: string | null
}

/**
 * What a change to the account checks: its email, password hash and second factor; undefined when
 * the user is gone.
 */
export async function findCredentials (db: Db, userId: string): Promise<Credentials | undefined> {
  const { rows } = await db.query<Credentials>({
    name: 'find-credentials',
    text: `SELECT u.email, u.password_hash, s.secret, s.key_id, u.mfa_enabled AS confirmed, s.codes_id
           FROM users u LEFT JOIN totp_secrets s ON s.user_id = u.id WHERE u.id = $1`,
    values: [userId]
  })
  return rows[0]
}

/** Keeps a new, unconfirmed secret, replacing an unconfirmed one; false when TOTP is on already. */
export async function saveSecret (db: Db, s: { userId: string, secret: Buffer, keyId: string | null }): Promise<boolean> {
  const { rowCount } = await db.query({
    name: 'save-totp-secret',
    text: `INSERT INTO totp_secrets AS s (user_id, secret, key_id) VALUES ($1, $2, $3)
           ON CONFLICT (user_id) DO UPDATE SET secret = $2, key_id = $3, last_step = 0, created_at = now()
           WHERE s.confirmed_at IS NULL`,
    values: [s.userId, s.secret, s.keyId]
  })
  return rowCount === 1
}

/**
 * Turns TOTP on, provided the secret is still the one the code was checked against (an enrolment
 * in between replaced it) and the step is new, stores the recovery codes, then ends every other
 * session of the user. Two statements in one transaction (`client` must be in one): the first
 * updates the user row, so it waits for any sign-in inserting a session under that row's share
 * lock; the second, with a later snapshot, then sees that session and ends it. A sign-in that
 * comes later finds TOTP on (sessions/queries.ts, insertSession). The ids of the sessions that
 * ended, or undefined when nothing changed.
 */
export async function enableTotp (client: PoolClient, e: {
  userId: string, secret: Buffer, step: number, codesId: string, codeHashes: Buffer[], keepSid: string
}): Promise<string[] | undefined> {
  const { rows } = await client.query<{ enabled: boolean }>({
    name: 'enable-totp',
    text: `WITH enabled AS (
             UPDATE totp_secrets SET confirmed_at = now(), last_step = $3, codes_id = $4
             WHERE user_id = $1 AND secret = $2 AND confirmed_at IS NULL AND last_step < $3
             RETURNING user_id
           ), flagged AS (
             UPDATE users SET mfa_enabled = true, updated_at = now() WHERE id IN (SELECT user_id FROM enabled)
           ), codes AS (
             INSERT INTO recovery_codes (user_id, set_id, code_hash) SELECT user_id, $4, unnest($5::bytea[]) FROM enabled
           )
           SELECT EXISTS (SELECT 1 FROM enabled) AS enabled`,
    values: [e.userId, e.secret, e.step, e.codesId, e.codeHashes]
  })
  if (!rows[0].enabled) return undefined
  const ended = await client.query<{ id: string }>({
    name: 'end-sessions-mfa-enable',
    text: `UPDATE sessions SET revoked_at = now(), revoked_reason = 'mfa-enable'
           WHERE user_id = $1 AND id <> $2 AND revoked_at IS NULL RETURNING id`,
    values: [e.userId, e.keepSid]
  })
  return ended.rows.map((r) => r.id)
}

// Uses up a factor of the user: a TOTP step newer than the last one accepted (compare-and-set: of
// two requests with one code, on any replica, one wins), or a recovery code of the current set
// (deleted). $1 the user, $2 the step or null, $3 the recovery code's hash or null; `guard`, a
// further condition on both. Gives `proven`, the user id when used.
const useFactorSql = (guard = ''): string => `stepped AS (
             UPDATE totp_secrets SET last_step = $2
             WHERE user_id = $1 AND $2::bigint IS NOT NULL AND confirmed_at IS NOT NULL AND last_step < $2 ${guard}
             RETURNING user_id
           ), spent AS (
             DELETE FROM recovery_codes r USING totp_secrets t
             WHERE r.user_id = $1 AND r.code_hash = $3 AND t.user_id = r.user_id AND r.set_id = t.codes_id
               AND t.confirmed_at IS NOT NULL ${guard}
             RETURNING r.user_id
           ), proven AS (
             SELECT user_id FROM stepped UNION SELECT user_id FROM spent
           )`

const factorValues = (f: Factor): [number | null, Buffer | null] => 'step' in f ? [f.step, null] : [null, f.codeHash]

/** Uses up the factor; false when it was used already (or the code is not the user's). */
export async function useFactor (db: Db, userId: string, factor: Factor): Promise<boolean> {
  const { rows } = await db.query({
    name: 'use-factor',
    text: `WITH ${useFactorSql()} SELECT 1 FROM proven`,
    values: [userId, ...factorValues(factor)]
  })
  return rows.length > 0
}

/**
 * Turns TOTP off: pending sign-in challenges, the secret and the recovery codes go; false when it
 * was not on. The challenges first (`disabled` waits for them): a verify locks its challenge, then
 * the secret's row, and the same order here keeps the two from deadlocking.
 */
export async function disableTotp (db: Db, userId: string): Promise<boolean> {
  const { rows } = await db.query({
    name: 'disable-totp',
    text: `WITH challenges AS (
             DELETE FROM mfa_challenges WHERE user_id = $1 RETURNING 1
           ), disabled AS (
             DELETE FROM totp_secrets WHERE user_id = $1 AND confirmed_at IS NOT NULL AND (SELECT count(*) FROM challenges) >= 0
             RETURNING user_id
           ), flagged AS (
             UPDATE users SET mfa_enabled = false, updated_at = now() WHERE id IN (SELECT user_id FROM disabled)
           )
           SELECT 1 FROM disabled`,
    values: [userId]
  })
  return rows.length > 0
}

/**
 * A new set of recovery codes, in place of the set `oldCodesId`: the secret's row names the
 * current set, so the old one is void at once. Compare-and-set: of two regenerations at once one
 * wins, and the other gets false rather than showing its user codes that never work (false too
 * when TOTP is not on). Old rows are deleted as well.
 */
export async function replaceRecoveryCodes (db: Db, r: { userId: string, oldCodesId: string | null, codesId: string, codeHashes: Buffer[] }): Promise<boolean> {
  const { rows } = await db.query({
    name: 'replace-recovery-codes',
    text: `WITH renewed AS (
             UPDATE totp_secrets SET codes_id = $2
             WHERE user_id = $1 AND confirmed_at IS NOT NULL AND codes_id IS NOT DISTINCT FROM $4::uuid
             RETURNING user_id
           ), stale AS (
             DELETE FROM recovery_codes WHERE user_id IN (SELECT user_id FROM renewed) AND set_id <> $2
           ), codes AS (
             INSERT INTO recovery_codes (user_id, set_id, code_hash) SELECT user_id, $2, unnest($3::bytea[]) FROM renewed
           )
           SELECT 1 FROM renewed`,
    values: [r.userId, r.codesId, r.codeHashes, r.oldCodesId]
  })
  return rows.length > 0
}

/**
 * A sign-in challenge for the user, made only while the password verified is still the user's and
 * no ban holds; false when not (or the user is gone). Under a share lock of the user row: a ban or
 * a password change in progress (each deletes challenges) is waited for.
 */
export async function insertChallenge (db: Db, c: { tokenHash: Buffer, userId: string, passwordChanged: string | null, ttl: number }): Promise<boolean> {
  const { rowCount } = await db.query({
    name: 'insert-mfa-challenge',
    text: `INSERT INTO mfa_challenges (token_hash, user_id, expires_at)
           SELECT $1, id, now() + make_interval(secs => $3) FROM users
           WHERE id = $2 AND (banned_until IS NULL OR banned_until <= now()) AND password_changed_at IS NOT DISTINCT FROM $4::timestamptz
           FOR SHARE`,
    values: [c.tokenHash, c.userId, c.ttl, c.passwordChanged]
  })
  return rowCount === 1
}

/** A challenge takes this many codes at most; after that many refused, it is dead. */
export const CHALLENGE_TRIES = 5

export interface ChallengeState {
  user_id: string
  email: string
  /** the sealed secret when TOTP is (still) on */
  secret: Buffer | null
  key_id: string | null
  /** used, or dead after too many wrong codes */
  revoked: boolean
  expired: boolean
  retry_after: number | null
}

/** The challenge of an mfa_token, with its user's secret and throttle state for the IP; undefined when unknown. */
export async function findChallenge (db: Db, tokenHash: Buffer, ip: string): Promise<ChallengeState | undefined> {
  const { rows } = await db.query<ChallengeState>({
    name: 'find-mfa-challenge',
    text: `SELECT c.user_id, u.email, s.secret, s.key_id,
                  c.used_at IS NOT NULL OR c.failures >= $3 AS revoked, c.expires_at <= now() AS expired,
                  ${RETRY_AFTER} AS retry_after
           FROM mfa_challenges c
           JOIN users u ON u.id = c.user_id
           LEFT JOIN totp_secrets s ON s.user_id = c.user_id AND s.confirmed_at IS NOT NULL
           ${THROTTLE_JOINS('u.email', '$2')}
           WHERE c.token_hash = $1`,
    values: [tokenHash, ip, CHALLENGE_TRIES]
  })
  const state = rows[0]
  if (state?.retry_after !== undefined && state.retry_after !== null && state.retry_after <= 0) state.retry_after = null
  return state
}

/**
 * Counts a try against the challenge before its code is checked (a success does not give it
 * back: the challenge is used then anyway), so that concurrent requests cannot check more than
 * CHALLENGE_TRIES codes. False when the challenge has none left (or is used or expired).
 */
export async function takeTry (db: Db, tokenHash: Buffer): Promise<boolean> {
  const { rowCount } = await db.query({
    name: 'take-mfa-try',
    text: `UPDATE mfa_challenges SET failures = failures + 1
           WHERE token_hash = $1 AND used_at IS NULL AND failures < $2 AND expires_at > now()`,
    values: [tokenHash, CHALLENGE_TRIES]
  })
  return rowCount === 1
}

/**
 * The second step of a sign-in, in one statement: locks the challenge (concurrent verifies with
 * one mfa_token take turns), uses up the factor only if the challenge is still live, uses the
 * challenge, starts the session and ends the run of failures for (email, IP). `live` false: the
 * challenge was used (or expired) meanwhile; `user` undefined with `live`: the code was wrong or
 * used already.
 */
export async function completeChallenge (db: Db, c: {
  tokenHash: Buffer,
  userId: string,
  factor: Factor,
  session: { id: string, refreshHash: Buffer, ttl: number, userAgent: string | undefined, ip: string }
}): Promise<{ live: boolean, user?: { id: string, name: string } }> {
  const { rows } = await db.query<{ live: boolean, id: string | null, name: string | null }>({
    name: 'complete-mfa-challenge',
    text: `WITH live AS (
             SELECT user_id FROM mfa_challenges
             WHERE token_hash = $4 AND user_id = $1 AND used_at IS NULL AND expires_at > now()
             FOR UPDATE
           ), ${useFactorSql('AND EXISTS (SELECT 1 FROM live)')}, claimed AS (
             UPDATE mfa_challenges SET used_at = now()
             WHERE token_hash = $4 AND user_id IN (SELECT user_id FROM proven)
             RETURNING user_id
           ), session AS (
             INSERT INTO sessions (id, user_id, refresh_hash, expires_at, user_agent, ip)
             SELECT $5, user_id, $6, now() + make_interval(secs => $7), $8, $9 FROM claimed
           ), account AS (
             SELECT id, name, email FROM users WHERE id IN (SELECT user_id FROM claimed)
           ), cleared AS (
             DELETE FROM sign_in_throttle WHERE email IN (SELECT email FROM account) AND ip = $9
           )
           SELECT EXISTS (SELECT 1 FROM live) AS live, (SELECT id FROM account) AS id, (SELECT name FROM account) AS name`,
    values: [c.userId, ...factorValues(c.factor), c.tokenHash, c.session.id, c.session.refreshHash, c.session.ttl,
      c.session.userAgent ?? null, c.session.ip]
  })
  const { live, id, name } = rows[0]
  return id !== null && name !== null ? { live, user: { id, name } } : { live }
}

/** Up to `limit` secrets sealed under another key than `keyId` (or not sealed at all), by user id after `after`. */
export async function findOtherKeySecrets (db: Db, keyId: string, after: string, limit: number): Promise<Array<{ user_id: string, secret: Buffer, key_id: string | null }>> {
  const { rows } = await db.query<{ user_id: string, secret: Buffer, key_id: string | null }>({
    text: `SELECT user_id, secret, key_id FROM totp_secrets
           WHERE key_id IS DISTINCT FROM $1 AND user_id > $2 ORDER BY user_id LIMIT $3`,
    values: [keyId, after, limit]
  })
  return rows
}

/** Replaces a secret with the same one sealed under another key, unless it changed meanwhile. */
export async function resealSecret (db: Db, r: { userId: string, old: Buffer, secret: Buffer, keyId: string }): Promise<void> {
  await db.query({
    text: 'UPDATE totp_secrets SET secret = $3, key_id = $4 WHERE user_id = $1 AND secret = $2',
    values: [r.userId, r.old, r.secret, r.keyId]
  })
}
