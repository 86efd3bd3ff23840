import { execFileSync, spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import http from 'node:http'
import net from 'node:net'
import { join } from 'node:path'
import t from 'tap'
import { createDatabase, PASSWORD, spawnServer, uniqueEmail, type ServerProcess } from './helper.js'

// The service behind Debian's nginx on loopback, configured from deploy/nginx.conf.
const nginx = (() => { try { return execFileSync('sh', ['-c', 'command -v nginx']).toString().trim() } catch { return '' } })()
if (nginx === '') t.plan(0, 'nginx is not installed (apt-get install nginx; .ci/run does)')

const freePort = async (): Promise<number> => {
  const s = net.createServer().listen(0, '127.0.0.1')
  await once(s, 'listening')
  const { port } = s.address() as net.AddressInfo
  s.close()
  return port
}

async function startNginx (upstreamPort: number): Promise<number> {
  const dir = t.testdir()
  mkdirSync(join(dir, 'tmp'))
  const port = await freePort()
  const server = readFileSync('deploy/nginx.conf', 'utf8')
    .replace('listen 80;', `listen 127.0.0.1:${port};`)
    .replace('app:5000;', `127.0.0.1:${upstreamPort};`)
    .replace('/var/log/nginx/access.log', join(dir, 'access.log'))
  writeFileSync(join(dir, 'server.conf'), server)
  const tmp = join(dir, 'tmp')
  writeFileSync(join(dir, 'nginx.conf'), `pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 64; }
http {
  client_body_temp_path ${tmp}; proxy_temp_path ${tmp}; fastcgi_temp_path ${tmp}; uwsgi_temp_path ${tmp}; scgi_temp_path ${tmp};
  include ${dir}/server.conf;
}
`)
  const child = spawn(nginx, ['-c', join(dir, 'nginx.conf'), '-g', 'daemon off;'], { stdio: 'inherit' })
  t.teardown(() => { child.kill('SIGTERM') })
  for (let i = 0; i < 100; i++) {
    if (await fetch(`http://127.0.0.1:${port}/health`).then((r) => r.ok, () => false)) break
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  return port
}

/** A sign-in sent from a given loopback address, with a forged X-Forwarded-For. */
async function signInFrom (localAddress: string, port: number, email: string): Promise<{ status: number, requestId: string }> {
  const body = JSON.stringify({ email, password: PASSWORD })
  return await new Promise((resolve, reject) => {
    const req = http.request({
      host: '127.0.0.1',
      port,
      localAddress,
      method: 'POST',
      path: '/auth/sign-in',
      headers: { 'content-type': 'application/json', 'x-forwarded-for': '203.0.113.7' }
    }, (res) => {
      res.resume()
      res.on('end', () => resolve({ status: res.statusCode ?? 0, requestId: String(res.headers['x-request-id']) }))
    })
    req.on('error', reject)
    req.end(body)
  })
}

/** The client IP the service logged for a request. */
const ipOf = (server: ServerProcess, requestId: string) =>
  server.output().out.split('\n').filter(Boolean).map((l) => JSON.parse(l)).find((e) => e.reqId === requestId && e.msg === 'request')?.ip
const portOf = async (server: ServerProcess) => Number(new URL(await server.listening).port)

t.test('behind nginx with TRUST_PROXY=1 the client IP is the one nginx forwarded, not a forged one', async (t) => {
  const databaseUrl = await createDatabase(t)
  const service = spawnServer(t, databaseUrl, { TRUST_PROXY: '1' })
  const proxyPort = await startNginx(await portOf(service))
  const email = uniqueEmail('proxied')
  const signUp = await fetch(`http://127.0.0.1:${proxyPort}/auth/sign-up`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ name: 'Proxied', email, password: PASSWORD })
  })
  t.equal(signUp.status, 201, 'the service answers through nginx')
  const metrics = await fetch(`http://127.0.0.1:${proxyPort}/metrics`)
  t.match({ status: metrics.status, type: metrics.headers.get('content-type'), body: await metrics.json() },
    { status: 404, type: 'application/json', body: { code: 'NOT_FOUND' } }, '/metrics is not served through the proxy')

  // The client connects from 127.0.0.5; nginx appends that to the forged header.
  const res = await signInFrom('127.0.0.5', proxyPort, email)
  t.equal(res.status, 200)
  await new Promise((resolve) => setTimeout(resolve, 200))
  t.equal(ipOf(service, res.requestId), '127.0.0.5', 'the address nginx saw, not 203.0.113.7 nor nginx itself')
})

t.test('without TRUST_PROXY the service ignores X-Forwarded-For', async (t) => {
  const databaseUrl = await createDatabase(t)
  const service = spawnServer(t, databaseUrl)
  const res = await signInFrom('127.0.0.6', await portOf(service), uniqueEmail('direct'))
  t.equal(res.status, 401)
  await new Promise((resolve) => setTimeout(resolve, 200))
  t.equal(ipOf(service, res.requestId), '127.0.0.6', 'the TCP peer, the forged header ignored')
})
