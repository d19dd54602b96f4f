// Deterministic stand-in inputs for the benchmark workers (their values do not matter for timing, only
// that they are finite and the same on every run).

/** N(0,1)-ish values (sum of uniforms; their values do not matter for timing, only that they are finite). */
export function randn(n, seed = 1) {
  let s = seed >>> 0
  const out = new Float32Array(n)
  for (let i = 0; i < n; i++) {
    let acc = 0
    for (let k = 0; k < 4; k++) {
      s = (Math.imul(s, 1664525) + 1013904223) >>> 0
      acc += s / 2 ** 32
    }
    out[i] = (acc - 2) * Math.sqrt(3)
  }
  return out
}
