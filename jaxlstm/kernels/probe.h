// The processor's multiply-add throughput, measured: independent chains of vector FMAs, the
// most one core can do. The benchmark compares the kernel's rate with it.
#pragma once

#include <chrono>

namespace jaxlstm {

// Single-precision FLOP/s of one thread running FMAs for about `seconds`.
template <class V>
double fma_flops(double seconds) {
  using T = typename V::T;
  constexpr int kChains = 12;  // enough to hide the FMA latency on two pipes
  T acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = V::set1(1.0f + i * 1e-7f);
  const T a = V::set1(0.9999999f), b = V::set1(1e-7f);
  const auto start = std::chrono::steady_clock::now();
  long rounds = 0;
  double elapsed = 0.0;
  do {
    for (int r = 0; r < 100000; ++r) {
      for (int i = 0; i < kChains; ++i) acc[i] = V::fmadd(acc[i], a, b);
    }
    rounds += 100000;
    elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  } while (elapsed < seconds);
  // Keep the chains alive: their sum decides nothing but cannot be optimised away.
  T sum = acc[0];
  for (int i = 1; i < kChains; ++i) sum = V::add(sum, acc[i]);
  volatile float sink[V::N];
  float lanes[V::N];
  V::store(lanes, sum);
  for (int l = 0; l < V::N; ++l) sink[l] = lanes[l];
  (void)sink;
  return double(rounds) * kChains * V::N * 2 / elapsed;
}

}  // namespace jaxlstm
