// Depthwise k×k convolution, stride 1, zero "same" padding (k odd), x [B, Cx, H, W] → [B, Cout, H, W]:
//   glu = 0: Cout = Cx,     out[c] = conv(x)[c] + bias[c]                 (nn.Conv2d(C, C, k, groups=C))
//   glu = 1: Cout = Cx / 2, out[c] = conv(x)[c] · silu(conv(x)[Cout + c])  (GLUMBConv: conv, then
//            value, gate = chunk(2, dim=1); value · silu(gate)) — the 2·C-channel conv output is never stored.
// One thread per output element; taps read through L1/L2. Weight [Cx, 1, k, k] and bias [Cx] share x's
// storage type; math in f32.
//
// depthwise_conv_silu_*: the same with the Mix-FFN's activation folded into the taps: every input value
// becomes silu(x + pre_bias[channel]) before it is convolved (pre_bias may be null), so the expand 1×1
// conv's bias add and the SiLU pass over the 2·C-channel tensor disappear. Zero padding applies to the
// activated tensor (as in PyTorch, where the conv's input is the SiLU output).
#include "common.cuh"

template <typename T, bool ACT>
__device__ __forceinline__ float conv_at(const T* __restrict__ plane, const T* __restrict__ w, int h, int w_,
                                         int ks, int y, int x, float pre_b) {
  const int r = ks / 2;
  float s = 0.f;
  for (int dy = 0; dy < ks; dy++) {
    const int iy = y + dy - r;
    if (iy < 0 || iy >= h) continue;
    for (int dx = 0; dx < ks; dx++) {
      const int ix = x + dx - r;
      if (ix < 0 || ix >= w_) continue;
      float v = to_f32(plane[(size_t)iy * w_ + ix]);
      if (ACT) {
        v += pre_b;
        v = v / (1.f + __expf(-v));
      }
      s += to_f32(w[dy * ks + dx]) * v;
    }
  }
  return s;
}

template <typename T, bool ACT>
__device__ void depthwise(const T* __restrict__ x, const T* __restrict__ weight, const T* __restrict__ bias,
                          const T* __restrict__ pre_bias, T* __restrict__ out, int batch, int c_out, int h, int w,
                          int ks, int glu) {
  const size_t hw = (size_t)h * w;
  const size_t n_out = (size_t)batch * c_out * hw;
  const int c_in = glu ? 2 * c_out : c_out;
  for (size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x; idx < n_out; idx += (size_t)gridDim.x * blockDim.x) {
    const int px = idx % w;
    const int py = (idx / w) % h;
    const int c = (idx / hw) % c_out;
    const size_t b = idx / (hw * c_out);
    const T* xb = x + b * c_in * hw;
    const float pre_v = (ACT && pre_bias) ? to_f32(pre_bias[c]) : 0.f;
    float val = conv_at<T, ACT>(xb + c * hw, weight + (size_t)c * ks * ks, h, w, ks, py, px, pre_v) + to_f32(bias[c]);
    if (glu) {
      const int g = c_out + c;
      const float pre_g = (ACT && pre_bias) ? to_f32(pre_bias[g]) : 0.f;
      const float gate = conv_at<T, ACT>(xb + g * hw, weight + (size_t)g * ks * ks, h, w, ks, py, px, pre_g) + to_f32(bias[g]);
      val *= gate / (1.f + __expf(-gate));
    }
    out[idx] = from_f32<T>(val);
  }
}

#define DW_KERNELS(T, S)                                                                              \
  extern "C" __global__ void depthwise_conv_##S(const T* x, const T* weight, const T* bias, T* out,  \
                                                int batch, int c_out, int h, int w, int ks, int glu) { \
    depthwise<T, false>(x, weight, bias, nullptr, out, batch, c_out, h, w, ks, glu);                  \
  }                                                                                                   \
  extern "C" __global__ void depthwise_conv_silu_##S(const T* x, const T* weight, const T* bias,      \
                                                     const T* pre_bias, T* out, int batch, int c_out,  \
                                                     int h, int w, int ks, int glu) {                  \
    depthwise<T, true>(x, weight, bias, pre_bias, out, batch, c_out, h, w, ks, glu);                  \
  }
SANA_FOR_EACH_DTYPE(DW_KERNELS)
