import { readFileSync } from 'node:fs'
import type { FastifyInstance } from 'fastify'
import { mailEnabled } from './mail.js'
import { commaList } from './config.js'
import fastifySwagger from '@fastify/swagger'
import fastifySwaggerUi from '@fastify/swagger-ui'

// ../package.json from src/ (tsx) and from dist/ (built) alike. @fastify/swagger's own default
// would be its own package's version, not ours.
const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string, license: string }

// Operations that take their token from the Authorization header as well as from the body, so
// the body may be left out (sessions/routes.ts, optionalBody). @fastify/swagger marks every body required.
const OPTIONAL_BODY: Array<[path: string, method: string]> = [['/auth/refresh', 'post'], ['/auth/sign-out', 'post']]

/**
 * GET /docs (interactive docs) and GET /docs/json (OpenAPI 3), generated from the route schemas.
 * Must be registered before the routes: @fastify/swagger collects them as they are added.
 */
export async function registerDocs (app: FastifyInstance): Promise<void> {
  const admin = commaList(app.config.ADMIN_API_KEYS).length > 0
  await app.register(fastifySwagger, {
    transformObject: (document) => {
      if (!('openapiObject' in document)) return document.swaggerObject // never: the document is OpenAPI 3
      const { openapiObject } = document
      const paths = openapiObject.paths as Record<string, Record<string, { requestBody?: { required?: boolean } }>> | undefined
      for (const [path, method] of OPTIONAL_BODY) {
        const body = paths?.[path]?.[method]?.requestBody
        if (body !== undefined) body.required = false
      }
      return openapiObject
    },
    // Shared schemas (ErrorBody) become components named by their $id, not def-0, def-1...
    refResolver: { buildLocalReference: (json, _baseUri, _fragment, i) => typeof json.$id === 'string' ? json.$id : `def-${i}` },
    openapi: {
      info: {
        title: 'auth-service',
        version: pkg.version,
        license: { name: pkg.license, url: `https://spdx.org/licenses/${pkg.license}.html` },
        description: 'Password sign-in with JWTs: sign-up, sign-in, refresh-token rotation, sign-out and ' +
          'server-side sessions. Every error is JSON `{ statusCode, error, code, message }` (`ErrorBody`); ' +
          'every 401 carries `WWW-Authenticate: Bearer`.'
      },
      // Relative: "Try it out" calls the service the docs were served from, behind a proxy too.
      servers: [{ url: '/', description: 'This service' }],
      tags: [
        { name: 'auth', description: 'Accounts, tokens and sessions' },
        // Without mail (production without SMTP_URL) its operations do not exist.
        ...(mailEnabled(app.config) ? [{ name: 'email', description: 'Verification, password reset and email change: mailed links' }] : []),
        { name: 'mfa', description: 'A second factor: TOTP with recovery codes' },
        ...(admin ? [{ name: 'admin', description: 'For operators and other services, with an ADMIN_API_KEYS key: users, bans, the audit trail, token introspection' }] : []),
        { name: 'service', description: 'Health and operations' }
      ],
      components: {
        securitySchemes: {
          bearerAuth: {
            type: 'http',
            scheme: 'bearer',
            bearerFormat: 'JWT',
            description: 'The access token from sign-in, or the refresh token where the operation says so'
          },
          ...(admin ? { adminKey: { type: 'http' as const, scheme: 'bearer', description: 'One of the ADMIN_API_KEYS' } } : {})
        }
      }
    }
  })
  await app.register(fastifySwaggerUi, { routePrefix: '/docs' })
}
