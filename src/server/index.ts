/**
 * `sana-node/server`: the pieces of `sana serve` for embedding in an app of your own (kept out of the main entry
 * so `import 'sana-node'` does not load Fastify or BullMQ).
 * @example
 * import { SanaPipeline } from 'sana-node'
 * import { createServer, pipelineRunner, requestLimits } from 'sana-node/server'
 * const pipe = await SanaPipeline.load('Efficient-Large-Model/Sana_600M_1024px_diffusers')
 * const app = await createServer({ runner: pipelineRunner(pipe, 'sana-600m'), limits: () => requestLimits(pipe) })
 * await app.listen({ host: '127.0.0.1', port: 8080 })
 */
export { createServer, type ServerOptions } from './app'
export { redisRunner, startWorker, QUEUE_NAME, type RedisRunner, type RedisRunnerOptions, type WorkerOptions, type SanaWorker } from './bullmq'
export { requestLimits, checkRequest, type RequestLimits } from './limits'
export { pipelineRunner, runOnPipeline, type JobParams, type JobResult, type JobRunner, type StepProgress } from './runner'
export { JobQueue, type Job, type JobEvent, type JobQueueOptions } from './queue'
