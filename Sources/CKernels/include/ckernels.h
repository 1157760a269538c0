// reelql's CPU kernels: portable C with AVX2 / AVX-512 paths chosen at run time.
// Every function works on caller-owned, contiguous buffers and never allocates.
#ifndef REELQL_CKERNELS_H
#define REELQL_CKERNELS_H
#include <stddef.h>
#include <stdint.h>

/// Which instruction set the kernels use: 0 portable, 1 AVX2+FMA, 2 AVX-512 (F, BW, VL), 3 with BF16.
int rq_cpu_level(void);
/// Forces a lower level on the calling thread (for tests of the portable paths; ThreadPool work
/// the thread starts runs at it too); -1 lifts it. Returns the level now in force on this thread.
int rq_set_cpu_level(int level);
/// The level forced on the calling thread, or -1.
int rq_forced_cpu_level(void);

// --- conversions -----------------------------------------------------------------------------
void rq_bf16_to_f32(const uint16_t *src, float *dst, size_t n);
/// Round to nearest even, as PyTorch's float → bfloat16.
void rq_f32_to_bf16(const float *src, uint16_t *dst, size_t n);
void rq_f16_to_f32(const uint16_t *src, float *dst, size_t n);

// --- matrix × vector with 16-bit weights ------------------------------------------------------
/// y[r] = Σ_k W[r, k] · x[k] for rows [row_begin, row_end) of a row-major bf16 matrix W [rows, cols].
/// x is bf16 (activations rounded as PyTorch's bf16 matmul rounds them), y f32, accumulation f32.
/// On AVX-512 BF16 CPUs each instruction multiplies and adds 32 pairs.
void rq_gemv_bf16(const uint16_t *w, const uint16_t *x, float *y, size_t cols, size_t row_begin, size_t row_end);
/// The same for several input vectors at once (x: [batch, cols] bf16, y: [batch, rows]): each weight
/// row is read once for the whole batch.
void rq_gemm_small_bf16(const uint16_t *w, const uint16_t *x, float *y, size_t batch, size_t rows, size_t cols,
                        size_t row_begin, size_t row_end);
void rq_gemv_f16(const uint16_t *w, const float *x, float *y, size_t cols, size_t row_begin, size_t row_end);

// --- int8 weights × int8 activations (see kernels.c) -----------------------------------------
/// Whether the int8 products use AVX-512 VNNI here (else portable integer code, same results).
int rq_has_vnni(void);
/// Per row of x [rows, cols]: scale = max|x| / 127, q = nearest(x · 127 / max|x|) + 128 as u8
/// (a zero row: scale 0; a row with inf or NaN: scale NaN, so its products are NaN).
void rq_quantize_activations(const float *x, size_t rows, size_t cols, uint8_t *q, float *scales);
/// Per row of w [rows, cols]: symmetric int8 (scale = max|w| / 127) and the sum of its int8
/// values. Returns how many rows hold inf or NaN.
size_t rq_quantize_weights(const float *w, size_t rows, size_t cols, int8_t *q, float *scales, int32_t *sums);
/// y[b, r] = (Σ_k x[b, k] · w[r, k] − 128 · wsum[r]) · xs[b] · ws[r] for rows [row_begin, row_end)
/// of W [rows, cols] s8 and x [batch, cols] u8 (as rq_quantize_activations makes them). The sums
/// are exact integers (cols ≤ 65,536), so a row's value never depends on the batch.
void rq_gemm_small_s8(const int8_t *w, const float *ws, const int32_t *wsum, const uint8_t *x, const float *xs, float *y,
                      size_t batch, size_t rows, size_t cols, size_t row_begin, size_t row_end);
/// The same epilogue on a GEMM's s32 sums acc [rows, n] = x_u8 · W_s8ᵀ: y = (acc − 128 · wsum) · xs · ws
/// (y may be acc's own memory), then y += bias[column] when bias is not NULL (the same two roundings
/// as a separate rq_add_bias).
void rq_dequantize_s32(const int32_t *acc, const float *ws, const int32_t *wsum, const float *xs, const float *bias, float *y,
                       size_t rows, size_t n);
/// Between an int8 MLP's two products, one pass per row of the first product's s32 sums acc
/// [rows, n], in place: rq_dequantize_s32 (with the bias), then the activation (0 SiLU, 1 GELU
/// (erf), 2 GELU (tanh), 3 quick GELU, as their own kernels compute it), then quantized for the
/// second product as rq_quantize_activations does (q [rows, n] u8, scales [rows]). acc's memory
/// ends holding the activated floats.
void rq_s8_epilogue_act_quantize(int32_t *acc, const float *ws, const int32_t *wsum, const float *xs, const float *bias,
                                 size_t rows, size_t n, int act, uint8_t *q, float *scales);

/// Sums n floats (a memory-read probe for bandwidth measurements).
double rq_sum_f32(const float *x, size_t n);

// --- element-wise and row-wise ----------------------------------------------------------------
/// y = x / sqrt(mean(x²) + eps) · w, per row of length n.
void rq_rmsnorm(const float *x, const float *w, float *y, size_t rows, size_t n, float eps);
/// y = (x − mean) / sqrt(var + eps) · w + b, per row (w, b may be NULL).
void rq_layernorm(const float *x, const float *w, const float *b, float *y, size_t rows, size_t n, float eps);
/// In-place numerically stable softmax of each row (max subtracted; −inf entries give 0).
void rq_softmax(float *x, size_t rows, size_t n);
void rq_silu(float *x, size_t n);
/// GELU, exact (erf) form.
void rq_gelu_erf(float *x, size_t n);
/// GELU, tanh approximation.
void rq_gelu_tanh(float *x, size_t n);
/// x · sigmoid(1.702 x)
void rq_quick_gelu(float *x, size_t n);
/// out = silu(gate) · up
void rq_silu_mul(const float *gate, const float *up, float *out, size_t n);
/// y += x
void rq_add(float *y, const float *x, size_t n);
/// y[r, :] += b for each row
void rq_add_bias(float *y, const float *b, size_t rows, size_t n);

/// Rotary embedding, rotate-half form (Qwen2, LLaMA): for each of `rows` rows holding `heads`
/// vectors of `head_dim`, x1 = x[:d/2], x2 = x[d/2:], out = x·cos + rotate_half(x)·sin with
/// cos/sin [rows, head_dim] shared by all heads of a row. In place. row_stride in floats.
void rq_rope_rotate_half(float *x, const float *cos, const float *sin, size_t rows, size_t heads,
                         size_t head_dim, size_t row_stride);

// --- attention helpers -------------------------------------------------------------------------
/// Softmax of `rows` rows of length n after multiplying by `scale`. With causal_base ≥ 0 only the
/// first min(n, causal_base + ((r + row_offset) % period) + 1) entries of row r take part (the
/// rest become 0).
void rq_softmax_scaled(float *x, size_t rows, size_t n, float scale, long causal_base, size_t period, size_t row_offset);
/// The same, writing the probabilities as bf16 (round to nearest even) into `out` instead of
/// in place: the input of a bf16 P·V product, without a second pass.
void rq_softmax_scaled_bf16(float *x, size_t rows, size_t n, float scale, long causal_base, size_t period,
                            size_t row_offset, uint16_t *out);
/// One query vector of each of g heads sharing one key/value head against n_keys keys: per head,
/// out = softmax(scale · q·Kᵀ) · V (q, out: the g heads' head_dim values one after another); each
/// key and value row is read once for all g. k and v rows are kv_stride floats apart; scores is
/// scratch of g·(n_keys + 1) floats.
void rq_attend_group(const float *q, const float *k, const float *v, size_t kv_stride, size_t n_keys,
                     size_t head_dim, float scale, size_t g, float *scores, float *out);
/// Part of a split (flash-decoding) softmax: n_q query vectors q [n_q, head_dim] (contiguous)
/// against n_keys keys (rows kv_stride floats apart), unnormalised: per query h,
/// m[h] = max_j scale·q_h·k_j, s[h] = Σ_j e^(score_j − m[h]), acc[h] = Σ_j e^(score_j − m[h])·v_j
/// (acc [n_q, head_dim]). Each key and value row is read once for all n_q queries; a query's
/// arithmetic does not depend on n_q. scores is scratch of n_q·(n_keys + 32) floats.
void rq_attend_partial(const float *q, size_t n_q, const float *k, const float *v, size_t kv_stride, size_t n_keys,
                       size_t head_dim, float scale, float *scores, float *acc, float *m, float *s);
/// Joins two `rq_attend_partial` results over disjoint keys of the same n_q queries into their
/// attention outputs out [n_q, head_dim] (may be neither acc): the exact softmax over both key sets.
void rq_attend_merge(const float *acc1, const float *m1, const float *s1, const float *acc2, const float *m2,
                     const float *s2, size_t n_q, size_t head_dim, float *out);
/// bf16 attention in tiles (see kernels.c). Keys padded for the packed layout: n_keys rounded
/// up to 32.
size_t rq_attend_bf16_keys(size_t n_keys);
/// Packs one head's n_keys bf16 keys and values (rows `stride` values apart, head_dim d, even):
/// kp holds d · rq_attend_bf16_keys(n_keys) values, vp d · 2⌈n_keys / 2⌉.
void rq_attend_pack_bf16(const uint16_t *k, const uint16_t *v, size_t stride, size_t n_keys, size_t d, uint16_t *kp,
                         uint16_t *vp);
/// Scratch bytes one rq_attend_bf16_tile call needs.
size_t rq_attend_bf16_scratch(size_t n_keys, size_t d);
/// n_q bf16 queries of one head (rows qs apart; best in blocks of 32; d even) against the packed keys and
/// values: out (f32 rows os apart) = softmax(scale · q·Kᵀ) · V, scores and sums f32,
/// probabilities rounded to bf16; zeros over no keys. causal_base ≥ 0: query i sees the first
/// causal_base + i + 1 keys.
void rq_attend_bf16_tile(const uint16_t *q, size_t qs, size_t n_q, const uint16_t *kp, const uint16_t *vp, size_t n_keys,
                         size_t d, float scale, long causal_base, void *scratch, float *out, size_t os);
/// int8 attention in tiles (see kernels.c), for int8 vision towers: 8-bit queries, keys, values
/// and probabilities, integer products.
/// Bytes of one head's packed keys and values.
size_t rq_attend_s8_pack_bytes(size_t n_keys, size_t d);
/// Packs one head's n_keys f32 keys and values (rows `stride` floats apart; d a multiple of 4, at
/// most 512; n_keys at most 65,536, so that a row's Σ p·v fits 32 bits): keys centred on their
/// mean and quantized per key, values centred and quantized per channel.
void rq_attend_pack_s8(const float *k, const float *v, size_t stride, size_t n_keys, size_t d, void *pack);
/// Scratch bytes one rq_attend_s8_tile call needs.
size_t rq_attend_s8_scratch(size_t n_keys, size_t d);
/// n_q queries of one head, quantized as rq_quantize_activations does (u8 rows qs bytes apart,
/// scales qss floats apart), against a packed head: out (f32 rows os apart) =
/// softmax(scale · q·Kᵀ) · V with u8 probabilities; NaN rows where the query or some key is inf or
/// NaN, NaN channels where a value is; zeros over no keys. The same bits on every CPU.
void rq_attend_s8_tile(const uint8_t *q, size_t qs, const float *qscale, size_t qss, size_t n_q, const void *pack,
                       size_t n_keys, size_t d, float scale, void *scratch, float *out, size_t os);
/// Bytes of an int8 weight [n, k] packed for rq_gemm_s8: 64-row groups (the last zero-padded),
/// each k/4 steps (k rounded up to 4, zero-padded) of 256 bytes: rows 64g…64g+63's bytes 4s…4s+3.
size_t rq_gemm_s8_pack_bytes(size_t n, size_t k);
/// Packs groups g0…g1 − 1 of w [n, k] into out (rq_gemm_s8_pack_bytes(n, k) bytes).
void rq_gemm_s8_pack(const int8_t *w, size_t n, size_t k, size_t g0, size_t g1, int8_t *out);
/// y [rows m0…m1 − 1, columns of groups g0…g1 − 1] (y rows n floats apart) of a [m, k] u8
/// (rq_quantize_activations, scales xs) times packed W (scales ws, sums wsum: n each), each
/// s8_epilogue as rq_dequantize_s32 computes it (+ bias, n floats, or NULL): the same bits.
/// Returns 0 (nothing done) without AVX-512 VNNI (or below the AVX-512 level forced on this thread,
/// rq_set_cpu_level) or where k is not a multiple of 4.
int rq_gemm_s8(const uint8_t *a, const float *xs, const int8_t *bp, const float *ws, const int32_t *wsum, const float *bias,
               float *y, size_t m0, size_t m1, size_t g0, size_t g1, size_t n, size_t k);
/// In place over rows [rows, n]: the activation (as rq_s8_epilogue_act_quantize), then each row
/// quantized as rq_quantize_activations does into q and scales.
void rq_act_quantize(float *x, size_t rows, size_t n, int act, uint8_t *q, float *scales);
#endif
