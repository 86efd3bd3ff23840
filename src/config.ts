import { createPrivateKey, createPublicKey, type KeyObject } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { parseEnv } from 'node:util'
import { envSchema } from 'env-schema'
import { Type, type Static, type TSchema } from '@sinclair/typebox'

/** A setting that lists values (keys, URLs) separated by commas; blanks around each are not part of it. */
export const commaList = (value: string | undefined): string[] => (value ?? '').split(',').map((k) => k.trim()).filter((k) => k !== '')

// Every setting, once: validation, defaults and the TypeScript type come from this schema.
// The app registers it with @fastify/env (app.config); the few settings needed before the
// Fastify instance exists (LOG_LEVEL, TRUST_PROXY) are read from the same schema first, and
// `npm run prune` reads it through env-schema (the validator behind @fastify/env) directly.
const Seconds = (def: number, description: string) =>
  Type.Integer({ minimum: 1, maximum: 31_536_000, default: def, description })

export const ConfigSchema = Type.Object({
  NODE_ENV: Type.String({ default: 'development' }),
  HOST: Type.String({ default: '0.0.0.0', minLength: 1 }),
  PORT: Type.Integer({ minimum: 0, maximum: 65535, default: 5000 }),
  LOG_LEVEL: Type.Union(
    ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].map((l) => Type.Literal(l)),
    { default: 'info' }
  ),
  TRUST_PROXY: Type.String({ default: 'false', description: 'false, true, a hop count, or a comma-separated list of proxy addresses/CIDRs' }),

  DATABASE_URL: Type.Optional(Type.String({ pattern: '^postgres(ql)?://' })),
  DB_POOL_MAX: Type.Integer({ minimum: 1, maximum: 1000, default: 10 }),
  DB_CONNECT_TIMEOUT_MS: Type.Integer({ minimum: 100, maximum: 60_000, default: 3000 }),
  DB_STATEMENT_TIMEOUT_MS: Type.Integer({ minimum: 100, maximum: 600_000, default: 5000 }),
  DATA_DIR: Type.String({ default: './data', minLength: 1 }),
  MIGRATE_ON_START: Type.Boolean({ default: true }),

  JWT_SECRET_KEY: Type.Optional(Type.String()),
  JWT_PRIVATE_KEY: Type.Optional(Type.String({ description: 'PEM private key (Ed25519, P-256 or RSA of 2048 bits or more); signs instead of JWT_SECRET_KEY' })),
  JWT_PUBLIC_KEYS_EXTRA: Type.Optional(Type.String({ description: 'PEM public keys also accepted (by kid) and listed in the JWKS: retired or upcoming signing keys' })),
  JWT_ISSUER: Type.String({ default: 'auth-service', minLength: 1 }),
  JWT_AUDIENCE: Type.Optional(Type.String({ minLength: 1 })),
  JWT_ACCESS_TTL: Seconds(900, 'access token lifetime'),
  JWT_REFRESH_TTL: Seconds(2_592_000, 'refresh token and idle session lifetime'),
  REFRESH_TOKEN_ROTATION: Type.Boolean({ default: true }),
  REFRESH_REUSE_GRACE: Type.Integer({ minimum: 0, maximum: 300, default: 0 }),

  RATE_LIMIT_ENABLED: Type.Boolean({ default: true }),
  RATE_LIMIT_SIGN_UP: Type.Integer({ minimum: 1, maximum: 1_000_000, default: 100, description: 'sign-ups per client IP per minute' }),
  RATE_LIMIT_SIGN_IN: Type.Integer({ minimum: 1, maximum: 1_000_000, default: 100, description: 'sign-ins per client IP per minute' }),
  RATE_LIMIT_REFRESH: Type.Integer({ minimum: 1, maximum: 1_000_000, default: 200, description: 'refreshes per client IP per minute' }),
  REDIS_URL: Type.Optional(Type.String({ pattern: '^rediss?://' })),

  METRICS_ENABLED: Type.Boolean({ default: true }),
  AUDIT_RETENTION_DAYS: Type.Integer({ minimum: 1, maximum: 36_500, default: 90 }),
  PRUNE_INTERVAL_SECONDS: Type.Integer({ minimum: 0, maximum: 604_800, default: 3600, description: '0 turns the periodic job off' }),

  SMTP_URL: Type.Optional(Type.String({ pattern: '^smtps?://', description: 'smtp://[user:pass@]host:port (STARTTLS when offered) or smtps://; unset outside production: mail goes to DATA_DIR/mail/' })),
  EMAIL_FROM: Type.String({ default: 'auth-service <no-reply@localhost>', minLength: 3 }),
  PUBLIC_URL: Type.Optional(Type.String({ pattern: '^https?://', description: "the service's external base URL; default http://localhost:<PORT>" })),
  EMAIL_LINK_URL: Type.Optional(Type.String({ pattern: '^https?://', description: 'the page mailed links open; default PUBLIC_URL + /auth/confirm' })),
  EMAIL_VERIFICATION: Type.Union(['off', 'optional', 'required'].map((v) => Type.Literal(v)), { default: 'optional' }),
  EMAIL_VERIFY_TTL: Seconds(86_400, 'lifetime of verify-email and change-email links'),
  PASSWORD_RESET_TTL: Seconds(3600, 'lifetime of reset-password links'),
  EMAIL_COOLDOWN: Type.Integer({ minimum: 0, maximum: 86_400, default: 60, description: 'seconds between two mails of a kind to one address' }),
  RATE_LIMIT_EMAIL: Type.Integer({ minimum: 1, maximum: 1_000_000, default: 20, description: 'forgot, resend and email-change requests per client IP per minute' }),

  DATA_ENCRYPTION_KEY: Type.Optional(Type.String({ description: 'at least 32 bytes: seals TOTP secrets (AES-256-GCM); unset: they are stored as they are' })),
  DATA_ENCRYPTION_KEYS_OLD: Type.Optional(Type.String({ description: 'retired DATA_ENCRYPTION_KEY values, comma-separated: still opened, re-sealed under the new key at start' })),
  MFA_ISSUER: Type.Optional(Type.String({ minLength: 1, maxLength: 100, description: 'the issuer shown in authenticator apps; default JWT_ISSUER' })),

  ADMIN_API_KEYS: Type.Optional(Type.String({ description: 'keys of the admin API and introspection, comma-separated, each at least 32 bytes; unset: /admin/ and /auth/introspect do not exist' })),
  WEBHOOK_URLS: Type.Optional(Type.String({ description: 'endpoints that get every event (POST, signed), comma-separated' })),
  WEBHOOK_SECRET: Type.Optional(Type.String({ description: 'whsec_ and the base64 of 24 to 64 random bytes (Standard Webhooks); required with WEBHOOK_URLS' })),

  PASSWORD_MIN_LENGTH: Type.Integer({ minimum: 1, maximum: 1024, default: 8 }),
  ARGON2_MEMORY_KIB: Type.Integer({ minimum: 1024, maximum: 1_048_576, default: 19_456 }),
  ARGON2_ITERATIONS: Type.Integer({ minimum: 1, maximum: 20, default: 2 }),
  ARGON2_PARALLELISM: Type.Integer({ minimum: 1, maximum: 16, default: 1 })
})

export type Config = Static<typeof ConfigSchema>

export class ConfigError extends Error {
  override name = 'ConfigError'
}

const MIN_SECRET_BYTES = 32

export type Env = Record<string, string | undefined>

/** The settings as given: the environment, over a `.env` file when asked; empty values dropped. */
export function settingsOf (env: Env = process.env, opts: { dotenv?: boolean } = {}): Record<string, string> {
  // A .env file in the working directory fills in what the environment does not set.
  const merged = opts.dotenv === true ? { ...readDotenv(), ...env } : env
  // An empty value (`FOO=` copied from .env.example) means "unset".
  return Object.fromEntries(Object.entries(merged).filter((e): e is [string, string] => e[1] !== undefined && e[1] !== ''))
}

/** The ConfigError for a validation error of env-schema (also @fastify/env's): one line naming the variable. */
export function configError (err: unknown, data: Record<string, string>): unknown {
  const first = (err as { errors?: Array<{ instancePath: string, message?: string, params?: Record<string, unknown> }> }).errors?.[0]
  if (first === undefined) return err
  const name = first.instancePath.replace(/^\//, '') || String(first.params?.missingProperty ?? 'settings')
  // A URL may hold a password, a key is a secret: their values are not repeated in the message.
  const got = /_URLS?$|_KEY$|_KEYS|SECRET/.test(name) ? 'value not shown' : `got ${JSON.stringify(data[name] ?? null)}`
  return new ConfigError(`${name}: ${first.message ?? 'invalid value'} (${got})`)
}

function validate<T> (schema: TSchema, data: Record<string, string>): T {
  try {
    return envSchema<T>({ schema: structuredClone(schema), data, env: false })
  } catch (err) {
    throw configError(err, data)
  }
}

/** What must be known before the Fastify instance exists, from the same schema. */
export const EarlySettings = Type.Pick(ConfigSchema, ['LOG_LEVEL', 'TRUST_PROXY'])
export const earlySettings = (data: Record<string, string>): Static<typeof EarlySettings> => validate(EarlySettings, data)

/**
 * Validates settings (process.env by default) and returns the typed config, as the app's
 * @fastify/env registration does. Throws ConfigError with one line naming the variable and why.
 */
export function loadConfig (env: Env = process.env, opts: { dotenv?: boolean } = {}): Config {
  const config = validate<Config>(ConfigSchema, settingsOf(env, opts))
  checkConfig(config)
  return config
}

/** What one schema cannot say: settings that depend on each other, and keys that must parse. */
export function checkConfig (config: Config): void {
  if (config.JWT_SECRET_KEY !== undefined && Buffer.byteLength(config.JWT_SECRET_KEY) < MIN_SECRET_BYTES) {
    throw new ConfigError(`JWT_SECRET_KEY: must be at least ${MIN_SECRET_BYTES} bytes; generate one with: openssl rand -base64 48`)
  }
  if (config.NODE_ENV === 'production') {
    if (config.DATABASE_URL === undefined) {
      throw new ConfigError('DATABASE_URL: required when NODE_ENV=production (the embedded database is for development)')
    }
    if (config.JWT_SECRET_KEY === undefined && config.JWT_PRIVATE_KEY === undefined) {
      throw new ConfigError('JWT_SECRET_KEY: required when NODE_ENV=production (or JWT_PRIVATE_KEY); generate one with: openssl rand -base64 48')
    }
    if (config.SMTP_URL === undefined && config.EMAIL_VERIFICATION === 'required') {
      throw new ConfigError('EMAIL_VERIFICATION: required needs SMTP_URL when NODE_ENV=production (no mail could verify an address)')
    }
  }
  if (config.DATA_ENCRYPTION_KEY !== undefined && Buffer.byteLength(config.DATA_ENCRYPTION_KEY) < MIN_SECRET_BYTES) {
    throw new ConfigError(`DATA_ENCRYPTION_KEY: must be at least ${MIN_SECRET_BYTES} bytes; generate one with: openssl rand -base64 48`)
  }
  if (commaList(config.DATA_ENCRYPTION_KEYS_OLD).some((k) => Buffer.byteLength(k) < MIN_SECRET_BYTES)) {
    throw new ConfigError(`DATA_ENCRYPTION_KEYS_OLD: each key (comma-separated) must be at least ${MIN_SECRET_BYTES} bytes`)
  }
  if (commaList(config.ADMIN_API_KEYS).some((k) => Buffer.byteLength(k) < MIN_SECRET_BYTES)) {
    throw new ConfigError(`ADMIN_API_KEYS: each key (comma-separated) must be at least ${MIN_SECRET_BYTES} bytes; generate one with: openssl rand -base64 48`)
  }
  checkWebhooks(config)
  if (config.JWT_ACCESS_TTL > config.JWT_REFRESH_TTL) {
    throw new ConfigError('JWT_ACCESS_TTL: must not be longer than JWT_REFRESH_TTL')
  }
  if (!/^[^\p{Cc}]*?<?[^\s@<>]+@[^\s@<>]+>?$/u.test(config.EMAIL_FROM.trim())) {
    throw new ConfigError(`EMAIL_FROM: not an address, like: auth-service <no-reply@example.com> (got ${JSON.stringify(config.EMAIL_FROM)})`)
  }
  for (const name of ['SMTP_URL', 'PUBLIC_URL', 'EMAIL_LINK_URL'] as const) {
    const value = config[name]
    if (value !== undefined && !URL.canParse(value)) throw new ConfigError(`${name}: not a valid URL (value not shown)`)
  }
  if (config.SMTP_URL !== undefined) {
    const { username, password } = new URL(config.SMTP_URL)
    try {
      decodeURIComponent(username + password)
    } catch {
      throw new ConfigError('SMTP_URL: the user or password is not validly percent-encoded (value not shown)')
    }
  }
  trustProxy(config) // validates the value
  signingKeys(config) // parses the keys, so that a bad one stops the start
}

function checkWebhooks (config: Config): void {
  const urls = commaList(config.WEBHOOK_URLS)
  for (const url of urls) {
    if (!URL.canParse(url) || !/^https?:$/.test(new URL(url).protocol)) throw new ConfigError('WEBHOOK_URLS: each must be an http:// or https:// URL (values not shown)')
  }
  const secret = config.WEBHOOK_SECRET
  if (secret === undefined) {
    if (urls.length > 0) throw new ConfigError('WEBHOOK_SECRET: required with WEBHOOK_URLS; generate one with: echo "whsec_$(openssl rand -base64 32)"')
    return
  }
  const key = /^whsec_([A-Za-z0-9+/]+={0,2})$/.exec(secret)?.[1]
  const bytes = key === undefined ? 0 : Buffer.from(key, 'base64').length
  if (bytes < 24 || bytes > 64) throw new ConfigError('WEBHOOK_SECRET: must be whsec_ and the base64 of 24 to 64 random bytes; generate one with: echo "whsec_$(openssl rand -base64 32)"')
}

function readDotenv (): Record<string, string> {
  let text: string
  try {
    text = readFileSync('.env', 'utf8')
  } catch {
    return {}
  }
  try {
    return parseEnv(text) as Record<string, string>
  } catch {
    throw new ConfigError('.env: cannot be parsed')
  }
}

/** TRUST_PROXY as Fastify's trustProxy option. */
export function trustProxy (config: Pick<Config, 'TRUST_PROXY'>): boolean | string[] | ((address: string, hop: number) => boolean) {
  const v = config.TRUST_PROXY.trim().toLowerCase()
  if (v === 'false') return false
  if (v === 'true') return true
  if (/^\d+$/.test(v)) {
    const hops = Number(v) // trust this many proxies in front of the service
    return (_address, hop) => hop < hops
  }
  const list = v.split(',').map((s) => s.trim()).filter(Boolean)
  if (list.length === 0 || list.some((s) => !/^[0-9a-f.:/]+$/.test(s))) {
    throw new ConfigError(`TRUST_PROXY: expected false, true, a hop count or a comma-separated list of addresses (got ${JSON.stringify(config.TRUST_PROXY)})`)
  }
  return list
}

export type KeyAlgorithm = 'EdDSA' | 'ES256' | 'RS256'

export interface SigningKeys {
  /** JWT_PRIVATE_KEY; undefined: tokens are signed with JWT_SECRET_KEY. */
  privateKey?: KeyObject
  /** The public keys that verify tokens: JWT_PRIVATE_KEY's first, then JWT_PUBLIC_KEYS_EXTRA's. */
  publicKeys: Array<{ alg: KeyAlgorithm, key: KeyObject }>
}

/**
 * JWT_PRIVATE_KEY and JWT_PUBLIC_KEYS_EXTRA as key objects, each public key with the one
 * algorithm it verifies. Error messages never quote a key.
 */
export function signingKeys (config: Config): SigningKeys {
  let privateKey: KeyObject | undefined
  const publicKeys: SigningKeys['publicKeys'] = []
  if (config.JWT_PRIVATE_KEY !== undefined) {
    try {
      privateKey = createPrivateKey(pemText(config.JWT_PRIVATE_KEY))
    } catch {
      throw new ConfigError('JWT_PRIVATE_KEY: not an unencrypted PEM private key; generate one with: openssl genpkey -algorithm ed25519')
    }
    const key = createPublicKey(privateKey)
    publicKeys.push({ alg: keyAlgorithm(key, 'JWT_PRIVATE_KEY'), key })
  }
  if (config.JWT_PUBLIC_KEYS_EXTRA !== undefined) {
    const blocks = pemText(config.JWT_PUBLIC_KEYS_EXTRA).match(/-----BEGIN ([A-Z0-9 ]+)-----[\s\S]*?-----END \1-----/g) ?? []
    if (blocks.length === 0) throw new ConfigError('JWT_PUBLIC_KEYS_EXTRA: no PEM public key found')
    blocks.forEach((pem, i) => {
      const name = `JWT_PUBLIC_KEYS_EXTRA: key ${i + 1}`
      if (pem.includes('PRIVATE KEY-----')) throw new ConfigError(`${name} is a private key; give its public key (openssl pkey -in key.pem -pubout)`)
      let key: KeyObject
      try {
        key = createPublicKey(pem)
      } catch {
        throw new ConfigError(`${name} is not a PEM public key`)
      }
      publicKeys.push({ alg: keyAlgorithm(key, name), key })
    })
  }
  return { privateKey, publicKeys }
}

// .env files and compose often hold a PEM on one line, with literal "\n" for its line breaks.
const pemText = (value: string): string => value.replace(/\\n/g, '\n').trim()

/** The JWS algorithm of a key: its type decides, and verification accepts nothing else for it. */
function keyAlgorithm (key: KeyObject, name: string): KeyAlgorithm {
  const type = key.asymmetricKeyType
  const { namedCurve, modulusLength } = key.asymmetricKeyDetails ?? {}
  if (type === 'ed25519') return 'EdDSA'
  if (type === 'ec' && namedCurve === 'prime256v1') return 'ES256'
  if (type === 'rsa' && modulusLength !== undefined && modulusLength >= 2048) return 'RS256'
  const what = type === 'ec' ? `an EC key on curve ${namedCurve ?? '?'}` : type === 'rsa' ? `a ${modulusLength ?? '?'}-bit RSA key` : `a key of type ${type ?? '?'}`
  throw new ConfigError(`${name}: ${what} is not supported; use Ed25519, P-256 or RSA of 2048 bits or more`)
}
