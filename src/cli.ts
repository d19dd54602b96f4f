#!/usr/bin/env node
/**
 * The `sana` command line: `sana generate | pull | info | serve | worker`, one file per command in `src/cli/`.
 * Exit codes: 0 success, 1 failure (`error [CODE]: message` on stderr; the stack too with SANA_DEBUG=1),
 * 2 usage error, 130 interrupted.
 */
import { fromNative, SanaError } from './errors'
import { commandHelp, packageVersion, parse, UsageError, type Command } from './cli/command'
import { generate } from './cli/generate'
import { info } from './cli/info'
import { pull } from './cli/pull'
import { serve } from './cli/serve'
import { worker } from './cli/worker'

const COMMANDS: readonly Command[] = [generate, pull, info, serve, worker]

function mainHelp(): string {
  const width = Math.max(...COMMANDS.map((c) => c.name.length)) + 2
  return [
    'Usage: sana <command> [options]',
    '',
    "Run NVlabs' Sana text-to-image models (diffusers checkpoints) on CPU or CUDA.",
    '',
    'Commands:',
    ...COMMANDS.map((c) => `  ${c.name.padEnd(width)}${c.summary}`),
    '',
    'Options:',
    '  -h, --help     Show this help; `sana <command> --help` for a command.',
    '  -v, --version  Print the version.',
    '',
  ].join('\n')
}

/** Run the command line; resolves to the exit code. */
async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv
  if (name === undefined) {
    process.stderr.write(mainHelp())
    return 2
  }
  if (name === '-h' || name === '--help' || name === 'help') {
    const target = COMMANDS.find((c) => c.name === rest[0])
    process.stdout.write(target ? commandHelp(target) : mainHelp())
    return 0
  }
  if (name === '-v' || name === '--version') {
    process.stdout.write(packageVersion() + '\n')
    return 0
  }
  const command = COMMANDS.find((c) => c.name === name)
  try {
    if (!command) {
      throw new UsageError(`unknown command ${JSON.stringify(name)} (commands: ${COMMANDS.map((c) => c.name).join(', ')})`)
    }
    const args = parse(command, rest)
    if (args.values.help) {
      process.stdout.write(commandHelp(command))
      return 0
    }
    return await command.run(args)
  } catch (e) {
    return report(e, command)
  }
}

/** Print an error the way the CLI promises (no stack for SanaError) and pick the exit code. */
function report(err: unknown, command: Command | undefined): number {
  // Native `[CODE] message` errors become their SanaError; anything else (a bug) SANA_INTERNAL_ERROR.
  const converted = fromNative(err)
  const e = converted instanceof SanaError ? converted : new SanaError('SANA_INTERNAL_ERROR', String(converted))
  process.stderr.write(`error [${e.code}]: ${e.message}\n`)
  // The stack is for bug reports, on request.
  if (process.env.SANA_DEBUG && e.stack) process.stderr.write(`${e.stack}\n`)
  if (e instanceof UsageError) {
    process.stderr.write(`Run "sana ${command ? command.name + ' ' : ''}--help" for usage.\n`)
    return 2
  }
  return e.code === 'ABORT_ERR' ? 130 : 1
}

main(process.argv.slice(2)).then(
  (code) => (process.exitCode = code),
  (e) => (process.exitCode = report(e, undefined)),
)
