/**
 * Group commit in the service. Calls made while `width` batches are already running wait, then
 * go together: one statement, one transaction, one WAL flush for all of them. An idle service
 * sends each call at once (nothing waits for a batch to fill); a busy one shares each flush
 * among as many calls as arrived meanwhile. `run` answers each item, in order; when it fails,
 * every call in its batch fails with that error.
 */
export function batched<I, O> (run: (items: I[]) => Promise<O[]>, width: number): (item: I) => Promise<O> {
  let running = 0
  let waiting: Array<{ item: I, resolve: (o: O) => void, reject: (err: unknown) => void }> = []

  function flush (): void {
    if (running >= width || waiting.length === 0) return
    const batch = waiting
    waiting = []
    running++
    run(batch.map((b) => b.item)).then(
      (outs) => { batch.forEach((b, i) => { b.resolve(outs[i]) }) },
      (err: unknown) => { batch.forEach((b) => { b.reject(err) }) }
    ).finally(() => {
      running--
      flush()
    })
  }

  return async (item) => await new Promise<O>((resolve, reject) => {
    waiting.push({ item, resolve, reject })
    flush()
  })
}
