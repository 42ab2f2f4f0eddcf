/* train: see train.h. Read train_step first: one step of every rank, top to
 * bottom, each line a call:
 *   plan      every rank draws and measures all B meta-examples of the step
 *             (lengths only), so all agree on the global pair/token counts
 *             that normalize the loss, and on which rank runs which;
 *   per micro-batch of this rank's share:
 *     pack      rows of meta-examples into the batch (src/pack.h);
 *     forward   the reference (preference stage) and the policy;
 *     loss      SFT or preference loss and dloss/dlogp (src/loss.h);
 *     backward  gradients; the last micro-batch's backward starts the
 *               bucketed gradient allreduce (reduce-scatter with
 *               mpi.shard_optimizer) layer by layer;
 *   reduce    wait for the gradients, one small allreduce of the step's sums;
 *   update    skip a non-finite step, else clip + optimizer step (sharded:
 *             each rank updates its slice, then the slices are all-gathered);
 *   check     parameter checksums agree every K steps; log; checkpoint.
 * train_run wraps the loop: start-up (setup), stop signals and the time
 * budget, the summary at the end. The policies around it live in their own
 * units: threads per rank (threads.h), the MFU probe (peak.h), where a run
 * starts (resume.h) and the fault hooks (fault.h). */
#include "src/train.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/ckpt.h"
#include "io/dataset.h"
#include "io/metrics.h"
#include "io/rundir.h"
#include "src/bf16.h"
#include "src/checksum.h"
#include "src/fault.h"
#include "src/frozen.h"
#include "src/loss.h"
#include "src/model.h"
#include "src/ops.h"
#include "src/optim.h"
#include "src/pack.h"
#include "src/peak.h"
#include "src/resume.h"
#include "src/sampler.h"
#include "src/threads.h"
#include "src/tokenizer.h"
#include "src/util.h"

/* ---- signals: set a flag; ranks agree on it at the step boundary ---- */
static volatile sig_atomic_t stop_signal;
static void on_signal(int sig) { stop_signal = sig; }

void train_catch_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    /* restart interrupted system calls: a checkpoint being written when the
     * signal comes must not fail with EINTR (network file systems) */
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    static const int sigs[] = { SIGUSR1, SIGTERM, SIGINT, SIGHUP };
    for (size_t i = 0; i < sizeof sigs / sizeof *sigs; i++) sigaction(sigs[i], &sa, NULL);
}

/* ---- startup errors: every rank must leave together ---- */

/* Agrees on a startup phase's outcome: if any rank failed, the lowest
 * failing rank prints its message and every rank exits with its code
 * (rank 0 first releases the run directory, if it took it). */
static void agree_or_exit(const Dist *d, int code, const char *msg)
{
    int worst = dist_allreduce_max_int(code);
    if (worst == 0) return;
    int first = -dist_allreduce_max_int(code ? -d->rank : -d->size);
    if (d->rank == first) report("%s", msg);
    rundir_unlock();
    dist_finalize();
    exit(worst);
}

/* ---- the run's state ---- */
typedef struct {
    const Config *cfg;
    const Dist *dist;
    Dataset data;
    Sampler sampler;
    Model *policy, *ref;
    Optimizer opt;           /* all parameters, or this rank's slice (shard) */
    GradReducer *reducer;
    int shard;               /* mpi.shard_optimizer over more than one rank: ZeRO-1 */
    size_t *bounds;          /* shard: [ranks + 1] the ranks' slices (optim_shard_range) */
    double grad_sumsq;       /* shard: the step's global sum of squared gradients */
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
    Faults fault;            /* FSPO_FAULT, parsed once at start-up */
    long step;               /* steps done */
    uint64_t ref_checksum, data_checksum;
    char ref_path[CFG_STR];
    double peak_gflops;      /* of the matmuls in the run's precision */
    int peak_rechecked;      /* MFU came out above 100% once: the peak was measured again */
    int bf16;                /* model.precision resolved: bf16 products */
    double allreduce_full_s;  /* one blocking allreduce of all gradients, measured at start */
    double allreduce_wait_s;  /* summed exposed wait after the backward */
    double allgather_s;       /* shard: summed wait for the parameter all-gathers after the update */
    long allreduce_steps;
    long skipped_examples, dropped_fewshot, dropped_queries, bad_steps_total;
    PackedAnswers *ans;      /* [micro-batch] where each row's answers landed */
    /* loss.ref_cache: the reference's answer log-prob sums of each meta-example
     * index g < data.fixed_examples, once computed (meta-examples are a pure
     * function of the seed and g, so a repeated g is the same row) */
    double *ref_cache;       /* [fixed_examples, 2 * SAMPLER_MAX_QUERIES] */
    int *ref_cached;         /* [fixed_examples] answers stored for g, 0 = not yet */
    uint64_t *plan_g;        /* [B] each planned meta-example's g */
    uint64_t *row_g;         /* [micro-batch] each packed row's g */
    int mb_cached;           /* every row of the packed micro-batch is in the cache */
    long ref_forwards, ref_skipped; /* micro-batches: reference forwards run, and served from the cache */
    char lineage[RUNDIR_LINEAGE_MAX]; /* the run's lineage id (io/rundir.h) */
    const char *config_path; /* the config file given to fspo train */
    const char *yaml;        /* the resolved config, as the snapshot and checkpoints store it */
    int resumed;             /* started from a checkpoint (of this step) */
    int snapshot_is_input;   /* config_path is run_dir/config.yaml itself: leave it */
    /* progress between steps */
    MetricsLog *log;         /* rank 0: metrics.jsonl */
    double t_start, t_last;  /* the loop's start, the last log line */
    long steps_timed, bad_in_a_row, last_saved, empty_steps;
    double tokens_since, rows_since; /* since the last log line */
    double tokens_total, padded_total; /* the row tokens and the tokens computed (with padding), this process's run */
    int padding_noted;
} Run;

/* A step's sums over its meta-examples: this rank's, then every rank's. */
typedef struct {
    LossStats loss;           /* loss, pairs, rewards, log-probs, SFT tokens */
    double tokens, rows;      /* row tokens and meta-examples run */
    double padded;            /* tokens computed: each micro-batch's rows x its longest row */
    double desc_nll, desc_tokens; /* data.user_desc cot: the description's NLL */
} StepSums;
enum { STEP_SUMS = sizeof(StepSums) / sizeof(double) };

static void setup(Run *r, const Config *cfg, const Dist *d, const char *config_path, const char *yaml);
static void teardown(Run *r);
static void start_log(Run *r);
static int stop_requested(Run *r);
static int train_step(Run *r);
static void summary(const Run *r, int exit_code);

int train_run(const Config *cfg, const Dist *d, const char *config_path, const char *config_yaml)
{
    Run run, *r = &run;
    /* fspo train catches the stop signals before MPI starts; this covers any
     * other caller: a stop during start-up (loading data and checkpoints can
     * take a while) becomes a stop at the first step boundary */
    train_catch_signals();
    setup(r, cfg, d, config_path, config_yaml);
    start_log(r);
    int exit_code = EXIT_OK;
    while (r->step < cfg->train.max_steps) {
        if (stop_requested(r)) {
            exit_code = EXIT_REQUEUE;
            break;
        }
        if ((exit_code = train_step(r)) != EXIT_OK) break;
    }
    summary(r, exit_code);
    teardown(r);
    rundir_unlock();
    return exit_code;
}

static double plan_step(Run *r, long step);
static void begin_gradients(Run *r);
static int pack_micro_batch(Run *r, int start, StepSums *s);
static void forward(Run *r);
static void compute_loss(Run *r, int rows, double norm, StepSums *s);
static void backward(Run *r, int last);
static void finish_gradients(Run *r);
static int reduce_step_sums(Run *r, StepSums *s);
static void skip_empty_step(Run *r, StepSums *s);
static int stop_diverged(Run *r);
static double optimizer_update(Run *r, float lr);
static void check_agree(const Run *r);
static void log_step(Run *r, const StepSums *s, double grad_norm, float lr);
static void save(Run *r);

/* One training step, every rank in lockstep. EXIT_OK, or EXIT_RUNTIME when
 * training diverged (the last good state checkpointed). */
static int train_step(Run *r)
{
    const Config *cfg = r->cfg;
    StepSums s = { 0 };
    double norm = plan_step(r, r->step);  /* sample, measure and share out the B meta-examples */
    int empty = norm <= 0, finite = 1;    /* every rank planned the same step: empty everywhere */
    if (!empty) {
        begin_gradients(r);
        for (int start = 0; start < r->n_mine; start += r->policy->cap_rows) {
            int rows = pack_micro_batch(r, start, &s);
            forward(r);
            compute_loss(r, rows, norm, &s);
            if (start == 0 && fault_nan_at(&r->fault, r->dist->rank, r->step)) r->dlogp[0] = NAN;
            backward(r, start + rows >= r->n_mine);
        }
        finish_gradients(r);
        finite = reduce_step_sums(r, &s); /* every rank now holds the same gradients and sums */
    } else
        skip_empty_step(r, &s);
    double grad_norm = NAN;
    float lr = schedule_lr(&r->sched, r->step);
    if (!finite) {
        r->bad_steps_total++;
        if (++r->bad_in_a_row >= cfg->train.max_bad_steps) return stop_diverged(r);
    } else if (!empty) {
        r->bad_in_a_row = 0;
        grad_norm = optimizer_update(r, lr);
    }
    r->step++;
    int save_now = r->step % cfg->checkpoint.every == 0 || r->step == cfg->train.max_steps;
    /* every checksum_every steps, and before every checkpoint */
    if (cfg->mpi.checksum_every > 0 && (r->step % cfg->mpi.checksum_every == 0 || save_now)) check_agree(r);
    log_step(r, &s, grad_norm, lr);
    if (save_now) save(r), r->last_saved = r->step;
    return EXIT_OK;
}

/* ---- the loop around the steps ---- */

/* A stop signal or train.max_time, agreed by every rank in one allreduce:
 * checkpoint (unless this step is) and return 1 so the run exits with
 * EXIT_REQUEUE. */
static int stop_requested(Run *r)
{
    const Config *cfg = r->cfg;
    int flags[2] = { stop_signal ? 1 : 0,
                     cfg->train.max_time_s > 0 && now_seconds() - r->t_start > cfg->train.max_time_s };
    dist_allreduce_max_ints(flags, 2);
    int stop = flags[0], out_of_time = flags[1];
    if (!stop && !out_of_time) return 0;
    if (r->dist->rank == 0)
        printf("train: %s at step %ld: writing a checkpoint, then exiting with code %d (requeue)\n",
               stop ? "stop signal" : "train.max_time reached", r->step, EXIT_REQUEUE);
    if (r->last_saved != r->step) check_agree(r), save(r);
    else if (r->dist->rank == 0) printf("train: step %ld is checkpointed already\n", r->step);
    return 1;
}

/* max_bad_steps non-finite steps in a row: every rank counted the same
 * steps, so all stop here together; rank 0 saves the weights of the last
 * good step (skipped steps changed nothing). */
static int stop_diverged(Run *r)
{
    check_agree(r);
    save(r);
    if (r->dist->rank == 0)
        report("training diverged (non-finite loss or gradients %ld steps in a row at step %ld); the last "
               "good state is checkpointed. Resuming with the same config repeats the same steps: lower "
               "optim.lr (or raise optim.warmup_steps or train.max_bad_steps) first", r->bad_in_a_row, r->step);
    return EXIT_RUNTIME;
}

/* The share of the tokens computed that were padding, so far */
static double padding_share(const Run *r)
{
    return r->padded_total > 0 ? 1 - r->tokens_total / r->padded_total : 0.0;
}

/* Rank 0, at the end: truncation counts, "done", padding, the allreduce overlap. */
static void summary(const Run *r, int exit_code)
{
    if (r->dist->rank == 0) {
        if (r->skipped_examples || r->dropped_fewshot || r->dropped_queries)
            printf("train: truncation to model.max_seq: %ld meta-examples skipped, %ld few-shot pairs and %ld queries dropped\n",
                   r->skipped_examples, r->dropped_fewshot, r->dropped_queries);
        if (exit_code == EXIT_OK) printf("train: done, %ld steps\n", r->step);
        double pad = padding_share(r);
        if (pad >= 0.05)
            printf("train: %.0f%% of the tokens computed were padding (train.micro_batch %d)\n", 100 * pad,
                   r->cfg->train.micro_batch);
        if (r->ref_cache)
            printf("train: loss.ref_cache: %ld of %ld micro-batches reused the reference's log-probs (data.fixed_examples "
                   "%ld: each meta-example's reference forward ran once per run and rank)\n",
                   r->ref_skipped, r->ref_skipped + r->ref_forwards, (long)r->cfg->data.fixed_examples);
        if (r->reducer && r->allreduce_steps > 0) {
            double exposed = r->allreduce_wait_s / r->allreduce_steps, full = r->allreduce_full_s;
            /* the wait also absorbs load imbalance (a rank waiting for a slower one),
             * so "hidden" is a lower bound and clamps at 0 */
            double hidden = full > 0 ? 1 - exposed / full : 0.0;
            printf("train: gradient %s %.2f ms blocking; %.2f ms per step waited after the backward "
                   "(communication left + rank imbalance): %.0f%% hidden by overlap\n",
                   r->shard ? "reduce-scatter" : "allreduce", 1e3 * full, 1e3 * exposed, 100 * (hidden > 0 ? hidden : 0));
            if (r->shard)
                printf("train: parameter all-gather %.2f ms per step waited after the update (started bucket by "
                       "bucket during it)\n",
                       1e3 * r->allgather_s / r->allreduce_steps);
        }
    }
    metrics_close(r->log);
}

/* ---- planning: which meta-examples, on which rank ---- */

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
        r->plan_g[i] = g;
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

/* ---- the parts of a step, in order ---- */

/* The description's NLL for the metrics (data.user_desc cot). */
static void desc_metrics(const Run *r, const PackedAnswers *ans, StepSums *s)
{
    for (int k = ans->desc_first; k < ans->desc_end; k++) s->desc_nll -= r->logp[k], s->desc_tokens += 1;
}

static void grads_ready(void *ctx, size_t from) { dist_reducer_ready(((Run *)ctx)->reducer, from); }

/* Zeroes the gradients; the allreduce starts with the last backward. */
static void begin_gradients(Run *r)
{
    model_zero_grad(r->policy);
    if (r->reducer) dist_reducer_begin(r->reducer);
}

/* Packs the micro-batch of this rank's share that starts at `start` (up
 * to the model's rows) into r->batch, each row's answers in r->ans;
 * counts its tokens and rows. Returns its rows. */
static int pack_micro_batch(Run *r, int start, StepSums *s)
{
    int mb = r->policy->cap_rows;
    int end = start + mb < r->n_mine ? start + mb : r->n_mine, T = 1, S = 1, rows = end - start;
    for (int k = start; k < end; k++) {
        int i = r->mine[k];
        if (r->plan_len[i] > T) T = r->plan_len[i];
        int n = pack_segments(&r->plan[i], PACK_TREE);
        if (n > S) S = n;
    }
    /* bf16: rows padded to a multiple of ATTN_KGRAIN tokens, the lengths
     * attention's fixed-shape (brgemm) products cover (ops.h); padding
     * comes after every row's last token, which no token attends to */
    if (r->policy->bf16 && T % ATTN_KGRAIN) {
        T += ATTN_KGRAIN - T % ATTN_KGRAIN;
        if (T > r->policy->cap_len) T = r->policy->cap_len;
    }
    batch_reset(&r->batch, rows, T, S);
    s->padded += (double)rows * T;
    int row = 0;
    r->mb_cached = r->ref_cache != NULL;
    for (int k = start; k < end; k++) {
        int i = r->mine[k];
        r->row_g[row] = r->plan_g[i];
        if (r->ref_cache && !r->ref_cached[r->plan_g[i]]) r->mb_cached = 0;
        s->tokens += r->plan_len[i];
        s->rows += 1;
        if (r->context_targets)
            pack_write_context_targets(&r->data, &r->plan[i], PACK_TREE, &r->batch, row, &r->ans[row]);
        else
            pack_write(&r->data, &r->plan[i], PACK_TREE, &r->batch, row, &r->ans[row]);
        row++;
    }
    return rows;
}

/* The reference's (preference stage) and the policy's target log-probs;
 * the reference's only if some row's are not in loss.ref_cache. */
static void forward(Run *r)
{
    if (r->ref && !r->mb_cached) model_forward(r->ref, &r->batch, r->ref_logp), r->ref_forwards++;
    else if (r->ref) r->ref_skipped++;
    model_forward(r->policy, &r->batch, r->logp);
}

/* Row k's reference answer sums: from the cache, else from this
 * micro-batch's reference forward (and into the cache). */
static void ref_answer_sums(Run *r, int k, double *sums)
{
    const PackedAnswers *a = &r->ans[k];
    if (!r->ref_cache) {
        answer_logps(r->ref_logp, a, sums);
        return;
    }
    uint64_t g = r->row_g[k];
    double *c = r->ref_cache + g * 2 * SAMPLER_MAX_QUERIES;
    if (!r->ref_cached[g]) {
        answer_logps(r->ref_logp, a, c);
        r->ref_cached[g] = 1;
    }
    memcpy(sums, c, sizeof(double) * a->n_answers);
}

/* The loss of the micro-batch's rows, / norm: dloss/dlogp in r->dlogp,
 * the sums in s (src/loss.h). */
static void compute_loss(Run *r, int rows, double norm, StepSums *s)
{
    const PackedAnswers *ans = r->ans;
    memset(r->dlogp, 0, sizeof(float) * r->batch.n_targets);
    LossStats st = { 0 };
    for (int k = 0; k < rows; k++) {
        if (r->pref) {
            double ref_sums[2 * SAMPLER_MAX_QUERIES];
            if (r->ref) ref_answer_sums(r, k, ref_sums);
            pref_loss(&r->loss, r->logp, r->ref ? ref_sums : NULL, &ans[k], norm, r->dlogp, &st);
            desc_loss(r->logp, &ans[k], r->loss.sft_weight * r->loss.desc_weight, norm, r->dlogp, &s->loss);
        } else
            sft_loss(r->logp, &ans[k], r->include_rejected, r->loss.desc_weight, norm, r->dlogp, &s->loss);
        desc_metrics(r, &ans[k], s);
    }
    if (r->pref) loss_stats_add(&s->loss, &st);
}

/* Gradients of the micro-batch; the last one's backward hands each layer's
 * gradients to the allreduce as soon as they are ready. */
static void backward(Run *r, int last)
{
    if (last && r->reducer) model_backward_hooked(r->policy, &r->batch, r->dlogp, grads_ready, r);
    else model_backward(r->policy, &r->batch, r->dlogp);
}

/* Waits for the gradient allreduce; accounts the exposed wait. */
static void finish_gradients(Run *r)
{
    if (!r->reducer) return;
    dist_reducer_finish(r->reducer);
    double wait_s;
    int buckets;
    dist_reducer_stats(r->reducer, &wait_s, &buckets);
    r->allreduce_wait_s += wait_s;
    r->allreduce_steps++;
}

static int grads_finite(const float *g, size_t lo, size_t hi)
{
    for (size_t i = lo; i < hi; i++)
        if (!isfinite(g[i])) return 0;
    return 1;
}

/* Sums s over the ranks, with whether any rank's loss or gradients were
 * non-finite: 1 if all were finite (the same answer on every rank).
 * Sharded, each rank checks the reduced gradients of its slice (a
 * non-finite value on any rank reaches the slice it falls in) and adds its
 * slice's sum of squares, so the global norm comes with the same allreduce. */
static int reduce_step_sums(Run *r, StepSums *s)
{
    double buf[STEP_SUMS + 2];
    memcpy(buf, s, sizeof *s);
    size_t lo = r->opt.lo, hi = r->opt.hi; /* 0, n unless sharded */
    buf[STEP_SUMS] = grads_finite(r->policy->grads, lo, hi) && isfinite(s->loss.loss) ? 0 : 1;
    buf[STEP_SUMS + 1] = r->shard ? optim_slice_sumsq(&r->opt, r->policy->grads) : 0;
    dist_allreduce_sum_f64(buf, STEP_SUMS + 2);
    memcpy(s, buf, sizeof *s);
    r->grad_sumsq = buf[STEP_SUMS + 1];
    return buf[STEP_SUMS] == 0;
}

/* Not one meta-example of the step fits model.max_seq, even cut down:
 * nothing to learn from. Skipping it (counted in skipped_examples) keeps
 * the run going; stopping would stop every resume at the same step. */
static void skip_empty_step(Run *r, StepSums *s)
{
    s->loss.loss = NAN;
    if (r->dist->rank == 0 && r->empty_steps++ == 0)
        printf("train: step %ld: none of its %d meta-examples fits model.max_seq = %d, even cut down: step "
               "skipped (metrics: skipped_examples)\n", r->step, r->cfg->train.batch_size, r->cfg->model.max_seq);
}

/* Sharded update: the bucket of parameters just updated goes to every rank. */
static void gather_updated(void *ctx, int bucket)
{
    Run *r = ctx;
    dist_slices_allgather_start(r->reducer, r->policy->params, bucket);
}

/* Clip + optimizer step at learning rate lr; returns the gradient norm.
 * Sharded: each rank updates its slice with the global norm bucket by
 * bucket, each bucket's all-gather starting as soon as its part is done
 * (overlapping the rest of the update). FSPO_FAULT=diverge@RANK:STEP: after the
 * update of STEP that rank nudges one parameter, so only the cross-rank
 * checksum can notice. */
static double optimizer_update(Run *r, float lr)
{
    double grad_norm;
    if (r->shard) {
        grad_norm = sqrt(r->grad_sumsq);
        const size_t *cuts;
        int nb = dist_reducer_buckets(r->reducer, &cuts);
        optim_update_parts(&r->opt, r->policy, lr, grad_norm, cuts, nb, gather_updated, r);
        r->allgather_s += dist_slices_allgather_wait(r->reducer);
        model_params_changed(r->policy); /* the other ranks' slices too */
    } else
        grad_norm = optim_step(&r->opt, r->policy, lr);
    if (fault_diverge_at(&r->fault, r->dist->rank, r->step)) r->policy->params[0] += 1e-3f, model_params_changed(r->policy);
    return grad_norm;
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

static void fmt_eta(double s, char *buf, size_t len)
{
    if (s < 0 || !isfinite(s)) snprintf(buf, len, "?");
    else if (s < 3600) snprintf(buf, len, "%dm%02ds", (int)s / 60, (int)s % 60);
    else snprintf(buf, len, "%dh%02dm", (int)s / 3600, ((int)s % 3600) / 60);
}

/* Rank 0: metrics.jsonl (kept up to the step the run starts at) and the
 * config snapshot; the clocks of the progress figures start. */
static void start_log(Run *r)
{
    const Config *cfg = r->cfg;
    r->log = NULL;
    if (r->dist->rank == 0) {
        char path[4200], err[1024];
        snprintf(path, sizeof path, "%s/metrics.jsonl", cfg->train.run_dir);
        r->log = metrics_open(path, r->step > 0 ? r->step : -1, err, sizeof err);
        if (!r->log) fatal(EXIT_RUNTIME, "%s", err);
        if (!r->snapshot_is_input && rundir_write_file(cfg->train.run_dir, "config.yaml", r->yaml, err, sizeof err) != 0)
            fatal(EXIT_RUNTIME, "%s", err);
    }
    r->t_start = r->t_last = now_seconds();
    /* a resumed run has its checkpoint already: a stop before the first step writes none */
    r->last_saved = r->resumed ? r->step : -1;
}

/* Counts the step for the progress figures; on rank 0 every
 * train.log_every steps (and the first and last) appends the metrics
 * (TRL's names, one table below) and prints the progress line. */
static void log_step(Run *r, const StepSums *s, double grad_norm, float lr)
{
    const Config *cfg = r->cfg;
    r->tokens_since += s->tokens;
    r->rows_since += s->rows;
    r->tokens_total += s->tokens, r->padded_total += s->padded;
    r->steps_timed++;
    int log_now = r->step % cfg->train.log_every == 0 || r->step == cfg->train.max_steps || r->step == 1;
    if (!log_now || r->dist->rank != 0) return;
    double now = now_seconds(), dt = now - r->t_last;
    double tok_s = r->tokens_since / (dt > 0 ? dt : 1e-9);
    int mean_len = (int)(r->tokens_since / (r->rows_since > 0 ? r->rows_since : 1));
    double rank_gflops = tok_s * model_flops_per_token(&cfg->model, mean_len) / 1e9 / r->dist->size;
    double mfu = rank_gflops / r->peak_gflops;
    if (mfu > 1.0 && !r->peak_rechecked) {
        /* a rate above the ceiling: the start-up probe ran on a busy machine
         * (or FSPO_PEAK_GFLOPS is too low); measure once more and say so */
        r->peak_rechecked = 1;
        if (peak_overridden()) {
            printf("train: MFU %.0f%% at step %ld: FSPO_PEAK_GFLOPS (%.3g GFLOP/s) is below the %.3g GFLOP/s a rank "
                   "runs at; MFU figures of this run are not against a real ceiling\n",
                   100 * mfu, r->step, r->peak_gflops, rank_gflops);
        } else {
            double again = peak_measure_gflops(r->bf16);
            printf("train: MFU %.0f%% at step %ld: the peak measured at start (%.0f GFLOP/s) was low, the machine "
                   "busy then; measured again: %.0f GFLOP/s%s\n",
                   100 * mfu, r->step, r->peak_gflops, again, again > r->peak_gflops ? ", used from here" : "");
            if (again > r->peak_gflops) r->peak_gflops = again, mfu = rank_gflops / again;
        }
    }
    const LossStats *l = &s->loss;
    double pairs = l->pairs > 0 ? l->pairs : 1;
    /* desc/nll (data.user_desc cot only): nats per description token, this step */
    double desc_nll = s->desc_tokens > 0 ? s->desc_nll / s->desc_tokens : NAN;
    const Metric fields[] = {
        { "loss", l->loss },
        { "rewards/chosen", l->reward_chosen / pairs },
        { "rewards/rejected", l->reward_rejected / pairs },
        { "rewards/margins", l->reward_margin / pairs },
        { "rewards/accuracies", l->reward_accuracy / pairs },
        { "logps/chosen", l->logp_chosen / pairs },
        { "logps/rejected", l->logp_rejected / pairs },
        { "grad_norm", grad_norm },
        { "learning_rate", lr },
        { "tokens_per_sec", tok_s },
        { "mfu", mfu },
        { "skipped_nonfinite", (double)r->bad_steps_total },
        { "meta_examples_per_sec", r->rows_since / (dt > 0 ? dt : 1e-9) },
        { "skipped_examples", (double)r->skipped_examples },
        { "desc/nll", desc_nll }, /* last: logged with data.user_desc cot only */
    };
    int n = sizeof fields / sizeof *fields;
    if (metrics_log(r->log, r->step, fields, r->user_desc ? n : n - 1) != 0)
        fatal(EXIT_RUNTIME, "%s/metrics.jsonl: cannot append step %ld: %s", cfg->train.run_dir, r->step, strerror(errno));
    char eta[32];
    fmt_eta((now - r->t_start) / r->steps_timed * (cfg->train.max_steps - r->step), eta, sizeof eta);
    char desc[48] = "";
    if (r->user_desc) snprintf(desc, sizeof desc, " | desc nll %.3f", desc_nll);
    if (r->pref)
        printf("step %ld/%ld | loss %.4f | acc %.3f | margin %.4f%s | %.0f tok/s | MFU %.1f%% | lr %.2e | ETA %s\n",
               r->step, cfg->train.max_steps, l->loss, l->reward_accuracy / pairs, l->reward_margin / pairs, desc, tok_s,
               100 * mfu, lr, eta);
    else
        printf("step %ld/%ld | loss %.4f%s | %.0f tok/s | MFU %.1f%% | lr %.2e | ETA %s\n", r->step,
               cfg->train.max_steps, l->loss, desc, tok_s, 100 * mfu, lr, eta);
    /* once, from step 10: rows of varied length padded to their micro-batch's longest */
    double pad = padding_share(r);
    if (!r->padding_noted && (r->step >= 10 || r->step == cfg->train.max_steps) && pad >= 0.2) {
        r->padding_noted = 1;
        printf("train: %.0f%% of the tokens computed so far were padding (a micro-batch pads its rows to its "
               "longest): train.micro_batch: 1 runs one meta-example per forward, with none\n", 100 * pad);
    }
    fflush(stdout);
    r->t_last = now;
    r->tokens_since = r->rows_since = 0;
}

/* Sharded save: tensor t's moment `which` from the ranks that own its
 * parts (rank 0's ckpt_save asks for them in model order, m then v, and
 * the other ranks answer in the same order: save_moments). */
static void gather_moment(void *ctx, int which, const TensorInfo *t, float *buf)
{
    Run *r = ctx;
    dist_slices_gather_range(r->reducer, which ? r->opt.v : r->opt.m, t->offset, t->offset + t->numel, buf, 0);
}

/* The other ranks' side of a sharded save: every tensor's gather, in the
 * order rank 0's ckpt_save writes them. A failed save ends the job
 * (fatal: MPI_Abort), so no rank is left waiting in a gather. */
static void save_moments(Run *r)
{
    for (int which = r->opt.m ? 0 : 1; which < 2; which++)
        for (int i = 0; i < r->policy->n_tensors; i++) gather_moment(r, which, &r->policy->tensors[i], NULL);
}

/* Rank 0: a checkpoint of the current step (io/ckpt.h); dies if it fails.
 * Collective: sharded, the moments are gathered to rank 0 one tensor at a
 * time as it writes them, so the file is the one an unsharded run writes
 * and no rank ever holds more than its slice plus one tensor. */
static void save(Run *r)
{
    if (r->dist->rank != 0) {
        if (r->shard) save_moments(r);
        return;
    }
    CkptMeta meta = { .step = r->step, .samples_seen = r->step * r->cfg->train.batch_size, .world_size = r->dist->size,
                      .seed = r->cfg->train.seed, .data_checksum = r->data_checksum, .ref_checksum = r->ref_checksum };
    snprintf(meta.stage, sizeof meta.stage, "%s", STAGE_NAMES[r->cfg->train.stage]);
    snprintf(meta.ref_ckpt, sizeof meta.ref_ckpt, "%s", r->ref_path);
    snprintf(meta.lineage, sizeof meta.lineage, "%s", r->lineage);
    meta.skipped_examples = r->skipped_examples, meta.skipped_nonfinite = r->bad_steps_total;
    meta.tok = &r->data.tok;
    if (r->shard) meta.fetch = gather_moment, meta.fetch_ctx = r;
    char path[4096], err[1024], shown[8192];
    if (ckpt_save(r->cfg->train.run_dir, r->policy, &r->opt, &meta, r->yaml, r->cfg->checkpoint.keep, path,
                  sizeof path, err, sizeof err) != 0)
        fatal(EXIT_RUNTIME, "checkpoint at step %ld failed: %s", r->step, err);
    printf("train: checkpoint %s\n", str_escape(shown, sizeof shown, path));
    fflush(stdout);
}

/* ---- start-up ---- */

/* Training users with a description (data.user_desc: cot needs some). */
static int64_t users_described(const Sampler *s)
{
    int64_t n = 0;
    for (int64_t i = 0; i < s->n_users; i++) n += s->data->user_desc[2 * s->users[i] + 1] > 0;
    return n;
}

/* A sharded resume, rank 0: slice k's moments to rank k. */
static void send_moments(void *ctx, int k, const float *mm, const float *vv)
{
    const Run *r = ctx;
    size_t len = r->bounds[k + 1] - r->bounds[k];
    if (mm) dist_send_floats(mm, len, k);
    dist_send_floats(vv, len, k);
}

/* A sharded resume: rank 0 has read its own slice of the moments with the
 * checkpoint (ckpt_load fills an optimizer slice); it reads each other
 * rank's slice in turn and sends it, so no rank holds more than two slices. */
static void scatter_moments(Run *r, const char *path)
{
    const Dist *d = r->dist;
    size_t len = r->opt.hi - r->opt.lo;
    if (d->rank != 0) {
        if (r->opt.m) dist_recv_floats(r->opt.m, len, 0);
        dist_recv_floats(r->opt.v, len, 0);
        return;
    }
    size_t most = 1;
    for (int k = 1; k < d->size; k++) most = r->bounds[k + 1] - r->bounds[k] > most ? r->bounds[k + 1] - r->bounds[k] : most;
    float *mbuf = r->opt.m ? xmalloc_aligned(most * sizeof(float), "moments of a slice") : NULL;
    float *vbuf = xmalloc_aligned(most * sizeof(float), "moments of a slice");
    char err[1024];
    if (ckpt_read_moment_slices(path, r->policy, r->bounds, 1, d->size, mbuf, vbuf, send_moments, r, err, sizeof err) != 0)
        fatal(EXIT_USAGE, "resuming the optimizer slices: %s", err);
    xfree_aligned(mbuf);
    xfree_aligned(vbuf);
}

/* Rank 0 decides where the run starts (src/resume.h); everyone receives the
 * state (sharded: each rank its slice of the moments). */
static void initial_state(Run *r)
{
    const Config *cfg = r->cfg;
    const Dist *d = r->dist;
    char err[3584] = "";
    int code = 0;
    Start st = { 0 };
    if (d->rank == 0) {
        model_init_weights(r->policy, (uint64_t)cfg->train.seed);
        code = resume_decide(cfg, &r->data.tok, r->data_checksum, r->ref != NULL, r->ref_checksum, r->policy, &r->opt,
                             &st, err, sizeof err);
        snprintf(r->lineage, sizeof r->lineage, "%s", st.lineage);
    }
    agree_or_exit(d, code, err);
    int full = st.resumed; /* optimizer state too */
    const CkptMeta *meta = &st.meta;
    int64_t hdr[5] = { full, meta->step, r->opt.t, meta->skipped_examples, meta->skipped_nonfinite };
    dist_bcast(hdr, sizeof hdr, 0);
    dist_bcast(r->policy->params, sizeof(float) * r->policy->n_params, 0);
    model_params_changed(r->policy);
    if (hdr[0] && r->shard) scatter_moments(r, st.path);
    else if (hdr[0]) {
        if (r->opt.m) dist_bcast(r->opt.m, sizeof(float) * r->opt.n, 0);
        dist_bcast(r->opt.v, sizeof(float) * r->opt.n, 0);
    }
    r->step = hdr[0] ? hdr[1] : 0;
    r->resumed = hdr[0] != 0;
    r->opt.t = hdr[2];
    r->skipped_examples = hdr[0] ? hdr[3] : 0;
    r->bad_steps_total = hdr[0] ? hdr[4] : 0;
    if (d->rank == 0) {
        char shown[2 * sizeof st.path];
        if (full) printf("train: resuming from %s at step %ld\n", str_escape(shown, sizeof shown, st.path), r->step);
        else if (cfg->train.init_from[0])
            printf("train: starting from the weights of %s\n", str_escape(shown, sizeof shown, cfg->train.init_from));
        else printf("train: starting from random weights (seed %ld)\n", cfg->train.seed);
    }
}

/* Pair indices ordered by their tokens (prompt + chosen + rejected). */
static const Dataset *sort_data;
static int64_t pair_tokens(const Dataset *d, int64_t p) { return d->prompt[2 * p + 1] + d->chosen[2 * p + 1] + d->rejected[2 * p + 1]; }
static int by_tokens(const void *a, const void *b)
{
    int64_t x = pair_tokens(sort_data, *(const int64_t *)a), y = pair_tokens(sort_data, *(const int64_t *)b);
    return (x > y) - (x < y);
}

/* A run that could never train a meta-example whole would spend its steps
 * on cut-down or skipped ones: refuse it up front if even the shortest
 * meta-example the sampler can draw (a user's N + Q pairs with the fewest
 * tokens, N = data.n_fewshot_min if set, with the user's description under
 * data.user_desc cot), as pack_plan measures it, exceeds model.max_seq. */
static int check_fits(const Run *r, char *err, size_t errlen)
{
    const Config *cfg = r->cfg;
    const Dataset *ds = &r->data;
    int n = cfg->data.n_fewshot_min >= 0 ? cfg->data.n_fewshot_min : cfg->data.n_fewshot, q = cfg->data.n_queries;
    int64_t best = -1, best_user = -1, *idx = NULL;
    size_t cap = 0;
    sort_data = ds;
    for (int64_t i = 0; i < r->sampler.n_users; i++) {
        int64_t u = r->sampler.users[i], first = ds->user_pairs[2 * u], count = ds->user_pairs[2 * u + 1];
        if ((size_t)count > cap) {
            int64_t *grown = realloc(idx, sizeof *idx * (size_t)count);
            if (!grown) fatal(EXIT_RUNTIME, "out of memory checking meta-example lengths");
            idx = grown, cap = (size_t)count;
        }
        for (int64_t k = 0; k < count; k++) idx[k] = first + k;
        qsort(idx, (size_t)count, sizeof *idx, by_tokens);
        MetaExample ex = { .user = u, .n_fewshot = n, .n_queries = q };
        memcpy(ex.pairs, idx, sizeof(int64_t) * (size_t)(n + q)); /* the sampler only keeps users with N + Q pairs */
        if (r->user_desc) with_description(ds, &ex);
        int df, dq, len = pack_plan(ds, &ex, PACK_TREE, INT_MAX, &df, &dq);
        if (best < 0 || len < best) best = len, best_user = u;
    }
    free(idx);
    if (best <= cfg->model.max_seq) return 0;
    return set_err(err, errlen, "model.max_seq = %d is too short for %s: the shortest meta-example the sampler can draw "
                                "(%d few-shot and %d query pairs, user '%s'%s) takes %lld tokens, so every meta-example "
                                "would be cut down or skipped. Raise model.max_seq to at least %lld, or lower "
                                "data.n_fewshot%s or data.n_queries", cfg->model.max_seq, cfg->data.path, n, q,
                   ds->user_ids[best_user], r->user_desc ? " with its description" : "", (long long)best,
                   (long long)best, cfg->data.n_fewshot_min >= 0 ? "_min" : ""), EXIT_USAGE;
}

/* Rank 0, before the run directory is touched: no input of the run may be
 * a file the run writes there (a stage's checkpoint, metrics or config
 * pruned, truncated or rewritten), and a config given as the run's own
 * config.yaml must not be replaced by a different one. */
static int check_paths(Run *r, char *err, size_t errlen)
{
    const Config *cfg = r->cfg;
    const char *dir = cfg->train.run_dir;
    const struct { const char *key, *path; } in[] = {
        { "data.path", cfg->data.path }, { "loss.ref_ckpt", cfg->loss.ref_ckpt },
        { "train.init_from", cfg->train.init_from },
    };
    for (size_t i = 0; i < sizeof in / sizeof *in; i++)
        if (in[i].path[0] && rundir_is_run_file(dir, in[i].path))
            return set_err(err, errlen, "%s %s is a file of train.run_dir %s, which this run writes (it prunes "
                                        "checkpoints and rewrites metrics.jsonl and config.yaml there): a stage's "
                                        "inputs must live outside its run directory; use another train.run_dir",
                           in[i].key, in[i].path, dir), EXIT_USAGE;
    char snap[CFG_STR + 32];
    snprintf(snap, sizeof snap, "%s/config.yaml", dir);
    if (r->config_path && same_file(r->config_path, snap)) {
        /* fspo train RUN/config.yaml: fine as long as the snapshot stays what it is */
        static char text[CFG_YAML_MAX];
        FILE *f = fopen(r->config_path, "r");
        size_t n = f ? fread(text, 1, sizeof text - 1, f) : 0;
        if (f) fclose(f);
        text[n] = '\0';
        if (strcmp(text, r->yaml) != 0)
            return set_err(err, errlen, "%s is the config snapshot of train.run_dir %s, and this run's config "
                                        "differs from it (--set overrides or an edit): the run would overwrite its "
                                        "own input. Copy it and train from the copy", r->config_path, dir), EXIT_USAGE;
        r->snapshot_is_input = 1;
    }
    return 0;
}

int train_check_ranks(const Config *cfg, int ranks, int local, char *err, size_t errlen)
{
    int B = cfg->train.batch_size;
    if (ranks > B)
        return snprintf(err, errlen, "%d ranks but train.batch_size is %d: every rank needs at least one meta-example "
                                     "per step (raise train.batch_size or use fewer ranks)", ranks, B), EXIT_USAGE;
    int pref = cfg->train.stage == STAGE_PREF && cfg->loss.type != LOSS_SIMPO;
    int share = (B + ranks - 1) / ranks;
    int mb = cfg->train.micro_batch > 0 && cfg->train.micro_batch < share ? cfg->train.micro_batch : share;
    /* this node's ranks, each with its real micro-batch */
    double mem = machine_memory_bytes(), need_mem = model_train_bytes_keep(&cfg->model, mb, pref, (ActKeep){ cfg->attention, cfg->recompute }) * local;
    /* ZeRO-1: each rank keeps 1/ranks of the AdamW moments model_train_bytes counts */
    if (cfg->mpi.shard_optimizer && ranks > 1)
        need_mem -= local * optim_state_bytes(OPTIM_ADAMW, (size_t)model_param_count(&cfg->model)) * (1.0 - 1.0 / ranks);
    if (mem > 0 && need_mem > mem)
        return snprintf(err, errlen, "%d rank(s) on this node, each with micro-batches of %d meta-example(s) of "
                                     "model.max_seq %d tokens, need at least %.1f GiB (weights, gradients, AdamW moments%s and "
                                     "activations); this node has %.1f GiB. Set train.micro_batch (per-rank rows per "
                                     "forward/backward), or use fewer ranks per node",
                        local, mb, cfg->model.max_seq, need_mem / (1 << 30), pref ? ", reference model" : "",
                        mem / (1 << 30)), EXIT_USAGE;
    return 0;
}

/* Every rank: its node and thread count go to rank 0, which prints one
 * line ("train: placement: n1 ranks 0-1 x 2 thread(s); n2 ..."), so a
 * multi-node job's log shows where Slurm put each rank. The node is
 * SLURMD_NODENAME under Slurm (several slurmd may share a host), else the
 * host name. */
typedef struct { char node[60]; int threads; } Placement;

static void print_placement(const Dist *d, int threads)
{
    Placement mine = { .threads = threads }, *all = d->rank == 0 ? calloc((size_t)d->size, sizeof *all) : NULL;
    const char *slurm_node = getenv("SLURMD_NODENAME");
    if (slurm_node && slurm_node[0]) snprintf(mine.node, sizeof mine.node, "%s", slurm_node);
    else if (gethostname(mine.node, sizeof mine.node) != 0) snprintf(mine.node, sizeof mine.node, "?");
    mine.node[sizeof mine.node - 1] = '\0';
    if (d->rank == 0 && !all) fatal(EXIT_RUNTIME, "out of memory for the placement of %d ranks", d->size);
    dist_gather_bytes(&mine, sizeof mine, all, 0);
    if (d->rank != 0) return;
    printf("train: placement:");
    /* runs of consecutive ranks on one node with one thread count */
    for (int i = 0, n = 0; i < d->size; i = n) {
        for (n = i + 1; n < d->size && !strcmp(all[n].node, all[i].node) && all[n].threads == all[i].threads; n++) {}
        if (n - i > 1) printf("%s %s ranks %d-%d x %d thread(s)", i ? ";" : "", all[i].node, i, n - 1, all[i].threads);
        else printf("%s %s rank %d x %d thread(s)", i ? ";" : "", all[i].node, i, all[i].threads);
    }
    printf("\n");
    free(all);
}

/* Rank 0: the optimizer state one rank holds (the largest slice when
 * sharded), the figure ZeRO-1 divides by the ranks. */
static void print_optimizer_memory(const Run *r)
{
    const Optimizer *o = &r->opt;
    int W = r->dist->size;
    size_t most = o->hi - o->lo;
    for (int k = 0; r->shard && k < W; k++)
        if (r->bounds[k + 1] - r->bounds[k] > most) most = r->bounds[k + 1] - r->bounds[k];
    size_t bytes = optim_state_bytes(o->cfg.kind, most);
    if (r->shard)
        printf("train: optimizer state: %.3f MiB per rank (%zu bytes: %s state of at most %zu of the %zu parameters, "
               "sharded over %d ranks)\n", bytes / 1048576.0, bytes, OPTIM_KIND_NAMES[o->cfg.kind], most, o->n, W);
    else
        printf("train: optimizer state: %.3f MiB per rank (%zu bytes: %s state of all %zu parameters on every rank%s)\n",
               bytes / 1048576.0, bytes, OPTIM_KIND_NAMES[o->cfg.kind], o->n,
               W > 1 ? "; mpi.shard_optimizer divides it by the ranks"
               : r->cfg->mpi.shard_optimizer ? "; mpi.shard_optimizer: nothing to shard over 1 rank" : "");
}

static void setup(Run *r, const Config *cfg, const Dist *d, const char *config_path, const char *yaml)
{
    memset(r, 0, sizeof *r);
    r->cfg = cfg;
    r->dist = d;
    r->config_path = config_path;
    r->yaml = yaml;
    char err[1024] = "";
    int code = 0;
    r->pref = cfg->train.stage == STAGE_PREF;
    int B = cfg->train.batch_size;
    code = train_check_ranks(cfg, d->size, d->local_size, err, sizeof err);
    agree_or_exit(d, code, err);
    /* model.precision: every rank must run the same products, so auto is
     * bf16 only where all ranks have the units */
    r->bf16 = bf16_resolve(cfg->precision, err, sizeof err);
    agree_or_exit(d, r->bf16 < 0 ? EXIT_USAGE : 0, err);
    r->bf16 = -dist_allreduce_max_int(-r->bf16);
    /* fault injection for the reliability tests (docs/reliability.md); a
     * value that is not one of the hooks is a usage error, not ignored */
    r->fault = fault_from_env();
    if (!r->fault.valid) {
        code = EXIT_USAGE;
        snprintf(err, sizeof err, "FSPO_FAULT='%.200s' is not a fault hook (data@RANK, nan@RANK:STEP[+K], "
                                  "diverge@RANK:STEP, ckptfail@STEP, ckptslow@MS, h5crash, h5hang); unset it",
                 r->fault.text);
    }
    agree_or_exit(d, code, err);
    if (r->fault.data_rank == d->rank)
        fatal(EXIT_USAGE, "rank %d: %s: cannot read the dataset (injected fault FSPO_FAULT=%s)", d->rank, cfg->data.path,
              r->fault.text);
    if (dataset_read(cfg->data.path, &r->data, err, sizeof err) != 0) code = EXIT_USAGE;
    else if (tok_n_ids(&r->data.tok) > cfg->model.vocab) {
        code = EXIT_USAGE;
        snprintf(err, sizeof err, "%s: tokenized with %s, which has %d ids; model.vocab is %d: set model.vocab: %d "
                                  "(the model's vocabulary must hold the tokenizer's ids)", cfg->data.path,
                 tok_name(&r->data.tok), (int)tok_n_ids(&r->data.tok), cfg->model.vocab,
                 (int)tok_n_ids(&r->data.tok));
    }
    if (code == 0 && sampler_init(&r->sampler, &r->data, SPLIT_TRAIN, (uint64_t)cfg->train.seed, cfg->data.n_fewshot,
                                  cfg->data.n_fewshot_min, cfg->data.n_queries, err, sizeof err) != 0)
        code = EXIT_USAGE;
    if (code == 0 && cfg->data.user_desc == USER_DESC_COT && users_described(&r->sampler) == 0) {
        code = EXIT_USAGE;
        snprintf(err, sizeof err, "data.user_desc is cot, but no training user of %s has a description (the "
                                  "'user_description' field of fspo prep's input; fspo synth writes it)", cfg->data.path);
    }
    agree_or_exit(d, code, err);
    r->data_checksum = r->data.checksum;

    char why[64];
    int threads = threads_per_rank(cfg->mpi.threads_per_rank, d->local_size, d->rank, why, sizeof why);
    threads_use(threads);
    int share = (B + d->size - 1) / d->size;
    int mb = cfg->train.micro_batch > 0 && cfg->train.micro_batch < share ? cfg->train.micro_batch : share;
    r->policy = model_create_keep(&cfg->model, 1, mb, cfg->model.max_seq, (ActKeep){ cfg->attention, cfg->recompute });
    r->include_rejected = cfg->train.sft_include_rejected;
    r->context_targets = !r->pref && cfg->train.sft_context;
    r->user_desc = cfg->data.user_desc == USER_DESC_COT;
    if (d->rank == 0) code = check_fits(r, err, sizeof err); /* agreed with the reference's load below */
    r->loss = (LossConfig){ .type = cfg->loss.type, .beta = cfg->loss.beta, .label_smoothing = cfg->loss.label_smoothing,
                            .simpo_gamma = cfg->loss.simpo_gamma, .sft_weight = cfg->loss.sft_weight,
                            .desc_weight = cfg->loss.desc_weight };
    OptimConfig oc = config_optim(cfg);
    size_t n = r->policy->n_params;
    r->shard = cfg->mpi.shard_optimizer && d->size > 1;
    if (r->shard) {
        r->bounds = malloc(sizeof(size_t) * (d->size + 1));
        if (!r->bounds) fatal(EXIT_RUNTIME, "out of memory for the optimizer slices");
        for (int k = 0; k < d->size; k++) optim_shard_range(n, k, d->size, &r->bounds[k], &r->bounds[k + 1]);
        optim_init_slice(&r->opt, &oc, n, r->bounds[d->rank], r->bounds[d->rank + 1]);
    } else
        optim_init(&r->opt, &oc, n);
    r->sched = (Schedule){ .kind = cfg->optim.schedule,
                           .lr = (float)cfg->optim.lr, .min_lr = (float)cfg->optim.min_lr,
                           .warmup_steps = cfg->optim.warmup_steps,
                           .total_steps = cfg->optim.decay_steps > 0 ? cfg->optim.decay_steps : cfg->train.max_steps };
    /* the frozen reference: the SFT checkpoint, forward only (SimPO needs
     * none; config_load made sure the others name one) */
    if (r->pref && r->loss.type != LOSS_SIMPO) {
        snprintf(r->ref_path, sizeof r->ref_path, "%s", cfg->loss.ref_ckpt);
        char reason[900];
        FrozenSpec spec = { .shape = &cfg->model, .max_rows = mb, .tok = &r->data.tok, .tok_from = cfg->data.path,
                            .checksum = &r->ref_checksum, .attention = cfg->attention };
        if (!(r->ref = frozen_load(cfg->loss.ref_ckpt, &spec, reason, sizeof reason))) {
            code = EXIT_USAGE;
            snprintf(err, sizeof err, "loss.ref_ckpt: %s", reason);
        }
    }
    agree_or_exit(d, code, err);
    if (r->bf16) {
        model_set_precision(r->policy, PRECISION_BF16);
        if (r->ref) model_set_precision(r->ref, PRECISION_BF16);
    }
    /* everything that can fail on the inputs has been checked: only now is
     * the run directory touched, and rank 0 first takes it for this run */
    if (d->rank == 0 && (code = check_paths(r, err, sizeof err)) == 0) {
        int held = rundir_lock(cfg->train.run_dir, err, sizeof err);
        code = held == 0 ? 0 : held > 0 ? EXIT_USAGE : EXIT_RUNTIME;
        if (held == 0) fatal_set_cleanup(rundir_unlock);
    }
    agree_or_exit(d, code, err);
    if (d->size > 1) { /* before initial_state: a sharded resume scatters the moments through it */
        size_t cuts[4200];
        if (cfg->model.n_layers + 2 > 4200) fatal(EXIT_USAGE, "model.n_layers too large for the bucket table");
        int nc = model_grad_cuts(r->policy, cuts, 4200);
        double bucket = cfg->mpi.bucket_mb * 1048576.0;
        r->reducer = r->shard ? dist_reducer_create_sharded(r->policy->grads, cuts, nc, bucket, r->bounds)
                              : dist_reducer_create(r->policy->grads, cuts, nc, bucket);
    }
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
    r->ans = calloc(mb, sizeof *r->ans);
    r->plan_g = calloc(B, sizeof *r->plan_g);
    r->row_g = calloc(mb, sizeof *r->row_g);
    if (!r->plan || !r->plan_len || !r->owner || !r->mine || !r->ans || !r->plan_g || !r->row_g)
        fatal(EXIT_RUNTIME, "out of memory for a step's plan (train.batch_size %d)", B);
    /* loss.ref_cache: meta-examples repeat only when data.fixed_examples cycles
     * K of them (otherwise every step draws new ones); up to 512 MiB of sums */
    long K_fixed = cfg->data.fixed_examples;
    if (r->ref && cfg->loss.ref_cache && K_fixed > 0 && K_fixed <= (1L << 29) / (2 * SAMPLER_MAX_QUERIES * 8)) {
        r->ref_cache = xcalloc_aligned(sizeof(double) * 2 * SAMPLER_MAX_QUERIES * (size_t)K_fixed, "loss.ref_cache");
        r->ref_cached = calloc((size_t)K_fixed, sizeof *r->ref_cached);
        if (!r->ref_cached) fatal(EXIT_RUNTIME, "out of memory for loss.ref_cache (%ld meta-examples)", K_fixed);
    }
    if (d->size > 1) r->allreduce_full_s = r->shard ? dist_reducer_time(r->reducer) : dist_time_allreduce(r->policy->grads, n);
    if (d->size > 1) print_placement(d, threads);
    if (d->rank == 0) {
        r->peak_gflops = peak_train_gflops(r->bf16);
        printf("train: %s stage, %d rank(s) x %d BLAS thread(s) (%s), %zu parameters, global batch %d (micro-batch "
               "%d), %lld training users\n",
               STAGE_NAMES[cfg->train.stage], d->size, threads, why, r->policy->n_params, B, mb, (long long)r->sampler.n_users);
        char unit[128], kern[256], why_auto[200] = "";
        bf16_supported(unit, sizeof unit);
        /* only auto's line says why: on AVX512-BF16 without AMX the first call measures */
        if (cfg->precision == PRECISION_CHOICE_AUTO) bf16_auto(why_auto, sizeof why_auto);
        if (r->bf16) {
            bf16_kernel_summary(kern, sizeof kern);
            printf("train: precision bf16 (model.precision %s; %s): %s (oneDNN %s); MFU against the bf16 product "
                   "peak, %.0f GFLOP/s\n",
                   PRECISION_CHOICE_NAMES[cfg->precision], unit, kern, bf16_library_version(), r->peak_gflops);
        } else
            printf("train: precision fp32 (model.precision %s%s%s): OpenBLAS sgemm; MFU against the sgemm peak, "
                   "%.0f GFLOP/s\n",
                   PRECISION_CHOICE_NAMES[cfg->precision], cfg->precision == PRECISION_CHOICE_AUTO ? ": " : "",
                   cfg->precision == PRECISION_CHOICE_AUTO ? why_auto : "",
                   r->peak_gflops);
        if (cfg->attention == ATTENTION_FLASH)
            printf("train: model.attention flash: no [rows, heads, T, T] probabilities kept; activation arena %.1f MiB "
                   "(full: %.1f MiB)\n", r->policy->arena_floats * sizeof(float) / 1048576.0,
                   model_arena_bytes(&cfg->model, 1, mb, cfg->model.max_seq) / 1048576.0);
        if (cfg->recompute)
            printf("train: model.recompute: each block's forward runs again before its backward; activation arena "
                   "%.1f MiB (without: %.1f MiB)\n", r->policy->arena_floats * sizeof(float) / 1048576.0,
                   model_arena_bytes_keep(&cfg->model, 1, mb, cfg->model.max_seq, (ActKeep){ cfg->attention, 0 }) /
                       1048576.0);
        if (r->user_desc)
            printf("train: data.user_desc cot: %lld of %lld training users have a description (the others get no "
                   "description segment)\n", (long long)users_described(&r->sampler), (long long)r->sampler.n_users);
        print_optimizer_memory(r);
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
    free(r->ans);
    free(r->plan_g);
    free(r->row_g);
    xfree_aligned(r->ref_cache);
    free(r->ref_cached);
    batch_free(&r->batch);
    dist_reducer_free(r->reducer);
    free(r->bounds);
    optim_free(&r->opt);
    model_free(r->policy);
    model_free(r->ref);
    sampler_free(&r->sampler);
    dataset_free(&r->data);
}
