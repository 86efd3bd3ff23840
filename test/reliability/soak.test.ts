import { randomUUID } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { setTimeout as sleep } from 'node:timers/promises'
import t from 'tap'
import { createDatabase, PASSWORD, spawnServer } from '../helper.js'

// Issue #7, soak: minutes of mixed load on the real process and a real PostgreSQL database.
// No error, RSS flat after warm-up (growth under 10 %), no pool exhaustion.
// SOAK_SECONDS and SOAK_WARMUP_SECONDS shorten it while working on it.

const WARMUP_MS = Number(process.env.SOAK_WARMUP_SECONDS ?? 30) * 1000
const SOAK_MS = Number(process.env.SOAK_SECONDS ?? 180) * 1000
// RSS is compared between the first and the last minute of the soak, as medians: it swings by
// tens of MiB within a minute (argon2's 19 MiB per hash, V8 growing and shrinking its heap), so
// a window shorter than a swing could land on a peak or a trough and decide the test alone.
const WINDOW_MS = Math.min(60_000, SOAK_MS / 3)
const CONCURRENCY = 8 // virtual clients, each with one request in flight at a time
const MAX_REQUESTS = 2_000_000 // a bound besides time, should the machine be much faster than expected
const POOL_MAX = 10
const CONNECT_TIMEOUT_MS = 3000
const RSS_EVERY_MS = 1000
const METRICS_EVERY_MS = 5000

t.setTimeout(WARMUP_MS + SOAK_MS + 180_000)

const databaseUrl = await createDatabase(t)
// Default argon2 settings: hashing memory is part of what must stay flat.
const server = spawnServer(t, databaseUrl, { DB_POOL_MAX: String(POOL_MAX), DB_CONNECT_TIMEOUT_MS: String(CONNECT_TIMEOUT_MS) })
const base = await server.listening
const pid = server.child.pid as number

const rssKib = (): number => Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1])
const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b)
  return s.length === 0 ? NaN : s.length % 2 === 1 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2
}
const percentile = (sorted: Float64Array, p: number): number => sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))]

// ── Load ────────────────────────────────────────────────────────────────────────────────────

type Op = 'me' | 'sessions' | 'refresh' | 'sign-out + sign-in' | 'sign-up + sign-out + sign-in'
// Mostly token traffic, as in real use; the argon2-bound operations are a minority.
const MIX: Array<[Op, number]> = [['me', 45], ['sessions', 15], ['refresh', 25], ['sign-out + sign-in', 10], ['sign-up + sign-out + sign-in', 5]]
const pickOp = (): Op => {
  let r = Math.random() * MIX.reduce((sum, [, w]) => sum + w, 0)
  for (const [op, w] of MIX) if ((r -= w) < 0) return op
  return 'me'
}

let requests = 0
const opsDone = new Map<Op, number>(MIX.map(([op]) => [op, 0]))
const errors: string[] = []
let errorCount = 0
let latencies = new Float64Array(1 << 16)
let maxLatency = { ms: 0, what: '' }

/** One request; undefined (and an error counted) unless it answers `expect`. */
async function call (method: string, path: string, expect: number, opts: { token?: string, body?: unknown } = {}): Promise<any> {
  const headers: Record<string, string> = {}
  if (opts.token !== undefined) headers.authorization = `Bearer ${opts.token}`
  if (opts.body !== undefined) headers['content-type'] = 'application/json'
  const started = performance.now()
  let status: number
  let text: string
  try {
    const res = await fetch(base + path, { method, headers, ...(opts.body !== undefined ? { body: JSON.stringify(opts.body) } : {}) })
    status = res.status
    text = await res.text()
  } catch (err) {
    errorCount++
    if (errors.length < 20) errors.push(`${method} ${path}: ${(err as Error).message} (${String((err as { cause?: unknown }).cause)})`)
    return undefined
  }
  const ms = performance.now() - started
  if (requests === latencies.length) {
    const bigger = new Float64Array(latencies.length * 2)
    bigger.set(latencies)
    latencies = bigger
  }
  latencies[requests++] = ms
  if (ms > maxLatency.ms) maxLatency = { ms, what: `${method} ${path} → ${status}` }
  if (status !== expect) {
    errorCount++
    if (errors.length < 20) errors.push(`${method} ${path} → ${status} (expected ${expect}) ${text.slice(0, 200)}`)
    return undefined
  }
  return text === '' ? null : JSON.parse(text)
}

interface Client { email: string, access: string, refresh: string }

async function signIn (email: string): Promise<Client | undefined> {
  const s = await call('POST', '/auth/sign-in', 200, { body: { email, password: PASSWORD } })
  return s === undefined ? undefined : { email, access: s.access_token, refresh: s.refresh_token }
}

async function newUser (): Promise<string | undefined> {
  const email = `soak-${randomUUID()}@example.com`
  const created = await call('POST', '/auth/sign-up', 201, { body: { name: 'Soak User', email, password: PASSWORD } })
  return created === undefined ? undefined : email
}

/** One operation of the mix; the client keeps its latest tokens (rotation: the old refresh token is spent). */
async function step (c: Client, op: Op): Promise<Client | undefined> {
  switch (op) {
    case 'me':
      return await call('GET', '/auth/me', 200, { token: c.access }) === undefined ? undefined : c
    case 'sessions':
      return await call('GET', '/auth/sessions', 200, { token: c.access }) === undefined ? undefined : c
    case 'refresh': {
      const r = await call('POST', '/auth/refresh', 200, { token: c.refresh })
      return r === undefined ? undefined : { ...c, access: r.access_token, refresh: r.refresh_token }
    }
    case 'sign-out + sign-in':
      // Signing out first keeps each user's live sessions (and the sessions list) bounded.
      if (await call('POST', '/auth/sign-out', 204, { token: c.refresh }) === undefined) return undefined
      return await signIn(c.email)
    case 'sign-up + sign-out + sign-in': {
      const email = await newUser()
      if (email === undefined || await call('POST', '/auth/sign-out', 204, { token: c.refresh }) === undefined) return undefined
      return await signIn(email)
    }
  }
}

async function client (email: string, until: number): Promise<void> {
  let c = await signIn(email)
  const going = (): boolean => performance.now() < until && requests < MAX_REQUESTS
  while (going()) {
    if (c === undefined) {
      // After an error (already counted), start over with a fresh session.
      await sleep(100)
      c = await signIn(email)
      continue
    }
    const op = pickOp()
    c = await step(c, op)
    if (c !== undefined) {
      opsDone.set(op, (opsDone.get(op) ?? 0) + 1)
      email = c.email
    }
  }
}

// ── Observation ─────────────────────────────────────────────────────────────────────────────

interface Pool { total: number, idle: number, waiting: number }
const gauge = (text: string, name: string): number => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1] ?? NaN)
async function scrapeMetrics (): Promise<{ pool: Pool, text: string }> {
  const text = await (await fetch(`${base}/metrics`)).text()
  return {
    text,
    pool: {
      total: gauge(text, 'db_pool_connections\\{state="total"\\}'),
      idle: gauge(text, 'db_pool_connections\\{state="idle"\\}'),
      waiting: gauge(text, 'db_pool_connections\\{state="waiting"\\}')
    }
  }
}

t.test(`soak: ${WARMUP_MS / 1000} s warm-up, then ${SOAK_MS / 1000} s of mixed load → no error, RSS flat, no pool exhaustion`, async (t) => {
  const seeded: string[] = []
  for (let i = 0; i < CONCURRENCY; i++) {
    const email = await newUser()
    if (email !== undefined) seeded.push(email)
  }
  t.equal(seeded.length, CONCURRENCY, 'users seeded through the API')

  const start = performance.now()
  const soakStart = start + WARMUP_MS
  const end = soakStart + SOAK_MS
  const rss: Array<{ at: number, kib: number }> = [] // at: ms since the end of the warm-up
  const pools: Pool[] = []
  const scrapeErrors: string[] = []
  let sampling = true
  t.teardown(() => { sampling = false })
  const observing = (): boolean => sampling && performance.now() < end

  const rssSampler = (async () => {
    while (observing()) {
      rss.push({ at: performance.now() - soakStart, kib: rssKib() })
      await sleep(RSS_EVERY_MS)
    }
  })()
  const metricsScraper = (async () => {
    while (observing()) {
      try {
        pools.push((await scrapeMetrics()).pool)
      } catch (err) {
        scrapeErrors.push((err as Error).message)
      }
      await sleep(METRICS_EVERY_MS)
    }
  })()

  await Promise.all(seeded.map(async (email) => await client(email, end)))
  sampling = false
  await Promise.all([rssSampler, metricsScraper])
  const seconds = (performance.now() - start) / 1000

  // ── What was done ──
  const sorted = latencies.slice(0, requests).sort()
  t.comment(`${requests} requests in ${seconds.toFixed(0)} s (${(requests / seconds).toFixed(0)} req/s) at concurrency ${CONCURRENCY}; ` +
    `operations: ${[...opsDone].map(([op, n]) => `${op} ${n}`).join(', ')}`)
  t.comment(`latency ms: p50 ${percentile(sorted, 0.5).toFixed(1)}, p99 ${percentile(sorted, 0.99).toFixed(1)}, max ${maxLatency.ms.toFixed(0)} (${maxLatency.what})`)
  for (const [op, n] of opsDone) t.ok(n > 0, `${op} was exercised (${n} times)`)
  t.ok(requests <= MAX_REQUESTS + CONCURRENCY * 3, 'bounded in request count')

  // ── No error ──
  t.equal(errorCount, 0, 'every answer had the expected status (200/201/204), no connection error')
  t.same(errors, [], 'the first errors, if any')
  const errorLogs = server.output().out.split('\n').filter((line) => /"level":(50|60)/.test(line)).slice(0, 20).map((line) => line.slice(0, 300))
  t.same(errorLogs, [], 'the service logged nothing at error level')

  // ── RSS flat ──
  const first = rss.filter((s) => s.at >= 0 && s.at < WINDOW_MS).map((s) => s.kib)
  const last = rss.filter((s) => s.at >= SOAK_MS - WINDOW_MS).map((s) => s.kib)
  const before = median(first)
  const after = median(last)
  const growth = (after - before) / before
  const mib = (kib: number): string => (kib / 1024).toFixed(1)
  t.comment(`RSS MiB: warm-up start ${mib(rss[0]?.kib ?? NaN)}, after warm-up (median of the first ${WINDOW_MS / 1000} s) ${mib(before)}, ` +
    `end (median of the last ${WINDOW_MS / 1000} s) ${mib(after)}, growth ${(growth * 100).toFixed(1)} %, ` +
    `max ${mib(Math.max(...rss.map((s) => s.kib)))} (${rss.length} samples)`)
  t.comment(`RSS MiB every 10 s from the start: ${rss.filter((_, i) => i % Math.round(10_000 / RSS_EVERY_MS) === 0).map((s) => mib(s.kib)).join(' ')}`)
  t.ok(first.length >= 3 && last.length >= 3, `enough RSS samples in both windows (${first.length}, ${last.length})`)
  t.ok(growth < 0.10, `RSS growth after warm-up under 10 % (${(growth * 100).toFixed(1)} %)`)

  // ── No pool exhaustion ──
  const maxTotal = Math.max(...pools.map((p) => p.total))
  const maxWaiting = Math.max(...pools.map((p) => p.waiting))
  t.comment(`pool: ${pools.length} scrapes, max total ${maxTotal}, max waiting ${maxWaiting}`)
  t.same(scrapeErrors, [], 'every /metrics scrape answered')
  t.ok(pools.length >= Math.floor((WARMUP_MS + SOAK_MS) / METRICS_EVERY_MS) - 2, 'the pool was observed throughout')
  t.ok(pools.every((p) => Number.isFinite(p.total) && Number.isFinite(p.waiting)), 'db_pool_connections is exported')
  t.ok(maxTotal <= POOL_MAX, `the pool never held more than DB_POOL_MAX (${POOL_MAX}) connections`)
  // Each client has one request in flight; audit rows are written after the answer, so a few more may wait.
  t.ok(maxWaiting <= CONCURRENCY, `requests waiting for a connection stayed bounded (max ${maxWaiting})`)
  t.ok(maxLatency.ms < CONNECT_TIMEOUT_MS, `no request took DB_CONNECT_TIMEOUT_MS (${CONNECT_TIMEOUT_MS} ms) or longer (max ${maxLatency.ms.toFixed(0)} ms)`)

  // ── Afterwards ──
  await sleep(1000)
  const { pool, text } = await scrapeMetrics()
  t.equal(pool.waiting, 0, 'nothing waits for a connection once the load stops')
  const fiveHundreds = [...text.matchAll(/^http_request_duration_seconds_count\{[^}]*status_code="5\d\d"[^}]*\} (\d+)/gm)].reduce((n, m) => n + Number(m[1]), 0)
  t.equal(fiveHundreds, 0, 'the service counted no 5xx')
  const reuse = /^auth_outcomes_total\{action="refresh",outcome="reuse_detected"\} (\d+)/m.exec(text)
  t.equal(Number(reuse?.[1] ?? 0), 0, 'no refresh-token reuse was detected (each client kept its latest token)')
  t.equal(server.child.exitCode, null, 'the process is still running')
  t.equal((await fetch(`${base}/health`)).status, 200, 'GET /health → 200')
})
