import { Type, type Static } from '@sinclair/typebox'
import { Password, SecondFactorCode } from '../schemas.js'

// Verification, reset, email change: bodies and replies (the shared pieces are in ../schemas.ts).

const Email = Type.String({ maxLength: 1000, description: 'Trimmed; compared lower-cased', examples: ['test@example.com'] })
// Mailed tokens are 43 characters; anything else is 400 TOKEN_INVALID (the route checks, so that
// a malformed token gets the contract's code rather than VALIDATION_FAILED).
const MailedToken = Type.String({ description: 'The token from the link\'s fragment (`#type=…&token=<token>`)', examples: ['Tt5VPmX1oWqKc0Ii8rR2bO0m0sS2m3yY4u5v6w7x8y9'] })

export const TokenBody = Type.Object({ token: MailedToken })
export type TokenBody = Static<typeof TokenBody>

export const EmailBody = Type.Object({ email: Email })
export type EmailBody = Static<typeof EmailBody>

export const ResetBody = Type.Object({
  token: MailedToken,
  new_password: Type.String({ maxLength: 1024, description: 'At least PASSWORD_MIN_LENGTH (8) characters, at most 1024; not a common password; never trimmed', examples: ['a new horse battery staple'] })
})
export type ResetBody = Static<typeof ResetBody>

export const EmailChangeBody = Type.Object({
  new_email: Email,
  password: Password,
  code: Type.Optional(SecondFactorCode)
})
export type EmailChangeBody = Static<typeof EmailChangeBody>

export const AcceptedReply = Type.Object({ msg: Type.String() }, { description: 'Accepted: the same answer whatever the address' })
