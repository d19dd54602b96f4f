/**
 * Loads the native binding, once per process: the CUDA binary when it is installed, loads and sees a
 * usable GPU, else the CPU binary (through `index.js` at the package root, the loader `napi build`
 * generates). Both binaries export the same API; the CUDA one runs `device: 'cpu'` exactly as the CPU one.
 *
 * Why the CUDA binary was not used (no driver, no GPU, a missing CUDA library, none installed) is kept:
 * a later `device: 'cuda'` request fails with SANA_DEVICE_UNAVAILABLE and that reason, while
 * `device: 'auto'` quietly runs on the CPU.
 *
 * `SANA_NODE_BINARY=cpu` skips the CUDA binary; `SANA_NODE_BINARY=cuda` requires it (a load failure is
 * an error instead of a fallback).
 */
/* eslint-disable @typescript-eslint/no-var-requires */
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import type * as Binding from '../index'

/** Which binary is in use and, for the CPU one, why not the CUDA one. */
export interface NativeBackend {
  kind: 'cpu' | 'cuda'
  /** The CUDA binary's reason for not being used; undefined when `kind` is `'cuda'`. */
  cudaUnavailable?: string
}

/** The CUDA variant: a local `npm run build:cuda` output, or the optional platform package. */
const CUDA_FILE = 'sana.linux-x64-gnu-cuda.node'
const CUDA_PACKAGE = 'sana-node-linux-x64-gnu-cuda'

let cached: { binding: typeof Binding; backend: NativeBackend } | undefined

export function native(): typeof Binding {
  return load().binding
}

/** Which native binary this process uses (loads it on first call). */
export function nativeBackend(): NativeBackend {
  return load().backend
}

/** A CPU GEMM microkernel; see {@link cpuGemmKernel}. */
export type CpuGemmKernel = 'amx-bf16' | 'avx512bf16' | 'avx512f' | 'avx2-fma' | 'scalar'

/**
 * The CPU GEMM microkernel this process uses, picked once from the CPU's features:
 * - `'amx-bf16'`: Intel AMX. Weights loaded with `dtype: 'bfloat16'` multiply in bf16 on AMX tiles (activations
 *   rounded to bf16 as they enter each product, f32 accumulation); float32 weights take `'avx512f'`.
 * - `'avx512bf16'`: bf16 weights multiply in bf16 through `vdpbf16ps` on a CPU with `avx512_bf16` but no AMX: by
 *   default on AMD (Zen 4 runs it at twice the f32 FMA rate), elsewhere with `SANA_CPU_BF16_DOT=1` (`=0`: off).
 * - `'avx512f'`, `'avx2-fma'`, `'scalar'`: float32 arithmetic for every weight dtype (half weights widened exactly).
 *
 * `SANA_CPU_GEMM=avx512|avx2|scalar` (set before the first model runs) caps the choice at that float32 kernel
 * (`avx2` and `scalar` cap the elementwise loops at that instruction set too; the results are the same bits).
 * @example if (cpuGemmKernel() === 'amx-bf16') console.log('bfloat16 weights multiply on AMX')
 */
export function cpuGemmKernel(): CpuGemmKernel {
  return native().cpuGemmKernel() as CpuGemmKernel
}

/** The reason the CUDA binary is not in use, if it is not (for error messages). */
export function cudaUnavailableReason(): string | undefined {
  return cached?.backend.cudaUnavailable
}

function load(): { binding: typeof Binding; backend: NativeBackend } {
  if (cached) return cached
  const choice = process.env.SANA_NODE_BINARY
  const cuda = choice === 'cpu' ? { reason: 'SANA_NODE_BINARY=cpu' } : loadCuda()
  if ('binding' in cuda) {
    cached = { binding: cuda.binding, backend: { kind: 'cuda' } }
  } else if (choice === 'cuda') {
    // Converted into a SanaError by callNative / callNativeSync, like any native error.
    throw new Error(`[SANA_DEVICE_UNAVAILABLE] SANA_NODE_BINARY=cuda, but the CUDA binary is unusable: ${cuda.reason}`)
  } else {
    cached = { binding: loadCpu(), backend: { kind: 'cpu', cudaUnavailable: cuda.reason } }
  }
  return cached
}

/** The CPU binding package, and the file `index.js` tries first (a local `npm run build` output). */
const CPU_FILE = 'sana.linux-x64-gnu.node'
const CPU_PACKAGE = 'sana-node-linux-x64-gnu'

/**
 * The CPU binding through napi's generated loader. Its own error blames an npm bug with optional
 * dependencies; say instead which file and package were looked for and how to get them.
 */
function loadCpu(): typeof Binding {
  try {
    return require('../index.js') as typeof Binding
  } catch (e) {
    const cause = e instanceof Error ? ((e.cause as Error | undefined)?.message ?? e.message) : String(e)
    const local = join(__dirname, '..', CPU_FILE)
    const supported = process.platform === 'linux' && process.arch === 'x64' && isGlibc()
    if (!supported) {
      throw new Error(
        `[SANA_NOT_FOUND] sana-node has no prebuilt binary for ${process.platform}-${process.arch}${process.platform === 'linux' && !isGlibc() ? ' (musl)' : ''}; ` +
          'build it from source in a clone of the repository (`npm run build`, needs Rust ≥ 1.85)',
      )
    }
    if (existsSync(local) || resolves(CPU_PACKAGE)) {
      // The binary is there but does not load (a wrong glibc, a damaged file): dlopen's message is the news.
      throw new Error(`[SANA_INTERNAL_ERROR] the native binary failed to load: ${cause}`)
    }
    throw new Error(
      `[SANA_NOT_FOUND] the native binary is not installed: looked for ${local} and the ${CPU_PACKAGE} package. ` +
        `npm installs ${CPU_PACKAGE} with sana-node unless optional dependencies are omitted (--omit=optional, --no-optional): ` +
        `run \`npm i ${CPU_PACKAGE}\`, or build from source with \`npm run build\` (needs Rust)`,
    )
  }
}

function resolves(pkg: string): boolean {
  try {
    require.resolve(pkg)
    return true
  } catch {
    return false
  }
}

/** The CUDA binding if it is installed, loads and sees a GPU; otherwise why not. */
function loadCuda(): { binding: typeof Binding } | { reason: string } {
  if (process.platform !== 'linux' || process.arch !== 'x64' || !isGlibc()) {
    return { reason: `no CUDA build for ${process.platform}-${process.arch}${process.platform === 'linux' && !isGlibc() ? ' (musl)' : ''}` }
  }
  const file = findCudaBinary()
  if (!file) return { reason: `no CUDA binary installed (${CUDA_FILE} or the ${CUDA_PACKAGE} package)` }
  let binding: typeof Binding
  try {
    // dlopen resolves libcuda.so.1 and the CUDA libraries here; a missing one throws, never crashes.
    binding = require(file) as typeof Binding
  } catch (e) {
    const why = explainLoadError(e)
    // dlopen names only the first missing library; without a driver that is the headline.
    const driver = existsSync('/proc/driver/nvidia/version') || why.startsWith('no NVIDIA driver')
    return { reason: driver ? why : `no NVIDIA driver (/proc/driver/nvidia/version missing); ${why}` }
  }
  try {
    binding.cudaDeviceCount()
  } catch (e) {
    return { reason: `no usable GPU: ${(e as Error).message.replace(/^\[[A-Z_]+\] (device unavailable: )?/, '')}` }
  }
  return { binding }
}

function findCudaBinary(): string | undefined {
  const local = join(__dirname, '..', CUDA_FILE)
  if (existsSync(local)) return local
  return resolves(CUDA_PACKAGE) ? require.resolve(CUDA_PACKAGE) : undefined
}

/** dlopen's message, in words: which library is missing and what provides it. */
export function explainLoadError(e: unknown): string {
  const msg = e instanceof Error ? e.message : String(e)
  const missing = /(lib[\w.+-]+\.so[\d.]*): cannot open shared object file/.exec(msg)?.[1]
  if (missing?.startsWith('libcuda.so')) return `no NVIDIA driver (${missing} not found)`
  if (missing) {
    return `CUDA library missing: ${missing} (install the CUDA 13 runtime libraries, e.g. scripts/setup-cuda.sh, and put them on LD_LIBRARY_PATH)`
  }
  return `the CUDA binary failed to load: ${msg}`
}

function isGlibc(): boolean {
  const report = process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined
  return Boolean(report?.header?.glibcVersionRuntime)
}

export type { Binding }
