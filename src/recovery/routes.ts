import { Type } from '@sinclair/typebox'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { AppError, tokenError, validationFailed } from '../errors.js'
import { rateLimit } from '../rate-limit.js'
import { passwordPolicyError, requirePassword } from '../passwords.js'
import { emailTokenHash } from '../tokens.js'
import { bearerAuth, ErrorReply, errorReplies, httpErrors, MFA_CODE_MISSING, noAuth, normalEmail } from '../schemas.js'
import { AcceptedReply, EmailBody, EmailChangeBody, ResetBody, TokenBody } from './schemas.js'
import { CONFIRM_HEADERS, CONFIRM_PAGE } from './page.js'
import * as q from './queries.js'
import { findCredentials } from '../mfa/queries.js'

// The same answer for every address, known or not.
const ACCEPTED = { msg: 'If the address belongs to an account, a message is on its way' }
const MAILED_TOKEN = /^[\w-]{43}$/
// A link that is unknown, malformed, used, of another purpose or void (its user's password or email
// changed since), or that was used between the check and the statement (a second click).
const invalidLink = () => new AppError(400, 'TOKEN_INVALID', 'The link is not valid, or has been used already')

const tokenErrors = {
  400: ErrorReply(400, 'TOKEN_INVALID: the token is unknown, malformed, used or of another purpose; TOKEN_EXPIRED; or VALIDATION_FAILED')
}

/**
 * Verification, password reset and email change: the endpoints that mail. Registered only when
 * mail can go out (src/mail.ts): in production without SMTP_URL they do not exist.
 */
export default async function recoveryRoutes (fastify: FastifyInstance): Promise<void> {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>()
  const { config, passwords, tokens, outbox, profiles } = app
  const db = app.pg.pool

  /** The stored token of a request, checked for purpose and expiry before it is used. */
  async function liveToken (token: string, purposes: q.Purpose[]): Promise<{ hash: Buffer, userId: string, purpose: q.Purpose }> {
    // Mailed tokens are 43 base64url characters: anything else is not one, and is not looked up.
    if (!MAILED_TOKEN.test(token)) throw invalidLink()
    const hash = emailTokenHash(token)
    const found = await q.findToken(db, hash)
    // Void too: a token of another purpose, or one whose user has since changed password or email.
    if (found === undefined || !purposes.includes(found.purpose) || !found.current) throw invalidLink()
    if (found.expired) throw new AppError(400, 'TOKEN_EXPIRED', 'The link has expired; ask for a new one')
    return { hash, userId: found.user_id, purpose: found.purpose }
  }

  /**
   * Resend and forgot: one statement whatever the address (src/recovery/queries.ts), and one
   * outcome, so that neither the answer nor the metrics tell known and unknown addresses apart;
   * the audit trail records a reset request for an account only (src/observe.ts).
   */
  async function mailRequest (request: FastifyRequest, address: string, template: 'verify-email' | 'reset-password'): Promise<void> {
    const { userId, queued } = await q.requestMail(db, { email: normalEmail(address), template, cooldown: config.EMAIL_COOLDOWN })
    if (queued) outbox.kick()
    request.event = { outcome: 'accepted', userId: userId ?? undefined }
  }

  app.get('/auth/confirm', {
    schema: {
      tags: ['email'],
      operationId: 'confirmPage',
      summary: 'The page mailed links open (HTML)',
      description: 'Reads `#type=…&token=…` from the fragment and offers the action: a button for verify-email and ' +
        'change-email, a new-password form for reset-password. Loading it uses nothing up; only its button posts the token.',
      security: noAuth,
      response: { 200: { description: 'An HTML page', content: { 'text/html': { schema: { type: 'string' } } } }, ...httpErrors }
    }
  }, async (_request, reply) => await reply.headers(CONFIRM_HEADERS).send(CONFIRM_PAGE))

  app.post('/auth/email/verify', {
    // No per-IP budget: a token is 256 random bits, not a thing to guess, and people behind one
    // address (an office, a school) confirm their links at once.
    config: { action: 'email_verify' },
    schema: {
      tags: ['email'],
      operationId: 'verifyEmail',
      summary: 'Use a verify-email or change-email link',
      description: 'With a `verify-email` token the address is verified; with a `change-email` token the account\'s email ' +
        'becomes the new address, and the old one gets a notice.',
      security: noAuth,
      body: TokenBody,
      response: {
        204: Type.Null({ description: 'Verified, or the email changed' }),
        ...errorReplies(413, 415, 503),
        ...tokenErrors,
        409: ErrorReply(409, 'EMAIL_TAKEN: another account took the new address meanwhile')
      }
    }
  }, async (request, reply) => {
    const { hash, userId, purpose } = await liveToken(request.body.token, ['verify-email', 'change-email'])
    if (purpose === 'verify-email') {
      if (await q.verifyEmail(db, hash) === undefined) throw invalidLink()
      request.event = { outcome: 'verified', userId }
    } else {
      let changed
      try {
        changed = await q.changeEmail(db, hash)
      } catch (err) {
        if ((err as { code?: string }).code === '23505') throw new AppError(409, 'EMAIL_TAKEN', 'Another account now has this email address')
        throw err
      }
      if (changed === undefined) throw invalidLink()
      request.event = { outcome: 'changed', userId }
      outbox.kick()
    }
    profiles.delete(userId)
    return await reply.code(204).send(null)
  })

  app.post('/auth/email/verify/resend', {
    config: { action: 'email_resend', ...rateLimit(fastify, config.RATE_LIMIT_EMAIL) },
    schema: {
      tags: ['email'],
      operationId: 'resendVerification',
      summary: 'Send the verification link again',
      description: `The same answer for every address. A link goes only to an existing account whose address is not verified, at most once per EMAIL_COOLDOWN (${config.EMAIL_COOLDOWN} s) per address.`,
      security: noAuth,
      body: EmailBody,
      response: { 202: AcceptedReply, ...errorReplies(400, 413, 415, 429, 503) }
    }
  }, async (request, reply) => {
    await mailRequest(request, request.body.email, 'verify-email')
    return await reply.code(202).send(ACCEPTED)
  })

  app.post('/auth/password/forgot', {
    config: { action: 'password_forgot', ...rateLimit(fastify, config.RATE_LIMIT_EMAIL) },
    schema: {
      tags: ['email'],
      operationId: 'forgotPassword',
      summary: 'Mail a password-reset link',
      description: 'The same status, body and time for every address. A link goes only to an existing account, at most ' +
        `once per EMAIL_COOLDOWN (${config.EMAIL_COOLDOWN} s) per address; it voids the earlier ones and expires after PASSWORD_RESET_TTL (${config.PASSWORD_RESET_TTL} s).`,
      security: noAuth,
      body: EmailBody,
      response: { 202: AcceptedReply, ...errorReplies(400, 413, 415, 429, 503) }
    }
  }, async (request, reply) => {
    await mailRequest(request, request.body.email, 'reset-password')
    return await reply.code(202).send(ACCEPTED)
  })

  app.post('/auth/password/reset', {
    // Each reset hashes a password: the sign-in budget, as for a password change.
    config: { action: 'password_reset', ...rateLimit(fastify, config.RATE_LIMIT_SIGN_IN) },
    schema: {
      tags: ['email'],
      operationId: 'resetPassword',
      summary: 'Set a new password with a reset-password link',
      description: 'The new password follows the sign-up rules. Every session of the user ends, the address counts as ' +
        'verified, and a notice is mailed. A second factor, if enrolled, stays on.',
      security: noAuth,
      body: ResetBody,
      response: { 204: Type.Null({ description: 'Password changed; every session ended' }), ...errorReplies(413, 415, 429, 503), ...tokenErrors }
    }
  }, async (request, reply) => {
    const policy = passwordPolicyError(request.body.new_password, config.PASSWORD_MIN_LENGTH)
    if (policy !== null) throw validationFailed(policy.replace(/^password/, 'new_password'))
    // Checked before hashing: a dead link costs no argon2 work.
    const { hash, userId } = await liveToken(request.body.token, ['reset-password'])
    const passwordHash = await passwords.hash(request.body.new_password)
    const ended = await q.resetPassword(db, hash, passwordHash)
    if (ended === undefined) throw invalidLink()
    app.endedSessions.add(ended)
    outbox.kick()
    profiles.delete(userId)
    request.event = { outcome: 'success', userId }
    request.log.info({ userId }, 'password reset; every session ended')
    return await reply.code(204).send(null)
  })

  app.post('/auth/email', {
    config: { action: 'email_change', ...rateLimit(fastify, config.RATE_LIMIT_EMAIL) },
    schema: {
      tags: ['email'],
      operationId: 'changeEmail',
      summary: 'Change the email address (confirmed from the new address)',
      description: 'Send the access token as `Authorization: Bearer <access_token>`. A change-email link goes to the new ' +
        'address; the email changes only when it is used. If another account has the new address, the answer is the same and no link is sent.',
      security: bearerAuth,
      body: EmailChangeBody,
      response: {
        202: AcceptedReply,
        ...errorReplies(400, 413, 415, 429, 503),
        401: ErrorReply(401, 'INVALID_CREDENTIALS: the password or the code is wrong; or TOKEN_MISSING, TOKEN_INVALID, TOKEN_EXPIRED'),
        403: ErrorReply(403, MFA_CODE_MISSING)
      }
    }
  }, async (request, reply) => {
    const { sub, sid } = await tokens.authenticate(request, 'access')
    const newEmail = normalEmail(request.body.new_email, 'new_email')
    const current = await findCredentials(db, sub)
    if (current === undefined) throw tokenError('TOKEN_INVALID', 'User no longer exists')
    await requirePassword(passwords, request, { stored: current.password_hash, password: request.body.password, userId: sub, sessionId: sid })
    if (newEmail === current.email) throw validationFailed('new_email is already the address of this account')
    await app.secondFactor.require(request, { userId: sub, sessionId: sid, state: current, code: request.body.code })
    if (await q.requestEmailChange(db, { userId: sub, newEmail, cooldown: config.EMAIL_COOLDOWN })) outbox.kick()
    request.event = { outcome: 'success', userId: sub, sessionId: sid }
    return await reply.code(202).send({ msg: 'If the address can be used, a confirmation link is on its way to it' })
  })
}
