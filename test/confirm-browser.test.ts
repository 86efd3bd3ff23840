import { existsSync } from 'node:fs'
import t, { type Test } from 'tap'
import { chromium, type Browser, type BrowserContext, type Page, type Request } from 'playwright-core'
import { createDatabase, PASSWORD, spawnServer, uniqueEmail } from './helper.js'
import { linkParts, startMailbox, to, type Caught } from './mailbox.js'

// The page mailed links open (GET /auth/confirm), as a person uses it: Debian's Chromium,
// headless, against the real process, with the mail caught by an SMTP server on loopback.
// CONFIRM_SCREENSHOT=/tmp/confirm.png keeps a picture of the reset page after its success.
const CHROMIUM = '/usr/bin/chromium'
const ARGS = ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
  '--disable-sync', '--no-first-run', '--disable-quic']

// Links are built from PUBLIC_URL; the server's own port is only known once it listens, so a
// caught link's origin is swapped for the server's before the browser opens it.
const PUBLIC_URL = 'https://auth.example.test'
const NEW_PASSWORD = 'a brand new horse battery'
const WAIT = 10_000

// What the page says (src/recovery/page.ts).
const VERIFIED = 'Your email address is confirmed. You can close this page.'
const RESET = 'Your password has been changed, and every session signed out. Sign in with the new password.'
const USED = 'This link is not valid, or has been used already.'

/** Whether the status line has its outcome (neither empty nor the "…" shown while posting). */
const OUTCOME = /^[^…]/

if (!existsSync(CHROMIUM)) {
  t.plan(0, `no ${CHROMIUM} (apt-get install chromium)`)
} else {
  const mailbox = await startMailbox(t)
  const server = spawnServer(t, await createDatabase(t), { SMTP_URL: mailbox.url, PUBLIC_URL })
  const base = await server.listening
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS, timeout: WAIT })
  t.teardown(async () => await browser.close())

  await t.test('forgot password: the reset link, a new password typed into the page → it signs in, the old one does not', async (t) => {
    const email = await signUpOverHttp(t, base)
    t.equal(await post(base, '/auth/password/forgot', { email }), 202)
    const mail = await mailbox.waitFor(to(email, 'reset-password'), WAIT)
    t.match(mail.link, new RegExp(`^${PUBLIC_URL.replace(/\./g, '\\.')}/auth/confirm#type=reset-password&token=[\\w-]{43}$`),
      'the link: PUBLIC_URL + /auth/confirm, type and token in the fragment')

    const { page, requests, problems } = await open(t, browser, local(mail, base))
    t.equal(await page.locator('#title').textContent(), 'Choose a new password')
    t.ok(await page.locator('#password').isVisible(), 'a new-password field')
    t.equal(await page.locator('#submit').textContent(), 'Set the new password')
    await page.locator('#password').fill(NEW_PASSWORD)
    const posted = page.waitForRequest((r) => r.method() === 'POST', { timeout: WAIT })
    await page.locator('#submit').click()
    const sent = await posted
    t.equal(sent.url(), `${base}/auth/password/reset`, 'the form posts to password/reset on the page\'s own origin')
    t.same(sent.postDataJSON(), { token: linkParts(mail.link).token, new_password: NEW_PASSWORD })
    t.equal(await outcome(page), RESET, 'the page says the password is changed')
    t.equal(await page.locator('#status').getAttribute('class'), '', 'not as an error')
    t.ok(await page.locator('#form').isHidden(), 'the form is gone')
    t.same(requests.map(describe), [`GET ${base}/auth/confirm`, `POST ${base}/auth/password/reset`], 'the page and the one POST, nothing else')
    t.same(problems, [], 'no CSP violation, console error or page error')
    if (process.env.CONFIRM_SCREENSHOT !== undefined) await page.screenshot({ path: process.env.CONFIRM_SCREENSHOT, fullPage: true })

    t.equal(await signIn(base, email, NEW_PASSWORD), 200, 'the new password signs in')
    t.equal(await signIn(base, email, PASSWORD), 401, 'the old one does not')
    await mailbox.waitFor(to(email, 'was reset'), WAIT)
    t.pass('a notice of the reset is mailed')
  })

  await t.test('verify email: the sign-up\'s link, its button → the page says so and /auth/me shows email_verified', async (t) => {
    const email = await signUpOverHttp(t, base)
    const mail = await mailbox.waitFor(to(email, 'verify-email'), WAIT)
    const token = await accessToken(base, email, PASSWORD)
    t.equal((await me(base, token)).email_verified, false, 'not verified before the click')

    const { page, requests, problems } = await open(t, browser, local(mail, base))
    t.equal(await page.locator('#title').textContent(), 'Confirm your email address')
    t.ok(await page.locator('#password-field').isHidden(), 'no password field')
    await page.getByRole('button', { name: 'Confirm' }).click()
    t.equal(await outcome(page), VERIFIED, 'the page says the address is confirmed')
    t.same(requests.map(describe), [`GET ${base}/auth/confirm`, `POST ${base}/auth/email/verify`], 'the page and the one POST')
    t.same(requests[1].postDataJSON(), { token: linkParts(mail.link).token })
    t.same(problems, [], 'no CSP violation, console error or page error')

    t.equal((await me(base, token)).email_verified, true, '/auth/me shows the address verified')
  })

  await t.test('the page: strict headers; no request but the page until the click, none elsewhere; no CSP violation; the token leaves the address bar', async (t) => {
    const res = await http(base, 'GET', '/auth/confirm')
    t.equal(res.status, 200)
    t.match(res.headers.get('content-type'), /^text\/html/)
    const csp = res.headers.get('content-security-policy') ?? ''
    t.match(csp.split(';').map((d) => d.trim()), ["default-src 'none'"], `CSP has default-src 'none' (${csp})`)
    t.notMatch(csp, /unsafe-inline|unsafe-eval|\*/, 'no unsafe-inline, unsafe-eval or wildcard')
    t.equal(res.headers.get('referrer-policy'), 'no-referrer')
    t.equal(res.headers.get('x-content-type-options'), 'nosniff')
    t.match(res.headers.get('cache-control'), /no-store/)
    await res.arrayBuffer()

    const email = await signUpOverHttp(t, base)
    const mail = await mailbox.waitFor(to(email, 'verify-email'), WAIT)
    const { token } = linkParts(mail.link)
    const { page, context, requests, problems } = await open(t, browser, local(mail, base))
    await page.waitForLoadState('networkidle', { timeout: WAIT })
    t.same(requests.map(describe), [`GET ${base}/auth/confirm`], 'loading and running the page requests nothing but the page')
    t.ok(requests[0].isNavigationRequest(), 'that one is the navigation')
    t.notOk(requests[0].url().includes(token), 'the token is not in the request the browser sends')

    t.equal(page.url(), `${base}/auth/confirm`, 'the token is gone from the address (page.url)')
    t.equal(await page.evaluate(() => location.href), `${base}/auth/confirm`, 'and from location.href (history.replaceState)')
    t.notOk((await page.content()).includes(token), 'and from the document')
    const cookies = await context.cookies()
    t.same(cookies, [], 'no cookie set')

    await page.getByRole('button', { name: 'Confirm' }).click()
    t.equal(await outcome(page), VERIFIED)
    t.same(requests.map(describe), [`GET ${base}/auth/confirm`, `POST ${base}/auth/email/verify`], 'the click sends one POST')
    const headers = await requests[1].allHeaders()
    t.equal(headers.referer, undefined, 'without a Referer')
    t.equal(headers.origin, base, 'from the page\'s own origin')
    t.same(requests.filter((r) => new URL(r.url()).origin !== base).map(describe), [], 'no request to another origin, ever')
    t.same(problems, [], 'no CSP violation, console error or page error')

    // Without a fragment (a link cut short by a mail client): the page says so, and still requests nothing more.
    const bare = await open(t, browser, `${base}/auth/confirm`)
    t.equal(await bare.page.locator('#title').textContent(), 'This link is incomplete')
    t.equal(await bare.page.locator('#status').getAttribute('class'), 'error')
    t.ok(await bare.page.locator('#form').isHidden(), 'no button')
    t.same(bare.requests.map(describe), [`GET ${base}/auth/confirm`])
    t.same(bare.problems, [])
  })

  await t.test('loading a link (as a mail scanner would) uses nothing up: the token still works afterwards', async (t) => {
    const email = await signUpOverHttp(t, base)
    const verify = await mailbox.waitFor(to(email, 'verify-email'), WAIT)
    t.equal(await post(base, '/auth/password/forgot', { email }), 202)
    const reset = await mailbox.waitFor(to(email, 'reset-password'), WAIT)

    for (const mail of [verify, reset]) {
      const { page, requests } = await open(t, browser, local(mail, base))
      await page.waitForLoadState('networkidle', { timeout: WAIT })
      t.same(requests.map(describe), [`GET ${base}/auth/confirm`], `${linkParts(mail.link).type}: the page loaded, nothing posted`)
      await page.close()
    }

    t.equal(await post(base, '/auth/email/verify', { token: linkParts(verify.link).token }), 204, 'the verify token still verifies')
    t.equal(await post(base, '/auth/password/reset', { token: linkParts(reset.link).token, new_password: NEW_PASSWORD }), 204,
      'the reset token still resets')
    t.equal(await signIn(base, email, NEW_PASSWORD), 200)
  })

  await t.test('a used link opened again: the click shows that it is not valid any more, and the button stays off', async (t) => {
    const email = await signUpOverHttp(t, base)
    const verify = await mailbox.waitFor(to(email, 'verify-email'), WAIT)
    t.equal(await post(base, '/auth/email/verify', { token: linkParts(verify.link).token }), 204)
    t.equal(await post(base, '/auth/password/forgot', { email }), 202)
    const reset = await mailbox.waitFor(to(email, 'reset-password'), WAIT)
    t.equal(await post(base, '/auth/password/reset', { token: linkParts(reset.link).token, new_password: NEW_PASSWORD }), 204)

    {
      const { page, problems } = await open(t, browser, local(verify, base))
      await page.getByRole('button', { name: 'Confirm' }).click()
      t.equal(await outcome(page), USED, 'verify-email: the TOKEN_INVALID message')
      t.equal(await page.locator('#status').getAttribute('class'), 'error', 'shown as an error')
      t.ok(await page.locator('#submit').isDisabled(), 'the button stays off')
      t.same(problems.filter((p) => !p.includes('400')), [], 'nothing else went wrong')
    }
    {
      const { page, problems } = await open(t, browser, local(reset, base))
      await page.locator('#password').fill('yet another horse battery')
      await page.locator('#submit').click()
      t.equal(await outcome(page), USED, 'reset-password: the TOKEN_INVALID message')
      t.equal(await page.locator('#status').getAttribute('class'), 'error')
      t.ok(await page.locator('#submit').isDisabled())
      t.same(problems.filter((p) => !p.includes('400')), [])
    }
    t.equal(await signIn(base, email, NEW_PASSWORD), 200, 'the password is still the one the link set')
  })
}

/** The caught link, with the server's origin in place of PUBLIC_URL's. */
function local (mail: Caught, base: string): string {
  if (mail.link === undefined) throw new Error(`the mail "${mail.subject}" has no link`)
  const link = new URL(mail.link)
  return `${base}${link.pathname}${link.search}${link.hash}`
}

/** A request as "METHOD url" (the tests run before this module's constants below would be set: functions only here). */
function describe (r: Request): string {
  return `${r.method()} ${r.url().split('#')[0]}`
}

/**
 * A fresh browser context (no shared state) and a page on `url`, with every request the context
 * makes and every problem the page reports (CSP violations, console errors, uncaught errors).
 */
async function open (t: Test, browser: Browser, url: string): Promise<{ page: Page, context: BrowserContext, requests: Request[], problems: string[] }> {
  const context = await browser.newContext()
  t.teardown(async () => await context.close())
  context.setDefaultTimeout(WAIT)
  const requests: Request[] = []
  const problems: string[] = []
  context.on('request', (r) => requests.push(r))
  // An init script runs outside the page's CSP: it sees each violation, including any that
  // Chromium would not print to the console.
  await context.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (e) => {
      console.error(`securitypolicyviolation: ${e.violatedDirective} ${e.blockedURI}`)
    })
  })
  const page = await context.newPage()
  page.on('console', (m) => { if (m.type() === 'error' || /Content.Security.Policy/i.test(m.text())) problems.push(`console: ${m.text()}`) })
  page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`))
  const res = await page.goto(url, { timeout: WAIT })
  t.equal(res?.status(), 200, `GET ${url.split('#')[0]} → 200`)
  // The script has run once the title is no longer the static one.
  await page.locator('#title', { hasNotText: /^Confirm$/ }).waitFor({ timeout: WAIT })
  return { page, context, requests, problems }
}

/** The status line once the POST has been answered. */
async function outcome (page: Page): Promise<string | null> {
  await page.locator('#status', { hasText: OUTCOME }).waitFor({ timeout: WAIT })
  return await page.locator('#status').textContent()
}

async function http (base: string, method: string, path: string, body?: object, token?: string): Promise<Response> {
  return await fetch(`${base}${path}`, {
    method,
    headers: {
      ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
      ...(token !== undefined ? { authorization: `Bearer ${token}` } : {})
    },
    body: body !== undefined ? JSON.stringify(body) : undefined,
    signal: AbortSignal.timeout(WAIT)
  })
}

async function signUpOverHttp (t: Test, base: string): Promise<string> {
  const email = uniqueEmail('confirm')
  const res = await http(base, 'POST', '/auth/sign-up', { name: 'Confirm User', email, password: PASSWORD })
  t.equal(res.status, 201, 'signed up')
  await res.arrayBuffer()
  return email
}

/** The status of a POST, its body read and dropped. */
async function post (base: string, path: string, body: object): Promise<number> {
  const res = await http(base, 'POST', path, body)
  await res.arrayBuffer()
  return res.status
}

async function signIn (base: string, email: string, password: string): Promise<number> {
  return await post(base, '/auth/sign-in', { email, password })
}

/** An access token of a new session. */
async function accessToken (base: string, email: string, password: string): Promise<string> {
  const res = await http(base, 'POST', '/auth/sign-in', { email, password })
  if (res.status !== 200) throw new Error(`sign-in: ${res.status} ${await res.text()}`)
  return (await res.json() as { access_token: string }).access_token
}

async function me (base: string, token: string): Promise<{ email_verified: boolean }> {
  const res = await http(base, 'GET', '/auth/me', undefined, token)
  if (res.status !== 200) throw new Error(`GET /auth/me: ${res.status} ${await res.text()}`)
  return await res.json() as { email_verified: boolean }
}
