// cuda/layers_backward_cuda.cu compiled for the CPU against the emulated runtime (see cuda_runtime.h here).
#include "../../cuda/layers_backward_cuda.cu"
