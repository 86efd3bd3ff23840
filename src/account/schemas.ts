import { Type, type Static } from '@sinclair/typebox'
import { Password, SecondFactorCode } from '../schemas.js'

// Sign-up, me and password change: bodies and replies (the shared pieces are in ../schemas.ts).

export const SignUpBody = Type.Object({
  name: Type.String({ maxLength: 1000, description: 'Trimmed; 1-100 characters, no control characters', examples: ['usuario_test'] }),
  email: Type.String({ maxLength: 1000, description: 'Trimmed, at most 254 characters; stored lower-cased', examples: ['test@example.com'] }),
  password: Type.String({ maxLength: 1024, description: 'At least PASSWORD_MIN_LENGTH (8) characters, at most 1024; not a common password', examples: ['correct horse battery'] })
})
export type SignUpBody = Static<typeof SignUpBody>

export const SignUpReply = Type.Object({
  msg: Type.String(),
  user: Type.Object({ id: Type.String(), username: Type.String(), email: Type.String(), email_verified: Type.Boolean() })
}, { description: 'Registered' })

export const MeReply = Type.Object({
  id: Type.String(),
  username: Type.String(),
  email: Type.String(),
  email_verified: Type.Boolean({ description: 'The address has been confirmed from a mailed link' }),
  mfa_enabled: Type.Boolean({ description: 'A second factor is enrolled' }),
  created_at: Type.String({ format: 'date-time' })
}, { description: 'The user of the access token' })

export const PasswordBody = Type.Object({
  current_password: Password,
  // The policy (length, common list) is checked by the handler, so the message names new_password.
  new_password: Type.String({ maxLength: 1024, description: 'At least PASSWORD_MIN_LENGTH (8) characters, at most 1024; not a common password; never trimmed', examples: ['a new horse battery staple'] }),
  code: Type.Optional(SecondFactorCode)
})
export type PasswordBody = Static<typeof PasswordBody>

export const DeleteAccountBody = Type.Object({ password: Password, code: Type.Optional(SecondFactorCode) })
export type DeleteAccountBody = Static<typeof DeleteAccountBody>
