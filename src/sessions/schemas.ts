import { Type, type Static } from '@sinclair/typebox'
import { MfaRequiredBody, Password } from '../schemas.js'

// Sign-in, refresh, sign-out and the session list: bodies and replies.

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

// Sign-in's 403: the error body, with the mfa_token when the code is MFA_REQUIRED.
export const MfaRequiredReply = Type.Ref(MfaRequiredBody, {
  description: 'MFA_REQUIRED: the password is right and TOTP is on; finish with POST /auth/mfa/verify and `mfa_token`. ' +
    'EMAIL_NOT_VERIFIED: with EMAIL_VERIFICATION=required, the right password for an unverified address; a fresh link is mailed. ' +
    'ACCOUNT_DISABLED: the right password for an account banned by an operator (PATCH /admin/users/:id, banned_until)'
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
}, { description: 'A new access token (and, with rotation, a new refresh token)' })

export const SignOutQuery = Type.Object({
  scope: Type.Optional(Type.Literal('all', { description: 'End every session of the user, not only this one' }))
})
export type SignOutQuery = Static<typeof SignOutQuery>

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
