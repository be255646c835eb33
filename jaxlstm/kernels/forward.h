// The forward recurrence of one layer and direction. At every step a tile of batch rows times
// the packed panel of N hidden units (their i, f, g, o columns of W_hh side by side) gives
// those units' gates in registers; the input projection is added, the gates activated and c
// and h updated right there. The packed weights are shared by every slot; the slots cut the
// work by batch rows (no barrier after packing) or by units (a barrier per step, two with a
// projection), see partition.h.
#pragma once

#include <algorithm>
#include <cstdint>

#include "activations.h"
#include "buffer.h"
#include "kernels.h"
#include "matmul.h"
#include "partition.h"
#include "team.h"

namespace jaxlstm {

template <class V>
class Forward {
 public:
  using T = typename V::T;
  using Act = Activations<V>;
  static constexpr int N = V::N;

  Forward(const ForwardArgs& a, Split split, int slots)
      : a_(a),
        d_(a.d),
        hout_(a.d.hout()),
        unit_blocks_(blocks_of(a.d.H, N)),
        out_blocks_(blocks_of(a.d.P, N)),
        split_(split),
        slots_(slots),
        gate_panels_(size_t(unit_blocks_) * hout_ * 4 * N),
        proj_panels_(size_t(out_blocks_) * d_.H * N),
        h_raw_(d_.P ? size_t(d_.B * d_.H) : 0),
        scratch_(size_t(slots) * d_.B * 4 * N) {}

  void run(const Member& m) {
    for (int s : m.slots) prepare(s);
    m.barrier->wait();  // every panel packed
    if (split_ == Split::kRows) {  // independent rows: each slot runs all its steps
      for (int s : m.slots) {
        for (int64_t t = 0; t < d_.T; ++t) {
          gates_step(s, t);
          if (d_.P) projection_step(s, t);
        }
      }
    } else {
      for (int64_t t = 0; t < d_.T; ++t) {
        for (int s : m.slots) gates_step(s, t);
        if (d_.P) {
          m.barrier->wait();
          for (int s : m.slots) projection_step(s, t);
        }
        m.barrier->wait();
      }
    }
    if (a_.cs) {
      for (int s : m.slots) finish(s);
    }
  }

 private:
  Work work(int s) const {
    return work_of(split_, d_.B, V::kRows, unit_blocks_, out_blocks_, slots_, s);
  }
  const float* h_prev(int64_t t) const { return t == 0 ? a_.h0 : a_.hs + (t - 1) * d_.B * hout_; }
  const float* c_prev(int64_t t) const {
    if (!a_.cs) return a_.c_n;  // inference: c_n is the running state
    return t == 0 ? a_.c0 : a_.cs + (t - 1) * d_.B * d_.H;
  }
  float* c_out(int64_t t) const { return a_.cs ? a_.cs + t * d_.B * d_.H : a_.c_n; }
  bool valid(int64_t t, int64_t b) const { return !a_.mask || a_.mask[t * d_.B + b]; }
  float* scratch(int s) { return scratch_.data() + size_t(s) * d_.B * 4 * N; }

  // Packs this slot's share of the panels; without kept states, starts its part of the
  // running c at c0.
  void prepare(int s) {
    const Work w = work(s);
    for (int64_t ub = w.pack_units.begin; ub < w.pack_units.end; ++ub) {
      pack_panel(a_.w_hh, hout_, 1, hout_, gate_panel(ub, d_.H, N), N,
                 gate_panels_.data() + ub * hout_ * 4 * N);
    }
    if (d_.P) {
      for_each_panel(w.pack_outs, d_.P, N, [&](const Panel& p, int64_t b0) {
        pack_panel(a_.w_hr, d_.H, 1, d_.H, p, N, proj_panels_.data() + b0 * d_.H * N);
      });
    }
    if (!a_.cs) copy_block(a_.c0, a_.c_n, w);
  }

  // Rows w.rows of columns w.units of a [B, H] array.
  void copy_block(const float* from, float* to, const Work& w) const {
    const Range u = columns(w.units, d_.H, N);
    for (int64_t b = w.rows.begin; b < w.rows.end; ++b)
      std::copy(from + b * d_.H + u.begin, from + b * d_.H + u.end, to + b * d_.H + u.begin);
  }

  void gates_step(int s, int64_t t) {
    const Work w = work(s);
    const float* h = h_prev(t) + w.rows.begin * hout_;
    for (int64_t ub = w.units.begin; ub < w.units.end; ++ub) {
      const float* panel = gate_panels_.data() + ub * hout_ * 4 * N;
      panel_matmul<V, 4>(h, hout_, w.rows.end - w.rows.begin, hout_, panel, scratch(s),
                         [&](int64_t r0, auto& acc) {
                           constexpr int R = sizeof(acc) / sizeof(acc[0]);
                           for (int r = 0; r < R; ++r) update(t, w.rows.begin + r0 + r, ub, acc[r]);
                         });
    }
  }

  // The gate update of one batch row and one block of units, from its gates' h @ W_hh^T.
  void update(int64_t t, int64_t b, int64_t ub, const T (&acc)[4]) {
    const int64_t H = d_.H, u0 = ub * N;
    const int n = int(std::min<int64_t>(N, H - u0));
    const int64_t row = t * d_.B + b;
    const float* xp = a_.xproj + row * 4 * H + u0;
    // (x W_ih^T + h W_hh^T) + b, the XLA path's order.
    auto pre = [&](int q) {
      const T sum = V::add(V::loadn(xp + q * H, n), acc[q]);
      return a_.bias ? V::add(sum, V::loadn(a_.bias + q * H + u0, n)) : sum;
    };
    const T i = Act::sigmoid(pre(0));
    const T f = Act::sigmoid(pre(1));
    const T g = Act::tanh(pre(2));
    const T o = Act::sigmoid(pre(3));
    const T cp = V::loadn(c_prev(t) + b * H + u0, n);
    T c = V::fmadd(f, cp, V::mul(i, g));
    const T tc = Act::tanh(c);
    T h = V::mul(o, tc);
    if (a_.gates) {
      float* gp = a_.gates + row * 4 * H + u0;
      V::storen(gp, i, n);
      V::storen(gp + H, f, n);
      V::storen(gp + 2 * H, g, n);
      V::storen(gp + 3 * H, o, n);
      V::storen(a_.tanh_c + row * H + u0, tc, n);
    }
    if (!valid(t, b)) {  // past the sequence's end: the carry stays
      c = cp;
      if (!d_.P) h = V::loadn(h_prev(t) + b * H + u0, n);
    }
    V::storen(c_out(t) + b * H + u0, c, n);
    V::storen(d_.P ? h_raw_.data() + b * H + u0 : a_.hs + row * H + u0, h, n);
  }

  // h = h_raw @ W_hr^T for this slot's rows and output columns.
  void projection_step(int s, int64_t t) {
    const Work w = work(s);
    const float* h = h_prev(t);
    float* out = a_.hs + t * d_.B * hout_;
    const int64_t rows = w.rows.end - w.rows.begin;
    for_each_panel(w.outs, d_.P, N, [&](const Panel& p, int64_t b0) {
      const float* panel = proj_panels_.data() + b0 * d_.H * N;
      with_count<4>(p.count, [&](auto c_count) {
        constexpr int C = decltype(c_count)::value;
        const float* raw = h_raw_.data() + w.rows.begin * d_.H;
        panel_matmul<V, C>(raw, d_.H, rows, d_.H, panel, scratch(s), [&](int64_t r0, auto& acc) {
          constexpr int R = sizeof(acc) / sizeof(acc[0]);
          for (int r = 0; r < R; ++r) {
            const int64_t b = w.rows.begin + r0 + r;
            for (int v = 0; v < C; ++v) {
              const int64_t col = p.col0[v];
              const T y = valid(t, b) ? acc[r][v] : V::loadn(h + b * hout_ + col, p.valid[v]);
              V::storen(out + b * hout_ + col, y, p.valid[v]);
            }
          }
        });
      });
    });
  }

  // With kept states: c_n is the last step's c.
  void finish(int s) { copy_block(a_.cs + (d_.T - 1) * d_.B * d_.H, a_.c_n, work(s)); }

  const ForwardArgs& a_;
  const Dims d_;
  const int64_t hout_, unit_blocks_, out_blocks_;
  const Split split_;
  const int slots_;
  Buffer gate_panels_, proj_panels_, h_raw_, scratch_;
};

template <class V>
void forward(const ForwardArgs& a, const Threads& threads) {
  int64_t blocks = blocks_of(a.d.H, V::N);
  if (a.d.P) blocks = std::min(blocks, blocks_of(a.d.P, V::N));
  const int slots = slots_for(threads.split, a.d.B, V::kRows, blocks, threads.max_workers);
  Forward<V> kernel(a, threads.split, slots);
  run_team(slots, threads, [&](const Member& m) { kernel.run(m); });
}

}  // namespace jaxlstm
