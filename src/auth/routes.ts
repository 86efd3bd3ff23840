import { randomUUID, timingSafeEqual } from 'node:crypto'
import { Type } from '@sinclair/typebox'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { AppError, invalidCredentials, tokenError, validationFailed } from '../errors.js'
import { passwordPolicyError, type Passwords } from './passwords.js'
import { bearerToken, nextTokenId, newTokenId, tokenHash, type Claims, type Tokens, type TokenType } from './tokens.js'
import * as q from './queries.js'
import {
  ErrorBody, ErrorReply, MeReply, RefreshBody, RefreshReply, SignInBody, SignInReply, SignOutQuery, SignUpBody, SignUpReply
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
  const email = body.email.trim()
  if (email.length > 254 || !EMAIL.test(email)) throw validationFailed('email must be a valid email address')
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
    const user = await q.findUserByEmail(db, email)
    // An unknown email is verified against a dummy hash: same work, same time, same 401.
    const ok = await passwords.verify(user?.password_hash, request.body.password)
    if (user === undefined || !ok) {
      request.event = { outcome: 'invalid_credentials', userId: user?.id }
      throw invalidCredentials()
    }
    if (passwords.needsRehash(user.password_hash)) {
      await q.updatePasswordHash(db, user.id, user.password_hash, await passwords.hash(request.body.password))
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
      ? await q.rotateRefreshToken(db, { sid, sub, oldHash, newHash, ttl: config.JWT_REFRESH_TTL })
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
    const user = await q.findUserById(db, sub)
    if (user === undefined) throw tokenError('TOKEN_INVALID', 'User no longer exists')
    return { id: user.id, username: user.name, email: user.email, created_at: user.created_at.toISOString() }
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
}
