/**
 * Images kept for `response_format: "url"`: in memory, under random ids (the URL is the capability, as OpenAI's
 * signed URLs are), for a limited time and count. Nothing in a request names a file.
 */
import { randomUUID } from 'node:crypto'

/** Options of {@link ResultStore}. */
export interface ResultStoreOptions {
  /** How long an image stays fetchable, ms. */
  ttlMs: number
  /** Most images kept; the oldest go first. */
  maxEntries: number
}

/** @example const id = store.put(png); store.get(id) // the PNG, until it expires */
export class ResultStore {
  private readonly entries = new Map<string, { png: Buffer; expires: number }>()

  constructor(private readonly options: ResultStoreOptions) {}

  /** Keep `png`; returns its id (a UUID). */
  put(png: Buffer): string {
    this.sweep()
    const id = randomUUID()
    this.entries.set(id, { png, expires: Date.now() + this.options.ttlMs })
    while (this.entries.size > this.options.maxEntries) this.entries.delete(this.entries.keys().next().value!)
    return id
  }

  /** The PNG under `id`, unless it expired or was never stored. */
  get(id: string): Buffer | undefined {
    const e = this.entries.get(id)
    if (!e || e.expires < Date.now()) return undefined
    return e.png
  }

  private sweep(): void {
    const now = Date.now()
    for (const [id, e] of this.entries) if (e.expires < now) this.entries.delete(id)
  }
}
