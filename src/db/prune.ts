import type { Pool } from 'pg'
import type { Config } from '../config.js'

// Ended sessions are kept this long after they end (for the sessions list and investigations).
const SESSION_RETENTION_DAYS = 7
// Any number shared by every replica: the advisory lock that lets one of them prune at a time.
const PRUNE_LOCK = 7_316_540_021

export interface PruneResult { sessions: number, endedSessions: number, outbox: number, auditEvents: number, throttleRows: number, emailRows: number, mfaChallenges: number }

/**
 * Deletes sessions that ended (expired or revoked) over a week ago, the note of an ended session
 * once its access tokens have expired (an hour later), audit events older than
 * AUDIT_RETENTION_DAYS, stale sign-in throttle rows, expired mailed tokens, past cooldowns and old
 * sign-in challenges. Safe with several replicas: the one holding the advisory lock prunes, the
 * others return null at once.
 */
export async function prune (pool: Pool, config: Pick<Config, 'AUDIT_RETENTION_DAYS' | 'JWT_ACCESS_TTL'>): Promise<PruneResult | null> {
  const client = await pool.connect()
  try {
    await client.query('BEGIN')
    const { rows } = await client.query<{ locked: boolean }>('SELECT pg_try_advisory_xact_lock($1) AS locked', [PRUNE_LOCK])
    if (rows[0]?.locked !== true) {
      await client.query('ROLLBACK')
      return null
    }
    const sessions = await client.query(
      `DELETE FROM sessions
       WHERE expires_at < now() - make_interval(days => $1) OR revoked_at < now() - make_interval(days => $1)`,
      [SESSION_RETENTION_DAYS])
    const ended = await client.query("DELETE FROM ended_sessions WHERE ended_at < now() - make_interval(secs => $1) - interval '1 hour'", [config.JWT_ACCESS_TTL])
    // Rows no sender takes (a webhook endpoint since removed from WEBHOOK_URLS): others go within a day.
    const stranded = await client.query("DELETE FROM outbox WHERE created_at < now() - interval '2 days'")
    const audit = await client.query('DELETE FROM audit_events WHERE created_at < now() - make_interval(days => $1)', [config.AUDIT_RETENTION_DAYS])
    // Throttle rows once nothing is blocked and the failures are a day old (windows: an hour).
    const throttle = await client.query(`DELETE FROM sign_in_throttle
      WHERE last_failure_at < now() - interval '1 day' AND (blocked_until IS NULL OR blocked_until < now())`)
    const windows = await client.query("DELETE FROM sign_in_email_failures WHERE window_start < now() - interval '1 hour'")
    // Mailed tokens once expired; cooldowns once over (they hold addresses, known or not).
    const tokens = await client.query('DELETE FROM email_tokens WHERE expires_at < now()')
    const cooldowns = await client.query('DELETE FROM email_cooldowns WHERE until < now()')
    // Sign-in challenges a day after expiry (till then a late use is told TOKEN_EXPIRED).
    const challenges = await client.query("DELETE FROM mfa_challenges WHERE expires_at < now() - interval '1 day'")
    await client.query('COMMIT')
    return {
      sessions: sessions.rowCount ?? 0,
      endedSessions: ended.rowCount ?? 0,
      outbox: stranded.rowCount ?? 0,
      auditEvents: audit.rowCount ?? 0,
      throttleRows: (throttle.rowCount ?? 0) + (windows.rowCount ?? 0),
      emailRows: (tokens.rowCount ?? 0) + (cooldowns.rowCount ?? 0),
      mfaChallenges: challenges.rowCount ?? 0
    }
  } catch (err) {
    await client.query('ROLLBACK').catch(() => {})
    throw err
  } finally {
    client.release()
  }
}
