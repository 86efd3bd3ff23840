import type { FastifyInstance } from 'fastify'
import { HealthReply, ErrorBody, ErrorReply } from './auth/schemas.js'
import { unavailable } from './errors.js'

export default async function healthRoutes (app: FastifyInstance): Promise<void> {
  app.addSchema(ErrorBody)

  // Liveness: the process answers; no database call, so a database outage does not restart it.
  app.get('/health', {
    schema: { tags: ['service'], summary: 'Liveness', response: { 200: HealthReply } }
  }, async () => ({ status: 'ok' }))

  app.get('/health/ready', {
    schema: {
      tags: ['service'],
      summary: 'Readiness: the database answers and migrations are applied',
      response: {
        200: HealthReply,
        500: ErrorReply(500),
        503: ErrorReply(503, 'SERVICE_UNAVAILABLE: the database does not answer or migrations are pending')
      }
    }
  }, async () => {
    if (!await app.isDatabaseReady()) throw unavailable('Database unavailable or migrations pending')
    return { status: 'ready' }
  })
}
