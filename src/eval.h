/* eval: few-shot personalization scored on held-out users (`fspo eval`).
 *
 * For every held-out user the evaluation draws, once, a pool of few-shot
 * pairs and Q query pairs (disjoint); N = 0, 1, 2, ... uses the first N
 * pool pairs as context and always the same queries, so the accuracy-vs-N
 * curve compares like with like. Each method scores every query pair:
 *   model        implicit reward margin beta*[(logpi - logpi_ref)(chosen) - (...)(rejected)]
 *                (plain log-prob margin without a reference), FSPO's "reward accuracy"
 *   model_plain  the policy's plain log-prob margin logpi(chosen) - logpi(rejected)
 *   sft_plain    the same for the SFT model trained with context (eval.sft_ckpt,
 *                default loss.ref_ckpt), shown the same context
 *   pooled       the implicit margin of a model trained without context, shown no context
 *   linear       PReF-style: a ridge-regularized Bradley-Terry fit of the scorer's
 *                attribute differences a(chosen) - a(rejected) of the N context pairs
 *   bayes        the user's true weights w_u: r_u(chosen) - r_u(rejected)
 * A score > 0 counts 1, exactly 0 counts 1/2 (a coin flip: the linear
 * baseline at N = 0, or a policy equal to its reference), < 0 counts 0.
 * Accuracies are sums over users' queries; 95% CIs resample users. Per N,
 * the fraction of the pooled -> Bayes gap the model closes.
 *
 * Generation (at the largest N any user fits, 2 prompts per user): answers
 * of the policy (N pairs in context), the SFT model (same context), the
 * pooled model and the anchor (eval.anchor_ckpt; both no context), and the
 * oracle's ideal answer, all scored with r_u = w_u . a(y). Head to head:
 * policy vs SFT, policy vs pooled; with an anchor, every method vs the
 * anchor, the oracle's win rate being the ceiling.
 *
 * eval.user_desc puts a user description into the model's context C
 * (after the N pairs, as data.user_desc cot trains it): none; oracle, the
 * user's true description from the dataset (the upper bound); generated,
 * the one the policy writes itself (greedy) after the N pairs, scored for
 * description accuracy against the truth file's weights. */
#ifndef FSPO_EVAL_H
#define FSPO_EVAL_H

#include <stddef.h>
#include <stdint.h>

/* The eval section's choices, which Config stores (so they come before
 * config.h, which includes this header for them): eval.split, the users
 * evaluated (io/dataset.h's SPLIT_VALIDATION or SPLIT_TEST), and
 * eval.user_desc, the description in the context. */
typedef enum { EVAL_SPLIT_VALIDATION, EVAL_SPLIT_TEST } EvalSplit;
static const char *const EVAL_SPLIT_NAMES[] = { "validation", "test", NULL };
typedef enum { EVAL_DESC_NONE, EVAL_DESC_ORACLE, EVAL_DESC_GENERATED } EvalDescMode;
static const char *const EVAL_DESC_NAMES[] = { "none", "oracle", "generated", NULL };

#include "io/config.h"
#include "src/batch.h"
#include "src/synth.h"

/* ---- the statistics (pure functions, tested in tests/test_eval.c) ---- */

/* 1 if margin > 0, 1/2 if it is exactly 0, else 0. */
double eval_pair_credit(double margin);

/* beta * ((pc - rc) - (pr - rr)); without a reference (ref NULL) pc - pr.
 * ref = {rc, rr}. */
double eval_margin(double beta, double pc, double pr, const double *ref);

typedef struct {
    double mean, lo, hi; /* point estimate and 95% percentile interval */
} EvalCI;

/* Accuracy sum(hits)/sum(count) over n users, and its percentile bootstrap
 * interval: `resamples` draws of n users with replacement (seeded, so
 * reproducible); the 2.5% and 97.5% quantiles of the resampled ratios
 * (type-1, inverse of the empirical CDF). resamples = 0 gives lo = hi = mean.
 * Users with count 0 weigh nothing. */
EvalCI eval_bootstrap(const double *hits, const double *count, int n, int resamples, uint64_t seed);

/* The linear baseline's fit: w minimizing
 *   sum_i log(1 + exp(-w . x_i)) + (l2 / 2) |w|^2
 * over the n difference vectors x_i = a(chosen_i) - a(rejected_i) (rows of
 * x, d columns, d <= 64), by Newton's method. n = 0 gives w = 0. */
void eval_linear_fit(const double *x, int n, int d, double l2, double *w);
/* The ridge strength fspo eval uses: enough to keep separable data finite. */
#define EVAL_LINEAR_L2 1.0

/* The fraction of the way from B to C that A gets, (A - B) / (C - B), where
 * A = sum(ha) / sum(count) and likewise B (hb; NULL = 0) and C over n users
 * sharing count (the same queries or prompts for all three). The interval
 * is a percentile bootstrap that resamples users jointly for A, B and C
 * (seeded). Undefined (all NaN) when C - B < EVAL_GAP_MIN: no gap to
 * close; resamples whose C - B is below it are left out of the interval
 * and counted in *left_out (may be NULL). */
EvalCI eval_gap_closed(const double *ha, const double *hb, const double *hc, const double *count, int n, int resamples,
                       uint64_t seed, int *left_out);
/* One point of accuracy or win rate: a smaller gap is "n/a". */
#define EVAL_GAP_MIN 0.01

/* ---- win rates ---- */

typedef struct {
    int valid, n_fewshot, users, samples; /* n_fewshot: context pairs the method was shown */
    EvalCI win;                      /* P(method > baseline) + P(tie)/2 */
    double reward_policy, reward_baseline; /* mean r_u of the method's and the baseline's answers */
    double tie_frac, tokens_per_sec;
    char method[32], baseline[CFG_STR];
    EvalCI of_ceiling;               /* win / the oracle's win vs the same baseline (NaN: not computed) */
} EvalWin;

/* Per-user win credits: sample i (rewards ra[i] of the method, rb[i] of
 * the baseline) belongs to user[i] in [0, n_users); hits[u] adds 1 for
 * ra > rb, 1/2 for a tie, and count[u] 1 per sample (both zeroed first). */
void eval_win_tally(const double *ra, const double *rb, const int *user, int n, int n_users, double *hits,
                    double *count);

/* The win rate of n samples as above: users with no sample are left out,
 * the others resampled for the CI (`resamples`, seeded); mean rewards, tie
 * fraction. valid = n > 0. Leaves method, baseline, n_fewshot, tokens_per_sec
 * and of_ceiling to the caller. */
void eval_win_summary(const double *ra, const double *rb, const int *user, int n, int n_users, int resamples,
                      uint64_t seed, EvalWin *out);

/* ---- the oracle policy ---- */

/* The attributes of the user's ideal answer: among the attributes the data
 * varies, exactly those with w > 0 (w = 0, indifference, is off); outside
 * them the data's constant value (fixed_on: attributes every answer has).
 * It maximizes w . a(mask) over every mask that agrees with fixed_on
 * outside `varied`. */
unsigned eval_oracle_mask(const double w[SYNTH_K], unsigned varied, unsigned fixed_on);
/* The ideal answer's text: synth_render of eval_oracle_mask in the user's
 * flavour and wording wd, into out (SYNTH_MAX_RESPONSE bytes); its length. */
size_t eval_oracle_answer(int flavor, const double w[SYNTH_K], unsigned varied, unsigned fixed_on,
                          const SynthWording *wd, char *out);

/* One user's description read back against the truth. The state of
 * attribute k is its sign: sign[k] as synth_parse_description read it
 * from the text; in the truth sign(w_k) if |w_k| >= SYNTH_ACTIVE_MIN, else
 * 0 (the description must not name it). */
typedef struct {
    double exact;               /* 1 if every attribute's state matches */
    double attr[SYNTH_K];       /* 1 if attribute k's state matches */
    double active_hits, active; /* the user's active attributes named with the right sign; how many are active */
} EvalDescScore;
void eval_desc_score(const int sign[SYNTH_K], const double w[SYNTH_K], EvalDescScore *s);

/* ---- the run ---- */

typedef struct {
    int valid;     /* 0: not computed (no checkpoint, no truth file) */
    EvalCI ci;
    double pairs;  /* query pairs scored */
} EvalMethod;

enum { EVAL_MODEL, EVAL_POOLED, EVAL_LINEAR, EVAL_BAYES, EVAL_MODEL_PLAIN, EVAL_SFT_PLAIN, EVAL_N_METHODS };
/* "model", "pooled", "linear", "bayes", "model_plain", "sft_plain": the JSON keys */
extern const char *const eval_method_names[EVAL_N_METHODS];

typedef struct {
    int n_fewshot;
    int users;     /* held-out users whose context of N pairs plus a query fits model.max_seq */
    EvalMethod m[EVAL_N_METHODS];
    /* (model - pooled) / (bayes - pooled): 0 with both columns, 1 computed, -1 n/a (bayes - pooled < EVAL_GAP_MIN) */
    int gap_state;
    EvalCI gap_closed;
} EvalRow;

/* The methods scored against the anchor, in report order. */
enum { EVAL_WIN_POLICY, EVAL_WIN_SFT, EVAL_WIN_POOLED, EVAL_WIN_ORACLE, EVAL_N_WIN };
/* "policy", "sft", "pooled", "oracle" */
extern const char *const eval_win_names[EVAL_N_WIN];

/* Description accuracy at one N (eval.user_desc generated, with a truth file). */
typedef struct {
    int valid, n_fewshot;
    int users;                  /* users with a generated description and a truth record */
    double parsed;              /* fraction of descriptions synth_parse_description reads (the others name nothing) */
    double truncated;           /* fraction cut at the token limit */
    double mean_tokens;
    EvalCI exact;               /* every attribute's state right */
    EvalCI active_sign;         /* the user's active attributes named with their sign (pooled over users) */
    EvalCI attributes;          /* all SYNTH_K attribute states (pooled) */
    EvalCI attr[SYNTH_K];       /* attribute k's state */
    char example_user[32], example[320], example_truth[320]; /* the first user's (non-ASCII bytes as '?') */
} EvalDesc;

typedef struct {
    const char *ckpt;       /* the policy */
    const char *truth;      /* ground truth file, NULL = look next to the dataset's source */
    int quiet;              /* no progress line */
    /* for tests: called with every batch of rows the policy scores, and N */
    void (*on_rows)(void *ctx, const Batch *b, int n_fewshot);
    void *on_rows_ctx;
} EvalOptions;

#define EVAL_MAX_NOTES 16
typedef struct {
    int n_rows;
    EvalRow rows[CFG_LIST];
    EvalDescMode user_desc; /* eval.user_desc */
    int desc_max_tokens;    /* generated: the token limit */
    EvalDesc desc[CFG_LIST]; /* per row of rows[]: generated descriptions' accuracy */
    EvalWin win_sft, win_pooled;       /* head to head: the policy vs SFT (same context), vs pooled */
    EvalWin win_anchor[EVAL_N_WIN];    /* every method vs the anchor; [EVAL_WIN_ORACLE] is the ceiling */
    unsigned oracle_varied, oracle_fixed_on; /* the attributes the data varies / always has */
    int queries_per_user, heldout_users, evaluated_users;
    char truth_path[CFG_STR], ref_path[CFG_STR], sft_path[CFG_STR], pooled_path[CFG_STR], anchor_path[CFG_STR];
    double seconds;
    int n_notes;
    char notes[EVAL_MAX_NOTES][400];
} EvalReport;

/* Runs the whole evaluation. 0, or an exit code (EXIT_USAGE for bad input)
 * with a message in err. */
int eval_run(const Config *cfg, const EvalOptions *o, EvalReport *rep, char *err, size_t errlen);

#endif
