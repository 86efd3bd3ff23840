import t from 'tap'
import { buildApp } from '../src/app.js'
import { bearer, logSink, PASSWORD, refresh, signIn, signUp } from './helper.js'

// DATABASE_URL unset: the service runs on an embedded PGlite under DATA_DIR.
const dataDir = t.testdir()
const start = async (logStream?: NodeJS.WritableStream) =>
  await buildApp({ DATA_DIR: dataDir, LOG_LEVEL: 'info' }, { logStream: logStream ?? logSink().stream })

t.test('without DATABASE_URL: an embedded database and a generated secret, both surviving a restart', async (t) => {
  const log = logSink()
  const first = await start(log.stream)
  t.ok(log.lines.some((l) => l.includes('embedded PostgreSQL (PGlite)')), 'the start log says so')
  t.ok(log.lines.some((l) => l.includes('JWT_SECRET_KEY is not set')), 'and warns about the generated secret')
  const user = await signUp(first)
  const session = await signIn(first, user.email)
  await first.close()

  const second = await start()
  t.teardown(async () => await second.close())
  t.equal((await second.inject({ method: 'GET', url: '/health/ready' })).statusCode, 200)
  t.equal((await signIn(second, user.email, PASSWORD)).user.id, user.id, 'the user is still there')
  t.equal((await second.inject({ method: 'GET', url: '/auth/me', headers: bearer(session.access_token) })).statusCode, 200, 'tokens signed before the restart verify')
  t.equal((await refresh(second, session.refresh_token)).statusCode, 200, 'and the refresh token still works')

  // The pool's connection is replaced (idle timeout, a dropped socket): the new one must not
  // clash with statements the old one prepared in PGlite's single session.
  const client = await second.pg.pool.connect()
  client.release(true)
  t.equal((await second.inject({ method: 'POST', url: '/auth/sign-in', payload: { email: user.email, password: PASSWORD } })).statusCode, 200)
})
