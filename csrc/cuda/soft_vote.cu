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
