// parsePythonJson: strict JSON plus Python's bare NaN / Infinity / -Infinity.
import test from 'ava'

import { SanaError, parsePythonJson } from '../dist/index.js'

test('non-finite tokens become JS numbers', (t) => {
  const v = parsePythonJson('{"a": -Infinity, "b": [NaN, Infinity, -1.5e-3], "c": {"d": null, "e": true, "f": false}}')
  t.is(v.a, -Infinity)
  t.true(Number.isNaN(v.b[0]))
  t.is(v.b[1], Infinity)
  t.is(v.b[2], -0.0015)
  t.deepEqual(v.c, { d: null, e: true, f: false })
})

test('tokens inside strings and escapes are left as JSON.parse reads them', (t) => {
  const text = '{"NaN": "Infinity", "s": "a\\"b\\\\c\\u00e9\\n", "k": "-Infinity, NaN"}'
  t.deepEqual(parsePythonJson(text), JSON.parse(text))
})

test('agrees with JSON.parse on strict JSON', (t) => {
  const text = JSON.stringify({ x: [1, 2.5, -3e10, 0, -0.25], y: 'é😀', z: [], w: {}, n: null, nested: [[{ a: [1] }]] })
  t.deepEqual(parsePythonJson(text), JSON.parse(text))
  t.deepEqual(parsePythonJson('\ufeff [1]\n'), [1])
})

test('"__proto__" is an own key, as with JSON.parse', (t) => {
  const v = parsePythonJson('{"__proto__": {"polluted": 1}}')
  t.true(Object.hasOwn(v, '__proto__'))
  t.is({}.polluted, undefined)
  t.is(v.polluted, undefined)
})

test('malformed input throws SANA_INVALID_JSON with a position', (t) => {
  for (const bad of ['', '{', '{"a" 1}', '[1,]', '[1 2]', 'inf', '-NaN', '01', '"\\x"', '{"a":1} x', '{a:1}', '"a\nb"']) {
    const e = t.throws(() => parsePythonJson(bad), { instanceOf: SanaError, code: 'SANA_INVALID_JSON' }, JSON.stringify(bad))
    t.regex(e.message, /offset \d+/)
  }
  t.throws(() => parsePythonJson(42), { instanceOf: SanaError, code: 'SANA_INVALID_JSON' })
})
