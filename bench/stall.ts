// Runs beside the open-loop scenarios and does nothing but wake every millisecond. How late its
// timer fires is how long the machine kept a runnable process waiting for a CPU (the service,
// PostgreSQL and the generator share two cores, and the host may pause them all): a wait that
// every request in flight at that moment shares, whatever the service does. On SIGTERM it prints
// the largest lag and how many wake-ups were over 5 ms late, as JSON (after a first line, 'ready').
let last = performance.now()
let max = 0
let over5 = 0
const timer = setInterval(() => {
  const now = performance.now()
  const lag = now - last - 1
  if (lag > max) max = lag
  if (lag > 5) over5++
  last = now
}, 1)
process.stdout.write('ready\n')
process.on('SIGTERM', () => {
  clearInterval(timer)
  process.stdout.write(JSON.stringify({ max, over5 }) + '\n')
  process.exit(0)
})
