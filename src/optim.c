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

void optim_init(Optimizer *o, const OptimConfig *cfg, size_t n)
{
    memset(o, 0, sizeof *o);
    o->cfg = *cfg;
    o->n = n;
    if (cfg->kind == OPTIM_ADAMW) o->m = xcalloc_aligned(n * sizeof(float), "AdamW first moments");
    o->v = xcalloc_aligned(n * sizeof(float), "optimizer second moments");
}

void optim_free(Optimizer *o)
{
    xfree_aligned(o->m);
    xfree_aligned(o->v);
    memset(o, 0, sizeof *o);
}

double grad_global_norm(const float *g, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += (double)g[i] * g[i];
    return sqrt(s);
}

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

double grad_clip(float *g, size_t n, double max_norm)
{
    double norm = grad_global_norm(g, n);
    if (max_norm > 0) {
        double coef = max_norm / (norm + 1e-6);
        if (coef < 1.0) {
            ScaleArgs a = { g, n, coef };
            pool_run(scale_task, &a);
        }
    }
    return norm;
}

/* AdamW on elements [lo, hi) of one tensor */
static VECTORIZE void adamw_range(float *restrict p, const float *restrict g, float *restrict m, float *restrict v,
                                  size_t lo, size_t hi, float b1, float b2, float step_size, float sqrt_bc2, float shrink,
                                  float eps)
{
    for (size_t i = lo; i < hi; i++) {
        m[i] = b1 * m[i] + (1.0f - b1) * g[i];
        v[i] = b2 * v[i] + (1.0f - b2) * g[i] * g[i];
        p[i] = p[i] * shrink - step_size * m[i] / (sqrtf(v[i]) / sqrt_bc2 + eps);
    }
}

typedef struct {
    Optimizer *o;
    Model *model;
    float lr;
} StepArgs;

/* thread t's share of the flat parameters, tensor by tensor (for the decay flag) */
static void adamw_task(void *ctx, int t, int nt)
{
    const StepArgs *a = ctx;
    const Optimizer *o = a->o;
    const OptimConfig *c = &o->cfg;
    float b1 = c->beta1, b2 = c->beta2, lr = a->lr;
    float bc1 = 1.0f - powf(b1, (float)o->t), bc2 = 1.0f - powf(b2, (float)o->t);
    float step_size = lr / bc1, sqrt_bc2 = sqrtf(bc2);
    size_t lo, hi;
    pool_range(a->model->n_params, t, nt, &lo, &hi);
    for (int i = 0; i < a->model->n_tensors; i++) {
        const TensorInfo *ti = &a->model->tensors[i];
        size_t s = ti->offset > lo ? ti->offset : lo, e = ti->offset + ti->numel < hi ? ti->offset + ti->numel : hi;
        if (s >= e) continue;
        float shrink = ti->decay ? 1.0f - lr * c->weight_decay : 1.0f;
        adamw_range(a->model->params, a->model->grads, o->m, o->v, s, e, b1, b2, step_size, sqrt_bc2, shrink, c->eps);
    }
}

static void rmsprop_update(Optimizer *o, float *p, const float *g, size_t off, size_t n, float lr, int decay)
{
    const OptimConfig *c = &o->cfg;
    float *v = o->v + off;
    float a = c->alpha, wd = decay ? c->weight_decay : 0.0f;
    for (size_t i = 0; i < n; i++) {
        float gi = g[i] + wd * p[i];
        v[i] = a * v[i] + (1.0f - a) * gi * gi;
        p[i] -= lr * gi / (sqrtf(v[i]) + c->eps);
    }
}

double optim_step(Optimizer *o, Model *m, float lr)
{
    if (o->n != m->n_params) fatal(EXIT_RUNTIME, "internal: optimizer sized for %zu params, model has %zu", o->n,
                                   m->n_params);
    double norm = grad_clip(m->grads, m->n_params, o->cfg.max_grad_norm);
    o->t++;
    if (o->cfg.kind == OPTIM_ADAMW) {
        StepArgs a = { o, m, lr };
        pool_run(adamw_task, &a);
    } else
        for (int i = 0; i < m->n_tensors; i++) {
            const TensorInfo *t = &m->tensors[i];
            rmsprop_update(o, m->params + t->offset, m->grads + t->offset, t->offset, t->numel, lr, t->decay);
        }
    model_params_changed(m);
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
