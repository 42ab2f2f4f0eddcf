/* optim: AdamW and RMSprop over the flat parameter buffer, global
 * gradient-norm clipping and the learning-rate schedule. Formulas match
 * PyTorch's (docs/model.md), so a run can be checked against torch.optim. */
#ifndef FSPO_OPTIM_H
#define FSPO_OPTIM_H

#include <stddef.h>

#include "src/model.h"

typedef enum { OPTIM_ADAMW = 0, OPTIM_RMSPROP = 1 } OptimKind;
/* optim.type's names, in OptimKind order (also the checkpoints' optim_type) */
static const char *const OPTIM_KIND_NAMES[] = { "adamw", "rmsprop", NULL };
typedef enum { SCHED_COSINE = 0, SCHED_LINEAR = 1, SCHED_CONSTANT = 2 } ScheduleKind;
/* optim.schedule's names, in ScheduleKind order */
static const char *const SCHEDULE_NAMES[] = { "cosine", "linear", "constant", NULL };

typedef struct {
    OptimKind kind;
    float beta1, beta2;  /* AdamW moments */
    float alpha;         /* RMSprop smoothing */
    float eps;
    float weight_decay;  /* AdamW: decoupled; RMSprop: coupled L2 (as torch) */
    float max_grad_norm; /* <= 0: no clipping */
} OptimConfig;

typedef struct {
    ScheduleKind kind;
    float lr, min_lr;
    long warmup_steps, total_steps;
} Schedule;

typedef struct {
    OptimConfig cfg;
    size_t n;
    long t;      /* steps taken (for AdamW's bias correction) */
    float *m;    /* [n] first moment (AdamW only) */
    float *v;    /* [n] second moment / square average */
} Optimizer;

/* The config's optim section makes an OptimConfig (io/config.h: config_optim;
 * config_optim_default for the schema's defaults). */
void optim_init(Optimizer *o, const OptimConfig *cfg, size_t n_params);
void optim_free(Optimizer *o);

/* Global L2 norm of a flat gradient (accumulated in double). */
double grad_global_norm(const float *g, size_t n);
/* Scales g so its global norm is at most max_norm (torch's
 * clip_grad_norm_: factor max_norm / (norm + 1e-6) when below 1). Returns
 * the norm before clipping. */
double grad_clip(float *g, size_t n, double max_norm);

/* One update of m's parameters from m's gradients at learning rate lr.
 * Clipping (if configured) is applied to the gradients first. Returns the
 * gradient norm before clipping. */
double optim_step(Optimizer *o, Model *m, float lr);

/* Learning rate for step s (0-based: the step about to be taken). */
float schedule_lr(const Schedule *s, long step);

#endif
