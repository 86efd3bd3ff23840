import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { createTransport } from 'nodemailer'
import type { FastifyBaseLogger } from 'fastify'
import type { Config } from './config.js'

/** A message as the outbox delivers it: both parts, and the link a development log shows. */
export interface Mail {
  to: string
  subject: string
  text: string
  html: string
  link?: string
}

export interface Mailer {
  /** Delivers one message or throws (the outbox retries). */
  send: (mail: Mail) => Promise<void>
  close: () => void
}

/**
 * Mail can go out: SMTP_URL is set, or outside production the development outbox under
 * DATA_DIR/mail/. In production without SMTP_URL the endpoints that mail are off.
 */
export const mailEnabled = (config: Config): boolean => config.SMTP_URL !== undefined || config.NODE_ENV !== 'production'

/** The link a mailed token travels in: EMAIL_LINK_URL (or PUBLIC_URL + /auth/confirm) and the fragment. */
export function emailLink (config: Config, type: string, token: string): string {
  const base = config.EMAIL_LINK_URL ?? `${(config.PUBLIC_URL ?? `http://localhost:${config.PORT}`).replace(/\/+$/, '')}/auth/confirm`
  // In the fragment: browsers never send it to a server, so it stays out of proxy and access logs.
  return `${base.split('#')[0]}#type=${type}&token=${token}`
}

/**
 * nodemailer over SMTP_URL (smtp:// upgrades with STARTTLS when the server offers it, smtps:// is
 * TLS from the start); without it, outside production, each message as an .eml file under
 * DATA_DIR/mail/ with its link logged, so that `npm start` alone shows every flow.
 */
export function createMailer (config: Config, log: FastifyBaseLogger): Mailer {
  const from = config.EMAIL_FROM
  if (config.SMTP_URL !== undefined) {
    const url = new URL(config.SMTP_URL)
    const transport = createTransport({
      host: url.hostname,
      port: url.port !== '' ? Number(url.port) : url.protocol === 'smtps:' ? 465 : 587,
      secure: url.protocol === 'smtps:',
      ...(url.username !== '' ? { auth: { user: decodeURIComponent(url.username), pass: decodeURIComponent(url.password) } } : {}),
      // Bounded, so that a stalled server costs one attempt, well inside the outbox's claim on it.
      connectionTimeout: 10_000,
      greetingTimeout: 10_000,
      socketTimeout: 20_000,
      // One connection reused while mail keeps coming.
      pool: true,
      maxConnections: 2
    })
    return {
      // The address as one address: a string would be parsed as a list (`a,b@x` to two recipients).
      send: async ({ to, subject, text, html }) => { await transport.sendMail({ from, to: { name: '', address: to }, subject, text, html }) },
      close: () => { transport.close() }
    }
  }
  const dir = join(config.DATA_DIR, 'mail')
  const transport = createTransport({ streamTransport: true, buffer: true, newline: 'unix' })
  log.warn({ dir }, 'SMTP_URL is not set: mail is written to DATA_DIR/mail/ as .eml files and its links are logged (development only)')
  return {
    send: async ({ to, subject, text, html, link }) => {
      const info = await transport.sendMail({ from, to: { name: '', address: to }, subject, text, html })
      await mkdir(dir, { recursive: true })
      const file = join(dir, `${new Date().toISOString().replace(/[:.]/g, '-')}-${info.messageId.replace(/[^\w.-]/g, '')}.eml`)
      await writeFile(file, info.message as Buffer, { mode: 0o600 })
      // Development only: the link is what a developer needs to go on with the flow.
      log.info({ to, subject, file, link }, 'mail written to the development outbox')
    },
    close: () => {}
  }
}
