/**
 * One generation job, as the server and the Redis worker both run it: plain-JSON parameters in (so a job can
 * cross Redis), PNG bytes and progress events out. The only code in `src/server/` that touches a pipeline.
 */
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
  /** img2img / inpainting (`/v1/images/edits`): the encoded input image, base64 (JSON, so it can cross Redis). */
  image?: string
  /** Inpainting: the encoded mask, base64 (white = repaint). */
  mask?: string
  /** How much of the schedule runs from the image, (0, 1]. Defaults to `generate`'s 0.6. */
  strength?: number
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
    // Only ever decoded bytes from the request body: a string here would be read as a file path.
    image: p.image === undefined ? undefined : Buffer.from(p.image, 'base64'),
    maskImage: p.mask === undefined ? undefined : Buffer.from(p.mask, 'base64'),
    strength: p.strength,
    signal: options.signal,
    ...(every > 0 ? { previewEvery: every, previewMaxSize: PREVIEW_MAX_SIZE } : {}),
    onStep: async (ev) => {
      options.onStep({ step: ev.step, numSteps: ev.numSteps, preview: ev.previewImage ? await ev.previewImage.encode('jpeg', { quality: 70 }) : undefined })
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
