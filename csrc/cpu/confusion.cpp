// CPU confusion matrix: OpenMP over pixel ranges, per-thread histograms. Neighbouring pixels
// usually fall in the same bin, so each thread spreads its increments over 4 copies of the
// histogram to break the store-to-load dependency chain, then sums them.
#include "cpu/confusion.h"

#include <cstring>
#include <vector>

#include "common/confusion.h"
#include "cpu/runtime.h"

namespace segkit {
namespace cpu {

template <typename T>
void confusion(const T* pred, const T* gt, index_t n, int num_classes, bool has_ignore,
               long long ignore, int64_t* counts, int64_t* bad) {
  const index_t bins = static_cast<index_t>(num_classes) * num_classes;
  const index_t copies = bins <= 4096 ? 4 : 1;
  constexpr index_t kChunk = 1 << 16;
  const index_t chunks = (n + kChunk - 1) / kChunk;
  int64_t bad_gt = 0, bad_pred = 0;
#pragma omp parallel num_threads(max_threads()) reduction(+ : bad_gt, bad_pred)
  {
    std::vector<uint32_t> local(static_cast<size_t>(bins * copies), 0);
    std::vector<int64_t> total(static_cast<size_t>(bins), 0);
    auto add = [&](index_t i, uint32_t* h) {
      const long long b = confusion::bin_of<T>(pred[i], gt[i], num_classes, has_ignore, ignore);
      if (b >= 0) {
        ++h[b];
      } else {
        bad_gt += b == -2;
        bad_pred += b == -3;
      }
    };
#pragma omp for schedule(static) nowait
    for (index_t k = 0; k < chunks; ++k) {  // chunks of 2^16 pixels keep uint32 counts safe
      const index_t begin = k * kChunk, end = begin + kChunk < n ? begin + kChunk : n;
      index_t i = begin;
      if (copies == 4) {
        uint32_t *h0 = local.data(), *h1 = h0 + bins, *h2 = h1 + bins, *h3 = h2 + bins;
        for (; i + 4 <= end; i += 4) {
          add(i, h0);
          add(i + 1, h1);
          add(i + 2, h2);
          add(i + 3, h3);
        }
      }
      for (; i < end; ++i) add(i, local.data());
      for (index_t c = 0; c < copies; ++c)
        for (index_t b = 0; b < bins; ++b) {
          total[b] += local[c * bins + b];
          local[c * bins + b] = 0;
        }
    }
#pragma omp critical
    for (index_t b = 0; b < bins; ++b) counts[b] += total[b];
  }
  bad[0] += bad_gt;
  bad[1] += bad_pred;
}

template void confusion<uint8_t>(const uint8_t*, const uint8_t*, index_t, int, bool, long long,
                                 int64_t*, int64_t*);
template void confusion<uint16_t>(const uint16_t*, const uint16_t*, index_t, int, bool, long long,
                                  int64_t*, int64_t*);
template void confusion<int32_t>(const int32_t*, const int32_t*, index_t, int, bool, long long,
                                 int64_t*, int64_t*);
template void confusion<int64_t>(const int64_t*, const int64_t*, index_t, int, bool, long long,
                                 int64_t*, int64_t*);

}  // namespace cpu
}  // namespace segkit
