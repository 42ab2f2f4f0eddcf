/* bf16: bfloat16 matrix products through oneDNN, for model.precision bf16
 * (docs/model.md, "Precision").
 *
 * Operands are rounded from fp32 to bf16 (round to nearest even), products
 * accumulate in fp32 and write fp32 (or, bf16_prim_out16, the fp32 sums
 * rounded to bf16). Every product runs single-threaded on
 * the calling thread (oneDNN's OpenMP team is set to one thread per caller):
 * ops.c splits work over fspo's pool, so mpi.threads_per_rank threads run
 * everything and no OpenMP workers spin between products.
 *
 * Primitives are created once per shape and kept (bf16_prim): fixed shapes
 * for the layer products and attention's per-head products (oneDNN's brgemm
 * kernels, AMX where present; they take dense operands only), and one
 * runtime-shape primitive per transpose pattern for the weight gradients
 * and attention of shapes not prepared. bf16_prim_creations() counts creations, so tests can
 * check that the step loop creates none. Creating primitives is not
 * thread-safe: ops.c looks them up on the pool's caller before dispatching. */
#ifndef FSPO_BF16_H
#define FSPO_BF16_H

#include <stddef.h>
#include <stdint.h>

/* 1 if this CPU has bf16 matrix units oneDNN uses (AMX-BF16 or
 * AVX512-BF16), with `unit` naming them; 0 with the reason. The
 * environment variable FSPO_CPU_NO_BF16=1 hides them (to simulate a machine
 * without). */
int bf16_supported(char *unit, size_t len);

/* model.precision, as the config stores it (io/config.c's schema reads and
 * writes the names). */
typedef enum { PRECISION_CHOICE_FP32, PRECISION_CHOICE_BF16, PRECISION_CHOICE_AUTO } PrecisionChoice;
static const char *const PRECISION_CHOICE_NAMES[] = { "fp32", "bf16", "auto", NULL };

/* What model.precision auto picks: 1 (bf16) on AMX-BF16; 0 (fp32) without
 * bf16 units; on AVX512-BF16 without AMX, bf16 only if its products run at
 * least 1.3x sgemm's speed on one core, measured once per process (on
 * some cores they are slower). `why` says
 * which and why (for the start-up line). */
int bf16_auto(char *why, size_t len);

/* model.precision -> 1 for bf16, 0 for fp32 (auto: bf16_auto). -1 with a
 * message when bf16 is asked for on a CPU without bf16 units. */
int bf16_resolve(PrecisionChoice precision, char *err, size_t errlen);

/* oneDNN's version, e.g. "2.6.3". */
const char *bf16_library_version(void);

/* dst[i] = src[i] rounded to bf16 (nearest, ties to even; NaN stays a
 * quiet NaN, infinities stay infinite). */
void bf16_round(uint16_t *dst, const float *src, size_t n);
/* The same for one value, and back (exact). */
uint16_t bf16_from_float(float x);
float bf16_to_float(uint16_t h);

/* ---- matrices prepared as the second operand of the layer products ---- */

/* A weight W [rows, cols] (nn.Linear layout) in bf16, laid out twice for
 * oneDNN: as W^T for y = x W^T (forward) and as W for dx = dy W. */
typedef struct Bf16Matrix Bf16Matrix;
Bf16Matrix *bf16_matrix_create(int rows, int cols);
void bf16_matrix_free(Bf16Matrix *m);
/* Rounds w [rows, cols] into both layouts. Runs on the calling thread; t is
 * its pool index (0 for the pool's caller). */
void bf16_matrix_set(Bf16Matrix *m, const float *w, int t);
int bf16_matrix_rows(const Bf16Matrix *m);
int bf16_matrix_cols(const Bf16Matrix *m);
/* Bytes it holds (the rounded W and its two layouts). */
size_t bf16_matrix_bytes(const Bf16Matrix *m);

/* ---- primitives ---- */

typedef struct Bf16Prim Bf16Prim;

/* B operands: plain (row-major with ldb, transposed or not), or a
 * prepared matrix (ldb ignored): BF16_B_WT uses W^T [cols x rows] of a
 * Bf16Matrix with the given shape, BF16_B_W uses W [rows x cols]. */
enum { BF16_B_PLAIN = 0, BF16_B_WT = 1, BF16_B_W = 2 };

/* C[M,N] = op(A)[M,K] op(B)[K,N] + beta C, fixed shape: A stored [M x K]
 * with row stride lda (or [K x M] when ta), B as `bkind` says ([K x N], or
 * [N x K] when tb), C [M x N] with row stride ldc. Created on first use;
 * role names what it is for in bf16_kernel_summary (e.g. "layer
 * products"; a string that outlives it; the first creator's is kept). */
const Bf16Prim *bf16_prim(int ta, int tb, int bkind, int M, int N, int K, int lda, int ldb, int ldc, float beta,
                          const char *role);
/* The same writing C rounded to bf16 (uint16_t [M x N], row stride ldc):
 * the products whose output is only ever read in bf16 (w13's gate|up
 * pre-activations, w2's input gradient); no transposes, B prepared, beta 0. */
const Bf16Prim *bf16_prim_out16(int bkind, int M, int N, int K, int lda, int ldc, const char *role);
/* The same with M, N, K and the strides given at each call (the weight
 * gradients' token counts, attention of shapes not prepared); B plain. */
const Bf16Prim *bf16_prim_any(int ta, int tb, float beta, const char *role);
/* Runs p on pool thread t (t < POOL_MAX_THREADS; each thread its own
 * scratch). For BF16_B_WT/W primitives B is the Bf16Matrix. */
void bf16_run(const Bf16Prim *p, int t, const uint16_t *A, const void *B, void *C); /* C: float, or uint16_t (out16) */
void bf16_run_any(const Bf16Prim *p, int t, int M, int N, int K, const uint16_t *A, int lda, const uint16_t *B, int ldb,
                  float *C, int ldc);
/* oneDNN's implementation name of p, e.g. "brg:avx512_core_amx_bf16". */
const char *bf16_prim_kernel(const Bf16Prim *p);
/* The kernels of the primitives created so far by role, in the order each
 * role first appeared, e.g. "layer products brg:avx512_core_amx_bf16,
 * weight gradients gemm:jit" (oneDNN's names). */
void bf16_kernel_summary(char *buf, size_t len);
/* Primitives created so far in this process. */
long bf16_prim_creations(void);
/* Makes every thread slot t < threads ready to run the primitives created
 * so far (per-thread scratchpads). Call on the pool's caller. */
void bf16_reserve_threads(int threads);

#endif
