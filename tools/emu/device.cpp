// cuda/device.cu compiled for the CPU against the emulated runtime (see cuda_runtime.h here).
#include "../../cuda/device.cu"
