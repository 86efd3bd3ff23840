import { createHash, hash, randomBytes, randomUUID, type KeyObject } from 'node:crypto'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import fp from 'fastify-plugin'
import fastifyJwt, { type TokenOrHeader } from '@fastify/jwt'
import { LruMap } from 'toad-cache'
import type { FastifyBaseLogger, FastifyInstance, FastifyRequest } from 'fastify'
import { signingKeys, type Config, type KeyAlgorithm } from './config.js'
import { AppError, tokenError } from './errors.js'

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
  /** How the session's user signed in (RFC 8176): ['pwd'], or ['pwd', 'otp'] after a second factor. */
  amr?: string[]
}

/** The `amr` of a sign-in with the password only, and of one with a second factor too. */
export const PASSWORD_ONLY = ['pwd']
export const WITH_OTP = ['pwd', 'otp']

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

/** What the database keeps of a mailed token (verify, reset, email change): its SHA-256, never the token. */
export const emailTokenHash = (token: string): Buffer => hash('sha256', token, 'buffer')

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

declare module 'fastify' {
  interface FastifyInstance {
    tokens: Tokens
  }
  interface FastifyContextConfig {
    /** The route takes the refresh token from `body.refresh_token` too (refresh, sign-out). */
    refreshTokenInBody?: boolean
  }
}

declare module '@fastify/jwt' {
  interface FastifyJWT {
    payload: Claims
    user: Claims
  }
}

export interface Tokens {
  /** The public keys for GET /.well-known/jwks.json: the signing key first; none with a shared secret only. */
  jwks: Jwk[]
  /** `amr` goes into both tokens of a session: refresh carries it on to the next access token. */
  access: (sub: string, sid: string, amr: string[]) => string
  refresh: (sub: string, sid: string, jti: string, amr: string[]) => string
  /**
   * The verified claims of the request's bearer token (or `body.refresh_token` on routes that
   * take it): signature, issuer, audience, expiry and type checked; throws the contract's 401s.
   */
  authenticate: (request: FastifyRequest, type: TokenType) => Promise<Claims>
  /**
   * The verified claims of a token given as a string (introspection): signature, issuer, audience,
   * expiry and claims checked, and an access token's session not known to have ended. Throws the
   * contract's 401s; a refresh token's session is not looked up.
   */
  verify: (token: string) => Claims
}

/**
 * Tokens through @fastify/jwt (fast-jwt underneath). Signs with JWT_PRIVATE_KEY when it is set
 * (its kid in the header), else with the HS256 secret. A token with a kid is verified with the
 * configured public key of that kid (JWT_PRIVATE_KEY's or one of JWT_PUBLIC_KEYS_EXTRA), and its
 * `alg` must be that key's one algorithm; a token without kid, with JWT_SECRET_KEY when there is
 * one (tokens signed before a switch from the secret to a key), as HS256. Nothing else in a
 * token (jku, jwk, x5u, x5c) picks a key or an algorithm.
 */
async function tokens (app: FastifyInstance): Promise<void> {
  const { config, log } = app
  const { privateKey, publicKeys } = signingKeys(config)
  const secret = privateKey === undefined ? signingSecret(config, log) : config.JWT_SECRET_KEY

  // Each configured public key once, by kid (a Map: no kid reaches a prototype), with its algorithm.
  const jwks: Jwk[] = []
  const byKid = new Map<string, { alg: KeyAlgorithm, pem: string }>()
  for (const { alg, key } of publicKeys) {
    const jwk = publicJwk(key, alg)
    if (byKid.has(jwk.kid)) continue // the same key given twice
    jwks.push(jwk)
    byKid.set(jwk.kid, { alg, pem: key.export({ type: 'spki', format: 'pem' }) as string })
  }

  // With one static key (a shared secret only), the plugin's own verifier, made once, verifies
  // synchronously (app.jwt.verify). With keys, its per-request path picks the key by kid
  // (request.jwtVerify), at the cost of a header decode and a callback chain per token; measured
  // on the secret, that path's refresh ratio came out lower in one series and within the noise
  // in another (bench/README.md, ninth round), so the secret keeps the shorter path.
  const staticKey = byKid.size === 0

  /**
   * The key that verifies a token with this header, or an error: the header names a key, never
   * brings one. The one place that pins each key's algorithm: the plugin's verify.algorithms is a
   * single list for all keys.
   */
  function verificationKey (header: TokenOrHeader): string | AppError {
    const { kid, alg } = 'header' in header ? header.header : header
    if (kid === undefined) return secret !== undefined && alg === 'HS256' ? secret : tokenError('TOKEN_INVALID', 'Token is invalid')
    const key = typeof kid === 'string' ? byKid.get(kid) : undefined
    return key !== undefined && alg === key.alg ? key.pem : tokenError('TOKEN_INVALID', 'Token is invalid')
  }

  const claimChecks = {
    allowedIss: config.JWT_ISSUER,
    ...(config.JWT_AUDIENCE !== undefined ? { allowedAud: config.JWT_AUDIENCE } : {}),
    // fast-jwt checks a claim only when present: list every claim, aud too when it is due.
    requiredClaims: ['sub', 'sid', 'type', 'jti', 'iat', 'exp', 'iss', ...(config.JWT_AUDIENCE !== undefined ? ['aud'] : [])]
  }
  await app.register(fastifyJwt, {
    // A shared secret only: one static key, so the plugin verifies with one verifier made once.
    // With keys: the key is chosen per token by verificationKey (the plugin keeps a verifier per key).
    secret: staticKey
      ? secret as string
      : {
          private: privateKey?.export({ type: 'pkcs8', format: 'pem' }) as string | undefined ?? secret as string,
          public: (_request, header, cb) => {
            const key = verificationKey(header)
            if (key instanceof AppError) cb(key, undefined)
            else cb(null, key)
          }
        },
    sign: privateKey === undefined ? { algorithm: 'HS256' } : { algorithm: jwks[0].alg, kid: jwks[0].kid },
    // The header is needed to pick the key.
    decode: { complete: true },
    verify: {
      algorithms: [...new Set([...(secret !== undefined ? ['HS256' as const] : []), ...[...byKid.values()].map((k) => k.alg)])],
      ...claimChecks,
      extractToken: requestToken
    },
    // An access token of an ended session is refused (src/ended-sessions.ts). The plugin runs this
    // hook on its per-request path only: authenticate makes the same check for tokens verified by
    // app.jwt.verify or answered from its cache.
    trusted: (_request, claims) => live(claims as Claims),
    messages: { authorizationTokenUntrusted: 'Session has ended' }
  })
  const { endedSessions } = app
  const live = (claims: Claims): boolean => claims.type !== 'access' || !endedSessions.has(claims.sid)

  if (privateKey !== undefined) {
    const { alg, kid } = jwks[0]
    log.info({ alg, kid, verificationKids: [...byKid.keys()] }, 'signing tokens with JWT_PRIVATE_KEY')
    if (secret !== undefined) {
      log.warn('JWT_SECRET_KEY is set too: tokens without kid (signed with it) are still accepted; remove it once JWT_REFRESH_TTL has passed since the switch to JWT_PRIVATE_KEY')
    }
  }

  // Verified access tokens are remembered, by the whole token, until they expire: a client
  // repeating its access token costs a lookup, not an HMAC or signature check and the plugin's
  // per-request work. Not fast-jwt's own cache: it hashes every token with SHA-256 to make its
  // key, 10 % of the CPU of a `me` request (bench/README.md). Refresh tokens are used once each
  // with rotation: not remembered.
  const verifiedAccess = new LruMap<Claims>(10_000)

  function sign (type: TokenType, sub: string, sid: string, jti: string, ttl: number, amr: string[]): string {
    const iat = Math.floor(Date.now() / 1000)
    const claims: Claims = { sub, sid, type, jti, iat, exp: iat + ttl, iss: config.JWT_ISSUER, amr }
    if (config.JWT_AUDIENCE !== undefined) claims.aud = config.JWT_AUDIENCE
    return app.jwt.sign(claims)
  }

  /** A verifier's error as the contract's 401, or as it is when it is not the token's fault. */
  function tokenFault (err: unknown): unknown {
    if (err instanceof AppError) return err
    const code = (err as { code?: unknown }).code
    if (code === 'FST_JWT_AUTHORIZATION_TOKEN_EXPIRED' || code === 'FAST_JWT_EXPIRED') return tokenError('TOKEN_EXPIRED', 'Token has expired')
    if (code === 'FST_JWT_AUTHORIZATION_TOKEN_UNTRUSTED') return tokenError('TOKEN_REVOKED', 'Session has ended')
    // The token's fault: 401. fast-jwt throws a RangeError when it formats a claim out of a Date's
    // range (exp -1e308) for its message. Anything else (a broken key, a bug) is a logged 500.
    if ((typeof code === 'string' && /^(FAST_JWT|FST_JWT)_/.test(code)) || err instanceof RangeError) return tokenError('TOKEN_INVALID', 'Token is invalid')
    return err
  }

  /** The checks after the signature: well-formed claims of the expected type, of a session not ended. */
  function checked (claims: Claims, type: TokenType | undefined): Claims {
    if (type !== undefined && claims.type !== type) throw tokenError('TOKEN_INVALID', `Expected ${type === 'access' ? 'an access' : 'a refresh'} token`)
    if ((claims.type !== 'access' && claims.type !== 'refresh') || typeof claims.sub !== 'string' || !UUID.test(claims.sub) ||
      typeof claims.sid !== 'string' || !UUID.test(claims.sid) || typeof claims.jti !== 'string') {
      throw tokenError('TOKEN_INVALID', 'Token is invalid')
    }
    if (!live(claims)) throw tokenError('TOKEN_REVOKED', 'Session has ended')
    return claims
  }

  function verify (token: string): Claims {
    let claims: Claims
    try {
      if (staticKey) {
        claims = app.jwt.verify<Claims>(token)
      } else {
        // A verifier made for this token's key: introspection is not a hot path.
        const decoded = app.jwt.decode<TokenOrHeader>(token, { complete: true }) as TokenOrHeader | null
        const key = decoded === null ? tokenError('TOKEN_INVALID', 'Token is invalid') : verificationKey(decoded)
        if (key instanceof AppError) throw key
        claims = app.jwt.verify<Claims>(token, { key })
      }
    } catch (err) {
      throw tokenFault(err)
    }
    return checked(claims, undefined)
  }

  async function authenticate (request: FastifyRequest, type: TokenType): Promise<Claims> {
    const token = requestToken(request)
    if (type === 'access') {
      const known = verifiedAccess.get(token)
      // An expired one goes on to the verifier, which says so.
      if (known !== undefined && known.exp * 1000 > Date.now()) {
        if (!live(known)) throw tokenError('TOKEN_REVOKED', 'Session has ended')
        return known
      }
    }
    let claims: Claims
    try {
      claims = staticKey ? app.jwt.verify<Claims>(token) : await request.jwtVerify<Claims>()
    } catch (err) {
      throw tokenFault(err)
    }
    checked(claims, type)
    if (type === 'access') verifiedAccess.set(token, claims)
    return claims
  }

  app.decorate('tokens', {
    jwks,
    access: (sub: string, sid: string, amr: string[]) => sign('access', sub, sid, randomUUID(), config.JWT_ACCESS_TTL, amr),
    refresh: (sub: string, sid: string, jti: string, amr: string[]) => sign('refresh', sub, sid, jti, config.JWT_REFRESH_TTL, amr),
    authenticate,
    verify
  } satisfies Tokens)
}

/** The request's token: the Authorization header's, or on refresh and sign-out `body.refresh_token`. */
function requestToken (request: FastifyRequest): string {
  const token = bearerToken(request.headers.authorization) ??
    (request.routeOptions.config.refreshTokenInBody === true ? (request.body as { refresh_token?: string } | undefined)?.refresh_token : undefined)
  if (token === undefined || token === '') throw tokenError('TOKEN_MISSING', 'Send the token as Authorization: Bearer <token>')
  return token
}

export default fp(tokens, { name: 'tokens', dependencies: ['@fastify/env', 'ended-sessions'] })
