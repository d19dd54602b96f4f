/** The Gemma tokenizer (`tokenizer/` folder), on the `tokenizers` crate. */
import { callNative, callNativeSync } from './errors'
import { checkDir } from './components'
import { native, type Binding } from './native'

/** Token ids and attention masks (1 = token, 0 = padding), one row per text. */
export interface Encoding {
  inputIds: number[][]
  attentionMask: number[][]
}

/** Options of {@link GemmaTokenizer.encode}. */
export interface EncodeOptions {
  /** Truncate rows to this many tokens, special tokens included. Defaults to no truncation. */
  maxLength?: number
  /** Pad (right) to `maxLength`, or to the longest row without it. Defaults to false. */
  padding?: boolean
  /** Prepend `<bos>`. Defaults to true. */
  addSpecialTokens?: boolean
}

export class GemmaTokenizer {
  /** @internal */
  readonly native: Binding.NativeTokenizer
  /** The folder it was loaded from. */
  readonly dir: string

  private constructor(handle: Binding.NativeTokenizer, dir: string) {
    this.native = handle
    this.dir = dir
  }

  /**
   * Load `tokenizer.json` (+ `tokenizer_config.json`) from a folder.
   * @example const tok = await GemmaTokenizer.load('sana/tokenizer')
   */
  static async load(dir: string): Promise<GemmaTokenizer> {
    const abs = checkDir(dir, 'tokenizer')
    const h = await callNative(() => native().NativeTokenizer.load(abs))
    return new GemmaTokenizer(h as Binding.NativeTokenizer, abs)
  }

  /**
   * Tokenize a batch off the main thread.
   * @example await tok.encode(['a cat'], { maxLength: 300, padding: true })
   */
  async encode(texts: string[], options: EncodeOptions = {}): Promise<Encoding> {
    return (await callNative(() => this.native.encode(texts, options))) as Encoding
  }

  /** Synchronous {@link encode}, for a few short texts. */
  encodeSync(texts: string[], options: EncodeOptions = {}): Encoding {
    return callNativeSync(() => this.native.encodeSync(texts, options))
  }

  /** Id of `<pad>`. */
  get padTokenId(): number {
    return this.native.padTokenId
  }

  /** Id of `<bos>`, if the tokenizer has one. */
  get bosTokenId(): number | undefined {
    return this.native.bosTokenId ?? undefined
  }

  get vocabSize(): number {
    return this.native.vocabSize
  }
}
