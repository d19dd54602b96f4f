/**
 * Progress on stderr, TTY-aware: on a terminal one line rewritten in place; otherwise (a pipe, a log
 * file, CI) plain lines now and then, so logs stay readable.
 */
import type { DownloadProgress } from '../hub'

/** Where progress goes: a writable stream with an optional `isTTY` / `columns` (process.stderr). */
export interface ProgressStream {
  write(text: string): unknown
  isTTY?: boolean
  columns?: number
}

/** Non-TTY: at most one in-progress download line per file every this many ms. */
const LOG_INTERVAL_MS = 5000
const BAR_WIDTH = 24

/** `1.5 s`, `420 ms`. */
export function formatMs(ms: number): string {
  return ms >= 1000 ? `${(ms / 1000).toFixed(ms >= 10_000 ? 0 : 1)} s` : `${Math.round(ms)} ms`
}

/** `1.2 GB`, `340 MB`, `12 kB` (powers of 1000, like the Hub shows sizes). */
export function formatBytes(n: number): string {
  const units = ['B', 'kB', 'MB', 'GB', 'TB']
  let i = 0
  while (n >= 1000 && i < units.length - 1) {
    n /= 1000
    i++
  }
  return `${i === 0 ? n : n.toFixed(n >= 100 ? 0 : 1)} ${units[i]}`
}

function bar(fraction: number): string {
  const full = Math.round(Math.min(Math.max(fraction, 0), 1) * BAR_WIDTH)
  return '█'.repeat(full) + '░'.repeat(BAR_WIDTH - full)
}

/** One status line: rewritten in place on a TTY, appended as a new line otherwise. */
class StatusLine {
  #active = false
  constructor(readonly out: ProgressStream) {}

  get isTTY(): boolean {
    return this.out.isTTY === true
  }

  show(text: string): void {
    if (!this.isTTY) {
      this.out.write(text + '\n')
      return
    }
    const width = (this.out.columns || 80) - 1 // a pty may report 0 columns
    this.out.write('\r\x1b[2K' + (text.length > width ? text.slice(0, width - 1) + '…' : text))
    this.#active = true
  }

  /** End the in-place line (TTY) so what follows starts on a fresh line. */
  finish(): void {
    if (this.#active) this.out.write('\n')
    this.#active = false
  }
}

/**
 * The denoising steps: `step 3/20 [████░░…] 15%  410 ms/step  ETA 7 s`. Off a TTY: the first step, every
 * 10 %, and the last. Create it when the generation starts; the first step's time includes prompt encoding,
 * so the rate shown from step 2 on counts only the steps after it.
 * @example const p = new StepProgress(process.stderr); onStep: (e) => p.step(e.numSteps)
 */
export class StepProgress {
  readonly #line: StatusLine
  readonly #started = performance.now()
  #firstStepAt = 0
  #done = 0
  #lastDecile = -1

  constructor(out: ProgressStream) {
    this.#line = new StatusLine(out)
  }

  /** One more of `total` steps finished. */
  step(total: number): void {
    const now = performance.now()
    this.#done++
    if (this.#done === 1) this.#firstStepAt = now
    const decile = Math.floor((10 * this.#done) / total)
    const last = this.#done === total
    if (!this.#line.isTTY && this.#done !== 1 && !last && decile === this.#lastDecile) return
    this.#lastDecile = decile
    const perStep = this.#done === 1 ? now - this.#started : (now - this.#firstStepAt) / (this.#done - 1)
    const eta = last ? '' : `  ETA ${formatMs(perStep * (total - this.#done))}`
    const pct = Math.round((100 * this.#done) / total)
    this.#line.show(`step ${this.#done}/${total} [${bar(this.#done / total)}] ${pct}%  ${formatMs(perStep)}/step${eta}`)
  }

  finish(): void {
    this.#line.finish()
  }
}

/**
 * Downloads, fed by `resolveModel`'s `onProgress`: `[3/12] vae/diffusion_pytorch_model.safetensors
 * [██░░…] 120 MB / 625 MB`. Off a TTY: a line when a file starts, every 5 s while it downloads, and when it is complete.
 */
export class DownloadProgressView {
  readonly #line: StatusLine
  #lastLog = 0
  #lastFile = ''

  constructor(out: ProgressStream) {
    this.#line = new StatusLine(out)
  }

  /** Pass as `onProgress`. */
  readonly update = (p: DownloadProgress): void => {
    const complete = p.totalBytes > 0 && p.downloadedBytes >= p.totalBytes
    const now = performance.now()
    if (!this.#line.isTTY && !complete && p.file === this.#lastFile && now - this.#lastLog < LOG_INTERVAL_MS) return
    this.#lastLog = now
    this.#lastFile = p.file
    const size = p.totalBytes > 0 ? `${formatBytes(p.downloadedBytes)} / ${formatBytes(p.totalBytes)}` : formatBytes(p.downloadedBytes)
    const fraction = p.totalBytes > 0 ? p.downloadedBytes / p.totalBytes : 0
    this.#line.show(`[${p.fileIndex + 1}/${p.fileCount}] ${p.file} [${bar(fraction)}] ${size}`)
  }

  finish(): void {
    this.#line.finish()
  }
}
