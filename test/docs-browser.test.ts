import { existsSync } from 'node:fs'
import t from 'tap'
import { chromium } from 'playwright-core'
import { createDatabase, PASSWORD, spawnServer, uniqueEmail } from './helper.js'

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
}
