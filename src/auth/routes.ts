import { randomUUID, timingSafeEqual } from 'node:crypto'
import { Type } from '@sinclair/typebox'
import { LruMap } from 'toad-cache'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { AppError, invalidCredentials, tokenError, validationFailed } from '../errors.js'
import { rateLimit } from '../rate-limit.js'
import { passwordPolicyError, UNPAIRED, type Passwords } from './passwords.js'
import { bearerToken, nextTokenId, newTokenId, tokenHash, type Claims, type Tokens, type TokenType } from './tokens.js'
import * as q from './queries.js'
import { batched } from '../db/batch.js'
import {
  ErrorBody, ErrorReply, MeReply, PasswordBody, RefreshBody, RefreshReply, SessionParams, SessionsReply, SignInBody, SignInReply,
  SignOutQuery, SignUpBody, SignUpReply
} from './schemas.js'

const EMAIL = /^[^\s@\p{Cc}]{1,64}@(?:[\p{L}\p{N}](?:[\p{L}\p{N}-]{0,61}[\p{L}\p{N}])?\.)+[\p{L}](?:[\p{L}\p{N}-]{0,61}[\p{L}\p{N}])?$/u
const CONTROL = /\p{Cc}/u

// The error statuses a route answers (and 500, which any route may), each the shared ErrorBody.
const errors = (...codes: number[]) => Object.fromEntries([...codes, 500].map((c) => [c, ErrorReply(c)]))
const bearer = [{ bearerAuth: [] }]

// RFC 6749 §5.1: responses carrying tokens must not be cached.
const NO_STORE = { 'cache-control': 'no-store' }

function signUpFields (body: SignUpBody, minLength: number): { name: string, email: string } {
  const name = body.name.trim()
  const nameLength = [...name].length
  if (nameLength < 1 || nameLength > 100) throw validationFailed('name must be 1-100 characters')
  if (CONTROL.test(name)) throw validationFailed('name must not contain control characters')
  if (UNPAIRED.test(name)) throw validationFailed('name must be valid Unicode text')
  const email = body.email.trim()
  if (email.length > 254 || !EMAIL.test(email) || UNPAIRED.test(email)) throw validationFailed('email must be a valid email address')
  const policy = passwordPolicyError(body.password, minLength)
  if (policy !== null) throw validationFailed(policy)
  return { name, email: email.toLowerCase() }
}

function sameHash (a: Buffer | null, b: Buffer): boolean {
  return a !== null && a.length === b.length && timingSafeEqual(a, b)
}

export interface AuthRoutesOptions {
  passwords: Passwords
  tokens: Tokens
}

export default async function authRoutes (fastify: FastifyInstance, { passwords, tokens }: AuthRoutesOptions): Promise<void> {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>()
  app.addSchema(ErrorBody)
  const { config } = app
  const db = app.pg.pool
  // `me` answers from this cache: name, email and creation time never change through the API,
  // so a database round trip per call buys nothing (the measured ceiling: bench/README.md).
  // Entries expire after a minute, so a user removed in the database is gone within that time.
  const profiles = new LruMap<{ id: string, username: string, email: string, created_at: string }>(10_000, 60_000)

  // Concurrent rotations share one statement and one commit: each rotation is a durable write, and
  // a commit per request made refresh wait on the WAL flush (bench/README.md). One batch at a
  // time: the next gathers every rotation that arrives meanwhile. Two at a time were measured
  // slower once rotations became HOT updates (each statement and commit has a fixed cost).
  const rotate = batched(async (rotations: q.Rotation[]) => await q.rotateRefreshTokens(db, rotations, config.JWT_REFRESH_TTL), 1)

  // Refresh and sign-out take the token from the header, so their body is optional: the original
  // client sends `Content-Type: application/json` with no body at all.
  async function optionalBody (request: FastifyRequest): Promise<void> {
    request.body ??= {}
  }

  /** The verified claims of the request's bearer token (or `body.refresh_token` where allowed). */
  function authenticate (request: FastifyRequest, type: TokenType, bodyToken?: string): Claims {
    const token = bearerToken(request.headers.authorization) ?? bodyToken
    if (token === undefined || token === '') throw tokenError('TOKEN_MISSING', 'Send the token as Authorization: Bearer <token>')
    return tokens.verify(token, type)
  }

  app.post('/auth/sign-up', {
    config: rateLimit(fastify, config.RATE_LIMIT_SIGN_UP),
    schema: {
      tags: ['auth'],
      summary: 'Register a user',
      body: SignUpBody,
      response: { 201: SignUpReply, ...errors(400, 409, 413, 415, 429, 503) }
    }
  }, async (request, reply) => {
    const { name, email } = signUpFields(request.body, config.PASSWORD_MIN_LENGTH)
    const passwordHash = await passwords.hash(request.body.password)
    const user = await q.insertUser(db, { name, email, passwordHash })
    if (user === undefined) throw new AppError(409, 'EMAIL_TAKEN', 'An account with this email already exists')
    request.event = { outcome: 'success', userId: user.id }
    request.log.info({ userId: user.id }, 'user signed up')
    return await reply.code(201).send({
      msg: 'User registered successfully',
      user: { id: user.id, username: user.name, email: user.email }
    })
  })

  app.post('/auth/sign-in', {
    config: rateLimit(fastify, config.RATE_LIMIT_SIGN_IN),
    schema: {
      tags: ['auth'],
      summary: 'Sign in with email and password',
      body: SignInBody,
      response: {
        200: SignInReply,
        ...errors(400, 413, 415, 429, 503),
        401: ErrorReply(401, 'INVALID_CREDENTIALS: unknown email or wrong password (the same answer for both)')
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
      await q.recordSignInFailure(db, email, request.ip)
      request.event = { outcome: 'invalid_credentials', userId: state.id ?? undefined }
      throw invalidCredentials()
    }
    const user = { id: state.id, name: state.name }
    if (state.has_failures) await q.clearSignInFailures(db, email, request.ip)
    if (passwords.needsRehash(state.password_hash)) {
      await q.updatePasswordHash(db, user.id, state.password_hash, await passwords.hash(request.body.password))
    }
    const sid = randomUUID()
    const jti = newTokenId()
    await q.insertSession(db, {
      id: sid,
      userId: user.id,
      refreshHash: tokenHash(jti),
      ttl: config.JWT_REFRESH_TTL,
      userAgent: request.headers['user-agent']?.slice(0, 512),
      ip: request.ip
    })
    request.event = { outcome: 'success', userId: user.id, sessionId: sid }
    return await reply.headers(NO_STORE).send({
      access_token: tokens.access(user.id, sid),
      refresh_token: tokens.refresh(user.id, sid, jti),
      token_type: 'Bearer',
      expires_in: config.JWT_ACCESS_TTL,
      user: { id: user.id, username: user.name }
    })
  })

  app.post('/auth/refresh', {
    config: rateLimit(fastify, config.RATE_LIMIT_REFRESH),
    schema: {
      tags: ['auth'],
      summary: 'Get a new access token (and, with rotation, a new refresh token)',
      description: 'Send the refresh token as `Authorization: Bearer <refresh_token>` or as `{"refresh_token": ...}`.',
      security: bearer,
      body: RefreshBody,
      response: { 200: RefreshReply, ...errors(400, 401, 413, 415, 429, 503) }
    },
    preValidation: optionalBody
  }, async (request, reply) => {
    const { sub, sid, jti } = authenticate(request, 'refresh', request.body.refresh_token)
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
        await q.endSessions(db, { sid, sub, all: false, reason: 'refresh-reuse' })
        request.event = { outcome: 'reuse_detected', userId: sub, sessionId: sid }
        request.log.warn({ userId: sub, sessionId: sid }, 'refresh token reuse detected; session ended')
        throw tokenError('TOKEN_REVOKED', 'Refresh token was already used; the session has been ended')
      }
    }
    request.event = { outcome, userId: sub, sessionId: sid }
    return await reply.headers(NO_STORE).send({
      access_token: tokens.access(sub, sid),
      token_type: 'Bearer',
      expires_in: config.JWT_ACCESS_TTL,
      ...(rotation ? { refresh_token: tokens.refresh(sub, sid, next) } : {})
    })
  })

  app.get('/auth/me', {
    schema: {
      tags: ['auth'],
      summary: 'The signed-in user',
      description: 'Send the access token as `Authorization: Bearer <access_token>`.',
      security: bearer,
      response: { 200: MeReply, ...errors(401, 503) }
    }
  }, async (request) => {
    const { sub } = authenticate(request, 'access')
    let profile = profiles.get(sub)
    if (profile === undefined) {
      const user = await q.findUserById(db, sub)
      if (user === undefined) throw tokenError('TOKEN_INVALID', 'User no longer exists')
      profile = { id: user.id, username: user.name, email: user.email, created_at: user.created_at.toISOString() }
      profiles.set(sub, profile)
    }
    return profile
  })

  app.post('/auth/sign-out', {
    schema: {
      tags: ['auth'],
      summary: 'End this session (or every session with ?scope=all)',
      description: 'Send the refresh token as `Authorization: Bearer <refresh_token>` or as `{"refresh_token": ...}`. ' +
        'Refresh tokens of the ended sessions stop working at once; access tokens stay valid until they expire.',
      security: bearer,
      querystring: SignOutQuery,
      body: RefreshBody,
      response: { 204: Type.Null({ description: 'Signed out' }), ...errors(400, 401, 413, 415, 503) }
    },
    preValidation: optionalBody
  }, async (request, reply) => {
    const { sub, sid } = authenticate(request, 'refresh', request.body.refresh_token)
    const ended = await q.endSessions(db, { sid, sub, all: request.query.scope === 'all', reason: 'sign-out' })
    if (ended === 0) throw tokenError('TOKEN_REVOKED', 'Session has already ended')
    request.event = { outcome: 'success', userId: sub, sessionId: sid }
    return await reply.code(204).send(null)
  })

  app.get('/auth/sessions', {
    schema: {
      tags: ['auth'],
      summary: 'The live sessions of the signed-in user, newest first',
      description: 'Send the access token as `Authorization: Bearer <access_token>`. `current` marks the session of that token.',
      security: bearer,
      response: { 200: SessionsReply, ...errors(401, 503) }
    }
  }, async (request) => {
    const { sub, sid } = authenticate(request, 'access')
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
    schema: {
      tags: ['auth'],
      summary: 'End one of the signed-in user\'s sessions',
      description: 'Send the access token as `Authorization: Bearer <access_token>`. The refresh token of the ended ' +
        'session stops working at once; its access tokens stay valid until they expire. Ending the current session is allowed.',
      security: bearer,
      params: SessionParams,
      response: {
        204: Type.Null({ description: 'Session ended' }),
        ...errors(400, 401, 503),
        404: ErrorReply(404, 'NOT_FOUND: the user has no live session with this id (unknown, already ended, or another user\'s)')
      }
    }
  }, async (request, reply) => {
    const { sub } = authenticate(request, 'access')
    const { id } = request.params
    // Another user's session answers exactly like an unknown one: session ids cannot be probed.
    const ended = await q.revokeSession(db, { id, userId: sub, reason: 'session-revoke' })
    if (!ended) throw new AppError(404, 'NOT_FOUND', 'No live session with this id')
    request.event = { outcome: 'success', userId: sub, sessionId: id }
    return await reply.code(204).send(null)
  })

  app.post('/auth/password', {
    // Guessing the current password with a stolen access token costs what a sign-in does.
    config: rateLimit(fastify, config.RATE_LIMIT_SIGN_IN),
    schema: {
      tags: ['auth'],
      summary: 'Change the password; every other session ends',
      description: 'Send the access token as `Authorization: Bearer <access_token>`. The new password follows the ' +
        'sign-up rules. Every other session of the user ends: their refresh tokens stop working at once, their access ' +
        'tokens stay valid until they expire. The session making the change goes on.',
      security: bearer,
      body: PasswordBody,
      response: {
        204: Type.Null({ description: 'Password changed' }),
        ...errors(400, 413, 415, 429, 503),
        401: ErrorReply(401, 'INVALID_CREDENTIALS: the current password is wrong; or TOKEN_MISSING, TOKEN_INVALID, TOKEN_EXPIRED')
      }
    }
  }, async (request, reply) => {
    const { sub, sid } = authenticate(request, 'access')
    const { current_password: currentPassword, new_password: newPassword } = request.body
    const policy = passwordPolicyError(newPassword, config.PASSWORD_MIN_LENGTH)
    // The policy speaks of `password`; here the field is new_password.
    if (policy !== null) throw validationFailed(policy.replace(/^password/, 'new_password'))
    const stored = await q.findPasswordHash(db, sub)
    if (stored === undefined) throw tokenError('TOKEN_INVALID', 'User no longer exists')
    // A stolen access token alone must not be enough to take the account over.
    if (!await passwords.verify(stored, currentPassword)) {
      request.event = { outcome: 'invalid_credentials', userId: sub, sessionId: sid }
      throw new AppError(401, 'INVALID_CREDENTIALS', 'The current password is wrong')
    }
    const newHash = await passwords.hash(newPassword)
    if (!await q.changePassword(db, { userId: sub, oldHash: stored, newHash, keepSid: sid })) {
      // The stored hash changed since it was verified (a concurrent change): the check above is stale.
      request.event = { outcome: 'invalid_credentials', userId: sub, sessionId: sid }
      throw new AppError(401, 'INVALID_CREDENTIALS', 'The password has just been changed; try again')
    }
    request.event = { outcome: 'success', userId: sub, sessionId: sid }
    request.log.info({ userId: sub, sessionId: sid }, 'password changed; other sessions ended')
    return await reply.code(204).send(null)
  })
}
