// The ceiling the service is compared with: bare Fastify routes with the same process settings
// (pino JSON logs at LOG_LEVEL, one line per request), no database, no auth.
import Fastify, { LogController, type FastifyReply, type FastifyRequest } from 'fastify'

class RequestLog extends LogController {
  override incomingRequest (): void {}
  override requestCompleted (_err: Error | null, request: FastifyRequest, reply: FastifyReply): void {
    request.log.info({ method: request.method, url: request.url, statusCode: reply.statusCode, ms: reply.elapsedTime, ip: request.ip }, 'request')
  }
}

const app = Fastify({ logger: { level: process.env.LOG_LEVEL ?? 'info' }, logController: new RequestLog(), bodyLimit: 16 * 1024 })
const reply = { type: 'object', properties: { ok: { type: 'boolean' } } } as const
app.get('/bare', { schema: { response: { 200: reply } } }, async () => ({ ok: true }))
app.post('/bare', { schema: { response: { 200: reply } } }, async () => ({ ok: true }))
process.on('SIGTERM', () => { app.close().then(() => process.exit(0), () => process.exit(1)) })
await app.listen({ host: process.env.HOST ?? '127.0.0.1', port: Number(process.env.PORT ?? 0) })
