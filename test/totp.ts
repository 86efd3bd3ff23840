import { createHmac } from 'node:crypto'

// TOTP written here from the RFCs (4648 base32, 4226 HOTP, 6238 TOTP), checked against RFC 6238's
// vectors in test/mfa.test.ts: tests compute codes with it, not with the library the service uses.

export function fromBase32 (text: string): Buffer {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567'
  let bits = ''
  for (const c of text.replace(/=+$/, '')) bits += alphabet.indexOf(c).toString(2).padStart(5, '0')
  return Buffer.from((bits.match(/.{8}/g) ?? []).map((b) => parseInt(b, 2)))
}

export function hotp (key: Buffer, counter: number, digits = 6, alg = 'sha1'): string {
  const msg = Buffer.alloc(8)
  msg.writeBigUInt64BE(BigInt(counter))
  const mac = createHmac(alg, key).update(msg).digest()
  const offset = mac[mac.length - 1] & 0xf
  const bin = (mac.readUInt32BE(offset) & 0x7fffffff) % 10 ** digits
  return String(bin).padStart(digits, '0')
}

export const stepAt = (ms = Date.now()): number => Math.floor(ms / 30_000)

/** The 6-digit code of a base32 secret for a time step (the current one by default). */
export const codeFor = (secret: string, step = stepAt()): string => hotp(fromBase32(secret), step)

/**
 * Waits, if need be, until at least `margin` ms of the current step remain, so that "now ± 1"
 * means the same here and in the service for that long.
 */
export async function freshStep (margin = 5000): Promise<number> {
  const left = 30_000 - (Date.now() % 30_000)
  if (left < margin) await new Promise((resolve) => setTimeout(resolve, left + 100))
  return stepAt()
}
