// A small driver of jaxlstm's native kernels, for the sanitizers (tests/test_native.py builds
// it with -fsanitize=address,undefined and with -fsanitize=thread and runs it).
//
// For odd shapes, with and without projection and masks, on every variant this processor
// runs, it checks the forward and backward recurrences against a float64 reference and
// checks that the results are the same bit for bit whatever the threads do: one worker,
// several, workers that start after the timeout, and a "pool" that runs tasks inline.
// Prints "passed" and exits 0, or names the first failure and exits 1.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "kernels.h"

using namespace jaxlstm;

namespace {

struct Problem {
  Dims d;
  std::vector<float> xproj, bias, w_hh, w_hr, h0, c0, d_hs, d_c_n;
  std::vector<char> mask;  // [T, B], empty: all valid
};

Problem make(Dims d, bool masked, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  auto fill = [&](size_t n, float scale) {
    std::vector<float> v(n);
    for (auto& x : v) x = scale * normal(rng);
    return v;
  };
  const int64_t hout = d.hout();
  Problem p{d,
            fill(d.T * d.B * 4 * d.H, 1.0f),
            fill(4 * d.H, 0.5f),
            fill(4 * d.H * hout, 0.4f),
            fill(d.P * d.H, 0.4f),
            fill(d.B * hout, 1.0f),
            fill(d.B * d.H, 1.0f),
            fill(d.T * d.B * hout, 1.0f),
            fill(d.B * d.H, 1.0f),
            {}};
  if (masked) {
    p.mask.assign(d.T * d.B, 0);
    for (int64_t b = 0; b < d.B; ++b) {
      const int64_t length = b == 0 ? 1 : b == 1 ? d.T : 1 + int64_t(rng() % d.T);
      for (int64_t t = 0; t < length; ++t) p.mask[t * d.B + b] = 1;
    }
  }
  return p;
}

struct Result {
  std::vector<float> hs, c_n, cs, gates, tanh_c, d_gates, dh0, dc0, dh_emit;
};

double sigmoid(double z) { return 1.0 / (1.0 + std::exp(-z)); }

// The same recurrence in float64, plainly.
Result reference(const Problem& p) {
  const Dims d = p.d;
  const int64_t H = d.H, hout = d.hout(), B = d.B;
  auto valid = [&](int64_t t, int64_t b) { return p.mask.empty() || p.mask[t * B + b]; };
  std::vector<double> h(p.h0.begin(), p.h0.end()), c(p.c0.begin(), p.c0.end());
  std::vector<double> hs(d.T * B * hout), cs(d.T * B * H), gates(d.T * B * 4 * H), tc(d.T * B * H);
  for (int64_t t = 0; t < d.T; ++t) {
    std::vector<double> h_new(B * hout), c_new(B * H), raw(B * H);
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t u = 0; u < H; ++u) {
        double pre[4];
        for (int q = 0; q < 4; ++q) {
          double s = double(p.xproj[(t * B + b) * 4 * H + q * H + u]) + p.bias[q * H + u];
          for (int64_t k = 0; k < hout; ++k) s += double(p.w_hh[(q * H + u) * hout + k]) * h[b * hout + k];
          pre[q] = s;
        }
        const double i = sigmoid(pre[0]), f = sigmoid(pre[1]), g = std::tanh(pre[2]),
                     o = sigmoid(pre[3]);
        const double cn = f * c[b * H + u] + i * g;
        const int64_t at = (t * B + b) * 4 * H + u;
        gates[at] = i, gates[at + H] = f, gates[at + 2 * H] = g, gates[at + 3 * H] = o;
        tc[(t * B + b) * H + u] = std::tanh(cn);
        c_new[b * H + u] = valid(t, b) ? cn : c[b * H + u];
        raw[b * H + u] = o * std::tanh(cn);
      }
      for (int64_t j = 0; j < hout; ++j) {
        double y = 0;
        if (d.P) {
          for (int64_t u = 0; u < H; ++u) y += double(p.w_hr[j * H + u]) * raw[b * H + u];
        } else {
          y = raw[b * H + j];
        }
        h_new[b * hout + j] = valid(t, b) ? y : h[b * hout + j];
      }
    }
    h = h_new, c = c_new;
    std::copy(h.begin(), h.end(), hs.begin() + t * B * hout);
    std::copy(c.begin(), c.end(), cs.begin() + t * B * H);
  }
  Result r;
  r.hs.assign(hs.begin(), hs.end());
  r.c_n.assign(c.begin(), c.end());
  r.cs.assign(cs.begin(), cs.end());
  r.gates.assign(gates.begin(), gates.end());
  r.tanh_c.assign(tc.begin(), tc.end());
  // Backward, from the float64 forward values.
  std::vector<double> dh_rec(B * hout, 0.0), dc(p.d_c_n.begin(), p.d_c_n.end());
  std::vector<double> d_gates(d.T * B * 4 * H, 0.0), emit(d.T * B * hout, 0.0);
  for (int64_t t = d.T - 1; t >= 0; --t) {
    std::vector<double> dh(B * hout), dhr(B * H);
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t j = 0; j < hout; ++j) dh[b * hout + j] = dh_rec[b * hout + j] + p.d_hs[(t * B + b) * hout + j];
      for (int64_t u = 0; u < H; ++u) {
        double s = 0;
        if (d.P) {
          for (int64_t j = 0; j < hout; ++j) s += dh[b * hout + j] * double(p.w_hr[j * H + u]);
        } else {
          s = dh[b * hout + u];
        }
        dhr[b * H + u] = s;
      }
    }
    for (int64_t b = 0; b < B; ++b) {
      if (!valid(t, b)) {
        for (int64_t j = 0; j < hout; ++j) dh_rec[b * hout + j] = dh[b * hout + j];
        continue;
      }
      for (int64_t j = 0; j < hout; ++j) emit[(t * B + b) * hout + j] = dh[b * hout + j];
      for (int64_t u = 0; u < H; ++u) {
        const int64_t at = (t * B + b) * 4 * H + u;
        const double i = gates[at], f = gates[at + H], g = gates[at + 2 * H], o = gates[at + 3 * H];
        const double tcu = tc[(t * B + b) * H + u];
        const double cp = t == 0 ? double(p.c0[b * H + u]) : cs[((t - 1) * B + b) * H + u];
        const double dct = dc[b * H + u] + dhr[b * H + u] * o * (1 - tcu * tcu);
        d_gates[at] = dct * g * i * (1 - i);
        d_gates[at + H] = dct * cp * f * (1 - f);
        d_gates[at + 2 * H] = dct * i * (1 - g * g);
        d_gates[at + 3 * H] = dhr[b * H + u] * tcu * o * (1 - o);
        dc[b * H + u] = dct * f;
      }
      for (int64_t k = 0; k < hout; ++k) {
        double s = 0;
        for (int64_t row = 0; row < 4 * H; ++row)
          s += d_gates[(t * B + b) * 4 * H + row] * double(p.w_hh[row * hout + k]);
        dh_rec[b * hout + k] = s;
      }
    }
  }
  r.d_gates.assign(d_gates.begin(), d_gates.end());
  r.dh0.assign(dh_rec.begin(), dh_rec.end());
  r.dc0.assign(dc.begin(), dc.end());
  if (d.P) r.dh_emit.assign(emit.begin(), emit.end());
  return r;
}

Result run(const KernelTable& k, const Problem& p, const Threads& threads) {
  const Dims d = p.d;
  const int64_t hout = d.hout();
  Result r;
  r.hs.resize(d.T * d.B * hout), r.c_n.resize(d.B * d.H), r.cs.resize(d.T * d.B * d.H);
  r.gates.resize(d.T * d.B * 4 * d.H), r.tanh_c.resize(d.T * d.B * d.H);
  const bool* mask = p.mask.empty() ? nullptr : reinterpret_cast<const bool*>(p.mask.data());
  ForwardArgs f{d,
                p.xproj.data(),
                p.bias.data(),
                p.w_hh.data(),
                d.P ? p.w_hr.data() : nullptr,
                p.h0.data(),
                p.c0.data(),
                mask,
                r.hs.data(),
                r.c_n.data(),
                r.cs.data(),
                r.gates.data(),
                r.tanh_c.data()};
  k.forward(f, threads);
  // Inference mode must give the same hs and c_n.
  std::vector<float> hs2(r.hs.size()), c_n2(r.c_n.size());
  ForwardArgs g = f;
  g.hs = hs2.data(), g.c_n = c_n2.data(), g.cs = g.gates = g.tanh_c = nullptr;
  k.forward(g, threads);
  if (hs2 != r.hs || c_n2 != r.c_n) {
    std::printf("inference and training forward differ\n");
    std::exit(1);
  }
  r.d_gates.resize(d.T * d.B * 4 * d.H), r.dh0.resize(d.B * hout), r.dc0.resize(d.B * d.H);
  if (d.P) r.dh_emit.resize(d.T * d.B * hout);
  BackwardArgs b{d,
                 p.w_hh.data(),
                 d.P ? p.w_hr.data() : nullptr,
                 r.gates.data(),
                 r.tanh_c.data(),
                 r.cs.data(),
                 p.c0.data(),
                 mask,
                 p.d_hs.data(),
                 p.d_c_n.data(),
                 r.d_gates.data(),
                 r.dh0.data(),
                 r.dc0.data(),
                 d.P ? r.dh_emit.data() : nullptr};
  k.backward(b, threads);
  return r;
}

bool close(const std::vector<float>& got, const std::vector<float>& want, const char* what,
           const std::string& where) {
  double scale = 1.0, worst = 0.0;
  for (float w : want) scale = std::max(scale, double(std::fabs(w)));
  for (size_t i = 0; i < got.size(); ++i) worst = std::max(worst, std::fabs(double(got[i]) - want[i]));
  if (got.size() != want.size() || !(worst <= 2e-4 * scale)) {
    std::printf("FAIL %s %s: deviation %.3g (scale %.3g)\n", where.c_str(), what, worst, scale);
    return false;
  }
  return true;
}

bool same(const Result& a, const Result& b) {
  return a.hs == b.hs && a.c_n == b.c_n && a.cs == b.cs && a.gates == b.gates &&
         a.tanh_c == b.tanh_c && a.d_gates == b.d_gates && a.dh0 == b.dh0 && a.dc0 == b.dc0 &&
         a.dh_emit == b.dh_emit;
}

// Thread setups: what a pool may do to the kernel's helper tasks.
std::vector<std::pair<std::string, Threads>> setups() {
  auto spawn = [](int delay_us) {
    return Schedule([delay_us](std::function<void()> task) {
      std::thread([task, delay_us] {
        if (delay_us) std::this_thread::sleep_for(std::chrono::microseconds(delay_us));
        task();
      }).detach();
    });
  };
  const Schedule inline_pool = [](std::function<void()> task) { task(); };
  std::vector<std::pair<std::string, Threads>> out;
  for (Split split : {Split::kRows, Split::kUnits}) {
    const std::string by = split == Split::kRows ? " by rows" : " by units";
    out.push_back({"one worker" + by, Threads{nullptr, 1, split, 200}});
    out.push_back({"three workers" + by, Threads{spawn(0), 3, split, 100000}});
    out.push_back({"late workers" + by, Threads{spawn(20000), 3, split, 50}});
    out.push_back({"inline pool" + by, Threads{inline_pool, 2, split, 200}});
  }
  return out;
}

}  // namespace

int main() {
  const Dims shapes[] = {{1, 1, 1, 0},   {5, 7, 19, 0},  {4, 13, 40, 0}, {3, 5, 21, 10},
                         {3, 3, 5, 13},  {6, 8, 48, 0},  {3, 20, 24, 0}, {2, 19, 33, 7}};
  int checks = 0;
  bool ok = true;
  for (Isa isa : {Isa::kPortable, Isa::kAvx2, Isa::kAvx512}) {
    const KernelTable* k = kernels_for(isa);
    if (!k || !cpu_supports(isa)) continue;
    for (const Dims& d : shapes) {
      for (bool masked : {false, true}) {
        const Problem p = make(d, masked, unsigned(d.H * 31 + d.B + masked));
        const Result want = reference(p);
        Result first;
        bool have_first = false;
        for (const auto& [name, threads] : setups()) {
          const std::string where = std::string(isa_name(isa)) + " T" + std::to_string(d.T) +
                                    " B" + std::to_string(d.B) + " H" + std::to_string(d.H) +
                                    " P" + std::to_string(d.P) + (masked ? " masked " : " ") +
                                    name;
          const Result got = run(*k, p, threads);
          ok &= close(got.hs, want.hs, "hs", where) && close(got.c_n, want.c_n, "c_n", where) &&
                close(got.gates, want.gates, "gates", where) &&
                close(got.d_gates, want.d_gates, "d_gates", where) &&
                close(got.dh0, want.dh0, "dh0", where) && close(got.dc0, want.dc0, "dc0", where) &&
                close(got.dh_emit, want.dh_emit, "dh_emit", where);
          if (have_first && !same(got, first)) {
            std::printf("FAIL %s: not bit-identical to the first thread setup\n", where.c_str());
            ok = false;
          }
          if (!have_first) first = got, have_first = true;
          ++checks;
          if (!ok) return 1;
        }
      }
    }
  }
  // Let late helper tasks (which find their slots taken) finish before the process ends.
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  std::printf("%d checks passed\n", checks);
  return ok ? 0 : 1;
}
