/* `fspo synth`: a synthetic preference dataset whose users have known
 * latent rewards (OUT.jsonl + OUT.truth.jsonl), and `fspo synth --score`,
 * the same scorer [eval] uses, for any text. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/jsonl.h"
#include "src/cli/cli.h"
#include "src/cli/commands.h"
#include "src/synth.h"
#include "src/util.h"

static unsigned population_attrs(const SynthConfig *c) { return c->attrs ? c->attrs : SYNTH_ALL_ATTRS; }

/* "a+b, c+d or e+f": the held-out pairs of an interpolated split. */
static size_t put_pairs(const SynthConfig *c, char *out, size_t cap)
{
    size_t n = 0;
    int count = 0, total = 0;
    for (int i = 0; i < SYNTH_MAX_INTERPOLATED; i++) total += c->interpolated_pairs[i] != 0;
    out[0] = '\0';
    for (int i = 0; i < SYNTH_MAX_INTERPOLATED && n < cap; i++) {
        unsigned m = c->interpolated_pairs[i];
        if (!m) continue;
        count++;
        const char *sep = count == 1 ? "" : count == total ? " or " : ", ";
        int a = __builtin_ctz(m), b = 31 - __builtin_clz(m);
        n += (size_t)snprintf(out + n, cap - n, "%s%s+%s", sep, synth_attr_names[a], synth_attr_names[b]);
    }
    return n;
}

/* The rung as the options it fixes: "= --attrs bullets,emoji --active 1 ..."
 * (the same data as --population, bar the truth file's population field
 * and, for a split, the interpolated marks). */
static void population_flags(const SynthPopulation *p, char *out, size_t cap)
{
    const SynthConfig *c = &p->cfg;
    size_t n = (size_t)snprintf(out, cap, "= --attrs");
    const char *sep = " ";
    for (int k = 0; k < SYNTH_K && n < cap; k++)
        if ((population_attrs(c) >> k) & 1u) {
            n += (size_t)snprintf(out + n, cap - n, "%s%s", sep, synth_attr_names[k]);
            sep = ",";
        }
    if (n < cap && c->dirichlet_alpha > 0)
        n += (size_t)snprintf(out + n, cap - n, " --dirichlet %g", c->dirichlet_alpha);
    else if (n < cap)
        n += (size_t)snprintf(out + n, cap - n, " --active %d", c->n_active);
    if (n < cap && c->minimal_pairs) n += (size_t)snprintf(out + n, cap - n, " --minimal-pairs");
    if (n < cap && c->contrastive) n += (size_t)snprintf(out + n, cap - n, " --contrastive");
    if (n < cap) n += (size_t)snprintf(out + n, cap - n, " --noise %g", c->temperature);
    if (n < cap && c->interpolated_pairs[0]) {
        n += (size_t)snprintf(out + n, cap - n,
                              " + interpolated split: test users (\"split\": \"test\") are those whose two "
                              "strongest attributes are ");
        if (n < cap) put_pairs(c, out + n, cap - n);
    }
}

/* text broken into lines of at most 79 columns (a longer word stays whole), each indented. */
static void put_wrapped(FILE *f, const char *text, int indent)
{
    const char *p = text;
    while (*p) {
        int width = 79 - indent, n = (int)strlen(p);
        if (n > width) { /* break before an option or a '+' if one fits, else at any space */
            n = width;
            while (n > 0 && !(p[n] == ' ' && (p[n + 1] == '-' || p[n + 1] == '+'))) n--;
            if (n < width / 2) {
                n = width;
                while (n > 0 && p[n] != ' ') n--;
            }
            if (n == 0) n = (int)strcspn(p, " ");
        }
        fprintf(f, "%*s%.*s\n", indent, "", n, p);
        p += n;
        while (*p == ' ') p++;
    }
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: fspo synth -o OUT.jsonl [options]\n"
            "       fspo synth --score TEXT|-\n\n"
            "Writes a preference dataset of synthetic users with known latent rewards:\n"
            "OUT.jsonl, rows {\"user_id\",\"prompt\",\"chosen\",\"rejected\",\"user_description\"}\n"
            "(the input of 'fspo prep'), and OUT.truth.jsonl, one line per user with its\n"
            "weights w_u, attribute names, label temperature and scorer version ([eval]).\n\n"
            "Each answer has %d binary attributes (long, positive, formal, enthusiastic,\n"
            "technical, bullets, emoji) that a scorer reads back from any text; user u's\n"
            "reward is r_u(y) = w_u . a(y), and a pair's label is a Bradley-Terry draw:\n"
            "P(y1 preferred) = sigmoid((r_u(y1) - r_u(y2)) / T). The two answers of a pair\n"
            "always differ in an attribute the user cares about and never tie in reward.\n"
            "The output is a pure function of the options: same command, same bytes.\n\n"
            "options:\n"
            "  -o OUT.jsonl         output path (required)\n"
            "  --truth FILE         ground-truth path (default: OUT with .jsonl -> .truth.jsonl)\n"
            "  --users N            number of users (default 1500)\n"
            "  --pairs-per-user M   preference pairs per user (default 40)\n"
            "  --flavor F           reviews (movie reviews), elix (explain like I'm X),\n"
            "                       roleplay (persona Q&A), or all (users alternate; default)\n"
            "  --seed S             random seed (default 1)\n"
            "  --noise T            Bradley-Terry temperature T >= 0 (default 0.1: nearly\n"
            "                       deterministic; 0 = always the higher-reward answer)\n"
            "  --active K           sparse users: K attributes with weight +1 or -1 (default 2)\n"
            "  --dirichlet ALPHA    dense users instead: |w| = %g * Dirichlet(ALPHA) with\n"
            "                       random signs (ALPHA in [0.05, 100])\n"
            "  --minimal-pairs      both answers of a pair share their wording, so they differ\n"
            "                       only in attributes\n"
            "  --contrastive        both answers of a pair share the attributes the user is\n"
            "                       indifferent to: they differ only where the user cares\n"
            "  --attrs LIST         the attributes that vary, comma-separated (default: all);\n"
            "                       the others are always off (e.g. without 'long' every\n"
            "                       answer is one sentence: shorter contexts)\n"
            "  --population R       a rung of the benchmark ladder (below): fixes --attrs,\n"
            "                       --active, --dirichlet, --minimal-pairs, --contrastive and\n"
            "                       --noise (giving one of them too is an error); the truth\n"
            "                       file records R\n"
            "  --quiet              no summary or progress\n"
            "  --score TEXT         print the scorer's attribute vector of TEXT ('-' reads\n"
            "                       stdin) and exit; the scorer is the same for every flavour\n\n"
            "populations (docs/populations.md): one-sentence answers, shared wording, and\n"
            "label noise for a Bayes-optimal accuracy (labels agreeing with the higher\n"
            "true reward) of about 0.9:\n",
            SYNTH_K, SYNTH_DENSE_TOTAL);
    for (int i = 0; i < synth_n_populations; i++) {
        const SynthPopulation *p = &synth_populations[i];
        char flags[512];
        population_flags(p, flags, sizeof flags);
        fprintf(f, "  %-3s %s\n", p->name, p->summary);
        put_wrapped(f, flags, 6);
    }
}

/* "emoji,bullets" -> their attribute mask; any unknown or repeated name is a usage error. */
static unsigned parse_attrs(const char *cmd, const char *list)
{
    unsigned mask = 0;
    const char *p = list;
    for (;;) {
        size_t n = strcspn(p, ",");
        int k = 0;
        while (k < SYNTH_K && !(strlen(synth_attr_names[k]) == n && !strncmp(p, synth_attr_names[k], n))) k++;
        if (k == SYNTH_K)
            fatal(EXIT_USAGE, "%s: --attrs: '%.*s' is not an attribute (long, positive, formal, enthusiastic, "
                              "technical, bullets, emoji)", cmd, (int)n, p);
        if ((mask >> k) & 1u) fatal(EXIT_USAGE, "%s: --attrs: '%s' is named twice", cmd, synth_attr_names[k]);
        mask |= 1u << k;
        if (!p[n]) return mask;
        p += n + 1;
    }
}

/* OUT.jsonl -> OUT.truth.jsonl; any other name gets ".truth.jsonl" appended. */
static char *truth_path_for(const char *out)
{
    size_t n = strlen(out);
    const char *ext = ".jsonl";
    size_t ne = strlen(ext);
    if (n > ne && !strcmp(out + n - ne, ext)) n -= ne;
    char *p = malloc(n + sizeof ".truth.jsonl");
    if (!p) fatal(EXIT_RUNTIME, "synth: out of memory");
    memcpy(p, out, n);
    strcpy(p + n, ".truth.jsonl");
    return p;
}

/* ---- --score ---- */

static char *read_stdin(size_t *n)
{
    char *buf = read_stream(stdin, n);
    if (!buf && errno == ENOMEM) fatal(EXIT_RUNTIME, "synth: out of memory reading stdin");
    if (!buf) fatal(EXIT_RUNTIME, "synth: read error on stdin");
    return buf;
}

static int score_text(const char *arg)
{
    size_t n = 0;
    char *owned = NULL;
    const char *text = arg;
    if (!strcmp(arg, "-")) text = owned = read_stdin(&n);
    else n = strlen(arg);
    double a[SYNTH_K];
    SynthEvidence ev;
    synth_score_evidence(text, n, &ev, a);
    printf("scorer v%d, %d attributes, %zu bytes\n", SYNTH_SCORER_VERSION, SYNTH_K, n);
    printf("  %-13s %d   %d sentence(s)\n", synth_attr_names[SYNTH_LONG], (int)a[SYNTH_LONG], ev.sentences);
    printf("  %-13s %d   %d positive vs %d negative words\n", synth_attr_names[SYNTH_POSITIVE],
           (int)a[SYNTH_POSITIVE], ev.positive, ev.negative);
    printf("  %-13s %d   %d formal vs %d casual words\n", synth_attr_names[SYNTH_FORMAL], (int)a[SYNTH_FORMAL],
           ev.formal, ev.casual);
    printf("  %-13s %d   %d of %d sentence(s) end in '!'\n", synth_attr_names[SYNTH_ENTHUSIASTIC],
           (int)a[SYNTH_ENTHUSIASTIC], ev.exclaimed, ev.sentences);
    printf("  %-13s %d   %d technical term(s)\n", synth_attr_names[SYNTH_TECHNICAL], (int)a[SYNTH_TECHNICAL],
           ev.technical);
    printf("  %-13s %d   %d list line(s)\n", synth_attr_names[SYNTH_BULLETS], (int)a[SYNTH_BULLETS],
           ev.bullet_lines);
    printf("  %-13s %d   %d emoji\n", synth_attr_names[SYNTH_EMOJI], (int)a[SYNTH_EMOJI], ev.emoji);
    printf("a = [");
    for (int k = 0; k < SYNTH_K; k++) printf("%s%d", k ? "," : "", (int)a[k]);
    printf("]\n");
    free(owned);
    return EXIT_OK;
}

/* ---- generation ---- */

typedef struct {
    long long pairs, agree;      /* labels that picked the higher-reward answer */
    double expected_agree;       /* their Bradley-Terry expectation */
    long long response_bytes, responses;
    int users_per_flavor[SYNTH_N_FLAVORS];
    int interpolated;            /* users of the interpolated split */
} Stats;

static void die_write(JsonlWriter *a, JsonlWriter *b, const char *err)
{
    jsonl_writer_abort(a);
    jsonl_writer_abort(b);
    fatal(EXIT_RUNTIME, "synth: %s", err);
}

/* A failed write's reason comes from closing the writer (jsonl_write.c). */
static void fail_writer(JsonlWriter *failed, JsonlWriter *other)
{
    char err[512];
    jsonl_writer_close(failed, err, sizeof err);
    die_write(NULL, other, err);
}

static void write_user(const SynthConfig *cfg, const char *population, SynthUser *u, int pairs, JsonlWriter *data,
                       JsonlWriter *truth, Stats *st)
{
    SynthPair p;
    for (int j = 0; j < pairs; j++) {
        synth_next_pair(cfg, u, &p);
        PrefRow row = { .user_id = u->id, .prompt = p.prompt, .chosen = p.chosen, .rejected = p.rejected,
                        .user_description = u->description, .prompt_len = p.prompt_len,
                        .chosen_len = p.chosen_len, .rejected_len = p.rejected_len,
                        .user_description_len = u->description_len,
                        .split = u->interpolated ? "test" : NULL };
        if (jsonl_write_row(data, &row) != 0) fail_writer(data, truth);
        st->pairs++;
        st->agree += p.chosen_reward > p.rejected_reward;
        st->expected_agree += p.chosen_reward > p.rejected_reward ? p.p_chosen : 1 - p.p_chosen;
        st->response_bytes += (long long)(p.chosen_len + p.rejected_len);
        st->responses += 2;
    }
    UserTruth t = { .user_id = u->id, .flavor = synth_flavor_name(u->flavor), .description = u->description,
                    .n_attrs = SYNTH_K, .weights = u->w, .attr_names = synth_attr_names,
                    .temperature = cfg->temperature, .scorer_version = SYNTH_SCORER_VERSION,
                    .population = population, .has_split = cfg->interpolated_pairs[0] != 0,
                    .interpolated = u->interpolated };
    if (jsonl_write_truth(truth, &t) != 0) fail_writer(truth, data);
    st->users_per_flavor[u->flavor]++;
    st->interpolated += u->interpolated;
}

/* One line on stderr, rewritten in place on a terminal. */
static void progress(int done, int total, long long pairs, double elapsed, int final)
{
    int tty = isatty(fileno(stderr));
    fprintf(stderr, "%ssynth: %d/%d users (%.0f%%), %lld pairs, %.1f s%s", tty ? "\r" : "", done, total,
            100.0 * done / total, pairs, elapsed, tty && !final ? "" : "\n");
    fflush(stderr);
}

static long long file_size(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 ? (long long)sb.st_size : -1;
}

int cmd_synth(int argc, char **argv)
{
    const char *cmd = "synth", *out = NULL, *truth_opt = NULL, *score = NULL, *population = NULL;
    const char *fixed = NULL; /* the first option given that a population fixes */
    SynthConfig cfg = { .seed = 1, .flavor = SYNTH_ALL, .n_active = 2, .temperature = 0.1 };
    int users = 1500, pairs = 40, quiet = 0, active_given = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!fixed && (!strcmp(a, "--noise") || !strcmp(a, "--active") || !strcmp(a, "--dirichlet") ||
                       !strcmp(a, "--minimal-pairs") || !strcmp(a, "--contrastive") || !strcmp(a, "--attrs")))
            fixed = a;
        if (cli_is_help(a)) {
            usage(stdout);
            return EXIT_OK;
        } else if (!strcmp(a, "-o") || !strcmp(a, "--out")) out = cli_str(cmd, argc, argv, &i);
        else if (!strcmp(a, "--truth")) truth_opt = cli_str(cmd, argc, argv, &i);
        else if (!strcmp(a, "--users")) users = cli_int(cmd, argc, argv, &i, 1, 10000000);
        else if (!strcmp(a, "--pairs-per-user")) pairs = cli_int(cmd, argc, argv, &i, 1, 1000000);
        else if (!strcmp(a, "--seed")) cfg.seed = (uint64_t)cli_int(cmd, argc, argv, &i, 0, 2147483647);
        else if (!strcmp(a, "--noise")) cfg.temperature = cli_double(cmd, argc, argv, &i, 0, 1e6);
        else if (!strcmp(a, "--active")) {
            cfg.n_active = cli_int(cmd, argc, argv, &i, 1, SYNTH_K);
            active_given = 1;
        } else if (!strcmp(a, "--dirichlet")) cfg.dirichlet_alpha = cli_double(cmd, argc, argv, &i, 0.05, 100);
        else if (!strcmp(a, "--minimal-pairs")) cfg.minimal_pairs = 1;
        else if (!strcmp(a, "--contrastive")) cfg.contrastive = 1;
        else if (!strcmp(a, "--attrs")) cfg.attrs = parse_attrs(cmd, cli_str(cmd, argc, argv, &i));
        else if (!strcmp(a, "--population")) population = cli_str(cmd, argc, argv, &i);
        else if (!strcmp(a, "--quiet")) quiet = 1;
        else if (!strcmp(a, "--score")) score = cli_str(cmd, argc, argv, &i);
        else if (!strcmp(a, "--flavor")) {
            const char *f = cli_str(cmd, argc, argv, &i);
            cfg.flavor = synth_flavor_parse(f);
            if (cfg.flavor < 0)
                fatal(EXIT_USAGE, "%s: --flavor: '%s' is not reviews, elix, roleplay or all", cmd, f);
        } else if (a[0] == '-' && a[1])
            fatal(EXIT_USAGE, "%s: unknown option '%s' (see 'fspo synth --help')", cmd, a);
        else
            fatal(EXIT_USAGE, "%s: unexpected argument '%s' (the output goes after -o)", cmd, a);
    }
    if (score) {
        if (out) fatal(EXIT_USAGE, "%s: --score prints to the terminal; drop -o", cmd);
        return score_text(score);
    }
    if (!out) fatal(EXIT_USAGE, "%s: -o OUT.jsonl is required (see 'fspo synth --help')", cmd);
    const SynthPopulation *pop = population ? synth_population_find(population) : NULL;
    if (population) {
        if (!pop) {
            char names[64] = "";
            for (int p = 0; p < synth_n_populations; p++)
                snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s", p ? ", " : "",
                         synth_populations[p].name);
            fatal(EXIT_USAGE, "%s: --population: '%s' is not a rung (%s)", cmd, population, names);
        }
        if (fixed)
            fatal(EXIT_USAGE, "%s: --population %s fixes %s (a rung is a fixed benchmark); drop %s, or spell the "
                              "rung's options out without --population (see 'fspo synth --help')",
                  cmd, pop->name, fixed, fixed);
        SynthConfig rung = pop->cfg;
        rung.seed = cfg.seed;
        rung.flavor = cfg.flavor;
        cfg = rung;
    }
    int n_allowed = __builtin_popcount(cfg.attrs ? cfg.attrs : SYNTH_ALL_ATTRS);
    if (active_given && cfg.n_active > n_allowed)
        fatal(EXIT_USAGE, "%s: --active %d but --attrs names only %d attribute%s", cmd, cfg.n_active, n_allowed,
              n_allowed == 1 ? "" : "s");
    if (active_given && cfg.dirichlet_alpha > 0)
        fatal(EXIT_USAGE, "%s: --active (sparse users) and --dirichlet (dense users) exclude each other", cmd);
    char *truth_path = truth_opt ? strdup(truth_opt) : truth_path_for(out);
    if (same_file(truth_path, out)) fatal(EXIT_USAGE, "%s: --truth %s is the file -o names; they must differ", cmd, truth_path);

    char err[512];
    JsonlWriter *data = jsonl_writer_open(out, err, sizeof err);
    if (!data) fatal(EXIT_RUNTIME, "synth: %s", err);
    JsonlWriter *truth = jsonl_writer_open(truth_path, err, sizeof err);
    if (!truth) die_write(data, NULL, err);

    Stats st = { 0 };
    double t0 = now_seconds(), last_report = t0;
    int reported = 0;
    for (int u = 0; u < users; u++) {
        SynthUser user;
        synth_user_init(&cfg, u, &user);
        write_user(&cfg, pop ? pop->name : NULL, &user, pairs, data, truth, &st);
        double now = now_seconds();
        if (!quiet && now - last_report >= 1.0) { /* only runs long enough to wonder get a progress line */
            progress(u + 1, users, st.pairs, now - t0, 0);
            last_report = now;
            reported = 1;
        }
    }
    if (jsonl_writer_close(data, err, sizeof err) != 0) die_write(NULL, truth, err);
    if (jsonl_writer_close(truth, err, sizeof err) != 0) fatal(EXIT_RUNTIME, "synth: %s", err);
    double secs = now_seconds() - t0;
    if (reported) progress(users, users, st.pairs, secs, 1);
    if (!quiet) {
        printf("synth: wrote %s (%d users, %lld pairs, %lld bytes) and %s\n", out, users, st.pairs, file_size(out),
               truth_path);
        printf("synth: flavours reviews %d, elix %d, roleplay %d; users %s; noise T = %g%s\n",
               st.users_per_flavor[SYNTH_REVIEWS], st.users_per_flavor[SYNTH_ELIX],
               st.users_per_flavor[SYNTH_ROLEPLAY], cfg.dirichlet_alpha > 0 ? "dense (Dirichlet)" : "sparse",
               cfg.temperature, cfg.minimal_pairs ? "; minimal pairs" : "");
        if (pop) {
            printf("synth: population %s: %s\n", pop->name, pop->summary);
            if (cfg.interpolated_pairs[0]) {
                char held[160];
                put_pairs(&cfg, held, sizeof held);
                printf("synth: %d of %d users interpolated (two strongest attributes %s): "
                       "\"interpolated\": true in the truth file, \"split\": \"test\" on their rows\n",
                       st.interpolated, users, held);
            }
        }
        if (cfg.attrs || cfg.contrastive) {
            printf("synth: varied attributes:");
            for (int k = 0; k < SYNTH_K; k++)
                if (((cfg.attrs ? cfg.attrs : SYNTH_ALL_ATTRS) >> k) & 1u) printf(" %s", synth_attr_names[k]);
            printf("%s\n", cfg.contrastive ? "; contrastive pairs (differ only where the user cares)" : "");
        }
        printf("synth: labels pick the higher-reward answer in %.1f%% of pairs (Bradley-Terry expects %.1f%%); "
               "mean answer %.0f bytes\n",
               100.0 * st.agree / st.pairs, 100.0 * st.expected_agree / st.pairs,
               (double)st.response_bytes / st.responses);
        printf("synth: %.2f s, %.0f pairs/s\n", secs, st.pairs / (secs > 0 ? secs : 1e-9));
    }
    free(truth_path);
    return EXIT_OK;
}
