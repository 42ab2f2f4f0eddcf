/* Evaluation and sampling (src/eval.c, src/generate.c, io/jsonl_truth.c):
 * eval_run end to end on a model whose log-probs are set by hand (accuracy
 * 1, 0 and 1/2 by construction), the bootstrap against the exact bootstrap
 * distribution of a Bernoulli mean, the linear baseline against a
 * hand-solved case and its optimality conditions, the gap-closed ratio and
 * the win rate against exact bootstrap distributions of two users, the
 * oracle's ceiling against 1/2 + P(anchor not optimal)/2, the oracle's
 * answer against every attribute mask, the prompt renderer against
 * src/pack.c, and the sampler's determinism and distribution. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/ckpt.h"
#include "io/config.h"
#include "io/dataset.h"
#include "io/jsonl.h"
#include "src/eval.h"
#include "src/generate.h"
#include "src/pack.h"
#include "src/rng.h"
#include "src/synth.h"
#include "src/tokenizer.h"
#include "tests/check.h"

static char dir[256];

/* ---- a dataset where every chosen answer is "a" and every rejected one "b" ---- */

/* user 0 trains, users 1..4 are validation users, 5 and 6 test users
 * whose pairs prefer "b" where the others prefer "a" */
enum { USERS = 7, PAIRS = 12, FIRST_TEST = 5 };

/* Users' descriptions in the dataset (the held-out u4 has none). */
static const char *const user_desc[USERS] = { "no preferences", "prefers: long answers", "dislikes: emoji",
                                              "prefers: short answers", NULL };

static void write_dataset(const char *path, const char *source)
{
    static int32_t tokens[256] = { 'q', '?', 'a', 'b' };
    Dataset d;
    memset(&d, 0, sizeof d);
    d.n_users = USERS, d.n_pairs = USERS * PAIRS, d.n_tokens = 4;
    d.tokens = tokens;
    d.prompt = malloc(sizeof(int64_t) * 2 * d.n_pairs);
    d.chosen = malloc(sizeof(int64_t) * 2 * d.n_pairs);
    d.rejected = malloc(sizeof(int64_t) * 2 * d.n_pairs);
    for (int64_t p = 0; p < d.n_pairs; p++) {
        int swap = p >= FIRST_TEST * PAIRS;
        d.prompt[2 * p] = 0, d.prompt[2 * p + 1] = 2;
        d.chosen[2 * p] = 2 + swap, d.chosen[2 * p + 1] = 1;
        d.rejected[2 * p] = 3 - swap, d.rejected[2 * p + 1] = 1;
    }
    d.user_pairs = malloc(sizeof(int64_t) * 2 * USERS);
    d.user_desc = calloc(2 * USERS, sizeof(int64_t));
    d.user_split = calloc(USERS, 1);
    d.user_ids = malloc(sizeof(char *) * USERS);
    for (int u = 0; u < USERS; u++) {
        d.user_pairs[2 * u] = (int64_t)u * PAIRS, d.user_pairs[2 * u + 1] = PAIRS;
        d.user_split[u] = u == 0 ? SPLIT_TRAIN : u < FIRST_TEST ? SPLIT_VALIDATION : SPLIT_TEST;
        d.user_ids[u] = malloc(16);
        snprintf(d.user_ids[u], 16, "u%d", u);
        if (!user_desc[u]) continue;
        size_t n = strlen(user_desc[u]);
        d.user_desc[2 * u] = d.n_tokens, d.user_desc[2 * u + 1] = (int64_t)n;
        for (size_t k = 0; k < n; k++) tokens[d.n_tokens++] = (uint8_t)user_desc[u][k];
    }
    d.vocab = TOKENIZER_VOCAB;
    snprintf(d.source, sizeof d.source, "%s", source);
    d.val_frac = 0.5, d.test_frac = 0.3;
    char err[512];
    if (dataset_write(path, &d, err, sizeof err) != 0) {
        printf("FAIL: write dataset: %s\n", err);
        exit(1);
    }
    for (int u = 0; u < USERS; u++) free(d.user_ids[u]);
    free(d.user_ids), free(d.prompt), free(d.chosen), free(d.rejected), free(d.user_pairs), free(d.user_desc),
        free(d.user_split);
}

/* Truth for the users: weights that favour "long", which neither "a" nor
 * "b" has, so the Bayes-optimal margin is exactly 0 on every pair. */
static void write_truth(const char *path)
{
    char err[512];
    JsonlWriter *w = jsonl_writer_open(path, err, sizeof err);
    double wt[SYNTH_K] = { 1.0 };
    for (int u = 0; u < USERS; u++) {
        char id[16];
        snprintf(id, sizeof id, "u%d", u);
        UserTruth t = { .user_id = id, .flavor = "reviews", .description = "prefers: long answers", .n_attrs = SYNTH_K,
                        .weights = wt, .attr_names = synth_attr_names, .temperature = 0.1,
                        .scorer_version = SYNTH_SCORER_VERSION };
        jsonl_write_truth(w, &t);
    }
    jsonl_writer_close(w, err, sizeof err);
}

static const ModelConfig shape = { .vocab = TOKENIZER_VOCAB, .d_model = 16, .n_layers = 1, .n_heads = 2, .max_seq = 256 };

/* A model that ignores context: every matrix but the embedding is zero, so
 * the logits at a token are 4 * E[token] . E[next] (rmsnorm of a vector
 * 10 e_0 is 4 e_0). With E[PREFERRED] = E[EOS] = E[favoured] = 10 e_0 and
 * every other row 0, after the query's PREFERRED the favoured answer byte
 * has log-prob -ln 3 and the other about -40: the margin's sign is set. */
static void save_params(const char *name, Model *m, char *path, size_t len)
{
    char sub[300], err[1024];
    snprintf(sub, sizeof sub, "%s/%s", dir, name);
    mkdir(sub, 0777);
    static Config cfg;
    config_defaults(&cfg);
    cfg.model = shape;
    static char yaml[CFG_YAML_MAX];
    config_to_yaml(&cfg, yaml, sizeof yaml);
    CkptMeta meta = { .step = 1 };
    snprintf(meta.stage, sizeof meta.stage, "pref");
    if (ckpt_save(sub, m, NULL, &meta, yaml, 1, path, len, err, sizeof err) != 0) {
        printf("FAIL: save %s: %s\n", name, err);
        exit(1);
    }
    model_free(m);
}

/* Everything zero but the norms' gains (1) and the embedding rows given. */
static Model *embedding_model(const int *rows, const float (*values)[3], int n)
{
    Model *m = model_create(&shape, 0, 1, 1);
    memset(m->params, 0, sizeof(float) * m->n_params);
    int C = shape.d_model;
    for (int k = 0; k < C; k++) m->w.final_norm[k] = 1, m->w.layer[0].attn_norm[k] = 1, m->w.layer[0].mlp_norm[k] = 1;
    for (int i = 0; i < n; i++)
        for (int k = 0; k < 3; k++) m->w.tok_emb[(size_t)rows[i] * C + k] = values[i][k];
    return m;
}

static void save_model(const char *name, int favoured, char *path, size_t len)
{
    int rows[] = { TOK_PREFERRED, TOK_EOS, favoured };
    const float v[3][3] = { { 10 }, { 10 }, { 10 } };
    save_params(name, embedding_model(rows, v, 3), path, len);
}

/* A model that writes the description "x" after USER_DESC: with logits
 * 4 E[cur] . E[next] / rms(E[cur]) * 2.5, after USER_DESC (10 e1) 'x'
 * (20 e1 + 20 e2) scores 80, USER_DESC 40, EOS (100 e2) 0; after 'x'
 * EOS scores 283, 'x' 113. */
static void save_writer_model(const char *name, char *path, size_t len)
{
    int rows[] = { TOK_USER_DESC, 'x', TOK_EOS };
    const float v[3][3] = { { 0, 10, 0 }, { 0, 20, 20 }, { 0, 0, 100 } };
    save_params(name, embedding_model(rows, v, 3), path, len);
}

static void eval_config(Config *c, const char *data)
{
    config_defaults(c);
    c->model = shape;
    snprintf(c->data.path, sizeof c->data.path, "%s", data);
    c->eval.n_fewshot.n = 3;
    c->eval.n_fewshot.v[0] = 0, c->eval.n_fewshot.v[1] = 1, c->eval.n_fewshot.v[2] = 4;
    c->eval.bootstrap = 200;
    c->eval.max_new_tokens = 4;
    c->loss.ref_ckpt[0] = c->eval.sft_ckpt[0] = c->eval.pooled_ckpt[0] = c->eval.anchor_ckpt[0] = '\0';
}

static int all_rows(const EvalReport *r, int method, double want, int users)
{
    int ok = r->n_rows == 3;
    for (int i = 0; i < r->n_rows; i++) {
        const EvalMethod *m = &r->rows[i].m[method];
        ok &= m->valid && m->ci.mean == want && m->ci.lo == want && m->ci.hi == want && r->rows[i].users == users &&
              m->pairs == users * 8;
    }
    return ok;
}

static void test_eval_known_answers(void)
{
    char data[300], src[300], truth[300], good[512], bad[512], err[1024];
    snprintf(data, sizeof data, "%s/data.h5", dir);
    snprintf(src, sizeof src, "%s/users.jsonl", dir);
    snprintf(truth, sizeof truth, "%s/users.truth.jsonl", dir);
    write_dataset(data, src);
    write_truth(truth);
    save_model("good", 'a', good, sizeof good);
    save_model("bad", 'b', bad, sizeof bad);
    static Config c;
    static EvalReport r;
    eval_config(&c, data);
    EvalOptions o = { .ckpt = good, .quiet = 1 };

    int rc = eval_run(&c, &o, &r, err, sizeof err);
    check(rc == 0 && all_rows(&r, EVAL_MODEL, 1.0, 4), "model prefers the chosen answer: accuracy 1 at every N",
          "%s; N=0 %.3f, N=4 %.3f over %d users", rc ? err : "ran", r.rows[0].m[EVAL_MODEL].ci.mean,
          r.rows[2].m[EVAL_MODEL].ci.mean, r.rows[0].users);
    check(rc == 0 && all_rows(&r, EVAL_LINEAR, 0.5, 4) && all_rows(&r, EVAL_BAYES, 0.5, 4),
          "linear and Bayes see no attribute difference: exactly 1/2", "linear %.3f, bayes %.3f, truth %s",
          r.rows[1].m[EVAL_LINEAR].ci.mean, r.rows[1].m[EVAL_BAYES].ci.mean, r.truth_path);
    check(rc == 0 && !strcmp(r.truth_path, truth), "truth file found next to the dataset's source", "%s", r.truth_path);
    check(rc == 0 && !r.rows[0].m[EVAL_POOLED].valid && !r.win_sft.valid, "no pooled or SFT checkpoint: columns empty",
          "%d notes", r.n_notes);

    o.ckpt = bad;
    rc = eval_run(&c, &o, &r, err, sizeof err);
    check(rc == 0 && all_rows(&r, EVAL_MODEL, 0.0, 4), "model prefers the rejected answer: accuracy 0",
          "%s; %.3f", rc ? err : "ran", r.rows[0].m[EVAL_MODEL].ci.mean);

    /* the policy against itself as reference: every margin is exactly 0 */
    snprintf(c.loss.ref_ckpt, sizeof c.loss.ref_ckpt, "%s", bad);
    snprintf(c.eval.pooled_ckpt, sizeof c.eval.pooled_ckpt, "%s", good);
    rc = eval_run(&c, &o, &r, err, sizeof err);
    check(rc == 0 && all_rows(&r, EVAL_MODEL, 0.5, 4), "policy equal to its reference: every margin 0, accuracy 1/2",
          "%s; %.3f", rc ? err : "ran", r.rows[0].m[EVAL_MODEL].ci.mean);
    /* pooled = the "a" model against the "b" reference: margin beta*((-ln3+40) - (-40+ln3)) > 0 */
    check(rc == 0 && all_rows(&r, EVAL_POOLED, 1.0, 4), "pooled column scores the pooled checkpoint",
          "%.3f", r.rows[0].m[EVAL_POOLED].ci.mean);
    check(rc == 0 && r.win_sft.valid && r.win_sft.win.mean == 0.5 && r.win_sft.tie_frac == 1,
          "win rate of a model against itself is 1/2 (all ties)", "%.3f over %d samples",
          r.win_sft.win.mean, r.win_sft.samples);

    c.loss.ref_ckpt[0] = c.eval.pooled_ckpt[0] = '\0';
    o.ckpt = good;
    snprintf(c.eval.pooled_ckpt, sizeof c.eval.pooled_ckpt, "%s/missing.h5", dir);
    rc = eval_run(&c, &o, &r, err, sizeof err);
    check(rc == 2 && strstr(err, "missing.h5"), "a missing pooled checkpoint is a usage error", "%d: %s", rc, err);
    c.eval.pooled_ckpt[0] = '\0';
    char other[300];
    snprintf(other, sizeof other, "%s/other.truth.jsonl", dir);
    FILE *f = fopen(other, "w");
    fprintf(f, "{\"user_id\": \"zz\", \"weights\": [1], \"attr_names\": [\"long\"], \"scorer_version\": 1}\n");
    fclose(f);
    o.truth = other;
    rc = eval_run(&c, &o, &r, err, sizeof err);
    check(rc == 2 && strstr(err, "no record of held-out user"), "a truth file of another dataset is refused", "%s", err);
    o.truth = NULL;
}

/* eval.split picks the users: the default is validation (4 users whose
 * pairs the "a" model gets right), test gives the 2 others (pairs it gets
 * wrong); a truth file with only validation users is enough for
 * validation and names the first test user for test. */
static void test_eval_split(void)
{
    char data[300], good[512], part[300], err[1024];
    snprintf(data, sizeof data, "%s/data.h5", dir);
    snprintf(good, sizeof good, "%s/good/ckpt_1.h5", dir);
    static Config c;
    static EvalReport r;
    eval_config(&c, data);
    EvalOptions o = { .ckpt = good, .quiet = 1 };
    int rc = eval_run(&c, &o, &r, err, sizeof err);
    check(rc == 0 && c.eval.split == EVAL_SPLIT_VALIDATION && r.heldout_users == 4 && all_rows(&r, EVAL_MODEL, 1.0, 4),
          "eval.split validation (the default): the 4 validation users", "%s; %d users, accuracy %.3f",
          rc ? err : EVAL_SPLIT_NAMES[c.eval.split], r.heldout_users, r.rows[0].m[EVAL_MODEL].ci.mean);
    c.eval.split = EVAL_SPLIT_TEST;
    rc = eval_run(&c, &o, &r, err, sizeof err);
    check(rc == 0 && r.heldout_users == 2 && all_rows(&r, EVAL_MODEL, 0.0, 2), "eval.split test: the 2 test users",
          "%s; %d users, accuracy %.3f", rc ? err : "ran", r.heldout_users, r.rows[0].m[EVAL_MODEL].ci.mean);

    snprintf(part, sizeof part, "%s/part.truth.jsonl", dir);
    FILE *f = fopen(part, "w");
    for (int u = 0; u < FIRST_TEST; u++)
        fprintf(f, "{\"user_id\": \"u%d\", \"weights\": [1, 0, 0, 0, 0, 0, 0], \"attr_names\": [\"long\", \"positive\", "
                   "\"formal\", \"enthusiastic\", \"technical\", \"bullets\", \"emoji\"], \"scorer_version\": %d}\n",
                u, SYNTH_SCORER_VERSION);
    fclose(f);
    o.truth = part;
    rc = eval_run(&c, &o, &r, err, sizeof err);
    check(rc == 2 && strstr(err, "no record of held-out user 'u5'"), "eval.split test reads the test users' truth",
          "%s", err);
    c.eval.split = EVAL_SPLIT_VALIDATION;
    rc = eval_run(&c, &o, &r, err, sizeof err);
    check(rc == 0 && r.rows[0].m[EVAL_BAYES].valid, "eval.split validation needs only the validation users' truth",
          "%s", rc ? err : "bayes column computed");
}

/* The new columns and the anchor rows on the same hand-set models: "good"
 * prefers every chosen answer, "bad" every rejected one; no answer has an
 * attribute, so every sample and the oracle's answer score r_u = 0. */
static void test_eval_anchor_known_answers(void)
{
    char data[300], good[512], bad[512], err[1024];
    snprintf(data, sizeof data, "%s/data.h5", dir);
    snprintf(good, sizeof good, "%s/good/ckpt_1.h5", dir);
    snprintf(bad, sizeof bad, "%s/bad/ckpt_1.h5", dir);
    static Config c;
    static EvalReport r;
    eval_config(&c, data);
    EvalOptions o = { .ckpt = bad, .quiet = 1 };
    /* policy "bad" against reference "bad" (SFT = the reference), pooled and anchor "good" */
    snprintf(c.loss.ref_ckpt, sizeof c.loss.ref_ckpt, "%s", bad);
    snprintf(c.eval.pooled_ckpt, sizeof c.eval.pooled_ckpt, "%s", good);
    snprintf(c.eval.anchor_ckpt, sizeof c.eval.anchor_ckpt, "%s", good);
    int rc = eval_run(&c, &o, &r, err, sizeof err);
    check(rc == 0 && all_rows(&r, EVAL_MODEL, 0.5, 4) && all_rows(&r, EVAL_MODEL_PLAIN, 0.0, 4) &&
              all_rows(&r, EVAL_SFT_PLAIN, 0.0, 4) && !strcmp(r.sft_path, bad),
          "plain margins: the policy's and SFT's (= the reference) own preference, implicit 1/2",
          "%s; model %.3f, model_plain %.3f, sft_plain %.3f", rc ? err : "ran", r.rows[0].m[EVAL_MODEL].ci.mean,
          r.rows[0].m[EVAL_MODEL_PLAIN].ci.mean, r.rows[0].m[EVAL_SFT_PLAIN].ci.mean);
    /* Bayes 1/2 is below pooled 1: no gap to close */
    int na = rc == 0;
    for (int i = 0; i < r.n_rows && na; i++) na = r.rows[i].gap_state == -1 && isnan(r.rows[i].gap_closed.mean);
    check(na, "gap closed is n/a when Bayes is not above pooled", "state %d", r.rows[0].gap_state);
    int ties = rc == 0 && r.oracle_varied == 0 && r.oracle_fixed_on == 0;
    for (int k = 0; k < EVAL_N_WIN && ties; k++) {
        const EvalWin *w = &r.win_anchor[k];
        ties = w->valid && w->win.mean == 0.5 && w->tie_frac == 1 && w->samples == 8 && w->users == 4 &&
               w->reward_policy == 0 && w->reward_baseline == 0 && !strcmp(w->baseline, "anchor") &&
               !strcmp(w->method, eval_win_names[k]) && w->of_ceiling.mean == 1;
    }
    check(ties && r.win_anchor[EVAL_WIN_POLICY].n_fewshot == 4 && r.win_anchor[EVAL_WIN_POOLED].n_fewshot == 0,
          "anchor rows: no attribute anywhere, so every method and the oracle tie the anchor (1/2, ceiling 1/2)",
          "policy %.3f, oracle %.3f, ties %.2f, varied %#x", r.win_anchor[0].win.mean,
          r.win_anchor[EVAL_WIN_ORACLE].win.mean, r.win_anchor[0].tie_frac, r.oracle_varied);
    check(rc == 0 && r.win_sft.valid && r.win_pooled.valid && r.win_sft.samples == 8 && r.win_sft.win.mean == 0.5,
          "head-to-head win rates kept beside the anchor's", "vs sft %.3f, vs pooled %.3f", r.win_sft.win.mean,
          r.win_pooled.win.mean);

    /* an SFT checkpoint of its own (not the reference) is scored with the context; no anchor, no anchor rows */
    c.loss.ref_ckpt[0] = c.eval.pooled_ckpt[0] = c.eval.anchor_ckpt[0] = '\0';
    snprintf(c.eval.sft_ckpt, sizeof c.eval.sft_ckpt, "%s", good);
    rc = eval_run(&c, &o, &r, err, sizeof err);
    int none = 1;
    for (int k = 0; k < EVAL_N_WIN; k++) none &= !r.win_anchor[k].valid;
    check(rc == 0 && all_rows(&r, EVAL_SFT_PLAIN, 1.0, 4) && all_rows(&r, EVAL_MODEL_PLAIN, 0.0, 4) &&
              r.rows[0].gap_state == 0 && none && r.win_sft.valid,
          "eval.sft_ckpt apart from the reference: its own column; no anchor, no anchor rows",
          "%s; sft_plain %.3f", rc ? err : "ran", r.rows[1].m[EVAL_SFT_PLAIN].ci.mean);
    snprintf(c.eval.anchor_ckpt, sizeof c.eval.anchor_ckpt, "%s/missing.h5", dir);
    rc = eval_run(&c, &o, &r, err, sizeof err);
    check(rc == 2 && strstr(err, "eval.anchor_ckpt") && strstr(err, "missing.h5"),
          "a missing anchor checkpoint is a usage error naming the key", "%d: %s", rc, err);
}

/* ---- the user description in the context (eval.user_desc) ---- */

/* What the rows' contexts held: checked against the layout built here. */
typedef struct {
    int rows, bad, without, unknown, with[USERS];
    int last_n, last_len, unsorted; /* rows of one N should come longest first */
    char text[64];
} Seen;

static void see_rows(void *ctx, const Batch *b, int n)
{
    Seen *s = ctx;
    static const int32_t pair[] = { TOK_EXAMPLE, TOK_QUESTION, 'q', '?', TOK_PREFERRED, 'a', TOK_DISPREFERRED, 'b' };
    for (int r = 0; r < b->B; r++) {
        const int32_t *t = b->tokens + (size_t)r * b->T;
        int k = 0, ok = t[k++] == TOK_BOS;
        for (int i = 0; i < n; i++)
            for (int j = 0; j < 8; j++) ok &= t[k++] == pair[j];
        if (t[k] == TOK_USER_DESC) {
            int end = k + 1;
            while (end < b->T && t[end] != TOK_EOS) end++;
            int len = end - k - 1, which = -1;
            char text[64] = "";
            for (int j = 0; j < len && j < 63; j++) text[j] = (char)t[k + 1 + j], text[j + 1] = '\0';
            for (int u = 0; u < USERS; u++)
                if (user_desc[u] && !strcmp(text, user_desc[u])) which = u;
            if (which >= 0) s->with[which]++;
            else s->unknown++, snprintf(s->text, sizeof s->text, "%s", text);
            k = end + 1;
        } else
            s->without++;
        ok &= t[k] == TOK_TASK;
        s->rows++, s->bad += !ok;
        int len = b->T;
        while (len > 0 && t[len - 1] == TOK_PAD) len--;
        if (s->rows > 1 && n == s->last_n && len > s->last_len) s->unsorted++;
        s->last_n = n, s->last_len = len;
    }
}

static void test_eval_descriptions(void)
{
    char data[300], good[512], writer[512], err[1024];
    snprintf(data, sizeof data, "%s/data.h5", dir);
    save_model("good2", 'a', good, sizeof good);
    save_writer_model("writer", writer, sizeof writer);
    static Config c;
    static EvalReport r;
    eval_config(&c, data);
    Seen seen = { 0 };
    EvalOptions o = { .ckpt = good, .quiet = 1, .on_rows = see_rows, .on_rows_ctx = &seen };

    int rc = eval_run(&c, &o, &r, err, sizeof err);
    check(rc == 0 && seen.rows > 0 && seen.without == seen.rows && seen.bad == 0 && r.user_desc == EVAL_DESC_NONE,
          "eval.user_desc none: no description in any context", "%d rows", seen.rows);
    memset(&seen, 0, sizeof seen);
    c.eval.user_desc = EVAL_DESC_ORACLE;
    rc = eval_run(&c, &o, &r, err, sizeof err);
    /* users 1..3 have descriptions, u4 none; u0 trains; 3 N values, each user's 8 queries in one row */
    int per_user = seen.with[1] == 3 && seen.with[2] == 3 && seen.with[3] == 3 && seen.with[0] == 0;
    check(rc == 0 && seen.bad == 0 && per_user && seen.without == 3 && seen.unknown == 0 && all_rows(&r, EVAL_MODEL, 1.0, 4),
          "eval.user_desc oracle: C = BOS pairs USER_DESC <the user's true description> EOS, none without one",
          "%s; %d rows: %d/%d/%d with u1/u2/u3's, %d without, %d other, %d malformed", rc ? err : "ran", seen.rows,
          seen.with[1], seen.with[2], seen.with[3], seen.without, seen.unknown, seen.bad);
    int noted = -1;
    for (int i = 0; i < r.n_notes; i++)
        if (strstr(r.notes[i], "eval.user_desc oracle: 1 of 4 users have no description")) noted = i;
    check(rc == 0 && noted >= 0, "oracle: users without a description are noted", "%s",
          noted >= 0 ? r.notes[noted] : "(no such note)");
    /* u1..u4's rows are 21, 15, 22 and 0 description tokens long in the users' order */
    check(rc == 0 && seen.rows == 12 && seen.unsorted == 0,
          "eval scores each N's rows longest first (a batch pads its rows to the longest)", "%d of %d rows longer than the one before",
          seen.unsorted, seen.rows);

    memset(&seen, 0, sizeof seen);
    c.eval.user_desc = EVAL_DESC_GENERATED;
    o.ckpt = writer;
    rc = eval_run(&c, &o, &r, err, sizeof err);
    check(rc == 0 && seen.bad == 0 && seen.unknown == seen.rows && seen.rows == 12 && !strcmp(seen.text, "x"),
          "eval.user_desc generated: C holds what the policy wrote after USER_DESC", "%s; %d rows, '%s'",
          rc ? err : "ran", seen.rows, seen.text);
    /* the truth: 'long' +1, nothing else; "x" names nothing: 6 of 7 attribute states right, no exact match */
    int known = rc == 0 && r.desc_max_tokens == 64;
    for (int i = 0; i < 3 && known; i++) {
        const EvalDesc *d = &r.desc[i];
        known = d->valid && d->users == 4 && d->parsed == 0 && d->mean_tokens == 1 && d->truncated == 0 &&
                d->exact.mean == 0 && d->active_sign.mean == 0 && fabs(d->attributes.mean - 6.0 / 7) < 1e-12 &&
                d->attr[SYNTH_LONG].mean == 0 && d->attr[SYNTH_EMOJI].mean == 1 && !strcmp(d->example, "x") &&
                !strcmp(d->example_truth, "prefers: long answers") && !strcmp(d->example_user, "u1");
    }
    check(known, "description accuracy of a description that names nothing: exact 0, active 0, attributes 6/7",
          "N=0: users %d parsed %.2f exact %.3f active %.3f attributes %.3f, '%s' vs '%s'", r.desc[0].users,
          r.desc[0].parsed, r.desc[0].exact.mean, r.desc[0].active_sign.mean, r.desc[0].attributes.mean,
          r.desc[0].example, r.desc[0].example_truth);
}

static void test_desc_score(void)
{
    double w[SYNTH_K] = { 1, -0.5, 0.1, 0, 0, -0.2, 0 };
    int right[SYNTH_K] = { 1, -1, 0, 0, 0, -1, 0 }, flipped[SYNTH_K] = { 1, 1, 0, 0, 0, -1, 0 },
        extra[SYNTH_K] = { 1, -1, 1, 0, 0, -1, 1 }, none[SYNTH_K] = { 0 };
    EvalDescScore a, b, c, d;
    eval_desc_score(right, w, &a);
    eval_desc_score(flipped, w, &b);
    eval_desc_score(extra, w, &c);
    eval_desc_score(none, w, &d);
    double sa = 0, sb = 0, sc = 0, sd = 0;
    for (int k = 0; k < SYNTH_K; k++) sa += a.attr[k], sb += b.attr[k], sc += c.attr[k], sd += d.attr[k];
    check(a.exact == 1 && sa == 7 && a.active == 3 && a.active_hits == 3, "description score: the truth's own signs",
          "exact %.0f, %g of 7, %g of %g active", a.exact, sa, a.active_hits, a.active);
    check(b.exact == 0 && sb == 6 && b.active_hits == 2 && b.attr[1] == 0, "description score: one sign flipped",
          "%g of 7, %g of %g active", sb, b.active_hits, b.active);
    check(c.exact == 0 && sc == 5 && c.active_hits == 3 && c.attr[2] == 0 && c.attr[6] == 0,
          "description score: naming inactive attributes (|w| < 0.2) is wrong", "%g of 7", sc);
    check(d.exact == 0 && sd == 4 && d.active_hits == 0 && d.active == 3, "description score: naming nothing",
          "%g of 7", sd);
}

/* ---- the truth reader ---- */

static void test_truth_reader(void)
{
    char path[300], err[512];
    snprintf(path, sizeof path, "%s/users.truth.jsonl", dir);
    TruthSet *t = truth_read(path, err, sizeof err);
    const UserTruth *u = t ? truth_find(t, "u3") : NULL;
    check(t && truth_count(t) == USERS && u && u->n_attrs == SYNTH_K && u->weights[0] == 1.0 &&
              !strcmp(u->attr_names[6], "emoji") && u->scorer_version == SYNTH_SCORER_VERSION && !truth_find(t, "u9"),
          "truth file round trip", "%lld users", (long long)truth_count(t));
    truth_free(t);
    snprintf(path, sizeof path, "%s/bad.truth.jsonl", dir);
    FILE *f = fopen(path, "w");
    fprintf(f, "{\"user_id\": \"a\", \"weights\": [1], \"attr_names\": [\"long\"], \"scorer_version\": 1}\n{\"user_id\": \"b\", \"weights\": [1,\n");
    fclose(f);
    t = truth_read(path, err, sizeof err);
    check(!t && strstr(err, "bad.truth.jsonl:2:"), "malformed truth line named by file:line", "%s", err);
    f = fopen(path, "w");
    fprintf(f, "{\"user_id\": \"a\", \"weights\": [1, 2], \"attr_names\": [\"long\"], \"scorer_version\": 1}\n");
    fclose(f);
    t = truth_read(path, err, sizeof err);
    check(!t && strstr(err, "attr_names"), "weights and names must pair up", "%s", err);
}

/* ---- bootstrap ---- */

/* log of the binomial pmf, for the exact bootstrap distribution */
static double log_binom_pmf(int n, int k, double p)
{
    return lgamma(n + 1.0) - lgamma(k + 1.0) - lgamma(n - k + 1.0) + k * log(p) + (n - k) * log1p(-p);
}

/* Type-1 quantile of Binomial(n, p) / n. */
static double binom_quantile(int n, double p, double q)
{
    double cdf = 0;
    for (int k = 0; k <= n; k++) {
        cdf += exp(log_binom_pmf(n, k, p));
        if (cdf >= q - 1e-12) return (double)k / n;
    }
    return 1;
}

static void test_bootstrap(void)
{
    double h2[2] = { 0, 1 }, c2[2] = { 1, 1 };
    EvalCI ci = eval_bootstrap(h2, c2, 2, 4000, 7);
    /* resampled means are 0, 1/2, 1 with probability 1/4, 1/2, 1/4 */
    check(ci.mean == 0.5 && ci.lo == 0 && ci.hi == 1, "two users 0 and 1: CI [0, 1]", "%.3f [%.3f, %.3f]", ci.mean, ci.lo, ci.hi);

    double h3[5] = { 3, 3, 3, 3, 3 }, c3[5] = { 4, 4, 4, 4, 4 };
    ci = eval_bootstrap(h3, c3, 5, 500, 1);
    check(ci.mean == 0.75 && ci.lo == 0.75 && ci.hi == 0.75, "identical users: a point", "%.3f [%.3f, %.3f]", ci.mean,
          ci.lo, ci.hi);

    /* n Bernoulli users: the bootstrap distribution of the mean is exactly
     * Binomial(n, p_hat) / n, whose quantiles we compute directly */
    enum { N = 200 };
    double h[N], c[N];
    Rng r = rng_seed(99, 0);
    int ones = 0;
    for (int i = 0; i < N; i++) h[i] = rng_uniform(&r) < 0.7, c[i] = 1, ones += (int)h[i];
    double p = (double)ones / N;
    ci = eval_bootstrap(h, c, N, 20000, 3);
    double lo = binom_quantile(N, p, 0.025), hi = binom_quantile(N, p, 0.975);
    check(fabs(ci.mean - p) < 1e-12 && fabs(ci.lo - lo) <= 1.0 / N + 1e-12 && fabs(ci.hi - hi) <= 1.0 / N + 1e-12,
          "Bernoulli users: CI equals the exact bootstrap quantiles (within one user)",
          "p %.3f: [%.3f, %.3f] vs exact [%.3f, %.3f]", p, ci.lo, ci.hi, lo, hi);
    EvalCI again = eval_bootstrap(h, c, N, 20000, 3);
    check(again.lo == ci.lo && again.hi == ci.hi, "bootstrap is reproducible for a seed", "[%.4f, %.4f]", again.lo, again.hi);

    /* users weigh by their pairs: a user with no pairs changes nothing */
    double hw[3] = { 2, 0, 0 }, cw[3] = { 4, 2, 0 };
    ci = eval_bootstrap(hw, cw, 3, 0, 1);
    check(fabs(ci.mean - 2.0 / 6) < 1e-12, "accuracy pools pairs over users", "%.4f", ci.mean);
}

/* ---- gap closed, win rates and the ceiling ---- */

static void test_gap_closed(void)
{
    /* two users, 8 queries each: model, pooled, Bayes credits */
    double a[2] = { 6, 8 }, b[2] = { 4, 2 }, c[2] = { 8, 8 }, n[2] = { 8, 8 };
    int left = -1;
    EvalCI ci = eval_gap_closed(a, b, c, n, 2, 4000, 7, &left);
    /* resamples {0,0}: (12-8)/(16-8) = 0.5 (p 1/4); mixed: (14-6)/(16-6) = 0.8 (1/2); {1,1}: 12/12 = 1 (1/4) */
    check(fabs(ci.mean - 0.8) < 1e-12 && ci.lo == 0.5 && ci.hi == 1.0 && left == 0,
          "gap closed: two users, the exact bootstrap distribution's quantiles", "%.3f [%.3f, %.3f], %d left out",
          ci.mean, ci.lo, ci.hi, left);
    double c0[2] = { 4, 2 };
    ci = eval_gap_closed(a, b, c0, n, 2, 1000, 7, &left);
    check(isnan(ci.mean) && isnan(ci.lo) && isnan(ci.hi), "gap closed: Bayes = pooled gives n/a", "%.3f", ci.mean);
    /* user 1 has no gap (b = c): resamples of user 1 alone (p 1/4) are left out */
    double a2[2] = { 6, 3 }, b2[2] = { 4, 5 }, c2[2] = { 8, 5 };
    ci = eval_gap_closed(a2, b2, c2, n, 2, 4000, 7, &left);
    check(ci.mean == 0 && ci.lo == 0 && ci.hi == 0.5 && left > 1000 - 140 && left < 1000 + 140,
          "gap closed: resamples without a gap are left out and counted", "%.3f [%.3f, %.3f], %d of 4000 left out",
          ci.mean, ci.lo, ci.hi, left);
    double h[2] = { 3, 1 }, o[2] = { 4, 4 }, cnt[2] = { 4, 4 };
    ci = eval_gap_closed(h, NULL, o, cnt, 2, 0, 1, NULL);
    check(fabs(ci.mean - 0.5) < 1e-12 && ci.lo == ci.mean, "B = NULL: the plain ratio A / C (win over the ceiling)",
          "%.3f", ci.mean);
}

static void test_win_and_ceiling(void)
{
    /* method vs baseline rewards of 4 samples of users 0 and 1; user 2 has none */
    double ra[4] = { 1, 0, 0, 2 }, rb[4] = { 0, 0, 1, 2 };
    int user[4] = { 0, 0, 1, 1 };
    EvalWin w;
    memset(&w, 0, sizeof w);
    eval_win_summary(ra, rb, user, 4, 3, 4000, 5, &w);
    /* by hand: user 0 wins 1 + 1/2 of 2, user 1 0 + 1/2 of 2; resampled 0.75, 0.5, 0.25 with p 1/4, 1/2, 1/4 */
    check(w.valid && w.samples == 4 && w.users == 2 && w.win.mean == 0.5 && w.win.lo == 0.25 && w.win.hi == 0.75 &&
              w.tie_frac == 0.5 && w.reward_policy == 0.75 && w.reward_baseline == 0.75,
          "win rate by hand: wins, ties count 1/2, users without samples left out", "%.3f [%.3f, %.3f], ties %.2f, %d users",
          w.win.mean, w.win.lo, w.win.hi, w.tie_frac, w.users);

    /* the ceiling: the oracle reaches the best reward r* on every prompt, so
     * it wins 1 - P(the anchor's sample reaches r*)/2 = 1/2 + P(not optimal)/2 */
    enum { S = 9 };
    double best[S] = { 2, 2, 2, 1, 1, 1, 0, 0, 0.5 }, anchor[S] = { 2, 0, -1, 1, 1, 0, -1, 0, 0.5 };
    double method[S] = { 2, 2, 0, 0, 1, 1, 0, -1, 0 };
    int who[S] = { 0, 0, 0, 1, 1, 1, 2, 2, 3 };
    int not_optimal = 0;
    for (int i = 0; i < S; i++) not_optimal += anchor[i] < best[i];
    double formula = 0.5 + 0.5 * not_optimal / S; /* 4 of 9 not optimal: 13/18 */
    EvalWin ceil_w, meth_w;
    memset(&ceil_w, 0, sizeof ceil_w), memset(&meth_w, 0, sizeof meth_w);
    eval_win_summary(best, anchor, who, S, 4, 0, 1, &ceil_w);
    eval_win_summary(method, anchor, who, S, 4, 0, 1, &meth_w);
    check(fabs(ceil_w.win.mean - formula) < 1e-12 && fabs(formula - 13.0 / 18) < 1e-12 &&
              fabs(ceil_w.tie_frac - 5.0 / 9) < 1e-12,
          "oracle vs anchor: win = 1/2 + P(anchor not optimal)/2", "%.4f vs formula %.4f", ceil_w.win.mean, formula);
    /* the method: wins at samples 1, 2, 5, 6, ties at 0, 4, losses at 3, 7, 8: 5/9 */
    double credit = 0;
    for (int i = 0; i < S; i++) credit += method[i] > anchor[i] ? 1 : method[i] == anchor[i] ? 0.5 : 0;
    double hits[4], cnt[4], ho[4], c2[4];
    eval_win_tally(method, anchor, who, S, 4, hits, cnt);
    eval_win_tally(best, anchor, who, S, 4, ho, c2);
    EvalCI ratio = eval_gap_closed(hits, NULL, ho, cnt, 4, 0, 1, NULL);
    check(fabs(meth_w.win.mean - credit / S) < 1e-12 && fabs(ratio.mean - (credit / S) / formula) < 1e-12 &&
              hits[0] == 2.5 && cnt[0] == 3 && hits[3] == 0 && cnt[3] == 1,
          "method vs anchor and its fraction of the ceiling", "win %.4f, of ceiling %.4f", meth_w.win.mean, ratio.mean);
    EvalWin perfect;
    memset(&perfect, 0, sizeof perfect);
    eval_win_summary(best, anchor, who, S, 4, 0, 1, &perfect);
    eval_win_tally(best, anchor, who, S, 4, hits, cnt);
    ratio = eval_gap_closed(hits, NULL, ho, cnt, 4, 0, 1, NULL);
    check(perfect.win.mean == ceil_w.win.mean && ratio.mean == 1, "a perfect policy wins exactly the ceiling",
          "%.4f", ratio.mean);
}

/* The oracle's answer maximizes r_u over every mask the data allows
 * (exhaustively, against synth_reward), and the scorer reads it back. */
static void test_oracle_answer(void)
{
    Rng r = rng_seed(41, 0);
    int trials = 0, bad = 0, reread = 0, zero_on = 0;
    for (int t = 0; t < 300; t++) {
        double w[SYNTH_K];
        for (int k = 0; k < SYNTH_K; k++) {
            int kind = (int)rng_below(&r, 4); /* zero, +-1, or a dense value */
            w[k] = kind == 0 ? 0 : kind == 1 ? (rng_below(&r, 2) ? 1 : -1) : rng_uniform(&r) * 2 - 1;
        }
        unsigned varied = t % 3 == 0 ? SYNTH_ALL_ATTRS : rng_below(&r, 1u << SYNTH_K);
        unsigned fixed_on = t % 5 == 0 ? rng_below(&r, 1u << SYNTH_K) & ~varied : 0;
        int flavor = t % SYNTH_N_FLAVORS;
        SynthWording wd;
        synth_draw_wording(&r, &wd);
        char text[SYNTH_MAX_RESPONSE];
        size_t n = eval_oracle_answer(flavor, w, varied, fixed_on, &wd, text);
        double a[SYNTH_K];
        synth_score(text, n, a);
        unsigned got = synth_attrs_to_mask(a);
        reread += got == eval_oracle_mask(w, varied, fixed_on);
        double r_oracle = synth_reward(w, a), best = -1e300;
        for (unsigned m = 0; m < (1u << SYNTH_K); m++) {
            if ((m & ~varied) != fixed_on) continue; /* outside what the data varies, as the data has it */
            double am[SYNTH_K];
            synth_mask_to_attrs(m, am);
            best = fmax(best, synth_reward(w, am));
        }
        bad += (got & ~varied) != fixed_on || fabs(r_oracle - best) > 1e-12;
        for (int k = 0; k < SYNTH_K; k++) zero_on += w[k] == 0 && ((got & varied) >> k & 1u);
        trials++;
    }
    check(bad == 0 && reread == trials, "oracle answer: the best r_u over every allowed mask (exhaustive), read back exactly",
          "%d of %d trials off, %d read back", bad, trials, reread);
    check(zero_on == 0, "oracle answer: attributes of weight 0 are off", "%d on", zero_on);
}

/* ---- linear baseline ---- */

static double sigmoid(double z) { return 1 / (1 + exp(-z)); }

static void test_linear(void)
{
    double w[SYNTH_K];
    eval_linear_fit(NULL, 0, SYNTH_K, EVAL_LINEAR_L2, w);
    int zero = 1;
    for (int k = 0; k < SYNTH_K; k++) zero &= w[k] == 0;
    check(zero && eval_pair_credit(synth_reward(w, (double[SYNTH_K]){ 1, -1 })) == 0.5, "N = 0: w = 0, a coin flip",
          "credit %.1f", eval_pair_credit(0));

    /* one pair, x = 1, l2 = 1: the optimum solves w = sigmoid(-w); bisection */
    double x1 = 1, w1, a = 0, b = 1;
    for (int i = 0; i < 200; i++) {
        double m = (a + b) / 2;
        if (m - sigmoid(-m) > 0) b = m;
        else a = m;
    }
    eval_linear_fit(&x1, 1, 1, 1.0, &w1);
    check(fabs(w1 - a) < 1e-9, "one pair solved by hand: w = sigmoid(-w)", "%.12f vs %.12f", w1, a);

    /* random pairs: the fit meets the optimality condition (zero gradient) */
    enum { N = 30, D = SYNTH_K };
    double x[N * D], wt[D] = { 1, -1, 0, 0, 0.5, 0, 0 };
    Rng r = rng_seed(5, 0);
    for (int i = 0; i < N; i++) {
        double z = 0;
        for (int k = 0; k < D; k++) x[i * D + k] = (double)rng_below(&r, 3) - 1, z += wt[k] * x[i * D + k];
        if (z < 0)
            for (int k = 0; k < D; k++) x[i * D + k] = -x[i * D + k]; /* chosen is the higher-reward answer */
    }
    eval_linear_fit(x, N, D, 0.3, w);
    double g[D], gmax = 0;
    for (int k = 0; k < D; k++) g[k] = 0.3 * w[k];
    for (int i = 0; i < N; i++) {
        double z = 0;
        for (int k = 0; k < D; k++) z += w[k] * x[i * D + k];
        for (int k = 0; k < D; k++) g[k] -= sigmoid(-z) * x[i * D + k];
    }
    for (int k = 0; k < D; k++) gmax = fmax(gmax, fabs(g[k]));
    check(gmax < 1e-8, "fit has zero gradient (direct computation)", "max |grad| %.2e", gmax);
    int right = 0, n_pos = 0;
    for (int i = 0; i < N; i++) {
        double zt = 0;
        for (int k = 0; k < D; k++) zt += wt[k] * x[i * D + k];
        if (zt == 0) continue; /* no preference: nothing to get right */
        n_pos++;
        right += synth_reward(w, x + i * D) > 0;
    }
    check(right == n_pos, "separable pairs: the fit ranks every training pair right", "%d of %d", right, n_pos);
}

/* ---- margins ---- */

static void test_margin(void)
{
    double ref[2] = { -11, -11 };
    check(eval_margin(0.5, -10, -12, ref) == 1.0 && eval_margin(0.5, -10, -12, NULL) == 2.0 &&
              eval_pair_credit(1e-30) == 1 && eval_pair_credit(0) == 0.5 && eval_pair_credit(-1e-30) == 0,
          "implicit reward margin and credit", "beta*((-10+11)-(-12+11)) = 1");
}

/* ---- sampling ---- */

static void test_render_matches_pack(void)
{
    char data[300], err[512];
    snprintf(data, sizeof data, "%s/data.h5", dir);
    Dataset d;
    if (dataset_read(data, &d, err, sizeof err) != 0) {
        check(0, "render matches pack", "%s", err);
        return;
    }
    MetaExample ex = { .user = 1, .n_fewshot = 3, .n_queries = 1, .pairs = { 12, 13, 14, 15 } };
    Batch b;
    batch_alloc(&b, 2, 256, 1, 64);
    batch_reset(&b, 2, 64, 1);
    PackedAnswers ans;
    pack_write(&d, &ex, PACK_UNSHARED, &b, 0, &ans);
    PairSpans shots[3];
    for (int i = 0; i < 3; i++) {
        int64_t p = ex.pairs[i];
        shots[i] = (PairSpans){ { d.tokens + d.prompt[2 * p], (size_t)d.prompt[2 * p + 1] },
                                { d.tokens + d.chosen[2 * p], (size_t)d.chosen[2 * p + 1] },
                                { d.tokens + d.rejected[2 * p], (size_t)d.rejected[2 * p + 1] } };
    }
    TokSpan q = { d.tokens + d.prompt[2 * 15], (size_t)d.prompt[2 * 15 + 1] };
    int32_t out[256];
    int n = sample_render_prompt(NULL, shots, 3, NULL, q, out, 256);
    /* pack's row is [C P W]: the rendered prompt is C P, W's first token comes next */
    int same = n > 0 && out[n - 1] == TOK_PREFERRED && b.tokens[n] == 'a';
    for (int i = 0; i < n && same; i++) same = out[i] == b.tokens[i];
    check(same, "rendered prompt equals src/pack.c's row up to the answer", "%d tokens", n);
    check(sample_render_prompt(NULL, shots, 3, NULL, q, out, n - 1) == -1 && sample_prompt_len(NULL, shots, 3, NULL, q) == (size_t)n,
          "render refuses a buffer one token short", "needs %d", n);
    /* with a description: the prompt, and the prompt for writing it, against pack's row */
    static const int32_t desc_ids[] = { 'd', 'i', 's', 'l', 'i', 'k', 'e', 's', ':', ' ', 'e', 'm', 'o', 'j', 'i' };
    TokSpan desc = { desc_ids, 15 };
    ex.desc = desc_ids, ex.desc_len = 15;
    batch_reset(&b, 2, 64, 1);
    pack_write(&d, &ex, PACK_UNSHARED, &b, 0, &ans);
    n = sample_render_prompt(NULL, shots, 3, &desc, q, out, 256);
    same = n > 0 && out[n - 1] == TOK_PREFERRED && b.tokens[n] == 'a';
    for (int i = 0; i < n && same; i++) same = out[i] == b.tokens[i];
    int32_t dp[256];
    int nd = sample_render_desc_prompt(NULL, shots, 3, dp, 256), prefix = nd > 0 && dp[nd - 1] == TOK_USER_DESC;
    for (int i = 0; i < nd && prefix; i++) prefix = dp[i] == b.tokens[i];
    check(same && prefix && b.tokens[nd + 15] == TOK_EOS && sample_render_desc_prompt(NULL, shots, 3, dp, nd - 1) == -1,
          "with a description: the prompt, and the one for writing it, equal src/pack.c's row",
          "%d and %d tokens", n, nd);
    batch_free(&b);
    dataset_free(&d);
}

static void test_sample_token(void)
{
    float logits[3] = { 0, (float)log(3.0), -1e9f };
    char scratch[64];
    Rng r = rng_seed(11, 0);
    int ones = 0, draws = 40000;
    for (int i = 0; i < draws; i++) ones += sample_token(logits, 3, 1.0, 1.0, &r, scratch) == 1;
    double f = (double)ones / draws;
    check(fabs(f - 0.75) < 0.01, "temperature 1 follows softmax", "P(token 1) = %.4f, want 0.75", f);
    /* probabilities 0.5, 0.3, 0.2: top_p 0.6 keeps the first two, renormalized to 0.625 / 0.375 */
    float l2[3] = { (float)log(0.5), (float)log(0.3), (float)log(0.2) };
    int cnt[3] = { 0 };
    for (int i = 0; i < draws; i++) cnt[sample_token(l2, 3, 1.0, 0.6, &r, scratch)]++;
    check(cnt[2] == 0 && fabs((double)cnt[0] / draws - 0.625) < 0.01, "top-p keeps the nucleus and renormalizes",
          "%d %d %d", cnt[0], cnt[1], cnt[2]);
    check(sample_token(l2, 3, 0, 1, &r, scratch) == 0 && sample_token(l2, 3, 5.0, 1e-6, &r, scratch) == 0,
          "greedy and a tiny nucleus pick the argmax", "token 0");
}

static void test_generation_determinism(void)
{
    ModelConfig mc = { .vocab = TOKENIZER_VOCAB, .d_model = 32, .n_layers = 2, .n_heads = 4, .max_seq = 128 };
    Model *m = model_create(&mc, 0, 1, 1);
    model_init_weights(m, 4);
    Generator *g = generator_create(m, NULL);
    int32_t prompt[80], a[128], b[128], c[128];
    for (int i = 0; i < 80; i++) prompt[i] = i == 0 ? TOK_BOS : 'a' + i % 26;
    SampleConfig sc = { .temperature = 1.0, .top_p = 1.0, .max_new_tokens = 40 };
    SampleResult ra, rb, rc;
    generate(g, prompt, 80, &sc, 7, a, 128, &ra);
    generate(g, prompt, 80, &sc, 7, b, 128, &rb);
    generate(g, prompt, 80, &sc, 8, c, 128, &rc);
    int same = ra.n_tokens == rb.n_tokens && !memcmp(a, b, sizeof(int32_t) * (size_t)ra.n_tokens);
    int differ = ra.n_tokens != rc.n_tokens || memcmp(a, c, sizeof(int32_t) * (size_t)ra.n_tokens) != 0;
    check(same && ra.n_tokens > 0, "same seed, same tokens", "%d tokens, stop %s", ra.n_tokens, sample_stop_name(ra.stop));
    check(differ, "another seed, other tokens", "%d vs %d tokens", ra.n_tokens, rc.n_tokens);
    /* the cache holds 128 positions: 80 + 48 fed back, plus the one predicted from the last */
    sc.max_new_tokens = 1000;
    generate(g, prompt, 80, &sc, 7, c, 128, &rc);
    int32_t long_prompt[128] = { TOK_BOS };
    SampleResult rfull;
    int rc_full = generate(g, long_prompt, 128, &sc, 7, c, 128, &rfull);
    check(rc.n_tokens == 49 && rc.stop == SAMPLE_STOP_CONTEXT_FULL && rc_full == -1, "generation stops at the context; a full prompt is refused",
          "%d tokens (%s)", rc.n_tokens, sample_stop_name(rc.stop));
    generator_free(g);
    model_free(m);
}

int main(void)
{
    snprintf(dir, sizeof dir, "/tmp/fspo-test-eval.XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_margin();
    test_bootstrap();
    test_linear();
    test_gap_closed();
    test_win_and_ceiling();
    test_oracle_answer();
    test_sample_token();
    test_generation_determinism();
    test_eval_known_answers();
    test_eval_split();
    test_eval_anchor_known_answers();
    test_desc_score();
    test_eval_descriptions();
    test_truth_reader();
    test_render_matches_pack();
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) printf("note: could not remove %s\n", dir);
    return check_status();
}
