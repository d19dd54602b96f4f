// Shared by sana-core's kernels: storage types and conversions. Math is always f32; storage is f32,
// f16 or bf16 (one kernel instance per storage type, suffixed _f32/_f16/_bf16 like candle's kernels).
#pragma once
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <stdint.h>

__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T> __device__ __forceinline__ T from_f32(float x);
template <> __device__ __forceinline__ float from_f32<float>(float x) { return x; }
// Round to nearest like torch's .to(dtype): f16 overflow becomes ±Inf, which the pipeline reports.
template <> __device__ __forceinline__ __half from_f32<__half>(float x) { return __float2half(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float x) { return __float2bfloat16(x); }

// f16 store saturated to ±65504, as diffusers clips fp16 attention outputs; NaN stays NaN (fminf/fmaxf
// would turn it into a bound and hide the overflow the pipeline reports). Other types: plain store.
template <typename T> __device__ __forceinline__ T from_f32_sat(float x) { return from_f32<T>(x); }
template <> __device__ __forceinline__ __half from_f32_sat<__half>(float x) {
  return __float2half(x > 65504.f ? 65504.f : (x < -65504.f ? -65504.f : x));
}

// Instantiate `extern "C" NAME_f32/_f16/_bf16` wrappers around a template kernel body.
#define SANA_FOR_EACH_DTYPE(M) \
  M(float, f32)                \
  M(__half, f16)               \
  M(__nv_bfloat16, bf16)

// Sum / max over the 32 lanes of a warp; every lane gets the result. fmaxf drops a NaN operand, so a
// caller that must propagate NaN carries it through a sum instead (see softmax.cu).
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
