// CPU ConvCRF: the working memory convcrf() keeps between calls (convcrf.cpp only).
#pragma once
#include <cstdint>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

namespace segkit {
namespace cpu {
namespace crfrows {

// Working memory kept between calls (a dataset job calls once per image): allocating and
// first touching the tens of MB that blur 1 needs costs more than its iterations. At most two
// blocks are kept (concurrent calls each take their own); convcrf_release_workspace() frees
// them.
class WorkspacePool {
 public:
  struct Block {
    std::unique_ptr<float[]> data;
    size_t size = 0;
  };

  Block acquire(size_t n) {
    Block b;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!free_.empty()) {
        b = std::move(free_.back());
        free_.pop_back();
      }
    }
    if (b.size < n) {
      b.data.reset();
      b.data.reset(new float[n]);  // uninitialised: every element read is written first
      b.size = n;
    }
    return b;
  }

  void release(Block b) {
    std::lock_guard<std::mutex> lock(mu_);
    if (free_.size() < 2) free_.push_back(std::move(b));
  }

  std::int64_t clear() {
    std::lock_guard<std::mutex> lock(mu_);
    std::int64_t bytes = 0;
    for (const Block& b : free_) bytes += static_cast<std::int64_t>(b.size * sizeof(float));
    free_.clear();
    return bytes;
  }

  std::int64_t held() {
    std::lock_guard<std::mutex> lock(mu_);
    std::int64_t bytes = 0;
    for (const Block& b : free_) bytes += static_cast<std::int64_t>(b.size * sizeof(float));
    return bytes;
  }

 private:
  std::mutex mu_;
  std::vector<Block> free_;
};

inline WorkspacePool& pool() {
  static WorkspacePool* p = new WorkspacePool();  // never destroyed: safe at exit
  return *p;
}

}  // namespace crfrows
}  // namespace cpu
}  // namespace segkit
