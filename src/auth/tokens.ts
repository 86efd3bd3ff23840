import { createHash, hash, randomBytes, randomUUID, type KeyObject } from 'node:crypto'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { createDecoder, createSigner, createVerifier } from 'fast-jwt'
import { LruMap } from 'toad-cache'
import type { FastifyBaseLogger } from 'fastify'
import { signingKeys, type Config, type KeyAlgorithm } from '../config.js'
import { tokenError } from '../errors.js'

export type TokenType = 'access' | 'refresh'

export interface Claims {
  sub: string
  sid: string
  type: TokenType
  jti: string
  iat: number
  exp: number
  iss: string
  aud?: string
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/

/**
 * The HS256 secret: JWT_SECRET_KEY, or outside production one generated once and kept
 * under DATA_DIR so that tokens survive a restart.
 */
export function signingSecret (config: Config, log: FastifyBaseLogger): string {
  if (config.JWT_SECRET_KEY !== undefined) return config.JWT_SECRET_KEY
  const file = join(config.DATA_DIR, 'jwt-secret')
  let secret: string
  try {
    secret = readFileSync(file, 'utf8').trim()
  } catch {
    mkdirSync(config.DATA_DIR, { recursive: true })
    secret = randomBytes(48).toString('base64url')
    try {
      writeFileSync(file, secret + '\n', { mode: 0o600, flag: 'wx' })
    } catch (err) {
      // Another process starting at the same moment wrote it first: use theirs.
      if ((err as { code?: string }).code !== 'EEXIST') throw err
      secret = readFileSync(file, 'utf8').trim()
    }
  }
  log.warn({ file }, 'JWT_SECRET_KEY is not set: using a generated development secret; set JWT_SECRET_KEY in production')
  return secret
}

/** A public key as the JWKS lists it (RFC 7517). */
export interface Jwk {
  kid: string
  kty: string
  alg: KeyAlgorithm
  use: 'sig'
  crv?: string
  x?: string
  y?: string
  n?: string
  e?: string
}

// RFC 7638: a thumbprint hashes the required members of the key type, in this order.
const THUMBPRINT_MEMBERS: Record<string, string[]> = { EC: ['crv', 'kty', 'x', 'y'], OKP: ['crv', 'kty', 'x'], RSA: ['e', 'kty', 'n'] }

/** The public JWK of a key, with its RFC 7638 thumbprint as kid: the same for a key on every start and replica. */
export function publicJwk (key: KeyObject, alg: KeyAlgorithm): Jwk {
  const { kty, crv, x, y, n, e } = key.export({ format: 'jwk' }) as Record<string, string>
  const members: Record<string, string> = { crv, kty, x, y, n, e }
  const canonical = JSON.stringify(Object.fromEntries(THUMBPRINT_MEMBERS[kty].map((m) => [m, members[m]])))
  const kid = createHash('sha256').update(canonical).digest('base64url')
  return { kid, kty, alg, use: 'sig', crv, x, y, n, e }
}

/** A fresh refresh-token id (128 random bits). */
export const newTokenId = (): string => randomBytes(16).toString('base64url')

/**
 * The id of the token that replaces `jti` at rotation. Derived rather than random so that a
 * retry inside REFRESH_REUSE_GRACE can be handed the same successor. Knowing it is no help to
 * an attacker: a token is only accepted with a valid signature.
 */
export const nextTokenId = (jti: string): string => hash('sha256', 'rotate:' + jti, 'base64url').slice(0, 22)

/** What the database keeps of a refresh token: the SHA-256 of its id, never the token. */
export const tokenHash = (jti: string): Buffer => hash('sha256', jti, 'buffer')

/**
 * The token of an `Authorization: Bearer <token>` header. The scheme is case-insensitive and
 * may be followed by several spaces (RFC 7235); anything after the token is refused.
 */
export function bearerToken (header: string | undefined): string | undefined {
  if (header === undefined || header === '') return undefined
  const m = /^(\S+)(?: +(.*))?$/.exec(header)
  if (m === null || m[1].toLowerCase() !== 'bearer' || m[2] === undefined || m[2] === '') {
    throw tokenError('TOKEN_MISSING', 'Send the token as Authorization: Bearer <token>')
  }
  if (/\s/.test(m[2])) throw tokenError('TOKEN_INVALID', 'Malformed Authorization header')
  return m[2]
}

/**
 * Signs with JWT_PRIVATE_KEY when it is set (its kid in the header), else with the HS256 secret.
 * A token with a kid is verified with the configured public key of that kid (JWT_PRIVATE_KEY's or
 * one of JWT_PUBLIC_KEYS_EXTRA), with the algorithm pinned to that key's; a token without kid,
 * with JWT_SECRET_KEY when there is one (tokens signed before a switch from the secret to a key).
 * Nothing else in a token (alg, jku, jwk, x5u, x5c) picks a key or an algorithm.
 */
export function createTokens (config: Config, log: FastifyBaseLogger) {
  const now = () => Math.floor(Date.now() / 1000)
  const checks = {
    allowedIss: config.JWT_ISSUER,
    ...(config.JWT_AUDIENCE !== undefined ? { allowedAud: config.JWT_AUDIENCE } : {}),
    // fast-jwt checks a claim only when present: list every claim, aud too when it is due.
    requiredClaims: ['sub', 'sid', 'type', 'jti', 'iat', 'exp', 'iss', ...(config.JWT_AUDIENCE !== undefined ? ['aud'] : [])]
  }
  const { privateKey, publicKeys } = signingKeys(config)
  const secret = privateKey === undefined ? signingSecret(config, log) : config.JWT_SECRET_KEY
  const hs256 = secret === undefined ? undefined : createVerifier({ key: secret, algorithms: ['HS256'], ...checks })

  // One verifier per configured public key, made once, by kid (a Map: no kid reaches a prototype).
  const jwks: Jwk[] = []
  const byKid = new Map<string, (token: string) => Claims>()
  for (const { alg, key } of publicKeys) {
    const jwk = publicJwk(key, alg)
    if (byKid.has(jwk.kid)) continue // the same key given twice
    jwks.push(jwk)
    byKid.set(jwk.kid, createVerifier({ key: key.export({ type: 'spki', format: 'pem' }) as string, algorithms: [alg], ...checks }))
  }
  // Verified access tokens are remembered, by the whole token, until they expire: a client
  // repeating its access token costs a lookup, not an HMAC or signature check. Not fast-jwt's
  // own cache: it hashes every token with SHA-256 to make its key, 10 % of the CPU of a `me`
  // request (bench/README.md). Refresh tokens are used once each with rotation: not remembered.
  const verifiedAccess = new LruMap<Claims>(10_000)
  const decode = createDecoder({ complete: true })

  const signer = privateKey === undefined
    ? createSigner({ key: secret, algorithm: 'HS256' })
    : createSigner({ key: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, algorithm: jwks[0].alg, kid: jwks[0].kid })
  if (privateKey !== undefined) {
    const { alg, kid } = jwks[0]
    log.info({ alg, kid, verificationKids: [...byKid.keys()] }, 'signing tokens with JWT_PRIVATE_KEY')
    if (secret !== undefined) {
      log.warn('JWT_SECRET_KEY is set too: tokens without kid (signed with it) are still accepted; remove it once JWT_REFRESH_TTL has passed since the switch to JWT_PRIVATE_KEY')
    }
  }

  /** The verifier for a token: the configured key named by its kid, or the secret; never a key the token brings. */
  function verifierFor (token: string): ((token: string) => Claims) | undefined {
    if (byKid.size === 0) return hs256 // a shared secret only: nothing in the header matters
    const { kid } = decode(token).header
    if (kid === undefined) return hs256
    return typeof kid === 'string' ? byKid.get(kid) : undefined
  }

  function sign (type: TokenType, sub: string, sid: string, jti: string, ttl: number): string {
    const iat = now()
    const claims: Claims = { sub, sid, type, jti, iat, exp: iat + ttl, iss: config.JWT_ISSUER }
    if (config.JWT_AUDIENCE !== undefined) claims.aud = config.JWT_AUDIENCE
    return signer(claims)
  }

  return {
    /** The public keys for GET /.well-known/jwks.json: the signing key first; none with a shared secret only. */
    jwks,
    access: (sub: string, sid: string) => sign('access', sub, sid, randomUUID(), config.JWT_ACCESS_TTL),
    refresh: (sub: string, sid: string, jti: string) => sign('refresh', sub, sid, jti, config.JWT_REFRESH_TTL),

    /** Verifies signature, issuer, audience, expiry and type; throws the contract's 401s. */
    verify (token: string, type: TokenType): Claims {
      if (type === 'access') {
        const known = verifiedAccess.get(token)
        // An expired one goes on to the verifier, which says so.
        if (known !== undefined && known.exp * 1000 > Date.now()) return known
      }
      let claims: Claims
      try {
        const verify = verifierFor(token)
        if (verify === undefined) throw new Error('no configured key for this token')
        claims = verify(token)
      } catch (err) {
        if ((err as { code?: string }).code === 'FAST_JWT_EXPIRED') throw tokenError('TOKEN_EXPIRED', 'Token has expired')
        throw tokenError('TOKEN_INVALID', 'Token is invalid')
      }
      if (claims.type !== type) throw tokenError('TOKEN_INVALID', `Expected a ${type} token`)
      if (typeof claims.sub !== 'string' || !UUID.test(claims.sub) || typeof claims.sid !== 'string' ||
        !UUID.test(claims.sid) || typeof claims.jti !== 'string') {
        throw tokenError('TOKEN_INVALID', 'Token is invalid')
      }
      if (type === 'access') verifiedAccess.set(token, claims)
      return claims
    }
  }
}

export type Tokens = ReturnType<typeof createTokens>
