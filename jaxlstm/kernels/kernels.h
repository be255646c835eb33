// The native LSTM recurrence: what Python passes in, what the kernels write, and which
// instruction-set variants exist. Everything here is float32, row-major, batch rows of B.
//
// Shapes (T steps in scan order, B batch, H hidden, P projection or 0, Hout = P ? P : H):
//   xproj  [T, B, 4H]  x_t @ W_ih^T for every step (computed by XLA)
//   bias   [4H]        b_ih + b_hh, or null
//   w_hh   [4H, Hout]  torch's weight_hh; rows are the gate blocks i, f, g, o
//   w_hr   [P, H]      torch's weight_hr, or null
//   mask   [T, B]      true at valid steps, or null (every step valid)
#pragma once

#include <cstdint>
#include <functional>

namespace jaxlstm {

// Runs a task on another thread (XLA's intra-op pool, or a test's threads). The task may
// start late or, where no pool exists, inline on the calling thread.
using Schedule = std::function<void(std::function<void()>)>;

struct Dims {
  int64_t T, B, H, P;
  int64_t hout() const { return P ? P : H; }
};

struct ForwardArgs {
  Dims d;
  const float* xproj;
  const float* bias;
  const float* w_hh;
  const float* w_hr;
  const float* h0;      // [B, Hout]
  const float* c0;      // [B, H]
  const bool* mask;
  float* hs;            // [T, B, Hout] h after every step (a masked step repeats the carry)
  float* c_n;           // [B, H] final cell state
  // Kept for the backward pass, all null for inference:
  float* cs;            // [T, B, H] c after every step
  float* gates;         // [T, B, 4H] activated gates sigma(i), sigma(f), tanh(g), sigma(o)
  float* tanh_c;        // [T, B, H] tanh(c) of every step
};

struct BackwardArgs {
  Dims d;
  const float* w_hh;
  const float* w_hr;
  const float* gates;   // [T, B, 4H] from the forward pass
  const float* tanh_c;  // [T, B, H]
  const float* cs;      // [T, B, H]
  const float* c0;      // [B, H]
  const bool* mask;
  const float* d_hs;    // [T, B, Hout] cotangent of hs
  const float* d_c_n;   // [B, H] cotangent of c_n
  float* d_gates;       // [T, B, 4H] cotangent of the gate pre-activations (0 at masked steps)
  float* dh0;           // [B, Hout]
  float* dc0;           // [B, H]
  float* dh_emit;       // [T, B, P] total cotangent of each step's h (0 at masked steps), or
                        // null without projection
};

// How a call's work is shared among threads (partition.h): by batch rows, or by hidden units.
enum class Split : int { kUnits = 0, kRows = 1 };

// How a call runs: which workers it may use, how it cuts the work, and how long it waits for
// workers to start.
struct Threads {
  Schedule schedule;        // null: the calling thread alone
  int max_workers = 1;      // the calling thread included
  Split split = Split::kRows;
  int64_t start_timeout_us = 200;
};

enum class Isa : int { kPortable = 0, kAvx2 = 1, kAvx512 = 2 };

struct KernelTable {
  void (*forward)(const ForwardArgs&, const Threads&);
  void (*backward)(const BackwardArgs&, const Threads&);
  double (*fma_flops)(double seconds);  // one thread's multiply-add peak, measured
};

// The variant compiled for `isa`, or null where this build has none.
const KernelTable* kernels_for(Isa isa);
// Whether this processor (and its operating system) runs `isa`'s instructions.
bool cpu_supports(Isa isa);
// A short name: "portable", "avx2", "avx512".
const char* isa_name(Isa isa);

}  // namespace jaxlstm
