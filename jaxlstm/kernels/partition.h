// How a call's work is cut: blocks of N hidden units (or output columns), shared out among
// the team's slots in contiguous ranges.
#pragma once

#include <algorithm>
#include <cstdint>

#include "pack.h"

namespace jaxlstm {

struct Range {
  int64_t begin, end;
};

// Blocks [begin, end) of slot s among `slots` for `blocks` blocks.
inline Range share(int64_t blocks, int slots, int s) {
  return {blocks * s / slots, blocks * (s + 1) / slots};
}

inline int64_t blocks_of(int64_t n, int lanes) { return (n + lanes - 1) / lanes; }

// The panels over blocks [r.begin, r.end) of a dimension of size n: up to 4 blocks each.
template <class F>
inline void for_each_panel(Range r, int64_t n, int lanes, F&& f) {
  for (int64_t b = r.begin; b < r.end; b += 4) {
    Panel p{};
    p.count = int(std::min<int64_t>(4, r.end - b));
    for (int v = 0; v < p.count; ++v) {
      p.col0[v] = (b + v) * lanes;
      p.valid[v] = int(std::min<int64_t>(lanes, n - p.col0[v]));
    }
    f(p, b);
  }
}

// The panel of one block of units in the gate layout: its i, f, g, o columns of W_hh.
inline Panel gate_panel(int64_t unit_block, int64_t H, int lanes) {
  Panel p{};
  p.count = 4;
  const int64_t u0 = unit_block * lanes;
  for (int q = 0; q < 4; ++q) {
    p.col0[q] = q * H + u0;
    p.valid[q] = int(std::min<int64_t>(lanes, H - u0));
  }
  return p;
}

}  // namespace jaxlstm
