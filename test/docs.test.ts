import { spawnSync } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import SwaggerParser from '@apidevtools/swagger-parser'
import type { FastifyInstance } from 'fastify'
import { build, createDatabase, signUp } from './helper.js'

const databaseUrl = await createDatabase(t)
// With ADMIN_API_KEYS: the whole document (test/admin.test.ts checks the admin paths are gone without keys).
const app = await build(t, databaseUrl, { ADMIN_API_KEYS: 'admin-key-for-tests-0123456789abcdefghijklmnop' })

interface Operation {
  security?: Array<Record<string, string[]>>
  responses: Record<string, { description: string, content?: Record<string, { schema: { $ref?: string } }> }>
}
type Document = { paths: Record<string, Record<string, Operation>> } & Record<string, unknown>

/** Every route the app has, as "METHOD /path/{param}", from Fastify's own route tree. */
function appRoutes (app: FastifyInstance): string[] {
  const routes: string[] = []
  const segments: string[] = []
  for (const line of app.printRoutes({ commonPrefix: false }).split('\n')) {
    const m = /^([│ ]*)[├└]── (.+?)(?: \(([^)]+)\))?$/.exec(line)
    if (m === null) continue
    segments.length = m[1].length / 4
    segments.push(m[2])
    const path = segments.join('').replace(/:(\w+)/g, '{$1}')
    for (const method of m[3]?.split(', ') ?? []) routes.push(`${method} ${path}`)
  }
  return routes
}

const getDocument = async (): Promise<Document> => (await app.inject({ method: 'GET', url: '/docs/json' })).json()

// What the contract says each route answers, besides the statuses every route may give.
const CONTRACT: Record<string, string[]> = {
  'POST /auth/sign-up': ['400', '409'],
  'POST /auth/sign-in': ['400', '401'],
  'POST /auth/refresh': ['401'],
  'GET /auth/me': ['401'],
  'POST /auth/sign-out': ['401'],
  'GET /auth/sessions': ['401'],
  'DELETE /auth/sessions/{id}': ['400', '401', '404'],
  'POST /auth/password': ['400', '401'],
  'GET /health': [],
  'GET /health/ready': ['503']
}
const SECURED = [
  'POST /auth/refresh', 'GET /auth/me', 'POST /auth/sign-out', 'GET /auth/sessions', 'DELETE /auth/sessions/{id}', 'POST /auth/password'
]

t.test('GET /docs/json → 200, a valid OpenAPI 3 document', async (t) => {
  const res = await app.inject({ method: 'GET', url: '/docs/json' })
  t.equal(res.statusCode, 200)
  t.match(res.headers['content-type'], /^application\/json/)
  const doc = res.json()
  t.match(doc.openapi, /^3\./)
  // validate() dereferences in place: give it a copy.
  await t.resolves(SwaggerParser.validate(structuredClone(doc)), 'valid against the OpenAPI 3 schema')
  t.match(doc.info, { title: 'auth-service', version: /^\d+\.\d+\.\d+/, description: String })
  t.match(doc.components.securitySchemes.bearerAuth, { type: 'http', scheme: 'bearer', bearerFormat: 'JWT' })
  t.same(doc.tags.map((tag: { name: string }) => tag.name).sort(), ['admin', 'auth', 'email', 'mfa', 'service'])
  t.match(doc.components.securitySchemes.adminKey, { type: 'http', scheme: 'bearer' })
  t.match(doc.components.schemas.ErrorBody, { required: ['statusCode', 'error', 'code', 'message'] })
})

t.test('the document lists every route of the service, and no /docs route', async (t) => {
  const doc = await getDocument()
  const documented = Object.entries(doc.paths).flatMap(([path, ops]) => Object.keys(ops).map((m) => `${m.toUpperCase()} ${path}`))
  for (const route of Object.keys(CONTRACT)) t.ok(documented.includes(route), route)
  const served = appRoutes(app).filter((r) => !r.startsWith('HEAD ') && !/ \/docs(\/|$)/.test(r))
  t.ok(served.length >= Object.keys(CONTRACT).length, 'the route tree was read')
  t.same(documented.sort(), [...new Set(served)].sort(), 'exactly the routes the app serves')
})

t.test('every error response is described and is the shared ErrorBody', async (t) => {
  const doc = await getDocument()
  for (const [route, statuses] of Object.entries(CONTRACT)) {
    const [method, path] = route.split(' ')
    const responses = doc.paths[path][method.toLowerCase()].responses
    for (const status of statuses) t.ok(responses[status] !== undefined, `${route} lists ${status}`)
  }
  for (const [path, ops] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(ops)) {
      for (const [status, response] of Object.entries(op.responses).filter(([s]) => /^[45]/.test(s))) {
        const where = `${method.toUpperCase()} ${path} ${status}`
        // Sign-in's 403 may carry the mfa_token of MFA_REQUIRED: the ErrorBody with that field.
        t.equal(response.content?.['application/json'].schema.$ref, where === 'POST /auth/sign-in 403' ? '#/components/schemas/MfaRequiredBody' : '#/components/schemas/ErrorBody', where)
        t.not(response.description, 'Default Response', `${where} says what it means`)
      }
    }
  }
})

t.test('secured operations carry bearerAuth, the others say they need none (security: [])', async (t) => {
  const doc = await getDocument()
  for (const route of Object.keys(CONTRACT)) {
    const [method, path] = route.split(' ')
    const op = doc.paths[path][method.toLowerCase()]
    if (SECURED.includes(route)) t.same(op.security, [{ bearerAuth: [] }], route)
    else t.same(op.security, [], route)
  }
  // The admin API and introspection take an admin key, never a user's token.
  for (const [path, ops] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(ops)) {
      if (path.startsWith('/admin/') || path === '/auth/introspect') t.same(op.security, [{ adminKey: [] }], `${method.toUpperCase()} ${path}`)
    }
  }
})

// Client generators name their methods after these: they do not change.
const OPERATION_IDS: Record<string, string> = {
  'POST /auth/sign-up': 'signUp',
  'POST /auth/sign-in': 'signIn',
  'POST /auth/refresh': 'refreshToken',
  'GET /auth/me': 'getCurrentUser',
  'POST /auth/sign-out': 'signOut',
  'GET /auth/sessions': 'listSessions',
  'DELETE /auth/sessions/{id}': 'revokeSession',
  'POST /auth/password': 'changePassword',
  'DELETE /auth/me': 'deleteAccount',
  'GET /auth/confirm': 'confirmPage',
  'POST /auth/email/verify': 'verifyEmail',
  'POST /auth/email/verify/resend': 'resendVerification',
  'POST /auth/password/forgot': 'forgotPassword',
  'POST /auth/password/reset': 'resetPassword',
  'POST /auth/email': 'changeEmail',
  'POST /auth/mfa/totp': 'enrolTotp',
  'DELETE /auth/mfa/totp': 'disableTotp',
  'POST /auth/mfa/totp/confirm': 'confirmTotp',
  'POST /auth/mfa/recovery-codes': 'regenerateRecoveryCodes',
  'POST /auth/mfa/verify': 'verifyMfa',
  'GET /admin/users': 'adminListUsers',
  'POST /admin/users': 'adminCreateUser',
  'GET /admin/users/{id}': 'adminGetUser',
  'PATCH /admin/users/{id}': 'adminUpdateUser',
  'DELETE /admin/users/{id}': 'adminDeleteUser',
  'DELETE /admin/users/{id}/sessions': 'adminEndSessions',
  'DELETE /admin/users/{id}/mfa': 'adminRemoveMfa',
  'GET /admin/audit': 'adminListAudit',
  'POST /auth/introspect': 'introspectToken',
  'GET /health': 'checkHealth',
  'GET /health/ready': 'checkReadiness',
  'GET /.well-known/jwks.json': 'getJwks',
  'GET /metrics': 'getMetrics'
}

t.test('every operation has its stable camelCase operationId', async (t) => {
  const doc = await getDocument()
  const ids = Object.entries(doc.paths).flatMap(([path, ops]) =>
    Object.entries(ops).map(([method, op]) => [`${method.toUpperCase()} ${path}`, (op as { operationId?: string }).operationId]))
  t.same(Object.fromEntries(ids), OPERATION_IDS)
})

t.test('Redocly\'s linter, recommended rules: no error and no warning', async (t) => {
  const file = join(t.testdir(), 'openapi.json')
  writeFileSync(file, JSON.stringify(await getDocument()))
  // The linter's own JSON report; telemetry off (no network here, nor wanted in CI).
  const run = spawnSync(process.execPath, ['node_modules/@redocly/cli/bin/cli.js', 'lint', file, '--format=json'], {
    env: { ...process.env, REDOCLY_TELEMETRY: 'off', REDOCLY_SUPPRESS_UPDATE_NOTICE: 'true' },
    encoding: 'utf8',
    timeout: 60_000
  })
  const report = JSON.parse(run.stdout.slice(run.stdout.indexOf('{'))) as { totals: Record<string, number>, problems: Array<{ ruleId: string, message: string }> }
  t.same(report.problems.map((p) => `${p.ruleId}: ${p.message}`), [], 'no problems')
  t.match(report.totals, { errors: 0, warnings: 0 })
  t.equal(run.status, 0, 'the linter passes')
})

t.test('request bodies carry examples', async (t) => {
  const doc = await getDocument()
  for (const path of ['/auth/sign-up', '/auth/sign-in']) {
    const op = doc.paths[path].post as unknown as { requestBody: { content: Record<string, { schema: { properties: Record<string, { example?: unknown }> } }> } }
    const { properties } = op.requestBody.content['application/json'].schema
    for (const [name, field] of Object.entries(properties)) t.ok(field.example !== undefined, `${path} ${name}`)
  }
})

t.test('bodies are required except where the token may come in the header instead', async (t) => {
  const doc = await getDocument()
  const required = (path: string) => (doc.paths[path].post as unknown as { requestBody: { required: boolean } }).requestBody.required
  for (const path of ['/auth/sign-up', '/auth/sign-in', '/auth/password']) t.equal(required(path), true, path)
  for (const path of ['/auth/refresh', '/auth/sign-out']) t.equal(required(path), false, path)
  // The body is optional in fact, not only on paper.
  const { refresh_token: token } = (await app.inject({ method: 'POST', url: '/auth/sign-in', payload: await signUp(app) })).json()
  const refreshed = await app.inject({ method: 'POST', url: '/auth/refresh', headers: { authorization: `Bearer ${token}` } })
  t.equal(refreshed.statusCode, 200, 'refresh without a body')
  const signedOut = await app.inject({ method: 'POST', url: '/auth/sign-out', headers: { authorization: `Bearer ${refreshed.json().refresh_token}` } })
  t.equal(signedOut.statusCode, 204, 'sign-out without a body')
})

t.test('GET /metrics is documented as Prometheus text', async (t) => {
  const doc = await getDocument()
  t.same(Object.keys(doc.paths['/metrics'].get.responses['200'].content ?? {}), ['text/plain'])
  const res = await app.inject({ method: 'GET', url: '/metrics' })
  t.equal(res.statusCode, 200)
  t.match(res.headers['content-type'], /^text\/plain/)
  t.match(res.body, /^# HELP /m)
})

t.test('GET /docs → 200 HTML (the interactive docs), with an X-Request-Id', async (t) => {
  let res = await app.inject({ method: 'GET', url: '/docs' })
  if (res.statusCode >= 300 && res.statusCode < 400) res = await app.inject({ method: 'GET', url: res.headers.location as string })
  t.equal(res.statusCode, 200)
  t.match(res.headers['content-type'], /^text\/html/)
  t.match(res.body, /swagger/i)
  t.ok(res.headers['x-request-id'], 'x-request-id')
  const asset = await app.inject({ method: 'GET', url: '/docs/static/swagger-ui-bundle.js' })
  t.equal(asset.statusCode, 200, 'the UI is served from the package, not a CDN')
})

t.test('unknown routes, under /docs too, still get the JSON 404', async (t) => {
  for (const url of ['/nope', '/docs/nope.js']) {
    const res = await app.inject({ method: 'GET', url })
    t.equal(res.statusCode, 404, url)
    t.match(res.headers['content-type'], /^application\/json; charset=utf-8/, url)
    t.equal(res.json().code, 'NOT_FOUND', url)
    t.ok(res.headers['x-request-id'], `${url} x-request-id`)
  }
})
