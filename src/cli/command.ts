/**
 * What every `sana` command shares: the {@link Command} shape, argument parsing on `node:util` `parseArgs`
 * (each option declared once, with the text `--help` prints), value checks that name the option, and
 * {@link UsageError} (exit code 2).
 */
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { SanaError, invalidArgument } from '../errors'

/** One command-line option: `parseArgs`' declaration plus what `--help` says about it. */
export interface OptionSpec {
  type: 'string' | 'boolean'
  short?: string
  /** Placeholder shown in help, e.g. `N` for `--steps N`. Defaults to `value`. */
  valueName?: string
  /** One line for `--help`, ending with the default where there is one. */
  description: string
  /** The option may be given several times; its value is then every one, in order. Defaults to false. */
  multiple?: boolean
}

/** A `sana` subcommand (one per file in `src/cli/`). */
export interface Command {
  name: string
  /** One line for `sana --help`. */
  summary: string
  /** The synopsis after `Usage:`, e.g. `sana pull <repo> [options]`. */
  usage: string
  /** Names of the positional arguments, for the error when they are wrong; empty when none are taken. */
  positionals: string[]
  options: Record<string, OptionSpec>
  /** Extra help text (examples), printed after the options. Defaults to none. */
  epilog?: string
  /** Run with the parsed arguments; resolves to the exit code. */
  run(args: ParsedArgs): Promise<number>
}

/** `parseArgs`' result: option values by name, then the positionals. */
export interface ParsedArgs {
  values: Record<string, string | string[] | boolean | undefined>
  positionals: string[]
}

/** A mistake on the command line: printed with the command's usage hint, exit code 2. */
export class UsageError extends SanaError {
  constructor(message: string) {
    super('SANA_INVALID_ARGUMENT', message)
  }
}

/** Every command takes `-h, --help`. */
export const HELP_OPTION: Record<string, OptionSpec> = {
  help: { type: 'boolean', short: 'h', description: 'Show this help.' },
}

/**
 * Parse `argv` against the command's options (strict: unknown options and missing values are usage errors).
 * @example parse(generate, ['a fox', '--steps', '2']) // { values: { steps: '2' }, positionals: ['a fox'] }
 */
export function parse(command: Command, argv: string[]): ParsedArgs {
  const options = Object.fromEntries(
    Object.entries({ ...command.options, ...HELP_OPTION }).map(([name, o]) => [
      name,
      { type: o.type, ...(o.short ? { short: o.short } : {}), ...(o.multiple ? { multiple: true } : {}) },
    ]),
  )
  try {
    const { values, positionals } = parseArgs({ args: argv, options, allowPositionals: true, strict: true })
    return { values: values as ParsedArgs['values'], positionals }
  } catch (e) {
    // parseArgs' errors already name the option, e.g. "Unknown option '--stpes'".
    if (String((e as { code?: unknown }).code).startsWith('ERR_PARSE_ARGS_')) throw new UsageError((e as Error).message)
    throw e
  }
}

/** The `--help` text of a command, built from its option declarations. */
export function commandHelp(command: Command): string {
  const rows = Object.entries({ ...command.options, ...HELP_OPTION }).map(([name, o]) => {
    const flag = `${o.short ? `-${o.short}, ` : '    '}--${name}${o.type === 'string' ? ` <${o.valueName ?? 'value'}>` : ''}`
    return [flag, o.description] as const
  })
  const width = Math.max(...rows.map(([flag]) => flag.length)) + 2
  const lines = [`Usage: ${command.usage}`, '', command.summary, '', 'Options:']
  lines.push(...rows.map(([flag, text]) => `  ${flag.padEnd(width)}${text}`))
  if (command.epilog) lines.push('', command.epilog)
  return lines.join('\n') + '\n'
}

/** Exactly `command.positionals.length` positionals, or a usage error naming what is missing or extra. */
export function positionalArgs(command: Command, args: ParsedArgs): string[] {
  const want = command.positionals
  const got = args.positionals
  if (got.length < want.length) throw new UsageError(`missing ${want[got.length]} (usage: ${command.usage})`)
  if (got.length > want.length) {
    const hint = want.length === 1 ? ` (quote the ${want[0]} if it has spaces)` : ''
    throw new UsageError(`unexpected argument ${JSON.stringify(got[want.length])}${hint}`)
  }
  return got
}

// ─── Option values ────────────────────────────────────────────────────────────────────────────────

function usage(e: SanaError): UsageError {
  return new UsageError(e.message)
}

/** A string option's value, or undefined when not given. */
export function stringOption(args: ParsedArgs, name: string): string | undefined {
  const v = args.values[name]
  return typeof v === 'string' ? v : undefined
}

/** Every value of a repeatable (`multiple`) string option, in order; empty when not given. */
export function stringsOption(args: ParsedArgs, name: string): string[] {
  const v = args.values[name]
  return Array.isArray(v) ? v : typeof v === 'string' ? [v] : []
}

/**
 * An integer option (decimal digits only: `--steps 2.5` and `--steps 1e3` are refused) of at least `min`.
 * @example intOption(args, 'steps', 1) // 20 for `--steps 20`; UsageError 'Expected an integer ≥ 1 for --steps but received "x"'
 */
export function intOption(args: ParsedArgs, name: string, min: number): number | undefined {
  const v = stringOption(args, name)
  if (v === undefined) return undefined
  const n = Number(v)
  if (!/^\d+$/.test(v.trim()) || !Number.isSafeInteger(n) || n < min) throw usage(invalidArgument(`--${name}`, `an integer ≥ ${min}`, v))
  return n
}

/** A finite number option of at least `min`. */
export function numberOption(args: ParsedArgs, name: string, min: number): number | undefined {
  const v = stringOption(args, name)
  if (v === undefined) return undefined
  const n = Number(v)
  if (v.trim() === '' || !Number.isFinite(n) || n < min) throw usage(invalidArgument(`--${name}`, `a number ≥ ${min}`, v))
  return n
}

/** A string option restricted to `choices` (a `pattern` admits more, e.g. `cuda:N`). */
export function choiceOption<T extends string>(args: ParsedArgs, name: string, choices: readonly T[], pattern?: RegExp): T | undefined {
  const v = stringOption(args, name)
  if (v === undefined) return undefined
  if (!choices.includes(v as T) && !pattern?.test(v)) throw usage(invalidArgument(`--${name}`, `one of ${choices.join(', ')}`, v))
  return v as T
}

/** sana-node's version, from the package.json beside `dist/`. */
export function packageVersion(): string {
  const pkg = JSON.parse(readFileSync(join(__dirname, '..', '..', 'package.json'), 'utf8')) as { version: string }
  return pkg.version
}

/**
 * Run `fn` with an AbortSignal that the first Ctrl-C aborts (the command then fails with `ABORT_ERR` once the
 * current step or chunk is done); a second Ctrl-C quits at once.
 */
export async function withInterrupt<T>(fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const controller = new AbortController()
  const onSigint = () => {
    if (controller.signal.aborted) process.exit(130)
    process.stderr.write('\naborting after the current step… (Ctrl-C again to quit now)\n')
    controller.abort()
  }
  process.on('SIGINT', onSigint)
  try {
    return await fn(controller.signal)
  } finally {
    process.off('SIGINT', onSigint)
  }
}
