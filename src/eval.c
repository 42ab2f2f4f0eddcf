/* eval: see eval.h. The run, in order:
 *   users    held-out users of the dataset (sampler, split eval.split), each with a
 *            fixed pool of few-shot pairs and Q query pairs drawn once;
 *   oracles  the scorer's attribute vectors of every pair's two answers, for the
 *            linear baseline and (with the truth file) the Bayes-optimal column;
 *   descriptions (eval.user_desc) per N, each user's description for C: the
 *            dataset's (oracle) or the policy's own, greedy (generated), read
 *            back and scored against the truth;
 *   models   per N, tree-packed rows [C P_1 W_1 L_1 ...] in batches through the
 *            forward-only policy and reference (and the pooled model at N = 0);
 *   gap      per N, the fraction of the pooled -> Bayes gap the model closes;
 *   win rates per user and prompt, one answer from each model (policy and SFT
 *            with the context, pooled and anchor without) and the oracle's
 *            ideal answer, all scored with the user's true reward;
 *   CIs      bootstrap over users. */
#include "src/eval.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/dataset.h"
#include "io/jsonl.h"
#include "src/batch.h"
#include "src/frozen.h"
#include "src/generate.h"
#include "src/loss.h"
#include "src/model.h"
#include "src/pack.h"
#include "src/rng.h"
#include "src/sampler.h"
#include "src/synth.h"
#include "src/tokenizer.h"
#include "src/util.h"

const char *const eval_method_names[EVAL_N_METHODS] = { "model", "pooled", "linear", "bayes", "model_plain", "sft_plain" };
const char *const eval_win_names[EVAL_N_WIN] = { "policy", "sft", "pooled", "oracle" };

/* ---- statistics ---- */

double eval_pair_credit(double margin) { return margin > 0 ? 1.0 : margin == 0 ? 0.5 : 0.0; }

double eval_margin(double beta, double pc, double pr, const double *ref)
{
    if (!ref) return pc - pr;
    return beta * ((pc - ref[0]) - (pr - ref[1]));
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Type-1 quantile: the smallest value whose empirical CDF reaches q. */
static double quantile_sorted(const double *v, int n, double q)
{
    int k = (int)ceil(q * n) - 1;
    if (k < 0) k = 0;
    if (k > n - 1) k = n - 1;
    return v[k];
}

/* The 2.5% and 97.5% quantiles of the kept resampled values (sorted here). */
static void percentile_interval(double *v, int kept, EvalCI *ci)
{
    if (kept <= 0) return;
    qsort(v, (size_t)kept, sizeof *v, cmp_double);
    ci->lo = quantile_sorted(v, kept, 0.025);
    ci->hi = quantile_sorted(v, kept, 0.975);
}

static double *bootstrap_buffer(int resamples)
{
    double *v = malloc(sizeof(double) * (size_t)resamples);
    if (!v) fatal(EXIT_RUNTIME, "out of memory for the bootstrap");
    return v;
}

EvalCI eval_bootstrap(const double *hits, const double *count, int n, int resamples, uint64_t seed)
{
    double h = 0, c = 0;
    for (int i = 0; i < n; i++) h += hits[i], c += count[i];
    EvalCI ci = { c > 0 ? h / c : NAN, NAN, NAN };
    ci.lo = ci.hi = ci.mean;
    if (resamples <= 0 || n == 0 || !(c > 0)) return ci;
    double *v = bootstrap_buffer(resamples);
    Rng r = rng_seed(seed, 0xb0075);
    int kept = 0;
    for (int b = 0; b < resamples; b++) {
        double hb = 0, cb = 0;
        for (int i = 0; i < n; i++) {
            uint32_t j = rng_below(&r, (uint32_t)n);
            hb += hits[j], cb += count[j];
        }
        if (cb > 0) v[kept++] = hb / cb; /* a resample of only empty users has no accuracy */
    }
    percentile_interval(v, kept, &ci);
    free(v);
    return ci;
}

/* (A - B) / (C - B) of the sums, or NaN when the gap C - B (as a rate) is below EVAL_GAP_MIN. */
static double gap_ratio(double a, double b, double c, double cnt)
{
    if (!(cnt > 0) || !((c - b) / cnt >= EVAL_GAP_MIN)) return NAN;
    return (a - b) / (c - b);
}

EvalCI eval_gap_closed(const double *ha, const double *hb, const double *hc, const double *count, int n, int resamples,
                       uint64_t seed, int *left_out)
{
    double a = 0, b = 0, c = 0, cnt = 0;
    for (int i = 0; i < n; i++) a += ha[i], b += hb ? hb[i] : 0, c += hc[i], cnt += count[i];
    double mean = gap_ratio(a, b, c, cnt);
    EvalCI ci = { mean, mean, mean };
    if (left_out) *left_out = 0;
    if (isnan(mean) || resamples <= 0) return ci;
    double *v = bootstrap_buffer(resamples);
    Rng r = rng_seed(seed, 0x6a9c105e);
    int kept = 0;
    for (int k = 0; k < resamples; k++) {
        double ab = 0, bb = 0, cb = 0, nb = 0;
        for (int i = 0; i < n; i++) {
            uint32_t j = rng_below(&r, (uint32_t)n); /* one draw of a user for all three: a joint resample */
            ab += ha[j], bb += hb ? hb[j] : 0, cb += hc[j], nb += count[j];
        }
        double x = gap_ratio(ab, bb, cb, nb);
        if (!isnan(x)) v[kept++] = x;
        else if (left_out) ++*left_out;
    }
    percentile_interval(v, kept, &ci);
    free(v);
    return ci;
}

/* ---- win rates ---- */

void eval_win_tally(const double *ra, const double *rb, const int *user, int n, int n_users, double *hits,
                    double *count)
{
    memset(hits, 0, sizeof(double) * (size_t)n_users);
    memset(count, 0, sizeof(double) * (size_t)n_users);
    for (int i = 0; i < n; i++) hits[user[i]] += eval_pair_credit(ra[i] - rb[i]), count[user[i]] += 1;
}

/* Drops users with no sample (count 0), keeping the order; returns how many are left. */
static int compact_users(double *const *cols, int n_cols, double *count, int n_users)
{
    int m = 0;
    for (int u = 0; u < n_users; u++) {
        if (!(count[u] > 0)) continue;
        for (int k = 0; k < n_cols; k++) cols[k][m] = cols[k][u];
        count[m++] = count[u];
    }
    return m;
}

void eval_win_summary(const double *ra, const double *rb, const int *user, int n, int n_users, int resamples,
                      uint64_t seed, EvalWin *out)
{
    double *hits = malloc(sizeof(double) * (size_t)(n_users + 1)), *cnt = malloc(sizeof(double) * (size_t)(n_users + 1));
    if (!hits || !cnt) fatal(EXIT_RUNTIME, "out of memory");
    eval_win_tally(ra, rb, user, n, n_users, hits, cnt);
    int users = compact_users(&hits, 1, cnt, n_users);
    double sa = 0, sb = 0, ties = 0;
    for (int i = 0; i < n; i++) sa += ra[i], sb += rb[i], ties += ra[i] == rb[i];
    out->valid = n > 0;
    out->users = users, out->samples = n;
    if (n > 0) {
        out->win = eval_bootstrap(hits, cnt, users, resamples, seed);
        out->reward_policy = sa / n, out->reward_baseline = sb / n, out->tie_frac = ties / n;
    }
    free(hits), free(cnt);
}

/* ---- the oracle policy ---- */

unsigned eval_oracle_mask(const double w[SYNTH_K], unsigned varied, unsigned fixed_on)
{
    unsigned m = fixed_on & ~varied & SYNTH_ALL_ATTRS;
    for (int k = 0; k < SYNTH_K; k++)
        if (((varied >> k) & 1u) && w[k] > 0) m |= 1u << k;
    return m;
}

size_t eval_oracle_answer(int flavor, const double w[SYNTH_K], unsigned varied, unsigned fixed_on,
                          const SynthWording *wd, char *out)
{
    return synth_render(flavor, eval_oracle_mask(w, varied, fixed_on), wd, out);
}

/* Solves A z = b for symmetric positive definite A (d x d, overwritten) by Cholesky. */
static void solve_spd(double *A, double *b, int d)
{
    for (int j = 0; j < d; j++) {
        double s = A[j * d + j];
        for (int k = 0; k < j; k++) s -= A[j * d + k] * A[j * d + k];
        A[j * d + j] = sqrt(s > 1e-300 ? s : 1e-300);
        for (int i = j + 1; i < d; i++) {
            double t = A[i * d + j];
            for (int k = 0; k < j; k++) t -= A[i * d + k] * A[j * d + k];
            A[i * d + j] = t / A[j * d + j];
        }
    }
    for (int i = 0; i < d; i++) { /* L y = b */
        double t = b[i];
        for (int k = 0; k < i; k++) t -= A[i * d + k] * b[k];
        b[i] = t / A[i * d + i];
    }
    for (int i = d - 1; i >= 0; i--) { /* L^T z = y */
        double t = b[i];
        for (int k = i + 1; k < d; k++) t -= A[k * d + i] * b[k];
        b[i] = t / A[i * d + i];
    }
}

static double log1p_exp(double z) { return z > 30 ? z : log1p(exp(z)); }

static double linear_objective(const double *x, int n, int d, double l2, const double *w)
{
    double f = 0, ww = 0;
    for (int i = 0; i < n; i++) {
        double z = 0;
        for (int k = 0; k < d; k++) z += w[k] * x[i * d + k];
        f += log1p_exp(-z);
    }
    for (int k = 0; k < d; k++) ww += w[k] * w[k];
    return f + 0.5 * l2 * ww;
}

void eval_linear_fit(const double *x, int n, int d, double l2, double *w)
{
    double g[64], H[64 * 64], step[64], trial[64];
    memset(w, 0, sizeof(double) * (size_t)d);
    if (n == 0) return;
    double f = linear_objective(x, n, d, l2, w);
    for (int it = 0; it < 100; it++) {
        for (int k = 0; k < d; k++) g[k] = l2 * w[k];
        memset(H, 0, sizeof(double) * (size_t)d * d);
        for (int k = 0; k < d; k++) H[k * d + k] = l2;
        for (int i = 0; i < n; i++) {
            const double *xi = x + (size_t)i * d;
            double z = 0;
            for (int k = 0; k < d; k++) z += w[k] * xi[k];
            double s = 1.0 / (1.0 + exp(z)); /* sigmoid(-z) */
            for (int k = 0; k < d; k++) {
                g[k] -= s * xi[k];
                for (int l = 0; l < d; l++) H[k * d + l] += s * (1 - s) * xi[k] * xi[l];
            }
        }
        memcpy(step, g, sizeof(double) * (size_t)d);
        solve_spd(H, step, d);
        /* Newton with step halving: the objective is convex, so this converges */
        double t = 1, ft = f;
        for (int h = 0; h < 40; h++, t *= 0.5) {
            for (int k = 0; k < d; k++) trial[k] = w[k] - t * step[k];
            ft = linear_objective(x, n, d, l2, trial);
            if (ft <= f) break;
        }
        double moved = 0;
        for (int k = 0; k < d; k++) moved = fmax(moved, fabs(trial[k] - w[k]));
        memcpy(w, trial, sizeof(double) * (size_t)d);
        f = ft;
        if (moved < 1e-12) break;
    }
}

/* ---- the run ---- */

/* Queries per held-out user: 8 keeps a row of C plus its queries short and
 * gives every N the same, fairly precise, per-user accuracy. */
#define EVAL_QUERIES 8
/* Rows per forward pass. */
#define EVAL_ROWS 8
/* Samples per user and model for the win rate. */
#define EVAL_WIN_PROMPTS 2

typedef struct {
    int64_t user;
    int n_pool, n_queries;
    int64_t pool[SAMPLER_MAX_FEWSHOT], queries[EVAL_QUERIES];
    double pool_x[SAMPLER_MAX_FEWSHOT][SYNTH_K], query_x[EVAL_QUERIES][SYNTH_K]; /* a(chosen) - a(rejected) */
    const UserTruth *truth;
    const int32_t *desc; /* the description in C at the current N (eval.user_desc); NULL = none */
    int desc_len;
} EvalUser;

typedef struct {
    const Config *cfg;
    const EvalOptions *o;
    EvalReport *rep;
    Dataset data;
    EvalUser *users;
    int n_users, max_seq;
    Model *policy, *ref, *pooled;
    Model *sft, *anchor; /* sft may be ref itself (then not freed twice) */
    Batch batch;
    float *logp, *ref_logp;
    /* credit per [method][row][user] and query pairs per [row][user], flattened;
     * fits[row][user]: the user's context of N pairs and all its queries fit model.max_seq */
    double *hits, *count;
    unsigned char *fits;
    EvalDescMode desc_mode; /* eval.user_desc */
    int desc_cap;         /* generated: token limit per description */
    int32_t *desc_text;   /* generated: [row][user][desc_cap] */
    int *desc_len;        /* generated: [row][user]; -1 = its prompt did not fit */
    double t0, last_progress;
} Eval;

static double *tally(Eval *e, int method, int row) { return e->hits + ((size_t)method * CFG_LIST + row) * e->n_users; }
static double *counts(Eval *e, int row) { return e->count + (size_t)row * e->n_users; }

static void note(EvalReport *rep, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note(EvalReport *rep, const char *fmt, ...)
{
    if (rep->n_notes >= EVAL_MAX_NOTES) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(rep->notes[rep->n_notes++], sizeof rep->notes[0], fmt, ap);
    va_end(ap);
}

static void progress(Eval *e, const char *what, long done, long total)
{
    if (e->o->quiet) return;
    double now = now_seconds();
    int tty = isatty(fileno(stderr)), final = done >= total;
    if (!final && now - e->last_progress < (tty ? 0.2 : 5.0)) return;
    e->last_progress = now;
    fprintf(stderr, "%seval: %s %ld/%ld (%.0f%%), %.0f s%s", tty ? "\r\033[K" : "", what, done, total,
            total ? 100.0 * done / total : 100.0, now - e->t0, tty && !final ? "" : "\n");
    fflush(stderr);
}

/* The scorer's reading of a span of tokens (its first 4 KiB of text). */
static void span_attrs(const Dataset *d, const int64_t *span, double a[SYNTH_K])
{
    char buf[4096 + 1];
    size_t n = tok_decode(&d->tok, d->tokens + span[0], (size_t)span[1], buf, sizeof buf, 0);
    synth_score(buf, n < sizeof buf - 1 ? n : sizeof buf - 1, a);
}

static void pair_diff(const Dataset *d, int64_t p, double x[SYNTH_K])
{
    double ac[SYNTH_K], ar[SYNTH_K];
    span_attrs(d, d->chosen + 2 * p, ac);
    span_attrs(d, d->rejected + 2 * p, ar);
    for (int k = 0; k < SYNTH_K; k++) x[k] = ac[k] - ar[k];
}

static int max_n_fewshot(const Config *cfg)
{
    int m = 0;
    for (int i = 0; i < cfg->eval.n_fewshot.n; i++)
        if (cfg->eval.n_fewshot.v[i] > m) m = (int)cfg->eval.n_fewshot.v[i];
    return m;
}

/* The truth file: --truth, else the dataset's source with .jsonl ->
 * .truth.jsonl (as fspo synth names it), as given or next to the dataset. */
static void find_truth(Eval *e, char *path, size_t len)
{
    if (e->o->truth) {
        snprintf(path, len, "%s", e->o->truth);
        return;
    }
    char guess[CFG_STR];
    const char *src = e->data.source;
    size_t n = strlen(src);
    if (n > 6 && !strcmp(src + n - 6, ".jsonl")) n -= 6;
    snprintf(guess, sizeof guess, "%.*s.truth.jsonl", (int)n, src);
    if (access(guess, R_OK) == 0) {
        snprintf(path, len, "%s", guess);
        return;
    }
    const char *base = strrchr(guess, '/'), *dir_end = strrchr(e->cfg->data.path, '/');
    base = base ? base + 1 : guess;
    int w = dir_end ? snprintf(path, len, "%.*s/%s", (int)(dir_end - e->cfg->data.path), e->cfg->data.path, base)
                    : snprintf(path, len, "%s", base);
    if (w >= (int)len || access(path, R_OK) != 0) {
        note(e->rep, "no truth file (looked for %s%s%s): the Bayes-optimal column and the win rate need it; "
                     "pass --truth FILE", guess, strcmp(guess, path) ? " and " : "", strcmp(guess, path) ? path : "");
        path[0] = '\0';
    }
}

static int load_truth(Eval *e, TruthSet **out, char *err, size_t errlen)
{
    *out = NULL;
    char path[CFG_STR];
    find_truth(e, path, sizeof path);
    snprintf(e->rep->truth_path, sizeof e->rep->truth_path, "%s", path);
    if (!path[0]) return 0;
    char why[1024];
    TruthSet *t = truth_read(path, why, sizeof why);
    if (!t) return set_err(err, errlen, "truth file: %s", why);
    for (int i = 0; i < e->n_users; i++) {
        const char *id = e->data.user_ids[e->users[i].user];
        const UserTruth *u = truth_find(t, id);
        if (!u) {
            truth_free(t);
            return set_err(err, errlen, "%s has no record of held-out user '%s': it belongs to another dataset", path, id);
        }
        if (u->scorer_version != SYNTH_SCORER_VERSION || u->n_attrs != SYNTH_K) {
            truth_free(t);
            return set_err(err, errlen, "%s: user '%s' was made for scorer v%d with %d attributes; this fspo scores "
                                        "with v%d and %d", path, id, u->scorer_version, u->n_attrs, SYNTH_SCORER_VERSION,
                           SYNTH_K);
        }
        e->users[i].truth = u;
    }
    *out = t;
    return 0;
}

/* Held-out users and their fixed pool and queries. */
static int pick_users(Eval *e, char *err, size_t errlen)
{
    const Config *cfg = e->cfg;
    int nmax = max_n_fewshot(cfg);
    if (nmax > SAMPLER_MAX_FEWSHOT)
        return set_err(err, errlen, "eval.n_fewshot: %d is above the limit %d", nmax, SAMPLER_MAX_FEWSHOT);
    Sampler s;
    Split split = cfg->eval.split == EVAL_SPLIT_TEST ? SPLIT_TEST : SPLIT_VALIDATION;
    if (sampler_init(&s, &e->data, split, (uint64_t)cfg->train.seed, nmax, -1, 1, err, errlen) != 0) return -1;
    e->rep->heldout_users = (int)(s.n_users + s.n_skipped_small);
    if (s.n_skipped_small)
        note(e->rep, "%lld held-out user(s) have fewer than %d pairs (max N + 1) and are not evaluated",
             (long long)s.n_skipped_small, nmax + 1);
    int n = (int)s.n_users;
    if (cfg->eval.max_users > 0 && n > cfg->eval.max_users) n = cfg->eval.max_users;
    e->users = calloc((size_t)n, sizeof *e->users);
    if (!e->users) fatal(EXIT_RUNTIME, "out of memory for the evaluation users");
    e->n_users = n;
    for (int i = 0; i < n; i++) {
        EvalUser *u = &e->users[i];
        u->user = s.users[i];
        int64_t first = e->data.user_pairs[2 * u->user], cnt = e->data.user_pairs[2 * u->user + 1];
        /* a seeded shuffle of the user's pairs: the pool first, then the queries */
        int64_t *perm = malloc(sizeof(int64_t) * (size_t)cnt);
        if (!perm) fatal(EXIT_RUNTIME, "out of memory");
        for (int64_t k = 0; k < cnt; k++) perm[k] = first + k;
        Rng r = rng_seed((uint64_t)cfg->train.seed ^ 0xe7a1, (uint64_t)u->user);
        for (int64_t k = cnt - 1; k > 0; k--) {
            int64_t j = rng_below(&r, (uint32_t)(k + 1)), t = perm[k];
            perm[k] = perm[j], perm[j] = t;
        }
        u->n_pool = nmax;
        u->n_queries = (int)(cnt - nmax < EVAL_QUERIES ? cnt - nmax : EVAL_QUERIES);
        for (int k = 0; k < nmax; k++) u->pool[k] = perm[k], pair_diff(&e->data, perm[k], u->pool_x[k]);
        for (int k = 0; k < u->n_queries; k++)
            u->queries[k] = perm[nmax + k], pair_diff(&e->data, perm[nmax + k], u->query_x[k]);
        free(perm);
    }
    sampler_free(&s);
    e->rep->evaluated_users = n;
    e->rep->queries_per_user = EVAL_QUERIES;
    return 0;
}

/* The meta-example for user u with N context pairs and queries [q0, q0+nq). */
static void make_example(const EvalUser *u, int n, int q0, int nq, MetaExample *ex)
{
    ex->user = u->user;
    ex->n_fewshot = n;
    ex->n_queries = nq;
    for (int k = 0; k < n; k++) ex->pairs[k] = u->pool[k];
    for (int k = 0; k < nq; k++) ex->pairs[n + k] = u->queries[q0 + k];
    ex->desc = u->desc;
    ex->desc_len = u->desc_len;
}

/* Row length if it fits whole (no pair dropped), else -1. */
static int fits(const Dataset *d, const MetaExample *ex, int max_len)
{
    MetaExample copy = *ex;
    int df, dq, len = pack_plan(d, &copy, PACK_TREE, max_len, &df, &dq);
    return len < 0 || df || dq ? -1 : len;
}

typedef struct {
    int user, q0;
    MetaExample ex;
    int len;
} RowJob;

/* Longest first, then by user and query: a total order, so the batches
 * are the same on every run */
static int cmp_job_len(const void *pa, const void *pb)
{
    const RowJob *a = pa, *b = pb;
    if (a->len != b->len) return a->len > b->len ? -1 : 1;
    if (a->user != b->user) return a->user < b->user ? -1 : 1;
    return (a->q0 > b->q0) - (a->q0 < b->q0);
}

/* All rows of N: each user's queries split greedily over rows of C + as
 * many queries as fit. Users whose context plus one query does not fit get
 * no row; fit[u] records which. The rows are sorted by length: a batch of
 * EVAL_ROWS pads every row to its longest, and in the users' order short
 * and long rows share batches. Returns the number of rows. */
static int plan_rows(Eval *e, int n, RowJob *jobs, unsigned char *fit)
{
    int count = 0;
    for (int i = 0; i < e->n_users; i++) {
        const EvalUser *u = &e->users[i];
        fit[i] = 0;
        for (int q0 = 0; q0 < u->n_queries;) {
            int nq = 1, len;
            MetaExample ex;
            make_example(u, n, q0, 1, &ex);
            if ((len = fits(&e->data, &ex, e->max_seq)) < 0) break;
            while (q0 + nq < u->n_queries) {
                MetaExample more;
                make_example(u, n, q0, nq + 1, &more);
                int l2 = fits(&e->data, &more, e->max_seq);
                if (l2 < 0) break;
                ex = more, len = l2, nq++;
            }
            jobs[count++] = (RowJob){ i, q0, ex, len };
            q0 += nq;
        }
        /* a user counts only with all its queries scored: every N then averages the same pairs */
        int scored = 0;
        for (int j = 0; j < count; j++)
            if (jobs[j].user == i) scored += jobs[j].ex.n_queries;
        if (scored == u->n_queries) fit[i] = 1;
        else
            while (count > 0 && jobs[count - 1].user == i) count--;
    }
    qsort(jobs, (size_t)count, sizeof *jobs, cmp_job_len);
    return count;
}

/* Runs rows through the model (and its reference) and adds each query's
 * credit to the method's tally of row `row`; plain_method >= 0 also tallies
 * m's plain log-prob margin there, ref_plain_method >= 0 the reference's. */
static void score_rows(Eval *e, Model *m, Model *ref, const RowJob *jobs, int n_jobs, int method, int plain_method,
                       int ref_plain_method, int row, const char *what)
{
    double beta = e->cfg->loss.beta;
    PackedAnswers ans[EVAL_ROWS];
    for (int start = 0; start < n_jobs; start += EVAL_ROWS) {
        int end = start + EVAL_ROWS < n_jobs ? start + EVAL_ROWS : n_jobs, T = 1, S = 1;
        for (int j = start; j < end; j++) {
            if (jobs[j].len > T) T = jobs[j].len;
            int s = pack_segments(&jobs[j].ex, PACK_TREE);
            if (s > S) S = s;
        }
        batch_reset(&e->batch, end - start, T, S);
        for (int j = start; j < end; j++) pack_write(&e->data, &jobs[j].ex, PACK_TREE, &e->batch, j - start, &ans[j - start]);
        if (e->o->on_rows && m == e->policy) e->o->on_rows(e->o->on_rows_ctx, &e->batch, jobs[start].ex.n_fewshot);
        model_forward(m, &e->batch, e->logp);
        if (ref) model_forward(ref, &e->batch, e->ref_logp);
        for (int j = start; j < end; j++) {
            double pol[2 * SAMPLER_MAX_QUERIES], rs[2 * SAMPLER_MAX_QUERIES];
            answer_logps(e->logp, &ans[j - start], pol);
            if (ref) answer_logps(e->ref_logp, &ans[j - start], rs);
            double credit = 0, plain = 0, ref_plain = 0;
            for (int q = 0; q < jobs[j].ex.n_queries; q++) {
                credit += eval_pair_credit(eval_margin(beta, pol[2 * q], pol[2 * q + 1], ref ? rs + 2 * q : NULL));
                plain += eval_pair_credit(eval_margin(beta, pol[2 * q], pol[2 * q + 1], NULL));
                if (ref) ref_plain += eval_pair_credit(eval_margin(beta, rs[2 * q], rs[2 * q + 1], NULL));
            }
            tally(e, method, row)[jobs[j].user] += credit;
            if (plain_method >= 0) tally(e, plain_method, row)[jobs[j].user] += plain;
            if (ref && ref_plain_method >= 0) tally(e, ref_plain_method, row)[jobs[j].user] += ref_plain;
        }
        progress(e, what, end, n_jobs);
    }
}

/* Linear and Bayes columns of row `row` (N = n) for the users that fit. */
static void score_oracles(Eval *e, int row, int n, int have_truth)
{
    double x[SAMPLER_MAX_FEWSHOT * SYNTH_K], w[SYNTH_K];
    for (int i = 0; i < e->n_users; i++) {
        if (!e->fits[(size_t)row * e->n_users + i]) continue;
        const EvalUser *u = &e->users[i];
        for (int k = 0; k < n; k++) memcpy(x + k * SYNTH_K, u->pool_x[k], sizeof u->pool_x[k]);
        eval_linear_fit(x, n, SYNTH_K, EVAL_LINEAR_L2, w);
        for (int q = 0; q < u->n_queries; q++) {
            tally(e, EVAL_LINEAR, row)[i] += eval_pair_credit(synth_reward(w, u->query_x[q]));
            if (have_truth) tally(e, EVAL_BAYES, row)[i] += eval_pair_credit(synth_reward(u->truth->weights, u->query_x[q]));
        }
    }
}

/* Compacts row `row`'s users that fit and bootstraps a method's accuracy. */
static EvalMethod summarize(Eval *e, int method, int row)
{
    EvalMethod out = { 0 };
    double *h = malloc(sizeof(double) * (size_t)(e->n_users + 1)), *c = malloc(sizeof(double) * (size_t)(e->n_users + 1));
    if (!h || !c) fatal(EXIT_RUNTIME, "out of memory");
    int n = 0;
    for (int i = 0; i < e->n_users; i++) {
        if (!e->fits[(size_t)row * e->n_users + i]) continue;
        h[n] = tally(e, method, row)[i], c[n] = counts(e, row)[i], out.pairs += c[n], n++;
    }
    if (n > 0) {
        out.valid = 1;
        out.ci = eval_bootstrap(h, c, n, e->cfg->eval.bootstrap, (uint64_t)e->cfg->train.seed);
    }
    free(h), free(c);
    return out;
}

/* Row `row`'s fraction of the pooled -> Bayes gap the model closes, over the
 * users that fit, resampled jointly. */
static void gap_row(Eval *e, int row)
{
    EvalRow *out = &e->rep->rows[row];
    if (!out->m[EVAL_MODEL].valid || !out->m[EVAL_POOLED].valid || !out->m[EVAL_BAYES].valid) return;
    int U = e->n_users, n = 0;
    double *h = malloc(sizeof(double) * (size_t)(4 * U + 4));
    if (!h) fatal(EXIT_RUNTIME, "out of memory");
    double *hm = h, *hp = h + U + 1, *hb = h + 2 * (U + 1), *c = h + 3 * (U + 1);
    for (int i = 0; i < U; i++) {
        if (!e->fits[(size_t)row * U + i]) continue;
        hm[n] = tally(e, EVAL_MODEL, row)[i], hp[n] = tally(e, EVAL_POOLED, row)[i];
        hb[n] = tally(e, EVAL_BAYES, row)[i], c[n] = counts(e, row)[i], n++;
    }
    int left_out = 0, B = e->cfg->eval.bootstrap;
    out->gap_closed = eval_gap_closed(hm, hp, hb, c, n, B, (uint64_t)e->cfg->train.seed + 2, &left_out);
    out->gap_state = isnan(out->gap_closed.mean) ? -1 : 1;
    if (out->gap_state > 0 && left_out > 0.025 * B)
        note(e->rep, "N = %d: %d of %d resamples have Bayes less than %.2f above pooled and are left out of the gap's "
                     "CI: read it with care", out->n_fewshot, left_out, B, EVAL_GAP_MIN);
    free(h);
}

/* One note for every N whose gap closed is n/a. */
static void note_gaps_na(Eval *e)
{
    char list[256] = "";
    size_t len = 0;
    int any = 0;
    for (int r = 0; r < e->rep->n_rows; r++) {
        const EvalRow *row = &e->rep->rows[r];
        if (row->gap_state >= 0 || len >= sizeof list) continue;
        len += (size_t)snprintf(list + len, sizeof list - len, "%s%d", any++ ? ", " : "", row->n_fewshot);
    }
    if (any)
        note(e->rep, "N = %s: Bayes is less than %.2f above pooled, so there is no gap to close: gap closed n/a", list,
             EVAL_GAP_MIN);
}

/* ---- generation win rate ---- */

static double sample_reward(const Tokenizer *tok, const UserTruth *t, const int32_t *ids, int n)
{
    char text[8192 + 1];
    size_t m = tok_decode(tok, ids, (size_t)n, text, sizeof text, 0);
    double a[SYNTH_K];
    synth_score(text, m < sizeof text - 1 ? m : sizeof text - 1, a);
    return synth_reward(t->weights, a);
}

static TokSpan dspan(const Dataset *d, const int64_t *span) { return (TokSpan){ d->tokens + span[0], (size_t)span[1] }; }

/* The first n pool pairs of user u as spans. */
static void user_shots(const Eval *e, const EvalUser *u, int n, PairSpans *shots)
{
    for (int k = 0; k < n; k++) {
        int64_t p = u->pool[k];
        shots[k] = (PairSpans){ dspan(&e->data, e->data.prompt + 2 * p), dspan(&e->data, e->data.chosen + 2 * p),
                                dspan(&e->data, e->data.rejected + 2 * p) };
    }
}

/* Renders user u's prompt for query q with N context pairs (and its
 * description, with_desc); -1 if it does not fit. */
static int render_for(Eval *e, const EvalUser *u, int n, int q, int with_desc, int32_t *out)
{
    PairSpans shots[SAMPLER_MAX_FEWSHOT];
    user_shots(e, u, n, shots);
    TokSpan desc = { u->desc, (size_t)u->desc_len };
    int len = sample_render_prompt(&e->data.tok, shots, n, with_desc && u->desc ? &desc : NULL,
                                   dspan(&e->data, e->data.prompt + 2 * u->queries[q]), out, e->max_seq);
    return len >= e->max_seq ? -1 : len;
}

/* The sides of the win rates: the methods of eval_win_names, then the anchor. */
enum { SIDE_ANCHOR = EVAL_N_WIN, N_SIDES };

typedef struct {
    int user;           /* index into e->users */
    double r[N_SIDES];  /* r_u of each side's answer */
    int tokens[N_SIDES];
    double secs[N_SIDES];
} WinSample;

typedef struct {
    Model *model[N_SIDES]; /* NULL: the side does not generate (the oracle) or is not available */
    int context[N_SIDES];  /* context pairs each side is shown */
    int have[N_SIDES];     /* the side takes part */
} WinSides;

/* The attributes the dataset's answers vary (on in some, off in others),
 * and those every answer has: what the oracle may choose, and what it must keep. */
static void data_attr_masks(const Dataset *d, unsigned *varied, unsigned *fixed_on)
{
    unsigned any = 0, all = SYNTH_ALL_ATTRS;
    for (int64_t p = 0; p < d->n_pairs; p++) {
        double a[SYNTH_K];
        span_attrs(d, d->chosen + 2 * p, a);
        unsigned m = synth_attrs_to_mask(a);
        span_attrs(d, d->rejected + 2 * p, a);
        unsigned m2 = synth_attrs_to_mask(a);
        any |= m | m2, all &= m & m2;
    }
    if (d->n_pairs == 0) all = 0;
    *varied = any & ~all, *fixed_on = all;
}

/* The oracle's answer to user u's prompt q, scored like any sample. */
static double oracle_reward(const Eval *e, const EvalUser *u, int flavor, uint64_t seed)
{
    Rng r = rng_seed(seed, 0x0eac1e);
    SynthWording wd;
    synth_draw_wording(&r, &wd);
    char text[SYNTH_MAX_RESPONSE];
    size_t n = eval_oracle_answer(flavor, u->truth->weights, e->rep->oracle_varied, e->rep->oracle_fixed_on, &wd, text);
    double a[SYNTH_K];
    synth_score(text, n, a);
    return synth_reward(u->truth->weights, a);
}

/* Side k is shown the user's context: its pairs, and its description
 * (eval.user_desc) even at N = 0; the policy and SFT are, pooled and anchor not. */
static int user_context(const WinSides *sd, int k) { return sd->context[k] > 0 || k == EVAL_WIN_POLICY || k == EVAL_WIN_SFT; }

/* One answer per side for up to EVAL_WIN_PROMPTS prompts of every user, at
 * the same seed per prompt (common random numbers lower the variance of a
 * difference). A prompt counts only if every side's prompt fits its model.
 * Returns the number of samples written to out. */
static int collect_samples(Eval *e, const WinSides *sd, int n, WinSample *out)
{
    const Config *cfg = e->cfg;
    SampleConfig sc = { cfg->eval.temperature, cfg->eval.top_p, cfg->eval.max_new_tokens };
    Generator *gen[N_SIDES] = { 0 };
    for (int k = 0; k < N_SIDES; k++)
        if (sd->have[k] && sd->model[k]) gen[k] = generator_create(sd->model[k], &e->data.tok);
    int cap = e->max_seq;
    int32_t *buf = malloc(sizeof(int32_t) * (size_t)cap * 3);
    if (!buf) fatal(EXIT_RUNTIME, "out of memory");
    int32_t *with_ctx = buf, *without = buf + cap, *y = buf + 2 * cap;
    int samples = 0;
    for (int i = 0; i < e->n_users; i++) {
        const EvalUser *u = &e->users[i];
        int flavor = synth_flavor_parse(u->truth->flavor);
        for (int q = 0; q < u->n_queries && q < EVAL_WIN_PROMPTS; q++) {
            /* the user's description (eval.user_desc) belongs to the context: with it, not without */
            int lc = render_for(e, u, n, q, 1, with_ctx), l0 = render_for(e, u, 0, q, 0, without);
            if (lc < 0 || l0 < 0) continue;
            int fit = 1;
            for (int k = 0; k < N_SIDES; k++)
                if (gen[k] && (user_context(sd, k) ? lc : l0) >= sd->model[k]->cfg.max_seq) fit = 0;
            if (!fit) continue;
            uint64_t seed = ((uint64_t)cfg->train.seed << 32) ^ ((uint64_t)u->user << 8) ^ (uint64_t)q;
            WinSample *w = &out[samples++];
            memset(w, 0, sizeof *w);
            w->user = i;
            for (int k = 0; k < N_SIDES; k++) {
                if (!gen[k]) continue;
                SampleResult res;
                generate(gen[k], user_context(sd, k) ? with_ctx : without, user_context(sd, k) ? lc : l0, &sc, seed, y,
                         cap, &res);
                w->r[k] = sample_reward(&e->data.tok, u->truth, y, res.n_tokens);
                w->tokens[k] = res.n_tokens, w->secs[k] = res.seconds;
            }
            if (sd->have[EVAL_WIN_ORACLE]) w->r[EVAL_WIN_ORACLE] = oracle_reward(e, u, flavor, seed);
        }
        progress(e, "win rates, users", i + 1, e->n_users);
    }
    for (int k = 0; k < N_SIDES; k++) generator_free(gen[k]);
    free(buf);
    return samples;
}

/* Side a vs side b over the samples; with `ceiling` (side a is not the
 * oracle) also a's win over the oracle's win against the same b. */
static void compare_sides(Eval *e, const WinSample *s, int n, const WinSides *sd, int a, int b, int ceiling,
                          uint64_t seed, EvalWin *out)
{
    double *ra = calloc((size_t)(3 * n + 1), sizeof(double)), *rb = ra + n, *ro = ra + 2 * n;
    int *user = calloc((size_t)(n + 1), sizeof(int));
    if (!ra || !user) fatal(EXIT_RUNTIME, "out of memory");
    double tokens = 0, secs = 0;
    for (int i = 0; i < n; i++) {
        ra[i] = s[i].r[a], rb[i] = s[i].r[b], ro[i] = s[i].r[EVAL_WIN_ORACLE], user[i] = s[i].user;
        tokens += s[i].tokens[a] + s[i].tokens[b], secs += s[i].secs[a] + s[i].secs[b];
    }
    int U = e->n_users;
    eval_win_summary(ra, rb, user, n, U, e->cfg->eval.bootstrap, seed, out);
    out->n_fewshot = sd->context[a];
    out->tokens_per_sec = tokens / (secs > 0 ? secs : 1e-9);
    snprintf(out->method, sizeof out->method, "%s", eval_win_names[a]);
    snprintf(out->baseline, sizeof out->baseline, "%s", b == SIDE_ANCHOR ? "anchor" : eval_win_names[b]);
    out->of_ceiling = (EvalCI){ NAN, NAN, NAN };
    if (ceiling && n > 0) {
        double *h = malloc(sizeof(double) * (size_t)(3 * U + 3)), *ho = h + U + 1, *cnt = h + 2 * (U + 1);
        if (!h) fatal(EXIT_RUNTIME, "out of memory");
        eval_win_tally(ra, rb, user, n, U, h, cnt);
        eval_win_tally(ro, rb, user, n, U, ho, cnt);
        double *cols[2] = { h, ho };
        int users = compact_users(cols, 2, cnt, U);
        out->of_ceiling = eval_gap_closed(h, NULL, ho, cnt, users, e->cfg->eval.bootstrap, seed, NULL);
        free(h);
    }
    free(ra), free(user);
}

/* Every win rate at N = n: the policy vs SFT and vs pooled (head to head),
 * and with an anchor every method vs the anchor (the oracle's is the ceiling). */
static void win_rates(Eval *e, int n)
{
    const Config *cfg = e->cfg;
    EvalReport *rep = e->rep;
    WinSides sd = { .model = { [EVAL_WIN_POLICY] = e->policy, [EVAL_WIN_SFT] = e->sft, [EVAL_WIN_POOLED] = e->pooled,
                               [SIDE_ANCHOR] = e->anchor },
                    .context = { [EVAL_WIN_POLICY] = n, [EVAL_WIN_SFT] = n } };
    for (int k = 0; k < N_SIDES; k++) sd.have[k] = sd.model[k] != NULL;
    if (e->anchor) {
        sd.have[EVAL_WIN_ORACLE] = 1;
        for (int i = 0; i < e->n_users; i++) {
            int f = synth_flavor_parse(e->users[i].truth->flavor);
            if (f < 0 || f >= SYNTH_N_FLAVORS) {
                note(rep, "user '%s' has no synth flavour in the truth file ('%s'): no oracle, no ceiling",
                     e->data.user_ids[e->users[i].user], e->users[i].truth->flavor ? e->users[i].truth->flavor : "");
                sd.have[EVAL_WIN_ORACLE] = 0;
                break;
            }
        }
        if (sd.have[EVAL_WIN_ORACLE]) data_attr_masks(&e->data, &rep->oracle_varied, &rep->oracle_fixed_on);
    }
    WinSample *s = malloc(sizeof(WinSample) * (size_t)(e->n_users * EVAL_WIN_PROMPTS + 1));
    if (!s) fatal(EXIT_RUNTIME, "out of memory");
    int m = collect_samples(e, &sd, n, s);
    uint64_t seed = (uint64_t)cfg->train.seed + 1;
    if (sd.have[EVAL_WIN_SFT]) compare_sides(e, s, m, &sd, EVAL_WIN_POLICY, EVAL_WIN_SFT, 0, seed, &rep->win_sft);
    if (sd.have[EVAL_WIN_POOLED]) compare_sides(e, s, m, &sd, EVAL_WIN_POLICY, EVAL_WIN_POOLED, 0, seed, &rep->win_pooled);
    for (int k = 0; e->anchor && k < EVAL_N_WIN; k++)
        if (sd.have[k])
            compare_sides(e, s, m, &sd, k, SIDE_ANCHOR, sd.have[EVAL_WIN_ORACLE] && k != EVAL_WIN_ORACLE, seed,
                          &rep->win_anchor[k]);
    if (e->anchor && sd.have[EVAL_WIN_ORACLE] && m > 0)
        rep->win_anchor[EVAL_WIN_ORACLE].of_ceiling = (EvalCI){ 1, 1, 1 };
    if (e->anchor && m == 0) note(rep, "no prompt fits every model: no win rate against the anchor");
    free(s);
}

/* ---- the user description (eval.user_desc) ---- */


void eval_desc_score(const int sign[SYNTH_K], const double w[SYNTH_K], EvalDescScore *s)
{
    memset(s, 0, sizeof *s);
    s->exact = 1;
    for (int k = 0; k < SYNTH_K; k++) {
        int truth = fabs(w[k]) >= SYNTH_ACTIVE_MIN ? (w[k] > 0 ? 1 : -1) : 0;
        s->attr[k] = sign[k] == truth;
        if (!s->attr[k]) s->exact = 0;
        if (truth) s->active += 1, s->active_hits += sign[k] == truth;
    }
}

/* The dataset's description of user u (NULL without one). */
static const int32_t *true_desc(const Dataset *d, int64_t u, int *len)
{
    *len = (int)d->user_desc[2 * u + 1];
    return *len > 0 ? d->tokens + d->user_desc[2 * u] : NULL;
}

/* eval.user_desc: the mode, its checks and (generated) the storage. */
static int setup_descriptions(Eval *e, char *err, size_t errlen)
{
    e->desc_mode = e->rep->user_desc = e->cfg->eval.user_desc;
    if (e->desc_mode == EVAL_DESC_ORACLE) {
        int with = 0, len;
        for (int i = 0; i < e->n_users; i++) with += true_desc(&e->data, e->users[i].user, &len) != NULL;
        if (with == 0)
            return set_err(err, errlen, "eval.user_desc is oracle, but no evaluated user of %s has a description "
                                        "(the 'user_description' field of fspo prep's input)", e->cfg->data.path);
        if (with < e->n_users)
            note(e->rep, "eval.user_desc oracle: %d of %d users have no description; their context has none",
                 e->n_users - with, e->n_users);
    }
    if (e->desc_mode != EVAL_DESC_GENERATED) return 0;
    /* room for twice the longest description the model was trained on */
    int64_t longest = 0;
    for (int64_t u = 0; u < e->data.n_users; u++)
        if (e->data.user_desc[2 * u + 1] > longest) longest = e->data.user_desc[2 * u + 1];
    e->desc_cap = longest * 2 > 64 ? (int)(longest * 2 < 4096 ? longest * 2 : 4096) : 64;
    e->rep->desc_max_tokens = e->desc_cap;
    size_t slots = (size_t)CFG_LIST * (size_t)e->n_users;
    e->desc_text = calloc(slots * (size_t)e->desc_cap + 1, sizeof(int32_t));
    e->desc_len = calloc(slots + 1, sizeof(int));
    if (!e->desc_text || !e->desc_len) fatal(EXIT_RUNTIME, "out of memory for the generated descriptions");
    return 0;
}

/* Points every user's description at the one of row `row`: the dataset's
 * (oracle) or the one generated at that N. */
static void point_descriptions(Eval *e, int row)
{
    for (int i = 0; i < e->n_users && e->desc_mode != EVAL_DESC_NONE; i++) {
        EvalUser *u = &e->users[i];
        if (e->desc_mode == EVAL_DESC_ORACLE) {
            u->desc = true_desc(&e->data, u->user, &u->desc_len);
            continue;
        }
        size_t slot = (size_t)row * e->n_users + i;
        u->desc = e->desc_text + slot * e->desc_cap;
        u->desc_len = e->desc_len[slot] > 0 ? e->desc_len[slot] : 0;
    }
}

/* eval.user_desc generated: the policy writes each user's description
 * after the first n pool pairs and USER_DESC, greedily, until EOS (or any
 * structure token) or desc_cap tokens. */
static void generate_descriptions(Eval *e, int row, int n)
{
    Generator *g = generator_create(e->policy, &e->data.tok);
    int32_t *prompt = malloc(sizeof(int32_t) * ((size_t)e->max_seq + (size_t)e->desc_cap));
    if (!prompt) fatal(EXIT_RUNTIME, "out of memory");
    int32_t *out = prompt + e->max_seq;
    SampleConfig greedy = { 0.0, 1.0, e->desc_cap };
    char what[64];
    snprintf(what, sizeof what, "N = %d, descriptions", n);
    for (int i = 0; i < e->n_users; i++) {
        size_t slot = (size_t)row * e->n_users + i;
        PairSpans shots[SAMPLER_MAX_FEWSHOT];
        user_shots(e, &e->users[i], n, shots);
        int lp = sample_render_desc_prompt(&e->data.tok, shots, n, prompt, e->max_seq);
        SampleResult res;
        e->desc_len[slot] = -1;
        if (lp > 0 && generate(g, prompt, lp, &greedy, 0, out, e->desc_cap, &res) == 0) {
            memcpy(e->desc_text + slot * e->desc_cap, out, sizeof(int32_t) * (size_t)res.n_tokens);
            e->desc_len[slot] = res.n_tokens;
        }
        progress(e, what, i + 1, e->n_users);
    }
    free(prompt);
    generator_free(g);
}

/* Tokens as text in printable ASCII ('?' for other bytes) into out[cap]. */
static void shown_text(const Tokenizer *tok, const int32_t *ids, int n, char *out, size_t cap)
{
    tok_decode(tok, ids, (size_t)n, out, cap, 0);
    for (char *c = out; *c; c++)
        if (!(*c >= 0x20 && *c < 0x7f)) *c = '?';
}

/* Description accuracy of row `row` (N = n): each generated description
 * read back with synth_parse_description and scored against the user's
 * true weights; bootstrap over users. */
static void score_descriptions(Eval *e, int row, int n)
{
    EvalDesc *out = &e->rep->desc[row];
    int U = e->n_users;
    double *buf = calloc((size_t)(6 + SYNTH_K) * (U + 1), sizeof(double));
    size_t text_cap = (size_t)e->desc_cap * 64 + 1; /* bytes of desc_cap tokens of any tokenizer fspo learns */
    char *text = malloc(text_cap);
    if (!buf || !text) fatal(EXIT_RUNTIME, "out of memory");
    double *one = buf, *exact = one + U + 1, *act_h = exact + U + 1, *act_c = act_h + U + 1, *all_h = act_c + U + 1,
           *all_c = all_h + U + 1, *attr = all_c + U + 1; /* attr: [SYNTH_K][U + 1] */
    int m = 0, parsed = 0, cut = 0;
    double tokens = 0;
    for (int i = 0; i < U; i++) {
        const EvalUser *u = &e->users[i];
        int len = e->desc_len[(size_t)row * U + i];
        if (len < 0 || !u->truth) continue;
        const int32_t *ids = e->desc_text + ((size_t)row * U + i) * e->desc_cap;
        size_t text_len = tok_decode(&e->data.tok, ids, (size_t)len, text, text_cap, 0);
        int sign[SYNTH_K];
        parsed += synth_parse_description(text, text_len < text_cap ? text_len : text_cap - 1, sign) == 0;
        EvalDescScore sc;
        eval_desc_score(sign, u->truth->weights, &sc);
        one[m] = 1, exact[m] = sc.exact, act_h[m] = sc.active_hits, act_c[m] = sc.active;
        all_c[m] = SYNTH_K;
        for (int k = 0; k < SYNTH_K; k++) all_h[m] += sc.attr[k], attr[k * (U + 1) + m] = sc.attr[k];
        tokens += len, cut += len >= e->desc_cap;
        if (m == 0) {
            int tl;
            const int32_t *t = true_desc(&e->data, u->user, &tl);
            snprintf(out->example_user, sizeof out->example_user, "%s", e->data.user_ids[u->user]);
            shown_text(&e->data.tok, ids, len, out->example, sizeof out->example);
            shown_text(&e->data.tok, t, t ? tl : 0, out->example_truth, sizeof out->example_truth);
        }
        m++;
    }
    out->n_fewshot = n;
    out->users = m;
    if (m > 0) {
        uint64_t seed = (uint64_t)e->cfg->train.seed + 2;
        int B = e->cfg->eval.bootstrap;
        out->valid = 1;
        out->parsed = (double)parsed / m;
        out->mean_tokens = tokens / m;
        out->truncated = (double)cut / m;
        out->exact = eval_bootstrap(exact, one, m, B, seed);
        out->active_sign = eval_bootstrap(act_h, act_c, m, B, seed);
        out->attributes = eval_bootstrap(all_h, all_c, m, B, seed);
        for (int k = 0; k < SYNTH_K; k++) out->attr[k] = eval_bootstrap(attr + k * (U + 1), one, m, B, seed);
    }
    free(buf), free(text);
}

/* The descriptions of row `row` (N = n) for the users' contexts: the
 * hook eval_run calls before planning a row. */
static void describe_users(Eval *e, int row, int n, int have_truth)
{
    if (e->desc_mode == EVAL_DESC_GENERATED) {
        generate_descriptions(e, row, n);
        if (have_truth) score_descriptions(e, row, n);
    }
    point_descriptions(e, row);
}

/* ---- setup ---- */

/* The SFT model trained with context: eval.sft_ckpt, default loss.ref_ckpt ("" = none). */
static const char *sft_path(const Config *cfg) { return cfg->eval.sft_ckpt[0] ? cfg->eval.sft_ckpt : cfg->loss.ref_ckpt; }

static int load_models(Eval *e, char *err, size_t errlen)
{
    const Config *cfg = e->cfg;
    char why[1024];
    struct {
        const char *path, *role;
        Model **m;
        int rows, sees_context; /* the anchor only generates, without context */
    } want[] = { { e->o->ckpt, "--ckpt", &e->policy, EVAL_ROWS, 1 },
                 { cfg->loss.ref_ckpt, "loss.ref_ckpt", &e->ref, EVAL_ROWS, 1 },
                 { cfg->eval.pooled_ckpt, "eval.pooled_ckpt", &e->pooled, EVAL_ROWS, 1 },
                 { sft_path(cfg), "eval.sft_ckpt", &e->sft, EVAL_ROWS, 1 },
                 { cfg->eval.anchor_ckpt, "eval.anchor_ckpt", &e->anchor, 1, 0 } };
    e->max_seq = 1 << 30;
    for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
        if (!want[i].path || !want[i].path[0]) continue;
        if (want[i].m == &e->sft && e->ref && !strcmp(want[i].path, cfg->loss.ref_ckpt)) {
            e->sft = e->ref; /* SFT is the reference: one model */
            continue;
        }
        FrozenSpec spec = { .max_rows = want[i].rows, .tok = &e->data.tok, .tok_from = cfg->data.path };
        *want[i].m = frozen_load(want[i].path, &spec, why, sizeof why);
        if (!*want[i].m) return set_err(err, errlen, "%s: %s", want[i].role, why);
        const ModelConfig *mc = &(*want[i].m)->cfg;
        if (mc->vocab < e->data.vocab)
            return set_err(err, errlen, "%s: %s reads %d token ids; the dataset has %lld", want[i].role, want[i].path,
                           mc->vocab, (long long)e->data.vocab);
        if (want[i].sees_context && mc->max_seq < e->max_seq) e->max_seq = mc->max_seq;
    }
    snprintf(e->rep->ref_path, sizeof e->rep->ref_path, "%s", cfg->loss.ref_ckpt);
    snprintf(e->rep->pooled_path, sizeof e->rep->pooled_path, "%s", cfg->eval.pooled_ckpt);
    snprintf(e->rep->sft_path, sizeof e->rep->sft_path, "%s", sft_path(cfg));
    snprintf(e->rep->anchor_path, sizeof e->rep->anchor_path, "%s", cfg->eval.anchor_ckpt);
    if (!e->sft) note(e->rep, "no eval.sft_ckpt (nor loss.ref_ckpt): no sft_plain column, no win rate against SFT");
    else if (!cfg->eval.sft_ckpt[0]) note(e->rep, "no eval.sft_ckpt: the SFT column and win-rate baseline are loss.ref_ckpt");
    if (!e->ref) note(e->rep, "no loss.ref_ckpt: the model column is the plain log-prob margin logpi(chosen) - logpi(rejected)");
    if (!e->pooled) note(e->rep, "no eval.pooled_ckpt: the pooled (no-context) column is empty");
    return 0;
}

static void free_eval(Eval *e, TruthSet *truth)
{
    if (e->sft != e->ref) model_free(e->sft);
    model_free(e->policy), model_free(e->ref), model_free(e->pooled), model_free(e->anchor);
    batch_free(&e->batch);
    xfree_aligned(e->logp), xfree_aligned(e->ref_logp);
    free(e->hits), free(e->count), free(e->fits), free(e->users);
    free(e->desc_text), free(e->desc_len);
    dataset_free(&e->data);
    truth_free(truth);
}

int eval_run(const Config *cfg, const EvalOptions *o, EvalReport *rep, char *err, size_t errlen)
{
    static Eval ev;
    Eval *e = &ev;
    memset(e, 0, sizeof *e);
    memset(rep, 0, sizeof *rep);
    e->cfg = cfg, e->o = o, e->rep = rep, e->t0 = now_seconds();
    TruthSet *truth = NULL;
    char why[1024];
    if (dataset_read(cfg->data.path, &e->data, why, sizeof why) != 0) return set_err(err, errlen, "%s", why), EXIT_USAGE;
    if (cfg->eval.n_fewshot.n < 1) return set_err(err, errlen, "eval.n_fewshot is empty"), EXIT_USAGE;
    if (pick_users(e, err, errlen) != 0 || load_models(e, err, errlen) != 0 || load_truth(e, &truth, err, errlen) != 0 ||
        setup_descriptions(e, err, errlen) != 0) {
        free_eval(e, truth);
        return EXIT_USAGE;
    }
    int R = cfg->eval.n_fewshot.n, U = e->n_users;
    e->hits = calloc((size_t)EVAL_N_METHODS * CFG_LIST * U + 1, sizeof(double));
    e->count = calloc((size_t)CFG_LIST * U + 1, sizeof(double));
    e->fits = calloc((size_t)CFG_LIST * U + 1, 1);
    int max_jobs = U * EVAL_QUERIES + 1;
    RowJob *jobs = malloc(sizeof(RowJob) * (size_t)max_jobs), *pooled_jobs = malloc(sizeof(RowJob) * (size_t)max_jobs);
    unsigned char *pooled_fit = calloc((size_t)U + 1, 1);
    if (!e->hits || !e->count || !e->fits || !jobs || !pooled_jobs || !pooled_fit) fatal(EXIT_RUNTIME, "out of memory");
    batch_alloc(&e->batch, EVAL_ROWS, e->max_seq, 1 + 3 * EVAL_QUERIES, EVAL_ROWS * e->max_seq);
    e->logp = xcalloc_aligned(sizeof(float) * EVAL_ROWS * e->max_seq, "eval log-probs");
    e->ref_logp = xcalloc_aligned(sizeof(float) * EVAL_ROWS * e->max_seq, "eval log-probs");

    /* the pooled model never sees context: score its N = 0 rows once */
    int n_pooled_jobs = e->pooled ? plan_rows(e, 0, pooled_jobs, pooled_fit) : 0;
    double *pooled_hits = calloc((size_t)U + 1, sizeof(double));
    if (e->pooled) {
        score_rows(e, e->pooled, e->ref, pooled_jobs, n_pooled_jobs, EVAL_POOLED, -1, -1, 0, "pooled model, rows");
        memcpy(pooled_hits, tally(e, EVAL_POOLED, 0), sizeof(double) * (size_t)U);
        memset(tally(e, EVAL_POOLED, 0), 0, sizeof(double) * (size_t)U);
    }
    for (int r = 0; r < R; r++) {
        int n = (int)cfg->eval.n_fewshot.v[r];
        unsigned char *fit = e->fits + (size_t)r * U;
        describe_users(e, r, n, truth != NULL);
        int n_jobs = plan_rows(e, n, jobs, fit);
        EvalRow *row = &rep->rows[r];
        row->n_fewshot = n;
        for (int i = 0; i < U; i++) {
            if (e->pooled && !pooled_fit[i]) fit[i] = 0; /* compare every method on the same users */
            if (fit[i]) row->users++, counts(e, r)[i] = e->users[i].n_queries;
        }
        char what[64];
        snprintf(what, sizeof what, "N = %d, rows", n);
        int sft_is_ref = e->sft && e->sft == e->ref; /* then the reference's own margins are the SFT column */
        score_rows(e, e->policy, e->ref, jobs, n_jobs, EVAL_MODEL, EVAL_MODEL_PLAIN, sft_is_ref ? EVAL_SFT_PLAIN : -1,
                   r, what);
        if (e->sft && !sft_is_ref) {
            snprintf(what, sizeof what, "N = %d, SFT rows", n);
            score_rows(e, e->sft, NULL, jobs, n_jobs, EVAL_SFT_PLAIN, -1, -1, r, what);
        }
        if (e->pooled) memcpy(tally(e, EVAL_POOLED, r), pooled_hits, sizeof(double) * (size_t)U);
        score_oracles(e, r, n, truth != NULL);
        row->m[EVAL_MODEL] = summarize(e, EVAL_MODEL, r);
        row->m[EVAL_MODEL_PLAIN] = summarize(e, EVAL_MODEL_PLAIN, r);
        if (e->sft) row->m[EVAL_SFT_PLAIN] = summarize(e, EVAL_SFT_PLAIN, r);
        if (e->pooled) row->m[EVAL_POOLED] = summarize(e, EVAL_POOLED, r);
        row->m[EVAL_LINEAR] = summarize(e, EVAL_LINEAR, r);
        if (truth) row->m[EVAL_BAYES] = summarize(e, EVAL_BAYES, r);
        gap_row(e, r);
        if (row->users < U)
            note(rep, "N = %d: %d of %d users' context plus queries do not fit model.max_seq = %d and are left out",
                 n, U - row->users, U, e->max_seq);
    }
    rep->n_rows = R;
    note_gaps_na(e);

    /* win rate at the largest N that any user fits */
    int win_n = -1, win_row = 0;
    for (int r = 0; r < R; r++)
        if (rep->rows[r].users > 0 && (int)cfg->eval.n_fewshot.v[r] > win_n) win_n = (int)cfg->eval.n_fewshot.v[r], win_row = r;
    point_descriptions(e, win_row); /* the descriptions of that N, for the samples with context */
    if (e->desc_mode == EVAL_DESC_GENERATED && !truth) note(rep, "no truth file: no description accuracy");
    if (!truth) note(rep, "no truth file: no generation win rate");
    else if (win_n < 0) note(rep, "no N fits: no generation win rate");
    else if (e->sft || e->pooled || e->anchor) win_rates(e, win_n);
    rep->seconds = now_seconds() - e->t0;
    free(jobs), free(pooled_jobs), free(pooled_fit), free(pooled_hits);
    free_eval(e, truth);
    return 0;
}
