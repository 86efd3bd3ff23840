import { Type, type Static } from '@sinclair/typebox'

// The API contract in code. Response schemas also serialize (fast-json-stringify) and keep
// undeclared fields, such as a password hash, from ever leaving the service.

// Passwords are bounded so that nobody can make argon2 hash megabytes; never trimmed.
const Password = Type.String({ minLength: 1, maxLength: 1024, description: 'Never trimmed; at most 1024 characters' })

export const ErrorBody = Type.Object({
  statusCode: Type.Integer(),
  error: Type.String(),
  code: Type.String(),
  message: Type.String()
}, { $id: 'ErrorBody' })

export const SignUpBody = Type.Object({
  name: Type.String({ maxLength: 1000, description: 'Trimmed; 1-100 characters, no control characters', examples: ['usuario_test'] }),
  email: Type.String({ maxLength: 1000, description: 'Trimmed, at most 254 characters; stored lower-cased', examples: ['test@example.com'] }),
  password: Type.String({ maxLength: 1024, description: 'At least PASSWORD_MIN_LENGTH (8) characters, at most 1024; not a common password' })
})
export type SignUpBody = Static<typeof SignUpBody>

export const SignUpReply = Type.Object({
  msg: Type.String(),
  user: Type.Object({ id: Type.String(), username: Type.String(), email: Type.String() })
})

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
})

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
})

export const MeReply = Type.Object({
  id: Type.String(),
  username: Type.String(),
  email: Type.String(),
  created_at: Type.String({ format: 'date-time' })
})

export const SignOutQuery = Type.Object({
  scope: Type.Optional(Type.Literal('all', { description: 'End every session of the user, not only this one' }))
})
export type SignOutQuery = Static<typeof SignOutQuery>

export const HealthReply = Type.Object({ status: Type.String() })
