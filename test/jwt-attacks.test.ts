import t, { type Test } from 'tap'
import { createHmac, createPublicKey, generateKeyPairSync, sign as cryptoSign, type KeyObject } from 'node:crypto'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import { bearer, build, claimsOf, createDatabase, newSession, pemKeyPair, refresh, SECRET, type Session } from './helper.js'

// Known attacks on JWT verification, against an app signing with a shared secret (HS256) and one
// signing with an Ed25519 key (EdDSA, no secret). Attack tokens are built by hand (base64url JSON
// and node:crypto signatures), so that no JWT library helps or hinders the attacker.

const AUDIENCE = 'auth-tests'
const b64 = (o: object | string) => Buffer.from(typeof o === 'string' ? o : JSON.stringify(o)).toString('base64url')
const now = () => Math.floor(Date.now() / 1000)

type Signature = (input: string) => string
const hmac = (key: string | Buffer): Signature => (input) => createHmac('sha256', key).update(input).digest('base64url')
const ed25519 = (key: KeyObject | string): Signature => (input) => cryptoSign(null, Buffer.from(input), key).toString('base64url')

/** A compact JWS made by hand. */
const jws = (header: object, claims: object, signature: Signature | null): string => {
  const input = `${b64(header)}.${b64(claims)}`
  return `${input}.${signature === null ? '' : signature(input)}`
}

interface Target {
  name: string
  app: FastifyInstance
  /** The header the service puts on its tokens. */
  header: Record<string, string>
  /** A signature with the service's own key: tokens made with it are genuine, whatever their claims. */
  sign: Signature
  /** A session whose tokens the attacks start from. */
  victim: Session
}

async function target (name: string, env: Record<string, string>, sign: (app: FastifyInstance) => Promise<[Record<string, string>, Signature]>): Promise<Target> {
  const app = await build(t, await createDatabase(t), { JWT_AUDIENCE: AUDIENCE, ...env })
  const [header, signature] = await sign(app)
  return { name, app, header, sign: signature, victim: await newSession(app) }
}

const edKey = pemKeyPair('Ed25519')
const targets = [
  await target('HS256 app', {}, async () => [{ alg: 'HS256', typ: 'JWT' }, hmac(SECRET)]),
  await target('EdDSA app', { JWT_PRIVATE_KEY: edKey.privateKey, JWT_SECRET_KEY: '' }, async (app) => {
    const { keys } = (await app.inject({ method: 'GET', url: '/.well-known/jwks.json' })).json()
    return [{ alg: 'EdDSA', typ: 'JWT', kid: keys[0].kid }, ed25519(edKey.privateKey)]
  })
]
const [hsApp, edApp] = targets

// The attacker's own key pair, and the JWK (with its kid) that it would like the service to trust.
const attacker = generateKeyPairSync('ed25519')
const attackerJwk = { ...attacker.publicKey.export({ format: 'jwk' }), kid: 'attacker-key', alg: 'EdDSA', use: 'sig' }

// An attacker's JWKS server: the service must never fetch from it (jku, x5u).
let fetches = 0
const jwksServer = createServer((_req, res) => {
  fetches++
  res.setHeader('content-type', 'application/json')
  res.end(JSON.stringify({ keys: [attackerJwk] }))
})
await new Promise<void>((resolve) => jwksServer.listen(0, '127.0.0.1', resolve))
t.teardown(() => { jwksServer.close() })
const attackerUrl = `http://127.0.0.1:${(jwksServer.address() as AddressInfo).port}/jwks.json`

const outcome = (res: LightMyRequestResponse) => ({
  status: res.statusCode,
  code: res.statusCode >= 400 ? res.json().code : undefined,
  challenge: res.headers['www-authenticate']
})
const unauthorized = (code: string) => ({ status: 401, code, challenge: /^Bearer/ })

const me = async (on: Target, token: string) => await on.app.inject({ method: 'GET', url: '/auth/me', headers: bearer(token) })

/**
 * Sends the token made from the victim's access claims to /auth/me and the one made from its
 * refresh claims to /auth/refresh, and expects `code` from both.
 */
async function rejects (t: Test, on: Target, forge: (claims: Record<string, unknown>) => string, code: string, what: string): Promise<void> {
  t.match(outcome(await me(on, forge(claimsOf(on.victim.access_token)))), unauthorized(code), `${on.name}: ${what}, on /auth/me`)
  t.match(outcome(await refresh(on.app, forge(claimsOf(on.victim.refresh_token)))), unauthorized(code), `${on.name}: ${what}, on /auth/refresh`)
}

t.test('control: tokens made here with the service\'s own key and header are accepted', async (t) => {
  for (const on of targets) {
    t.equal((await me(on, jws(on.header, claimsOf(on.victim.access_token), on.sign))).statusCode, 200, on.name)
  }
})

t.test('alg "none" (unsigned) → 401 TOKEN_INVALID', async (t) => {
  for (const on of targets) {
    for (const alg of ['none', 'None', 'NONE']) {
      await rejects(t, on, (claims) => jws({ ...on.header, alg }, claims, null), 'TOKEN_INVALID', `alg ${alg}`)
    }
  }
})

t.test('EdDSA app: HS256 signed with the public key (key confusion) → 401 TOKEN_INVALID', async (t) => {
  const spki = createPublicKey(edKey.publicKey).export({ type: 'spki', format: 'der' })
  const jwk = (await edApp.app.inject({ method: 'GET', url: '/.well-known/jwks.json' })).json().keys[0]
  const secrets: Array<[string, string | Buffer]> = [
    ['the PEM', edKey.publicKey], ['the PEM, trimmed', edKey.publicKey.trim()], ['the DER', spki],
    ['the JWK JSON', JSON.stringify(jwk)], ['the raw x', Buffer.from(jwk.x, 'base64url')]
  ]
  for (const [what, secret] of secrets) {
    await rejects(t, edApp, (claims) => jws({ ...edApp.header, alg: 'HS256' }, claims, hmac(secret)), 'TOKEN_INVALID', `HMAC keyed with ${what}, with the kid`)
    await rejects(t, edApp, (claims) => jws({ alg: 'HS256', typ: 'JWT' }, claims, hmac(secret)), 'TOKEN_INVALID', `HMAC keyed with ${what}, without kid`)
  }
})

t.test('a tampered payload → 401 TOKEN_INVALID', async (t) => {
  for (const on of targets) {
    const other = await newSession(on.app)
    for (const token of [on.victim.access_token, on.victim.refresh_token]) {
      const [header, payload, signature] = token.split('.')
      const swapped = b64({ ...JSON.parse(Buffer.from(payload, 'base64url').toString()), sub: other.user.id })
      const res = claimsOf(token).type === 'access' ? await me(on, `${header}.${swapped}.${signature}`) : await refresh(on.app, `${header}.${swapped}.${signature}`)
      t.match(outcome(res), unauthorized('TOKEN_INVALID'), `${on.name}: ${claimsOf(token).type} token with another sub`)
    }
  }
})

t.test('a stripped signature (header.payload.) → 401 TOKEN_INVALID', async (t) => {
  for (const on of targets) {
    await rejects(t, on, (claims) => jws(on.header, claims, null), 'TOKEN_INVALID', 'no signature')
    await rejects(t, on, (claims) => jws(on.header, claims, null).slice(0, -1), 'TOKEN_INVALID', 'no signature part')
  }
})

t.test('a kid the service does not have → 401 TOKEN_INVALID, even when signed with the service\'s own key', async (t) => {
  const kids = ['unknown-kid', '../../etc/passwd', '/dev/null', "x' UNION SELECT 'secret", '__proto__', 'constructor']
  for (const kid of kids) {
    // EdDSA app: a genuine signature, but a kid naming no configured key.
    await rejects(t, edApp, (claims) => jws({ ...edApp.header, kid }, claims, edApp.sign), 'TOKEN_INVALID', `kid ${kid}`)
    // The classic path kid: HMAC with the contents of /dev/null (nothing).
    for (const on of targets) {
      await rejects(t, on, (claims) => jws({ alg: 'HS256', typ: 'JWT', kid }, claims, hmac('')), 'TOKEN_INVALID', `kid ${kid}, HMAC with an empty key`)
    }
  }
  await rejects(t, edApp, (claims) => jws({ ...edApp.header, kid: 12345 }, claims, edApp.sign), 'TOKEN_INVALID', 'a kid that is not a string')
})

t.test('jku, x5u and jwk headers carrying the attacker\'s key → 401 TOKEN_INVALID, and nothing is fetched', async (t) => {
  const headers: Array<[string, object]> = [
    ['jwk', { alg: 'EdDSA', typ: 'JWT', kid: attackerJwk.kid, jwk: attackerJwk }],
    ['jku', { alg: 'EdDSA', typ: 'JWT', kid: attackerJwk.kid, jku: attackerUrl }],
    ['x5u', { alg: 'EdDSA', typ: 'JWT', kid: attackerJwk.kid, x5u: attackerUrl }],
    ['jwk with the service\'s kid', { ...edApp.header, jwk: attackerJwk }],
    ['jku with the service\'s kid', { ...edApp.header, jku: attackerUrl }]
  ]
  for (const on of targets) {
    for (const [what, header] of headers) {
      await rejects(t, on, (claims) => jws(header, claims, ed25519(attacker.privateKey)), 'TOKEN_INVALID', what)
    }
  }
  t.equal(fetches, 0, 'the attacker\'s server got no request')
})

t.test('HS256 app: a token with jku/jwk headers is still verified with the secret only', async (t) => {
  const header = { ...hsApp.header, jku: attackerUrl, jwk: attackerJwk, kid: 'attacker-key' }
  t.equal((await me(hsApp, jws(header, claimsOf(hsApp.victim.access_token), hsApp.sign))).statusCode, 200, 'signed with the secret: accepted, headers ignored')
  await rejects(t, hsApp, (claims) => jws({ ...header, alg: 'EdDSA' }, claims, ed25519(attacker.privateKey)), 'TOKEN_INVALID', 'signed with the attacker\'s key')
  t.equal(fetches, 0)
})

t.test('a token of the other type → 401 TOKEN_INVALID', async (t) => {
  for (const on of targets) {
    t.match(outcome(await me(on, on.victim.refresh_token)), unauthorized('TOKEN_INVALID'), `${on.name}: a refresh token on /auth/me`)
    t.match(outcome(await refresh(on.app, on.victim.access_token)), unauthorized('TOKEN_INVALID'), `${on.name}: an access token on /auth/refresh`)
    await rejects(t, on, (claims) => jws(on.header, { ...claims, type: 'id' }, on.sign), 'TOKEN_INVALID', 'type "id"')
  }
})

t.test('a wrong issuer → 401 TOKEN_INVALID', async (t) => {
  for (const on of targets) {
    await rejects(t, on, (claims) => jws(on.header, { ...claims, iss: 'someone-else' }, on.sign), 'TOKEN_INVALID', 'iss someone-else')
    await rejects(t, on, (claims) => jws(on.header, { ...claims, iss: undefined }, on.sign), 'TOKEN_INVALID', 'no iss')
  }
})

t.test('a wrong audience → 401 TOKEN_INVALID', async (t) => {
  for (const on of targets) {
    await rejects(t, on, (claims) => jws(on.header, { ...claims, aud: 'another-service' }, on.sign), 'TOKEN_INVALID', 'aud another-service')
    await rejects(t, on, (claims) => jws(on.header, { ...claims, aud: undefined }, on.sign), 'TOKEN_INVALID', 'no aud')
  }
})

t.test('an expired token → 401 TOKEN_EXPIRED; expired and badly signed → TOKEN_INVALID', async (t) => {
  const expired = (claims: Record<string, unknown>) => ({ ...claims, iat: now() - 1000, exp: now() - 100 })
  for (const on of targets) {
    await rejects(t, on, (claims) => jws(on.header, expired(claims), on.sign), 'TOKEN_EXPIRED', 'expired')
    await rejects(t, on, (claims) => jws(on.header, expired(claims), ed25519(attacker.privateKey)), 'TOKEN_INVALID', 'expired, signed by the attacker')
  }
})

t.test('claims out of a date\'s range (exp -1e308, nbf 1e308), genuinely signed → 401 TOKEN_INVALID, never a 500', async (t) => {
  // fast-jwt formats these as dates in its error message, and a Date that far out throws a RangeError.
  for (const on of targets) {
    for (const odd of [{ exp: -1e308 }, { nbf: 1e308 }]) {
      await rejects(t, on, (claims) => jws(on.header, { ...claims, ...odd }, on.sign), 'TOKEN_INVALID', JSON.stringify(odd))
    }
  }
})

t.test('after every attack, the victims\' sessions are untouched: their refresh tokens still work', async (t) => {
  for (const on of targets) {
    t.equal((await refresh(on.app, on.victim.refresh_token)).statusCode, 200, on.name)
  }
})
