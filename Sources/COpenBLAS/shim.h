// OpenBLAS's CBLAS interface (Debian: libopenblas-dev). Used by the Tensors target for f32 GEMM.
#ifndef REELQL_COPENBLAS_SHIM_H
#define REELQL_COPENBLAS_SHIM_H
#include <cblas.h>
#endif
