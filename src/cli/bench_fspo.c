/* `fspo bench --pref | --ckpt | --dp`: the benchmark rows beyond the plain
 * training step (docs/benchmarks.md):
 *   --pref DATA  FSPO preference step (reference forward, policy forward,
 *                DPO, backward, AdamW) per meta-example, tree-packed vs the
 *                same meta-examples as unshared rows, interleaved in one
 *                process, losses and gradients checked equal; peak RSS of
 *                the tree-packed setup vs its analytic memory; --dump FILE
 *                writes the unshared rows for scripts/bench_torch_fspo.py.
 *   --ckpt DIR   checkpoint save and load of a model with AdamW moments vs
 *                plain write+fsync / read of the same number of bytes.
 *   --dp         (under mpirun) the bucketed overlapped allreduce with the
 *                same work on every rank and a barrier before the backward,
 *                so the wait after the backward is communication only;
 *                --shard: the ZeRO-1 reduce-scatter instead, and the
 *                optimizer state per rank, measured (RSS) and counted.
 * Each prints one JSON line. */
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cblas.h>

#include "io/ckpt.h"
#include "io/config.h"
#include "io/dataset.h"
#include "mpi/dist.h"
#include "src/batch.h"
#include "src/cli/bench.h"
#include "src/cli/cli.h"
#include "src/cli/commands.h"
#include "src/loss.h"
#include "src/model.h"
#include "src/optim.h"
#include "src/pack.h"
#include "src/pool.h"
#include "src/rng.h"
#include "src/sampler.h"
#include "src/util.h"

/* kB from a /proc/self/status line (VmHWM: peak resident set; VmRSS: now) */
long bench_status_kb(const char *key)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return -1;
    char line[256];
    long kb = -1;
    size_t n = strlen(key);
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, key, n) && line[n] == ':') {
            kb = strtol(line + n + 1, NULL, 10);
            break;
        }
    fclose(f);
    return kb;
}

/* The benchmark batch: `rows` causal rows of T random bytes (seed 99, so
 * every rank and mode gets the same rows) with next-token targets on every
 * position but the last, and dlogp = -1/K (the mean loss's gradient). */
void bench_lm_batch(Batch *b, int rows, int T, float **logp, float **dlogp)
{
    batch_alloc(b, rows, T, 1, rows * T);
    batch_reset(b, rows, T, 1);
    Rng r = rng_seed(99, 0);
    int32_t *row = malloc(sizeof(int32_t) * T);
    for (int rr = 0; rr < rows; rr++) {
        for (int t = 0; t < T; t++) row[t] = (int32_t)rng_below(&r, 256);
        batch_set_causal_row(b, rr, row);
    }
    free(row);
    for (int rr = 0; rr < rows; rr++)
        for (int t = 0; t + 1 < T; t++) b->targets[b->n_targets++] = (Target){ rr * T + t, b->tokens[rr * T + t + 1], 1.0f };
    *logp = malloc(sizeof(float) * b->n_targets);
    *dlogp = malloc(sizeof(float) * b->n_targets);
    for (int k = 0; k < b->n_targets; k++) (*dlogp)[k] = -1.0f / (float)b->n_targets;
}

static void set_threads(int threads)
{
    if (threads > 0) openblas_set_num_threads(threads);
    pool_set_threads(openblas_get_num_threads());
}

/* ---------------------------------------------------------------------- */
/* --pref                                                                  */

typedef struct {
    Model *policy, *ref;
    Optimizer opt;
    Batch b;
    float *logp, *ref_logp, *dlogp;
    PackMode mode;
} PrefSide;

static void side_init(PrefSide *s, const ModelConfig *cfg, PackMode mode, int rows, int T, int S)
{
    memset(s, 0, sizeof *s);
    s->mode = mode;
    s->policy = model_create(cfg, 1, rows, T);
    s->ref = model_create(cfg, 0, rows, T);
    OptimConfig oc = config_optim_default(OPTIM_ADAMW);
    optim_init(&s->opt, &oc, s->policy->n_params);
    int K = rows * T;
    batch_alloc(&s->b, rows, T, S, K);
    s->logp = xcalloc_aligned(sizeof(float) * K, "bench");
    s->ref_logp = xcalloc_aligned(sizeof(float) * K, "bench");
    s->dlogp = xcalloc_aligned(sizeof(float) * K, "bench");
}

static void side_free(PrefSide *s)
{
    model_free(s->policy);
    model_free(s->ref);
    optim_free(&s->opt);
    batch_free(&s->b);
    xfree_aligned(s->logp);
    xfree_aligned(s->ref_logp);
    xfree_aligned(s->dlogp);
}

/* One preference step on one meta-example: returns the DPO loss. The
 * optimizer runs with lr 0 so both sides keep identical weights. */
static double side_step(PrefSide *s, const Dataset *d, const MetaExample *ex, int len, const LossConfig *lc)
{
    Batch *b = &s->b;
    int rows = pack_rows(ex, s->mode);
    batch_reset(b, rows, len, pack_segments(ex, s->mode));
    PackedAnswers ans[2 * SAMPLER_MAX_QUERIES], merged;
    if (s->mode == PACK_TREE) pack_write(d, ex, PACK_TREE, b, 0, &merged);
    else {
        pack_write(d, ex, PACK_UNSHARED, b, 0, &ans[0]);
        merged = ans[0];
    }
    model_zero_grad(s->policy);
    memset(s->dlogp, 0, sizeof(float) * b->n_targets);
    model_forward(s->ref, b, s->ref_logp);
    model_forward(s->policy, b, s->logp);
    double ref_sums[2 * SAMPLER_MAX_QUERIES];
    answer_logps(s->ref_logp, &merged, ref_sums);
    LossStats st = { 0 };
    double loss = pref_loss(lc, s->logp, ref_sums, &merged, ex->n_queries, s->dlogp, &st);
    model_backward(s->policy, b, s->dlogp);
    optim_step(&s->opt, s->policy, 0.0f);
    return loss;
}

/* the unshared rows of an example, as scripts/bench_torch_fspo.py reads them */
static void dump_rows(FILE *f, const Batch *b, const PackedAnswers *ans)
{
    fprintf(f, "{\"rows\": [");
    for (int a = 0; a < ans->n_answers; a++) {
        int first = ans->first[a], last = ans->first[a + 1] - 1;
        int len = b->targets[last].index - a * b->T + 2, n_ans = last - first + 1;
        fprintf(f, "%s{\"n_answer\": %d, \"tokens\": [", a ? ", " : "", n_ans);
        for (int t = 0; t < len; t++) fprintf(f, "%s%d", t ? "," : "", b->tokens[(size_t)a * b->T + t]);
        fprintf(f, "]}");
    }
    fprintf(f, "]}\n");
}

static int bench_pref(int argc, char **argv)
{
    ModelConfig cfg = { .vocab = 264, .d_model = 256, .n_layers = 4, .n_heads = 4, .max_seq = 8192 };
    int batch = 1, N = 8, Q = 4, examples = 4, threads = 0;
    const char *data = NULL, *dump = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--pref")) data = cli_str("bench", argc, argv, &i);
        else if (model_shape_option("bench", argc, argv, &i, &cfg, &batch)) cfg.max_seq = 8192;
        else if (!strcmp(argv[i], "--fewshot")) N = cli_int("bench", argc, argv, &i, 0, SAMPLER_MAX_FEWSHOT);
        else if (!strcmp(argv[i], "--queries")) Q = cli_int("bench", argc, argv, &i, 1, SAMPLER_MAX_QUERIES);
        else if (!strcmp(argv[i], "--examples")) examples = cli_int("bench", argc, argv, &i, 1, 256);
        else if (!strcmp(argv[i], "--threads")) threads = cli_int("bench", argc, argv, &i, 1, 1024);
        else if (!strcmp(argv[i], "--dump")) dump = cli_str("bench", argc, argv, &i);
        else if (!strcmp(argv[i], "--json")) continue;
        else fatal(EXIT_USAGE, "bench --pref: unknown option '%s'", argv[i]);
    }
    model_shape_check("bench", &cfg);
    long rss_base = bench_status_kb("VmRSS");
    set_threads(threads);
    char err[1024];
    Dataset d;
    if (dataset_read(data, &d, err, sizeof err) != 0) fatal(EXIT_USAGE, "bench: %s", err);
    Sampler smp;
    if (sampler_init(&smp, &d, SPLIT_TRAIN, 1, N, -1, Q, err, sizeof err) != 0) fatal(EXIT_USAGE, "bench: %s", err);
    /* examples that fit whole in both layouts, so both do the same work */
    MetaExample ex[256];
    int lt[256], lu[256], n = 0, maxt = 0, maxu = 0;
    double tok_t = 0, tok_u = 0;
    for (uint64_t g = 0; n < examples && g < 100000; g++) {
        MetaExample e;
        sampler_draw(&smp, g, &e);
        MetaExample e2 = e;
        int df, dq, df2, dq2;
        int a = pack_plan(&d, &e, PACK_TREE, cfg.max_seq, &df, &dq);
        int b = pack_plan(&d, &e2, PACK_UNSHARED, cfg.max_seq, &df2, &dq2);
        if (a < 0 || b < 0 || df || dq || df2 || dq2) continue;
        ex[n] = e, lt[n] = a, lu[n] = b;
        if (a > maxt) maxt = a;
        if (b > maxu) maxu = b;
        tok_t += a, tok_u += (double)b * 2 * Q;
        n++;
    }
    if (n < examples) fatal(EXIT_USAGE, "bench: only %d meta-examples fit max_seq %d", n, cfg.max_seq);
    LossConfig lc = { .type = LOSS_DPO, .beta = 0.1 };

    /* tree side first, alone: its peak RSS against its analytic memory */
    PrefSide tree, flat;
    side_init(&tree, &cfg, PACK_TREE, 1, maxt, 1 + 3 * Q);
    model_init_weights(tree.policy, 1234);
    model_init_weights(tree.ref, 4321); /* another model, so the DPO loss is not log 2 */
    side_step(&tree, &d, &ex[0], lt[0], &lc);
    long rss_tree = bench_status_kb("VmHWM");
    size_t P = tree.policy->n_params;
    double analytic = 4.0 * P * 5 /* params, grads, m, v, reference */ + model_arena_bytes(&cfg, 1, 1, maxt) +
                      model_arena_bytes(&cfg, 0, 1, maxt);
    double data_bytes = 2.0 * d.n_tokens + 8.0 * 2 * 3 * d.n_pairs;

    side_init(&flat, &cfg, PACK_UNSHARED, 2 * Q, maxu, 1);
    memcpy(flat.policy->params, tree.policy->params, sizeof(float) * P);
    memcpy(flat.ref->params, tree.ref->params, sizeof(float) * P);
    FILE *df = dump ? fopen(dump, "w") : NULL;
    if (dump && !df) fatal(EXIT_USAGE, "bench: cannot write %s", dump);
    double tt[256], tu[256], loss_err = 0, grad_err = 0, loss_t = 0, loss_u = 0;
    for (int i = 0; i < n; i++) {
        /* alternate which layout goes first */
        for (int k = 0; k < 2; k++) {
            PrefSide *s = (k ^ (i & 1)) ? &flat : &tree;
            double t0 = now_seconds();
            double l = side_step(s, &d, &ex[i], s == &tree ? lt[i] : lu[i], &lc);
            double dt = now_seconds() - t0;
            if (s == &tree) tt[i] = dt, loss_t = l;
            else tu[i] = dt, loss_u = l;
        }
        loss_err = fmax(loss_err, fabs(loss_t - loss_u) / fmax(fabs(loss_u), 1e-12));
        double gd = 0, gm = 0;
        for (size_t p = 0; p < P; p++) {
            gd = fmax(gd, fabs(tree.policy->grads[p] - flat.policy->grads[p]));
            gm = fmax(gm, fabs(flat.policy->grads[p]));
        }
        grad_err = fmax(grad_err, gd / fmax(gm, 1e-30));
        if (df) {
            PackedAnswers ans;
            batch_reset(&flat.b, 2 * ex[i].n_queries, lu[i], 1);
            pack_write(&d, &ex[i], PACK_UNSHARED, &flat.b, 0, &ans);
            dump_rows(df, &flat.b, &ans);
        }
        fprintf(stderr, "bench: meta-example %d/%d: tree %.3f s, unshared %.3f s, loss %.6f vs %.6f\n", i + 1, n,
                tt[i], tu[i], loss_t, loss_u);
    }
    if (df) fclose(df);
    double mt = median(tt, n), mu = median(tu, n);
    int ok = loss_err < 1e-4 && grad_err < 1e-4;
    printf("{\"kind\": \"pref_pack\", \"d_model\": %d, \"n_layers\": %d, \"threads\": %d, \"fewshot\": %d, "
           "\"queries\": %d, \"examples\": %d, \"tree_tokens_mean\": %.1f, \"unshared_tokens_mean\": %.1f, "
           "\"tree_s_median\": %.4f, \"unshared_s_median\": %.4f, \"speedup\": %.3f, \"tree_meta_per_s\": %.4f, "
           "\"loss_max_rel_diff\": %.3g, \"grad_max_rel_diff\": %.3g, \"same_loss\": %s, "
           "\"rss_peak_mb\": %.1f, \"rss_base_mb\": %.1f, \"analytic_mb\": %.1f, \"dataset_mb\": %.1f, "
           "\"rss_ratio\": %.3f, \"rss_ratio_net\": %.3f, \"params\": %zu, \"arena_len\": %d}\n",
           cfg.d_model, cfg.n_layers, openblas_get_num_threads(), N, Q, n, tok_t / n, tok_u / n, mt, mu, mu / mt,
           1.0 / mt, loss_err, grad_err, ok ? "true" : "false", rss_tree / 1024.0, rss_base / 1024.0, analytic / 1048576,
           data_bytes / 1048576, rss_tree * 1024.0 / analytic, (rss_tree - rss_base) * 1024.0 / (analytic + data_bytes),
           P, maxt);
    side_free(&tree);
    side_free(&flat);
    sampler_free(&smp);
    dataset_free(&d);
    return ok ? EXIT_OK : EXIT_RUNTIME;
}

/* ---------------------------------------------------------------------- */
/* --ckpt                                                                  */

static double plain_write(const char *path, const char *buf, size_t bytes)
{
    double t0 = now_seconds();
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) fatal(EXIT_RUNTIME, "bench: cannot write %s", path);
    for (size_t off = 0; off < bytes;) {
        ssize_t w = write(fd, buf + off, bytes - off > (1u << 26) ? (1u << 26) : bytes - off);
        if (w <= 0) fatal(EXIT_RUNTIME, "bench: write failed on %s", path);
        off += (size_t)w;
    }
    fsync(fd);
    close(fd);
    return now_seconds() - t0;
}

static double plain_read(const char *path, char *buf, size_t bytes)
{
    double t0 = now_seconds();
    int fd = open(path, O_RDONLY);
    if (fd < 0) fatal(EXIT_RUNTIME, "bench: cannot read %s", path);
    for (size_t off = 0; off < bytes;) {
        ssize_t r = read(fd, buf + off, bytes - off > (1u << 26) ? (1u << 26) : bytes - off);
        if (r <= 0) break;
        off += (size_t)r;
    }
    close(fd);
    return now_seconds() - t0;
}

static int bench_ckpt(int argc, char **argv)
{
    ModelConfig cfg = { .vocab = 264, .d_model = 512, .n_layers = 8, .n_heads = 8, .max_seq = 1024 };
    int batch = 2, reps = 3;
    const char *dir = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--ckpt")) dir = cli_str("bench", argc, argv, &i);
        else if (model_shape_option("bench", argc, argv, &i, &cfg, &batch)) continue;
        else if (!strcmp(argv[i], "--reps")) reps = cli_int("bench", argc, argv, &i, 1, 64);
        else if (!strcmp(argv[i], "--json")) continue;
        else fatal(EXIT_USAGE, "bench --ckpt: unknown option '%s'", argv[i]);
    }
    model_shape_check("bench", &cfg);
    mkdir(dir, 0777);
    Model *m = model_create(&cfg, 1, 1, 8);
    model_init_weights(m, 1);
    OptimConfig oc = config_optim_default(OPTIM_ADAMW);
    Optimizer opt;
    optim_init(&opt, &oc, m->n_params);
    Rng r = rng_seed(3, 0);
    for (size_t i = 0; i < m->n_params; i++) opt.m[i] = (float)rng_normal(&r) * 1e-3f, opt.v[i] = 1e-6f;
    double ts[64], tl[64], tw[64], tr[64];
    char path[4096], plain[4200], err[1024];
    size_t bytes = 0;
    char *buf = NULL;
    for (int k = 0; k < reps; k++) {
        CkptMeta meta = { .step = k + 1, .world_size = 1, .seed = 1 };
        snprintf(meta.stage, sizeof meta.stage, "sft");
        double t0 = now_seconds();
        if (ckpt_save(dir, m, &opt, &meta, "bench: true\n", 1, path, sizeof path, err, sizeof err) != 0)
            fatal(EXIT_RUNTIME, "bench: %s", err);
        ts[k] = now_seconds() - t0;
        if (!buf) {
            struct stat st;
            stat(path, &st);
            bytes = (size_t)st.st_size;
            buf = xmalloc_aligned(bytes, "bench");
            memcpy(buf, m->params, sizeof(float) * m->n_params); /* real data, not zeros */
            size_t rest = bytes - sizeof(float) * m->n_params;
            memcpy(buf + sizeof(float) * m->n_params, opt.m, rest < sizeof(float) * m->n_params ? rest : sizeof(float) * m->n_params);
            snprintf(plain, sizeof plain, "%s/plain.bin", dir);
        }
        tw[k] = plain_write(plain, buf, bytes);
        t0 = now_seconds();
        if (ckpt_load(path, m, &opt, NULL, err, sizeof err) != 0) fatal(EXIT_RUNTIME, "bench: %s", err);
        tl[k] = now_seconds() - t0;
        tr[k] = plain_read(plain, buf, bytes);
    }
    unlink(plain);
    unlink(path);
    rmdir(dir);
    double s = median(ts, reps), l = median(tl, reps), w = median(tw, reps), rd = median(tr, reps);
    printf("{\"kind\": \"ckpt\", \"d_model\": %d, \"n_layers\": %d, \"params\": %zu, \"bytes\": %zu, \"reps\": %d, "
           "\"save_s\": %.4f, \"load_s\": %.4f, \"plain_write_fsync_s\": %.4f, \"plain_read_s\": %.4f, "
           "\"save_ratio\": %.3f, \"load_ratio\": %.3f}\n",
           cfg.d_model, cfg.n_layers, m->n_params, bytes, reps, s, l, w, rd, s / w, l / rd);
    xfree_aligned(buf);
    optim_free(&opt);
    model_free(m);
    return EXIT_OK;
}

/* ---------------------------------------------------------------------- */
/* --dp                                                                    */

typedef struct { GradReducer *r; } DpCtx;
static void dp_ready(void *ctx, size_t from) { dist_reducer_ready(((DpCtx *)ctx)->r, from); }

static int bench_dp(int argc, char **argv)
{
    ModelConfig cfg = { .vocab = 264, .d_model = 256, .n_layers = 4, .n_heads = 4, .max_seq = 1024 };
    int batch = 4, steps = 3, threads = 1, shard = 0;
    double bucket_mb = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--dp")) continue;
        else if (!strcmp(argv[i], "--shard")) shard = 1; /* ZeRO-1: reduce-scatter, optimizer slices */
        else if (model_shape_option("bench", argc, argv, &i, &cfg, &batch)) continue;
        else if (!strcmp(argv[i], "--steps")) steps = cli_int("bench", argc, argv, &i, 1, 1000);
        else if (!strcmp(argv[i], "--threads")) threads = cli_int("bench", argc, argv, &i, 1, 1024);
        else if (!strcmp(argv[i], "--bucket-mb")) bucket_mb = cli_double("bench", argc, argv, &i, 0.001, 4096);
        else if (!strcmp(argv[i], "--json")) continue;
        else fatal(EXIT_USAGE, "bench --dp: unknown option '%s'", argv[i]);
    }
    model_shape_check("bench", &cfg);
    Dist dd;
    dist_init(&argc, &argv, &dd);
    set_threads(threads);
    int T = cfg.max_seq;
    Model *m = model_create(&cfg, 1, batch, T);
    model_init_weights(m, 1234);
    Batch b;
    float *logp, *dlogp;
    bench_lm_batch(&b, batch, T, &logp, &dlogp); /* the same rows on every rank: identical work */
    size_t cuts[4200];
    int nc = model_grad_cuts(m, cuts, 4200);
    if (dd.size > 1024) fatal(EXIT_USAGE, "bench --dp: at most 1024 ranks");
    size_t bounds[1025], n = m->n_params;
    for (int k = 0; k < dd.size; k++) optim_shard_range(n, k, dd.size, &bounds[k], &bounds[k + 1]);
    DpCtx ctx = { shard ? dist_reducer_create_sharded(m->grads, cuts, nc, bucket_mb * 1048576.0, bounds)
                        : dist_reducer_create(m->grads, cuts, nc, bucket_mb * 1048576.0) };
    double full = shard ? dist_reducer_time(ctx.r) : dist_time_allreduce(m->grads, n);
    /* the optimizer state this rank holds: counted, and the resident memory
     * it adds once one update has touched it (a lr-0 update changes nothing) */
    OptimConfig oc = config_optim_default(OPTIM_ADAMW);
    Optimizer opt;
    long rss0 = bench_status_kb("VmRSS");
    if (shard) optim_init_slice(&opt, &oc, n, bounds[dd.rank], bounds[dd.rank + 1]);
    else optim_init(&opt, &oc, n);
    optim_update(&opt, m, 0.0f, 0.0);
    double optim_mb = optim_state_bytes(oc.kind, opt.hi - opt.lo) / 1048576.0;
    double optim_rss_mb = (bench_status_kb("VmRSS") - rss0) / 1024.0;
    optim_free(&opt);
    double bw_plain[1000], bw_ovl[1000], wait[1000], pend[1000], exposed[1000];
    double ends[1024];
    int buckets = 0;
    for (int s = -1; s < steps; s++) {
        for (int k = 0; k < 2; k++) { /* 0: backward alone, 1: with the overlapped allreduce */
            model_zero_grad(m);
            model_forward(m, &b, logp);
            dist_barrier(); /* same start on every rank: the wait below is communication, not imbalance */
            double t0 = now_seconds(), w = 0, t_end = 0, t_fin = 0;
            if (k == 0) model_backward(m, &b, dlogp);
            else {
                dist_reducer_begin(ctx.r);
                model_backward_hooked(m, &b, dlogp, dp_ready, &ctx);
                dist_reducer_ready(ctx.r, 0); /* the embedding's bucket, as finish would */
                t_end = now_seconds();
                if (s >= 0) pend[s] = dist_reducer_pending(ctx.r);
                dist_reducer_finish(ctx.r);
                t_fin = now_seconds();
                dist_reducer_stats(ctx.r, &w, &buckets);
            }
            double dt = now_seconds() - t0;
            double v[2] = { dt, w }; /* means over the ranks */
            dist_allreduce_sum_f64(v, 2);
            /* the ranks share a node, so CLOCK_MONOTONIC compares across them:
             * communication left = done minus the LAST rank's end of backward,
             * whatever imbalance remains between the ranks */
            memset(ends, 0, sizeof(double) * dd.size);
            ends[dd.rank] = t_end;
            dist_allreduce_sum_f64(ends, dd.size);
            double last = 0;
            for (int j = 0; j < dd.size; j++) last = ends[j] > last ? ends[j] : last;
            double ex[1] = { t_fin > last ? t_fin - last : 0 };
            dist_allreduce_sum_f64(ex, 1);
            if (s < 0) continue;
            if (k == 0) bw_plain[s] = v[0] / dd.size;
            else bw_ovl[s] = v[0] / dd.size, wait[s] = v[1] / dd.size, exposed[s] = ex[0] / dd.size;
        }
    }
    /* ZeRO-1's other half: the updated slices to every rank, blocking */
    double gather[1000];
    for (int s = 0; shard && s < steps; s++) {
        dist_barrier();
        double t0 = now_seconds();
        dist_slices_allgather(ctx.r, m->params);
        double v[1] = { now_seconds() - t0 };
        dist_allreduce_sum_f64(v, 1);
        gather[s] = v[0] / dd.size;
    }
    double bp = median(bw_plain, steps), bo = median(bw_ovl, steps), wt = median(wait, steps);
    double ext = median(exposed, steps);
    double hidden_wait = 1 - wt / full, hidden_time = 1 - (bo - bp) / full, hidden = 1 - ext / full;
    double mem[2] = { optim_mb, optim_rss_mb }; /* means over the ranks */
    dist_allreduce_sum_f64(mem, 2);
    if (dd.rank == 0)
        printf("{\"kind\": \"dp_overlap\", \"ranks\": %d, \"threads\": %d, \"d_model\": %d, \"n_layers\": %d, "
               "\"batch\": %d, \"params\": %zu, \"bucket_mb\": %.3f, \"buckets\": %d, \"allreduce_ms\": %.3f, "
               "\"backward_ms\": %.2f, \"backward_overlapped_ms\": %.2f, \"wait_ms\": %.3f, \"hidden_by_wait\": %.4f, "
               "\"hidden_by_time\": %.4f, \"buckets_pending_after_backward\": %.1f, \"exposed_ms\": %.3f, "
               "\"hidden\": %.4f, \"shard\": %s, \"optim_state_mb_per_rank\": %.3f, \"optim_rss_mb_per_rank\": %.3f, "
               "\"allgather_ms\": %.3f}\n",
               dd.size, openblas_get_num_threads(), cfg.d_model, cfg.n_layers, batch, m->n_params, bucket_mb, buckets,
               1e3 * full, 1e3 * bp, 1e3 * bo, 1e3 * wt, hidden_wait, hidden_time, median(pend, steps), 1e3 * ext, hidden,
               shard ? "true" : "false", mem[0] / dd.size, mem[1] / dd.size, shard ? 1e3 * median(gather, steps) : 0.0);
    dist_reducer_free(ctx.r);
    free(logp);
    free(dlogp);
    batch_free(&b);
    model_free(m);
    dist_finalize();
    return EXIT_OK;
}

/* ------------------------------------------------------------------------ */
/* --allreduce-sweep                                                        */

/* (under mpirun or srun) One blocking allreduce of n floats, for n from 1 Ki
 * to 16 Mi (4 KiB to 64 MiB), each the median of dist_time_allreduce's
 * three; one JSON line per size from rank 0, with the ranks and the nodes
 * (SLURM_NNODES, else 1). docs/scaling.md fits t = a + b * bytes to them. */
static int bench_allreduce_sweep(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--allreduce-sweep") && strcmp(argv[i], "--json"))
            fatal(EXIT_USAGE, "bench --allreduce-sweep: unknown option '%s'", argv[i]);
    Dist dd;
    dist_init(&argc, &argv, &dd);
    size_t most = (size_t)16 << 20;
    float *buf = xcalloc_aligned(most * sizeof(float), "the allreduce buffer");
    const char *nodes = getenv("SLURM_NNODES");
    dist_time_allreduce(buf, most); /* warm-up: connections, registration */
    for (size_t n = 1024; n <= most; n *= 4) {
        double t = dist_time_allreduce(buf, n);
        if (dd.rank == 0)
            printf("{\"kind\": \"allreduce_sweep\", \"ranks\": %d, \"nodes\": %s, \"bytes\": %zu, \"seconds\": %.7f}\n",
                   dd.size, nodes && nodes[0] ? nodes : "1", n * sizeof(float), t);
    }
    xfree_aligned(buf);
    dist_finalize();
    return EXIT_OK;
}

int bench_extra(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--allreduce-sweep")) return bench_allreduce_sweep(argc, argv);
        if (!strcmp(argv[i], "--pref")) return bench_pref(argc, argv);
        if (!strcmp(argv[i], "--ckpt")) return bench_ckpt(argc, argv);
        if (!strcmp(argv[i], "--dp")) return bench_dp(argc, argv);
    }
    return -1;
}
