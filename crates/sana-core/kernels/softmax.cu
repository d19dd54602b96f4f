// Row softmax with the scale and an additive per-batch bias folded in, scores [rows, S] → [rows, S]:
//   z[r, j] = x[r, j] · scale + bias[r / rows_per_batch, j]        (bias may be null: no mask)
//   out[r, j] = exp(z[r, j] − max_j z[r, :]) / Σ_j exp(z[r, j] − max_j z[r, :])
// diffusers: SDPA's softmax in Sana's cross-attention, scores [B, heads, N, S] with a [B, 1, 1, S]
// mask of 0 / −10000 per caption token (S = 300). Replaces candle's chain (affine, broadcast add, max,
// sub, exp, sum, div: ≈ 8 kernels over the f32 scores plus the dtype casts).
//
// One warp per row: the row (S·2 bytes in bf16) is read three times, from L1 after the first pass.
// Math f32, output in the storage type. A NaN in a row makes the whole row NaN (through the sum), as
// in PyTorch.
#include "common.cuh"

#define SM_THREADS 256

template <typename T>
__device__ void softmax_rows(const T* __restrict__ x, const float* __restrict__ bias, T* __restrict__ out,
                             int rows, int s, int rows_per_batch, float scale) {
  const int lane = threadIdx.x & 31, warps = blockDim.x >> 5;
  for (size_t r = (size_t)blockIdx.x * warps + (threadIdx.x >> 5); r < (size_t)rows; r += (size_t)gridDim.x * warps) {
    const T* xr = x + r * s;
    const float* br = bias ? bias + (r / rows_per_batch) * s : nullptr;
    // 1. Row max of z.
    float m = -INFINITY;
    for (int j = lane; j < s; j += 32) m = fmaxf(m, to_f32(xr[j]) * scale + (br ? br[j] : 0.f));
    m = warp_max(m);
    // 2. Σ exp(z − max).
    float sum = 0.f;
    for (int j = lane; j < s; j += 32) sum += expf(to_f32(xr[j]) * scale + (br ? br[j] : 0.f) - m);
    const float inv = 1.f / warp_sum(sum);
    // 3. Normalised probabilities.
    T* orow = out + r * s;
    for (int j = lane; j < s; j += 32) orow[j] = from_f32<T>(expf(to_f32(xr[j]) * scale + (br ? br[j] : 0.f) - m) * inv);
  }
}

#define SM_KERNELS(T, S)                                                                              \
  extern "C" __global__ void __launch_bounds__(SM_THREADS) softmax_rows_##S(                           \
      const T* x, const float* bias, T* out, int rows, int s, int rows_per_batch, float scale) {       \
    softmax_rows<T>(x, bias, out, rows, s, rows_per_batch, scale);                                    \
  }
SANA_FOR_EACH_DTYPE(SM_KERNELS)
