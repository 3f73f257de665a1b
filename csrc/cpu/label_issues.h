// CPU confident-learning kernels (label issues, label quality), called by bindings.cpp.
#pragma once
#include <cstdint>

#include "common/macros.h"

namespace segkit {
namespace cpu {

// Raw views of one batch: labels (N, H, W) and probabilities (N, C, H, W), both C-contiguous.
// label_type: 0 uint8, 1 uint16, 2 int32, 3 int64; prob_half: float16 (else float32).
struct LabelIssuesArgs {
  const void* labels = nullptr;
  const void* probs = nullptr;
  int label_type = 0;
  bool prob_half = false;
  index_t n = 0, hw = 0;
  int num_classes = 0;
  bool has_ignore = false;
  long long ignore = 0;
};

// Adds, per class c, the sum of p_c over pixels labelled c (sums, double) and their number
// (counts); bad[0] += pixels whose label is outside 0..C-1 (ignored pixels excepted).
// Deterministic: fixed chunks reduced in order.
void label_issues_sums(const LabelIssuesArgs& a, double* sums, int64_t* counts, int64_t* bad);

// Per pixel: self-confidence (NaN for ignored / out-of-range labels) into scores (N*H*W
// float32), candidate (argmax != label) into candidates (uint8); returns the number of
// counted issues (candidates whose top probability reaches thresholds_adj of their argmax).
// hist (65536 int64, or null) accumulates the top 16 bits of each scored pixel's order key.
int64_t label_issues_scores(const LabelIssuesArgs& a, const double* thresholds_adj,
                            float* scores, uint8_t* candidates, int64_t* hist);

// The fused first pass of segkit.label_issues (one read of probs): everything of
// label_issues_sums (added to sums, counts, bad) and, per pixel, the scores, candidates and
// histogram of label_issues_scores, plus the argmax (int32) and its probability (top, float32)
// so that counting the issues once the thresholds are known (label_issues_count) reads 9
// bytes per pixel instead of the probabilities. hist may be null. Per-pixel outputs are
// written for every pixel (argmax 0 and top 0 where the label is ignored or out of range).
// first_nonfinite (or null): the flat index into probs of the first NaN or inf, -1 if none
// (the pass reads every probability, so it refuses them at no extra read; the other outputs
// are then meaningless).
void label_issues_fused(const LabelIssuesArgs& a, double* sums, int64_t* counts, int64_t* bad,
                        float* scores, uint8_t* candidates, int32_t* argmax, float* top,
                        int64_t* hist, int64_t* first_nonfinite);

// The number of counted issues of label_issues_fused's outputs: candidates whose top
// probability reaches thresholds_adj[argmax] (in double, as label_issues_scores), for argmax
// in 0..num_classes-1. *first_bad_argmax: the first candidate whose argmax is outside that
// range (not counted), or -1; checked in the same pass.
int64_t label_issues_count(const uint8_t* candidates, const int32_t* argmax, const float* top,
                           index_t total, const double* thresholds_adj, int num_classes,
                           int64_t* first_bad_argmax);

// cleanlab's softmin quality per image of n images of hw scores (NaN scores skipped; an
// image without a score gets NaN): sum s w / sum w, w = exp((min s - s) / max(T, 1e-6)).
void label_issues_softmin(const float* scores, index_t n, index_t hw, double temperature,
                          double* out);

// flags[i] = candidates[i] && key(scores[i]) < cutoff_key, for i < total.
void label_issues_flags(const float* scores, const uint8_t* candidates, index_t total,
                        uint32_t cutoff_key, uint8_t* flags);

}  // namespace cpu
}  // namespace segkit
