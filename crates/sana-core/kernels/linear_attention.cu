// ReLU linear attention per head, q/k/v token-major [B, N, heads·d] (a Linear's output layout):
//   kv[i][j] = Σₙ v[n,i]·relu(k[n,j]),  ksum[j] = Σₙ relu(k[n,j])                 (pass 1)
//   out[n,i] = Σⱼ kv[i][j]·relu(q[n,j]) / (Σⱼ ksum[j]·relu(q[n,j]) + eps)       (pass 2)
// diffusers' SanaLinearAttnProcessor2_0 computes the same sums as (v_pad @ kᵀ) @ q with v padded by a
// row of ones. Accumulation in f32; d ≤ LA_MAX_D; f16 outputs saturate to ±65504 (NaN kept).
//
// Pass 1 splits the N tokens of each (batch, head) into `splits` chunks, each block writing its partial
// sums to ws[bh][split][d·d + d]; pass 2 adds the splits in a fixed order (deterministic, no atomics).
#include "common.cuh"

#define LA_MAX_D 64
#define LA_THREADS 256
#define LA_TILE_N 32   // tokens per shared-memory tile in pass 1
#define LA_TILE_Q 64   // tokens per block in pass 2
// Accumulators per thread in pass 1: ceil((64·64 + 64) / 256).
#define LA_PER_THREAD 17

template <typename T>
__device__ void kv_partial(const T* __restrict__ k, const T* __restrict__ v, float* __restrict__ ws,
                           int n_tok, int channels, int heads, int d, int splits) {
  const int bh = blockIdx.x, split = blockIdx.y;
  const int b = bh / heads, h = bh % heads;
  const int chunk = (n_tok + splits - 1) / splits;
  const int n0 = split * chunk, n1 = min(n_tok, n0 + chunk);
  const int total = d * d + d;
  __shared__ float ks[LA_TILE_N * LA_MAX_D];
  __shared__ float vs[LA_TILE_N * LA_MAX_D];
  float acc[LA_PER_THREAD];
#pragma unroll
  for (int r = 0; r < LA_PER_THREAD; r++) acc[r] = 0.f;

  for (int t0 = n0; t0 < n1; t0 += LA_TILE_N) {
    const int tn = min(LA_TILE_N, n1 - t0);
    // 1. Tile of relu(k) and v for tokens t0..t0+tn of this head: [tn, d] each.
    for (int idx = threadIdx.x; idx < tn * d; idx += blockDim.x) {
      const int t = idx / d, j = idx % d;
      const size_t off = ((size_t)b * n_tok + t0 + t) * channels + (size_t)h * d + j;
      ks[idx] = fmaxf(to_f32(k[off]), 0.f);
      vs[idx] = to_f32(v[off]);
    }
    __syncthreads();
    // 2. Element e of [kv (d×d, row i = value dim) | ksum (d)] per thread, LA_THREADS apart.
#pragma unroll
    for (int r = 0; r < LA_PER_THREAD; r++) {
      const int e = threadIdx.x + r * LA_THREADS;
      if (e < d * d) {
        const int i = e / d, j = e % d;
        float a = 0.f;
        for (int t = 0; t < tn; t++) a += vs[t * d + i] * ks[t * d + j];
        acc[r] += a;
      } else if (e < total) {
        const int j = e - d * d;
        float a = 0.f;
        for (int t = 0; t < tn; t++) a += ks[t * d + j];
        acc[r] += a;
      }
    }
    __syncthreads();
  }
  float* out = ws + ((size_t)bh * splits + split) * total;
#pragma unroll
  for (int r = 0; r < LA_PER_THREAD; r++) {
    const int e = threadIdx.x + r * LA_THREADS;
    if (e < total) out[e] = acc[r];
  }
}

template <typename T>
__device__ void apply_kv(const T* __restrict__ q, const float* __restrict__ ws, T* __restrict__ out,
                         int n_tok, int channels, int heads, int d, int splits, float eps) {
  const int bh = blockIdx.x;
  const int b = bh / heads, h = bh % heads;
  const int t0 = blockIdx.y * LA_TILE_Q;
  const int tn = min(LA_TILE_Q, n_tok - t0);
  const int total = d * d + d;
  // kv with a padded row stride (d + 1): threads of a warp read one column j across rows i without
  // bank conflicts.
  __shared__ float kv[LA_MAX_D * (LA_MAX_D + 1)];
  __shared__ float ksum[LA_MAX_D];
  __shared__ float qs[LA_TILE_Q * LA_MAX_D];
  __shared__ float inv_den[LA_TILE_Q];

  // 1. kv and ksum of this (batch, head): the splits' partial sums, added in order.
  const float* part = ws + (size_t)bh * splits * total;
  for (int e = threadIdx.x; e < total; e += blockDim.x) {
    float s = 0.f;
    for (int sp = 0; sp < splits; sp++) s += part[(size_t)sp * total + e];
    if (e < d * d) kv[(e / d) * (d + 1) + e % d] = s;
    else ksum[e - d * d] = s;
  }
  // 2. relu(q) for this block's tokens: [tn, d].
  for (int idx = threadIdx.x; idx < tn * d; idx += blockDim.x) {
    const int t = idx / d, j = idx % d;
    qs[idx] = fmaxf(to_f32(q[((size_t)b * n_tok + t0 + t) * channels + (size_t)h * d + j]), 0.f);
  }
  __syncthreads();
  // 3. 1 / (ksum · q + eps) per token.
  for (int t = threadIdx.x; t < tn; t += blockDim.x) {
    float s = 0.f;
    for (int j = 0; j < d; j++) s += ksum[j] * qs[t * d + j];
    inv_den[t] = 1.f / (s + eps);
  }
  __syncthreads();
  // 4. out[t, i] = (kv[i] · q[t]) / den[t].
  for (int idx = threadIdx.x; idx < tn * d; idx += blockDim.x) {
    const int t = idx / d, i = idx % d;
    float s = 0.f;
    for (int j = 0; j < d; j++) s += kv[i * (d + 1) + j] * qs[t * d + j];
    out[((size_t)b * n_tok + t0 + t) * channels + (size_t)h * d + i] = from_f32_sat<T>(s * inv_den[t]);
  }
}

#define LA_KERNELS(T, S)                                                                              \
  extern "C" __global__ void __launch_bounds__(LA_THREADS) linear_attn_kv_##S(                         \
      const T* k, const T* v, float* ws, int n_tok, int channels, int heads, int d, int splits) {     \
    kv_partial<T>(k, v, ws, n_tok, channels, heads, d, splits);                                       \
  }                                                                                                   \
  extern "C" __global__ void __launch_bounds__(LA_THREADS) linear_attn_out_##S(                        \
      const T* q, const float* ws, T* out, int n_tok, int channels, int heads, int d, int splits,     \
      float eps) {                                                                                    \
    apply_kv<T>(q, ws, out, n_tok, channels, heads, d, splits, eps);                                  \
  }
SANA_FOR_EACH_DTYPE(LA_KERNELS)
