import type { FastifyInstance } from 'fastify'
import { HealthReply, ErrorReply, httpErrors, noAuth } from './schemas.js'
import { unavailable } from './errors.js'

export default async function healthRoutes (app: FastifyInstance): Promise<void> {
  // Liveness: the process answers; no database call, so a database outage does not restart it.
  app.get('/health', {
    schema: { tags: ['service'], operationId: 'checkHealth', summary: 'Liveness', security: noAuth, response: { 200: HealthReply, ...httpErrors } }
  }, async () => ({ status: 'ok' }))

  app.get('/health/ready', {
    schema: {
      tags: ['service'],
      operationId: 'checkReadiness',
      summary: 'Readiness: the database answers and migrations are applied',
      security: noAuth,
      response: {
        200: HealthReply,
        ...httpErrors,
        500: ErrorReply(500),
        503: ErrorReply(503, 'SERVICE_UNAVAILABLE: the database does not answer or migrations are pending')
      }
    }
  }, async () => {
    if (!await app.isDatabaseReady()) throw unavailable('Database unavailable or migrations pending')
    return { status: 'ready' }
  })
}
