/**
 * One generation job, as the server and the Redis worker both run it: plain-JSON parameters in (so a job can
 * cross Redis), PNG bytes and progress events out. The only code in `src/server/` that touches a pipeline.
 */
import sharp from 'sharp'
import { schedulerFor, type SchedulerName } from '../cli/generate'
import type { SanaPipeline } from '../pipeline'
import type { SanaImage } from '../png'

/** What one job asks for: already validated (see `openai.ts`), JSON-serialisable. */
export interface JobParams {
  prompt: string
  negativePrompt?: string
  width: number
  height: number
  /** Images to make. */
  n: number
  steps?: number
  guidanceScale?: number
  seed?: number
  scheduler?: SchedulerName
  /** Snap to the nearest trained aspect ratio, then resize back. Defaults to true (as `generate`). */
  resolutionBinning?: boolean
  /** Send a preview every this many steps; 0 for none. Defaults to 0. */
  previewEvery?: number
}

/** Progress of a running job. `preview` is a small JPEG of the image forming, when one was made. */
export interface StepProgress {
  step: number
  numSteps: number
  preview?: Buffer
}

/** A finished job: one PNG per image, and what made it. */
export interface JobResult {
  images: Buffer[]
  seed: number
  stepTimesMs: number[]
  totalMs: number
}

/** Something that runs jobs: the local pipeline, or the Redis queue in front of remote workers. */
export interface JobRunner {
  run(params: JobParams, options: { signal: AbortSignal; onStep: (p: StepProgress) => void; jobId: string }): Promise<JobResult>
  /** Describes the model(s) served, for `GET /v1/models`. */
  readonly modelId: string
  /** Stop accepting work and free what the runner holds. */
  close(): Promise<void>
}

/** Previews are capped at this side (pixels): enough to watch the image form, cheap to send. */
const PREVIEW_MAX_SIZE = 256

/** A JPEG of a preview, encoded on libuv's pool (sharp), not on the event loop. */
async function previewJpeg(image: SanaImage): Promise<Buffer> {
  return sharp(Buffer.from(image.data.buffer, image.data.byteOffset, image.data.byteLength), {
    raw: { width: image.width, height: image.height, channels: 3 },
  })
    .jpeg({ quality: 70 })
    .toBuffer()
}

/**
 * The step event's preview when the pipeline offers one: `event.previewImage` (attached every `previewEvery`
 * steps), or the event's `preview()` method. Undefined on pipelines without previews.
 */
async function stepPreview(ev: unknown, step: number, every: number): Promise<SanaImage | undefined> {
  if (every <= 0 || (step + 1) % every !== 0) return undefined
  const e = ev as { previewImage?: SanaImage; preview?: (o: { maxSize: number }) => Promise<SanaImage> }
  if (e.previewImage) return e.previewImage
  return typeof e.preview === 'function' ? e.preview({ maxSize: PREVIEW_MAX_SIZE }) : undefined
}

/**
 * Run one job on `pipe`. The pipeline serialises calls itself; callers queue in front of it (see `queue.ts`).
 * @example const { images } = await runOnPipeline(pipe, { prompt: 'a fox', width: 256, height: 256, n: 1 }, { signal, onStep })
 */
export async function runOnPipeline(
  pipe: SanaPipeline,
  p: JobParams,
  options: { signal: AbortSignal; onStep: (p: StepProgress) => void },
): Promise<JobResult> {
  const every = p.previewEvery ?? 0
  const result = await pipe.generate({
    prompt: p.prompt,
    negativePrompt: p.negativePrompt,
    width: p.width,
    height: p.height,
    numImagesPerPrompt: p.n,
    numInferenceSteps: p.steps,
    guidanceScale: p.guidanceScale,
    seed: p.seed,
    useResolutionBinning: p.resolutionBinning,
    scheduler: p.scheduler ? schedulerFor(p.scheduler, pipe) : undefined,
    signal: options.signal,
    ...(every > 0 ? { previewEvery: every } : {}),
    onStep: async (ev) => {
      const image = await stepPreview(ev, ev.step, every)
      options.onStep({ step: ev.step, numSteps: ev.numSteps, preview: image ? await previewJpeg(image) : undefined })
    },
  })
  return {
    images: (result.images as SanaImage[]).map((image) => image.toPng()),
    seed: result.seed,
    stepTimesMs: result.stepTimesMs,
    totalMs: result.totalMs,
  }
}

/** Serve one loaded pipeline in this process. */
export function pipelineRunner(pipe: SanaPipeline, modelId: string): JobRunner {
  return {
    modelId,
    run: (params, options) => runOnPipeline(pipe, params, options),
    async close() {
      pipe.dispose()
    },
  }
}
