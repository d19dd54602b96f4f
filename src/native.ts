/**
 * Loads the native binding. The generated loader (`index.js` at the package root, written by
 * `napi build`) picks the `.node` file for this platform.
 */
/* eslint-disable @typescript-eslint/no-var-requires */
import type * as Binding from '../index'

let cached: typeof Binding | undefined

export function native(): typeof Binding {
  if (!cached) cached = require('../index.js') as typeof Binding
  return cached
}

export type { Binding }
