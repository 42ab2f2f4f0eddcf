/* Synthetic users (src/synth.c) and the JSONL writer (io/jsonl_write.c):
 * the scorer recovers the generator's attributes exactly, labels follow
 * the Bradley-Terry model, every pair carries signal about its user,
 * descriptions name exactly the active attributes, generation is a pure
 * function of the seed, the benchmark ladder's rungs have their stated
 * user types, non-contrastive pairs, Bayes-optimal accuracy 0.9 and
 * interpolated split, the scorer survives any bytes, and the writer
 * round-trips rows (NULs included) and refuses invalid UTF-8. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/jsonl.h"
#include "src/synth.h"
#include "tests/check.h"

/* s with line breaks shown as \n, so a check's detail stays on its one line
 * (four rotating buffers: several may appear in one check). */
static const char *flat(const char *s)
{
    static char bufs[4][1024];
    static int next;
    char *out = bufs[next++ % 4];
    size_t j = 0;
    for (; *s && j + 3 < sizeof bufs[0]; s++) {
        if (*s == '\n') out[j++] = '\\', out[j++] = 'n';
        else out[j++] = *s;
    }
    out[j] = '\0';
    return out;
}

static SynthConfig config(uint64_t seed, int flavor, double temperature)
{
    return (SynthConfig){ .seed = seed, .flavor = flavor, .n_active = 2, .temperature = temperature };
}

static unsigned score_mask(const char *text, size_t n)
{
    double a[SYNTH_K];
    synth_score(text, n, a);
    for (int k = 0; k < SYNTH_K; k++)
        if (a[k] != 0.0 && a[k] != 1.0) return 0xFFFFFFFFu; /* not binary: never equals a mask */
    return synth_attrs_to_mask(a);
}

static void mask_str(unsigned m, char *out)
{
    for (int k = 0; k < SYNTH_K; k++) out[k] = (char)('0' + ((m >> k) & 1));
    out[SYNTH_K] = '\0';
}

/* Each marker appears exactly where its attribute puts it: one register
 * word and one sentiment word per sentence, of the right kind only, one
 * jargon term, one list line per sentence, one emoji. Stricter than the
 * attribute vector, so a lexicon missing a grammar word shows up even where
 * the other markers would outvote it. */
static int markers_exact(const char *text, size_t len, unsigned m)
{
    SynthEvidence ev;
    double a[SYNTH_K];
    synth_score_evidence(text, len, &ev, a);
    int on[SYNTH_K];
    for (int k = 0; k < SYNTH_K; k++) on[k] = (m >> k) & 1u;
    int s = on[SYNTH_LONG] ? 3 : 1;
    return ev.sentences == s && ev.positive == (on[SYNTH_POSITIVE] ? s : 0) &&
           ev.negative == (on[SYNTH_POSITIVE] ? 0 : s) && ev.formal == (on[SYNTH_FORMAL] ? s : 0) &&
           ev.casual == (on[SYNTH_FORMAL] ? 0 : s) && ev.exclaimed == (on[SYNTH_ENTHUSIASTIC] ? s : 0) &&
           ev.technical == on[SYNTH_TECHNICAL] && ev.bullet_lines == (on[SYNTH_BULLETS] ? s : 0) &&
           ev.emoji == on[SYNTH_EMOJI];
}

/* Every attribute mask of every flavour, many wordings each: the scorer
 * reads back exactly the mask the text was rendered with. */
static void test_scorer_exact_on_grammar(void)
{
    for (int f = 0; f < SYNTH_N_FLAVORS; f++) {
        Rng rng = rng_seed(11, (uint64_t)f);
        long n = 0, wrong = 0, total_len = 0;
        size_t min_len = 1 << 20, max_len = 0;
        char first_wrong[SYNTH_MAX_RESPONSE + 64] = "";
        for (unsigned m = 0; m <= SYNTH_ALL_ATTRS; m++)
            for (int rep = 0; rep < 40; rep++) {
                SynthWording wd;
                char text[SYNTH_MAX_RESPONSE];
                synth_draw_wording(&rng, &wd);
                size_t len = synth_render(f, m, &wd, text);
                unsigned got = score_mask(text, len);
                int exact = markers_exact(text, len, m); /* else right, if at all, for a fragile reason */
                if ((got != m || !exact) && !wrong++) {
                    char want_s[16], got_s[16];
                    mask_str(m, want_s);
                    mask_str(got, got_s);
                    snprintf(first_wrong, sizeof first_wrong, "want %s got %s%s: '%s'", want_s, got_s,
                             exact ? "" : " (markers miscounted)", flat(text));
                }
                n++;
                total_len += (long)len;
                if (len < min_len) min_len = len;
                if (len > max_len) max_len = len;
            }
        char name[96];
        snprintf(name, sizeof name, "scorer exact on all %u masks x 40 wordings (%s)", SYNTH_ALL_ATTRS + 1,
                 synth_flavor_name(f));
        check(wrong == 0, name, "%ld of %ld wrong; %s", wrong, n, first_wrong);
        snprintf(name, sizeof name, "response lengths short and never truncated (%s)", synth_flavor_name(f));
        check(min_len >= 20 && max_len <= 200 && max_len < SYNTH_MAX_RESPONSE - 1, name,
              "min %zu, mean %.0f, max %zu bytes", min_len, (double)total_len / n, max_len);
    }
}

/* Generates cfg's dataset pair by pair into callbacks' state. */
typedef struct {
    long pairs, scorer_wrong, no_active_diff, tie, not_binary;
    long max_prompt, min_prompt;
    uint64_t hash;
    char first_wrong[2 * SYNTH_MAX_RESPONSE];
} Walk;

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001B3ull;
    return h;
}

static void walk(const SynthConfig *cfg, int users, int pairs, Walk *w)
{
    memset(w, 0, sizeof *w);
    w->hash = 0xCBF29CE484222325ull;
    w->min_prompt = 1 << 20;
    for (int u = 0; u < users; u++) {
        SynthUser user;
        synth_user_init(cfg, u, &user);
        w->hash = fnv(w->hash, user.id, strlen(user.id));
        w->hash = fnv(w->hash, user.description, user.description_len);
        w->hash = fnv(w->hash, user.w, sizeof user.w);
        for (int j = 0; j < pairs; j++) {
            SynthPair p;
            synth_next_pair(cfg, &user, &p);
            w->pairs++;
            w->hash = fnv(w->hash, p.prompt, p.prompt_len + 1);
            w->hash = fnv(w->hash, p.chosen, p.chosen_len + 1);
            w->hash = fnv(w->hash, p.rejected, p.rejected_len + 1);
            unsigned c = score_mask(p.chosen, p.chosen_len), r = score_mask(p.rejected, p.rejected_len);
            if ((c != p.chosen_mask || r != p.rejected_mask) && !w->scorer_wrong++)
                snprintf(w->first_wrong, sizeof w->first_wrong, "'%.200s' / '%.200s'", flat(p.chosen), flat(p.rejected));
            if (!((p.chosen_mask ^ p.rejected_mask) & user.active_mask)) w->no_active_diff++;
            if (p.chosen_reward == p.rejected_reward) w->tie++;
            if ((long)p.prompt_len > w->max_prompt) w->max_prompt = (long)p.prompt_len;
            if ((long)p.prompt_len < w->min_prompt) w->min_prompt = (long)p.prompt_len;
        }
    }
}

static void test_generated_pairs(void)
{
    SynthConfig cfg = config(5, SYNTH_ALL, 0.1);
    Walk w;
    walk(&cfg, 300, 20, &w);
    check(w.scorer_wrong == 0, "scorer exact on 12000 generated answers (all flavours)", "%ld of %ld pairs wrong: %s",
          w.scorer_wrong, w.pairs, w.first_wrong);
    check(w.no_active_diff == 0 && w.tie == 0, "every pair differs in an active attribute and in reward",
          "%ld pairs without an active difference, %ld ties of %ld", w.no_active_diff, w.tie, w.pairs);
    check(w.min_prompt >= 15 && w.max_prompt <= 70, "prompts are short", "%ld..%ld bytes", w.min_prompt,
          w.max_prompt);
    cfg.minimal_pairs = 1;
    walk(&cfg, 300, 20, &w);
    check(w.scorer_wrong == 0 && w.no_active_diff == 0 && w.tie == 0, "minimal pairs: exact scorer, active difference",
          "%ld wrong, %ld without difference, %ld ties: %s", w.scorer_wrong, w.no_active_diff, w.tie, w.first_wrong);
    cfg = config(5, SYNTH_ALL, 0.1);
    cfg.dirichlet_alpha = 0.3;
    walk(&cfg, 300, 20, &w);
    check(w.scorer_wrong == 0 && w.no_active_diff == 0 && w.tie == 0, "dense users: exact scorer, active difference",
          "%ld wrong, %ld without difference, %ld ties", w.scorer_wrong, w.no_active_diff, w.tie);
}

/* Counts pairs whose attributes differ only in enthusiasm, and how many of
 * those differ in nothing but their sentence terminators. */
static void count_terminator_only_pairs(int minimal, long *candidates, long *terminators_only)
{
    SynthConfig cfg = config(9, SYNTH_ALL, 0.1);
    cfg.minimal_pairs = minimal;
    cfg.n_active = SYNTH_K; /* every attribute matters, so a one-bit difference is a valid pair */
    *candidates = *terminators_only = 0;
    for (int u = 0; u < 500; u++) {
        SynthUser user;
        synth_user_init(&cfg, u, &user);
        for (int j = 0; j < 40; j++) {
            SynthPair p;
            synth_next_pair(&cfg, &user, &p);
            if ((p.chosen_mask ^ p.rejected_mask) != 1u << SYNTH_ENTHUSIASTIC) continue;
            ++*candidates;
            int differ = p.chosen_len != p.rejected_len;
            for (size_t i = 0; !differ && i < p.chosen_len; i++)
                differ = p.chosen[i] != p.rejected[i] && !(strchr("!.", p.chosen[i]) && strchr("!.", p.rejected[i]));
            *terminators_only += !differ;
        }
    }
}

/* --minimal-pairs: both answers share their wording, so answers whose
 * attributes differ only in enthusiasm differ only in '!' vs '.'. */
static void test_minimal_pairs(void)
{
    long cand, same, cand_free, same_free;
    count_terminator_only_pairs(1, &cand, &same);
    count_terminator_only_pairs(0, &cand_free, &same_free);
    check(cand > 20 && same == cand, "minimal pairs: a one-attribute difference is the only difference",
          "%ld of %ld pairs", same, cand);
    check(cand_free > 20 && same_free < cand_free / 2, "without --minimal-pairs the wording varies too",
          "%ld of %ld pairs share wording", same_free, cand_free);
}

/* --attrs and --contrastive (curriculum levers of [eval]): an attribute
 * left out is never on in any answer, as the scorer reads the text, and no
 * user weighs it; contrastive answers differ only in active attributes. */
static void test_attribute_subsets(void)
{
    SynthConfig cfg = config(13, SYNTH_ALL, 0.1);
    cfg.attrs = (1u << SYNTH_FORMAL) | (1u << SYNTH_BULLETS) | (1u << SYNTH_EMOJI);
    cfg.contrastive = 1;
    long pairs = 0, outside_on = 0, outside_weight = 0, inactive_diff = 0, scorer_wrong = 0, max_len = 0;
    unsigned seen_active = 0;
    for (int u = 0; u < 300; u++) {
        SynthUser user;
        synth_user_init(&cfg, u, &user);
        for (int k = 0; k < SYNTH_K; k++) outside_weight += !((cfg.attrs >> k) & 1u) && user.w[k] != 0;
        seen_active |= user.active_mask;
        for (int j = 0; j < 20; j++) {
            SynthPair p;
            synth_next_pair(&cfg, &user, &p);
            pairs++;
            double a[SYNTH_K];
            for (int side = 0; side < 2; side++) {
                const char *t = side ? p.rejected : p.chosen;
                size_t n = side ? p.rejected_len : p.chosen_len;
                synth_score(t, n, a);
                unsigned read = synth_attrs_to_mask(a);
                outside_on += (read & ~cfg.attrs) != 0;
                scorer_wrong += read != (side ? p.rejected_mask : p.chosen_mask);
                if ((long)n > max_len) max_len = (long)n;
            }
            inactive_diff += ((p.chosen_mask ^ p.rejected_mask) & ~user.active_mask) != 0;
        }
    }
    check(outside_on == 0 && outside_weight == 0 && scorer_wrong == 0,
          "--attrs formal,bullets,emoji: other attributes never on (scorer) and never weighed",
          "%ld answers with another attribute on, %ld outside weights, %ld misread", outside_on, outside_weight,
          scorer_wrong);
    check(seen_active == cfg.attrs, "--attrs: every named attribute is some user's active one", "active union %#x",
          seen_active);
    check(inactive_diff == 0 && pairs == 6000, "--contrastive: answers differ only in the user's active attributes",
          "%ld of %ld pairs differ elsewhere", inactive_diff, pairs);
    check(max_len < 120, "--attrs without long: one-sentence answers", "longest %ld bytes", max_len);

    /* every attribute allowed is the default, draw for draw */
    SynthConfig all = config(13, SYNTH_ALL, 0.1), named = all;
    named.attrs = SYNTH_ALL_ATTRS;
    int same = 1;
    for (int u = 0; u < 50 && same; u++) {
        SynthUser a, b;
        synth_user_init(&all, u, &a);
        synth_user_init(&named, u, &b);
        SynthPair pa, pb;
        synth_next_pair(&all, &a, &pa);
        synth_next_pair(&named, &b, &pb);
        same = !memcmp(a.w, b.w, sizeof a.w) && !strcmp(pa.chosen, pb.chosen) && !strcmp(pa.rejected, pb.rejected);
    }
    check(same, "--attrs naming all attributes = the default stream", "user differs");
}

static double sigmoid(double x) { return 1 / (1 + exp(-x)); }

/* Labels: with T = 0 the chosen answer always has the higher reward; with
 * T > 0, P(chosen has the higher reward | |dr|) = sigmoid(|dr| / T),
 * checked per reward gap and overall within 4 standard errors. */
static void test_bradley_terry(void)
{
    SynthConfig cfg = config(21, SYNTH_ALL, 0.0);
    long n = 0, higher = 0, sure = 0;
    for (int u = 0; u < 1000; u++) {
        SynthUser user;
        synth_user_init(&cfg, u, &user);
        for (int j = 0; j < 20; j++) {
            SynthPair p;
            synth_next_pair(&cfg, &user, &p);
            n++;
            higher += p.chosen_reward > p.rejected_reward;
            sure += p.p_chosen == 1.0;
        }
    }
    check(higher == n && sure == n, "noise 0: the chosen answer has the higher reward in every pair",
          "%ld of %ld, p_chosen = 1 in %ld", higher, n, sure);

    const double temps[2] = { 1.0, 0.5 };
    for (int dense = 0; dense < 2; dense++) {
        cfg = config(33 + (uint64_t)dense, SYNTH_ALL, temps[dense]);
        if (dense) cfg.dirichlet_alpha = 1.0;
        /* sparse users have gaps 1 and 2 only; check each gap's rate against its sigmoid */
        long gap_n[3] = { 0 }, gap_hi[3] = { 0 };
        double expect = 0, var = 0;
        n = higher = 0;
        for (int u = 0; u < 2000; u++) {
            SynthUser user;
            synth_user_init(&cfg, u, &user);
            for (int j = 0; j < 20; j++) {
                SynthPair p;
                synth_next_pair(&cfg, &user, &p);
                double gap = fabs(p.chosen_reward - p.rejected_reward), q = sigmoid(gap / cfg.temperature);
                int hi = p.chosen_reward > p.rejected_reward;
                n++;
                higher += hi;
                expect += q;
                var += q * (1 - q);
                int g = (int)lround(gap);
                if (!dense && g >= 1 && g <= 2) gap_n[g]++, gap_hi[g] += hi;
            }
        }
        double emp = (double)higher / n, tol = 4 * sqrt(var) / n;
        char name[128];
        snprintf(name, sizeof name, "noise %.1f, %s users: P(chosen has higher reward) matches Bradley-Terry",
                 cfg.temperature, dense ? "dense" : "sparse");
        check(fabs(emp - expect / n) < tol, name, "empirical %.4f, expected %.4f +- %.4f over %ld pairs", emp,
              expect / n, tol, n);
        for (int g = 1; g <= 2 && !dense; g++) {
            double q = sigmoid(g / cfg.temperature), e = (double)gap_hi[g] / gap_n[g];
            double t = 4 * sqrt(q * (1 - q) / gap_n[g]);
            snprintf(name, sizeof name, "noise %.1f, reward gap %d: P(chosen higher) = sigmoid(%d/T)", cfg.temperature,
                     g, g);
            check(gap_n[g] > 1000 && fabs(e - q) < t, name, "%.4f vs %.4f +- %.4f (%ld pairs)", e, q, t, gap_n[g]);
        }
    }
}

/* ---- the benchmark ladder (--population r1..r4) ---- */

static long binomial(int n, int k)
{
    long c = 1;
    for (int i = 1; i <= k; i++) c = c * (n - k + i) / i;
    return c;
}

/* One rung, measured on 2000 users x 25 pairs against numbers derived
 * here, not read from the generator: user types by counting, the fraction
 * of pairs that also differ in an ignored attribute, the label agreement
 * rate against the mean of sigmoid(|dr| / T) over the drawn pairs and
 * against 0.9, and (r4) the interpolated split against its own rule. */
static void test_population(const SynthPopulation *P, int want_types, double want_noncontrastive)
{
    enum { USERS = 2000, PAIRS = 25, MAX_TYPES = 1 << 14 };
    SynthConfig cfg = P->cfg;
    cfg.seed = 61;
    cfg.flavor = SYNTH_ALL;
    unsigned allowed = cfg.attrs;
    int n_attrs = __builtin_popcount(allowed);
    static unsigned char seen[MAX_TYPES], seen_train[1 << SYNTH_K], seen_test[1 << SYNTH_K];
    memset(seen, 0, sizeof seen);
    memset(seen_train, 0, sizeof seen_train);
    memset(seen_test, 0, sizeof seen_test);
    long types = 0, pairs = 0, noncontrastive = 0, agree = 0, long_on = 0, gap2 = 0, other_gap = 0, interpolated = 0;
    long mismarked = 0;
    double expect = 0, var = 0;
    static double gaps[USERS * PAIRS];
    size_t max_len = 0;
    for (int i = 0; i < USERS; i++) {
        SynthUser u;
        synth_user_init(&cfg, i, &u);
        /* a sparse user's type: its active attributes and their signs */
        unsigned signs = 0;
        for (int k = 0; k < SYNTH_K; k++) signs |= (unsigned)(u.w[k] > 0) << k;
        unsigned type = (u.active_mask << SYNTH_K) | (signs & u.active_mask);
        if (!seen[type]) types++;
        seen[type] = 1;
        /* the two strongest attributes, by a full sort of |w| here */
        int order[SYNTH_K];
        for (int k = 0; k < SYNTH_K; k++) order[k] = k;
        for (int a = 0; a < SYNTH_K; a++)
            for (int b = a + 1; b < SYNTH_K; b++)
                if (fabs(u.w[order[b]]) > fabs(u.w[order[a]])) {
                    int t = order[a];
                    order[a] = order[b];
                    order[b] = t;
                }
        unsigned top2 = (1u << order[0]) | (1u << order[1]);
        int in_list = 0;
        for (int h = 0; h < SYNTH_MAX_INTERPOLATED; h++) in_list |= cfg.interpolated_pairs[h] == top2;
        mismarked += in_list != u.interpolated;
        interpolated += u.interpolated;
        (u.interpolated ? seen_test : seen_train)[top2] = 1;
        for (int j = 0; j < PAIRS; j++) {
            SynthPair p;
            synth_next_pair(&cfg, &u, &p);
            pairs++;
            noncontrastive += ((p.chosen_mask ^ p.rejected_mask) & ~u.active_mask) != 0;
            long_on += ((p.chosen_mask | p.rejected_mask) >> SYNTH_LONG) & 1u;
            if (p.chosen_len > max_len) max_len = p.chosen_len;
            if (p.rejected_len > max_len) max_len = p.rejected_len;
            double gap = fabs(p.chosen_reward - p.rejected_reward), q = sigmoid(gap / cfg.temperature);
            gaps[pairs - 1] = gap;
            gap2 += gap == 2;
            other_gap += gap != 1 && gap != 2;
            agree += p.chosen_reward > p.rejected_reward;
            expect += q;
            var += q * (1 - q);
        }
    }
    char name[160];
    if (want_types) {
        snprintf(name, sizeof name, "population %s: %d user types (active set, signs) among %d users", P->name,
                 want_types, USERS);
        check(types == want_types && want_types == binomial(n_attrs, cfg.n_active) << cfg.n_active, name,
              "%ld distinct; C(%d,%d) * 2^%d = %ld", types, n_attrs, cfg.n_active, cfg.n_active,
              binomial(n_attrs, cfg.n_active) << cfg.n_active);
    }
    double frac = (double)noncontrastive / pairs;
    if (want_noncontrastive < 0)
        snprintf(name, sizeof name, "population %s: some pairs differ in an inactive attribute (> 0.1)", P->name);
    else
        snprintf(name, sizeof name, "population %s: pairs differing in an ignored attribute %.2f%s", P->name,
                 want_noncontrastive, want_noncontrastive > 0 ? "" : " (contrastive)");
    if (want_noncontrastive > 0 && want_noncontrastive < 1) {
        double sd = sqrt(want_noncontrastive * (1 - want_noncontrastive) / pairs);
        check(fabs(frac - want_noncontrastive) < 4 * sd, name, "%.4f of %ld pairs (+- %.4f)", frac, pairs, 4 * sd);
    } else if (want_noncontrastive < 0) { /* only "some" is known (dense users) */
        check(frac > 0.1, name, "%.4f of %ld pairs", frac, pairs);
    } else
        check(noncontrastive == 0, name, "%ld of %ld pairs", noncontrastive, pairs);
    snprintf(name, sizeof name, "population %s: one-sentence answers (long never on)", P->name);
    check(long_on == 0 && max_len < 120, name, "%ld answers long, longest %zu bytes", long_on, max_len);

    /* Bayes-optimal accuracy: the analytic expectation over the drawn gaps within 0.005 of 0.9, the labels'
     * agreement rate within 4 standard errors of it */
    double emp = (double)agree / pairs, exp_mean = expect / pairs, tol = 4 * sqrt(var) / pairs;
    snprintf(name, sizeof name, "population %s: Bayes-optimal accuracy ~0.9 (T = %g)", P->name, cfg.temperature);
    check(fabs(exp_mean - 0.9) < 0.005 && fabs(emp - exp_mean) < tol, name,
          "mean sigmoid(|dr|/T) %.4f, labels agree %.4f (+- %.4f) over %ld pairs", exp_mean, emp, tol, pairs);
    /* how the rung's T was chosen: the T at which the mean of sigmoid(|dr| / T) over the drawn pairs is 0.9 */
    double lo = 0.01, hi = 5;
    for (int it = 0; it < 50; it++) {
        double t = (lo + hi) / 2, m = 0;
        for (long i = 0; i < pairs; i++) m += sigmoid(gaps[i] / t);
        *(m / pairs > 0.9 ? &lo : &hi) = t;
    }
    snprintf(name, sizeof name, "population %s: T solves mean sigmoid(|dr|/T) = 0.9 over its pairs", P->name);
    check(fabs(lo - cfg.temperature) < 0.01, name, "bisection %.5f, rung %g", lo, cfg.temperature);
    if (cfg.dirichlet_alpha == 0) {
        /* sparse +-1 users: gaps 1 only (one active), or 1 and 2 in proportion 4:1 (two active, ties redrawn) */
        double p2 = cfg.n_active == 1 ? 0 : 0.2, closed = (1 - p2) * sigmoid(1 / cfg.temperature) +
                                                    p2 * sigmoid(2 / cfg.temperature);
        double sd = sqrt(p2 * (1 - p2) / pairs), got2 = (double)gap2 / pairs;
        snprintf(name, sizeof name, "population %s: reward gaps %s, closed-form Bayes accuracy 0.9", P->name,
                 cfg.n_active == 1 ? "all 1" : "1 or 2 (1 in 5 of gap 2)");
        check(other_gap == 0 && fabs(got2 - p2) <= 4 * sd && fabs(closed - 0.9) < 1e-4, name,
              "gap 2 in %.4f of pairs (want %.1f +- %.4f), other gaps %ld; %.6f", got2, p2, 4 * sd, other_gap, closed);
    }
    if (cfg.interpolated_pairs[0]) {
        /* symmetric Dirichlet: each of the C(n,2) unordered top pairs is equally likely */
        int held = 0, n_train = 0, n_test = 0, overlap = 0;
        for (int h = 0; h < SYNTH_MAX_INTERPOLATED; h++) held += cfg.interpolated_pairs[h] != 0;
        for (unsigned m = 0; m < 1u << SYNTH_K; m++) {
            n_train += seen_train[m], n_test += seen_test[m];
            overlap += seen_train[m] && seen_test[m];
        }
        double want = (double)held / binomial(n_attrs, 2), got = (double)interpolated / USERS,
               sd = sqrt(want * (1 - want) / USERS);
        snprintf(name, sizeof name, "population %s: interpolated users are those whose top-2 pair is held out",
                 P->name);
        check(mismarked == 0 && overlap == 0 && n_test == held && n_train == binomial(n_attrs, 2) - held, name,
              "%ld mismarked; top-2 pairs: %d interpolated, %d others, %d shared", mismarked, n_test, n_train,
              overlap);
        snprintf(name, sizeof name, "population %s: %d of %ld top-2 pairs held out: %.3f of users interpolated",
                 P->name, held, binomial(n_attrs, 2), want);
        check(fabs(got - want) < 4 * sd, name, "%ld of %d users (%.4f +- %.4f)", interpolated, USERS, got, 4 * sd);
    } else {
        snprintf(name, sizeof name, "population %s: no interpolated users", P->name);
        check(interpolated == 0, name, "%ld", interpolated);
    }

    Walk a, b;
    walk(&cfg, 100, 10, &a);
    walk(&cfg, 100, 10, &b);
    snprintf(name, sizeof name, "population %s: same seed, same dataset", P->name);
    check(a.hash == b.hash && a.scorer_wrong == 0 && a.tie == 0 && a.no_active_diff == 0, name,
          "%016llx vs %016llx; %ld misread, %ld ties, %ld without an active difference", (unsigned long long)a.hash,
          (unsigned long long)b.hash, a.scorer_wrong, a.tie, a.no_active_diff);
}

static void test_populations(void)
{
    /* r2, r3: two ignored attributes, each differing with probability 1/2 independently of the active ones
     * (which alone decide whether a draw is kept): 1 - 1/4 */
    const struct {
        const char *name;
        int types;
        double noncontrastive; /* 0: never (contrastive); -1: some (dense users) */
    } want[] = { { "r1", 4, 0 }, { "r2", 6, 0.75 }, { "r3", 24, 0.75 }, { "r4", 0, -1 } };
    int n = (int)(sizeof want / sizeof *want);
    check(synth_n_populations == n && !synth_population_find("r5") && !synth_population_find(NULL),
          "populations: exactly r1..r4", "%d rungs", synth_n_populations);
    for (int i = 0; i < n; i++) {
        const SynthPopulation *P = synth_population_find(want[i].name);
        if (!check(P != NULL, "population found by name", "%s", want[i].name)) continue;
        test_population(P, want[i].types, want[i].noncontrastive);
    }
}

static void test_determinism(void)
{
    SynthConfig cfg = config(7, SYNTH_ALL, 0.3);
    Walk a, b, c;
    walk(&cfg, 200, 10, &a);
    walk(&cfg, 200, 10, &b);
    cfg.seed = 8;
    walk(&cfg, 200, 10, &c);
    check(a.hash == b.hash, "same seed, same dataset", "%016llx vs %016llx", (unsigned long long)a.hash,
          (unsigned long long)b.hash);
    check(a.hash != c.hash, "different seed, different dataset", "%016llx", (unsigned long long)c.hash);

    /* the noise only flips labels: the same pairs are drawn whatever T is */
    SynthConfig c0 = config(7, SYNTH_ALL, 0.0), c5 = config(7, SYNTH_ALL, 5.0);
    long same = 0, flipped = 0, total = 0;
    for (int u = 0; u < 100; u++) {
        SynthUser u0, u5;
        synth_user_init(&c0, u, &u0);
        synth_user_init(&c5, u, &u5);
        for (int j = 0; j < 10; j++) {
            SynthPair p0, p5;
            synth_next_pair(&c0, &u0, &p0);
            synth_next_pair(&c5, &u5, &p5);
            total++;
            if (!strcmp(p0.prompt, p5.prompt) && !strcmp(p0.chosen, p5.chosen) && !strcmp(p0.rejected, p5.rejected))
                same++;
            else if (!strcmp(p0.prompt, p5.prompt) && !strcmp(p0.chosen, p5.rejected) &&
                     !strcmp(p0.rejected, p5.chosen))
                flipped++;
        }
    }
    check(same + flipped == total && flipped > 0, "--noise changes labels only, never the pairs",
          "%ld same, %ld flipped of %ld", same, flipped, total);

    /* flavour 'all' alternates users over the three flavours */
    SynthUser u;
    int ok = 1;
    for (int i = 0; i < 9; i++) {
        synth_user_init(&cfg, i, &u);
        ok &= u.flavor == i % SYNTH_N_FLAVORS;
    }
    check(ok, "flavour 'all' alternates reviews, elix, roleplay", "users 0..8 by index %% 3");
}

static void test_weights_and_descriptions(void)
{
    long users = 0, bad_weights = 0, bad_desc = 0;
    char first_bad[SYNTH_MAX_DESCRIPTION + 128] = "";
    for (int mode = 1; mode <= SYNTH_K + 2; mode++) {
        /* modes 1..K: sparse with that many active attributes; then dense, alpha 1 and 0.2 */
        SynthConfig cfg = config(40 + (uint64_t)mode, SYNTH_ALL, 0.1);
        if (mode <= SYNTH_K) cfg.n_active = mode;
        else cfg.dirichlet_alpha = mode == SYNTH_K + 1 ? 1.0 : 0.2;
        for (int i = 0; i < 300; i++) {
            SynthUser u;
            synth_user_init(&cfg, i, &u);
            users++;
            int nonzero = 0, unit = 1;
            double total = 0;
            for (int k = 0; k < SYNTH_K; k++) {
                nonzero += u.w[k] != 0;
                unit &= u.w[k] == 0 || fabs(u.w[k]) == 1;
                total += fabs(u.w[k]);
            }
            if (mode <= SYNTH_K ? nonzero != mode || !unit : fabs(total - SYNTH_DENSE_TOTAL) > 1e-5 || !u.active_mask)
                bad_weights++;
            /* each active attribute appears, with its sign, in the right half; no other does */
            const char *d = u.description, *split = strstr(d, "dislikes: ");
            size_t pref_len = split ? (size_t)(split - d) : strlen(d);
            int ok = 1;
            for (int k = 0; k < SYNTH_K; k++) {
                int active = fabs(u.w[k]) >= SYNTH_ACTIVE_MIN, pos = u.w[k] > 0;
                const char *want = synth_attr_phrase(k, pos), *other = synth_attr_phrase(k, !pos);
                const char *at = strstr(d, want);
                int in_prefers = at && (size_t)(at - d) < pref_len, in_dislikes = at && split && at > split;
                int bipolar = strcmp(want, other) != 0;
                if (!active) ok &= !at && !strstr(d, other);
                else if (bipolar) ok &= in_prefers && !strstr(d, other);
                else ok &= pos ? in_prefers && !in_dislikes : in_dislikes && !in_prefers;
                ok &= ((u.active_mask >> k) & 1u) == (unsigned)active;
            }
            ok &= u.description_len == strlen(d) && u.description_len > 0;
            if (!ok && !bad_desc++)
                snprintf(first_bad, sizeof first_bad, "'%s' for w = [%g %g %g %g %g %g %g]", d, u.w[0], u.w[1], u.w[2],
                         u.w[3], u.w[4], u.w[5], u.w[6]);
        }
    }
    check(bad_weights == 0, "sparse users have exactly --active weights of +-1; dense |w| sum to 2",
          "%ld of %ld users wrong", bad_weights, users);
    check(bad_desc == 0, "descriptions name exactly the active attributes, with sign", "%ld of %ld wrong; first %s",
          bad_desc, users, first_bad);

    double w[SYNTH_K] = { -1, 0, 1, -1, 0, 0, 0 };
    char d[SYNTH_MAX_DESCRIPTION];
    synth_describe(w, d, sizeof d);
    check(!strcmp(d, "prefers: short, formal answers; dislikes: exclamation marks"), "description wording", "%s", d);
    double w2[SYNTH_K] = { 0, 0, 0, 0, 0.5, -0.3, 1 };
    synth_describe(w2, d, sizeof d);
    check(!strcmp(d, "prefers: answers with emoji and technical terms; dislikes: bullet lists"),
          "description wording, strongest first", "%s", d);
    char tiny[12];
    size_t n = synth_describe(w, tiny, sizeof tiny);
    check(n == strlen(tiny) && n == sizeof tiny - 1, "description truncates safely", "%zu '%s'", n, tiny);
}

/* synth_parse_description inverts synth_describe: every sign pattern of
 * the 7 attributes (3^7, so every pattern of 1-3 active attributes among
 * them), each with random strengths (so every order the description can
 * take) and small inactive weights that must not be named. */
static void test_description_parser(void)
{
    Rng r = rng_seed(77, 0);
    long patterns = 0, small = 0, bad = 0, not_ok = 0;
    char first_bad[SYNTH_MAX_DESCRIPTION + 64] = "";
    for (int code = 0; code < 2187; code++) {
        int want[SYNTH_K], active = 0;
        for (int k = 0, c = code; k < SYNTH_K; k++, c /= 3) want[k] = c % 3 - 1, active += want[k] != 0;
        patterns++;
        small += active >= 1 && active <= 3;
        for (int rep = 0; rep < 4; rep++) {
            double w[SYNTH_K];
            for (int k = 0; k < SYNTH_K; k++) {
                double mag = want[k] ? SYNTH_ACTIVE_MIN + (1 - SYNTH_ACTIVE_MIN) * rng_uniform(&r)
                                     : rep == 0 ? 0 : 0.199 * rng_uniform(&r);
                w[k] = (want[k] < 0 || (!want[k] && rng_uniform(&r) < 0.5) ? -1 : 1) * mag;
            }
            if (rep == 1)
                for (int k = 0; k < SYNTH_K; k++) w[k] = want[k]; /* equal strengths: attribute order */
            char d[SYNTH_MAX_DESCRIPTION];
            size_t n = synth_describe(w, d, sizeof d);
            int got[SYNTH_K];
            int rc = synth_parse_description(d, n, got);
            not_ok += rc != 0;
            if ((rc != 0 || memcmp(got, want, sizeof got) != 0) && !bad++)
                snprintf(first_bad, sizeof first_bad, "pattern %d: '%s' -> rc %d", code, d, rc);
        }
    }
    check(bad == 0 && small == 378, "description parser inverts synth_describe on every sign pattern",
          "%ld patterns (%ld with 1-3 active) x 4 strength draws, %ld wrong (%ld rejected); first %s", patterns, small,
          bad, not_ok, first_bad);
    /* what synth_describe never writes names nothing */
    static const char *const bad_text[] = {
        "", "prefers:", "prefers: answers", "prefers: long", "prefers: long answers;", "prefers: long, short answers",
        "prefers: longer answers", "prefers: answers with emoji, bullet lists", "prefers: answers with emoji and emoji",
        "prefers: answers with emoji; dislikes: emoji", "dislikes: long", "dislikes: emoji and", "prefers: emoji answers",
        "prefers: long answers ", " prefers: long answers", "prefers: long answers with", "no preferences; dislikes: emoji",
        "prefers: long, answers", "dislikes: bullet lists, emoji", "prefers: long answers\n", "prefers: Long answers",
    };
    int rejected = 0, first_wrong = -1;
    for (int i = 0; i < (int)(sizeof bad_text / sizeof *bad_text); i++) {
        int got[SYNTH_K], any = 0;
        int rc = synth_parse_description(bad_text[i], strlen(bad_text[i]), got);
        for (int k = 0; k < SYNTH_K; k++) any |= got[k];
        if (rc == -1 && !any) rejected++;
        else if (first_wrong < 0) first_wrong = i;
    }
    check(first_wrong < 0, "description parser rejects malformed text", "%d rejected; first accepted: '%s'", rejected,
          first_wrong < 0 ? "" : bad_text[first_wrong]);
    int got[SYNTH_K];
    const char *mixed = "dislikes: technical terms, emoji and bullet lists";
    int rc = synth_parse_description(mixed, strlen(mixed), got);
    check(rc == 0 && got[SYNTH_TECHNICAL] == -1 && got[SYNTH_EMOJI] == -1 && got[SYNTH_BULLETS] == -1 && got[SYNTH_LONG] == 0,
          "description parser: a hand-written dislikes list", "rc %d", rc);
}

static int attrs_binary(const double *a)
{
    for (int k = 0; k < SYNTH_K; k++)
        if (a[k] != 0 && a[k] != 1) return 0;
    return 1;
}

static void test_scorer_arbitrary_text(void)
{
    double a[SYNTH_K];
    int ok = 1;
    synth_score(NULL, 0, a);
    ok &= attrs_binary(a) && synth_attrs_to_mask(a) == 0;
    synth_score("", 0, a);
    ok &= attrs_binary(a) && synth_attrs_to_mask(a) == 0;
    check(ok, "scorer: empty input is all zeros", "NULL and \"\" with n = 0");

    Rng rng = rng_seed(99, 0);
    size_t cap = 1 << 20;
    char *buf = malloc(cap);
    long runs = 0;
    ok = 1;
    for (int i = 0; i < 3000; i++) {
        size_t n = rng_below(&rng, 4096);
        int kind = i % 3; /* raw bytes; printable ASCII with punctuation; UTF-8-ish high bytes */
        for (size_t j = 0; j < n; j++) {
            uint32_t r = rng_below(&rng, 256);
            buf[j] = kind == 0 ? (char)r : kind == 1 ? " \n.!?-*abcdefghij'"[r % 18] : (char)(0x80 + (r & 0x7F));
        }
        /* a copy of exactly n bytes, so ASan (make sanitize) catches any read past the end */
        char *exact = malloc(n ? n : 1);
        memcpy(exact, buf, n);
        synth_score(exact, n, a);
        free(exact);
        ok &= attrs_binary(a);
        runs++;
    }
    const char *edge[] = { "\xF0\x9F", "\xF0\x9F\x8E", "\xE2", "- ", "-", "!", "...", "\n\n\n", "'", "''''", "1.",
                           "\xE2\x80\xA2" };
    for (size_t i = 0; i < sizeof edge / sizeof *edge; i++) {
        size_t n = strlen(edge[i]);
        char *exact = malloc(n);
        memcpy(exact, edge[i], n);
        synth_score(exact, n, a);
        free(exact);
        ok &= attrs_binary(a);
    }
    /* a megabyte of NULs, then of word soup */
    memset(buf, 0, cap);
    synth_score(buf, cap, a);
    ok &= attrs_binary(a) && synth_attrs_to_mask(a) == 0;
    for (size_t j = 0; j < cap; j++) buf[j] = "Moreover the entropy was superb! "[j % 33];
    synth_score(buf, cap, a);
    ok &= attrs_binary(a) && a[SYNTH_LONG] && a[SYNTH_POSITIVE] && a[SYNTH_FORMAL] && a[SYNTH_TECHNICAL];
    free(buf);
    check(ok, "scorer: random bytes, broken UTF-8, NULs, 1 MB inputs give binary vectors", "%ld random inputs", runs);

    /* free text is read sensibly */
    struct {
        const char *text;
        unsigned want;
    } cases[] = {
        { "I love this movie! It is great! \xF0\x9F\x98\x80",
          (1u << SYNTH_LONG) | (1u << SYNTH_POSITIVE) | (1u << SYNTH_ENTHUSIASTIC) | (1u << SYNTH_EMOJI) },
        { "Honestly, it's kinda bad.", 0 },
        { "Moreover, the eigenvalues are elegant. Furthermore, it converges.",
          (1u << SYNTH_LONG) | (1u << SYNTH_POSITIVE) | (1u << SYNTH_FORMAL) | (1u << SYNTH_TECHNICAL) },
        { "- one thing\n- another thing", (1u << SYNTH_LONG) | (1u << SYNTH_BULLETS) },
        { "1. first step\n2. second step", (1u << SYNTH_LONG) | (1u << SYNTH_BULLETS) },
        { "e.g. 3.5 is fine", 0 },
        { "Wow!!! It was boring. Really boring.", 1u << SYNTH_LONG },
        { "Wow! Fine.", (1u << SYNTH_LONG) | (1u << SYNTH_ENTHUSIASTIC) },
        { "no punctuation at all", 0 },
        { "Good \xE2\x9C\xA8 stuff", 1u << SYNTH_EMOJI }, /* good vs casual 'stuff': positive, casual */
    };
    cases[9].want |= 1u << SYNTH_POSITIVE;
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        unsigned got = score_mask(cases[i].text, strlen(cases[i].text));
        char g[16], w[16], name[64];
        mask_str(got, g);
        mask_str(cases[i].want, w);
        snprintf(name, sizeof name, "scorer on free text #%zu", i + 1);
        check(got == cases[i].want, name, "'%s': got %s want %s", flat(cases[i].text), g, w);
    }
    /* a NUL inside the text is just a byte */
    static const char with_nul[] = "Great film.\0 Moreover, superb!";
    SynthEvidence ev;
    synth_score_evidence(with_nul, sizeof with_nul - 1, &ev, a);
    check(ev.sentences == 2 && ev.positive == 2 && ev.formal == 1, "scorer reads past a NUL byte",
          "%d sentences, %d positive, %d formal", ev.sentences, ev.positive, ev.formal);

    double w[SYNTH_K] = { 1, -1, 0, 0, 0.5, 0, 0 }, x[SYNTH_K] = { 1, 1, 1, 0, 1, 0, 0 };
    check(synth_reward(w, x) == 0.5, "reward is w . a", "%g", synth_reward(w, x));
    check(fabs(synth_bt_prob(1, 0, 1) - sigmoid(1)) < 1e-15 && synth_bt_prob(0, 1, 0) == 0 &&
              synth_bt_prob(-1e6, 1e6, 1e-3) == 0 && synth_bt_prob(1e6, -1e6, 1e-3) == 1,
          "Bradley-Terry probability, also at extreme margins", "sigmoid(1) = %.6f", synth_bt_prob(1, 0, 1));
    int parse_ok = synth_flavor_parse("reviews") == SYNTH_REVIEWS && synth_flavor_parse("elix") == SYNTH_ELIX &&
                   synth_flavor_parse("roleplay") == SYNTH_ROLEPLAY && synth_flavor_parse("all") == SYNTH_ALL &&
                   synth_flavor_parse("bogus") == -1 && synth_flavor_parse(NULL) == -1;
    check(parse_ok, "flavour names parse", "reviews, elix, roleplay, all; bogus and NULL rejected");
}

/* ---- io/jsonl_write.c ---- */

static int file_exists(const char *p)
{
    struct stat sb;
    return stat(p, &sb) == 0;
}

static char *read_all(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)size + 1);
    *n = fread(s, 1, (size_t)size, f);
    s[*n] = '\0';
    fclose(f);
    return s;
}

static int json_str_is(json_t *obj, const char *key, const char *s, size_t n)
{
    json_t *v = json_object_get(obj, key);
    return v && json_is_string(v) && json_string_length(v) == n && !memcmp(json_string_value(v), s, n);
}

static void test_jsonl_writer(void)
{
    char dir[] = "/tmp/fspo-synth-test.XXXXXX";
    if (!mkdtemp(dir)) {
        check(0, "jsonl writer: temp dir", "mkdtemp failed");
        return;
    }
    char path[256], tmp[300], err[512];
    snprintf(path, sizeof path, "%s/rows.jsonl", dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);

    static const char prompt[] = "say \"hi\"\n\tthen\0stop"; /* quotes, control bytes, a NUL */
    static const char emoji_text[] = "- line one!\n- two \xF0\x9F\x8E\xAC";
    JsonlWriter *w = jsonl_writer_open(path, err, sizeof err);
    PrefRow r1 = { .user_id = "u1", .prompt = prompt, .prompt_len = sizeof prompt - 1, .chosen = emoji_text,
                   .chosen_len = sizeof emoji_text - 1, .rejected = "no", .rejected_len = 2,
                   .user_description = "prefers: emoji", .user_description_len = 14 };
    PrefRow r2 = { .user_id = "u2", .prompt = "p", .prompt_len = 1, .chosen = "c", .chosen_len = 1,
                   .rejected = "r", .rejected_len = 1 };
    double weights[SYNTH_K] = { 0.123456, -1, 0, 1e-6, -0.5, 2, 0 };
    UserTruth t = { .user_id = "u1", .flavor = "elix", .description = "prefers: emoji", .n_attrs = SYNTH_K,
                    .weights = weights, .attr_names = synth_attr_names, .temperature = 0.1, .scorer_version = 1 };
    int rc = w ? jsonl_write_row(w, &r1) | jsonl_write_row(w, &r2) | jsonl_write_truth(w, &t) : -1;
    check(rc == 0 && file_exists(tmp) && !file_exists(path), "jsonl writer: writes FILE.tmp until closed", "%s", err);
    rc = w ? jsonl_writer_close(w, err, sizeof err) : -1;
    check(rc == 0 && file_exists(path) && !file_exists(tmp), "jsonl writer: close renames into place", "%s", err);

    size_t n = 0;
    char *text = read_all(path, &n);
    int lines = 0, ok = text != NULL;
    json_t *row[3] = { NULL, NULL, NULL };
    for (char *line = text, *nl; ok && line && (nl = strchr(line, '\n')); line = nl + 1, lines++) {
        json_error_t je;
        json_t *o = json_loadb(line, (size_t)(nl - line), JSON_ALLOW_NUL, &je);
        if (!o || lines >= 3) ok = 0;
        else row[lines] = o;
    }
    ok &= lines == 3 && n > 0 && text[n - 1] == '\n';
    if (ok) {
        ok &= json_str_is(row[0], "prompt", prompt, sizeof prompt - 1);
        ok &= json_str_is(row[0], "chosen", emoji_text, sizeof emoji_text - 1);
        ok &= json_str_is(row[0], "user_description", "prefers: emoji", 14);
        ok &= json_str_is(row[1], "user_id", "u2", 2) && !json_object_get(row[1], "user_description");
        ok &= strstr(text, "\\u0000") != NULL && strstr(text, "\xF0\x9F\x8E\xAC") != NULL; /* NUL escaped, UTF-8 raw */
        json_t *ws = json_object_get(row[2], "weights");
        for (int k = 0; k < SYNTH_K; k++) ok &= json_real_value(json_array_get(ws, (size_t)k)) == weights[k];
        ok &= json_array_size(ws) == SYNTH_K && json_array_size(json_object_get(row[2], "attr_names")) == SYNTH_K;
        ok &= json_integer_value(json_object_get(row[2], "scorer_version")) == 1;
        ok &= json_real_value(json_object_get(row[2], "temperature")) == 0.1 && strstr(text, "\"temperature\":0.1,");
    }
    check(ok, "jsonl writer: rows and truth round-trip (NUL, quotes, emoji, exact weights)", "%d lines: %.300s", lines,
          text ? flat(text) : "(unreadable)");
    for (int i = 0; i < 3; i++) json_decref(row[i]);
    free(text);

    /* fspo synth --population r4's extra fields: a row's split, the truth's population and interpolated;
     * the row reader (fspo prep) reads the split, the truth reader ([eval]) ignores the other two */
    char hint_path[256], truth_path[256];
    snprintf(hint_path, sizeof hint_path, "%s/hint.jsonl", dir);
    snprintf(truth_path, sizeof truth_path, "%s/hint.truth.jsonl", dir);
    PrefRow hinted = r1;
    hinted.split = "test";
    UserTruth t2 = t, t3 = t, t4 = t;
    t4.user_id = "u3";
    t2.population = "r4", t2.has_split = 1, t2.interpolated = 1;
    t3.user_id = "u2", t3.population = "r4", t3.has_split = 1, t3.interpolated = 0;
    JsonlWriter *wr = jsonl_writer_open(hint_path, err, sizeof err);
    JsonlWriter *wt = jsonl_writer_open(truth_path, err, sizeof err);
    rc = -1;
    if (wr && wt) {
        rc = jsonl_write_row(wr, &hinted) | jsonl_write_row(wr, &r2);
        rc |= jsonl_write_truth(wt, &t2) | jsonl_write_truth(wt, &t3) | jsonl_write_truth(wt, &t4);
        rc |= jsonl_writer_close(wr, err, sizeof err) | jsonl_writer_close(wt, err, sizeof err);
    } else {
        jsonl_writer_abort(wr);
        jsonl_writer_abort(wt);
    }
    text = read_all(hint_path, &n);
    char *ttext = read_all(truth_path, &n);
    ok = rc == 0 && text && ttext;
    ok = ok && strstr(text, "\"user_description\":\"prefers: emoji\",\"split\":\"test\"}\n") &&
         strstr(text, "\"rejected\":\"r\"}\n"); /* r2: no hint, no description */
    ok = ok && strstr(ttext, "\"population\":\"r4\",\"interpolated\":true}\n") &&
         strstr(ttext, "\"population\":\"r4\",\"interpolated\":false}\n") &&
         strstr(ttext, "\"weights\":[0.123456,-1.0,0.0,1e-6,-0.5,2.0,0.0]}\n"); /* t: neither field */
    check(ok, "jsonl writer: split on a row, population and interpolated in the truth when set", "%s%s",
          text ? flat(text) : err, ttext ? flat(ttext) : "");
    free(text);
    free(ttext);
    JsonlReader *rd = jsonl_reader_open(hint_path, 1 << 16, err, sizeof err);
    PrefRow row_in;
    long line_no = 0;
    int rows_read = 0, got, split_read = 0;
    while (rd && (got = jsonl_next_row(rd, &row_in, &line_no, err, sizeof err)) != 0) {
        rows_read += got == 1 ? 1 : 100;
        split_read += got == 1 && row_in.split && !strcmp(row_in.split, "test") && line_no == 1;
    }
    jsonl_reader_close(rd);
    TruthSet *ts = truth_read(truth_path, err, sizeof err);
    const UserTruth *u1 = ts ? truth_find(ts, "u1") : NULL;
    check(rows_read == 2 && split_read == 1 && u1 && truth_count(ts) == 3 && u1->weights[0] == 0.123456,
          "jsonl readers: the row's split is read, population and interpolated ignored", "%d rows read, truth %s: %s", rows_read,
          ts ? "read" : "refused", err);
    truth_free(ts);
    unlink(hint_path);
    unlink(truth_path);

    /* invalid UTF-8 is an error, sticky, and leaves no file behind */
    snprintf(path, sizeof path, "%s/bad.jsonl", dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    w = jsonl_writer_open(path, err, sizeof err);
    PrefRow bad = r2;
    bad.chosen = "caf\xE9";
    bad.chosen_len = 4;
    int first = w ? jsonl_write_row(w, &r2) : -1, second = w ? jsonl_write_row(w, &bad) : 0,
        third = w ? jsonl_write_row(w, &r2) : 0;
    rc = w ? jsonl_writer_close(w, err, sizeof err) : 0;
    check(first == 0 && second == -1 && third == -1 && rc == -1 && strstr(err, "line 2") && strstr(err, "chosen") &&
              strstr(err, "UTF-8") && !file_exists(path) && !file_exists(tmp),
          "jsonl writer: invalid UTF-8 rejected, no file written", "%s", err);

    w = jsonl_writer_open(path, err, sizeof err);
    double nan_w[SYNTH_K] = { NAN, 0, 0, 0, 0, 0, 0 };
    t.weights = nan_w;
    rc = w ? jsonl_write_truth(w, &t) : 0;
    int rc2 = w ? jsonl_writer_close(w, err, sizeof err) : 0;
    check(rc == -1 && rc2 == -1 && strstr(err, "not finite") && !file_exists(path), "jsonl writer: NaN weight rejected",
          "%s", err);

    w = jsonl_writer_open(path, err, sizeof err);
    if (w) jsonl_write_row(w, &r1);
    jsonl_writer_abort(w);
    check(w && !file_exists(path) && !file_exists(tmp), "jsonl writer: abort leaves nothing", "neither %s nor its .tmp", path);

    w = jsonl_writer_open("/nonexistent-dir/x.jsonl", err, sizeof err);
    check(!w && strstr(err, "/nonexistent-dir/x.jsonl.tmp"), "jsonl writer: unwritable path names it", "%s", err);
    snprintf(path, sizeof path, "%s/rows.jsonl", dir);
    unlink(path);
    check(rmdir(dir) == 0, "jsonl writer: no stray files", "%s holds only what the test wrote", dir);
}

int main(void)
{
    test_scorer_exact_on_grammar();
    test_generated_pairs();
    test_minimal_pairs();
    test_attribute_subsets();
    test_bradley_terry();
    test_populations();
    test_determinism();
    test_weights_and_descriptions();
    test_description_parser();
    test_scorer_arbitrary_text();
    test_jsonl_writer();
    return check_status();
}
