// oneDNN's C API (Debian: libdnnl-dev 2.6), used for bf16 (and batched f32) matrix products.
#ifndef REELQL_CDNNL_SHIM_H
#define REELQL_CDNNL_SHIM_H
#include <dnnl.h>
// Debian's oneDNN runs on OpenMP (libgomp): its thread count is OpenMP's.
void omp_set_num_threads(int num_threads);
int omp_get_max_threads(void);
static inline int reelql_dnnl_arg_src(void) { return DNNL_ARG_SRC; }
static inline int reelql_dnnl_arg_weights(void) { return DNNL_ARG_WEIGHTS; }
static inline int reelql_dnnl_arg_dst(void) { return DNNL_ARG_DST; }
static inline int reelql_dnnl_arg_from(void) { return DNNL_ARG_FROM; }
static inline int reelql_dnnl_arg_to(void) { return DNNL_ARG_TO; }
#endif
