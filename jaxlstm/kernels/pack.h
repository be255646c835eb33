// Packing a weight matrix into panels: the columns that one tile of the matmul produces,
// side by side for every step of its reduction, so the kernel reads them as one stream.
#pragma once

#include <cstdint>

namespace jaxlstm {

// One panel: `count` vectors of `lanes` output columns; vector v holds columns
// col0[v] .. col0[v] + valid[v] - 1 (the lanes past `valid` are 0).
struct Panel {
  int count;
  int64_t col0[4];
  int valid[4];
};

// dst[k][v][l] = src[(col0[v] + l) * col_stride + k * k_stride] for k < K (0 past `valid`).
// dst holds K * panel.count * lanes floats.
inline void pack_panel(const float* src, int64_t col_stride, int64_t k_stride, int64_t K,
                       const Panel& panel, int lanes, float* dst) {
  for (int64_t k = 0; k < K; ++k) {
    for (int v = 0; v < panel.count; ++v) {
      for (int l = 0; l < lanes; ++l) {
        *dst++ = l < panel.valid[v] ? src[(panel.col0[v] + l) * col_stride + k * k_stride] : 0.0f;
      }
    }
  }
}

}  // namespace jaxlstm
