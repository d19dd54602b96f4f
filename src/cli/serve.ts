/**
 * `sana serve`: an OpenAI-compatible image server with a web page, on one pipeline in this process, or in front
 * of a BullMQ queue on Redis (`--queue redis://…`) that `sana worker` processes drain.
 */
import { basename } from 'node:path'
import { createServer } from '../server/app'
import { redisRunner } from '../server/bullmq'
import { requestLimits } from '../server/limits'
import { pipelineRunner } from '../server/runner'
import { intOption, numberOption, stringOption, UsageError, type Command, type OptionSpec, type ParsedArgs } from './command'
import { loadOptions, loadWithProgress, MODEL_OPTIONS, modelOption } from './generate'

/** `--queue` (shared with `sana worker`). */
export const QUEUE_OPTION: Record<string, OptionSpec> = {
  queue: { type: 'string', valueName: 'redis://host:port', description: 'BullMQ queue on Redis shared by `sana serve` and `sana worker`. Defaults to none: run jobs in this process.' },
}

/** A `redis://` or `rediss://` URL, or a usage error. */
export function queueOption(args: ParsedArgs): string | undefined {
  const url = stringOption(args, 'queue')
  if (url !== undefined && !/^rediss?:\/\/[^\s]+$/.test(url)) throw new UsageError(`Expected a redis:// URL for --queue but received ${JSON.stringify(url)}`)
  return url
}

/** Resolve when SIGINT or SIGTERM arrives (then the caller shuts down gracefully). */
export function untilSignal(): Promise<string> {
  return new Promise((resolve) => {
    const on = (sig: string) => {
      process.off('SIGINT', on)
      process.off('SIGTERM', on)
      resolve(sig)
    }
    process.on('SIGINT', on)
    process.on('SIGTERM', on)
  })
}

export const serve: Command = {
  name: 'serve',
  summary: 'Serve an OpenAI-compatible images API, a progress stream and a web page.',
  usage: 'sana serve [--model <repo-or-dir>] [options]',
  positionals: [],
  options: {
    ...MODEL_OPTIONS,
    host: { type: 'string', valueName: 'addr', description: 'Address to listen on (0.0.0.0 for every interface). Defaults to 127.0.0.1.' },
    port: { type: 'string', valueName: 'N', description: 'TCP port (0 picks a free one). Defaults to 8080.' },
    'api-key': { type: 'string', valueName: 'key', description: 'Require "Authorization: Bearer <key>" on the API (also SANA_API_KEY). Defaults to none.' },
    cors: { type: 'string', valueName: 'origins', description: 'Comma-separated origins allowed by CORS. Defaults to none (CORS off).' },
    'max-queue': { type: 'string', valueName: 'N', description: 'Jobs waiting before the server answers 429. Defaults to 16.' },
    timeout: { type: 'string', valueName: 'seconds', description: 'Per-request time limit, queueing included. Defaults to 600.' },
    'memory-budget': { type: 'string', valueName: 'GiB', description: 'Memory one request may use; sets the limits on n, size and uploads. Defaults to half the free memory.' },
    ...QUEUE_OPTION,
  },
  epilog: [
    'Examples:',
    '  sana serve --model Efficient-Large-Model/Sana_600M_1024px_diffusers',
    '  sana serve --model ./Sana_600M_1024px_diffusers --host 0.0.0.0 --port 8080 --api-key "$KEY"',
    '  sana serve --queue redis://127.0.0.1:6379          # jobs go to `sana worker` processes',
    '',
    'Then open http://127.0.0.1:8080/ or POST /v1/images/generations (OpenAI Images API). Ctrl-C stops after the running job.',
  ].join('\n'),

  async run(args) {
    const host = stringOption(args, 'host') ?? '127.0.0.1'
    const port = intOption(args, 'port', 0) ?? 8080
    const budgetGiB = numberOption(args, 'memory-budget', 0)
    const queue = queueOption(args)
    const common = {
      apiKey: stringOption(args, 'api-key') ?? (process.env.SANA_API_KEY || undefined),
      corsOrigins: stringOption(args, 'cors')?.split(',').map((s) => s.trim()).filter(Boolean),
      maxWaiting: intOption(args, 'max-queue', 0),
      timeoutMs: (intOption(args, 'timeout', 1) ?? 600) * 1000,
      logger: { level: 'warn' },
    }
    let app
    if (queue) {
      // The workers load the model and publish their limits; this process holds no weights.
      // Up to --max-queue jobs go to BullMQ at once (the workers drain them); beyond that, 429.
      const runner = await redisRunner({ url: queue })
      app = await createServer({ ...common, runner, limits: () => runner.limits(), concurrency: common.maxWaiting ?? 16, maxWaiting: 0 })
    } else {
      const model = modelOption(args)
      const pipe = await loadWithProgress(model, loadOptions(args))
      const limits = requestLimits(pipe, budgetGiB === undefined ? undefined : budgetGiB * 2 ** 30)
      app = await createServer({ ...common, runner: pipelineRunner(pipe, basename(model)), limits: () => limits })
    }
    const address = await app.listen({ host, port })
    process.stderr.write(`sana serve: listening on ${address}${common.apiKey ? ' (API key required)' : ''}${queue ? ` (jobs on ${queue})` : ''}\n`)
    const sig = await untilSignal()
    process.stderr.write(`${sig}: finishing the running job, then stopping…\n`)
    await app.close()
    return 0
  },
}
