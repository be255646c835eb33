// The kernels compiled for no particular instruction set (standard C++): this file is built with that instruction
// set enabled, and only called where the processor has it (Python asks cpu_supports first).
#include "backward.h"
#include "forward.h"
#include "probe.h"
#include "simd_portable.h"

namespace jaxlstm {

extern const KernelTable kKernels_portable = {&forward<VecPortable>, &backward<VecPortable>, &fma_flops<VecPortable>};

}  // namespace jaxlstm
