import { Type } from '@sinclair/typebox'
import { LruMap } from 'toad-cache'
import type { FastifyInstance } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { AppError, tokenError, validationFailed } from '../errors.js'
import { rateLimit } from '../rate-limit.js'
import { passwordPolicyError, requirePassword, UNPAIRED } from '../passwords.js'
import { bearerAuth, CONTROL, ErrorReply, errorReplies, MFA_CODE_MISSING, noAuth, normalEmail } from '../schemas.js'
import { mailEnabled } from '../mail.js'
import { DeleteAccountBody, MeReply, PasswordBody, SignUpBody, SignUpReply } from './schemas.js'
import * as q from './queries.js'
import { findCredentials } from '../mfa/queries.js'

/** A user's name as stored: trimmed; 400 VALIDATION_FAILED when it cannot be one. */
export function userName (value: string): string {
  const name = value.trim()
  const nameLength = [...name].length
  if (nameLength < 1 || nameLength > 100) throw validationFailed('name must be 1-100 characters')
  if (CONTROL.test(name)) throw validationFailed('name must not contain control characters')
  if (UNPAIRED.test(name)) throw validationFailed('name must be valid Unicode text')
  return name
}

function signUpFields (body: SignUpBody, minLength: number): { name: string, email: string } {
  const name = userName(body.name)
  const email = normalEmail(body.email)
  const policy = passwordPolicyError(body.password, minLength)
  if (policy !== null) throw validationFailed(policy)
  return { name, email }
}

/** What `me` answers. */
export interface Profile { id: string, username: string, email: string, email_verified: boolean, mfa_enabled: boolean, created_at: string }

declare module 'fastify' {
  interface FastifyInstance {
    /**
     * `me` answers from this cache, by user id: a database round trip per call would halve its
     * rate (bench/README.md). Whatever changes a profile (verification, an email change, deletion)
     * deletes its entry here; on other replicas entries expire after a minute.
     */
    profiles: LruMap<Profile>
  }
}

export const createProfileCache = (): LruMap<Profile> => new LruMap<Profile>(10_000, 60_000)

/** The account: sign-up, the signed-in user (`me`), password change, deletion. */
export default async function accountRoutes (fastify: FastifyInstance): Promise<void> {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>()
  const { config, passwords, tokens, outbox, profiles, secondFactor } = app
  const db = app.pg.pool
  // Unless verification is off, sign-up mails a link (when mail can go out at all).
  const verifyAtSignUp = config.EMAIL_VERIFICATION !== 'off' && mailEnabled(config)

  app.post('/auth/sign-up', {
    config: { action: 'sign_up', ...rateLimit(fastify, config.RATE_LIMIT_SIGN_UP) },
    schema: {
      tags: ['auth'],
      operationId: 'signUp',
      summary: 'Register a user',
      security: noAuth,
      body: SignUpBody,
      response: { 201: SignUpReply, ...errorReplies(400, 409, 413, 415, 429, 503) }
    }
  }, async (request, reply) => {
    const { name, email } = signUpFields(request.body, config.PASSWORD_MIN_LENGTH)
    const passwordHash = await passwords.hash(request.body.password)
    const user = await q.insertUser(db, { name, email, passwordHash, verify: verifyAtSignUp })
    if (user === undefined) throw new AppError(409, 'EMAIL_TAKEN', 'An account with this email already exists')
    if (verifyAtSignUp) outbox.kick()
    request.event = { outcome: 'success', userId: user.id }
    request.log.info({ userId: user.id }, 'user signed up')
    return await reply.code(201).send({
      msg: 'User registered successfully',
      user: { id: user.id, username: user.name, email: user.email, email_verified: false }
    })
  })

  app.get('/auth/me', {
    schema: {
      tags: ['auth'],
      operationId: 'getCurrentUser',
      summary: 'The signed-in user',
      description: 'Send the access token as `Authorization: Bearer <access_token>`.',
      security: bearerAuth,
      response: { 200: MeReply, ...errorReplies(401, 503) }
    }
  }, async (request) => {
    const { sub } = await tokens.authenticate(request, 'access')
    let profile = profiles.get(sub)
    if (profile === undefined) {
      const user = await q.findUserById(db, sub)
      if (user === undefined) throw tokenError('TOKEN_INVALID', 'User no longer exists')
      profile = {
        id: user.id,
        username: user.name,
        email: user.email,
        email_verified: user.email_verified_at !== null,
        mfa_enabled: user.mfa_enabled,
        created_at: user.created_at.toISOString()
      }
      profiles.set(sub, profile)
    }
    return profile
  })

  app.post('/auth/password', {
    // Guessing the current password with a stolen access token costs what a sign-in does.
    config: { action: 'password', ...rateLimit(fastify, config.RATE_LIMIT_SIGN_IN) },
    schema: {
      tags: ['auth'],
      operationId: 'changePassword',
      summary: 'Change the password; every other session ends',
      description: 'Send the access token as `Authorization: Bearer <access_token>`. The new password follows the ' +
        'sign-up rules. Every other session of the user ends: their refresh tokens stop working at once, their access ' +
        'tokens stay valid until they expire. The session making the change goes on.',
      security: bearerAuth,
      body: PasswordBody,
      response: {
        204: Type.Null({ description: 'Password changed' }),
        ...errorReplies(400, 413, 415, 429, 503),
        401: ErrorReply(401, 'INVALID_CREDENTIALS: the current password or the code is wrong; or TOKEN_MISSING, TOKEN_INVALID, TOKEN_EXPIRED'),
        403: ErrorReply(403, MFA_CODE_MISSING)
      }
    }
  }, async (request, reply) => {
    const { sub, sid } = await tokens.authenticate(request, 'access')
    const { current_password: currentPassword, new_password: newPassword } = request.body
    const policy = passwordPolicyError(newPassword, config.PASSWORD_MIN_LENGTH)
    // The policy speaks of `password`; here the field is new_password.
    if (policy !== null) throw validationFailed(policy.replace(/^password/, 'new_password'))
    const account = await findCredentials(db, sub)
    if (account === undefined) throw tokenError('TOKEN_INVALID', 'User no longer exists')
    const stored = account.password_hash
    await requirePassword(passwords, request, { stored, password: currentPassword, userId: sub, sessionId: sid, message: 'The current password is wrong' })
    await secondFactor.require(request, { userId: sub, sessionId: sid, state: account, code: request.body.code })
    const newHash = await passwords.hash(newPassword)
    const ended = await q.changePassword(db, { userId: sub, oldHash: stored, newHash, keepSid: sid })
    if (ended === undefined) {
      // The stored hash changed since it was verified (a concurrent change): the check above is stale.
      request.event = { outcome: 'invalid_credentials', userId: sub, sessionId: sid }
      throw new AppError(401, 'INVALID_CREDENTIALS', 'The password has just been changed; try again')
    }
    app.endedSessions.add(ended)
    request.event = { outcome: 'success', userId: sub, sessionId: sid }
    request.log.info({ userId: sub, sessionId: sid }, 'password changed; other sessions ended')
    return await reply.code(204).send(null)
  })

  app.delete('/auth/me', {
    // Guessing the password with a stolen access token costs what a sign-in does.
    config: { action: 'account_delete', ...rateLimit(fastify, config.RATE_LIMIT_SIGN_IN) },
    schema: {
      tags: ['auth'],
      operationId: 'deleteAccount',
      summary: 'Delete the account, with its password',
      description: 'Send the access token as `Authorization: Bearer <access_token>`. The account and every session are ' +
        'gone at once (refresh tokens answer 401 TOKEN_REVOKED), and the email is free for a new sign-up. The audit ' +
        'trail keeps the user id, never the email.',
      security: bearerAuth,
      body: DeleteAccountBody,
      response: {
        204: Type.Null({ description: 'Account deleted' }),
        ...errorReplies(400, 413, 415, 429, 503),
        401: ErrorReply(401, 'INVALID_CREDENTIALS: the password or the code is wrong; or TOKEN_MISSING, TOKEN_INVALID, TOKEN_EXPIRED'),
        403: ErrorReply(403, MFA_CODE_MISSING)
      }
    }
  }, async (request, reply) => {
    const { sub, sid } = await tokens.authenticate(request, 'access')
    const account = await findCredentials(db, sub)
    if (account === undefined) throw tokenError('TOKEN_INVALID', 'User no longer exists')
    const stored = account.password_hash
    await requirePassword(passwords, request, { stored, password: request.body.password, userId: sub, sessionId: sid })
    await secondFactor.require(request, { userId: sub, sessionId: sid, state: account, code: request.body.code })
    const ended = await q.deleteUser(db, sub, stored)
    if (ended === undefined) {
      // The password changed since it was verified: the check above is stale.
      request.event = { outcome: 'invalid_credentials', userId: sub, sessionId: sid }
      throw new AppError(401, 'INVALID_CREDENTIALS', 'The password has just been changed; try again')
    }
    app.endedSessions.add(ended)
    profiles.delete(sub)
    request.event = { outcome: 'success', userId: sub, sessionId: sid }
    request.log.info({ userId: sub }, 'account deleted')
    return await reply.code(204).send(null)
  })
}
