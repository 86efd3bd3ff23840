import closeWithGrace from 'close-with-grace'
import { buildApp } from './app.js'
import { ConfigError, settingsOf } from './config.js'

let app
try {
  app = await buildApp(settingsOf(process.env, { dotenv: true }))
} catch (err) {
  if (!(err instanceof ConfigError)) throw err
  // One line naming the variable and why, then stop.
  process.stderr.write(`configuration error: ${err.message}\n`)
  process.exit(1)
}
const { config } = app

// SIGTERM/SIGINT: stop accepting, let requests in flight finish, close the pool, exit 0.
closeWithGrace({ delay: 10_000, logger: app.log }, async ({ err, signal }) => {
  if (err !== undefined) app.log.error({ err }, 'fatal error, shutting down')
  else app.log.info({ signal }, 'shutting down')
  await app.close()
})

try {
  await app.listen({ host: config.HOST, port: config.PORT })
} catch (err) {
  app.log.error({ err }, 'could not start')
  process.exit(1)
}
