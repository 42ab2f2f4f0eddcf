/* model: a Llama-style decoder (docs/model.md is the exact definition).
 *
 * All parameters live in one flat buffer (and so do their gradients), with
 * named views per tensor: allreduce, checkpoints and checksums then work on
 * flat memory. Activations live in one arena sized at creation from the
 * largest batch the model will see; nothing is allocated per step. */
#ifndef FSPO_MODEL_H
#define FSPO_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "src/batch.h"

typedef struct {
    int vocab, d_model, n_layers, n_heads, ffn_hidden, max_seq;
    int n_kv_heads;    /* key/value heads (grouped-query attention), dividing n_heads; 0 = n_heads */
    int untied;        /* 1: a separate output head lm_head [V, C]; 0: tok_emb is the head (model.tie_embeddings) */
    double rope_theta; /* RoPE base; 0 = 10000 */
    double norm_eps;   /* RMSNorm epsilon; 0 = 1e-5 */
} ModelConfig;

/* Checks sizes (fills ffn_hidden, n_kv_heads, rope_theta and norm_eps when
 * 0); 0, or -1 with a message that names the offending key as in the
 * config file (model.d_model, ...). */
int model_config_validate(ModelConfig *cfg, char *err, size_t errlen);
/* The same; on failure keys[0] and keys[1] name the model keys the message
 * is about, without "model." (NULL when fewer), so a config error can point
 * at the right line without reading the message. */
int model_config_check(ModelConfig *cfg, const char **keys, char *err, size_t errlen);
/* Ckv: the width of the key (and of the value) projection, n_kv_heads times
 * the head size (d_model without grouped-query attention). */
int model_kv_width(const ModelConfig *cfg);

typedef struct {
    float *attn_norm; /* [C] */
    float *wqkv;      /* [C + 2 Ckv, C]: q | k | v, Ckv = n_kv_heads * head size (= C without GQA) */
    float *wo;        /* [C, C] */
    float *mlp_norm;  /* [C] */
    float *w13;       /* [2F, C] */
    float *w2;        /* [C, F] */
} LayerWeights;

/* Named views into one flat buffer (parameters, gradients or moments). */
typedef struct {
    float *tok_emb;      /* [V, C] */
    LayerWeights *layer; /* [L] */
    float *final_norm;   /* [C] */
    float *head;         /* [V, C] the output head: tok_emb when tied, else the lm_head tensor */
} Weights;

typedef struct {
    char name[48];
    int ndim, shape[2];
    size_t offset, numel; /* in floats, into the flat buffer */
    int decay;            /* weight decay applies (matrices yes, norm gains no) */
} TensorInfo;

/* The tensor table's layout, written here once (model.c builds the table,
 * io/ckpt.c verifies it, io/hf.c maps it to Hugging Face names): tok_emb;
 * per layer MODEL_LAYER_TENSORS tensors, attn_norm wqkv wo mlp_norm w13 w2;
 * final_norm; lm_head when untied. */
enum { MODEL_LAYER_TENSORS = 6 };
/* Tensors of a model of shape c. */
static inline int model_tensor_count(const ModelConfig *c) { return 2 + MODEL_LAYER_TENSORS * c->n_layers + c->untied; }
/* Index of layer l's first tensor (attn_norm); l = n_layers gives final_norm. */
static inline int model_layer_tensor(int l) { return 1 + MODEL_LAYER_TENSORS * l; }

typedef struct LayerActs LayerActs;

typedef struct {
    ModelConfig cfg;
    size_t n_params;
    int n_tensors;
    TensorInfo *tensors;
    float *params; /* [n_params] */
    float *grads;  /* [n_params], NULL for a forward-only model */
    Weights w, g;
    float *rope_cos, *rope_sin; /* [max_seq, hd/2] */
    /* activation arena */
    int cap_rows, cap_len, trainable;
    int flash;                /* ATTENTION_FLASH: no acts[l].att; d_att is the flash scratch (forward and backward) */
    int recompute;            /* model.recompute: acts[l] all alias one slot; the backward reruns each block's forward */
    float *arena;
    size_t arena_floats;
    LayerActs *acts;          /* [L] per-layer views (all alias one slot when forward-only) */
    float **resid;            /* [L+1] residual stream at each layer's input; resid[L] is the last */
    float *xnf, *rstdf;       /* final norm output [N,C] and its rstd [N] */
    float *logits, *lse;      /* [N,V], [N] */
    float *tmp;               /* [N,C] projection output before the residual add */
    float *d_resid, *d_norm, *d_atto, *d_qkv, *d_h13, *d_hact, *d_logits, *d_att; /* backward scratch */
    size_t d_att_floats;      /* d_att's size: attention's scratch (flash: also the forward's; NULL/0 if unused) */
    float *qkv_kv;            /* [N, C + 2Ckv] the wqkv product (and its gradient) before the key/value heads are
                                 repeated for grouped-query attention; NULL without GQA */
    /* bf16 products (model_set_precision); all 0/NULL in fp32 */
    int bf16;
    int bf16_stale;                 /* params changed since bmat was rounded from them */
    struct Bf16Matrix **bmat;       /* [4L + 1]: each layer's wqkv, wo, w13, w2, then the output head */
    const float **bsrc;             /* [4L + 1]: the fp32 tensors they are rounded from */
    struct Bf16Scratch *bscratch;
    uint16_t **bin;                 /* [4L + 1] each product's input as the forward rounded it */
    uint16_t **bqkv;                /* [L] q|k|v as the forward rounded them */
    size_t bf16_bytes;              /* what the above holds */
} Model;

typedef enum { PRECISION_FP32 = 0, PRECISION_BF16 = 1 } Precision;

/* How attention keeps what its backward needs (model.attention; docs/model.md,
 * "Attention memory"): FULL saves every layer's [B,H,T,T] probabilities;
 * FLASH saves only their log-sum-exps [B,H,T] and recomputes them tile by
 * tile in the backward (attention_forward_flash), with the same results to
 * fp32 rounding. Not part of ModelConfig: that is the shape checkpoints compare. */
typedef enum { ATTENTION_FULL = 0, ATTENTION_FLASH = 1 } AttentionKind;
static const char *const ATTENTION_NAMES[] = { "full", "flash", NULL };

/* What a training model keeps for its backward (docs/model.md, "Attention
 * memory" and "Recomputing blocks"): `attention` as above; `recompute`
 * (model.recompute) keeps only each block's input (the residual stream)
 * and one block's activations, and runs each block's forward again right
 * before its backward: the same gradients bit for bit, activations of one
 * layer instead of L, one more forward of the blocks per step. */
typedef struct {
    AttentionKind attention;
    int recompute;
} ActKeep;

/* A model able to run batches of up to max_rows rows of max_len tokens.
 * trainable = 0 builds a forward-only model (no gradients; one activation
 * slot reused by every layer), as the frozen reference model needs. */
Model *model_create(const ModelConfig *cfg, int trainable, int max_rows, int max_len);
/* The same keeping what `keep` says (model_create: full attention, no recompute). */
Model *model_create_keep(const ModelConfig *cfg, int trainable, int max_rows, int max_len, ActKeep keep);

/* Parameters of a (validated) model shape: the layout model_create builds. */
size_t model_param_count(const ModelConfig *cfg);
/* The tensor table and parameter count of a shape, nothing else allocated
 * (no weights, no arena): what `fspo model` prints for shapes of any size.
 * model_free() releases it. */
Model *model_layout(const ModelConfig *cfg);

/* Bytes one training rank needs for a validated shape and micro-batches
 * of `rows` rows of max_seq tokens: 16 per parameter (weights, gradients,
 * AdamW moments) and the activation arena; with_ref adds the frozen
 * reference model of a preference stage (4 per parameter and a
 * forward-only arena). A lower bound: no BLAS buffers or batch staging. */
double model_train_bytes(const ModelConfig *cfg, int rows, int with_ref);
/* The same keeping what `keep` says (model_train_bytes: full attention, no recompute). */
double model_train_bytes_keep(const ModelConfig *cfg, int rows, int with_ref, ActKeep keep);
void model_free(Model *m);

/* Views of a flat buffer laid out like the parameters. */
void model_views(const Model *m, float *base, Weights *out);
const TensorInfo *model_find_tensor(const Model *m, const char *name);

void model_init_weights(Model *m, uint64_t seed);

/* Runs the matmuls of model_forward and model_backward (layer products,
 * attention's QK^T and PV, the tied output head) with bf16 operands and fp32
 * accumulation, or back in fp32 (docs/model.md, "Precision"); parameters,
 * gradients and everything else stay fp32, and model_decode stays fp32.
 * bf16 needs bf16_supported() (the caller checks: bf16_resolve). It keeps
 * bf16 copies of the weight matrices, rounded on the first forward after a
 * change, and creates here every oneDNN primitive the steps use. */
void model_set_precision(Model *m, Precision p);
/* Marks the bf16 weight copies stale. optim_step, ckpt_load and
 * model_init_weights call it; so must any other code that writes m->params. */
void model_params_changed(Model *m);
/* Rounds every parameter to the nearest bfloat16 value (ties to even), kept
 * as float32: what a bf16-stored weights file holds (fspo model strip --bf16). */
void model_round_bf16(Model *m);
void model_zero_grad(Model *m);

/* Runs the batch; logp[k] = log-prob of target k. Logits stay in m->logits. */
void model_forward(Model *m, const Batch *b, float *logp);
/* Accumulates into m->grads the gradient of a loss whose derivative with
 * respect to each target's log-prob is dlogp[k]. Needs the forward of the
 * same batch just before. */
void model_backward(Model *m, const Batch *b, const float *dlogp);
/* The same, calling ready(ctx, from) whenever grads[from..n_params) are
 * final (after the final norm, then after each tensor of each layer, last
 * layer first), so a data-parallel caller can start reducing them during
 * the backward (and progress the reductions in flight). */
typedef void (*GradsReadyFn)(void *ctx, size_t from);
void model_backward_hooked(Model *m, const Batch *b, const float *dlogp, GradsReadyFn ready, void *ctx);
/* Offsets where the backward finishes gradient ranges, increasing, ending
 * with n_params (for dist_reducer_create): every tensor's start (6L + 2
 * cuts), or every layer's (L + 2) if cap is below that. Returns how many. */
int model_grad_cuts(const Model *m, size_t *cuts, int cap);

/* Training FLOPs per token at row length T (forward + backward), written
 * down in docs/benchmarks.md: 6 * (matmul weights) + 12 * L * T * C. */
double model_flops_per_token(const ModelConfig *cfg, int T);
/* Bytes of the activation arena for a shape, so callers can report memory. */
size_t model_arena_bytes(const ModelConfig *cfg, int trainable, int max_rows, int max_len);
/* The same keeping what `keep` says (model_arena_bytes: full attention, no recompute). */
size_t model_arena_bytes_keep(const ModelConfig *cfg, int trainable, int max_rows, int max_len, ActKeep keep);

/* Incremental decoding for one sequence with a key/value cache. */
typedef struct KVCache KVCache;
KVCache *kv_create(const Model *m, int max_chunk);
void kv_free(KVCache *kv);
void kv_reset(KVCache *kv);
int kv_len(const KVCache *kv);
/* Appends n tokens (n <= max_chunk, positions kv_len.. ) and writes their
 * next-token logits to logits[n,V]. Returns -1 if the cache would overflow
 * model.max_seq. */
int model_decode(Model *m, KVCache *kv, const int32_t *tokens, int n, float *logits);

#endif
