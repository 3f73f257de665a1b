// CUDA soft vote: one thread per pixel (grid-stride), the arithmetic of common/soft_vote.h
// (__fmul_rn/__fadd_rn, models in order, ties to the smallest class), so the labels equal the
// CPU backends' bit for bit. Compiled at run time by CuPy (NVRTC); kernel names record the
// input type (f16: IEEE half bits, f32) and the label type (u8, u16).
//
// The M inputs arrive as a device array of raw pointers with a device array of element strides
// (n, c, h per model; w is contiguous), so CuPy arrays and torch tensors are read where they
// are, without a stack or a float32 copy. Pointers, strides and weights are staged in shared
// memory once per block. With `uniform` set (every model has the same strides, the usual
// case) a pixel's offset is computed once for all models.
//
// The `soft_vote_v*` kernels are the fast path for aligned, uniformly strided inputs whose
// width is a multiple of P: each thread votes P neighbouring pixels with one 16-byte load per
// model and class (8 float16 or 4 float32 values), which keeps enough bytes in flight to
// approach the memory bandwidth; the arithmetic per pixel is the same as vote_pixel's.
#include "common/soft_vote.h"

namespace segkit {
namespace cuda {

template <typename T, typename L>
__device__ void soft_vote(const unsigned long long* __restrict__ inputs,
                          const index_t* __restrict__ strides, const float* __restrict__ weights,
                          int M, index_t n, int C, int H, int W, int uniform, L* __restrict__ labels,
                          float* __restrict__ probs, int* __restrict__ nan_flag) {
  extern __shared__ unsigned long long smem[];  // M pointers, 3M strides, M weights
  const T** s_ptr = reinterpret_cast<const T**>(smem);
  index_t* s_st = reinterpret_cast<index_t*>(smem + M);
  float* s_w = reinterpret_cast<float*>(smem + 4 * M);
  for (int i = threadIdx.x; i < M; i += blockDim.x) {
    s_ptr[i] = reinterpret_cast<const T*>(inputs[i]);
    s_st[3 * i] = strides[3 * i];
    s_st[3 * i + 1] = strides[3 * i + 1];
    s_st[3 * i + 2] = strides[3 * i + 2];
    s_w[i] = weights[i];
  }
  __syncthreads();

  const index_t plane = static_cast<index_t>(H) * W;
  const index_t total = n * plane;
  bool nan = false;
  for (index_t idx = blockIdx.x * static_cast<index_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<index_t>(gridDim.x) * blockDim.x) {
    const index_t i = idx / plane, p = idx - i * plane;
    const index_t r = p / W, col = p - r * W;
    float* pr = probs ? probs + i * C * plane + p : nullptr;
    int label;
    if (uniform) {
      const index_t off = i * s_st[0] + r * s_st[2] + col, cs = s_st[1];
      const auto value = [&](int m, int c) { return vote::load(s_ptr[m] + off + c * cs); };
      label = vote::vote_pixel(M, C, s_w, value, pr, plane, nan);
    } else {
      const auto value = [&](int m, int c) {
        const index_t* st = s_st + 3 * m;
        return vote::load(s_ptr[m] + i * st[0] + c * st[1] + r * st[2] + col);
      };
      label = vote::vote_pixel(M, C, s_w, value, pr, plane, nan);
    }
    labels[idx] = static_cast<L>(label);
  }
  if (nan) *nan_flag = 1;
}


// P consecutive values at `src` (aligned to P * sizeof(T)) as float32.
template <typename T, int P>
struct VecLoad;

template <>
struct VecLoad<vote::half_bits, 8> {
  static __device__ __forceinline__ void load(const vote::half_bits* src, float* v) {
    const uint4 u = *reinterpret_cast<const uint4*>(src);
    const unsigned int w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      v[2 * k] = vote::half_to_float(static_cast<vote::half_bits>(w[k] & 0xffffu));
      v[2 * k + 1] = vote::half_to_float(static_cast<vote::half_bits>(w[k] >> 16));
    }
  }
};

template <>
struct VecLoad<float, 4> {
  static __device__ __forceinline__ void load(const float* src, float* v) {
    const float4 f = *reinterpret_cast<const float4*>(src);
    v[0] = f.x;
    v[1] = f.y;
    v[2] = f.z;
    v[3] = f.w;
  }
};

// Uniform strides (n, c, h in elements, all multiples of P), W % P == 0, every input pointer
// aligned to P * sizeof(T); outputs C-contiguous.
template <typename T, typename L, int P>
__device__ void soft_vote_vec(const unsigned long long* __restrict__ inputs,
                              const index_t* __restrict__ strides,
                              const float* __restrict__ weights, int M, index_t n, int C, int H,
                              int W, L* __restrict__ labels, float* __restrict__ probs,
                              int* __restrict__ nan_flag) {
  extern __shared__ unsigned long long smem[];  // M pointers, M weights
  const T** s_ptr = reinterpret_cast<const T**>(smem);
  float* s_w = reinterpret_cast<float*>(smem + M);
  for (int i = threadIdx.x; i < M; i += blockDim.x) {
    s_ptr[i] = reinterpret_cast<const T*>(inputs[i]);
    s_w[i] = weights[i];
  }
  __syncthreads();
  const index_t sn = strides[0], cs = strides[1], sh = strides[2];
  const index_t plane = static_cast<index_t>(H) * W;
  const index_t groups = n * plane / P;
  bool nan = false;
  for (index_t g = blockIdx.x * static_cast<index_t>(blockDim.x) + threadIdx.x; g < groups;
       g += static_cast<index_t>(gridDim.x) * blockDim.x) {
    const index_t idx = g * P;
    const index_t i = idx / plane, p = idx - i * plane;
    const index_t r = p / W, col = p - r * W;
    const index_t off = i * sn + r * sh + col;
    float best[P];
    int lab[P];
    for (int c = 0; c < C; ++c) {
      float s[P];
#pragma unroll
      for (int k = 0; k < P; ++k) s[k] = 0.0f;
      for (int m = 0; m < M; ++m) {
        float v[P];
        VecLoad<T, P>::load(s_ptr[m] + off + c * cs, v);
        const float w = s_w[m];
#pragma unroll
        for (int k = 0; k < P; ++k) s[k] = vote::add_rn(s[k], vote::mul_rn(w, v[k]));
      }
      if (probs) {
        float* dst = probs + (i * C + c) * plane + p;
#pragma unroll
        for (int k = 0; k < P; k += 4)
          *reinterpret_cast<float4*>(dst + k) = make_float4(s[k], s[k + 1], s[k + 2], s[k + 3]);
      }
#pragma unroll
      for (int k = 0; k < P; ++k) {
        if (s[k] != s[k]) nan = true;
        if (c == 0 || s[k] > best[k]) {
          best[k] = s[k];
          lab[k] = c;
        }
      }
    }
#pragma unroll
    for (int k = 0; k < P; ++k) labels[idx + k] = static_cast<L>(lab[k]);
  }
  if (nan) *nan_flag = 1;
}
}  // namespace cuda
}  // namespace segkit

// One extern "C" entry per input and label type: (input pointers [M, device], strides [M*3,
// elements], weights [M, float32], M, n, C, H, W, uniform, labels (n, H, W), probs (n, C, H, W)
// or null, nan flag). Outputs are C-contiguous. Dynamic shared memory: 36 * M bytes (rounded).
#define SEGKIT_SOFT_VOTE_KERNEL(NAME, T, L)                                                      \
  extern "C" __global__ void NAME(const unsigned long long* inputs,                              \
                                  const segkit::index_t* strides, const float* weights, int M,   \
                                  segkit::index_t n, int C, int H, int W, int uniform, L* labels, \
                                  float* probs, int* nan_flag) {                                 \
    segkit::cuda::soft_vote<T, L>(inputs, strides, weights, M, n, C, H, W, uniform, labels,      \
                                  probs, nan_flag);                                              \
  }

SEGKIT_SOFT_VOTE_KERNEL(soft_vote_f16_u8, segkit::vote::half_bits, unsigned char)
SEGKIT_SOFT_VOTE_KERNEL(soft_vote_f16_u16, segkit::vote::half_bits, unsigned short)
SEGKIT_SOFT_VOTE_KERNEL(soft_vote_f32_u8, float, unsigned char)
SEGKIT_SOFT_VOTE_KERNEL(soft_vote_f32_u16, float, unsigned short)

// The vector path: same arguments without `uniform` (the strides array holds one model's
// n, c, h strides). Dynamic shared memory: 12 * M bytes (rounded up to 8).
#define SEGKIT_SOFT_VOTE_VEC_KERNEL(NAME, T, L, P)                                               \
  extern "C" __global__ void NAME(const unsigned long long* inputs,                              \
                                  const segkit::index_t* strides, const float* weights, int M,   \
                                  segkit::index_t n, int C, int H, int W, L* labels,             \
                                  float* probs, int* nan_flag) {                                 \
    segkit::cuda::soft_vote_vec<T, L, P>(inputs, strides, weights, M, n, C, H, W, labels, probs, \
                                         nan_flag);                                              \
  }

SEGKIT_SOFT_VOTE_VEC_KERNEL(soft_vote_v8_f16_u8, segkit::vote::half_bits, unsigned char, 8)
SEGKIT_SOFT_VOTE_VEC_KERNEL(soft_vote_v8_f16_u16, segkit::vote::half_bits, unsigned short, 8)
SEGKIT_SOFT_VOTE_VEC_KERNEL(soft_vote_v4_f32_u8, float, unsigned char, 4)
SEGKIT_SOFT_VOTE_VEC_KERNEL(soft_vote_v4_f32_u16, float, unsigned short, 4)
