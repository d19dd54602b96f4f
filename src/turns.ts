/**
 * One-at-a-time turns for calls on one pipeline (its scheduler holds per-generation state). A call waiting for
 * its turn can be aborted: it leaves the line at once, and the calls behind it still wait for the one running.
 */
import { throwIfAborted } from './errors'

export class Turns {
  #tail: Promise<void> = Promise.resolve()

  /**
   * Wait for the previous calls, then hold the turn until the returned `release` is called (always call it,
   * in a `finally`). Rejects with an `AbortError` as soon as `signal` fires while waiting.
   * @example const release = await turns.acquire(signal); try { … } finally { release() }
   */
  async acquire(signal?: AbortSignal): Promise<() => void> {
    throwIfAborted(signal)
    const previous = this.#tail
    let release!: () => void
    const mine = new Promise<void>((resolve) => (release = resolve))
    // The next caller waits for this one *and* everything before it, even if this one leaves early.
    this.#tail = previous.then(() => mine)
    if (!signal) {
      await previous
      return release
    }
    let onAbort!: () => void
    const aborted = new Promise<never>((_, reject) => {
      onAbort = () => reject(signal.reason)
      signal.addEventListener('abort', onAbort, { once: true })
    })
    try {
      await Promise.race([previous, aborted])
      return release
    } catch {
      release()
      throwIfAborted(signal)
      throw new Error('unreachable: the turn queue never rejects')
    } finally {
      signal.removeEventListener('abort', onAbort)
    }
  }
}
