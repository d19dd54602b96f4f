/**
 * JSON as Python's `json` module writes it. diffusers configs may contain the bare tokens `NaN`,
 * `Infinity` and `-Infinity` (Sana's `scheduler_config.json` has `"lambda_min_clipped": -Infinity`),
 * which `JSON.parse` rejects.
 */
import { SanaError } from './errors'

// A JSON number (RFC 8259 grammar), anchored at the scan position by the sticky flag.
const NUMBER = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/y
// A JSON string body: unescaped characters other than `"` `\` and controls, or an escape.
const STRING = /"(?:[^"\\\u0000-\u001f]|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*"/y
const WHITESPACE = /[ \t\n\r]*/y

const LITERALS: ReadonlyArray<readonly [string, unknown]> = [
  ['true', true],
  ['false', false],
  ['null', null],
  ['NaN', NaN],
  ['Infinity', Infinity],
  ['-Infinity', -Infinity],
]

class Parser {
  pos = 0
  constructor(readonly text: string) {}

  fail(what: string): never {
    const line = this.text.slice(0, this.pos).split('\n').length
    throw new SanaError('SANA_INVALID_JSON', `Invalid JSON at line ${line} (offset ${this.pos}): ${what}`)
  }

  skipWhitespace(): void {
    WHITESPACE.lastIndex = this.pos
    WHITESPACE.exec(this.text)
    this.pos = WHITESPACE.lastIndex
  }

  expect(ch: string): void {
    this.skipWhitespace()
    if (this.text[this.pos] !== ch) this.fail(`expected '${ch}'`)
    this.pos++
  }

  value(): unknown {
    this.skipWhitespace()
    const ch = this.text[this.pos]
    if (ch === '{') return this.object()
    if (ch === '[') return this.array()
    if (ch === '"') return this.string()
    for (const [word, value] of LITERALS) {
      if (this.text.startsWith(word, this.pos)) {
        this.pos += word.length
        return value
      }
    }
    NUMBER.lastIndex = this.pos
    const m = NUMBER.exec(this.text)
    if (!m) this.fail(ch === undefined ? 'unexpected end of input' : `unexpected character '${ch}'`)
    this.pos = NUMBER.lastIndex
    return Number(m[0])
  }

  string(): string {
    STRING.lastIndex = this.pos
    const m = STRING.exec(this.text)
    if (!m) this.fail('unterminated or malformed string')
    this.pos = STRING.lastIndex
    // The body is valid JSON string syntax, so JSON.parse decodes the escapes exactly.
    return JSON.parse(m[0]) as string
  }

  array(): unknown[] {
    this.pos++ // '['
    const out: unknown[] = []
    this.skipWhitespace()
    if (this.text[this.pos] === ']') {
      this.pos++
      return out
    }
    for (;;) {
      out.push(this.value())
      this.skipWhitespace()
      const ch = this.text[this.pos++]
      if (ch === ']') return out
      if (ch !== ',') this.fail("expected ',' or ']'")
    }
  }

  object(): Record<string, unknown> {
    this.pos++ // '{'
    const out: Record<string, unknown> = {}
    this.skipWhitespace()
    if (this.text[this.pos] === '}') {
      this.pos++
      return out
    }
    for (;;) {
      this.skipWhitespace()
      if (this.text[this.pos] !== '"') this.fail('expected a string key')
      const key = this.string()
      this.expect(':')
      // defineProperty, like JSON.parse: a "__proto__" key becomes an own property, not the prototype.
      Object.defineProperty(out, key, { value: this.value(), enumerable: true, writable: true, configurable: true })
      this.skipWhitespace()
      const ch = this.text[this.pos++]
      if (ch === '}') return out
      if (ch !== ',') this.fail("expected ',' or '}'")
    }
  }
}

/**
 * Parse JSON that may contain Python's non-finite number tokens `NaN`, `Infinity` and `-Infinity`
 * (outside strings), returning them as real JS numbers. Everything else follows strict JSON.
 * Throws a {@link SanaError} with code `SANA_INVALID_JSON` on malformed input.
 *
 * @example
 * parsePythonJson('{"lambda_min_clipped": -Infinity}').lambda_min_clipped // -Infinity
 */
export function parsePythonJson(text: string): unknown {
  if (typeof text !== 'string') {
    throw new SanaError('SANA_INVALID_JSON', `Expected a string to parse but received ${typeof text}`)
  }
  const parser = new Parser(text.charCodeAt(0) === 0xfeff ? text.slice(1) : text)
  const value = parser.value()
  parser.skipWhitespace()
  if (parser.pos !== parser.text.length) parser.fail('unexpected trailing characters')
  return value
}
