import { Type } from '@sinclair/typebox'
import { validationFailed } from './errors.js'
import { UNPAIRED } from './passwords.js'

// The API contract in code: what every capability shares (each has its own schemas.ts).
// Response schemas also serialize (fast-json-stringify) and keep undeclared fields, such as a
// password hash, from ever leaving the service.

// Passwords are bounded so that nobody can make argon2 hash megabytes; never trimmed.
export const Password = Type.String({ minLength: 1, maxLength: 1024, description: 'Never trimmed; at most 1024 characters', examples: ['correct horse battery'] })

// A TOTP or recovery code: what an account with TOTP on gives with its password for every change.
export const SecondFactorCode = Type.String({
  minLength: 1,
  maxLength: 64,
  description: 'A 6-digit code from the authenticator app, or one of the recovery codes; required when TOTP is on',
  examples: ['123456']
})

/** What a 403 means on a change that needs the second factor. */
export const MFA_CODE_MISSING = 'MFA_REQUIRED: TOTP is on for this account: send `code` too'

// Every error's body. A shared schema (app.ts adds it once, before the routes): the routes refer
// to it with ErrorReply, and the OpenAPI document lists it once, as components.schemas.ErrorBody.
export const ErrorBody = Type.Object({
  statusCode: Type.Integer(),
  error: Type.String({ description: 'The HTTP reason phrase' }),
  code: Type.String({ description: 'Stable error code, for programs (see each status)' }),
  message: Type.String({ description: 'For people; may change' })
}, { $id: 'ErrorBody' })

// Sign-in's 403 body: ErrorBody, and with MFA_REQUIRED the token for the second step. Shared like
// ErrorBody (app.ts adds it): the OpenAPI document lists it as components.schemas.MfaRequiredBody.
export const MfaRequiredBody = Type.Object({
  ...ErrorBody.properties,
  mfa_token: Type.Optional(Type.String({ description: 'With MFA_REQUIRED: for POST /auth/mfa/verify, within 300 s, once' }))
}, { $id: 'MfaRequiredBody' })

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

/** A route's error responses: the given statuses and 500 (which any route may answer), each the shared ErrorBody. */
export const errorReplies = (...codes: number[]) => Object.fromEntries([...codes, 500].map((c) => [c, ErrorReply(c)]))

/** `security` of an operation that takes a token in the Authorization header. */
export const bearerAuth = [{ bearerAuth: [] }]
/** `security` of an operation anyone may call (OpenAPI: an empty list means no authentication). */
export const noAuth = []

/**
 * The 4xx answers of an operation that takes no input: what Node and the service refuse before
 * a route runs (src/errors.ts, src/app.ts), in the contract's error body.
 */
export const httpErrors = {
  '4xx': ErrorReply(400, 'A request refused before the route runs: 400 malformed HTTP, 408 not arrived in time, ' +
    '417 an Expect other than 100-continue, 431 headers too large')
}

// RFC 6749 §5.1: responses carrying tokens must not be cached.
export const NO_STORE = { 'cache-control': 'no-store' }

export const HealthReply = Type.Object({ status: Type.String() }, { description: '`ok` (alive) or `ready`' })

// Checks of text fields that a JSON schema cannot express.
export const EMAIL = /^[^\s@\p{Cc}]{1,64}@(?:[\p{L}\p{N}](?:[\p{L}\p{N}-]{0,61}[\p{L}\p{N}])?\.)+[\p{L}](?:[\p{L}\p{N}-]{0,61}[\p{L}\p{N}])?$/u
export const CONTROL = /\p{Cc}/u

/** An address as stored: trimmed, lower-cased; 400 VALIDATION_FAILED naming `field` when it cannot be one. */
export function normalEmail (value: string, field = 'email'): string {
  const email = value.trim()
  if (email.length > 254 || !EMAIL.test(email) || UNPAIRED.test(email)) throw validationFailed(`${field} must be a valid email address`)
  return email.toLowerCase()
}
