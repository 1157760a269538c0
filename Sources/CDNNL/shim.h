// oneDNN's C API (Debian: libdnnl-dev 2.6), used for bf16 (and batched f32) matrix products.
#ifndef REELQL_CDNNL_SHIM_H
#define REELQL_CDNNL_SHIM_H
#include <dnnl.h>
// Debian's oneDNN runs on OpenMP (libgomp): its thread count is OpenMP's.
void omp_set_num_threads(int num_threads);
int omp_get_max_threads(void);
int omp_get_thread_num(void);
int omp_get_num_threads(void);
// libgomp's entry point for `#pragma omp parallel` (what GCC emits): runs fn(data) on a team.
void GOMP_parallel(void (*fn)(void *), void *data, unsigned num_threads, unsigned int flags);

/// Runs body(context, i) for i in [0, n) on OpenMP's team (the team oneDNN uses), statically
/// split: thread t takes a contiguous share. Blocks until all are done.
typedef void (*reelql_parallel_body)(void *context, long begin, long end);
struct reelql_parallel_job { reelql_parallel_body body; void *context; long n; };
static void reelql_parallel_trampoline(void *data) {
    struct reelql_parallel_job *job = (struct reelql_parallel_job *)data;
    long t = omp_get_thread_num(), nt = omp_get_num_threads();
    long begin = job->n * t / nt, end = job->n * (t + 1) / nt;
    if (begin < end) job->body(job->context, begin, end);
}
static inline void reelql_parallel(long n, unsigned threads, reelql_parallel_body body, void *context) {
    struct reelql_parallel_job job = { body, context, n };
    GOMP_parallel(reelql_parallel_trampoline, &job, threads, 0);
}
static inline int reelql_dnnl_arg_src(void) { return DNNL_ARG_SRC; }
static inline int reelql_dnnl_arg_weights(void) { return DNNL_ARG_WEIGHTS; }
static inline int reelql_dnnl_arg_dst(void) { return DNNL_ARG_DST; }
static inline int reelql_dnnl_arg_from(void) { return DNNL_ARG_FROM; }
static inline int reelql_dnnl_arg_to(void) { return DNNL_ARG_TO; }
#endif
