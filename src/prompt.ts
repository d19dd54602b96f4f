/**
 * Prompt preprocessing exactly as diffusers' `SanaPipeline.encode_prompt` with `clean_caption=False`:
 * Python `text.lower().strip()`, the complex human instruction (CHI) prefix, and the token budget.
 */
import { invalidArgument } from './errors'

/**
 * The complex human instruction of the released Sana pipelines (diffusers' `SanaPipeline.__call__` default):
 * joined with `\n` and prepended to every positive prompt, so Gemma "reads" the prompt as a request to
 * describe an image. Replace it with `complexHumanInstruction: [...]` or disable it with `null`.
 */
export const DEFAULT_COMPLEX_HUMAN_INSTRUCTION: readonly string[] = Object.freeze([
  "Given a user prompt, generate an 'Enhanced prompt' that provides detailed visual descriptions suitable for image generation. Evaluate the level of detail in the user prompt:",
  '- If the prompt is simple, focus on adding specifics about colors, shapes, sizes, textures, and spatial relationships to create vivid and concrete scenes.',
  '- If the prompt is already detailed, refine and enhance the existing details slightly without overcomplicating.',
  'Here are examples of how to transform or refine prompts:',
  '- User Prompt: A cat sleeping -> Enhanced: A small, fluffy white cat curled up in a round shape, sleeping peacefully on a warm sunny windowsill, surrounded by pots of blooming red flowers.',
  '- User Prompt: A busy city street -> Enhanced: A bustling city street scene at dusk, featuring glowing street lamps, a diverse crowd of people in colorful clothing, and a double-decker bus passing by towering glass skyscrapers.',
  'Please generate only the enhanced description for the prompt below and avoid including any additional commentary or evaluations:',
  'User Prompt: ',
])

/** Default `max_sequence_length` of the Sana pipelines. */
export const DEFAULT_MAX_SEQUENCE_LENGTH = 300

// Python's str.isspace() set (differs from JS trim(): includes \x1c-\x1f and \x85, excludes \ufeff).
const PY_SPACE = '\\t\\n\\x0b\\x0c\\r\\x1c-\\x1f \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000'
const PY_STRIP = new RegExp(`^[${PY_SPACE}]+|[${PY_SPACE}]+$`, 'g')

/**
 * Python `text.lower().strip()`. JS `toLowerCase()` applies the same Unicode mappings as Python's
 * `lower()` (final sigma included); only characters newer than Python's Unicode tables can differ.
 * @example preprocessPrompt('  CAFÉ ÜBER ΣΑΣ\n') // 'café über σας'
 */
export function preprocessPrompt(text: string): string {
  return text.toLowerCase().replace(PY_STRIP, '')
}

/** Options shared by prompt tokenization and encoding. */
export interface PromptOptions {
  /**
   * Instruction lines prepended to positive prompts. `null` or `[]` disables it.
   * Defaults to {@link DEFAULT_COMPLEX_HUMAN_INSTRUCTION}.
   */
  complexHumanInstruction?: readonly string[] | null
  /** Tokens kept per prompt (the DiT's caption length). Defaults to 300. */
  maxSequenceLength?: number
}

/** Check a prompt argument: a string or a non-empty array of strings. */
export function promptList(prompt: unknown, name = 'prompt'): string[] {
  if (typeof prompt === 'string') return [prompt]
  if (Array.isArray(prompt) && prompt.length > 0 && prompt.every((p) => typeof p === 'string')) return [...prompt]
  throw invalidArgument(name, 'a string or a non-empty array of strings', prompt)
}

/** transformers' `Gemma2Config.max_position_embeddings` default, for a config.json without the key. */
const GEMMA2_MAX_POSITIONS = 8192

/** `maxSequenceLength` (default 300), an integer ≥ 2; {@link promptTokenBudget} checks it against the text encoder. */
export function checkMaxSequenceLength(n: unknown): number {
  const v = n ?? DEFAULT_MAX_SEQUENCE_LENGTH
  if (!Number.isInteger(v) || (v as number) < 2) throw invalidArgument('maxSequenceLength', 'an integer ≥ 2', n)
  return v as number
}

/**
 * The tokens each prompt row holds, as diffusers pads it: `chiTokens + maxSequenceLength − 2` with a CHI prefix
 * (its token count includes `<bos>`), `maxSequenceLength` without (`chiTokens` 0). The row is one Gemma sequence,
 * so it must fit the text encoder's `max_position_embeddings`; a longer one would also need quadratic attention
 * memory (1e6 tokens: terabytes), so it is refused here, before any work.
 * @example promptTokenBudget(300, 208, 8192) // 506; promptTokenBudget(1e6, 208, 8192) throws SANA_INVALID_ARGUMENT
 */
export function promptTokenBudget(maxSequenceLength: number, chiTokens: number, maxPositions = GEMMA2_MAX_POSITIONS): number {
  const budget = chiTokens > 0 ? chiTokens + maxSequenceLength - 2 : maxSequenceLength
  if (budget > maxPositions) {
    const most = chiTokens > 0 ? maxPositions - chiTokens + 2 : maxPositions
    const why = chiTokens > 0 ? ` (max_position_embeddings ${maxPositions} minus the ${chiTokens - 2} it adds for the complex human instruction)` : ' (max_position_embeddings)'
    throw invalidArgument('maxSequenceLength', `an integer from 2 to ${most}, the text encoder's limit${why}`, maxSequenceLength)
  }
  return budget
}

/** The CHI lines to use, or null when disabled. */
export function chiLines(chi: PromptOptions['complexHumanInstruction']): readonly string[] | null {
  if (chi === undefined) return DEFAULT_COMPLEX_HUMAN_INSTRUCTION
  if (chi === null) return null
  if (!Array.isArray(chi) || !chi.every((l) => typeof l === 'string')) {
    throw invalidArgument('complexHumanInstruction', 'an array of strings or null', chi)
  }
  return chi.length > 0 ? chi : null
}

/**
 * diffusers' `select_index = [0] + list(range(-maxSequenceLength + 1, 0))` over a row of `length` tokens:
 * `<bos>` plus the last `maxSequenceLength − 1` positions.
 */
export function selectIndex(length: number, maxSequenceLength: number): number[] {
  const idx = [0]
  for (let i = length - maxSequenceLength + 1; i < length; i++) idx.push(i)
  return idx
}
