// The matmul inside each step: R batch rows times one packed panel of C vectors, all in
// registers, reduced over K. Every product of the recurrence is one of these:
//   forward gates       h [B, Hout] @ W_hh^T   panel: the i, f, g, o columns of N units
//   forward projection  h_raw [B, H] @ W_hr^T  panel: up to 4 blocks of N outputs
//   backward            d_gates [B, 4H] @ W_hh, and dh [B, P] @ W_hr
#pragma once

#include <cstdint>
#include <type_traits>

namespace jaxlstm {

// acc[r][v] = sum_k a[r * lda + k] * panel[k][v]   (panel as written by pack_panel)
template <class V, int R, int C>
inline void tile(const float* a, int64_t lda, int64_t K, const float* panel,
                 typename V::T (&acc)[R][C]) {
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < C; ++v) acc[r][v] = V::zero();
  for (int64_t k = 0; k < K; ++k) {
    typename V::T w[C];
    for (int v = 0; v < C; ++v) w[v] = V::load(panel + (k * C + v) * V::N);
    for (int r = 0; r < R; ++r) {
      const typename V::T x = V::set1(a[r * lda + k]);
      for (int v = 0; v < C; ++v) acc[r][v] = V::fmadd(x, w[v], acc[r][v]);
    }
  }
}

// Calls f(std::integral_constant<int, R>{}) with R = n, 1 <= n <= Max: a tile's row count
// (and a panel's vector count) is a compile-time constant, so its accumulators stay in
// registers.
template <int Max, class F>
inline void with_count(int n, F&& f) {
  static_assert(Max >= 1 && Max <= 6, "extend with_count");
  switch (n) {
    case 1: f(std::integral_constant<int, 1>{}); break;
    case 2: if constexpr (Max >= 2) f(std::integral_constant<int, 2>{}); break;
    case 3: if constexpr (Max >= 3) f(std::integral_constant<int, 3>{}); break;
    case 4: if constexpr (Max >= 4) f(std::integral_constant<int, 4>{}); break;
    case 5: if constexpr (Max >= 5) f(std::integral_constant<int, 5>{}); break;
    case 6: if constexpr (Max >= 6) f(std::integral_constant<int, 6>{}); break;
    default: break;
  }
}

}  // namespace jaxlstm
