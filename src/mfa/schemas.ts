import { Type, type Static } from '@sinclair/typebox'
import { Password } from '../schemas.js'

// The second factor: bodies and replies (the shared pieces are in ../schemas.ts).

const Code = Type.String({
  minLength: 1,
  maxLength: 64,
  description: 'A 6-digit code from the authenticator app, or one of the recovery codes',
  examples: ['123456']
})

export const EnrolBody = Type.Object({ password: Password })
export type EnrolBody = Static<typeof EnrolBody>

export const EnrolReply = Type.Object({
  secret: Type.String({ description: 'The TOTP secret, base32: for typing into an authenticator app' }),
  otpauth_url: Type.String({ description: '`otpauth://totp/<issuer>:<email>?secret=…&issuer=…`: what the QR code holds' }),
  qr_svg: Type.String({ description: 'The QR code of otpauth_url, as an SVG document' })
}, { description: 'A new secret, not yet on: confirm it with a first code' })

export const CodeBody = Type.Object({ code: Code })
export type CodeBody = Static<typeof CodeBody>

export const DisableBody = Type.Object({ password: Password, code: Code })
export type DisableBody = Static<typeof DisableBody>

export const RecoveryCodesReply = Type.Object({
  recovery_codes: Type.Array(Type.String(), { minItems: 10, maxItems: 10, description: 'Each works once, in place of a TOTP code; shown only now' })
}, { description: 'Ten recovery codes' })

export const VerifyBody = Type.Object({
  mfa_token: Type.String({ maxLength: 1000, description: 'From the 403 MFA_REQUIRED answer of sign-in' }),
  code: Code
})
export type VerifyBody = Static<typeof VerifyBody>
