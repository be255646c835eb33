// How a call's work is cut among the team's slots, in contiguous ranges.
//
// Two ways, chosen by Python per call (kernels.h's Split):
//  - by batch rows: the sequences of a batch are independent, so a slot that owns some rows
//    runs all their steps with no barrier and shares nothing with the other slots but the
//    packed weights (read-only after a single barrier);
//  - by hidden units (blocks of N), for batches too small to cut: every slot computes its
//    units for all rows, meeting the others at a barrier after every step.
#pragma once

#include <algorithm>
#include <cstdint>

#include "kernels.h"
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

// What one slot computes: batch rows, blocks of hidden units, blocks of output columns (of h,
// H_out wide); and the blocks of each whose weight panels it packs.
struct Work {
  Range rows, units, outs;
  Range pack_units, pack_outs;
};

// Blocks [begin, end) of slot s, cut at whole panels (for_each_panel's groups of 4 from 0).
inline Range share_panels(int64_t blocks, int slots, int s) {
  const Range groups = share(blocks_of(blocks, 4), slots, s);
  return {std::min(blocks, groups.begin * 4), std::min(blocks, groups.end * 4)};
}

inline Work work_of(Split split, int64_t batch, int tile_rows, int64_t unit_blocks,
                    int64_t out_blocks, int slots, int s) {
  Work w;
  if (split == Split::kRows) {
    const Range tiles = share(blocks_of(batch, tile_rows), slots, s);
    w.rows = {std::min(batch, tiles.begin * tile_rows), std::min(batch, tiles.end * tile_rows)};
    w.units = {0, unit_blocks};
    w.outs = {0, out_blocks};
    // Every slot reads every panel, grouped from block 0: each packs whole panels of them.
    w.pack_units = share_panels(unit_blocks, slots, s);
    w.pack_outs = share_panels(out_blocks, slots, s);
  } else {
    w.rows = {0, batch};
    w.units = share(unit_blocks, slots, s);
    w.outs = share(out_blocks, slots, s);
    w.pack_units = w.units;  // a slot reads only the panels of its own blocks
    w.pack_outs = w.outs;
  }
  return w;
}

// How many slots: no more than there are tiles of rows (or blocks of units) to share.
inline int slots_for(Split split, int64_t batch, int tile_rows, int64_t blocks, int workers) {
  const int64_t pieces = split == Split::kRows ? blocks_of(batch, tile_rows) : blocks;
  return int(std::max<int64_t>(1, std::min<int64_t>(workers, pieces)));
}

// Columns [begin, end) of a range of blocks of `lanes`, clipped to n.
inline Range columns(Range blocks, int64_t n, int lanes) {
  return {std::min(n, blocks.begin * lanes), std::min(n, blocks.end * lanes)};
}

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
