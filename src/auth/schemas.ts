import { Type, type Static } from '@sinclair/typebox'

// The API contract in code. Response schemas also serialize (fast-json-stringify) and keep
// undeclared fields, such as a password hash, from ever leaving the service.

// Passwords are bounded so that nobody can make argon2 hash megabytes; never trimmed.
const Password = Type.String({ minLength: 1, maxLength: 1024, description: 'Never trimmed; at most 1024 characters', examples: ['correct horse battery'] })

// Every error's body. A shared schema (each route plugin adds it with addSchema): the routes refer
// to it with ErrorReply, and the OpenAPI document lists it once, as components.schemas.ErrorBody.
export const ErrorBody = Type.Object({
  statusCode: Type.Integer(),
  error: Type.String({ description: 'The HTTP reason phrase' }),
  code: Type.String({ description: 'Stable error code, for programs (see each status)' }),
  message: Type.String({ description: 'For people; may change' })
}, { $id: 'ErrorBody' })

// What each error status means, for the OpenAPI document.
const ERRORS: Record<number, string> = {
  400: 'VALIDATION_FAILED: malformed JSON, a wrong type or a field out of bounds (the message names the field)',
  401: 'TOKEN_MISSING, TOKEN_INVALID, TOKEN_EXPIRED or TOKEN_REVOKED',
  404: 'NOT_FOUND',
  409: 'EMAIL_TAKEN: an account with this email already exists',
  413: 'PAYLOAD_TOO_LARGE: the body is over 16 KiB',
  415: 'UNSUPPORTED_MEDIA_TYPE: the body is not application/json',
  429: 'RATE_LIMITED: too many requests; retry after Retry-After seconds',
  500: 'INTERNAL: an unexpected failure; the message holds only the request id',
  503: 'SERVICE_UNAVAILABLE: the database does not answer, or the service is overloaded; retry after Retry-After seconds'
}

/** An error response: the shared ErrorBody, with what the status means on this route. */
export const ErrorReply = (status: number, description = ERRORS[status]) => Type.Ref(ErrorBody, { description })

export const SignUpBody = Type.Object({
  name: Type.String({ maxLength: 1000, description: 'Trimmed; 1-100 characters, no control characters', examples: ['usuario_test'] }),
  email: Type.String({ maxLength: 1000, description: 'Trimmed, at most 254 characters; stored lower-cased', examples: ['test@example.com'] }),
  password: Type.String({ maxLength: 1024, description: 'At least PASSWORD_MIN_LENGTH (8) characters, at most 1024; not a common password', examples: ['correct horse battery'] })
})
export type SignUpBody = Static<typeof SignUpBody>

export const SignUpReply = Type.Object({
  msg: Type.String(),
  user: Type.Object({ id: Type.String(), username: Type.String(), email: Type.String() })
}, { description: 'Registered' })

export const SignInBody = Type.Object({
  email: Type.String({ minLength: 1, maxLength: 1000, examples: ['test@example.com'] }),
  password: Password
})
export type SignInBody = Static<typeof SignInBody>

export const SignInReply = Type.Object({
  access_token: Type.String(),
  refresh_token: Type.String(),
  token_type: Type.Literal('Bearer'),
  expires_in: Type.Integer({ description: 'Access token lifetime in seconds' }),
  user: Type.Object({ id: Type.String(), username: Type.String() })
}, { description: 'Signed in: a new session and its token pair' })

// The original client sends `Content-Type: application/json` with no body: the body is optional.
export const RefreshBody = Type.Object({
  refresh_token: Type.Optional(Type.String({ maxLength: 8192 }))
})
export type RefreshBody = Static<typeof RefreshBody>

export const RefreshReply = Type.Object({
  access_token: Type.String(),
  refresh_token: Type.Optional(Type.String({ description: 'Present when rotation is on; the old one is retired' })),
  token_type: Type.Literal('Bearer'),
  expires_in: Type.Integer()
}, { description: 'A new access token (and, with rotation, a new refresh token)' })

export const MeReply = Type.Object({
  id: Type.String(),
  username: Type.String(),
  email: Type.String(),
  created_at: Type.String({ format: 'date-time' })
}, { description: 'The user of the access token' })

export const SignOutQuery = Type.Object({
  scope: Type.Optional(Type.Literal('all', { description: 'End every session of the user, not only this one' }))
})
export type SignOutQuery = Static<typeof SignOutQuery>

export const HealthReply = Type.Object({ status: Type.String() }, { description: '`ok` (alive) or `ready`' })

export const Session = Type.Object({
  id: Type.String({ format: 'uuid', description: 'The session id: the `sid` claim of its tokens' }),
  created_at: Type.String({ format: 'date-time' }),
  last_used_at: Type.String({ format: 'date-time', description: 'The sign-in, or the last refresh' }),
  expires_at: Type.String({ format: 'date-time', description: 'When the session ends unless refreshed' }),
  user_agent: Type.Union([Type.String(), Type.Null()], { description: 'The User-Agent header at sign-in' }),
  ip: Type.Union([Type.String(), Type.Null()], { description: 'The client IP at sign-in' }),
  current: Type.Boolean({ description: 'true for the session of the access token that asks' })
})

export const SessionsReply = Type.Array(Session, { description: 'The live sessions of the user (not ended, not expired), newest first' })

export const SessionParams = Type.Object({
  // A pattern, not format: 'uuid', which also lets `urn:uuid:…` through to PostgreSQL.
  id: Type.String({ pattern: '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$', description: 'A session id, from GET /auth/sessions' })
})
export type SessionParams = Static<typeof SessionParams>

export const PasswordBody = Type.Object({
  current_password: Password,
  // The policy (length, common list) is checked by the handler, so the message names new_password.
  new_password: Type.String({ maxLength: 1024, description: 'At least PASSWORD_MIN_LENGTH (8) characters, at most 1024; not a common password; never trimmed', examples: ['a new horse battery staple'] })
})
export type PasswordBody = Static<typeof PasswordBody>
