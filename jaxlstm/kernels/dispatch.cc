// Which kernel variants this build holds, and which the processor can run. The choice among
// them is Python's (jaxlstm/native.py); the kernel never picks one itself.
#include "kernels.h"

namespace jaxlstm {

#ifdef JAXLSTM_HAVE_AVX512
extern const KernelTable kKernels_avx512;
#endif
#ifdef JAXLSTM_HAVE_AVX2
extern const KernelTable kKernels_avx2;
#endif
extern const KernelTable kKernels_portable;

const KernelTable* kernels_for(Isa isa) {
  switch (isa) {
#ifdef JAXLSTM_HAVE_AVX512
    case Isa::kAvx512: return &kKernels_avx512;
#endif
#ifdef JAXLSTM_HAVE_AVX2
    case Isa::kAvx2: return &kKernels_avx2;
#endif
    case Isa::kPortable: return &kKernels_portable;
    default: return nullptr;
  }
}

bool cpu_supports(Isa isa) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  switch (isa) {
    case Isa::kAvx512: return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma");
    case Isa::kAvx2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case Isa::kPortable: return true;
  }
  return false;
#else
  return isa == Isa::kPortable;
#endif
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kAvx512: return "avx512";
    case Isa::kAvx2: return "avx2";
    case Isa::kPortable: return "portable";
  }
  return "unknown";
}

}  // namespace jaxlstm
