import net from 'node:net'
import t from 'tap'
import { build, createDatabase, logSink, PASSWORD, uniqueEmail } from './helper.js'

const databaseUrl = await createDatabase(t)
const app = await build(t, databaseUrl)

const ERROR_KEYS = ['code', 'error', 'message', 'statusCode']

t.test('malformed JSON, an empty JSON body and a non-object JSON value → 400 VALIDATION_FAILED', async (t) => {
  for (const payload of ['{"name":', '', '[]', '"a string"', 'null', '42']) {
    const res = await app.inject({ method: 'POST', url: '/auth/sign-up', headers: { 'content-type': 'application/json' }, payload })
    t.equal(res.statusCode, 400, JSON.stringify(payload))
    t.equal(res.json().code, 'VALIDATION_FAILED')
    t.same(Object.keys(res.json()).sort(), ERROR_KEYS)
  }
})

t.test('a body of exactly 16384 bytes is accepted; one byte more → 413 PAYLOAD_TOO_LARGE', async (t) => {
  const base = JSON.stringify({ name: 'Big', email: uniqueEmail(), password: PASSWORD, pad: '' })
  const exact = base.replace('"pad":""', `"pad":"${'x'.repeat(16384 - base.length)}"`)
  t.equal(Buffer.byteLength(exact), 16384)
  const ok = await app.inject({ method: 'POST', url: '/auth/sign-up', headers: { 'content-type': 'application/json' }, payload: exact })
  t.equal(ok.statusCode, 201)
  const over = exact.replace('"pad":"', '"pad":"x')
  const res = await app.inject({ method: 'POST', url: '/auth/sign-up', headers: { 'content-type': 'application/json' }, payload: over })
  t.equal(res.statusCode, 413)
  t.equal(res.json().code, 'PAYLOAD_TOO_LARGE')
})

t.test('a non-JSON body → 415 UNSUPPORTED_MEDIA_TYPE', async (t) => {
  for (const type of ['text/plain', 'application/x-www-form-urlencoded', 'application/xml']) {
    const res = await app.inject({ method: 'POST', url: '/auth/sign-in', headers: { 'content-type': type }, payload: 'email=a&password=b' })
    t.equal(res.statusCode, 415, type)
    t.equal(res.json().code, 'UNSUPPORTED_MEDIA_TYPE')
  }
})

t.test('unknown routes and known paths with the wrong method → 404 NOT_FOUND as JSON', async (t) => {
  for (const [method, url] of [['GET', '/nope'], ['GET', '/auth/sign-in'], ['PUT', '/auth/me'], ['PUT', '/health']] as const) {
    const res = await app.inject({ method, url })
    t.equal(res.statusCode, 404, `${method} ${url}`)
    t.equal(res.headers['content-type'], 'application/json; charset=utf-8')
    t.equal(res.json().code, 'NOT_FOUND')
  }
})

t.test('a URL that is not validly percent-encoded → 400 VALIDATION_FAILED in the contract shape', async (t) => {
  for (const url of ['/%ZZ', '/auth/%zz', '/docs/%']) {
    const res = await app.inject({ method: 'GET', url })
    t.equal(res.statusCode, 400, url)
    t.equal(res.headers['content-type'], 'application/json; charset=utf-8')
    t.same(Object.keys(res.json()).sort(), ERROR_KEYS)
    t.equal(res.json().code, 'VALIDATION_FAILED')
  }
})

t.test('a path outside the docs\' static files → 404 NOT_FOUND, nothing served', async (t) => {
  for (const url of ['/docs/static//', '/docs/static/..%2f..%2fpackage.json', '/docs/static/%2e%2e/%2e%2e/package.json']) {
    const res = await app.inject({ method: 'GET', url })
    t.equal(res.statusCode, 404, url)
    t.equal(res.json().code, 'NOT_FOUND')
  }
})

t.test('requests Node itself would refuse get the contract shape too (over a real socket)', async (t) => {
  await app.listen({ host: '127.0.0.1', port: 0 })
  const { port } = app.server.address() as net.AddressInfo
  const send = async (raw: string): Promise<{ head: string, body: string }> => await new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1', () => socket.write(raw))
    let data = ''
    socket.on('data', (d) => { data += String(d) })
    socket.on('error', reject)
    // The answer is complete once its Content-Length is in: keep-alive answers do not close.
    const done = () => {
      const [head, body = ''] = data.split('\r\n\r\n')
      const length = Number(/content-length: (\d+)/i.exec(head)?.[1] ?? -1)
      if (Buffer.byteLength(body) >= length && length >= 0) { socket.destroy(); resolve({ head, body }) }
    }
    socket.on('data', done)
    socket.on('close', () => resolve({ head: data.split('\r\n\r\n')[0], body: data.split('\r\n\r\n')[1] ?? '' }))
  })
  const cases: Array<[string, string, number, string]> = [
    ['a malformed request line', 'NOT HTTP AT ALL\r\n\r\n', 400, 'VALIDATION_FAILED'],
    ['a NUL in a header value', 'GET /health HTTP/1.1\r\nHost: x\r\nX-A: a\u0000b\r\n\r\n', 400, 'VALIDATION_FAILED'],
    ['headers over the limit', `GET /health HTTP/1.1\r\nHost: x\r\nX-A: ${'a'.repeat(20_000)}\r\n\r\n`, 431, 'PAYLOAD_TOO_LARGE'],
    ['an Expect other than 100-continue', 'GET /health HTTP/1.1\r\nHost: x\r\nExpect: 200-ok\r\n\r\n', 417, 'VALIDATION_FAILED']
  ]
  for (const [what, raw, status, code] of cases) {
    const { head, body } = await send(raw)
    t.match(head, new RegExp(`^HTTP/1\\.1 ${status} `), what)
    t.match(head, /\r\ncontent-type: application\/json; charset=utf-8/i, what)
    t.same(Object.keys(JSON.parse(body)).sort(), ERROR_KEYS, what)
    t.equal(JSON.parse(body).code, code, what)
  }
  // HTTP/1.1 without Host: answered like any request, not with Node's bodiless 400.
  const noHost = await send('GET /health HTTP/1.1\r\n\r\n')
  t.match(noHost.head, /^HTTP\/1\.1 200 /)
  t.same(JSON.parse(noHost.body), { status: 'ok' })
})

t.test('a request that does not arrive in time → 408 in the contract shape, connection closed', async (t) => {
  const slow = await build(t, await createDatabase(t))
  // Node's own limits (requestTimeout is 300 s, checked every 30 s), shortened here: set before
  // listen, which is when Node reads the checking interval.
  Object.assign(slow.server, { requestTimeout: 300, headersTimeout: 300, connectionsCheckingInterval: 50 })
  await slow.listen({ host: '127.0.0.1', port: 0 })
  const { port } = slow.server.address() as net.AddressInfo
  const started = Date.now()
  const data = await new Promise<string>((resolve, reject) => {
    // Headers begun and never finished.
    const socket = net.connect(port, '127.0.0.1', () => socket.write('GET /health HTTP/1.1\r\nHost: x\r\n'))
    let received = ''
    socket.on('data', (d) => { received += String(d) })
    socket.on('error', reject)
    socket.on('close', () => resolve(received))
  })
  const [head, body] = data.split('\r\n\r\n')
  t.match(head, /^HTTP\/1\.1 408 /)
  t.match(head, /\r\ncontent-type: application\/json; charset=utf-8/i)
  t.match(head, /\r\nconnection: close/i)
  t.same(Object.keys(JSON.parse(body)).sort(), ERROR_KEYS)
  t.equal(JSON.parse(body).code, 'VALIDATION_FAILED')
  t.ok(Date.now() - started < 5000, 'answered once the limit passed, not at Node\'s default')
})

t.test('every JSON answer is application/json; charset=utf-8, with a request id', async (t) => {
  for (const res of [
    await app.inject({ method: 'GET', url: '/health' }),
    await app.inject({ method: 'GET', url: '/auth/me' }),
    await app.inject({ method: 'POST', url: '/auth/sign-in', payload: {} })
  ]) {
    t.equal(res.headers['content-type'], 'application/json; charset=utf-8')
    t.match(res.headers['x-request-id'], /^[0-9a-f-]{36}$/)
  }
  const forwarded = await app.inject({ method: 'GET', url: '/health', headers: { 'x-request-id': 'proxy-id-123' } })
  t.equal(forwarded.headers['x-request-id'], 'proxy-id-123', "a proxy's request id is kept")
  const bogus = await app.inject({ method: 'GET', url: '/health', headers: { 'x-request-id': 'bad id\twith spaces' } })
  t.not(bogus.headers['x-request-id'], 'bad id\twith spaces', 'a malformed one is replaced')
})

t.test('GET /health and /health/ready → 200', async (t) => {
  const live = await app.inject({ method: 'GET', url: '/health' })
  t.equal(live.statusCode, 200)
  t.same(live.json(), { status: 'ok' })
  const ready = await app.inject({ method: 'GET', url: '/health/ready' })
  t.equal(ready.statusCode, 200)
})

t.test('an unexpected failure → 500 INTERNAL with no SQL, stack or driver text; the error is logged', async (t) => {
  // A real fault: the schema under the service changed (a column is gone).
  const brokenUrl = await createDatabase(t)
  const log = logSink()
  const broken = await build(t, brokenUrl, { LOG_LEVEL: 'info' }, log.stream)
  await broken.pg.query('ALTER TABLE users RENAME COLUMN name TO full_name')
  const res = await broken.inject({ method: 'POST', url: '/auth/sign-up', payload: { name: 'x', email: uniqueEmail(), password: PASSWORD } })
  t.equal(res.statusCode, 500)
  t.equal(res.json().code, 'INTERNAL')
  t.same(Object.keys(res.json()).sort(), ERROR_KEYS)
  t.notMatch(res.body, /column|relation|INSERT|users|at .*\.ts|node_modules/i)
  t.match(res.json().message, res.headers['x-request-id'] as string, 'the message gives the request id to quote')
  t.ok(log.lines.some((l) => l.includes('"level":50') && l.includes('does not exist')), 'the cause is in the log')
  t.equal((await broken.inject({ method: 'GET', url: '/health' })).statusCode, 200, 'the process goes on')
})

/** A TCP relay to the real PostgreSQL that the test can cut and restore, like a network outage. */
async function startRelay (target: URL): Promise<{ port: number, cut: () => Promise<void>, restore: () => Promise<void> }> {
  const socketDir = target.searchParams.get('host') // an embedded database listens on a Unix socket
  const sockets = new Set<net.Socket>()
  const server = net.createServer((client) => {
    const upstream = socketDir !== null
      ? net.connect(`${socketDir}/.s.PGSQL.5432`)
      : net.connect(Number(target.port || 5432), target.hostname)
    sockets.add(client).add(upstream)
    client.pipe(upstream).pipe(client)
    const close = () => { client.destroy(); upstream.destroy(); sockets.delete(client); sockets.delete(upstream) }
    client.on('error', close).on('close', close)
    upstream.on('error', close).on('close', close)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as net.AddressInfo).port
  t.teardown(() => { for (const s of sockets) s.destroy(); server.close() })
  return {
    port,
    cut: async () => {
      await new Promise<void>((resolve) => { server.close(() => resolve()); for (const s of sockets) s.destroy() })
    },
    restore: async () => await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve))
  }
}

t.test('database unreachable → fast 503 SERVICE_UNAVAILABLE, never a crash; recovery without a restart', async (t) => {
  const target = new URL(await createDatabase(t))
  const relay = await startRelay(target)
  const url = new URL(target)
  url.host = `127.0.0.1:${relay.port}`
  url.search = ''
  const svc = await build(t, url.toString(), { DB_CONNECT_TIMEOUT_MS: '1000' })
  const email = uniqueEmail('outage')
  t.equal((await svc.inject({ method: 'POST', url: '/auth/sign-up', payload: { name: 'x', email, password: PASSWORD } })).statusCode, 201)

  await relay.cut()
  const started = Date.now()
  for (const req of [
    { method: 'POST' as const, url: '/auth/sign-in', payload: { email, password: PASSWORD } },
    { method: 'POST' as const, url: '/auth/sign-up', payload: { name: 'y', email: uniqueEmail(), password: PASSWORD } },
    { method: 'GET' as const, url: '/health/ready' }
  ]) {
    const res = await svc.inject(req)
    t.equal(res.statusCode, 503, `${req.method} ${req.url}`)
    t.equal(res.json().code, 'SERVICE_UNAVAILABLE')
    t.ok(res.headers['retry-after'], 'with Retry-After')
    t.notMatch(res.body, /ECONNREFUSED|terminated|127\.0\.0\.1/)
  }
  t.ok(Date.now() - started < 5000, 'answered fast')
  t.equal((await svc.inject({ method: 'GET', url: '/health' })).statusCode, 200, 'liveness does not depend on the database')

  await relay.restore()
  const back = await svc.inject({ method: 'POST', url: '/auth/sign-in', payload: { email, password: PASSWORD } })
  t.equal(back.statusCode, 200, 'works again once the database is back')
  t.equal((await svc.inject({ method: 'GET', url: '/health/ready' })).statusCode, 200)
})
