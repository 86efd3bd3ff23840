import t from 'tap'
import { execFileSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { createDatabase, PASSWORD, spawnServer, uniqueEmail } from './helper.js'
import { startMailbox, to } from './mailbox.js'

// SMTP over TLS, as SMTP_URL asks for it: smtp:// upgraded with STARTTLS when the server offers
// it, smtps:// TLS from the start; the server's certificate is verified (here, a test CA the
// service process is told to trust with NODE_EXTRA_CA_CERTS, as a deployment with a private CA would).

const dir = t.testdir()
const key = join(dir, 'key.pem')
const cert = join(dir, 'cert.pem')
try {
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '1',
    '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', key, '-out', cert], { stdio: 'ignore' })
} catch {
  t.plan(0, 'needs openssl to make a test certificate')
  process.exit(0)
}
const tls = { key: readFileSync(key, 'utf8'), cert: readFileSync(cert, 'utf8') }

async function signUpOn (base: string): Promise<string> {
  const email = uniqueEmail('tls')
  const res = await fetch(`${base}/auth/sign-up`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ name: 'TLS', email, password: PASSWORD }) })
  t.equal(res.status, 201)
  return email
}

for (const implicit of [false, true]) {
  t.test(`${implicit ? 'smtps:// (TLS from the start)' : 'smtp:// with STARTTLS'}: the mail goes over TLS, with authentication`, async (t) => {
    const mailbox = await startMailbox(t, { tls: { ...tls, implicit } })
    t.match(mailbox.url, implicit ? /^smtps:/ : /^smtp:/)
    const server = spawnServer(t, await createDatabase(t), { SMTP_URL: mailbox.url, NODE_EXTRA_CA_CERTS: cert })
    const email = await signUpOn(await server.listening)
    const mail = await mailbox.waitFor(to(email, 'verify-email'))
    t.equal(mail.secure, true, 'received over TLS')
  })
}

t.test('a mail server whose certificate is not trusted gets nothing: the message waits in the outbox', async (t) => {
  const mailbox = await startMailbox(t, { tls: { ...tls, implicit: true } })
  const server = spawnServer(t, await createDatabase(t), { SMTP_URL: mailbox.url })
  const base = await server.listening
  await signUpOn(base)
  let failure: { err?: { message?: string }, retryIn?: number } | undefined
  for (let i = 0; i < 100 && failure === undefined; i++) {
    await new Promise((resolve) => setTimeout(resolve, 100))
    failure = server.output().out.split('\n').filter((l) => l.includes('outbox: delivery failed')).map((l) => JSON.parse(l)).at(0)
  }
  t.match(failure, { err: { message: /certificate/i }, retryIn: 5 }, 'refused for its certificate, to be retried in 5 s')
  const metrics = await (await fetch(`${base}/metrics`)).text()
  t.match(metrics, /^auth_mail_waiting 1$/m, 'the message waits in the outbox')
  t.match(metrics, /^auth_mail_failed_total [1-9]/m)
  t.equal(mailbox.messages.length, 0)
})
