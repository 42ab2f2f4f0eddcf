/* bf16: see bf16.h. oneDNN's C API (Debian's libdnnl 2.6, OpenMP runtime). */
#include "src/bf16.h"

#include <oneapi/dnnl/dnnl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "src/ops.h"
#include "src/peak.h"
#include "src/pool.h"
#include "src/util.h"
#include "src/vecmath.h"

/* libgomp's, which oneDNN runs on (declared here: clang's fuzz builds have no omp.h) */
void omp_set_num_threads(int n);

#define MAX_PRIMS 8192 /* the layer products, attention tables of up to 1024 (shared shapes) and the rest */
#define MD_TILE_M 256 /* the row count whose primitive fixes a matrix's blocked layout */

/* ---- rounding ------------------------------------------------------------ */

/* the rounding itself is vecmath.h's v8_to_bf16 */
uint16_t bf16_from_float(float x) { return v8_to_bf16(v8_set1(x))[0]; }

float bf16_to_float(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

void bf16_round(uint16_t *dst, const float *src, size_t n)
{
    size_t i = 0;
#if VEC16
    for (; i + 16 <= n; i += 16) v16_store_bf16(dst + i, v16_load(src + i));
#endif
    for (; i + 8 <= n; i += 8) v8_store_bf16(dst + i, v8_load(src + i));
    if (i < n) v8_store_bf16_part(dst + i, v8_load_part(src + i, (int)(n - i), 0.0f), (int)(n - i));
}

/* ---- the CPU and the library --------------------------------------------- */

int bf16_supported(char *unit, size_t len)
{
    const char *hide = getenv("FSPO_CPU_NO_BF16");
    if (hide && *hide && strcmp(hide, "0") != 0) {
        snprintf(unit, len, "hidden by FSPO_CPU_NO_BF16=%s", hide);
        return 0;
    }
    /* oneDNN's view: the CPU's flags and what the OS enabled (AMX needs the
     * kernel's permission), capped by DNNL_MAX_CPU_ISA if set */
    dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
    if ((isa & dnnl_cpu_isa_avx512_core_amx) == dnnl_cpu_isa_avx512_core_amx) {
        snprintf(unit, len, "AMX-BF16");
        return 1;
    }
    if ((isa & dnnl_cpu_isa_avx512_core_bf16) == dnnl_cpu_isa_avx512_core_bf16) {
        snprintf(unit, len, "AVX512-BF16");
        return 1;
    }
    snprintf(unit, len, "no AMX-BF16 or AVX512-BF16 on this CPU: bf16 would be emulated");
    return 0;
}

int bf16_auto(char *why, size_t len)
{
    char unit[96];
    if (!bf16_supported(unit, len < sizeof unit ? len : sizeof unit)) {
        snprintf(why, len, "%s", unit);
        return 0;
    }
    if (!strcmp(unit, "AMX-BF16")) {
        snprintf(why, len, "%s", unit);
        return 1;
    }
    /* AVX512-BF16 without AMX: whether its products beat sgemm depends on
     * the core (on the AMX machine with oneDNN capped there they ran at
     * 0.6x sgemm, docs/benchmarks.md "bf16 without AMX"), so measure once,
     * one thread each, 1024^3: bf16 only if it is at least 1.3x faster here */
    static int measured = -1;
    static double gf_bf16, gf_fp32;
    if (measured < 0) {
        int blas = openblas_get_num_threads(), pool = pool_threads();
        openblas_set_num_threads(1);
        pool_set_threads(1);
        gf_bf16 = matmul_bf16_peak_gflops(1024, 3);
        gf_fp32 = peak_sgemm_gflops(1024, 3);
        openblas_set_num_threads(blas);
        pool_set_threads(pool);
        measured = gf_bf16 >= 1.3 * gf_fp32;
    }
    snprintf(why, len, "%s without AMX: bf16 products %.0f vs sgemm %.0f GFLOP/s on one core here, so %s", unit, gf_bf16,
             gf_fp32, measured ? "bf16" : "fp32 (model.precision: bf16 uses them anyway)");
    return measured;
}

int bf16_resolve(PrecisionChoice precision, char *err, size_t errlen)
{
    char unit[96], why[200];
    int have = bf16_supported(unit, sizeof unit);
    switch (precision) {
    case PRECISION_CHOICE_FP32: return 0;
    case PRECISION_CHOICE_AUTO: return bf16_auto(why, sizeof why);
    case PRECISION_CHOICE_BF16:
        if (have) return 1;
        return set_err(err, errlen, "model.precision bf16: %s; use fp32 or auto", unit);
    }
    return set_err(err, errlen, "model.precision %d: not a PrecisionChoice", (int)precision);
}

const char *bf16_library_version(void)
{
    static char v[32];
    const dnnl_version_t *d = dnnl_version();
    snprintf(v, sizeof v, "%d.%d.%d", d->major, d->minor, d->patch);
    return v;
}

static void ck(dnnl_status_t s, const char *what)
{
    if (s != dnnl_success) fatal(EXIT_RUNTIME, "oneDNN: %s failed (status %d)", what, (int)s);
}
#define CK(call) ck((call), #call)

static dnnl_engine_t engine;
static dnnl_stream_t streams[POOL_MAX_THREADS];
static int reserved;                      /* thread slots with a stream and scratchpad */
static void *scratch[POOL_MAX_THREADS];   /* per-thread scratchpad of every primitive */
static size_t scratch_bytes;
static long creations;
static _Thread_local int omp_single;

/* Every call from this thread uses one OpenMP thread: parallelism is the
 * pool's. Creation too: oneDNN fixes a primitive's thread count when it
 * creates it, from the creating thread's OpenMP setting. */
static inline void single_thread(void)
{
    if (!omp_single) {
        omp_set_num_threads(1);
        omp_single = 1;
    }
}

static void init(void)
{
    single_thread();
    if (engine) return;
    CK(dnnl_engine_create(&engine, dnnl_cpu, 0));
}

/* ---- primitives ------------------------------------------------------------ */

struct Bf16Prim {
    int ta, tb, bkind, M, N, K, lda, ldb, ldc, any, c16; /* c16: C in bf16 (rounded from the fp32 sums) */
    float beta;
    const char *role; /* what it computes, for bf16_kernel_summary (its first creator's words) */
    dnnl_primitive_t prim;
    dnnl_memory_desc_t amd, bmd, cmd, smd;
    char kernel[64];
    dnnl_memory_t mem[POOL_MAX_THREADS][4]; /* fixed shapes: A, B (plain), C, scratchpad per thread */
};

static Bf16Prim *prims[MAX_PRIMS];
static int n_prims;

/* a blocked layout per (K, N): the one oneDNN picks for B of a product */
static struct { int K, N; dnnl_memory_desc_t md; } layouts[MAX_PRIMS];
static int n_layouts;

static void md_2d(dnnl_memory_desc_t *md, dnnl_dim_t rows, dnnl_dim_t cols, dnnl_dim_t s0, dnnl_dim_t s1,
                  dnnl_data_type_t dt)
{
    dnnl_dims_t dims = { rows, cols }, strides = { s0, s1 };
    CK(dnnl_memory_desc_init_by_strides(md, 2, dims, dt, strides));
}

/* A [M x K] (or stored [K x M] when ta), B [K x N] (or stored [N x K] when tb), C [M x N] */
static void operand_mds(dnnl_memory_desc_t *a, dnnl_memory_desc_t *b, dnnl_memory_desc_t *c, int ta, int tb, dnnl_dim_t M,
                        dnnl_dim_t N, dnnl_dim_t K, dnnl_dim_t lda, dnnl_dim_t ldb, dnnl_dim_t ldc)
{
    md_2d(a, M, K, ta ? 1 : lda, ta ? lda : 1, dnnl_bf16);
    if (b) md_2d(b, K, N, tb ? 1 : ldb, tb ? ldb : 1, dnnl_bf16);
    md_2d(c, M, N, ldc, 1, dnnl_f32);
}

static dnnl_primitive_desc_t matmul_pd(const dnnl_memory_desc_t *a, const dnnl_memory_desc_t *b, const dnnl_memory_desc_t *c,
                                       float beta)
{
    init();
    dnnl_matmul_desc_t d;
    CK(dnnl_matmul_desc_init(&d, a, b, NULL, c));
    dnnl_primitive_attr_t attr;
    CK(dnnl_primitive_attr_create(&attr));
    CK(dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user));
    if (beta != 0.0f) {
        dnnl_post_ops_t po;
        CK(dnnl_post_ops_create(&po));
        CK(dnnl_post_ops_append_sum(po, beta));
        CK(dnnl_primitive_attr_set_post_ops(attr, po));
        dnnl_post_ops_destroy(po);
    }
    dnnl_primitive_desc_t pd;
    CK(dnnl_primitive_desc_create(&pd, &d, attr, engine, NULL));
    dnnl_primitive_attr_destroy(attr);
    return pd;
}

/* The blocked layout of B [K x N] for the layer products. */
static const dnnl_memory_desc_t *blocked_layout(int K, int N)
{
    for (int i = 0; i < n_layouts; i++)
        if (layouts[i].K == K && layouts[i].N == N) return &layouts[i].md;
    if (n_layouts == MAX_PRIMS) fatal(EXIT_RUNTIME, "internal: too many bf16 matrix shapes");
    dnnl_memory_desc_t a, b, c;
    operand_mds(&a, NULL, &c, 0, 0, MD_TILE_M, N, K, K, 0, N);
    dnnl_dims_t dims = { K, N };
    CK(dnnl_memory_desc_init_by_tag(&b, 2, dims, dnnl_bf16, dnnl_format_tag_any));
    dnnl_primitive_desc_t pd = matmul_pd(&a, &b, &c, 0.0f);
    layouts[n_layouts].K = K;
    layouts[n_layouts].N = N;
    layouts[n_layouts].md = *dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    dnnl_primitive_desc_destroy(pd);
    return &layouts[n_layouts++].md;
}

static void grow_scratch(size_t bytes)
{
    if (bytes <= scratch_bytes) return;
    scratch_bytes = (bytes + 4095) & ~(size_t)4095;
    for (int t = 0; t < reserved; t++) {
        xfree_aligned(scratch[t]);
        scratch[t] = xmalloc_aligned(scratch_bytes, "oneDNN scratchpads");
    }
}

static void prim_mems(Bf16Prim *p, int t)
{
    if (p->any) return;
    const dnnl_memory_desc_t *mds[4] = { &p->amd, &p->bmd, &p->cmd, &p->smd };
    for (int i = 0; i < 4; i++)
        if (!(i == 1 && p->bkind != BF16_B_PLAIN)) CK(dnnl_memory_create(&p->mem[t][i], mds[i], engine, DNNL_MEMORY_NONE));
}

static Bf16Prim *create(int ta, int tb, int bkind, int M, int N, int K, int lda, int ldb, int ldc, float beta, int any,
                        int c16, const char *role)
{
    if (n_prims == MAX_PRIMS) fatal(EXIT_RUNTIME, "internal: more than %d bf16 primitives", MAX_PRIMS);
    Bf16Prim *p = calloc(1, sizeof *p);
    if (!p) fatal(EXIT_RUNTIME, "out of memory for a bf16 primitive");
    *p = (Bf16Prim){ .ta = ta, .tb = tb, .bkind = bkind, .M = M, .N = N, .K = K, .lda = lda, .ldb = ldb, .ldc = ldc,
                     .any = any, .c16 = c16, .beta = beta, .role = role };
    init();
    if (any) {
        dnnl_dim_t R = DNNL_RUNTIME_DIM_VAL;
        operand_mds(&p->amd, &p->bmd, &p->cmd, ta, tb, R, R, R, R, R, R);
    } else {
        operand_mds(&p->amd, bkind == BF16_B_PLAIN ? &p->bmd : NULL, &p->cmd, ta, tb, M, N, K, lda, ldb, ldc);
        if (bkind != BF16_B_PLAIN) p->bmd = *blocked_layout(K, N);
        if (c16) md_2d(&p->cmd, M, N, ldc, 1, dnnl_bf16);
    }
    dnnl_primitive_desc_t pd = matmul_pd(&p->amd, &p->bmd, &p->cmd, beta);
    const char *impl = NULL;
    CK(dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl));
    snprintf(p->kernel, sizeof p->kernel, "%s", impl ? impl : "?");
    p->smd = *dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    grow_scratch(dnnl_memory_desc_get_size(&p->smd));
    CK(dnnl_primitive_create(&p->prim, pd));
    dnnl_primitive_desc_destroy(pd);
    creations++;
    for (int t = 0; t < reserved; t++) prim_mems(p, t);
    prims[n_prims++] = p;
    return p;
}

/* The fixed-shape primitive of these operands (c16: C in bf16), created on first use */
static const Bf16Prim *fixed_prim(int ta, int tb, int bkind, int M, int N, int K, int lda, int ldb, int ldc, float beta,
                                  int c16, const char *role)
{
    if (bkind != BF16_B_PLAIN) ldb = 0, tb = 0;
    for (int i = 0; i < n_prims; i++) {
        const Bf16Prim *p = prims[i];
        if (!p->any && p->c16 == c16 && p->ta == ta && p->tb == tb && p->bkind == bkind && p->M == M && p->N == N &&
            p->K == K && p->lda == lda && p->ldb == ldb && p->ldc == ldc && p->beta == beta)
            return p;
    }
    return create(ta, tb, bkind, M, N, K, lda, ldb, ldc, beta, 0, c16, role);
}

const Bf16Prim *bf16_prim(int ta, int tb, int bkind, int M, int N, int K, int lda, int ldb, int ldc, float beta,
                          const char *role)
{
    return fixed_prim(ta, tb, bkind, M, N, K, lda, ldb, ldc, beta, 0, role);
}

const Bf16Prim *bf16_prim_out16(int bkind, int M, int N, int K, int lda, int ldc, const char *role)
{
    return fixed_prim(0, 0, bkind, M, N, K, lda, 0, ldc, 0.0f, 1, role);
}

const Bf16Prim *bf16_prim_any(int ta, int tb, float beta, const char *role)
{
    for (int i = 0; i < n_prims; i++) {
        const Bf16Prim *p = prims[i];
        if (p->any && p->ta == ta && p->tb == tb && p->beta == beta) return p;
    }
    return create(ta, tb, BF16_B_PLAIN, 0, 0, 0, 0, 0, 0, beta, 1, 0, role);
}

const char *bf16_prim_kernel(const Bf16Prim *p) { return p->kernel; }

long bf16_prim_creations(void) { return creations; }

void bf16_kernel_summary(char *buf, size_t len)
{
    size_t o = 0;
    buf[0] = '\0';
    for (int i = 0; i < n_prims; i++) { /* each role once, in the order of its first primitive */
        int seen = 0;
        for (int j = 0; j < i && !seen; j++) seen = !strcmp(prims[j]->role, prims[i]->role);
        if (seen) continue;
        int n = snprintf(buf + o, len - o, "%s%s ", o ? ", " : "", prims[i]->role);
        o = n < 0 ? o : (o + (size_t)n < len ? o + (size_t)n : len - 1);
        for (int k = i; k < n_prims; k++) { /* its kernels, each once */
            int dup = strcmp(prims[k]->role, prims[i]->role) != 0;
            for (int j = i; j < k && !dup; j++)
                dup = !strcmp(prims[j]->role, prims[i]->role) && !strcmp(prims[j]->kernel, prims[k]->kernel);
            if (dup) continue;
            n = snprintf(buf + o, len - o, "%s%s", k > i ? "/" : "", prims[k]->kernel);
            o = n < 0 ? o : (o + (size_t)n < len ? o + (size_t)n : len - 1);
        }
    }
}

void bf16_reserve_threads(int threads)
{
    init();
    if (threads > POOL_MAX_THREADS) threads = POOL_MAX_THREADS;
    for (int t = reserved; t < threads; t++) {
        CK(dnnl_stream_create(&streams[t], engine, dnnl_stream_default_flags));
        scratch[t] = xmalloc_aligned(scratch_bytes ? scratch_bytes : 64, "oneDNN scratchpads");
        for (int i = 0; i < n_prims; i++) prim_mems(prims[i], t);
        reserved = t + 1;
    }
}

static void check_slot(int t)
{
    if (t < 0 || t >= reserved) fatal(EXIT_RUNTIME, "internal: bf16 product on thread slot %d of %d reserved", t, reserved);
}

static void set_handle(dnnl_memory_t m, const void *p) { CK(dnnl_memory_set_data_handle(m, (void *)p)); }

/* ---- matrices ------------------------------------------------------------ */

struct Bf16Matrix {
    int rows, cols;
    uint16_t *plain;         /* W rounded, [rows, cols] */
    void *buf[2];            /* blocked W^T (B of x W^T), blocked W (B of dy W) */
    size_t bytes;
    dnnl_memory_t src[2], dst[2];
    dnnl_primitive_t reorder[2];
};

Bf16Matrix *bf16_matrix_create(int rows, int cols)
{
    init();
    Bf16Matrix *m = calloc(1, sizeof *m);
    if (!m) fatal(EXIT_RUNTIME, "out of memory for a bf16 matrix");
    m->rows = rows, m->cols = cols;
    m->plain = xcalloc_aligned(sizeof(uint16_t) * rows * cols, "bf16 weights");
    m->bytes = sizeof(uint16_t) * rows * cols;
    for (int o = 0; o < 2; o++) {
        /* o = 0: B = W^T, [K = cols, N = rows], the plain W read with strides (1, cols);
         * o = 1: B = W, [K = rows, N = cols], strides (cols, 1) */
        int K = o ? rows : cols, N = o ? cols : rows;
        dnnl_memory_desc_t plain;
        md_2d(&plain, K, N, o ? cols : 1, o ? 1 : cols, dnnl_bf16);
        const dnnl_memory_desc_t *blk = blocked_layout(K, N);
        size_t bytes = dnnl_memory_desc_get_size(blk);
        m->buf[o] = xcalloc_aligned(bytes, "bf16 weights");
        m->bytes += bytes;
        CK(dnnl_memory_create(&m->src[o], &plain, engine, m->plain));
        CK(dnnl_memory_create(&m->dst[o], blk, engine, m->buf[o]));
        dnnl_primitive_desc_t rpd;
        CK(dnnl_reorder_primitive_desc_create(&rpd, &plain, engine, blk, engine, NULL));
        CK(dnnl_primitive_create(&m->reorder[o], rpd));
        dnnl_primitive_desc_destroy(rpd);
        creations++;
    }
    return m;
}

void bf16_matrix_free(Bf16Matrix *m)
{
    if (!m) return;
    for (int o = 0; o < 2; o++) {
        dnnl_primitive_destroy(m->reorder[o]);
        dnnl_memory_destroy(m->src[o]);
        dnnl_memory_destroy(m->dst[o]);
        xfree_aligned(m->buf[o]);
    }
    xfree_aligned(m->plain);
    free(m);
}

void bf16_matrix_set(Bf16Matrix *m, const float *w, int t)
{
    check_slot(t);
    single_thread();
    bf16_round(m->plain, w, (size_t)m->rows * m->cols);
    for (int o = 0; o < 2; o++) {
        dnnl_exec_arg_t args[2] = { { DNNL_ARG_FROM, m->src[o] }, { DNNL_ARG_TO, m->dst[o] } };
        CK(dnnl_primitive_execute(m->reorder[o], streams[t], 2, args));
    }
}

int bf16_matrix_rows(const Bf16Matrix *m) { return m->rows; }
int bf16_matrix_cols(const Bf16Matrix *m) { return m->cols; }
size_t bf16_matrix_bytes(const Bf16Matrix *m) { return m->bytes; }

/* ---- running ------------------------------------------------------------- */

void bf16_run(const Bf16Prim *pc, int t, const uint16_t *A, const void *B, void *C)
{
    check_slot(t);
    single_thread();
    Bf16Prim *p = (Bf16Prim *)pc; /* only this thread's memory handles change */
    dnnl_memory_t *mem = p->mem[t];
    dnnl_memory_t mb;
    if (p->bkind == BF16_B_PLAIN) {
        set_handle(mem[1], B);
        mb = mem[1];
    } else {
        const Bf16Matrix *w = B;
        int o = p->bkind == BF16_B_W;
        if ((o ? w->rows : w->cols) != p->K || (o ? w->cols : w->rows) != p->N)
            fatal(EXIT_RUNTIME, "internal: bf16 matrix %dx%d used as a %dx%d operand", w->rows, w->cols, p->K, p->N);
        mb = w->dst[o];
    }
    set_handle(mem[0], A);
    set_handle(mem[2], C);
    set_handle(mem[3], scratch[t]);
    dnnl_exec_arg_t args[4] = { { DNNL_ARG_SRC, mem[0] }, { DNNL_ARG_WEIGHTS, mb }, { DNNL_ARG_DST, mem[2] },
                                { DNNL_ARG_SCRATCHPAD, mem[3] } };
    CK(dnnl_primitive_execute(p->prim, streams[t], 4, args));
}

void bf16_run_any(const Bf16Prim *p, int t, int M, int N, int K, const uint16_t *A, int lda, const uint16_t *B, int ldb,
                  float *C, int ldc)
{
    if (M <= 0 || N <= 0) return;
    check_slot(t);
    single_thread();
    dnnl_memory_desc_t a, b, c;
    operand_mds(&a, &b, &c, p->ta, p->tb, M, N, K, lda, ldb, ldc);
    /* oneDNN needs memory objects of the actual shape: a few small
     * allocations inside the library per call (no primitive is created) */
    dnnl_memory_t ma, mb, mc, ms = NULL;
    CK(dnnl_memory_create(&ma, &a, engine, (void *)A));
    CK(dnnl_memory_create(&mb, &b, engine, (void *)B));
    CK(dnnl_memory_create(&mc, &c, engine, C));
    dnnl_exec_arg_t args[4] = { { DNNL_ARG_SRC, ma }, { DNNL_ARG_WEIGHTS, mb }, { DNNL_ARG_DST, mc } };
    int nargs = 3;
    if (dnnl_memory_desc_get_size(&p->smd) > 0) {
        CK(dnnl_memory_create(&ms, &p->smd, engine, scratch[t]));
        args[nargs++] = (dnnl_exec_arg_t){ DNNL_ARG_SCRATCHPAD, ms };
    }
    CK(dnnl_primitive_execute(p->prim, streams[t], nargs, args));
    dnnl_memory_destroy(ma);
    dnnl_memory_destroy(mb);
    dnnl_memory_destroy(mc);
    if (ms) dnnl_memory_destroy(ms);
}
