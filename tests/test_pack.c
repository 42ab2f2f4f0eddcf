/* Sampler, tree packing and preference losses.
 * The central check: per-answer log-probs and DPO gradients from one
 * tree-packed row equal those from the 2Q separate linear rows. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "src/checksum.h"
#include "src/loss.h"
#include "src/model.h"
#include "src/pack.h"
#include "src/rng.h"
#include "src/sampler.h"
#include "src/tokenizer.h"
#include "tests/check.h"

/* users x pairs of random byte strings; the last user is a test user, the
 * one before it (with 3 or more users) a validation user */
static void make_dataset(Dataset *d, int users, int pairs_per_user, uint64_t seed)
{
    memset(d, 0, sizeof *d);
    Rng r = rng_seed(seed, 1);
    d->n_users = users;
    d->n_pairs = (int64_t)users * pairs_per_user;
    d->tokens = malloc(sizeof(int32_t) * d->n_pairs * 3 * 16);
    d->prompt = malloc(sizeof(int64_t) * 2 * d->n_pairs);
    d->chosen = malloc(sizeof(int64_t) * 2 * d->n_pairs);
    d->rejected = malloc(sizeof(int64_t) * 2 * d->n_pairs);
    int64_t *spans[3] = { d->prompt, d->chosen, d->rejected };
    for (int64_t p = 0; p < d->n_pairs; p++)
        for (int s = 0; s < 3; s++) {
            int len = 2 + (int)rng_below(&r, 14);
            spans[s][2 * p] = d->n_tokens;
            spans[s][2 * p + 1] = len;
            for (int k = 0; k < len; k++) d->tokens[d->n_tokens++] = (int32_t)(32 + rng_below(&r, 90));
        }
    d->user_pairs = malloc(sizeof(int64_t) * 2 * users);
    d->user_desc = calloc(2 * users, sizeof(int64_t));
    d->user_split = calloc(users, 1);
    for (int u = 0; u < users; u++) d->user_pairs[2 * u] = (int64_t)u * pairs_per_user, d->user_pairs[2 * u + 1] = pairs_per_user;
    d->user_split[users - 1] = SPLIT_TEST;
    if (users >= 3) d->user_split[users - 2] = SPLIT_VALIDATION;
    d->vocab = TOKENIZER_VOCAB;
}

static void free_dataset(Dataset *d)
{
    free(d->tokens), free(d->prompt), free(d->chosen), free(d->rejected);
    free(d->user_pairs), free(d->user_desc), free(d->user_split);
}

/* ---- sampler ---- */
static uint64_t draws_hash(const Sampler *s, int n)
{
    uint64_t h = 0;
    MetaExample ex;
    for (int g = 0; g < n; g++) {
        memset(&ex, 0, sizeof ex);
        sampler_draw(s, (uint64_t)g, &ex);
        h = checksum_combine(h, checksum64(&ex, sizeof ex));
    }
    return h;
}

static void test_sampler(const Dataset *d)
{
    Sampler s, h;
    char err[256];
    int rc = sampler_init(&s, d, SPLIT_TRAIN, 42, 4, -1, 2, err, sizeof err);
    check(rc == 0 && s.n_users == d->n_users - 2, "sampler: training split", "%lld users", (long long)s.n_users);
    /* determinism across calls and across processes */
    uint64_t a = draws_hash(&s, 1000), b = draws_hash(&s, 1000);
    int fds[2];
    if (pipe(fds) != 0) return;
    pid_t pid = fork();
    if (pid == 0) {
        uint64_t c = draws_hash(&s, 1000);
        _exit(write(fds[1], &c, sizeof c) == sizeof c ? 0 : 1);
    }
    uint64_t c = 0;
    if (read(fds[0], &c, sizeof c) != sizeof c) c = 0;
    waitpid(pid, NULL, 0);
    close(fds[0]), close(fds[1]);
    check(a == b && a == c, "sampler: same (seed, g) gives the same meta-example", "here twice and in a child process");
    /* 100k draws: never a validation or test user, pairs distinct and the user's own */
    int heldout = 0, overlap = 0, foreign = 0;
    MetaExample ex;
    for (uint64_t g = 0; g < 100000; g++) {
        sampler_draw(&s, g, &ex);
        heldout += d->user_split[ex.user] != SPLIT_TRAIN;
        int64_t first = d->user_pairs[2 * ex.user], count = d->user_pairs[2 * ex.user + 1];
        for (int i = 0; i < ex.n_fewshot + ex.n_queries; i++) {
            foreign += ex.pairs[i] < first || ex.pairs[i] >= first + count;
            for (int j = 0; j < i; j++) overlap += ex.pairs[i] == ex.pairs[j];
        }
    }
    check(heldout == 0 && overlap == 0 && foreign == 0, "sampler: 100k draws", "%d validation/test, %d repeated pairs, %d "
                                                                                "pairs of another user",
          heldout, overlap, foreign);
    /* every position of a user's pairs is used both as context and as query */
    int as_query[12] = { 0 }, as_context[12] = { 0 };
    for (uint64_t g = 0; g < 20000; g++) {
        sampler_draw(&s, g, &ex);
        if (ex.user != 0) continue;
        for (int i = 0; i < ex.n_fewshot + ex.n_queries; i++) (i < ex.n_fewshot ? as_context : as_query)[ex.pairs[i]]++;
    }
    int unused = 0;
    for (int p = 0; p < 12; p++) unused += as_query[p] == 0 || as_context[p] == 0;
    check(unused == 0, "sampler: every pair serves as context and as query", "%d pairs never do", unused);
    sampler_free(&s);
    rc = sampler_init(&h, d, SPLIT_TEST, 42, 4, 1, 2, err, sizeof err);
    int only_test = 1, nmin = 99, nmax = 0;
    for (uint64_t g = 0; rc == 0 && g < 2000; g++) {
        sampler_draw(&h, g, &ex);
        only_test &= d->user_split[ex.user] == SPLIT_TEST;
        nmin = ex.n_fewshot < nmin ? ex.n_fewshot : nmin;
        nmax = ex.n_fewshot > nmax ? ex.n_fewshot : nmax;
    }
    check(rc == 0 && only_test && nmin == 1 && nmax == 4, "sampler: test split, random N in [1, 4]",
          "N from %d to %d", nmin, nmax);
    sampler_free(&h);
    rc = sampler_init(&h, d, SPLIT_TRAIN, 1, 10, -1, 3, err, sizeof err);
    check(rc == -1 && strstr(err, "no training user has the 13 pairs"), "sampler: users too small", "%s", err);
}

/* Each split's sampler draws exactly its own users, over many meta-example
 * indices: the users drawn, counted against the split codes themselves, on
 * a dataset whose splits are assigned at random (so no pattern of user
 * order can hide a leak). */
static void test_sampler_splits(void)
{
    Dataset d;
    enum { USERS = 60 };
    make_dataset(&d, USERS, 8, 21);
    Rng r = rng_seed(99, 0);
    int n_in[SPLIT_COUNT] = { 0 };
    for (int u = 0; u < USERS; u++) d.user_split[u] = (uint8_t)rng_below(&r, SPLIT_COUNT), n_in[d.user_split[u]]++;
    int drawn[USERS];
    for (int sp = 0; sp < SPLIT_COUNT; sp++) {
        Sampler s;
        char err[256];
        int rc = sampler_init(&s, &d, (Split)sp, 5, 3, 0, 2, err, sizeof err);
        memset(drawn, 0, sizeof drawn);
        int foreign = 0, seen = 0;
        for (uint64_t g = 0; rc == 0 && g < 200000; g++) {
            MetaExample ex;
            sampler_draw(&s, g * 7919 + (uint64_t)sp, &ex); /* indices far apart too */
            foreign += d.user_split[ex.user] != sp;
            drawn[ex.user]++;
        }
        for (int u = 0; u < USERS; u++) seen += drawn[u] > 0;
        char label[96];
        snprintf(label, sizeof label, "sampler: the %s split draws only and all of its users", dataset_split_name(sp));
        check(rc == 0 && foreign == 0 && seen == n_in[sp] && s.n_users == n_in[sp], label,
              "200k draws: %d of another split; %d of its %d users drawn", foreign, seen, n_in[sp]);
        sampler_free(&s);
    }
    /* a split without users is named, not "too few pairs" */
    for (int u = 0; u < USERS; u++) d.user_split[u] = d.user_split[u] == SPLIT_VALIDATION ? SPLIT_TEST : d.user_split[u];
    Sampler s;
    char err[256];
    int rc = sampler_init(&s, &d, SPLIT_VALIDATION, 5, 3, 0, 2, err, sizeof err);
    check(rc == -1 && strstr(err, "the dataset has no validation users") && strstr(err, "fspo eval --split"),
          "sampler: an empty split is named", "%s", err);
    free_dataset(&d);
}

/* ---- packing ---- */
static Model *small_model(int max_seq)
{
    ModelConfig cfg = { .vocab = 264, .d_model = 32, .n_layers = 2, .n_heads = 4, .max_seq = max_seq };
    Model *m = model_create(&cfg, 1, 8, max_seq);
    Rng r = rng_seed(5, 5);
    for (int i = 0; i < m->n_tensors; i++) {
        const TensorInfo *t = &m->tensors[i];
        for (size_t j = 0; j < t->numel; j++)
            m->params[t->offset + j] = t->ndim == 1 ? 1.0f + 0.1f * (float)rng_normal(&r) : 0.15f * (float)rng_normal(&r);
    }
    return m;
}

/* Packs ex in one mode, runs forward (+ DPO backward into fresh grads). */
static void run_mode(Model *m, const Dataset *d, const MetaExample *ex0, PackMode mode, double *sums, float *grads)
{
    MetaExample ex = *ex0;
    int df, dq;
    int len = pack_plan(d, &ex, mode, m->cfg.max_seq, &df, &dq);
    Batch b;
    batch_alloc(&b, pack_rows(&ex, mode), len, pack_segments(&ex, mode), 4096);
    batch_reset(&b, pack_rows(&ex, mode), len, pack_segments(&ex, mode));
    PackedAnswers ans;
    pack_write(d, &ex, mode, &b, 0, &ans);
    char err[256];
    if (batch_validate(&b, m->cfg.vocab, m->cfg.max_seq, err, sizeof err) != 0) fprintf(stderr, "%s\n", err);
    float *logp = calloc(b.n_targets, sizeof(float)), *dlogp = calloc(b.n_targets, sizeof(float));
    model_forward(m, &b, logp);
    answer_logps(logp, &ans, sums);
    double ref[2 * SAMPLER_MAX_QUERIES];
    for (int a = 0; a < ans.n_answers; a++) ref[a] = -30.0 - 3 * a; /* any fixed reference */
    LossConfig lc = { .type = LOSS_DPO, .beta = 0.5 };
    pref_loss(&lc, logp, ref, &ans, ex.n_queries, dlogp, NULL);
    model_zero_grad(m);
    model_backward(m, &b, dlogp);
    memcpy(grads, m->grads, sizeof(float) * m->n_params);
    free(logp), free(dlogp);
    batch_free(&b);
}

static void test_packing_equivalence(const Dataset *d)
{
    Model *m = small_model(512);
    Sampler s;
    char err[256];
    sampler_init(&s, d, SPLIT_TRAIN, 7, 3, -1, 3, err, sizeof err);
    float *gt = malloc(sizeof(float) * m->n_params), *gu = malloc(sizeof(float) * m->n_params);
    double worst_logp = 0, worst_grad = 0;
    for (uint64_t g = 0; g < 10; g++) {
        MetaExample ex;
        sampler_draw(&s, g, &ex);
        static const int32_t desc[] = { 'd', 'i', 's', 'l', 'i', 'k', 'e', 's', ':', ' ', 'e', 'm', 'o', 'j', 'i' };
        if (g % 2) ex.desc = desc, ex.desc_len = (int)(g * 3 % 16); /* odd: a description in C (length 3..15, or 0) */
        double st[64], su[64];
        run_mode(m, d, &ex, PACK_TREE, st, gt);
        run_mode(m, d, &ex, PACK_UNSHARED, su, gu);
        for (int a = 0; a < 2 * ex.n_queries; a++) worst_logp = fmax(worst_logp, fabs(st[a] - su[a]) / fabs(su[a]));
        for (int i = 0; i < m->n_tensors; i++) {
            const TensorInfo *t = &m->tensors[i];
            worst_grad = fmax(worst_grad, rel_err(gt + t->offset, gu + t->offset, t->numel, 1e-20));
        }
    }
    check(worst_logp < 1e-5, "tree-packed answer log-probs equal unshared rows", "max rel err %.2e over 10 "
                                                                                  "meta-examples x 6 answers (5 with a "
                                                                                  "description)", worst_logp);
    check(worst_grad < 1e-5, "tree-packed DPO gradients equal unshared rows", "max rel err %.2e (per tensor)",
          worst_grad);
    free(gt), free(gu);
    sampler_free(&s);
    model_free(m);
}

/* Packs ex into one tree row of b (allocated here; with the context's
 * targets if asked) and returns the model's log-probs of its targets. */
static float *pack_forward(Model *m, const Dataset *d, MetaExample *ex, int context_targets, Batch *b,
                           PackedAnswers *ans, int *len)
{
    int df, dq;
    *len = pack_plan(d, ex, PACK_TREE, 512, &df, &dq);
    batch_alloc(b, 1, 512, 7, 2048);
    batch_reset(b, 1, *len, pack_segments(ex, PACK_TREE));
    if (context_targets) pack_write_context_targets(d, ex, PACK_TREE, b, 0, ans);
    else pack_write(d, ex, PACK_TREE, b, 0, ans);
    float *logp = calloc(b->n_targets, sizeof(float));
    model_forward(m, b, logp);
    return logp;
}

/* train.sft_context: the context's chosen answers as targets. Checked
 * against an independent causal row per few-shot pair, built from the raw
 * spans, whose last answer is scored target by target. */
static void test_context_targets(const Dataset *d)
{
    Model *m = small_model(512);
    MetaExample ex = { .user = 0, .n_fewshot = 3, .n_queries = 2, .pairs = { 0, 1, 2, 3, 4 } };
    Batch b, c;
    PackedAnswers ans;
    int len;
    float *logp = pack_forward(m, d, &ex, 1, &b, &ans, &len);
    PackedAnswers plain;
    Batch q;
    batch_alloc(&q, 1, 512, 7, 2048);
    batch_reset(&q, 1, len, pack_segments(&ex, PACK_TREE));
    pack_write(d, &ex, PACK_TREE, &q, 0, &plain);
    int shift_ok = ans.first[0] - ans.ctx_first == ans.ctx_end - ans.ctx_first && plain.ctx_end == plain.ctx_first &&
                   ans.first[4] - ans.first[0] == plain.first[4] - plain.first[0];

    batch_alloc(&c, 1, 512, 1, 512);
    int32_t row[512];
    double worst = 0;
    int k = ans.ctx_first, count_ok = 1;
    for (int i = 0; i < ex.n_fewshot; i++) {
        int n = 0;
        row[n++] = TOK_BOS;
        for (int j = 0; j <= i; j++) {
            int64_t p = ex.pairs[j];
            const int64_t *sp[3] = { d->prompt + 2 * p, d->chosen + 2 * p, d->rejected + 2 * p };
            row[n++] = TOK_EXAMPLE, row[n++] = TOK_QUESTION;
            for (int64_t t = 0; t < sp[0][1]; t++) row[n++] = d->tokens[sp[0][0] + t];
            row[n++] = TOK_PREFERRED;
            int answer_start = n;
            for (int64_t t = 0; t < sp[1][1]; t++) row[n++] = d->tokens[sp[1][0] + t];
            row[n++] = TOK_DISPREFERRED;
            if (j < i) {
                for (int64_t t = 0; t < sp[2][1]; t++) row[n++] = d->tokens[sp[2][0] + t];
                continue;
            }
            batch_reset(&c, 1, n, 1);
            batch_set_causal_row(&c, 0, row);
            for (int t = answer_start; t < n; t++) c.targets[c.n_targets++] = (Target){ t - 1, row[t], 0.0f };
            float lp[512];
            model_forward(m, &c, lp);
            for (int t = 0; t < c.n_targets; t++, k++) {
                count_ok &= k < ans.ctx_end && b.targets[k].token == c.targets[t].token;
                if (k < ans.ctx_end) worst = fmax(worst, fabs(logp[k] - lp[t]));
            }
        }
    }
    check(count_ok && k == ans.ctx_end && shift_ok && ans.ctx_end - ans.ctx_first == pack_context_targets(d, &ex),
          "context targets: every chosen token of the few-shot pairs, once, before the queries' targets",
          "%d of %d", k - ans.ctx_first, ans.ctx_end - ans.ctx_first);
    check(worst < 1e-5, "context targets score as a causal row of the pairs before them", "max |dlogp| %.2e", worst);
    free(logp);
    batch_free(&b), batch_free(&c), batch_free(&q);
    model_free(m);
}

/* Appends the raw spans of pair p to row (few-shot form, or query form
 * with `answer` 0 = chosen, 1 = rejected, -1 = prompt only); returns the new length. */
static int raw_pair(const Dataset *d, int64_t p, int query, int answer, int32_t *row, int n)
{
    const int64_t *sp[3] = { d->prompt + 2 * p, d->chosen + 2 * p, d->rejected + 2 * p };
    row[n++] = query ? TOK_TASK : TOK_EXAMPLE;
    row[n++] = TOK_QUESTION;
    for (int64_t t = 0; t < sp[0][1]; t++) row[n++] = d->tokens[sp[0][0] + t];
    row[n++] = TOK_PREFERRED;
    if (query) {
        if (answer < 0) return n;
        for (int64_t t = 0; t < sp[1 + answer][1]; t++) row[n++] = d->tokens[sp[1 + answer][0] + t];
        row[n++] = TOK_EOS;
        return n;
    }
    for (int64_t t = 0; t < sp[1][1]; t++) row[n++] = d->tokens[sp[1][0] + t];
    row[n++] = TOK_DISPREFERRED;
    for (int64_t t = 0; t < sp[2][1]; t++) row[n++] = d->tokens[sp[2][0] + t];
    return n;
}

/* Sum of the log-probs model m gives tokens [from, n) of a causal row,
 * each predicted from the token before it. */
static double causal_logp(Model *m, Batch *c, const int32_t *row, int from, int n, float *each)
{
    batch_reset(c, 1, n, 1);
    batch_set_causal_row(c, 0, row);
    for (int t = from; t < n; t++) c->targets[c->n_targets++] = (Target){ t - 1, row[t], 0.0f };
    float lp[512];
    model_forward(m, c, lp);
    double s = 0;
    for (int t = 0; t < c->n_targets; t++) s += lp[t], each ? (void)(each[t] = lp[t]) : (void)0;
    return s;
}

/* data.user_desc cot: C = BOS pairs USER_DESC desc EOS, the description's
 * tokens and EOS as targets between the pairs and the queries. Checked
 * against the layout built from the raw spans, against independent causal
 * rows of the linear sequences (the description after the pairs; each
 * query's chosen answer after C and its prompt), and the SFT and
 * preference-stage losses against the formulas on those rows. */
static void test_desc_targets(const Dataset *d)
{
    Model *m = small_model(512);
    static const int32_t desc[] = { 'p', 'r', 'e', 'f', 'e', 'r', 's', ':', ' ', 'l', 'o', 'n', 'g' };
    int dl = (int)(sizeof desc / sizeof *desc);
    MetaExample ex = { .user = 0, .n_fewshot = 3, .n_queries = 2, .pairs = { 0, 1, 2, 3, 4 }, .desc = desc, .desc_len = dl };
    Batch b, c;
    PackedAnswers ans;
    int len, df, dq;
    float *logp = pack_forward(m, d, &ex, 0, &b, &ans, &len), *dlogp = calloc(b.n_targets, sizeof(float));

    /* the linear sequence C, from the raw spans */
    int32_t row[512];
    int n = 0;
    row[n++] = TOK_BOS;
    for (int i = 0; i < 3; i++) n = raw_pair(d, ex.pairs[i], 0, 0, row, n);
    int pairs_end = n;
    row[n++] = TOK_USER_DESC;
    for (int k = 0; k < dl; k++) row[n++] = desc[k];
    row[n++] = TOK_EOS;
    int c_len = n;
    int same = len >= c_len && b.tokens[c_len] == TOK_TASK;
    for (int t = 0; t < c_len && same; t++) same = b.tokens[t] == row[t] && b.pos[t] == t && b.seg[t] == 0;
    check(same && len == pack_plan(d, &ex, PACK_TREE, 512, &df, &dq), "description: C = BOS pairs USER_DESC desc EOS, "
                                                                       "then the first query",
          "C is %d tokens, the pairs end at %d", c_len, pairs_end);
    /* its targets: right after the pairs' rejected answer, before every query target */
    int placed = ans.desc_end - ans.desc_first == dl + 1 && ans.desc_end <= ans.first[0] && ans.ctx_first == ans.ctx_end;
    for (int k = ans.desc_first; k < ans.desc_end && placed; k++) {
        int at = pairs_end + 1 + (k - ans.desc_first); /* the token predicted */
        placed = b.targets[k].index == at - 1 && b.targets[k].token == row[at];
    }
    for (int k = ans.first[0]; k < ans.first[4] && placed; k++) placed = b.targets[k].index >= c_len - 1;
    check(placed, "description targets: its tokens and EOS, each from the token before, after the pairs and before "
                  "the answers", "%d targets at [%d, %d)", ans.desc_end - ans.desc_first, ans.desc_first, ans.desc_end);

    batch_alloc(&c, 1, 512, 1, 512);
    float each[512];
    double desc_sum = causal_logp(m, &c, row, pairs_end + 1, c_len, each), worst = 0;
    for (int k = ans.desc_first; k < ans.desc_end; k++) worst = fmax(worst, fabs(logp[k] - each[k - ans.desc_first]));
    check(worst < 1e-5, "description targets score as the causal row of the pairs and the description",
          "max |dlogp| %.2e, sum %.4f", worst, desc_sum);
    /* the answers, conditioned on the description: each against [C P_j W_j] */
    double chosen_sum = 0, worst_ans = 0;
    int chosen_tokens = 0;
    for (int j = 0; j < 2; j++)
        for (int a = 0; a < 2; a++) {
            int q = raw_pair(d, ex.pairs[3 + j], 1, -1, row, c_len);
            int qn = raw_pair(d, ex.pairs[3 + j], 1, a, row, c_len);
            double s = causal_logp(m, &c, row, q, qn, NULL), packed = 0;
            for (int k = ans.first[2 * j + a]; k < ans.first[2 * j + a + 1]; k++) packed += logp[k];
            worst_ans = fmax(worst_ans, fabs(packed - s));
            if (a == 0) chosen_sum += s, chosen_tokens += qn - q;
        }
    check(worst_ans < 1e-4, "answers after the description score as their linear sequences [C P W]",
          "max |dsum| %.2e", worst_ans);
    /* SFT: the chosen answers' and the description's tokens, mean NLL over all of them */
    double norm = chosen_tokens + dl + 1;
    LossStats sst = { 0 };
    sft_loss(logp, &ans, 0, 1.0, norm, dlogp, &sst);
    double loss = sst.loss, tokens = sst.tokens;
    double want = -(chosen_sum + desc_sum) / norm;
    int grad_ok = 1;
    for (int k = 0; k < b.n_targets; k++) {
        int rejected = (k >= ans.first[1] && k < ans.first[2]) || (k >= ans.first[3] && k < ans.first[4]);
        grad_ok &= dlogp[k] == (rejected ? 0.0f : (float)(-1.0 / norm));
    }
    check(fabs(loss - want) < 1e-5 * fabs(want) && tokens == norm && grad_ok, "SFT loss with the description: mean NLL "
                                                                                "of chosen answers and description",
          "%.6f vs %.6f over %.0f tokens", loss, want, tokens);
    /* loss.desc_weight 3: the description's tokens weigh 3/norm, the answers' 1/norm */
    memset(dlogp, 0, sizeof(float) * b.n_targets);
    LossStats wst = { 0 };
    sft_loss(logp, &ans, 0, 3.0, norm, dlogp, &wst);
    double wwant = -(chosen_sum + 3 * desc_sum) / norm;
    int wgrad_ok = 1;
    for (int k = 0; k < b.n_targets; k++) {
        int rejected = (k >= ans.first[1] && k < ans.first[2]) || (k >= ans.first[3] && k < ans.first[4]);
        int in_desc = k >= ans.desc_first && k < ans.desc_end;
        wgrad_ok &= dlogp[k] == (rejected ? 0.0f : (float)(-(in_desc ? 3.0 : 1.0) / norm));
    }
    check(fabs(wst.loss - wwant) < 1e-5 * fabs(wwant) && wst.tokens == norm && wgrad_ok,
          "SFT loss with loss.desc_weight 3: description tokens weigh 3, answers 1", "%.6f vs %.6f", wst.loss, wwant);
    /* preference stage: weight x token-mean description NLL per query pair */
    memset(dlogp, 0, sizeof(float) * b.n_targets);
    double w = 0.7, pairs = 5;
    LossStats dst = { 0 };
    desc_loss(logp, &ans, w, pairs, dlogp, &dst);
    double dloss = dst.loss;
    double dwant = w * 2 * (-desc_sum / (dl + 1)) / pairs;
    int only_desc = 1;
    for (int k = 0; k < b.n_targets; k++)
        only_desc &= k >= ans.desc_first && k < ans.desc_end ? fabs(dlogp[k] + w * 2 / (dl + 1) / pairs) < 1e-7
                                                             : dlogp[k] == 0;
    LossStats zst = { 0 };
    desc_loss(logp, &ans, 0, pairs, dlogp, &zst);
    double zero = zst.loss;
    check(fabs(dloss - dwant) < 1e-5 * fabs(dwant) && only_desc && zero == 0,
          "preference stage description term: sft_weight x mean NLL per query pair", "%.6f vs %.6f", dloss, dwant);
    free(logp), free(dlogp);
    batch_free(&b), batch_free(&c);
    model_free(m);
}

static void test_layout_and_truncation(const Dataset *d)
{
    MetaExample ex = { .user = 0, .n_fewshot = 2, .n_queries = 2, .pairs = { 0, 1, 2, 3 } };
    int df, dq;
    int len = pack_plan(d, &ex, PACK_TREE, 1000, &df, &dq);
    Batch b;
    batch_alloc(&b, 4, 1000, 7, 512);
    batch_reset(&b, 1, len, pack_segments(&ex, PACK_TREE));
    PackedAnswers ans;
    pack_write(d, &ex, PACK_TREE, &b, 0, &ans);
    char text[4000], want[4000], part[3][64];
    tok_decode(NULL, b.tokens, len, text, sizeof text, 1);
    /* build the expected rendering from the raw spans */
    int n = snprintf(want, sizeof want, "<|bos|>");
    for (int i = 0; i < 4; i++) {
        int64_t p = ex.pairs[i];
        const int64_t *sp[3] = { d->prompt + 2 * p, d->chosen + 2 * p, d->rejected + 2 * p };
        for (int k = 0; k < 3; k++) {
            tok_decode(NULL, d->tokens + sp[k][0], sp[k][1], part[k], sizeof part[k], 1);
        }
        if (i < 2)
            n += snprintf(want + n, sizeof want - n, "<|example|><|question|>%s<|preferred|>%s<|dispreferred|>%s",
                          part[0], part[1], part[2]);
        else
            n += snprintf(want + n, sizeof want - n, "<|task|><|question|>%s<|preferred|>%s<|eos|>%s<|eos|>",
                          part[0], part[1], part[2]);
    }
    check(!strcmp(text, want), "tree row renders FSPO's layout", "%.120s...", text);
    int ntg = 0;
    for (int j = 0; j < 2; j++) {
        int64_t p = ex.pairs[2 + j];
        ntg += (int)(d->chosen[2 * p + 1] + d->rejected[2 * p + 1] + 2);
    }
    check(b.n_targets == ntg && ans.n_answers == 4 && ans.first[4] == ntg, "one target per answer token incl. EOS",
          "%d targets", b.n_targets);
    /* truncation: a budget that fits one few-shot pair drops the other; answers are never cut */
    MetaExample t = ex;
    int budget = len - (int)(4 + d->prompt[2 * 1 + 1] + d->chosen[2 * 1 + 1] + d->rejected[2 * 1 + 1]);
    int l2 = pack_plan(d, &t, PACK_TREE, budget, &df, &dq);
    check(l2 == budget && t.n_fewshot == 1 && t.n_queries == 2 && df == 1 && dq == 0 && t.pairs[1] == 2 &&
              t.pairs[2] == 3,
          "truncation drops few-shot pairs first", "len %d, N %d, Q %d", l2, t.n_fewshot, t.n_queries);
    t = ex;
    l2 = pack_plan(d, &t, PACK_TREE, 30, &df, &dq);
    check(t.n_fewshot == 0 && (l2 == -1 || l2 <= 30) && (l2 != -1 || t.n_queries == 1), "truncation then drops "
                                                                                          "queries, or gives up",
          "len %d, N %d, Q %d, dropped %d + %d", l2, t.n_fewshot, t.n_queries, df, dq);
    batch_free(&b);
}

/* ---- losses: values at known points and gradients by finite differences ---- */
static double loss_at(const LossConfig *c, float *logp, const double *ref, const PackedAnswers *ans)
{
    float dl[16] = { 0 };
    return pref_loss(c, logp, ref, ans, 2.0, dl, NULL);
}

/* A tokenizer whose structure tokens are not at 256..263: the 256 bytes
 * (id = byte value), one merge ("ab", id 256), then the eight structure
 * tokens added after the vocabulary (ids 257..264, in reverse order of
 * TOK_BOS...). A row packed with it must be the byte tokenizer's row with
 * each structure token replaced by that tokenizer's id, token for token. */
static void test_other_special_ids(const Dataset *bytes_data)
{
    BpeToken vocab[257];
    char text[257][4];
    for (int b = 0; b < 256; b++) {
        char c = (char)b;
        vocab[b] = (BpeToken){ text[b], bpe_byte_level(&c, 1, text[b]), b };
    }
    vocab[256] = (BpeToken){ "ab", 2, 256 };
    BpeMerge merge = { "a", "b", 1, 1 };
    BpeAdded added[8];
    for (int k = 0; k < 8; k++) {
        const char *name = tok_special_name(TOK_USER_DESC - k); /* reverse order */
        added[k] = (BpeAdded){ name, strlen(name), 257 + k, 1, 0 };
    }
    BpeSpec spec = { vocab, 257, &merge, 1, added, 8, 0 };
    char err[256];
    Bpe *b = bpe_build(&spec, err, sizeof err);
    Tokenizer t;
    int rc = b ? tok_init_bpe(&t, b, strdup("{}"), err, sizeof err) : -1;
    check(rc == 0 && tok_id(&t, TOK_BOS) == 264 && tok_id(&t, TOK_USER_DESC) == 257, "a tokenizer with structure tokens "
          "at 257..264", "%s", rc ? err : "");
    if (rc != 0) return;
    Dataset d = *bytes_data; /* the same ids: texts of bytes 32..121 are their own ids in both */
    d.tok = t;
    static const int32_t desc[] = { 'l', 'i', 'k', 'e', 's' };
    MetaExample ex = { .user = 0, .n_fewshot = 2, .n_queries = 2, .pairs = { 0, 1, 2, 3 }, .desc = desc, .desc_len = 5 };
    Batch x, y;
    batch_alloc(&x, 1, 600, 7, 600), batch_alloc(&y, 1, 600, 7, 600);
    int df, dq, len = pack_plan(bytes_data, &ex, PACK_TREE, 600, &df, &dq);
    batch_reset(&x, 1, len, pack_segments(&ex, PACK_TREE)), batch_reset(&y, 1, len, pack_segments(&ex, PACK_TREE));
    PackedAnswers ax, ay;
    pack_write_context_targets(bytes_data, &ex, PACK_TREE, &x, 0, &ax);
    pack_write_context_targets(&d, &ex, PACK_TREE, &y, 0, &ay);
    int same = ax.n_answers == ay.n_answers && x.n_targets == y.n_targets, structure = 0;
    for (int i = 0; i < len && same; i++) {
        int32_t want = x.tokens[i] >= TOK_BOS ? tok_id(&t, x.tokens[i]) : x.tokens[i];
        structure += x.tokens[i] >= TOK_BOS;
        same = y.tokens[i] == want && y.pos[i] == x.pos[i] && y.seg[i] == x.seg[i];
    }
    for (int k = 0; k < x.n_targets && same; k++) {
        int32_t want = x.targets[k].token >= TOK_BOS ? tok_id(&t, x.targets[k].token) : x.targets[k].token;
        same = y.targets[k].token == want && y.targets[k].index == x.targets[k].index;
    }
    char err2[256];
    check(same && structure > 10 && batch_validate(&y, 265, 600, err2, sizeof err2) == 0,
          "packing with structure tokens at other ids: the byte row with those ids substituted",
          "%d tokens, %d structure tokens, %d targets (EOS targets too)", len, structure, y.n_targets);
    d.tok = (Tokenizer){ 0 };
    tok_free(&t);
    batch_free(&x), batch_free(&y);
}

static void test_losses(void)
{
    PackedAnswers ans = { .n_answers = 4, .first = { 0, 3, 5, 9, 12 } };
    float logp[12] = { -1.0f, -0.5f, -2.0f, -1.5f, -0.7f, -0.2f, -3.0f, -1.1f, -0.9f, -0.4f, -2.2f, -0.6f };
    double ref[4] = { -4.0, -2.5, -5.5, -3.0 };
    static const char *names[5] = { "dpo", "ipo", "cdpo", "simpo", "hinge" };
    for (int type = 0; type < 5; type++) {
        LossConfig c = { .type = type, .beta = 0.3, .label_smoothing = 0.1, .simpo_gamma = 0.5, .sft_weight = 0.2 };
        float dl[12] = { 0 };
        pref_loss(&c, logp, type == LOSS_SIMPO ? NULL : ref, &ans, 2.0, dl, NULL);
        double worst = 0;
        for (int k = 0; k < 12; k++) {
            float x = logp[k];
            logp[k] = x + 1e-3f;
            double up = loss_at(&c, logp, type == LOSS_SIMPO ? NULL : ref, &ans);
            logp[k] = x - 1e-3f;
            double dn = loss_at(&c, logp, type == LOSS_SIMPO ? NULL : ref, &ans);
            logp[k] = x;
            worst = fmax(worst, fabs((up - dn) / 2e-3 - dl[k]));
        }
        char label[64];
        snprintf(label, sizeof label, "%s loss gradient", names[type]);
        check(worst < 1e-3, label, "max abs err vs finite differences %.1e", worst);
    }
    /* DPO at zero margin is log 2 per pair; IPO at zero margin is (1/(2 beta))^2 */
    PackedAnswers one = { .n_answers = 2, .first = { 0, 1, 2 } };
    float lp[2] = { -1.0f, -2.0f };
    double r0[2] = { -1.0, -2.0 };
    float dl[2] = { 0 };
    LossConfig dpo = { .type = LOSS_DPO, .beta = 0.1 }, ipo = { .type = LOSS_IPO, .beta = 0.1 };
    double vd = pref_loss(&dpo, lp, r0, &one, 1.0, dl, NULL), vi = pref_loss(&ipo, lp, r0, &one, 1.0, dl, NULL);
    check(fabs(vd - log(2.0)) < 1e-12 && fabs(vi - 25.0) < 1e-9, "loss values at zero margin", "dpo %.6f (log 2), "
                                                                                               "ipo %.6f (25)",
          vd, vi);
    LossStats st = { 0 };
    float lp2[2] = { -1.0f, -3.0f };
    memset(dl, 0, sizeof dl);
    pref_loss(&dpo, lp2, r0, &one, 1.0, dl, &st);
    check(st.pairs == 1 && st.reward_accuracy == 1 && fabs(st.reward_margin - 0.1) < 1e-9 &&
              fabs(st.reward_rejected + 0.1) < 1e-9,
          "reward statistics", "margin %.3f, accuracy %.0f", st.reward_margin, st.reward_accuracy);
    check(!strcmp(LOSS_TYPE_NAMES[LOSS_SIMPO], "simpo") && !strcmp(LOSS_TYPE_NAMES[LOSS_HINGE], "hinge") &&
              LOSS_TYPE_NAMES[LOSS_HINGE + 1] == NULL,
          "loss names in LossType order", "ok");
}

int main(int argc, char **argv)
{
    Dataset d;
    /* test_pack --write-dataset PATH USERS PAIRS: a random dataset file for the train tests */
    if (argc == 5 && !strcmp(argv[1], "--write-dataset")) {
        make_dataset(&d, atoi(argv[3]), atoi(argv[4]), 11);
        d.user_ids = malloc(sizeof(char *) * d.n_users);
        for (int64_t u = 0; u < d.n_users; u++) {
            d.user_ids[u] = malloc(24);
            snprintf(d.user_ids[u], 24, "u%lld", (long long)u);
        }
        char err[512];
        int rc = dataset_write(argv[2], &d, err, sizeof err);
        if (rc) fprintf(stderr, "%s\n", err);
        for (int64_t u = 0; u < d.n_users; u++) free(d.user_ids[u]);
        free(d.user_ids);
        free_dataset(&d);
        return rc ? 1 : 0;
    }
    make_dataset(&d, 6, 12, 3);
    test_sampler(&d);
    test_sampler_splits();
    test_packing_equivalence(&d);
    test_context_targets(&d);
    test_desc_targets(&d);
    test_layout_and_truncation(&d);
    test_other_special_ids(&d);
    test_losses();
    free_dataset(&d);
    return check_status();
}
