import { createHmac } from 'node:crypto'
import diagnostics from 'node:diagnostics_channel'
import { STATUS_CODES } from 'node:http'
import net from 'node:net'
import fc from 'fast-check'
import t, { type Test } from 'tap'
import type { FastifyInstance } from 'fastify'
import { build, claimsOf, createDatabase, PASSWORD, SECRET, signIn, signUp, spawnServer } from '../helper.js'

// Issue #7, bad input at volume: every route the app registers gets thousands of generated
// requests (wrong types, huge and unicode strings, deep nesting, duplicate keys, invalid UTF-8,
// odd headers, paths and tokens). Never a 5xx, every error the contract's shape, a 2xx only
// where one is possible. FUZZ_SEED=<n> replays a run; FUZZ_SCALE=<x> multiplies the run counts.

const SEED = Number(process.env.FUZZ_SEED ?? Date.now() % 2 ** 31)
const SCALE = Number(process.env.FUZZ_SCALE ?? 1)
const runs = (n: number): number => Math.max(1, Math.round(n * SCALE))
t.comment(`fast-check seed ${SEED} (FUZZ_SEED=${SEED} replays this run)`)

// ── The contract (CONTRACT.md, "Errors") ────────────────────────────────────────────────────

// Every error code, with the one status the contract gives it.
// The status each code comes with. A few codes also come with the more precise HTTP status of the
// same kind of fault (OTHER_STATUS): a Range the docs' files cannot satisfy (416), an Expect other
// than 100-continue (417), a request too slow to arrive (408), headers over the limit (431).
const CODE_STATUS: Record<string, number> = {
  VALIDATION_FAILED: 400,
  EMAIL_TAKEN: 409,
  INVALID_CREDENTIALS: 401,
  TOKEN_MISSING: 401,
  TOKEN_INVALID: 401,
  TOKEN_EXPIRED: 401,
  TOKEN_REVOKED: 401,
  RATE_LIMITED: 429,
  PAYLOAD_TOO_LARGE: 413,
  UNSUPPORTED_MEDIA_TYPE: 415,
  NOT_FOUND: 404,
  SERVICE_UNAVAILABLE: 503,
  INTERNAL: 500,
  EMAIL_NOT_VERIFIED: 403,
  MFA_REQUIRED: 403,
  MFA_ALREADY_ENABLED: 409,
  ACCOUNT_DISABLED: 403
}
// A mailed link's token, dead or malformed, is a 400 (the contract's "Email and account recovery").
const OTHER_STATUS: Record<string, number[]> = { VALIDATION_FAILED: [408, 416, 417], PAYLOAD_TOO_LARGE: [431], TOKEN_INVALID: [400], TOKEN_EXPIRED: [400] }
const ERROR_KEYS = 'code,error,message,statusCode'
const JSON_TYPE = 'application/json; charset=utf-8'

/** What makes an error answer differ from the contract's `{ statusCode, error, code, message }`; [] if nothing. */
function errorShapeProblems (status: number, contentType: unknown, body: string, head: boolean): string[] {
  const problems: string[] = []
  if (contentType !== JSON_TYPE) problems.push(`content-type ${JSON.stringify(contentType)}`)
  if (head) return problems // a HEAD answer has no body
  let json: unknown
  try {
    json = JSON.parse(body)
  } catch {
    return [...problems, `body is not JSON: ${JSON.stringify(body.slice(0, 80))}`]
  }
  if (json === null || typeof json !== 'object' || Array.isArray(json)) return [...problems, 'body is not a JSON object']
  const o = json as Record<string, unknown>
  const keys = Object.keys(o).sort().join(',')
  // Sign-in's MFA_REQUIRED also holds the mfa_token.
  if (keys !== ERROR_KEYS && !(o.code === 'MFA_REQUIRED' && keys === 'code,error,message,mfa_token,statusCode')) problems.push(`keys ${keys}`)
  if (o.statusCode !== status) problems.push(`statusCode ${JSON.stringify(o.statusCode)} for a ${status}`)
  if (o.error !== STATUS_CODES[status]) problems.push(`error ${JSON.stringify(o.error)} for a ${status}`)
  if (typeof o.code !== 'string' || !Object.hasOwn(CODE_STATUS, o.code)) problems.push(`code ${JSON.stringify(o.code)} is not one of the contract's`)
  else if (CODE_STATUS[o.code] !== status && OTHER_STATUS[o.code]?.includes(status) !== true) problems.push(`code ${o.code} with status ${status}`)
  if (typeof o.message !== 'string' || o.message === '') problems.push('message is not a non-empty string')
  return problems
}

// ── The app, its routes, and a few real users and sessions ──────────────────────────────────

const databaseUrl = await createDatabase(t)
// The cheapest argon2 the settings allow: thousands of accepted sign-ups and sign-ins stay fast.
// Per-IP rate limits stay off (testEnv's default): with them on, most inputs would only meet the
// limiter's 429 instead of the routes' own handling (test/abuse.test.ts covers the limits).
const FAST_ARGON2 = { ARGON2_MEMORY_KIB: '1024', ARGON2_ITERATIONS: '1' }
// The admin API exists (and is fuzzed): the key is among the tokens requests may carry.
const ADMIN_KEY = 'admin-key-for-the-fuzzer-0123456789abcdefghij'

// Routes are enumerated from the app itself, so a new route cannot be left without a generator:
// Fastify announces each new instance on this channel before any plugin is registered.
const routes: Array<{ method: string, url: string }> = []
let matchedRoute: string | undefined // the route pattern that handled the last injected request
const initChannel = diagnostics.channel('fastify.initialization')
const onInit = (message: unknown): void => {
  const { fastify } = message as { fastify: FastifyInstance }
  fastify.addHook('onRoute', (route) => {
    for (const method of [route.method].flat()) routes.push({ method, url: route.url })
  })
  fastify.addHook('onRequest', (request, _reply, done) => { matchedRoute = request.routeOptions.url; done() })
}
initChannel.subscribe(onInit)
const app = await build(t, databaseUrl, { ...FAST_ARGON2, ADMIN_API_KEYS: ADMIN_KEY })
initChannel.unsubscribe(onInit)

const users: Array<{ id: string, email: string }> = []
const accessTokens: string[] = []
const refreshTokens: string[] = []
const sessionIds: string[] = []
for (let i = 0; i < 3; i++) {
  const user = await signUp(app, { email: `fuzz-seed-${i}-${SEED}@example.com` })
  users.push(user)
  for (let s = 0; s < 3; s++) {
    const session = await signIn(app, user.email)
    accessTokens.push(session.access_token)
    refreshTokens.push(session.refresh_token)
    sessionIds.push(String(claimsOf(session.access_token).sid))
  }
}

// What the oracle knows: the accounts that exist and the passwords they may have.
// Strings are compared as the service stores them: UTF-8, lone surrogates replaced.
const wellFormed = (s: string): string => Buffer.from(s, 'utf8').toString('utf8')
const passwordsByEmail = new Map<string, Set<string>>(users.map((u) => [u.email, new Set([PASSWORD])]))
const emailById = new Map<string, string>(users.map((u) => [u.id, u.email]))

// ── Generators ──────────────────────────────────────────────────────────────────────────────

const pick = <T>(...values: T[]): fc.Arbitrary<T> => fc.constantFrom(...values)

const oddChar: fc.Arbitrary<string> = fc.oneof(
  fc.string({ unit: 'binary', minLength: 1, maxLength: 1 }), // any code point
  fc.integer({ min: 0, max: 0x1f }).map((c) => String.fromCharCode(c)), // C0 controls
  fc.integer({ min: 0x7f, max: 0x9f }).map((c) => String.fromCharCode(c)), // DEL, C1 controls
  fc.integer({ min: 0xd800, max: 0xdfff }).map((c) => String.fromCharCode(c)), // lone surrogates
  pick('\u0000', '\u200b', '\u202e', '\ufeff', '\u2028', '\uffff', '"', '\\', '%', '/', '@', '.', ' ', '\t',
    'é', 'e\u0301', '👩‍👩‍👧', 'İ', 'ß', 'ﬃ', '💩', '%ZZ', '%00', '\r\n', '{}', '[]')
)
const oddString: fc.Arbitrary<string> = fc.oneof(
  { weight: 12, arbitrary: fc.string({ unit: oddChar, maxLength: 24 }) },
  { weight: 6, arbitrary: fc.string({ unit: 'grapheme', maxLength: 24 }) },
  // Huge: past the schemas' maxLength, the 16 KiB body limit, and far past it.
  { weight: 1, arbitrary: fc.tuple(oddChar, pick(101, 255, 1001, 1025, 8193, 16385, 40_000)).map(([c, n]) => c.repeat(n)) }
)
const jsonish: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 3, arbitrary: oddString },
  { weight: 1, arbitrary: fc.integer() },
  { weight: 1, arbitrary: fc.double() },
  { weight: 1, arbitrary: pick<unknown>(null, true, false, 0, -1, 2 ** 53, 1e308, '', ' ', 'null', '[]', '{}') },
  { weight: 1, arbitrary: fc.array(fc.jsonValue({ maxDepth: 2 }), { maxLength: 4 }) },
  { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 3 }) }
)

/** Percent-encodes every byte of the UTF-8 of `s` but the unreserved characters. */
const encodeSegment = (s: string): string =>
  [...Buffer.from(s, 'utf8')].map((b) => /[\w.~-]/.test(String.fromCharCode(b)) ? String.fromCharCode(b) : `%${b.toString(16).toUpperCase().padStart(2, '0')}`).join('')
/** What a header value can be on the wire: Node reads header bytes as latin1; CR, LF and NUL never pass its parser. */
const wireText = (s: string): string => Buffer.from(s, 'utf8').toString('latin1').replace(/[^\t\x20-\x7e\x80-\xff]/g, '')
const wireValue = oddString.map(wireText)

const b64u = (s: string | Buffer): string => Buffer.from(s).toString('base64url')
const hs256 = (input: string, key: string): string => createHmac('sha256', key).update(input).digest('base64url')
const now = Math.floor(Date.now() / 1000)
const claim = <T>(valid: fc.Arbitrary<T>): fc.Arbitrary<unknown> =>
  fc.oneof({ weight: 8, arbitrary: valid }, { weight: 1, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary: jsonish })

// Structurally valid-looking JWTs with random headers and claims. Most are signed with the
// service's own secret, so the claim checks behind the signature are fuzzed too.
const jwtArb: fc.Arbitrary<string> = fc.record({
  header: fc.record({
    alg: fc.oneof({ weight: 6, arbitrary: fc.constant<unknown>('HS256') },
      { weight: 2, arbitrary: pick<unknown>('none', 'None', 'nOnE', 'HS384', 'HS512', 'RS256', 'ES256', 'EdDSA', 'PS256', '') },
      { weight: 1, arbitrary: jsonish }),
    typ: fc.option(fc.oneof(pick<unknown>('JWT', 'jwt', 'at+jwt'), jsonish), { nil: undefined }),
    kid: fc.option(fc.oneof(pick<unknown>('../../../../dev/null', "' OR '1'='1", 'k'.repeat(10_000), '__proto__', 'constructor'), jsonish), { freq: 4, nil: undefined }),
    jku: fc.option(fc.constant('http://127.0.0.1:1/jwks.json'), { freq: 6, nil: undefined }),
    jwk: fc.option(fc.constant({ kty: 'oct', k: b64u(SECRET) }), { freq: 6, nil: undefined }),
    crit: fc.option(fc.constant(['exp']), { freq: 8, nil: undefined })
  }),
  claims: fc.record({
    sub: claim(fc.oneof(pick(...users.map((u) => u.id)), fc.uuid(), fc.uuid().map((u) => u.toUpperCase()))),
    sid: claim(fc.oneof(pick(...sessionIds), fc.uuid())),
    type: claim(pick('access', 'refresh')),
    jti: claim(fc.oneof(fc.uuid(), fc.base64String({ maxLength: 40 }))),
    iat: claim(fc.oneof(fc.constant(now), pick(0, -1, now + 86_400, 1e308))),
    exp: claim(fc.oneof(fc.constant(now + 900), pick(now - 1, 0, now + 0.5, 2 ** 53, 1e308, -1e308))),
    iss: claim(fc.oneof(fc.constant('auth-service'), pick('Auth-Service', '', 'evil', 'auth-service '))),
    aud: fc.option(jsonish, { freq: 4, nil: undefined }),
    nbf: fc.option(pick<unknown>(0, now + 86_400, 'soon'), { freq: 6, nil: undefined })
  }),
  extra: fc.dictionary(fc.string({ maxLength: 8 }), jsonish, { maxKeys: 2 }),
  signature: pick('secret', 'secret', 'secret', 'other-secret', 'empty', 'garbage', 'truncated'),
  encoding: pick('json', 'json', 'json', 'json', 'json', 'invalid-utf8', 'not-json', 'standard-base64', 'four-parts')
}).map(({ header, claims, extra, signature, encoding }) => {
  const headerJson = JSON.stringify(header)
  const h = encoding === 'invalid-utf8'
    ? b64u(Buffer.concat([Buffer.from(headerJson.slice(0, -1)), Buffer.from([0xff, 0xc3, 0x28, 0x7d])]))
    : b64u(headerJson)
  const p = encoding === 'not-json' ? b64u('{"sub": not json') : b64u(JSON.stringify({ ...extra, ...claims }))
  const input = `${h}.${p}`
  const sig = {
    secret: hs256(input, SECRET),
    'other-secret': hs256(input, 'another-secret-that-is-long-enough-0123456'),
    empty: '',
    garbage: 'c2lnbmF0dXJl',
    truncated: hs256(input, SECRET).slice(0, -2)
  }[signature] ?? ''
  const token = `${input}.${sig}`
  if (encoding === 'standard-base64') return token.replaceAll('-', '+').replaceAll('_', '/') + '=='
  return encoding === 'four-parts' ? `${token}.${sig}` : token
})

const tokenish: fc.Arbitrary<string> = fc.oneof(
  { weight: 3, arbitrary: pick(...refreshTokens) },
  { weight: 4, arbitrary: pick(...accessTokens) },
  { weight: 3, arbitrary: jwtArb },
  { weight: 2, arbitrary: oddString },
  { weight: 1, arbitrary: fc.base64String({ maxLength: 300 }) },
  { weight: 2, arbitrary: fc.constant(ADMIN_KEY) }
)

// Emails: new ones (sign-ups may succeed), the real ones in other case and padding, and junk.
const newEmail = fc.oneof(
  fc.emailAddress(),
  fc.uuid().map((u) => `fuzz-${u}@example.com`),
  fc.tuple(fc.string({ unit: 'grapheme', minLength: 1, maxLength: 20 }), fc.domain()).map(([l, d]) => `${l}@${d}`)
)
const realEmail = fc.tuple(pick(...users.map((u) => u.email)), pick('', ' ', '\t', ' \n ')).chain(([e, pad]) => fc.mixedCase(fc.constant(e)).map((m) => pad + m + pad))
const emailish = fc.oneof({ weight: 3, arbitrary: newEmail }, { weight: 2, arbitrary: realEmail }, { weight: 2, arbitrary: oddString })
const passwordish = fc.oneof(
  { weight: 3, arbitrary: fc.constant(PASSWORD) },
  { weight: 3, arbitrary: fc.string({ minLength: 8, maxLength: 64 }) },
  { weight: 1, arbitrary: pick('password', '12345678', 'password1', 'qwertyuiop', 'iloveyou', 'short') },
  { weight: 1, arbitrary: pick(1023, 1024, 1025).map((n) => 'p'.repeat(n)) },
  { weight: 2, arbitrary: oddString }
)
const nameish = fc.oneof(
  fc.string({ unit: 'grapheme', minLength: 1, maxLength: 100 }),
  pick('Fuzz User', ' ', '', '\u0000', 'x'.repeat(101), ' '.repeat(5) + 'padded' + ' '.repeat(5)),
  oddString
)
const FIELD_VALUES: Record<string, fc.Arbitrary<unknown>> = {
  name: nameish,
  email: emailish,
  password: passwordish,
  current_password: passwordish,
  new_password: passwordish,
  refresh_token: tokenish
}
// A NUL inside an otherwise plausible value: PostgreSQL text cannot hold one.
const withNul = (arb: fc.Arbitrary<unknown>): fc.Arbitrary<unknown> => fc.tuple(arb, fc.nat()).map(([v, i]) => {
  if (typeof v !== 'string') return v
  const at = i % (v.length + 1)
  return `${v.slice(0, at)}\u0000${v.slice(at)}`
})
const fieldValue = (field: string): fc.Arbitrary<unknown> => fc.oneof(
  { weight: 8, arbitrary: FIELD_VALUES[field] ?? jsonish },
  { weight: 2, arbitrary: jsonish },
  { weight: 1, arbitrary: withNul(FIELD_VALUES[field] ?? jsonish) }
)
const keyish = (fields: string[]): fc.Arbitrary<string> =>
  fc.oneof(pick(...fields, 'constructor', 'prototype', 'toString', '', ' ', 'x'), oddString)

// Request bodies, as the raw text (or bytes) a client sends.
const objectBody = (fields: string[]): fc.Arbitrary<string> => fc.tuple(
  fc.record(Object.fromEntries(fields.map((f) => [f, fc.option(fieldValue(f), { freq: 5, nil: undefined })]))),
  fc.dictionary(keyish(fields), jsonish, { maxKeys: 3 })
).map(([known, extra]) => JSON.stringify({ ...extra, ...known }))

const duplicateKeys = (fields: string[]): fc.Arbitrary<string> =>
  fc.array(pick(...fields, ...fields, 'x').chain((k) => fieldValue(k).map((v) => `${JSON.stringify(k)}:${JSON.stringify(v) ?? 'null'}`)), { minLength: 2, maxLength: 8 })
    .map((pairs) => `{${pairs.join(',')}}`)

const protoKeys = (fields: string[]): fc.Arbitrary<string> =>
  fc.tuple(objectBody(fields), pick('"__proto__":{"isAdmin":true}', '"constructor":{"prototype":{"isAdmin":true}}', '"__proto__":null', '"__proto__":[]'))
    .map(([body, poison]) => body === '{}' ? `{${poison}}` : `{${poison},${body.slice(1)}`)

// Up to and past the body limit: 8,000 nested arrays fit in 16 KiB, 10,000 do not.
const deepNesting = (fields: string[]): fc.Arbitrary<string> =>
  fc.tuple(fc.oneof(fc.integer({ min: 1, max: 64 }), pick(1000, 5000, 8000, 8190, 10_000, 12_000)), pick('array', 'object', 'mixed', 'in-field', 'unclosed'), pick(...fields, 'x'))
    .map(([n, shape, field]) => {
      switch (shape) {
        case 'array': return '['.repeat(n) + ']'.repeat(n)
        case 'object': return '{"a":'.repeat(n) + '1' + '}'.repeat(n)
        case 'mixed': return '[{"a":'.repeat(n) + '0' + '}]'.repeat(n)
        case 'in-field': return `{${JSON.stringify(field)}:${'['.repeat(n)}${']'.repeat(n)}}`
        default: return '['.repeat(n)
      }
    })

// Around the 16 KiB limit (16384 accepted, 16385 → 413) and far past it.
const nearLimit = (fields: string[]): fc.Arbitrary<string> =>
  fc.tuple(objectBody(fields), fc.oneof(fc.integer({ min: -3, max: 3 }), pick(1000, 100_000))).map(([body, delta]) => {
    const base = body === '{}' ? '{"pad":""}' : `{"pad":"",${body.slice(1)}`
    const n = 16384 + delta - Buffer.byteLength(base)
    return n >= 0 ? base.replace('"pad":""', `"pad":"${'x'.repeat(n)}"`) : base
  })

const malformed = (fields: string[]): fc.Arbitrary<string> => fc.oneof(
  fc.tuple(objectBody(fields), fc.nat()).map(([b, i]) => b.slice(0, i % Math.max(1, b.length))),
  objectBody(fields).map((b) => b.replaceAll('"', "'")),
  objectBody(fields).map((b) => b.length > 2 ? `${b.slice(0, -1)},}` : '{,}'),
  objectBody(fields).map((b) => `/* comment */${b}`),
  objectBody(fields).map((b) => `\ufeff${b}`),
  pick('', ' ', '\n', 'null', 'true', '0', '-0', '1e999', '"x"', '[]', '[{}]', 'NaN', 'Infinity', '{', '}', '{"a"}', '{"a":}',
    '{"a":1,,}', 'undefined', '{"email":"a" "password":"b"}', '\u0000', '{"a":"\\ud800"}', '{"a":"\\u00"}', '{"a":"\\x41"}'),
  oddString
)

const bodyText = (fields: string[]): fc.Arbitrary<string> => fc.oneof(
  { weight: 8, arbitrary: objectBody(fields) },
  { weight: 2, arbitrary: duplicateKeys(fields) },
  { weight: 1, arbitrary: protoKeys(fields) },
  { weight: 2, arbitrary: deepNesting(fields) },
  { weight: 2, arbitrary: nearLimit(fields) },
  { weight: 3, arbitrary: malformed(fields) }
)

// Bytes that are never valid UTF-8: stray continuation bytes, overlong forms, surrogates, past U+10FFFF, truncated sequences.
const INVALID_UTF8 = [[0xff], [0xfe], [0x80], [0xbf], [0xc0, 0xaf], [0xc1, 0xbf], [0xe0, 0x80, 0xaf], [0xed, 0xa0, 0x80],
  [0xed, 0xbf, 0xbf], [0xf4, 0x90, 0x80, 0x80], [0xf8, 0x88, 0x80, 0x80, 0x80], [0xc3], [0xe2, 0x82], [0xf0, 0x9f, 0x92]]
const withInvalidUtf8 = (text: fc.Arbitrary<string>): fc.Arbitrary<Buffer> =>
  fc.tuple(text, fc.array(fc.tuple(fc.nat(), pick(...INVALID_UTF8)), { minLength: 1, maxLength: 4 })).map(([s, inserts]) => {
    let buf = Buffer.from(s, 'utf8')
    for (const [i, bytes] of inserts) {
      const at = i % (buf.length + 1)
      buf = Buffer.concat([buf.subarray(0, at), Buffer.from(bytes), buf.subarray(at)])
    }
    return buf
  })

// The simplest choice first in each oneof, with cross-shrinking: a counterexample sheds what it does not need.
const payloadArb = (fields: string[], bodyWeight: number): fc.Arbitrary<string | Buffer | undefined> => fc.oneof(
  { withCrossShrink: true },
  { weight: 2, arbitrary: fc.constant(undefined) },
  { weight: 8 * bodyWeight, arbitrary: bodyText(fields) },
  { weight: 2 * bodyWeight, arbitrary: withInvalidUtf8(bodyText(fields)) },
  { weight: bodyWeight, arbitrary: fc.uint8Array({ maxLength: 512 }).map((b) => Buffer.from(b)) }
)

const CONTENT_TYPES = ['application/json; charset=utf-8', 'APPLICATION/JSON', 'application/json;charset=UTF-8', 'application/json; charset=latin1',
  'application/json; charset=utf-16le', 'application/json; foo=bar; foo=baz', 'application/json ; charset=utf-8', 'application/json;',
  'application/json; charset="utf-8"', 'application/jsonx', 'application/json-patch+json', 'application/problem+json',
  'application/json, text/plain', 'text/json', 'text/plain', 'text/html', 'application/x-www-form-urlencoded',
  'multipart/form-data; boundary=----x', 'application/octet-stream', '*/*', 'application/*', '', ' ', ';', 'json']
const contentType: fc.Arbitrary<string | undefined> = fc.oneof(
  { withCrossShrink: true },
  { weight: 24, arbitrary: fc.constant('application/json') },
  { weight: 4, arbitrary: pick(...CONTENT_TYPES) },
  { weight: 1, arbitrary: wireValue },
  { weight: 2, arbitrary: fc.constant(undefined) }
)

// Authorization: every scheme spelling, spacing and trailer, real and forged tokens, junk, huge.
const authorization: fc.Arbitrary<string | undefined> = fc.oneof(
  { withCrossShrink: true },
  { weight: 3, arbitrary: fc.constant(undefined) },
  {
    weight: 6,
    arbitrary: fc.tuple(
      fc.oneof({ weight: 4, arbitrary: fc.constant('Bearer') }, { weight: 2, arbitrary: fc.mixedCase(fc.constant('bearer')) },
        { weight: 1, arbitrary: pick('Basic', 'Token', 'JWT', 'Digest', '', 'Bearer:', 'Bearer,') }, { weight: 1, arbitrary: wireValue }),
      fc.oneof({ weight: 6, arbitrary: fc.constant(' ') }, { weight: 1, arbitrary: pick('', '  ', '\t', ' \t ', '     ') }),
      fc.oneof({ weight: 6, arbitrary: tokenish.map(wireText) }, { weight: 1, arbitrary: pick('', 'null', 'undefined', '""') }),
      fc.oneof({ weight: 6, arbitrary: fc.constant('') }, { weight: 1, arbitrary: pick(' ', ' extra', ', Basic dXNlcjpwYXNz', ', Bearer x', '\t') })
    ).map(([scheme, space, token, trailer]) => scheme + space + token + trailer)
  },
  { weight: 1, arbitrary: wireValue },
  { weight: 1, arbitrary: pick(1000, 8000, 16_000, 70_000).map((n) => `Bearer ${'A'.repeat(n)}`) }
)

const option = <T>(arb: fc.Arbitrary<T>, freq = 3): fc.Arbitrary<T | undefined> => fc.option(arb, { freq, nil: undefined })
const extraHeaders = fc.record({
  'user-agent': option(fc.oneof(wireValue, pick(500, 4000).map((n) => 'UA'.repeat(n))), 2),
  'x-request-id': option(fc.oneof(wireValue, fc.uuid(), pick('r'.repeat(128), 'r'.repeat(129), 'id with space', '../../x'))),
  'x-forwarded-for': option(fc.oneof(wireValue, pick('1.2.3.4', '::1, 10.0.0.1', 'unknown', '999.999.999.999')), 4),
  accept: option(fc.oneof(wireValue, pick('*/*', 'text/html', 'application/xml', 'application/json;q=0')), 4),
  'accept-encoding': option(pick('gzip', 'br', 'deflate', 'identity;q=0', '*;q=0', 'x'), 4),
  'if-none-match': option(pick('*', '"x"', 'W/"abc"', 'garbage'), 6),
  'if-modified-since': option(pick('Thu, 01 Jan 2099 00:00:00 GMT', 'yesterday', ''), 6),
  range: option(pick('bytes=0-0', 'bytes=0-99999999', 'bytes=99999999-', 'bytes=-1', 'bytes=abc', 'bytes=5-1', 'bytes=0-1,2-3,4-5', 'items=0-1'), 6),
  'content-length': option(pick('0', '1', '-1', 'abc', '99999999999', '16385'), 12),
  'content-encoding': option(pick('gzip', 'br', 'identity', 'x'), 8),
  cookie: option(wireValue, 6),
  'x-http-method-override': option(pick('DELETE', 'PUT', 'GET'), 8)
})

const queryPart = fc.oneof(
  { weight: 3, arbitrary: pick('scope', 'all', 'ALL', 'access_token', 'refresh_token', 'email', '', 'a[b]', '__proto__', 'constructor') },
  { weight: 2, arbitrary: oddString.map(encodeSegment) },
  { weight: 1, arbitrary: pick('%', '%ZZ', '%E9', '%C3%28', '%00', '+', '==', '&', '?', '#') }
)
const queryArb = fc.array(fc.tuple(queryPart, fc.option(queryPart, { nil: undefined })), { minLength: 1, maxLength: 6 })
  .map((pairs) => pairs.map(([k, v]) => v === undefined ? k : `${k}=${v}`).join('&'))

/** What the oracle reads of an answer. */
interface Answer { statusCode: number, headers: Record<string, unknown>, body: string }

/** A request as a client could send it: header values as Node reads them off the wire (a few bad Content-Lengths aside, which only inject can send). */
interface Req {
  method: string
  url: string
  headers: Record<string, string>
  payload?: string | Buffer
}

const defined = (o: Record<string, string | undefined>): Record<string, string> =>
  Object.fromEntries(Object.entries(o).filter((e): e is [string, string] => e[1] !== undefined))

function requestArb (method: string, path: fc.Arbitrary<string>, fields: string[]): fc.Arbitrary<Req> {
  // Bodies matter where the route reads one; elsewhere they must be ignored, so send fewer.
  const bodyWeight = fields.length > 0 ? 4 : 1
  return fc.record({
    path,
    query: option(queryArb, 4),
    authorization,
    contentType,
    extra: extraHeaders,
    payload: payloadArb(fields.length > 0 ? fields : ['x'], bodyWeight)
  }).map(({ path, query, authorization, contentType, extra, payload }) => ({
    method,
    url: query === undefined ? path : `${path}?${query}`,
    headers: defined({ ...extra, authorization, 'content-type': contentType }),
    ...(payload !== undefined ? { payload } : {})
  }))
}

const sessionId = fc.oneof(
  { weight: 3, arbitrary: pick(...sessionIds) },
  { weight: 2, arbitrary: fc.uuid() },
  { weight: 1, arbitrary: pick(...sessionIds).map((s) => s.toUpperCase()) },
  { weight: 2, arbitrary: pick(...sessionIds).map((s) => `urn:uuid:${s}`) },
  { weight: 1, arbitrary: pick(...sessionIds).map((s) => `{${s}}`) },
  { weight: 1, arbitrary: pick(...sessionIds).map((s) => s.replaceAll('-', '')) },
  { weight: 1, arbitrary: pick('00000000-0000-0000-0000-000000000000', 'ffffffff-ffff-ffff-ffff-ffffffffffff', 'null', 'undefined', '1', '-1', 'current') },
  { weight: 2, arbitrary: fc.string({ unit: oddChar, maxLength: 12 }).map(encodeSegment).filter((s) => s.length > 0 && s.length <= 100) }
)
const STATIC_FILES = ['index.html', 'swagger-initializer.js', 'swagger-ui.css', 'swagger-ui-bundle.js', 'swagger-ui-standalone-preset.js',
  'favicon-32x32.png', 'oauth2-redirect.html', 'logo.svg', 'csp.json', 'index.css', 'nope.js', 'index.html.gz', '']
const staticName = fc.oneof(pick(...STATIC_FILES), fc.stringMatching(/^[a-z0-9._-]{1,20}$/))

// One entry per route pattern: the paths to send to it and the body fields it reads. A route the
// app registers that is missing here fails the test below.
const GENERATORS: Record<string, { path: fc.Arbitrary<string>, fields: string[] }> = {
  '/auth/sign-up': { path: fc.constant('/auth/sign-up'), fields: ['name', 'email', 'password'] },
  '/auth/sign-in': { path: fc.constant('/auth/sign-in'), fields: ['email', 'password'] },
  '/auth/refresh': { path: fc.constant('/auth/refresh'), fields: ['refresh_token'] },
  '/auth/sign-out': { path: fc.constant('/auth/sign-out'), fields: ['refresh_token'] },
  '/auth/password': { path: fc.constant('/auth/password'), fields: ['current_password', 'new_password', 'code'] },
  '/auth/me': { path: fc.constant('/auth/me'), fields: ['password', 'code'] },
  '/auth/mfa/totp': { path: fc.constant('/auth/mfa/totp'), fields: ['password', 'code'] },
  '/auth/mfa/totp/confirm': { path: fc.constant('/auth/mfa/totp/confirm'), fields: ['code'] },
  '/auth/mfa/recovery-codes': { path: fc.constant('/auth/mfa/recovery-codes'), fields: ['code'] },
  '/auth/mfa/verify': { path: fc.constant('/auth/mfa/verify'), fields: ['mfa_token', 'code'] },
  '/auth/confirm': { path: fc.constant('/auth/confirm'), fields: [] },
  '/auth/email/verify': { path: fc.constant('/auth/email/verify'), fields: ['token'] },
  '/auth/email/verify/resend': { path: fc.constant('/auth/email/verify/resend'), fields: ['email'] },
  '/auth/password/forgot': { path: fc.constant('/auth/password/forgot'), fields: ['email'] },
  '/auth/password/reset': { path: fc.constant('/auth/password/reset'), fields: ['token', 'new_password'] },
  '/auth/email': { path: fc.constant('/auth/email'), fields: ['new_email', 'password', 'code'] },
  '/auth/sessions': { path: fc.constant('/auth/sessions'), fields: [] },
  '/auth/sessions/:id': { path: sessionId.map((id) => `/auth/sessions/${id}`), fields: [] },
  // User ids here are session ids or junk: no such user, so no admin change touches the accounts the oracle knows.
  '/admin/users': { path: fc.constant('/admin/users'), fields: ['name', 'email', 'password', 'email_verified'] },
  '/admin/users/:id': { path: sessionId.map((id) => `/admin/users/${id}`), fields: ['name', 'email', 'email_verified', 'password', 'banned_until'] },
  '/admin/users/:id/sessions': { path: sessionId.map((id) => `/admin/users/${id}/sessions`), fields: [] },
  '/admin/users/:id/mfa': { path: sessionId.map((id) => `/admin/users/${id}/mfa`), fields: [] },
  '/admin/audit': { path: fc.constant('/admin/audit'), fields: [] },
  '/auth/introspect': { path: fc.constant('/auth/introspect'), fields: ['token', 'token_type_hint'] },
  '/health': { path: fc.constant('/health'), fields: [] },
  '/health/ready': { path: fc.constant('/health/ready'), fields: [] },
  '/.well-known/jwks.json': { path: fc.constant('/.well-known/jwks.json'), fields: [] },
  '/metrics': { path: fc.constant('/metrics'), fields: [] },
  '/docs': { path: fc.constant('/docs'), fields: [] },
  '/docs/': { path: fc.constant('/docs/'), fields: [] },
  '/docs/json': { path: fc.constant('/docs/json'), fields: [] },
  '/docs/yaml': { path: fc.constant('/docs/yaml'), fields: [] },
  '/docs/static/index.html': { path: fc.constant('/docs/static/index.html'), fields: [] },
  '/docs/static/swagger-initializer.js': { path: fc.constant('/docs/static/swagger-initializer.js'), fields: [] },
  '/docs/static/*': { path: staticName.map((name) => `/docs/static/${name}`), fields: [] }
}

// Inputs per route: the body-reading routes get the most.
function runsFor (method: string, url: string): number {
  if (method === 'POST') return runs(2500)
  if (method === 'DELETE') return runs(1000)
  if (url.startsWith('/auth/')) return runs(method === 'HEAD' ? 150 : 600)
  return runs(method === 'HEAD' ? 60 : 200)
}

// ── The oracle ──────────────────────────────────────────────────────────────────────────────

let sent = 0 // requests injected, shrinking included
const send = async (req: Req): Promise<{ res: Answer, route: string | undefined }> => {
  matchedRoute = undefined
  const res = await app.inject({ method: req.method, url: req.url, headers: req.headers, ...(req.payload !== undefined ? { payload: req.payload } : {}) })
  sent++
  return { res, route: matchedRoute }
}

const bodyOf = (req: Req): Record<string, unknown> | undefined => {
  if (req.payload === undefined) return undefined
  try {
    // As the service parses it: UTF-8 with replacement characters, a leading BOM ignored.
    const v: unknown = JSON.parse(Buffer.from(req.payload).toString('utf8').replace(/^\ufeff/, ''))
    return v !== null && typeof v === 'object' && !Array.isArray(v) ? v as Record<string, unknown> : undefined
  } catch {
    return undefined
  }
}

/** The request carries the admin key, as the service reads it (any case of the scheme, spaces before the key). */
const adminKeyIn = (req: Req): boolean => /^bearer +(\S+)$/i.exec(req.headers.authorization ?? '')?.[1] === ADMIN_KEY

/** A token in the request that carries a valid HS256 signature with the service's secret. */
function authenticToken (req: Req): string | undefined {
  const haystack = `${req.headers.authorization ?? ''} ${req.payload !== undefined ? Buffer.from(req.payload).toString('utf8') : ''}`
  for (const [token] of haystack.matchAll(/[\w-]+\.[\w-]+\.[\w-]+/g)) {
    const [h, p, s] = token.split('.')
    if (hs256(`${h}.${p}`, SECRET) === s) return token
  }
  return undefined
}

/** Why a 2xx to this request cannot be right; [] when it can. Learns the accounts that sign-ups create. */
function successProblems (req: Req, res: Answer, route: string | undefined): string[] {
  const status = res.statusCode
  const json = (): Record<string, unknown> => JSON.parse(res.body)
  const type = res.headers['content-type']
  switch (route) {
    case '/auth/sign-up': {
      const body = bodyOf(req)
      if (status !== 201 || typeof body?.name !== 'string' || typeof body.email !== 'string' || typeof body.password !== 'string') {
        return [`${status} to a sign-up that cannot be valid`]
      }
      const email = wellFormed(body.email.trim().toLowerCase())
      const user = json().user as { id: string, email: string }
      const problems = passwordsByEmail.has(email) ? [`201 for an email already registered: ${email}`] : []
      if (user.email !== email) problems.push(`201 with email ${JSON.stringify(user.email)} for ${JSON.stringify(email)}`)
      passwordsByEmail.set(email, new Set([wellFormed(body.password)]))
      emailById.set(user.id, email)
      return problems
    }
    case '/auth/sign-in': {
      const body = bodyOf(req)
      if (status !== 200 || typeof body?.email !== 'string' || typeof body.password !== 'string') return [`${status} to a sign-in that cannot be valid`]
      const known = passwordsByEmail.get(wellFormed(body.email.trim().toLowerCase()))
      return known?.has(wellFormed(body.password)) === true ? [] : ['200 for credentials that were never registered']
    }
    case '/auth/me':
      if (req.method === 'DELETE') {
        // Only with a token the service signed and the account's password; the account is gone then.
        const token = authenticToken(req)
        if (status !== 204 || token === undefined) return [`${status} to a deletion without a token the service signed`]
        const email = emailById.get(String(claimsOf(token).sub))
        if (email !== undefined) passwordsByEmail.delete(email)
        return []
      }
    // falls through
    case '/auth/refresh':
    case '/auth/sessions': {
      if (status !== 200 || type !== JSON_TYPE) return [`${status} (${String(type)}) where 200 JSON was due`]
      return authenticToken(req) === undefined ? [`${status} without a token the service signed`] : []
    }
    case '/auth/sign-out':
    case '/auth/sessions/:id':
    case '/auth/password': {
      if (status !== 204) return [`${status} where 204 was due`]
      const token = authenticToken(req)
      if (token === undefined) return ['204 without a token the service signed']
      if (route === '/auth/password') {
        // The account now has this password too (sign-ins with it may succeed).
        const email = emailById.get(String(claimsOf(token).sub))
        const body = bodyOf(req)
        if (email !== undefined && typeof body?.new_password === 'string') passwordsByEmail.get(email)?.add(wellFormed(body.new_password))
      }
      return []
    }
    case '/auth/confirm':
      return status === 200 && String(type).startsWith('text/html') ? [] : [`${status} (${String(type)}) where the HTML page was due`]
    case '/auth/email/verify':
    case '/auth/password/reset':
      // Only a token the service mailed can succeed, and the fuzzer has none.
      return [`${status} without a mailed token`]
    case '/auth/email/verify/resend':
    case '/auth/password/forgot':
      return status === 202 && typeof bodyOf(req)?.email === 'string' ? [] : [`${status} where 202 was due`]
    case '/auth/email':
      return status === 202 && authenticToken(req) !== undefined ? [] : [`${status} to an email change without a token the service signed`]
    case '/auth/mfa/totp':
      if (req.method === 'DELETE') return [`${status}: no account here has TOTP on`]
    // falls through: an enrolment, or (by a lucky code) its confirmation
    case '/auth/mfa/totp/confirm':
      return status === 200 && authenticToken(req) !== undefined ? [] : [`${status} to a second-factor change without a token the service signed`]
    case '/auth/mfa/recovery-codes':
    case '/auth/mfa/verify':
      return [`${status}: no account here has TOTP on`]
    case '/health':
    case '/health/ready':
    case '/.well-known/jwks.json':
      return status === 200 && type === JSON_TYPE ? [] : [`${status} (${String(type)}) where 200 JSON was due`]
    case '/metrics':
      return status === 200 ? [] : [`${status} where 200 was due`]
    case '/admin/users': {
      if (!adminKeyIn(req)) return [`${status} without the admin key`]
      if (req.method === 'GET' || req.method === 'HEAD') return status === 200 && type === JSON_TYPE ? [] : [`${status} where 200 JSON was due`]
      const body = bodyOf(req)
      if (status !== 201 || typeof body?.name !== 'string' || typeof body.email !== 'string') return [`${status} to a creation that cannot be valid`]
      // A new account, which sign-ins may now find.
      const email = wellFormed(body.email.trim().toLowerCase())
      const user = json() as { id: string, email: string }
      const problems = passwordsByEmail.has(email) ? [`201 for an email already registered: ${email}`] : []
      passwordsByEmail.set(email, new Set(typeof body.password === 'string' ? [wellFormed(body.password)] : []))
      emailById.set(user.id, email)
      return problems
    }
    case '/admin/users/:id':
    case '/admin/users/:id/sessions':
    case '/admin/users/:id/mfa':
      return [`${status} for a user that does not exist`]
    case '/admin/audit':
    case '/auth/introspect':
      return adminKeyIn(req) && status === 200 && type === JSON_TYPE ? [] : [`${status} (${String(type)}) without the admin key, or not 200 JSON`]
    default:
      return route?.startsWith('/docs') === true ? [] : [`${status} without a route (${String(route)})`]
  }
}

/** Every way the answer breaks the contract; [] when it keeps it. */
function answerProblems (req: Req, res: Answer, route: string | undefined): string[] {
  const status = res.statusCode
  const problems = status >= 500 ? [`${status} answer`] : []
  if (status >= 400) {
    problems.push(...errorShapeProblems(status, res.headers['content-type'], res.body, req.method === 'HEAD'))
    if (status === 401 && !/^Bearer\b/.test(String(res.headers['www-authenticate']))) problems.push('401 without WWW-Authenticate: Bearer')
  } else if (status >= 300) {
    if (route?.startsWith('/docs') !== true) problems.push(`${status} outside /docs`)
  } else {
    problems.push(...successProblems(req, res, route))
  }
  return problems
}

// Both ends of a long value: the telling part of a padded body is often at its end.
const shown = (s: string, max = 3000): string => s.length > max ? `${s.slice(0, max / 2)}…(${s.length} characters)…${s.slice(-max / 2)}` : s
/** A request for a report: every long value cut short, with its length; a long JSON body field by field. */
function describe (req: Req): string {
  let payload: unknown = req.payload
  const text = req.payload !== undefined ? Buffer.from(req.payload).toString('utf8') : ''
  if (text.length > 600) {
    const body = bodyOf(req)
    payload = body !== undefined && Buffer.from(JSON.stringify(body)).equals(Buffer.from(req.payload ?? ''))
      ? `${text.length} characters of JSON: ${fc.stringify(Object.fromEntries(Object.entries(body).map(([k, v]) => [k, typeof v === 'string' ? shown(v, 120) : shown(JSON.stringify(v), 120)])))}`
      : shown(text, 600)
  }
  return fc.stringify({
    ...req,
    url: shown(req.url, 300),
    headers: Object.fromEntries(Object.entries(req.headers).map(([k, v]) => [k, shown(v, 200)])),
    ...(req.payload !== undefined ? { payload } : {})
  })
}

/** A finding's kind: the status and the problems without their details, so that one bug counts once. */
const kindOf = (status: number, problems: string[]): string => `${status}: ${problems.map((p) => p.replace(/:.*$/s, '')).join('; ')}`

let generated = 0
/**
 * Runs one property: `numRuns` generated requests, each checked by the oracle. Every kind of
 * finding fails the test on its own, with a minimal input: the same inputs are replayed, failing
 * on that kind only, so that fast-check shrinks it (one finding does not hide another).
 */
async function fuzz (t: Test, arb: fc.Arbitrary<Req>, numRuns: number): Promise<void> {
  const kinds = new Map<string, { count: number, example: string }>()
  const statuses = new Map<number, number>()
  const check = async (req: Req): Promise<{ kind: string, report: string } | undefined> => {
    const { res, route } = await send(req)
    statuses.set(res.statusCode, (statuses.get(res.statusCode) ?? 0) + 1)
    const problems = answerProblems(req, res, route)
    if (problems.length === 0) return undefined
    return {
      kind: kindOf(res.statusCode, problems),
      report: `${problems.join('; ')}\n  answer: ${res.statusCode} ${String(res.headers['content-type'])} ${shown(res.body, 400)}`
    }
  }
  await fc.check(fc.asyncProperty(arb, async (req) => {
    const found = await check(req)
    if (found === undefined) return
    const seen = kinds.get(found.kind)
    if (seen !== undefined) seen.count++
    else kinds.set(found.kind, { count: 1, example: `${describe(req)}\n  ${found.report}` })
  }), { numRuns, seed: SEED })
  generated += numRuns
  t.comment(`statuses: ${[...statuses].sort(([a], [b]) => a - b).map(([s, n]) => `${s}×${n}`).join(' ')}`)
  if (kinds.size === 0) t.pass(`${numRuns} inputs, no finding`)
  for (const [kind, { count, example }] of kinds) {
    const replay = await fc.check(fc.asyncProperty(arb, async (req) => {
      const found = await check(req)
      if (found?.kind === kind) throw new Error(found.report)
    }), { numRuns, seed: SEED })
    const minimal = replay.failed
      ? `minimal input (${replay.numShrinks} shrinks): ${replay.counterexample !== null ? describe(replay.counterexample[0]) : ''}\n  ${String((replay.errorInstance as Error | undefined)?.message)}`
      : `first input (not reproduced on replay): ${example}`
    t.fail(`${kind} (${count} of ${numRuns} inputs)\n  ${minimal}`)
  }
}

// ── In-process properties ───────────────────────────────────────────────────────────────────

t.test('the oracle flags what it must (so that each property can fail)', async (t) => {
  const json = { 'content-type': JSON_TYPE }
  const me: Req = { method: 'GET', url: '/auth/me', headers: {} }
  const error = (statusCode: number, code: string): Answer =>
    ({ statusCode, headers: json, body: JSON.stringify({ statusCode, error: STATUS_CODES[statusCode], code, message: 'm' }) })
  t.same(answerProblems(me, error(404, 'NOT_FOUND'), undefined), [], 'a contract 404 passes')
  t.match(answerProblems(me, error(500, 'INTERNAL'), '/auth/me'), ['500 answer'], 'a 5xx')
  t.match(answerProblems(me, error(401, 'TOKEN_INVALID'), '/auth/me'), ['401 without WWW-Authenticate: Bearer'], 'a 401 without WWW-Authenticate')
  t.match(answerProblems(me, error(400, 'FST_ERR_BAD_URL'), undefined), [/not one of the contract's/], 'a code outside the contract')
  t.match(answerProblems(me, error(403, 'VALIDATION_FAILED'), undefined), [/with status 403/], 'a code with another status')
  t.match(answerProblems(me, { ...error(400, 'VALIDATION_FAILED'), headers: { 'content-type': 'application/json' } }, undefined), [/content-type/], 'a JSON error without charset')
  t.match(answerProblems(me, { statusCode: 400, headers: json, body: '{"statusCode":400,"error":"Bad Request","message":"m"}' }, undefined), [/keys/, /code/], 'a body without code')
  t.match(answerProblems(me, { statusCode: 200, headers: json, body: '{}' }, '/auth/me'), [/without a token the service signed/], 'a 200 to a forged token')
  const forged = `${b64u('{"alg":"HS256"}')}.${b64u('{}')}.${hs256('x', 'not-the-secret-not-the-secret-not-the')}`
  t.match(answerProblems({ ...me, headers: { authorization: `Bearer ${forged}` } }, { statusCode: 200, headers: json, body: '{}' }, '/auth/me'), [/without a token/])
  t.same(answerProblems({ ...me, headers: { authorization: `Bearer ${accessTokens[0]}` } }, { statusCode: 200, headers: json, body: '{}' }, '/auth/me'), [], 'a 200 to a real token passes')
  const signInReq: Req = { method: 'POST', url: '/auth/sign-in', headers: {}, payload: JSON.stringify({ email: users[0].email, password: 'never-registered' }) }
  t.match(answerProblems(signInReq, { statusCode: 200, headers: json, body: '{}' }, '/auth/sign-in'), [/never registered/], 'a 200 to a wrong password')
  const signUpReq: Req = { method: 'POST', url: '/auth/sign-up', headers: {}, payload: JSON.stringify({ name: 'n', email: ` ${users[0].email.toUpperCase()}`, password: PASSWORD }) }
  t.match(answerProblems(signUpReq, { statusCode: 201, headers: json, body: JSON.stringify({ user: { id: users[0].id, email: users[0].email } }) }, '/auth/sign-up'),
    [/already registered/], 'a 201 for a taken email')
  t.match(answerProblems(me, { statusCode: 302, headers: {}, body: '' }, undefined), [/outside \/docs/], 'a redirect outside /docs')
})

t.test('every route the app registers has a generator', async (t) => {
  const registered = new Set(routes.map((r) => `${r.method} ${r.url}`))
  // The enumeration itself works: the contract's endpoints are all seen.
  for (const route of ['POST /auth/sign-up', 'POST /auth/sign-in', 'POST /auth/refresh', 'GET /auth/me', 'POST /auth/sign-out',
    'GET /auth/sessions', 'DELETE /auth/sessions/:id', 'POST /auth/password', 'GET /health', 'GET /health/ready',
    'GET /.well-known/jwks.json', 'GET /metrics', 'GET /docs', 'GET /docs/json']) {
    t.ok(registered.has(route), `${route} is registered`)
  }
  for (const route of registered) t.ok(GENERATORS[route.split(' ')[1]] !== undefined, `${route} has a generator`)
})

for (const { method, url } of routes) {
  const spec = GENERATORS[url]
  if (spec === undefined) continue // failed above
  t.test(`${method} ${url}: generated bodies, headers and queries → never a 5xx, errors in the contract's shape`, async (t) => {
    await fuzz(t, requestArb(method, spec.path, spec.fields), runsFor(method, url))
  })
}

// A concrete path for each route, and some that match none, for the path properties.
const concretePaths = [...new Set(routes.map((r) => r.url
  .replace(':id', sessionIds[0])
  .replace('*', 'swagger-ui.css')))]
const basePath = pick(...concretePaths, '/', '/auth', '/auth/', '/nope', '/.well-known/', '/docs/static')
const routeMethods = pick(...new Set(routes.map((r) => r.method)))
const insertAt = (path: string, i: number, s: string): string => {
  const at = 1 + (i % path.length) // after the leading slash
  return path.slice(0, at) + s + path.slice(at)
}
const pathRequest = (path: fc.Arbitrary<string>, method: fc.Arbitrary<string> = routeMethods): fc.Arbitrary<Req> =>
  fc.record({ method, path, authorization, contentType, payload: payloadArb(['email', 'password'], 1) })
    .map(({ method, path, authorization, contentType, payload }) => ({
      method,
      url: path,
      headers: defined({ authorization, 'content-type': contentType }),
      ...(payload !== undefined ? { payload } : {})
    }))

// Each kind is its own property, so that one finding does not hide the others.
const PATH_KINDS: Record<string, fc.Arbitrary<Req>> = {
  'invalid percent-encoding': pathRequest(fc.tuple(basePath, fc.nat(), pick('%', '%Z', '%ZZ', '%G0', '%%', '%E9', '%C3', '%C3%28', '%ED%A0%80',
    '%FF%FE', '%F4%90%80%80', '%C0%AF', '%2', '%u00e9')).map(([p, i, bad]) => insertAt(p, i, bad))),
  'percent-encoded characters': pathRequest(fc.tuple(basePath, fc.array(fc.boolean(), { minLength: 1, maxLength: 40 }))
    .map(([p, flags]) => [...p].map((c, i) => flags[i % flags.length] && i > 0 ? `%${c.charCodeAt(0).toString(16).padStart(2, '0')}` : c).join(''))),
  'unicode and control characters': pathRequest(fc.tuple(basePath, fc.nat(), fc.oneof(oddString.filter((s) => s.length < 2000), pick('／', 'ａｕｔｈ', '%00', '%0A', '%0D%0A')))
    .map(([p, i, s]) => insertAt(p, i, s))),
  'very long paths and parameters': pathRequest(fc.tuple(basePath, pick(99, 100, 101, 1000, 8192, 16_385, 100_000), pick('segment', 'parameter', 'many-segments'))
    .map(([p, n, how]) => how === 'segment' ? `${p}/${'a'.repeat(n)}` : how === 'parameter' ? p + 'a'.repeat(n) : p + '/a'.repeat(n / 2))),
  'traversal, separators and case': pathRequest(fc.tuple(basePath, pick('/..', '/../..', '/./', '//', '/%2e%2e/', '/..%2f..%2f', '\\..\\', ';jsessionid=1', '#x',
    '/', '?', '.json', '%20', '/../../../../etc/passwd', '/%2e%2e/%2e%2e/package.json', 'upper', 'mixed', 'double-slashes'), fc.nat())
    .chain(([p, how, i]) => how === 'mixed'
      ? fc.mixedCase(fc.constant(p))
      : fc.constant(how === 'upper' ? p.toUpperCase() : how === 'double-slashes' ? p.replaceAll('/', '//') : i % 2 === 0 ? p + how : insertAt(p, i, how)))),
  'other methods on every path': pathRequest(fc.oneof(basePath, oddString.map((s) => `/${encodeSegment(s)}`)),
    pick('GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS', 'TRACE', 'PROPFIND', 'SEARCH', 'QUERY', 'LOCK', 'PURGE', 'MKCOL', 'COPY'))
}
for (const [kind, arb] of Object.entries(PATH_KINDS)) {
  t.test(`odd paths (${kind}) → never a 5xx, errors in the contract's shape`, async (t) => {
    await fuzz(t, arb, runs(500))
  })
}

t.test('forged, altered, random and real JWTs on every token route → never a 5xx, a 2xx only with a token the service signed', async (t) => {
  const arb = fc.record({
    route: pick('me', 'sessions', 'delete', 'password', 'refresh', 'sign-out', 'sign-out-all'),
    token: fc.oneof({ weight: 4, arbitrary: jwtArb }, { weight: 1, arbitrary: pick(...accessTokens) }, { weight: 1, arbitrary: pick(...refreshTokens) }),
    place: pick('header', 'header', 'lower-case scheme', 'body'),
    sid: sessionId,
    newPassword: fc.uuid().map((u) => `fuzz-new-${u}`)
  }).map(({ route, token, place, sid, newPassword }): Req => {
    const auth: Record<string, string> = place === 'body' ? {} : { authorization: `${place === 'header' ? 'Bearer' : 'bearer'} ${token}` }
    const json = { 'content-type': 'application/json' }
    switch (route) {
      case 'me': return { method: 'GET', url: '/auth/me', headers: auth }
      case 'sessions': return { method: 'GET', url: '/auth/sessions', headers: auth }
      case 'delete': return { method: 'DELETE', url: `/auth/sessions/${sid}`, headers: auth }
      case 'password': return { method: 'POST', url: '/auth/password', headers: { ...auth, ...json }, payload: JSON.stringify({ current_password: PASSWORD, new_password: newPassword }) }
      default: {
        const url = route === 'sign-out-all' ? '/auth/sign-out?scope=all' : route === 'sign-out' ? '/auth/sign-out' : '/auth/refresh'
        return { method: 'POST', url, headers: { ...auth, ...json }, payload: place === 'body' ? JSON.stringify({ refresh_token: token }) : '' }
      }
    }
  })
  await fuzz(t, arb, runs(4000))
})

t.test('after the fuzz the app still serves: health, readiness, a sign-up and a sign-in', async (t) => {
  t.equal((await send({ method: 'GET', url: '/health', headers: {} })).res.statusCode, 200, 'GET /health → 200')
  t.equal((await send({ method: 'GET', url: '/health/ready', headers: {} })).res.statusCode, 200, 'GET /health/ready → 200')
  const user = await signUp(app)
  t.ok((await signIn(app, user.email)).access_token, 'a new user signs up and signs in')
  t.comment(`${generated} generated inputs in process (${sent} requests with shrinking)`)
  t.ok(generated >= 5000, `at least 5,000 generated inputs (${generated})`)
})

// ── Over real HTTP: what app.inject cannot send ─────────────────────────────────────────────

interface RawAnswer { status: number, headers: Record<string, string>, body: string }

let waitedOut = 0 // exchanges the server left open (an incomplete request it still waits for)
/** Writes raw bytes on a new connection; resolves with all bytes read until the server closes it or `waitMs` passes. */
async function exchange (port: number, bytes: Buffer, waitMs = 3000): Promise<Buffer> {
  return await new Promise((resolve) => {
    const chunks: Buffer[] = []
    const socket = net.connect(port, '127.0.0.1')
    const finish = (): void => { clearTimeout(timer); socket.destroy(); resolve(Buffer.concat(chunks)) }
    const timer = setTimeout(() => { waitedOut++; finish() }, waitMs)
    socket.on('data', (c: Buffer) => chunks.push(c))
    socket.on('close', finish)
    socket.on('error', () => {}) // a reset after an error answer is expected
    socket.write(bytes)
  })
}

/** The HTTP/1.x answers in a byte stream (pipelined answers included); a string says why it is not HTTP. */
function parseAnswers (raw: Buffer): RawAnswer[] | string {
  const answers: RawAnswer[] = []
  let rest = raw
  while (rest.length > 0) {
    const end = rest.indexOf('\r\n\r\n')
    if (end < 0) return answers.length > 0 ? answers : `no complete answer: ${JSON.stringify(rest.toString('latin1').slice(0, 100))}`
    const [statusLine, ...lines] = rest.subarray(0, end).toString('latin1').split('\r\n')
    const m = /^HTTP\/1\.[01] (\d{3}) /.exec(statusLine)
    if (m === null) return `not an HTTP answer: ${JSON.stringify(statusLine.slice(0, 100))}`
    const headers = Object.fromEntries(lines.map((l) => [l.slice(0, l.indexOf(':')).toLowerCase(), l.slice(l.indexOf(':') + 1).trim()]))
    const status = Number(m[1])
    rest = rest.subarray(end + 4)
    let body: Buffer = Buffer.alloc(0)
    if (status >= 200 && status !== 204 && status !== 304) {
      if (headers['transfer-encoding'] === 'chunked') {
        const parts: Buffer[] = []
        for (;;) {
          const eol = rest.indexOf('\r\n')
          const size = parseInt(rest.subarray(0, eol).toString('latin1'), 16)
          if (eol < 0 || Number.isNaN(size)) return 'malformed chunked answer'
          if (size === 0) { rest = rest.subarray(eol + 4); break }
          parts.push(rest.subarray(eol + 2, eol + 2 + size))
          rest = rest.subarray(eol + 2 + size + 2)
        }
        body = Buffer.concat(parts)
      } else {
        const length = headers['content-length'] !== undefined ? Number(headers['content-length']) : rest.length
        body = rest.subarray(0, length)
        rest = rest.subarray(length)
      }
    }
    answers.push({ status, headers, body: body.toString('utf8') })
  }
  return answers
}

t.test('over real HTTP: malformed requests, invalid UTF-8 in headers, huge headers, garbage bytes → never a 5xx; the process stays up', async (t) => {
  const server = spawnServer(t, databaseUrl, FAST_ARGON2)
  const base = await server.listening
  const port = Number(new URL(base).port)
  const access = accessTokens[accessTokens.length - 1]
  const latin1 = (s: string): Buffer => Buffer.from(s, 'latin1')
  const utf8AsLatin1 = (s: string): string => Buffer.from(s, 'utf8').toString('latin1')
  const get = (path: string, headers: string[] = []): string => [`GET ${path} HTTP/1.1`, 'Host: 127.0.0.1', ...headers, 'Connection: close', '', ''].join('\r\n')
  const post = (path: string, body: string, headers: string[] = []): string =>
    [`POST ${path} HTTP/1.1`, 'Host: 127.0.0.1', 'Content-Type: application/json', `Content-Length: ${body.length}`, ...headers, 'Connection: close', '', body].join('\r\n')
  // A fresh account: the fuzz above has the seeded ones throttled for this address.
  const signInBody = JSON.stringify({ email: (await signUp(app)).email, password: PASSWORD })

  // Each written as latin1, so "\xff" is the byte 0xff.
  const cases: Array<[string, string]> = [
    ['invalid UTF-8 in a header value', get('/health', ['X-Fuzz: \xff\xfe\xc3\x28\xed\xa0\x80'])],
    ['invalid UTF-8 in Authorization', get('/auth/me', ['Authorization: Bearer \xff\xfe\xfd'])],
    ['invalid UTF-8 in the Authorization scheme', get('/auth/sessions', ['Authorization: \xc0\xaf\xff eyJ.eyJ.x'])],
    ['UTF-8 in Authorization', get('/auth/me', [`Authorization: Bearer ${utf8AsLatin1('tøkén💥')}`])],
    ['a real token with invalid UTF-8 after it', get('/auth/me', [`Authorization: Bearer ${access}\xff`])],
    ['two Authorization headers', get('/auth/me', ['Authorization: Bearer a', `Authorization: Bearer ${access}`])],
    ['a real token, then a second Authorization header of junk', get('/auth/me', [`Authorization: Bearer ${access}`, 'Authorization: \xff'])],
    ['several schemes in one Authorization', get('/auth/me', [`Authorization: Basic dXNlcjpwYXNz, Bearer ${access}`])],
    ['invalid UTF-8 in User-Agent at a real sign-in (stored with the session)', post('/auth/sign-in', signInBody, ['User-Agent: \xff\xfe\xc0\xaf agent'])],
    ['UTF-8 in User-Agent at a real sign-in', post('/auth/sign-in', signInBody, [`User-Agent: ${utf8AsLatin1('agënt 💥 \u202e')}`])],
    ['invalid UTF-8 in X-Request-Id', get('/health', ['X-Request-Id: \xff\xfe'])],
    ['invalid UTF-8 in Content-Type', post('/auth/sign-in', signInBody, ['Content-Type: application/json; charset=\xff'])],
    ['invalid UTF-8 inside the JSON body', post('/auth/sign-in', '{"email":"\xff\xfe@example.com","password":"\xc3\x28\xed\xa0\x80"}')],
    ['invalid UTF-8 in a sign-up name', post('/auth/sign-up', `{"name":"\xff\xfe","email":"raw-${SEED}@example.com","password":"${PASSWORD}"}`)],
    ['NUL in a header value', get('/health', ['X-Fuzz: a\x00b'])],
    ['CR alone in a header value', get('/health', ['X-Fuzz: a\rb'])],
    ['obs-fold continuation line', get('/health', ['X-Fuzz: a', ' folded'])],
    ['header line without a colon', get('/health', ['NoColon'])],
    ['space in a header name', get('/health', ['Bad Name: x'])],
    ['space before the colon', get('/health', ['X-Fuzz : x'])],
    ['empty header name', get('/health', [': x'])],
    ['raw byte 0xff in the path', get('/\xff')],
    ['raw UTF-8 in the path', get('/auth/m\xc3\xa9')],
    ['invalid percent-encoding in the path', get('/auth/%ZZ')],
    ['path traversal', get('/docs/static/../../../../etc/passwd')],
    ['encoded path traversal', get('/docs/static/%2e%2e/%2e%2e/package.json')],
    ['encoded slashes in a traversal', get('/docs/static/..%2f..%2f..%2fpackage.json')],
    ['backslash traversal', get('/docs/static/..\\..\\package.json')],
    ['NUL in a static file name', get('/docs/static/index.html%00.js')],
    ['absolute-form target', get('http://127.0.0.1/health')],
    ['asterisk target', 'OPTIONS * HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n'],
    ['target without a leading slash', get('health')],
    ['no HTTP version', 'GET /health\r\n\r\n'],
    ['unknown HTTP version', 'GET /health HTTP/9.9\r\nHost: x\r\nConnection: close\r\n\r\n'],
    ['HTTP/1.0 without Host', 'GET /health HTTP/1.0\r\n\r\n'],
    ['HTTP/1.1 without Host', 'GET /health HTTP/1.1\r\nConnection: close\r\n\r\n'],
    ['two Host headers', get('/health', ['Host: other'])],
    ['extra token in the request line', 'GET /health HTTP/1.1 extra\r\nHost: x\r\n\r\n'],
    ['lower-case method', 'get /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'],
    ['unknown method', 'FUZZ /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'],
    ['double spaces in the request line', 'GET  /health  HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'],
    ['leading space', ' GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'],
    ['bare LF line endings', 'GET /health HTTP/1.1\nHost: x\nConnection: close\n\n'],
    ['NUL in the method', 'G\x00T /health HTTP/1.1\r\nHost: x\r\n\r\n'],
    ['only line breaks', '\r\n\r\n\r\n\r\n'],
    ['HTTP/2 preface', 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'],
    ['TLS ClientHello', '\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03' + '\x00'.repeat(32) + '\x00\x00\x02\x13\x01\x01\x00'],
    ['CONNECT', 'CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n'],
    ['Upgrade: websocket', get('/health', ['Upgrade: websocket', 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==', 'Sec-WebSocket-Version: 13'])],
    ['Upgrade: h2c', get('/health', ['Upgrade: h2c', 'HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA'])],
    ['a header of 20 KiB', get('/health', [`X-Big: ${'a'.repeat(20_000)}`])],
    ['an Authorization of 20 KiB', get('/auth/me', [`Authorization: Bearer ${'A'.repeat(20_000)}`])],
    ['an Authorization just under the header limit', get('/auth/me', [`Authorization: Bearer ${'A'.repeat(15_000)}`])],
    ['2,500 small headers', get('/health', Array.from({ length: 2500 }, (_, i) => `X-${i}: 1`))],
    ['a request line of 20 KiB', get(`/${'a'.repeat(20_000)}`)],
    ['Content-Length not a number', 'POST /auth/sign-in HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: abc\r\n\r\n{}'],
    ['negative Content-Length', 'POST /auth/sign-in HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: -1\r\n\r\n{}'],
    ['two different Content-Lengths', 'POST /auth/sign-in HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}'],
    ['Content-Length and Transfer-Encoding', 'POST /auth/sign-in HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n'],
    ['Transfer-Encoding that is not chunked', 'POST /auth/sign-in HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: gzip\r\nConnection: close\r\n\r\n{}'],
    ['malformed chunk size', 'POST /auth/sign-in HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n'],
    ['invalid bytes in a chunk extension', 'POST /auth/sign-in HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n2;\xff\r\n{}\r\n0\r\n\r\n'],
    ['chunked body over 16 KiB', 'POST /auth/sign-in HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n' +
      `3e8\r\n${'x'.repeat(1000)}\r\n`.repeat(20) + '0\r\n\r\n'],
    ['Content-Length past 64 bits', 'POST /auth/sign-in HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 99999999999999999999999\r\n\r\n{}'],
    ['Content-Length over the body limit, no body', 'POST /auth/sign-in HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\nConnection: close\r\n\r\n'],
    ['Expect: 100-continue', post('/auth/sign-in', signInBody, ['Expect: 100-continue'])],
    ['Expect: something else', post('/auth/sign-in', signInBody, ['Expect: 200-ok'])],
    ['pipelined: a request, then garbage', 'GET /health HTTP/1.1\r\nHost: x\r\n\r\n\xff\xfe garbage \x00\r\n\r\n'],
    ['pipelined: 50 requests', 'GET /health HTTP/1.1\r\nHost: x\r\n\r\n'.repeat(49) + get('/auth/me')]
  ]

  const fiveHundreds: string[] = []
  const notHttp: string[] = []
  const leaks: string[] = []
  const statuses = new Map<number | string, number>()
  const count = (key: number | string): void => { statuses.set(key, (statuses.get(key) ?? 0) + 1) }
  const shapes = new Map<string, string>() // each distinct shape problem, with the first request that showed it
  const check = (name: string, request: Buffer, raw: Buffer): void => {
    if (raw.length === 0) { count('closed'); return } // the server closed the connection without an answer
    const answers = parseAnswers(raw)
    if (typeof answers === 'string') { notHttp.push(`${name}: ${answers}`); return }
    for (const a of answers) {
      count(a.status)
      if (a.status >= 500) fiveHundreds.push(`${name}: ${a.status} ${a.body.slice(0, 200)}`)
      // Nothing outside the static docs may be served, whatever the path says.
      if (/root:x:0:0|"devDependencies"/.test(a.body)) leaks.push(`${name}: ${a.status} ${a.body.slice(0, 100)}`)
      if (a.status < 400) continue
      const problems = errorShapeProblems(a.status, a.headers['content-type'], a.body, false)
      const kind = kindOf(a.status, problems)
      if (problems.length > 0 && !shapes.has(kind)) {
        shapes.set(kind, `${name}; request ${JSON.stringify(request.toString('latin1').slice(0, 120))}; answer ${JSON.stringify(a.body.slice(0, 200))}`)
      }
    }
  }

  for (const [name, text] of cases) {
    const request = latin1(text)
    check(name, request, await exchange(port, request))
  }

  // Generated: random bytes, then request-like messages with random methods, targets, versions and headers.
  const anyByte = fc.uint8Array({ minLength: 1, maxLength: 40 }).map((b) => Buffer.from(b).toString('latin1'))
  const garbage = fc.uint8Array({ minLength: 1, maxLength: 2048 }).map((b) => Buffer.from(b))
  const requestLike = fc.record({
    method: fc.oneof(pick('GET', 'POST', 'DELETE', 'PUT', 'OPTIONS'), anyByte),
    target: fc.oneof(basePath, anyByte.map((s) => `/${s}`), fc.tuple(basePath, anyByte).map(([p, s]) => p + s)),
    version: pick('HTTP/1.1', 'HTTP/1.0', 'HTTP/1.2', 'HTTP/2', 'http/1.1', 'HTTP/1.1 ', 'HTTP/'),
    headers: fc.array(fc.tuple(fc.oneof(pick('Authorization', 'Content-Type', 'Content-Length', 'Transfer-Encoding', 'Host', 'User-Agent', 'X-Request-Id'), anyByte),
      fc.oneof(anyByte, pick(`Bearer ${access}`, 'application/json', '0', '5', 'chunked'))), { maxLength: 6 }),
    body: fc.oneof(fc.constant(''), anyByte, fc.constant(signInBody))
  }).map(({ method, target, version, headers, body }) =>
    latin1([`${method} ${target} ${version}`, 'Host: 127.0.0.1', ...headers.map(([n, v]) => `${n}: ${v}`), 'Connection: close', '', body].join('\r\n')))
  let rawGenerated = 0
  for (const arb of [garbage, requestLike]) {
    await fc.assert(fc.asyncProperty(arb, async (request) => {
      rawGenerated++
      check(`generated #${rawGenerated}`, request, await exchange(port, request))
    }), { numRuns: runs(arb === garbage ? 100 : 200), seed: SEED })
  }
  t.comment(`${cases.length} hand-written and ${rawGenerated} generated raw requests; ${waitedOut} left waiting for more input, cut after 3 s`)
  t.comment(`answers: ${[...statuses].map(([s, n]) => `${s}×${n}`).join(' ')}`)

  t.same(fiveHundreds, [], 'no answer was a 5xx')
  t.same(notHttp, [], 'every answer was HTTP/1.x')
  t.same(leaks, [], 'no file outside the docs was served')
  t.equal(server.child.exitCode, null, 'the process is still running')
  const health = await fetch(`${base}/health`)
  t.equal(health.status, 200, 'GET /health → 200 afterwards')
  t.same(await health.json(), { status: 'ok' }, 'with {"status":"ok"}')
  t.equal((await fetch(`${base}/health/ready`)).status, 200, 'GET /health/ready → 200 afterwards')
  const errors = server.output().out.split('\n').filter((l) => /"level":(50|60)/.test(l))
  t.same(errors.map((l) => l.slice(0, 300)), [], 'nothing logged at error level')
  t.same(Object.fromEntries(shapes), {}, "every error answer has the contract's shape (Fastify's own answers to unparseable requests included)")
})
