/**
 * `POST /v1/images/edits` (OpenAI's multipart form): img2img from `image`, inpainting with `mask` (white =
 * repaint), `strength` for how much of the schedule runs. Files are read into memory only (never a path), up to
 * the planner's upload limit, and must decode as PNG, JPEG or WebP before the job queues.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify'
import { SanaError, invalidArgument } from '../errors'
import { defaultSize, imageSize } from '../preprocess'
import type { ServerContext } from './app'
import { jobParams, type SanaBody } from './openai'
import { answerImages } from './routes'

/** The form's text fields and how each is read (multipart has strings only). */
const FIELDS: Record<string, 'string' | 'integer' | 'number' | 'boolean'> = {
  prompt: 'string', negative_prompt: 'string', n: 'integer', size: 'string', steps: 'integer', guidance_scale: 'number',
  seed: 'integer', scheduler: 'string', resolution_binning: 'boolean', response_format: 'string', strength: 'number', model: 'string',
}

function fieldValue(name: string, raw: string): unknown {
  const kind = FIELDS[name]
  if (kind === 'string') return raw
  if (kind === 'boolean') {
    if (raw !== 'true' && raw !== 'false') throw invalidArgument(name, 'true or false', raw)
    return raw === 'true'
  }
  const v = Number(raw)
  if (raw.trim() === '' || !Number.isFinite(v) || (kind === 'integer' && !/^\d+$/.test(raw.trim()))) {
    throw invalidArgument(name, kind === 'integer' ? 'an integer' : 'a number', raw)
  }
  return v
}

/** Read the form: files as Buffers (size-limited), known fields typed; unknown fields ignored, as OpenAI's API does. */
async function readForm(req: FastifyRequest, maxBytes: number) {
  const files: Record<string, Buffer> = {}
  const fields: Record<string, unknown> = {}
  for await (const part of req.parts({ limits: { fileSize: maxBytes } })) {
    if (part.type === 'file') {
      // OpenAI's clients send `image[]` for several images; one is used (Sana edits one image per call).
      const name = part.fieldname.replace(/\[\]$/, '')
      const data = await part.toBuffer() // throws FST_REQ_FILE_TOO_LARGE (413) past the limit
      if (name === 'image' || name === 'mask') files[name] ??= data
    } else if (part.fieldname in FIELDS) {
      fields[part.fieldname] = fieldValue(part.fieldname, String(part.value))
    }
  }
  return { files, fields }
}

export function registerEdits(app: FastifyInstance, ctx: ServerContext): void {
  app.post('/v1/images/edits', async (req, reply) => {
    if (!req.isMultipart()) throw new SanaError('SANA_INVALID_ARGUMENT', 'Expected a multipart/form-data body with an image file (OpenAI images.edit)')
    const limits = await ctx.limits()
    const { files, fields } = await readForm(req, limits.maxUploadBytes)
    if (!files.image) throw new SanaError('SANA_INVALID_ARGUMENT', 'Expected an image file in the "image" field but received none')
    if (typeof fields.prompt !== 'string' || fields.prompt === '') throw invalidArgument('prompt', 'a non-empty string', fields.prompt)
    const strength = fields.strength as number | undefined
    if (strength !== undefined && !(strength > 0 && strength <= 1)) throw invalidArgument('strength', 'a number in (0, 1]', strength)
    // Decode now, so a file that is not an image is a 400 here, not a failed job.
    const { width, height } = await imageSize('image', files.image)
    if (files.mask) await imageSize('mask', files.mask)
    const body = fields as unknown as SanaBody
    // No size: the image's, rounded down to the 32-pixel grid, generated exactly (no aspect-ratio bin).
    const own = defaultSize(width, height, {})
    const sized = body.size ? body : { ...body, size: `${own.width}x${own.height}`, resolution_binning: body.resolution_binning ?? false }
    const params = {
      ...jobParams(sized, limits),
      image: files.image.toString('base64'),
      mask: files.mask?.toString('base64'),
      strength,
      previewEvery: 0,
    }
    return answerImages(ctx, req, reply, params, body.response_format)
  })
}
