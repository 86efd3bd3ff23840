// An open-loop load generator: requests are sent at evenly spaced times, whatever the answers do
// (a stalled service does not slow the sending, so its stall is not hidden by the requests it
// kept from being sent). autocannon's `overallRate` cannot do this: each connection sends its
// whole quota for a second at full speed, then waits for the next second, so "half the peak
// rate" is really the peak rate for half of each second. Each latency counts from the moment
// the request is handed to the HTTP client (waiting for a free connection included); how late
// the generator itself was in handing it over, on a machine it shares with the service, is
// reported apart (`lagP99`).
import { Pool } from 'undici'

export interface PacedRequest { method: 'GET' | 'POST', path: string, headers?: Record<string, string>, body?: string }

export interface PacedResult {
  /** answers per second, by status */
  statusRps: Record<number, number>
  /** latency percentiles of the 2xx answers, ms */
  p50: number
  p99: number
  /** latencies of the 2xx answers, ms, sorted */
  ok: number[]
  /** p99 latency by status, ms */
  p99ByStatus: Record<number, number>
  /** p99 of how late requests were handed to the HTTP client, ms */
  lagP99: number
  errors: number
}

const percentile = (sorted: number[], p: number): number => sorted.length === 0 ? 0 : sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))]

/**
 * Offers `rate` requests a second to `origin` for `seconds`, over at most `connections`
 * connections (a request finding them all busy waits, and its wait counts). `next` gives each
 * request (undefined: nothing to send now, counted as an error); `onAnswer` sees each answer.
 */
export async function paced (origin: string, o: {
  rate: number
  seconds: number
  connections: number
  next: () => PacedRequest | undefined
  onAnswer?: (status: number, body: string) => void
}): Promise<PacedResult> {
  const pool = new Pool(origin, { connections: o.connections, pipelining: 1, headersTimeout: 10_000, bodyTimeout: 10_000 })
  const latencies: Record<number, number[]> = {}
  let errors = 0
  const inFlight = new Set<Promise<void>>()
  const interval = 1000 / o.rate
  const start = performance.now()
  const total = Math.round(o.rate * o.seconds)

  const lags: number[] = []
  const send = (due: number): void => {
    const req = o.next()
    if (req === undefined) { errors++; return }
    const sent = performance.now()
    lags.push(sent - due)
    const p = pool.request({ origin, ...req }).then(async ({ statusCode, body }) => {
      const text = await body.text()
      const ms = performance.now() - sent
      ;(latencies[statusCode] ??= []).push(ms)
      o.onAnswer?.(statusCode, text)
    }, () => { errors++ }).finally(() => inFlight.delete(p))
    inFlight.add(p)
  }

  let sent = 0
  await new Promise<void>((resolve) => {
    const tick = (): void => {
      const now = performance.now()
      while (sent < total && start + sent * interval <= now) send(start + sent++ * interval)
      if (sent < total) setTimeout(tick, Math.max(0, start + sent * interval - performance.now()))
      else resolve()
    }
    tick()
  })
  await Promise.all(inFlight)
  await pool.close()
  const byStatus = Object.entries(latencies).map(([s, ms]) => [Number(s), ms.sort((a, b) => a - b)] as const)
  const ok = byStatus.filter(([s]) => s >= 200 && s < 300).flatMap(([, ms]) => ms).sort((a, b) => a - b)
  return {
    statusRps: Object.fromEntries(byStatus.map(([s, ms]) => [s, ms.length / o.seconds])),
    p50: percentile(ok, 0.5),
    p99: percentile(ok, 0.99),
    ok,
    p99ByStatus: Object.fromEntries(byStatus.map(([s, ms]) => [s, percentile(ms, 0.99)])),
    lagP99: percentile(lags.sort((a, b) => a - b), 0.99),
    errors
  }
}
