/**
 * Seeded noise that reproduces PyTorch's CPU generator: `torch.Generator().manual_seed(seed)` followed by
 * `torch.randn(shape, generator=g)` (float32), which is how diffusers' `randn_tensor` draws latents on CPU.
 * So a seed gives the same starting noise as diffusers with `generator=torch.Generator("cpu").manual_seed(seed)`.
 *
 * How: mt19937 seeded with the low 32 bits of the seed; float32 uniforms from the low 24 bits of each 32-bit draw;
 * Box–Muller over blocks of 16 (values j and j+8 of a block pair up), the last partial block recomputed from
 * 16 fresh uniforms — torch's `normal_fill` for contiguous float tensors of at least 16 elements.
 * torch's AVX2 path evaluates log/sin/cos in float32 (SLEEF), so values can differ from ours in the last bit.
 */
import { invalidArgument } from './errors'

const N = 624
const M = 397

/** The 32-bit Mersenne Twister (std::mt19937 / at::mt19937). */
class MT19937 {
  private readonly state = new Uint32Array(N)
  private index = N

  constructor(seed: number) {
    this.state[0] = seed >>> 0
    for (let i = 1; i < N; i++) {
      const prev = this.state[i - 1] ^ (this.state[i - 1] >>> 30)
      // 1812433253 * prev + i, modulo 2^32, without losing bits to float64.
      this.state[i] = (Math.imul(1812433253, prev) + i) >>> 0
    }
  }

  next(): number {
    if (this.index >= N) this.twist()
    let y = this.state[this.index++]
    y ^= y >>> 11
    y ^= (y << 7) & 0x9d2c5680
    y ^= (y << 15) & 0xefc60000
    y ^= y >>> 18
    return y >>> 0
  }

  private twist(): void {
    const s = this.state
    for (let i = 0; i < N; i++) {
      const y = (s[i] & 0x80000000) | (s[(i + 1) % N] & 0x7fffffff)
      s[i] = s[(i + M) % N] ^ (y >>> 1) ^ (y & 1 ? 0x9908b0df : 0)
    }
    this.index = 0
  }
}

/** A seeded generator with torch's CPU `randn` semantics. One generator serves a whole generation. */
export class TorchGenerator {
  private readonly mt: MT19937

  /** @param seed a non-negative integer (torch uses its low 32 bits for mt19937). */
  constructor(seed: number) {
    if (!Number.isSafeInteger(seed) || seed < 0) throw invalidArgument('seed', 'a non-negative integer', seed)
    this.mt = new MT19937(Number(BigInt(seed) & 0xffffffffn))
  }

  /** float32 uniform in [0, 1) from 24 random bits, as at::uniform_real_distribution<float>. */
  private uniform(): number {
    return (this.mt.next() & 0xffffff) / 16777216
  }

  /**
   * `torch.randn(n)` for n ≥ 16 (every latent is larger than that).
   * @example new TorchGenerator(42).randn(32 * 32 * 32)
   */
  randn(n: number): Float32Array {
    if (!Number.isInteger(n) || n < 16) throw invalidArgument('n', 'an integer ≥ 16', n)
    const data = new Float32Array(n)
    for (let i = 0; i < n; i++) data[i] = this.uniform()
    for (let i = 0; i + 16 <= n; i += 16) boxMuller16(data, i)
    if (n % 16 !== 0) {
      const start = n - 16
      for (let i = 0; i < 16; i++) data[start + i] = this.uniform()
      boxMuller16(data, start)
    }
    return data
  }
}

function boxMuller16(data: Float32Array, at: number): void {
  const f = Math.fround
  for (let j = 0; j < 8; j++) {
    const u1 = f(1 - data[at + j]) // (0, 1] for the log
    const u2 = data[at + j + 8]
    const radius = f(Math.sqrt(f(-2 * f(Math.log(u1)))))
    const theta = f(2 * Math.PI * u2)
    data[at + j] = f(radius * f(Math.cos(theta)))
    data[at + j + 8] = f(radius * f(Math.sin(theta)))
  }
}
