// Text encoding against the fixture: tokenizer ids/masks (exact), Gemma-2 hidden states and encode_prompt.
import test from 'ava'
import { DEFAULT_COMPLEX_HUMAN_INSTRUCTION, Gemma2TextEncoder, GemmaTokenizer, preprocessPrompt, SanaPipeline } from '../dist/index.js'
import { join } from 'node:path'
import { SANA_TINY } from './helpers/paths.mjs'
import { assertClose, caseOf, caseTensor, rows } from './helpers/reference.mjs'

let pipe
test.before(async () => {
  pipe = await SanaPipeline.load(SANA_TINY)
})

test('preprocessing follows Python lower().strip()', (t) => {
  const tok = caseOf('tokenizer')
  t.deepEqual(tok.prompts.map(preprocessPrompt), tok.preprocessed_prompts)
  t.is(preprocessPrompt('\x1c ÉCOLE \x85'), 'école') // Python strips \x1c and \x85; JS trim() would not
  t.is(preprocessPrompt('\ufeffA'), '\ufeffa') // …and Python keeps the BOM
})

test('default complex human instruction is the pipeline default', (t) => {
  t.deepEqual([...DEFAULT_COMPLEX_HUMAN_INSTRUCTION], caseOf('tokenizer').complex_human_instruction)
})

test('tokenizePrompt matches ids and masks exactly, with and without CHI', (t) => {
  const c = caseOf('tokenizer')
  const withChi = pipe.tokenizePrompt(c.prompts)
  t.deepEqual(withChi.inputIds, rows(caseTensor('tokenizer', 'with_chi_input_ids')))
  t.deepEqual(withChi.attentionMask, rows(caseTensor('tokenizer', 'with_chi_attention_mask')))
  for (const off of [null, []]) {
    const noChi = pipe.tokenizePrompt(c.prompts, { complexHumanInstruction: off })
    t.deepEqual(noChi.inputIds, rows(caseTensor('tokenizer', 'without_chi_input_ids')))
    t.deepEqual(noChi.attentionMask, rows(caseTensor('tokenizer', 'without_chi_attention_mask')))
  }
  for (const [i, neg] of c.negative_prompts.entries()) {
    const role = i === 0 ? 'negative_empty' : `negative_${i}`
    const enc = pipe.tokenizePrompt(neg, { complexHumanInstruction: null })
    t.deepEqual(enc.inputIds, rows(caseTensor('tokenizer', `${role}_input_ids`)))
    t.deepEqual(enc.attentionMask, rows(caseTensor('tokenizer', `${role}_attention_mask`)))
  }
})

test('a custom CHI and maxSequenceLength change the budget', (t) => {
  const enc = pipe.tokenizePrompt('a cat', { complexHumanInstruction: ['Describe:'], maxSequenceLength: 20 })
  const chiTokens = pipe.tokenizer.encodeSync(['Describe:']).inputIds[0].length
  t.is(enc.inputIds[0].length, chiTokens + 20 - 2)
  t.is(enc.inputIds[0][0], pipe.tokenizer.bosTokenId)
})

test('long, empty and control-character prompts tokenize; non-strings are typed errors', (t) => {
  const long = 'a fox in the snow, '.repeat(530).slice(0, 10000)
  const enc = pipe.tokenizePrompt([long, '', 'tab\there\u0000nul\u0007bell\r\n'])
  t.true(enc.inputIds.every((r) => r.length === 506))
  t.true(enc.attentionMask[0].every((m) => m === 1)) // truncated to the budget
  for (const bad of [42, null, [1, 2], [], { prompt: 'x' }]) {
    const err = t.throws(() => pipe.tokenizePrompt(bad))
    t.is(err.code, 'SANA_INVALID_ARGUMENT')
    t.true(err.message.includes('prompt'))
  }
})

test('Gemma-2 encoder matches transformers (eager) where attention_mask = 1', async (t) => {
  const c = caseOf('text_encoder')
  for (const variant of ['with_chi', 'without_chi']) {
    const ids = rows(caseTensor('tokenizer', `${variant}_input_ids`))
    const mask = rows(caseTensor('tokenizer', `${variant}_attention_mask`))
    const out = await pipe.textEncoder.forward({ inputIds: ids, attentionMask: mask })
    const want = caseTensor('text_encoder', `${variant}_last_hidden_state`)
    t.deepEqual(out.shape, want.shape)
    const got = await out.toFloat32Array()
    const hidden = want.shape[2]
    const flatMask = mask.flat()
    assertClose(t, got, want.data, c.tolerance, `text_encoder/${variant}`, (i) => flatMask[Math.floor(i / hidden)] === 1)
    t.true(got.every(Number.isFinite), 'padded rows stay finite')
  }
})

test('encodePrompt matches diffusers encode_prompt', async (t) => {
  const c = caseOf('encode_prompt')
  const out = await pipe.encodePrompt(c.prompts, { negativePrompt: '', maxSequenceLength: 300 })
  for (const [name, maskName] of [
    ['prompt_embeds', 'prompt_attention_mask'],
    ['negative_prompt_embeds', 'negative_prompt_attention_mask'],
  ]) {
    const camel = name.replace(/_([a-z])/g, (_, x) => x.toUpperCase())
    const camelMask = maskName.replace(/_([a-z])/g, (_, x) => x.toUpperCase())
    const wantMask = caseTensor('encode_prompt', maskName)
    const gotMask = await out[camelMask].toFloat32Array()
    t.deepEqual(Array.from(gotMask), wantMask.data)
    const want = caseTensor('encode_prompt', name)
    t.deepEqual(out[camel].shape, want.shape)
    const hidden = want.shape[2]
    assertClose(t, await out[camel].toFloat32Array(), want.data, c.tolerance, name, (i) => wantMask.data[Math.floor(i / hidden)] === 1)
  }
  const noCfg = await pipe.encodePrompt('a cat', { doClassifierFreeGuidance: false })
  t.is(noCfg.negativePromptEmbeds, undefined)
  const err = await t.throwsAsync(pipe.encodePrompt(['a', 'b', 'c'], { negativePrompt: ['x', 'y'] }))
  t.is(err.code, 'SANA_INVALID_ARGUMENT')
})

test('the text encoder can be released after encoding', async (t) => {
  const te = await Gemma2TextEncoder.load(join(SANA_TINY, 'text_encoder'))
  const tok = await GemmaTokenizer.load(join(SANA_TINY, 'tokenizer'))
  const enc = await tok.encode(['a cat'], { maxLength: 16, padding: true })
  const h = await te.forward(enc)
  te.unload()
  t.deepEqual(h.shape, [1, 16, 32]) // outputs survive the unload
  t.is((await t.throwsAsync(te.forward(enc))).code, 'SANA_DISPOSED')
})
