import t from 'tap'
import { createHash, createPublicKey, verify, type JsonWebKey } from 'node:crypto'
import { createVerifier } from 'fast-jwt'
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import { publicJwk } from '../src/tokens.js'
import { bearer, build, claimsOf, createDatabase, newSession, pemKeyPair, refresh, type KeyKind } from './helper.js'

// Signing with JWT_PRIVATE_KEY (JWT_SECRET_KEY unset: an empty value means unset), the JWKS, and
// key rotation. Each app has a database of its own, or follows the previous one on it once that
// one is closed: an embedded database serves one app at a time.

const headerOf = (token: string) => JSON.parse(Buffer.from(token.split('.')[0], 'base64url').toString())
const me = async (app: FastifyInstance, token: string) => await app.inject({ method: 'GET', url: '/auth/me', headers: bearer(token) })
const getJwks = async (app: FastifyInstance) => await app.inject({ method: 'GET', url: '/.well-known/jwks.json' })
const outcome = (res: LightMyRequestResponse) => ({ status: res.statusCode, code: res.statusCode >= 400 ? res.json().code : undefined })
const kids = async (app: FastifyInstance) => (await getJwks(app)).json().keys.map((k: { kid: string }) => k.kid)

/** Settings for an app that signs with `privateKey` and has no shared secret. */
const keyEnv = (privateKey: string, extra: Record<string, string> = {}) => ({ JWT_PRIVATE_KEY: privateKey, JWT_SECRET_KEY: '', ...extra })

/** RFC 7638 thumbprint of a public key, computed here independently of the service. */
function thumbprint (publicKeyPem: string): string {
  const { kty, crv, x, y, n, e } = createPublicKey(publicKeyPem).export({ format: 'jwk' })
  const members = kty === 'RSA' ? { e, kty, n } : kty === 'EC' ? { crv, kty, x, y } : { crv, kty, x }
  return createHash('sha256').update(JSON.stringify(members)).digest('base64url')
}

/** What a third party does: verify a token's signature with a key from the JWKS, by hand. */
function verifiedWithJwk (token: string, jwk: JsonWebKey): boolean {
  const [header, payload, signature] = token.split('.')
  const key = createPublicKey({ key: jwk, format: 'jwk' })
  const data = Buffer.from(`${header}.${payload}`)
  const sig = Buffer.from(signature, 'base64url')
  if (jwk.alg === 'EdDSA') return verify(null, data, key, sig)
  if (jwk.alg === 'ES256') return verify('sha256', data, { key, dsaEncoding: 'ieee-p1363' }, sig)
  if (jwk.alg === 'RS256') return verify('sha256', data, key, sig)
  return false
}

t.test('the kid is the RFC 7638 thumbprint (the RFC\'s own example key)', async (t) => {
  const n = '0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw'
  const jwk = publicJwk(createPublicKey({ key: { kty: 'RSA', n, e: 'AQAB' }, format: 'jwk' }), 'RS256')
  t.equal(jwk.kid, 'NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs')
})

const KINDS: Array<[KeyKind, string]> = [['Ed25519', 'EdDSA'], ['P-256', 'ES256'], ['RSA-2048', 'RS256']]

for (const [kind, alg] of KINDS) {
  t.test(`${kind}: tokens are ${alg} with the key's thumbprint as kid; me and refresh work; a third party verifies them with the JWKS`, async (t) => {
    const key = pemKeyPair(kind)
    const kid = thumbprint(key.publicKey)
    const app = await build(t, await createDatabase(t), keyEnv(key.privateKey))
    const session = await newSession(app)
    for (const token of [session.access_token, session.refresh_token]) t.same(headerOf(token), { alg, typ: 'JWT', kid })

    t.equal((await me(app, session.access_token)).statusCode, 200, 'me')
    const refreshed = await refresh(app, session.refresh_token)
    t.equal(refreshed.statusCode, 200, 'refresh')
    t.same(headerOf(refreshed.json().access_token), { alg, typ: 'JWT', kid })
    t.equal((await me(app, refreshed.json().access_token)).statusCode, 200, 'me with the refreshed access token')

    const res = await getJwks(app)
    t.equal(res.statusCode, 200)
    t.equal(res.headers['cache-control'], 'public, max-age=300')
    t.equal(res.headers['content-type'], 'application/json; charset=utf-8')
    const { keys } = res.json()
    t.equal(keys.length, 1)
    t.match(keys[0], { kid, alg, use: 'sig', kty: kind === 'Ed25519' ? 'OKP' : kind === 'P-256' ? 'EC' : 'RSA' })
    t.notOk('d' in keys[0] || 'p' in keys[0], 'no private member')

    t.ok(verifiedWithJwk(session.access_token, keys[0]), 'crypto.verify with the JWK')
    const pem = createPublicKey({ key: keys[0], format: 'jwk' }).export({ type: 'spki', format: 'pem' }) as string
    const claims = createVerifier({ key: pem, algorithms: [alg as 'EdDSA'] })(session.access_token)
    t.match(claims, { sub: session.user.id, type: 'access', iss: 'auth-service' }, 'fast-jwt with the JWK')
  })
}

t.test('the kid stays the same across restarts with the same key, and tokens keep working', async (t) => {
  const databaseUrl = await createDatabase(t)
  const key = pemKeyPair('Ed25519')
  const first = await build(t, databaseUrl, keyEnv(key.privateKey))
  const kid = (await getJwks(first)).json().keys[0].kid
  const session = await newSession(first)
  await first.close()
  const second = await build(t, databaseUrl, keyEnv(key.privateKey))
  t.equal((await getJwks(second)).json().keys[0].kid, kid)
  t.equal((await me(second, session.access_token)).statusCode, 200)
  t.equal((await refresh(second, session.refresh_token)).statusCode, 200)
})

t.test('rotation without logging anyone out: the retired key in JWT_PUBLIC_KEYS_EXTRA still verifies; once removed, its tokens → 401 TOKEN_INVALID', async (t) => {
  const databaseUrl = await createDatabase(t)
  const key1 = pemKeyPair('Ed25519')
  const key2 = pemKeyPair('P-256') // a rotation may change the key type too
  const [kid1, kid2] = [thumbprint(key1.publicKey), thumbprint(key2.publicKey)]

  const a = await build(t, databaseUrl, keyEnv(key1.privateKey))
  const active = await newSession(a) // refreshes on B
  const idle = await newSession(a) // does nothing until C
  await a.close()

  const b = await build(t, databaseUrl, keyEnv(key2.privateKey, { JWT_PUBLIC_KEYS_EXTRA: key1.publicKey }))
  t.same(await kids(b), [kid2, kid1], 'the JWKS lists the new key first, then the retired one')
  t.equal((await me(b, active.access_token)).statusCode, 200, 'an access token signed with key1 works')
  const refreshed = await refresh(b, active.refresh_token)
  t.equal(refreshed.statusCode, 200, 'a refresh token signed with key1 refreshes')
  t.equal(headerOf(refreshed.json().access_token).kid, kid2, 'and the new tokens are signed with key2')
  t.equal(headerOf(refreshed.json().refresh_token).kid, kid2)
  await b.close()

  const c = await build(t, databaseUrl, keyEnv(key2.privateKey))
  t.same(await kids(c), [kid2])
  t.same(outcome(await me(c, idle.access_token)), { status: 401, code: 'TOKEN_INVALID' }, 'key1 access token')
  t.same(outcome(await refresh(c, idle.refresh_token)), { status: 401, code: 'TOKEN_INVALID' }, 'key1 refresh token')
  t.equal((await me(c, refreshed.json().access_token)).statusCode, 200, 'key2 tokens work')
  t.equal((await refresh(c, refreshed.json().refresh_token)).statusCode, 200)
})

t.test('from HS256 to a private key: publish the key, sign with it while JWT_SECRET_KEY still verifies older tokens, then drop the secret', async (t) => {
  const databaseUrl = await createDatabase(t)
  const key = pemKeyPair('Ed25519')
  const kid = thumbprint(key.publicKey)
  const hs = await build(t, databaseUrl) // JWT_SECRET_KEY only
  const old = await newSession(hs)
  t.same(headerOf(old.access_token), { alg: 'HS256', typ: 'JWT' })
  await hs.close()

  // Step 1: the key's public half in JWT_PUBLIC_KEYS_EXTRA; still signing with the secret.
  const published = await build(t, databaseUrl, { JWT_PUBLIC_KEYS_EXTRA: key.publicKey })
  t.same(await kids(published), [kid], 'the JWKS lists the upcoming key')
  t.same(headerOf((await newSession(published)).access_token), { alg: 'HS256', typ: 'JWT' }, 'tokens are still HS256')
  await published.close()

  // Step 2: JWT_PRIVATE_KEY set, and JWT_SECRET_KEY kept (it comes from the test settings).
  const both = await build(t, databaseUrl, { JWT_PRIVATE_KEY: key.privateKey })
  t.same(await kids(both), [kid], 'the JWKS lists the key, never the secret')
  t.equal((await me(both, old.access_token)).statusCode, 200, 'an HS256 access token still works')
  const refreshed = await refresh(both, old.refresh_token)
  t.equal(refreshed.statusCode, 200, 'an HS256 refresh token still refreshes')
  const { access_token: access, refresh_token: refreshToken } = refreshed.json()
  t.same(headerOf(access), { alg: 'EdDSA', typ: 'JWT', kid }, 'into tokens signed with the key')
  const hsWithKid = `${Buffer.from(JSON.stringify({ alg: 'HS256', typ: 'JWT', kid })).toString('base64url')}.${old.access_token.split('.').slice(1).join('.')}`
  t.same(outcome(await me(both, hsWithKid)), { status: 401, code: 'TOKEN_INVALID' }, 'a token with a kid never falls back to the secret')
  await both.close()

  // A replica still at step 1 accepts the new tokens: a rolling deploy signs nobody out.
  const lagging = await build(t, databaseUrl, { JWT_PUBLIC_KEYS_EXTRA: key.publicKey })
  t.equal((await me(lagging, access)).statusCode, 200)
  await lagging.close()

  // Step 3, once JWT_REFRESH_TTL has passed: the secret removed, HS256 tokens refused.
  const keyOnly = await build(t, databaseUrl, keyEnv(key.privateKey))
  t.same(outcome(await me(keyOnly, old.access_token)), { status: 401, code: 'TOKEN_INVALID' }, 'an HS256 token')
  t.equal((await me(keyOnly, access)).statusCode, 200)
  t.equal((await refresh(keyOnly, refreshToken)).statusCode, 200)
})

t.test('a shared secret: the JWKS is empty, with the cache header, and tokens carry no kid', async (t) => {
  const app = await build(t, await createDatabase(t))
  const res = await getJwks(app)
  t.equal(res.statusCode, 200)
  t.same(res.json(), { keys: [] })
  t.equal(res.headers['cache-control'], 'public, max-age=300')
  const { access_token: token } = await newSession(app)
  t.same(headerOf(token), { alg: 'HS256', typ: 'JWT' })
  t.match(claimsOf(token), { type: 'access' })
})
