// 8 float lanes as a plain array: standard C++ for any processor (the compiler vectorises
// the loops with whatever the baseline instruction set offers).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace jaxlstm {

struct VecPortable {
  static constexpr int N = 8;
  static constexpr int kRows = 2;
  struct T {
    float v[N];
  };
  struct M {
    bool v[N];
  };

  template <class F>
  static T map(F f) {
    T r;
    for (int l = 0; l < N; ++l) r.v[l] = f(l);
    return r;
  }
  static T zero() { return set1(0.0f); }
  static T set1(float x) {
    return map([&](int) { return x; });
  }
  static T load(const float* p) {
    return map([&](int l) { return p[l]; });
  }
  static void store(float* p, T v) { std::memcpy(p, v.v, sizeof(v.v)); }
  static T loadn(const float* p, int n) {
    return map([&](int l) { return l < n ? p[l] : 0.0f; });
  }
  static void storen(float* p, T v, int n) {
    for (int l = 0; l < N && l < n; ++l) p[l] = v.v[l];
  }
  static T add(T a, T b) {
    return map([&](int l) { return a.v[l] + b.v[l]; });
  }
  static T sub(T a, T b) {
    return map([&](int l) { return a.v[l] - b.v[l]; });
  }
  static T mul(T a, T b) {
    return map([&](int l) { return a.v[l] * b.v[l]; });
  }
  static T div(T a, T b) {
    return map([&](int l) { return a.v[l] / b.v[l]; });
  }
  // a*b + c as two operations: std::fma is a slow library call where the processor has no
  // fused multiply-add, and the compiler contracts these where it has.
  static T fmadd(T a, T b, T c) {
    return map([&](int l) { return a.v[l] * b.v[l] + c.v[l]; });
  }
  static T fnmadd(T a, T b, T c) {
    return map([&](int l) { return c.v[l] - a.v[l] * b.v[l]; });
  }
  static T max(T a, T b) {
    return map([&](int l) { return a.v[l] > b.v[l] ? a.v[l] : b.v[l]; });
  }
  static T abs(T a) {
    return map([&](int l) { return std::fabs(a.v[l]); });
  }
  static T copysign(T magnitude, T sign) {
    return map([&](int l) { return std::copysign(magnitude.v[l], sign.v[l]); });
  }
  static M lt(T a, T b) {
    M m;
    for (int l = 0; l < N; ++l) m.v[l] = a.v[l] < b.v[l];
    return m;
  }
  static M gt(T a, T b) { return lt(b, a); }
  static T select(M m, T yes, T no) {
    return map([&](int l) { return m.v[l] ? yes.v[l] : no.v[l]; });
  }
  static T round(T a) {
    return map([&](int l) { return std::nearbyint(a.v[l]); });
  }
  static T pow2(T n) {
    return map([&](int l) {
      const uint32_t bits = uint32_t(int32_t(n.v[l]) + 127) << 23;
      float f;
      std::memcpy(&f, &bits, sizeof(f));
      return f;
    });
  }
};

}  // namespace jaxlstm
