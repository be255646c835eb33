// The Python extension `jaxlstm._lstm_kernels`: hands the FFI handlers to jax as capsules and
// says which instruction-set variants were compiled and which this processor runs.
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <thread>
#include <vector>

#include "kernels.h"
#include "xla/ffi/api/c_api.h"

extern "C" {
XLA_FFI_Error* JaxlstmForwardTrain(XLA_FFI_CallFrame* frame);
XLA_FFI_Error* JaxlstmForwardInfer(XLA_FFI_CallFrame* frame);
XLA_FFI_Error* JaxlstmBackward(XLA_FFI_CallFrame* frame);
}

namespace {

PyObject* capsule(XLA_FFI_Error* (*handler)(XLA_FFI_CallFrame*)) {
  return PyCapsule_New(reinterpret_cast<void*>(handler), nullptr, nullptr);
}

// {target name: capsule} for jax.ffi.register_ffi_target.
PyObject* registrations(PyObject*, PyObject*) {
  PyObject* d = PyDict_New();
  if (!d) return nullptr;
  const struct {
    const char* name;
    XLA_FFI_Error* (*handler)(XLA_FFI_CallFrame*);
  } targets[] = {{"jaxlstm_forward_train", JaxlstmForwardTrain},
                 {"jaxlstm_forward_infer", JaxlstmForwardInfer},
                 {"jaxlstm_backward", JaxlstmBackward}};
  for (const auto& t : targets) {
    PyObject* c = capsule(t.handler);
    if (!c || PyDict_SetItemString(d, t.name, c) < 0) {
      Py_XDECREF(c);
      Py_DECREF(d);
      return nullptr;
    }
    Py_DECREF(c);
  }
  return d;
}

// ((name, code, compiled, supported by this processor), ...) for every variant.
PyObject* instruction_sets(PyObject*, PyObject*) {
  using jaxlstm::Isa;
  const Isa all[] = {Isa::kAvx512, Isa::kAvx2, Isa::kPortable};
  PyObject* out = PyTuple_New(3);
  if (!out) return nullptr;
  for (int i = 0; i < 3; ++i) {
    const Isa isa = all[i];
    PyObject* item = Py_BuildValue("(siOO)", jaxlstm::isa_name(isa), static_cast<int>(isa),
                                   jaxlstm::kernels_for(isa) ? Py_True : Py_False,
                                   jaxlstm::cpu_supports(isa) ? Py_True : Py_False);
    if (!item) {
      Py_DECREF(out);
      return nullptr;
    }
    PyTuple_SET_ITEM(out, i, item);
  }
  return out;
}

// fma_peak(code, threads, seconds): the FLOP/s of `threads` threads each running the
// variant's FMA probe at once (the GIL released meanwhile).
PyObject* fma_peak(PyObject*, PyObject* args) {
  int code = 0, threads = 1;
  double seconds = 0.2;
  if (!PyArg_ParseTuple(args, "iid", &code, &threads, &seconds)) return nullptr;
  const jaxlstm::KernelTable* k = jaxlstm::kernels_for(static_cast<jaxlstm::Isa>(code));
  if (!k || !jaxlstm::cpu_supports(static_cast<jaxlstm::Isa>(code)) || threads < 1) {
    PyErr_SetString(PyExc_ValueError, "fma_peak: no such variant here, or threads < 1");
    return nullptr;
  }
  std::vector<double> rates(threads);
  Py_BEGIN_ALLOW_THREADS;
  std::vector<std::thread> pool;
  for (int i = 1; i < threads; ++i) pool.emplace_back([&, i] { rates[i] = k->fma_flops(seconds); });
  rates[0] = k->fma_flops(seconds);
  for (auto& t : pool) t.join();
  Py_END_ALLOW_THREADS;
  double total = 0;
  for (double r : rates) total += r;
  return PyFloat_FromDouble(total);
}

PyMethodDef methods[] = {
    {"registrations", registrations, METH_NOARGS, "{FFI target name: capsule}"},
    {"instruction_sets", instruction_sets, METH_NOARGS,
     "((name, code, compiled, cpu supports), ...) for every kernel variant"},
    {"fma_peak", fma_peak, METH_VARARGS,
     "fma_peak(code, threads, seconds): measured multiply-add FLOP/s of that many threads"},
    {nullptr, nullptr, 0, nullptr}};

PyModuleDef module = {PyModuleDef_HEAD_INIT, "_lstm_kernels",
                      "jaxlstm's native CPU recurrence kernels (XLA FFI handlers).", -1, methods};

}  // namespace

PyMODINIT_FUNC PyInit__lstm_kernels(void) { return PyModule_Create(&module); }
