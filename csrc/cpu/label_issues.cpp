// CPU confident-learning kernels: OpenMP over fixed pixel chunks (each image cut into chunks
// of kChunk pixels), per-chunk partial results reduced in chunk order so that results do not
// depend on the thread count. Plain scalar loops; the compiler vectorises what it can.
#include "cpu/label_issues.h"

#include <cmath>
#include <limits>
#include <vector>

#include "common/label_issues.h"
#include "cpu/runtime.h"

namespace segkit {
namespace cpu {

namespace li = segkit::label_issues;

namespace {

constexpr index_t kChunk = 1 << 15;

// Calls f(L{}, P{}) with the label and probability types of `a`.
template <typename F>
void dispatch(const LabelIssuesArgs& a, F&& f) {
  auto with_probs = [&](auto ltag) {
    if (a.prob_half)
      f(ltag, li::half_bits{});
    else
      f(ltag, float{});
  };
  switch (a.label_type) {
    case 0: return with_probs(uint8_t{});
    case 1: return with_probs(uint16_t{});
    case 2: return with_probs(int32_t{});
    default: return with_probs(int64_t{});
  }
}

struct Chunk {
  index_t image, begin, end;
};

inline index_t chunks_per_image(index_t hw) { return hw == 0 ? 0 : (hw + kChunk - 1) / kChunk; }

inline Chunk chunk_of(index_t t, index_t per, index_t hw) {
  const index_t image = t / per, part = t % per;
  const index_t begin = part * kChunk, end = begin + kChunk < hw ? begin + kChunk : hw;
  return {image, begin, end};
}

// The smallest index c * hw + i (i in [begin, end)) of one image's planes `img` whose value
// is NaN or inf, or -1: the probs order, so the smallest over the chunks is the first.
template <typename P>
index_t first_nonfinite_in(const P* img, index_t hw, int C, index_t begin, index_t end) {
  for (int c = 0; c < C; ++c)
    for (index_t i = begin; i < end; ++i) {
      const float v = li::load(img + c * hw + i);
      if (!(v - v == 0.0f)) return c * hw + i;
    }
  return -1;
}

}  // namespace

void label_issues_sums(const LabelIssuesArgs& a, double* sums, int64_t* counts, int64_t* bad) {
  const int C = a.num_classes;
  const index_t per = chunks_per_image(a.hw), tasks = per * a.n;
  if (tasks == 0) return;
  std::vector<double> part_sums(static_cast<size_t>(tasks * C), 0.0);
  std::vector<int64_t> part_counts(static_cast<size_t>(tasks * C), 0);
  std::vector<int64_t> part_bad(static_cast<size_t>(tasks), 0);
  dispatch(a, [&](auto ltag, auto ptag) {
    using L = decltype(ltag);
    using P = decltype(ptag);
    const L* labels = static_cast<const L*>(a.labels);
    const P* probs = static_cast<const P*>(a.probs);
#pragma omp parallel for schedule(static) num_threads(max_threads())
    for (index_t t = 0; t < tasks; ++t) {
      const Chunk ch = chunk_of(t, per, a.hw);
      double* s = part_sums.data() + t * C;
      int64_t* k = part_counts.data() + t * C;
      const L* lab = labels + ch.image * a.hw;
      const P* img = probs + ch.image * C * a.hw;
      int64_t oob = 0;
      for (index_t i = ch.begin; i < ch.end; ++i) {
        const int c = li::class_of<L>(lab[i], C, a.has_ignore, a.ignore);
        if (c >= 0) {
          s[c] += static_cast<double>(li::load(img + c * a.hw + i));
          ++k[c];
        } else {
          oob += c == -2;
        }
      }
      part_bad[t] = oob;
    }
  });
  for (index_t t = 0; t < tasks; ++t) {
    for (int c = 0; c < C; ++c) {
      sums[c] += part_sums[t * C + c];
      counts[c] += part_counts[t * C + c];
    }
    bad[0] += part_bad[t];
  }
}

int64_t label_issues_scores(const LabelIssuesArgs& a, const double* thresholds_adj,
                            float* scores, uint8_t* candidates, int64_t* hist) {
  const int C = a.num_classes;
  const index_t per = chunks_per_image(a.hw), tasks = per * a.n;
  if (tasks == 0) return 0;
  int64_t counted = 0;
  dispatch(a, [&](auto ltag, auto ptag) {
    using L = decltype(ltag);
    using P = decltype(ptag);
    const L* labels = static_cast<const L*>(a.labels);
    const P* probs = static_cast<const P*>(a.probs);
#pragma omp parallel num_threads(max_threads()) reduction(+ : counted)
    {
      std::vector<uint32_t> local(hist ? li::kHistBins : 0, 0u);
#pragma omp for schedule(static)
      for (index_t t = 0; t < tasks; ++t) {
        const Chunk ch = chunk_of(t, per, a.hw);
        const L* lab = labels + ch.image * a.hw;
        const P* img = probs + ch.image * C * a.hw;
        float* sc = scores + ch.image * a.hw;
        uint8_t* cand = candidates + ch.image * a.hw;
        for (index_t i = ch.begin; i < ch.end; ++i) {
          const int c = li::class_of<L>(lab[i], C, a.has_ignore, a.ignore);
          counted += li::score_pixel<P>(img + i, a.hw, C, c, thresholds_adj, sc + i, cand + i);
          if (hist && c >= 0) ++local[li::order_key(sc[i]) >> (32 - li::kHistBits)];
        }
      }
      if (hist) {
#pragma omp critical
        for (int b = 0; b < li::kHistBins; ++b) hist[b] += local[b];
      }
    }
  });
  return counted;
}

void label_issues_fused(const LabelIssuesArgs& a, double* sums, int64_t* counts, int64_t* bad,
                        float* scores, uint8_t* candidates, int32_t* argmax, float* top,
                        int64_t* hist, int64_t* first_nonfinite) {
  const int C = a.num_classes;
  const index_t per = chunks_per_image(a.hw), tasks = per * a.n;
  if (first_nonfinite) *first_nonfinite = -1;
  if (tasks == 0) return;
  std::vector<double> part_sums(static_cast<size_t>(tasks * C), 0.0);
  std::vector<int64_t> part_counts(static_cast<size_t>(tasks * C), 0);
  std::vector<int64_t> part_bad(static_cast<size_t>(tasks), 0);
  std::vector<int64_t> part_nonfinite(static_cast<size_t>(tasks), -1);
  dispatch(a, [&](auto ltag, auto ptag) {
    using L = decltype(ltag);
    using P = decltype(ptag);
    const L* labels = static_cast<const L*>(a.labels);
    const P* probs = static_cast<const P*>(a.probs);
#pragma omp parallel num_threads(max_threads())
    {
      std::vector<uint32_t> local(hist ? li::kHistBins : 0, 0u);
      constexpr index_t kBlock = 512;  // pixels whose argmax is kept while the planes stream
      float best[kBlock];
      int32_t arg[kBlock];
// dynamic: on a shared machine a thread whose core is busy takes fewer chunks (the
      // results do not depend on which thread runs a chunk)
#pragma omp for schedule(dynamic, 1)
      for (index_t t = 0; t < tasks; ++t) {
        const Chunk ch = chunk_of(t, per, a.hw);
        double* s = part_sums.data() + t * C;
        int64_t* k = part_counts.data() + t * C;
        const index_t off = ch.image * a.hw;
        const L* lab = labels + off;
        const P* img = probs + ch.image * C * a.hw;
        int64_t oob = 0, nonfinite = -1;
        for (index_t b0 = ch.begin; b0 < ch.end; b0 += kBlock) {
          const index_t m = ch.end - b0 < kBlock ? ch.end - b0 : kBlock;
          // argmax, plane by plane (first of equal maxima: strict >, as li::argmax); every
          // probability is read here, so here is where NaN and inf are found (v - v is not 0)
          int32_t odd = 0;
          for (index_t j = 0; j < m; ++j) {
            const float v = li::load(img + b0 + j);
            best[j] = v;
            arg[j] = 0;
            odd |= static_cast<int32_t>(!(v - v == 0.0f));
          }
          for (int c = 1; c < C; ++c) {
            const P* pl = img + c * a.hw + b0;
            for (index_t j = 0; j < m; ++j) {  // a mask, not a branch: GCC vectorises it
              const float v = li::load(pl + j), b = best[j];
              const int32_t gt = -static_cast<int32_t>(v > b);
              best[j] = v > b ? v : b;
              arg[j] = (arg[j] & ~gt) | (c & gt);
              odd |= static_cast<int32_t>(!(v - v == 0.0f));
            }
          }
          if (odd && nonfinite < 0)  // rare: the first bad value of the chunk, in probs order
            nonfinite = first_nonfinite_in(img, a.hw, C, ch.begin, ch.end) +
                        ch.image * C * a.hw;
          for (index_t j = 0; j < m; ++j) {
            const index_t i = b0 + j;
            const int c = li::class_of<L>(lab[i], C, a.has_ignore, a.ignore);
            if (c >= 0) {
              const float v = li::load(img + c * a.hw + i);
              s[c] += static_cast<double>(v);
              ++k[c];
              scores[off + i] = v;
              candidates[off + i] = arg[j] != c;
              argmax[off + i] = arg[j];
              top[off + i] = best[j];
              if (hist) ++local[li::order_key(v) >> (32 - li::kHistBits)];
            } else {
              oob += c == -2;
              scores[off + i] = li::bits_to_float(0x7fc00000u);
              candidates[off + i] = 0;
              argmax[off + i] = 0;
              top[off + i] = 0.0f;
            }
          }
        }
        part_bad[t] = oob;
        part_nonfinite[t] = nonfinite;
      }
      if (hist) {
#pragma omp critical
        for (int b = 0; b < li::kHistBins; ++b) hist[b] += local[b];
      }
    }
  });
  for (index_t t = 0; t < tasks; ++t) {
    for (int c = 0; c < C; ++c) {
      sums[c] += part_sums[t * C + c];
      counts[c] += part_counts[t * C + c];
    }
    bad[0] += part_bad[t];
    const int64_t f = part_nonfinite[t];
    if (first_nonfinite && f >= 0 && (*first_nonfinite < 0 || f < *first_nonfinite))
      *first_nonfinite = f;
  }
}

int64_t label_issues_count(const uint8_t* candidates, const int32_t* argmax, const float* top,
                           index_t total, const double* thresholds_adj, int num_classes,
                           int64_t* first_bad_argmax) {
  int64_t counted = 0, bad = 0;
  const uint32_t classes = static_cast<uint32_t>(num_classes);
  // one pass, branch-free: an out-of-range argmax (negative ones wrap above) reads entry 0
  // and is not counted, only tallied
#pragma omp parallel for schedule(static) num_threads(max_threads()) \
    reduction(+ : counted, bad)
  for (index_t i = 0; i < total; ++i) {
    const uint32_t a = static_cast<uint32_t>(argmax[i]);
    const int64_t in_range = a < classes, cand = candidates[i] != 0;
    bad += cand & (1 - in_range);
    counted += cand & in_range &
               static_cast<int64_t>(static_cast<double>(top[i]) >= thresholds_adj[in_range ? a : 0]);
  }
  *first_bad_argmax = -1;
  if (bad)  // rare (a caller's bug): find the first, for the message
    for (index_t i = 0; i < total; ++i)
      if (candidates[i] && static_cast<uint32_t>(argmax[i]) >= classes) {
        *first_bad_argmax = i;
        break;
      }
  return counted;
}

void label_issues_softmin(const float* scores, index_t n, index_t hw, double temperature,
                          double* out) {
  const double t = temperature > 1e-6 ? temperature : 1e-6;
#pragma omp parallel for schedule(dynamic, 1) num_threads(max_threads())
  for (index_t img = 0; img < n; ++img) {
    const float* s = scores + img * hw;
    float lo = std::numeric_limits<float>::infinity();
    bool any = false;
    for (index_t i = 0; i < hw; ++i)
      if (!std::isnan(s[i])) {
        any = true;
        lo = s[i] < lo ? s[i] : lo;
      }
    if (!any) {
      out[img] = std::numeric_limits<double>::quiet_NaN();
      continue;
    }
    const double m = lo;
    double num = 0.0, den = 0.0;
    for (index_t i = 0; i < hw; ++i) {
      if (std::isnan(s[i])) continue;
      const double v = s[i];
      const double w = std::exp((m - v) / t);
      num += v * w;
      den += w;
    }
    out[img] = num / den;
  }
}

void label_issues_flags(const float* scores, const uint8_t* candidates, index_t total,
                        uint32_t cutoff_key, uint8_t* flags) {
#pragma omp parallel for schedule(static) num_threads(max_threads())
  for (index_t i = 0; i < total; ++i) flags[i] = li::flag_pixel(scores[i], candidates[i], cutoff_key);
}

}  // namespace cpu
}  // namespace segkit
