import { hash, randomBytes, timingSafeEqual } from 'node:crypto'
import { Type } from '@sinclair/typebox'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { AppError, tokenError, validationFailed } from '../errors.js'
import { passwordPolicyError } from '../passwords.js'
import { bearerToken, tokenHash, type Claims } from '../tokens.js'
import { errorReplies, normalEmail, NO_STORE } from '../schemas.js'
import { mailEnabled } from '../mail.js'
import { commaList } from '../config.js'
import { userName } from '../account/routes.js'
import { deleteUser } from '../account/queries.js'
import {
  AdminUser, AuditQuery, AuditReply, CreateUserBody, IntrospectBody, IntrospectReply, ListUsersQuery, UpdateUserBody, UserParams, UsersReply
} from './schemas.js'
import * as q from './queries.js'

/** `security` of an operation that takes an admin key. */
const adminAuth = [{ adminKey: [] }]

const notFound = () => new AppError(404, 'NOT_FOUND', 'No user with this id')
const emailTaken = () => new AppError(409, 'EMAIL_TAKEN', 'An account with this email already exists')
const isUniqueViolation = (err: unknown): boolean => (err as { code?: string }).code === '23505'

/** An ISO 8601 string, as the API shows times. */
const iso = (d: Date | null): string | null => d === null ? null : d.toISOString()
const view = (u: q.AdminUser) => ({ ...u, banned_until: iso(u.banned_until), created_at: u.created_at.toISOString(), last_sign_in_at: iso(u.last_sign_in_at) })

/** A page size from the query string (a string there: the service coerces no types). */
function pageSize (value: string | undefined): number {
  if (value === undefined) return 50
  const n = Number(value)
  if (!/^\d{1,3}$/.test(value) || n < 1 || n > 100) throw validationFailed('limit must be an integer from 1 to 100')
  return n
}

const encodeCursor = (parts: string[]): string => Buffer.from(JSON.stringify(parts)).toString('base64url')
function decodeCursor (cursor: string, shape: RegExp[]): string[] {
  let parts: unknown
  try {
    parts = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'))
  } catch {
    parts = null
  }
  if (!Array.isArray(parts) || parts.length !== shape.length || !parts.every((p, i) => typeof p === 'string' && shape[i].test(p))) {
    throw validationFailed('cursor is not a next_cursor of this list')
  }
  return parts as string[]
}
const TIMESTAMP = /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d{1,6})?[+-]\d\d(:\d\d)?$/
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/
const EVENT_ID = /^\d{1,18}$/

/**
 * The admin API (ADMIN_API_KEYS): users, bans, sessions, the second factor and the audit trail;
 * and token introspection (RFC 7662) for resource servers. Registered only when keys are set.
 */
export default async function adminRoutes (fastify: FastifyInstance): Promise<void> {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>()
  const { config, passwords, tokens, profiles, outbox, endedSessions } = app
  const db = app.pg.pool

  // Keys are compared as SHA-256 digests (equal lengths, constant time), with every key tried.
  const digests = commaList(config.ADMIN_API_KEYS).map((k) => hash('sha256', k, 'buffer'))
  function requireKey (request: FastifyRequest): void {
    const presented = bearerToken(request.headers.authorization)
    if (presented === undefined) throw tokenError('TOKEN_MISSING', 'Send an admin key as Authorization: Bearer <key>')
    const digest = hash('sha256', presented, 'buffer')
    let match = false
    for (const d of digests) match = timingSafeEqual(d, digest) || match
    if (!match) throw tokenError('TOKEN_INVALID', 'Not an admin key')
  }
  app.addHook('onRequest', (request, _reply, done) => {
    try {
      requireKey(request)
      done()
    } catch (err) {
      done(err as Error)
    }
  })

  // RFC 7662 asks for form-encoded bodies (this plugin's routes only; elsewhere JSON only).
  app.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string' }, (_request, body, done) => {
    const fields = new Map<string, string>()
    for (const [key, value] of new URLSearchParams(body as string)) {
      if (fields.has(key)) { done(validationFailed(`${key} is given twice`), undefined); return }
      fields.set(key, value)
    }
    done(null, Object.fromEntries(fields))
  })

  const userId = (request: FastifyRequest, outcome = 'success'): void => {
    request.event = { outcome, userId: (request.params as { id: string }).id }
  }
  // Ids as the service keeps them (the profile cache, the audit trail): lower-case.
  app.addHook('preHandler', (request, _reply, done) => {
    const params = request.params as { id?: string }
    if (typeof params.id === 'string') params.id = params.id.toLowerCase()
    done()
  })

  app.get('/admin/users', {
    schema: {
      tags: ['admin'],
      operationId: 'adminListUsers',
      summary: 'List users, newest first',
      description: 'Pages follow `next_cursor`; users signing up meanwhile never shift a page (keyset paging on created_at, id).',
      security: adminAuth,
      querystring: ListUsersQuery,
      response: { 200: UsersReply, ...errorReplies(400, 401, 503) }
    }
  }, async (request) => {
    const limit = pageSize(request.query.limit)
    const after = request.query.cursor === undefined ? null : decodeCursor(request.query.cursor, [TIMESTAMP, UUID])
    const rows = await q.listUsers(db, {
      limit,
      after: after === null ? null : { createdAt: after[0], id: after[1] },
      emailPrefix: request.query.email?.trim().toLowerCase() ?? null
    })
    const page = rows.slice(0, limit)
    const last = page[page.length - 1]
    return {
      users: page.map(({ cursor_at: _, ...u }) => view(u)),
      next_cursor: rows.length > limit ? encodeCursor([last.cursor_at, last.id]) : null
    }
  })

  app.get('/admin/users/:id', {
    schema: {
      tags: ['admin'],
      operationId: 'adminGetUser',
      summary: 'One user',
      security: adminAuth,
      params: UserParams,
      response: { 200: AdminUser, ...errorReplies(400, 401, 404, 503) }
    }
  }, async (request) => {
    const user = await q.findUser(db, request.params.id)
    if (user === undefined) throw notFound()
    return view(user)
  })

  app.post('/admin/users', {
    config: { action: 'admin_user_create' },
    schema: {
      tags: ['admin'],
      operationId: 'adminCreateUser',
      summary: 'Create a user',
      description: 'Without `password`, a reset-password link is mailed to the address: the user sets a password with it ' +
        '(and so confirms the address). With one, a verification link goes out as at sign-up, unless `email_verified` is true.',
      security: adminAuth,
      body: CreateUserBody,
      response: { 201: AdminUser, ...errorReplies(400, 401, 409, 413, 415, 503) }
    }
  }, async (request, reply) => {
    const { password, email_verified: verified = false } = request.body
    const name = userName(request.body.name)
    const email = normalEmail(request.body.email)
    const canMail = mailEnabled(config)
    if (password === undefined && !canMail) throw validationFailed('password is required: no mail can be sent (SMTP_URL is not set)')
    const policy = password === undefined ? null : passwordPolicyError(password, config.PASSWORD_MIN_LENGTH)
    if (policy !== null) throw validationFailed(policy)
    // Without a password, one nobody knows until the mailed link replaces it.
    const passwordHash = await passwords.hash(password ?? randomBytes(32).toString('base64url'))
    const mail = password === undefined ? 'reset-password' : canMail && !verified && config.EMAIL_VERIFICATION !== 'off' ? 'verify-email' : null
    const user = await q.createUser(db, { name, email, passwordHash, verified, mail })
    if (user === undefined) throw emailTaken()
    if (mail !== null) outbox.kick()
    request.event = { outcome: 'success', userId: user.id }
    return await reply.code(201).send(view(user))
  })

  app.patch('/admin/users/:id', {
    config: { action: 'admin_user_update' },
    schema: {
      tags: ['admin'],
      operationId: 'adminUpdateUser',
      summary: 'Change a user: name, email, verification, password, ban',
      description: 'A new password, or `banned_until` in the future, ends every session of the user at once (their access ' +
        'tokens are refused within a second). While banned, the right password gets 403 ACCOUNT_DISABLED.',
      security: adminAuth,
      params: UserParams,
      body: UpdateUserBody,
      response: { 200: AdminUser, ...errorReplies(400, 401, 404, 409, 413, 415, 503) }
    }
  }, async (request) => {
    const { id } = request.params
    const body = request.body
    // Unknown fields are dropped (as everywhere): a misspelt one must not pass for a change.
    if (Object.keys(body).length === 0) throw validationFailed('Give at least one of name, email, email_verified, password, banned_until')
    const changes: q.UserChanges = {}
    if (body.name !== undefined) changes.name = userName(body.name)
    if (body.email !== undefined) changes.email = normalEmail(body.email)
    if (body.email_verified !== undefined) changes.emailVerified = body.email_verified
    if (body.banned_until !== undefined) {
      changes.bannedUntil = body.banned_until === null ? null : new Date(body.banned_until)
      // A date-time the schema lets through but no Date holds (a leap second: 23:59:60).
      if (changes.bannedUntil !== null && Number.isNaN(changes.bannedUntil.getTime())) throw validationFailed('banned_until is not a time this service can keep')
    }
    if (body.password !== undefined) {
      const policy = passwordPolicyError(body.password, config.PASSWORD_MIN_LENGTH)
      if (policy !== null) throw validationFailed(policy)
      changes.passwordHash = await passwords.hash(body.password)
    }
    let result
    try {
      result = await app.pg.transact(async (client) => await q.updateUser(client, id, changes))
    } catch (err) {
      if (isUniqueViolation(err)) throw emailTaken()
      throw err
    }
    if (result === undefined) throw notFound()
    endedSessions.add(result.ended)
    profiles.delete(id)
    const banned = changes.bannedUntil != null && changes.bannedUntil.getTime() > Date.now()
    userId(request, banned ? 'banned' : 'bannedUntil' in changes ? 'unbanned' : changes.passwordHash !== undefined ? 'password_set' : 'success')
    return view(result.user)
  })

  app.delete('/admin/users/:id', {
    config: { action: 'admin_user_delete' },
    schema: {
      tags: ['admin'],
      operationId: 'adminDeleteUser',
      summary: 'Delete a user, as DELETE /auth/me does',
      security: adminAuth,
      params: UserParams,
      response: { 204: Type.Null({ description: 'Deleted; every session ended' }), ...errorReplies(400, 401, 404, 503) }
    }
  }, async (request, reply) => {
    const ended = await deleteUser(db, request.params.id, null)
    if (ended === undefined) throw notFound()
    endedSessions.add(ended)
    profiles.delete(request.params.id)
    userId(request)
    return await reply.code(204).send(null)
  })

  app.delete('/admin/users/:id/sessions', {
    config: { action: 'admin_sessions_end' },
    schema: {
      tags: ['admin'],
      operationId: 'adminEndSessions',
      summary: 'End every session of a user',
      security: adminAuth,
      params: UserParams,
      response: { 204: Type.Null({ description: 'Every session ended' }), ...errorReplies(400, 401, 404, 503) }
    }
  }, async (request, reply) => {
    const { id } = request.params
    const ended = await app.pg.transact(async (client) =>
      await q.findUser(client, id) === undefined ? undefined : await q.endEverything(client, id, 'admin'))
    if (ended === undefined) throw notFound()
    endedSessions.add(ended)
    userId(request)
    return await reply.code(204).send(null)
  })

  app.delete('/admin/users/:id/mfa', {
    config: { action: 'admin_mfa_remove' },
    schema: {
      tags: ['admin'],
      operationId: 'adminRemoveMfa',
      summary: 'Remove the second factor of a user (a lost phone)',
      description: 'TOTP off, the secret and the recovery codes deleted; sign-ins waiting for a code are void. Sessions go on.',
      security: adminAuth,
      params: UserParams,
      response: { 204: Type.Null({ description: 'TOTP is off' }), ...errorReplies(400, 401, 404, 503) }
    }
  }, async (request, reply) => {
    if (!await app.pg.transact(async (client) => await q.removeSecondFactor(client, request.params.id))) throw notFound()
    profiles.delete(request.params.id)
    userId(request)
    return await reply.code(204).send(null)
  })

  app.get('/admin/audit', {
    schema: {
      tags: ['admin'],
      operationId: 'adminListAudit',
      summary: 'The audit trail, newest first',
      security: adminAuth,
      querystring: AuditQuery,
      response: { 200: AuditReply, ...errorReplies(400, 401, 503) }
    }
  }, async (request) => {
    const limit = pageSize(request.query.limit)
    const before = request.query.cursor === undefined ? null : decodeCursor(request.query.cursor, [EVENT_ID])[0]
    const rows = await q.listAuditEvents(db, { limit, before, userId: request.query.user_id?.toLowerCase() ?? null })
    const page = rows.slice(0, limit)
    return {
      events: page.map((e) => ({ ...e, id: Number(e.id), created_at: e.created_at.toISOString() })),
      next_cursor: rows.length > limit ? encodeCursor([page[page.length - 1].id]) : null
    }
  })

  app.post('/auth/introspect', {
    config: { action: 'introspect' },
    schema: {
      tags: ['admin'],
      operationId: 'introspectToken',
      summary: 'Is this token valid, and whose is it? (RFC 7662)',
      description: 'For resource servers that must know at once that a session has ended. The body is form-encoded ' +
        '(`token=…`) or JSON (`{"token": …}`). `active` is true for a valid access or refresh token of a live session ' +
        '(a refresh token: the current one of its session); otherwise the answer is only `{"active": false}`.',
      security: adminAuth,
      consumes: ['application/x-www-form-urlencoded', 'application/json'],
      body: IntrospectBody,
      response: { 200: IntrospectReply, ...errorReplies(400, 401, 413, 415, 503) }
    }
  }, async (request, reply) => {
    let claims: Claims
    try {
      claims = tokens.verify(request.body.token)
    } catch (err) {
      if (err instanceof AppError && err.statusCode === 401) return await inactive()
      throw err
    }
    const { rows } = await db.query<{ live: boolean, current: boolean }>({
      name: 'introspect-session',
      text: `SELECT revoked_at IS NULL AND expires_at > now() AS live, refresh_hash = $3 AS current
             FROM sessions WHERE id = $1 AND user_id = $2`,
      values: [claims.sid, claims.sub, tokenHash(claims.jti)]
    })
    const session = rows[0]
    if (session === undefined || !session.live || (claims.type === 'refresh' && !session.current)) return await inactive()
    request.event = { outcome: 'active', userId: claims.sub, sessionId: claims.sid }
    const { sub, sid, type, exp, iat, iss, aud, jti, amr } = claims
    return await reply.headers(NO_STORE).send({ active: true, sub, sid, token_type: type, exp, iat, iss, aud, jti, amr })

    async function inactive (): Promise<{ active: false }> {
      request.event = { outcome: 'inactive' }
      return await reply.headers(NO_STORE).send({ active: false })
    }
  })
}
