/**
 * The request and response shapes: OpenAI's Images API (`POST /v1/images/generations`, `/v1/images/edits`,
 * `GET /v1/models`, the `{ error: { message, type, param, code } }` envelope) plus our fields, as JSON schemas
 * for Fastify's validator, and their translation into {@link JobParams}.
 *
 * OpenAI fields we accept and ignore (so existing clients work unchanged): `quality`, `style`, `user`,
 * `background`, `moderation`, `output_format`, `output_compression`, `partial_images`, `stream` is refused
 * (use `POST /api/generate` for progress). Any other unknown field is ignored too, as OpenAI's API does.
 */
import { SanaError } from '../errors'
import { SCHEDULER_NAMES } from '../cli/generate'
import type { JobParams } from './runner'
import { checkRequest, type RequestLimits } from './limits'

/** Our fields, shared by `/v1/images/generations` and `/api/generate` (snake_case, as OpenAI's). */
const SANA_FIELDS = {
  prompt: { type: 'string', minLength: 1, maxLength: 32_000 },
  negative_prompt: { type: 'string', maxLength: 32_000 },
  n: { type: 'integer' },
  size: { type: 'string', pattern: '^[0-9]{1,6}x[0-9]{1,6}$' },
  steps: { type: 'integer' },
  guidance_scale: { type: 'number', minimum: 0, maximum: 100 },
  seed: { type: 'integer', minimum: 0, maximum: Number.MAX_SAFE_INTEGER },
  scheduler: { type: 'string', enum: [...SCHEDULER_NAMES] },
  resolution_binning: { type: 'boolean' },
  model: { type: 'string', maxLength: 1000 },
} as const

/** Body of `POST /v1/images/generations`. */
export const generationsBody = {
  type: 'object',
  required: ['prompt'],
  properties: {
    ...SANA_FIELDS,
    response_format: { type: 'string', enum: ['b64_json', 'url'] },
    stream: { type: 'boolean', const: false },
  },
} as const

/** Body of `POST /api/generate` (server-sent events). */
export const streamBody = {
  type: 'object',
  required: ['prompt'],
  properties: { ...SANA_FIELDS, preview_every: { type: 'integer', minimum: 0, maximum: 1000 } },
} as const

/** The fields both JSON bodies share, as validated. */
export interface SanaBody {
  prompt: string
  negative_prompt?: string
  n?: number
  size?: string
  steps?: number
  guidance_scale?: number
  seed?: number
  scheduler?: JobParams['scheduler']
  resolution_binning?: boolean
  preview_every?: number
  response_format?: 'b64_json' | 'url'
}

/** `"1024x768"` → `{ width: 1024, height: 768 }` (OpenAI's `size` is width first). */
export function parseSize(size: string | undefined, native: number): { width: number; height: number } {
  if (size === undefined) return { width: native, height: native }
  const m = /^(\d+)x(\d+)$/.exec(size)
  if (!m) throw new SanaError('SANA_INVALID_ARGUMENT', `Expected size as "WIDTHxHEIGHT" (e.g. "1024x1024") but received ${JSON.stringify(size)}`)
  return { width: Number(m[1]), height: Number(m[2]) }
}

/** A validated body → job parameters, checked against the limits (throws `SANA_INVALID_ARGUMENT`). */
export function jobParams(body: SanaBody, limits: RequestLimits): JobParams {
  const params: JobParams = {
    prompt: body.prompt,
    negativePrompt: body.negative_prompt,
    ...parseSize(body.size, limits.nativeSize),
    n: body.n ?? 1,
    steps: body.steps,
    guidanceScale: body.guidance_scale,
    seed: body.seed,
    scheduler: body.scheduler,
    resolutionBinning: body.resolution_binning,
    previewEvery: body.preview_every,
  }
  checkRequest(params, limits)
  return params
}

/** HTTP status for each of our error codes (anything else is a 500). */
const STATUS: Partial<Record<string, number>> = {
  SANA_INVALID_ARGUMENT: 400,
  // The request is larger than this server's memory allows (the message says what fits): the client's to change.
  SANA_OUT_OF_MEMORY: 400,
  SANA_UNAUTHORIZED: 401,
  SANA_NOT_FOUND: 404,
  SANA_QUEUE_FULL: 429,
  SANA_TIMEOUT: 504,
  SANA_UNAVAILABLE: 503,
  ABORT_ERR: 499,
}

/** OpenAI's `error.type` for a status. */
function errorType(status: number): string {
  if (status === 401) return 'authentication_error'
  if (status === 429) return 'rate_limit_exceeded'
  return status < 500 ? 'invalid_request_error' : 'server_error'
}

/** OpenAI's error envelope. */
export interface ErrorBody {
  error: { message: string; type: string; param: string | null; code: string }
}

/** The status and OpenAI-shaped body for an error with our `code`. */
export function errorResponse(code: string, message: string, param: string | null = null): { status: number; body: ErrorBody } {
  const status = STATUS[code] ?? 500
  return { status, body: { error: { message, type: errorType(status), param, code } } }
}

/** A thrown error → status + body: a SanaError keeps its code; anything else is an internal error. */
export function errorFrom(e: unknown): { status: number; body: ErrorBody } {
  if (e instanceof SanaError) return errorResponse(e.code, e.message)
  return errorResponse('SANA_INTERNAL_ERROR', e instanceof Error ? e.message : String(e))
}
