import { STATUS_CODES } from 'node:http'
import type { Duplex } from 'node:stream'
import type { FastifyError, FastifyInstance } from 'fastify'

export type ErrorCode =
  | 'VALIDATION_FAILED' | 'EMAIL_TAKEN' | 'INVALID_CREDENTIALS'
  | 'TOKEN_MISSING' | 'TOKEN_INVALID' | 'TOKEN_EXPIRED' | 'TOKEN_REVOKED'
  | 'RATE_LIMITED' | 'PAYLOAD_TOO_LARGE' | 'UNSUPPORTED_MEDIA_TYPE' | 'NOT_FOUND'
  | 'SERVICE_UNAVAILABLE' | 'INTERNAL'
  | 'EMAIL_NOT_VERIFIED' | 'MFA_REQUIRED' | 'MFA_ALREADY_ENABLED' | 'ACCOUNT_DISABLED'

/** An error meant for the client: its status, code and message are sent as they are. */
export class AppError extends Error {
  constructor (
    readonly statusCode: number,
    readonly code: ErrorCode,
    message: string,
    readonly headers: Record<string, string> = {},
    /** More fields of the body (the mfa_token of MFA_REQUIRED); the route's schema must list them. */
    readonly extra: Record<string, string> = {}
  ) {
    super(message)
  }
}

export const validationFailed = (message: string) => new AppError(400, 'VALIDATION_FAILED', message)
export const invalidCredentials = () => new AppError(401, 'INVALID_CREDENTIALS', 'Invalid email or password')
export const tokenError = (code: 'TOKEN_MISSING' | 'TOKEN_INVALID' | 'TOKEN_EXPIRED' | 'TOKEN_REVOKED', message: string) =>
  new AppError(401, code, message)
export const unavailable = (message: string, retryAfter = 5) =>
  new AppError(503, 'SERVICE_UNAVAILABLE', message, { 'retry-after': String(retryAfter) })

// Errors from pg that mean "the database cannot be reached right now": answered 503, not 500.
const DB_UNAVAILABLE_CODES = new Set([
  'ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'EPIPE',
  '57P01', '57P02', '57P03', // admin shutdown, crash shutdown, cannot connect now
  '53300', // too many connections
  '57014', // statement timeout
  '40P01', // deadlock detected: one of two concurrent statements was rolled back whole; a retry succeeds
  '08000', '08001', '08003', '08004', '08006'
])
const DB_UNAVAILABLE_MESSAGES = /Connection terminated|timeout exceeded when trying to connect|Client has encountered a connection error|Connection is closed|connect ECONNREFUSED/i

function isDatabaseUnavailable (err: { code?: unknown, message?: unknown }): boolean {
  return (typeof err.code === 'string' && DB_UNAVAILABLE_CODES.has(err.code)) ||
    (typeof err.message === 'string' && DB_UNAVAILABLE_MESSAGES.test(err.message))
}

function toAppError (err: FastifyError): AppError | undefined {
  if (err instanceof AppError) return err
  if (err.validation !== undefined) return validationFailed(err.message)
  switch (err.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return new AppError(413, 'PAYLOAD_TOO_LARGE', 'Request body is larger than 16 KiB')
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return new AppError(415, 'UNSUPPORTED_MEDIA_TYPE', 'Send the body as application/json')
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return validationFailed('Request body is empty; send a JSON object')
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
      return validationFailed('Request body is not valid JSON')
  }
  if (isDatabaseUnavailable(err)) return unavailable('Database unavailable; retry shortly')
  const status = err.statusCode ?? 500
  // Other client errors raised by Fastify itself (bad content-length, malformed JSON, ...).
  if (status >= 400 && status < 500) {
    // 403 comes only from the docs' static files (a path outside them): nothing is there.
    if (status === 404 || status === 403) return new AppError(404, 'NOT_FOUND', 'Not found')
    if (status === 429) return new AppError(429, 'RATE_LIMITED', 'Too many requests from this address; retry later')
    if (status === 413) return new AppError(413, 'PAYLOAD_TOO_LARGE', 'Request body is too large')
    if (status === 415) return new AppError(415, 'UNSUPPORTED_MEDIA_TYPE', 'Send the body as application/json')
    return new AppError(status === 400 ? 400 : status, 'VALIDATION_FAILED', err.message)
  }
  return undefined
}

/** The contract's error body. */
export function errorBody (err: AppError): { statusCode: number, error: string, code: ErrorCode, message: string } {
  return { statusCode: err.statusCode, error: STATUS_CODES[err.statusCode] ?? 'Error', code: err.code, message: err.message, ...err.extra }
}

/**
 * Requests Node cannot parse (malformed request line or headers, headers over the limit, too
 * slow) never reach Fastify: answer them on the socket with the contract's body, then close.
 */
export function clientErrorHandler (err: NodeJS.ErrnoException, socket: Duplex): void {
  if (err.code === 'ECONNRESET' || socket.destroyed) return
  const appErr = err.code === 'HPE_HEADER_OVERFLOW'
    ? new AppError(431, 'PAYLOAD_TOO_LARGE', 'Request headers are too large')
    : err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
      ? new AppError(408, 'VALIDATION_FAILED', 'The request did not arrive in time')
      : validationFailed('Malformed HTTP request')
  const body = JSON.stringify(errorBody(appErr))
  if (socket.writable) {
    socket.write(`HTTP/1.1 ${appErr.statusCode} ${STATUS_CODES[appErr.statusCode] ?? ''}\r\nConnection: close\r\n` +
      `Content-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`)
  }
  socket.destroy()
}

/** The one error handler: every error leaves as { statusCode, error, code, message }. */
export function registerErrorHandler (app: FastifyInstance): void {
  app.setErrorHandler((err: FastifyError, request, reply) => {
    let appErr = toAppError(err)
    if (appErr === undefined) {
      // Unknown failure: log it whole, answer without details (no stack, SQL or driver text).
      request.log.error({ err }, 'request failed')
      appErr = new AppError(500, 'INTERNAL', `Internal error (request id ${request.id})`)
    } else if (appErr.statusCode >= 500) {
      request.log.warn({ err: { code: err.code, message: err.message } }, appErr.message)
    }
    request.event ??= { outcome: appErr.code.toLowerCase() } // for metrics and the audit trail
    if (appErr.statusCode === 401) {
      reply.header('www-authenticate', appErr.code === 'TOKEN_MISSING' || appErr.code === 'INVALID_CREDENTIALS'
        ? 'Bearer'
        : 'Bearer error="invalid_token"')
    }
    return reply
      .code(appErr.statusCode)
      .headers(appErr.headers)
      .send(errorBody(appErr))
  })

  app.setNotFoundHandler((request, reply) => {
    return reply.code(404).send({
      statusCode: 404,
      error: 'Not Found',
      code: 'NOT_FOUND',
      message: `Route ${request.method} ${request.url.split('?')[0]} not found`
    })
  })
}
