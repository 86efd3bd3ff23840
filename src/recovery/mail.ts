import { randomBytes } from 'node:crypto'
import type { Config } from '../config.js'
import type { Db } from '../db/index.js'
import type { OutboxRow } from '../db/outbox.js'
import { emailLink, type Mail, type Mailer } from '../mail.js'
import { emailTokenHash } from '../tokens.js'
import { mintToken, type MailIntent, type Purpose, type Template } from './queries.js'

// The messages: a plain-text and an HTML part each, the link on a line of its own, its expiry
// stated, the service named as EMAIL_FROM names it.

/** "auth-service" from `auth-service <no-reply@localhost>`, else the address's domain. */
export function serviceName (from: string): string {
  const display = /^\s*"?([^"<]*?)"?\s*</.exec(from)?.[1]
  return display !== undefined && display !== '' ? display : (from.split('@')[1]?.replace(/>.*$/, '') ?? from)
}

/** 86400 → "24 hours", 3600 → "1 hour", 90 → "90 seconds". */
export function duration (seconds: number): string {
  const plural = (n: number, unit: string) => `${n} ${unit}${n === 1 ? '' : 's'}`
  if (seconds % 3600 === 0) return plural(seconds / 3600, 'hour')
  if (seconds % 60 === 0) return plural(seconds / 60, 'minute')
  return plural(seconds, 'second')
}

const escape = (s: string): string => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`)

function html (paragraphs: string[], link?: { url: string, label: string }): string {
  const body = paragraphs.map((p) => `<p>${escape(p)}</p>`)
  if (link !== undefined) {
    body.splice(1, 0, `<p><a href="${escape(link.url)}" style="display:inline-block;padding:10px 18px;background:#1f6feb;color:#fff;text-decoration:none;border-radius:6px">${escape(link.label)}</a></p>`,
      `<p style="font-size:13px;color:#555">Or copy this link into your browser:<br>${escape(link.url)}</p>`)
  }
  return `<!doctype html><html><body style="font-family:system-ui,sans-serif;line-height:1.5;max-width:560px">${body.join('')}</body></html>`
}

/** One message, both parts, from its template. `link` is the token link of the templates that carry one. */
export function render (config: Config, intent: MailIntent, link?: string): Mail {
  const service = serviceName(config.EMAIL_FROM)
  const to = intent.to
  const message = (subject: string, before: string, after: string[], label?: string): Mail => {
    const text = [before, ...(link !== undefined ? ['', link, ''] : ['']), ...after.flatMap((p) => [p, ''])].join('\n')
    return { to, subject, text, html: html([before, ...after], link !== undefined && label !== undefined ? { url: link, label } : undefined), link }
  }
  switch (intent.template) {
    case 'verify-email':
      return message(`Confirm your email address for ${service}`,
        `Open this link to confirm that ${to} is the address of your ${service} account:`,
        [`The link works once and expires in ${duration(config.EMAIL_VERIFY_TTL)}.`, 'If you did not sign up, ignore this message.'],
        'Confirm my email address')
    case 'change-email':
      return message(`Confirm your new email address for ${service}`,
        `Open this link to make ${to} the email address of your ${service} account:`,
        [`The link works once and expires in ${duration(config.EMAIL_VERIFY_TTL)}. Until it is used, the account keeps its current address.`,
          'If you did not ask for this, ignore this message.'],
        'Confirm my new address')
    case 'reset-password':
      return message(`Reset your ${service} password`,
        `Open this link to choose a new password for your ${service} account (${to}):`,
        [`The link works once and expires in ${duration(config.PASSWORD_RESET_TTL)}. Setting a new password signs you out everywhere.`,
          'If you did not ask for this, ignore this message: your password stays as it is.'],
        'Choose a new password')
    case 'password-reset-notice':
      return message(`Your ${service} password was reset`,
        `The password of your ${service} account (${to}) was just reset, and every session was signed out.`,
        ['If this was not you, reset your password again at once, with "Forgot password", and check the email address of your account.'])
    case 'email-change-notice':
      return message(`Your ${service} email address was changed`,
        `The email address of your ${service} account was changed from ${to} to ${intent.new_email ?? 'a new address'}.`,
        ['If this was not you, contact the people who run the service at once: this address no longer signs in to the account.'])
  }
}

const LIFETIME: Record<Purpose, 'EMAIL_VERIFY_TTL' | 'PASSWORD_RESET_TTL'> = {
  'verify-email': 'EMAIL_VERIFY_TTL',
  'change-email': 'EMAIL_VERIFY_TTL',
  'reset-password': 'PASSWORD_RESET_TTL'
}
const carriesToken = (t: Template): t is Purpose => t in LIFETIME

/** Whether a mail row was sent, or dropped as no longer due (its token could not be minted). */
export type MailOutcome = 'sent' | 'dropped'

/**
 * Delivers one queued mail: for a link, a fresh token (256 random bits) is minted first, stored as
 * its hash only, and lives in this process until the message is handed to the mail server. A
 * failed delivery leaves an unused token behind, which nobody knows and which expires; the retry
 * mints another.
 */
export async function deliverMail (db: Db, config: Config, mailer: Mailer, row: OutboxRow): Promise<MailOutcome> {
  const intent = row.payload as unknown as MailIntent
  let link: string | undefined
  if (carriesToken(intent.template)) {
    const token = randomBytes(32).toString('base64url')
    const minted = row.user_id !== null && await mintToken(db, {
      hash: emailTokenHash(token),
      outboxId: row.id,
      userId: row.user_id,
      purpose: intent.template,
      email: intent.to,
      ttl: config[LIFETIME[intent.template]]
    })
    if (!minted) return 'dropped'
    link = emailLink(config, intent.template, token)
  }
  await mailer.send(render(config, intent, link))
  return 'sent'
}
