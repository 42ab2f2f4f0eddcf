/* Whole-model tests: finite-difference gradients through every tensor on
 * tree-masked rows, prefix sharing, the forward-only and KV-cache paths
 * against the training forward, no allocation in the step loop, and clear
 * errors for bad shapes. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/config.h"
#include "src/bf16.h"
#include "src/model.h"
#include "src/ops.h"
#include "src/optim.h"
#include "src/pool.h"
#include "tests/alloccount.h"
#include "tests/check.h"
#include "tests/gradcheck.h"
#include <cblas.h>
#include "src/rng.h"
#include "src/tokenizer.h"


static Rng rng;

static void randomize_weights(Model *m, float std)
{
    for (int i = 0; i < m->n_tensors; i++) {
        const TensorInfo *t = &m->tensors[i];
        for (size_t j = 0; j < t->numel; j++)
            m->params[t->offset + j] = t->ndim == 1 ? 1.0f + 0.1f * (float)rng_normal(&rng)
                                                    : std * (float)rng_normal(&rng);
    }
}

/* ---- whole-model gradient check ---- */
typedef struct { Model *m; Batch *b; float *logp; } LossCtx;
static double model_loss(void *p)
{
    LossCtx *c = p;
    model_forward(c->m, c->b, c->logp);
    double s = 0;
    for (int k = 0; k < c->b->n_targets; k++) s -= (double)c->b->targets[k].weight * c->logp[k];
    return s;
}

static void random_tree_batch(Batch *b, int B, int T, int S, int K, int vocab)
{
    batch_reset(b, B, T, S);
    for (int r = 0; r < B; r++) {
        int s = 0;
        for (int t = 0; t < T; t++) {
            if (s < S - 1 && rng_below(&rng, 3) == 0) s++;
            b->tokens[r * T + t] = (int32_t)rng_below(&rng, vocab);
            b->pos[r * T + t] = (int32_t)rng_below(&rng, T); /* arbitrary, repeated positions */
            b->seg[r * T + t] = s;
        }
        for (int i = 0; i < S; i++)
            for (int j = 0; j < S; j++) b->vis[(r * S + i) * S + j] = i == j || rng_below(&rng, 2);
    }
    for (int k = 0; k < K; k++)
        b->targets[k] = (Target){ (int32_t)rng_below(&rng, B * T), (int32_t)rng_below(&rng, vocab),
                                  0.2f + (float)rng_uniform(&rng) };
    b->targets[K - 1].index = b->targets[0].index; /* two targets on one token */
    b->n_targets = K;
}

static void test_gradcheck(const ModelConfig *shape, const char *label)
{
    ModelConfig cfg = *shape;
    int B = 2, T = 10, S = 3, K = 12;
    Model *m = model_create(&cfg, 1, B, T);
    randomize_weights(m, 0.3f);
    Batch b;
    batch_alloc(&b, B, T, S, K);
    random_tree_batch(&b, B, T, S, K, cfg.vocab);
    float logp[12], dlogp[12];
    for (int k = 0; k < K; k++) dlogp[k] = -b.targets[k].weight;
    model_zero_grad(m);
    model_forward(m, &b, logp);
    model_backward(m, &b, dlogp);
    LossCtx c = { m, &b, logp };
    for (int i = 0; i < m->n_tensors; i++) {
        const TensorInfo *t = &m->tensors[i];
        double e = gradcheck(model_loss, &c, m->params + t->offset, m->grads + t->offset, t->numel, 1e-2f, 40);
        char name[96];
        snprintf(name, sizeof name, "model gradcheck%s %s", label, t->name);
        check(e < 1e-3, name, "max rel err %.2e (tol 1e-3)", e);
    }
    batch_free(&b);
    model_free(m);
}

/* ---- forward-only model and KV-cache decoding against the training forward ---- */
static void test_inference_paths(const ModelConfig *shape, const char *label)
{
    /* T = 150 spans two 128-row attention blocks */
    ModelConfig cfg = *shape;
    int T = 150;
    Model *m = model_create(&cfg, 1, 1, T);
    randomize_weights(m, 0.2f);
    Model *f = model_create(&cfg, 0, 1, T);
    memcpy(f->params, m->params, sizeof(float) * m->n_params);
    Batch b;
    batch_alloc(&b, 1, T, 1, 1);
    batch_reset(&b, 1, T, 1);
    int32_t toks[150];
    for (int t = 0; t < T; t++) toks[t] = (int32_t)rng_below(&rng, cfg.vocab);
    batch_set_causal_row(&b, 0, toks);
    b.targets[0] = (Target){ T - 1, 5, 1 };
    b.n_targets = 1;
    float logp;
    model_forward(m, &b, &logp);
    model_forward(f, &b, &logp);
    size_t nl = (size_t)T * cfg.vocab;
    char name[96];
    snprintf(name, sizeof name, "forward-only model equals training forward%s", label);
    check(memcmp(m->logits, f->logits, sizeof(float) * nl) == 0, name, "logits bitwise equal");

    KVCache *kv = kv_create(m, 100);
    float *logits = malloc(sizeof(float) * nl);
    model_decode(m, kv, toks, 100, logits); /* prefill */
    for (int t = 100; t < T; t++) model_decode(m, kv, toks + t, 1, logits + (size_t)t * cfg.vocab);
    double e = rel_err(logits, m->logits, nl, 1e-12);
    snprintf(name, sizeof name, "KV-cache decode equals forward%s", label);
    check(e < 1e-4 && kv_len(kv) == T, name, "rel err %.2e over %d positions", e, T);
    int32_t one = 1;
    check(model_decode(m, kv, &one, 11, logits) == -1, "KV cache refuses to overflow max_seq", "len %d of %d",
          kv_len(kv), cfg.max_seq);
    kv_free(kv);
    free(logits);
    batch_free(&b);
    model_free(f);
    model_free(m);
}

/* ---- prefix sharing: a tree-packed row scores answers like separate rows ---- */
static void test_tree_packing(void)
{
    ModelConfig cfg = { .vocab = 264, .d_model = 32, .n_layers = 2, .n_heads = 4, .max_seq = 32 };
    Model *m = model_create(&cfg, 0, 2, 32);
    randomize_weights(m, 0.2f);
    /* context C (6), prompt P (4), answers W (5) and L (5) */
    int32_t C[6], P[4], W[5], L[5];
    for (int i = 0; i < 6; i++) C[i] = (int32_t)rng_below(&rng, 256);
    for (int i = 0; i < 4; i++) P[i] = (int32_t)rng_below(&rng, 256);
    for (int i = 0; i < 5; i++) W[i] = (int32_t)rng_below(&rng, 256), L[i] = (int32_t)rng_below(&rng, 256);
    W[4] = L[4] = TOK_EOS;
    /* packed row [C P W L]; segments 0=C 1=P 2=W 3=L; L's positions restart where W's began */
    Batch pk;
    batch_alloc(&pk, 1, 20, 4, 10);
    batch_reset(&pk, 1, 20, 4);
    int t = 0;
    for (int i = 0; i < 6; i++, t++) pk.tokens[t] = C[i], pk.pos[t] = t, pk.seg[t] = 0;
    for (int i = 0; i < 4; i++, t++) pk.tokens[t] = P[i], pk.pos[t] = t, pk.seg[t] = 1;
    for (int i = 0; i < 5; i++, t++) pk.tokens[t] = W[i], pk.pos[t] = 10 + i, pk.seg[t] = 2;
    for (int i = 0; i < 5; i++, t++) pk.tokens[t] = L[i], pk.pos[t] = 10 + i, pk.seg[t] = 3;
    static const uint8_t vis[16] = { 1, 0, 0, 0, /* C sees C */ 1, 1, 0, 0, /* P sees C,P */
                                     1, 1, 1, 0, /* W sees C,P,W */ 1, 1, 0, 1 /* L sees C,P,L */ };
    memcpy(pk.vis, vis, 16);
    /* targets: each answer token, the first predicted from P's last token (index 9) */
    for (int i = 0; i < 5; i++) {
        pk.targets[pk.n_targets++] = (Target){ i == 0 ? 9 : 10 + i - 1, W[i], 1 };
        pk.targets[pk.n_targets++] = (Target){ i == 0 ? 9 : 15 + i - 1, L[i], 1 };
    }
    float packed[10], linear[10];
    model_forward(m, &pk, packed);
    /* the same answers as two plain causal rows [C P W] and [C P L] */
    Batch ln;
    batch_alloc(&ln, 2, 15, 1, 10);
    batch_reset(&ln, 2, 15, 1);
    int32_t row[15];
    memcpy(row, C, sizeof C), memcpy(row + 6, P, sizeof P), memcpy(row + 10, W, sizeof W);
    batch_set_causal_row(&ln, 0, row);
    memcpy(row + 10, L, sizeof L);
    batch_set_causal_row(&ln, 1, row);
    for (int i = 0; i < 5; i++) {
        ln.targets[ln.n_targets++] = (Target){ 9 + i, W[i], 1 };
        ln.targets[ln.n_targets++] = (Target){ 15 + 9 + i, L[i], 1 };
    }
    model_forward(m, &ln, linear);
    double e = 0;
    for (int k = 0; k < 10; k++) e = fmax(e, fabs(packed[k] - linear[k]) / fabs(linear[k]));
    check(e < 1e-5, "tree-packed row equals separate linear rows", "max rel err of answer log-probs %.2e", e);
    batch_free(&pk);
    batch_free(&ln);
    model_free(m);
}

/* ---- the step loop allocates nothing ---- */
static void test_no_alloc_in_step(AttentionKind attn)
{
    ModelConfig cfg = { .vocab = 264, .d_model = 32, .n_layers = 2, .n_heads = 2, .max_seq = 64 };
    Model *m = model_create_keep(&cfg, 1, 2, 64, (ActKeep){ attn, 0 });
    model_init_weights(m, 3);
    Batch b;
    batch_alloc(&b, 2, 64, 3, 16);
    random_tree_batch(&b, 2, 64, 3, 16, cfg.vocab);
    float logp[16], dlogp[16];
    for (int k = 0; k < 16; k++) dlogp[k] = -1.0f / 16;
    OptimConfig oc = config_optim_default(OPTIM_ADAMW);
    Optimizer opt;
    optim_init(&opt, &oc, m->n_params);
    /* the counter must see an allocation made through our code, or this test proves nothing */
    alloc_count = 0;
    alloc_armed = 1;
    Batch probe;
    batch_alloc(&probe, 1, 1, 1, 1);
    alloc_armed = 0;
    batch_free(&probe);
    check(alloc_count == 5, "allocation counter sees batch_alloc", "%d allocations (want 5)", alloc_count);
    alloc_count = 0;
    alloc_armed = 1;
    for (int s = 0; s < 3; s++) {
        model_zero_grad(m);
        model_forward(m, &b, logp);
        model_backward(m, &b, dlogp);
        optim_step(&opt, m, 1e-3f);
    }
    alloc_armed = 0;
    check(alloc_count == 0, attn == ATTENTION_FLASH ? "no allocation in the step loop (model.attention flash)"
                                                    : "no allocation in the step loop",
          "%d allocations in 3 steps", alloc_count);
    optim_free(&opt);
    batch_free(&b);
    model_free(m);
}

/* ---- the thread pool: the same step at 1, 2 and 3 threads ---- */
static void test_thread_counts(void)
{
    ModelConfig cfg = { .vocab = 264, .d_model = 64, .n_layers = 2, .n_heads = 4, .max_seq = 400 };
    int B = 2, T = 400, S = 7, K = 64;
    Model *m = model_create(&cfg, 1, B, T);
    model_init_weights(m, 5);
    Batch b;
    batch_alloc(&b, B, T, S, K);
    batch_reset(&b, B, T, S);
    /* a tree-packed layout: context, then 2 queries of prompt/chosen/rejected, so
     * the attention skips key ranges */
    for (int r = 0; r < B; r++) {
        for (int t = 0; t < T; t++) {
            int j = t < 100 ? -1 : (t - 100) / 150, o = t < 100 ? 0 : (t - 100) % 150;
            b.tokens[r * T + t] = (int32_t)rng_below(&rng, cfg.vocab);
            b.pos[r * T + t] = j < 0 ? t : 100 + (o < 30 ? o : 30 + (o - 30) % 60);
            b.seg[r * T + t] = j < 0 ? 0 : 1 + 3 * j + (o < 30 ? 0 : o < 90 ? 1 : 2);
        }
        uint8_t *v = b.vis + (size_t)r * S * S;
        v[0] = 1;
        for (int j = 0; j < 2; j++) {
            int sp = 1 + 3 * j;
            v[sp * S] = v[sp * S + sp] = 1;
            for (int k = 1; k <= 2; k++) v[(sp + k) * S] = v[(sp + k) * S + sp] = v[(sp + k) * S + sp + k] = 1;
        }
    }
    for (int k = 0; k < K; k++)
        b.targets[k] = (Target){ (int32_t)rng_below(&rng, B * T), (int32_t)rng_below(&rng, cfg.vocab), 1.0f };
    b.n_targets = K;
    /* pool threads x OpenBLAS threads: our loops split work so that every
     * element is computed alike (bitwise equal while the products stay whole,
     * gemm_pool 0); OpenBLAS's own threading, and the products split by rows
     * over the pool (gemm_pool 1, the default), may round differently, so
     * there the bound is 1e-6 */
    enum { RUNS = 6 };
    static const int pool_n[RUNS] = { 1, 2, 3, 2, 2, 3 }, blas_n[RUNS] = { 1, 1, 1, 2, 1, 1 };
    static const int gemm_pool[RUNS] = { 0, 0, 0, 0, 1, 1 };
    float logp[RUNS][64], dlogp[64];
    for (int k = 0; k < K; k++) dlogp[k] = -1.0f / K;
    float *grads[RUNS];
    for (int i = 0; i < RUNS; i++) {
        pool_set_threads(pool_n[i]);
        openblas_set_num_threads(blas_n[i]);
        ops_set_gemm_on_pool(gemm_pool[i]);
        model_zero_grad(m);
        model_forward(m, &b, logp[i]);
        model_backward(m, &b, dlogp);
        grads[i] = malloc(sizeof(float) * m->n_params);
        memcpy(grads[i], m->grads, sizeof(float) * m->n_params);
    }
    pool_set_threads(1);
    ops_set_gemm_on_pool(1);
    openblas_set_num_threads(1);
    for (int i = 1; i < RUNS; i++) {
        double dl = 0, dg = 0, gmax = 0;
        for (int k = 0; k < K; k++) dl = fmax(dl, fabs(logp[i][k] - logp[0][k]));
        for (size_t p = 0; p < m->n_params; p++) {
            dg = fmax(dg, fabs(grads[i][p] - grads[0][p]));
            gmax = fmax(gmax, fabs(grads[0][p]));
        }
        char name[96];
        int bitwise = blas_n[i] == 1 && !gemm_pool[i];
        snprintf(name, sizeof name, "%d pool x %d BLAS threads%s %s 1 x 1", pool_n[i], blas_n[i],
                 gemm_pool[i] ? " (products split over the pool)" : "", bitwise ? "bitwise equal" : "within 1e-6 of");
        int ok = bitwise ? dl == 0 && dg == 0 : dl <= 1e-6 && dg <= 1e-6 * gmax;
        check(ok, name, "max |dlogp| %.1e, max |dgrad| %.1e (max |grad| %.1e)", dl, dg, gmax);
    }
    for (int i = 0; i < RUNS; i++) free(grads[i]);
    batch_free(&b);
    model_free(m);
}

/* ---- model.attention flash: the same training as full, without the T x T buffers ---- */
static double max_diff(const float *a, const float *b, size_t n, double *big)
{
    double e = 0;
    *big = 0;
    for (size_t i = 0; i < n; i++) e = fmax(e, fabs((double)a[i] - b[i])), *big = fmax(*big, fabs(b[i]));
    return e;
}

static void test_flash_training(void)
{
    ModelConfig cfg = { .vocab = 264, .d_model = 32, .n_layers = 2, .n_heads = 4, .max_seq = 300, .n_kv_heads = 2 };
    int B = 2, T = 300, S = 6, K = 40; /* T: two full query blocks and a partial one */
    pool_set_threads(2);
    Model *full = model_create(&cfg, 1, B, T), *flash = model_create_keep(&cfg, 1, B, T, (ActKeep){ ATTENTION_FLASH, 0 });
    model_init_weights(full, 11);
    model_init_weights(flash, 11);
    Batch b;
    batch_alloc(&b, B, T, S, K);
    random_tree_batch(&b, B, T, S, K, cfg.vocab);
    float lf[40], lq[40], dlogp[40];
    for (int k = 0; k < K; k++) dlogp[k] = -1.0f / K;
    OptimConfig oc = config_optim_default(OPTIM_ADAMW);
    Optimizer of, oq;
    optim_init(&of, &oc, full->n_params);
    optim_init(&oq, &oc, flash->n_params);
    double dl = 0, dg = 0, gbig = 0, big;
    for (int s = 0; s < 4; s++) {
        model_zero_grad(full), model_zero_grad(flash);
        model_forward(full, &b, lf), model_forward(flash, &b, lq);
        for (int k = 0; k < K; k++) dl = fmax(dl, fabs(lf[k] - lq[k]) / fabs(lf[k]));
        model_backward(full, &b, dlogp), model_backward(flash, &b, dlogp);
        dg = fmax(dg, max_diff(flash->grads, full->grads, full->n_params, &big));
        gbig = fmax(gbig, big);
        optim_step(&of, full, 1e-3f), optim_step(&oq, flash, 1e-3f);
    }
    double dp = max_diff(flash->params, full->params, full->n_params, &big);
    check(dl <= 1e-6 && dg <= 1e-5 * gbig && dp <= 1e-5, "model.attention flash trains as full (4 AdamW steps, lr 1e-3)",
          "max rel |dlogp| %.1e, max |dgrad| %.1e (max |grad| %.1e), max |dparam| %.1e (max |param| %.2f)", dl, dg,
          gbig, dp, big);
    /* forward-only models (the frozen reference) */
    Model *rf = model_create(&cfg, 0, B, T), *rq = model_create_keep(&cfg, 0, B, T, (ActKeep){ ATTENTION_FLASH, 0 });
    memcpy(rf->params, full->params, sizeof(float) * full->n_params);
    memcpy(rq->params, full->params, sizeof(float) * full->n_params);
    model_forward(rf, &b, lf), model_forward(rq, &b, lq);
    dl = 0;
    for (int k = 0; k < K; k++) dl = fmax(dl, fabs(lf[k] - lq[k]) / fabs(lf[k]));
    check(dl <= 1e-6, "forward-only flash model agrees with full", "max rel |dlogp| %.1e", dl);
    /* the arena: no [B,H,T,T] buffers but the [B,H,T] log-sum-exps, and a scratch independent of T */
    long long H = cfg.n_heads, L = cfg.n_layers;
    long long want = L * B * H * T * T - L * B * H * T + (long long)attention_scratch_floats(T) -
                     (long long)attention_flash_scratch_floats();
    long long got = (long long)full->arena_floats - (long long)flash->arena_floats;
    check(got == want && flash->flash, "flash arena drops the T x T buffers",
          "full - flash = %lld floats, want L*B*H*T*(T-1) + %zu - %zu = %lld", got, attention_scratch_floats(T),
          attention_flash_scratch_floats(), want);
    long long want0 = B * H * T * T - B * H * T - (long long)attention_flash_scratch_floats();
    got = (long long)rf->arena_floats - (long long)rq->arena_floats;
    check(got == want0, "forward-only flash arena", "full - flash = %lld floats, want B*H*T*(T-1) - %zu = %lld", got,
          attention_flash_scratch_floats(), want0);
    optim_free(&of), optim_free(&oq);
    batch_free(&b);
    model_free(full), model_free(flash), model_free(rf), model_free(rq);
    pool_set_threads(1);
}

/* ---- model.recompute: each block's forward again in the backward, the same bits ---- */
static void recompute_case(const char *name, ModelConfig cfg, AttentionKind attn, int bf16)
{
    int B = 2, T = 300, S = 6, K = 40;
    Model *keep = model_create_keep(&cfg, 1, B, T, (ActKeep){ attn, 0 });
    Model *rec = model_create_keep(&cfg, 1, B, T, (ActKeep){ attn, 1 });
    if (bf16) model_set_precision(keep, PRECISION_BF16), model_set_precision(rec, PRECISION_BF16);
    model_init_weights(keep, 21);
    model_init_weights(rec, 21);
    Batch b;
    batch_alloc(&b, B, T, S, K);
    random_tree_batch(&b, B, T, S, K, cfg.vocab);
    float lk[40], lr[40], dlogp[40];
    for (int k = 0; k < K; k++) dlogp[k] = -1.0f / K;
    OptimConfig oc = config_optim_default(OPTIM_ADAMW);
    Optimizer ok, orc;
    optim_init(&ok, &oc, keep->n_params);
    optim_init(&orc, &oc, rec->n_params);
    int same = 1;
    for (int s = 0; s < 3; s++) {
        model_zero_grad(keep), model_zero_grad(rec);
        model_forward(keep, &b, lk), model_forward(rec, &b, lr);
        model_backward(keep, &b, dlogp), model_backward(rec, &b, dlogp);
        same &= !memcmp(lk, lr, sizeof lk) && !memcmp(keep->grads, rec->grads, sizeof(float) * keep->n_params);
        optim_step(&ok, keep, 1e-3f), optim_step(&orc, rec, 1e-3f);
    }
    same &= !memcmp(keep->params, rec->params, sizeof(float) * keep->n_params);
    /* the arena: one layer's activations instead of L */
    size_t one = model_arena_bytes_keep(&cfg, 0, B, T, (ActKeep){ attn, 0 }); /* a forward-only model keeps one too */
    size_t layer = (model_arena_bytes_keep(&cfg, 1, B, T, (ActKeep){ attn, 0 }) -
                    model_arena_bytes_keep(&cfg, 1, B, T, (ActKeep){ attn, 1 })) / (cfg.n_layers - 1);
    check(same && rec->recompute && rec->arena_floats < keep->arena_floats && layer > 0 && one > 0, name,
          "3 AdamW steps: log-probs, gradients and parameters bit for bit; arena %.2f MiB -> %.2f MiB (%zu bytes a "
          "layer, %d layers)", keep->arena_floats * 4.0 / 1048576, rec->arena_floats * 4.0 / 1048576, layer, cfg.n_layers);
    optim_free(&ok), optim_free(&orc);
    batch_free(&b);
    model_free(keep), model_free(rec);
}

static void test_recompute(void)
{
    ModelConfig cfg = { .vocab = 264, .d_model = 32, .n_layers = 3, .n_heads = 4, .max_seq = 300 };
    ModelConfig gqa = cfg;
    gqa.n_kv_heads = 2;
    pool_set_threads(2);
    recompute_case("model.recompute equals keeping every block (fp32, full attention)", cfg, ATTENTION_FULL, 0);
    recompute_case("model.recompute equals keeping every block (fp32, flash attention, grouped-query)", gqa,
                   ATTENTION_FLASH, 0);
    char unit[96];
    if (bf16_supported(unit, sizeof unit))
        recompute_case("model.recompute equals keeping every block (bf16 products)", cfg, ATTENTION_FULL, 1);
    else
        printf("SKIP: model.recompute in bf16: %s\n", unit);
    pool_set_threads(1);
}

/* A /proc/self/status field in kB, -1 if absent. */
static long status_kb(const char *key)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return -1;
    char line[256];
    long kb = -1;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, key, strlen(key)) && line[strlen(key)] == ':') kb = strtol(line + strlen(key) + 1, NULL, 10);
    fclose(f);
    return kb;
}

/* Child of test_flash_peak: one forward + backward of one row of T tokens,
 * then prints its VmHWM. */
static int peak_child(const char *kind, int T)
{
    ModelConfig cfg = { .vocab = 264, .d_model = 16, .n_layers = 1, .n_heads = 1, .ffn_hidden = 32, .max_seq = T };
    Model *m = model_create_keep(&cfg, 1, 1, T, (ActKeep){ !strcmp(kind, "flash") ? ATTENTION_FLASH : ATTENTION_FULL, 0 });
    model_init_weights(m, 1);
    Batch b;
    batch_alloc(&b, 1, T, 1, 64);
    random_tree_batch(&b, 1, T, 1, 64, cfg.vocab); /* one segment: plain causal */
    float logp[64], dlogp[64];
    for (int k = 0; k < 64; k++) dlogp[k] = -1.0f / 64;
    model_forward(m, &b, logp);
    model_backward(m, &b, dlogp);
    double s = 0;
    for (int k = 0; k < 64; k++) s += logp[k];
    printf("%ld %zu %.9g\n", status_kb("VmHWM"), m->arena_floats * sizeof(float), s);
    batch_free(&b);
    model_free(m);
    return 0;
}

/* Peak resident memory of a training step at T = 4096 with each attention,
 * each in its own process (VmHWM never goes down). */
static void test_flash_peak(const char *self)
{
    int T = 4096;
    long hwm[2];
    size_t arena[2];
    double sum[2];
    const char *kinds[2] = { "full", "flash" };
    for (int i = 0; i < 2; i++) {
        char cmd[1200];
        snprintf(cmd, sizeof cmd, "'%s' --peak %s %d", self, kinds[i], T);
        FILE *p = popen(cmd, "r");
        int n = p ? fscanf(p, "%ld %zu %lg", &hwm[i], &arena[i], &sum[i]) : 0;
        if (p) pclose(p);
        if (n != 3) {
            check(0, "flash peak memory", "could not run %s", cmd);
            return;
        }
    }
    double tt = (double)T * T * sizeof(float); /* the one [B,H,T,T] buffer of 1 row, 1 head, 1 layer */
    double analytic = (double)arena[0] - (double)arena[1], measured = (hwm[0] - hwm[1]) * 1024.0;
    printf("peak memory at T=%d (d_model 16, 1 layer, 1 head, 1 row): VmHWM full %.1f MiB, flash %.1f MiB: "
           "flash lower by %.1f MiB; arenas %.2f / %.2f MiB, analytic difference %.2f MiB (the T x T buffer %.1f MiB "
           "and full's backward scratch, less flash's lse and scratch)\n", T, hwm[0] / 1024.0, hwm[1] / 1024.0,
           measured / 1048576, arena[0] / 1048576.0, arena[1] / 1048576.0, analytic / 1048576, tt / 1048576);
    check(measured >= tt && measured >= 0.97 * analytic && fabs(sum[0] - sum[1]) <= 1e-5 * fabs(sum[0]),
          "flash peak memory below full by the T x T buffer",
          "VmHWM full %ld kB - flash %ld kB = %.1f MiB >= T x T buffer %.1f MiB (analytic %.2f MiB); summed log-probs "
          "%.7g vs %.7g", hwm[0], hwm[1], measured / 1048576, tt / 1048576, analytic / 1048576, sum[0], sum[1]);
}

/* ---- init is deterministic and scaled as documented ---- */
static void test_init(void)
{
    ModelConfig cfg = { .vocab = 264, .d_model = 64, .n_layers = 4, .n_heads = 4, .max_seq = 16 };
    Model *a = model_create(&cfg, 0, 1, 1), *b = model_create(&cfg, 0, 1, 1);
    model_init_weights(a, 42);
    model_init_weights(b, 42);
    int same = memcmp(a->params, b->params, sizeof(float) * a->n_params) == 0;
    model_init_weights(b, 43);
    int differ = memcmp(a->params, b->params, sizeof(float) * a->n_params) != 0;
    const TensorInfo *wo = model_find_tensor(a, "layers.2.attn.wo"), *nrm = model_find_tensor(a, "final_norm");
    double ss = 0;
    for (size_t i = 0; i < wo->numel; i++) ss += (double)a->params[wo->offset + i] * a->params[wo->offset + i];
    double std = sqrt(ss / wo->numel), want = 0.02 / sqrt(8.0);
    check(same && differ && fabs(std / want - 1) < 0.05 && a->params[nrm->offset] == 1.0f, "init",
          "same seed same weights %d, other seed differs %d, wo std %.5f (want %.5f), norm gain %g", same, differ,
          std, want, a->params[nrm->offset]);
    model_free(a);
    model_free(b);
}

/* ---- bad shapes get clear messages ---- */
static void test_bad_configs(void)
{
    static const struct { ModelConfig c; const char *want; } cases[] = {
        { { 264, 30, 2, 4, 0, 16, 0, 0, 0, 0 }, "model.d_model = 30 is not divisible by model.n_heads = 4" },
        { { 264, 0, 2, 4, 0, 16, 0, 0, 0, 0 }, "model.d_model = 0 must be positive" },
        { { 264, -8, 2, 4, 0, 16, 0, 0, 0, 0 }, "model.d_model = -8 must be positive" },
        { { 264, 32, 0, 4, 0, 16, 0, 0, 0, 0 }, "model.n_layers = 0 must be positive" },
        { { 264, 32, 2, 0, 0, 16, 0, 0, 0, 0 }, "model.n_heads = 0 must be positive" },
        { { 264, 32, 2, 4, 0, 0, 0, 0, 0, 0 }, "model.max_seq = 0 must be positive" },
        { { 264, 32, 2, 4, -1, 16, 0, 0, 0, 0 }, "model.ffn_hidden = -1 must be >= 0" },
        { { 256, 32, 2, 4, 0, 16, 0, 0, 0, 0 }, "model.vocab = 256 is too small: the tokenizer needs 264 ids" },
        { { 263, 32, 2, 4, 0, 16, 0, 0, 0, 0 }, "model.vocab = 263 is too small" },
        { { 264, 24, 2, 8, 0, 16, 0, 0, 0, 0 }, "head size model.d_model/model.n_heads = 3 must be even" },
        { { 264, 32, 2, 4, 0, 16, 3, 0, 0, 0 }, "model.n_kv_heads = 3 must divide model.n_heads = 4" },
        { { 264, 32, 2, 4, 0, 16, 8, 0, 0, 0 }, "model.n_kv_heads = 8 must divide model.n_heads = 4" },
        { { 264, 32, 2, 4, 0, 16, 0, 0, -1, 0 }, "model.rope_theta = -1 must be positive" },
        { { 264, 32, 2, 4, 0, 16, 0, 0, 0, 2 }, "model.norm_eps = 2 must be in [0, 1)" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        ModelConfig c = cases[i].c;
        char err[256] = "";
        int rc = model_config_validate(&c, err, sizeof err);
        char name[64];
        snprintf(name, sizeof name, "bad config %zu", i + 1);
        check(rc == -1 && strstr(err, cases[i].want) != NULL, name, "'%s'", err);
    }
    ModelConfig ok = { 264, 512, 8, 8, 0, 1024, 0, 0, 0, 0 };
    char err[256] = "";
    int rc = model_config_validate(&ok, err, sizeof err);
    check(rc == 0 && ok.ffn_hidden == 1408, "default ffn_hidden", "d_model 512 -> %d (want 1408)", ok.ffn_hidden);
    check(ok.n_kv_heads == 8 && ok.rope_theta == 10000.0 && ok.norm_eps == 1e-5 && ok.untied == 0, "default GQA/RoPE/eps",
          "n_kv_heads %d, rope_theta %g, norm_eps %g, untied %d", ok.n_kv_heads, ok.rope_theta, ok.norm_eps, ok.untied);
}

int main(int argc, char **argv)
{
    rng = rng_seed(77, 3);
    if (argc == 4 && !strcmp(argv[1], "--peak")) return peak_child(argv[2], atoi(argv[3]));
    ModelConfig small = { .vocab = 264, .d_model = 16, .n_layers = 2, .n_heads = 2, .ffn_hidden = 24, .max_seq = 10 };
    test_gradcheck(&small, "");
    /* grouped-query attention (2 query heads per key/value head), an untied
     * head, another RoPE base and epsilon */
    ModelConfig gqa = { .vocab = 264, .d_model = 32, .n_layers = 2, .n_heads = 4, .ffn_hidden = 24, .max_seq = 10,
                        .n_kv_heads = 2, .untied = 1, .rope_theta = 500.0, .norm_eps = 1e-4 };
    test_gradcheck(&gqa, " (GQA, untied)");
    ModelConfig mqa = { .vocab = 264, .d_model = 16, .n_layers = 1, .n_heads = 4, .ffn_hidden = 16, .max_seq = 10,
                        .n_kv_heads = 1 };
    test_gradcheck(&mqa, " (one kv head)");
    ModelConfig inf = { .vocab = 264, .d_model = 32, .n_layers = 2, .n_heads = 4, .max_seq = 160 };
    test_inference_paths(&inf, "");
    inf.n_kv_heads = 2, inf.untied = 1, inf.rope_theta = 1e6;
    test_inference_paths(&inf, " (GQA, untied)");
    test_tree_packing();
    test_no_alloc_in_step(ATTENTION_FULL);
    test_thread_counts();
    /* and again with the pool running: dispatches allocate nothing either */
    pool_set_threads(2);
    test_no_alloc_in_step(ATTENTION_FULL);
    test_no_alloc_in_step(ATTENTION_FLASH);
    pool_set_threads(1);
    test_init();
    test_bad_configs();
    test_flash_training();
    test_recompute();
    char self[1024];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n > 0) {
        self[n] = 0;
        test_flash_peak(self);
    } else
        check(0, "flash peak memory", "cannot read /proc/self/exe");
    return check_status();
}
