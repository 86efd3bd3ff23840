import type { FastifyBaseLogger, FastifyInstance, FastifyRequest } from 'fastify'
import { AppError } from '../errors.js'
import { createSealer, type Sealer } from '../encryption.js'
import { recordFailure, retryAfter } from '../throttle.js'
import type { Db } from '../db/index.js'
import { matchStep, recoveryCodeHash, TOTP_CODE } from './totp.js'
import { findOtherKeySecrets, resealSecret, useFactor, type Factor, type Credentials } from './queries.js'

declare module 'fastify' {
  interface FastifyInstance {
    secondFactor: SecondFactor
  }
}

export interface SecondFactor {
  sealer: Sealer
  /** The secret of a sealed row (the user id is bound in). */
  secret: (userId: string, row: { secret: Buffer, key_id: string | null }) => Buffer
  /**
   * What `code` proves: a TOTP time step of the secret (when there is one), or, when it has a
   * recovery code's form, that code's hash (whether it is the user's is for the database to say).
   * null: neither.
   */
  read: (userId: string, row: { secret: Buffer | null, key_id: string | null }, code: string) => Factor | null
  /**
   * For a change to an account with TOTP on: `code` must be a TOTP or recovery code of the user
   * (used up here), else 403 MFA_REQUIRED without one, 401 INVALID_CREDENTIALS when wrong (counted
   * toward per-account throttling), 429 while throttled. Returns at once when TOTP is off.
   */
  require: (request: FastifyRequest, check: { userId: string, sessionId: string, state: Credentials, code: string | undefined }) => Promise<void>
  /** 429 RATE_LIMITED when (email, IP) must wait `wait` seconds (from throttle.ts); nothing when null. */
  throttled: (request: FastifyRequest, wait: number | null) => void
  /** A wrong code: counted toward per-account throttling, then 401 INVALID_CREDENTIALS. */
  wrongCode: (request: FastifyRequest, email: string, event: { userId: string, sessionId?: string }) => Promise<never>
}

export function createSecondFactor (app: FastifyInstance): SecondFactor {
  const sealer = createSealer(app.config)
  const db = app.pg.pool

  const secret = (userId: string, row: { secret: Buffer, key_id: string | null }): Buffer =>
    sealer.open({ data: row.secret, keyId: row.key_id }, userId)

  function read (userId: string, row: { secret: Buffer | null, key_id: string | null }, code: string): Factor | null {
    const trimmed = code.trim()
    if (row.secret !== null && TOTP_CODE.test(trimmed)) {
      let plain: Buffer | undefined
      try {
        plain = secret(userId, { secret: row.secret, key_id: row.key_id })
      } catch (err) {
        // Sealed under a key configured nowhere, or altered: no TOTP code can match. Recovery codes still work.
        app.log.error({ userId, err: { message: (err as Error).message } }, 'TOTP secret cannot be opened')
      }
      const step = plain === undefined ? null : matchStep(plain, trimmed)
      return step === null ? null : { step }
    }
    const codeHash = recoveryCodeHash(trimmed)
    return codeHash === null ? null : { codeHash }
  }

  function throttled (request: FastifyRequest, wait: number | null): void {
    if (wait === null) return
    request.event = { outcome: 'throttled' }
    throw new AppError(429, 'RATE_LIMITED', 'Too many wrong passwords or codes for this account; retry later', { 'retry-after': String(wait) })
  }

  async function wrongCode (request: FastifyRequest, email: string, event: { userId: string, sessionId?: string }): Promise<never> {
    await recordFailure(db, email, request.ip)
    request.event = { outcome: 'invalid_code', ...event }
    throw new AppError(401, 'INVALID_CREDENTIALS', 'The code is wrong or was used already')
  }

  return {
    sealer,
    secret,
    read,
    throttled,
    wrongCode,
    async require (request, { userId, sessionId, state, code }) {
      if (!state.confirmed) return
      if (code === undefined) {
        request.event = { outcome: 'mfa_required', userId, sessionId }
        throw new AppError(403, 'MFA_REQUIRED', 'This account has a second factor: send a code from the authenticator app, or a recovery code, as `code`')
      }
      throttled(request, await retryAfter(db, state.email, request.ip))
      const factor = read(userId, state, code)
      if (factor === null || !await useFactor(db, userId, factor)) await wrongCode(request, state.email, { userId, sessionId })
    }
  }
}

/**
 * Re-seals every secret not sealed under DATA_ENCRYPTION_KEY (sealed under a retired key, or
 * kept as is before a key was set), so that a retired key can be dropped. Safe on several
 * replicas at once: each row changes only if it is still what was read.
 */
export async function resealSecrets (db: Db, factor: SecondFactor, log: FastifyBaseLogger): Promise<void> {
  const keyId = factor.sealer.keyId
  if (keyId === null) return
  let after = '00000000-0000-0000-0000-000000000000'
  let resealed = 0
  let unreadable = 0
  for (;;) {
    const rows = await findOtherKeySecrets(db, keyId, after, 100)
    if (rows.length === 0) break
    for (const row of rows) {
      after = row.user_id
      let plain: Buffer
      try {
        plain = factor.secret(row.user_id, row)
      } catch {
        unreadable++
        continue
      }
      const sealed = factor.sealer.seal(plain, row.user_id)
      await resealSecret(db, { userId: row.user_id, old: row.secret, secret: sealed.data, keyId })
      resealed++
    }
  }
  if (resealed > 0) log.info({ resealed, keyId }, 'TOTP secrets re-sealed under DATA_ENCRYPTION_KEY')
  if (unreadable > 0) log.error({ unreadable }, 'TOTP secrets sealed under a key that is neither DATA_ENCRYPTION_KEY nor in DATA_ENCRYPTION_KEYS_OLD: those users cannot pass their second factor until the key is configured')
}
