import t from 'tap'
import { ConfigError, loadConfig, signingKeys, trustProxy } from '../src/config.js'
import { build, claimsOf, createDatabase, newSession, pemKeyPair } from './helper.js'

const base = { DATABASE_URL: 'postgres://u@127.0.0.1:5432/db', JWT_SECRET_KEY: 'k'.repeat(32) }

t.test('defaults follow the contract', async (t) => {
  const c = loadConfig(base)
  t.match(c, {
    HOST: '0.0.0.0',
    PORT: 5000,
    JWT_ISSUER: 'auth-service',
    JWT_ACCESS_TTL: 900,
    JWT_REFRESH_TTL: 2592000,
    REFRESH_TOKEN_ROTATION: true,
    REFRESH_REUSE_GRACE: 0,
    PASSWORD_MIN_LENGTH: 8,
    ARGON2_MEMORY_KIB: 19456,
    ARGON2_ITERATIONS: 2,
    ARGON2_PARALLELISM: 1,
    MIGRATE_ON_START: true,
    DATA_DIR: './data',
    LOG_LEVEL: 'info',
    EMAIL_FROM: 'auth-service <no-reply@localhost>',
    EMAIL_VERIFICATION: 'optional',
    EMAIL_VERIFY_TTL: 86400,
    PASSWORD_RESET_TTL: 3600,
    EMAIL_COOLDOWN: 60,
    RATE_LIMIT_EMAIL: 20
  })
  t.equal(c.JWT_AUDIENCE, undefined)
})

t.test('values from the environment are parsed to their types', async (t) => {
  const c = loadConfig({ ...base, PORT: '8080', REFRESH_TOKEN_ROTATION: 'false', JWT_AUDIENCE: 'api', DB_POOL_MAX: '4' })
  t.equal(c.PORT, 8080)
  t.equal(c.REFRESH_TOKEN_ROTATION, false)
  t.equal(c.JWT_AUDIENCE, 'api')
  t.equal(c.DB_POOL_MAX, 4)
})

t.test('an empty value means unset', async (t) => {
  t.equal(loadConfig({ ...base, JWT_AUDIENCE: '', PORT: '' }).PORT, 5000)
})

t.test('a bad setting → one line naming the variable and why', async (t) => {
  const cases: Array<[Record<string, string>, string]> = [
    [{ PORT: 'eighty' }, 'PORT'],
    [{ PORT: '70000' }, 'PORT'],
    [{ JWT_ACCESS_TTL: '0' }, 'JWT_ACCESS_TTL'],
    [{ REFRESH_TOKEN_ROTATION: 'maybe' }, 'REFRESH_TOKEN_ROTATION'],
    [{ LOG_LEVEL: 'loud' }, 'LOG_LEVEL'],
    [{ DATABASE_URL: 'mysql://x' }, 'DATABASE_URL'],
    [{ JWT_SECRET_KEY: 'short' }, 'JWT_SECRET_KEY'],
    [{ TRUST_PROXY: 'some proxy' }, 'TRUST_PROXY'],
    [{ JWT_ACCESS_TTL: '100', JWT_REFRESH_TTL: '50' }, 'JWT_ACCESS_TTL'],
    [{ SMTP_URL: 'http://mail' }, 'SMTP_URL'],
    [{ SMTP_URL: 'smtp://[bad' }, 'SMTP_URL'],
    [{ EMAIL_FROM: 'nobody' }, 'EMAIL_FROM'],
    [{ EMAIL_VERIFICATION: 'sometimes' }, 'EMAIL_VERIFICATION'],
    [{ EMAIL_LINK_URL: 'javascript:alert(1)' }, 'EMAIL_LINK_URL'],
    [{ PUBLIC_URL: 'localhost:5000' }, 'PUBLIC_URL'],
    [{ EMAIL_COOLDOWN: '-1' }, 'EMAIL_COOLDOWN'],
    [{ NODE_ENV: 'production', EMAIL_VERIFICATION: 'required' }, 'EMAIL_VERIFICATION']
  ]
  for (const [env, name] of cases) {
    t.throws(() => loadConfig({ ...base, ...env }), ConfigError, name)
    try {
      loadConfig({ ...base, ...env })
    } catch (err) {
      const msg = (err as Error).message
      t.ok(msg.startsWith(`${name}:`), `${msg} names ${name}`)
      t.notMatch(msg, /\n/, 'one line')
    }
  }
})

t.test('a short secret is refused with a hint on making one; 32 UTF-8 bytes pass', async (t) => {
  t.throws(() => loadConfig({ ...base, JWT_SECRET_KEY: 'x'.repeat(31) }), { message: /at least 32 bytes.*openssl rand/ })
  t.ok(loadConfig({ ...base, JWT_SECRET_KEY: 'é'.repeat(16) }), '16 × 2-byte characters = 32 bytes')
})

t.test('DATA_ENCRYPTION_KEY and each of DATA_ENCRYPTION_KEYS_OLD: at least 32 bytes, never quoted', async (t) => {
  t.throws(() => loadConfig({ ...base, DATA_ENCRYPTION_KEY: 's3cr3t'.repeat(5) }), { message: /^DATA_ENCRYPTION_KEY: must be at least 32 bytes.*openssl rand/ })
  t.throws(() => loadConfig({ ...base, DATA_ENCRYPTION_KEY: 'k'.repeat(32), DATA_ENCRYPTION_KEYS_OLD: `${'o'.repeat(32)}, sh0rt` }),
    { message: /^DATA_ENCRYPTION_KEYS_OLD: each key/ })
  try {
    loadConfig({ ...base, DATA_ENCRYPTION_KEY: 's3cr3t'.repeat(5) })
  } catch (err) {
    t.notMatch((err as Error).message, /s3cr3t/, 'the value is not in the message')
  }
  t.ok(loadConfig({ ...base, DATA_ENCRYPTION_KEY: 'k'.repeat(32), DATA_ENCRYPTION_KEYS_OLD: `${'o'.repeat(32)},${'p'.repeat(40)}` }))
})

t.test('NODE_ENV=production refuses to start without DATABASE_URL or a signing key', async (t) => {
  t.throws(() => loadConfig({ NODE_ENV: 'production', JWT_SECRET_KEY: base.JWT_SECRET_KEY }), { message: /^DATABASE_URL:/ })
  t.throws(() => loadConfig({ NODE_ENV: 'production', DATABASE_URL: base.DATABASE_URL }), { message: /^JWT_SECRET_KEY:/ })
  t.ok(loadConfig({ NODE_ENV: 'production', ...base }))
})

const ed25519 = pemKeyPair('Ed25519')

t.test('NODE_ENV=production: JWT_PRIVATE_KEY alone is a signing key', async (t) => {
  t.ok(loadConfig({ NODE_ENV: 'production', DATABASE_URL: base.DATABASE_URL, JWT_PRIVATE_KEY: ed25519.privateKey }))
})

t.test('JWT_PRIVATE_KEY: Ed25519 → EdDSA, P-256 → ES256, RSA-2048 → RS256', async (t) => {
  for (const [kind, alg] of [['Ed25519', 'EdDSA'], ['P-256', 'ES256'], ['RSA-2048', 'RS256']] as const) {
    const keys = signingKeys(loadConfig({ ...base, JWT_PRIVATE_KEY: pemKeyPair(kind).privateKey }))
    t.equal(keys.publicKeys.length, 1, kind)
    t.equal(keys.publicKeys[0].alg, alg, kind)
  }
  t.same(signingKeys(loadConfig(base)), { privateKey: undefined, publicKeys: [] }, 'none with only JWT_SECRET_KEY')
})

t.test('a PEM with literal "\\n" for its line breaks (as in .env files) is accepted, in both settings', async (t) => {
  const extra = pemKeyPair('P-256').publicKey
  const oneLine = (pem: string) => pem.trim().replaceAll('\n', '\\n')
  t.notMatch(oneLine(ed25519.privateKey), /\n/, 'no real newline left')
  const keys = signingKeys(loadConfig({ ...base, JWT_PRIVATE_KEY: oneLine(ed25519.privateKey), JWT_PUBLIC_KEYS_EXTRA: oneLine(extra) }))
  t.same(keys.publicKeys.map((k) => k.alg), ['EdDSA', 'ES256'])
})

t.test('JWT_PUBLIC_KEYS_EXTRA: a bundle of public keys, each with the algorithm of its type', async (t) => {
  const bundle = [pemKeyPair('RSA-2048'), pemKeyPair('Ed25519'), pemKeyPair('P-256')].map((k) => k.publicKey).join('\n')
  const keys = signingKeys(loadConfig({ ...base, JWT_PRIVATE_KEY: ed25519.privateKey, JWT_PUBLIC_KEYS_EXTRA: bundle }))
  t.same(keys.publicKeys.map((k) => k.alg), ['EdDSA', 'RS256', 'EdDSA', 'ES256'], 'the current key first, then the bundle in order')
})

t.test('JWT_PUBLIC_KEYS_EXTRA with only JWT_SECRET_KEY: verification keys published before switching to a private key', async (t) => {
  const keys = signingKeys(loadConfig({ ...base, JWT_PUBLIC_KEYS_EXTRA: ed25519.publicKey }))
  t.equal(keys.privateKey, undefined)
  t.same(keys.publicKeys.map((k) => k.alg), ['EdDSA'])
})

t.test('a bad signing key → one line naming the variable, without the key', async (t) => {
  const rsa1024 = pemKeyPair('RSA-1024')
  const cases: Array<[string, Record<string, string>, string]> = [
    ['a P-384 key', { JWT_PRIVATE_KEY: pemKeyPair('P-384').privateKey }, 'JWT_PRIVATE_KEY'],
    ['a DSA key', { JWT_PRIVATE_KEY: pemKeyPair('DSA').privateKey }, 'JWT_PRIVATE_KEY'],
    ['an RSA-1024 key', { JWT_PRIVATE_KEY: rsa1024.privateKey }, 'JWT_PRIVATE_KEY'],
    ['an Ed448 key', { JWT_PRIVATE_KEY: pemKeyPair('Ed448').privateKey }, 'JWT_PRIVATE_KEY'],
    ['garbage', { JWT_PRIVATE_KEY: 'not a key' }, 'JWT_PRIVATE_KEY'],
    ['a corrupt PEM', { JWT_PRIVATE_KEY: '-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----' }, 'JWT_PRIVATE_KEY'],
    ['a public key', { JWT_PRIVATE_KEY: ed25519.publicKey }, 'JWT_PRIVATE_KEY'],
    ['no PEM in the extras', { JWT_PRIVATE_KEY: ed25519.privateKey, JWT_PUBLIC_KEYS_EXTRA: 'garbage' }, 'JWT_PUBLIC_KEYS_EXTRA'],
    ['a corrupt extra', { JWT_PRIVATE_KEY: ed25519.privateKey, JWT_PUBLIC_KEYS_EXTRA: '-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----' }, 'JWT_PUBLIC_KEYS_EXTRA'],
    ['a private key in the extras', { JWT_PRIVATE_KEY: ed25519.privateKey, JWT_PUBLIC_KEYS_EXTRA: pemKeyPair('Ed25519').privateKey }, 'JWT_PUBLIC_KEYS_EXTRA'],
    ['an RSA-1024 extra', { JWT_PRIVATE_KEY: ed25519.privateKey, JWT_PUBLIC_KEYS_EXTRA: ed25519.publicKey + rsa1024.publicKey }, 'JWT_PUBLIC_KEYS_EXTRA']
  ]
  for (const [what, env, name] of cases) {
    const err = t.throws(() => loadConfig({ ...base, ...env }), ConfigError, what) as Error
    t.ok(err.message.startsWith(`${name}:`), `${what}: ${err.message}`)
    t.notMatch(err.message, /\n|-----|AAAA/, `${what}: one line, no key material`)
  }
})

t.test('TRUST_PROXY accepts false, true, a hop count or a list of addresses', async (t) => {
  t.equal(trustProxy(loadConfig(base)), false)
  t.equal(trustProxy(loadConfig({ ...base, TRUST_PROXY: 'true' })), true)
  const hops = trustProxy(loadConfig({ ...base, TRUST_PROXY: '1' })) as (a: string, i: number) => boolean
  t.equal(hops('127.0.0.1', 0), true)
  t.equal(hops('127.0.0.1', 1), false)
  t.same(trustProxy(loadConfig({ ...base, TRUST_PROXY: '127.0.0.1, 10.0.0.0/8' })), ['127.0.0.1', '10.0.0.0/8'])
})

t.test('a .env file fills in what the environment does not set; empty values there mean unset too', async (t) => {
  const dir = t.testdir({ '.env': `PORT=6000\nHOST=\nLOG_LEVEL=debug\nJWT_SECRET_KEY=${'e'.repeat(32)}\n` })
  t.chdir(dir)
  const c = loadConfig({ DATABASE_URL: base.DATABASE_URL, LOG_LEVEL: 'warn' }, { dotenv: true })
  t.equal(c.PORT, 6000)
  t.equal(c.HOST, '0.0.0.0')
  t.equal(c.LOG_LEVEL, 'warn', 'the environment wins over .env')
  t.equal(c.JWT_SECRET_KEY, 'e'.repeat(32))
})

t.test('the app takes its settings from what it is given, never from process.env behind them', async (t) => {
  // What a shell or compose file may hold: an empty JWT_SECRET_KEY= (a key-pair deployment) and
  // settings meant for another process.
  const saved = { ...process.env }
  t.teardown(() => { process.env = saved })
  Object.assign(process.env, { JWT_SECRET_KEY: '', JWT_AUDIENCE: '', JWT_ISSUER: 'from-the-shell' })
  const key = pemKeyPair('Ed25519')
  const app = await build(t, await createDatabase(t), { JWT_SECRET_KEY: '', JWT_PRIVATE_KEY: key.privateKey })
  t.equal(app.config.JWT_SECRET_KEY, undefined, 'an empty value is unset')
  t.equal(app.config.JWT_ISSUER, 'auth-service', 'not the shell\'s')
  const { access_token: token } = await newSession(app)
  t.match(claimsOf(token), { iss: 'auth-service' })
  t.notOk('aud' in claimsOf(token))
})

t.test('a bad URL or key is named, its value not repeated (it may hold a password)', async (t) => {
  t.throws(() => loadConfig({ ...base, DATABASE_URL: 'mysql://user:hunter2@db/x' }), { message: /^DATABASE_URL: .*\(value not shown\)$/ })
  t.throws(() => loadConfig({ ...base, REDIS_URL: 'http://:hunter2@redis' }), { message: /^REDIS_URL: .*\(value not shown\)$/ })
  t.throws(() => loadConfig({ ...base, SMTP_URL: 'smtp://user:hunter2@[bad' }), { message: /^SMTP_URL: .*\(value not shown\)$/ })
  t.throws(() => loadConfig({ ...base, PORT: 'abc' }), { message: /\(got "abc"\)$/ }, 'other values are shown')
})
