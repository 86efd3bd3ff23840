// `npm run bench [-- --duration 10 --connections 32 --runs 3 --scale]`
// Starts the built service (dist/server.js) against a fresh database on a real PostgreSQL
// (BENCH_DATABASE_URL, default the local server), rate limits off, seeds what it needs through
// the API, and measures each scenario for a fixed time at fixed concurrency, on loopback only.
// Ceilings in the same run: a bare Fastify route (bench/bare.ts, same logging) and raw argon2id.
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createServer, type AddressInfo } from 'node:net'
import { availableParallelism, tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { randomUUID } from 'node:crypto'
import autocannon from 'autocannon'
import { hash, verify } from '@node-rs/argon2'
import pg from 'pg'
import { paced } from './paced.js'

const { values: flags } = parseArgs({
  options: {
    duration: { type: 'string', default: '10' },
    connections: { type: 'string', default: '32' },
    runs: { type: 'string', default: '3' },
    scale: { type: 'boolean', default: false },
    // Lever experiments: `--cluster 2` runs the service as two processes sharing the port (bench/cluster.ts).
    cluster: { type: 'string', default: '1' }
  }
})
const DURATION = Number(flags.duration)
const CONNECTIONS = Number(flags.connections)
const RUNS = Number(flags.runs)
const SLICES = 5 // of a paired scenario and its ceiling (paired())
const ADMIN_URL = process.env.BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres'
// Service settings given to the bench are passed on (DB_POOL_MAX=32 npm run bench), to measure levers.
const PASS_ON = ['DB_POOL_MAX', 'UV_THREADPOOL_SIZE', 'MALLOC_ARENA_MAX', 'METRICS_ENABLED', 'NODE_OPTIONS']
const passedOn = Object.fromEntries(PASS_ON.flatMap((k) => process.env[k] !== undefined ? [[k, process.env[k] as string]] : []))
// The service runs as `npm start` runs it, node flags included; the bare server gets the same flags.
const START = (JSON.parse(readFileSync('package.json', 'utf8')) as { scripts: { start: string } }).scripts.start.split(' ').slice(1)
const NODE_FLAGS = START.slice(0, -1)
const PASSWORD = 'correct horse battery staple'
const ARGON2 = { algorithm: 2, memoryCost: 19456, timeCost: 2, parallelism: 1 } as const

interface Result {
  name: string
  rps: number
  p50: number
  p99: number
  errors: number
  non2xx: number
  rssMb: number
  /** open loop only: the share of answers the service itself took at most 10 ms over */
  serviceWithin10ms?: number
  /** open loop only: p99 of how late the generator handed requests over, ms */
  generatorLagP99?: number
  /** open loop only: the longest an idle process on the machine waited for a CPU, ms (bench/stall.ts) */
  machineStallMax?: number
  /** open loop only: how many times that idle process waited more than 5 ms */
  machineStallsOver5ms?: number
  /** paired scenarios only: requests/s of each slice, in order */
  slicesRps?: number[]
}

const sleep = async (ms: number) => await new Promise((resolve) => setTimeout(resolve, ms))
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]

async function withAdmin<T> (fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString: ADMIN_URL })
  await c.connect()
  try { return await fn(c) } finally { await c.end() }
}

async function freshDatabase (): Promise<{ url: string, drop: () => Promise<void> }> {
  const name = `auth_bench_${process.pid}_${Date.now()}`
  await withAdmin(async (c) => await c.query(`CREATE DATABASE ${name}`))
  const url = new URL(ADMIN_URL)
  url.pathname = '/' + name
  return { url: url.toString(), drop: async () => { await withAdmin(async (c) => await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)) } }
}

/** A free port on 127.0.0.1 (the kernel's choice, released for the process about to use it). */
async function freePort (): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  await new Promise((resolve) => server.close(resolve))
  return port
}

/**
 * A process listening on 127.0.0.1; resolves to its base URL once `probe` answers 200. Its log
 * lines (stdout) go to a process of their own, as to a log collector: read by the load
 * generator's event loop, they took CPU and time from the measurement (bench/README.md). That
 * process (`tail -c`) keeps the last lines, printed if the start fails.
 */
async function start (args: string[], env: Record<string, string>, probe: string): Promise<{ base: string, child: ChildProcess, peakRssMb: () => number }> {
  const port = await freePort()
  const logs = spawn('tail', ['-c', '4096'], { stdio: ['pipe', 'pipe', 'inherit'] })
  const child = spawn(process.execPath, args, {
    env: { PATH: process.env.PATH ?? '', HOST: '127.0.0.1', PORT: String(port), ...env },
    stdio: ['ignore', logs.stdin ?? 'ignore', 'inherit']
  })
  logs.stdin?.destroy() // the child holds the pipe now: tail ends when the child does
  child.once('exit', () => { logs.kill() })
  const base = `http://127.0.0.1:${port}`
  for (let i = 0; i < 300 && child.exitCode === null; i++) {
    try {
      if ((await fetch(base + probe)).status === 200) {
        // VmHWM: the process's peak resident set size so far.
        const peakRssMb = () => Number(/VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'))?.[1] ?? 0) / 1024
        return { base, child, peakRssMb }
      }
    } catch {}
    await sleep(100)
  }
  child.kill('SIGKILL')
  let tail = ''
  logs.stdout?.on('data', (d) => { tail += String(d) })
  await new Promise((resolve) => logs.once('close', resolve))
  throw new Error(`${args.join(' ')} did not start: ${tail}`)
}

async function stop (child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return
  child.kill('SIGTERM')
  const killer = setTimeout(() => child.kill('SIGKILL'), 12_000)
  await new Promise((resolve) => child.once('exit', resolve))
  clearTimeout(killer)
}

// The service process whose RSS each scenario samples (set once the service has started).
let servicePid: number | undefined
const rssMb = (pid: number) => Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) / 1024

/** Runs `fn` while sampling the service's RSS; the largest sample goes into the result. */
async function sampled (fn: () => Promise<Omit<Result, 'rssMb'>>): Promise<Result> {
  let maxRss = 0
  const sample = () => { if (servicePid !== undefined) maxRss = Math.max(maxRss, rssMb(servicePid)) }
  const sampler = setInterval(sample, 200)
  try {
    const r = await fn()
    sample()
    return { ...r, rssMb: maxRss }
  } finally {
    clearInterval(sampler)
  }
}

/** Closed loop: CONNECTIONS connections, each sending its next request when the last is answered. */
async function load (name: string, opts: autocannon.Options): Promise<Result> {
  return await sampled(async () => {
    const r = await autocannon({ connections: CONNECTIONS, duration: DURATION, ...opts })
    return { name, rps: r.requests.total / r.duration, p50: r.latency.p50, p99: r.latency.p99, errors: r.errors + r.timeouts, non2xx: r.non2xx }
  })
}

/**
 * A scenario and the bare route that bounds it, closed loop, in alternating slices (ceiling,
 * scenario, ceiling, …), DURATION in all for each. This machine's speed drifts by 10–20 % within
 * a minute: measured one after the other, the ratio was as much the drift's as the service's.
 * Requests/s the mean of the slices' (all of one length); p50 the median of theirs, p99 the worst.
 */
async function paired (ceiling: [string, autocannon.Options], scenario: [string, autocannon.Options]): Promise<[Result, Result]> {
  const slices = Math.max(1, Math.min(SLICES, Math.floor(DURATION)))
  // A second of each unmeasured first: a cold route's first second ran at half speed.
  for (const [, opts] of [ceiling, scenario]) await autocannon({ connections: CONNECTIONS, ...opts, duration: 1 })
  const parts: [Result[], Result[]] = [[], []]
  for (let i = 0; i < slices; i++) {
    for (const [k, [name, opts]] of [ceiling, scenario].entries()) {
      parts[k].push(await load(name, { ...opts, duration: DURATION / slices }))
    }
  }
  const whole = (rs: Result[]): Result => ({
    name: rs[0].name,
    rps: rs.reduce((a, r) => a + r.rps, 0) / rs.length,
    p50: median(rs.map((r) => r.p50)),
    p99: Math.max(...rs.map((r) => r.p99)),
    errors: rs.reduce((a, r) => a + r.errors, 0),
    non2xx: rs.reduce((a, r) => a + r.non2xx, 0),
    rssMb: Math.max(...rs.map((r) => r.rssMb)),
    slicesRps: rs.map((r) => Math.round(r.rps))
  })
  return [whole(parts[0]), whole(parts[1])]
}

/** Answers of `route` with status 200 so far, and how many of them the service took at most 10 ms over (its own histogram). */
async function served (base: string, route: string): Promise<{ count: number, within10ms: number }> {
  const text = await (await fetch(base + '/metrics')).text()
  const series = (suffix: string) => Number(new RegExp(
    `^http_request_duration_seconds_${suffix}\\{[^}]*route="${route}",status_code="200"[^}]*\\} (\\d+)`, 'm').exec(text)?.[1] ?? 0)
  return { count: series('count'), within10ms: series('bucket(?=\\{le="0.01",)') }
}

/**
 * Open loop at `rate` requests a second (bench/paced.ts), over at most CONNECTIONS connections.
 * Beside the client's view, the share of answers the service itself took at most 10 ms over
 * (from receiving the request to sending the answer), and how late the generator was.
 */
async function loadAt (name: string, base: string, route: string, rate: number, opts: Pick<Parameters<typeof paced>[1], 'next' | 'onAnswer'>): Promise<Result> {
  const before = await served(base, route)
  const stall = spawn(process.execPath, ['--import', 'tsx', 'bench/stall.ts'], { stdio: ['ignore', 'pipe', 'inherit'] })
  const closed = new Promise((resolve) => stall.once('close', resolve))
  let stallOut = ''
  let lag = 0
  let result: Result
  try {
    // Its first line, 'ready'; an exit before it fails the scenario instead of waiting forever.
    await new Promise((resolve, reject) => {
      stall.stdout?.on('data', (d) => { stallOut += String(d); resolve(undefined) })
      stall.once('close', () => { reject(new Error('bench/stall.ts exited before it was ready')) })
    })
    result = await sampled(async () => {
      const r = await paced(base, { rate, seconds: DURATION, connections: CONNECTIONS, ...opts })
      lag = r.lagP99
      const answered = Object.values(r.statusRps).reduce((a, b) => a + b, 0)
      return { name, rps: answered, p50: r.p50, p99: r.p99, errors: r.errors, non2xx: Math.round((answered - r.ok.length / DURATION) * DURATION) }
    })
  } finally {
    stall.kill('SIGTERM') // also when the scenario failed: nothing started is left running
    await closed
  }
  const stalls = JSON.parse(stallOut.trim().split('\n').at(-1) ?? '') as { max: number, over5: number }
  const after = await served(base, route)
  return {
    ...result,
    serviceWithin10ms: (after.within10ms - before.within10ms) / Math.max(1, after.count - before.count),
    generatorLagP99: lag,
    machineStallMax: stalls.max,
    machineStallsOver5ms: stalls.over5
  }
}

// A new object each time: autocannon adds content-length to the headers object it is given.
const json = (): Record<string, string> => ({ 'content-type': 'application/json' })

async function post (base: string, path: string, body: unknown, headers: Record<string, string> = {}): Promise<any> {
  const res = await fetch(base + path, { method: 'POST', headers: { ...json(), ...headers }, body: JSON.stringify(body) })
  return await res.json()
}

/** Raw argon2id throughput at the service's parameters, on every core at once. */
async function argon2Ceiling (op: 'hash' | 'verify'): Promise<number> {
  const stored = await hash(PASSWORD, ARGON2)
  const until = Date.now() + DURATION * 1000
  let done = 0
  await Promise.all(Array.from({ length: availableParallelism() }, async () => {
    while (Date.now() < until) {
      if (op === 'hash') await hash(PASSWORD, ARGON2)
      else await verify(stored, PASSWORD)
      done++
    }
  }))
  return done / DURATION
}

/** Sign-in and refresh latency, one request at a time (sub-millisecond resolution, no queueing). */
async function probe (base: string, email: string): Promise<{ signIn: number, refresh: number }> {
  const timed = async (n: number, fn: () => Promise<void>): Promise<number> => {
    const ms: number[] = []
    for (let i = 0; i < n; i++) {
      const start = performance.now()
      await fn()
      ms.push(performance.now() - start)
    }
    return median(ms)
  }
  let token = ''
  const signIn = await timed(100, async () => { token = (await post(base, '/auth/sign-in', { email, password: PASSWORD })).refresh_token })
  const refresh = await timed(1000, async () => {
    token = (await post(base, '/auth/refresh', {}, { authorization: `Bearer ${token}` })).refresh_token
  })
  return { signIn, refresh }
}

/** Tokens for the refresh scenarios: every answer's refresh token goes back for a later request. */
async function refreshTokens (base: string, email: string) {
  const tokens: string[] = []
  // Far more tokens than connections: the open-loop scenario keeps sending while answers are
  // slow (a 0.4 s stall at 5,000/s holds 2,000), and a request finding no token is counted as an
  // error. Each end of a closed-loop slice loses up to CONNECTIONS of them (rotated, answer unread).
  let left = CONNECTIONS * 64
  await Promise.all(Array.from({ length: 4 }, async () => {
    while (left-- > 0) tokens.push((await post(base, '/auth/sign-in', { email, password: PASSWORD })).refresh_token)
  }))
  return {
    authorization: () => { const t = tokens.shift(); return t === undefined ? undefined : `Bearer ${t}` },
    onAnswer: (status: number, body: string) => { if (status === 200) tokens.push(JSON.parse(body).refresh_token) }
  }
}

/** Seconds until the outbox holds no mail (auth_mail_waiting 0; a build without it: 0), at most 120. */
async function drainOutbox (base: string): Promise<number> {
  const start = performance.now()
  while (performance.now() - start < 120_000) {
    const text = await (await fetch(base + '/metrics')).text()
    const waiting = /^auth_mail_waiting (\d+)/m.exec(text)
    if (waiting === null || waiting[1] === '0') break
    await new Promise((resolve) => setTimeout(resolve, 250))
  }
  return Math.round((performance.now() - start) / 100) / 10
}

async function runOnce (): Promise<Record<string, Result | number>> {
  const db = await freshDatabase()
  // The service's local state (the development mail outbox: sign-ups mail a verification link) outside the project.
  const dataDir = mkdtempSync(join(tmpdir(), 'auth-bench-'))
  const env = { DATA_DIR: dataDir, DATABASE_URL: db.url, JWT_SECRET_KEY: 'bench-secret-0123456789-0123456789-0123', RATE_LIMIT_ENABLED: 'false', PRUNE_INTERVAL_SECONDS: '0', LOG_LEVEL: process.env.LOG_LEVEL ?? 'info', ...passedOn }
  const workers = Number(flags.cluster)
  const service = await start(workers > 1 ? [...NODE_FLAGS, '--import', 'tsx', 'bench/cluster.ts'] : START, { ...env, BENCH_WORKERS: String(workers) }, '/health')
  const bare = await start([...NODE_FLAGS, '--import', 'tsx', 'bench/bare.ts'], { LOG_LEVEL: env.LOG_LEVEL }, '/bare')
  try {
    const { base } = service
    const email = `bench-${randomUUID()}@example.com`
    await post(base, '/auth/sign-up', { name: 'Bench', email, password: PASSWORD })
    const { access_token: access } = await post(base, '/auth/sign-in', { email, password: PASSWORD })

    if (flags.scale) return await scale(db.url, base, email)
    const out: Record<string, Result | number> = {}
    servicePid = service.child.pid // each scenario records the service's largest RSS
    // Each argon2 ceiling right before the scenario it bounds: this machine's speed drifts
    // within minutes, and a ratio should compare like with like.
    out.argon2Hash = await argon2Ceiling('hash')
    out.signUp = await load('sign-up', {
      url: base + '/auth/sign-up',
      requests: [{ method: 'POST', setupRequest: (req) => ({ ...req, headers: json(), body: JSON.stringify({ name: 'B', email: `su-${randomUUID()}@example.com`, password: PASSWORD }) }) }]
    })
    // Each sign-up queued a verification mail: the service delivers them (here to the development
    // outbox, DATA_DIR/mail/) before the next scenario, so that their work does not fall into it.
    out.mailDrainSeconds = await drainOutbox(base)
    out.argon2Verify = await argon2Ceiling('verify')
    out.signIn = await load('sign-in', { url: base + '/auth/sign-in', method: 'POST', headers: json(), body: JSON.stringify({ email, password: PASSWORD }) })
    const rotation = await refreshTokens(base, email)
    ;[out.barePost, out.refresh] = await paired(['bare POST', { url: bare.base + '/bare', method: 'POST', headers: json(), body: '{"a":1}' }], ['refresh (rotation)', {
      url: base + '/auth/refresh',
      requests: [{
        method: 'POST',
        setupRequest: (req) => ({ ...req, headers: { ...req.headers, authorization: rotation.authorization() ?? '' } }),
        onResponse: rotation.onAnswer
      }]
    }])
    ;[out.bareGet, out.me] = await paired(['bare GET', { url: bare.base + '/bare' }], ['me', { url: base + '/auth/me', headers: { authorization: `Bearer ${access}` } }])
    out.refreshHalf = await loadAt('refresh at half peak', base, '/auth/refresh', Math.max(1, Math.round(out.refresh.rps / 2)), {
      next: () => {
        const authorization = rotation.authorization()
        return authorization === undefined ? undefined : { method: 'POST', path: '/auth/refresh', headers: { authorization } }
      },
      onAnswer: rotation.onAnswer
    })
    out.meHalf = await loadAt('me at half peak', base, '/auth/me', Math.max(1, Math.round(out.me.rps / 2)), {
      next: () => ({ method: 'GET', path: '/auth/me', headers: { authorization: `Bearer ${access}` } })
    })
    // 4× the argon2 ceiling, open loop: the 200s must stay within 2 s, the excess gets 503 at once.
    const overloadRate = Math.round(4 * (out.argon2Verify))
    const body = JSON.stringify({ email, password: PASSWORD })
    const overload = await paced(base, {
      rate: overloadRate,
      seconds: DURATION,
      // Enough connections for a second of requests in flight (the queue holds at most about a
      // second of hashing): with fewer, requests would wait in the generator, not the service.
      connections: Math.max(CONNECTIONS, overloadRate),
      next: () => ({ method: 'POST', path: '/auth/sign-in', headers: json(), body })
    })
    out.overloadRate = overloadRate
    out.overloadOkRps = overload.statusRps[200] ?? 0
    out.overload503Rps = overload.statusRps[503] ?? 0
    out.overloadOkP99 = overload.p99
    out.overload503P99 = overload.p99ByStatus[503] ?? 0
    out.overloadOkWithin1s = overload.ok.filter((ms) => ms <= 1000).length / Math.max(1, overload.ok.length)
    out.overloadOtherRps = Object.entries(overload.statusRps).filter(([s]) => s !== '200' && s !== '503').reduce((a, [, n]) => a + n, 0) + overload.errors / DURATION
    out.peakRssMb = service.peakRssMb()
    return out
  } finally {
    servicePid = undefined
    await stop(service.child)
    await stop(bare.child)
    await db.drop()
    rmSync(dataDir, { recursive: true, force: true })
  }
}

/** 1,000,000 users and 1,000,000 sessions by SQL, then sign-in and refresh latency again. */
async function scale (url: string, base: string, email: string): Promise<Record<string, Result | number>> {
  const fresh = await probe(base, email)
  const c = new pg.Client({ connectionString: url })
  await c.connect()
  try {
    const hashed = await hash(PASSWORD, ARGON2)
    await c.query(`INSERT INTO users (name, email, password_hash)
                   SELECT 'user ' || i, 'scale-' || i || '@example.com', $1 FROM generate_series(1, 1000000) i`, [hashed])
    await c.query(`INSERT INTO sessions (id, user_id, refresh_hash, expires_at)
                   SELECT gen_random_uuid(), id, sha256(id::text::bytea), now() + interval '30 days' FROM users WHERE email LIKE 'scale-%'`)
    await c.query('ANALYZE')
    await c.query('CHECKPOINT') // measure the queries, not the flush of the rows just written
  } finally {
    await c.end()
  }
  const big = await probe(base, email)
  return { scaleFreshSignInP50: fresh.signIn, scaleFreshRefreshP50: fresh.refresh, scaleBigSignInP50: big.signIn, scaleBigRefreshP50: big.refresh }
}

const runs: Array<Record<string, Result | number>> = []
for (let i = 0; i < RUNS; i++) {
  console.error(`run ${i + 1}/${RUNS}…`)
  runs.push(await runOnce())
}
const num = (v: Result | number, field: keyof Result = 'rps') => typeof v === 'number' ? v : v[field] as number
const med = (key: string, field: keyof Result = 'rps') => median(runs.map((r) => num(r[key], field)))

let ratios: Record<string, number>
if (flags.scale) {
  ratios = {
    'sign-in p50, fresh database, ms': med('scaleFreshSignInP50'),
    'sign-in p50, 1M users and sessions, ms': med('scaleBigSignInP50'),
    'refresh p50, fresh database, ms': med('scaleFreshRefreshP50'),
    'refresh p50, 1M users and sessions, ms': med('scaleBigRefreshP50'),
    'sign-in p50 1M / fresh (≤ 1.15)': med('scaleBigSignInP50') / med('scaleFreshSignInP50'),
    'refresh p50 1M / fresh (≤ 1.15)': med('scaleBigRefreshP50') / med('scaleFreshRefreshP50')
  }
} else {
  const rows = ['bareGet', 'barePost', 'signUp', 'signIn', 'refresh', 'me', 'refreshHalf', 'meHalf'].map((key) => ({
    scenario: (runs[0][key] as Result).name,
    'req/s': Math.round(med(key)),
    'p50 ms': Math.round(med(key, 'p50') * 10) / 10,
    'p99 ms': Math.round(med(key, 'p99') * 10) / 10,
    errors: med(key, 'errors'),
    'non-2xx': med(key, 'non2xx'),
    'service RSS MB': Math.round(med(key, 'rssMb'))
  }))
  console.table(rows)
  ratios = {
    'sign-in / argon2 verify (≥ 0.85)': med('signIn') / med('argon2Verify'),
    'sign-up / argon2 hash (≥ 0.85)': med('signUp') / med('argon2Hash'),
    'me / bare GET (≥ 0.6)': med('me') / med('bareGet'),
    'refresh / bare POST (≥ 0.35)': med('refresh') / med('barePost'),
    'refresh p99 at half peak, ms (< 10)': med('refreshHalf', 'p99'),
    'refresh at half peak: share the service answered within 10 ms': med('refreshHalf', 'serviceWithin10ms'),
    'refresh at half peak: p99 of the generator\'s own lag, ms': med('refreshHalf', 'generatorLagP99'),
    'refresh at half peak: an idle process\'s longest wait for a CPU, ms': med('refreshHalf', 'machineStallMax'),
    'refresh at half peak: its waits over 5 ms': med('refreshHalf', 'machineStallsOver5ms'),
    'me p99 at half peak, ms (< 10)': med('meHalf', 'p99'),
    'me at half peak: share the service answered within 10 ms': med('meHalf', 'serviceWithin10ms'),
    'me at half peak: p99 of the generator\'s own lag, ms': med('meHalf', 'generatorLagP99'),
    'me at half peak: an idle process\'s longest wait for a CPU, ms': med('meHalf', 'machineStallMax'),
    'me at half peak: its waits over 5 ms': med('meHalf', 'machineStallsOver5ms'),
    'overload: offered sign-ins/s': med('overloadRate'),
    'overload: 200/s': med('overloadOkRps'),
    'overload: 503/s': med('overload503Rps'),
    'overload: other answers and errors/s': med('overloadOtherRps'),
    'overload: p99 of the 200s, ms (< 2000)': med('overloadOkP99'),
    'overload: share of the 200s within 1 s': med('overloadOkWithin1s'),
    'overload: p99 of the 503s, ms': med('overload503P99'),
    'peak RSS of the service, MB (< 200)': med('peakRssMb'),
    'verification mails of the sign-ups delivered after, s': med('mailDrainSeconds'),
    'argon2 verify/s (raw, all cores)': med('argon2Verify'),
    'argon2 hash/s (raw, all cores)': med('argon2Hash')
  }
}
console.table(Object.fromEntries(Object.entries(ratios).map(([k, v]) => [k, Math.round(v * 100) / 100])))
mkdirSync('bench/results', { recursive: true })
writeFileSync(`bench/results/${flags.scale ? 'scale' : 'latest'}.json`, JSON.stringify({ date: new Date().toISOString(), duration: DURATION, connections: CONNECTIONS, runs, ratios }, null, 2) + '\n')
console.error(`written: bench/results/${flags.scale ? 'scale' : 'latest'}.json`)
