import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { chownSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import http from 'node:http'
import net from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { SERVICE_ARGS, testEnv } from '../helper.js'

// Shared by the reliability tests: service processes the test can SIGKILL, SIGTERM and start
// again, a throwaway PostgreSQL server it can crash, and an HTTP client that records what
// happened to each request instead of throwing.

interface TapLike { teardown: (fn: () => unknown) => void }

export const sleep = async (ms: number): Promise<void> => await new Promise((resolve) => setTimeout(resolve, ms))

/** `p`'s value, or undefined when it takes longer than `ms` (the timer does not outlive the race). */
export async function within<T> (p: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: ReturnType<typeof setTimeout> | undefined
  try {
    return await Promise.race([p, new Promise<undefined>((resolve) => { timer = setTimeout(() => resolve(undefined), ms) })])
  } finally {
    clearTimeout(timer)
  }
}

export async function freePort (): Promise<number> {
  const s = net.createServer().listen(0, '127.0.0.1')
  await once(s, 'listening')
  const { port } = s.address() as net.AddressInfo
  s.close()
  await once(s, 'close')
  return port
}

/** Runs `fn` over `items` with at most `concurrency` calls at a time; results in input order. */
export async function mapLimit<T, R> (items: T[], concurrency: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const results = new Array<R>(items.length)
  let next = 0
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, async () => {
    while (next < items.length) {
      const i = next++
      results[i] = await fn(items[i])
    }
  }))
  return results
}

// ---------------------------------------------------------------------------------------------
// The service as a process of its own

export interface Exit { code: number | null, signal: NodeJS.Signals | null, at: number }

export interface ServiceProcess {
  child: ChildProcess
  pid: number
  /** Resolves to the base URL once the log says it listens. */
  listening: Promise<string>
  /** Resolves when the process has exited (never rejects). */
  exited: Promise<Exit>
  output: () => { out: string, err: string }
  /** Resolves when stdout holds a line matching `re` (rejects after `ms`). */
  waitForOutput: (re: RegExp, ms: number) => Promise<number>
  alive: () => boolean
}

/**
 * The service from source (SERVICE_ARGS, as spawnServer in test/helper.ts runs it) on 127.0.0.1
 * and a free port, with the test settings plus `env`. Unlike spawnServer it gives the test the exit
 * status and time, and a start time limit that a busy 2-core machine can meet. Killed by its PID
 * at teardown if it still runs.
 */
export function startService (t: TapLike, databaseUrl: string, env: Record<string, string> = {}, startMs = 60_000): ServiceProcess {
  const child = spawn(process.execPath, SERVICE_ARGS, {
    env: { PATH: process.env.PATH ?? '', HOST: '127.0.0.1', PORT: '0', ...testEnv(databaseUrl, { LOG_LEVEL: 'info', PRUNE_INTERVAL_SECONDS: '0', ...env }) },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  if (child.pid === undefined) throw new Error('the service process did not start')
  const pid = child.pid
  let out = ''
  let err = ''
  // Each waitForOutput: `check` on new output, `fail` when the process exits first.
  const watchers = new Set<{ check: () => void, fail: () => void }>()
  child.stdout?.on('data', (d) => { out += String(d); for (const w of watchers) w.check() })
  child.stderr?.on('data', (d) => { err += String(d) })
  const exited = new Promise<Exit>((resolve) => {
    child.once('exit', (code, signal) => {
      resolve({ code, signal, at: Date.now() })
      for (const w of watchers) w.fail()
    })
  })
  const alive = (): boolean => child.exitCode === null && child.signalCode === null
  t.teardown(async () => {
    if (!alive()) return
    process.kill(pid, 'SIGKILL')
    await exited
  })
  const waitForOutput = async (re: RegExp, ms: number): Promise<number> => await new Promise((resolve, reject) => {
    const watcher = {
      check: (): void => {
        if (!re.test(out)) return
        done()
        resolve(Date.now())
      },
      fail: (): void => {
        done()
        reject(new Error(`the service exited (${child.exitCode ?? child.signalCode ?? '?'}) before its output matched ${re}: ${err}`))
      }
    }
    const timer = setTimeout(() => { done(); reject(new Error(`no ${re} in the service's output within ${ms} ms: ${out.slice(-2000)} ${err}`)) }, ms)
    const done = (): void => { clearTimeout(timer); watchers.delete(watcher) }
    watchers.add(watcher)
    watcher.check()
    if (!alive()) watcher.fail()
  })
  const listening = (async () => {
    await waitForOutput(/Server listening at http:\/\/127\.0\.0\.1:\d+/, startMs)
    return (/Server listening at (http:\/\/127\.0\.0\.1:\d+)/.exec(out) as RegExpExecArray)[1]
  })()
  listening.catch(() => {}) // surfaced where it is awaited
  return { child, pid, listening, exited, output: () => ({ out, err }), waitForOutput, alive }
}

/** The JSON lines of a service log (anything else is skipped). */
export function logLines (out: string): Array<Record<string, any>> {
  const lines: Array<Record<string, any>> = []
  for (const line of out.split('\n')) {
    if (!line.startsWith('{')) continue
    try { lines.push(JSON.parse(line)) } catch {}
  }
  return lines
}

// ---------------------------------------------------------------------------------------------
// A PostgreSQL server of the test's own, which it may crash

export interface ThrowawayPostgres {
  url: string
  port: number
  /** pg_ctl stop -m immediate: the server processes quit at once, like a crash; the next start replays WAL. */
  crash: () => Promise<void>
  /** pg_ctl start -w: resolves once the server accepts connections. */
  start: () => Promise<void>
  log: () => string
}

/** The newest PostgreSQL server binaries of Debian's packages, or '' when there are none. */
export function postgresBinDir (): string {
  const root = '/usr/lib/postgresql'
  if (!existsSync(root)) return ''
  const versions = readdirSync(root).filter((v) => existsSync(join(root, v, 'bin', 'pg_ctl'))).sort((a, b) => Number(b) - Number(a))
  return versions.length === 0 ? '' : join(root, versions[0], 'bin')
}

const execFileAsync = promisify(execFile)

/**
 * initdb + pg_ctl start on a free loopback port, data in a new temporary directory, trust auth
 * for `postgres`: never the machine's shared server. PostgreSQL refuses to run as root, so as
 * root its tools run as the `postgres` OS user. Stopped (by the PID in its postmaster.pid, which
 * is what pg_ctl stop signals) and deleted at teardown. The tools run asynchronously, so the
 * test's clients go on sending and timing requests while the server stops and starts.
 */
export async function startThrowawayPostgres (t: TapLike, bin: string): Promise<ThrowawayPostgres> {
  const asRoot = process.getuid?.() === 0
  const run = async (tool: string, args: string[]): Promise<void> => {
    const [cmd, argv] = asRoot ? ['runuser', ['-u', 'postgres', '--', join(bin, tool), ...args]] : [join(bin, tool), args]
    await execFileAsync(cmd, argv, { timeout: 120_000 })
  }
  const dir = mkdtempSync(join(tmpdir(), 'auth-reliability-pg-'))
  if (asRoot) {
    const uid = Number(execFileSync('id', ['-u', 'postgres']).toString())
    const gid = Number(execFileSync('id', ['-g', 'postgres']).toString())
    chownSync(dir, uid, gid)
  }
  const data = join(dir, 'data')
  const logFile = join(dir, 'postgres.log')
  const port = await freePort()
  t.teardown(async () => {
    if (existsSync(join(data, 'postmaster.pid'))) await run('pg_ctl', ['stop', '-D', data, '-m', 'immediate', '-w']).catch(() => {})
    rmSync(dir, { recursive: true, force: true })
  })
  // --no-sync: initdb's files need not reach the disk for a test (the running server still fsyncs).
  await run('initdb', ['-D', data, '-A', 'trust', '-U', 'postgres', '--no-sync', '-E', 'UTF8'])
  const start = async (): Promise<void> => {
    await run('pg_ctl', ['start', '-w', '-t', '60', '-D', data, '-l', logFile,
      '-o', `-c listen_addresses=127.0.0.1 -c port=${port} -k ${dir}`])
  }
  await start()
  return {
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    port,
    crash: async () => { await run('pg_ctl', ['stop', '-D', data, '-m', 'immediate', '-w']) },
    start,
    log: () => { try { return readFileSync(logFile, 'utf8') } catch { return '' } }
  }
}

// ---------------------------------------------------------------------------------------------
// HTTP that records instead of throwing

export interface Outcome {
  method: string
  path: string
  requestId: string
  /** Date.now() when the request was handed to the socket layer, and when it ended. */
  sentAt: number
  endedAt: number
  /** true when it went out on a kept-alive connection that an earlier request had opened. */
  reused: boolean
  status?: number
  headers?: http.IncomingHttpHeaders
  body?: any
  text?: string
  /** The error code (ECONNREFUSED, ECONNRESET, TIMEOUT, ...) when no complete answer came. */
  error?: string
  /** true when the error came after the status line: the answer was cut off. */
  cutOff: boolean
}

export interface CallOptions {
  body?: unknown
  /** Sent as `Authorization: Bearer <token>`. */
  token?: string
  /** A keep-alive agent of the caller's; default: a new connection for this request only. */
  agent?: http.Agent
  /** No complete answer within this many ms: recorded as error TIMEOUT. */
  timeoutMs?: number
  /**
   * Send the headers with `Expect: 100-continue` and hold the body back until this resolves. The
   * service's `100 Continue` proves it has read the request: `onContinue` is called then.
   */
  holdBodyUntil?: Promise<unknown>
  onContinue?: () => void
}

let requestCount = 0

/** One request; every outcome, an error included, comes back as an Outcome. Never rejects. */
export async function call (base: string, method: string, path: string, opts: CallOptions = {}): Promise<Outcome> {
  const url = new URL(path, base)
  const payload = opts.body === undefined ? undefined : JSON.stringify(opts.body)
  // The service takes a well-formed X-Request-Id as its request id: its log lines can be matched.
  const requestId = `rel-${process.pid}-${++requestCount}`
  const headers: Record<string, string> = { 'x-request-id': requestId }
  if (payload !== undefined) headers['content-type'] = 'application/json'
  if (opts.token !== undefined) headers.authorization = `Bearer ${opts.token}`
  const outcome: Outcome = { method, path, requestId, sentAt: Date.now(), endedAt: 0, reused: false, cutOff: false }
  return await new Promise((resolve) => {
    let settled = false
    const finish = (error?: string): void => {
      if (settled) return
      settled = true
      clearTimeout(deadline)
      outcome.endedAt = Date.now()
      if (error !== undefined) {
        outcome.error = error
        outcome.cutOff = outcome.status !== undefined
      }
      resolve(outcome)
    }
    const req = http.request({ host: url.hostname, port: url.port, method, path: url.pathname + url.search, headers, agent: opts.agent ?? false }, (res) => {
      outcome.status = res.statusCode
      outcome.headers = res.headers
      let text = ''
      res.setEncoding('utf8')
      res.on('data', (d: string) => { text += d })
      res.on('end', () => {
        outcome.text = text
        try { outcome.body = text === '' ? undefined : JSON.parse(text) } catch { outcome.body = text }
        finish()
      })
      res.on('aborted', () => finish('ECONNRESET'))
      res.on('error', (err: NodeJS.ErrnoException) => finish(err.code ?? err.message))
    })
    req.on('socket', () => { outcome.reused = req.reusedSocket })
    // A deadline for the whole exchange, not an idle timeout: a hang is recorded, never waited out.
    const deadline = setTimeout(() => { finish('TIMEOUT'); req.destroy() }, opts.timeoutMs ?? 30_000)
    req.on('error', (err: NodeJS.ErrnoException) => finish(err.code ?? err.message))
    if (opts.holdBodyUntil === undefined) {
      req.end(payload)
      return
    }
    const hold = opts.holdBodyUntil
    req.setHeader('expect', '100-continue')
    req.setHeader('content-length', Buffer.byteLength(payload ?? ''))
    req.on('continue', () => {
      opts.onContinue?.()
      hold.then(() => req.end(payload), () => req.destroy())
    })
    req.flushHeaders()
  })
}

export const ERROR_KEYS = ['code', 'error', 'message', 'statusCode']

/**
 * Why `o` is not the contract's error answer for `status` and `code` ({ statusCode, error, code,
 * message } as application/json; charset=utf-8), or '' when it is.
 */
export function contractErrorProblem (o: Outcome, status: number, code: string): string {
  if (o.status !== status) return `status ${o.status ?? o.error ?? '?'}, not ${status}`
  if (o.headers?.['content-type'] !== 'application/json; charset=utf-8') return `content-type ${String(o.headers?.['content-type'])}`
  const body = o.body
  if (typeof body !== 'object' || body === null) return `body ${JSON.stringify(o.text)}`
  if (JSON.stringify(Object.keys(body).sort()) !== JSON.stringify(ERROR_KEYS)) return `body keys ${JSON.stringify(Object.keys(body).sort())} in ${o.text ?? ''}`
  if (body.code !== code || body.statusCode !== status) return `body ${o.text ?? ''}`
  return ''
}

/** A short line about one outcome, for assertion messages. */
export const describe = (o: Outcome): string =>
  `${o.method} ${o.path} → ${o.status ?? '-'}${o.error !== undefined ? ` ${o.error}${o.cutOff ? ' (cut off)' : ''}` : ''} ` +
  `${o.text !== undefined ? o.text.slice(0, 160) : ''} after ${o.endedAt - o.sentAt} ms${o.reused ? ' (kept-alive connection)' : ''}`
