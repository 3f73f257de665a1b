// CUDA confusion matrix: a shared-memory histogram per block (up to kSharedBins bins), merged
// into the global int64 counts with atomics; larger class counts go straight to global memory.
#include "common/confusion.h"

namespace segkit {
namespace cuda {

constexpr int kSharedBins = 4096;

template <typename T>
__device__ void confusion(const T* __restrict__ pred, const T* __restrict__ gt, index_t n,
                          int num_classes, int has_ignore, index_t ignore,
                          unsigned long long* counts, unsigned long long* bad) {
  __shared__ unsigned int hist[kSharedBins];
  const int bins = num_classes * num_classes;
  const bool shared = bins <= kSharedBins;
  if (shared)
    for (int b = threadIdx.x; b < bins; b += blockDim.x) hist[b] = 0;
  __syncthreads();
  unsigned int bad_gt = 0, bad_pred = 0;
  for (index_t i = blockIdx.x * static_cast<index_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<index_t>(gridDim.x) * blockDim.x) {
    const long long b = confusion::bin_of<T>(pred[i], gt[i], num_classes, has_ignore != 0, ignore);
    if (b >= 0) {
      if (shared)
        atomicAdd(&hist[b], 1u);
      else
        atomicAdd(&counts[b], 1ull);
    } else {
      bad_gt += b == -2;
      bad_pred += b == -3;
    }
  }
  if (bad_gt) atomicAdd(&bad[0], static_cast<unsigned long long>(bad_gt));
  if (bad_pred) atomicAdd(&bad[1], static_cast<unsigned long long>(bad_pred));
  __syncthreads();
  if (shared)
    for (int b = threadIdx.x; b < bins; b += blockDim.x)
      if (hist[b]) atomicAdd(&counts[b], static_cast<unsigned long long>(hist[b]));
}

}  // namespace cuda
}  // namespace segkit

// (pred, gt, n, num_classes, has_ignore, ignore, counts[int64 C*C], bad[int64 2])
#define SEGKIT_CONFUSION_KERNEL(NAME, T)                                                       \
  extern "C" __global__ void NAME(const T* pred, const T* gt, segkit::index_t n,              \
                                  int num_classes, int has_ignore, segkit::index_t ignore,    \
                                  unsigned long long* counts, unsigned long long* bad) {      \
    segkit::cuda::confusion<T>(pred, gt, n, num_classes, has_ignore, ignore, counts, bad);     \
  }

SEGKIT_CONFUSION_KERNEL(confusion_u8, unsigned char)
SEGKIT_CONFUSION_KERNEL(confusion_u16, unsigned short)
SEGKIT_CONFUSION_KERNEL(confusion_i32, int)
SEGKIT_CONFUSION_KERNEL(confusion_i64, long long)
