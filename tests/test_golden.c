/* The C model against the PyTorch reference (tests/torch_ref.py): logits,
 * loss, every gradient, and parameters after 3 AdamW and 3 RMSprop steps.
 * usage: test_golden GOLDEN_FILE */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "src/model.h"
#include "src/optim.h"
#include "tests/check.h"
#include "tests/golden.h"

static const GoldenRecord *need(const Golden *g, const char *name, size_t count)
{
    const GoldenRecord *r = golden_find(g, name);
    if (!r) {
        fprintf(stderr, "test_golden: record '%s' missing\n", name);
        exit(1);
    }
    if (count && r->count != count) {
        fprintf(stderr, "test_golden: record '%s' has %zu values, expected %zu\n", name, r->count, count);
        exit(1);
    }
    return r;
}

static void load_params(Model *m, const Golden *g, const char *prefix)
{
    for (int i = 0; i < m->n_tensors; i++) {
        char name[96];
        snprintf(name, sizeof name, "%s%s", prefix, m->tensors[i].name);
        const GoldenRecord *r = need(g, name, m->tensors[i].numel);
        memcpy(m->params + m->tensors[i].offset, r->data, sizeof(float) * r->count);
    }
}

/* Compares every tensor of `buf` with golden "<prefix><name>"; one check per
 * tensor so a failure names the tensor. */
static void compare_tensors(const Model *m, const float *buf, const Golden *g, const char *prefix, double tol,
                            const char *what)
{
    for (int i = 0; i < m->n_tensors; i++) {
        const TensorInfo *t = &m->tensors[i];
        char name[96], label[160];
        snprintf(name, sizeof name, "%s%s", prefix, t->name);
        const GoldenRecord *r = need(g, name, t->numel);
        double e = rel_err(buf + t->offset, r->data, t->numel, 1e-12);
        snprintf(label, sizeof label, "%s %s", what, t->name);
        check(e < tol, label, "rel err %.2e (tol %.0e)", e, tol);
    }
}

static void run_steps(Model *m, const Batch *b, Optimizer *opt, const float *lrs, int steps, float *logp,
                      float *dlogp)
{
    for (int s = 0; s < steps; s++) {
        model_zero_grad(m);
        model_forward(m, b, logp);
        model_backward(m, b, dlogp);
        optim_step(opt, m, lrs[s]);
    }
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: test_golden GOLDEN_FILE\n");
        return 2;
    }
    Golden g;
    char err[512];
    if (golden_load(argv[1], &g, err, sizeof err) != 0) {
        fprintf(stderr, "test_golden: %s\n", err);
        return 1;
    }
    const int *cf = need(&g, "config", 9)->data;
    ModelConfig cfg = { cf[0], cf[1], cf[2], cf[3], cf[4], cf[5], 0, 0, 0, 0 };
    int B = cf[6], T = cf[7], S = cf[8];
    Model *m = model_create(&cfg, 1, B, T);
    load_params(m, &g, "param.");

    const GoldenRecord *tg = golden_find(&g, "targets");
    int K = tg ? tg->dims[0] : 0;
    Batch b;
    batch_alloc(&b, B, T, S, K);
    batch_reset(&b, B, T, S);
    memcpy(b.tokens, need(&g, "tokens", (size_t)B * T)->data, sizeof(int32_t) * B * T);
    memcpy(b.pos, need(&g, "pos", (size_t)B * T)->data, sizeof(int32_t) * B * T);
    memcpy(b.seg, need(&g, "seg", (size_t)B * T)->data, sizeof(int32_t) * B * T);
    const int *vis = need(&g, "vis", (size_t)B * S * S)->data;
    for (int i = 0; i < B * S * S; i++) b.vis[i] = (uint8_t)vis[i];
    const int *tpair = need(&g, "targets", (size_t)K * 2)->data;
    const float *tw = need(&g, "target_w", K)->data;
    for (int k = 0; k < K; k++) b.targets[k] = (Target){ tpair[2 * k], tpair[2 * k + 1], tw[k] };
    b.n_targets = K;
    check(batch_validate(&b, cfg.vocab, cfg.max_seq, err, sizeof err) == 0, "golden batch valid", "%s", err);

    float *logp = calloc(K, sizeof(float)), *dlogp = calloc(K, sizeof(float));
    for (int k = 0; k < K; k++) dlogp[k] = -tw[k]; /* loss = -sum w logp */

    /* forward */
    model_zero_grad(m);
    model_forward(m, &b, logp);
    const GoldenRecord *gl = need(&g, "logits", (size_t)B * T * cfg.vocab);
    double e = rel_err(m->logits, gl->data, gl->count, 1e-12);
    check(e < 1e-4, "logits", "rel err %.2e (tol 1e-4)", e);
    e = rel_err(logp, need(&g, "target_logp", K)->data, K, 1e-12);
    check(e < 1e-4, "target logp", "rel err %.2e (tol 1e-4)", e);
    double loss = 0, gloss = ((const float *)need(&g, "loss", 1)->data)[0];
    for (int k = 0; k < K; k++) loss -= tw[k] * logp[k];
    e = fabs(loss - gloss) / fabs(gloss);
    check(e < 1e-4, "loss", "%.7f vs torch %.7f, rel err %.2e (tol 1e-4)", loss, gloss, e);

    /* backward */
    model_backward(m, &b, dlogp);
    compare_tensors(m, m->grads, &g, "grad.", 1e-3, "grad");

    /* optimizers from the same initial weights */
    const float *ahp = need(&g, "adamw_hp", 6)->data, *alrs = need(&g, "adamw_lrs", 3)->data;
    OptimConfig oc = { .kind = OPTIM_ADAMW, .beta1 = ahp[1], .beta2 = ahp[2], .eps = ahp[3],
                       .weight_decay = ahp[4], .max_grad_norm = ahp[5] };
    Optimizer opt;
    load_params(m, &g, "param.");
    optim_init(&opt, &oc, m->n_params);
    run_steps(m, &b, &opt, alrs, 3, logp, dlogp);
    compare_tensors(m, m->params, &g, "adamw.", 1e-5, "adamw 3 steps");
    optim_free(&opt);

    const float *rhp = need(&g, "rmsprop_hp", 5)->data;
    float rlrs[3] = { rhp[0], rhp[0], rhp[0] };
    oc = (OptimConfig){ .kind = OPTIM_RMSPROP, .alpha = rhp[1], .eps = rhp[2], .weight_decay = rhp[3],
                        .max_grad_norm = rhp[4] };
    load_params(m, &g, "param.");
    optim_init(&opt, &oc, m->n_params);
    run_steps(m, &b, &opt, rlrs, 3, logp, dlogp);
    compare_tensors(m, m->params, &g, "rmsprop.", 1e-5, "rmsprop 3 steps");
    optim_free(&opt);

    free(logp);
    free(dlogp);
    batch_free(&b);
    model_free(m);
    golden_free(&g);
    return check_status();
}
