/* Optimizer pieces against closed forms worked out by hand: the schedule's
 * landmarks, clipping, one AdamW / RMSprop step, and which tensors decay;
 * ZeRO-1's slices against the whole-vector update. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "src/model.h"
#include "src/optim.h"
#include "src/pool.h"
#include "tests/check.h"

static int close_to(double a, double b, double tol) { return fabs(a - b) <= tol * fmax(1.0, fabs(b)); }

static void test_schedule(void)
{
    Schedule s = { .kind = SCHED_COSINE, .lr = 1e-3f, .min_lr = 1e-4f, .warmup_steps = 10, .total_steps = 110 };
    check(close_to(schedule_lr(&s, 0), 1e-4, 1e-6) && close_to(schedule_lr(&s, 4), 5e-4, 1e-6) &&
              close_to(schedule_lr(&s, 9), 1e-3, 1e-6),
          "warmup ramps linearly to lr", "s0 %g s4 %g s9 %g", schedule_lr(&s, 0), schedule_lr(&s, 4),
          schedule_lr(&s, 9));
    check(close_to(schedule_lr(&s, 10), 1e-3, 1e-6) && close_to(schedule_lr(&s, 60), 5.5e-4, 1e-6) &&
              close_to(schedule_lr(&s, 110), 1e-4, 1e-6) && close_to(schedule_lr(&s, 500), 1e-4, 1e-6),
          "cosine: peak, midpoint (lr+min)/2, floor after the end", "s10 %g s60 %g s110 %g s500 %g",
          schedule_lr(&s, 10), schedule_lr(&s, 60), schedule_lr(&s, 110), schedule_lr(&s, 500));
    /* a quarter of the way: 0.5 (1 + cos(pi/4)) = 0.853553 */
    check(close_to(schedule_lr(&s, 35), 1e-4 + 9e-4 * 0.8535534, 1e-6), "cosine quarter point", "%g",
          schedule_lr(&s, 35));
    s.kind = SCHED_LINEAR;
    check(close_to(schedule_lr(&s, 60), 5.5e-4, 1e-6) && close_to(schedule_lr(&s, 35), 7.75e-4, 1e-6),
          "linear decay", "s35 %g s60 %g", schedule_lr(&s, 35), schedule_lr(&s, 60));
    s.kind = SCHED_CONSTANT;
    s.warmup_steps = 0;
    check(schedule_lr(&s, 0) == 1e-3f && schedule_lr(&s, 1000) == 1e-3f, "constant", "%g", schedule_lr(&s, 1000));
}

static void test_clip(void)
{
    float g[2] = { 3, 4 };
    double n = grad_clip(g, 2, 1.0);
    check(n == 5.0 && close_to(g[0], 0.6 * 5 / (5 + 1e-6), 1e-6) && close_to(g[1], 0.8 * 5 / (5 + 1e-6), 1e-6),
          "clip scales to max_norm", "norm %g -> (%g, %g)", n, g[0], g[1]);
    float h[2] = { 0.3f, 0.4f };
    grad_clip(h, 2, 1.0);
    check(h[0] == 0.3f && h[1] == 0.4f, "clip leaves small gradients alone", "(%g, %g)", h[0], h[1]);
    grad_clip(g, 2, 0.0);
    check(close_to(g[0], 0.6, 1e-5), "max_norm 0 disables clipping", "%g", g[0]);
}

/* A tiny model whose gradient we set by hand: one step must follow the formula. */
static void test_steps(void)
{
    ModelConfig cfg = { .vocab = 264, .d_model = 4, .n_layers = 1, .n_heads = 2, .ffn_hidden = 4, .max_seq = 2 };
    Model *m = model_create(&cfg, 1, 1, 1);
    const TensorInfo *emb = model_find_tensor(m, "tok_emb"), *nrm = model_find_tensor(m, "final_norm");
    for (size_t i = 0; i < m->n_params; i++) m->params[i] = 0.5f;
    model_zero_grad(m);
    m->grads[emb->offset] = 0.02f; /* one element with a gradient; all others zero */
    float lr = 0.1f;

    OptimConfig oc = { .kind = OPTIM_ADAMW, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .weight_decay = 0.1f };
    Optimizer o;
    optim_init(&o, &oc, m->n_params);
    optim_step(&o, m, lr);
    /* step 1: m_hat = g, v_hat = g^2 -> p = p (1 - lr wd) - lr g / (|g| + eps) */
    double want = 0.5 * (1 - 0.1 * 0.1) - 0.1 * 0.02 / (0.02 + 1e-8);
    check(close_to(m->params[emb->offset], want, 1e-6), "adamw step 1 closed form", "%.7f vs %.7f",
          m->params[emb->offset], want);
    check(close_to(m->params[emb->offset + 1], 0.5 * 0.99, 1e-6) && m->params[nrm->offset] == 0.5f,
          "adamw decays matrices only", "zero-grad matrix entry %.6f (want 0.495), norm gain %.6f (want 0.5)",
          m->params[emb->offset + 1], m->params[nrm->offset]);
    /* step 2 with g2: m = 0.1*0.9 g1 ... written out */
    double p1 = m->params[emb->offset], g1 = 0.02, g2 = -0.01;
    m->grads[emb->offset] = (float)g2;
    optim_step(&o, m, lr);
    double mm = 0.9 * 0.1 * g1 + 0.1 * g2, vv = 0.95 * 0.05 * g1 * g1 + 0.05 * g2 * g2;
    double mhat = mm / (1 - 0.81), vhat = vv / (1 - 0.95 * 0.95);
    want = p1 * (1 - 0.01) - 0.1 * mhat / (sqrt(vhat) + 1e-8);
    check(close_to(m->params[emb->offset], want, 1e-5), "adamw step 2 closed form", "%.7f vs %.7f",
          m->params[emb->offset], want);
    optim_free(&o);

    for (size_t i = 0; i < m->n_params; i++) m->params[i] = 0.5f;
    model_zero_grad(m);
    m->grads[emb->offset] = 0.02f;
    oc = (OptimConfig){ .kind = OPTIM_RMSPROP, .alpha = 0.99f, .eps = 1e-8f, .weight_decay = 0.1f };
    optim_init(&o, &oc, m->n_params);
    optim_step(&o, m, lr);
    /* g' = g + wd p; v = 0.01 g'^2; p -= lr g' / (0.1 |g'| + eps) */
    double gp = 0.02 + 0.1 * 0.5;
    want = 0.5 - 0.1 * gp / (0.1 * gp + 1e-8);
    check(close_to(m->params[emb->offset], want, 1e-5), "rmsprop step 1 closed form", "%.7f vs %.7f",
          m->params[emb->offset], want);
    check(m->params[nrm->offset] == 0.5f, "rmsprop decays matrices only", "norm gain %.6f (want 0.5)",
          m->params[nrm->offset]);
    optim_free(&o);
    model_free(m);
}

/* optim_shard_range: contiguous slices in rank order covering [0, n),
 * inner boundaries on 16-float lines, sizes within a line of n / world. */
static void test_shard_range(void)
{
    static const size_t ns[] = { 0, 1, 15, 17, 1000, 41376, 1234567 };
    static const int ws[] = { 1, 2, 3, 4, 7, 64 };
    int ok = 1;
    char why[160] = "";
    for (size_t i = 0; i < sizeof ns / sizeof *ns; i++)
        for (size_t j = 0; j < sizeof ws / sizeof *ws; j++) {
            size_t n = ns[i], prev = 0;
            int w = ws[j];
            for (int k = 0; k < w; k++) {
                size_t lo, hi;
                optim_shard_range(n, k, w, &lo, &hi);
                int bad = lo != prev || hi < lo || (k + 1 < w && hi % 16) || (k + 1 == w && hi != n) ||
                          (double)(hi - lo) > (double)n / w + 16;
                if (bad && ok) snprintf(why, sizeof why, "n %zu world %d rank %d: [%zu, %zu) after %zu", n, w, k, lo, hi, prev);
                ok &= !bad;
                prev = hi;
            }
        }
    check(ok, "shard ranges tile the parameters in rank order", "%s", why);
}

static void count_part(void *ctx, int part) { ((int *)ctx)[part]++; }

/* Slices updated one by one with the whole gradient's norm (what each rank
 * of a sharded run does; slice 1 part by part at cuts across tensors and
 * its ends, as train.c hands parts to the all-gather) give bitwise the
 * parameters and moments of one whole-vector step, with clipping active;
 * for both optimizers. */
static void test_slices(void)
{
    ModelConfig cfg = { .vocab = 264, .d_model = 8, .n_layers = 2, .n_heads = 2, .ffn_hidden = 16, .max_seq = 4 };
    Model *whole = model_create(&cfg, 1, 1, 1), *part = model_create(&cfg, 1, 1, 1);
    size_t n = whole->n_params;
    size_t cuts[] = { 0, 100, n / 3 + 7, n / 2, 2 * n / 3 + 5, n }; /* parts 0 and 4 miss slice 1 (below) */
    int n_parts = (int)(sizeof cuts / sizeof *cuts) - 1, calls[8] = { 0 };
    for (int kind = OPTIM_ADAMW; kind <= OPTIM_RMSPROP; kind++) {
        OptimConfig oc = { .kind = kind, .beta1 = 0.9f, .beta2 = 0.95f, .alpha = 0.99f, .eps = 1e-8f,
                           .weight_decay = 0.1f, .max_grad_norm = 0.5f };
        enum { W = 3 };
        Optimizer o, sl[W];
        optim_init(&o, &oc, n);
        for (int k = 0; k < W; k++) {
            size_t lo, hi;
            optim_shard_range(n, k, W, &lo, &hi);
            optim_init_slice(&sl[k], &oc, n, lo, hi);
        }
        for (size_t i = 0; i < n; i++) whole->params[i] = part->params[i] = 0.01f * (float)((i * 37) % 101) - 0.5f;
        double norm = 0;
        for (int step = 0; step < 3; step++) {
            for (size_t i = 0; i < n; i++) whole->grads[i] = part->grads[i] = 0.003f * (float)((i * 53 + step * 7) % 89) - 0.12f;
            norm = optim_step(&o, whole, 1e-2f);
            double sumsq = 0;
            for (int k = 0; k < W; k++) sumsq += optim_slice_sumsq(&sl[k], part->grads);
            for (int k = 0; k < W; k++)
                if (k == 1) optim_update_parts(&sl[k], part, 1e-2f, sqrt(sumsq), cuts, n_parts, count_part, calls);
                else optim_update(&sl[k], part, 1e-2f, sqrt(sumsq));
        }
        int same = memcmp(whole->params, part->params, n * sizeof(float)) == 0;
        for (int k = 0; k < W; k++) {
            size_t len = sl[k].hi - sl[k].lo;
            if (kind == OPTIM_ADAMW) same &= memcmp(o.m + sl[k].lo, sl[k].m, len * sizeof(float)) == 0;
            same &= memcmp(o.v + sl[k].lo, sl[k].v, len * sizeof(float)) == 0 && sl[k].t == o.t;
        }
        int each = 1;
        for (int b = 0; b < n_parts; b++) each &= calls[b] == 3 * (kind + 1);
        check(same && norm > 0.5 && each && sl[1].lo > cuts[1] && sl[1].hi < cuts[4],
              kind == OPTIM_ADAMW ? "adamw: 3 slices (one part by part) equal the whole update bitwise"
                                  : "rmsprop: 3 slices (one part by part) equal the whole update bitwise",
              "%zu params, norm %.3f clipped to 0.5; slice 1 [%zu, %zu) in %d parts, each reported %d times",
              n, norm, sl[1].lo, sl[1].hi, n_parts, calls[0]);
        size_t held = 0;
        for (int k = 0; k < W; k++) held += optim_state_bytes(sl[k].cfg.kind, sl[k].hi - sl[k].lo);
        check(held == n * sizeof(float) * (kind == OPTIM_ADAMW ? 2 : 1), "the slices hold the state once",
              "%zu bytes over %d slices for %zu params", held, W, n);
        optim_free(&o);
        for (int k = 0; k < W; k++) optim_free(&sl[k]);
    }
    model_free(whole);
    model_free(part);
}

/* The global norm sums on the pool in fixed parts: against a serial sum in
 * long double, and bitwise the same at 1, 2 and 3 threads, for lengths
 * shorter than its 64 parts, not a multiple of 8, and large. */
static void test_global_norm(void)
{
    size_t lens[] = { 1, 7, 63, 1001, 300007 };
    int ok = 1, same = 1;
    double worst = 0;
    for (size_t c = 0; c < sizeof lens / sizeof lens[0]; c++) {
        size_t n = lens[c];
        float *g = malloc(n * sizeof *g);
        long double ref = 0;
        for (size_t i = 0; i < n; i++) {
            g[i] = (float)sin(0.37 * (double)i + 1.0) * (i % 97 == 0 ? 100.0f : 0.01f);
            ref += (long double)g[i] * g[i];
        }
        double norm[3];
        for (int th = 1; th <= 3; th++) {
            pool_set_threads(th);
            norm[th - 1] = grad_global_norm(g, n);
        }
        pool_set_threads(1);
        double rel = fabs(norm[0] - (double)sqrtl(ref)) / (double)sqrtl(ref);
        worst = rel > worst ? rel : worst;
        ok &= rel < 1e-14;
        same &= norm[0] == norm[1] && norm[0] == norm[2];
        free(g);
    }
    check(ok, "global norm equals a serial long-double sum", "worst relative difference %.2g over 5 lengths (1 to 300007)",
          worst);
    check(same, "global norm bitwise equal at 1, 2, 3 pool threads", "5 lengths");
}

int main(void)
{
    test_schedule();
    test_clip();
    test_global_norm();
    test_steps();
    test_shard_range();
    test_slices();
    return check_status();
}
