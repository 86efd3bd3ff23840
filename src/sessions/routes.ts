import { randomBytes, randomUUID, timingSafeEqual } from 'node:crypto'
import { Type } from '@sinclair/typebox'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { AppError, invalidCredentials, tokenError, validationFailed } from '../errors.js'
import { rateLimit } from '../rate-limit.js'
import { UNPAIRED } from '../passwords.js'
import { nextTokenId, newTokenId, PASSWORD_ONLY, tokenHash, WITH_OTP } from '../tokens.js'
import { clearFailures, recordFailure } from '../throttle.js'
import { batched } from '../db/batch.js'
import { bearerAuth, CONTROL, ErrorReply, errorReplies, NO_STORE, noAuth } from '../schemas.js'
import { MfaRequiredReply, RefreshBody, RefreshReply, SessionParams, SessionsReply, SignInBody, SignInReply, SignOutQuery } from './schemas.js'
import { requestMail } from '../recovery/queries.js'
import { VerifyBody } from '../mfa/schemas.js'
import * as mfa from '../mfa/queries.js'

// How long the mfa_token of a 403 MFA_REQUIRED is good for (contract: 300 s).
const MFA_TOKEN_TTL = 300
const REVOKED = 'This mfa_token was used already, or has had too many wrong codes; sign in again'
import * as q from './queries.js'

/** The answer to the right password of a banned account. */
function disabled (request: FastifyRequest, userId: string): AppError {
  request.event = { outcome: 'account_disabled', userId }
  return new AppError(403, 'ACCOUNT_DISABLED', 'This account is disabled')
}

function sameHash (a: Buffer | null, b: Buffer): boolean {
  return a !== null && a.length === b.length && timingSafeEqual(a, b)
}

// Refresh and sign-out take the token from the header, so their body is optional: the original
// client sends `Content-Type: application/json` with no body at all.
async function optionalBody (request: FastifyRequest): Promise<void> {
  request.body ??= {}
}

/** Sessions: sign-in, refresh (rotation and reuse detection), sign-out, the session list. */
export default async function sessionRoutes (fastify: FastifyInstance): Promise<void> {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>()
  const { config, passwords, tokens } = app
  const db = app.pg.pool

  // Concurrent rotations share one statement and one commit: each rotation is a durable write, and
  // a commit per request made refresh wait on the WAL flush (bench/README.md). One batch at a
  // time: the next gathers every rotation that arrives meanwhile. Two at a time were measured
  // slower once rotations became HOT updates (each statement and commit has a fixed cost).
  const { secondFactor } = app

  /** Sign-in's answer: the new session's token pair and the user. */
  const signedIn = (user: { id: string, name: string }, sid: string, jti: string, amr: string[]) => ({
    access_token: tokens.access(user.id, sid, amr),
    refresh_token: tokens.refresh(user.id, sid, jti, amr),
    token_type: 'Bearer' as const,
    expires_in: config.JWT_ACCESS_TTL,
    user: { id: user.id, username: user.name }
  })

  const rotate = batched(async (rotations: q.Rotation[]) => await q.rotateRefreshTokens(db, rotations, config.JWT_REFRESH_TTL), 1)

  app.post('/auth/sign-in', {
    config: { action: 'sign_in', ...rateLimit(fastify, config.RATE_LIMIT_SIGN_IN) },
    schema: {
      tags: ['auth'],
      operationId: 'signIn',
      summary: 'Sign in with email and password',
      security: noAuth,
      body: SignInBody,
      response: {
        200: SignInReply,
        ...errorReplies(400, 413, 415, 429, 503),
        401: ErrorReply(401, 'INVALID_CREDENTIALS: unknown email or wrong password (the same answer for both)'),
        403: MfaRequiredReply
      }
    }
  }, async (request, reply) => {
    const email = request.body.email.trim().toLowerCase()
    // No stored email holds these; PostgreSQL would refuse a NUL outright.
    if (CONTROL.test(email) || UNPAIRED.test(email)) throw validationFailed('email must be a valid email address')
    const state = await q.findSignInState(db, email, request.ip)
    if (state.retry_after !== null) {
      // Too many failures for this email: even the right password waits (no hashing is done).
      request.event = { outcome: 'throttled', userId: state.id ?? undefined }
      throw new AppError(429, 'RATE_LIMITED', 'Too many failed sign-ins for this account; retry later',
        { 'retry-after': String(state.retry_after) })
    }
    // An unknown email is verified against a dummy hash: same work, same time, same 401.
    const ok = await passwords.verify(state.password_hash ?? undefined, request.body.password)
    if (state.id === null || state.name === null || state.password_hash === null || !ok) {
      await recordFailure(db, email, request.ip)
      request.event = { outcome: 'invalid_credentials', userId: state.id ?? undefined }
      throw invalidCredentials()
    }
    // Only the right password learns this.
    if (state.banned) throw disabled(request, state.id)
    const user = { id: state.id, name: state.name }
    if (!state.email_verified && config.EMAIL_VERIFICATION === 'required') {
      // Only the right password learns this; a fresh link goes out (at most one per EMAIL_COOLDOWN).
      const { queued } = await requestMail(db, { email, template: 'verify-email', cooldown: config.EMAIL_COOLDOWN })
      if (queued) app.outbox.kick()
      request.event = { outcome: 'email_not_verified', userId: user.id }
      throw new AppError(403, 'EMAIL_NOT_VERIFIED', 'Confirm your email address first, with the link mailed to it')
    }
    if (passwords.needsRehash(state.password_hash)) {
      await q.updatePasswordHash(db, user.id, state.password_hash, await passwords.hash(request.body.password))
    }
    const sid = randomUUID()
    const jti = newTokenId()
    // With TOTP on (or turned on since it was read: then no session is made), a code must follow.
    const noSession = state.mfa_enabled
      ? 'mfa'
      : await q.insertSession(db, {
        id: sid,
        userId: user.id,
        passwordChanged: state.password_changed,
        refreshHash: tokenHash(jti),
        ttl: config.JWT_REFRESH_TTL,
        userAgent: request.headers['user-agent']?.slice(0, 512),
        ip: request.ip
      })
    // Banned, or the password changed, since they were read.
    if (noSession === 'banned') throw disabled(request, user.id)
    if (noSession === 'changed') throw invalidCredentials()
    if (noSession === 'mfa') {
      // The run of failures for (email, IP) goes on until the code, so that wrong codes after
      // right passwords are throttled like wrong passwords.
      const mfaToken = randomBytes(32).toString('base64url')
      if (!await mfa.insertChallenge(db, { tokenHash: tokenHash(mfaToken), userId: user.id, passwordChanged: state.password_changed, ttl: MFA_TOKEN_TTL })) {
        throw invalidCredentials() // changed, banned or deleted meanwhile
      }
      request.event = { outcome: 'mfa_required', userId: user.id }
      throw new AppError(403, 'MFA_REQUIRED', 'A second factor is needed: POST /auth/mfa/verify with this mfa_token and a code', NO_STORE, { mfa_token: mfaToken })
    }
    if (state.has_failures) await clearFailures(db, email, request.ip)
    request.event = { outcome: 'success', userId: user.id, sessionId: sid }
    return await reply.headers(NO_STORE).send(signedIn(user, sid, jti, PASSWORD_ONLY))
  })

  app.post('/auth/mfa/verify', {
    config: { action: 'mfa_verify', ...rateLimit(fastify, config.RATE_LIMIT_SIGN_IN) },
    schema: {
      tags: ['mfa'],
      operationId: 'verifyMfa',
      summary: 'Finish a sign-in with a TOTP or recovery code',
      description: 'The second step of a sign-in answered `403 MFA_REQUIRED`: its `mfa_token` (valid 300 s, used once) and a ' +
        'code from the authenticator app or a recovery code. The answer is sign-in\'s; the access token carries `amr: ["pwd", "otp"]`.',
      security: noAuth,
      body: VerifyBody,
      response: {
        200: SignInReply,
        ...errorReplies(400, 413, 415, 503),
        401: ErrorReply(401, 'INVALID_CREDENTIALS: the code is wrong or was used already; TOKEN_INVALID: not an mfa_token; ' +
          'TOKEN_EXPIRED: older than 300 s; TOKEN_REVOKED: used already, or after 5 wrong codes'),
        429: ErrorReply(429, 'RATE_LIMITED: too many requests from this address, or too many wrong passwords and codes for this account')
      }
    }
  }, async (request, reply) => {
    const { mfa_token: mfaToken, code } = request.body
    const hash = tokenHash(mfaToken)
    const challenge = await mfa.findChallenge(db, hash, request.ip)
    // An access or refresh token (or anything else) is no mfa_token: none is stored under its hash.
    if (challenge === undefined) throw tokenError('TOKEN_INVALID', 'Not an mfa_token')
    const userId = challenge.user_id
    if (challenge.revoked) throw tokenError('TOKEN_REVOKED', REVOKED)
    if (challenge.expired) throw tokenError('TOKEN_EXPIRED', 'This mfa_token has expired; sign in again')
    secondFactor.throttled(request, challenge.retry_after)
    // Each code checked costs a try first: concurrent requests cannot check more than five.
    if (!await mfa.takeTry(db, hash)) throw tokenError('TOKEN_REVOKED', REVOKED)
    const factor = secondFactor.read(userId, challenge, code)
    if (factor === null) return await secondFactor.wrongCode(request, challenge.email, { userId })
    const sid = randomUUID()
    const jti = newTokenId()
    const { live, user } = await mfa.completeChallenge(db, {
      tokenHash: hash,
      userId,
      factor,
      session: { id: sid, refreshHash: tokenHash(jti), ttl: config.JWT_REFRESH_TTL, userAgent: request.headers['user-agent']?.slice(0, 512), ip: request.ip }
    })
    // Used by a concurrent verify meanwhile; else the code was used already (a replay).
    if (!live) throw tokenError('TOKEN_REVOKED', REVOKED)
    if (user === undefined) return await secondFactor.wrongCode(request, challenge.email, { userId })
    request.event = { outcome: 'codeHash' in factor ? 'recovery_code' : 'success', userId, sessionId: sid }
    return await reply.headers(NO_STORE).send(signedIn(user, sid, jti, WITH_OTP))
  })

  app.post('/auth/refresh', {
    config: { action: 'refresh', ...rateLimit(fastify, config.RATE_LIMIT_REFRESH), refreshTokenInBody: true },
    schema: {
      tags: ['auth'],
      operationId: 'refreshToken',
      summary: 'Get a new access token (and, with rotation, a new refresh token)',
      description: 'Send the refresh token as `Authorization: Bearer <refresh_token>` or as `{"refresh_token": ...}`.',
      security: bearerAuth,
      body: RefreshBody,
      response: { 200: RefreshReply, ...errorReplies(400, 401, 413, 415, 429, 503) }
    },
    preValidation: optionalBody
  }, async (request, reply) => {
    const { sub, sid, jti, amr = PASSWORD_ONLY } = await tokens.authenticate(request, 'refresh')
    const rotation = config.REFRESH_TOKEN_ROTATION
    const oldHash = tokenHash(jti)
    const next = rotation ? nextTokenId(jti) : jti
    const newHash = tokenHash(next)
    let outcome = rotation ? 'rotated' : 'refreshed'
    const matched = rotation
      ? await rotate({ sid, sub, oldHash, newHash })
      : await q.touchSession(db, { sid, sub, hash: oldHash })
    if (!matched) {
      // Slow path: find out why the token did not match.
      const state = await q.findSessionState(db, sid, sub, config.REFRESH_REUSE_GRACE)
      if (state === undefined || state.revoked) throw tokenError('TOKEN_REVOKED', 'Session has ended')
      if (state.expired) throw tokenError('TOKEN_EXPIRED', 'Session has expired')
      if (!rotation) throw tokenError('TOKEN_REVOKED', 'Refresh token is no longer valid')
      if (state.in_grace && sameHash(state.previous_hash, oldHash) && sameHash(state.refresh_hash, newHash)) {
        // The token was rotated moments ago (a retry after a lost answer, two tabs at once):
        // hand out the same successor instead of treating it as theft.
        outcome = 'grace'
      } else {
        // A retired refresh token came back: someone holds a copy. End the whole session,
        // so the newest token stops working too.
        app.endedSessions.add(await q.endSessions(db, { sid, sub, all: false, reason: 'refresh-reuse' }))
        request.event = { outcome: 'reuse_detected', userId: sub, sessionId: sid }
        request.log.warn({ userId: sub, sessionId: sid }, 'refresh token reuse detected; session ended')
        throw tokenError('TOKEN_REVOKED', 'Refresh token was already used; the session has been ended')
      }
    }
    request.event = { outcome, userId: sub, sessionId: sid }
    return await reply.headers(NO_STORE).send({
      access_token: tokens.access(sub, sid, amr),
      token_type: 'Bearer',
      expires_in: config.JWT_ACCESS_TTL,
      ...(rotation ? { refresh_token: tokens.refresh(sub, sid, next, amr) } : {})
    })
  })

  app.post('/auth/sign-out', {
    schema: {
      tags: ['auth'],
      operationId: 'signOut',
      summary: 'End this session (or every session with ?scope=all)',
      description: 'Send the refresh token as `Authorization: Bearer <refresh_token>` or as `{"refresh_token": ...}`. ' +
        'Refresh tokens of the ended sessions stop working at once, and their access tokens within a second, on every replica.',
      security: bearerAuth,
      querystring: SignOutQuery,
      body: RefreshBody,
      response: { 204: Type.Null({ description: 'Signed out' }), ...errorReplies(400, 401, 413, 415, 503) }
    },
    config: { action: 'sign_out', refreshTokenInBody: true },
    preValidation: optionalBody
  }, async (request, reply) => {
    const { sub, sid } = await tokens.authenticate(request, 'refresh')
    const ended = await q.endSessions(db, { sid, sub, all: request.query.scope === 'all', reason: 'sign-out' })
    if (ended.length === 0) throw tokenError('TOKEN_REVOKED', 'Session has already ended')
    app.endedSessions.add(ended)
    request.event = { outcome: 'success', userId: sub, sessionId: sid }
    return await reply.code(204).send(null)
  })

  app.get('/auth/sessions', {
    schema: {
      tags: ['auth'],
      operationId: 'listSessions',
      summary: 'The live sessions of the signed-in user, newest first',
      description: 'Send the access token as `Authorization: Bearer <access_token>`. `current` marks the session of that token.',
      security: bearerAuth,
      response: { 200: SessionsReply, ...errorReplies(401, 503) }
    }
  }, async (request) => {
    const { sub, sid } = await tokens.authenticate(request, 'access')
    const sessions = await q.listSessions(db, sub)
    return sessions.map((s) => ({
      id: s.id,
      created_at: s.created_at.toISOString(),
      last_used_at: s.last_used_at.toISOString(),
      expires_at: s.expires_at.toISOString(),
      user_agent: s.user_agent,
      ip: s.ip,
      current: s.id === sid
    }))
  })

  app.delete('/auth/sessions/:id', {
    config: { action: 'session_revoke' },
    schema: {
      tags: ['auth'],
      operationId: 'revokeSession',
      summary: 'End one of the signed-in user\'s sessions',
      description: 'Send the access token as `Authorization: Bearer <access_token>`. The refresh token of the ended ' +
        'session stops working at once, and its access tokens within a second, on every replica. Ending the current session is allowed.',
      security: bearerAuth,
      params: SessionParams,
      response: {
        204: Type.Null({ description: 'Session ended' }),
        ...errorReplies(400, 401, 503),
        404: ErrorReply(404, 'NOT_FOUND: the user has no live session with this id (unknown, already ended, or another user\'s)')
      }
    }
  }, async (request, reply) => {
    const { sub } = await tokens.authenticate(request, 'access')
    const { id } = request.params
    // Another user's session answers exactly like an unknown one: session ids cannot be probed.
    const ended = await q.revokeSession(db, { id, userId: sub, reason: 'session-revoke' })
    if (!ended) throw new AppError(404, 'NOT_FOUND', 'No live session with this id')
    app.endedSessions.add([id])
    request.event = { outcome: 'success', userId: sub, sessionId: id }
    return await reply.code(204).send(null)
  })
}
