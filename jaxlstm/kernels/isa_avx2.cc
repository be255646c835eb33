// The kernels compiled for AVX2 and FMA: this file is built with that instruction
// set enabled, and only called where the processor has it (Python asks cpu_supports first).
#include "backward.h"
#include "forward.h"
#include "probe.h"
#include "simd_avx2.h"

namespace jaxlstm {

extern const KernelTable kKernels_avx2 = {&forward<VecAvx2>, &backward<VecAvx2>, &fma_flops<VecAvx2>};

}  // namespace jaxlstm
