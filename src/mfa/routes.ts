import { randomUUID } from 'node:crypto'
import type { FastifyInstance } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import { AppError, tokenError, unavailable } from '../errors.js'
import { rateLimit } from '../rate-limit.js'
import { requirePassword } from '../passwords.js'
import { retryAfter } from '../throttle.js'
import { bearerAuth, ErrorReply, errorReplies, NO_STORE } from '../schemas.js'
import { base32, newRecoveryCodes, newSecret, otpauthUrl, qrSvg, recoveryCodeHash } from './totp.js'
import { CodeBody, DisableBody, EnrolBody, EnrolReply, RecoveryCodesReply } from './schemas.js'
import * as q from './queries.js'

const WRONG_CODE = 'INVALID_CREDENTIALS: the code is wrong or was used already; or TOKEN_MISSING, TOKEN_INVALID, TOKEN_EXPIRED'
const NOT_ON = () => new AppError(404, 'NOT_FOUND', 'This account has no second factor')
const ALREADY_ON = () => new AppError(409, 'MFA_ALREADY_ENABLED', 'TOTP is on already')

/** Fresh recovery codes and the hashes the database keeps of them. */
function recoveryCodes (): { codes: string[], hashes: Buffer[] } {
  const codes = newRecoveryCodes()
  return { codes, hashes: codes.map((c) => recoveryCodeHash(c) as Buffer) }
}

/** The second factor of the signed-in user: TOTP enrolment, confirmation, removal, recovery codes. */
export default async function mfaRoutes (fastify: FastifyInstance): Promise<void> {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>()
  const { config, passwords, tokens, secondFactor, profiles } = app
  const db = app.pg.pool
  const issuer = config.MFA_ISSUER ?? config.JWT_ISSUER
  // Each takes a password or a code: guessing with a stolen access token costs what a sign-in does.
  const limit = rateLimit(fastify, config.RATE_LIMIT_SIGN_IN)

  /** The user's second-factor state (or 401 when the user is gone). */
  async function factorState (userId: string): Promise<q.Credentials> {
    const state = await q.findCredentials(db, userId)
    if (state === undefined) throw tokenError('TOKEN_INVALID', 'User no longer exists')
    return state
  }

  app.post('/auth/mfa/totp', {
    config: { action: 'mfa_enrol', ...limit },
    schema: {
      tags: ['mfa'],
      operationId: 'enrolTotp',
      summary: 'Start TOTP enrolment: a new secret and its QR code',
      description: 'Send the access token as `Authorization: Bearer <access_token>`. Scan `qr_svg` (or type `secret`) into an ' +
        'authenticator app, then confirm with its first code. A new call replaces a secret not yet confirmed.',
      security: bearerAuth,
      body: EnrolBody,
      response: {
        200: EnrolReply,
        ...errorReplies(400, 413, 415, 429, 503),
        401: ErrorReply(401, 'INVALID_CREDENTIALS: the password is wrong; or TOKEN_MISSING, TOKEN_INVALID, TOKEN_EXPIRED'),
        409: ErrorReply(409, 'MFA_ALREADY_ENABLED: TOTP is on already (turn it off first to enrol a new authenticator)')
      }
    }
  }, async (request, reply) => {
    const { sub, sid } = await tokens.authenticate(request, 'access')
    const state = await factorState(sub)
    if (state.confirmed) throw ALREADY_ON()
    await requirePassword(passwords, request, { stored: state.password_hash, password: request.body.password, userId: sub, sessionId: sid })
    const secret = newSecret()
    const sealed = secondFactor.sealer.seal(secret, sub)
    if (!await q.saveSecret(db, { userId: sub, secret: sealed.data, keyId: sealed.keyId })) {
      throw ALREADY_ON()
    }
    const url = otpauthUrl(issuer, state.email, secret)
    request.event = { outcome: 'success', userId: sub, sessionId: sid }
    return await reply.headers(NO_STORE).send({ secret: base32(secret), otpauth_url: url, qr_svg: await qrSvg(url) })
  })

  app.post('/auth/mfa/totp/confirm', {
    config: { action: 'mfa_enable', ...limit },
    schema: {
      tags: ['mfa'],
      operationId: 'confirmTotp',
      summary: 'Turn TOTP on with a first code; returns the recovery codes',
      description: 'Send the access token as `Authorization: Bearer <access_token>`. Every other session of the user ends. ' +
        'The ten recovery codes are shown only here: keep them somewhere safe; each signs in once in place of a TOTP code.',
      security: bearerAuth,
      body: CodeBody,
      response: {
        200: RecoveryCodesReply,
        ...errorReplies(400, 413, 415, 429, 503),
        401: ErrorReply(401, WRONG_CODE),
        404: ErrorReply(404, 'NOT_FOUND: no enrolment was started (POST /auth/mfa/totp first)'),
        409: ErrorReply(409, 'MFA_ALREADY_ENABLED: TOTP is on already')
      }
    }
  }, async (request, reply) => {
    const { sub, sid } = await tokens.authenticate(request, 'access')
    const state = await factorState(sub)
    if (state.confirmed) throw ALREADY_ON()
    if (state.secret === null) throw new AppError(404, 'NOT_FOUND', 'No enrolment was started: POST /auth/mfa/totp first')
    secondFactor.throttled(request, await retryAfter(db, state.email, request.ip))
    // Only a TOTP code proves the authenticator has the secret (there are no recovery codes yet).
    const factor = secondFactor.read(sub, { secret: state.secret, key_id: state.key_id }, request.body.code)
    const { codes, hashes } = recoveryCodes()
    const secret = state.secret
    const ended = factor === null || !('step' in factor)
      ? undefined
      : await app.pg.transact(async (client) =>
        await q.enableTotp(client, { userId: sub, secret, step: factor.step, codesId: randomUUID(), codeHashes: hashes, keepSid: sid }))
    if (ended === undefined) return await secondFactor.wrongCode(request, state.email, { userId: sub, sessionId: sid })
    app.endedSessions.add(ended)
    profiles.delete(sub)
    request.event = { outcome: 'success', userId: sub, sessionId: sid }
    request.log.info({ userId: sub, sessionId: sid }, 'TOTP turned on; other sessions ended')
    return await reply.headers(NO_STORE).send({ recovery_codes: codes })
  })

  app.delete('/auth/mfa/totp', {
    config: { action: 'mfa_disable', ...limit },
    schema: {
      tags: ['mfa'],
      operationId: 'disableTotp',
      summary: 'Turn TOTP off, with the password and a code',
      description: 'Send the access token as `Authorization: Bearer <access_token>`. The code may be a TOTP or a recovery ' +
        'code. The secret and the recovery codes are deleted; sign-in asks for the password only.',
      security: bearerAuth,
      body: DisableBody,
      response: {
        204: Type.Null({ description: 'TOTP is off' }),
        ...errorReplies(400, 413, 415, 429, 503),
        401: ErrorReply(401, 'INVALID_CREDENTIALS: the password or the code is wrong; or TOKEN_MISSING, TOKEN_INVALID, TOKEN_EXPIRED'),
        404: ErrorReply(404, 'NOT_FOUND: TOTP is not on')
      }
    }
  }, async (request, reply) => {
    const { sub, sid } = await tokens.authenticate(request, 'access')
    const state = await factorState(sub)
    if (!state.confirmed) throw NOT_ON()
    await requirePassword(passwords, request, { stored: state.password_hash, password: request.body.password, userId: sub, sessionId: sid })
    await secondFactor.require(request, { userId: sub, sessionId: sid, state, code: request.body.code })
    if (!await q.disableTotp(db, sub)) throw NOT_ON()
    profiles.delete(sub)
    request.event = { outcome: 'success', userId: sub, sessionId: sid }
    request.log.info({ userId: sub, sessionId: sid }, 'TOTP turned off')
    return await reply.code(204).send(null)
  })

  app.post('/auth/mfa/recovery-codes', {
    config: { action: 'recovery_codes', ...limit },
    schema: {
      tags: ['mfa'],
      operationId: 'regenerateRecoveryCodes',
      summary: 'A new set of recovery codes, with a code; the old set stops working',
      description: 'Send the access token as `Authorization: Bearer <access_token>`. The code may be a TOTP or a recovery code.',
      security: bearerAuth,
      body: CodeBody,
      response: {
        200: RecoveryCodesReply,
        ...errorReplies(400, 413, 415, 429, 503),
        401: ErrorReply(401, WRONG_CODE),
        404: ErrorReply(404, 'NOT_FOUND: TOTP is not on'),
        503: ErrorReply(503, 'SERVICE_UNAVAILABLE: the database does not answer; or another regeneration replaced the set at the same moment (its codes are the ones that work)')
      }
    }
  }, async (request, reply) => {
    const { sub, sid } = await tokens.authenticate(request, 'access')
    const state = await factorState(sub)
    if (!state.confirmed) throw NOT_ON()
    await secondFactor.require(request, { userId: sub, sessionId: sid, state, code: request.body.code })
    const { codes, hashes } = recoveryCodes()
    if (!await q.replaceRecoveryCodes(db, { userId: sub, oldCodesId: state.codes_id, codesId: randomUUID(), codeHashes: hashes })) {
      // Turned off meanwhile, or another regeneration replaced the set first: its codes are the ones that work.
      if ((await factorState(sub)).confirmed) throw unavailable('The recovery codes were replaced by another request at the same moment; ask again with a new code', 1)
      throw NOT_ON()
    }
    request.event = { outcome: 'success', userId: sub, sessionId: sid }
    return await reply.headers(NO_STORE).send({ recovery_codes: codes })
  })
}
