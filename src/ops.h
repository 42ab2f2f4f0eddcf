/* ops: the transformer's kernels, one forward/backward pair per op.
 *
 * Conventions (llm.c's): every tensor is a flat row-major float array whose
 * shape is given in the comment; N = B*T tokens. Backward functions
 * ACCUMULATE (+=) into their gradient outputs, so a tensor used twice (the
 * tied embedding, the residual stream) just receives two contributions;
 * the variants whose comment says so (*_set, *_beta and the bf16 ones
 * taking beta) overwrite or scale the output instead, which model.c uses
 * for buffers written once per backward, so nothing has to clear them.
 * No op allocates: scratch space is passed in by the caller.
 *
 * The non-BLAS loops run on the thread pool (pool.h), split by rows (or by
 * columns where a gradient sums over rows), and attention splits by
 * (row, head); results are the same for every thread count. */
#ifndef FSPO_OPS_H
#define FSPO_OPS_H

#include <stdint.h>

#include "src/batch.h"
#include "src/bf16.h"

/* Attention works on blocks of this many query rows so that a query block
 * only multiplies against the keys at or before its last row (and, in a
 * tree-packed row, only against key ranges some query of the block may see). */
#define ATTN_QBLOCK 128
/* bf16 attention's key ranges are widened to multiples of this many keys,
 * and its fixed-shape products cover rows whose length is one (the trainer
 * pads bf16 batches to it: attention_bf16_prepare) */
#define ATTN_KGRAIN 32
/* attention_backward's scratch holds this many per-thread [QBLOCK, T] slices */
#define ATTN_SCRATCH_SLOTS 8

/* The big products' threads: 1 (default, or FSPO_SGEMM unset/other) splits
 * each product's output rows over the pool with single-threaded sgemms;
 * 0 (FSPO_SGEMM=openblas) leaves them to OpenBLAS's own threads. Rows are
 * computed independently either way, but OpenBLAS's kernels may round a
 * row differently with another row count, so results agree to ~1e-7 across
 * pool sizes, not bitwise (with 0 and 1 OpenBLAS thread they are bitwise equal). */
void ops_set_gemm_on_pool(int on);

/* out[N,OUT] = inp[N,IN] @ w[OUT,IN]^T  (w in nn.Linear layout). */
void matmul_forward(float *out, const float *inp, const float *w, int N, int IN, int OUT);
/* dinp[N,IN] += dout[N,OUT] @ w[OUT,IN];  dw[OUT,IN] += dout^T @ inp.
 * Either gradient may be NULL to skip it. */
void matmul_backward(float *dinp, float *dw, const float *dout, const float *inp, const float *w, int N, int IN,
                     int OUT);
/* The same with dinp = beta * dinp + dout @ w (beta 0: no need to clear dinp first). */
void matmul_backward_beta(float *dinp, float beta, float *dw, const float *dout, const float *inp, const float *w, int N,
                          int IN, int OUT);

/* out[N,C] = emb[tokens[n], :] */
void embedding_forward(float *out, const int32_t *tokens, const float *emb, int N, int C);
/* demb[tokens[n], :] += dout[n, :] */
void embedding_backward(float *demb, const float *dout, const int32_t *tokens, int N, int C);

/* out[N,C] = inp * rstd * g, rstd[N] = 1/sqrt(mean(inp^2) + eps) (saved for backward). */
void rmsnorm_forward(float *out, float *rstd, const float *inp, const float *g, int N, int C, float eps);
void rmsnorm_backward(float *dinp, float *dg, const float *dout, const float *inp, const float *g,
                      const float *rstd, int N, int C);

/* RoPE tables cos/sin[max_pos, hd/2] for base theta (freq_i = theta^(-2i/hd)). */
void rope_tables(float *cos_t, float *sin_t, int max_pos, int hd, double theta);
/* Rotates the q and k thirds of qkv[N,3C] in place by each token's pos[N]
 * (interleaved pairs, H heads of hd = C/H). */
void rope_forward(float *qkv, const int32_t *pos, const float *cos_t, const float *sin_t, int N, int C, int H);
/* Inverse rotation of dq, dk inside dqkv[N,3C] (rotations are orthogonal). */
void rope_backward(float *dqkv, const int32_t *pos, const float *cos_t, const float *sin_t, int N, int C, int H);

/* Masked multi-head attention over B rows of T tokens.
 * qkv[B,T,3C] (q,k already rotated), out[B,T,C], att[B,H,T,T] softmax
 * probabilities (saved for backward; entries a token cannot see are 0 and
 * rows are only written up to the query block's last key).
 * Visibility: token t sees u iff u == t, or u < t and
 * vis[b][seg[t]][seg[u]] (seg[B,T], vis[B,S,S]). */
void attention_forward(float *out, float *att, const float *qkv, const int32_t *seg, const uint8_t *vis, int B, int T,
                       int C, int H, int S);
/* dqkv[B,T,3C] += ...; scratch of scratch_floats floats (at least one
 * [min(T,QBLOCK), T] slice; attention_scratch_floats(T) gives room for
 * ATTN_SCRATCH_SLOTS threads). seg/vis/S as for the forward, which must
 * have run on the same batch. */
void attention_backward(float *dqkv, float *scratch, size_t scratch_floats, const float *dout, const float *att,
                        const float *qkv, const int32_t *seg, const uint8_t *vis, int B, int T, int C, int H, int S);
size_t attention_scratch_floats(int T);

/* The same attention without the [B,H,T,T] probabilities (model.attention
 * flash; docs/model.md, "Attention memory"), flash-attention style: query
 * blocks of ATTN_QBLOCK rows against key tiles of at most 128 keys with the
 * online softmax (a running max and sum per query, the output rescaled as
 * the max grows); it saves lse[B,H,T], the log-sum-exp of each query's
 * scaled visible scores. The backward recomputes each tile's probabilities
 * exp(s - lse) and uses dS = P (dP - rowsum(dO * out)), so it needs the
 * forward's out and lse. Masks as attention_forward's; results agree with
 * it to fp32 rounding (tests/test_ops.c). Scratch: per thread that should
 * run, two [QBLOCK, 128] tiles and 2 QBLOCK floats, whatever T;
 * attention_flash_scratch_floats() gives room for ATTN_SCRATCH_SLOTS. */
void attention_forward_flash(float *out, float *lse, float *scratch, size_t scratch_floats, const float *qkv,
                             const int32_t *seg, const uint8_t *vis, int B, int T, int C, int H, int S);
void attention_backward_flash(float *dqkv, float *scratch, size_t scratch_floats, const float *dout, const float *out,
                              const float *lse, const float *qkv, const int32_t *seg, const uint8_t *vis, int B, int T,
                              int C, int H, int S);
size_t attention_flash_scratch_floats(void);

/* Plain causal attention of n new tokens against a key/value cache that
 * already holds len0 tokens plus these n: q rows [n] with stride ldq (head h
 * at column h*hd), kc/vc [len0+n, C], out [n, C], scores scratch [n, len0+n]. */
void attention_cached_forward(float *out, float *scores, const float *q, int ldq, const float *kc, const float *vc,
                              int n, int len0, int C, int H);

/* SwiGLU on h13[N,2F] = [gate | up]: out[N,F] = silu(gate) * up. */
void swiglu_forward(float *out, const float *h13, int N, int F);
void swiglu_backward(float *dh13, const float *dout, const float *h13, int N, int F);
/* The same, overwriting dh13 instead of accumulating into it. */
void swiglu_backward_set(float *dh13, const float *dout, const float *h13, int N, int F);

/* p[0..n) = 0, split over the pool (the gradient buffers between steps). */
void zero_floats(float *p, size_t n);

/* out[n] = a[n] + b[n]; safe in place (out may alias a or b). */
void residual_forward(float *out, const float *a, const float *b, size_t n);

/* lse[N] = logsumexp of each logits row [N,V]; logp[k] = logits[idx_k, y_k] - lse[idx_k]. */
void target_logp_forward(float *logp, float *lse, const float *logits, const Target *targets, int K, int N, int V);
/* dlogits[N,V] += sum over targets k at row i: dlogp[k] * (onehot(y_k) - softmax(logits[i])). */
void target_logp_backward(float *dlogits, const float *dlogp, const float *logits, const float *lse,
                          const Target *targets, int K, int V);

/* ---- bf16 products (model.precision bf16; docs/model.md, "Precision") ----
 * The layer products and attention's QK^T, PV and their backward with
 * operands rounded to bf16 (bf16.h) and fp32 accumulation and results;
 * everything else stays fp32. Every oneDNN call is single-threaded, the
 * calls spread over the pool: a product's rows go in tiles of 256 (the rest
 * in 128, 64, 32, 16), each tile computed alike whatever the pool size;
 * attention by (row, head) as in fp32; a weight gradient as one call per
 * thread over its share of dW's rows (runtime shape: oneDNN's rows have come
 * out bitwise equal for every split test_bf16 tries, which is not promised).
 * Attention's products take dense operands (what oneDNN's brgemm kernels
 * need): q, k, v and dO rounded head-major, each key range of a query block
 * in a tile of its own; with the fixed-shape primitives of
 * attention_bf16_prepare, each range widened to a multiple of ATTN_KGRAIN
 * keys (masked keys, probability 0), else runtime shapes.
 * Scratch comes from a Bf16Scratch; no call allocates (oneDNN itself makes a
 * few small memory handles per runtime-shape call). */
typedef struct Bf16Scratch Bf16Scratch;
/* For products of up to max_rows tokens, operands up to max_cols wide, and
 * attention over rows of up to T tokens of width C in H heads; sized for
 * the pool's current thread count (a larger pool later uses that many threads). */
Bf16Scratch *bf16_scratch_create(size_t max_rows, int max_cols, int T, int C, int H);
void bf16_scratch_free(Bf16Scratch *s);
size_t bf16_scratch_bytes(size_t max_rows, int max_cols, int T, int C, int H, int workers);
/* Creates every primitive the products of a [rows, cols] weight use
 * (fixed shapes, and the weight gradient's runtime shape), so that no step
 * creates one. */
void matmul_bf16_prepare(int rows, int cols);
/* The same for matmul_bf16_rounded_out16's products of that weight (or,
 * backward, matmul_backward_bf16_out16's input gradient). */
void matmul_bf16_prepare_out16(int rows, int cols, int backward);
/* The same for attention over rows of up to T tokens, width C, H heads:
 * the fixed-shape products of every query block and key range that rows
 * whose length is a multiple of ATTN_KGRAIN have (ATTN_QBLOCK / ATTN_KGRAIN
 * block sizes x T / ATTN_KGRAIN key lengths x 4 products, for T up to 2048;
 * a table serves every length up to its T, the last 4 (T, C/H) prepared
 * are kept) and the runtime-shape ones that other lengths use. T <= 0:
 * no fixed shapes (the tables are dropped). */
void attention_bf16_prepare(int T, int C, int H);
/* Rounds w[j] into m[j] for j < n, the matrices spread over the pool. */
void bf16_set_matrices(Bf16Matrix *const *m, const float *const *w, int n);

/* rmsnorm_forward / swiglu_forward writing their output rounded to bf16
 * (the same fp32 values, rounded: the operand of the next product);
 * swiglu's input h16 is h13 in bf16 (matmul_bf16_rounded_out16's), the
 * SwiGLU itself computed in fp32. */
void rmsnorm_forward_bf16(uint16_t *out16, float *rstd, const float *inp, const float *g, int N, int C, float eps);
void swiglu_forward_bf16(uint16_t *out16, const uint16_t *h16, int N, int F);
/* rope_forward of qkv [N,3C] (left as it is) written rounded to bf16: q and
 * k rotated, v copied (the same fp32 values as the fp32 kernel's, rounded),
 * head-major, [3H, N, hd] (q heads, k heads, v heads; each head's rows
 * together: attention's operands). The backward's rotation is done by
 * attention_backward_bf16 as it writes dq, dk (Bf16RopeBack). */
void rope_forward_bf16(uint16_t *out16, const float *qkv, const int32_t *pos, const float *cos_t, const float *sin_t,
                       int N, int C, int H);
/* swiglu_backward_set from h13 and dout in bf16 (matmul_backward_bf16_out16's
 * input gradient), computed in fp32, writing dh13 rounded to bf16. */
void swiglu_backward_bf16(uint16_t *dh16, const uint16_t *dout16, const uint16_t *h16, int N, int F);

/* matmul_forward with W = w (a Bf16Matrix of W [OUT, IN]). keep: NULL, or
 * where the rounded inp goes ([N rounded up to 16, IN]), for the backward. */
void matmul_forward_bf16(float *out, const float *inp, const Bf16Matrix *w, int N, Bf16Scratch *s, uint16_t *keep);
/* The same on rows already rounded, inp16 [N rounded up to 16, IN]: the
 * product itself (the bf16 peak of `fspo bench`). */
void matmul_bf16_rounded(float *out, const uint16_t *inp16, const Bf16Matrix *w, int N, Bf16Scratch *s);
/* The same with out16 [N, OUT] the fp32 sums rounded to bf16 (the same
 * values as matmul_bf16_rounded's, rounded), for an output that is only read
 * in bf16: w13's, which SwiGLU reads (half the bytes written and read). */
void matmul_bf16_rounded_out16(uint16_t *out16, const uint16_t *inp16, const Bf16Matrix *w, int N, Bf16Scratch *s);
/* Median GFLOP/s of an n x n x n bf16 product (matmul_bf16_rounded on
 * rounded operands) over `reps` runs after one warm-up, on the pool: the
 * ceiling that MFU is measured against in bf16. */
double matmul_bf16_peak_gflops(int n, int reps);
/* matmul_backward_beta with W = w. Each operand comes in fp32 (dout, inp)
 * and is rounded here, or already rounded (dout16 [N rounded up to 16, OUT],
 * e.g. written into bf16_scratch_operand; inp16 as the forward kept it). */
void matmul_backward_bf16(float *dinp, float beta, float *dw, const float *dout, const uint16_t *dout16,
                          const float *inp, const uint16_t *inp16, const Bf16Matrix *w, int N, Bf16Scratch *s);
/* matmul_backward_bf16 with beta 0 and the input gradient written rounded to
 * bf16, dinp16 [N, IN]: for one only read in bf16 (w2's, which SwiGLU's
 * backward reads). */
void matmul_backward_bf16_out16(uint16_t *dinp16, float *dw, const float *dout, const uint16_t *dout16, const float *inp,
                                const uint16_t *inp16, const Bf16Matrix *w, int N, Bf16Scratch *s);
/* The buffer matmul_backward_bf16 rounds dout into ([max_rows rounded up to
 * 16, max_cols]); a caller may fill it and pass it as dout16. */
uint16_t *bf16_scratch_operand(Bf16Scratch *s);
/* attention_forward / attention_backward with bf16 products. The
 * probabilities are saved rounded to bf16 in att16, the [B,H,T,T] buffer
 * of attention_forward's att (what the PV product and its backward take;
 * the softmax backward reads them too), each query block's [QBLOCK, T]
 * part holding its key ranges' tiles one after another
 * (attention_probs_bf16 unpacks them). keep: NULL, or where qkv goes
 * rounded, head-major as rope_forward_bf16 writes it ([3H, B*T, hd]); qkv
 * NULL: keep holds q|k|v already rounded (rope_forward_bf16). The
 * backward's qkv16 is that copy (NULL: round qkv again; qkv is not read
 * when qkv16 is given); it takes the forward's out, and it writes every
 * element of dqkv[B,T,3C] (not +=, unlike attention_backward). */
void attention_forward_bf16(float *out, uint16_t *att16, const float *qkv, uint16_t *keep, const int32_t *seg,
                            const uint8_t *vis, int B, int T, int C, int H, int S, Bf16Scratch *s);
/* With rope (else NULL), the backward writes dq, dk, dv rotated back (q, k:
 * rope_backward's rotation) and rounded, into rope->dqkv16 [N,3C] (the qkv
 * product's dout: the bits rope_backward of dqkv, then bf16_round, would
 * give), and dqkv is not written (may be NULL). */
typedef struct {
    uint16_t *dqkv16;
    const int32_t *pos;
    const float *cos_t, *sin_t;
} Bf16RopeBack;
void attention_backward_bf16(float *dqkv, const Bf16RopeBack *rope, float *scratch, size_t scratch_floats,
                             const float *dout, const float *out, const uint16_t *att16, const float *qkv,
                             const uint16_t *qkv16, const int32_t *seg, const uint8_t *vis, int B, int T, int C, int H,
                             int S, Bf16Scratch *s);
/* att [B,H,T,T] = the probabilities attention_forward_bf16 saved in att16,
 * in attention_forward's layout (entries outside the key ranges left as
 * they are). For tests; run with the same prepared tables as the forward. */
void attention_probs_bf16(float *att, const uint16_t *att16, const int32_t *seg, const uint8_t *vis, int B, int T, int C,
                          int H, int S);

#endif
