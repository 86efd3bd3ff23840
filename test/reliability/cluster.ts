import { execFileSync, spawn } from 'node:child_process'
import { randomInt } from 'node:crypto'
import { once } from 'node:events'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import http from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { freePort } from './processes.js'

// Helpers for running several replicas behind Debian's nginx on loopback.

interface TapLike { teardown: (fn: () => unknown) => void }

export const nginxBinary = (): string => {
  try {
    return execFileSync('sh', ['-c', 'command -v nginx']).toString().trim()
  } catch {
    return ''
  }
}

/**
 * A loopback address of its own (127.0.0.0/8 is all loopback on Linux). The service keys per-IP
 * budgets and per-account throttling on the client IP, and the rate-limit keys in Redis have a
 * fixed prefix, so a fresh client address per test is what keeps runs and tests from sharing
 * counters.
 */
export const clientIp = (): string => `127.${randomInt(1, 255)}.${randomInt(256)}.${randomInt(2, 255)}`

export interface Answer {
  status: number
  headers: http.IncomingHttpHeaders
  body: any
  /** The replica that answered (`host:port`), from the X-Upstream header nginx adds. */
  upstream: string | undefined
}

export interface CallOptions {
  /** The local address the client connects from: the client IP that nginx (or the service) sees. */
  from: string
  body?: unknown
  /** Sent as `Authorization: Bearer <token>`. */
  token?: string
}

/**
 * One HTTP request on a connection of its own (no keep-alive, so nothing ties a client to a
 * replica), from a chosen loopback address.
 */
export async function call (port: number, method: string, path: string, opts: CallOptions): Promise<Answer> {
  const payload = opts.body === undefined ? undefined : JSON.stringify(opts.body)
  const headers: Record<string, string> = {}
  if (payload !== undefined) headers['content-type'] = 'application/json'
  if (opts.token !== undefined) headers.authorization = `Bearer ${opts.token}`
  return await new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path, headers, localAddress: opts.from, agent: false }, (res) => {
      let text = ''
      res.setEncoding('utf8')
      res.on('data', (d: string) => { text += d })
      res.on('end', () => {
        let body: unknown = text
        try { body = text === '' ? undefined : JSON.parse(text) } catch {}
        const upstream = res.headers['x-upstream']
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body, upstream: Array.isArray(upstream) ? upstream.join(',') : upstream })
      })
      res.on('error', reject)
    })
    // A hung replica fails the test instead of stalling it until tap's timeout.
    req.setTimeout(30_000, () => req.destroy(new Error(`${method} ${path} on port ${port}: no answer within 30 s`)))
    req.on('error', reject)
    req.end(payload)
  })
}

/**
 * Debian's nginx on a free loopback port, with deploy/nginx.conf as its server block and an
 * upstream group of `upstreamPorts` in place of Docker's `app:5000`: nginx finds a group named
 * like the `$auth_upstream` value before it asks a resolver, so the deployed directives are kept.
 * Plain round-robin and no upstream keep-alive; every answer carries X-Upstream ($upstream_addr).
 * One process (`master_process off`), stopped by its PID at teardown.
 */
export async function startNginx (t: TapLike, binary: string, upstreamPorts: number[]): Promise<number> {
  const dir = mkdtempSync(join(tmpdir(), 'auth-replicas-nginx-'))
  const port = await freePort()
  const edits: Array<[string, string]> = [
    ['listen 80;', `listen 127.0.0.1:${port};`],
    ['app:5000;', 'auth_replicas;'],
    ['/var/log/nginx/access.log', join(dir, 'access.log')],
    ['proxy_pass http://$auth_upstream;', 'proxy_pass http://$auth_upstream;\n        add_header X-Upstream $upstream_addr always;']
  ]
  let server = readFileSync('deploy/nginx.conf', 'utf8')
  for (const [from, to] of edits) {
    // deploy/nginx.conf changed shape: fail loudly rather than test some other configuration.
    if (!server.includes(from)) throw new Error(`deploy/nginx.conf no longer contains ${JSON.stringify(from)}`)
    server = server.replace(from, to)
  }
  writeFileSync(join(dir, 'server.conf'), server)
  writeFileSync(join(dir, 'nginx.conf'), `master_process off;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 512; }
http {
  client_body_temp_path ${dir}/body; proxy_temp_path ${dir}/proxy; fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi; scgi_temp_path ${dir}/scgi;
  upstream auth_replicas {
${upstreamPorts.map((p) => `    server 127.0.0.1:${p};`).join('\n')}
  }
  include ${dir}/server.conf;
}
`)
  const child = spawn(binary, ['-c', join(dir, 'nginx.conf'), '-g', 'daemon off;'], { stdio: ['ignore', 'ignore', 'pipe'] })
  let stderr = ''
  child.stderr?.on('data', (d) => { stderr += String(d) })
  const exited = once(child, 'exit').catch(() => {}) // a spawn error surfaces as "did not answer" below
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) {
      process.kill(child.pid, 'SIGTERM')
      const killer = setTimeout(() => { if (child.pid !== undefined) process.kill(child.pid, 'SIGKILL') }, 5000)
      await exited
      clearTimeout(killer)
    }
    rmSync(dir, { recursive: true, force: true })
  })
  for (let i = 0; i < 100; i++) {
    if (child.exitCode !== null) break
    if (await call(port, 'GET', '/health', { from: '127.0.0.1' }).then((a) => a.status === 200, () => false)) return port
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  let log = ''
  try { log = readFileSync(join(dir, 'error.log'), 'utf8') } catch {}
  throw new Error(`nginx did not answer on port ${port}: ${stderr} ${log}`)
}
