// `npm run prune`: one pruning pass against DATABASE_URL, the same as the service's periodic job.
import pg from 'pg'
import { ConfigError, loadConfig } from './config.js'
import { prune } from './db/prune.js'

try {
  const config = loadConfig(process.env, { dotenv: true })
  if (config.DATABASE_URL === undefined) {
    throw new ConfigError('DATABASE_URL: required by npm run prune (the embedded database is pruned by the running service)')
  }
  const pool = new pg.Pool({ connectionString: config.DATABASE_URL, max: 1 })
  const result = await prune(pool, config)
  await pool.end()
  console.log(JSON.stringify(result === null ? { skipped: 'another replica is pruning' } : { pruned: result }))
} catch (err) {
  console.error(err instanceof ConfigError ? `configuration error: ${err.message}` : err)
  process.exit(1)
}
