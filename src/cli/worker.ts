/**
 * `sana worker --queue redis://… --model …`: load one pipeline and run the jobs `sana serve --queue` enqueues.
 * Start one per GPU, on any machine that reaches Redis.
 */
import { basename } from 'node:path'
import { startWorker } from '../server/bullmq'
import { intOption, numberOption, UsageError, type Command } from './command'
import { loadOptions, loadWithProgress, MODEL_OPTIONS, modelOption } from './generate'
import { QUEUE_OPTION, queueOption, untilSignal } from './serve'

export const worker: Command = {
  name: 'worker',
  summary: 'Run the jobs of a `sana serve --queue` server (BullMQ on Redis), one per GPU.',
  usage: 'sana worker --queue redis://host:port [--model <repo-or-dir>] [options]',
  positionals: [],
  options: {
    ...QUEUE_OPTION,
    ...MODEL_OPTIONS,
    'memory-budget': { type: 'string', valueName: 'GiB', description: 'Memory one job may use; the server refuses larger requests. Defaults to half the free memory.' },
    'lock-duration': { type: 'string', valueName: 'ms', description: 'Job lock time: a dead worker\'s job moves to another after about this long. Defaults to 30000.' },
    'result-ttl': { type: 'string', valueName: 'seconds', description: 'How long finished PNGs stay in Redis. Defaults to 3600.' },
  },
  epilog: [
    'Example (one per GPU):',
    '  CUDA_VISIBLE_DEVICES=0 sana worker --queue redis://10.0.0.5:6379 --model Efficient-Large-Model/Sana_600M_1024px_diffusers',
    '',
    'Prints "started <job id>" and "completed <job id>" per job on stdout. Ctrl-C (SIGINT/SIGTERM) finishes the running job, then exits.',
  ].join('\n'),

  async run(args) {
    const url = queueOption(args)
    if (!url) throw new UsageError('missing --queue redis://host:port (the queue `sana serve --queue` uses)')
    const lockMs = intOption(args, 'lock-duration', 100)
    const budgetGiB = numberOption(args, 'memory-budget', 0)
    const model = modelOption(args)
    const pipe = await loadWithProgress(model, loadOptions(args))
    const w = await startWorker({
      url,
      pipe,
      modelId: basename(model),
      lockDurationMs: lockMs,
      // Look for stalled jobs as often as a lock lasts, so a dead worker's job moves within ~2 lock times.
      stalledIntervalMs: lockMs,
      resultTtlSeconds: intOption(args, 'result-ttl', 1),
      memoryBudget: budgetGiB === undefined ? undefined : budgetGiB * 2 ** 30,
      onStarted: (id) => process.stdout.write(`started ${id}\n`),
      onCompleted: (id) => process.stdout.write(`completed ${id}\n`),
    })
    process.stderr.write(`sana worker ${w.id}: waiting for jobs on ${url}\n`)
    await untilSignal()
    await w.close()
    pipe.dispose()
    return 0
  },
}
