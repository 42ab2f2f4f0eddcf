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

/* The state of the parameters [lo, hi) of a flat vector of n: all of them
 * (lo 0, hi n), or, with mpi.shard_optimizer (ZeRO-1), one rank's slice
 * (optim_shard_range): every update rule here is elementwise, so a slice's
 * update is bitwise the same as that slice of the whole update. */
typedef struct {
    OptimConfig cfg;
    size_t n;        /* parameters of the model */
    size_t lo, hi;   /* the slice whose state this holds and which it updates */
    long t;          /* steps taken (for AdamW's bias correction) */
    float *m;        /* [hi - lo] first moment (AdamW only) */
    float *v;        /* [hi - lo] second moment / square average */
} Optimizer;

/* The config's optim section makes an OptimConfig (io/config.h: config_optim;
 * config_optim_default for the schema's defaults). */
void optim_init(Optimizer *o, const OptimConfig *cfg, size_t n_params);
/* State for the slice [lo, hi) of n_params only (ZeRO-1). */
void optim_init_slice(Optimizer *o, const OptimConfig *cfg, size_t n_params, size_t lo, size_t hi);
void optim_free(Optimizer *o);
/* Bytes of optimizer state (moments) for n parameters: 8 n for AdamW,
 * 4 n for RMSprop. An Optimizer holds that for its hi - lo. */
size_t optim_state_bytes(OptimKind kind, size_t n);
/* Rank `rank` of `world`'s slice [*lo, *hi) of n parameters: contiguous,
 * in rank order, covering [0, n), boundaries at multiples of 16 floats
 * (64 bytes) except n itself. */
void optim_shard_range(size_t n, int rank, int world, size_t *lo, size_t *hi);

/* Global L2 norm of a flat gradient (accumulated in double). */
double grad_global_norm(const float *g, size_t n);
/* Scales g so its global norm is at most max_norm (torch's
 * clip_grad_norm_: factor max_norm / (norm + 1e-6) when below 1). Returns
 * the norm before clipping. */
double grad_clip(float *g, size_t n, double max_norm);

/* One update of m's parameters from m's gradients at learning rate lr.
 * Clipping (if configured) is applied to the gradients first. Returns the
 * gradient norm before clipping. o must hold the whole vector. */
double optim_step(Optimizer *o, Model *m, float lr);

/* Sum of squares of o's slice of g (in double): the slices' sums, added
 * over the ranks, give the global norm a sharded update needs. */
double optim_slice_sumsq(const Optimizer *o, const float *g);
/* The update of o's slice [lo, hi) of m's parameters from the same slice of
 * m's gradients, given the global gradient norm (clipping scales the slice
 * by the factor grad_clip would: AdamW as it reads the gradients, leaving
 * them unscaled; RMSprop in place). optim_step is this with lo 0, hi n and
 * the norm of the whole gradient. */
void optim_update(Optimizer *o, Model *m, float lr, double norm);
/* The same update part by part: o's slice within [cuts[b], cuts[b+1]) for
 * b = 0 .. n_parts - 1 in turn (cuts increasing, covering the slice), each
 * reported to done(ctx, b) once updated, also a part holding none of the
 * slice, so the caller can send each part on while the next is computed
 * (ZeRO-1's all-gather). Bitwise the same result as optim_update. */
void optim_update_parts(Optimizer *o, Model *m, float lr, double norm, const size_t *cuts, int n_parts,
                        void (*done)(void *ctx, int part), void *ctx);

/* Learning rate for step s (0-based: the step about to be taken). */
float schedule_lr(const Schedule *s, long step);

#endif
