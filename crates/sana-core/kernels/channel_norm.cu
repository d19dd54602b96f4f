// RMSNorm over the channel dim of x [B, C, H, W] (DC-AE's RMSNorm2d: diffusers
// `RMSNorm(x.movedim(1, -1)).movedim(-1, 1)`):
//   out[b, c, p] = x[b, c, p] · rsqrt(mean_c x[b, :, p]² + eps) · weight[c] + bias[c]
// One thread per pixel p; neighbouring threads read neighbouring pixels of the same channel plane
// (coalesced). weight/bias are f32; math in f32.
#include "common.cuh"

template <typename T>
__device__ void rms_norm_channels(const T* __restrict__ x, const float* __restrict__ weight,
                                  const float* __restrict__ bias, T* __restrict__ out, int batch, int c,
                                  int hw, float eps) {
  const size_t n_px = (size_t)batch * hw;
  for (size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x; idx < n_px; idx += (size_t)gridDim.x * blockDim.x) {
    const size_t b = idx / hw, p = idx % hw;
    const T* xp = x + b * c * hw + p;
    float ss = 0.f;
    for (int ch = 0; ch < c; ch++) {
      const float v = to_f32(xp[(size_t)ch * hw]);
      ss += v * v;
    }
    const float inv = rsqrtf(ss / c + eps);
    T* op = out + b * c * hw + p;
    for (int ch = 0; ch < c; ch++) op[(size_t)ch * hw] = from_f32<T>(to_f32(xp[(size_t)ch * hw]) * inv * weight[ch] + bias[ch]);
  }
}

#define RMS_KERNELS(T, S)                                                                             \
  extern "C" __global__ void rms_norm_channels_##S(const T* x, const float* weight, const float* bias,\
                                                   T* out, int batch, int c, int hw, float eps) {    \
    rms_norm_channels<T>(x, weight, bias, out, batch, c, hw, eps);                                    \
  }
SANA_FOR_EACH_DTYPE(RMS_KERNELS)
