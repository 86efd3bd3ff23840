import { existsSync } from 'node:fs'
import t from 'tap'
import { chromium, type Page } from 'playwright-core'
import jsQR from 'jsqr' // CommonJS: its types name the function `default`
import { PNG } from 'pngjs'
import { createDatabase, PASSWORD, spawnServer, uniqueEmail } from './helper.js'
import { codeFor } from './totp.js'

// The interactive docs as a person uses them: Debian's Chromium, headless, against the real
// process. DOCS_SCREENSHOT=/tmp/docs.png keeps a picture of the page after the sign-up.
const CHROMIUM = '/usr/bin/chromium'
const ARGS = ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
  '--disable-sync', '--no-first-run', '--disable-quic']

if (!existsSync(CHROMIUM)) {
  t.plan(0, `no ${CHROMIUM} (apt-get install chromium)`)
} else {
  t.test('/docs in a browser: lists the endpoints, and "Try it out" signs a user up → 201', async (t) => {
    const base = await spawnServer(t, await createDatabase(t)).listening
    const browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS })
    t.teardown(async () => await browser.close())
    const page = await browser.newPage()
    page.setDefaultTimeout(15_000)

    const res = await page.goto(`${base}/docs`)
    t.equal(res?.status(), 200)
    await page.locator('.opblock').first().waitFor()
    const paths = await page.locator('.opblock-summary-path').allTextContents()
    for (const path of ['/auth/sign-up', '/auth/sign-in', '/auth/refresh', '/auth/me', '/auth/sign-out', '/health']) {
      t.ok(paths.some((p) => p.replace(/\u200b/g, '') === path), `lists ${path}`)
    }

    const email = uniqueEmail('docs')
    const op = page.locator('.opblock', { has: page.locator('[data-path="/auth/sign-up"]') })
    await op.locator('.opblock-summary-control').click()
    await op.getByRole('button', { name: 'Try it out' }).click()
    await op.locator('textarea.body-param__text').fill(JSON.stringify({ name: 'Docs User', email, password: PASSWORD }, null, 2))
    await op.getByRole('button', { name: 'Execute' }).click()
    const status = op.locator('.live-responses-table tr.response .response-col_status')
    await status.waitFor()
    t.equal((await status.textContent())?.trim(), '201', 'the page shows 201')
    t.match(await op.locator('.live-responses-table').textContent(), 'User registered successfully')
    if (process.env.DOCS_SCREENSHOT !== undefined) await page.screenshot({ path: process.env.DOCS_SCREENSHOT, fullPage: true })

    const signIn = await fetch(`${base}/auth/sign-in`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ email, password: PASSWORD })
    })
    t.equal(signIn.status, 200, 'the user made from the page can sign in')
  })

  t.test('/docs in a browser: the second factor end to end with "Try it out", and the QR code holds the otpauth URL', async (t) => {
    const base = await spawnServer(t, await createDatabase(t)).listening
    const browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS })
    t.teardown(async () => await browser.close())
    const page = await browser.newPage()
    page.setDefaultTimeout(15_000)
    await page.goto(`${base}/docs`)
    await page.locator('.opblock').first().waitFor()

    const email = uniqueEmail('docs-mfa')
    const call = async (path: string, body: object) => await (await fetch(`${base}${path}`, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body)
    })).json()
    await call('/auth/sign-up', { name: 'Docs User', email, password: PASSWORD })
    const { access_token: access } = await call('/auth/sign-in', { email, password: PASSWORD })

    // Authorize with the access token, as a person would, for the operations that need it.
    await page.getByRole('button', { name: 'Authorize' }).first().click()
    await page.locator('.modal-ux input[type=text]').fill(access)
    await page.locator('.modal-ux button.modal-btn.authorize').click()
    await page.locator('.modal-ux button.btn-done').click()

    const enrol = await tryIt(page, 'post', '/auth/mfa/totp', { password: PASSWORD })
    t.equal(enrol.status, '200', 'enrol: 200')
    const { secret, otpauth_url: url, qr_svg: svg } = enrol.json
    t.match(url, /^otpauth:\/\/totp\//)

    // The QR code, drawn by the browser, decodes to the otpauth URL.
    const qr = await browser.newPage({ viewport: { width: 400, height: 400 } })
    await qr.setContent(`<body style="margin:0;background:#fff">${svg.replace('<svg', '<svg width="400" height="400"')}</body>`)
    const png = PNG.sync.read(await qr.screenshot())
    t.equal(jsQR.default(new Uint8ClampedArray(png.data), png.width, png.height)?.data, url, 'the QR code holds otpauth_url')

    const confirm = await tryIt(page, 'post', '/auth/mfa/totp/confirm', { code: codeFor(secret) })
    t.equal(confirm.status, '200', 'confirm: 200')
    t.equal(confirm.json.recovery_codes.length, 10)

    const signIn = await tryIt(page, 'post', '/auth/sign-in', { email, password: PASSWORD })
    t.equal(signIn.status, '403', 'sign-in: 403')
    t.equal(signIn.json.code, 'MFA_REQUIRED')
    const verify = await tryIt(page, 'post', '/auth/mfa/verify', { mfa_token: signIn.json.mfa_token, code: confirm.json.recovery_codes[0] })
    t.equal(verify.status, '200', 'verify with a recovery code: 200')
    t.type(verify.json.access_token, 'string')

    const renew = await tryIt(page, 'post', '/auth/mfa/recovery-codes', { code: confirm.json.recovery_codes[1] })
    t.equal(renew.status, '200', 'new recovery codes: 200')
    const off = await tryIt(page, 'delete', '/auth/mfa/totp', { password: PASSWORD, code: renew.json.recovery_codes[0] })
    t.equal(off.status, '204', 'TOTP off: 204')
  })
}

/** Opens an operation, fills its body, executes it: the status and body the page shows. */
async function tryIt (page: Page, method: string, path: string, body: object): Promise<{ status: string, json: any }> {
  const op = page.locator(`.opblock-${method}`, { has: page.locator(`[data-path="${path}"]`) })
  await op.locator('.opblock-summary-control').click()
  await op.getByRole('button', { name: 'Try it out' }).click()
  await op.locator('textarea.body-param__text').fill(JSON.stringify(body))
  await op.getByRole('button', { name: 'Execute' }).click()
  const row = op.locator('.live-responses-table tr.response')
  await row.waitFor()
  const status = (await row.locator('.response-col_status').textContent())?.trim() ?? ''
  const text = status === '204' ? 'null' : (await row.locator('.response-col_description pre').first().textContent()) ?? 'null'
  await op.locator('.opblock-summary-control').click() // closed again, so that the next operation's buttons are the only ones
  return { status, json: JSON.parse(text) }
}
