// SanaImage / PNG encoder: round trip through the test reader (pixels and text chunks), and the reader itself
// validated on the fixture PNGs written by PIL, which must equal round(image_pt·255).
import test from 'ava'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'

import { SanaError, SanaImage, toRgb8 } from '../dist/index.js'
import { FIXTURES, REFERENCE_DIR, getCase, tensorFor } from './helpers/fixtures.mjs'
import { readPng } from './helpers/png.mjs'


const code = (code) => ({ instanceOf: SanaError, code })

/** Deterministic pseudo-random RGB bytes. */
function noiseImage(width, height) {
  const data = new Uint8Array(width * height * 3)
  let s = 12345
  for (let i = 0; i < data.length; i++) data[i] = (s = (s * 1103515245 + 12345) >>> 0) >>> 24
  return data
}

test('toPng → readPng round-trips pixels and text (tEXt for Latin-1, iTXt otherwise)', (t) => {
  const data = noiseImage(7, 5)
  const image = new SanaImage({ width: 7, height: 5, data, metadata: { prompt: 'A cute 🐼 eating 🎋, 一只猫', seed: 42 } })
  const png = readPng(image.toPng({ steps: 20, model: 'Sana_1600M_1024px', note: 'café\nline 2' }))
  t.is(png.width, 7)
  t.is(png.height, 5)
  t.deepEqual(png.data, data)
  t.deepEqual(png.text, { prompt: 'A cute 🐼 eating 🎋, 一只猫', seed: '42', steps: '20', model: 'Sana_1600M_1024px', note: 'café\nline 2' })
  t.deepEqual(png.chunkTypes, ['IHDR', 'iTXt', 'tEXt', 'tEXt', 'tEXt', 'tEXt', 'IDAT', 'IEND'])
})

test('extra metadata overrides the image metadata; save writes the same bytes', async (t) => {
  const image = new SanaImage({ width: 3, height: 2, data: noiseImage(3, 2), metadata: { seed: 1, prompt: 'x' } })
  t.deepEqual(readPng(image.toPng({ seed: 2 })).text, { seed: '2', prompt: 'x' })
  const dir = mkdtempSync(path.join(tmpdir(), 'sana-png-'))
  try {
    const file = path.join(dir, 'out.png')
    await image.save(file)
    t.deepEqual(readFileSync(file), image.toPng())
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})

test('invalid images and metadata keywords are rejected', (t) => {
  t.throws(() => new SanaImage({ width: 2, height: 2, data: new Uint8Array(11) }), code('SANA_INVALID_ARGUMENT'))
  t.throws(() => new SanaImage({ width: 0, height: 2, data: new Uint8Array(0) }), code('SANA_INVALID_ARGUMENT'))
  t.throws(() => new SanaImage({ width: 1, height: 1, data: [0, 0, 0] }), code('SANA_INVALID_ARGUMENT'))
  const image = new SanaImage({ width: 1, height: 1, data: new Uint8Array(3) })
  for (const bad of ['', ' lead', 'trail ', 'two  spaces', 'x'.repeat(80), 'emoji🐼']) {
    t.throws(() => image.toPng({ [bad]: 'v' }), code('SANA_INVALID_ARGUMENT'), JSON.stringify(bad))
  }
  t.throws(() => image.toPng({ ok: 'nul\0inside' }), code('SANA_INVALID_ARGUMENT'))
})

for (const name of ['e2e_a_cfg', 'e2e_b_binning', 'e2e_c_nocfg', 'sprint_e2e']) {
  test(`${name}.png decodes and equals round(image_pt·255); SanaImage re-encodes it losslessly`, (t) => {
    const c = getCase(name)
    const fileBytes = readFileSync(path.join(REFERENCE_DIR, `${name}.png`))
    const png = readPng(fileBytes)
    const pt = tensorFor(c.tensors.image_pt)
    const [, , height, width] = pt.shape
    t.is(png.width, width)
    t.is(png.height, height)
    const expected = toRgb8({ data: pt.data, shape: pt.shape })
    t.deepEqual(png.data, expected)
    const image = SanaImage.fromPlanar({ data: pt.data, shape: pt.shape }, { metadata: { prompt: c.call_kwargs.prompt } })
    const again = readPng(image.toPng())
    t.deepEqual(again.data, png.data)
    t.is(again.text.prompt, c.call_kwargs.prompt)
  })
}
