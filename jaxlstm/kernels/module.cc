// The Python extension `jaxlstm._lstm_kernels`: hands the FFI handlers to jax as capsules and
// says which instruction-set variants were compiled and which this processor runs.
#define PY_SSIZE_T_CLEAN
#include <Python.h>

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

PyMethodDef methods[] = {
    {"registrations", registrations, METH_NOARGS, "{FFI target name: capsule}"},
    {"instruction_sets", instruction_sets, METH_NOARGS,
     "((name, code, compiled, cpu supports), ...) for every kernel variant"},
    {nullptr, nullptr, 0, nullptr}};

PyModuleDef module = {PyModuleDef_HEAD_INIT, "_lstm_kernels",
                      "jaxlstm's native CPU recurrence kernels (XLA FFI handlers).", -1, methods};

}  // namespace

PyMODINIT_FUNC PyInit__lstm_kernels(void) { return PyModule_Create(&module); }
