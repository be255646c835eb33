// The kernels compiled for AVX-512 (AVX512F) and FMA: this file is built with that instruction
// set enabled, and only called where the processor has it (Python asks cpu_supports first).
#include "backward.h"
#include "forward.h"
#include "probe.h"
#include "simd_avx512.h"

namespace jaxlstm {

extern const KernelTable kKernels_avx512 = {&forward<VecAvx512>, &backward<VecAvx512>, &fma_flops<VecAvx512>};

}  // namespace jaxlstm
