// The matmul inside each step: R batch rows times one packed panel of C vectors, all in
// registers, reduced over K. Every product of the recurrence is one of these:
//   forward gates       h [B, Hout] @ W_hh^T   panel: the i, f, g, o columns of N units
//   forward projection  h_raw [B, H] @ W_hr^T  panel: up to 4 blocks of N outputs
//   backward            d_gates [B, 4H] @ W_hh, and dh [B, P] @ W_hr
#pragma once

#include <cstdint>
#include <type_traits>

namespace jaxlstm {

// acc[r][v] += sum_k a[r * lda + k] * panel[k][v]   (panel as written by pack_panel)
template <class V, int R, int C>
inline void tile(const float* a, int64_t lda, int64_t K, const float* panel,
                 typename V::T (&acc)[R][C]) {
  for (int64_t k = 0; k < K; ++k) {
    typename V::T w[C];
    for (int v = 0; v < C; ++v) w[v] = V::load(panel + (k * C + v) * V::N);
    for (int r = 0; r < R; ++r) {
      const typename V::T x = V::set1(a[r * lda + k]);
      for (int v = 0; v < C; ++v) acc[r][v] = V::fmadd(x, w[v], acc[r][v]);
    }
  }
}

// How many steps of the reduction one pass over the batch rows takes: a panel's chunk of
// kc x C vectors stays in the L1 cache (40 KB) while every row tile reads it.
inline int64_t reduction_chunk(int vectors, int lanes) {
  const int64_t kc = (10240 / (int64_t(vectors) * lanes)) / 8 * 8;
  return kc < 8 ? 8 : kc;
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

namespace jaxlstm {

// For every tile of rows [r0, r0 + R) of `rows`: acc = a[r0 .. r0 + R) @ panel (reduced over
// all K), then emit(r0, acc). Where the panel does not fit the L1 cache the reduction runs in
// chunks, the partial sums kept in `scratch` (rows x C x N floats).
template <class V, int C, class Emit>
inline void panel_matmul(const float* a, int64_t lda, int64_t rows, int64_t K, const float* panel,
                         float* scratch, Emit&& emit) {
  using T = typename V::T;
  const int64_t kc = reduction_chunk(C, V::N);
  for (int64_t k0 = 0; k0 < K; k0 += kc) {
    const int64_t k1 = K - k0 <= kc ? K : k0 + kc;
    const bool first = k0 == 0, last = k1 == K;
    for (int64_t r0 = 0; r0 < rows; r0 += V::kRows) {
      const int n = int(rows - r0 < V::kRows ? rows - r0 : V::kRows);
      with_count<V::kRows>(n, [&](auto r_count) {
        constexpr int R = decltype(r_count)::value;
        T acc[R][C];
        float* partial = scratch + r0 * C * V::N;
        for (int r = 0; r < R; ++r)
          for (int v = 0; v < C; ++v)
            acc[r][v] = first ? V::zero() : V::load(partial + (r * C + v) * V::N);
        tile<V, R, C>(a + r0 * lda + k0, lda, k1 - k0, panel + k0 * C * V::N, acc);
        if (last) {
          emit(r0, acc);
        } else {
          for (int r = 0; r < R; ++r)
            for (int v = 0; v < C; ++v) V::store(partial + (r * C + v) * V::N, acc[r][v]);
        }
      });
    }
  }
}

}  // namespace jaxlstm
