/* `fspo eval CFG.yaml --ckpt FILE [--split S] [--json OUT.json] [--truth FILE] [--set ...]`:
 * the table on the terminal, the same numbers as JSON (scripts/plot.sh
 * draws them). The JSON is printed by hand: only io/ may link jansson,
 * and this is a fixed, flat shape. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <errno.h>
#include <string.h>

#include "io/config.h"
#include "src/cli/cli.h"
#include "src/cli/commands.h"
#include "src/eval.h"
#include "src/synth.h"
#include "src/threads.h"
#include "src/util.h"

static void usage(void)
{
    printf("usage: fspo eval CFG.yaml --ckpt FILE [--split validation|test] [--json OUT.json] [--truth FILE]\n"
           "                 [--set section.key=value]...\n\n"
           "Scores a checkpoint on the validation or test users of data.path (eval.split;\n"
           "never trained on: choose settings on validation, score test once per finished\n"
           "design). For each N in eval.n_fewshot, with the same %s query pairs per user\n"
           "at every N:\n"
           "  model        few-shot preference accuracy: the fraction of query pairs whose implicit\n"
           "               reward margin beta*[(logpi - logpi_ref)(chosen) - (...)(rejected)] is > 0\n"
           "               (reference loss.ref_ckpt; without one, the plain log-prob margin)\n"
           "  model_plain  the policy's plain log-prob margin logpi(chosen) - logpi(rejected) > 0\n"
           "  sft_plain    the same for eval.sft_ckpt (default loss.ref_ckpt) with the same context\n"
           "  pooled       the implicit margin of eval.pooled_ckpt (trained without context), no context\n"
           "  linear       PReF-style baseline: a ridge Bradley-Terry fit on the scorer's attribute\n"
           "               differences of the same N context pairs (N = 0: no data, a coin flip)\n"
           "  bayes        the user's true weights from the truth file (the best any method can do)\n"
           "  gap closed   (model - pooled) / (bayes - pooled), n/a when bayes - pooled < %.2f\n"
           "A margin of exactly 0 counts 1/2. 95%% CIs: eval.bootstrap resamples of users.\n"
           "Then generation win rates at the largest N, answers scored with the user's true\n"
           "reward r_u, win = P(method > baseline) + P(tie)/2, the same seed per prompt for all:\n"
           "  head to head  the policy (the user's pairs in context) vs eval.sft_ckpt with the same\n"
           "                context, and vs the pooled model without context\n"
           "  vs the anchor with eval.anchor_ckpt (a non-personalizing model, shown no context):\n"
           "                the policy, the SFT model (with context), the pooled model, and the oracle\n"
           "                (the user's ideal answer rendered by fspo synth: the attributes with\n"
           "                w_u > 0 among those the data varies), whose win rate is the ceiling;\n"
           "                each also as a fraction of the ceiling\n"
           "eval.user_desc (models trained with data.user_desc: cot) puts a user description\n"
           "after the N pairs: oracle = the user's true one (the upper bound); generated = the\n"
           "policy writes it (greedy) and answers with it, and its description accuracy is\n"
           "reported: the text read back into (attribute, sign) pairs against the truth file.\n\n"
           "  --ckpt FILE     the checkpoint to evaluate (or a Hugging Face Llama directory, docs/interop.md)\n"
           "  --split S       validation or test: the users evaluated (= --set eval.split=S)\n"
           "  --json OUT      also write every number as JSON (scripts/plot.sh OUT draws it)\n"
           "  --truth FILE    ground truth of fspo synth (default: the dataset's source file\n"
           "                  with .jsonl -> .truth.jsonl, or that name next to data.path);\n"
           "                  without it the bayes column and the win rates are skipped\n"
           "  --set k=v       override a config key (e.g. --set eval.max_users=20)\n"
           "  --quiet         no progress line\n",
           "8", EVAL_GAP_MIN);
}

/* ---- the terminal table ---- */

static void print_ci(const EvalCI *c) { printf("  %.3f [%.3f,%.3f]", c->mean, c->lo, c->hi); }

static void print_desc_mode(const EvalReport *r)
{
    if (r->user_desc == EVAL_DESC_ORACLE) printf("  user description in context: oracle (each user's true description)\n");
    else if (r->user_desc == EVAL_DESC_GENERATED)
        printf("  user description in context: generated (the policy writes it after the N pairs, greedy, at most %d "
               "tokens)\n", r->desc_max_tokens);
}

/* Description accuracy per N (eval.user_desc generated). */
static void print_desc(const EvalReport *r)
{
    int last = -1;
    for (int i = 0; i < r->n_rows; i++)
        if (r->desc[i].valid) last = i;
    if (last < 0) return;
    printf("  description accuracy (95%% CI over users): exact = every attribute's sign right; active = the user's\n"
           "  active attributes named with their sign; attributes = all %d attributes' states (named +/-, or not)\n",
           SYNTH_K);
    printf("   N users parsed  %-19s  %-19s  %-19s\n", "exact", "active", "attributes");
    for (int i = 0; i < r->n_rows; i++) {
        const EvalDesc *d = &r->desc[i];
        if (!d->valid) continue;
        printf("%4d %5d %6.2f ", d->n_fewshot, d->users, d->parsed);
        print_ci(&d->exact), print_ci(&d->active_sign), print_ci(&d->attributes);
        printf("\n");
    }
    const EvalDesc *d = &r->desc[last];
    printf("  e.g. N = %d, user %s wrote \"%s\" (true: \"%s\")\n", d->n_fewshot, d->example_user, d->example,
           d->example_truth);
}

static void print_cell(const EvalMethod *m)
{
    if (!m->valid) printf("  %-19s", "-");
    else printf("  %.3f [%.3f,%.3f]", m->ci.mean, m->ci.lo, m->ci.hi);
}

static void print_gap(const EvalRow *row)
{
    if (row->gap_state == 0) printf("  %-19s", "-");
    else if (row->gap_state < 0) printf("  %-19s", "n/a");
    else printf("  %.3f [%.3f,%.3f]", row->gap_closed.mean, row->gap_closed.lo, row->gap_closed.hi);
}

static void print_win(const EvalWin *w)
{
    if (!w->valid) return;
    printf("win rate vs %-6s at N = %d: %.3f [%.3f,%.3f]  (%d samples, %d users; mean r_u policy %.2f vs %.2f; "
           "ties %.0f%%; %.0f tok/s)\n",
           w->baseline, w->n_fewshot, w->win.mean, w->win.lo, w->win.hi, w->samples, w->users, w->reward_policy,
           w->reward_baseline, 100 * w->tie_frac, w->tokens_per_sec);
}

static void print_attrs(unsigned mask)
{
    int any = 0;
    for (int k = 0; k < SYNTH_K; k++)
        if ((mask >> k) & 1u) printf("%s%s", any++ ? ", " : "", synth_attr_names[k]);
    if (!any) printf("none");
}

static void print_anchor(const EvalReport *r)
{
    const EvalWin *first = NULL;
    for (int k = 0; k < EVAL_N_WIN && !first; k++)
        if (r->win_anchor[k].valid) first = &r->win_anchor[k];
    if (!first) return;
    static const char *const label[EVAL_N_WIN] = { "FSPO policy", "SFT (Pref-FT)", "pooled", "oracle" };
    printf("win rates vs the anchor %s (no context): %d samples, %d users; the oracle's is the ceiling\n",
           r->anchor_path, first->samples, first->users);
    printf("  %-14s %-7s %-21s %-22s %-5s %s\n", "method", "context", "win [95% CI]", "mean r_u method/anchor",
           "ties", "win/ceiling [95% CI]");
    for (int k = 0; k < EVAL_N_WIN; k++) {
        const EvalWin *w = &r->win_anchor[k];
        if (!w->valid) continue;
        char ctx[16], ratio[40];
        if (k == EVAL_WIN_ORACLE) snprintf(ctx, sizeof ctx, "w_u");
        else snprintf(ctx, sizeof ctx, "N = %d", w->n_fewshot);
        if (isnan(w->of_ceiling.mean)) snprintf(ratio, sizeof ratio, "-");
        else if (k == EVAL_WIN_ORACLE) snprintf(ratio, sizeof ratio, "1 (the ceiling)");
        else snprintf(ratio, sizeof ratio, "%.3f [%.3f,%.3f]", w->of_ceiling.mean, w->of_ceiling.lo, w->of_ceiling.hi);
        printf("  %-14s %-7s %.3f [%.3f,%.3f]  %6.2f / %-13.2f %3.0f%%  %s\n", label[k], ctx, w->win.mean, w->win.lo,
               w->win.hi, w->reward_policy, w->reward_baseline, 100 * w->tie_frac, ratio);
    }
    if (r->win_anchor[EVAL_WIN_ORACLE].valid) {
        printf("  oracle: the attributes with w_u > 0 among those the data varies (");
        print_attrs(r->oracle_varied);
        printf(")");
        if (r->oracle_fixed_on) printf(", plus those every answer has ("), print_attrs(r->oracle_fixed_on), printf(")");
        printf("\n");
    }
}

static void print_table(const EvalReport *r, const char *ckpt, const char *split)
{
    printf("\neval: %s on %d %s users x up to 8 query pairs (%.0f s)\n", ckpt, r->evaluated_users, split, r->seconds);
    printf("  reference %s; SFT %s; truth %s\n", r->ref_path[0] ? r->ref_path : "(none)",
           r->sft_path[0] ? r->sft_path : "(none)", r->truth_path[0] ? r->truth_path : "(none)");
    print_desc_mode(r);
    printf("  accuracy (95%% CI over users)\n");
    static const int learned[] = { EVAL_MODEL, EVAL_MODEL_PLAIN, EVAL_SFT_PLAIN, EVAL_POOLED },
                     oracles[] = { EVAL_LINEAR, EVAL_BAYES };
    printf("   N users   %-19s  %-19s  %-19s  %-19s\n", "model", "model log-prob", "SFT log-prob", "pooled");
    for (int i = 0; i < r->n_rows; i++) {
        const EvalRow *row = &r->rows[i];
        printf("%4d %5d ", row->n_fewshot, row->users);
        for (size_t m = 0; m < sizeof learned / sizeof *learned; m++) print_cell(&row->m[learned[m]]);
        printf("\n");
    }
    printf("   N users   %-19s  %-19s  %-19s\n", "linear (PReF)", "bayes-optimal", "gap closed");
    for (int i = 0; i < r->n_rows; i++) {
        const EvalRow *row = &r->rows[i];
        printf("%4d %5d ", row->n_fewshot, row->users);
        for (size_t m = 0; m < sizeof oracles / sizeof *oracles; m++) print_cell(&row->m[oracles[m]]);
        print_gap(row);
        printf("\n");
    }
    printf("  gap closed = (model - pooled) / (bayes - pooled): the share of what the user's data can add that the model gets\n");
    print_desc(r);
    print_win(&r->win_sft);
    print_win(&r->win_pooled);
    print_anchor(r);
    for (int i = 0; i < r->n_notes; i++) printf("note: %s\n", r->notes[i]);
}

/* ---- JSON ---- */

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') fprintf(f, "\\%c", *p);
        else if (*p < 0x20) fprintf(f, "\\u%04x", *p);
        else fputc(*p, f);
    }
    fputc('"', f);
}

static void json_num(FILE *f, double x)
{
    if (isfinite(x)) fprintf(f, "%.6g", x);
    else fputs("null", f);
}

static void json_ci(FILE *f, const EvalCI *c)
{
    fputs("{\"mean\": ", f), json_num(f, c->mean);
    fputs(", \"lo\": ", f), json_num(f, c->lo);
    fputs(", \"hi\": ", f), json_num(f, c->hi);
    fputs("}", f);
}

/* A CI, or null when it was not computed (NaN). */
static void json_ci_or_null(FILE *f, const EvalCI *c)
{
    if (isnan(c->mean)) fputs("null", f);
    else json_ci(f, c);
}

/* One win rate: reward_policy is the method's mean r_u (the policy's in the head-to-head entries). */
static void json_win(FILE *f, const EvalWin *w)
{
    if (!w->valid) {
        fputs("null", f);
        return;
    }
    fputs("{\"method\": ", f), json_str(f, w->method);
    fputs(", \"baseline\": ", f), json_str(f, w->baseline);
    fprintf(f, ", \"n_fewshot\": %d, \"users\": %d, \"samples\": %d, \"win\": ", w->n_fewshot, w->users, w->samples);
    json_ci(f, &w->win);
    fputs(", \"reward_policy\": ", f), json_num(f, w->reward_policy);
    fputs(", \"reward_baseline\": ", f), json_num(f, w->reward_baseline);
    fputs(", \"tie_frac\": ", f), json_num(f, w->tie_frac);
    fputs(", \"tokens_per_sec\": ", f), json_num(f, w->tokens_per_sec);
    fputs(", \"of_ceiling\": ", f), json_ci_or_null(f, &w->of_ceiling);
    fputs("}", f);
}

static void json_attrs(FILE *f, unsigned mask)
{
    fputs("[", f);
    for (int k = 0, any = 0; k < SYNTH_K; k++)
        if ((mask >> k) & 1u) fputs(any++ ? ", " : "", f), json_str(f, synth_attr_names[k]);
    fputs("]", f);
}

/* The anchor's rows: null without an anchor. */
static void json_anchor(FILE *f, const EvalReport *r)
{
    int any = 0;
    for (int k = 0; k < EVAL_N_WIN; k++) any |= r->win_anchor[k].valid;
    if (!any) {
        fputs("null", f);
        return;
    }
    fputs("{\"anchor_ckpt\": ", f), json_str(f, r->anchor_path);
    fputs(", \"oracle_varied_attrs\": ", f), json_attrs(f, r->oracle_varied);
    fputs(", \"oracle_fixed_attrs\": ", f), json_attrs(f, r->oracle_fixed_on);
    for (int k = 0; k < EVAL_N_WIN; k++) fprintf(f, ",\n  \"%s\": ", eval_win_names[k]), json_win(f, &r->win_anchor[k]);
    fputs("}", f);
}

/* "desc_accuracy": one object per N with generated descriptions scored, or null. */
static void json_desc(FILE *f, const EvalReport *r)
{
    int any = 0;
    for (int i = 0; i < r->n_rows; i++) any |= r->desc[i].valid;
    if (!any) {
        fputs("null", f);
        return;
    }
    fputs("[", f);
    for (int i = 0, first = 1; i < r->n_rows; i++) {
        const EvalDesc *d = &r->desc[i];
        if (!d->valid) continue;
        fprintf(f, "%s\n  {\"n\": %d, \"users\": %d, \"parsed\": ", first ? "" : ",", d->n_fewshot, d->users);
        first = 0;
        json_num(f, d->parsed);
        fputs(", \"truncated\": ", f), json_num(f, d->truncated);
        fputs(", \"mean_tokens\": ", f), json_num(f, d->mean_tokens);
        fputs(", \"exact\": ", f), json_ci(f, &d->exact);
        fputs(", \"active_sign\": ", f), json_ci(f, &d->active_sign);
        fputs(", \"attributes\": ", f), json_ci(f, &d->attributes);
        fputs(", \"per_attribute\": {", f);
        for (int k = 0; k < SYNTH_K; k++) fprintf(f, "%s\"%s\": ", k ? ", " : "", synth_attr_names[k]), json_ci(f, &d->attr[k]);
        fputs("}, \"example\": {\"user\": ", f), json_str(f, d->example_user);
        fputs(", \"text\": ", f), json_str(f, d->example);
        fputs(", \"truth\": ", f), json_str(f, d->example_truth);
        fputs("}}", f);
    }
    fputs("]", f);
}

static int write_json(const char *path, const EvalReport *r, const char *ckpt, const Config *cfg)
{
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) return -1;
    fputs("{\"ckpt\": ", f), json_str(f, ckpt);
    fputs(", \"data\": ", f), json_str(f, cfg->data.path);
    fputs(", \"ref_ckpt\": ", f), json_str(f, r->ref_path);
    fputs(", \"pooled_ckpt\": ", f), json_str(f, r->pooled_path);
    fputs(", \"sft_ckpt\": ", f), json_str(f, r->sft_path);
    fputs(", \"anchor_ckpt\": ", f), json_str(f, r->anchor_path);
    fputs(", \"truth\": ", f), json_str(f, r->truth_path);
    fputs(", \"split\": ", f), json_str(f, EVAL_SPLIT_NAMES[cfg->eval.split]);
    fprintf(f, ", \"beta\": %.6g, \"bootstrap\": %d, \"heldout_users\": %d, \"users\": %d, \"queries_per_user\": %d, "
               "\"seconds\": %.3f,\n \"accuracy\": [",
            cfg->loss.beta, cfg->eval.bootstrap, r->heldout_users, r->evaluated_users, r->queries_per_user, r->seconds);
    for (int i = 0; i < r->n_rows; i++) {
        const EvalRow *row = &r->rows[i];
        fprintf(f, "%s\n  {\"n\": %d, \"users\": %d", i ? "," : "", row->n_fewshot, row->users);
        for (int m = 0; m < EVAL_N_METHODS; m++) {
            fprintf(f, ", \"%s\": ", eval_method_names[m]);
            if (row->m[m].valid) json_ci(f, &row->m[m].ci);
            else fputs("null", f);
        }
        fputs(", \"gap_closed\": ", f);
        if (row->gap_state > 0) json_ci(f, &row->gap_closed);
        else fputs("null", f);
        fputs("}", f);
    }
    fputs("],\n \"user_desc\": ", f), json_str(f, EVAL_DESC_NAMES[r->user_desc]);
    fprintf(f, ", \"desc_max_tokens\": %d, \"desc_accuracy\": ", r->desc_max_tokens);
    json_desc(f, r);
    fputs(",\n \"win_rate_sft\": ", f), json_win(f, &r->win_sft);
    fputs(",\n \"win_rate_pooled\": ", f), json_win(f, &r->win_pooled);
    fputs(",\n \"win_rate_anchor\": ", f), json_anchor(f, r);
    fputs(",\n \"notes\": [", f);
    for (int i = 0; i < r->n_notes; i++) fputs(i ? ", " : "", f), json_str(f, r->notes[i]);
    fputs("]}\n", f);
    if (fclose(f) != 0 || rename(tmp, path) != 0) return -1;
    return 0;
}

int cmd_eval(int argc, char **argv)
{
    const char *path = NULL, *json = NULL, *split = NULL;
    const char *sets[257]; /* the --set overrides, then --split's */
    int n_sets = 0;
    EvalOptions o = { 0 };
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (cli_is_help(a)) {
            usage();
            return EXIT_OK;
        } else if (!strcmp(a, "--set") || !strcmp(a, "--ckpt") || !strcmp(a, "--json") || !strcmp(a, "--truth") ||
                   !strcmp(a, "--split")) {
            if (i + 1 >= argc) fatal(EXIT_USAGE, "eval: %s needs a value (see 'fspo eval --help')", a);
            const char *v = argv[++i];
            if (!strcmp(a, "--ckpt")) o.ckpt = v;
            else if (!strcmp(a, "--json")) json = v;
            else if (!strcmp(a, "--truth")) o.truth = v;
            else if (!strcmp(a, "--split")) split = v;
            else if (n_sets == 256) fatal(EXIT_USAGE, "eval: more than 256 --set overrides");
            else sets[n_sets++] = v;
        } else if (!strcmp(a, "--quiet")) o.quiet = 1;
        else if (a[0] == '-') fatal(EXIT_USAGE, "eval: unknown option '%s' (see 'fspo eval --help')", a);
        else if (path) fatal(EXIT_USAGE, "eval: one config file expected, got '%s' and '%s'", path, a);
        else path = a;
    }
    if (!path || !o.ckpt) fatal(EXIT_USAGE, "eval: usage: fspo eval CFG.yaml --ckpt FILE [--json OUT.json] [--set k=v]...");
    static char split_set[300];
    if (split) { /* after the --set overrides: the flag wins */
        snprintf(split_set, sizeof split_set, "eval.split=%s", split);
        sets[n_sets++] = split_set;
    }
    static Config cfg;
    char err[2048];
    if (config_load(path, sets, n_sets, &cfg, err, sizeof err) != 0) fatal(EXIT_USAGE, "%s", err);
    if (json) {
        /* An eval takes minutes: find out now, not after it, that --json cannot be written. */
        char tmp[4200];
        snprintf(tmp, sizeof tmp, "%s.tmp", json);
        const char *in[] = { path, o.ckpt, o.truth ? o.truth : "", cfg.data.path, cfg.loss.ref_ckpt,
                             cfg.eval.sft_ckpt, cfg.eval.pooled_ckpt, cfg.eval.anchor_ckpt };
        for (size_t k = 0; k < sizeof in / sizeof *in; k++)
            if (in[k][0] && (same_file(json, in[k]) || same_file(tmp, in[k])))
                fatal(EXIT_USAGE, "eval: --json %s would overwrite %s, an input of this eval: choose another name", json,
                      in[k]);
        FILE *f = fopen(tmp, "w");
        if (!f) fatal(EXIT_USAGE, "eval: --json %s: cannot create %s: %s", json, tmp, strerror(errno));
        fclose(f);
        remove(tmp);
    }
    /* mpi.threads_per_rank as fspo train takes it (0: every core): the
     * forwards' products and loops run on the pool */
    char why[64];
    int threads = threads_per_rank(cfg.mpi.threads_per_rank, 1, 0, why, sizeof why);
    threads_use(threads);
    if (!o.quiet) printf("eval: %d thread(s) (%s)\n", threads, why);
    static EvalReport rep;
    int code = eval_run(&cfg, &o, &rep, err, sizeof err);
    if (code != 0) fatal(code, "eval: %s", err);
    print_table(&rep, o.ckpt, EVAL_SPLIT_NAMES[cfg.eval.split]);
    int scored = 0; /* users scored at some N */
    for (int i = 0; i < rep.n_rows; i++) scored = rep.rows[i].users > scored ? rep.rows[i].users : scored;
    if (scored == 0)
        fatal(EXIT_USAGE, "eval: no user was evaluated (%d %s users, %d picked; none has a context of N pairs plus a "
                          "query that fits the model's max_seq at any N of eval.n_fewshot): nothing to report%s",
              rep.heldout_users, EVAL_SPLIT_NAMES[cfg.eval.split], rep.evaluated_users, json ? ", no JSON written" : "");
    if (json) {
        if (write_json(json, &rep, o.ckpt, &cfg) != 0) fatal(EXIT_RUNTIME, "eval: cannot write %s", json);
        printf("eval: wrote %s (plots: bash scripts/plot.sh %s)\n", json, json);
    }
    return EXIT_OK;
}
