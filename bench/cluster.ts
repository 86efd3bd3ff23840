// Lever experiment only (`npm run bench -- --cluster 2`): the service as BENCH_WORKERS processes
// sharing one port through node:cluster. Not how the service ships; see bench/README.md.
import cluster from 'node:cluster'

if (cluster.isPrimary) {
  const workers = Array.from({ length: Number(process.env.BENCH_WORKERS ?? 2) }, () => cluster.fork())
  process.on('SIGTERM', () => { for (const w of workers) w.process.kill('SIGTERM') })
  cluster.on('exit', () => { if (Object.keys(cluster.workers ?? {}).length === 0) process.exit(0) })
} else {
  const entry = '../dist/server.js' // built by prebench
  await import(entry)
}
