import { createHash, randomBytes, randomInt } from 'node:crypto'
import { Secret, TOTP } from 'otpauth'
import QRCode from 'qrcode'

// TOTP as the contract fixes it (RFC 6238: SHA-1, 6 digits, 30 s steps, one step either side),
// through otpauth; recovery codes. Pure functions: the database side is in queries.ts.

const PERIOD = 30
const DIGITS = 6
const SECRET_BYTES = 20 // 160 bits, the length RFC 4226 recommends for HMAC-SHA-1

export const newSecret = (): Buffer => randomBytes(SECRET_BYTES)

export const base32 = (secret: Buffer): string => Secret.fromHex(secret.toString('hex')).base32

/**
 * `otpauth://totp/<issuer>:<email>?secret=…&issuer=…`, the Key Uri Format authenticator apps read,
 * as the contract writes it: SHA-1, 6 digits and 30 s are the format's defaults, so not repeated.
 * An `@` may stand in a URI path as it is.
 */
export function otpauthUrl (issuer: string, email: string, secret: Buffer): string {
  const label = `${encodeURIComponent(issuer)}:${encodeURIComponent(email).replace(/%40/g, '@')}`
  return `otpauth://totp/${label}?secret=${base32(secret)}&issuer=${encodeURIComponent(issuer)}`
}

/** The QR code of `text` as a standalone SVG document. */
export const qrSvg = async (text: string): Promise<string> => await QRCode.toString(text, { type: 'svg', errorCorrectionLevel: 'M', margin: 2 })

export const TOTP_CODE = /^\d{6}$/

/**
 * The time step whose code `code` is, among the current one and one either side, or null. Which
 * step matters: each is accepted once per user (queries.ts keeps the newest one used).
 */
export function matchStep (secret: Buffer, code: string, now = Date.now()): number | null {
  if (!TOTP_CODE.test(code)) return null
  const totp = new TOTP({ secret: Secret.fromHex(secret.toString('hex')), algorithm: 'SHA1', digits: DIGITS, period: PERIOD })
  const delta = totp.validate({ token: code, timestamp: now, window: 1 })
  return delta === null ? null : totp.counter({ timestamp: now }) + delta
}

// Recovery codes: 17 characters of an alphabet without 0/o or 1/l/i, so 84 random bits (too many to
// guess, or to find from a stolen SHA-256), shown as xxxxxx-xxxxxx-xxxxx. Typed back in any case,
// with or without the dashes and spaces.
const ALPHABET = 'abcdefghjkmnpqrstuvwxyz23456789'
const CODE_LENGTH = 17
export const RECOVERY_CODES = 10

function newRecoveryCode (): string {
  let code = ''
  for (let i = 0; i < CODE_LENGTH; i++) code += ALPHABET[randomInt(ALPHABET.length)]
  return code.match(/.{1,6}/g)?.join('-') ?? code
}

export const newRecoveryCodes = (): string[] => Array.from({ length: RECOVERY_CODES }, newRecoveryCode)

/** What the database keeps of a recovery code: the SHA-256 of its normal form; null when `code` cannot be one. */
export function recoveryCodeHash (code: string): Buffer | null {
  const normal = code.toLowerCase().replace(/[\s-]/g, '')
  if (normal.length !== CODE_LENGTH || [...normal].some((c) => !ALPHABET.includes(c))) return null
  return createHash('sha256').update(normal).digest()
}
