// A float buffer aligned to cache lines: the kernel's work arrays are shared among threads
// row by row, and a cache line holding two threads' columns would bounce between cores.
#pragma once

#include <cstddef>
#include <cstdlib>
#include <memory>
#include <new>

namespace jaxlstm {

class Buffer {
 public:
  static constexpr size_t kAlign = 64;

  explicit Buffer(size_t n = 0) : size_(n), data_(allocate(n)) {}
  float* data() { return data_.get(); }
  const float* data() const { return data_.get(); }
  float& operator[](size_t i) { return data_.get()[i]; }
  float operator[](size_t i) const { return data_.get()[i]; }
  size_t size() const { return size_; }

 private:
  struct Free {
    void operator()(float* p) const { std::free(p); }
  };
  static float* allocate(size_t n) {
    if (n == 0) return nullptr;
    const size_t bytes = (n * sizeof(float) + kAlign - 1) / kAlign * kAlign;
    void* p = std::aligned_alloc(kAlign, bytes);
    if (!p) throw std::bad_alloc();
    return static_cast<float*>(p);
  }
  size_t size_;
  std::unique_ptr<float, Free> data_;
};

}  // namespace jaxlstm
