import { Type } from '@sinclair/typebox'
import type { FastifyInstance } from 'fastify'
import { httpErrors, noAuth } from './schemas.js'

// The response schema lists every member a public key may have: nothing else, a private
// member such as `d` included, can ever be serialized.
const Jwk = Type.Object({
  kid: Type.String({ description: 'RFC 7638 thumbprint of the key; the `kid` header of the tokens it signs' }),
  kty: Type.String({ description: '`OKP`, `EC` or `RSA`' }),
  alg: Type.String({ description: '`EdDSA`, `ES256` or `RS256`: the only algorithm accepted with this key' }),
  use: Type.Literal('sig'),
  crv: Type.Optional(Type.String()),
  x: Type.Optional(Type.String()),
  y: Type.Optional(Type.String()),
  n: Type.Optional(Type.String()),
  e: Type.Optional(Type.String())
})

const JwksReply = Type.Object({
  keys: Type.Array(Jwk)
}, { description: 'The signing key first, then retired keys still accepted (JWT_PUBLIC_KEYS_EXTRA); empty with a shared secret' })

export default async function jwksRoutes (app: FastifyInstance): Promise<void> {
  const { jwks } = app.tokens
  // Other services verify access tokens with these keys. Five minutes of caching: a key rotation
  // publishes the new key ahead of signing with it (README, "Rotating signing keys").
  app.get('/.well-known/jwks.json', {
    schema: {
      tags: ['service'],
      operationId: 'getJwks',
      summary: 'The public keys that verify the tokens (JWKS, RFC 7517)',
      security: noAuth,
      response: { 200: JwksReply, ...httpErrors }
    }
  }, async (_request, reply) => await reply.header('cache-control', 'public, max-age=300').send({ keys: jwks }))
}
