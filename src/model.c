/* model: the fspo transformer, readable top to bottom.
 * Layout of parameters and the exact math: docs/model.md. */
#include "src/model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "src/bf16.h"
#include "src/ops.h"
#include "src/pool.h"
#include "src/rng.h"
#include "src/tokenizer.h"
#include "src/util.h"

/* Per-layer activations saved by the forward for the backward. In a
 * forward-only model every layer's views point at the same slot. */
struct LayerActs {
    float *xn1, *rstd1; /* attn_norm output [N,C], its rstd [N] */
    float *qkv;         /* [N,3C], q and k after RoPE */
    float *att;         /* [B,H,T,T] attention probabilities (bf16: rounded, as uint16_t, in the first half);
                         * model.attention flash: NULL, and att_lse [B,H,T] the log-sum-exp of each query's scores */
    float *att_lse;
    float *atto;        /* [N,C] attention output before wo */
    float *xmid;        /* [N,C] residual after the attention block */
    float *xn2, *rstd2; /* mlp_norm output [N,C], its rstd [N] */
    float *h13;         /* [N,2F] gate|up pre-activations (bf16: as uint16_t, in the first half) */
    float *hact;        /* [N,F] silu(gate) * up */
};

/* Records the model keys (without "model.") a failed check is about. */
static void about(const char **keys, const char *k1, const char *k2)
{
    if (keys) keys[0] = k1, keys[1] = k2;
}

int model_config_check(ModelConfig *c, const char **keys, char *err, size_t errlen)
{
    about(keys, NULL, NULL);
    if (c->vocab < TOKENIZER_VOCAB)
        return about(keys, "vocab", NULL), set_err(err, errlen,
                       "model.vocab = %d is too small: the tokenizer needs %d ids (256 bytes + %d special tokens)",
                       c->vocab, TOKENIZER_VOCAB, TOKENIZER_VOCAB - 256);
    if (c->d_model < 1) return about(keys, "d_model", NULL), set_err(err, errlen, "model.d_model = %d must be positive", c->d_model);
    if (c->n_layers < 1) return about(keys, "n_layers", NULL), set_err(err, errlen, "model.n_layers = %d must be positive", c->n_layers);
    if (c->n_heads < 1) return about(keys, "n_heads", NULL), set_err(err, errlen, "model.n_heads = %d must be positive", c->n_heads);
    if (c->max_seq < 1) return about(keys, "max_seq", NULL), set_err(err, errlen, "model.max_seq = %d must be positive", c->max_seq);
    if (c->ffn_hidden < 0) return about(keys, "ffn_hidden", NULL), set_err(err, errlen, "model.ffn_hidden = %d must be >= 0 (0 = default)", c->ffn_hidden);
    if (c->d_model % c->n_heads != 0)
        return about(keys, "d_model", "n_heads"), set_err(err, errlen, "model.d_model = %d is not divisible by model.n_heads = %d", c->d_model,
                       c->n_heads);
    if (c->n_kv_heads < 0 || c->n_kv_heads > c->n_heads || (c->n_kv_heads > 0 && c->n_heads % c->n_kv_heads != 0))
        return about(keys, "n_kv_heads", "n_heads"), set_err(err, errlen, "model.n_kv_heads = %d must divide model.n_heads = %d (0 = n_heads)", c->n_kv_heads,
                       c->n_heads);
    if (!(c->rope_theta >= 0 && c->rope_theta < 1e30))
        return about(keys, "rope_theta", NULL), set_err(err, errlen, "model.rope_theta = %g must be positive (0 = 10000)", c->rope_theta);
    if (!(c->norm_eps >= 0 && c->norm_eps < 1))
        return about(keys, "norm_eps", NULL), set_err(err, errlen, "model.norm_eps = %g must be in [0, 1) (0 = 1e-5)", c->norm_eps);
    if (c->untied != 0 && c->untied != 1) return about(keys, "tie_embeddings", NULL), set_err(err, errlen, "model.tie_embeddings must be true or false");
    if ((c->d_model / c->n_heads) % 2 != 0)
        return about(keys, "d_model", "n_heads"), set_err(err, errlen, "head size model.d_model/model.n_heads = %d must be even (RoPE rotates pairs)",
                       c->d_model / c->n_heads);
    /* keep every tensor's element count and the attention arena well inside int/size_t math */
    if (c->d_model > 65536 || c->n_layers > 4096 || c->vocab > (1 << 24) || c->max_seq > (1 << 20) ||
        c->ffn_hidden > (1 << 20))
        return set_err(err, errlen, "model size out of range (d_model <= 65536, n_layers <= 4096, vocab <= 2^24, "
                                    "max_seq <= 2^20, ffn_hidden <= 2^20)");
    if (c->ffn_hidden == 0) c->ffn_hidden = 64 * ((8 * c->d_model / 3 + 63) / 64);
    if (c->n_kv_heads == 0) c->n_kv_heads = c->n_heads;
    if (c->rope_theta == 0) c->rope_theta = 10000.0;
    if (c->norm_eps == 0) c->norm_eps = 1e-5;
    return 0;
}

int model_config_validate(ModelConfig *c, char *err, size_t errlen) { return model_config_check(c, NULL, err, errlen); }

int model_kv_width(const ModelConfig *c) { return c->d_model / c->n_heads * (c->n_kv_heads ? c->n_kv_heads : c->n_heads); }

/* q | k | v with the key/value heads repeated for grouped-query attention:
 * out[N,3C] from in[N, C + 2Ckv]; query head h reads key/value head
 * h / (H / Hkv), as Hugging Face's repeat_kv. */
static void repeat_kv(float *out, const float *in, int N, int C, int H, int Hkv)
{
    int hd = C / H, Ckv = Hkv * hd, rep = H / Hkv;
    size_t ldi = (size_t)C + 2 * Ckv;
    for (int n = 0; n < N; n++) {
        const float *x = in + (size_t)n * ldi;
        float *y = out + (size_t)n * 3 * C;
        memcpy(y, x, sizeof(float) * C);
        for (int part = 1; part < 3; part++)
            for (int h = 0; h < H; h++)
                memcpy(y + (size_t)part * C + (size_t)h * hd, x + C + (size_t)(part - 1) * Ckv + (size_t)(h / rep) * hd,
                       sizeof(float) * hd);
    }
}

/* The backward of repeat_kv: each key/value head's gradient is the sum over
 * the query heads that read it. */
static void repeat_kv_backward(float *din, const float *dout, int N, int C, int H, int Hkv)
{
    int hd = C / H, Ckv = Hkv * hd, rep = H / Hkv;
    size_t ldi = (size_t)C + 2 * Ckv;
    for (int n = 0; n < N; n++) {
        const float *y = dout + (size_t)n * 3 * C;
        float *x = din + (size_t)n * ldi;
        memcpy(x, y, sizeof(float) * C);
        memset(x + C, 0, sizeof(float) * 2 * Ckv);
        for (int part = 1; part < 3; part++)
            for (int h = 0; h < H; h++) {
                float *dst = x + C + (size_t)(part - 1) * Ckv + (size_t)(h / rep) * hd;
                const float *src = y + (size_t)part * C + (size_t)h * hd;
                for (int i = 0; i < hd; i++) dst[i] += src[i];
            }
    }
}

/* ---------------------------------------------------------------------- */
/* parameter layout                                                        */

static void add_tensor(Model *m, int *i, size_t *off, const char *name, int rows, int cols, int decay)
{
    TensorInfo *t = &m->tensors[(*i)++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->ndim = cols ? 2 : 1;
    t->shape[0] = rows;
    t->shape[1] = cols;
    t->numel = (size_t)rows * (cols ? cols : 1);
    t->offset = *off;
    t->decay = decay;
    *off += t->numel;
}

static void build_layout(Model *m)
{
    const ModelConfig *c = &m->cfg;
    int C = c->d_model, F = c->ffn_hidden, QKV = C + 2 * model_kv_width(c), i = 0;
    size_t off = 0;
    char name[48];
    m->n_tensors = model_tensor_count(c);
    m->tensors = calloc(m->n_tensors, sizeof(TensorInfo));
    if (!m->tensors) fatal(EXIT_RUNTIME, "out of memory for the tensor table");
    add_tensor(m, &i, &off, "tok_emb", c->vocab, C, 1);
    for (int l = 0; l < c->n_layers; l++) {
        static const char *suffix[6] = { "attn_norm", "attn.wqkv", "attn.wo", "mlp_norm", "mlp.w13", "mlp.w2" };
        int rows[6] = { C, QKV, C, C, 2 * F, C }, cols[6] = { 0, C, C, 0, C, F };
        for (int j = 0; j < 6; j++) {
            snprintf(name, sizeof name, "layers.%d.%s", l, suffix[j]);
            add_tensor(m, &i, &off, name, rows[j], cols[j], cols[j] != 0);
        }
    }
    add_tensor(m, &i, &off, "final_norm", C, 0, 0);
    if (c->untied) add_tensor(m, &i, &off, "lm_head", c->vocab, C, 1); /* last: the tied layout is unchanged */
    m->n_params = off;
}

Model *model_layout(const ModelConfig *cfg)
{
    Model *m = calloc(1, sizeof *m);
    if (!m) fatal(EXIT_RUNTIME, "out of memory for the model");
    m->cfg = *cfg;
    build_layout(m);
    return m;
}

size_t model_param_count(const ModelConfig *cfg)
{
    Model m = { .cfg = *cfg };
    build_layout(&m);
    free(m.tensors);
    return m.n_params;
}

double model_train_bytes(const ModelConfig *cfg, int rows, int with_ref)
{
    return model_train_bytes_keep(cfg, rows, with_ref, (ActKeep){ ATTENTION_FULL, 0 });
}

double model_train_bytes_keep(const ModelConfig *cfg, int rows, int with_ref, ActKeep keep)
{
    double p = (double)model_param_count(cfg);
    double bytes = 16.0 * p + (double)model_arena_bytes_keep(cfg, 1, rows, cfg->max_seq, keep);
    if (with_ref) bytes += 4.0 * p + (double)model_arena_bytes_keep(cfg, 0, rows, cfg->max_seq, keep);
    return bytes;
}

void model_views(const Model *m, float *base, Weights *w)
{
    const TensorInfo *t = m->tensors;
    w->tok_emb = base + t[0].offset;
    for (int l = 0; l < m->cfg.n_layers; l++) {
        const TensorInfo *lt = t + model_layer_tensor(l);
        LayerWeights *lw = &w->layer[l];
        lw->attn_norm = base + lt[0].offset;
        lw->wqkv = base + lt[1].offset;
        lw->wo = base + lt[2].offset;
        lw->mlp_norm = base + lt[3].offset;
        lw->w13 = base + lt[4].offset;
        lw->w2 = base + lt[5].offset;
    }
    w->final_norm = base + t[model_layer_tensor(m->cfg.n_layers)].offset;
    w->head = m->cfg.untied ? base + t[model_layer_tensor(m->cfg.n_layers) + 1].offset : w->tok_emb;
}

const TensorInfo *model_find_tensor(const Model *m, const char *name)
{
    for (int i = 0; i < m->n_tensors; i++)
        if (strcmp(m->tensors[i].name, name) == 0) return &m->tensors[i];
    return NULL;
}

/* ---------------------------------------------------------------------- */
/* activation arena                                                        */

/* Floats of one layer's saved activations for N tokens in rows of T
 * (flash: without the [B,H,T,T] probabilities). */
static size_t layer_floats(const ModelConfig *c, size_t N, size_t T, int flash)
{
    size_t C = c->d_model, F = c->ffn_hidden, H = c->n_heads;
    return N * (C + 1) * 2 + N * 3 * C + (flash ? N * H : N * H * T) + N * C * 2 + N * 3 * F;
}

/* Floats of the attention scratch d_att: the backward's (full), or the
 * flash forward's and backward's (independent of T). */
static size_t att_scratch_floats(int trainable, size_t T, int flash)
{
    if (!flash) return trainable ? attention_scratch_floats((int)T) : 0;
    return attention_flash_scratch_floats();
}

/* Floats shared by all layers: residual streams (L+1 when training, else
 * one), final norm, logits, the backward scratch when training, and the
 * attention scratch. */
static size_t shared_floats(const ModelConfig *c, int trainable, size_t N, size_t T, int flash)
{
    size_t C = c->d_model, F = c->ffn_hidden, V = c->vocab, L = c->n_layers;
    size_t s = (trainable ? L + 1 : 1) * N * C + N * (C + 1) + N * V + N + N * C;
    if (trainable) s += N * C * 3 + N * 3 * C + N * 2 * F + N * F + N * V;
    return s + att_scratch_floats(trainable, T, flash);
}

size_t model_arena_bytes(const ModelConfig *c, int trainable, int max_rows, int max_len)
{
    return model_arena_bytes_keep(c, trainable, max_rows, max_len, (ActKeep){ ATTENTION_FULL, 0 });
}

size_t model_arena_bytes_keep(const ModelConfig *c, int trainable, int max_rows, int max_len, ActKeep keep)
{
    size_t N = (size_t)max_rows * max_len;
    int flash = keep.attention == ATTENTION_FLASH;
    size_t per_layer = layer_floats(c, N, max_len, flash);
    /* one slot of layer activations when forward-only or recomputing, else one per layer */
    size_t slots = trainable && !keep.recompute ? (size_t)c->n_layers : 1;
    return sizeof(float) * (slots * per_layer + shared_floats(c, trainable, N, max_len, flash));
}

static void carve_arena(Model *m)
{
    const ModelConfig *c = &m->cfg;
    size_t N = (size_t)m->cap_rows * m->cap_len, T = m->cap_len;
    size_t C = c->d_model, F = c->ffn_hidden, V = c->vocab, H = c->n_heads, L = c->n_layers;
    m->arena_floats = model_arena_bytes_keep(c, m->trainable, m->cap_rows, m->cap_len,
                                             (ActKeep){ m->flash ? ATTENTION_FLASH : ATTENTION_FULL, m->recompute }) /
                      sizeof(float);
    m->arena = xcalloc_aligned(m->arena_floats * sizeof(float), "the activation arena");
    float *p = m->arena;
#define TAKE(n) (p += (n), p - (n))
    for (size_t l = 0; l < L; l++) {
        LayerActs *a = &m->acts[l];
        if ((!m->trainable || m->recompute) && l > 0) { /* forward-only or recomputing: every layer reuses slot 0 */
            *a = m->acts[0];
            continue;
        }
        a->xn1 = TAKE(N * C);
        a->rstd1 = TAKE(N);
        a->qkv = TAKE(N * 3 * C);
        a->att = m->flash ? NULL : TAKE(N * H * T);
        a->att_lse = m->flash ? TAKE(N * H) : NULL;
        a->atto = TAKE(N * C);
        a->xmid = TAKE(N * C);
        a->xn2 = TAKE(N * C);
        a->rstd2 = TAKE(N);
        a->h13 = TAKE(N * 2 * F);
        a->hact = TAKE(N * F);
    }
    for (size_t l = 0; l <= L; l++) m->resid[l] = (m->trainable || l == 0) ? TAKE(N * C) : m->resid[0];
    m->xnf = TAKE(N * C);
    m->rstdf = TAKE(N);
    m->logits = TAKE(N * V);
    m->lse = TAKE(N);
    m->tmp = TAKE(N * C);
    if (m->trainable) {
        m->d_resid = TAKE(N * C);
        m->d_norm = TAKE(N * C);
        m->d_atto = TAKE(N * C);
        m->d_qkv = TAKE(N * 3 * C);
        m->d_h13 = TAKE(N * 2 * F);
        m->d_hact = TAKE(N * F);
        m->d_logits = TAKE(N * V);
    }
    m->d_att_floats = att_scratch_floats(m->trainable, T, m->flash);
    m->d_att = m->d_att_floats ? TAKE(m->d_att_floats) : NULL;
#undef TAKE
    if ((size_t)(p - m->arena) != m->arena_floats) fatal(EXIT_RUNTIME, "internal: arena layout mismatch");
}

Model *model_create(const ModelConfig *cfg, int trainable, int max_rows, int max_len)
{
    return model_create_keep(cfg, trainable, max_rows, max_len, (ActKeep){ ATTENTION_FULL, 0 });
}

Model *model_create_keep(const ModelConfig *cfg, int trainable, int max_rows, int max_len, ActKeep keep)
{
    Model *m = calloc(1, sizeof *m);
    if (!m) fatal(EXIT_RUNTIME, "out of memory for the model");
    m->cfg = *cfg;
    m->flash = keep.attention == ATTENTION_FLASH;
    m->recompute = trainable && keep.recompute;
    char err[256];
    if (model_config_validate(&m->cfg, err, sizeof err) != 0) fatal(EXIT_USAGE, "%s", err);
    if (max_rows < 1 || max_len < 1 || max_len > m->cfg.max_seq)
        fatal(EXIT_USAGE, "batch shape %d rows x %d tokens does not fit model.max_seq = %d", max_rows, max_len,
              m->cfg.max_seq);
    build_layout(m);
    int L = m->cfg.n_layers, hd = m->cfg.d_model / m->cfg.n_heads;
    m->w.layer = calloc(L, sizeof(LayerWeights));
    m->g.layer = calloc(L, sizeof(LayerWeights));
    m->acts = calloc(L, sizeof(LayerActs));
    m->resid = calloc(L + 1, sizeof(float *));
    if (!m->w.layer || !m->g.layer || !m->acts || !m->resid) fatal(EXIT_RUNTIME, "out of memory for the model");
    m->params = xcalloc_aligned(m->n_params * sizeof(float), "model parameters");
    model_views(m, m->params, &m->w);
    m->trainable = trainable;
    if (trainable) {
        m->grads = xcalloc_aligned(m->n_params * sizeof(float), "model gradients");
        model_views(m, m->grads, &m->g);
    }
    m->rope_cos = xmalloc_aligned(sizeof(float) * m->cfg.max_seq * (hd / 2), "RoPE tables");
    m->rope_sin = xmalloc_aligned(sizeof(float) * m->cfg.max_seq * (hd / 2), "RoPE tables");
    rope_tables(m->rope_cos, m->rope_sin, m->cfg.max_seq, hd, m->cfg.rope_theta);
    m->cap_rows = max_rows;
    m->cap_len = max_len;
    carve_arena(m);
    if (m->cfg.n_kv_heads < m->cfg.n_heads)
        m->qkv_kv = xcalloc_aligned(sizeof(float) * max_rows * max_len * (m->cfg.d_model + 2 * model_kv_width(&m->cfg)),
                                    "the grouped-query projection");
    return m;
}

static void free_bf16(Model *m)
{
    if (m->bmat)
        for (int i = 0; i < 4 * m->cfg.n_layers + 1; i++) bf16_matrix_free(m->bmat[i]);
    int L = m->cfg.n_layers;
    int per_layer = m->trainable && !m->recompute; /* else the layers share layer 0's */
    if (m->bin)
        for (int i = 0; i < 4 * L + 1; i++)
            if (per_layer || i < 4 || i == 4 * L) xfree_aligned(m->bin[i]);
    if (m->bqkv)
        for (int l = 0; l < (per_layer ? L : 1); l++) xfree_aligned(m->bqkv[l]);
    free(m->bmat);
    free(m->bsrc);
    free(m->bin);
    free(m->bqkv);
    bf16_scratch_free(m->bscratch);
    m->bmat = NULL, m->bsrc = NULL, m->bin = NULL, m->bqkv = NULL, m->bscratch = NULL, m->bf16 = 0, m->bf16_bytes = 0;
}

void model_set_precision(Model *m, Precision p)
{
    free_bf16(m);
    if (p != PRECISION_BF16) return;
    if (m->flash) fatal(EXIT_USAGE, "model.attention flash runs fp32 attention only: set model.precision: fp32");
    const ModelConfig *c = &m->cfg;
    int L = c->n_layers, C = c->d_model, F = c->ffn_hidden, V = c->vocab, n = 4 * L + 1;
    int QKV = C + 2 * model_kv_width(c);
    m->bmat = calloc(n, sizeof *m->bmat);
    m->bsrc = calloc(n, sizeof *m->bsrc);
    if (!m->bmat || !m->bsrc) fatal(EXIT_RUNTIME, "out of memory for the bf16 weights");
    size_t bytes = 0;
    for (int l = 0; l < L; l++) {
        const LayerWeights *w = &m->w.layer[l];
        const float *src[4] = { w->wqkv, w->wo, w->w13, w->w2 };
        int rows[4] = { QKV, C, 2 * F, C }, cols[4] = { C, C, C, F };
        for (int j = 0; j < 4; j++) {
            m->bmat[4 * l + j] = bf16_matrix_create(rows[j], cols[j]);
            m->bsrc[4 * l + j] = src[j];
            bytes += bf16_matrix_bytes(m->bmat[4 * l + j]);
            if (l == 0) matmul_bf16_prepare(rows[j], cols[j]);
            if (l == 0 && j == 2) matmul_bf16_prepare_out16(rows[j], cols[j], 0); /* w13 -> h13 in bf16 */
            if (l == 0 && j == 3) matmul_bf16_prepare_out16(rows[j], cols[j], 1); /* w2's dX -> dhact in bf16 */
        }
    }
    m->bmat[4 * L] = bf16_matrix_create(V, C);
    m->bsrc[4 * L] = m->w.head;
    bytes += bf16_matrix_bytes(m->bmat[4 * L]);
    matmul_bf16_prepare(V, C);
    int widest = 3 * C > 2 * F ? 3 * C : 2 * F;
    if (V > widest) widest = V;
    size_t rows = (size_t)m->cap_rows * m->cap_len;
    /* each product's input rounded, and q|k|v rounded: written by the forward,
     * read by the backward (a forward-only or recomputing model's layers share one set) */
    int per_layer = m->trainable && !m->recompute;
    size_t rows16 = (rows + 15) / 16 * 16;
    m->bin = calloc(n, sizeof *m->bin);
    m->bqkv = calloc(L, sizeof *m->bqkv);
    if (!m->bin || !m->bqkv) fatal(EXIT_RUNTIME, "out of memory for the bf16 activations");
    for (int i = 0; i < n; i++) {
        if (!per_layer && i >= 4 && i < 4 * L) {
            m->bin[i] = m->bin[i % 4];
            continue;
        }
        size_t cols = i < 4 * L && i % 4 == 3 ? (size_t)F : (size_t)C; /* w2 reads the SwiGLU output */
        m->bin[i] = xcalloc_aligned(sizeof(uint16_t) * rows16 * cols, "bf16 activations");
        bytes += sizeof(uint16_t) * rows16 * cols;
    }
    for (int l = 0; l < L; l++) {
        m->bqkv[l] = per_layer || l == 0 ? xcalloc_aligned(sizeof(uint16_t) * rows * 3 * C, "bf16 activations")
                                         : m->bqkv[0];
        if (per_layer || l == 0) bytes += sizeof(uint16_t) * rows * 3 * C;
    }
    attention_bf16_prepare(m->cap_len, C, c->n_heads);
    m->bscratch = bf16_scratch_create(rows, widest, m->cap_len, C, c->n_heads);
    m->bf16_bytes = bytes + bf16_scratch_bytes(rows, widest, m->cap_len, C, c->n_heads, pool_threads());
    m->bf16 = 1;
    m->bf16_stale = 1;
}

void model_params_changed(Model *m) { m->bf16_stale = 1; }

void model_round_bf16(Model *m)
{
    for (size_t i = 0; i < m->n_params; i++) m->params[i] = bf16_to_float(bf16_from_float(m->params[i]));
    model_params_changed(m);
}

/* the bf16 copies of the weights, rounded again if params changed */
static void refresh_bf16(Model *m)
{
    if (!m->bf16 || !m->bf16_stale) return;
    bf16_set_matrices(m->bmat, m->bsrc, 4 * m->cfg.n_layers + 1);
    m->bf16_stale = 0;
}

/* out[N,OUT] = inp[N,IN] W^T for weight w, which is bmat[wi] in bf16 */
static void mm_forward(Model *m, float *out, const float *inp, const float *w, int wi, int N, int IN, int OUT)
{
    if (m->bf16) matmul_forward_bf16(out, inp, m->bmat[wi], N, m->bscratch, m->bin[wi]);
    else matmul_forward(out, inp, w, N, IN, OUT);
}

/* y = rmsnorm(x) g, then out = y W^T. In bf16 the normalized rows go to
 * their rounded copy directly (nothing else reads y), and with out16 so
 * does out: bf16 values in out's first half (w13's h13, which only SwiGLU
 * reads). */
static void norm_mm_forward(Model *m, float *y, float *rstd, const float *x, const float *g, float *out, const float *w,
                            int wi, int N, int C, int OUT, int out16)
{
    if (m->bf16) {
        rmsnorm_forward_bf16(m->bin[wi], rstd, x, g, N, C, (float)m->cfg.norm_eps);
        if (out16) matmul_bf16_rounded_out16((uint16_t *)out, m->bin[wi], m->bmat[wi], N, m->bscratch);
        else matmul_bf16_rounded(out, m->bin[wi], m->bmat[wi], N, m->bscratch);
    } else {
        rmsnorm_forward(y, rstd, x, g, N, C, (float)m->cfg.norm_eps);
        matmul_forward(out, y, w, N, C, OUT);
    }
}

/* y = swiglu(h13), then out = y W^T; in bf16 h13 holds bf16 values and y
 * goes to its rounded copy */
static void swiglu_mm_forward(Model *m, float *y, const float *h13, float *out, const float *w, int wi, int N, int F,
                              int OUT)
{
    if (m->bf16) {
        swiglu_forward_bf16(m->bin[wi], (const uint16_t *)h13, N, F);
        matmul_bf16_rounded(out, m->bin[wi], m->bmat[wi], N, m->bscratch);
    } else {
        swiglu_forward(y, h13, N, F);
        matmul_forward(out, y, w, N, F, OUT);
    }
}

/* dinp = dout W (overwritten), dw += dout^T inp */
static void mm_backward(Model *m, float *dinp, float *dw, const float *dout, const float *inp, const float *w, int wi,
                        int N, int IN, int OUT)
{
    if (m->bf16) matmul_backward_bf16(dinp, 0.0f, dw, dout, NULL, inp, m->bin[wi], m->bmat[wi], N, m->bscratch);
    else matmul_backward_beta(dinp, 0.0f, dw, dout, inp, w, N, IN, OUT);
}

/* dh13 = swiglu'(h13) dhact, then the product's backward with it as dout;
 * in bf16 (h13 and dhact in bf16) dh13 goes straight to the rounded operand */
static void swiglu_mm_backward(Model *m, float *dh13, const float *dhact, const float *h13, float *dinp, float *dw,
                               const float *inp, const float *w, int wi, int N, int IN, int F)
{
    if (m->bf16) {
        uint16_t *d16 = bf16_scratch_operand(m->bscratch);
        swiglu_backward_bf16(d16, (const uint16_t *)dhact, (const uint16_t *)h13, N, F);
        matmul_backward_bf16(dinp, 0.0f, dw, NULL, d16, inp, m->bin[wi], m->bmat[wi], N, m->bscratch);
    } else {
        swiglu_backward_set(dh13, dhact, h13, N, F);
        matmul_backward_beta(dinp, 0.0f, dw, dh13, inp, w, N, IN, 2 * F);
    }
}

void model_free(Model *m)
{
    if (!m) return;
    free_bf16(m);
    xfree_aligned(m->params);
    xfree_aligned(m->grads);
    xfree_aligned(m->rope_cos);
    xfree_aligned(m->rope_sin);
    xfree_aligned(m->arena);
    xfree_aligned(m->qkv_kv);
    free(m->tensors);
    free(m->w.layer);
    free(m->g.layer);
    free(m->acts);
    free(m->resid);
    free(m);
}

void model_init_weights(Model *m, uint64_t seed)
{
    Rng rng = rng_seed(seed, 0x1417);
    double resid_std = 0.02 / sqrt(2.0 * m->cfg.n_layers); /* GPT-2's scaled init of residual outputs */
    for (int i = 0; i < m->n_tensors; i++) {
        const TensorInfo *t = &m->tensors[i];
        float *p = m->params + t->offset;
        int is_resid_out = strstr(t->name, ".wo") || strstr(t->name, ".w2");
        double std = is_resid_out ? resid_std : 0.02;
        for (size_t j = 0; j < t->numel; j++) p[j] = t->ndim == 1 ? 1.0f : (float)(std * rng_normal(&rng));
    }
    model_params_changed(m);
}

void model_zero_grad(Model *m) { zero_floats(m->grads, m->n_params); }

/* ---------------------------------------------------------------------- */
/* forward and backward                                                    */

static void check_shape(const Model *m, const Batch *b)
{
    if (b->B > m->cap_rows || b->T > m->cap_len)
        fatal(EXIT_RUNTIME, "internal: batch %dx%d exceeds the model's arena %dx%d", b->B, b->T, m->cap_rows,
              m->cap_len);
}

/* Block l: resid[l] -> resid[l + 1], its activations in acts[l] (the
 * forward, and with model.recompute the backward again, right before
 * block l's backward: the same inputs and code, so the same bits). */
static void block_forward(Model *m, const Batch *b, int l)
{
    const ModelConfig *c = &m->cfg;
    int B = b->B, T = b->T, N = B * T, C = c->d_model, F = c->ffn_hidden, H = c->n_heads;
    int QKV = C + 2 * model_kv_width(c);
    size_t NC = (size_t)N * C;
    const LayerWeights *w = &m->w.layer[l];
    LayerActs *a = &m->acts[l];
    /* attention block: x + wo(attn(rope(wqkv(norm(x))))) */
    norm_mm_forward(m, a->xn1, a->rstd1, m->resid[l], w->attn_norm, m->qkv_kv ? m->qkv_kv : a->qkv, w->wqkv, 4 * l,
                    N, C, QKV, 0);
    if (m->qkv_kv) repeat_kv(a->qkv, m->qkv_kv, N, C, H, c->n_kv_heads);
    if (m->bf16) { /* q, k rotated and q, k, v rounded in one pass; the fp32 qkv stays unrotated, unread */
        rope_forward_bf16(m->bqkv[l], a->qkv, b->pos, m->rope_cos, m->rope_sin, N, C, H);
        attention_forward_bf16(a->atto, (uint16_t *)a->att, NULL, m->bqkv[l], b->seg, b->vis, B, T, C, H, b->S, m->bscratch);
    } else {
        rope_forward(a->qkv, b->pos, m->rope_cos, m->rope_sin, N, C, H);
        if (m->flash)
            attention_forward_flash(a->atto, a->att_lse, m->d_att, m->d_att_floats, a->qkv, b->seg, b->vis, B, T, C,
                                    H, b->S);
        else
            attention_forward(a->atto, a->att, a->qkv, b->seg, b->vis, B, T, C, H, b->S);
    }
    mm_forward(m, m->tmp, a->atto, w->wo, 4 * l + 1, N, C, C);
    residual_forward(a->xmid, m->resid[l], m->tmp, NC);
    /* MLP block: x + w2(silu(w1 norm(x)) * w3 norm(x)) */
    norm_mm_forward(m, a->xn2, a->rstd2, a->xmid, w->mlp_norm, a->h13, w->w13, 4 * l + 2, N, C, 2 * F, 1);
    swiglu_mm_forward(m, a->hact, a->h13, m->tmp, w->w2, 4 * l + 3, N, F, C);
    residual_forward(m->resid[l + 1], a->xmid, m->tmp, NC);
}

void model_forward(Model *m, const Batch *b, float *logp)
{
    check_shape(m, b);
    const ModelConfig *c = &m->cfg;
    int N = b->B * b->T, C = c->d_model, V = c->vocab;
    refresh_bf16(m);
    embedding_forward(m->resid[0], b->tokens, m->w.tok_emb, N, C);
    for (int l = 0; l < c->n_layers; l++) block_forward(m, b, l);
    norm_mm_forward(m, m->xnf, m->rstdf, m->resid[c->n_layers], m->w.final_norm, m->logits, m->w.head,
                    4 * c->n_layers, N, C, V, 0);
    target_logp_forward(logp, m->lse, m->logits, b->targets, b->n_targets, N, V);
}

int model_grad_cuts(const Model *m, size_t *cuts, int cap)
{
    int L = m->cfg.n_layers, n = 0;
    if (m->n_tensors <= cap) { /* every tensor but tok_emb (offset 0, finished last); lm_head comes first */
        for (int i = 1; i < m->n_tensors; i++) cuts[n++] = m->tensors[i].offset;
    } else {
        if (L + 2 > cap) fatal(EXIT_RUNTIME, "internal: %d gradient cuts do not fit %d", L + 2, cap);
        for (int l = 0; l < L; l++) cuts[n++] = m->tensors[model_layer_tensor(l)].offset;
        cuts[n++] = m->tensors[model_layer_tensor(L)].offset; /* final_norm (and lm_head after it) */
    }
    cuts[n++] = m->n_params;
    return n;
}

void model_backward(Model *m, const Batch *b, const float *dlogp) { model_backward_hooked(m, b, dlogp, NULL, NULL); }

void model_backward_hooked(Model *m, const Batch *b, const float *dlogp, GradsReadyFn ready, void *ctx)
{
    if (!m->trainable) fatal(EXIT_RUNTIME, "internal: backward on a forward-only model");
    const ModelConfig *c = &m->cfg;
    int B = b->B, T = b->T, N = B * T, C = c->d_model, F = c->ffn_hidden, H = c->n_heads, V = c->vocab;
    int QKV = C + 2 * model_kv_width(c);
    size_t NC = (size_t)N * C;
    /* the scratch gradients are overwritten per use; only m->grads accumulates across calls */
    zero_floats(m->d_logits, (size_t)N * V);
    target_logp_backward(m->d_logits, dlogp, m->logits, m->lse, b->targets, b->n_targets, V);
    mm_backward(m, m->d_norm, m->g.head, m->d_logits, m->xnf, m->w.head, 4 * c->n_layers, N, C, V);
    if (ready && c->untied) ready(ctx, m->tensors[model_layer_tensor(c->n_layers) + 1].offset);
    zero_floats(m->d_resid, NC);
    rmsnorm_backward(m->d_resid, m->g.final_norm, m->d_norm, m->resid[c->n_layers], m->w.final_norm, m->rstdf, N, C);
    if (ready) ready(ctx, m->tensors[model_layer_tensor(c->n_layers)].offset);
    for (int l = c->n_layers - 1; l >= 0; l--) {
        const LayerWeights *w = &m->w.layer[l];
        LayerWeights *g = &m->g.layer[l];
        LayerActs *a = &m->acts[l];
        /* model.recompute: the one activation slot holds the last block's; rerun block l into it */
        if (m->recompute && l < c->n_layers - 1) block_forward(m, b, l);
        /* MLP block; d_resid holds dL/d(layer output) and flows on unchanged through the residual */
        /* each tensor's gradient is final right after its op: report it, so a
         * bucket can start (and the ones in flight progress) within the layer */
        const TensorInfo *lt = m->tensors + model_layer_tensor(l); /* attn_norm wqkv wo mlp_norm w13 w2 */
        /* (bf16: d_hact in bf16, in its first half; SwiGLU's backward is its only reader) */
        if (m->bf16)
            matmul_backward_bf16_out16((uint16_t *)m->d_hact, g->w2, m->d_resid, NULL, a->hact, m->bin[4 * l + 3],
                                       m->bmat[4 * l + 3], N, m->bscratch);
        else mm_backward(m, m->d_hact, g->w2, m->d_resid, a->hact, w->w2, 4 * l + 3, N, F, C);
        if (ready) ready(ctx, lt[5].offset);
        swiglu_mm_backward(m, m->d_h13, m->d_hact, a->h13, m->d_norm, g->w13, a->xn2, w->w13, 4 * l + 2, N, C, F);
        if (ready) ready(ctx, lt[4].offset);
        rmsnorm_backward(m->d_resid, g->mlp_norm, m->d_norm, a->xmid, w->mlp_norm, a->rstd2, N, C);
        if (ready) ready(ctx, lt[3].offset);
        /* attention block */
        mm_backward(m, m->d_atto, g->wo, m->d_resid, a->atto, w->wo, 4 * l + 1, N, C, C);
        if (ready) ready(ctx, lt[2].offset);
        if (!m->bf16) zero_floats(m->d_qkv, NC * 3); /* (the bf16 backward writes every element) */
        /* bf16 without GQA: dq, dk rotated back and dq, dk, dv rounded as the
         * attention backward writes them, straight into the qkv product's dout */
        uint16_t *d16 = m->bf16 && !m->qkv_kv ? bf16_scratch_operand(m->bscratch) : NULL;
        Bf16RopeBack rope = { d16, b->pos, m->rope_cos, m->rope_sin };
        if (m->bf16)
            attention_backward_bf16(m->d_qkv, d16 ? &rope : NULL, m->d_att, attention_scratch_floats(m->cap_len),
                                    m->d_atto, a->atto, (uint16_t *)a->att, NULL, m->bqkv[l], b->seg, b->vis, B, T, C, H,
                                    b->S, m->bscratch);
        else if (m->flash)
            attention_backward_flash(m->d_qkv, m->d_att, m->d_att_floats, m->d_atto, a->atto, a->att_lse, a->qkv,
                                     b->seg, b->vis, B, T, C, H, b->S);
        else
            attention_backward(m->d_qkv, m->d_att, m->d_att_floats, m->d_atto, a->att, a->qkv, b->seg, b->vis, B, T,
                               C, H, b->S);
        if (d16) {
            matmul_backward_bf16(m->d_norm, 0.0f, g->wqkv, NULL, d16, a->xn1, m->bin[4 * l], m->bmat[4 * l], N,
                                 m->bscratch);
        } else {
            rope_backward(m->d_qkv, b->pos, m->rope_cos, m->rope_sin, N, C, H);
            if (m->qkv_kv) repeat_kv_backward(m->qkv_kv, m->d_qkv, N, C, H, c->n_kv_heads);
            mm_backward(m, m->d_norm, g->wqkv, m->qkv_kv ? m->qkv_kv : m->d_qkv, a->xn1, w->wqkv, 4 * l, N, C, QKV);
        }
        if (ready) ready(ctx, lt[1].offset);
        rmsnorm_backward(m->d_resid, g->attn_norm, m->d_norm, m->resid[l], w->attn_norm, a->rstd1, N, C);
        if (ready) ready(ctx, lt[0].offset);
    }
    embedding_backward(m->g.tok_emb, m->d_resid, b->tokens, N, C);
}

double model_flops_per_token(const ModelConfig *c, int T)
{
    double C = c->d_model, F = c->ffn_hidden, L = c->n_layers, V = c->vocab;
    double Ckv = model_kv_width(c);
    double matmul_weights = L * ((C + 2 * Ckv) * C + C * C + 3 * C * F) + V * C; /* + the output head */
    return 6.0 * matmul_weights + 12.0 * L * T * C;
}

/* ---------------------------------------------------------------------- */
/* incremental decoding                                                    */

struct KVCache {
    int len, cap, max_chunk;
    float *k, *v;            /* [L][cap, C] */
    float *x, *xn, *rstd;    /* [chunk, C], [chunk] */
    float *qkv, *atto, *tmp; /* [chunk, 3C], [chunk, C], [chunk, C] */
    float *qkv_kv;           /* [chunk, C + 2Ckv] before repeat_kv; NULL without GQA */
    float *h13, *hact;       /* [chunk, 2F], [chunk, F] */
    float *scores;           /* [chunk, cap] */
    int32_t *pos;            /* [chunk] */
};

KVCache *kv_create(const Model *m, int max_chunk)
{
    const ModelConfig *c = &m->cfg;
    size_t C = c->d_model, F = c->ffn_hidden, L = c->n_layers, cap = c->max_seq, n = max_chunk;
    KVCache *kv = calloc(1, sizeof *kv);
    if (!kv) fatal(EXIT_RUNTIME, "out of memory for the KV cache");
    kv->cap = (int)cap;
    kv->max_chunk = max_chunk;
    kv->k = xmalloc_aligned(sizeof(float) * L * cap * C, "the KV cache");
    kv->v = xmalloc_aligned(sizeof(float) * L * cap * C, "the KV cache");
    kv->x = xmalloc_aligned(sizeof(float) * n * C, "decode scratch");
    kv->xn = xmalloc_aligned(sizeof(float) * n * C, "decode scratch");
    kv->rstd = xmalloc_aligned(sizeof(float) * n, "decode scratch");
    kv->qkv = xmalloc_aligned(sizeof(float) * n * 3 * C, "decode scratch");
    kv->atto = xmalloc_aligned(sizeof(float) * n * C, "decode scratch");
    kv->tmp = xmalloc_aligned(sizeof(float) * n * C, "decode scratch");
    kv->h13 = xmalloc_aligned(sizeof(float) * n * 2 * F, "decode scratch");
    kv->hact = xmalloc_aligned(sizeof(float) * n * F, "decode scratch");
    kv->scores = xmalloc_aligned(sizeof(float) * n * cap, "decode scratch");
    kv->pos = xmalloc_aligned(sizeof(int32_t) * n, "decode scratch");
    if (c->n_kv_heads < c->n_heads)
        kv->qkv_kv = xmalloc_aligned(sizeof(float) * n * (C + 2 * (size_t)model_kv_width(c)), "decode scratch");
    return kv;
}

void kv_free(KVCache *kv)
{
    if (!kv) return;
    float *bufs[] = { kv->k, kv->v, kv->x, kv->xn, kv->rstd, kv->qkv, kv->atto, kv->tmp, kv->h13, kv->hact,
                      kv->scores };
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) xfree_aligned(bufs[i]);
    xfree_aligned(kv->pos);
    xfree_aligned(kv->qkv_kv);
    free(kv);
}

void kv_reset(KVCache *kv) { kv->len = 0; }
int kv_len(const KVCache *kv) { return kv->len; }

int model_decode(Model *m, KVCache *kv, const int32_t *tokens, int n, float *logits)
{
    const ModelConfig *c = &m->cfg;
    int C = c->d_model, F = c->ffn_hidden, H = c->n_heads, V = c->vocab;
    float eps = (float)c->norm_eps;
    if (n < 1 || n > kv->max_chunk || kv->len + n > kv->cap) return -1;
    size_t nC = (size_t)n * C;
    for (int i = 0; i < n; i++) kv->pos[i] = kv->len + i;
    embedding_forward(kv->x, tokens, m->w.tok_emb, n, C);
    for (int l = 0; l < c->n_layers; l++) {
        const LayerWeights *w = &m->w.layer[l];
        float *kc = kv->k + (size_t)l * kv->cap * C, *vc = kv->v + (size_t)l * kv->cap * C;
        rmsnorm_forward(kv->xn, kv->rstd, kv->x, w->attn_norm, n, C, eps);
        if (kv->qkv_kv) {
            matmul_forward(kv->qkv_kv, kv->xn, w->wqkv, n, C, C + 2 * model_kv_width(c));
            repeat_kv(kv->qkv, kv->qkv_kv, n, C, H, c->n_kv_heads);
        } else
            matmul_forward(kv->qkv, kv->xn, w->wqkv, n, C, 3 * C);
        rope_forward(kv->qkv, kv->pos, m->rope_cos, m->rope_sin, n, C, H);
        for (int i = 0; i < n; i++) {
            memcpy(kc + (size_t)(kv->len + i) * C, kv->qkv + (size_t)i * 3 * C + C, sizeof(float) * C);
            memcpy(vc + (size_t)(kv->len + i) * C, kv->qkv + (size_t)i * 3 * C + 2 * C, sizeof(float) * C);
        }
        attention_cached_forward(kv->atto, kv->scores, kv->qkv, 3 * C, kc, vc, n, kv->len, C, H);
        matmul_forward(kv->tmp, kv->atto, w->wo, n, C, C);
        residual_forward(kv->x, kv->x, kv->tmp, nC);
        rmsnorm_forward(kv->xn, kv->rstd, kv->x, w->mlp_norm, n, C, eps);
        matmul_forward(kv->h13, kv->xn, w->w13, n, C, 2 * F);
        swiglu_forward(kv->hact, kv->h13, n, F);
        matmul_forward(kv->tmp, kv->hact, w->w2, n, F, C);
        residual_forward(kv->x, kv->x, kv->tmp, nC);
    }
    rmsnorm_forward(kv->xn, kv->rstd, kv->x, m->w.final_norm, n, C, eps);
    matmul_forward(logits, kv->xn, m->w.head, n, C, V);
    kv->len += n;
    return 0;
}
