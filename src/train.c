/* train: see train.h. One step, in order:
 *   plan   every rank plans all B meta-examples of the step (lengths only),
 *          so all agree on the global pair/token counts that normalize the loss;
 *   run    this rank packs its share into micro-batches: reference forward
 *          (pref), policy forward, loss, backward; the last micro-batch's
 *          backward starts the bucketed gradient allreduce layer by layer;
 *   reduce wait for the gradients, one small allreduce of metrics;
 *   update skip a non-finite step, else clip + optimizer step;
 *   check  parameter checksums agree every K steps; log; checkpoint. */
#include "train.h"

#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bf16.h"
#include "checksum.h"
#include "ckpt.h"
#include "dataset.h"
#include "loss.h"
#include "metrics.h"
#include "model.h"
#include "ops.h"
#include "optim.h"
#include "pack.h"
#include "pool.h"
#include "sampler.h"
#include "tokenizer.h"
#include "util.h"

/* ---- signals: set a flag; ranks agree on it at the step boundary ---- */
static volatile sig_atomic_t stop_signal;
static void on_signal(int sig) { stop_signal = sig; }

static void install_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
}

/* ---- startup errors: every rank must leave together ---- */

/* Agrees on a startup phase's outcome: if any rank failed, the lowest
 * failing rank prints its message and every rank exits with its code. */
static void agree_or_exit(const Dist *d, int code, const char *msg)
{
    int worst = dist_allreduce_max_int(code);
    if (worst == 0) return;
    int first = -dist_allreduce_max_int(code ? -d->rank : -d->size);
    if (d->rank == first) fprintf(stderr, "fspo: %s\n", msg);
    dist_finalize();
    exit(worst);
}

/* Threads per rank: config, else SLURM_CPUS_PER_TASK, else cores / ranks on this node. */
static int blas_threads(const Config *cfg, const Dist *d, char *why, size_t len)
{
    int t = cfg->mpi.threads_per_rank;
    const char *src = "mpi.threads_per_rank";
    if (t <= 0) {
        const char *s = getenv("SLURM_CPUS_PER_TASK");
        char *end;
        long v = s ? strtol(s, &end, 10) : 0;
        if (s && *end == '\0' && v > 0 && v < 4096) t = (int)v, src = "SLURM_CPUS_PER_TASK";
    }
    int bound = affinity_cpus();
    if (t <= 0) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        t = (int)(cores / d->local_size);
        src = "cores / ranks on this node";
        if (bound > 0 && bound < t) t = bound, src = "the CPUs this rank is bound to";
        if (t < 1) t = 1;
    } else if (bound > 0 && bound < t && d->rank == 0) {
        /* mpirun binds each rank to one core by default (np <= 2): more
         * threads than that only take turns on it */
        fprintf(stderr, "train: warning: %s = %d threads per rank, but this rank may run on %d CPU(s) only (launcher "
                        "binding): they will share them; use mpirun --bind-to none or --map-by slot:PE=%d\n",
                src, t, bound, t);
    }
    snprintf(why, len, "%s", src);
    return t;
}

/* ---- the run's state ---- */
typedef struct {
    const Config *cfg;
    const Dist *dist;
    Dataset data;
    Sampler sampler;
    Model *policy, *ref;
    Optimizer opt;
    GradReducer *reducer;
    Batch batch;
    float *logp, *ref_logp, *dlogp;
    MetaExample *plan; /* [B] this step's meta-examples after truncation */
    int *plan_len;     /* [B] their row lengths, -1 = skipped */
    int *owner;        /* [B] the rank that runs each one (-1 = skipped) */
    int *mine;         /* [B] this rank's examples, in index order */
    int n_mine;
    int pref, include_rejected, context_targets;
    int user_desc;           /* data.user_desc: cot */
    LossConfig loss;
    Schedule sched;
    long step;               /* steps done */
    uint64_t ref_checksum, data_checksum;
    char ref_path[CFG_STR];
    double peak_gflops;      /* of the matmuls in the run's precision */
    int bf16;                /* model.precision resolved: bf16 products */
    double allreduce_full_s;  /* one blocking allreduce of all gradients, measured at start */
    double allreduce_wait_s;  /* summed exposed wait after the backward */
    long allreduce_steps;
    long skipped_examples, dropped_fewshot, dropped_queries, bad_steps_total;
} Run;

/* Median of 3 timed 1024^3 sgemms: this rank's ceiling for the MFU figure. */
static double sgemm_peak(void)
{
    int n = 1024;
    float *a = xcalloc_aligned(sizeof(float) * n * n, "sgemm probe"), *b = xcalloc_aligned(sizeof(float) * n * n, "sgemm probe"),
          *c = xcalloc_aligned(sizeof(float) * n * n, "sgemm probe");
    double t[4];
    for (int k = 0; k < 4; k++) {
        double t0 = now_seconds();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
        t[k] = now_seconds() - t0;
    }
    xfree_aligned(a), xfree_aligned(b), xfree_aligned(c);
    double m = t[1] < t[2] ? (t[2] < t[3] ? t[2] : (t[1] < t[3] ? t[3] : t[1])) : (t[1] < t[3] ? t[1] : (t[2] < t[3] ? t[3] : t[2]));
    return 2.0 * n * n * (double)n / m / 1e9;
}

static void make_run_dir(const char *dir)
{
    char path[CFG_STR];
    snprintf(path, sizeof path, "%s", dir);
    for (char *p = path + 1; *p; p++)
        if (*p == '/') {
            *p = '\0';
            mkdir(path, 0777);
            *p = '/';
        }
    if (mkdir(path, 0777) != 0 && errno != EEXIST) fatal(EXIT_RUNTIME, "%s: cannot create the run directory: %s", dir, strerror(errno));
}

/* Training users with a description (data.user_desc: cot needs some). */
static int64_t users_described(const Sampler *s)
{
    int64_t n = 0;
    for (int64_t i = 0; i < s->n_users; i++) n += s->data->user_desc[2 * s->users[i] + 1] > 0;
    return n;
}

/* Rank 0 decides where the run starts; everyone receives the state. */
static void initial_state(Run *r)
{
    const Config *cfg = r->cfg;
    const Dist *d = r->dist;
    char path[CFG_STR] = "", err[3072] = "";
    int code = 0, full = 0; /* full: optimizer state too (a resume) */
    CkptMeta meta = { 0 };
    if (d->rank == 0) {
        model_init_weights(r->policy, (uint64_t)cfg->train.seed);
        if (!strcmp(cfg->train.resume, "auto")) {
            int found = ckpt_find_latest(cfg->train.run_dir, path, sizeof path, err, sizeof err);
            if (found < 0) code = EXIT_USAGE;
            full = found == 1;
        } else if (strcmp(cfg->train.resume, "none") != 0) {
            snprintf(path, sizeof path, "%s", cfg->train.resume);
            full = 1;
        }
        if (code == 0 && full) {
            if (ckpt_load(path, r->policy, &r->opt, &meta, err, sizeof err) != 0) code = EXIT_USAGE;
            else if (strcmp(meta.stage, cfg->train.stage) != 0) {
                code = EXIT_USAGE;
                snprintf(err, sizeof err, "%s: a %s checkpoint cannot resume a %s stage (use train.init_from to start "
                                          "a new stage from it)", path, meta.stage, cfg->train.stage);
            } else if (r->ref && meta.ref_checksum != r->ref_checksum) {
                /* the loss is relative to the reference: another one silently changes the objective */
                code = EXIT_USAGE;
                snprintf(err, sizeof err, "%s was trained against reference %s (weights checksum %016llx); "
                                          "loss.ref_ckpt %s has checksum %016llx", path, meta.ref_ckpt,
                         (unsigned long long)meta.ref_checksum, cfg->loss.ref_ckpt,
                         (unsigned long long)r->ref_checksum);
            } else if (meta.data_checksum != r->data_checksum)
                fprintf(stderr, "fspo: warning: %s was trained on other data (checksum %016llx, %s has %016llx); "
                                "continuing on the new data\n", path, (unsigned long long)meta.data_checksum,
                        cfg->data.path, (unsigned long long)r->data_checksum);
        } else if (code == 0 && cfg->train.init_from[0]) {
            if (ckpt_load(cfg->train.init_from, r->policy, NULL, NULL, err, sizeof err) != 0) code = EXIT_USAGE;
        }
    }
    agree_or_exit(d, code, err);
    int64_t hdr[3] = { full, meta.step, r->opt.t };
    dist_bcast(hdr, sizeof hdr, 0);
    dist_bcast(r->policy->params, sizeof(float) * r->policy->n_params, 0);
    model_params_changed(r->policy);
    if (hdr[0]) {
        if (r->opt.m) dist_bcast(r->opt.m, sizeof(float) * r->opt.n, 0);
        dist_bcast(r->opt.v, sizeof(float) * r->opt.n, 0);
    }
    r->step = hdr[0] ? hdr[1] : 0;
    r->opt.t = hdr[2];
    if (d->rank == 0) {
        if (full) printf("train: resuming from %s at step %ld\n", path, r->step);
        else if (cfg->train.init_from[0]) printf("train: starting from the weights of %s\n", cfg->train.init_from);
        else printf("train: starting from random weights (seed %ld)\n", cfg->train.seed);
    }
}

/* FSPO_FAULT values the hooks understand: data@R, nan@R:S[+K], diverge@R:S
 * (here), ckptfail@S, ckptslow@MS (io/ckpt.c). Whole-string matches only. */
static int fault_valid(const char *f)
{
    int a, c, n = -1;
    long b;
    if ((sscanf(f, "data@%d%n", &a, &n) == 1 && n > 0 && !f[n] && a >= 0) ||
        (n = -1, sscanf(f, "nan@%d:%ld%n", &a, &b, &n) == 2 && n > 0 && !f[n] && a >= 0 && b >= 0) ||
        (n = -1, sscanf(f, "nan@%d:%ld+%d%n", &a, &b, &c, &n) == 3 && n > 0 && !f[n] && a >= 0 && b >= 0 && c > 0) ||
        (n = -1, sscanf(f, "diverge@%d:%ld%n", &a, &b, &n) == 2 && n > 0 && !f[n] && a >= 0 && b >= 0) ||
        (n = -1, sscanf(f, "ckptfail@%ld%n", &b, &n) == 1 && n > 0 && !f[n] && b >= 0) ||
        (n = -1, sscanf(f, "ckptslow@%d%n", &a, &n) == 1 && n > 0 && !f[n] && a >= 0 && a <= 10000))
        return 1;
    return 0;
}

static void setup(Run *r, const Config *cfg, const Dist *d)
{
    memset(r, 0, sizeof *r);
    r->cfg = cfg;
    r->dist = d;
    char err[1024] = "";
    int code = 0;
    r->pref = !strcmp(cfg->train.stage, "pref");
    int B = cfg->train.batch_size;
    if (d->size > B) {
        code = EXIT_USAGE;
        snprintf(err, sizeof err, "%d ranks but train.batch_size is %d: every rank needs at least one meta-example per "
                                  "step (raise train.batch_size or use fewer ranks)", d->size, B);
    }
    agree_or_exit(d, code, err);
    /* model.precision: every rank must run the same products, so auto is
     * bf16 only where all ranks have the units */
    r->bf16 = bf16_resolve(cfg->precision, err, sizeof err);
    agree_or_exit(d, r->bf16 < 0 ? EXIT_USAGE : 0, err);
    r->bf16 = -dist_allreduce_max_int(-r->bf16);
    /* fault injection for the reliability tests (docs/reliability.md); a
     * value that is not one of the hooks is a usage error, not ignored */
    const char *fault = getenv("FSPO_FAULT");
    if (fault && *fault && !fault_valid(fault)) {
        code = EXIT_USAGE;
        snprintf(err, sizeof err, "FSPO_FAULT='%.200s' is not a fault hook (data@RANK, nan@RANK:STEP[+K], "
                                  "diverge@RANK:STEP, ckptfail@STEP, ckptslow@MS); unset it", fault);
    }
    agree_or_exit(d, code, err);
    char fault_rank[32];
    snprintf(fault_rank, sizeof fault_rank, "data@%d", d->rank);
    if (fault && !strcmp(fault, fault_rank))
        fatal(EXIT_USAGE, "rank %d: %s: cannot read the dataset (injected fault FSPO_FAULT=%s)", d->rank, cfg->data.path, fault);
    if (dataset_read(cfg->data.path, &r->data, err, sizeof err) != 0) code = EXIT_USAGE;
    else if (strcmp(r->data.tokenizer, TOKENIZER_ID) != 0 || r->data.vocab > cfg->model.vocab) {
        code = EXIT_USAGE;
        snprintf(err, sizeof err, "%s: tokenized with %s (vocab %lld); this model reads %s with model.vocab %d", cfg->data.path,
                 r->data.tokenizer, (long long)r->data.vocab, TOKENIZER_ID, cfg->model.vocab);
    }
    if (code == 0 && sampler_init(&r->sampler, &r->data, SPLIT_TRAIN, (uint64_t)cfg->train.seed, cfg->data.n_fewshot,
                                  cfg->data.n_fewshot_min, cfg->data.n_queries, err, sizeof err) != 0)
        code = EXIT_USAGE;
    if (code == 0 && !strcmp(cfg->data.user_desc, "cot") && users_described(&r->sampler) == 0) {
        code = EXIT_USAGE;
        snprintf(err, sizeof err, "data.user_desc is cot, but no training user of %s has a description (the "
                                  "'user_description' field of fspo prep's input; fspo synth writes it)", cfg->data.path);
    }
    agree_or_exit(d, code, err);
    r->data_checksum = r->data.checksum;

    char why[64];
    int threads = blas_threads(cfg, d, why, sizeof why);
    openblas_set_num_threads(threads);
    pool_set_threads(threads);
    int share = (B + d->size - 1) / d->size;
    int mb = cfg->train.micro_batch > 0 && cfg->train.micro_batch < share ? cfg->train.micro_batch : share;
    r->policy = model_create(&cfg->model, 1, mb, cfg->model.max_seq);
    r->include_rejected = cfg->train.sft_include_rejected;
    r->context_targets = !r->pref && cfg->train.sft_context;
    r->user_desc = !strcmp(cfg->data.user_desc, "cot");
    int lt = loss_type_from_name(cfg->loss.type);
    r->loss = (LossConfig){ .type = lt, .beta = cfg->loss.beta, .label_smoothing = cfg->loss.label_smoothing,
                            .simpo_gamma = cfg->loss.simpo_gamma, .sft_weight = cfg->loss.sft_weight };
    OptimConfig oc = optim_default_config(!strcmp(cfg->optim.type, "rmsprop") ? OPTIM_RMSPROP : OPTIM_ADAMW);
    oc.beta1 = (float)cfg->optim.beta1, oc.beta2 = (float)cfg->optim.beta2, oc.eps = (float)cfg->optim.eps;
    oc.alpha = (float)cfg->optim.alpha, oc.weight_decay = (float)cfg->optim.weight_decay;
    oc.max_grad_norm = (float)cfg->optim.grad_clip;
    optim_init(&r->opt, &oc, r->policy->n_params);
    r->sched = (Schedule){ .kind = !strcmp(cfg->optim.schedule, "cosine") ? SCHED_COSINE
                                   : !strcmp(cfg->optim.schedule, "linear") ? SCHED_LINEAR : SCHED_CONSTANT,
                           .lr = (float)cfg->optim.lr, .min_lr = (float)cfg->optim.min_lr,
                           .warmup_steps = cfg->optim.warmup_steps,
                           .total_steps = cfg->optim.decay_steps > 0 ? cfg->optim.decay_steps : cfg->train.max_steps };
    /* the frozen reference: the SFT checkpoint, forward only (SimPO needs none) */
    if (r->pref && r->loss.type != LOSS_SIMPO) {
        if (!cfg->loss.ref_ckpt[0]) {
            code = EXIT_USAGE;
            snprintf(err, sizeof err, "train.stage pref with loss.type %s needs loss.ref_ckpt (the SFT checkpoint)", cfg->loss.type);
        } else {
            r->ref = model_create(&cfg->model, 0, mb, cfg->model.max_seq);
            snprintf(r->ref_path, sizeof r->ref_path, "%s", cfg->loss.ref_ckpt);
            char reason[900];
            if (ckpt_load(cfg->loss.ref_ckpt, r->ref, NULL, NULL, reason, sizeof reason) != 0 ||
                ckpt_weights_checksum(cfg->loss.ref_ckpt, &r->ref_checksum, reason, sizeof reason) != 0) {
                code = EXIT_USAGE;
                snprintf(err, sizeof err, "loss.ref_ckpt: %s", reason);
            }
        }
    }
    agree_or_exit(d, code, err);
    if (r->bf16) {
        model_set_precision(r->policy, PRECISION_BF16);
        if (r->ref) model_set_precision(r->ref, PRECISION_BF16);
    }
    if (d->rank == 0) make_run_dir(cfg->train.run_dir);
    dist_barrier();
    initial_state(r);

    int S = 1 + 3 * cfg->data.n_queries, K = 0;
    /* worst case targets per row: every token of the row is an answer token */
    K = mb * cfg->model.max_seq;
    batch_alloc(&r->batch, mb, cfg->model.max_seq, S, K);
    r->logp = xcalloc_aligned(sizeof(float) * K, "log-probs");
    r->ref_logp = xcalloc_aligned(sizeof(float) * K, "reference log-probs");
    r->dlogp = xcalloc_aligned(sizeof(float) * K, "loss gradients");
    r->plan = calloc(B, sizeof(MetaExample));
    r->plan_len = calloc(B, sizeof(int));
    r->owner = calloc(B, sizeof(int));
    r->mine = calloc(B, sizeof(int));
    if (d->size > 1) {
        size_t cuts[4200];
        if (cfg->model.n_layers + 2 > 4200) fatal(EXIT_USAGE, "model.n_layers too large for the bucket table");
        int nc = model_grad_cuts(r->policy, cuts, 4200);
        r->reducer = dist_reducer_create(r->policy->grads, cuts, nc, cfg->mpi.bucket_mb * 1048576.0);
        r->allreduce_full_s = dist_time_allreduce(r->policy->grads, r->policy->n_params);
    }
    if (d->rank == 0) {
        /* FSPO_PEAK_GFLOPS=G skips the start-up probe (valgrind runs it ~100x
         * slower); anything but a positive number is ignored */
        const char *pk = getenv("FSPO_PEAK_GFLOPS");
        char *end = NULL;
        double g = pk ? strtod(pk, &end) : 0;
        int given = pk && end != pk && *end == '\0' && g > 0 && isfinite(g);
        r->peak_gflops = given ? g : r->bf16 ? matmul_bf16_peak_gflops(1024, 3) : sgemm_peak();
        printf("train: %s stage, %d rank(s) x %d BLAS thread(s) (%s), %zu parameters, global batch %d (micro-batch "
               "%d), %lld training users\n",
               cfg->train.stage, d->size, threads, why, r->policy->n_params, B, mb, (long long)r->sampler.n_users);
        char unit[128], kern[160];
        bf16_supported(unit, sizeof unit);
        if (r->bf16) {
            bf16_kernel_summary(kern, sizeof kern);
            printf("train: precision bf16 (model.precision %s; %s): %s (oneDNN %s); MFU against the bf16 product "
                   "peak, %.0f GFLOP/s\n",
                   cfg->precision, unit, kern, bf16_library_version(), r->peak_gflops);
        } else
            printf("train: precision fp32 (model.precision %s%s%s): OpenBLAS sgemm; MFU against the sgemm peak, "
                   "%.0f GFLOP/s\n",
                   cfg->precision, strcmp(cfg->precision, "auto") ? "" : ": ", strcmp(cfg->precision, "auto") ? "" : unit,
                   r->peak_gflops);
        if (r->user_desc)
            printf("train: data.user_desc cot: %lld of %lld training users have a description (the others get no "
                   "description segment)\n", (long long)users_described(&r->sampler), (long long)r->sampler.n_users);
    }
}

static void teardown(Run *r)
{
    xfree_aligned(r->logp);
    xfree_aligned(r->ref_logp);
    xfree_aligned(r->dlogp);
    free(r->plan);
    free(r->plan_len);
    free(r->owner);
    free(r->mine);
    batch_free(&r->batch);
    dist_reducer_free(r->reducer);
    optim_free(&r->opt);
    model_free(r->policy);
    model_free(r->ref);
    sampler_free(&r->sampler);
    dataset_free(&r->data);
}

/* ---- one step ---- */

static void grads_ready(void *ctx, size_t from) { dist_reducer_ready(((Run *)ctx)->reducer, from); }

enum { M_LOSS, M_PAIRS, M_RC, M_RR, M_MARGIN, M_ACC, M_LPC, M_LPR, M_TOKENS, M_ROWS, M_SFT_TOKENS, M_DESC_NLL,
       M_DESC_TOKENS, M_N };

typedef struct { double cost; int index; } Job;

static int by_cost_desc(const void *a, const void *b)
{
    const Job *x = a, *y = b;
    if (x->cost != y->cost) return x->cost < y->cost ? 1 : -1;
    return x->index - y->index;
}

/* Splits the step's meta-examples over the ranks by cost, longest first to
 * the least-loaded rank. Lengths vary a lot between meta-examples, so equal
 * counts per rank leave ranks waiting for each other; every rank computes
 * the same assignment from the same plan, with no communication. */
static void assign_ranks(Run *r)
{
    int B = r->cfg->train.batch_size, W = r->dist->size;
    Job jobs[4096];
    double load[1024] = { 0 };
    if (B > 4096 || W > 1024) { /* beyond the tables: contiguous slices */
        for (int i = 0; i < B; i++) r->owner[i] = r->plan_len[i] < 0 ? -1 : (int)((long)i * W / B);
    } else {
        int n = 0;
        for (int i = 0; i < B; i++) {
            r->owner[i] = -1;
            if (r->plan_len[i] < 0) continue;
            double L = r->plan_len[i];
            jobs[n++] = (Job){ L * model_flops_per_token(&r->cfg->model, (int)L), i };
        }
        qsort(jobs, n, sizeof *jobs, by_cost_desc);
        for (int k = 0; k < n; k++) {
            int best = 0;
            for (int w = 1; w < W; w++)
                if (load[w] < load[best]) best = w;
            load[best] += jobs[k].cost;
            r->owner[jobs[k].index] = best;
        }
    }
    r->n_mine = 0;
    for (int i = 0; i < B; i++)
        if (r->owner[i] == r->dist->rank) r->mine[r->n_mine++] = i;
}

/* data.user_desc cot: the user's description from the dataset goes into
 * the context; a user without one gets no description segment. */
static void with_description(const Dataset *d, MetaExample *ex)
{
    int64_t len = d->user_desc[2 * ex->user + 1];
    ex->desc = len > 0 ? d->tokens + d->user_desc[2 * ex->user] : NULL;
    ex->desc_len = len > 0 ? (int)len : 0;
}

/* Plans all B meta-examples of the step; returns the global normalizer
 * (query pairs for pref, answer tokens for sft) and counts skips. */
static double plan_step(Run *r, long step)
{
    const Config *cfg = r->cfg;
    int B = cfg->train.batch_size;
    double norm = 0;
    for (int i = 0; i < B; i++) {
        uint64_t g = (uint64_t)step * B + i;
        if (cfg->data.fixed_examples > 0) g %= (uint64_t)cfg->data.fixed_examples;
        sampler_draw(&r->sampler, g, &r->plan[i]);
        if (r->user_desc) with_description(&r->data, &r->plan[i]);
        int df, dq;
        r->plan_len[i] = pack_plan(&r->data, &r->plan[i], PACK_TREE, cfg->model.max_seq, &df, &dq);
        r->dropped_fewshot += df, r->dropped_queries += dq;
        if (r->plan_len[i] < 0) {
            r->skipped_examples++;
            continue;
        }
        const MetaExample *ex = &r->plan[i];
        for (int j = 0; j < ex->n_queries; j++) {
            int64_t p = ex->pairs[ex->n_fewshot + j];
            if (r->pref) norm += 1;
            else norm += (double)(r->data.chosen[2 * p + 1] + 1) + (r->include_rejected ? (double)(r->data.rejected[2 * p + 1] + 1) : 0);
        }
        if (r->context_targets) norm += pack_context_targets(&r->data, ex);
        if (!r->pref) norm += pack_desc_targets(ex); /* 0 without a description */
    }
    assign_ranks(r);
    return norm;
}

/* The description's NLL for the metrics (data.user_desc cot). */
static void desc_metrics(const Run *r, const PackedAnswers *ans, double *m)
{
    for (int k = ans->desc_first; k < ans->desc_end; k++) m[M_DESC_NLL] -= r->logp[k], m[M_DESC_TOKENS] += 1;
}

/* FSPO_FAULT=nan@RANK:STEP[+K]: that rank poisons its loss gradient for K
 * steps (default 1) from STEP, before the allreduce, so the test sees what
 * a real NaN does: it reaches every rank's gradients the same step. */
static int inject_nan(const Run *r)
{
    const char *f = getenv("FSPO_FAULT");
    int rank, k = 1;
    long step;
    if (!f || sscanf(f, "nan@%d:%ld+%d", &rank, &step, &k) < 2) return 0;
    return rank == r->dist->rank && r->step >= step && r->step < step + k;
}

/* FSPO_FAULT=diverge@RANK:STEP: after the update of STEP that rank nudges
 * one parameter, so only the cross-rank checksum can notice. */
static int inject_diverge(const Run *r)
{
    const char *f = getenv("FSPO_FAULT");
    int rank;
    long step;
    if (!f || sscanf(f, "diverge@%d:%ld", &rank, &step) != 2) return 0;
    return rank == r->dist->rank && r->step == step;
}

/* The ranks' parameters must be identical; a mismatch aborts before any
 * checkpoint could store one rank's diverged copy. Collective. */
static void check_agree(const Run *r)
{
    if (r->cfg->mpi.checksum_every <= 0 || r->dist->size < 2) return;
    if (dist_all_equal_u64(checksum64(r->policy->params, sizeof(float) * r->policy->n_params))) return;
    /* every rank saw the mismatch: rank 0 reports and aborts the job; the
     * others wait in a barrier rank 0 never enters, so the message is printed once */
    if (r->dist->rank != 0) dist_barrier();
    fatal(EXIT_RUNTIME, "parameters differ across ranks at step %ld (checksum mismatch): aborting; the newest "
                            "checkpoint predates the mismatch", r->step);
}

/* Runs this rank's share of the step; fills the local metric sums. */
static void run_share(Run *r, double norm, double *m)
{
    int mb = r->policy->cap_rows;
    model_zero_grad(r->policy);
    if (r->reducer) dist_reducer_begin(r->reducer);
    PackedAnswers ans[256];
    if (mb > 256) fatal(EXIT_USAGE, "train.micro_batch above 256 is not supported");
    for (int start = 0; start < r->n_mine; start += mb) {
        int end = start + mb < r->n_mine ? start + mb : r->n_mine, T = 1, S = 1, rows = end - start;
        for (int k = start; k < end; k++) {
            int i = r->mine[k];
            if (r->plan_len[i] > T) T = r->plan_len[i];
            int s = pack_segments(&r->plan[i], PACK_TREE);
            if (s > S) S = s;
        }
        int last = end >= r->n_mine;
        batch_reset(&r->batch, rows, T, S);
        int row = 0;
        for (int k = start; k < end; k++) {
            int i = r->mine[k];
            m[M_TOKENS] += r->plan_len[i];
            m[M_ROWS] += 1;
            if (r->context_targets)
                pack_write_context_targets(&r->data, &r->plan[i], PACK_TREE, &r->batch, row, &ans[row]);
            else
                pack_write(&r->data, &r->plan[i], PACK_TREE, &r->batch, row, &ans[row]);
            row++;
        }
        int K = r->batch.n_targets;
        memset(r->dlogp, 0, sizeof(float) * K);
        if (r->ref) model_forward(r->ref, &r->batch, r->ref_logp);
        model_forward(r->policy, &r->batch, r->logp);
        PrefStats st = { 0 };
        for (int k = 0; k < rows; k++) {
            if (r->pref) {
                double ref_sums[2 * SAMPLER_MAX_QUERIES];
                if (r->ref) answer_logps(r->ref_logp, &ans[k], ref_sums);
                pref_loss(&r->loss, r->logp, r->ref ? ref_sums : NULL, &ans[k], norm, r->dlogp, &st);
                desc_loss(r->logp, &ans[k], r->loss.sft_weight, norm, r->dlogp, &m[M_LOSS]);
            } else {
                sft_loss(r->logp, &ans[k], r->include_rejected, norm, r->dlogp, &m[M_LOSS], &m[M_SFT_TOKENS]);
                m[M_PAIRS] += ans[k].n_answers / 2;
            }
            desc_metrics(r, &ans[k], m);
        }
        if (r->pref) {
            m[M_LOSS] += st.loss, m[M_PAIRS] += st.pairs, m[M_RC] += st.reward_chosen, m[M_RR] += st.reward_rejected;
            m[M_MARGIN] += st.reward_margin, m[M_ACC] += st.reward_accuracy, m[M_LPC] += st.logp_chosen, m[M_LPR] += st.logp_rejected;
        }
        if (start == 0 && inject_nan(r)) r->dlogp[0] = NAN;
        if (last && r->reducer) model_backward_hooked(r->policy, &r->batch, r->dlogp, grads_ready, r);
        else model_backward(r->policy, &r->batch, r->dlogp);
    }
    if (r->reducer) {
        dist_reducer_finish(r->reducer);
        double wait_s;
        int buckets;
        dist_reducer_stats(r->reducer, &wait_s, &buckets);
        r->allreduce_wait_s += wait_s;
        r->allreduce_steps++;
    }
}

static int grads_finite(const Model *m)
{
    for (size_t i = 0; i < m->n_params; i++)
        if (!isfinite(m->grads[i])) return 0;
    return 1;
}

static void save(Run *r, const char *yaml, int keep)
{
    if (r->dist->rank != 0) return;
    CkptMeta meta = { .step = r->step, .samples_seen = r->step * r->cfg->train.batch_size, .world_size = r->dist->size,
                      .seed = r->cfg->train.seed, .data_checksum = r->data_checksum, .ref_checksum = r->ref_checksum };
    snprintf(meta.stage, sizeof meta.stage, "%s", r->cfg->train.stage);
    snprintf(meta.ref_ckpt, sizeof meta.ref_ckpt, "%s", r->ref_path);
    char path[4096], err[1024];
    if (ckpt_save(r->cfg->train.run_dir, r->policy, &r->opt, &meta, yaml, keep, path, sizeof path, err, sizeof err) != 0)
        fatal(EXIT_RUNTIME, "checkpoint at step %ld failed: %s", r->step, err);
    printf("train: checkpoint %s\n", path);
    fflush(stdout);
}

static void fmt_eta(double s, char *buf, size_t len)
{
    if (s < 0 || !isfinite(s)) snprintf(buf, len, "?");
    else if (s < 3600) snprintf(buf, len, "%dm%02ds", (int)s / 60, (int)s % 60);
    else snprintf(buf, len, "%dh%02dm", (int)s / 3600, ((int)s % 3600) / 60);
}

int train_run(const Config *cfg, const Dist *d, const char *config_yaml)
{
    Run run, *r = &run;
    /* before setup: a preemption signal during start-up (loading data and
     * checkpoints can take a while) must become a stop at the first step
     * boundary, not kill the ranks */
    install_signals();
    setup(r, cfg, d);
    MetricsLog *log = NULL;
    if (d->rank == 0) {
        char path[4200], err[1024];
        snprintf(path, sizeof path, "%s/metrics.jsonl", cfg->train.run_dir);
        log = metrics_open(path, r->step > 0 ? r->step : -1, err, sizeof err);
        if (!log) fatal(EXIT_RUNTIME, "%s", err);
        snprintf(path, sizeof path, "%s/config.yaml", cfg->train.run_dir);
        FILE *f = fopen(path, "w");
        if (f) fputs(config_yaml, f), fclose(f);
    }
    static const char *names[] = { "loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
                                   "logps/chosen", "logps/rejected", "grad_norm", "learning_rate", "tokens_per_sec",
                                   "mfu", "skipped_nonfinite", "meta_examples_per_sec", "desc/nll" };
    double t_start = now_seconds(), t_last = t_start;
    long steps_timed = 0, bad_in_a_row = 0, last_saved = -1;
    int exit_code = EXIT_OK;
    double tokens_since = 0, rows_since = 0;
    while (r->step < cfg->train.max_steps) {
        /* both reasons to stop, agreed in one allreduce */
        int flags[2] = { stop_signal ? 1 : 0,
                         cfg->train.max_time_s > 0 && now_seconds() - t_start > cfg->train.max_time_s };
        dist_allreduce_max_ints(flags, 2);
        int stop = flags[0], out_of_time = flags[1];
        if (stop || out_of_time) {
            if (d->rank == 0)
                printf("train: %s at step %ld: writing a checkpoint, then exiting with code %d (requeue)\n",
                       stop ? "stop signal" : "train.max_time reached", r->step, EXIT_REQUEUE);
            if (last_saved != r->step) check_agree(r), save(r, config_yaml, cfg->checkpoint.keep);
            exit_code = EXIT_REQUEUE;
            break;
        }
        double norm = plan_step(r, r->step);
        if (norm <= 0) fatal(EXIT_RUNTIME, "step %ld: no meta-example fits model.max_seq = %d", r->step, cfg->model.max_seq);
        double m[M_N] = { 0 };
        run_share(r, norm, m);
        /* after the allreduce every rank holds the same gradients, so each decides alike */
        int finite = grads_finite(r->policy) && isfinite(m[M_LOSS]);
        double local[M_N + 1];
        memcpy(local, m, sizeof m);
        local[M_N] = finite ? 0 : 1;
        dist_allreduce_sum_f64(local, M_N + 1);
        memcpy(m, local, sizeof m);
        double grad_norm = NAN;
        float lr = schedule_lr(&r->sched, r->step);
        if (local[M_N] > 0) {
            r->bad_steps_total++;
            if (++bad_in_a_row >= cfg->train.max_bad_steps) {
                /* every rank counted the same steps, so all stop here together; rank 0
                 * saves the weights of the last good step (skipped steps changed nothing) */
                check_agree(r);
                save(r, config_yaml, cfg->checkpoint.keep);
                if (d->rank == 0)
                    fprintf(stderr, "fspo: training diverged (non-finite loss or gradients %ld steps in a row at "
                                    "step %ld); the last good state is checkpointed\n", bad_in_a_row, r->step);
                exit_code = EXIT_RUNTIME;
                break;
            }
        } else {
            bad_in_a_row = 0;
            grad_norm = optim_step(&r->opt, r->policy, lr);
            if (inject_diverge(r)) r->policy->params[0] += 1e-3f, model_params_changed(r->policy);
        }
        r->step++;
        tokens_since += m[M_TOKENS];
        rows_since += m[M_ROWS];
        steps_timed++;
        int save_now = r->step % cfg->checkpoint.every == 0 || r->step == cfg->train.max_steps;
        /* every checksum_every steps, and before every checkpoint */
        if (cfg->mpi.checksum_every > 0 && (r->step % cfg->mpi.checksum_every == 0 || save_now)) check_agree(r);
        int log_now = r->step % cfg->train.log_every == 0 || r->step == cfg->train.max_steps || r->step == 1;
        if (log_now && d->rank == 0) {
            double now = now_seconds(), dt = now - t_last;
            double tok_s = tokens_since / (dt > 0 ? dt : 1e-9);
            int mean_len = (int)(tokens_since / (rows_since > 0 ? rows_since : 1));
            double mfu = tok_s * model_flops_per_token(&cfg->model, mean_len) / 1e9 / (r->peak_gflops * d->size);
            double pairs = m[M_PAIRS] > 0 ? m[M_PAIRS] : 1;
            /* desc/nll (data.user_desc cot only): nats per description token, this step */
            double vals[14] = { m[M_LOSS], m[M_RC] / pairs, m[M_RR] / pairs, m[M_MARGIN] / pairs, m[M_ACC] / pairs,
                                m[M_LPC] / pairs, m[M_LPR] / pairs, grad_norm, lr, tok_s, mfu, (double)r->bad_steps_total,
                                rows_since / (dt > 0 ? dt : 1e-9), m[M_DESC_TOKENS] > 0 ? m[M_DESC_NLL] / m[M_DESC_TOKENS] : NAN };
            metrics_log(log, r->step, names, vals, r->user_desc ? 14 : 13);
            char eta[32];
            fmt_eta((now - t_start) / steps_timed * (cfg->train.max_steps - r->step), eta, sizeof eta);
            char desc[48] = "";
            if (r->user_desc) snprintf(desc, sizeof desc, " | desc nll %.3f", vals[13]);
            if (r->pref)
                printf("step %ld/%ld | loss %.4f | acc %.3f | margin %.4f%s | %.0f tok/s | MFU %.1f%% | lr %.2e | ETA %s\n",
                       r->step, cfg->train.max_steps, m[M_LOSS], m[M_ACC] / pairs, m[M_MARGIN] / pairs, desc, tok_s,
                       100 * mfu, lr, eta);
            else
                printf("step %ld/%ld | loss %.4f%s | %.0f tok/s | MFU %.1f%% | lr %.2e | ETA %s\n", r->step,
                       cfg->train.max_steps, m[M_LOSS], desc, tok_s, 100 * mfu, lr, eta);
            fflush(stdout);
            t_last = now;
            tokens_since = rows_since = 0;
        }
        if (save_now) {
            save(r, config_yaml, cfg->checkpoint.keep);
            last_saved = r->step;
        }
    }
    if (d->rank == 0) {
        if (r->skipped_examples || r->dropped_fewshot || r->dropped_queries)
            printf("train: truncation to model.max_seq: %ld meta-examples skipped, %ld few-shot pairs and %ld queries dropped\n",
                   r->skipped_examples, r->dropped_fewshot, r->dropped_queries);
        if (exit_code == EXIT_OK) printf("train: done, %ld steps\n", r->step);
        if (r->reducer && r->allreduce_steps > 0) {
            double exposed = r->allreduce_wait_s / r->allreduce_steps, full = r->allreduce_full_s;
            /* the wait also absorbs load imbalance (a rank waiting for a slower one),
             * so "hidden" is a lower bound and clamps at 0 */
            double hidden = full > 0 ? 1 - exposed / full : 0.0;
            printf("train: gradient allreduce %.2f ms blocking; %.2f ms per step waited after the backward "
                   "(communication left + rank imbalance): %.0f%% hidden by overlap\n",
                   1e3 * full, 1e3 * exposed, 100 * (hidden > 0 ? hidden : 0));
        }
    }
    metrics_close(log);
    teardown(r);
    return exit_code;
}
