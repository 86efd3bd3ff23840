import type { Db } from './db/index.js'

// Per-account throttling (contract, "Abuse protection"), kept in PostgreSQL so every replica sees
// it. Failed passwords at sign-in and failed second-factor codes count alike.
const THROTTLE_AFTER = 5 // consecutive failures for one (email, IP) before delays start
const THROTTLE_MAX_DELAY = 900 // seconds: 2 s after the 5th, doubling with each further failure up to this
const GLOBAL_FAILURES = 100 // failures for one email from all IPs within an hour before every IP waits

/**
 * The SQL of the seconds (email, IP) must still wait, from `sign_in_throttle t` and
 * `sign_in_email_failures e` joined for them (the JOINS below); null or not positive: it may try.
 */
export const RETRY_AFTER = `ceil(extract(epoch FROM greatest(
    t.blocked_until,
    CASE WHEN e.failures >= ${GLOBAL_FAILURES} THEN e.window_start + interval '1 hour' END
  ) - now()))::int`

/** The throttle rows of (`email`, `ip`), for RETRY_AFTER: both SQL expressions, of the statement's own. */
export const THROTTLE_JOINS = (email: string, ip: string): string =>
  `LEFT JOIN sign_in_throttle t ON t.email = ${email} AND t.ip = ${ip}
   LEFT JOIN sign_in_email_failures e ON e.email = ${email} AND e.window_start > now() - interval '1 hour'`

/** Seconds (email, IP) must still wait before the next attempt, or null when it may try. */
export async function retryAfter (db: Db, email: string, ip: string): Promise<number | null> {
  const { rows } = await db.query<{ retry_after: number | null }>({
    name: 'throttle-retry-after',
    text: `SELECT ${RETRY_AFTER} AS retry_after FROM (SELECT 1) one ${THROTTLE_JOINS('$1', '$2')}`,
    values: [email, ip]
  })
  const seconds = rows[0].retry_after
  return seconds !== null && seconds > 0 ? seconds : null
}

/** Counts a failure for (email, IP) and for the email; from the 5th in a row, a doubling delay. */
export async function recordFailure (db: Db, email: string, ip: string): Promise<void> {
  await db.query({
    name: 'record-sign-in-failure',
    text: `WITH per_ip AS (
             INSERT INTO sign_in_throttle AS t (email, ip, failures, last_failure_at)
             VALUES ($1, $2, 1, now())
             ON CONFLICT (email, ip) DO UPDATE SET
               failures = t.failures + 1,
               last_failure_at = now(),
               blocked_until = CASE WHEN t.failures + 1 >= $3
                 THEN now() + make_interval(secs => least($4, power(2, t.failures + 2 - $3)))
               END
           )
           INSERT INTO sign_in_email_failures AS e (email, window_start, failures)
           VALUES ($1, now(), 1)
           ON CONFLICT (email) DO UPDATE SET
             window_start = CASE WHEN e.window_start <= now() - interval '1 hour' THEN now() ELSE e.window_start END,
             failures = CASE WHEN e.window_start <= now() - interval '1 hour' THEN 1 ELSE e.failures + 1 END`,
    values: [email, ip, THROTTLE_AFTER, THROTTLE_MAX_DELAY]
  })
}

/** A success ends the run of failures for (email, IP). */
export async function clearFailures (db: Db, email: string, ip: string): Promise<void> {
  await db.query({
    name: 'clear-sign-in-failures',
    text: 'DELETE FROM sign_in_throttle WHERE email = $1 AND ip = $2',
    values: [email, ip]
  })
}
