// CUDA confident-learning kernels (cleanlab.segmentation's defaults), over raw device
// pointers. Kernel names record the probability type (f16: IEEE half bits, f32) and the label
// type (u8, u16, i32, i64). Grid-stride loops; per-block partial sums in shared memory are
// merged into global memory with atomics (so float64 sums may differ from the CPU's in the
// last bits: the order of additions is not fixed on a GPU).
#include "common/label_issues.h"

namespace segkit {
namespace cuda {

namespace li = segkit::label_issues;

constexpr int kSharedClasses = 256;  // classes summed in shared memory; more go to global

template <typename P, typename L>
__device__ void label_issues_sums(const L* __restrict__ labels, const P* __restrict__ probs,
                                  index_t n, index_t hw, int num_classes, int has_ignore,
                                  index_t ignore, double* sums, unsigned long long* counts,
                                  unsigned long long* bad) {
  __shared__ double s_sum[kSharedClasses];
  __shared__ unsigned long long s_cnt[kSharedClasses];
  const bool shared = num_classes <= kSharedClasses;
  if (shared)
    for (int c = threadIdx.x; c < num_classes; c += blockDim.x) {
      s_sum[c] = 0.0;
      s_cnt[c] = 0ull;
    }
  __syncthreads();
  unsigned long long oob = 0;
  const index_t total = n * hw;
  for (index_t j = blockIdx.x * static_cast<index_t>(blockDim.x) + threadIdx.x; j < total;
       j += static_cast<index_t>(gridDim.x) * blockDim.x) {
    const index_t img = j / hw, i = j - img * hw;
    const int c = li::class_of<L>(labels[j], num_classes, has_ignore != 0, ignore);
    if (c >= 0) {
      const double v = static_cast<double>(li::load(probs + (img * num_classes + c) * hw + i));
      if (shared) {
        atomicAdd(&s_sum[c], v);
        atomicAdd(&s_cnt[c], 1ull);
      } else {
        atomicAdd(&sums[c], v);
        atomicAdd(&counts[c], 1ull);
      }
    } else {
      oob += c == -2;
    }
  }
  if (oob) atomicAdd(&bad[0], oob);
  __syncthreads();
  if (shared)
    for (int c = threadIdx.x; c < num_classes; c += blockDim.x)
      if (s_cnt[c]) {
        atomicAdd(&sums[c], s_sum[c]);
        atomicAdd(&counts[c], s_cnt[c]);
      }
}

template <typename P, typename L>
__device__ void label_issues_scores(const L* __restrict__ labels, const P* __restrict__ probs,
                                    index_t n, index_t hw, int num_classes, int has_ignore,
                                    index_t ignore, const double* __restrict__ thresholds_adj,
                                    float* scores, unsigned char* candidates,
                                    unsigned long long* hist, int want_hist,
                                    unsigned long long* counted) {
  unsigned long long local = 0;
  const index_t total = n * hw;
  for (index_t j = blockIdx.x * static_cast<index_t>(blockDim.x) + threadIdx.x; j < total;
       j += static_cast<index_t>(gridDim.x) * blockDim.x) {
    const index_t img = j / hw, i = j - img * hw;
    const int c = li::class_of<L>(labels[j], num_classes, has_ignore != 0, ignore);
    local += li::score_pixel<P>(probs + img * num_classes * hw + i, hw, num_classes, c,
                                thresholds_adj, scores + j, candidates + j);
    if (want_hist && c >= 0)
      atomicAdd(&hist[li::order_key(scores[j]) >> (32 - li::kHistBits)], 1ull);
  }
  if (local) atomicAdd(&counted[0], local);
}

// One thread per image (grid-stride over images): the per-image softmin of its scores.
__device__ void label_issues_softmin(const float* __restrict__ scores, index_t n, index_t hw,
                                     double temperature, double* out) {
  const double t = temperature > 1e-6 ? temperature : 1e-6;
  for (index_t img = blockIdx.x * static_cast<index_t>(blockDim.x) + threadIdx.x; img < n;
       img += static_cast<index_t>(gridDim.x) * blockDim.x) {
    const float* s = scores + img * hw;
    float lo = li::bits_to_float(0x7f800000u);
    bool any = false;
    for (index_t i = 0; i < hw; ++i)
      if (s[i] == s[i]) {
        any = true;
        lo = s[i] < lo ? s[i] : lo;
      }
    if (!any) {
      out[img] = static_cast<double>(li::bits_to_float(0x7fc00000u));
      continue;
    }
    const double m = lo;
    double num = 0.0, den = 0.0;
    for (index_t i = 0; i < hw; ++i) {
      if (!(s[i] == s[i])) continue;
      const double v = s[i];
      const double w = exp((m - v) / t);
      num += v * w;
      den += w;
    }
    out[img] = num / den;
  }
}

__device__ void label_issues_flags(const float* __restrict__ scores,
                                   const unsigned char* __restrict__ candidates, index_t total,
                                   unsigned int cutoff_key, unsigned char* flags) {
  for (index_t i = blockIdx.x * static_cast<index_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<index_t>(gridDim.x) * blockDim.x)
    flags[i] = li::flag_pixel(scores[i], candidates[i], cutoff_key);
}

}  // namespace cuda
}  // namespace segkit

// (labels, probs, n, hw, num_classes, has_ignore, ignore, sums[f64 C], counts[i64 C], bad[i64 1])
#define SEGKIT_LI_SUMS_KERNEL(NAME, P, L)                                                      \
  extern "C" __global__ void NAME(const L* labels, const P* probs, segkit::index_t n,         \
                                  segkit::index_t hw, int num_classes, int has_ignore,        \
                                  segkit::index_t ignore, double* sums,                       \
                                  unsigned long long* counts, unsigned long long* bad) {      \
    segkit::cuda::label_issues_sums<P, L>(labels, probs, n, hw, num_classes, has_ignore,       \
                                          ignore, sums, counts, bad);                          \
  }

// (labels, probs, n, hw, num_classes, has_ignore, ignore, thresholds_adj[f64 C],
//  scores[f32 N*HW], candidates[u8 N*HW], hist[i64 65536], want_hist, counted[i64 1])
#define SEGKIT_LI_SCORES_KERNEL(NAME, P, L)                                                    \
  extern "C" __global__ void NAME(const L* labels, const P* probs, segkit::index_t n,         \
                                  segkit::index_t hw, int num_classes, int has_ignore,        \
                                  segkit::index_t ignore, const double* thresholds_adj,       \
                                  float* scores, unsigned char* candidates,                   \
                                  unsigned long long* hist, int want_hist,                    \
                                  unsigned long long* counted) {                              \
    segkit::cuda::label_issues_scores<P, L>(labels, probs, n, hw, num_classes, has_ignore,     \
                                            ignore, thresholds_adj, scores, candidates, hist,  \
                                            want_hist, counted);                               \
  }

#define SEGKIT_LI_KERNELS(P, PS)                                        \
  SEGKIT_LI_SUMS_KERNEL(label_issues_sums_##PS##_u8, P, unsigned char)     \
  SEGKIT_LI_SUMS_KERNEL(label_issues_sums_##PS##_u16, P, unsigned short)   \
  SEGKIT_LI_SUMS_KERNEL(label_issues_sums_##PS##_i32, P, int)              \
  SEGKIT_LI_SUMS_KERNEL(label_issues_sums_##PS##_i64, P, long long)        \
  SEGKIT_LI_SCORES_KERNEL(label_issues_scores_##PS##_u8, P, unsigned char)   \
  SEGKIT_LI_SCORES_KERNEL(label_issues_scores_##PS##_u16, P, unsigned short) \
  SEGKIT_LI_SCORES_KERNEL(label_issues_scores_##PS##_i32, P, int)            \
  SEGKIT_LI_SCORES_KERNEL(label_issues_scores_##PS##_i64, P, long long)

SEGKIT_LI_KERNELS(segkit::label_issues::half_bits, f16)
SEGKIT_LI_KERNELS(float, f32)

// (scores[f32 N*HW], n, hw, temperature, out[f64 N])
extern "C" __global__ void label_issues_softmin_f32(const float* scores, segkit::index_t n,
                                                    segkit::index_t hw, double temperature,
                                                    double* out) {
  segkit::cuda::label_issues_softmin(scores, n, hw, temperature, out);
}

// (scores[f32 N], candidates[u8 N], total, cutoff_key, flags[u8 N])
extern "C" __global__ void label_issues_flags_f32(const float* scores,
                                                  const unsigned char* candidates,
                                                  segkit::index_t total, unsigned int cutoff_key,
                                                  unsigned char* flags) {
  segkit::cuda::label_issues_flags(scores, candidates, total, cutoff_key, flags);
}
