import t, { type Test } from 'tap'
import pg from 'pg'
import { Redis } from 'ioredis'
import { PG_MIGRATE_LOCK_ID } from 'node-pg-migrate'
import { MIGRATIONS_TABLE, shippedMigrations } from '../../src/db/migrate.js'
import { createDatabase, EMBEDDED, PASSWORD, sql as sqlOn, uniqueEmail } from '../helper.js'
import { call, clientIp, nginxBinary, startNginx, type Answer } from './cluster.js'
import { logLines, startService, type ServiceProcess } from './processes.js'

// Issue #7, many replicas: three service processes on their own ports, one PostgreSQL database,
// one Redis, behind Debian's nginx on loopback. What they share must hold across them: the
// migrations, per-IP rate limits, per-account throttling, refresh-token rotation and sign-out.

const nginx = nginxBinary()
const REDIS_URL = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379'
const SIGN_UP_LIMIT = 5
const WRONG = 'wrong password here'

const settings = {
  REDIS_URL,
  RATE_LIMIT_ENABLED: 'true',
  RATE_LIMIT_SIGN_UP: String(SIGN_UP_LIMIT),
  RATE_LIMIT_SIGN_IN: '50',
  RATE_LIMIT_REFRESH: '100',
  // One proxy hop: the client IP is the address nginx saw, which each test picks (clientIp()).
  TRUST_PROXY: '1',
  REFRESH_TOKEN_ROTATION: 'true',
  // No grace: a retired token coming back is reuse, so of 20 concurrent refreshes exactly one
  // succeeds and the rest are TOKEN_REVOKED. With a grace period the losers would get the same
  // successor pair instead (the contract's "two tabs at once"), and the count would not be 1.
  REFRESH_REUSE_GRACE: '0',
  // The cheapest argon2id the settings allow: these tests are about shared state, not hashing.
  ARGON2_MEMORY_KIB: '1024',
  ARGON2_ITERATIONS: '1'
}

const skip = EMBEDDED
  ? 'needs a PostgreSQL server (TEST_DATABASE_URL): three processes cannot share an embedded database'
  : nginx === '' ? 'nginx is not installed (apt-get install nginx; .ci/check-deploy.sh does)' : ''
if (skip !== '') t.plan(0, skip)
else await replicas()

async function replicas (): Promise<void> {
  const redis = new Redis(REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 1, connectTimeout: 2000 })
  try {
    await redis.connect()
    await redis.ping()
  } catch (err) {
    redis.disconnect()
    throw new Error(`Redis is needed at ${REDIS_URL} (${(err as Error).message}); start it with: ` +
      'redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no')
  }
  // Client IPs used here; their rate-limit counters are removed from Redis at the end.
  const ips: string[] = []
  const newIp = (): string => { const ip = clientIp(); ips.push(ip); return ip }
  const counters = async (ip: string): Promise<string[]> => {
    const found: string[] = []
    let cursor = '0'
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', `auth-rate-limit:*-${ip}`, 'COUNT', 1000)
      found.push(...keys)
      cursor = next
    } while (cursor !== '0')
    return found
  }
  t.teardown(async () => {
    for (const ip of ips) {
      const keys = await counters(ip)
      if (keys.length > 0) await redis.del(...keys)
    }
    redis.disconnect()
  })

  const databaseUrl = await createDatabase(t)
  const sql = async (text: string, values: unknown[] = []): Promise<any[]> => await sqlOn(databaseUrl, text, values)

  // Hold the migration lock while the three start, so that all three are sure to meet at it and
  // race once it is released: "started at the same moment" without relying on luck.
  const locker = new pg.Client({ connectionString: databaseUrl })
  locker.on('error', () => {}) // the database is dropped WITH (FORCE) at teardown
  await locker.connect()
  let waiting = 0
  let servers: ServiceProcess[]
  try {
    await locker.query('SELECT pg_advisory_lock($1)', [PG_MIGRATE_LOCK_ID])
    // 60 s to start: three replicas at once on a busy 2-core machine.
    servers = [1, 2, 3].map(() => startService(t, databaseUrl, settings, 60_000))
    for (let i = 0; i < 1200 && waiting < 3; i++) {
      await new Promise((resolve) => setTimeout(resolve, 50))
      if (servers.some((s) => s.child.exitCode !== null)) break
      waiting = (await locker.query(`SELECT count(*)::int AS n FROM pg_locks
        WHERE locktype = 'advisory' AND NOT granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`)).rows[0].n
    }
  } finally {
    await locker.end() // releases the lock
  }
  const bases = await Promise.all(servers.map(async (s) => await s.listening))
  const ports = bases.map((b) => Number(new URL(b).port))
  const replicaAddrs = ports.map((p) => `127.0.0.1:${p}`)
  const proxy = await startNginx(t, nginx, ports)
  const everyReplica = [...replicaAddrs].sort()
  const upstreamsOf = (answers: Answer[]): string[] => [...new Set(answers.map((a) => String(a.upstream)))].sort()

  const signUp = async (port: number, from: string, email: string): Promise<Answer> =>
    await call(port, 'POST', '/auth/sign-up', { from, body: { name: 'Replica User', email, password: PASSWORD } })
  const signIn = async (port: number, from: string, email: string, password: string): Promise<Answer> =>
    await call(port, 'POST', '/auth/sign-in', { from, body: { email, password } })
  const refresh = async (port: number, from: string, token: string): Promise<Answer> =>
    await call(port, 'POST', '/auth/refresh', { from, token })
  /** A contract error answer: status, code, the shared body shape and JSON content type. */
  const isError = (t: Test, a: Answer, status: number, code: string, what: string): void => {
    t.equal(a.status, status, `${what}: ${status}`)
    t.match(a.body, { statusCode: status, error: String, code, message: String }, `${what}: ${code}`)
    t.equal(a.headers['content-type'], 'application/json; charset=utf-8', `${what}: JSON`)
  }

  t.test('three replicas started together apply each migration exactly once, under the lock', async (t) => {
    t.equal(waiting, 3, 'all three replicas waited on the migration lock at the same time')
    for (const port of ports) {
      t.equal((await call(port, 'GET', '/health/ready', { from: '127.0.0.1' })).status, 200, `replica ${port} is ready`)
    }
    const shipped = shippedMigrations()
    const rows = await sql(`SELECT name, count(*)::int AS n FROM ${MIGRATIONS_TABLE} GROUP BY name ORDER BY name`)
    t.same(rows, shipped.map((name) => ({ name, n: 1 })), `${MIGRATIONS_TABLE} holds each shipped migration once`)
    const applied = servers.flatMap((s) => logLines(s.output().out).filter((l) => l.msg === 'migrations applied').flatMap((l) => l.migrations as string[]))
    t.same(applied.sort(), shipped, 'across the three logs, each migration was applied by exactly one replica')
  })

  t.test('nginx spreads requests over all three replicas', async (t) => {
    const answers: Answer[] = []
    for (let i = 0; i < 6; i++) answers.push(await call(proxy, 'GET', '/health', { from: newIp() }))
    t.ok(answers.every((a) => a.status === 200), 'every answer is 200')
    t.same(upstreamsOf(answers), everyReplica, 'each replica answered')
    // X-Upstream is nginx's word; the replica's own log must hold the request id it answered.
    const loggedBy = (rid: string): string[] => replicaAddrs.filter((_, i) =>
      logLines(servers[i].output().out).some((l) => l.reqId === rid && l.msg === 'request'))
    const ids = answers.map((a) => String(a.headers['x-request-id']))
    for (let i = 0; i < 100 && !ids.every((rid) => loggedBy(rid).length > 0); i++) {
      await new Promise((resolve) => setTimeout(resolve, 50)) // log lines may trail the answer
    }
    for (const [i, a] of answers.entries()) {
      t.same(loggedBy(ids[i]), [a.upstream], `request ${ids[i]} logged by ${String(a.upstream)} only`)
    }
  })

  t.test('per-IP limits count across replicas (counters in Redis)', async (t) => {
    const ip = newIp()
    t.same(await counters(ip), [], 'no counter for this client IP yet')
    const answers: Answer[] = []
    // Sequential, so nginx's round-robin hands each replica every third request.
    for (let i = 0; i < SIGN_UP_LIMIT + 4; i++) answers.push(await signUp(proxy, ip, uniqueEmail('limit')))
    t.same(answers.map((a) => a.status), [...Array(SIGN_UP_LIMIT).fill(201), 429, 429, 429, 429],
      `exactly ${SIGN_UP_LIMIT} sign-ups pass, though each replica alone saw only 3 of the ${SIGN_UP_LIMIT + 4}`)
    t.same(upstreamsOf(answers), everyReplica, 'the requests went to all three replicas')
    const limited = answers.filter((a) => a.status === 429)
    t.same(upstreamsOf(limited), everyReplica, 'every replica refused once the shared budget was spent')
    for (const a of limited) {
      isError(t, a, 429, 'RATE_LIMITED', `over the limit on ${String(a.upstream)}`)
      t.ok(Number(a.headers['retry-after']) > 0, `Retry-After: ${String(a.headers['retry-after'])}`)
      t.equal(a.headers['x-ratelimit-limit'], String(SIGN_UP_LIMIT))
    }
    const keys = await counters(ip)
    t.equal(keys.length, 1, 'one counter in Redis for this IP (sign-up)')
    t.equal(await redis.get(keys[0]), String(SIGN_UP_LIMIT + 4), 'it counted every request, from all three replicas')
  })

  t.test('per-account throttling counts across replicas (kept in PostgreSQL)', async (t) => {
    const ip = newIp()
    const email = uniqueEmail('throttled')
    t.equal((await signUp(proxy, ip, email)).status, 201)
    const failures: Answer[] = []
    for (let i = 0; i < 5; i++) failures.push(await signIn(proxy, ip, email, WRONG))
    for (const a of failures) isError(t, a, 401, 'INVALID_CREDENTIALS', `wrong password on ${String(a.upstream)}`)
    t.same(upstreamsOf(failures), everyReplica, 'the five failures were spread over all three replicas (none saw five)')
    // At once (the first block lasts 2 s): the right password, through nginx and on each replica
    // directly from the same client address (no X-Forwarded-For: the TCP peer is the client IP).
    const checks = await Promise.all([
      signIn(proxy, ip, email, PASSWORD),
      ...ports.map(async (port) => await signIn(port, ip, email, PASSWORD))
    ])
    for (const [i, a] of checks.entries()) {
      const where = i === 0 ? `through nginx (${String(a.upstream)})` : `directly on ${replicaAddrs[i - 1]}`
      isError(t, a, 429, 'RATE_LIMITED', `right password ${where}`)
      t.ok(Number(a.headers['retry-after']) >= 1, `${where}: Retry-After ${String(a.headers['retry-after'])}`)
    }
    const rows = await sql('SELECT failures FROM sign_in_throttle WHERE email = $1 AND ip = $2', [email, ip])
    t.same(rows, [{ failures: 5 }], 'one throttle row for (email, IP) counted all five failures')
    // The block is per client IP: the owner elsewhere is not locked out.
    t.equal((await signIn(ports[0], newIp(), email, PASSWORD)).status, 200, 'the right password from another IP signs in')
  })

  t.test('20 concurrent refreshes with one token over the replicas: exactly one succeeds', async (t) => {
    const ip = newIp()
    const email = uniqueEmail('race')
    t.equal((await signUp(proxy, ip, email)).status, 201)
    const session = await signIn(proxy, ip, email, PASSWORD)
    t.equal(session.status, 200)
    const answers = await Promise.all(Array.from({ length: 20 }, async () => await refresh(proxy, ip, session.body.refresh_token)))
    t.same(upstreamsOf(answers), everyReplica, 'the 20 refreshes reached all three replicas')
    const won = answers.filter((a) => a.status === 200)
    t.equal(won.length, 1, `exactly one 200 (statuses: ${answers.map((a) => a.status).join(' ')})`)
    const lost = answers.filter((a) => a.status !== 200)
    t.equal(lost.length, 19)
    for (const a of lost) {
      isError(t, a, 401, 'TOKEN_REVOKED', `refresh on ${String(a.upstream)}`)
      t.match(a.headers['www-authenticate'], /^Bearer\b/, 'WWW-Authenticate: Bearer')
    }
    // The losers presented a retired token: reuse, so the whole session ended, the winner's
    // new refresh token with it, and every replica refuses that token.
    if (won.length === 1) {
      for (const port of ports) {
        isError(t, await refresh(port, ip, won[0].body.refresh_token), 401, 'TOKEN_REVOKED', `the winner's new token on replica ${port}`)
      }
    }
    const sid = JSON.parse(Buffer.from(String(session.body.refresh_token).split('.')[1], 'base64url').toString()).sid
    t.same(await sql('SELECT revoked_reason FROM sessions WHERE id = $1', [sid]), [{ revoked_reason: 'refresh-reuse' }], 'the session ended as reuse')
  })

  t.test('a sign-out on one replica is honoured by the others at once', async (t) => {
    const ip = newIp()
    const email = uniqueEmail('sign-out')
    const [a, b, c] = ports
    t.equal((await signUp(a, ip, email)).status, 201)
    const session = await signIn(a, ip, email, PASSWORD)
    t.equal(session.status, 200, 'signed in on A')
    // B rotates the token A issued: the replicas agree on the session before the sign-out.
    const rotated = await refresh(b, ip, session.body.refresh_token)
    t.equal(rotated.status, 200, 'refreshed on B')
    const token = String(rotated.body.refresh_token)
    t.equal((await call(a, 'POST', '/auth/sign-out', { from: ip, token })).status, 204, 'signed out on A')
    // No wait and no retry. Were the sign-out not seen, one of these would rotate (200) and
    // only the other would be refused (as reuse).
    const [onB, onC] = await Promise.all([refresh(b, ip, token), refresh(c, ip, token)])
    isError(t, onB, 401, 'TOKEN_REVOKED', 'refresh on B right after the sign-out')
    isError(t, onC, 401, 'TOKEN_REVOKED', 'refresh on C right after the sign-out')
    const sid = JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString()).sid
    t.same(await sql('SELECT revoked_reason FROM sessions WHERE id = $1', [sid]), [{ revoked_reason: 'sign-out' }],
      'ended by the sign-out, not by reuse detection')
  })
}
