import { Type, type Static } from '@sinclair/typebox'

// The admin API and introspection: bodies, queries and replies.

const Uuid = (description: string) =>
  // A pattern, not format: 'uuid', which also lets `urn:uuid:…` through to PostgreSQL.
  Type.String({ pattern: '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$', description })
// The query string is not coerced (the service coerces no types): a pattern, and the range in the handler.
const Limit = Type.String({ pattern: '^[0-9]+$', maxLength: 3, description: 'Page size, 1-100 (default 50)' })
const Cursor = Type.String({ maxLength: 200, description: 'next_cursor of the previous page' })
const NextCursor = Type.Union([Type.String(), Type.Null()], { description: 'For the next page; null on the last' })
const Timestamp = Type.String({ format: 'date-time' })
const Nullable = <T extends ReturnType<typeof Type.String>>(t: T, description: string) => Type.Union([t, Type.Null()], { description })

export const AdminUser = Type.Object({
  id: Type.String({ format: 'uuid' }),
  username: Type.String(),
  email: Type.String(),
  email_verified: Type.Boolean(),
  mfa_enabled: Type.Boolean({ description: 'TOTP is on' }),
  banned_until: Nullable(Timestamp, 'While in the future, the account cannot sign in (403 ACCOUNT_DISABLED)'),
  created_at: Timestamp,
  last_sign_in_at: Nullable(Timestamp, 'The last sign-in on record: the newest session, else the audit trail; null when neither holds one')
}, { description: 'A user' })

export const UserParams = Type.Object({ id: Uuid('A user id') })

export const ListUsersQuery = Type.Object({
  limit: Type.Optional(Limit),
  cursor: Type.Optional(Cursor),
  email: Type.Optional(Type.String({ minLength: 1, maxLength: 254, description: 'Only emails starting with this (case-insensitive)' }))
})
export type ListUsersQuery = Static<typeof ListUsersQuery>

export const UsersReply = Type.Object({ users: Type.Array(AdminUser), next_cursor: NextCursor }, { description: 'A page of users, newest first' })

const Name = Type.String({ maxLength: 1000, description: 'Trimmed; 1-100 characters, no control characters' })
const Email = Type.String({ maxLength: 1000, description: 'Trimmed, at most 254 characters; stored lower-cased' })
const NewPassword = Type.String({ maxLength: 1024, description: 'At least PASSWORD_MIN_LENGTH (8) characters, at most 1024; not a common password; never trimmed' })

export const CreateUserBody = Type.Object({
  name: Name,
  email: Email,
  password: Type.Optional({ ...NewPassword, description: NewPassword.description + '. Left out: a reset-password link is mailed, with which the user sets one' }),
  email_verified: Type.Optional(Type.Boolean({ default: false, description: 'Count the address as confirmed' }))
})
export type CreateUserBody = Static<typeof CreateUserBody>

export const UpdateUserBody = Type.Object({
  name: Type.Optional(Name),
  email: Type.Optional({ ...Email, description: Email.description + '; a new address is unverified unless email_verified is true' }),
  email_verified: Type.Optional(Type.Boolean()),
  password: Type.Optional({ ...NewPassword, description: NewPassword.description + '. Ends every session of the user' }),
  banned_until: Type.Optional(Nullable(Timestamp, 'A time in the future bans the user until then and ends every session; null lifts a ban'))
}, { additionalProperties: false, description: 'At least one field; others are dropped' })
export type UpdateUserBody = Static<typeof UpdateUserBody>

export const AuditQuery = Type.Object({
  user_id: Type.Optional(Uuid('Only the events of this user')),
  limit: Type.Optional(Limit),
  cursor: Type.Optional(Cursor)
})
export type AuditQuery = Static<typeof AuditQuery>

export const AuditReply = Type.Object({
  events: Type.Array(Type.Object({
    id: Type.Integer(),
    event: Type.String({ description: 'sign-in, sign-in-failed, password-change, admin-user-update, …' }),
    user_id: Nullable(Type.String({ format: 'uuid' }), 'The user the event is about'),
    session_id: Nullable(Type.String({ format: 'uuid' }), 'The session, where there is one'),
    ip: Nullable(Type.String(), 'The client IP'),
    user_agent: Nullable(Type.String(), 'The User-Agent header'),
    created_at: Timestamp
  })),
  next_cursor: NextCursor
}, { description: 'A page of the audit trail, newest first' })

export const IntrospectBody = Type.Object({
  token: Type.String({ minLength: 1, maxLength: 8192, description: 'An access or refresh token' }),
  token_type_hint: Type.Optional(Type.String({ maxLength: 100, description: 'Ignored: the token says what it is (RFC 7662)' }))
})
export type IntrospectBody = Static<typeof IntrospectBody>

export const IntrospectReply = Type.Object({
  active: Type.Boolean({ description: 'true for a valid token of a live session; with false, nothing else' }),
  sub: Type.Optional(Type.String({ description: 'The user id' })),
  sid: Type.Optional(Type.String({ description: 'The session id' })),
  token_type: Type.Optional(Type.Union([Type.Literal('access'), Type.Literal('refresh')])),
  exp: Type.Optional(Type.Integer()),
  iat: Type.Optional(Type.Integer()),
  iss: Type.Optional(Type.String()),
  aud: Type.Optional(Type.String()),
  jti: Type.Optional(Type.String()),
  amr: Type.Optional(Type.Array(Type.String(), { description: 'How the user signed in: ["pwd"] or ["pwd", "otp"]' }))
}, { description: 'RFC 7662 introspection response' })
