import { createHash, randomBytes, randomUUID } from 'node:crypto'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { JWT } from '@fastify/jwt'
import type { FastifyBaseLogger } from 'fastify'
import type { Config } from '../config.js'
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

/** Options for @fastify/jwt: the algorithm is pinned, never read from the token. */
export function jwtOptions (config: Config, secret: string) {
  return {
    secret,
    sign: { algorithm: 'HS256' as const },
    verify: {
      algorithms: ['HS256' as const],
      allowedIss: config.JWT_ISSUER,
      ...(config.JWT_AUDIENCE !== undefined ? { allowedAud: config.JWT_AUDIENCE } : {}),
      // fast-jwt checks a claim only when present: list every claim, aud too when it is due.
      requiredClaims: ['sub', 'sid', 'type', 'jti', 'iat', 'exp', 'iss', ...(config.JWT_AUDIENCE !== undefined ? ['aud'] : [])]
    }
  }
}

/** A fresh refresh-token id (128 random bits). */
export const newTokenId = (): string => randomBytes(16).toString('base64url')

/**
 * The id of the token that replaces `jti` at rotation. Derived rather than random so that a
 * retry inside REFRESH_REUSE_GRACE can be handed the same successor. Knowing it is no help to
 * an attacker: a token is only accepted with a valid signature.
 */
export const nextTokenId = (jti: string): string =>
  createHash('sha256').update('rotate:' + jti).digest('base64url').slice(0, 22)

/** What the database keeps of a refresh token: the SHA-256 of its id, never the token. */
export const tokenHash = (jti: string): Buffer => createHash('sha256').update(jti).digest()

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

export function createTokens (jwt: JWT, config: Config) {
  const now = () => Math.floor(Date.now() / 1000)

  function sign (type: TokenType, sub: string, sid: string, jti: string, ttl: number): string {
    const iat = now()
    const claims: Claims = { sub, sid, type, jti, iat, exp: iat + ttl, iss: config.JWT_ISSUER }
    if (config.JWT_AUDIENCE !== undefined) claims.aud = config.JWT_AUDIENCE
    return jwt.sign(claims)
  }

  return {
    access: (sub: string, sid: string) => sign('access', sub, sid, randomUUID(), config.JWT_ACCESS_TTL),
    refresh: (sub: string, sid: string, jti: string) => sign('refresh', sub, sid, jti, config.JWT_REFRESH_TTL),

    /** Verifies signature, issuer, audience, expiry and type; throws the contract's 401s. */
    verify (token: string, type: TokenType): Claims {
      let claims: Claims
      try {
        claims = jwt.verify<Claims>(token)
      } catch (err) {
        if ((err as { code?: string }).code === 'FAST_JWT_EXPIRED') throw tokenError('TOKEN_EXPIRED', 'Token has expired')
        throw tokenError('TOKEN_INVALID', 'Token is invalid')
      }
      if (claims.type !== type) throw tokenError('TOKEN_INVALID', `Expected a ${type} token`)
      if (typeof claims.sub !== 'string' || !UUID.test(claims.sub) || typeof claims.sid !== 'string' ||
        !UUID.test(claims.sid) || typeof claims.jti !== 'string') {
        throw tokenError('TOKEN_INVALID', 'Token is invalid')
      }
      return claims
    }
  }
}

export type Tokens = ReturnType<typeof createTokens>
