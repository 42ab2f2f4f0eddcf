/* Every op's backward against finite differences of its forward.
 * Each op's loss is sum(r * y) for a fixed random r, so the analytic
 * gradient is the op's backward applied to dout = r. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "src/ops.h"
#include "src/pool.h"
#include "src/rng.h"
#include "tests/check.h"
#include "tests/gradcheck.h"

#define TOL 1e-3

static Rng rng;

static float *randn(size_t n, float std)
{
    float *p = malloc(sizeof(float) * n);
    for (size_t i = 0; i < n; i++) p[i] = (float)(std * rng_normal(&rng));
    return p;
}

static float *zeros(size_t n) { return calloc(n, sizeof(float)); }

static double dot(const float *r, const float *y, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)r[i] * y[i];
    return s;
}

static void report(const char *name, double e) { check(e < TOL, name, "max rel err %.2e (tol %.0e)", e, TOL); }

/* ---- matmul ---- */
typedef struct { int N, IN, OUT; float *inp, *w, *y, *r; } MatmulCtx;
static double matmul_loss(void *p)
{
    MatmulCtx *c = p;
    matmul_forward(c->y, c->inp, c->w, c->N, c->IN, c->OUT);
    return dot(c->r, c->y, (size_t)c->N * c->OUT);
}
static void test_matmul(void)
{
    MatmulCtx c = { .N = 5, .IN = 7, .OUT = 6 };
    c.inp = randn(35, 1), c.w = randn(42, 1), c.y = zeros(30), c.r = randn(30, 1);
    float *dinp = zeros(35), *dw = zeros(42);
    matmul_backward(dinp, dw, c.r, c.inp, c.w, c.N, c.IN, c.OUT);
    report("matmul d_inp", gradcheck(matmul_loss, &c, c.inp, dinp, 35, 1e-2f, 1000));
    report("matmul d_w", gradcheck(matmul_loss, &c, c.w, dw, 42, 1e-2f, 1000));
    /* backward accumulates: a second call doubles the gradient */
    float before = dw[3];
    matmul_backward(NULL, dw, c.r, c.inp, c.w, c.N, c.IN, c.OUT);
    check(fabsf(dw[3] - 2 * before) <= 1e-5f * fabsf(before) + 1e-7f, "matmul backward accumulates",
          "%g vs 2 x %g", dw[3], before);
    free(c.inp), free(c.w), free(c.y), free(c.r), free(dinp), free(dw);
}

/* The products split by rows over a 2- and 3-thread pool (big enough to be
 * split) against the same products in double precision, element by element,
 * so a wrong row offset or leading dimension in a part cannot hide. */
static void test_matmul_on_pool(void)
{
    enum { N = 301, IN = 96, OUT = 160 };
    float *inp = randn((size_t)N * IN, 1), *w = randn((size_t)OUT * IN, 1), *dout = randn((size_t)N * OUT, 1);
    float *y = zeros((size_t)N * OUT), *dinp = zeros((size_t)N * IN), *dw = zeros((size_t)OUT * IN);
    for (int threads = 2; threads <= 3; threads++) {
        pool_set_threads(threads);
        ops_set_gemm_on_pool(1);
        for (size_t i = 0; i < (size_t)N * IN; i++) dinp[i] = 1.0f; /* beta = 0.5 keeps half of it */
        for (size_t i = 0; i < (size_t)OUT * IN; i++) dw[i] = 1.0f; /* dw accumulates */
        matmul_forward(y, inp, w, N, IN, OUT);
        matmul_backward_beta(dinp, 0.5f, dw, dout, inp, w, N, IN, OUT);
        double ey = 0, ei = 0, ew = 0;
        for (int n = 0; n < N; n++)
            for (int o = 0; o < OUT; o++) {
                double s = 0;
                for (int k = 0; k < IN; k++) s += (double)inp[n * IN + k] * w[o * IN + k];
                ey = fmax(ey, fabs(s - y[n * OUT + o]));
            }
        for (int n = 0; n < N; n++)
            for (int k = 0; k < IN; k++) {
                double s = 0.5;
                for (int o = 0; o < OUT; o++) s += (double)dout[n * OUT + o] * w[o * IN + k];
                ei = fmax(ei, fabs(s - dinp[n * IN + k]));
            }
        for (int o = 0; o < OUT; o++)
            for (int k = 0; k < IN; k++) {
                double s = 1.0;
                for (int n = 0; n < N; n++) s += (double)dout[n * OUT + o] * inp[n * IN + k];
                ew = fmax(ew, fabs(s - dw[o * IN + k]));
            }
        check(ey < 1e-4 && ei < 1e-4 && ew < 1e-3, "matmul split over the pool",
              "%d threads: max abs err y %.1e, dinp %.1e, dw %.1e vs double", threads, ey, ei, ew);
    }
    pool_set_threads(1);
    free(inp), free(w), free(dout), free(y), free(dinp), free(dw);
}

/* ---- embedding ---- */
typedef struct { int N, C; int32_t *tok; float *emb, *y, *r; } EmbCtx;
static double emb_loss(void *p)
{
    EmbCtx *c = p;
    embedding_forward(c->y, c->tok, c->emb, c->N, c->C);
    return dot(c->r, c->y, (size_t)c->N * c->C);
}
static void test_embedding(void)
{
    int32_t tok[6] = { 3, 1, 3, 9, 0, 3 }; /* repeats must accumulate */
    EmbCtx c = { .N = 6, .C = 4, .tok = tok };
    c.emb = randn(40, 1), c.y = zeros(24), c.r = randn(24, 1);
    float *demb = zeros(40);
    embedding_backward(demb, c.r, tok, c.N, c.C);
    report("embedding d_emb", gradcheck(emb_loss, &c, c.emb, demb, 40, 1e-2f, 1000));
    free(c.emb), free(c.y), free(c.r), free(demb);
}

/* ---- rmsnorm ---- */
typedef struct { int N, C; float *x, *g, *y, *rstd, *r; } NormCtx;
static double norm_loss(void *p)
{
    NormCtx *c = p;
    rmsnorm_forward(c->y, c->rstd, c->x, c->g, c->N, c->C, 1e-5f);
    return dot(c->r, c->y, (size_t)c->N * c->C);
}
static void test_rmsnorm(void)
{
    NormCtx c = { .N = 4, .C = 8 };
    c.x = randn(32, 1), c.g = randn(8, 1), c.y = zeros(32), c.rstd = zeros(4), c.r = randn(32, 1);
    float *dx = zeros(32), *dg = zeros(8);
    norm_loss(&c);
    rmsnorm_backward(dx, dg, c.r, c.x, c.g, c.rstd, c.N, c.C);
    report("rmsnorm d_x", gradcheck(norm_loss, &c, c.x, dx, 32, 1e-2f, 1000));
    report("rmsnorm d_g", gradcheck(norm_loss, &c, c.g, dg, 8, 1e-2f, 1000));
    free(c.x), free(c.g), free(c.y), free(c.rstd), free(c.r), free(dx), free(dg);
}

/* ---- rope ---- */
typedef struct { int N, C, H; int32_t *pos; float *cs, *sn, *x, *y, *r; } RopeCtx;
static double rope_loss(void *p)
{
    RopeCtx *c = p;
    memcpy(c->y, c->x, sizeof(float) * c->N * 3 * c->C);
    rope_forward(c->y, c->pos, c->cs, c->sn, c->N, c->C, c->H);
    return dot(c->r, c->y, (size_t)c->N * 3 * c->C);
}
static void test_rope(void)
{
    int32_t pos[5] = { 0, 3, 3, 7, 15 }; /* repeated positions, as tree packing makes */
    RopeCtx c = { .N = 5, .C = 8, .H = 2, .pos = pos };
    c.cs = zeros(16 * 2), c.sn = zeros(16 * 2);
    rope_tables(c.cs, c.sn, 16, 4, 10000.0);
    c.x = randn(120, 1), c.y = zeros(120), c.r = randn(120, 1);
    float *dx = malloc(sizeof(float) * 120);
    memcpy(dx, c.r, sizeof(float) * 120);
    rope_backward(dx, pos, c.cs, c.sn, c.N, c.C, c.H);
    report("rope d_qkv", gradcheck(rope_loss, &c, c.x, dx, 120, 1e-2f, 1000));
    /* position 0 is the identity; a rotation keeps each pair's length */
    rope_loss(&c);
    double e0 = 0, len_err = 0;
    for (int i = 0; i < 16; i++) e0 = fmax(e0, fabs(c.y[i] - c.x[i]));
    for (int n = 0; n < 5; n++)
        for (int i = 0; i < 8; i += 2) {
            const float *a = c.x + n * 24 + i, *b = c.y + n * 24 + i;
            len_err = fmax(len_err, fabs(hypot(a[0], a[1]) - hypot(b[0], b[1])));
        }
    check(e0 == 0 && len_err < 1e-5, "rope is a rotation", "pos-0 change %g, length change %g", e0, len_err);
    free(c.cs), free(c.sn), free(c.x), free(c.y), free(c.r), free(dx);
}

/* ---- attention ---- */
typedef struct { int B, T, C, H, S; int32_t *seg; uint8_t *vis; float *qkv, *y, *att, *r; } AttCtx;
static double att_loss(void *p)
{
    AttCtx *c = p;
    attention_forward(c->y, c->att, c->qkv, c->seg, c->vis, c->B, c->T, c->C, c->H, c->S);
    return dot(c->r, c->y, (size_t)c->B * c->T * c->C);
}
/* tree > 0: a tree-packed layout (docs/design.md) with a context of
 * `tree` tokens and (S-1)/3 queries of prompt/chosen/rejected segments
 * sharing the rest, so long masked key ranges get skipped */
static void att_masks(AttCtx *cp, int tree)
{
    AttCtx c = *cp;
    int B = c.B, T = c.T, S = c.S;
    size_t N = (size_t)B * T;
    cp->seg = c.seg = malloc(sizeof(int32_t) * N);
    cp->vis = c.vis = calloc((size_t)B * S * S, 1);
    for (int b = 0; tree && b < B; b++) {
        int Q = (S - 1) / 3, per = (T - tree) / Q;
        for (int t = 0; t < T; t++) {
            int j = t < tree ? -1 : (t - tree) / per, r = t < tree ? 0 : (t - tree) % per;
            if (j >= Q) j = Q - 1, r = per - 1;
            c.seg[b * T + t] = j < 0 ? 0 : 1 + 3 * j + (r < per / 4 ? 0 : r < per * 5 / 8 ? 1 : 2);
        }
        uint8_t *v = c.vis + (size_t)b * S * S;
        v[0] = 1;
        for (int j = 0; j < Q; j++) {
            int sp = 1 + 3 * j;
            v[sp * S] = v[sp * S + sp] = 1;
            for (int k = 1; k <= 2; k++) v[(sp + k) * S] = v[(sp + k) * S + sp] = v[(sp + k) * S + sp + k] = 1;
        }
    }
    for (int b = 0; !tree && b < B; b++) {
        /* nondecreasing random segments and a random visibility table (diagonal on) */
        int s = 0;
        for (int t = 0; t < T; t++) {
            if (s < S - 1 && rng_below(&rng, 4) == 0) s++;
            c.seg[b * T + t] = s;
        }
        for (int i = 0; i < S; i++)
            for (int j = 0; j < S; j++) c.vis[(b * S + i) * S + j] = i == j || rng_below(&rng, 2);
    }
}

static void test_attention_shape(int B, int T, int C, int H, int S, size_t max_elems, const char *name, int tree)
{
    AttCtx c = { .B = B, .T = T, .C = C, .H = H, .S = S };
    size_t N = (size_t)B * T;
    att_masks(&c, tree);
    c.qkv = randn(N * 3 * C, 1), c.y = zeros(N * C), c.att = zeros((size_t)B * H * T * T), c.r = randn(N * C, 1);
    size_t nscratch = attention_scratch_floats(T);
    float *dqkv = zeros(N * 3 * C), *scratch = zeros(nscratch);
    att_loss(&c);
    attention_backward(dqkv, scratch, nscratch, c.r, c.att, c.qkv, c.seg, c.vis, B, T, C, H, S);
    report(name, gradcheck(att_loss, &c, c.qkv, dqkv, N * 3 * C, 1e-2f, max_elems));
    /* probabilities: rows sum to 1 and hidden keys get exactly 0 */
    double sum_err = 0;
    int leaks = 0;
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int t = 0; t < T; t++) {
                const float *row = c.att + (((size_t)b * H + h) * T + t) * T;
                double s = 0;
                for (int u = 0; u <= t; u++) {
                    s += row[u];
                    int visible = u == t || c.vis[(b * S + c.seg[b * T + t]) * S + c.seg[b * T + u]];
                    if (!visible && row[u] != 0.0f) leaks++;
                }
                sum_err = fmax(sum_err, fabs(s - 1));
            }
    char label[96];
    snprintf(label, sizeof label, "%s: masked softmax", name);
    check(sum_err < 1e-5 && leaks == 0, label, "row-sum error %.1e, %d hidden keys with probability", sum_err,
          leaks);
    free(c.seg), free(c.vis), free(c.qkv), free(c.y), free(c.att), free(c.r), free(dqkv), free(scratch);
}

/* ---- attention without stored probabilities (attention_*_flash) ---- */
static double flash_loss(void *p)
{
    AttCtx *c = p;
    size_t ns = attention_flash_scratch_floats();
    float *scratch = malloc(sizeof(float) * ns), *lse = malloc(sizeof(float) * c->B * c->H * c->T);
    attention_forward_flash(c->y, lse, scratch, ns, c->qkv, c->seg, c->vis, c->B, c->T, c->C, c->H, c->S);
    free(scratch), free(lse);
    return dot(c->r, c->y, (size_t)c->B * c->T * c->C);
}

/* The definition in double, one (row, head, query) at a time: out = P V with
 * P = softmax over visible keys of q.k / sqrt(hd); dqkv from dout = r. */
static void naive_attention(double *out, double *dqkv, const AttCtx *c)
{
    int T = c->T, C = c->C, H = c->H, S = c->S, hd = C / H, ld = 3 * C;
    double *p = malloc(sizeof(double) * T), *dp = malloc(sizeof(double) * T);
    for (int b = 0; b < c->B; b++)
        for (int h = 0; h < H; h++)
            for (int t = 0; t < T; t++) {
                const float *q = c->qkv + ((size_t)b * T + t) * ld + h * hd;
                double mx = -INFINITY, sum = 0;
                for (int u = 0; u <= t; u++) {
                    int see = u == t || c->vis[((size_t)b * S + c->seg[b * T + t]) * S + c->seg[b * T + u]];
                    double d = 0;
                    const float *k = c->qkv + ((size_t)b * T + u) * ld + C + h * hd;
                    for (int i = 0; i < hd; i++) d += (double)q[i] * k[i];
                    p[u] = see ? d / sqrt((double)hd) : -INFINITY;
                    mx = fmax(mx, p[u]);
                }
                for (int u = 0; u <= t; u++) sum += (p[u] = exp(p[u] - mx));
                const float *r = c->r + ((size_t)b * T + t) * C + h * hd;
                double rs = 0;
                for (int u = 0; u <= t; u++) {
                    p[u] /= sum;
                    const float *v = c->qkv + ((size_t)b * T + u) * ld + 2 * C + h * hd;
                    dp[u] = 0;
                    for (int i = 0; i < hd; i++) {
                        out[((size_t)b * T + t) * C + h * hd + i] += p[u] * v[i];
                        dp[u] += (double)r[i] * v[i];
                        dqkv[((size_t)b * T + u) * ld + 2 * C + h * hd + i] += p[u] * r[i]; /* dV */
                    }
                    rs += p[u] * dp[u];
                }
                for (int u = 0; u <= t; u++) {
                    double ds = p[u] * (dp[u] - rs) / sqrt((double)hd);
                    const float *k = c->qkv + ((size_t)b * T + u) * ld + C + h * hd;
                    for (int i = 0; i < hd; i++) {
                        dqkv[((size_t)b * T + t) * ld + h * hd + i] += ds * k[i];     /* dQ */
                        dqkv[((size_t)b * T + u) * ld + C + h * hd + i] += ds * q[i]; /* dK */
                    }
                }
            }
    free(p), free(dp);
}

static double max_abs(const float *a, const float *b, size_t n)
{
    double e = 0;
    for (size_t i = 0; i < n; i++) e = fmax(e, fabs((double)a[i] - b[i]));
    return e;
}

static double max_abs_d(const float *a, const double *b, size_t n, double *rel)
{
    double e = 0, big = 0;
    for (size_t i = 0; i < n; i++) e = fmax(e, fabs(a[i] - b[i])), big = fmax(big, fabs(b[i]));
    *rel = big > 0 ? e / big : e;
    return e;
}

/* attention_*_flash against attention_forward/backward (which store P) and
 * against the definition in double; fd: finite differences too. */
static void test_flash_shape(int B, int T, int C, int H, int S, int tree, int fd, int threads)
{
    pool_set_threads(threads);
    AttCtx c = { .B = B, .T = T, .C = C, .H = H, .S = S };
    size_t N = (size_t)B * T;
    att_masks(&c, tree);
    c.qkv = randn(N * 3 * C, 1), c.r = randn(N * C, 1);
    float *att = zeros((size_t)B * H * T * T), *y_full = zeros(N * C), *y_flash = zeros(N * C);
    float *d_full = zeros(N * 3 * C), *d_flash = zeros(N * 3 * C);
    size_t ns = attention_scratch_floats(T), nf = attention_flash_scratch_floats();
    float *scratch = zeros(ns), *fscratch = zeros(nf), *lse = zeros((size_t)B * H * T);
    attention_forward(y_full, att, c.qkv, c.seg, c.vis, B, T, C, H, S);
    attention_backward(d_full, scratch, ns, c.r, att, c.qkv, c.seg, c.vis, B, T, C, H, S);
    attention_forward_flash(y_flash, lse, fscratch, nf, c.qkv, c.seg, c.vis, B, T, C, H, S);
    attention_backward_flash(d_flash, fscratch, nf, c.r, y_flash, lse, c.qkv, c.seg, c.vis, B, T, C, H, S);
    double *y_ref = calloc(N * C, sizeof(double)), *d_ref = calloc(N * 3 * C, sizeof(double));
    naive_attention(y_ref, d_ref, &c);
    double ry, rd, ey = max_abs_d(y_flash, y_ref, N * C, &ry), ed = max_abs_d(d_flash, d_ref, N * 3 * C, &rd);
    double fy = max_abs(y_flash, y_full, N * C), fdq = max_abs(d_flash, d_full, N * 3 * C), ymax = 0, dmax = 0;
    for (size_t i = 0; i < N * C; i++) ymax = fmax(ymax, fabs(y_full[i]));
    for (size_t i = 0; i < N * 3 * C; i++) dmax = fmax(dmax, fabs(d_full[i]));
    char label[128];
    snprintf(label, sizeof label, "flash attention B=%d T=%d C=%d H=%d S=%d%s, %d threads", B, T, C, H, S,
             tree ? " tree-packed" : "", threads);
    check(ey < 1e-5 && ed < 1e-4 && ry < 1e-5 && rd < 1e-5, label,
          "vs double definition: out max abs %.1e (rel to max %.1e), dqkv max abs %.1e (rel %.1e)", ey, ry, ed, rd);
    snprintf(label, sizeof label, "flash attention B=%d T=%d%s agrees with stored-P attention, %d threads", B, T,
             tree ? " tree-packed" : "", threads);
    check(fy <= 2e-6 * ymax && fdq <= 2e-6 * dmax, label,
          "out max abs diff %.1e (rel to max %.1e), dqkv %.1e (rel %.1e); tolerance 2e-6 of the max", fy, fy / ymax,
          fdq, fdq / dmax);
    /* the backward accumulates like attention_backward */
    float *twice = malloc(sizeof(float) * N * 3 * C);
    memcpy(twice, d_flash, sizeof(float) * N * 3 * C);
    attention_backward_flash(twice, fscratch, nf, c.r, y_flash, lse, c.qkv, c.seg, c.vis, B, T, C, H, S);
    double acc = 0;
    for (size_t i = 0; i < N * 3 * C; i++) acc = fmax(acc, fabs(twice[i] - 2 * d_flash[i]));
    snprintf(label, sizeof label, "flash backward accumulates (T=%d)", T);
    check(acc <= 1e-5, label, "max |second - 2 x first| %.1e", acc);
    if (fd) {
        c.y = y_flash;
        snprintf(label, sizeof label, "flash attention d_qkv vs finite differences (T=%d)", T);
        report(label, gradcheck(flash_loss, &c, c.qkv, d_flash, N * 3 * C, 1e-2f, 100000));
    }
    free(c.seg), free(c.vis), free(c.qkv), free(c.r), free(att), free(y_full), free(y_flash), free(d_full),
        free(d_flash), free(scratch), free(fscratch), free(y_ref), free(d_ref), free(twice), free(lse);
    pool_set_threads(1);
}

/* ---- swiglu ---- */
typedef struct { int N, F; float *h, *y, *r; } SwiCtx;
static double swi_loss(void *p)
{
    SwiCtx *c = p;
    swiglu_forward(c->y, c->h, c->N, c->F);
    return dot(c->r, c->y, (size_t)c->N * c->F);
}
static void test_swiglu(void)
{
    SwiCtx c = { .N = 3, .F = 5 };
    c.h = randn(30, 2), c.y = zeros(15), c.r = randn(15, 1);
    float *dh = zeros(30);
    swiglu_backward(dh, c.r, c.h, c.N, c.F);
    report("swiglu d_h13", gradcheck(swi_loss, &c, c.h, dh, 30, 1e-2f, 1000));
    free(c.h), free(c.y), free(c.r), free(dh);
}

/* ---- target log-probs ---- */
typedef struct { int N, V, K; Target *tg; float *logits, *lse, *logp, *r; } LogpCtx;
static double logp_loss(void *p)
{
    LogpCtx *c = p;
    target_logp_forward(c->logp, c->lse, c->logits, c->tg, c->K, c->N, c->V);
    return dot(c->r, c->logp, c->K);
}
static void test_target_logp(void)
{
    Target tg[5] = { { 0, 2, 1 }, { 2, 8, 1 }, { 2, 1, 1 }, { 3, 0, 1 }, { 2, 8, 1 } }; /* shared rows */
    LogpCtx c = { .N = 4, .V = 9, .K = 5, .tg = tg };
    c.logits = randn(36, 2), c.lse = zeros(4), c.logp = zeros(5), c.r = randn(5, 1);
    float *dl = zeros(36);
    logp_loss(&c);
    target_logp_backward(dl, c.r, c.logits, c.lse, tg, c.K, c.V);
    report("target_logp d_logits", gradcheck(logp_loss, &c, c.logits, dl, 36, 1e-2f, 1000));
    /* against a direct double-precision log-softmax (gradcheck left c.logp at a perturbed point) */
    logp_loss(&c);
    double worst = 0;
    for (int k = 0; k < 5; k++) {
        const float *row = c.logits + tg[k].index * 9;
        double s = 0;
        for (int v = 0; v < 9; v++) s += exp((double)row[v]);
        worst = fmax(worst, fabs(c.logp[k] - (row[tg[k].token] - log(s))));
    }
    check(worst < 1e-5, "target_logp value", "max abs err %.1e vs double log-softmax", worst);
    free(c.logits), free(c.lse), free(c.logp), free(c.r), free(dl);
}

int main(void)
{
    rng = rng_seed(2024, 1);
    test_matmul();
    test_matmul_on_pool();
    test_embedding();
    test_rmsnorm();
    test_rope();
    test_swiglu();
    test_target_logp();
    test_attention_shape(2, 7, 8, 2, 3, 100000, "attention d_qkv (T=7)", 0);
    /* T past the 128-row query block exercises the blocked causal path */
    test_attention_shape(1, 150, 8, 2, 4, 300, "attention d_qkv (T=150, two query blocks)", 0);
    /* a tree-packed row: query blocks skip key ranges no query of theirs sees */
    test_attention_shape(1, 520, 8, 2, 10, 300, "attention d_qkv (tree-packed T=520, skipped key ranges)", 160);
    test_flash_shape(2, 7, 8, 2, 3, 0, 1, 1);
    test_flash_shape(3, 150, 16, 4, 4, 0, 0, 2);
    test_flash_shape(1, 300, 8, 1, 5, 0, 0, 3);
    test_flash_shape(2, 520, 16, 2, 10, 160, 0, 2);
    test_flash_shape(1, 1000, 32, 4, 13, 300, 0, 2);
    return check_status();
}
