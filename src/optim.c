/* optim: update rules; see optim.h and docs/model.md. */
#include "optim.h"

#include <math.h>
#include <string.h>

#include "util.h"

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

double grad_clip(float *g, size_t n, double max_norm)
{
    double norm = grad_global_norm(g, n);
    if (max_norm > 0) {
        double coef = max_norm / (norm + 1e-6);
        if (coef < 1.0)
            for (size_t i = 0; i < n; i++) g[i] = (float)(g[i] * coef);
    }
    return norm;
}

static void adamw_update(Optimizer *o, float *p, const float *g, size_t off, size_t n, float lr, int decay)
{
    const OptimConfig *c = &o->cfg;
    float *m = o->m + off, *v = o->v + off;
    float b1 = c->beta1, b2 = c->beta2;
    float bc1 = 1.0f - powf(b1, (float)o->t), bc2 = 1.0f - powf(b2, (float)o->t);
    float step_size = lr / bc1, sqrt_bc2 = sqrtf(bc2);
    float shrink = decay ? 1.0f - lr * c->weight_decay : 1.0f;
    for (size_t i = 0; i < n; i++) {
        m[i] = b1 * m[i] + (1.0f - b1) * g[i];
        v[i] = b2 * v[i] + (1.0f - b2) * g[i] * g[i];
        p[i] = p[i] * shrink - step_size * m[i] / (sqrtf(v[i]) / sqrt_bc2 + c->eps);
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
    for (int i = 0; i < m->n_tensors; i++) {
        const TensorInfo *t = &m->tensors[i];
        float *p = m->params + t->offset;
        const float *g = m->grads + t->offset;
        if (o->cfg.kind == OPTIM_ADAMW)
            adamw_update(o, p, g, t->offset, t->numel, lr, t->decay);
        else
            rmsprop_update(o, p, g, t->offset, t->numel, lr, t->decay);
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
