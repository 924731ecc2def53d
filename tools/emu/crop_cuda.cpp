// cuda/crop_cuda.cu compiled for the CPU against the emulated runtime (see cuda_runtime.h here).
#include "../../cuda/crop_cuda.cu"
