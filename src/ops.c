/* ops: kernels of the fspo transformer. See ops.h for shapes and conventions. */
#include "src/ops.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "src/pool.h"
#include "src/util.h"
#include "src/vecmath.h"

/* Scratch of the bf16 products (see bf16_scratch_create). */
struct Bf16Scratch {
    size_t rows;          /* row capacity of a and b, rounded up to 16 */
    int cols, T, C, hd, workers;
    uint16_t *a, *b;      /* rounded operands of the layer products [rows, cols] (+ slack) */
    uint16_t *qkv, *dout; /* attention: rounded q|k|v [3H, rows, hd] and dO [H, rows, hd] (head-major) */
    float *drow;          /* attention backward: D = rowsum(dO * O) per head and row [H, rows] */
    uint16_t *blk;        /* per worker 2 x [QBLOCK, T] bf16: the forward's fp32 scores [QBLOCK, T] over both, the
                           * backward's rounded dS in the second (each block's range tiles one after another) */
    float *acc;           /* per worker (2T + QBLOCK) hd floats: the backward's dK, dV [T, hd] and dQ [QBLOCK, hd]
                           * of a head; the forward's out [QBLOCK, hd] of a block */
    float *tile;          /* per worker: one product tile [BF16_TILE, cols] for a partial tile */
};

/* Who threads the big products. With OpenBLAS's own threads, its workers
 * busy-wait for ~0.1 s after every call (2^28 cycles, OPENBLAS_THREAD_TIMEOUT)
 * and so compete for the cores with the pool running the loops between the
 * products; splitting each product's rows over the pool instead, with
 * single-threaded sgemms, keeps one set of threads for everything. Rows of
 * the output are independent, but OpenBLAS may round a row differently in a
 * product of another row count, so results across pool sizes agree to ~1e-7
 * rather than bitwise (test_model). FSPO_SGEMM=openblas restores OpenBLAS's. */
static int sgemm_on_pool = -1;

void ops_set_gemm_on_pool(int on)
{
    sgemm_on_pool = on;
}

static int use_pool(double flops)
{
    if (sgemm_on_pool < 0) {
        const char *e = getenv("FSPO_SGEMM");
        sgemm_on_pool = !(e && !strcmp(e, "openblas"));
    }
    return sgemm_on_pool && pool_threads() > 1 && flops >= 4e6;
}

typedef struct {
    int transa, transb; /* transa: A is stored [K x M], so row block lo.. starts at its column lo */
    int M, N, K, lda, ldb, ldc;
    float beta;
    const float *A, *B;
    float *Cm;
} GemmArgs;

static void gemm_part(void *ctx, int t, int nt)
{
    const GemmArgs *g = ctx;
    size_t lo, hi;
    pool_range((size_t)g->M, t, nt, &lo, &hi);
    if (hi <= lo) return;
    const float *A = g->transa ? g->A + lo : g->A + lo * (size_t)g->lda;
    cblas_sgemm(CblasRowMajor, g->transa ? CblasTrans : CblasNoTrans, g->transb ? CblasTrans : CblasNoTrans, (int)(hi - lo),
                g->N, g->K, 1.0f, A, g->lda, g->B, g->ldb, g->beta, g->Cm + lo * (size_t)g->ldc, g->ldc);
}

/* C[M x N] = op(A) op(B) + beta C, the rows of C split over the pool when worth it. */
static void gemm(int transa, int transb, int M, int N, int K, const float *A, int lda, const float *B, int ldb, float beta,
                 float *Cm, int ldc)
{
    if (!use_pool(2.0 * M * N * K)) {
        cblas_sgemm(CblasRowMajor, transa ? CblasTrans : CblasNoTrans, transb ? CblasTrans : CblasNoTrans, M, N, K, 1.0f, A,
                    lda, B, ldb, beta, Cm, ldc);
        return;
    }
    GemmArgs g = { .transa = transa, .transb = transb, .M = M, .N = N, .K = K, .lda = lda, .ldb = ldb, .ldc = ldc,
                   .beta = beta, .A = A, .B = B, .Cm = Cm };
    int bt = openblas_get_num_threads();
    if (bt != 1) openblas_set_num_threads(1);
    pool_run(gemm_part, &g);
    if (bt != 1) openblas_set_num_threads(bt);
}

void matmul_forward(float *out, const float *inp, const float *w, int N, int IN, int OUT)
{
    gemm(0, 1, N, OUT, IN, inp, IN, w, IN, 0.0f, out, OUT);
}

void matmul_backward(float *dinp, float *dw, const float *dout, const float *inp, const float *w, int N, int IN, int OUT)
{
    matmul_backward_beta(dinp, 1.0f, dw, dout, inp, w, N, IN, OUT);
}

void matmul_backward_beta(float *dinp, float beta, float *dw, const float *dout, const float *inp, const float *w, int N,
                          int IN, int OUT)
{
    if (dinp) gemm(0, 0, N, IN, OUT, dout, OUT, w, IN, beta, dinp, IN);
    if (dw) gemm(1, 0, OUT, IN, N, dout, OUT, inp, IN, 1.0f, dw, IN);
}

void embedding_forward(float *out, const int32_t *tokens, const float *emb, int N, int C)
{
    for (int n = 0; n < N; n++) memcpy(out + (size_t)n * C, emb + (size_t)tokens[n] * C, sizeof(float) * C);
}

typedef struct {
    float *demb;
    const float *dout;
    const int32_t *tokens;
    int N, C;
} EmbBwd;

/* split by columns: every row's contributions land in token order */
static void embedding_backward_task(void *p, int t, int nt)
{
    const EmbBwd *a = p;
    size_t c0, c1;
    pool_range((size_t)a->C, t, nt, &c0, &c1);
    for (int n = 0; n < a->N; n++) {
        float *d = a->demb + (size_t)a->tokens[n] * a->C;
        const float *s = a->dout + (size_t)n * a->C;
        for (size_t c = c0; c < c1; c++) d[c] += s[c];
    }
}

void embedding_backward(float *demb, const float *dout, const int32_t *tokens, int N, int C)
{
    EmbBwd a = { demb, dout, tokens, N, C };
    pool_run(embedding_backward_task, &a);
}


/* ---- RMSNorm ---------------------------------------------------------- */

/* sum of x*y over n floats, 8 lanes then a fixed-order horizontal sum */
static inline float dot_v8(const float *x, const float *y, int n)
{
    v8f acc = v8_set1(0.0f);
    int c = 0;
    for (; c + 8 <= n; c += 8) acc += v8_load(x + c) * v8_load(y + c);
    if (c < n) acc += v8_load_part(x + c, n - c, 0.0f) * v8_load_part(y + c, n - c, 0.0f);
    return v8_hsum(acc);
}

typedef struct {
    float *out, *rstd, *dinp, *dg;
    const float *inp, *g, *dout;
    int N, C;
    float eps;
    uint16_t *out16; /* bf16 output instead of out */
} NormArgs;

static void rmsnorm_forward_task(void *p, int t, int nt)
{
    const NormArgs *a = p;
    int C = a->C;
    size_t n0, n1;
    pool_range((size_t)a->N, t, nt, &n0, &n1);
    for (size_t n = n0; n < n1; n++) {
        const float *x = a->inp + n * C;
        float *y = a->out + n * C;
        float r = 1.0f / sqrtf(dot_v8(x, x, C) / (float)C + a->eps);
        a->rstd[n] = r;
        if (a->out16) { /* the same products, rounded */
            uint16_t *y16 = a->out16 + n * C;
            v8f vr = v8_set1(r);
            int c = 0;
            for (; c + 8 <= C; c += 8) v8_store_bf16(y16 + c, v8_load(x + c) * vr * v8_load(a->g + c));
            if (c < C) v8_store_bf16_part(y16 + c, v8_load_part(x + c, C - c, 0) * vr * v8_load_part(a->g + c, C - c, 0), C - c);
            continue;
        }
        for (int c = 0; c < C; c++) y[c] = x[c] * r * a->g[c];
    }
}

void rmsnorm_forward(float *out, float *rstd, const float *inp, const float *g, int N, int C, float eps)
{
    NormArgs a = { .out = out, .rstd = rstd, .inp = inp, .g = g, .N = N, .C = C, .eps = eps };
    pool_run(rmsnorm_forward_task, &a);
}

void rmsnorm_forward_bf16(uint16_t *out16, float *rstd, const float *inp, const float *g, int N, int C, float eps)
{
    NormArgs a = { .out16 = out16, .rstd = rstd, .inp = inp, .g = g, .N = N, .C = C, .eps = eps };
    pool_run(rmsnorm_forward_task, &a);
}

/* dx by rows */
static void rmsnorm_backward_dx_task(void *p, int t, int nt)
{
    const NormArgs *a = p;
    int C = a->C;
    const float *g = a->g;
    size_t n0, n1;
    pool_range((size_t)a->N, t, nt, &n0, &n1);
    for (size_t n = n0; n < n1; n++) {
        const float *x = a->inp + n * C, *dy = a->dout + n * C;
        float *dx = a->dinp + n * C;
        float r = a->rstd[n];
        /* y = x r g with r = (mean(x^2)+eps)^(-1/2), so dr/dx_i = -r^3 x_i / C */
        v8f acc = v8_set1(0.0f);
        int c = 0;
#if VEC16
        for (; c + 16 <= C; c += 16) acc = v16_acc8(acc, v16_load(dy + c) * v16_load(g + c) * v16_load(x + c));
#endif
        for (; c + 8 <= C; c += 8) acc += v8_load(dy + c) * v8_load(g + c) * v8_load(x + c);
        float dot = v8_hsum(acc);
        for (; c < C; c++) dot += dy[c] * g[c] * x[c];
        float k = r * r * r * dot / (float)C;
        vwf rw = vw_set1(r), kw = vw_set1(k);
        for (c = 0; c + VW <= C; c += VW)
            vw_store(dx + c, vw_load(dx + c) + (rw * vw_load(dy + c) * vw_load(g + c) - kw * vw_load(x + c)));
        for (; c < C; c++) dx[c] += r * dy[c] * g[c] - k * x[c];
    }
}

/* dg by columns, rows in order: the sum does not depend on the split */
static void rmsnorm_backward_dg_task(void *p, int t, int nt)
{
    const NormArgs *a = p;
    int C = a->C;
    size_t c0, c1;
    pool_range((size_t)C, t, nt, &c0, &c1);
    for (int n = 0; n < a->N; n++) {
        const float *x = a->inp + (size_t)n * C, *dy = a->dout + (size_t)n * C;
        float r = a->rstd[n], *dg = a->dg;
        size_t c = c0;
        vwf rw = vw_set1(r);
        for (; c + VW <= c1; c += VW) vw_store(dg + c, vw_load(dg + c) + vw_load(dy + c) * vw_load(x + c) * rw);
        for (; c < c1; c++) dg[c] += dy[c] * x[c] * r;
    }
}

void rmsnorm_backward(float *dinp, float *dg, const float *dout, const float *inp, const float *g, const float *rstd,
                      int N, int C)
{
    NormArgs a = { .rstd = (float *)rstd, .dinp = dinp, .dg = dg, .inp = inp, .g = g, .dout = dout, .N = N, .C = C };
    pool_run(rmsnorm_backward_dx_task, &a);
    pool_run(rmsnorm_backward_dg_task, &a);
}

/* ---- RoPE --------------------------------------------------------------- */

void rope_tables(float *cos_t, float *sin_t, int max_pos, int hd, double theta)
{
    int half = hd / 2;
    for (int i = 0; i < half; i++) {
        /* double precision: angles reach max_pos radians, where a float
         * product would already lose the low bits */
        double freq = pow(theta, -2.0 * i / (double)hd);
        for (int p = 0; p < max_pos; p++) {
            double a = (double)p * freq;
            cos_t[(size_t)p * half + i] = (float)cos(a);
            sin_t[(size_t)p * half + i] = (float)sin(a);
        }
    }
}

typedef struct {
    const float *in; /* [N,3C] */
    float *out;      /* [N,3C], may be in (in place); NULL with out16 */
    uint16_t *out16; /* bf16 instead of out: q and k rotated, v copied, all rounded */
    int heads;       /* out16 head-major, [3H, N, hd] (else [N, 3C]) */
    const int32_t *pos;
    const float *cos_t, *sin_t;
    int N, C, H;
    float sign;
} RopeArgs;

/* One head's hd values z rotated by pairs: y[2i] = z[2i] c_i - z[2i+1] s_i,
 * y[2i+1] = z[2i] s_i + z[2i+1] c_i (s = sign * sin). Vector lanes compute
 * z[2i] c + z[2i+1] (-s) and z[2i+1] c + z[2i] s: the same products and sums
 * (negation is exact), so every lane equals the scalar formula bitwise. */
static inline void rope_head(float *y, uint16_t *y16, const float *z, const float *cs, const float *sn, int half,
                             float sign)
{
    int i = 0;
#if VEC16
    typedef float v8hf __attribute__((vector_size(32)));
    const v16f alt16 = { -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1 };
    for (; i + 8 <= half; i += 8) {
        v8hf c8, s8;
        memcpy(&c8, cs + i, sizeof c8);
        memcpy(&s8, sn + i, sizeof s8);
        v16f c = __builtin_shufflevector(c8, c8, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
        v16f sv = __builtin_shufflevector(s8, s8, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7) * v16_set1(sign) * alt16;
        v16f zv = v16_load(z + 2 * i);
        v16f zs = __builtin_shufflevector(zv, zv, 1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14);
        v16f yv = zv * c + zs * sv;
        if (y16) v16_store_bf16(y16 + 2 * i, yv);
        else v16_store(y + 2 * i, yv);
    }
#endif
    typedef float v4f __attribute__((vector_size(16)));
    const v8f alt = { -1, 1, -1, 1, -1, 1, -1, 1 };
    for (; i + 4 <= half; i += 4) {
        v4f c4, s4;
        memcpy(&c4, cs + i, sizeof c4);
        memcpy(&s4, sn + i, sizeof s4);
        v8f c = __builtin_shufflevector(c4, c4, 0, 0, 1, 1, 2, 2, 3, 3);
        v8f sv = __builtin_shufflevector(s4, s4, 0, 0, 1, 1, 2, 2, 3, 3) * v8_set1(sign) * alt;
        v8f zv = v8_load(z + 2 * i);
        v8f zs = __builtin_shufflevector(zv, zv, 1, 0, 3, 2, 5, 4, 7, 6);
        v8f yv = zv * c + zs * sv;
        if (y16) v8_store_bf16(y16 + 2 * i, yv);
        else v8_store(y + 2 * i, yv);
    }
    for (; i < half; i++) {
        float c = cs[i], s = sign * sn[i];
        float z0 = z[2 * i], z1 = z[2 * i + 1];
        float y0 = z0 * c - z1 * s, y1 = z0 * s + z1 * c;
        if (y16) y16[2 * i] = bf16_from_float(y0), y16[2 * i + 1] = bf16_from_float(y1);
        else y[2 * i] = y0, y[2 * i + 1] = y1;
    }
}

/* Rotates pairs by +angle (sign = 1) or -angle (sign = -1) in the q and k
 * thirds of a [N,3C] buffer. */
static void rope_task(void *p, int t, int nt)
{
    const RopeArgs *a = p;
    int C = a->C, H = a->H, hd = C / H, half = hd / 2;
    size_t n0, n1;
    pool_range((size_t)a->N, t, nt, &n0, &n1);
    for (size_t n = n0; n < n1; n++) {
        const float *cs = a->cos_t + (size_t)a->pos[n] * half;
        const float *sn = a->sin_t + (size_t)a->pos[n] * half;
        size_t row = n * 3 * C;
        for (int part = 0; part < 3; part++) /* q, k rotated; v copied (bf16 only) */
            for (int h = 0; h < H; h++) {
                size_t o = row + (size_t)part * C + (size_t)h * hd;
                uint16_t *y16 = !a->out16 ? NULL
                                : a->heads ? a->out16 + ((size_t)(part * H + h) * a->N + n) * hd
                                           : a->out16 + o;
                if (part < 2) rope_head(y16 ? NULL : a->out + o, y16, a->in + o, cs, sn, half, a->sign);
                else if (y16) bf16_round(y16, a->in + o, (size_t)hd);
            }
    }
}

void rope_forward(float *qkv, const int32_t *pos, const float *cos_t, const float *sin_t, int N, int C, int H)
{
    RopeArgs a = { .in = qkv, .out = qkv, .pos = pos, .cos_t = cos_t, .sin_t = sin_t, .N = N, .C = C, .H = H, .sign = 1.0f };
    pool_run(rope_task, &a);
}

void rope_backward(float *dqkv, const int32_t *pos, const float *cos_t, const float *sin_t, int N, int C, int H)
{
    RopeArgs a = { .in = dqkv, .out = dqkv, .pos = pos, .cos_t = cos_t, .sin_t = sin_t, .N = N, .C = C, .H = H, .sign = -1.0f };
    pool_run(rope_task, &a);
}

void rope_forward_bf16(uint16_t *out16, const float *qkv, const int32_t *pos, const float *cos_t, const float *sin_t,
                       int N, int C, int H)
{
    RopeArgs a = { .in = qkv, .out16 = out16, .heads = 1, .pos = pos, .cos_t = cos_t, .sin_t = sin_t, .N = N, .C = C,
                   .H = H, .sign = 1.0f };
    pool_run(rope_task, &a);
}

/* ---- attention ---------------------------------------------------------- */

/* Key ranges a query block [i0,i1) of one row needs: key u < i1 is needed
 * if it lies in the block or some segment present in the block may see its
 * segment. Gaps of at least ATTN_MIN_GAP masked keys are skipped (no sgemm
 * columns, probability 0); shorter gaps stay in and are masked. Forward and
 * backward compute the same ranges. Returns the number of ranges. */
#define ATTN_MIN_GAP 32
#define ATTN_MAX_RANGES 64
#define ATTN_MAX_SEGS 256

static int key_ranges(int i0, int i1, const int32_t *seg_row, const uint8_t *vis_b, int S, int *ra, int *rb)
{
    if (!seg_row || S <= 1 || S > ATTN_MAX_SEGS) {
        ra[0] = 0, rb[0] = i1;
        return 1;
    }
    uint8_t present[ATTN_MAX_SEGS], need[ATTN_MAX_SEGS];
    memset(present, 0, (size_t)S);
    memset(need, 0, (size_t)S);
    for (int t = i0; t < i1; t++) present[seg_row[t]] = 1;
    for (int si = 0; si < S; si++)
        if (present[si])
            for (int sj = 0; sj < S; sj++) need[sj] |= vis_b[(size_t)si * S + sj];
    int n = 0, u = 0;
    while (u < i0) {
        while (u < i0 && !need[seg_row[u]]) u++; /* skip a masked run */
        if (u >= i0) break;
        int a = u;
        /* extend over needed keys and masked gaps shorter than ATTN_MIN_GAP */
        for (;;) {
            while (u < i0 && need[seg_row[u]]) u++;
            int g = u;
            while (g < i0 && !need[seg_row[g]] && g - u < ATTN_MIN_GAP) g++;
            if (g < i0 && g - u < ATTN_MIN_GAP) u = g; /* short gap: keep going */
            else break;
        }
        if (n == ATTN_MAX_RANGES - 1) { /* out of slots: one range to the end */
            ra[n] = a, rb[n] = i1;
            return n + 1;
        }
        ra[n] = a, rb[n] = u, n++;
    }
    /* the block's own keys always: merge with a range ending near i0 */
    if (n > 0 && rb[n - 1] + ATTN_MIN_GAP >= i0) rb[n - 1] = i1;
    else ra[n] = i0, rb[n] = i1, n++;
    return n;
}

/* The end of the run of segment s that starts at u, at most b: 8 keys per
 * compare while the run lasts. */
static inline int seg_run_end(const int32_t *seg_row, int u, int b, int s)
{
    int e = u + 1;
    v8i vs = { s, s, s, s, s, s, s, s };
    for (; e + 8 <= b; e += 8) {
        v8i x;
        memcpy(&x, seg_row + e, sizeof x);
        v8i ne = x != vs;
        uint64_t w[4];
        memcpy(w, &ne, sizeof w);
        if (w[0] | w[1] | w[2] | w[3]) break;
    }
    while (e < b && seg_row[e] == s) e++;
    return e;
}

/* Softmax of scale * row t over the keys in the ranges (ra,rb) honoring
 * visibility (vis_row NULL: plain causal): u == t, or u < t with
 * vis_row[seg[u]]. Invisible keys inside the ranges, and keys after t, get
 * probability 0. Range r of the row is stored at rp[r] (rp[r][0] is key
 * ra[r]'s score): the fp32 path's rows are whole, rp[r] = row + ra[r]; the
 * bf16 path's blocks keep each range in a tile of its own. The fp32 path
 * scales in its sgemm and passes 1 (exact).
 * pp (bf16 path; else NULL): the probabilities go there rounded instead
 * (pp[r] as rp[r]), over the whole ranges (zeros past t), and rp is left as
 * scratch. 16 lanes where the build has AVX-512, summing in the 8-lane order. */
static void masked_softmax_row(float *const *rp, uint16_t *const *pp, int t, int nr, const int *ra, const int *rb,
                               const int32_t *seg_row, const uint8_t *vis_row, float scale)
{
    v8f vmx = v8_set1(-INFINITY);
    float mx = -INFINITY;
    for (int r = 0; r < nr; r++) {
        int a = ra[r], b = rb[r] < t + 1 ? rb[r] : t + 1;
        float *x = rp[r]; /* key u at x[u - a] */
        int u = a;
        while (u < b) {
            int e = b;
            int visible = 1;
            if (vis_row) {
                int s = seg_row[u];
                e = seg_run_end(seg_row, u, b, s);
                visible = vis_row[s] || (e == t + 1 && u == t); /* a token always sees itself */
                if (!visible && e == t + 1) { /* run ends with t itself: mask all but t */
                    for (int k = u; k < t; k++) x[k - a] = -INFINITY;
                    if (x[t - a] > mx) mx = x[t - a];
                    u = e;
                    continue;
                }
            }
            if (visible) { /* (the max does not depend on the lane order) */
                int k = u;
#if VEC16
                for (; k + 16 <= e; k += 16) {
                    v16f y = v16_load(x + (k - a));
                    vmx = v8_max(vmx, v8_max(v16_lo(y), v16_hi(y)));
                }
#endif
                for (; k + 8 <= e; k += 8) vmx = v8_max(vmx, v8_load(x + (k - a)));
                for (; k < e; k++)
                    if (x[k - a] > mx) mx = x[k - a];
            } else
                for (int k = u; k < e; k++) x[k - a] = -INFINITY;
            u = e;
        }
    }
    float vm = v8_hmax(vmx);
    if (vm > mx) mx = vm;
    v8f vmax = v8_set1(mx), acc = v8_set1(0.0f), vscale = v8_set1(scale);
#if VEC16
    v16f vmax16 = v16_set1(mx), vscale16 = v16_set1(scale);
#endif
    for (int r = 0; r < nr; r++) {
        int b = rb[r] < t + 1 ? rb[r] - ra[r] : t + 1 - ra[r], u = 0; /* offsets into the range */
        float *x = rp[r];
#if VEC16
        for (; u + 16 <= b; u += 16) {
            v16f e = v16_exp((v16_load(x + u) - vmax16) * vscale16);
            v16_store(x + u, e);
            acc = v16_acc8(acc, e);
        }
#endif
        for (; u + 8 <= b; u += 8) {
            v8f e = v8_exp((v8_load(x + u) - vmax) * vscale);
            v8_store(x + u, e);
            acc += e;
        }
        if (u < b) {
            v8f e = v8_exp((v8_load_part(x + u, b - u, -INFINITY) - vmax) * vscale);
            v8_store_part(x + u, e, b - u);
            acc += e;
        }
    }
    float inv = 1.0f / v8_hsum(acc);
    vwf invw = vw_set1(inv);
    for (int r = 0; r < nr; r++) {
        int n = rb[r] - ra[r], b = rb[r] < t + 1 ? n : t + 1 - ra[r], u = 0;
        float *x = rp[r];
        if (pp) {
            uint16_t *p16 = pp[r];
            for (; u + VW <= b; u += VW) vw_store_bf16(p16 + u, vw_load(x + u) * invw);
            for (; u < b; u++) p16[u] = bf16_from_float(x[u] * inv);
            for (u = b > 0 ? b : 0; u < n; u++) p16[u] = 0;
            continue;
        }
        for (; u + VW <= b; u += VW) vw_store(x + u, vw_load(x + u) * invw);
        for (; u < b; u++) x[u] *= inv;
        for (u = b > 0 ? b : 0; u < n; u++) x[u] = 0.0f;
    }
}

/* rp[r] = row + ra[r]: the ranges of a whole row (the fp32 layout) */
static void range_ptrs(float **rp, float *row, int nr, const int *ra)
{
    for (int r = 0; r < nr; r++) rp[r] = row + ra[r];
}

/* bf16 attention's products, all on dense operands (oneDNN's brgemm kernels
 * take no others), for a query block of m rows and a key range of n keys:
 * AP_QK    C[m, n]   = A[m, hd] B[n, hd]^T   (Q K^T, dO V^T)
 * AP_AB0/1 C[m, hd]  = (or +=) A[m, n] B[n, hd]   (P V, dS K)
 * AP_ATB1  C[n, hd] += A[m, n]^T B[m, hd]   (P^T dO, dS^T Q) */
enum { AP_QK, AP_AB0, AP_AB1, AP_ATB1, AP_KINDS };

/* Fixed-shape primitives of those products for rows of up to T tokens
 * and head size hd: the query block sizes and key lengths that occur when
 * the rows' T is a multiple of ATTN_KGRAIN (ops.h; the trainer pads its
 * bf16 batches so): m = ATTN_KGRAIN, 2 ATTN_KGRAIN, ... ATTN_QBLOCK rows
 * times n = ATTN_KGRAIN, 2 ATTN_KGRAIN, ... T keys (a widened range). One
 * table serves every T up to its own. */
#define ATTN_TABLES 4         /* tables kept, for the last (T, hd)s prepared */
#define ATTN_TABLE_MAX 1024   /* primitives in one table at most (T = 2048) */
#define ATTN_NM (ATTN_QBLOCK / ATTN_KGRAIN) /* query block sizes in a table */
typedef struct {
    int T, hd, nl;
    const Bf16Prim **p; /* [ATTN_NM block sizes][nl key lengths][AP_KINDS] */
} AttnTable;

typedef struct {
    float *out, *att, *dqkv, *scratch;
    const float *qkv, *dout;
    const int32_t *seg;
    const uint8_t *vis;
    int B, T, C, H, S, workers;
    float *lse;         /* flash: the log-sum-exp of each query's scaled scores [B,H,T] */
    const float *fout;  /* flash and bf16 backward: the forward's out [B,T,C] */
    /* bf16 products (s16 NULL: fp32): q,k,v and dO rounded (head-major, see
     * attention_forward_bf16), per-worker scratch in s16, the fixed-shape
     * products for this (T, hd) (tab; NULL: none prepared) and the
     * runtime-shape ones for other shapes */
    Bf16Scratch *s16;
    const uint16_t *qkv16, *dout16;
    uint16_t *att16; /* bf16: the probabilities, rounded (in place of att; see attention_forward_bf16) */
    uint16_t *dqkv16; /* bf16 backward: dq, dk rotated back and dq, dk, dv rounded here instead of dqkv */
    const int32_t *pos;
    const float *cos_t, *sin_t;
    const AttnTable *tab;
    const Bf16Prim *any[AP_KINDS];
} AttnArgs;

static void attn_prims(AttnArgs *a);
static uint16_t *attn_block16(const AttnArgs *a, int t, int which);
static float *attn_acc(const AttnArgs *a, int t);

/* Where a query block of m rows and a key range of n keys sit in a table
 * for rows of up to T tokens: *mi, *li; 0 if it has no such shape. */
static int table_index(int T, int m, int n, int *mi, int *li)
{
    int g = ATTN_KGRAIN;
    *mi = m >= g && m <= ATTN_QBLOCK && m % g == 0 ? m / g - 1 : -1;
    *li = n >= g && n <= T && n % g == 0 ? n / g - 1 : -1;
    return *mi >= 0 && *li >= 0;
}

static const Bf16Prim *table_prim(const AttnTable *tb, int kind, int m, int n)
{
    int mi, li;
    return table_index(tb->T, m, n, &mi, &li) ? tb->p[((size_t)mi * tb->nl + li) * AP_KINDS + kind] : NULL;
}

/* C = the product `kind` of A and B (see AP_QK): the fixed-shape primitive
 * if the table has one, else the runtime-shape one */
static void attn_mm(const AttnArgs *a, int t, int kind, int m, int n, const uint16_t *A, const uint16_t *B, float *C)
{
    int hd = a->C / a->H;
    const Bf16Prim *p = a->tab ? table_prim(a->tab, kind, m, n) : NULL;
    if (p) {
        bf16_run(p, t, A, B, C);
        return;
    }
    p = a->any[kind];
    if (kind == AP_QK) bf16_run_any(p, t, m, n, hd, A, hd, B, hd, C, n);
    else if (kind == AP_ATB1) bf16_run_any(p, t, n, hd, m, A, n, B, hd, C, hd);
    else bf16_run_any(p, t, m, hd, n, A, n, B, hd, C, hd);
}

/* The key ranges of a bf16 query block [i0, i1): key_ranges', and with a
 * fixed-shape table each widened outward to multiples of ATTN_KGRAIN keys
 * (the end capped at i1) and merged where they then meet. The keys added
 * are masked ones (in a skipped gap, or after a query), which the softmax
 * gives probability 0 and its backward dS 0, as it does for the gaps
 * key_ranges leaves inside ranges. off[r]: where range r's [i1 - i0, n_r]
 * tile starts in the block's storage (the tiles one after another). */
static int block_ranges16(const AttnArgs *a, int i0, int i1, const int32_t *seg_row, const uint8_t *vis_b, int *ra,
                          int *rb, size_t *off)
{
    int nr = key_ranges(i0, i1, seg_row, vis_b, a->S, ra, rb);
    if (a->tab) {
        int g = ATTN_KGRAIN, k = 0;
        for (int r = 0; r < nr; r++) {
            int lo = ra[r] / g * g, hi = (rb[r] + g - 1) / g * g;
            if (hi > i1) hi = i1;
            if (k > 0 && lo <= rb[k - 1]) rb[k - 1] = hi;
            else ra[k] = lo, rb[k] = hi, k++;
        }
        nr = k;
    }
    size_t o = 0;
    for (int r = 0; r < nr; r++) off[r] = o, o += (size_t)(i1 - i0) * (rb[r] - ra[r]);
    return nr;
}

/* Head h of row b in the head-major bf16 copies: q, k, v [T, hd] each, dO [T, hd] */
static void heads16(const AttnArgs *a, int b, int h, const uint16_t **q16, const uint16_t **k16, const uint16_t **v16,
                    const uint16_t **dO16)
{
    size_t N = (size_t)a->B * a->T, hd = (size_t)(a->C / a->H), row = (size_t)b * a->T * hd;
    *q16 = a->qkv16 + (size_t)h * N * hd + row;
    *k16 = *q16 + (size_t)a->H * N * hd;
    *v16 = *k16 + (size_t)a->H * N * hd;
    if (dO16) *dO16 = a->dout16 ? a->dout16 + (size_t)h * N * hd + row : NULL;
}

/* One query block [i0, i0+m) of the bf16 forward: the scores Q K_r^T of
 * each range go to their tile of the worker's block (in cache), the softmax
 * writes the probabilities rounded to the same tiles of P16 (the block's
 * part of att16; the scale goes into the softmax), and sum_r P_r V_r goes
 * to the worker's [m, hd] tile, then to out's rows (o, stride C). */
static void forward_block16(const AttnArgs *a, int t, int i0, int m, int nr, const int *ra, const int *rb,
                            const size_t *off, const int32_t *seg_row, const uint8_t *vis_b, uint16_t *P16,
                            const uint16_t *q16, const uint16_t *k16, const uint16_t *v16, float *o, float scale)
{
    int hd = a->C / a->H, S = a->S;
    float *Sb = (float *)attn_block16(a, t, 0), *Ob = attn_acc(a, t);
    float *rp[ATTN_MAX_RANGES];
    uint16_t *pp[ATTN_MAX_RANGES];
    for (int r = 0; r < nr; r++)
        attn_mm(a, t, AP_QK, m, rb[r] - ra[r], q16 + (size_t)i0 * hd, k16 + (size_t)ra[r] * hd, Sb + off[r]);
    for (int row = 0; row < m; row++) {
        int tt = i0 + row;
        for (int r = 0; r < nr; r++) {
            size_t x = off[r] + (size_t)row * (rb[r] - ra[r]);
            rp[r] = Sb + x, pp[r] = P16 + x;
        }
        masked_softmax_row(rp, pp, tt, nr, ra, rb, seg_row, seg_row ? vis_b + (size_t)seg_row[tt] * S : NULL, scale);
    }
    for (int r = 0; r < nr; r++)
        attn_mm(a, t, r ? AP_AB1 : AP_AB0, m, rb[r] - ra[r], P16 + off[r], v16 + (size_t)ra[r] * hd, Ob);
    for (int row = 0; row < m; row++) memcpy(o + (size_t)(i0 + row) * a->C, Ob + (size_t)row * hd, sizeof(float) * hd);
}

static void attention_forward_task(void *p, int t, int nt)
{
    const AttnArgs *a = p;
    if (a->s16 && nt > a->workers) { /* bf16: only workers with their own block scratch */
        if (t >= a->workers) return;
        nt = a->workers;
    }
    int T = a->T, C = a->C, H = a->H, S = a->S, hd = C / H, ld = 3 * C;
    float scale = 1.0f / sqrtf((float)hd);
    int ra[ATTN_MAX_RANGES], rb[ATTN_MAX_RANGES];
    float *rp[ATTN_MAX_RANGES];
    size_t roff[ATTN_MAX_RANGES];
    size_t j0, j1;
    pool_range((size_t)a->B * H, t, nt, &j0, &j1);
    for (size_t j = j0; j < j1; j++) {
        int b = (int)(j / H), h = (int)(j % H);
        const int32_t *seg_row = a->seg ? a->seg + (size_t)b * T : NULL;
        const uint8_t *vis_b = a->vis ? a->vis + (size_t)b * S * S : NULL;
        size_t off = (size_t)b * T * ld + (size_t)h * hd;
        const float *q = a->qkv ? a->qkv + off : NULL; /* NULL in bf16, which reads qkv16 */
        const float *k = q ? q + C : NULL, *v = q ? q + 2 * C : NULL;
        const uint16_t *q16 = NULL, *k16 = NULL, *v16 = NULL;
        if (a->s16) heads16(a, b, h, &q16, &k16, &v16, NULL);
        float *o = a->out + (size_t)b * T * C + (size_t)h * hd;
        for (int i0 = 0; i0 < T; i0 += ATTN_QBLOCK) {
            int i1 = i0 + ATTN_QBLOCK < T ? i0 + ATTN_QBLOCK : T, m = i1 - i0;
            if (a->s16) {
                int nr = block_ranges16(a, i0, i1, seg_row, vis_b, ra, rb, roff);
                forward_block16(a, t, i0, m, nr, ra, rb, roff, seg_row, vis_b,
                                a->att16 + (((size_t)b * H + h) * T + i0) * T, q16, k16, v16, o, scale);
                continue;
            }
            int nr = key_ranges(i0, i1, seg_row, vis_b, S, ra, rb);
            float *Ab = a->att + (((size_t)b * H + h) * T + i0) * T;
            /* scores [m, range] = scale * Q[i0:i1] K[range]^T */
            for (int r = 0; r < nr; r++)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, rb[r] - ra[r], hd, scale, q + (size_t)i0 * ld, ld,
                            k + (size_t)ra[r] * ld, ld, 0.0f, Ab + ra[r], T);
            for (int tt = i0; tt < i1; tt++) {
                range_ptrs(rp, Ab + (size_t)(tt - i0) * T, nr, ra);
                masked_softmax_row(rp, NULL, tt, nr, ra, rb, seg_row, seg_row ? vis_b + (size_t)seg_row[tt] * S : NULL,
                                   1.0f);
            }
            /* out[i0:i1] = sum over ranges of P[:, range] V[range] */
            for (int r = 0; r < nr; r++)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, hd, rb[r] - ra[r], 1.0f, Ab + ra[r], T,
                            v + (size_t)ra[r] * ld, ld, r ? 1.0f : 0.0f, o + (size_t)i0 * C, C);
        }
        if (t == 0) pool_progress();
    }
}

/* Heads run in parallel on the pool, each with single-threaded sgemms:
 * the per-block products are too small for OpenBLAS's own threading. */
static void run_heads(PoolFn fn, AttnArgs *a)
{
    int nt = pool_threads();
    if (nt <= 1) {
        fn(a, 0, 1);
        return;
    }
    int bt = openblas_get_num_threads();
    openblas_set_num_threads(1);
    pool_run(fn, a);
    openblas_set_num_threads(bt);
}

void attention_forward(float *out, float *att, const float *qkv, const int32_t *seg, const uint8_t *vis, int B, int T,
                       int C, int H, int S)
{
    AttnArgs a = { .out = out, .att = att, .qkv = qkv, .seg = seg, .vis = vis, .B = B, .T = T, .C = C, .H = H, .S = S };
    run_heads(attention_forward_task, &a);
}

/* ---- flash attention: no [T,T] probabilities ------------------------------
 * Query blocks of ATTN_QBLOCK rows against key tiles of at most ATTN_KBLOCK
 * keys (the key ranges of key_ranges, cut into tiles). The forward keeps a
 * running max m and sum l per query (the online softmax), rescaling the
 * output rows when m grows, and saves lse = m + log l; the backward
 * recomputes each tile's P = exp(s - lse) and uses dS = P (dP - D) with
 * D = rowsum(dO * O). Per worker: two [QBLOCK, KBLOCK] tiles and 2 QBLOCK
 * floats. */
#define ATTN_KBLOCK 128
#define FLASH_WORKER_FLOATS (2 * ATTN_QBLOCK * ATTN_KBLOCK + 2 * ATTN_QBLOCK)

/* Masks row tt's tile of scores s[0..kb) (keys u0..u0+kb) in place: keys
 * past tt, and keys before tt whose segment tt may not see, get -inf.
 * Returns the number of keys up to tt in the tile (0: none visible). */
static int flash_mask_row(float *s, int tt, int u0, int kb, const int32_t *seg_row, const uint8_t *vis_row)
{
    int e = tt + 1 - u0 < kb ? tt + 1 - u0 : kb;
    if (e < 0) e = 0;
    for (int x = e; x < kb; x++) s[x] = -INFINITY;
    if (vis_row)
        for (int x = 0; x < e; x++)
            if (u0 + x != tt && !vis_row[seg_row[u0 + x]]) s[x] = -INFINITY;
    return e;
}

/* s[x] = exp(s[x] - sub) for x < kb (-inf gives 0); returns the sum. */
static float flash_exp_row(float *s, int kb, float sub)
{
    v8f acc = v8_set1(0.0f), vs = v8_set1(sub);
    int x = 0;
    for (; x + 8 <= kb; x += 8) {
        v8f e = v8_exp(v8_load(s + x) - vs);
        v8_store(s + x, e);
        acc += e;
    }
    if (x < kb) {
        v8f e = v8_exp(v8_load_part(s + x, kb - x, -INFINITY) - vs);
        v8_store_part(s + x, e, kb - x);
        acc += e;
    }
    return v8_hsum(acc);
}

/* The forward (a->dqkv NULL) or the backward of one worker's (row, head)s. */
static void flash_task(void *p, int t, int nt)
{
    const AttnArgs *a = p;
    if (t >= a->workers) return;
    nt = a->workers;
    int T = a->T, C = a->C, H = a->H, S = a->S, hd = C / H, ld = 3 * C, bwd = a->dqkv != NULL;
    float scale = 1.0f / sqrtf((float)hd);
    int ra[ATTN_MAX_RANGES], rb[ATTN_MAX_RANGES];
    /* Pb: the tile's scores, then P; Db (backward): dP, then dS; per query: the running max and sum
     * (forward) or D = rowsum(dO * O) (backward) */
    float *Pb = a->scratch + (size_t)t * FLASH_WORKER_FLOATS, *Db = Pb + ATTN_QBLOCK * ATTN_KBLOCK,
          *mx = Db + ATTN_QBLOCK * ATTN_KBLOCK, *l = mx + ATTN_QBLOCK;
    size_t jlo, jhi;
    pool_range((size_t)a->B * H, t, nt, &jlo, &jhi);
    for (size_t bh = jlo; bh < jhi; bh++) { /* (row, head) pair bh = row * H + head */
        size_t row0 = bh / H * (size_t)T, off = row0 * ld + bh % H * hd, off_o = row0 * C + bh % H * hd;
        const int32_t *seg_row = a->seg ? a->seg + row0 : NULL;
        const uint8_t *vis_b = a->vis ? a->vis + bh / H * S * S : NULL;
        const float *q = a->qkv + off, *k = q + C, *v = q + 2 * C;
        float *lse = a->lse + bh * T;
        float *o = bwd ? NULL : a->out + off_o;
        const float *O = bwd ? a->fout + off_o : NULL, *dO = bwd ? a->dout + off_o : NULL;
        float *dq = bwd ? a->dqkv + off : NULL, *dk = dq ? dq + C : NULL, *dv = dq ? dq + 2 * C : NULL;
        for (int i0 = 0; i0 < T; i0 += ATTN_QBLOCK) {
            int i1 = i0 + ATTN_QBLOCK < T ? i0 + ATTN_QBLOCK : T, m = i1 - i0;
            int nr = key_ranges(i0, i1, seg_row, vis_b, S, ra, rb);
            for (int row = 0; row < m; row++) {
                if (bwd) { /* D = rowsum(dO * O) = rowsum(P * dP) */
                    const float *x = dO + (size_t)(i0 + row) * C, *y = O + (size_t)(i0 + row) * C;
                    float s = 0.0f;
                    for (int d = 0; d < hd; d++) s += x[d] * y[d];
                    mx[row] = s;
                } else {
                    mx[row] = -INFINITY, l[row] = 0.0f;
                    memset(o + (size_t)(i0 + row) * C, 0, sizeof(float) * hd);
                }
            }
            for (int r = 0; r < nr; r++)
                for (int u0 = ra[r]; u0 < rb[r]; u0 += ATTN_KBLOCK) {
                    int kb = rb[r] - u0 < ATTN_KBLOCK ? rb[r] - u0 : ATTN_KBLOCK;
                    /* scores scale Q[i0:i1] K[tile]^T; backward: dP = dO[i0:i1] V[tile]^T */
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, kb, hd, scale, q + (size_t)i0 * ld, ld,
                                k + (size_t)u0 * ld, ld, 0.0f, Pb, ATTN_KBLOCK);
                    if (bwd)
                        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, kb, hd, 1.0f, dO + (size_t)i0 * C, C,
                                    v + (size_t)u0 * ld, ld, 0.0f, Db, ATTN_KBLOCK);
                    for (int row = 0; row < m; row++) {
                        int tt = i0 + row;
                        float *pr = Pb + (size_t)row * ATTN_KBLOCK;
                        flash_mask_row(pr, tt, u0, kb, seg_row, seg_row ? vis_b + (size_t)seg_row[tt] * S : NULL);
                        if (bwd) { /* P = exp(s - lse); dS = P (dP - D) scale */
                            float *dr = Db + (size_t)row * ATTN_KBLOCK;
                            flash_exp_row(pr, kb, lse[tt]);
                            for (int x = 0; x < kb; x++) dr[x] = pr[x] * (dr[x] - mx[row]) * scale;
                            continue;
                        }
                        float mt = -INFINITY;
                        for (int x = 0; x < kb; x++) mt = pr[x] > mt ? pr[x] : mt;
                        float mn = mt > mx[row] ? mt : mx[row];
                        if (mn == -INFINITY) { /* nothing visible yet: P = 0 */
                            memset(pr, 0, sizeof(float) * kb);
                            continue;
                        }
                        float alpha = mx[row] == -INFINITY ? 0.0f : expf(mx[row] - mn);
                        float sum = flash_exp_row(pr, kb, mn);
                        if (alpha != 1.0f) {
                            float *orow = o + (size_t)tt * C;
                            for (int d = 0; d < hd; d++) orow[d] *= alpha;
                        }
                        l[row] = l[row] * alpha + sum, mx[row] = mn;
                    }
                    if (!bwd) { /* out[i0:i1] += P V[tile] */
                        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, hd, kb, 1.0f, Pb, ATTN_KBLOCK,
                                    v + (size_t)u0 * ld, ld, 1.0f, o + (size_t)i0 * C, C);
                        continue;
                    }
                    /* dV[tile] += P^T dO;  dQ[i0:i1] += dS K[tile];  dK[tile] += dS^T Q[i0:i1] */
                    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, kb, hd, m, 1.0f, Pb, ATTN_KBLOCK,
                                dO + (size_t)i0 * C, C, 1.0f, dv + (size_t)u0 * ld, ld);
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, hd, kb, 1.0f, Db, ATTN_KBLOCK,
                                k + (size_t)u0 * ld, ld, 1.0f, dq + (size_t)i0 * ld, ld);
                    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, kb, hd, m, 1.0f, Db, ATTN_KBLOCK,
                                q + (size_t)i0 * ld, ld, 1.0f, dk + (size_t)u0 * ld, ld);
                }
            for (int row = 0; !bwd && row < m; row++) { /* every query sees itself: l > 0 */
                float inv = 1.0f / l[row], *orow = o + (size_t)(i0 + row) * C;
                for (int d = 0; d < hd; d++) orow[d] *= inv;
                lse[i0 + row] = mx[row] + logf(l[row]);
            }
            if (t == 0 && bwd) pool_progress();
        }
        if (t == 0 && !bwd) pool_progress();
    }
}

/* Workers a flash call can run with scratch_floats floats of scratch. */
static int flash_workers(size_t scratch_floats)
{
    int workers = pool_threads();
    if ((size_t)workers > scratch_floats / FLASH_WORKER_FLOATS) workers = (int)(scratch_floats / FLASH_WORKER_FLOATS);
    if (workers < 1) fatal(EXIT_RUNTIME, "internal: flash attention scratch of %zu floats is below one worker's", scratch_floats);
    return workers;
}

void attention_forward_flash(float *out, float *lse, float *scratch, size_t scratch_floats, const float *qkv,
                             const int32_t *seg, const uint8_t *vis, int B, int T, int C, int H, int S)
{
    AttnArgs a = { .out = out, .lse = lse, .scratch = scratch, .qkv = qkv, .seg = seg, .vis = vis, .B = B, .T = T,
                   .C = C, .H = H, .S = S, .workers = flash_workers(scratch_floats) };
    run_heads(flash_task, &a);
}

void attention_backward_flash(float *dqkv, float *scratch, size_t scratch_floats, const float *dout, const float *out,
                              const float *lse, const float *qkv, const int32_t *seg, const uint8_t *vis, int B, int T,
                              int C, int H, int S)
{
    AttnArgs a = { .dqkv = dqkv, .scratch = scratch, .dout = dout, .fout = out, .lse = (float *)lse, .qkv = qkv,
                   .seg = seg, .vis = vis, .B = B, .T = T, .C = C, .H = H, .S = S,
                   .workers = flash_workers(scratch_floats) };
    run_heads(flash_task, &a);
}

size_t attention_flash_scratch_floats(void) { return (size_t)FLASH_WORKER_FLOATS * ATTN_SCRATCH_SLOTS; }

static void round_rows(uint16_t *dst, const float *src, size_t rows, size_t rows_pad, int cols);
static void round_heads(uint16_t *dst, const float *src, size_t N, int heads, int hd);
static void round_heads_dot(uint16_t *dst, float *dot, const float *src, const float *out, size_t N, int heads, int hd);

void attention_forward_bf16(float *out, uint16_t *att16, const float *qkv, uint16_t *keep, const int32_t *seg,
                            const uint8_t *vis, int B, int T, int C, int H, int S, Bf16Scratch *s16)
{
    size_t N = (size_t)B * T;
    if (N > s16->rows || T > s16->T || C != s16->C)
        fatal(EXIT_RUNTIME, "internal: bf16 attention of %dx%d (C %d) exceeds its scratch", B, T, C);
    if (!qkv && !keep) fatal(EXIT_RUNTIME, "internal: bf16 attention without q, k, v");
    uint16_t *q16 = keep ? keep : s16->qkv;
    AttnArgs a = { .out = out, .att16 = att16, .seg = seg, .vis = vis, .B = B, .T = T, .C = C, .H = H,
                   .S = S, .s16 = s16, .qkv16 = q16, .workers = s16->workers };
    attn_prims(&a);
    if (qkv) round_heads(q16, qkv, N, 3 * H, C / H);
    run_heads(attention_forward_task, &a);
}

void attention_cached_forward(float *out, float *scores, const float *q, int ldq, const float *kc, const float *vc,
                              int n, int len0, int C, int H)
{
    int hd = C / H, nk = len0 + n;
    float scale = 1.0f / sqrtf((float)hd);
    int ra = 0, rb = nk;
    for (int h = 0; h < H; h++) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, nk, hd, scale, q + (size_t)h * hd, ldq,
                    kc + (size_t)h * hd, C, 0.0f, scores, nk);
        for (int i = 0; i < n; i++) {
            float *row = scores + (size_t)i * nk;
            masked_softmax_row(&row, NULL, len0 + i, 1, &ra, &rb, NULL, NULL, 1.0f);
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, hd, nk, 1.0f, scores, nk, vc + (size_t)h * hd, C,
                    0.0f, out + (size_t)h * hd, C);
    }
}

size_t attention_scratch_floats(int T)
{
    size_t m = T < ATTN_QBLOCK ? (size_t)T : ATTN_QBLOCK;
    return m * (size_t)T * ATTN_SCRATCH_SLOTS;
}

/* sum of p[u] d[u] over the keys u <= t in the ranges: the softmax
 * backward's row sum (8 lanes, then a fixed-order horizontal sum). Range r
 * of p and d at pr[r] and dr[r] (as masked_softmax_row's rp). */
static float visible_dot(const float *const *pr, const float *const *dr, int t, int nr, const int *ra, const int *rb)
{
    v8f acc = v8_set1(0.0f);
    for (int r = 0; r < nr; r++) {
        int u = 0, e = rb[r] < t + 1 ? rb[r] - ra[r] : t + 1 - ra[r];
        const float *p = pr[r], *d = dr[r];
#if VEC16
        for (; u + 16 <= e; u += 16) acc = v16_acc8(acc, v16_load(p + u) * v16_load(d + u));
#endif
        for (; u + 8 <= e; u += 8) acc += v8_load(p + u) * v8_load(d + u);
        if (u < e) acc += v8_load_part(p + u, e - u, 0.0f) * v8_load_part(d + u, e - u, 0.0f);
    }
    return v8_hsum(acc);
}

/* x[0, n) . y[0, n), x rounded to bf16 (a head's row of dO), 8 lanes */
static float head_dot(const uint16_t *x, const float *y, int n)
{
    v8f acc = v8_set1(0.0f);
    int d = 0;
    for (; d + 8 <= n; d += 8) acc += v8_load_bf16(x + d) * v8_load(y + d);
    float s = v8_hsum(acc);
    for (; d < n; d++) s += bf16_to_float(x[d]) * y[d];
    return s;
}

/* Rows [i0, i0 + rows) of part (0 q, 1 k, 2 v) of head h of batch row b,
 * from src [rows, hd]: into dqkv, or with dqkv16 rotated back (q, k) and
 * rounded into dqkv16 [N,3C]: the bits rope_backward on dqkv, then
 * rounding, would give (rope_head on the same values), without dqkv. */
static void put_head_rows(const AttnArgs *a, int b, int h, int part, int i0, int rows, const float *src)
{
    int C = a->C, hd = C / a->H, half = hd / 2;
    for (int i = 0; i < rows; i++) {
        size_t n = (size_t)b * a->T + i0 + i, o = n * 3 * C + (size_t)part * C + (size_t)h * hd;
        const float *z = src + (size_t)i * hd;
        if (!a->dqkv16) memcpy(a->dqkv + o, z, sizeof(float) * hd);
        else if (part == 2) bf16_round(a->dqkv16 + o, z, (size_t)hd);
        else rope_head(NULL, a->dqkv16 + o, z, a->cos_t + (size_t)a->pos[n] * half, a->sin_t + (size_t)a->pos[n] * half,
                       half, -1.0f);
    }
}

/* One query block [i0, i0+m) of the bf16 backward, its ranges' tiles as
 * the forward's (P16: the block's part of att16): dP = dO V_r^T into D's
 * tiles, the softmax backward writes dS rounded into D16's from the saved
 * P, then dV_r += P_r^T dO, dQ = sum_r dS_r K_r, dK_r += dS_r^T Q into the
 * worker's dense accumulators acc (dK [T, hd], dV [T, hd], dQ [m, hd]);
 * dQ goes out (put_head_rows) here, dK and dV once the head is done. */
static void backward_block16(const AttnArgs *a, int t, int b, int h, int i0, int m, int nr, const int *ra,
                             const int *rb, const size_t *off, const uint16_t *P16, float *D, uint16_t *D16,
                             const uint16_t *q16, const uint16_t *k16, const uint16_t *v16, const uint16_t *dO16,
                             float *acc, float scale)
{
    int T = a->T, hd = a->C / a->H;
    float *dk = acc, *dv = acc + (size_t)T * hd, *dqb = dv + (size_t)T * hd;
    const uint16_t *dOb = dO16 + (size_t)i0 * hd;
    const uint16_t *pr[ATTN_MAX_RANGES];
    const float *drc[ATTN_MAX_RANGES];
    for (int r = 0; r < nr; r++) attn_mm(a, t, AP_QK, m, rb[r] - ra[r], dOb, v16 + (size_t)ra[r] * hd, D + off[r]);
    vwf vscale = vw_set1(scale);
    for (int row = 0; row < m; row++) {
        int tt = i0 + row;
        for (int r = 0; r < nr; r++) {
            size_t x = off[r] + (size_t)row * (rb[r] - ra[r]);
            pr[r] = P16 + x, drc[r] = D + x;
        }
        float sum = a->s16->drow[(size_t)h * a->B * T + (size_t)b * T + tt]; /* D (round_heads_dot) */
        vwf sw = vw_set1(sum);
        for (int r = 0; r < nr; r++) {
            int n = rb[r] - ra[r], u = 0, e = rb[r] < tt + 1 ? n : tt + 1 - ra[r];
            const uint16_t *p16 = pr[r];
            const float *dr = drc[r];
            uint16_t *ds16 = D16 + (pr[r] - P16);
            for (; u + VW <= e; u += VW) vw_store_bf16(ds16 + u, vw_load_bf16(p16 + u) * (vw_load(dr + u) - sw) * vscale);
            for (; u < e; u++) ds16[u] = bf16_from_float(bf16_to_float(p16[u]) * (dr[u] - sum) * scale);
            for (u = e > 0 ? e : 0; u < n; u++) ds16[u] = 0;
        }
    }
    for (int r = 0; r < nr; r++) {
        int u0 = ra[r], n = rb[r] - ra[r];
        attn_mm(a, t, AP_ATB1, m, n, P16 + off[r], dOb, dv + (size_t)u0 * hd);
        attn_mm(a, t, r ? AP_AB1 : AP_AB0, m, n, D16 + off[r], k16 + (size_t)u0 * hd, dqb);
        attn_mm(a, t, AP_ATB1, m, n, D16 + off[r], q16 + (size_t)i0 * hd, dk + (size_t)u0 * hd);
    }
    put_head_rows(a, b, h, 0, i0, m, dqb);
}

static void attention_backward_task(void *p, int t, int nt)
{
    const AttnArgs *a = p;
    if (t >= a->workers) return;
    nt = a->workers;
    int T = a->T, C = a->C, H = a->H, S = a->S, hd = C / H, ld = 3 * C;
    float scale = 1.0f / sqrtf((float)hd);
    int ra[ATTN_MAX_RANGES], rb[ATTN_MAX_RANGES];
    const float *prp[ATTN_MAX_RANGES];
    float *drp[ATTN_MAX_RANGES];
    size_t roff[ATTN_MAX_RANGES];
    size_t mrows = T < ATTN_QBLOCK ? (size_t)T : ATTN_QBLOCK;
    float *D = a->scratch + (size_t)t * mrows * T;
    uint16_t *D16 = a->s16 ? attn_block16(a, t, 1) : NULL;
    float *acc = a->s16 ? attn_acc(a, t) : NULL;
    size_t j0, j1;
    pool_range((size_t)a->B * H, t, nt, &j0, &j1);
    for (size_t j = j0; j < j1; j++) {
        int b = (int)(j / H), h = (int)(j % H);
        const int32_t *seg_row = a->seg ? a->seg + (size_t)b * T : NULL;
        const uint8_t *vis_b = a->vis ? a->vis + (size_t)b * S * S : NULL;
        size_t off = (size_t)b * T * ld + (size_t)h * hd, off_o = (size_t)b * T * C + (size_t)h * hd;
        if (a->s16) {
            const uint16_t *q16, *k16, *v16, *dO16;
            heads16(a, b, h, &q16, &k16, &v16, &dO16);
            memset(acc, 0, sizeof(float) * 2 * T * hd);
            for (int i0 = 0; i0 < T; i0 += ATTN_QBLOCK) {
                int i1 = i0 + ATTN_QBLOCK < T ? i0 + ATTN_QBLOCK : T;
                int nr = block_ranges16(a, i0, i1, seg_row, vis_b, ra, rb, roff);
                const uint16_t *P16 = a->att16 + (((size_t)b * H + h) * T + i0) * T;
                backward_block16(a, t, b, h, i0, i1 - i0, nr, ra, rb, roff, P16, D, D16, q16, k16, v16, dO16, acc, scale);
                if (t == 0) pool_progress();
            }
            put_head_rows(a, b, h, 1, 0, T, acc);
            put_head_rows(a, b, h, 2, 0, T, acc + (size_t)T * hd);
            continue;
        }
        float *dq = a->dqkv + off, *dk = dq + C, *dv = dq + 2 * C;
        const float *q = a->qkv + off, *k = q + C, *v = q + 2 * C;
        const float *A = a->att + ((size_t)b * H + h) * T * T;
        const float *dO = a->dout + off_o;
        for (int i0 = 0; i0 < T; i0 += ATTN_QBLOCK) {
            int i1 = i0 + ATTN_QBLOCK < T ? i0 + ATTN_QBLOCK : T, m = i1 - i0;
            int nr = key_ranges(i0, i1, seg_row, vis_b, S, ra, rb);
            const float *P = A + (size_t)i0 * T;
            for (int r = 0; r < nr; r++) {
                int u0 = ra[r], nk = rb[r] - ra[r];
                /* dV[range] += P[:, range]^T dO[i0:i1] */
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nk, hd, m, 1.0f, P + u0, T, dO + (size_t)i0 * C, C,
                            1.0f, dv + (size_t)u0 * ld, ld);
                /* dP [m, range] = dO[i0:i1] V[range]^T */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, nk, hd, 1.0f, dO + (size_t)i0 * C, C,
                            v + (size_t)u0 * ld, ld, 0.0f, D + u0, T);
            }
            /* softmax backward: dS = P * (dP - sum(P * dP)), times the score scale.
             * Masked entries have P = 0, so they get no gradient. */
            vwf vscale = vw_set1(scale);
            for (int row = 0; row < m; row++) {
                int tt = i0 + row;
                const float *pr = P + (size_t)row * T;
                float *dr = D + (size_t)row * T;
                for (int r = 0; r < nr; r++) prp[r] = pr + ra[r], drp[r] = dr + ra[r];
                float sum = visible_dot(prp, (const float *const *)drp, tt, nr, ra, rb);
                vwf sw = vw_set1(sum);
                for (int r = 0; r < nr; r++) {
                    int u = ra[r], e = rb[r] < tt + 1 ? rb[r] : tt + 1;
                    for (; u + VW <= e; u += VW) vw_store(dr + u, vw_load(pr + u) * (vw_load(dr + u) - sw) * vscale);
                    for (; u < e; u++) dr[u] = pr[u] * (dr[u] - sum) * scale;
                    for (u = e > ra[r] ? e : ra[r]; u < rb[r]; u++) dr[u] = 0.0f;
                }
            }
            for (int r = 0; r < nr; r++) {
                int u0 = ra[r], nk = rb[r] - ra[r];
                /* dQ[i0:i1] += dS[:, range] K[range];  dK[range] += dS[:, range]^T Q[i0:i1] */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, hd, nk, 1.0f, D + u0, T,
                            k + (size_t)u0 * ld, ld, 1.0f, dq + (size_t)i0 * ld, ld);
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nk, hd, m, 1.0f, D + u0, T, q + (size_t)i0 * ld,
                            ld, 1.0f, dk + (size_t)u0 * ld, ld);
            }
            if (t == 0) pool_progress();
        }
    }
}

static void attention_backward_any(float *dqkv, const Bf16RopeBack *rope, float *scratch, size_t scratch_floats,
                                   const float *dout, const float *out, const float *att, const uint16_t *att16,
                                   const float *qkv, const uint16_t *qkv16, const int32_t *seg, const uint8_t *vis, int B,
                                   int T, int C, int H, int S, Bf16Scratch *s16)
{
    size_t per = (T < ATTN_QBLOCK ? (size_t)T : ATTN_QBLOCK) * (size_t)T;
    int workers = pool_threads();
    if ((size_t)workers > scratch_floats / per) workers = (int)(scratch_floats / per);
    if (s16 && workers > s16->workers) workers = s16->workers;
    if (workers < 1) fatal(EXIT_RUNTIME, "internal: attention scratch of %zu floats is below one block", scratch_floats);
    AttnArgs a = { .dqkv = dqkv, .scratch = scratch, .dout = dout, .fout = out, .att = (float *)att,
                   .att16 = (uint16_t *)att16,
                   .qkv = qkv, .seg = seg, .vis = vis,
                   .B = B, .T = T, .C = C, .H = H, .S = S, .workers = workers, .s16 = s16 };
    if (rope) a.dqkv16 = rope->dqkv16, a.pos = rope->pos, a.cos_t = rope->cos_t, a.sin_t = rope->sin_t;
    if (s16) {
        size_t N = (size_t)B * T;
        if (N > s16->rows || T > s16->T || C != s16->C)
            fatal(EXIT_RUNTIME, "internal: bf16 attention of %dx%d (C %d) exceeds its scratch", B, T, C);
        attn_prims(&a);
        if (!qkv16) round_heads(s16->qkv, qkv, N, 3 * H, C / H);
        a.qkv16 = qkv16 ? qkv16 : s16->qkv;
        a.dout16 = s16->dout;
        round_heads_dot(s16->dout, s16->drow, dout, a.fout, N, H, C / H);
    }
    run_heads(attention_backward_task, &a);
}

void attention_backward(float *dqkv, float *scratch, size_t scratch_floats, const float *dout, const float *att,
                        const float *qkv, const int32_t *seg, const uint8_t *vis, int B, int T, int C, int H, int S)
{
    attention_backward_any(dqkv, NULL, scratch, scratch_floats, dout, NULL, att, NULL, qkv, NULL, seg, vis, B, T, C, H, S,
                           NULL);
}

void attention_backward_bf16(float *dqkv, const Bf16RopeBack *rope, float *scratch, size_t scratch_floats,
                             const float *dout, const float *out, const uint16_t *att16, const float *qkv,
                             const uint16_t *qkv16, const int32_t *seg, const uint8_t *vis, int B, int T, int C, int H,
                             int S, Bf16Scratch *s16)
{
    attention_backward_any(dqkv, rope, scratch, scratch_floats, dout, out, NULL, att16, qkv, qkv16, seg, vis, B, T, C, H,
                           S, s16);
}

/* ---- SwiGLU ------------------------------------------------------------- */

typedef struct {
    float *out, *dh13;
    const float *h13, *dout;
    int N, F, accumulate;
    uint16_t *out16, *dh16; /* bf16 output instead of out / dh13 (not accumulating) */
    const uint16_t *h16;    /* bf16 input instead of h13 (with out16 / dh16) */
    const uint16_t *dout16; /* bf16 input instead of dout (with dh16) */
} SwiArgs;

/* VW lanes of h13 (or its bf16 copy) at element i of row n's 2F */
static inline vwf swi_load(const SwiArgs *a, size_t i)
{
    return a->h16 ? vw_load_bf16(a->h16 + i) : vw_load(a->h13 + i);
}

static inline float swi_at(const SwiArgs *a, size_t i)
{
    return a->h16 ? bf16_to_float(a->h16[i]) : a->h13[i];
}

static void swiglu_forward_task(void *p, int t, int nt)
{
    const SwiArgs *a = p;
    int F = a->F;
    size_t n0, n1;
    pool_range((size_t)a->N, t, nt, &n0, &n1);
    vwf one = vw_set1(1.0f);
    for (size_t n = n0; n < n1; n++) {
        size_t g = n * 2 * F, u = g + F; /* gate and up of row n */
        float *y = a->out16 ? NULL : a->out + n * F;
        uint16_t *y16 = a->out16 ? a->out16 + n * F : NULL;
        int f = 0;
        for (; f + VW <= F; f += VW) {
            vwf gv = swi_load(a, g + f);
            vwf yv = gv / (one + vw_exp(-gv)) * swi_load(a, u + f);
            if (y16) vw_store_bf16(y16 + f, yv);
            else vw_store(y + f, yv);
        }
        for (; f < F; f++) {
            float gf = swi_at(a, g + f), yf = gf / (1.0f + scalar_exp(-gf)) * swi_at(a, u + f);
            if (y16) y16[f] = bf16_from_float(yf);
            else y[f] = yf;
        }
    }
}

void swiglu_forward(float *out, const float *h13, int N, int F)
{
    SwiArgs a = { .out = out, .h13 = h13, .N = N, .F = F };
    pool_run(swiglu_forward_task, &a);
}

void swiglu_forward_bf16(uint16_t *out16, const uint16_t *h16, int N, int F)
{
    SwiArgs a = { .out16 = out16, .h16 = h16, .N = N, .F = F };
    pool_run(swiglu_forward_task, &a);
}

static void swiglu_backward_task(void *p, int t, int nt)
{
    const SwiArgs *a = p;
    int F = a->F;
    size_t n0, n1;
    pool_range((size_t)a->N, t, nt, &n0, &n1);
    vwf one = vw_set1(1.0f);
    float keep = a->accumulate ? 1.0f : 0.0f;
    for (size_t n = n0; n < n1; n++) {
        size_t g = n * 2 * F, u = g + F; /* gate and up of row n */
        const float *dy = a->dout16 ? NULL : a->dout + n * F;
        const uint16_t *dy16 = a->dout16 ? a->dout16 + n * F : NULL;
        float *dg = a->dh16 ? NULL : a->dh13 + n * 2 * F, *du = a->dh16 ? NULL : dg + F;
        uint16_t *dg16 = a->dh16 ? a->dh16 + n * 2 * F : NULL, *du16 = a->dh16 ? dg16 + F : NULL;
        int f = 0;
        for (; f + VW <= F; f += VW) {
            vwf gv = swi_load(a, g + f), uv = swi_load(a, u + f), dyv = dy16 ? vw_load_bf16(dy16 + f) : vw_load(dy + f);
            vwf sig = one / (one + vw_exp(-gv));
            vwf dgv = dyv * uv * sig * (one + gv * (one - sig)), duv = dyv * gv * sig;
            if (dg16) {
                vw_store_bf16(dg16 + f, dgv);
                vw_store_bf16(du16 + f, duv);
                continue;
            }
            if (a->accumulate) dgv += vw_load(dg + f), duv += vw_load(du + f);
            vw_store(dg + f, dgv);
            vw_store(du + f, duv);
        }
        for (; f < F; f++) {
            float gf = swi_at(a, g + f), uf = swi_at(a, u + f), sig = 1.0f / (1.0f + scalar_exp(-gf));
            float dyf = dy16 ? bf16_to_float(dy16[f]) : dy[f];
            float dgs = dyf * uf * sig * (1.0f + gf * (1.0f - sig)), dus = dyf * gf * sig;
            if (dg16) {
                dg16[f] = bf16_from_float(dgs), du16[f] = bf16_from_float(dus);
                continue;
            }
            dg[f] = keep * dg[f] + dgs;
            du[f] = keep * du[f] + dus;
        }
    }
}

void swiglu_backward(float *dh13, const float *dout, const float *h13, int N, int F)
{
    SwiArgs a = { .dh13 = dh13, .dout = dout, .h13 = h13, .N = N, .F = F, .accumulate = 1 };
    pool_run(swiglu_backward_task, &a);
}

void swiglu_backward_set(float *dh13, const float *dout, const float *h13, int N, int F)
{
    SwiArgs a = { .dh13 = dh13, .dout = dout, .h13 = h13, .N = N, .F = F, .accumulate = 0 };
    pool_run(swiglu_backward_task, &a);
}

void swiglu_backward_bf16(uint16_t *dh16, const uint16_t *dout16, const uint16_t *h16, int N, int F)
{
    SwiArgs a = { .dh16 = dh16, .dout16 = dout16, .h16 = h16, .N = N, .F = F };
    pool_run(swiglu_backward_task, &a);
}

/* ---- residual ----------------------------------------------------------- */

typedef struct {
    float *p;
    size_t n;
} ZeroArgs;

static void zero_task(void *ctx, int t, int nt)
{
    const ZeroArgs *z = ctx;
    size_t lo, hi, units = (z->n + 15) / 16; /* 64-byte pieces */
    pool_range(units, t, nt, &lo, &hi);
    lo *= 16, hi *= 16;
    if (hi > z->n) hi = z->n;
    if (lo < hi) memset(z->p + lo, 0, sizeof(float) * (hi - lo));
}

void zero_floats(float *p, size_t n)
{
    ZeroArgs z = { p, n };
    pool_run(zero_task, &z);
}

typedef struct {
    float *out;
    const float *a, *b;
    size_t n;
} ResArgs;

static void residual_task(void *p, int t, int nt)
{
    const ResArgs *r = p;
    size_t i0, i1;
    pool_range(r->n, t, nt, &i0, &i1);
    size_t i = i0; /* out may be a or b: each vector is read before it is written */
    for (; i + VW <= i1; i += VW) vw_store(r->out + i, vw_load(r->a + i) + vw_load(r->b + i));
    for (; i < i1; i++) r->out[i] = r->a[i] + r->b[i];
}

void residual_forward(float *out, const float *a, const float *b, size_t n)
{
    ResArgs r = { out, a, b, n };
    pool_run(residual_task, &r);
}

/* ---- log-softmax at the targets ---------------------------------------- */

typedef struct {
    float *logp, *lse, *dlogits;
    const float *logits, *dlogp;
    const Target *targets;
    int K, N, V;
} LogpArgs;

static void lse_task(void *p, int t, int nt)
{
    const LogpArgs *a = p;
    int V = a->V;
    size_t n0, n1;
    pool_range((size_t)a->N, t, nt, &n0, &n1);
    for (size_t n = n0; n < n1; n++) {
        const float *row = a->logits + n * V;
        v8f vm = v8_set1(-INFINITY);
        int v = 0;
        for (; v + 8 <= V; v += 8) vm = v8_max(vm, v8_load(row + v));
        float mx = v8_hmax(vm);
        for (; v < V; v++)
            if (row[v] > mx) mx = row[v];
        v8f vmax = v8_set1(mx), acc = v8_set1(0.0f);
        for (v = 0; v + 8 <= V; v += 8) acc += v8_exp(v8_load(row + v) - vmax);
        if (v < V) acc += v8_exp(v8_load_part(row + v, V - v, -INFINITY) - vmax);
        a->lse[n] = mx + logf(v8_hsum(acc));
    }
}

void target_logp_forward(float *logp, float *lse, const float *logits, const Target *targets, int K, int N, int V)
{
    LogpArgs a = { .lse = lse, .logits = logits, .N = N, .V = V };
    pool_run(lse_task, &a);
    for (int k = 0; k < K; k++) {
        int i = targets[k].index;
        logp[k] = logits[(size_t)i * V + targets[k].token] - lse[i];
    }
}

/* split by row: a thread applies, in target order, the targets whose row is
 * in its share, so several targets on one row never race */
static void logp_backward_task(void *p, int t, int nt)
{
    const LogpArgs *a = p;
    int V = a->V;
    size_t n0, n1;
    pool_range((size_t)a->N, t, nt, &n0, &n1);
    for (int k = 0; k < a->K; k++) {
        size_t i = (size_t)a->targets[k].index;
        if (i < n0 || i >= n1) continue;
        const float *row = a->logits + i * V;
        float *drow = a->dlogits + i * V;
        float d = a->dlogp[k];
        v8f vd = v8_set1(d), vl = v8_set1(a->lse[i]);
        int v = 0;
        for (; v + 8 <= V; v += 8) v8_store(drow + v, v8_load(drow + v) - vd * v8_exp(v8_load(row + v) - vl));
        if (v < V) {
            v8f e = v8_exp(v8_load_part(row + v, V - v, -INFINITY) - vl);
            v8_store_part(drow + v, v8_load_part(drow + v, V - v, 0.0f) - vd * e, V - v);
        }
        drow[a->targets[k].token] += d;
    }
}

void target_logp_backward(float *dlogits, const float *dlogp, const float *logits, const float *lse,
                          const Target *targets, int K, int V)
{
    int N = 0;
    for (int k = 0; k < K; k++)
        if (targets[k].index + 1 > N) N = targets[k].index + 1;
    LogpArgs a = { .dlogits = dlogits, .dlogp = dlogp, .logits = logits, .lse = (float *)lse, .targets = targets, .K = K,
                   .N = N, .V = V };
    pool_run(logp_backward_task, &a);
}

/* ---- bf16 products ------------------------------------------------------- */

/* Tiles of a product's rows: BF16_TILE rows each, the rest rounded up to 16
 * and cut into power-of-two tiles (128, 64, 32, 16); a last tile that
 * reaches past the rows reads zero rows of the rounded operand and writes
 * into the worker's tile buffer. Every tile size has its primitive (oneDNN's
 * brgemm, made by matmul_bf16_prepare), so a tile is computed alike
 * whatever the row count or the thread count. */
#define BF16_TILE 256
#define BF16_MIN_TILE 16

static size_t pad_rows(size_t n) { return (n + BF16_MIN_TILE - 1) / BF16_MIN_TILE * BF16_MIN_TILE; }

/* Tile i of [0, M) in tiles of `full` rows: its size (0 past the last) and start. */
static int tile_at(int M, int full, int i, int *start)
{
    int nfull = M / full;
    if (i < nfull) {
        *start = i * full;
        return full;
    }
    int rest = M - nfull * full, r16 = (rest + BF16_MIN_TILE - 1) / BF16_MIN_TILE * BF16_MIN_TILE, pos = nfull * full;
    i -= nfull;
    for (int sz = full; sz >= BF16_MIN_TILE; sz /= 2)
        if (r16 & sz) {
            if (i-- == 0) {
                *start = pos;
                return sz;
            }
            pos += sz;
        }
    return 0;
}

/* index of a tile size in full, full/2, ..., 16 */
static int size_index(int full, int sz)
{
    int i = 0;
    while (full > sz) full /= 2, i++;
    return i;
}
#define N_SIZES 5 /* 256 .. 16 */

Bf16Scratch *bf16_scratch_create(size_t max_rows, int max_cols, int T, int C, int H)
{
    Bf16Scratch *s = calloc(1, sizeof *s);
    if (!s) fatal(EXIT_RUNTIME, "out of memory for bf16 scratch");
    s->rows = pad_rows(max_rows);
    s->cols = max_cols;
    s->T = T;
    s->C = C;
    s->hd = C / H;
    s->workers = pool_threads();
    size_t blk = (size_t)(T < ATTN_QBLOCK ? T : ATTN_QBLOCK) * T;
    s->a = xcalloc_aligned(sizeof(uint16_t) * (s->rows * max_cols), "bf16 operands");
    s->b = xcalloc_aligned(sizeof(uint16_t) * (s->rows * max_cols), "bf16 operands");
    s->qkv = xcalloc_aligned(sizeof(uint16_t) * max_rows * 3 * C, "bf16 attention operands");
    s->dout = xcalloc_aligned(sizeof(uint16_t) * max_rows * C, "bf16 attention operands");
    s->drow = xcalloc_aligned(sizeof(float) * max_rows * H, "bf16 attention operands");
    s->blk = xcalloc_aligned(sizeof(uint16_t) * blk * 2 * s->workers, "bf16 attention blocks");
    s->acc = xcalloc_aligned(sizeof(float) * (2 * (size_t)T + ATTN_QBLOCK) * s->hd * s->workers, "bf16 attention blocks");
    s->tile = xcalloc_aligned(sizeof(float) * BF16_TILE * max_cols * s->workers, "bf16 product tiles");
    bf16_reserve_threads(s->workers);
    return s;
}

void bf16_scratch_free(Bf16Scratch *s)
{
    if (!s) return;
    xfree_aligned(s->a);
    xfree_aligned(s->b);
    xfree_aligned(s->qkv);
    xfree_aligned(s->dout);
    xfree_aligned(s->drow);
    xfree_aligned(s->blk);
    xfree_aligned(s->acc);
    xfree_aligned(s->tile);
    free(s);
}

uint16_t *bf16_scratch_operand(Bf16Scratch *s) { return s->a; }

size_t bf16_scratch_bytes(size_t max_rows, int max_cols, int T, int C, int H, int workers)
{
    size_t blk = (size_t)(T < ATTN_QBLOCK ? T : ATTN_QBLOCK) * T;
    return 2 * (2 * (pad_rows(max_rows) * max_cols) + max_rows * 4 * (size_t)C + blk * 2 * workers) +
           4 * (size_t)BF16_TILE * max_cols * workers + 4 * (2 * (size_t)T + ATTN_QBLOCK) * (C / H) * workers +
           4 * max_rows * (size_t)H;
}

static uint16_t *attn_block16(const AttnArgs *a, int t, int which)
{
    size_t blk = (size_t)(a->s16->T < ATTN_QBLOCK ? a->s16->T : ATTN_QBLOCK) * a->s16->T;
    return a->s16->blk + ((size_t)t * 2 + which) * blk;
}

static float *attn_acc(const AttnArgs *a, int t)
{
    if (a->C / a->H != a->s16->hd) fatal(EXIT_RUNTIME, "internal: bf16 attention head size %d, scratch for %d", a->C / a->H, a->s16->hd);
    return a->s16->acc + (size_t)t * (2 * (size_t)a->s16->T + ATTN_QBLOCK) * a->s16->hd;
}

static AttnTable attn_tables[ATTN_TABLES];
static int attn_tables_next;

/* a table that covers rows of T tokens at head size hd (its T at least T) */
static const AttnTable *find_table(int T, int hd)
{
    for (int i = 0; i < ATTN_TABLES; i++)
        if (attn_tables[i].p && attn_tables[i].T >= T && attn_tables[i].hd == hd) return &attn_tables[i];
    return NULL;
}

static void attn_prims(AttnArgs *a)
{
    a->any[AP_QK] = bf16_prim_any(0, 1, 0.0f, "attention (other shapes)");
    a->any[AP_AB0] = bf16_prim_any(0, 0, 0.0f, "attention (other shapes)");
    a->any[AP_AB1] = bf16_prim_any(0, 0, 1.0f, "attention (other shapes)");
    a->any[AP_ATB1] = bf16_prim_any(1, 0, 1.0f, "attention (other shapes)");
    a->tab = a->s16 ? find_table(a->T, a->C / a->H) : NULL;
}

/* the fixed-shape primitive of product `kind` (see AP_QK) for m queries, n keys */
static const Bf16Prim *fixed_prim(int kind, int m, int n, int hd)
{
    const char *role = "attention";
    switch (kind) {
    case AP_QK: return bf16_prim(0, 1, BF16_B_PLAIN, m, n, hd, hd, hd, n, 0.0f, role);
    case AP_AB0: return bf16_prim(0, 0, BF16_B_PLAIN, m, hd, n, n, hd, hd, 0.0f, role);
    case AP_AB1: return bf16_prim(0, 0, BF16_B_PLAIN, m, hd, n, n, hd, hd, 1.0f, role);
    default: return bf16_prim(1, 0, BF16_B_PLAIN, n, hd, m, n, hd, hd, 1.0f, role);
    }
}

void attention_bf16_prepare(int T, int C, int H)
{
    int hd = C / H, g = ATTN_KGRAIN, nl = T > 0 ? (T + g - 1) / g : 0; /* key lengths up to T rounded up */
    if (T <= 0) /* no fixed shapes: every table dropped (its primitives stay cached in bf16.c) */
        for (int i = 0; i < ATTN_TABLES; i++) free(attn_tables[i].p), attn_tables[i].p = NULL;
    /* a table unless one covers T, or it would be too large (T past 2048: runtime shapes) */
    if (nl >= 1 && !find_table(T, hd) && ATTN_NM * nl * AP_KINDS <= ATTN_TABLE_MAX) {
        AttnTable *tb = &attn_tables[attn_tables_next];
        attn_tables_next = (attn_tables_next + 1) % ATTN_TABLES;
        free(tb->p);
        *tb = (AttnTable){ .T = nl * g, .hd = hd, .nl = nl };
        tb->p = calloc((size_t)ATTN_NM * nl * AP_KINDS, sizeof *tb->p);
        if (!tb->p) fatal(EXIT_RUNTIME, "out of memory for the bf16 attention primitives");
        for (int mi = 0; mi < ATTN_NM; mi++)
            for (int li = 0; li < nl; li++)
                for (int kind = 0; kind < AP_KINDS; kind++)
                    tb->p[((size_t)mi * nl + li) * AP_KINDS + kind] = fixed_prim(kind, (mi + 1) * g, (li + 1) * g, hd);
    }
    AttnArgs a = { .T = T, .C = C, .H = H };
    attn_prims(&a);
}

/* dst [heads, N, hd] = src [N, heads * hd] rounded: each head's rows together */
typedef struct {
    uint16_t *dst;
    const float *src;
    size_t N;
    int heads, hd;
    const float *out; /* with dot: dot[j * N + n] = (src rounded) . out, head j of row n */
    float *dot;
} HeadsArgs;

static void round_heads_task(void *p, int t, int nt)
{
    const HeadsArgs *r = p;
    size_t n0, n1, hd = (size_t)r->hd;
    pool_range(r->N, t, nt, &n0, &n1);
    for (size_t n = n0; n < n1; n++)
        for (int j = 0; j < r->heads; j++) {
            uint16_t *x = r->dst + ((size_t)j * r->N + n) * hd;
            bf16_round(x, r->src + (n * r->heads + j) * hd, hd);
            if (r->dot) r->dot[(size_t)j * r->N + n] = head_dot(x, r->out + (n * r->heads + j) * hd, (int)hd);
        }
}

static void round_heads(uint16_t *dst, const float *src, size_t N, int heads, int hd)
{
    HeadsArgs r = { dst, src, N, heads, hd, NULL, NULL };
    pool_run(round_heads_task, &r);
}

/* dO rounded head-major, as round_heads, and D = rowsum(P * dP) = dO . O
 * per head and row: the forward's O is P V with the same rounded P and V,
 * and dP = dO V^T with the same rounded dO, so the two sums differ by fp32
 * summation order only, and this one costs hd per row instead of the row's
 * keys. Done here because the pass streams dO anyway (O's rows read inside
 * the blocks would each be a cache miss). */
static void round_heads_dot(uint16_t *dst, float *dot, const float *src, const float *out, size_t N, int heads, int hd)
{
    HeadsArgs r = { dst, src, N, heads, hd, out, dot };
    pool_run(round_heads_task, &r);
}

void attention_probs_bf16(float *att, const uint16_t *att16, const int32_t *seg, const uint8_t *vis, int B, int T, int C,
                          int H, int S)
{
    AttnArgs a = { .B = B, .T = T, .C = C, .H = H, .S = S };
    a.tab = find_table(T, C / H);
    int ra[ATTN_MAX_RANGES], rb[ATTN_MAX_RANGES];
    size_t off[ATTN_MAX_RANGES];
    for (int b = 0; b < B; b++)
        for (int i0 = 0; i0 < T; i0 += ATTN_QBLOCK) {
            int i1 = i0 + ATTN_QBLOCK < T ? i0 + ATTN_QBLOCK : T, m = i1 - i0;
            int nr = block_ranges16(&a, i0, i1, seg ? seg + (size_t)b * T : NULL, vis ? vis + (size_t)b * S * S : NULL,
                                    ra, rb, off);
            for (int h = 0; h < H; h++) {
                size_t blk = (((size_t)b * H + h) * T + i0) * T;
                for (int r = 0; r < nr; r++)
                    for (int row = 0; row < m; row++)
                        for (int u = ra[r]; u < rb[r]; u++)
                            att[blk + (size_t)row * T + u] = bf16_to_float(att16[blk + off[r] + (size_t)row * (rb[r] - ra[r]) + (u - ra[r])]);
            }
        }
}

typedef struct {
    uint16_t *dst;
    const float *src;
    size_t n, n_pad; /* elements rounded, then zeros up to n_pad */
} RoundArgs;

static void round_task(void *p, int t, int nt)
{
    const RoundArgs *r = p;
    size_t lo, hi, units = (r->n_pad + 63) / 64; /* 64-element pieces: whole cache lines */
    pool_range(units, t, nt, &lo, &hi);
    lo *= 64, hi *= 64;
    if (hi > r->n_pad) hi = r->n_pad;
    size_t mid = hi < r->n ? hi : r->n;
    if (lo < mid) bf16_round(r->dst + lo, r->src + lo, mid - lo);
    if (mid < hi) memset(r->dst + (lo > mid ? lo : mid), 0, sizeof(uint16_t) * (hi - (lo > mid ? lo : mid)));
}

/* dst[rows_pad, cols] = src[rows, cols] rounded, rows past `rows` zero */
static void round_rows(uint16_t *dst, const float *src, size_t rows, size_t rows_pad, int cols)
{
    RoundArgs r = { dst, src, rows * cols, rows_pad * cols };
    pool_run(round_task, &r);
}

/* Products with the rows of C split in tiles over the pool:
 * C[M, N] = beta C + A[M, K] B, B a prepared matrix (forward: W^T, input gradient: W). */
typedef struct {
    void *C; /* float, or uint16_t with out16 */
    const uint16_t *A;
    const Bf16Matrix *w;
    int M, N, K, lda, out16;
    float beta;
    const Bf16Prim *prim[N_SIZES];
    Bf16Scratch *s;
} RowTiles;

/* Thread t's share [lo, hi) of n rows among the pool threads that have
 * bf16 scratch; 0 if t has none. */
static int worker_share(const Bf16Scratch *s, size_t n, int t, int nt, size_t *lo, size_t *hi)
{
    int nw = nt < s->workers ? nt : s->workers;
    if (t >= nw) return 0;
    pool_range(n, t, nw, lo, hi);
    return 1;
}

static void row_tiles_task(void *p, int t, int nt)
{
    const RowTiles *g = p;
    size_t lo, hi;
    if (!worker_share(g->s, (size_t)g->M, t, nt, &lo, &hi)) return;
    float *tile = g->s->tile + (size_t)t * BF16_TILE * g->s->cols;
    int start, sz;
    for (int i = 0; (sz = tile_at(g->M, BF16_TILE, i, &start)) > 0; i++) {
        if ((size_t)start < lo || (size_t)start >= hi) continue;
        const Bf16Prim *pr = g->prim[size_index(BF16_TILE, sz)];
        const uint16_t *A = g->A + (size_t)start * g->lda;
        size_t es = g->out16 ? sizeof(uint16_t) : sizeof(float);
        char *C = (char *)g->C + (size_t)start * g->N * es;
        int valid = g->M - start < sz ? g->M - start : sz;
        if (valid == sz) {
            bf16_run(pr, t, A, g->w, C);
            continue;
        }
        /* a tile past the last row: through the tile buffer (rows past M are junk) */
        size_t bytes = es * (size_t)valid * g->N;
        if (g->beta != 0.0f) memcpy(tile, C, bytes);
        bf16_run(pr, t, A, g->w, tile);
        memcpy(C, tile, bytes);
    }
}

/* A [M, K] with row stride lda; K and N from w (W^T when transposed, else
 * W); C float, or (out16, beta 0) uint16_t */
static void row_tiles(void *C, float beta, const uint16_t *A, int lda, const Bf16Matrix *w, int transposed, int M,
                      int out16, Bf16Scratch *s)
{
    int rows = bf16_matrix_rows(w), cols = bf16_matrix_cols(w);
    RowTiles g = { .C = C, .A = A, .w = w, .M = M, .N = transposed ? rows : cols, .K = transposed ? cols : rows,
                   .lda = lda, .out16 = out16, .beta = beta, .s = s };
    if (g.N > s->cols || lda > s->cols || pad_rows((size_t)M) > s->rows)
        fatal(EXIT_RUNTIME, "internal: bf16 product %dx%dx%d exceeds its scratch", M, g.N, g.K);
    for (int i = 0, sz = BF16_TILE; i < N_SIZES; i++, sz /= 2)
        g.prim[i] = out16 ? bf16_prim_out16(transposed ? BF16_B_WT : BF16_B_W, sz, g.N, g.K, lda, g.N, "layer products")
                          : bf16_prim(0, 0, transposed ? BF16_B_WT : BF16_B_W, sz, g.N, g.K, lda, 0, g.N, beta,
                                      "layer products");
    pool_run(row_tiles_task, &g);
}

/* dW[OUT, IN] += dY^T X: each worker one product over all tokens for its
 * share of dW's rows (oneDNN's runtime-shape kernel, which blocks the long
 * token dimension itself; brgemm would need a primitive per token count). */
typedef struct {
    float *dw;
    const uint16_t *dy, *x; /* [N, OUT], [N, IN] */
    int OUT, IN, N;
    const Bf16Prim *prim;
    Bf16Scratch *s;
} DwArgs;

static void dw_task(void *p, int t, int nt)
{
    const DwArgs *g = p;
    size_t lo, hi;
    if (!worker_share(g->s, (size_t)g->OUT, t, nt, &lo, &hi)) return;
    bf16_run_any(g->prim, t, (int)(hi - lo), g->IN, g->N, g->dy + lo, g->OUT, g->x, g->IN, g->dw + lo * g->IN, g->IN);
}

void matmul_bf16_prepare(int rows, int cols)
{
    for (int sz = BF16_TILE; sz >= BF16_MIN_TILE; sz /= 2) {
        bf16_prim(0, 0, BF16_B_WT, sz, rows, cols, cols, 0, rows, 0.0f, "layer products");
        bf16_prim(0, 0, BF16_B_W, sz, cols, rows, rows, 0, cols, 0.0f, "layer products");
    }
    bf16_prim_any(1, 0, 1.0f, "weight gradients");
}

void matmul_bf16_prepare_out16(int rows, int cols, int backward)
{
    for (int sz = BF16_TILE; sz >= BF16_MIN_TILE; sz /= 2)
        if (backward) bf16_prim_out16(BF16_B_W, sz, cols, rows, rows, cols, "layer products");
        else bf16_prim_out16(BF16_B_WT, sz, rows, cols, cols, rows, "layer products");
}

void matmul_forward_bf16(float *out, const float *inp, const Bf16Matrix *w, int N, Bf16Scratch *s, uint16_t *keep)
{
    int IN = bf16_matrix_cols(w);
    if (pad_rows((size_t)N) > s->rows || IN > s->cols) fatal(EXIT_RUNTIME, "internal: bf16 product exceeds its scratch");
    uint16_t *a16 = keep ? keep : s->a;
    round_rows(a16, inp, (size_t)N, pad_rows((size_t)N), IN);
    row_tiles(out, 0.0f, a16, IN, w, 1, N, 0, s);
}

void matmul_bf16_rounded(float *out, const uint16_t *inp16, const Bf16Matrix *w, int N, Bf16Scratch *s)
{
    row_tiles(out, 0.0f, inp16, bf16_matrix_cols(w), w, 1, N, 0, s);
}

void matmul_bf16_rounded_out16(uint16_t *out16, const uint16_t *inp16, const Bf16Matrix *w, int N, Bf16Scratch *s)
{
    row_tiles(out16, 0.0f, inp16, bf16_matrix_cols(w), w, 1, N, 1, s);
}

static void backward_bf16(void *dinp, int dinp16, float beta, float *dw, const float *dout, const uint16_t *dout16,
                          const float *inp, const uint16_t *inp16, const Bf16Matrix *w, int N, Bf16Scratch *s)
{
    int OUT = bf16_matrix_rows(w), IN = bf16_matrix_cols(w);
    size_t rows16 = pad_rows((size_t)N);
    if (rows16 > s->rows || OUT > s->cols || IN > s->cols) fatal(EXIT_RUNTIME, "internal: bf16 product exceeds its scratch");
    if (!dout16) round_rows(s->a, dout, (size_t)N, rows16, OUT);
    const uint16_t *dy = dout16 ? dout16 : s->a;
    if (dinp) row_tiles(dinp, beta, dy, OUT, w, 0, N, dinp16, s);
    if (dw) {
        if (!inp16) round_rows(s->b, inp, (size_t)N, (size_t)N, IN);
        DwArgs g = { .dw = dw, .dy = dy, .x = inp16 ? inp16 : s->b, .OUT = OUT, .IN = IN, .N = N, .prim = bf16_prim_any(1, 0, 1.0f, "weight gradients"),
                     .s = s };
        pool_run(dw_task, &g);
    }
}

void matmul_backward_bf16(float *dinp, float beta, float *dw, const float *dout, const uint16_t *dout16,
                          const float *inp, const uint16_t *inp16, const Bf16Matrix *w, int N, Bf16Scratch *s)
{
    backward_bf16(dinp, 0, beta, dw, dout, dout16, inp, inp16, w, N, s);
}

void matmul_backward_bf16_out16(uint16_t *dinp16, float *dw, const float *dout, const uint16_t *dout16, const float *inp,
                                const uint16_t *inp16, const Bf16Matrix *w, int N, Bf16Scratch *s)
{
    backward_bf16(dinp16, 1, 0.0f, dw, dout, dout16, inp, inp16, w, N, s);
}

typedef struct {
    Bf16Matrix *const *m;
    const float *const *w;
    int n;
} SetArgs;

/* Matrix j goes to the thread with the least work so far (by bytes; every
 * thread replays the same choices), not to j % nt: a layer's matrices
 * alternate large and small (wqkv, wo, w13, w2), so j % nt gave one of two
 * threads 2.3 times the other's share. */
static void set_task(void *p, int t, int nt)
{
    const SetArgs *a = p;
    size_t load[POOL_MAX_THREADS] = { 0 };
    for (int j = 0; j < a->n; j++) {
        int k = 0;
        for (int i = 1; i < nt; i++)
            if (load[i] < load[k]) k = i;
        load[k] += bf16_matrix_bytes(a->m[j]);
        if (k == t) bf16_matrix_set(a->m[j], a->w[j], t);
    }
}

void bf16_set_matrices(Bf16Matrix *const *m, const float *const *w, int n)
{
    SetArgs a = { m, w, n };
    bf16_reserve_threads(pool_threads());
    pool_run(set_task, &a);
}

double matmul_bf16_peak_gflops(int n, int reps)
{
    float *x = xmalloc_aligned(sizeof(float) * n * n, "bf16 peak"), *y = xmalloc_aligned(sizeof(float) * n * n, "bf16 peak");
    uint16_t *x16 = xmalloc_aligned(sizeof(uint16_t) * n * n, "bf16 peak");
    for (size_t i = 0; i < (size_t)n * n; i++) x[i] = (float)((i * 2654435761u) % 1000) * 1e-3f - 0.5f;
    bf16_round(x16, x, (size_t)n * n);
    Bf16Matrix *w = bf16_matrix_create(n, n);
    const float *src = x;
    Bf16Scratch *s = bf16_scratch_create((size_t)n, n, 1, 1, 1);
    matmul_bf16_prepare(n, n);
    bf16_set_matrices(&w, &src, 1);
    double t[64];
    if (reps > 64) reps = 64;
    for (int k = -1; k < reps; k++) {
        double t0 = now_seconds();
        matmul_bf16_rounded(y, x16, w, n, s);
        if (k >= 0) t[k] = now_seconds() - t0;
    }
    double med = median(t, reps);
    bf16_scratch_free(s);
    bf16_matrix_free(w);
    xfree_aligned(x), xfree_aligned(y), xfree_aligned(x16);
    return 2.0 * n * (double)n * n / med / 1e9;
}
