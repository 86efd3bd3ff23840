import { spawn, type ChildProcess } from 'node:child_process'
import { generateKeyPairSync, randomBytes, randomUUID, type KeyObject } from 'node:crypto'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import pg from 'pg'
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import { buildApp } from '../src/app.js'
import { startEmbeddedDatabase } from '../src/db/embedded.js'

// TEST_DATABASE_URL: a PostgreSQL server to test against (each test file makes its own
// database on it and drops it). Unset: each test database is an embedded PGlite instead.
export const ADMIN_URL = process.env.TEST_DATABASE_URL
export const EMBEDDED = ADMIN_URL === undefined || ADMIN_URL === ''
export const SECRET = 'test-secret-that-is-long-enough-0123456789'
export const PASSWORD = 'correct horse battery staple'

interface TapLike { teardown: (fn: () => unknown) => void }

export async function withAdmin<T> (fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: ADMIN_URL })
  await client.connect()
  try {
    return await fn(client)
  } finally {
    await client.end()
  }
}

/** One statement on a connection of its own, closed at once (an embedded test database serves one at a time). */
export async function sql<T extends pg.QueryResultRow = any> (url: string, text: string, values: unknown[] = []): Promise<T[]> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 10_000 })
  await client.connect()
  try {
    return (await client.query<T>(text, values)).rows
  } finally {
    await client.end()
  }
}

/** A fresh, empty database for this test file, dropped when the file's tests end. */
export async function createDatabase (t: TapLike): Promise<string> {
  if (EMBEDDED) {
    const db = await startEmbeddedDatabase()
    t.teardown(db.close)
    return db.url
  }
  const name = `auth_test_${process.pid}_${randomBytes(4).toString('hex')}`
  await withAdmin(async (c) => await c.query(`CREATE DATABASE ${name}`))
  t.teardown(async () => await withAdmin(async (c) => await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)))
  const url = new URL(ADMIN_URL as string)
  url.pathname = '/' + name
  return url.toString()
}

// Local state of test apps (the development mail outbox), never the project's ./data.
export const TEST_DATA_DIR = mkdtempSync(join(tmpdir(), 'auth-test-'))
process.on('exit', () => { rmSync(TEST_DATA_DIR, { recursive: true, force: true }) })

/** Settings for a test app: the production loader, with the test's database and secret. */
export function testEnv (databaseUrl: string, env: Record<string, string> = {}): Record<string, string> {
  // An embedded database serves a single connection (src/db/embedded.ts).
  // Per-IP rate limits would trip the many requests tests send from one address: they are
  // off here, and on in the tests about them.
  return { DATABASE_URL: databaseUrl, JWT_SECRET_KEY: SECRET, LOG_LEVEL: 'silent', RATE_LIMIT_ENABLED: 'false', DATA_DIR: TEST_DATA_DIR, ...(EMBEDDED ? { DB_POOL_MAX: '1' } : {}), ...env }
}

/** Builds the app exactly as server.ts does (same loader, same buildApp), closed at teardown. */
export async function build (t: TapLike, databaseUrl: string, env: Record<string, string> = {}, logStream?: NodeJS.WritableStream): Promise<FastifyInstance> {
  const app = await buildApp(testEnv(databaseUrl, env), logStream !== undefined ? { logStream } : {})
  t.teardown(async () => await app.close())
  await app.ready()
  return app
}

/** A log sink that keeps every line, for tests that read what would be logged. */
export function logSink (): { stream: Writable, lines: string[] } {
  const lines: string[] = []
  const stream = new Writable({
    write (chunk, _enc, cb) {
      lines.push(...String(chunk).split('\n').filter(Boolean))
      cb()
    }
  })
  return { stream, lines }
}

export const uniqueEmail = (prefix = 'user'): string => `${prefix}-${randomUUID()}@example.com`

export async function signUp (app: FastifyInstance, fields: { name?: string, email?: string, password?: string } = {}) {
  const body = { name: 'Test User', email: uniqueEmail(), password: PASSWORD, ...fields }
  const res = await app.inject({ method: 'POST', url: '/auth/sign-up', payload: body })
  if (res.statusCode !== 201) throw new Error(`sign-up failed: ${res.statusCode} ${res.body}`)
  return { ...body, id: res.json().user.id as string }
}

export interface Session {
  access_token: string
  refresh_token: string
  user: { id: string, username: string }
}

export async function signIn (app: FastifyInstance, email: string, password = PASSWORD, headers: Record<string, string> = {}): Promise<Session> {
  const res = await app.inject({ method: 'POST', url: '/auth/sign-in', payload: { email, password }, headers })
  if (res.statusCode !== 200) throw new Error(`sign-in failed: ${res.statusCode} ${res.body}`)
  return res.json()
}

/** A new user, signed in. */
export async function newSession (app: FastifyInstance): Promise<Session & { email: string }> {
  const user = await signUp(app)
  return { ...await signIn(app, user.email), email: user.email }
}

export const bearer = (token: string) => ({ authorization: `Bearer ${token}` })

export async function refresh (app: FastifyInstance, token: string): Promise<LightMyRequestResponse> {
  return await app.inject({ method: 'POST', url: '/auth/refresh', headers: bearer(token) })
}

/** The claims of a JWT, without verifying it (tests inspect what the service issued). */
export function claimsOf (token: string): Record<string, unknown> {
  return JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString())
}

export interface ServerProcess {
  child: ChildProcess
  /** Resolves to the base URL once it listens; rejects if it exits or does not start in time (20 s by default). */
  listening: Promise<string>
  output: () => { out: string, err: string }
}

/** How tests start the service process: from source, with the node flags `npm start` gives it (package.json). */
export const SERVICE_ARGS = [
  ...(JSON.parse(readFileSync('package.json', 'utf8')) as { scripts: { start: string } }).scripts.start.split(' ').slice(1, -1),
  '--import', 'tsx', 'src/server.ts'
]

/**
 * The real process entry (src/server.ts, as `npm start` runs it after building, with its node
 * flags) on 127.0.0.1 and a free port. `databaseUrl` undefined: the server runs without
 * DATABASE_URL. Stopped at teardown.
 */
export function spawnServer (t: TapLike, databaseUrl: string | undefined, env: Record<string, string> = {},
  opts: { cpus?: string, startTimeoutMs?: number } = {}): ServerProcess {
  const settings = databaseUrl === undefined ? { JWT_SECRET_KEY: SECRET, ...env } : testEnv(databaseUrl, { LOG_LEVEL: 'info', ...env })
  const startTimeoutMs = opts.startTimeoutMs ?? 20_000
  // `cpus`: the process may run on these CPUs only (taskset), as on a small machine.
  const [command, args] = opts.cpus === undefined
    ? [process.execPath, SERVICE_ARGS]
    : ['taskset', ['-c', opts.cpus, process.execPath, ...SERVICE_ARGS]]
  const child = spawn(command, args, {
    env: { PATH: process.env.PATH ?? '', HOST: '127.0.0.1', PORT: '0', ...settings },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let out = ''
  let err = ''
  child.stdout?.on('data', (d) => { out += String(d) })
  child.stderr?.on('data', (d) => { err += String(d) })
  t.teardown(async () => {
    if (child.exitCode !== null || child.signalCode !== null) return
    child.kill('SIGTERM')
    const killer = setTimeout(() => child.kill('SIGKILL'), 10_000)
    await new Promise((resolve) => child.once('exit', resolve))
    clearTimeout(killer)
  })
  const listening = new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no start within ${startTimeoutMs / 1000} s: ${out} ${err}`)), startTimeoutMs)
    // Scans the output only until the start: a long-running test keeps logging for minutes.
    const onData = (): void => {
      const m = /Server listening at (http:\/\/127\.0\.0\.1:\d+)/.exec(out)
      if (m !== null) { clearTimeout(timer); child.stdout?.off('data', onData); resolve(m[1]) }
    }
    child.stdout?.on('data', onData)
    child.on('exit', () => { clearTimeout(timer); reject(new Error(`exited: ${err}`)) })
    child.on('error', (e) => { clearTimeout(timer); reject(e) }) // taskset or node not found
  })
  listening.catch(() => {}) // a test that expects the start to fail never awaits it
  return { child, listening, output: () => ({ out, err }) }
}

export type KeyKind = 'Ed25519' | 'P-256' | 'RSA-2048' | 'P-384' | 'RSA-1024' | 'DSA' | 'Ed448'

/** A new key pair as PEM (PKCS#8 private, SPKI public), for JWT_PRIVATE_KEY and JWT_PUBLIC_KEYS_EXTRA. */
export function pemKeyPair (kind: KeyKind): { privateKey: string, publicKey: string } {
  const pair: { privateKey: KeyObject, publicKey: KeyObject } = {
    Ed25519: () => generateKeyPairSync('ed25519'),
    'P-256': () => generateKeyPairSync('ec', { namedCurve: 'P-256' }),
    'RSA-2048': () => generateKeyPairSync('rsa', { modulusLength: 2048 }),
    'P-384': () => generateKeyPairSync('ec', { namedCurve: 'P-384' }),
    'RSA-1024': () => generateKeyPairSync('rsa', { modulusLength: 1024 }),
    DSA: () => generateKeyPairSync('dsa', { modulusLength: 1024, divisorLength: 160 }),
    Ed448: () => generateKeyPairSync('ed448')
  }[kind]()
  return {
    privateKey: pair.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
    publicKey: pair.publicKey.export({ type: 'spki', format: 'pem' }) as string
  }
}
