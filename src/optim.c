/* optim: update rules; see optim.h and docs/model.md. */
#include "src/optim.h"

#include <math.h>
#include <string.h>

#include "src/pool.h"
#include "src/util.h"

/* The elementwise loops below run on the pool, split anywhere (each element's
 * update depends on that element only, so results are bitwise the same for
 * every split), and vectorized by GCC (`restrict` pointers; -O2's
 * vectorizer takes AdamW's loop only with the dynamic cost model, asked for
 * here): the same IEEE operations lane by lane as the scalar loop (sqrt and
 * division are correctly rounded, and -std=c11 contracts no multiply-add). */
#if defined(__GNUC__) && !defined(__clang__)
#define VECTORIZE __attribute__((optimize("vect-cost-model=dynamic")))
#else
#define VECTORIZE
#endif

void optim_init_slice(Optimizer *o, const OptimConfig *cfg, size_t n, size_t lo, size_t hi)
{
    if (lo > hi || hi > n) fatal(EXIT_RUNTIME, "internal: optimizer slice [%zu, %zu) of %zu params", lo, hi, n);
    memset(o, 0, sizeof *o);
    o->cfg = *cfg;
    o->n = n;
    o->lo = lo, o->hi = hi;
    size_t len = hi - lo > 0 ? hi - lo : 1; /* an empty slice still gets a valid buffer */
    if (cfg->kind == OPTIM_ADAMW) o->m = xcalloc_aligned(len * sizeof(float), "AdamW first moments");
    o->v = xcalloc_aligned(len * sizeof(float), "optimizer second moments");
}

void optim_init(Optimizer *o, const OptimConfig *cfg, size_t n) { optim_init_slice(o, cfg, n, 0, n); }

size_t optim_state_bytes(OptimKind kind, size_t n) { return n * sizeof(float) * (kind == OPTIM_ADAMW ? 2 : 1); }

void optim_shard_range(size_t n, int rank, int world, size_t *lo, size_t *hi)
{
    /* floor(n k / world) without overflow, rounded down to 16 floats: each
     * rank's slice starts on its own 64-byte line */
    size_t q = n / (size_t)world, r = n % (size_t)world;
    size_t a = (q * (size_t)rank + r * (size_t)rank / (size_t)world) & ~(size_t)15;
    size_t b = (q * (size_t)(rank + 1) + r * (size_t)(rank + 1) / (size_t)world) & ~(size_t)15;
    *lo = a, *hi = rank + 1 == world ? n : b;
}

void optim_free(Optimizer *o)
{
    xfree_aligned(o->m);
    xfree_aligned(o->v);
    memset(o, 0, sizeof *o);
}

/* Sum of squares of g[lo, hi) in double, on the pool. The range is cut into
 * SUMSQ_PARTS fixed parts, each summed in 8 lanes (element i into lane
 * i % 8 of its part, the lanes added pairwise), and the parts' sums are
 * added in order: the result depends on the range only, not on the thread
 * count, and the loop vectorizes (a single serial sum was 4% of a bf16 step
 * at one thread and more at two). */
#define SUMSQ_PARTS 64

typedef struct {
    const float *g;
    size_t lo, hi;
    double part[SUMSQ_PARTS];
} SumsqArgs;

static VECTORIZE void sumsq_task(void *ctx, int t, int nt)
{
    SumsqArgs *a = ctx;
    size_t p0, p1;
    pool_range(SUMSQ_PARTS, t, nt, &p0, &p1);
    for (size_t p = p0; p < p1; p++) {
        size_t lo, hi;
        pool_range(a->hi - a->lo, (int)p, SUMSQ_PARTS, &lo, &hi);
        const float *restrict g = a->g + a->lo + lo;
        size_t n = hi - lo, i = 0;
        double l[8] = { 0 };
        for (; i + 8 <= n; i += 8)
            for (int k = 0; k < 8; k++) l[k] += (double)g[i + k] * g[i + k];
        for (; i < n; i++) l[i % 8] += (double)g[i] * g[i];
        a->part[p] = ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
    }
}

static double sumsq(const float *g, size_t lo, size_t hi)
{
    SumsqArgs a = { .g = g, .lo = lo, .hi = hi };
    pool_run(sumsq_task, &a);
    double s = 0.0;
    for (int p = 0; p < SUMSQ_PARTS; p++) s += a.part[p];
    return s;
}

double grad_global_norm(const float *g, size_t n) { return sqrt(sumsq(g, 0, n)); }

double optim_slice_sumsq(const Optimizer *o, const float *g) { return sumsq(g, o->lo, o->hi); }

typedef struct {
    float *g;
    size_t n;
    double coef;
} ScaleArgs;

static VECTORIZE void scale_task(void *ctx, int t, int nt)
{
    const ScaleArgs *a = ctx;
    size_t lo, hi;
    pool_range(a->n, t, nt, &lo, &hi);
    float *restrict g = a->g;
    double coef = a->coef;
    for (size_t i = lo; i < hi; i++) g[i] = (float)(g[i] * coef);
}

/* What clipping to max_norm multiplies a gradient of this norm by (1: none) */
static double clip_coef(double norm, double max_norm)
{
    double coef = max_norm > 0 ? max_norm / (norm + 1e-6) : 1.0;
    return coef < 1.0 ? coef : 1.0;
}

/* Scales g[0, n) as clipping to max_norm scales a gradient of this norm. */
static void clip_to(float *g, size_t n, double norm, double max_norm)
{
    double coef = clip_coef(norm, max_norm);
    if (coef < 1.0) {
        ScaleArgs a = { g, n, coef };
        pool_run(scale_task, &a);
    }
}

double grad_clip(float *g, size_t n, double max_norm)
{
    double norm = grad_global_norm(g, n);
    clip_to(g, n, norm, max_norm);
    return norm;
}

/* AdamW on n elements of one tensor (p, g, m, v at the first), the gradient
 * clipped on the fly: g * clip rounds to what clip_to would have stored
 * (clip 1: g itself), so fusing it saves a pass over the gradients, bitwise */
static VECTORIZE void adamw_range(float *restrict p, const float *restrict g, float *restrict m, float *restrict v,
                                  size_t n, double clip, float b1, float b2, float step_size, float sqrt_bc2,
                                  float shrink, float eps)
{
    for (size_t i = 0; i < n; i++) {
        float gi = (float)(g[i] * clip);
        m[i] = b1 * m[i] + (1.0f - b1) * gi;
        v[i] = b2 * v[i] + (1.0f - b2) * gi * gi;
        p[i] = p[i] * shrink - step_size * m[i] / (sqrtf(v[i]) / sqrt_bc2 + eps);
    }
}

typedef struct {
    Optimizer *o;
    Model *model;
    float lr;
    double clip;   /* the clipping coefficient (1: none) */
    size_t lo, hi; /* the elements to update, inside o's slice */
} StepArgs;

/* thread t's share of [a->lo, a->hi) of the flat parameters, tensor by
 * tensor (for the decay flag); the moments are indexed from the slice's start */
static void adamw_task(void *ctx, int t, int nt)
{
    const StepArgs *a = ctx;
    const Optimizer *o = a->o;
    const OptimConfig *c = &o->cfg;
    float b1 = c->beta1, b2 = c->beta2, lr = a->lr;
    float bc1 = 1.0f - powf(b1, (float)o->t), bc2 = 1.0f - powf(b2, (float)o->t);
    float step_size = lr / bc1, sqrt_bc2 = sqrtf(bc2);
    size_t lo, hi;
    pool_range(a->hi - a->lo, t, nt, &lo, &hi);
    lo += a->lo, hi += a->lo;
    float *p = a->model->params, *g = a->model->grads;
    for (int i = 0; i < a->model->n_tensors; i++) {
        const TensorInfo *ti = &a->model->tensors[i];
        size_t s = ti->offset > lo ? ti->offset : lo, e = ti->offset + ti->numel < hi ? ti->offset + ti->numel : hi;
        if (s >= e) continue;
        float shrink = ti->decay ? 1.0f - lr * c->weight_decay : 1.0f;
        adamw_range(p + s, g + s, o->m + (s - o->lo), o->v + (s - o->lo), e - s, a->clip, b1, b2, step_size, sqrt_bc2,
                    shrink, c->eps);
    }
}

/* RMSprop on n elements of one tensor (p, g, v at the first) */
static void rmsprop_range(const OptimConfig *c, float *p, const float *g, float *v, size_t n, float lr, int decay)
{
    float a = c->alpha, wd = decay ? c->weight_decay : 0.0f;
    for (size_t i = 0; i < n; i++) {
        float gi = g[i] + wd * p[i];
        v[i] = a * v[i] + (1.0f - a) * gi * gi;
        p[i] -= lr * gi / (sqrtf(v[i]) + c->eps);
    }
}

/* clip + update of [lo, hi), a part of o's slice, after o->t counted the
 * step (AdamW clips as it reads the gradients; they are left unscaled) */
static void update_range(Optimizer *o, Model *m, float lr, double norm, size_t lo, size_t hi)
{
    if (o->cfg.kind == OPTIM_ADAMW) {
        StepArgs a = { o, m, lr, clip_coef(norm, o->cfg.max_grad_norm), lo, hi };
        pool_run(adamw_task, &a);
        return;
    }
    clip_to(m->grads + lo, hi - lo, norm, o->cfg.max_grad_norm);
    for (int i = 0; i < m->n_tensors; i++) {
        const TensorInfo *t = &m->tensors[i];
        size_t s = t->offset > lo ? t->offset : lo;
        size_t e = t->offset + t->numel < hi ? t->offset + t->numel : hi;
        if (s < e) rmsprop_range(&o->cfg, m->params + s, m->grads + s, o->v + (s - o->lo), e - s, lr, t->decay);
    }
}

static void check_size(const Optimizer *o, const Model *m)
{
    if (o->n != m->n_params) fatal(EXIT_RUNTIME, "internal: optimizer sized for %zu params, model has %zu", o->n,
                                   m->n_params);
}

void optim_update(Optimizer *o, Model *m, float lr, double norm)
{
    check_size(o, m);
    o->t++;
    update_range(o, m, lr, norm, o->lo, o->hi);
    model_params_changed(m);
}

void optim_update_parts(Optimizer *o, Model *m, float lr, double norm, const size_t *cuts, int n_parts,
                        void (*done)(void *ctx, int part), void *ctx)
{
    check_size(o, m);
    o->t++;
    for (int b = 0; b < n_parts; b++) {
        size_t s = cuts[b] > o->lo ? cuts[b] : o->lo, e = cuts[b + 1] < o->hi ? cuts[b + 1] : o->hi;
        if (s < e) update_range(o, m, lr, norm, s, e);
        done(ctx, b);
    }
    model_params_changed(m);
}

double optim_step(Optimizer *o, Model *m, float lr)
{
    if (o->lo != 0 || o->hi != m->n_params)
        fatal(EXIT_RUNTIME, "internal: optim_step on an optimizer slice (use optim_update with the global norm)");
    double norm = grad_global_norm(m->grads, m->n_params);
    optim_update(o, m, lr, norm);
    return norm;
}

float schedule_lr(const Schedule *s, long step)
{
    if (step < s->warmup_steps) return s->lr * (float)(step + 1) / (float)s->warmup_steps;
    long span = s->total_steps - s->warmup_steps;
    double p = (double)(step - s->warmup_steps) / (double)(span > 1 ? span : 1);
    if (p < 0) p = 0;
    if (p > 1) p = 1;
    switch (s->kind) {
    case SCHED_LINEAR: return (float)(s->min_lr + (s->lr - s->min_lr) * (1.0 - p));
    case SCHED_COSINE: return (float)(s->min_lr + (s->lr - s->min_lr) * 0.5 * (1.0 + cos(3.14159265358979323846 * p)));
    case SCHED_CONSTANT:
    default: return s->lr;
    }
}
