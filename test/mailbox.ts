import type { AddressInfo } from 'node:net'
import { SMTPServer, type SMTPServerOptions } from 'smtp-server'
import { simpleParser, type ParsedMail } from 'mailparser'

// A real SMTP server on loopback, in the test's process: the service talks SMTP to it over TCP
// (nodemailer, as in production), and each message it accepts is parsed with mailparser.

export interface Caught {
  to: string
  subject: string
  text: string
  html: string
  /** The first http(s) link standing on a line of its own in the text part. */
  link: string | undefined
  /** The message came over TLS (smtps, or after STARTTLS). */
  secure: boolean
  mail: ParsedMail
}

export interface Mailbox {
  /** smtp://user:pass@127.0.0.1:<port>, for SMTP_URL */
  url: string
  port: number
  messages: Caught[]
  /** Resolves with the first message (counting those already caught) that matches, or rejects after `ms`. */
  waitFor: (match: (m: Caught) => boolean, ms?: number) => Promise<Caught>
  /** While set, every message is refused with this SMTP reply code (451: try later, 550: refused). */
  refuse: (code: number | null) => void
  close: () => Promise<void>
}

export const USER = 'mailer'
export const PASS = 'mailer-password'

/** `match` for the mail to one address (and of one kind, by its link's type or the subject). */
export const to = (address: string, kind?: string) => (m: Caught): boolean =>
  m.to === address && (kind === undefined || (m.link?.includes(`type=${kind}&`) ?? false) || m.subject.toLowerCase().includes(kind))

/**
 * `tls`: a key and certificate; the server then offers STARTTLS, or with `implicit` speaks TLS
 * from the start (smtps). Without it, plain SMTP.
 */
export async function startMailbox (t: { teardown: (fn: () => unknown) => void }, opts: { port?: number, tls?: { key: string, cert: string, implicit: boolean } } = {}): Promise<Mailbox> {
  const messages: Caught[] = []
  const waiters: Array<{ match: (m: Caught) => boolean, resolve: (m: Caught) => void }> = []
  let refusing: number | null = null
  const options: SMTPServerOptions = {
    // Plain SMTP on loopback unless TLS is asked for, with AUTH (nodemailer sends the URL's user and password).
    ...(opts.tls === undefined
      ? { disabledCommands: ['STARTTLS'], allowInsecureAuth: true }
      : { key: opts.tls.key, cert: opts.tls.cert, secure: opts.tls.implicit, allowInsecureAuth: false }),
    authOptional: false,
    logger: false,
    // A client still connected (nodemailer keeps its pooled connection) does not hold up close.
    closeTimeout: 200,
    onAuth (auth, _session, cb) {
      if (auth.username === USER && auth.password === PASS) cb(null, { user: USER })
      else cb(new Error('Invalid username or password'))
    },
    onData (stream, session, cb) {
      const chunks: Buffer[] = []
      stream.on('data', (c: Buffer) => chunks.push(c))
      stream.on('end', () => {
        if (refusing !== null) {
          cb(Object.assign(new Error('Refused for the test'), { responseCode: refusing }))
          return
        }
        simpleParser(Buffer.concat(chunks)).then((mail) => {
          const text = mail.text ?? ''
          const caught: Caught = {
            to: Array.isArray(mail.to) ? mail.to[0].value[0].address ?? '' : mail.to?.value[0].address ?? '',
            subject: mail.subject ?? '',
            text,
            html: typeof mail.html === 'string' ? mail.html : '',
            link: /^(https?:\/\/\S+)$/m.exec(text)?.[1],
            secure: session.secure,
            mail
          }
          messages.push(caught)
          for (const w of [...waiters]) {
            if (w.match(caught)) { waiters.splice(waiters.indexOf(w), 1); w.resolve(caught) }
          }
          cb()
        }, cb)
      })
    }
  }
  const server = new SMTPServer(options)
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(opts.port ?? 0, '127.0.0.1', resolve)
  })
  const port = ((server as unknown as { server: { address: () => AddressInfo } }).server.address()).port
  let closed = false
  const close = async (): Promise<void> => {
    if (closed) return
    closed = true
    await new Promise<void>((resolve) => server.close(() => resolve()))
  }
  t.teardown(close)
  return {
    url: `${opts.tls?.implicit === true ? 'smtps' : 'smtp'}://${USER}:${PASS}@127.0.0.1:${port}`,
    port,
    messages,
    waitFor: async (match, ms = 15_000) => {
      const found = messages.find(match)
      if (found !== undefined) return found
      return await new Promise<Caught>((resolve, reject) => {
        const w = { match, resolve: (m: Caught) => { clearTimeout(timer); resolve(m) } }
        const timer = setTimeout(() => { waiters.splice(waiters.indexOf(w), 1); reject(new Error(`no matching mail within ${ms} ms (${messages.length} caught)`)) }, ms)
        waiters.push(w)
      })
    },
    refuse: (code) => { refusing = code },
    close
  }
}

/** The token and type from a mailed link's fragment. */
export function linkParts (link: string | undefined): { type: string, token: string } {
  if (link === undefined) throw new Error('the mail has no link')
  const params = new URLSearchParams(new URL(link).hash.slice(1))
  return { type: params.get('type') ?? '', token: params.get('token') ?? '' }
}
