// The backward recurrence of one layer and direction: from the cotangents of every step's h
// and of the final c, each step's gate gradients (for XLA's weight and input gradients) and
// the cotangents of h0 and c0. The same per-step math as cell.step_bwd, in reverse time:
//
//   dh  = dh_rec + d_hs[t]                  (dh_rec: from the step after, through W_hh)
//   dhr = dh @ W_hr with a projection, else dh
//   dc' = dc + dhr o (1 - tanh(c)^2)
//   d_gates = [dc' g i(1-i), dc' c_prev f(1-f), dc' i (1+g)(1-g), dhr tanh(c) o(1-o)]
//   dh_rec = d_gates @ W_hh,   dc = dc' f
//
// At a masked step the carry passed through unchanged in the forward pass, so here dh and dc
// pass through and the gate gradients are 0. Cut by batch rows, each slot runs its rows'
// steps alone. Cut by units, each slot owns a range of unit blocks (phase A: gate gradients)
// and of output columns (phase B: d_gates @ W_hh); without a projection the two ranges are
// the same units, so a slot's phase A reads only what its phase B wrote and one barrier per
// step suffices (two with a projection).
#pragma once

#include <algorithm>
#include <cstdint>
#include "buffer.h"

#include "kernels.h"
#include "matmul.h"
#include "partition.h"
#include "team.h"

namespace jaxlstm {

template <class V>
class Backward {
 public:
  using T = typename V::T;
  static constexpr int N = V::N;

  Backward(const BackwardArgs& a, Split split, int slots)
      : a_(a),
        d_(a.d),
        hout_(a.d.hout()),
        unit_blocks_(blocks_of(a.d.H, N)),
        out_blocks_(blocks_of(hout_, N)),
        split_(split),
        slots_(slots),
        rec_panels_(size_t(out_blocks_) * 4 * d_.H * N),
        proj_panels_(d_.P ? size_t(unit_blocks_) * d_.P * N : 0),
        dh_total_(size_t(d_.B * hout_)),
        dh_rec_(size_t(d_.B * hout_)),
        dc_(size_t(d_.B * d_.H)),
        dh_raw_(d_.P ? size_t(d_.B * d_.H) : 0),
        scratch_(size_t(slots) * d_.B * 4 * N) {}

  void run(const Member& m) {
    for (int s : m.slots) prepare(s);
    m.barrier->wait();  // every panel packed
    if (split_ == Split::kRows) {  // independent rows: each slot runs all its steps
      for (int s : m.slots) {
        for (int64_t t = d_.T - 1; t >= 0; --t) {
          if (d_.P) {
            total_cotangent(s, t);
            unproject(s);
          }
          gate_gradients(s, t);
          recurrent_cotangent(s, t);
        }
      }
    } else {
      for (int64_t t = d_.T - 1; t >= 0; --t) {
        if (d_.P) {
          for (int s : m.slots) total_cotangent(s, t);
          m.barrier->wait();
          for (int s : m.slots) unproject(s);
        }
        for (int s : m.slots) gate_gradients(s, t);
        m.barrier->wait();
        for (int s : m.slots) recurrent_cotangent(s, t);
      }
    }
    for (int s : m.slots) finish(s);
  }

 private:
  bool valid(int64_t t, int64_t b) const { return !a_.mask || a_.mask[t * d_.B + b]; }
  Work work(int s) const {
    return work_of(split_, d_.B, V::kRows, unit_blocks_, out_blocks_, slots_, s);
  }
  float* scratch(int s) { return scratch_.data() + size_t(s) * d_.B * 4 * N; }

  void prepare(int s) {
    const Work w = work(s);
    for_each_panel(w.pack_outs, hout_, N, [&](const Panel& p, int64_t b0) {
      pack_panel(a_.w_hh, 1, hout_, 4 * d_.H, p, N, rec_panels_.data() + b0 * 4 * d_.H * N);
    });
    if (d_.P) {
      for_each_panel(w.pack_units, d_.H, N, [&](const Panel& p, int64_t b0) {
        pack_panel(a_.w_hr, 1, d_.H, d_.P, p, N, proj_panels_.data() + b0 * d_.P * N);
      });
    }
    const Range oc = columns(w.outs, hout_, N), uc = columns(w.units, d_.H, N);
    for (int64_t b = w.rows.begin; b < w.rows.end; ++b) {
      std::fill(dh_rec_.data() + b * hout_ + oc.begin, dh_rec_.data() + b * hout_ + oc.end, 0.0f);
      std::copy(a_.d_c_n + b * d_.H + uc.begin, a_.d_c_n + b * d_.H + uc.end,
                dc_.data() + b * d_.H + uc.begin);
    }
  }

  // With a projection: dh = dh_rec + d_hs[t] for this slot's columns, and dh_emit.
  void total_cotangent(int s, int64_t t) {
    const Work w = work(s);
    const Range oc = columns(w.outs, hout_, N);
    for (int64_t b = w.rows.begin; b < w.rows.end; ++b) {
      const int64_t row = (t * d_.B + b) * hout_;
      const bool ok = valid(t, b);
      for (int64_t j = oc.begin; j < oc.end; ++j) {
        const float dh = dh_rec_[b * hout_ + j] + a_.d_hs[row + j];
        dh_total_[b * hout_ + j] = dh;
        a_.dh_emit[row + j] = ok ? dh : 0.0f;
      }
    }
  }

  // With a projection: dhr = dh @ W_hr for this slot's units.
  void unproject(int s) {
    const Work w = work(s);
    for_each_panel(w.units, d_.H, N, [&](const Panel& p, int64_t b0) {
      const float* panel = proj_panels_.data() + b0 * d_.P * N;
      matmul_rows(s, w.rows, dh_total_.data(), hout_, d_.P, panel, p, [&](int64_t b, int v, T y) {
        V::storen(dh_raw_.data() + b * d_.H + p.col0[v], y, p.valid[v]);
      });
    });
  }

  void gate_gradients(int s, int64_t t) {
    const Work w = work(s);
    const Range uc = columns(w.units, d_.H, N);
    for (int64_t b = w.rows.begin; b < w.rows.end; ++b) {
      for (int64_t u0 = uc.begin; u0 < uc.end; u0 += N) {
        gate_gradient(t, b, u0, int(std::min<int64_t>(N, uc.end - u0)));
      }
    }
  }

  void gate_gradient(int64_t t, int64_t b, int64_t u0, int n) {
    const int64_t H = d_.H, row = t * d_.B + b;
    const T one = V::set1(1.0f);
    float* dc_p = dc_.data() + b * H + u0;
    const T dc = V::loadn(dc_p, n);
    T dhr;
    if (d_.P) {
      dhr = V::loadn(dh_raw_.data() + b * H + u0, n);
    } else {
      dhr = V::add(V::loadn(dh_rec_.data() + b * H + u0, n), V::loadn(a_.d_hs + row * H + u0, n));
      V::storen(dh_total_.data() + b * H + u0, dhr, n);
    }
    float* dg = a_.d_gates + row * 4 * H + u0;
    if (!valid(t, b)) {  // dc passes through unchanged
      const T zero = V::zero();
      for (int q = 0; q < 4; ++q) V::storen(dg + q * H, zero, n);
      return;
    }
    const float* gp = a_.gates + row * 4 * H + u0;
    const T i = V::loadn(gp, n), f = V::loadn(gp + H, n);
    const T g = V::loadn(gp + 2 * H, n), o = V::loadn(gp + 3 * H, n);
    const T tc = V::loadn(a_.tanh_c + row * H + u0, n);
    const float* cp_p = t == 0 ? a_.c0 + b * H : a_.cs + (row - d_.B) * H;
    const T cp = V::loadn(cp_p + u0, n);
    const T dct = V::add(dc, V::mul(V::mul(dhr, o), V::fnmadd(tc, tc, one)));
    V::storen(dg, V::mul(V::mul(dct, g), V::mul(i, V::sub(one, i))), n);
    V::storen(dg + H, V::mul(V::mul(dct, cp), V::mul(f, V::sub(one, f))), n);
    V::storen(dg + 2 * H, V::mul(V::mul(dct, i), V::mul(V::add(one, g), V::sub(one, g))), n);
    V::storen(dg + 3 * H, V::mul(V::mul(dhr, tc), V::mul(o, V::sub(one, o))), n);
    V::storen(dc_p, V::mul(dct, f), n);
  }

  // dh_rec = d_gates[t] @ W_hh for this slot's columns; a masked row passes dh through.
  void recurrent_cotangent(int s, int64_t t) {
    const int64_t K = 4 * d_.H;
    const float* dg = a_.d_gates + t * d_.B * K;
    const Work w = work(s);
    for_each_panel(w.outs, hout_, N, [&](const Panel& p, int64_t b0) {
      const float* panel = rec_panels_.data() + b0 * K * N;
      matmul_rows(s, w.rows, dg, K, K, panel, p, [&](int64_t b, int v, T y) {
        const int64_t at = b * hout_ + p.col0[v];
        if (!valid(t, b)) y = V::loadn(dh_total_.data() + at, p.valid[v]);
        V::storen(dh_rec_.data() + at, y, p.valid[v]);
      });
    });
  }

  // For every batch row b of `rows` and vector v of the panel: emit(b, v, (a[b] @ panel)[v]).
  template <class Emit>
  void matmul_rows(int s, Range rows, const float* a, int64_t lda, int64_t K, const float* panel,
                   const Panel& p, Emit&& emit) {
    with_count<4>(p.count, [&](auto c_count) {
      constexpr int C = decltype(c_count)::value;
      panel_matmul<V, C>(a + rows.begin * lda, lda, rows.end - rows.begin, K, panel, scratch(s),
                         [&](int64_t r0, auto& acc) {
                           constexpr int R = sizeof(acc) / sizeof(acc[0]);
                           for (int r = 0; r < R; ++r)
                             for (int v = 0; v < C; ++v) emit(rows.begin + r0 + r, v, acc[r][v]);
                         });
    });
  }

  void finish(int s) {
    const Work w = work(s);
    const Range oc = columns(w.outs, hout_, N), uc = columns(w.units, d_.H, N);
    for (int64_t b = w.rows.begin; b < w.rows.end; ++b) {
      std::copy(dh_rec_.data() + b * hout_ + oc.begin, dh_rec_.data() + b * hout_ + oc.end,
                a_.dh0 + b * hout_ + oc.begin);
      std::copy(dc_.data() + b * d_.H + uc.begin, dc_.data() + b * d_.H + uc.end,
                a_.dc0 + b * d_.H + uc.begin);
    }
  }

  const BackwardArgs& a_;
  const Dims d_;
  const int64_t hout_, unit_blocks_, out_blocks_;
  const Split split_;
  const int slots_;
  Buffer rec_panels_, proj_panels_, dh_total_, dh_rec_, dc_, dh_raw_, scratch_;
};

template <class V>
void backward(const BackwardArgs& a, const Threads& threads) {
  const int64_t blocks = std::min(blocks_of(a.d.H, V::N), blocks_of(a.d.hout(), V::N));
  const int slots = slots_for(threads.split, a.d.B, V::kRows, blocks, threads.max_workers);
  Backward<V> kernel(a, threads.split, slots);
  run_team(slots, threads, [&](const Member& m) { kernel.run(m); });
}

}  // namespace jaxlstm
