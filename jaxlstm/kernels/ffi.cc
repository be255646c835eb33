// The XLA FFI handlers: decode the buffers XLA passes, check that their shapes agree, and run
// the kernel variant Python chose (`isa`) on at most `max_workers` threads of XLA's own
// intra-op pool (the calling thread included), the work cut as Python chose (`split`: 1 by
// batch rows, 0 by hidden units).
//
// Optional operands arrive as empty arrays: a [0] bias means none, a [0, H] w_hr means no
// projection, a [0, 0] mask means every step is valid.
#include <cstdint>
#include <string>
#include <utility>

#include "kernels.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace jaxlstm {
namespace {

using F32 = ffi::Buffer<ffi::F32>;
using Out = ffi::ResultBuffer<ffi::F32>;
using Mask = ffi::Buffer<ffi::PRED>;

ffi::Error bad(const std::string& what) {
  return ffi::Error::InvalidArgument("jaxlstm native kernel: " + what);
}

template <class B>
int64_t dim(const B& b, size_t i) {
  return b.dimensions().size() > i ? b.dimensions()[i] : -1;
}

// The layer's sizes from xproj [T, B, 4H] and w_hr [P, H]; checks w_hh [4H, Hout] and mask.
ffi::Error layer_dims(const F32& xproj, const F32& w_hh, const F32& w_hr, const Mask& mask,
                      Dims* d) {
  if (xproj.dimensions().size() != 3 || dim(xproj, 2) % 4) return bad("xproj must be [T, B, 4H]");
  d->T = dim(xproj, 0);
  d->B = dim(xproj, 1);
  d->H = dim(xproj, 2) / 4;
  d->P = w_hr.element_count() ? dim(w_hr, 0) : 0;
  if (d->P && dim(w_hr, 1) != d->H) return bad("w_hr must be [P, H]");
  if (dim(w_hh, 0) != 4 * d->H || dim(w_hh, 1) != d->hout()) return bad("w_hh must be [4H, Hout]");
  if (mask.element_count() && (dim(mask, 0) != d->T || dim(mask, 1) != d->B))
    return bad("mask must be [T, B] or empty");
  return ffi::Error::Success();
}

ffi::Error threads_for(ffi::ThreadPool& pool, int64_t isa, int64_t max_workers, int64_t split,
                       const KernelTable** kernels, Threads* threads) {
  *kernels = kernels_for(static_cast<Isa>(isa));
  if (!*kernels || !cpu_supports(static_cast<Isa>(isa)))
    return bad("instruction set " + std::to_string(isa) + " is not available here");
  if (split != int64_t(Split::kRows) && split != int64_t(Split::kUnits))
    return bad("split must be 0 (units) or 1 (rows), got " + std::to_string(split));
  threads->split = static_cast<Split>(split);
  threads->max_workers = int(max_workers < 1 ? 1 : max_workers);
  if (threads->max_workers > 1 && pool.num_threads() > 0) {
    ffi::ThreadPool* p = &pool;
    threads->schedule = [p](std::function<void()> task) { p->Schedule(std::move(task)); };
  }
  return ffi::Error::Success();
}

const bool* mask_data(const Mask& mask) {
  return mask.element_count() ? mask.typed_data() : nullptr;
}

ffi::Error forward_impl(ffi::ThreadPool pool, F32 xproj, F32 bias, F32 w_hh, F32 w_hr, F32 h0, F32 c0,
                        Mask mask, Out hs, Out c_n, Out cs, Out gates, Out tanh_c, int64_t isa,
                        int64_t max_workers, int64_t split, bool keep) {
  ForwardArgs a{};
  if (auto e = layer_dims(xproj, w_hh, w_hr, mask, &a.d); e.failure()) return e;
  const KernelTable* kernels;
  Threads threads;
  if (auto e = threads_for(pool, isa, max_workers, split, &kernels, &threads); e.failure())
    return e;
  a.xproj = xproj.typed_data();
  if (bias.element_count() && bias.element_count() != 4 * a.d.H) return bad("bias must be [4H]");
  a.bias = bias.element_count() ? bias.typed_data() : nullptr;
  a.w_hh = w_hh.typed_data();
  a.w_hr = a.d.P ? w_hr.typed_data() : nullptr;
  a.h0 = h0.typed_data();
  a.c0 = c0.typed_data();
  a.mask = mask_data(mask);
  a.hs = hs->typed_data();
  a.c_n = c_n->typed_data();
  if (keep) {
    a.cs = cs->typed_data();
    a.gates = gates->typed_data();
    a.tanh_c = tanh_c->typed_data();
  }
  kernels->forward(a, threads);
  return ffi::Error::Success();
}

ffi::Error forward_train(ffi::ThreadPool pool, F32 xproj, F32 bias, F32 w_hh, F32 w_hr, F32 h0,
                         F32 c0,
                         Mask mask, Out hs, Out c_n, Out cs, Out gates, Out tanh_c, int64_t isa,
                         int64_t max_workers, int64_t split) {
  return forward_impl(pool, xproj, bias, w_hh, w_hr, h0, c0, mask, hs, c_n, cs, gates, tanh_c, isa,
                      max_workers, split, true);
}

ffi::Error forward_infer(ffi::ThreadPool pool, F32 xproj, F32 bias, F32 w_hh, F32 w_hr, F32 h0,
                         F32 c0,
                         Mask mask, Out hs, Out c_n, int64_t isa, int64_t max_workers,
                         int64_t split) {
  return forward_impl(pool, xproj, bias, w_hh, w_hr, h0, c0, mask, hs, c_n, c_n, c_n, c_n, isa,
                      max_workers, split, false);
}

ffi::Error backward_impl(ffi::ThreadPool pool, F32 w_hh, F32 w_hr, F32 gates, F32 tanh_c, F32 cs,
                         F32 c0, Mask mask, F32 d_hs, F32 d_c_n, Out d_gates, Out dh0, Out dc0,
                         Out dh_emit, int64_t isa, int64_t max_workers, int64_t split) {
  BackwardArgs a{};
  if (auto e = layer_dims(gates, w_hh, w_hr, mask, &a.d); e.failure()) return e;
  const KernelTable* kernels;
  Threads threads;
  if (auto e = threads_for(pool, isa, max_workers, split, &kernels, &threads); e.failure())
    return e;
  a.w_hh = w_hh.typed_data();
  a.w_hr = a.d.P ? w_hr.typed_data() : nullptr;
  a.gates = gates.typed_data();
  a.tanh_c = tanh_c.typed_data();
  a.cs = cs.typed_data();
  a.c0 = c0.typed_data();
  a.mask = mask_data(mask);
  a.d_hs = d_hs.typed_data();
  a.d_c_n = d_c_n.typed_data();
  a.d_gates = d_gates->typed_data();
  a.dh0 = dh0->typed_data();
  a.dc0 = dc0->typed_data();
  a.dh_emit = a.d.P ? dh_emit->typed_data() : nullptr;
  kernels->backward(a, threads);
  return ffi::Error::Success();
}

// The operands of both forward handlers: xproj, bias, w_hh, w_hr, h0, c0, then the mask.
auto forward_operands() {
  return ffi::Ffi::Bind()
      .Ctx<ffi::ThreadPool>()
      .Arg<F32>()
      .Arg<F32>()
      .Arg<F32>()
      .Arg<F32>()
      .Arg<F32>()
      .Arg<F32>()
      .Arg<Mask>();
}

// The operands of the backward handler: w_hh, w_hr, gates, tanh_c, cs, c0, the mask, d_hs,
// d_c_n.
auto backward_operands() {
  return ffi::Ffi::Bind()
      .Ctx<ffi::ThreadPool>()
      .Arg<F32>()
      .Arg<F32>()
      .Arg<F32>()
      .Arg<F32>()
      .Arg<F32>()
      .Arg<F32>()
      .Arg<Mask>()
      .Arg<F32>()
      .Arg<F32>();
}

// Every handler's attributes, after its results: how Python asked the call to run.
template <class Binding>
auto with_call_attributes(Binding binding) {
  return std::move(binding)
      .template Attr<int64_t>("isa")
      .template Attr<int64_t>("max_workers")
      .template Attr<int64_t>("split");
}

}  // namespace
}  // namespace jaxlstm

// Results: hs, c_n, cs, gates, tanh_c.
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxlstmForwardTrain, jaxlstm::forward_train,
                              jaxlstm::with_call_attributes(jaxlstm::forward_operands()
                                                                .Ret<ffi::Buffer<ffi::F32>>()
                                                                .Ret<ffi::Buffer<ffi::F32>>()
                                                                .Ret<ffi::Buffer<ffi::F32>>()
                                                                .Ret<ffi::Buffer<ffi::F32>>()
                                                                .Ret<ffi::Buffer<ffi::F32>>()));

// Results: hs, c_n.
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxlstmForwardInfer, jaxlstm::forward_infer,
                              jaxlstm::with_call_attributes(jaxlstm::forward_operands()
                                                                .Ret<ffi::Buffer<ffi::F32>>()
                                                                .Ret<ffi::Buffer<ffi::F32>>()));

// Results: d_gates, dh0, dc0, dh_emit.
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxlstmBackward, jaxlstm::backward_impl,
                              jaxlstm::with_call_attributes(jaxlstm::backward_operands()
                                                                .Ret<ffi::Buffer<ffi::F32>>()
                                                                .Ret<ffi::Buffer<ffi::F32>>()
                                                                .Ret<ffi::Buffer<ffi::F32>>()
                                                                .Ret<ffi::Buffer<ffi::F32>>()));
