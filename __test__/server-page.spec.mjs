// The page at `/` in a real headless Chromium (Debian's package, driven by playwright-core): type a prompt,
// generate on the tiny model, see the live preview and then the final image appear, and the gallery grow.
import test from 'ava'
import { SanaPipeline } from '../dist/index.js'
import { SANA_TINY } from './helpers/paths.mjs'
import { findBinary } from './helpers/processes.mjs'
import { startServer } from './helpers/server.mjs'

const CHROMIUM = process.env.CHROMIUM_PATH || findBinary('chromium', 'chromium-browser', 'google-chrome')
const maybe = CHROMIUM ? test.serial : test.skip
if (!CHROMIUM) console.warn('server-page.spec.mjs: SKIPPED, no chromium on PATH (.ci/run installs it: apt-get install chromium)')

let pipe
let browser
test.before(async () => {
  if (!CHROMIUM) return
  const { chromium } = await import('playwright-core')
  pipe = await SanaPipeline.load(SANA_TINY)
  // --no-sandbox: CI containers run as root, where Chromium's sandbox cannot start.
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-gpu'] })
})
test.after.always(async () => {
  await browser?.close()
  pipe?.dispose()
})

maybe('type a prompt, generate: the preview forms, then the result and its parameters appear in the gallery', async (t) => {
  const { url } = await startServer(t, pipe, { apiKey: 'page-key' })
  const page = await browser.newPage()
  t.teardown(() => page.close())
  await page.goto(url)
  t.is(await page.title(), 'sana serve')
  await page.fill('#prompt', 'a lighthouse at dusk')
  await page.selectOption('#size', '256x256')
  await page.selectOption('#binning', 'off')
  await page.fill('#steps', '8')
  await page.fill('#seed', '5')
  await page.fill('#key', 'page-key')
  const previews = []
  // Record every preview the page shows, to see it change while the image forms.
  await page.evaluate(() => {
    window.seen = []
    const img = document.getElementById('preview')
    new MutationObserver(() => window.seen.push(img.src)).observe(img, { attributeFilter: ['src'] })
  })
  await page.click('#go')
  await page.waitForSelector('#result:not([hidden])', { timeout: 120_000 })
  previews.push(...(await page.evaluate(() => window.seen)))
  t.true(previews.length >= 2, `the preview changed as the image formed (${previews.length} updates)`)
  t.true(previews.every((src) => src.startsWith('data:image/jpeg;base64,')))
  t.true(await page.isVisible('#preview'))
  const result = await page.$eval('#result', (img) => ({ src: img.src.slice(0, 22), w: img.naturalWidth, h: img.naturalHeight }))
  t.deepEqual(result, { src: 'data:image/png;base64,', w: 256, h: 256 })
  t.regex(await page.textContent('#status'), /^done in/)
  const params = JSON.parse(await page.textContent('#params'))
  t.like(params, { prompt: 'a lighthouse at dusk', width: 256, height: 256, steps: 8, seed: 5 })
  t.is(await page.locator('#gallery img').count(), 1)

  // A second image joins the gallery; a wrong key shows the server's message.
  await page.fill('#seed', '6')
  await page.click('#go')
  await page.waitForFunction(() => document.querySelectorAll('#gallery img').length === 2, null, { timeout: 120_000 })
  await page.fill('#key', 'wrong')
  await page.click('#go')
  await page.waitForFunction(() => document.getElementById('status').className === 'error', null, { timeout: 30_000 })
  t.regex(await page.textContent('#status'), /wrong API key/)
})
