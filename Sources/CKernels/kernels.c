// reelql CPU kernels. Each kernel body is written once as portable C and compiled three times:
// for AVX-512, for AVX2+FMA and for any x86-64 (or other) CPU; `rq_cpu_level` picks one at run
// time. The bodies are written so that the compiler vectorises them (no calls in inner loops;
// exp is a polynomial). The bf16 matrix × vector kernels use intrinsics directly.
#include "ckernels.h"
#include <math.h>
#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>
#define RQ_X86 1
#else
#define RQ_X86 0
#endif

// ---- CPU detection --------------------------------------------------------------------------
static int rq_level = -1;

static int rq_detect(void) {
#if RQ_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq")) {
        return __builtin_cpu_supports("avx512bf16") ? 3 : 2;
    }
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return 1;
#endif
    return 0;
}

// A level forced on one thread (tests of the portable paths); -1: none. Thread-local, so that
// forcing it never changes the kernels other threads of the process run.
static _Thread_local int rq_forced = -1;

int rq_cpu_level(void) {
    if (rq_forced >= 0) return rq_forced;
    int l = __atomic_load_n(&rq_level, __ATOMIC_RELAXED);
    if (l < 0) { l = rq_detect(); __atomic_store_n(&rq_level, l, __ATOMIC_RELAXED); }
    return l;
}

int rq_set_cpu_level(int level) {
    int best = rq_detect();
    rq_forced = level < 0 ? -1 : (level < best ? level : best);
    return rq_forced < 0 ? best : rq_forced;
}

int rq_forced_cpu_level(void) { return rq_forced; }

#if RQ_X86
#define RQ_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")))
#define RQ_AVX2 __attribute__((target("avx2,fma,f16c")))
#define RQ_MULTIVERSION(name, params, args)                                   \
    static RQ_AVX512 void name##_avx512 params { name##_body args; }          \
    static RQ_AVX2 void name##_avx2 params { name##_body args; }              \
    static void name##_generic params { name##_body args; }                   \
    void rq_##name params {                                                   \
        int l = rq_cpu_level();                                               \
        if (l >= 2) name##_avx512 args;                                       \
        else if (l == 1) name##_avx2 args;                                    \
        else name##_generic args;                                             \
    }
#else
#define RQ_MULTIVERSION(name, params, args) \
    void rq_##name params { name##_body args; }
#endif

#define RQ_INLINE static inline __attribute__((always_inline))
/// Before each loop over a tile's accumulators (compile-time counts): a loop the compiler leaves
/// rolled keeps the accumulator array in memory (cleared by a memset call per tile).
#define RQ_UNROLL _Pragma("clang loop unroll(full)")

// ---- scalar helpers (inlined into every version) ---------------------------------------------
RQ_INLINE float bits_to_f32(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
RQ_INLINE uint32_t f32_to_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
RQ_INLINE float bf16_f32(uint16_t h) { return bits_to_f32((uint32_t)h << 16); }

/// e^x with a relative error below 2e-7 over the float range (Cephes-style: 2^n · p(r)).
RQ_INLINE float rq_exp(float x) {
    x = x < -87.3f ? -87.3f : (x > 88.3f ? 88.3f : x);
    float n = __builtin_floorf(x * 1.44269504088896341f + 0.5f);
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t e = (int32_t)n + 127;
    return p * bits_to_f32((uint32_t)e << 23);
}

RQ_INLINE float rq_sigmoid(float x) { return 1.0f / (1.0f + rq_exp(-x)); }

// ---- conversions ----------------------------------------------------------------------------
RQ_INLINE void bf16_to_f32_body(const uint16_t *src, float *dst, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = bf16_f32(src[i]);
}
RQ_MULTIVERSION(bf16_to_f32, (const uint16_t *src, float *dst, size_t n), (src, dst, n))

RQ_INLINE void f32_to_bf16_body(const float *src, uint16_t *dst, size_t n) {
    for (size_t i = 0; i < n; i++) {
        uint32_t u = f32_to_bits(src[i]);
        uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
        int nan = (u & 0x7fffffffu) > 0x7f800000u;
        dst[i] = (uint16_t)(nan ? ((u >> 16) | 0x40u) : rounded);
    }
}
RQ_MULTIVERSION(f32_to_bf16, (const float *src, uint16_t *dst, size_t n), (src, dst, n))

/// IEEE half → float for any value (normals, subnormals, inf, NaN).
RQ_INLINE float f16_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    if (exp == 0x1f) return bits_to_f32(sign | 0x7f800000u | (man << 13));
    if (exp == 0) {
        float v = (float)man * 5.9604644775390625e-8f; // 2^-24
        return sign ? -v : v;
    }
    return bits_to_f32(sign | ((exp + 112) << 23) | (man << 13));
}

RQ_INLINE void f16_to_f32_body(const uint16_t *src, float *dst, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = f16_f32(src[i]);
}
RQ_MULTIVERSION(f16_to_f32, (const uint16_t *src, float *dst, size_t n), (src, dst, n))

// Sums below may be reassociated (vectorised): results differ from a sequential sum only by
// rounding. (rq_exp above keeps its exact operation order: flags stay with the code they were
// written in, also when inlined.)
#pragma clang fp reassociate(on)

// ---- bf16 / f16 matrix × vector -------------------------------------------------------------
// Weights and activations are both bf16; products are exact in f32 and summed in f32.
RQ_INLINE void gemm_small_bf16_body(const uint16_t *w, const uint16_t *x, float *y, size_t batch, size_t rows,
                                    size_t cols, size_t r0, size_t r1) {
    for (size_t r = r0; r < r1; r++) {
        const uint16_t *row = w + r * cols;
        for (size_t b = 0; b < batch; b++) {
            const uint16_t *xb = x + b * cols;
            float s = 0;
            for (size_t k = 0; k < cols; k++) s += bf16_f32(row[k]) * bf16_f32(xb[k]);
            y[b * rows + r] = s;
        }
    }
}

#if RQ_X86
#define RQ_AVX512BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,fma")))

/// Σ bf16 products of w[k0..<k1] and x[k0..<k1], in index order. One compiled body (never
/// inlined) serves every kernel below, so a row's value never depends on which kernel (or how
/// many vectors) computed it.
static __attribute__((noinline)) float bf16_dot_plain(const uint16_t *w, const uint16_t *x, size_t k0, size_t k1) {
    float s = 0;
#pragma clang loop vectorize(disable)
    for (size_t k = k0; k < k1; k++) s += bf16_f32(w[k]) * bf16_f32(x[k]);
    return s;
}

/// Several vectors (decoding sequences) × weight rows, with exactly the arithmetic
/// `gemv_bf16_dp` applies to one vector: per row, two accumulators over 64-value steps
/// (values k…k+31 and k+32…k+63), their sum reduced, then the tail; rows past the last
/// complete group of four in [r0, r1) as `bf16_dot_plain`. So each sequence's result is
/// bit-identical to decoding it alone. Two rows × up to four vectors share each step's loads.
/// Rows w0 and w1 × `NB` vectors (a compile-time count at every call, so the accumulators stay
/// in registers). `prefetch`: the next pair's rows (short rows) or 1 KB ahead in these (long rows).
static inline __attribute__((always_inline)) RQ_AVX512BF16 void pair_bf16_dp(
        const uint16_t *w0, const uint16_t *w1, const uint16_t *xs, size_t cols, size_t kv, float *y0, float *y1,
        size_t ystride, const int NB, int prefetch) {
    __m512 a0[4], c0[4], a1[4], c1[4];
    for (int b = 0; b < NB; b++) { a0[b] = c0[b] = a1[b] = c1[b] = _mm512_setzero_ps(); }
    // Prefetches go to L2 (T1), far ahead: with several vectors a row pair takes long enough
    // that prefetching into L1 a pair ahead leaves too few reads in flight (measured at 8
    // vectors, 8960 × 1536: 1.7 ms with T0 one pair ahead, 1.2 ms with T1 two pairs ahead;
    // one vector: 1.1 ms).
    const char *pf = (const char *)(w0 + 4 * cols);
    int ahead = cols <= 2048;
    for (size_t k = 0; k < kv; k += 64) {
        if (prefetch) {
            if (ahead) {
                for (int line = 0; line < 4; line++) _mm_prefetch(pf + line * 64, _MM_HINT_T1);
                pf += 256;
            } else {
                _mm_prefetch((const char *)(w0 + k + 1024), _MM_HINT_T1);
                _mm_prefetch((const char *)(w0 + k + 1056), _MM_HINT_T1);
                _mm_prefetch((const char *)(w1 + k + 1024), _MM_HINT_T1);
                _mm_prefetch((const char *)(w1 + k + 1056), _MM_HINT_T1);
            }
        }
        __m512bh v0 = (__m512bh)_mm512_loadu_si512((const void *)(w0 + k));
        __m512bh u0 = (__m512bh)_mm512_loadu_si512((const void *)(w0 + k + 32));
        __m512bh v1 = (__m512bh)_mm512_loadu_si512((const void *)(w1 + k));
        __m512bh u1 = (__m512bh)_mm512_loadu_si512((const void *)(w1 + k + 32));
        for (int b = 0; b < NB; b++) {
            __m512bh x0 = (__m512bh)_mm512_loadu_si512((const void *)(xs + b * cols + k));
            __m512bh x1 = (__m512bh)_mm512_loadu_si512((const void *)(xs + b * cols + k + 32));
            a0[b] = _mm512_dpbf16_ps(a0[b], v0, x0);
            c0[b] = _mm512_dpbf16_ps(c0[b], u0, x1);
            a1[b] = _mm512_dpbf16_ps(a1[b], v1, x0);
            c1[b] = _mm512_dpbf16_ps(c1[b], u1, x1);
        }
    }
    for (int b = 0; b < NB; b++) {
        const uint16_t *xb = xs + b * cols;
        y0[b * ystride] = _mm512_reduce_add_ps(_mm512_add_ps(a0[b], c0[b])) + (kv < cols ? bf16_dot_plain(w0, xb, kv, cols) : 0.0f);
        y1[b * ystride] = _mm512_reduce_add_ps(_mm512_add_ps(a1[b], c1[b])) + (kv < cols ? bf16_dot_plain(w1, xb, kv, cols) : 0.0f);
    }
}

static RQ_AVX512BF16 void gemm_small_bf16_dp(const uint16_t *w, const uint16_t *x, float *y, size_t batch, size_t rows,
                                             size_t cols, size_t r0, size_t r1) {
    size_t kv = cols / 64 * 64;
    size_t grouped = r0 + (r1 - r0) / 4 * 4;
    for (size_t r = r0; r < grouped; r += 2) {
        const uint16_t *w0 = w + r * cols, *w1 = w0 + cols;
        for (size_t b0 = 0; b0 < batch; b0 += 4) {
            const uint16_t *xs = x + b0 * cols;
            float *y0 = y + b0 * rows + r;
            int first = b0 == 0; // later blocks find the pair in cache
            switch (batch - b0 < 4 ? batch - b0 : 4) {
            case 1: pair_bf16_dp(w0, w1, xs, cols, kv, y0, y0 + 1, rows, 1, first); break;
            case 2: pair_bf16_dp(w0, w1, xs, cols, kv, y0, y0 + 1, rows, 2, first); break;
            case 3: pair_bf16_dp(w0, w1, xs, cols, kv, y0, y0 + 1, rows, 3, first); break;
            default: pair_bf16_dp(w0, w1, xs, cols, kv, y0, y0 + 1, rows, 4, first); break;
            }
        }
    }
    for (size_t r = grouped; r < r1; r++)
        for (size_t b = 0; b < batch; b++) y[b * rows + r] = bf16_dot_plain(w + r * cols, x + b * cols, 0, cols);
}

/// One vector, 4 rows at a time, two accumulators per row to hide the instruction latency.
static RQ_AVX512BF16 void gemv_bf16_dp(const uint16_t *w, const uint16_t *x, float *y, size_t cols, size_t r0, size_t r1) {
    size_t kv = cols / 64 * 64;
    // Short rows (≤ 2048 values: a 4-row group of ≤ 16 KB, as the decoders' hidden sizes give):
    // prefetch the next group, 512 bytes per step, so each group starts with its four rows
    // cached; prefetching ahead within a row would run into the next row of the same group and
    // leave every group to start cold (measured: 0.74 of the read bandwidth at 1536 columns).
    // Longer rows prefetch 1 KB ahead within each row. Prefetches never fault past the end.
    int next_group = cols <= 2048;
    size_t r = r0;
    for (; r + 4 <= r1; r += 4) {
        const uint16_t *w0 = w + r * cols, *w1 = w0 + cols, *w2 = w1 + cols, *w3 = w2 + cols;
        const char *pf = (const char *)(w0 + 4 * cols);
        __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
        __m512 c0 = _mm512_setzero_ps(), c1 = _mm512_setzero_ps(), c2 = _mm512_setzero_ps(), c3 = _mm512_setzero_ps();
        for (size_t k = 0; k < kv; k += 64) {
            if (next_group) {
                for (int line = 0; line < 8; line++) _mm_prefetch(pf + line * 64, _MM_HINT_T0);
                pf += 512;
            } else {
                _mm_prefetch((const char *)(w0 + k + 512), _MM_HINT_T0);
                _mm_prefetch((const char *)(w1 + k + 512), _MM_HINT_T0);
                _mm_prefetch((const char *)(w2 + k + 512), _MM_HINT_T0);
                _mm_prefetch((const char *)(w3 + k + 512), _MM_HINT_T0);
            }
            __m512bh x0 = (__m512bh)_mm512_loadu_si512((const void *)(x + k));
            __m512bh x1 = (__m512bh)_mm512_loadu_si512((const void *)(x + k + 32));
            a0 = _mm512_dpbf16_ps(a0, (__m512bh)_mm512_loadu_si512((const void *)(w0 + k)), x0);
            a1 = _mm512_dpbf16_ps(a1, (__m512bh)_mm512_loadu_si512((const void *)(w1 + k)), x0);
            a2 = _mm512_dpbf16_ps(a2, (__m512bh)_mm512_loadu_si512((const void *)(w2 + k)), x0);
            a3 = _mm512_dpbf16_ps(a3, (__m512bh)_mm512_loadu_si512((const void *)(w3 + k)), x0);
            c0 = _mm512_dpbf16_ps(c0, (__m512bh)_mm512_loadu_si512((const void *)(w0 + k + 32)), x1);
            c1 = _mm512_dpbf16_ps(c1, (__m512bh)_mm512_loadu_si512((const void *)(w1 + k + 32)), x1);
            c2 = _mm512_dpbf16_ps(c2, (__m512bh)_mm512_loadu_si512((const void *)(w2 + k + 32)), x1);
            c3 = _mm512_dpbf16_ps(c3, (__m512bh)_mm512_loadu_si512((const void *)(w3 + k + 32)), x1);
        }
        // The same arithmetic per row as gemm_small_bf16_dp (see there).
        y[r] = _mm512_reduce_add_ps(_mm512_add_ps(a0, c0)) + (kv < cols ? bf16_dot_plain(w0, x, kv, cols) : 0.0f);
        y[r + 1] = _mm512_reduce_add_ps(_mm512_add_ps(a1, c1)) + (kv < cols ? bf16_dot_plain(w1, x, kv, cols) : 0.0f);
        y[r + 2] = _mm512_reduce_add_ps(_mm512_add_ps(a2, c2)) + (kv < cols ? bf16_dot_plain(w2, x, kv, cols) : 0.0f);
        y[r + 3] = _mm512_reduce_add_ps(_mm512_add_ps(a3, c3)) + (kv < cols ? bf16_dot_plain(w3, x, kv, cols) : 0.0f);
    }
    for (; r < r1; r++) y[r] = bf16_dot_plain(w + r * cols, x, 0, cols);
}

static RQ_AVX512 void gemm_small_bf16_avx512(const uint16_t *w, const uint16_t *x, float *y, size_t batch, size_t rows,
                                             size_t cols, size_t r0, size_t r1) { gemm_small_bf16_body(w, x, y, batch, rows, cols, r0, r1); }
static RQ_AVX2 void gemm_small_bf16_avx2(const uint16_t *w, const uint16_t *x, float *y, size_t batch, size_t rows,
                                         size_t cols, size_t r0, size_t r1) { gemm_small_bf16_body(w, x, y, batch, rows, cols, r0, r1); }
#endif

void rq_gemm_small_bf16(const uint16_t *w, const uint16_t *x, float *y, size_t batch, size_t rows, size_t cols,
                        size_t r0, size_t r1) {
#if RQ_X86
    int l = rq_cpu_level();
    if (l >= 3) { if (batch == 1) gemv_bf16_dp(w, x, y, cols, r0, r1); else gemm_small_bf16_dp(w, x, y, batch, rows, cols, r0, r1); return; }
    if (l == 2) { gemm_small_bf16_avx512(w, x, y, batch, rows, cols, r0, r1); return; }
    if (l == 1) { gemm_small_bf16_avx2(w, x, y, batch, rows, cols, r0, r1); return; }
#endif
    gemm_small_bf16_body(w, x, y, batch, rows, cols, r0, r1);
}

void rq_gemv_bf16(const uint16_t *w, const uint16_t *x, float *y, size_t cols, size_t r0, size_t r1) {
    rq_gemm_small_bf16(w, x, y, 1, 0, cols, r0, r1);
}

RQ_INLINE void gemv_f16_body(const uint16_t *w, const float *x, float *y, size_t cols, size_t r0, size_t r1) {
    for (size_t r = r0; r < r1; r++) {
        const uint16_t *row = w + r * cols;
        float s = 0;
        for (size_t k = 0; k < cols; k++) s += f16_f32(row[k]) * x[k];
        y[r] = s;
    }
}
RQ_MULTIVERSION(gemv_f16, (const uint16_t *w, const float *x, float *y, size_t cols, size_t r0, size_t r1), (w, x, y, cols, r0, r1))

// ---- int8 weights × int8 activations ----------------------------------------------------------
// Weights: symmetric int8 per output row, scale = max|w| / 127. Activations: per row, scale =
// max|x| / 127, stored as u8 = q + 128 (VNNI multiplies unsigned by signed bytes); the 128 · Σw
// the offset adds is taken off with each weight row's precomputed sum. Integer sums are exact,
// so every kernel here (and a GEMM's s32 accumulators) gives a row the same value, whatever the
// order, the batch or the CPU; the float epilogue is one expression, written once.

/// (Σ x·w − 128·Σw) · (scale_x · scale_w): the epilogue every int8 product applies.
/// Written without reassociation (as every int8 expression that rounds), so that no kernel
/// computes it in another order.
RQ_INLINE float s8_epilogue(int32_t acc, int32_t wsum, float xs, float ws) {
#pragma clang fp reassociate(off)
    return (float)(acc - 128 * wsum) * (xs * ws);
}

/// Quantizes one row into bytes q + offset (offset 128: u8 activations; 0: s8 weights, stored
/// as their two's-complement bytes): returns 0, or 1 when the row holds inf or NaN (then its
/// scale is NaN and its values `offset`: every product with it is NaN, as a float product's
/// would be).
RQ_INLINE int quantize_row(const float *x, size_t n, uint8_t *q, int32_t offset, float *scale) {
    // max |x| on the bit patterns: without the sign they order as the magnitudes do, inf and
    // NaN above every finite value. An integer maximum vectorises (a float one, with NaN's
    // rules, stays one element at a time), and gives the same max |x| for a finite row.
    uint32_t top = 0;
    for (size_t k = 0; k < n; k++) {
        uint32_t a = f32_to_bits(x[k]) & 0x7fffffffu;
        top = a > top ? a : top;
    }
    int bad = top >= 0x7f800000u; // some value is inf or NaN
    float amax = bits_to_f32(top);
    // A row of zeros, or of values so small that 127 / max overflows (below 1e-30: their
    // products are zero in f32 anyway), quantizes to zeros with scale 0.
    if (bad || amax < 1e-30f) {
        for (size_t k = 0; k < n; k++) q[k] = (uint8_t)offset;
        *scale = bad ? NAN : 0.0f;
        return bad;
    }
    float inv = 127.0f / amax;
    for (size_t k = 0; k < n; k++) {
#pragma clang fp reassociate(off)
        // x · (127 / max), as written: reassociated to (x · 127) / max it rounds differently.
        float v = __builtin_rintf(x[k] * inv); // nearest, ties to even
        v = v > 127.0f ? 127.0f : (v < -127.0f ? -127.0f : v);
        q[k] = (uint8_t)((int32_t)v + offset);
    }
    {
#pragma clang fp reassociate(off)
        *scale = amax / 127.0f;
    }
    return 0;
}

RQ_INLINE void quantize_activations_body(const float *x, size_t rows, size_t cols, uint8_t *q, float *scales) {
    for (size_t r = 0; r < rows; r++) quantize_row(x + r * cols, cols, q + r * cols, 128, scales + r);
}
RQ_MULTIVERSION(quantize_activations, (const float *x, size_t rows, size_t cols, uint8_t *q, float *scales), (x, rows, cols, q, scales))

RQ_INLINE void quantize_weights_v_body(const float *w, size_t rows, size_t cols, int8_t *q, float *scales, int32_t *sums,
                                     size_t *bad) {
    size_t n = 0;
    for (size_t r = 0; r < rows; r++) {
        n += (size_t)quantize_row(w + r * cols, cols, (uint8_t *)(q + r * cols), 0, scales + r);
        int32_t s = 0;
        for (size_t k = 0; k < cols; k++) s += q[r * cols + k];
        sums[r] = s;
    }
    *bad = n;
}
RQ_MULTIVERSION(quantize_weights_v, (const float *w, size_t rows, size_t cols, int8_t *q, float *scales, int32_t *sums, size_t *bad),
                (w, rows, cols, q, scales, sums, bad))
size_t rq_quantize_weights(const float *w, size_t rows, size_t cols, int8_t *q, float *scales, int32_t *sums) {
    size_t bad = 0;
    rq_quantize_weights_v(w, rows, cols, q, scales, sums, &bad);
    return bad;
}

RQ_INLINE void gemm_small_s8_body(const int8_t *w, const float *ws, const int32_t *wsum, const uint8_t *x, const float *xs,
                                  float *y, size_t batch, size_t rows, size_t cols, size_t r0, size_t r1) {
    for (size_t r = r0; r < r1; r++) {
        const int8_t *row = w + r * cols;
        for (size_t b = 0; b < batch; b++) {
            const uint8_t *xb = x + b * cols;
            int32_t s = 0;
            for (size_t k = 0; k < cols; k++) s += (int32_t)xb[k] * (int32_t)row[k];
            y[b * rows + r] = s8_epilogue(s, wsum[r], xs[b], ws[r]);
        }
    }
}

RQ_INLINE void dequantize_s32_body(const int32_t *acc, const float *ws, const int32_t *wsum, const float *xs,
                                   const float *bias, float *y, size_t rows, size_t n) {
    // y may be acc's own memory: each element is read before it is written.
    if (bias) {
        // The bias added to the rounded product, as a separate y += b would add it.
        for (size_t m = 0; m < rows; m++)
#pragma clang loop vectorize(assume_safety)
            for (size_t j = 0; j < n; j++) {
                float v = s8_epilogue(acc[m * n + j], wsum[j], xs[m], ws[j]);
                y[m * n + j] = v + bias[j];
            }
    } else {
        for (size_t m = 0; m < rows; m++)
#pragma clang loop vectorize(assume_safety)
            for (size_t j = 0; j < n; j++) y[m * n + j] = s8_epilogue(acc[m * n + j], wsum[j], xs[m], ws[j]);
    }
}
RQ_MULTIVERSION(dequantize_s32, (const int32_t *acc, const float *ws, const int32_t *wsum, const float *xs, const float *bias, float *y, size_t rows, size_t n),
                (acc, ws, wsum, xs, bias, y, rows, n))

#if RQ_X86
#define RQ_AVX512VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")))

/// R weight rows × NB activation rows (compile-time counts at every call, so the accumulators
/// stay in registers): 64 bytes a step with `vpdpbusd`, the last partial step masked.
/// `prefetch`: R cache lines a step, into L2, of the group of R rows at least 12 KiB ahead. (Into
/// L1 one group ahead, as before, a step's compute and the next rows' misses did not overlap:
/// batch 8 on 35840×1536 took 0.73 of the time with this, batch 4 0.57–0.66, batch 1 0.87, in a
/// harness alternating the two 150 times; rows of 8960 unchanged.)
static inline __attribute__((always_inline)) RQ_AVX512VNNI void block_s8_vnni(
        const int8_t *w, const float *ws, const int32_t *wsum, const uint8_t *x, const float *xs, float *y,
        size_t rows, size_t cols, const int R, const int NB, int prefetch) {
    __m512i acc[4][4];
    for (int i = 0; i < R; i++)
        for (int b = 0; b < NB; b++) acc[i][b] = _mm512_setzero_si512();
    size_t group = (size_t)R * cols, ahead = (12288 + group - 1) / group;
    const char *pf = (const char *)(w + group * ahead);
    size_t kv = cols / 64 * 64;
    for (size_t k = 0; k < kv; k += 64) {
        if (prefetch) {
            for (int i = 0; i < R; i++) _mm_prefetch(pf + i * 64, _MM_HINT_T1);
            pf += R * 64;
        }
        __m512i wv[4];
        for (int i = 0; i < R; i++) wv[i] = _mm512_loadu_si512((const void *)(w + i * cols + k));
        for (int b = 0; b < NB; b++) {
            __m512i xv = _mm512_loadu_si512((const void *)(x + b * cols + k));
            for (int i = 0; i < R; i++) acc[i][b] = _mm512_dpbusd_epi32(acc[i][b], xv, wv[i]);
        }
    }
    if (kv < cols) {
        __mmask64 m = _cvtu64_mask64(~0ULL >> (64 - (cols - kv)));
        __m512i wv[4];
        for (int i = 0; i < R; i++) wv[i] = _mm512_maskz_loadu_epi8(m, (const void *)(w + i * cols + kv));
        for (int b = 0; b < NB; b++) {
            __m512i xv = _mm512_maskz_loadu_epi8(m, (const void *)(x + b * cols + kv));
            for (int i = 0; i < R; i++) acc[i][b] = _mm512_dpbusd_epi32(acc[i][b], xv, wv[i]);
        }
    }
    for (int i = 0; i < R; i++)
        for (int b = 0; b < NB; b++) y[b * rows + i] = s8_epilogue(_mm512_reduce_add_epi32(acc[i][b]), wsum[i], xs[b], ws[i]);
}

static RQ_AVX512VNNI void gemm_small_s8_vnni(const int8_t *w, const float *ws, const int32_t *wsum, const uint8_t *x,
                                             const float *xs, float *y, size_t batch, size_t rows, size_t cols, size_t r0, size_t r1) {
    size_t r = r0;
    if (batch == 1) {
        // One vector: four rows a step (four independent sums in flight).
        for (; r + 4 <= r1; r += 4)
            block_s8_vnni(w + r * cols, ws + r, wsum + r, x, xs, y + r, rows, cols, 4, 1, 1);
    } else {
        // Several vectors: two rows × up to four vectors share each step's loads.
        for (; r + 2 <= r1; r += 2) {
            for (size_t b0 = 0; b0 < batch; b0 += 4) {
                const uint8_t *xb = x + b0 * cols;
                float *yb = y + b0 * rows + r;
                int first = b0 == 0; // later blocks find the pair in cache
                switch (batch - b0 < 4 ? batch - b0 : 4) {
                case 1: block_s8_vnni(w + r * cols, ws + r, wsum + r, xb, xs + b0, yb, rows, cols, 2, 1, first); break;
                case 2: block_s8_vnni(w + r * cols, ws + r, wsum + r, xb, xs + b0, yb, rows, cols, 2, 2, first); break;
                case 3: block_s8_vnni(w + r * cols, ws + r, wsum + r, xb, xs + b0, yb, rows, cols, 2, 3, first); break;
                default: block_s8_vnni(w + r * cols, ws + r, wsum + r, xb, xs + b0, yb, rows, cols, 2, 4, first); break;
                }
            }
        }
    }
    for (; r < r1; r++)
        for (size_t b = 0; b < batch; b++)
            block_s8_vnni(w + r * cols, ws + r, wsum + r, x + b * cols, xs + b, y + b * rows + r, rows, cols, 1, 1, 0);
}

static int rq_vnni = -1;
int rq_has_vnni(void) {
    if (rq_cpu_level() < 2) return 0;
    int v = __atomic_load_n(&rq_vnni, __ATOMIC_RELAXED);
    if (v < 0) {
        __builtin_cpu_init();
        v = __builtin_cpu_supports("avx512vnni") ? 1 : 0;
        __atomic_store_n(&rq_vnni, v, __ATOMIC_RELAXED);
    }
    return v;
}

static RQ_AVX512 void gemm_small_s8_avx512(const int8_t *w, const float *ws, const int32_t *wsum, const uint8_t *x, const float *xs,
                                           float *y, size_t batch, size_t rows, size_t cols, size_t r0, size_t r1) {
    gemm_small_s8_body(w, ws, wsum, x, xs, y, batch, rows, cols, r0, r1);
}
static RQ_AVX2 void gemm_small_s8_avx2(const int8_t *w, const float *ws, const int32_t *wsum, const uint8_t *x, const float *xs,
                                       float *y, size_t batch, size_t rows, size_t cols, size_t r0, size_t r1) {
    gemm_small_s8_body(w, ws, wsum, x, xs, y, batch, rows, cols, r0, r1);
}
#else
int rq_has_vnni(void) { return 0; }
#endif

void rq_gemm_small_s8(const int8_t *w, const float *ws, const int32_t *wsum, const uint8_t *x, const float *xs, float *y,
                      size_t batch, size_t rows, size_t cols, size_t r0, size_t r1) {
#if RQ_X86
    if (rq_has_vnni()) { gemm_small_s8_vnni(w, ws, wsum, x, xs, y, batch, rows, cols, r0, r1); return; }
    int l = rq_cpu_level();
    if (l >= 2) { gemm_small_s8_avx512(w, ws, wsum, x, xs, y, batch, rows, cols, r0, r1); return; }
    if (l == 1) { gemm_small_s8_avx2(w, ws, wsum, x, xs, y, batch, rows, cols, r0, r1); return; }
#endif
    gemm_small_s8_body(w, ws, wsum, x, xs, y, batch, rows, cols, r0, r1);
}

RQ_INLINE void sum_f32_v_body(const float *x, size_t n, double *out) {
    float s0 = 0;
    for (size_t i = 0; i < n; i++) s0 += x[i];
    *out = s0;
}
RQ_MULTIVERSION(sum_f32_v, (const float *x, size_t n, double *out), (x, n, out))
double rq_sum_f32(const float *x, size_t n) { double s; rq_sum_f32_v(x, n, &s); return s; }

// ---- norms, softmax, activations ------------------------------------------------------------
RQ_INLINE void rmsnorm_body(const float *x, const float *w, float *y, size_t rows, size_t n, float eps) {
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * n;
        float *yr = y + r * n;
        float ss = 0;
        for (size_t i = 0; i < n; i++) ss += xr[i] * xr[i];
        float inv = 1.0f / sqrtf(ss / (float)n + eps);
        for (size_t i = 0; i < n; i++) yr[i] = (xr[i] * inv) * w[i];
    }
}
RQ_MULTIVERSION(rmsnorm, (const float *x, const float *w, float *y, size_t rows, size_t n, float eps), (x, w, y, rows, n, eps))

RQ_INLINE void layernorm_body(const float *x, const float *w, const float *b, float *y, size_t rows, size_t n, float eps) {
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * n;
        float *yr = y + r * n;
        float s = 0;
        for (size_t i = 0; i < n; i++) s += xr[i];
        float mean = s / (float)n;
        float v = 0;
        for (size_t i = 0; i < n; i++) { float d = xr[i] - mean; v += d * d; }
        float inv = 1.0f / sqrtf(v / (float)n + eps);
        if (w && b) for (size_t i = 0; i < n; i++) yr[i] = (xr[i] - mean) * inv * w[i] + b[i];
        else if (w) for (size_t i = 0; i < n; i++) yr[i] = (xr[i] - mean) * inv * w[i];
        else for (size_t i = 0; i < n; i++) yr[i] = (xr[i] - mean) * inv;
    }
}
RQ_MULTIVERSION(layernorm, (const float *x, const float *w, const float *b, float *y, size_t rows, size_t n, float eps), (x, w, b, y, rows, n, eps))

RQ_INLINE void softmax_body(float *x, size_t rows, size_t n) {
    for (size_t r = 0; r < rows; r++) {
        float *xr = x + r * n;
        float m = -INFINITY;
        for (size_t i = 0; i < n; i++) m = __builtin_fmaxf(m, xr[i]);
        if (m == -INFINITY) { for (size_t i = 0; i < n; i++) xr[i] = 0; continue; }
        float s = 0;
        for (size_t i = 0; i < n; i++) {
            float v = xr[i] == -INFINITY ? 0.0f : rq_exp(xr[i] - m);
            xr[i] = v;
            s += v;
        }
        float inv = 1.0f / s;
        for (size_t i = 0; i < n; i++) xr[i] *= inv;
    }
}
RQ_MULTIVERSION(softmax, (float *x, size_t rows, size_t n), (x, rows, n))

RQ_INLINE void silu_body(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = x[i] * rq_sigmoid(x[i]);
}
RQ_MULTIVERSION(silu, (float *x, size_t n), (x, n))

RQ_INLINE void quick_gelu_body(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = x[i] * rq_sigmoid(1.702f * x[i]);
}
RQ_MULTIVERSION(quick_gelu, (float *x, size_t n), (x, n))

RQ_INLINE void gelu_tanh_body(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        float u = 0.7978845608028654f * (v + 0.044715f * v * v * v);
        // 0.5 · (1 + tanh(u)) = sigmoid(2u): no cancellation in the negative tail.
        x[i] = v * rq_sigmoid(2.0f * u);
    }
}
RQ_MULTIVERSION(gelu_tanh, (float *x, size_t n), (x, n))

void rq_gelu_erf(float *x, size_t n) {
    // 0.5 · (1 + erf(z)) = 0.5 · erfc(−z): accurate in the negative tail too.
    for (size_t i = 0; i < n; i++) x[i] = 0.5f * x[i] * erfcf(-x[i] * 0.70710678118654752f);
}

/// A row's activation (0 SiLU, 1 GELU, 2 GELU tanh, else quick GELU) in place, then its bytes as
/// rq_quantize_activations makes them. The same inlined bodies the separate kernels run (the GELU
/// with erf calls its one function).
RQ_INLINE void activate_quantize_row(float *row, size_t n, int act, uint8_t *q, float *scale) {
    switch (act) {
    case 0: silu_body(row, n); break;
    case 1: rq_gelu_erf(row, n); break;
    case 2: gelu_tanh_body(row, n); break;
    default: quick_gelu_body(row, n); break;
    }
    quantize_row(row, n, q, 128, scale);
}

/// rq_s8_epilogue_act_quantize: each row stays in cache from its sums to its bytes.
RQ_INLINE void s8_epilogue_act_quantize_body(int32_t *acc, const float *ws, const int32_t *wsum, const float *xs,
                                             const float *bias, size_t rows, size_t n, int act, uint8_t *q, float *scales) {
    for (size_t r = 0; r < rows; r++) {
        float *row = (float *)(acc + r * n);
        dequantize_s32_body(acc + r * n, ws, wsum, xs + r, bias, row, 1, n);
        activate_quantize_row(row, n, act, q + r * n, scales + r);
    }
}

RQ_INLINE void act_quantize_body(float *x, size_t rows, size_t n, int act, uint8_t *q, float *scales) {
    for (size_t r = 0; r < rows; r++) activate_quantize_row(x + r * n, n, act, q + r * n, scales + r);
}
RQ_MULTIVERSION(act_quantize, (float *x, size_t rows, size_t n, int act, uint8_t *q, float *scales), (x, rows, n, act, q, scales))
RQ_MULTIVERSION(s8_epilogue_act_quantize, (int32_t *acc, const float *ws, const int32_t *wsum, const float *xs, const float *bias, size_t rows, size_t n, int act, uint8_t *q, float *scales),
                (acc, ws, wsum, xs, bias, rows, n, act, q, scales))

/// `out` may be `gate` (in place, as the decoders call it). Element i reads and writes only
/// index i, so vectorising is safe; without the pragma the compiler's overlap check sends an
/// in-place call down its scalar loop (measured: 0.8 s of a 15 s Qwen2.5-VL-3B prefill).
RQ_INLINE void silu_mul_body(const float *gate, const float *up, float *out, size_t n) {
#pragma clang loop vectorize(assume_safety)
    for (size_t i = 0; i < n; i++) out[i] = gate[i] * rq_sigmoid(gate[i]) * up[i];
}
RQ_MULTIVERSION(silu_mul, (const float *gate, const float *up, float *out, size_t n), (gate, up, out, n))

RQ_INLINE void add_body(float *y, const float *x, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] += x[i];
}
RQ_MULTIVERSION(add, (float *y, const float *x, size_t n), (y, x, n))

RQ_INLINE void add_bias_body(float *y, const float *b, size_t rows, size_t n) {
    for (size_t r = 0; r < rows; r++) for (size_t i = 0; i < n; i++) y[r * n + i] += b[i];
}
RQ_MULTIVERSION(add_bias, (float *y, const float *b, size_t rows, size_t n), (y, b, rows, n))

RQ_INLINE void rope_rotate_half_body(float *x, const float *cos, const float *sin, size_t rows, size_t heads,
                                     size_t head_dim, size_t row_stride) {
    size_t half = head_dim / 2;
    for (size_t r = 0; r < rows; r++) {
        const float *c = cos + r * head_dim, *s = sin + r * head_dim;
        for (size_t h = 0; h < heads; h++) {
            float *v = x + r * row_stride + h * head_dim;
            for (size_t i = 0; i < half; i++) {
                float a = v[i], b = v[i + half];
                v[i] = a * c[i] - b * s[i];
                v[i + half] = b * c[i + half] + a * s[i + half];
            }
        }
    }
}
RQ_MULTIVERSION(rope_rotate_half, (float *x, const float *cos, const float *sin, size_t rows, size_t heads, size_t head_dim, size_t row_stride), (x, cos, sin, rows, heads, head_dim, row_stride))

// ---- attention helpers ------------------------------------------------------------------------
/// Scaled, optionally causal softmax of each row; the probabilities go back into x, or as bf16
/// into `out` when it is not NULL.
RQ_INLINE void softmax_scaled_bf16_body(float *x, size_t rows, size_t n, float scale, long causal_base, size_t period,
                                        size_t row_offset, uint16_t *out) {
    for (size_t r = 0; r < rows; r++) {
        float *xr = x + r * n;
        size_t valid = n;
        if (causal_base >= 0) {
            long lim = causal_base + (long)((r + row_offset) % period) + 1;
            valid = lim < 0 ? 0 : ((size_t)lim < n ? (size_t)lim : n);
        }
        float m = -INFINITY;
        for (size_t i = 0; i < valid; i++) m = __builtin_fmaxf(m, xr[i]);
        float s = 0;
        for (size_t i = 0; i < valid; i++) { float v = rq_exp((xr[i] - m) * scale); xr[i] = v; s += v; }
        float inv = valid ? 1.0f / s : 0.0f;
        if (out) {
            uint16_t *o = out + r * n;
            for (size_t i = 0; i < valid; i++) {
                uint32_t u = f32_to_bits(xr[i] * inv);
                o[i] = (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
            }
            for (size_t i = valid; i < n; i++) o[i] = 0;
        } else {
            for (size_t i = 0; i < valid; i++) xr[i] *= inv;
            for (size_t i = valid; i < n; i++) xr[i] = 0;
        }
    }
}
RQ_MULTIVERSION(softmax_scaled_bf16, (float *x, size_t rows, size_t n, float scale, long causal_base, size_t period, size_t row_offset, uint16_t *out), (x, rows, n, scale, causal_base, period, row_offset, out))

void rq_softmax_scaled(float *x, size_t rows, size_t n, float scale, long causal_base, size_t period, size_t row_offset) {
    rq_softmax_scaled_bf16(x, rows, n, scale, causal_base, period, row_offset, NULL);
}


/// One query of each of the `g` heads that share a key/value head (grouped-query attention):
/// q and out hold the g heads' head_dim values one after another; each key and value row is read
/// once for all g (one head at a time would read them g times). scores: g·n_keys + g floats.
RQ_INLINE void attend_group_body(const float *q, const float *k, const float *v, size_t kv_stride, size_t n_keys,
                                 size_t head_dim, float scale, size_t g, float *scores, float *out) {
    float *inv = scores + g * n_keys;
    for (size_t j = 0; j < n_keys; j++) {
        const float *kj = k + j * kv_stride;
        for (size_t h = 0; h < g; h++) {
            const float *qh = q + h * head_dim;
            float d = 0;
            for (size_t i = 0; i < head_dim; i++) d += qh[i] * kj[i];
            scores[h * n_keys + j] = d * scale;
        }
    }
    for (size_t h = 0; h < g; h++) {
        float *sh = scores + h * n_keys, m = -INFINITY, s = 0;
        for (size_t j = 0; j < n_keys; j++) m = sh[j] > m ? sh[j] : m;
        for (size_t j = 0; j < n_keys; j++) { float e = rq_exp(sh[j] - m); sh[j] = e; s += e; }
        inv[h] = n_keys ? 1.0f / s : 0.0f;
    }
    for (size_t i = 0; i < g * head_dim; i++) out[i] = 0;
    for (size_t j = 0; j < n_keys; j++) {
        const float *vj = v + j * kv_stride;
        for (size_t h = 0; h < g; h++) {
            float p = scores[h * n_keys + j] * inv[h], *oh = out + h * head_dim;
            for (size_t i = 0; i < head_dim; i++) oh[i] += p * vj[i];
        }
    }
}
RQ_MULTIVERSION(attend_group, (const float *q, const float *k, const float *v, size_t kv_stride, size_t n_keys, size_t head_dim, float scale, size_t g, float *scores, float *out), (q, k, v, kv_stride, n_keys, head_dim, scale, g, scores, out))

/// Row stride of a query's scores in `rq_attend_partial`'s scratch: n_keys rounded up to 16
/// floats, plus 16, so that consecutive queries' rows never sit 4 KiB apart (the same L1 sets).
RQ_INLINE size_t partial_ld(size_t n_keys) { return ((n_keys + 15) & ~(size_t)15) + 16; }

/// Per query h: m[h] = max of its n_keys scores (row h·ld), the scores replaced by e^(score − m[h]),
/// s[h] their sum. Each row runs the same loops, whatever n_q.
RQ_INLINE void partial_softmax_body(float *scores, size_t n_q, size_t n_keys, size_t ld, float *m, float *s) {
    for (size_t h = 0; h < n_q; h++) {
        float *sh = scores + h * ld, mh = -INFINITY, sum = 0;
        for (size_t j = 0; j < n_keys; j++) mh = sh[j] > mh ? sh[j] : mh;
        for (size_t j = 0; j < n_keys; j++) { float e = rq_exp(sh[j] - mh); sh[j] = e; sum += e; }
        m[h] = mh;
        s[h] = sum;
    }
}

/// Part of a split softmax (flash-decoding): n_q query vectors q [n_q, head_dim] against n_keys
/// keys, unnormalised. Per query h: m[h] = max_j scale·q_h·k_j, s[h] = Σ_j e^(score − m[h]) and
/// acc[h] = Σ_j e^(score − m[h])·v_j. A query's arithmetic is the same whatever n_q (each key is
/// read once for all queries; every query runs the same loops over the same keys).
/// scores: scratch of n_q·(n_keys + 32) floats.
RQ_INLINE void attend_partial_body(const float *q, size_t n_q, const float *k, const float *v, size_t kv_stride,
                                   size_t n_keys, size_t head_dim, float scale, float *scores, float *acc,
                                   float *m, float *s) {
    size_t ld = partial_ld(n_keys);
    for (size_t j = 0; j < n_keys; j++) {
        const float *kj = k + j * kv_stride;
        for (size_t h = 0; h < n_q; h++) {
            const float *qh = q + h * head_dim;
            float d = 0;
            for (size_t i = 0; i < head_dim; i++) d += qh[i] * kj[i];
            scores[h * ld + j] = d * scale;
        }
    }
    partial_softmax_body(scores, n_q, n_keys, ld, m, s);
    for (size_t i = 0; i < n_q * head_dim; i++) acc[i] = 0;
    for (size_t j = 0; j < n_keys; j++) {
        const float *vj = v + j * kv_stride;
        for (size_t h = 0; h < n_q; h++) {
            float p = scores[h * ld + j], *ah = acc + h * head_dim;
            for (size_t i = 0; i < head_dim; i++) ah[i] += p * vj[i];
        }
    }
}

#if RQ_X86
// The AVX-512 version below states its arithmetic exactly (FMA chains, a fixed horizontal sum):
// no reassociation, so that every query's scores and sums are the same in any block shape.
#pragma clang fp reassociate(off)

/// Σ of the 16 lanes, in one fixed order.
RQ_INLINE RQ_AVX512 float partial_hsum16(__m512 a) {
    __m256 s8 = _mm256_add_ps(_mm512_castps512_ps256(a), _mm512_extractf32x8_ps(a, 1));
    __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    s4 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    s4 = _mm_add_ss(s4, _mm_movehdup_ps(s4));
    return _mm_cvtss_f32(s4);
}

/// Scores of nx queries (rows head_dim apart) × 16 / nx keys (rows kv_stride apart) into scores
/// (rows ld apart): each one scale · partial_hsum16(Σ_c q[c]·k[c]), the chunk products chained in
/// order as everywhere in this kernel. The 16 horizontal sums run together, in partial_hsum16's
/// order of additions (lanes paired i + 8, then i + 4, i + 2, i + 1; a + b = b + a exactly), so
/// every score has the same bits as one summed alone: lane L of the reduction holds input
/// 4·(L mod 4) + L / 4, and lane x·(16 / nx) + y is query x, key y.
RQ_INLINE RQ_AVX512 void partial_scores16(const float *q, size_t head_dim, const float *k, size_t kv_stride, size_t chunks,
                                          int nx, float scale, float *scores, size_t ld) {
    const int ny = 16 / nx;
    __m512 a[16];
    for (int i = 0; i < 16; i++) a[i] = _mm512_setzero_ps();
    for (size_t c = 0; c < chunks; c++) {
        __m512 kc[16];
        for (int y = 0; y < ny; y++) kc[y] = _mm512_loadu_ps(k + y * kv_stride + 16 * c);
        for (int x = 0; x < nx; x++) {
            __m512 qc = _mm512_loadu_ps(q + x * head_dim + 16 * c);
            for (int y = 0; y < ny; y++) {
                int lane = x * ny + y, in = 4 * (lane % 4) + lane / 4;
                a[in] = _mm512_fmadd_ps(qc, kc[y], a[in]);
            }
        }
    }
    __m512 t1[8], t2[4], t3[2];
    for (int i = 0; i < 8; i++)
        t1[i] = _mm512_add_ps(_mm512_shuffle_f32x4(a[2 * i], a[2 * i + 1], 0x44), _mm512_shuffle_f32x4(a[2 * i], a[2 * i + 1], 0xEE));
    for (int i = 0; i < 4; i++)
        t2[i] = _mm512_add_ps(_mm512_shuffle_f32x4(t1[2 * i], t1[2 * i + 1], 0x88), _mm512_shuffle_f32x4(t1[2 * i], t1[2 * i + 1], 0xDD));
    for (int i = 0; i < 2; i++)
        t3[i] = _mm512_add_ps(_mm512_shuffle_ps(t2[2 * i], t2[2 * i + 1], 0x44), _mm512_shuffle_ps(t2[2 * i], t2[2 * i + 1], 0xEE));
    __m512 sums = _mm512_mul_ps(_mm512_add_ps(_mm512_shuffle_ps(t3[0], t3[1], 0x88), _mm512_shuffle_ps(t3[0], t3[1], 0xDD)),
                                _mm512_set1_ps(scale));
    if (nx == 1) {
        _mm512_storeu_ps(scores, sums);
    } else if (nx == 2) {
        _mm256_storeu_ps(scores, _mm512_castps512_ps256(sums));
        _mm256_storeu_ps(scores + ld, _mm512_extractf32x8_ps(sums, 1));
    } else {
        _mm_storeu_ps(scores, _mm512_castps512_ps128(sums));
        _mm_storeu_ps(scores + ld, _mm512_extractf32x4_ps(sums, 1));
        _mm_storeu_ps(scores + 2 * ld, _mm512_extractf32x4_ps(sums, 2));
        _mm_storeu_ps(scores + 3 * ld, _mm512_extractf32x4_ps(sums, 3));
    }
}

/// acc[x][0..<128] += Σ_j p[x][j] · v_j[0..<128] over keys j0..<j1 in order, for nq (1 or 2)
/// queries (probability rows ld apart, accumulator rows lda apart) sharing each load of v.
RQ_INLINE RQ_AVX512 void partial_pv128(const float *p, size_t ld, const float *v, size_t kv_stride, size_t j0, size_t j1,
                                       float *acc, size_t lda, int nq) {
    __m512 r[2][8];
    for (int x = 0; x < nq; x++)
        for (int c = 0; c < 8; c++) r[x][c] = _mm512_loadu_ps(acc + x * lda + 16 * c);
    for (size_t j = j0; j < j1; j++) {
        __m512 b[2];
        for (int x = 0; x < nq; x++) b[x] = _mm512_set1_ps(p[x * ld + j]);
        const float *vj = v + j * kv_stride;
        for (int c = 0; c < 8; c++) {
            __m512 vc = _mm512_loadu_ps(vj + 16 * c);
            for (int x = 0; x < nq; x++) r[x][c] = _mm512_fmadd_ps(b[x], vc, r[x][c]);
        }
    }
    for (int x = 0; x < nq; x++)
        for (int c = 0; c < 8; c++) _mm512_storeu_ps(acc + x * lda + 16 * c, r[x][c]);
}

/// Rows j0..<min(j1, n) of k (head_dim floats each, rows kv_stride apart) towards L2, ahead of use:
/// a cached prefix is read from memory once per decoding step, and its rows are head_dim floats
/// out of every kv_stride, a pattern the hardware prefetchers do not follow far enough. (Keys
/// ahead: 32, 64 and 128 gave the same; a decoding step's attention over three 1,300-row
/// prefixes, 28 layers, cold: 26 → 21.5 ms in a harness, 12.8 ms with everything in cache.)
#define RQ_PARTIAL_AHEAD 64
RQ_INLINE RQ_AVX512 void partial_prefetch(const float *k, size_t kv_stride, size_t head_dim, size_t j0, size_t j1, size_t n) {
    for (size_t j = j0; j < j1 && j < n; j++)
        for (size_t c = 0; c < head_dim; c += 16) _mm_prefetch((const char *)(k + j * kv_stride + c), _MM_HINT_T1);
}

/// `attend_partial_body` for head_dim a multiple of 16, with explicit arithmetic per query:
/// a score is scale · hsum16(acc) with acc = fma(q[c], k[c], acc) over the 16-float chunks c in
/// order; acc[h][i] = fma(p_j, v_j[i], acc[h][i]) over the keys j in order. Blocks of 16 scores
/// (4 queries × 4 keys, 2 × 8 or 1 × 16, reduced together; single keys for the last ones) and of
/// 32 keys × 128 values for one or two queries (the weighted sum) only change which registers
/// hold which chains, never a chain, so a query's result does not depend on n_q.
static RQ_AVX512 void attend_partial_avx512(const float *q, size_t n_q, const float *k, const float *v, size_t kv_stride,
                                            size_t n_keys, size_t head_dim, float scale, float *scores, float *acc,
                                            float *m, float *s) {
    if (head_dim % 16 != 0) {
        attend_partial_body(q, n_q, k, v, kv_stride, n_keys, head_dim, scale, scores, acc, m, s);
        return;
    }
    size_t ld = partial_ld(n_keys), chunks = head_dim / 16;
    size_t j = 0;
    // Blocks of 16 keys: 4 queries × 4 keys, then 2 × 8 and 1 × 16 for the last queries; the last
    // keys one at a time.
    for (; j + 16 <= n_keys; j += 16) {
        const float *kj = k + j * kv_stride;
        partial_prefetch(k, kv_stride, head_dim, j + RQ_PARTIAL_AHEAD, j + RQ_PARTIAL_AHEAD + 16, n_keys);
        size_t h = 0;
        for (; h + 4 <= n_q; h += 4)
            for (size_t y = 0; y < 16; y += 4)
                partial_scores16(q + h * head_dim, head_dim, kj + y * kv_stride, kv_stride, chunks, 4, scale, scores + h * ld + j + y, ld);
        for (; h + 2 <= n_q; h += 2)
            for (size_t y = 0; y < 16; y += 8)
                partial_scores16(q + h * head_dim, head_dim, kj + y * kv_stride, kv_stride, chunks, 2, scale, scores + h * ld + j + y, ld);
        for (; h < n_q; h++) partial_scores16(q + h * head_dim, head_dim, kj, kv_stride, chunks, 1, scale, scores + h * ld + j, ld);
    }
    for (; j < n_keys; j++) {
        const float *kj = k + j * kv_stride;
        for (size_t h = 0; h < n_q; h++) {
            __m512 a = _mm512_setzero_ps();
            for (size_t c = 0; c < chunks; c++) a = _mm512_fmadd_ps(_mm512_loadu_ps(q + h * head_dim + 16 * c), _mm512_loadu_ps(kj + 16 * c), a);
            scores[h * ld + j] = partial_hsum16(a) * scale;
        }
    }
    partial_softmax_body(scores, n_q, n_keys, ld, m, s);
    for (size_t i = 0; i < n_q * head_dim; i++) acc[i] = 0;
    for (size_t j0 = 0; j0 < n_keys; j0 += 32) {
        size_t j1 = j0 + 32 < n_keys ? j0 + 32 : n_keys;
        partial_prefetch(v, kv_stride, head_dim, j0 + RQ_PARTIAL_AHEAD, j0 + RQ_PARTIAL_AHEAD + 32, n_keys);
        size_t h = 0;
        // Two queries at a time share each load of v (each keeps its own chains).
        for (; head_dim % 128 == 0 && h + 2 <= n_q; h += 2)
            for (size_t c0 = 0; c0 < head_dim; c0 += 128)
                partial_pv128(scores + h * ld, ld, v + c0, kv_stride, j0, j1, acc + h * head_dim + c0, head_dim, 2);
        for (; h < n_q; h++) {
            const float *ph = scores + h * ld;
            float *ah = acc + h * head_dim;
            size_t c0 = 0;
            for (; c0 + 128 <= head_dim; c0 += 128) partial_pv128(ph, ld, v + c0, kv_stride, j0, j1, ah + c0, head_dim, 1);
            for (; c0 < head_dim; c0 += 16) {
                __m512 r = _mm512_loadu_ps(ah + c0);
                for (size_t jj = j0; jj < j1; jj++) r = _mm512_fmadd_ps(_mm512_set1_ps(ph[jj]), _mm512_loadu_ps(v + jj * kv_stride + c0), r);
                _mm512_storeu_ps(ah + c0, r);
            }
        }
    }
}
#pragma clang fp reassociate(on)

static RQ_AVX2 void attend_partial_avx2(const float *q, size_t n_q, const float *k, const float *v, size_t kv_stride, size_t n_keys,
                                        size_t head_dim, float scale, float *scores, float *acc, float *m, float *s) {
    attend_partial_body(q, n_q, k, v, kv_stride, n_keys, head_dim, scale, scores, acc, m, s);
}
static void attend_partial_generic(const float *q, size_t n_q, const float *k, const float *v, size_t kv_stride, size_t n_keys,
                                   size_t head_dim, float scale, float *scores, float *acc, float *m, float *s) {
    attend_partial_body(q, n_q, k, v, kv_stride, n_keys, head_dim, scale, scores, acc, m, s);
}
void rq_attend_partial(const float *q, size_t n_q, const float *k, const float *v, size_t kv_stride, size_t n_keys,
                       size_t head_dim, float scale, float *scores, float *acc, float *m, float *s) {
    int l = rq_cpu_level();
    if (l >= 2) attend_partial_avx512(q, n_q, k, v, kv_stride, n_keys, head_dim, scale, scores, acc, m, s);
    else if (l == 1) attend_partial_avx2(q, n_q, k, v, kv_stride, n_keys, head_dim, scale, scores, acc, m, s);
    else attend_partial_generic(q, n_q, k, v, kv_stride, n_keys, head_dim, scale, scores, acc, m, s);
}
#else
RQ_MULTIVERSION(attend_partial, (const float *q, size_t n_q, const float *k, const float *v, size_t kv_stride, size_t n_keys, size_t head_dim, float scale, float *scores, float *acc, float *m, float *s), (q, n_q, k, v, kv_stride, n_keys, head_dim, scale, scores, acc, m, s))
#endif

/// Joins two parts of a split softmax (`rq_attend_partial` over disjoint key sets) into the
/// attention output of each of n_q queries: with M = max(m1, m2), a = e^(m1 − M), b = e^(m2 − M),
/// out = (a·acc1 + b·acc2) / (a·s1 + b·s2). A part over no keys has s = 0 and counts for nothing.
RQ_INLINE void attend_merge_body(const float *acc1, const float *m1, const float *s1, const float *acc2,
                                 const float *m2, const float *s2, size_t n_q, size_t head_dim, float *out) {
    for (size_t h = 0; h < n_q; h++) {
        float top = m1[h] > m2[h] ? m1[h] : m2[h];
        float a = s1[h] > 0 ? rq_exp(m1[h] - top) : 0.0f, b = s2[h] > 0 ? rq_exp(m2[h] - top) : 0.0f;
        float total = a * s1[h] + b * s2[h];
        float inv = total > 0 ? 1.0f / total : 0.0f;
        const float *x1 = acc1 + h * head_dim, *x2 = acc2 + h * head_dim;
        float *o = out + h * head_dim;
        for (size_t i = 0; i < head_dim; i++) o[i] = (a * x1[i] + b * x2[i]) * inv;
    }
}
RQ_MULTIVERSION(attend_merge, (const float *acc1, const float *m1, const float *s1, const float *acc2, const float *m2, const float *s2, size_t n_q, size_t head_dim, float *out), (acc1, m1, s1, acc2, m2, s2, n_q, head_dim, out))

// ---- bf16 attention in tiles ---------------------------------------------------------------------
// softmax(scale · q·Kᵀ) · V for blocks of up to RQ_ATTEND_TQ queries of one head, with PyTorch's
// bf16 roundings (q, k, v and the probabilities bf16; scores, softmax and sums f32). The scores
// of a block stay in cache between the two products, and keys and values are read from copies
// packed once per head for the AVX-512 BF16 pair products (vdpbf16ps). Every score and output
// value is one chain over pairs in order, so a query's result does not depend on the block that
// holds it.
#define RQ_ATTEND_TQ 32
/* Rows the P·V row blocks (8, 6, 4 or 3 rows) cover for RQ_ATTEND_TQ queries: ⌈32/b⌉·b ≤ 36. */
#define RQ_ATTEND_ROWS 36
_Static_assert(RQ_ATTEND_TQ == 32 && (RQ_ATTEND_TQ + 7) / 8 * 8 <= RQ_ATTEND_ROWS && (RQ_ATTEND_TQ + 5) / 6 * 6 <= RQ_ATTEND_ROWS &&
               (RQ_ATTEND_TQ + 3) / 4 * 4 <= RQ_ATTEND_ROWS && (RQ_ATTEND_TQ + 2) / 3 * 3 <= RQ_ATTEND_ROWS,
               "the probability and accumulator scratch must hold every P·V row block");

/// Keys rounded up to a whole number of 32-key tiles: the packed layouts of both attention kernels.
RQ_INLINE size_t attend_keys32(size_t n_keys) { return (n_keys + 31) & ~(size_t)31; }
size_t rq_attend_bf16_keys(size_t n_keys) { return attend_keys32(n_keys); }

/// kp [d/2][ldk][2]: for each pair of values, the pair of every key (ldk = keys rounded up to 32,
/// zero keys after n_keys). vp [⌈n_keys/2⌉][d][2]: for each pair of consecutive keys, their
/// values interleaved (a zero key after an odd count).
void rq_attend_pack_bf16(const uint16_t *k, const uint16_t *v, size_t stride, size_t n_keys, size_t d, uint16_t *kp, uint16_t *vp) {
    size_t ldk = rq_attend_bf16_keys(n_keys), d2 = d / 2;
    for (size_t c2 = 0; c2 < d2; c2++) {
        uint16_t *o = kp + 2 * c2 * ldk;
        for (size_t j = 0; j < n_keys; j++) { o[2 * j] = k[j * stride + 2 * c2]; o[2 * j + 1] = k[j * stride + 2 * c2 + 1]; }
        for (size_t j = n_keys; j < ldk; j++) o[2 * j] = o[2 * j + 1] = 0;
    }
    for (size_t j2 = 0; j2 < (n_keys + 1) / 2; j2++) {
        const uint16_t *a = v + 2 * j2 * stride;
        uint16_t *x = vp + j2 * d * 2;
        if (2 * j2 + 1 < n_keys) {
            const uint16_t *b = a + stride;
            for (size_t c = 0; c < d; c++) { x[2 * c] = a[c]; x[2 * c + 1] = b[c]; }
        } else {
            for (size_t c = 0; c < d; c++) { x[2 * c] = a[c]; x[2 * c + 1] = 0; }
        }
    }
}

size_t rq_attend_bf16_scratch(size_t n_keys, size_t d) {
    size_t ld = rq_attend_bf16_keys(n_keys) + 16;
    return RQ_ATTEND_TQ * ld * 4 + RQ_ATTEND_ROWS * ld * 2 + RQ_ATTEND_ROWS * d * 4 + 64;
}


/// Probabilities of rows [0, n_q) of the score block (rows ld apart) into bf16 rows, the scores of
/// query i visible up to min(kmax, causal_base + i + 1) (all kmax when causal_base < 0), and the
/// pad after an odd kmax zero.
RQ_INLINE void attend_bf16_softmax(float *s, uint16_t *p, size_t ld, size_t n_q, size_t kmax, float scale, long causal_base) {
    for (size_t i = 0; i < n_q; i++) {
        rq_softmax_scaled_bf16(s + i * ld, 1, kmax, scale, causal_base < 0 ? -1 : causal_base + (long)i, 1, 0, p + i * ld);
        if (kmax & 1) p[i * ld + kmax] = 0;
    }
}

/// Keys seen by a block of n_q queries: all n_keys, or up to the last query's causal limit.
RQ_INLINE size_t attend_bf16_kmax(size_t n_q, size_t n_keys, long causal_base) {
    if (causal_base < 0) return n_keys;
    size_t last = (size_t)causal_base + n_q;
    return last < n_keys ? last : n_keys;
}

/// Σ over pairs t < n of a[2t]·b[t·bs] + a[2t+1]·b[t·bs + 1] (bf16 values, f32 sums): a row of
/// pairs against a packed column of pairs.
RQ_INLINE float bf16_pair_dot(const uint16_t *a, const uint16_t *b, size_t bs, size_t n) {
    float sum = 0;
    for (size_t t = 0; t < n; t++) sum += bf16_f32(a[2 * t]) * bf16_f32(b[t * bs]) + bf16_f32(a[2 * t + 1]) * bf16_f32(b[t * bs + 1]);
    return sum;
}

/// The same arithmetic one value at a time (CPUs without AVX-512 BF16): each score sums the
/// pair products (q[2c]·k[2c] + q[2c+1]·k[2c+1]) in pair order, each output value the pair
/// products of probabilities and values.
static void attend_bf16_tile_plain(const uint16_t *q, size_t qs, size_t n_q, const uint16_t *kp, const uint16_t *vp,
                                   size_t n_keys, size_t d, float scale, long causal_base, void *scratch, float *out, size_t os) {
    size_t ldk = rq_attend_bf16_keys(n_keys), ld = ldk + 16, d2 = d / 2;
    float *s = (float *)scratch;
    uint16_t *p = (uint16_t *)(s + RQ_ATTEND_TQ * ld);
    size_t kmax = attend_bf16_kmax(n_q, n_keys, causal_base), pairs = (kmax + 1) / 2;
    for (size_t i = 0; i < n_q; i++)
        for (size_t j = 0; j < kmax; j++) s[i * ld + j] = bf16_pair_dot(q + i * qs, kp + 2 * j, 2 * ldk, d2);
    attend_bf16_softmax(s, p, ld, n_q, kmax, scale, causal_base);
    for (size_t i = 0; i < n_q; i++)
        for (size_t c = 0; c < d; c++) out[i * os + c] = bf16_pair_dot(p + i * ld, vp + 2 * c, 2 * d, pairs);
}

#if RQ_X86


/// Scores of NQ queries (bf16 rows qs apart) against keys j0…j0+31: one chain per score, over
/// the d/2 value pairs in order.
static inline __attribute__((always_inline)) RQ_AVX512BF16 void attend_qk_tile(
        const uint16_t *q, size_t qs, const uint16_t *kp, size_t ldk, size_t j0, size_t d2, float *s, size_t lds, const int NQ) {
    __m512 a[8][2];
    RQ_UNROLL for (int i = 0; i < NQ; i++) a[i][0] = a[i][1] = _mm512_setzero_ps();
    const uint16_t *kc = kp + 2 * j0;
    for (size_t c2 = 0; c2 < d2; c2++) {
        __m512bh k0 = (__m512bh)_mm512_loadu_si512((const void *)(kc + 2 * c2 * ldk));
        __m512bh k1 = (__m512bh)_mm512_loadu_si512((const void *)(kc + 2 * c2 * ldk + 32));
        RQ_UNROLL for (int i = 0; i < NQ; i++) {
            uint32_t w; memcpy(&w, q + i * qs + 2 * c2, 4);
            __m512bh qb = (__m512bh)_mm512_set1_epi32((int)w);
            a[i][0] = _mm512_dpbf16_ps(a[i][0], qb, k0);
            a[i][1] = _mm512_dpbf16_ps(a[i][1], qb, k1);
        }
    }
    RQ_UNROLL for (int i = 0; i < NQ; i++) {
        _mm512_storeu_ps(s + i * lds + j0, a[i][0]);
        _mm512_storeu_ps(s + i * lds + j0 + 16, a[i][1]);
    }
}

static RQ_AVX512BF16 void attend_qk_rows(const uint16_t *q, size_t qs, size_t n, const uint16_t *kp, size_t ldk, size_t j0,
                                         size_t d2, float *s, size_t lds) {
    switch (n) {
    case 1: attend_qk_tile(q, qs, kp, ldk, j0, d2, s, lds, 1); break;
    case 2: attend_qk_tile(q, qs, kp, ldk, j0, d2, s, lds, 2); break;
    case 3: attend_qk_tile(q, qs, kp, ldk, j0, d2, s, lds, 3); break;
    case 4: attend_qk_tile(q, qs, kp, ldk, j0, d2, s, lds, 4); break;
    case 5: attend_qk_tile(q, qs, kp, ldk, j0, d2, s, lds, 5); break;
    case 6: attend_qk_tile(q, qs, kp, ldk, j0, d2, s, lds, 6); break;
    case 7: attend_qk_tile(q, qs, kp, ldk, j0, d2, s, lds, 7); break;
    default: attend_qk_tile(q, qs, kp, ldk, j0, d2, s, lds, 8); break;
    }
}

/// acc rows (lda apart) of NQ queries, values c0…c0+16·NC, continued over key pairs j0…j1 − 1
/// (started from zero at j0 = 0): one chain per value over the pairs in order. `last`: the lanes of
/// the last vector that are values (head sizes not a multiple of 16); the rest are neither read
/// nor written.
static inline __attribute__((always_inline)) RQ_AVX512BF16 void attend_pv_tile(
        const uint16_t *p, size_t ldp, const uint16_t *vp, size_t d, size_t c0, size_t j0, size_t j1, float *acc, size_t lda,
        __mmask16 last, const int NQ, const int NC) {
    __m512 a[8][8];
    RQ_UNROLL for (int i = 0; i < NQ; i++)
        RQ_UNROLL for (int c = 0; c < NC; c++)
            a[i][c] = j0 == 0 ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(c == NC - 1 ? last : 0xFFFF, acc + i * lda + c0 + 16 * c);
    for (size_t j2 = j0; j2 < j1; j2++) {
        __m512bh v[8];
        RQ_UNROLL for (int c = 0; c < NC; c++)
            v[c] = (__m512bh)_mm512_maskz_loadu_epi32(c == NC - 1 ? last : 0xFFFF, (const void *)(vp + 2 * (j2 * d + c0 + 16 * c)));
        RQ_UNROLL for (int i = 0; i < NQ; i++) {
            uint32_t w; memcpy(&w, p + i * ldp + 2 * j2, 4);
            __m512bh pb = (__m512bh)_mm512_set1_epi32((int)w);
            RQ_UNROLL for (int c = 0; c < NC; c++) a[i][c] = _mm512_dpbf16_ps(a[i][c], pb, v[c]);
        }
    }
    RQ_UNROLL for (int i = 0; i < NQ; i++)
        RQ_UNROLL for (int c = 0; c < NC; c++) _mm512_mask_storeu_ps(acc + i * lda + c0 + 16 * c, c == NC - 1 ? last : 0xFFFF, a[i][c]);
}

/// A P·V pass over values c0…: its 16-value vectors (w ≤ 8), the mask of the last (head sizes
/// not a multiple of 16), and the queries a tile takes so that w × queries accumulators fit.
static inline __attribute__((always_inline)) void pv_chunk(size_t d, size_t c0, size_t *w, __mmask16 *last, size_t *nq) {
    size_t nc = (d + 15) / 16;
    *w = nc - c0 < 8 ? nc - c0 : 8;
    *last = c0 + *w == nc && d % 16 ? (__mmask16)((1u << (d % 16)) - 1) : (__mmask16)0xFFFF;
    *nq = *w <= 3 ? 8 : (*w == 4 ? 6 : (*w <= 6 ? 4 : 3));
}
/// tile(args…, queries, vectors) for a pass of w vectors, the queries as pv_chunk gives them.
#define RQ_PV_TILES(tile, w, ...)                                        \
    switch (w) {                                                         \
    case 1: tile(__VA_ARGS__, 8, 1); break;                              \
    case 2: tile(__VA_ARGS__, 8, 2); break;                              \
    case 3: tile(__VA_ARGS__, 8, 3); break;                              \
    case 4: tile(__VA_ARGS__, 6, 4); break;                              \
    case 5: tile(__VA_ARGS__, 4, 5); break;                              \
    case 6: tile(__VA_ARGS__, 4, 6); break;                              \
    case 7: tile(__VA_ARGS__, 3, 7); break;                              \
    default: tile(__VA_ARGS__, 3, 8); break;                             \
    }

/// acc [n rounded up to the row block, d] (rows lda apart) = P · V over the first `pairs` key
/// pairs; probability rows past n must be zero. Keys go in blocks of 128 pairs, so that a block of
/// packed values stays in L1 for every row block.
static RQ_AVX512BF16 void attend_pv_rows(const uint16_t *p, size_t ldp, const uint16_t *vp, size_t d, size_t pairs,
                                         float *acc, size_t lda, size_t n) {
    size_t nc = (d + 15) / 16;
    for (size_t j0 = 0; j0 < pairs; j0 += 128) {
        size_t j1 = j0 + 128 < pairs ? j0 + 128 : pairs;
        for (size_t c0 = 0; c0 < nc; c0 += 8) {
            size_t w, nq, cc = 16 * c0;
            __mmask16 last;
            pv_chunk(d, c0, &w, &last, &nq);
            for (size_t i = 0; i < n; i += nq) {
                RQ_PV_TILES(attend_pv_tile, w, p + i * ldp, ldp, vp, d, cc, j0, j1, acc + i * lda, lda, last)
            }
        }
    }
}

static RQ_AVX512BF16 void attend_bf16_tile_dp(const uint16_t *q, size_t qs, size_t n_q, const uint16_t *kp, const uint16_t *vp, size_t n_keys,
                         size_t d, float scale, long causal_base, void *scratch, float *out, size_t os) {
    size_t ldk = rq_attend_bf16_keys(n_keys), ld = ldk + 16;
    float *s = (float *)scratch;
    uint16_t *p = (uint16_t *)(s + RQ_ATTEND_TQ * ld);
    float *acc = (float *)(p + RQ_ATTEND_ROWS * ld);
    size_t kmax = attend_bf16_kmax(n_q, n_keys, causal_base);
    size_t kt = (kmax + 31) & ~(size_t)31, pairs = (kmax + 1) / 2;
    for (size_t j0 = 0; j0 < kt; j0 += 32)
        for (size_t i = 0; i < n_q; i += 8) attend_qk_rows(q + i * qs, qs, n_q - i < 8 ? n_q - i : 8, kp, ldk, j0, d / 2, s + i * ld, ld);
    attend_bf16_softmax(s, p, ld, n_q, kmax, scale, causal_base);
    for (size_t i = n_q; i < RQ_ATTEND_ROWS; i++) memset(p + i * ld, 0, 2 * pairs * 2);
    attend_pv_rows(p, ld, vp, d, pairs, acc, d, n_q);
    for (size_t i = 0; i < n_q; i++) memcpy(out + i * os, acc + i * d, 4 * d);
}
#endif

void rq_attend_bf16_tile(const uint16_t *q, size_t qs, size_t n_q, const uint16_t *kp, const uint16_t *vp, size_t n_keys,
                         size_t d, float scale, long causal_base, void *scratch, float *out, size_t os) {
    if (n_keys == 0) { // attention over no keys: zeros, as the other kernels give
        for (size_t i = 0; i < n_q; i++) memset(out + i * os, 0, 4 * d);
        return;
    }
    // Blocks of RQ_ATTEND_TQ queries (what the scratch holds); a query's result is the same in any.
    for (size_t i = 0; i < n_q; i += RQ_ATTEND_TQ) {
        size_t n = n_q - i < RQ_ATTEND_TQ ? n_q - i : RQ_ATTEND_TQ;
        long base = causal_base < 0 ? -1 : causal_base + (long)i;
#if RQ_X86
        if (rq_cpu_level() >= 3) {
            attend_bf16_tile_dp(q + i * qs, qs, n, kp, vp, n_keys, d, scale, base, scratch, out + i * os, os);
            continue;
        }
#endif
        attend_bf16_tile_plain(q + i * qs, qs, n, kp, vp, n_keys, d, scale, base, scratch, out + i * os, os);
    }
}
// ---- int8 attention in tiles ---------------------------------------------------------------------
// softmax(scale · q·Kᵀ) · V with 8-bit products (AVX-512 VNNI), for int8 vision towers. Per key
// head and segment, keys are centred on their mean (which changes no query's softmax) and
// quantized per key; values centred per channel and quantized per channel; each query per row
// (u8 = q + 128, the offset's 128·Σk taken off per key). The probabilities e^(s − max) become
// u8 (the row's largest 255) and the output is (Σ p·v) · vscale / Σ p + vmean. Integer sums are
// exact, and every float step is written out (no reassociation, no contraction, explicit fma),
// so a query's result does not depend on the block, the thread or the CPU that computes it: the
// VNNI kernel and the plain one below give the same bits.
#pragma clang fp reassociate(off)
#pragma clang fp contract(off)
/* Queries per block: their f32 scores (16 × ~1 K keys = 66 KB) stay in L2 beside the packed head.
   At 32 (133 KB) the 2B tower's attention took 0.43–0.66 s per 8 blocks in `bench vision`, at 16
   0.41–0.47 s, alternating 9 times: the larger block was slower and hit harder by the slow spells. */
#define RQ_S8_TQ 16
#define RQ_S8_ROWS 24 /* RQ_S8_TQ rounded up to any P·V row block, plus room */
#define RQ_S8_KB 256 /* keys per P·V block: the block's packed values (256·d bytes) stay in L1 */
/* 255 · 2^f for f in [−½, ½]: a cubic (Chebyshev fit) within 1.1e-4 of it, 0.03 of a u8 step. */
#define RQ_S8_C0 (255.0f * 0.9999244814555218f)
#define RQ_S8_C1 (255.0f * 0.6931210339915523f)
#define RQ_S8_C2 (255.0f * 0.242640082832772f)
#define RQ_S8_C3 (255.0f * 0.055922035647236086f)
#define RQ_S8_LOG2E 1.44269504088896341f
#define RQ_S8_YMIN (-40.0f) /* 255 · 2^−40 rounds to 0 */

/// Offsets of the parts of a packed head: K s8 [d/4][ldk][4], the per-key offset correction
/// (s32, 128·Σ k8) and scale (f32), V s8 [ldk/4][d][4], the per-channel scale and mean (f32),
/// and one int flag (1: some key is inf or NaN; a value channel holding one has scale NaN).
typedef struct { size_t k, corr, ks, v, vs, vm, bad, total; } s8_pack_layout;
RQ_INLINE s8_pack_layout s8_layout(size_t n_keys, size_t d) {
    size_t ldk = attend_keys32(n_keys);
    s8_pack_layout l;
    l.k = 0;
    l.corr = l.k + ldk * d;
    l.ks = l.corr + 4 * ldk;
    l.v = l.ks + 4 * ldk;
    l.vs = l.v + ldk * d;
    l.vm = l.vs + 4 * d;
    l.bad = l.vm + 4 * d;
    l.total = (l.bad + 64 + 63) & ~(size_t)63;
    return l;
}
size_t rq_attend_s8_pack_bytes(size_t n_keys, size_t d) { return s8_layout(n_keys, d).total; }

/// The d floats of a row towards the cache, one 64-byte line at a time.
RQ_INLINE void prefetch_row(const float *row, size_t d) {
    for (size_t b = 0; b < 4 * d; b += 64) __builtin_prefetch((const char *)row + b);
}

/// Packs one head's keys and values (rows `stride` floats apart; d a multiple of 4, at most 512).
/// Three passes over the rows (sums for both means; keys quantized and the values' largest
/// deviations; values quantized); the first and the last prefetch the rows ahead (each row is d
/// floats out of every `stride`, which the hardware prefetchers do not follow; the second reads
/// rows the first brought into cache).
RQ_INLINE void attend_pack_s8_body(const float *k, const float *v, size_t stride, size_t n_keys, size_t d, void *pack) {
    s8_pack_layout l = s8_layout(n_keys, d);
    size_t ldk = attend_keys32(n_keys);
    uint8_t *base = (uint8_t *)pack, *kp = base + l.k, *vp = base + l.v;
    int32_t *corr = (int32_t *)(base + l.corr);
    float *ks = (float *)(base + l.ks), *vs = (float *)(base + l.vs), *vm = (float *)(base + l.vm);
    int bad = 0;
    float mean[512], row[512], inv[512];
    uint32_t top[512];
    uint8_t q8[4][512];
    uint32_t kb[16][128]; // 16 quantized keys, 4 values to a word
    float count = (float)n_keys;
    // Means: each channel summed over the keys in order, then divided.
    for (size_t c = 0; c < d; c++) { mean[c] = 0; vm[c] = 0; }
    for (size_t j = 0; j < n_keys; j++) {
        if (j + 8 < n_keys) { prefetch_row(k + (j + 8) * stride, d); prefetch_row(v + (j + 8) * stride, d); }
        for (size_t c = 0; c < d; c++) mean[c] += k[j * stride + c];
        for (size_t c = 0; c < d; c++) vm[c] += v[j * stride + c];
    }
    for (size_t c = 0; c < d; c++) { mean[c] /= count; vm[c] /= count; top[c] = 0; }
    // Keys, centred on their mean and quantized per key, 16 at a time into kb, then stored as
    // [d/4][ldk][4]; the values' largest |v − mean| per channel on the bit patterns (as
    // quantize_row: inf and NaN above every finite value).
    for (size_t j0 = 0; j0 < ldk; j0 += 16) {
        for (size_t t = 0; t < 16; t++) {
            size_t j = j0 + t;
            int32_t sum = 0;
            if (j < n_keys) {
                for (size_t c = 0; c < d; c++) row[c] = k[j * stride + c] - mean[c];
                bad |= quantize_row(row, d, (uint8_t *)kb[t], 0, ks + j);
                for (size_t c = 0; c < d; c++) sum += (int8_t)((uint8_t *)kb[t])[c];
                for (size_t c = 0; c < d; c++) {
                    uint32_t a = f32_to_bits(v[j * stride + c] - vm[c]) & 0x7fffffffu;
                    top[c] = a > top[c] ? a : top[c];
                }
            } else {
                for (size_t c4 = 0; c4 < d / 4; c4++) kb[t][c4] = 0;
                ks[j] = 0;
            }
            corr[j] = 128 * sum;
        }
        // One word per key and group of 4 values: stores one at a time (vectorised, they
        // become a scatter, several times slower here).
        for (size_t c4 = 0; c4 < d / 4; c4++) {
            uint32_t *o = (uint32_t *)(kp + (c4 * ldk + j0) * 4);
#pragma clang loop vectorize(disable)
            for (size_t t = 0; t < 16; t++) o[t] = kb[t][c4];
        }
    }
    for (size_t c = 0; c < d; c++) {
        // A channel holding inf or NaN: scale NaN, so that this channel of every output is NaN.
        float amax = bits_to_f32(top[c]);
        int nonfinite = top[c] >= 0x7f800000u;
        inv[c] = nonfinite || amax < 1e-30f ? 0.0f : 127.0f / amax;
        vs[c] = nonfinite ? NAN : (amax < 1e-30f ? 0.0f : amax / 127.0f);
    }
    // Values, centred per channel and quantized per channel: [ldk/4][d][4].
    for (size_t g = 0; g < ldk / 4; g++) {
        for (size_t t = 0; t < 4; t++) {
            size_t j = 4 * g + t;
            if (j + 8 < n_keys) prefetch_row(v + (j + 8) * stride, d);
            if (j < n_keys) {
                for (size_t c = 0; c < d; c++) {
                    float x = __builtin_rintf((v[j * stride + c] - vm[c]) * inv[c]);
                    // (NaN, from a channel holding inf or NaN, whose scale is NaN: 0.)
                    x = x > 127.0f ? 127.0f : (x >= -127.0f ? x : (x < -127.0f ? -127.0f : 0.0f));
                    q8[t][c] = (uint8_t)(int8_t)x;
                }
            } else {
                for (size_t c = 0; c < d; c++) q8[t][c] = 0;
            }
        }
        uint32_t *o = (uint32_t *)(vp + g * d * 4); // little-endian: key 4g + t in byte t
        for (size_t c = 0; c < d; c++)
            o[c] = (uint32_t)q8[0][c] | (uint32_t)q8[1][c] << 8 | (uint32_t)q8[2][c] << 16 | (uint32_t)q8[3][c] << 24;
    }
    memcpy(base + l.bad, &bad, sizeof bad);
}
RQ_MULTIVERSION(attend_pack_s8, (const float *k, const float *v, size_t stride, size_t n_keys, size_t d, void *pack), (k, v, stride, n_keys, d, pack))

/// The scratch of one block of queries: scores f32 [TQ][ld], probabilities u8 [ROWS][ld], s32
/// sums of products [ROWS][d], probability sums [ROWS], running maxima [TQ][16].
typedef struct { float *s; uint8_t *p; int32_t *acc, *sums; float *mx; size_t ld; } s8_scratch;
RQ_INLINE s8_scratch s8_scratch_at(void *scratch, size_t n_keys, size_t d) {
    s8_scratch x;
    x.ld = attend_keys32(n_keys) + 16;
    x.s = (float *)scratch;
    x.p = (uint8_t *)(x.s + RQ_S8_TQ * x.ld);
    x.acc = (int32_t *)(x.p + RQ_S8_ROWS * x.ld);
    x.sums = x.acc + RQ_S8_ROWS * d;
    x.mx = (float *)(x.sums + RQ_S8_ROWS);
    return x;
}

/// out[i][c] = (Σ p·v)[i][c] · vscale[c] / Σ p[i] + vmean[c]; NaN rows where the query or some key
/// of the head is inf or NaN (NaN channels where a value is).
RQ_INLINE void attend_s8_finish(const void *pack, size_t n_keys, size_t d, const float *qsc, size_t qss, size_t n_q,
                                const int32_t *acc, const int32_t *sums, float *out, size_t os) {
    s8_pack_layout l = s8_layout(n_keys, d);
    const uint8_t *base = (const uint8_t *)pack;
    const float *vs = (const float *)(base + l.vs), *vm = (const float *)(base + l.vm);
    int bad;
    memcpy(&bad, base + l.bad, sizeof bad);
    for (size_t i = 0; i < n_q; i++) {
        float qsi = qsc[i * qss], *o = out + i * os;
        if (bad || qsi != qsi) {
            for (size_t c = 0; c < d; c++) o[c] = NAN;
            continue;
        }
        float inv = 1.0f / (float)sums[i];
        for (size_t c = 0; c < d; c++) o[c] = __builtin_fmaf((float)acc[i * d + c] * vs[c], inv, vm[c]);
    }
}

/// The VNNI block's arithmetic one value at a time (CPUs without AVX-512 VNNI): the same bits.
static void attend_s8_block_plain(const uint8_t *q, size_t qs, const float *qsc, size_t qss, size_t n_q, const void *pack,
                                  size_t n_keys, size_t d, float scale, void *scratch, float *out, size_t os) {
    s8_pack_layout l = s8_layout(n_keys, d);
    const uint8_t *base = (const uint8_t *)pack;
    const int8_t *kp = (const int8_t *)(base + l.k), *vp = (const int8_t *)(base + l.v);
    const int32_t *corr = (const int32_t *)(base + l.corr);
    const float *ks = (const float *)(base + l.ks);
    size_t ldk = attend_keys32(n_keys);
    s8_scratch x = s8_scratch_at(scratch, n_keys, d);
    for (size_t i = 0; i < n_q; i++) {
        const uint8_t *qi = q + i * qs;
        float mx = -INFINITY;
        for (size_t j = 0; j < n_keys; j++) {
            int32_t acc = 0;
            for (size_t c = 0; c < d; c++) acc += (int32_t)qi[c] * kp[((c / 4) * ldk + j) * 4 + c % 4];
            float v = (float)(acc - corr[j]) * ks[j];
            x.s[j] = v;
            mx = v > mx ? v : mx;
        }
        float a = qsc[i * qss] * scale * RQ_S8_LOG2E, b = -mx * a;
        int32_t sum = 0;
        for (size_t j = 0; j < n_keys; j++) {
            float y = __builtin_fmaf(x.s[j], a, b);
            y = y > RQ_S8_YMIN ? y : RQ_S8_YMIN;
            y = y < 0.0f ? y : 0.0f; // at the maximum, fma's rounding residue can be positive
            float t = __builtin_rintf(y), f = y - t;
            float e = __builtin_fmaf(__builtin_fmaf(__builtin_fmaf(RQ_S8_C3, f, RQ_S8_C2), f, RQ_S8_C1), f, RQ_S8_C0);
            int32_t u = (int32_t)__builtin_rintf(__builtin_ldexpf(e, (int)t));
            x.p[j] = (uint8_t)u;
            sum += u;
        }
        x.sums[i] = sum;
        for (size_t c = 0; c < d; c++) {
            int32_t acc = 0;
            for (size_t j = 0; j < n_keys; j++) acc += (int32_t)x.p[j] * vp[((j / 4) * d + c) * 4 + j % 4];
            x.acc[i * d + c] = acc;
        }
    }
    attend_s8_finish(pack, n_keys, d, qsc, qss, n_q, x.acc, x.sums, out, os);
}

size_t rq_attend_s8_scratch(size_t n_keys, size_t d) {
    size_t ld = attend_keys32(n_keys) + 16;
    return RQ_S8_TQ * ld * 4 + RQ_S8_ROWS * ld + RQ_S8_ROWS * d * 4 + RQ_S8_ROWS * 4 + RQ_S8_TQ * 64 + 64;
}

#if RQ_X86
/// Which of the 16 lanes from index i hold values below n.
RQ_INLINE __mmask16 lanes16(size_t i, size_t n) {
    return i + 16 <= n ? (__mmask16)0xFFFF : (i >= n ? 0 : (__mmask16)((1u << (n - i)) - 1));
}

/// Scores of NQ queries (u8 rows qs bytes apart) against keys j0…j0+31, (Σ q8·k8 − corr) · kscale.
static inline __attribute__((always_inline)) RQ_AVX512VNNI void attend_s8_qk_tile(
        const uint8_t *q, size_t qs, const uint8_t *kp, const int32_t *corr, const float *ks, size_t ldk, size_t j0,
        size_t d4, size_t n_keys, float *s, size_t lds, float *mx, const int NQ) {
    __m512i a[8][2];
    RQ_UNROLL for (int i = 0; i < NQ; i++) a[i][0] = a[i][1] = _mm512_setzero_si512();
    const uint8_t *kc = kp + 4 * j0;
    for (size_t c4 = 0; c4 < d4; c4++) {
        __m512i k0 = _mm512_loadu_si512((const void *)(kc + 4 * c4 * ldk));
        __m512i k1 = _mm512_loadu_si512((const void *)(kc + 4 * c4 * ldk + 64));
        RQ_UNROLL for (int i = 0; i < NQ; i++) {
            uint32_t w; memcpy(&w, q + i * qs + 4 * c4, 4);
            __m512i qb = _mm512_set1_epi32((int)w);
            a[i][0] = _mm512_dpbusd_epi32(a[i][0], qb, k0);
            a[i][1] = _mm512_dpbusd_epi32(a[i][1], qb, k1);
        }
    }
    __m512i c0 = _mm512_loadu_si512((const void *)(corr + j0)), c1 = _mm512_loadu_si512((const void *)(corr + j0 + 16));
    __m512 s0 = _mm512_loadu_ps(ks + j0), s1 = _mm512_loadu_ps(ks + j0 + 16);
    // Each query's running maximum (16 lanes) over the keys below n_keys.
    __mmask16 m0 = lanes16(j0, n_keys);
    __mmask16 m1 = lanes16(j0 + 16, n_keys);
    RQ_UNROLL for (int i = 0; i < NQ; i++) {
        __m512 x0 = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(a[i][0], c0)), s0);
        __m512 x1 = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(a[i][1], c1)), s1);
        _mm512_storeu_ps(s + i * lds + j0, x0);
        _mm512_storeu_ps(s + i * lds + j0 + 16, x1);
        __m512 m = j0 == 0 ? _mm512_set1_ps(-INFINITY) : _mm512_loadu_ps(mx + 16 * i);
        m = _mm512_mask_max_ps(m, m0, m, x0);
        m = _mm512_mask_max_ps(m, m1, m, x1);
        _mm512_storeu_ps(mx + 16 * i, m);
    }
}

static RQ_AVX512VNNI void attend_s8_qk_rows(const uint8_t *q, size_t qs, size_t n, const uint8_t *kp, const int32_t *corr,
                                            const float *ks, size_t ldk, size_t j0, size_t d4, size_t n_keys, float *s, size_t lds, float *mx) {
    switch (n) {
    case 1: attend_s8_qk_tile(q, qs, kp, corr, ks, ldk, j0, d4, n_keys, s, lds, mx, 1); break;
    case 2: attend_s8_qk_tile(q, qs, kp, corr, ks, ldk, j0, d4, n_keys, s, lds, mx, 2); break;
    case 3: attend_s8_qk_tile(q, qs, kp, corr, ks, ldk, j0, d4, n_keys, s, lds, mx, 3); break;
    case 4: attend_s8_qk_tile(q, qs, kp, corr, ks, ldk, j0, d4, n_keys, s, lds, mx, 4); break;
    case 5: attend_s8_qk_tile(q, qs, kp, corr, ks, ldk, j0, d4, n_keys, s, lds, mx, 5); break;
    case 6: attend_s8_qk_tile(q, qs, kp, corr, ks, ldk, j0, d4, n_keys, s, lds, mx, 6); break;
    case 7: attend_s8_qk_tile(q, qs, kp, corr, ks, ldk, j0, d4, n_keys, s, lds, mx, 7); break;
    default: attend_s8_qk_tile(q, qs, kp, corr, ks, ldk, j0, d4, n_keys, s, lds, mx, 8); break;
    }
}

/// Row of scores (n valid, max mx) into u8 probabilities round(255 · 2^y), y = α·log2(e)·(s − mx)
/// (2^f on [−½, ½] by a cubic within 1.1e-4: 0.03 of a step of 255), zero up to `pad`; returns
/// their sum.
static RQ_AVX512VNNI int32_t attend_s8_softmax_row(const float *s, size_t n, size_t pad, float alpha, float mx, uint8_t *p) {
    float a = alpha * RQ_S8_LOG2E, b = -mx * a;
    __m512 va = _mm512_set1_ps(a), vb = _mm512_set1_ps(b), lo = _mm512_set1_ps(RQ_S8_YMIN);
    __m512 c0 = _mm512_set1_ps(RQ_S8_C0), c1 = _mm512_set1_ps(RQ_S8_C1), c2 = _mm512_set1_ps(RQ_S8_C2), c3 = _mm512_set1_ps(RQ_S8_C3);
    __m512i sum = _mm512_setzero_si512();
    for (size_t j = 0; j < pad; j += 16) {
        __mmask16 valid = lanes16(j, n);
        __m512 y = _mm512_max_ps(_mm512_fmadd_ps(_mm512_maskz_loadu_ps(valid, s + j), va, vb), lo);
        y = _mm512_min_ps(y, _mm512_setzero_ps()); // y ≤ 0, as the portable kernel: at most 255
        __m512 t = _mm512_roundscale_ps(y, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        __m512 f = _mm512_sub_ps(y, t);
        __m512 q = _mm512_fmadd_ps(_mm512_fmadd_ps(_mm512_fmadd_ps(c3, f, c2), f, c1), f, c0);
        __m512i u = _mm512_maskz_cvtps_epi32(valid, _mm512_scalef_ps(q, t));
        sum = _mm512_add_epi32(sum, u);
        _mm_storeu_si128((__m128i *)(p + j), _mm512_cvtepi32_epi8(u));
    }
    return _mm512_reduce_add_epi32(sum);
}

/// acc (s32, rows lda apart) of NQ queries, values c0…c0+16·NC, continued over key groups
/// g0…g1 − 1 (from zero at g0 = 0).
static inline __attribute__((always_inline)) RQ_AVX512VNNI void attend_s8_pv_tile(
        const uint8_t *p, size_t ldp, const uint8_t *vp, size_t d, size_t c0, size_t g0, size_t g1, int32_t *acc, size_t lda,
        __mmask16 last, const int NQ, const int NC) {
    __m512i a[8][8];
    RQ_UNROLL for (int i = 0; i < NQ; i++)
        RQ_UNROLL for (int c = 0; c < NC; c++)
            a[i][c] = g0 == 0 ? _mm512_setzero_si512() : _mm512_maskz_loadu_epi32(c == NC - 1 ? last : 0xFFFF, acc + i * lda + c0 + 16 * c);
    for (size_t g = g0; g < g1; g++) {
        __m512i v[8];
        RQ_UNROLL for (int c = 0; c < NC; c++)
            v[c] = _mm512_maskz_loadu_epi32(c == NC - 1 ? last : 0xFFFF, (const void *)(vp + 4 * (g * d + c0 + 16 * c)));
        RQ_UNROLL for (int i = 0; i < NQ; i++) {
            uint32_t w; memcpy(&w, p + i * ldp + 4 * g, 4);
            __m512i pb = _mm512_set1_epi32((int)w);
            RQ_UNROLL for (int c = 0; c < NC; c++) a[i][c] = _mm512_dpbusd_epi32(a[i][c], pb, v[c]);
        }
    }
    RQ_UNROLL for (int i = 0; i < NQ; i++)
        RQ_UNROLL for (int c = 0; c < NC; c++) _mm512_mask_storeu_epi32(acc + i * lda + c0 + 16 * c, c == NC - 1 ? last : 0xFFFF, a[i][c]);
}

static RQ_AVX512VNNI void attend_s8_pv_rows(const uint8_t *p, size_t ldp, const uint8_t *vp, size_t d, size_t groups,
                                            int32_t *acc, size_t lda, size_t n) {
    size_t nc = (d + 15) / 16;
    for (size_t g0 = 0; g0 < groups; g0 += RQ_S8_KB / 4) {
        size_t g1 = g0 + RQ_S8_KB / 4 < groups ? g0 + RQ_S8_KB / 4 : groups;
        for (size_t c0 = 0; c0 < nc; c0 += 8) {
            size_t w, nq, cc = 16 * c0;
            __mmask16 last;
            pv_chunk(d, c0, &w, &last, &nq);
            for (size_t i = 0; i < n; i += nq) {
                RQ_PV_TILES(attend_s8_pv_tile, w, p + i * ldp, ldp, vp, d, cc, g0, g1, acc + i * lda, lda, last)
            }
        }
    }
}

/// n_q ≤ RQ_S8_TQ queries (u8 rows qs bytes apart, scales qss floats apart) of one head against a
/// packed head: out rows os floats apart.
static RQ_AVX512VNNI void attend_s8_block(const uint8_t *q, size_t qs, const float *qsc, size_t qss, size_t n_q,
                                          const void *pack, size_t n_keys, size_t d, float scale, void *scratch,
                                          float *out, size_t os) {
    s8_pack_layout l = s8_layout(n_keys, d);
    const uint8_t *base = (const uint8_t *)pack;
    size_t ldk = attend_keys32(n_keys);
    s8_scratch x = s8_scratch_at(scratch, n_keys, d);
    const int32_t *corr = (const int32_t *)(base + l.corr);
    const float *ks = (const float *)(base + l.ks);
    for (size_t j0 = 0; j0 < ldk; j0 += 32)
        for (size_t i = 0; i < n_q; i += 8)
            attend_s8_qk_rows(q + i * qs, qs, n_q - i < 8 ? n_q - i : 8, base + l.k, corr, ks, ldk, j0, d / 4, n_keys,
                              x.s + i * x.ld, x.ld, x.mx + 16 * i);
    size_t groups = (n_keys + 3) / 4, pad = (4 * groups + 15) & ~(size_t)15;
    for (size_t i = 0; i < n_q; i++)
        x.sums[i] = attend_s8_softmax_row(x.s + i * x.ld, n_keys, pad, qsc[i * qss] * scale,
                                          _mm512_reduce_max_ps(_mm512_loadu_ps(x.mx + 16 * i)), x.p + i * x.ld);
    // Rows past n_q that a P·V row block reads: zero.
    for (size_t i = n_q; i < n_q + 8 && i < RQ_S8_ROWS; i++) memset(x.p + i * x.ld, 0, pad);
    attend_s8_pv_rows(x.p, x.ld, base + l.v, d, groups, x.acc, d, n_q);
    attend_s8_finish(pack, n_keys, d, qsc, qss, n_q, x.acc, x.sums, out, os);
}
#endif

void rq_attend_s8_tile(const uint8_t *q, size_t qs, const float *qscale, size_t qss, size_t n_q, const void *pack,
                       size_t n_keys, size_t d, float scale, void *scratch, float *out, size_t os) {
    if (n_keys == 0) { // attention over no keys: zeros, as the other kernels give
        for (size_t i = 0; i < n_q; i++) memset(out + i * os, 0, 4 * d);
        return;
    }
    for (size_t i = 0; i < n_q; i += RQ_S8_TQ) {
        size_t n = n_q - i < RQ_S8_TQ ? n_q - i : RQ_S8_TQ;
#if RQ_X86
        if (rq_has_vnni()) {
            attend_s8_block(q + i * qs, qs, qscale + i * qss, qss, n, pack, n_keys, d, scale, scratch, out + i * os, os);
            continue;
        }
#endif
        attend_s8_block_plain(q + i * qs, qs, qscale + i * qss, qss, n, pack, n_keys, d, scale, scratch, out + i * os, os);
    }
}
#pragma clang fp contract(on)

// ---- int8 GEMM (AVX-512 VNNI) -----------------------------------------------------------------
#pragma clang fp contract(off)

size_t rq_gemm_s8_pack_bytes(size_t n, size_t k) { return (n + 63) / 64 * 64 * ((k + 3) / 4 * 4); }

void rq_gemm_s8_pack(const int8_t *w, size_t n, size_t k, size_t g0, size_t g1, int8_t *out) {
    size_t k4 = (k + 3) / 4, whole = k / 4;
    for (size_t g = g0; g < g1; g++) {
        uint8_t *o = (uint8_t *)out + g * 64 * 4 * k4;
        // Row by row: each row read in order, its words stored 256 bytes apart (the group's
        // 64 · k bytes stay in L2 while its 64 rows are stored).
        for (size_t j = 0; j < 64; j++) {
            size_t r = 64 * g + j;
            uint8_t *oj = o + 4 * j;
            if (r >= n) { // rows past n: zeros
                for (size_t s = 0; s < k4; s++) memset(oj + 256 * s, 0, 4);
                continue;
            }
            const uint8_t *row = (const uint8_t *)w + r * k;
            for (size_t s = 0; s < whole; s++) memcpy(oj + 256 * s, row + 4 * s, 4);
            if (whole < k4) { // the last columns past k: zeros
                uint8_t last[4] = {0, 0, 0, 0};
                memcpy(last, row + 4 * whole, k - 4 * whole);
                memcpy(oj + 256 * whole, last, 4);
            }
        }
    }
}

#if RQ_X86
/// MR rows of a (u8, lda apart) × one 64-row group of packed W (k4 steps of 256 bytes), then
/// s8_epilogue (+ bias) into y (rows ldy apart), lanes in mk.
static inline __attribute__((always_inline)) RQ_AVX512VNNI void gemm_s8_tile(
        const uint8_t *a, size_t lda, const int8_t *bp, size_t k4, const float *ws, const int32_t *wsum, const float *xs,
        const float *bias, float *y, size_t ldy, const __mmask16 *mk, const int MR) {
    __m512i acc[6][4];
    RQ_UNROLL for (int i = 0; i < MR; i++)
        RQ_UNROLL for (int p = 0; p < 4; p++) acc[i][p] = _mm512_setzero_si512();
    for (size_t s = 0; s < k4; s++) {
        __m512i b0 = _mm512_loadu_si512((const void *)(bp + 256 * s)), b1 = _mm512_loadu_si512((const void *)(bp + 256 * s + 64));
        __m512i b2 = _mm512_loadu_si512((const void *)(bp + 256 * s + 128)), b3 = _mm512_loadu_si512((const void *)(bp + 256 * s + 192));
        RQ_UNROLL for (int i = 0; i < MR; i++) {
            uint32_t w;
            memcpy(&w, a + i * lda + 4 * s, 4);
            __m512i x = _mm512_set1_epi32((int)w);
            acc[i][0] = _mm512_dpbusd_epi32(acc[i][0], x, b0);
            acc[i][1] = _mm512_dpbusd_epi32(acc[i][1], x, b1);
            acc[i][2] = _mm512_dpbusd_epi32(acc[i][2], x, b2);
            acc[i][3] = _mm512_dpbusd_epi32(acc[i][3], x, b3);
        }
    }
    RQ_UNROLL for (int p = 0; p < 4; p++) {
        // s8_epilogue: (float)(acc − 128·Σw) · (xs · ws), then + bias, each rounded.
        __m512i corr = _mm512_slli_epi32(_mm512_maskz_loadu_epi32(mk[p], wsum + 16 * p), 7);
        __m512 wv = _mm512_maskz_loadu_ps(mk[p], ws + 16 * p);
        __m512 bv = bias ? _mm512_maskz_loadu_ps(mk[p], bias + 16 * p) : _mm512_setzero_ps();
        RQ_UNROLL for (int i = 0; i < MR; i++) {
            __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(acc[i][p], corr)), _mm512_mul_ps(_mm512_set1_ps(xs[i]), wv));
            if (bias) v = _mm512_add_ps(v, bv);
            _mm512_mask_storeu_ps(y + i * ldy + 16 * p, mk[p], v);
        }
    }
}

static RQ_AVX512VNNI void gemm_s8_vnni(const uint8_t *a, const float *xs, const int8_t *bp, const float *ws, const int32_t *wsum,
                                       const float *bias, float *y, size_t m0, size_t m1, size_t g0, size_t g1, size_t n, size_t k) {
    size_t k4 = (k + 3) / 4;
    for (size_t g = g0; g < g1; g++) {
        size_t c0 = 64 * g;
        __mmask16 mk[4];
        for (int p = 0; p < 4; p++) mk[p] = lanes16(c0 + 16 * (size_t)p, n);
        const int8_t *b = bp + g * 256 * k4;
        const float *bi = bias ? bias + c0 : NULL;
        for (size_t i = m0; i < m1; i += 6) {
            const uint8_t *ai = a + i * k;
            float *yi = y + i * n + c0;
            switch (m1 - i < 6 ? m1 - i : 6) {
            case 1: gemm_s8_tile(ai, k, b, k4, ws + c0, wsum + c0, xs + i, bi, yi, n, mk, 1); break;
            case 2: gemm_s8_tile(ai, k, b, k4, ws + c0, wsum + c0, xs + i, bi, yi, n, mk, 2); break;
            case 3: gemm_s8_tile(ai, k, b, k4, ws + c0, wsum + c0, xs + i, bi, yi, n, mk, 3); break;
            case 4: gemm_s8_tile(ai, k, b, k4, ws + c0, wsum + c0, xs + i, bi, yi, n, mk, 4); break;
            case 5: gemm_s8_tile(ai, k, b, k4, ws + c0, wsum + c0, xs + i, bi, yi, n, mk, 5); break;
            default: gemm_s8_tile(ai, k, b, k4, ws + c0, wsum + c0, xs + i, bi, yi, n, mk, 6); break;
            }
        }
    }
}
#endif

int rq_gemm_s8(const uint8_t *a, const float *xs, const int8_t *bp, const float *ws, const int32_t *wsum, const float *bias,
               float *y, size_t m0, size_t m1, size_t g0, size_t g1, size_t n, size_t k) {
#if RQ_X86
    if (rq_has_vnni() && k % 4 == 0) {
        gemm_s8_vnni(a, xs, bp, ws, wsum, bias, y, m0, m1, g0, g1, n, k);
        return 1;
    }
#endif
    return 0;
}

#pragma clang fp contract(on)
