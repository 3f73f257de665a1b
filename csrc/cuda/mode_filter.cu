// CUDA mode filter: one thread per output pixel (grid-stride), the tie rules from
// common/mode_filter.h. Compiled at run time by CuPy (NVRTC); kernel names record the label
// type. 3x3 windows gather their 9 values into registers first; other sizes read the image.
#include "common/mode_filter.h"

namespace segkit {
namespace cuda {

template <typename T>
__device__ void mode_filter(const T* __restrict__ in, T* __restrict__ out, index_t n, int H, int W,
                            index_t in_sn, index_t in_sh, int size, int anchor, int ties,
                            int has_ignore, index_t ignore_index) {
  const T ignore = static_cast<T>(ignore_index);
  const index_t total = n * H * W;
  for (index_t idx = blockIdx.x * static_cast<index_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<index_t>(gridDim.x) * blockDim.x) {
    const int c = static_cast<int>(idx % W);
    const index_t t = idx / W;
    const int r = static_cast<int>(t % H);
    const T* img = in + (t / H) * in_sn;
    const mode::Window w = mode::window_at(r, c, H, W, size, anchor);
    const T own = img[r * in_sh + c];
    if (size == 3 && w.r1 - w.r0 == 3 && w.c1 - w.c0 == 3) {
      T v[9];
#pragma unroll
      for (int i = 0; i < 9; ++i) v[i] = img[(w.r0 + i / 3) * in_sh + w.c0 + i % 3];
      const mode::ArrayWindow<T> get = {v};
      out[idx] = mode::mode_select<T, 9>(get, 9, own, ties, has_ignore != 0, ignore);
    } else {
      out[idx] = mode::mode_pixel<T>(img, in_sh, H, W, r, c, size, anchor, ties, has_ignore != 0,
                                     ignore);
    }
  }
}

}  // namespace cuda
}  // namespace segkit

// One extern "C" entry per label type: (input, output, n, H, W, input image stride, input row
// stride [elements], size, anchor, ties, has_ignore, ignore_index). Output is C-contiguous.
#define SEGKIT_MODE_FILTER_KERNEL(NAME, T)                                                       \
  extern "C" __global__ void NAME(const T* in, T* out, segkit::index_t n, int H, int W,          \
                                  segkit::index_t in_sn, segkit::index_t in_sh, int size,        \
                                  int anchor, int ties, int has_ignore, segkit::index_t ignore) { \
    segkit::cuda::mode_filter<T>(in, out, n, H, W, in_sn, in_sh, size, anchor, ties, has_ignore, \
                                 ignore);                                                        \
  }

SEGKIT_MODE_FILTER_KERNEL(mode_filter_u8, unsigned char)
SEGKIT_MODE_FILTER_KERNEL(mode_filter_u16, unsigned short)
SEGKIT_MODE_FILTER_KERNEL(mode_filter_i32, int)
SEGKIT_MODE_FILTER_KERNEL(mode_filter_i64, long long)
