import { once } from 'node:events'
import { connect, type AddressInfo } from 'node:net'
import t from 'tap'
import { build, createDatabase, EMBEDDED, PASSWORD, spawnServer, uniqueEmail } from './helper.js'

t.test('a bad setting stops the start with one line naming the variable', async (t) => {
  const { child, output } = spawnServer(t, 'postgres://postgres@127.0.0.1:5432/postgres', { PORT: 'abc' })
  const [code] = await once(child, 'exit')
  t.equal(code, 1)
  t.match(output().err.trim(), /^configuration error: PORT: must be integer/)
  t.equal(output().err.trim().split('\n').length, 1, 'one line')
})

t.test('SIGTERM: requests in flight finish, then the process exits 0 within 10 s', async (t) => {
  const databaseUrl = await createDatabase(t)
  // Slow hashing (about half a second) so that a sign-up is surely in flight at the signal.
  const server = spawnServer(t, databaseUrl, { ARGON2_ITERATIONS: '20', ARGON2_MEMORY_KIB: '19456' })
  const base = await server.listening
  t.equal((await fetch(`${base}/health`)).status, 200)

  const inFlight = fetch(`${base}/auth/sign-up`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ name: 'In Flight', email: uniqueEmail('sigterm'), password: PASSWORD })
  })
  await new Promise((resolve) => setTimeout(resolve, 100))
  const signalAt = Date.now()
  server.child.kill('SIGTERM')
  const res = await inFlight
  t.equal(res.status, 201, 'the in-flight sign-up completed with its normal answer')
  const [code] = await once(server.child, 'exit')
  t.equal(code, 0)
  t.ok(Date.now() - signalAt < 10_000, 'within 10 s')
  t.match(server.output().out, /shutting down/)
})

t.test('replicas starting together apply migrations once, under a lock', { skip: EMBEDDED && 'needs a shared PostgreSQL server (TEST_DATABASE_URL)' }, async (t) => {
  const databaseUrl = await createDatabase(t)
  const servers = [1, 2, 3].map(() => spawnServer(t, databaseUrl))
  const bases = await Promise.all(servers.map(async (s) => await s.listening))
  for (const base of bases) t.equal((await fetch(`${base}/health/ready`)).status, 200)
  for (const s of servers) s.child.kill('SIGTERM')
  await Promise.all(servers.map(async (s) => await once(s.child, 'exit')))
})

t.test('a request completed after closing began gets the contract 503, with Retry-After and Connection: close', async (t) => {
  const app = await build(t, await createDatabase(t))
  await app.listen({ host: '127.0.0.1', port: 0 })
  const { port } = app.server.address() as AddressInfo
  // Half a request before the close: the connection is busy, so closing does not drop it.
  const socket = connect(port, '127.0.0.1')
  t.teardown(() => socket.destroy())
  await once(socket, 'connect')
  socket.write('GET /health HTTP/1.1\r\nHost: localhost\r\n')
  await new Promise((resolve) => setTimeout(resolve, 50))
  const closed = app.close()
  await new Promise((resolve) => setTimeout(resolve, 50))
  let answer = ''
  socket.on('data', (d) => { answer += String(d) })
  socket.write('\r\n')
  await once(socket, 'close')
  await closed
  const [head, body] = answer.split('\r\n\r\n')
  t.match(head, /^HTTP\/1\.1 503 /)
  t.match(head, /\r\nconnection: close\r\n/i)
  t.match(head, /\r\nretry-after: 1\r\n/i)
  t.match(head, /\r\ncontent-type: application\/json; charset=utf-8\r\n/i)
  t.same(JSON.parse(body), { statusCode: 503, error: 'Service Unavailable', code: 'SERVICE_UNAVAILABLE', message: 'The service is shutting down; retry shortly' })
})
