/* `fspo prep IN.jsonl -o OUT.h5`: tokenize a JSONL preference dataset into
 * the HDF5 dataset container, with train / validation / test users.
 * The logic is in prep.c; this file parses flags and does the talking:
 * bad lines as they are found, a progress line, the summary at the end. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "src/cli/cli.h"
#include "src/cli/commands.h"
#include "src/prep.h"
#include "src/util.h"

/* Bad lines printed one by one before the rest are only counted: a broken
 * export can have millions, and the kinds summary says it all after this. */
#define PREP_SHOWN_BAD_LINES 50
/* Files above this get a progress line even when stderr is not a terminal. */
#define PREP_PROGRESS_BYTES (8u << 20)

static const char usage_text[] =
    "usage: fspo prep IN.jsonl -o OUT.h5 [--tokenizer bytes|bpe:V|FILE.json [--add-structure-tokens]]\n"
    "                 [--strict] [--val-frac V] [--test-frac T] [--all-test] [--seed S]\n"
    "                 [--min-pairs M] [--max-line-bytes B] [--prompt-key K] [--chosen-key K]\n"
    "                 [--rejected-key K] [--user-key K] [--label-key K] [--quiet]\n\n"
    "Reads one preference pair per line,\n"
    "  {\"user_id\": \"u1\", \"prompt\": \"...\", \"chosen\": \"...\", \"rejected\": \"...\",\n"
    "   \"user_description\": \"...\", \"split\": \"test\"}  (description and split are optional)\n"
    "groups the pairs by user (users in order of first appearance, pairs in input\n"
    "order), puts every user in one of three splits (train: the only users trained\n"
    "on; validation: to choose settings on; test: scored once per finished design),\n"
    "tokenizes all text and writes the HDF5 dataset (docs/formats.md). OUT.h5\n"
    "appears only when complete.\n\n"
    "  -o, --output OUT.h5   the dataset to write\n"
    "  --tokenizer T         bytes (default): one id per byte, 264 ids; bpe:V: learn a\n"
    "                        byte-level BPE of V ids (>= 264) from the training users' text\n"
    "                        only (never validation or test users'; the same text gives the\n"
    "                        same tokenizer); FILE.json: a Hugging Face tokenizer.json (byte-\n"
    "                        level BPE) that holds fspo's structure tokens <|bos|> <|eos|>\n"
    "                        <|example|> <|question|> <|preferred|> <|dispreferred|> <|task|>\n"
    "                        <|user|> as special added tokens ('fspo tokenizer train' writes\n"
    "                        such files; others are refused, with the token named, unless\n"
    "                        --add-structure-tokens); FILE.h5:\n"
    "                        the tokenizer of that dataset or checkpoint (new users for a\n"
    "                        trained model). The dataset stores the tokenizer, checkpoints\n"
    "                        copy it; set model.vocab to its size (prep prints it)\n"
    "  --add-structure-tokens\n"
    "                        with FILE.json (a pretrained model's own tokenizer, say): append\n"
    "                        the structure tokens it lacks as special added tokens after its\n"
    "                        ids (tokens it has are reused; prep prints what it added); the\n"
    "                        dataset stores the result, and a Hugging Face directory with\n"
    "                        FILE.json imported for it grows its embeddings to match\n"
    "                        (docs/interop.md)\n"
    "  --prompt-key K, --chosen-key K, --rejected-key K, --user-key K\n"
    "                        read the columns from fields with other names (the OpenRLHF\n"
    "                        --chosen_key idea); user_description and split keep theirs\n"
    "  --label-key K         rows hold two responses, in the fields --chosen-key and\n"
    "                        --rejected-key name, and field K says which one is preferred:\n"
    "                        1, true or the first field's name: the first; 0, false or the\n"
    "                        second's name: the second. FSPO's datasets: --user-key\n"
    "                        scorer_level --chosen-key response_x --rejected-key response_y\n"
    "                        --label-key label (docs/formats.md)\n"
    "  --strict              the first bad line is an error (exit 2); nothing is written\n"
    "                        (users below --min-pairs are still dropped with a count)\n"
    "  --val-frac V          fraction of users in the validation split, in [0, 1) (0.1)\n"
    "  --test-frac T         fraction of users in the test split, in [0, 1) (0.1); V + T < 1.\n"
    "                        One hash of (seed, user_id), u in [0, 1), decides: u < T test,\n"
    "                        u < T + V validation, else train. So a user's split does not\n"
    "                        depend on line order or on other users\n"
    "  --heldout-frac F      the old flag: --test-frac F --val-frac 0 (the same users as a\n"
    "                        version-1 dataset's held-out ones); not with the two above\n"
    "  --all-test            every user is a test user, whatever the hash or a row says\n"
    "                        (new users to evaluate a trained model on)\n"
    "  --seed S              seed of the split (1234)\n"
    "  --min-pairs M         drop users with fewer pairs, counted (5 = 4 few-shot + 1 query)\n"
    "  --max-line-bytes B    longer lines are bad lines, never read whole (1M; K/M/G suffixes)\n"
    "  --quiet               no progress line and no counts; bad lines are still reported\n\n"
    "Input rules: user_id is a non-empty string or an integer (7 and \"7\" are one user);\n"
    "prompt, chosen and rejected are non-empty strings (any Unicode, \\u0000 included);\n"
    "user_description, if present, is a string (\"\" = none; a user's first one is kept);\n"
    "split, if present, is \"train\", \"validation\" or \"test\" and puts the user in that\n"
    "split whatever the hash (rows of one user naming two splits: exit 2);\n"
    "other fields are ignored; blank lines are skipped silently; the last line needs\n"
    "no newline. A bad line is malformed JSON, not an object, a missing, non-string or\n"
    "empty field, chosen == rejected, a duplicate (same user, prompt, chosen and\n"
    "rejected as an earlier line), or a line over the length limit. Each is reported\n"
    "on stderr as IN.jsonl:LINE: reason (the first 50, then a count), followed by a\n"
    "summary by kind; by default bad lines are skipped.\n\n"
    "Exit 0 done; 1 read/write failure; 2 bad usage or input (missing file, unwritable\n"
    "output, a bad line with --strict, no user left with --min-pairs pairs, no\n"
    "training user without --all-test, a user's rows naming two splits).\n";

typedef struct {
    int quiet, tty, progress;
    long shown;           /* bad lines printed */
    int64_t unshown;      /* bad lines only counted */
    int progress_visible; /* a \r line is on the terminal and must be cleared first */
    double t0, last;
    int last_decile;
} Report;

static void clear_progress(Report *r)
{
    if (r->progress_visible) fputs("\r\033[K", stderr);
    r->progress_visible = 0;
}

static void on_bad_line(void *ctx, long line_no, const char *msg)
{
    Report *r = ctx;
    if (r->shown >= PREP_SHOWN_BAD_LINES) {
        r->unshown++;
        return;
    }
    clear_progress(r);
    char shown[8192]; /* the file name and the reason may carry control characters */
    fprintf(stderr, "%s\n", str_escape(shown, sizeof shown, msg));
    r->shown++;
}

/* On a terminal: one line redrawn at most 10 times a second. In a log: a
 * plain line per tenth of the file, so a Slurm log is not one huge line.
 * The end of the input is always shown: tokenizing and writing follow. */
static void on_progress(void *ctx, uint64_t done, uint64_t total, int64_t rows)
{
    Report *r = ctx;
    if (!r->progress) return;
    double now = now_seconds(), mb = 1e-6 * (double)done, pct = total ? 100.0 * (double)done / (double)total : 0;
    int decile = (int)(pct / 10), end = total && done >= total;
    if (!end && (r->tty ? now - r->last < 0.1 : decile == r->last_decile)) return;
    r->last = now, r->last_decile = decile;
    double rate = mb / (now - r->t0 > 1e-9 ? now - r->t0 : 1e-9);
    fprintf(stderr, "%sprep: %.1f / %.1f MB (%.0f%%), %lld rows, %.1f MB/s%s%s", r->tty ? "\r\033[K" : "", mb,
            1e-6 * (double)total, pct, (long long)rows, rate, end ? "; tokenizing and writing" : "",
            r->tty ? "" : "\n");
    r->progress_visible = r->tty;
}

static double parse_frac(int argc, char **argv, int *i)
{
    const char *opt = argv[*i], *s = cli_str("prep", argc, argv, i);
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end) fatal(EXIT_USAGE, "prep: %s: '%s' is not a number", opt, s);
    if (!(v >= 0 && v < 1))
        fatal(EXIT_USAGE, "prep: %s: %s is outside [0, 1)%s", opt, s,
              v == 1 && strcmp(opt, "--val-frac") ? "; --all-test puts every user in the test split" : "");
    return v;
}

/* A non-negative integer up to `hi`, with an optional K/M/G (binary) suffix when `suffixes`. */
static uint64_t parse_count(int argc, char **argv, int *i, uint64_t lo, uint64_t hi, int suffixes)
{
    const char *opt = argv[*i], *s = cli_str("prep", argc, argv, i);
    char *end = NULL;
    errno = 0;
    unsigned long long v = s[0] >= '0' && s[0] <= '9' ? strtoull(s, &end, 10) : 0;
    int shift = 0;
    if (end && suffixes && *end && !end[1]) {
        const char *units = "KMG", *u = strchr(units, end[0] & ~0x20); /* k or K */
        if (u) shift = 10 * (int)(u - units + 1), end++;
    }
    if (!end || errno || end == s || *end) fatal(EXIT_USAGE, "prep: %s: '%s' is not a non-negative integer", opt, s);
    if (shift && v > (hi >> shift)) v = hi + 1;
    else v <<= shift;
    if (v < lo || v > hi)
        fatal(EXIT_USAGE, "prep: %s: %s is outside [%llu, %llu]", opt, s, (unsigned long long)lo,
              (unsigned long long)hi);
    return v;
}

/* A field name: not empty. */
static const char *key_arg(int argc, char **argv, int *i)
{
    const char *opt = argv[*i], *k = cli_str("prep", argc, argv, i);
    if (!*k) fatal(EXIT_USAGE, "prep: %s: the field name is empty", opt);
    return k;
}

static void print_bad_line_summary(const PrepStats *s, const Report *r)
{
    if (r->unshown) fprintf(stderr, "... and %lld more bad lines\n", (long long)r->unshown);
    if (!s->bad_lines) return;
    fprintf(stderr, "prep: skipped %lld bad lines of %ld:\n", (long long)s->bad_lines, s->lines);
    for (int k = 0; k < s->n_kinds; k++)
        fprintf(stderr, "  %8lld  %s (first: line %ld)\n", (long long)s->kinds[k].count, s->kinds[k].kind,
                s->kinds[k].first_line);
}

static void print_warnings(const PrepOptions *o, const PrepStats *s)
{
    if (s->dropped_users)
        fprintf(stderr, "prep: dropped %lld user%s with fewer than %lld pairs (%lld pairs): %s\n",
                (long long)s->dropped_users, s->dropped_users == 1 ? "" : "s", (long long)o->min_pairs,
                (long long)s->dropped_pairs, str_escape((char[2048]){ 0 }, 2048, s->dropped_example));
    if (s->description_conflicts)
        fprintf(stderr, "prep: %lld later row%s a user a description other than the user's first; the first "
                        "is kept\n",
                (long long)s->description_conflicts, s->description_conflicts == 1 ? " gives" : "s give");
    if (o->all_test) return;
    const double frac[SPLIT_COUNT] = { 0, o->val_frac, o->test_frac };
    const char *flag[SPLIT_COUNT] = { "", "--val-frac", "--test-frac" };
    for (int k = SPLIT_VALIDATION; k <= SPLIT_TEST; k++)
        if (s->users > s->forced_users && frac[k] > 0 && s->split_users[k] == 0) /* some users were hashed */
            fprintf(stderr, "prep: no %s user (%lld users, %s %g): evaluation needs some; raise the fraction or "
                            "change --seed\n",
                    dataset_split_name(k), (long long)s->users, flag[k], frac[k]);
}

static void print_counts(const PrepOptions *o, const PrepStats *s)
{
    double mb = 1e-6 * (double)s->bytes_read, secs = s->seconds > 1e-9 ? s->seconds : 1e-9;
    printf("prep: %s -> %s\n", o->in_path, o->out_path);
    char how[160];
    if (o->all_test) snprintf(how, sizeof how, "--all-test");
    else
        snprintf(how, sizeof how, "--val-frac %g, --test-frac %g, --seed %llu; %lld by a row's split", o->val_frac,
                 o->test_frac, (unsigned long long)o->seed, (long long)s->forced_users);
    printf("  users   %lld: %lld train / %lld validation / %lld test (%s); %lld dropped with fewer than %lld pairs\n",
           (long long)s->users, (long long)s->split_users[SPLIT_TRAIN], (long long)s->split_users[SPLIT_VALIDATION],
           (long long)s->split_users[SPLIT_TEST], how, (long long)s->dropped_users, (long long)o->min_pairs);
    printf("  pairs   %lld: %lld train / %lld validation / %lld test; per user min %lld / median %lld / max %lld\n",
           (long long)s->pairs, (long long)s->split_pairs[SPLIT_TRAIN], (long long)s->split_pairs[SPLIT_VALIDATION],
           (long long)s->split_pairs[SPLIT_TEST], (long long)s->pairs_min, (long long)s->pairs_median,
           (long long)s->pairs_max);
    printf("  tokens  %lld (%.2f bytes/token; tokenizer %s, model.vocab %lld); %lld users with a description\n",
           (long long)s->tokens, s->tokens ? (double)s->text_bytes / (double)s->tokens : 0.0, s->tokenizer,
           (long long)s->vocab, (long long)s->users_with_description);
    if (o->add_structure_tokens)
        printf("  added   %s%s\n", s->structure_added[0] ? s->structure_added : "nothing: the file has all of fspo's "
                                                                               "structure tokens",
               s->structure_added[0] ? " (fspo's structure tokens the file lacked, as special added tokens)" : "");
    if (s->tokenizer_bytes)
        printf("  learned %s from %.2f MB of the training users' text in %.2f s%s\n", o->tokenizer,
               1e-6 * (double)s->tokenizer_bytes, s->tokenizer_seconds,
               s->vocab < atol(o->tokenizer + 4) ? "; stopped early: no pair of tokens left occurs twice" : "");
    printf("  lines   %ld read: %lld rows kept, %lld bad lines skipped\n", s->lines, (long long)s->rows_ok,
           (long long)s->bad_lines);
    printf("  speed   %.2f MB in %.2f s: %.1f MB/s\n", mb, s->seconds, mb / secs);
}

int cmd_prep(int argc, char **argv)
{
    PrepOptions o = { .val_frac = 0.1, .test_frac = 0.1, .seed = 1234, .min_pairs = 5, .max_line_bytes = 1u << 20 };
    Report rep = { 0 };
    const char *frac_flag = NULL, *heldout_flag = NULL; /* --val-frac or --test-frac given; --heldout-frac given */
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (cli_is_help(a)) {
            fputs(usage_text, stdout);
            return EXIT_OK;
        }
        if (!strcmp(a, "-o") || !strcmp(a, "--output")) o.out_path = cli_str("prep", argc, argv, &i);
        else if (!strcmp(a, "--strict")) o.strict = 1;
        else if (!strcmp(a, "--quiet")) rep.quiet = 1;
        else if (!strcmp(a, "--val-frac")) o.val_frac = parse_frac(argc, argv, &i), frac_flag = a;
        else if (!strcmp(a, "--test-frac")) o.test_frac = parse_frac(argc, argv, &i), frac_flag = a;
        else if (!strcmp(a, "--heldout-frac")) {
            o.test_frac = parse_frac(argc, argv, &i), o.val_frac = 0;
            heldout_flag = a;
        } else if (!strcmp(a, "--all-test")) o.all_test = 1;
        else if (!strcmp(a, "--seed")) o.seed = parse_count(argc, argv, &i, 0, INT64_MAX, 0);
        else if (!strcmp(a, "--min-pairs")) o.min_pairs = (int64_t)parse_count(argc, argv, &i, 1, 1u << 30, 0);
        else if (!strcmp(a, "--max-line-bytes"))
            o.max_line_bytes = (size_t)parse_count(argc, argv, &i, 64, 1u << 30, 1);
        else if (!strcmp(a, "--tokenizer")) o.tokenizer = cli_str("prep", argc, argv, &i);
        else if (!strcmp(a, "--add-structure-tokens")) o.add_structure_tokens = 1;
        else if (!strcmp(a, "--prompt-key")) o.keys.prompt = key_arg(argc, argv, &i);
        else if (!strcmp(a, "--chosen-key")) o.keys.chosen = key_arg(argc, argv, &i);
        else if (!strcmp(a, "--rejected-key")) o.keys.rejected = key_arg(argc, argv, &i);
        else if (!strcmp(a, "--user-key")) o.keys.user_id = key_arg(argc, argv, &i);
        else if (!strcmp(a, "--label-key")) o.keys.label = key_arg(argc, argv, &i);
        else if (a[0] == '-' && a[1]) fatal(EXIT_USAGE, "prep: unknown option '%s' (see 'fspo prep --help')", a);
        else if (o.in_path) fatal(EXIT_USAGE, "prep: more than one input file ('%s' and '%s')", o.in_path, a);
        else o.in_path = a;
    }
    if (!o.in_path) fatal(EXIT_USAGE, "prep: no input file (usage: fspo prep IN.jsonl -o OUT.h5)");
    const char *kc = o.keys.chosen ? o.keys.chosen : "chosen", *kr = o.keys.rejected ? o.keys.rejected : "rejected";
    if (!strcmp(kc, kr)) fatal(EXIT_USAGE, "prep: the chosen and rejected columns are both field '%s'", kc);
    if (!o.out_path) fatal(EXIT_USAGE, "prep: no output file: add -o OUT.h5");
    char out_tmp[4200]; /* written first, then renamed to OUT.h5 */
    snprintf(out_tmp, sizeof out_tmp, "%s.tmp", o.out_path);
    if (same_file(o.in_path, out_tmp))
        fatal(EXIT_USAGE, "prep: -o %s is written as %s first, which is the input: choose another output name",
              o.out_path, out_tmp);
    if (heldout_flag && frac_flag)
        fatal(EXIT_USAGE, "prep: --heldout-frac F is the old form of --test-frac F --val-frac 0; use one form, not "
                          "both (%s given too)",
              frac_flag);
    if (o.all_test && (frac_flag || heldout_flag))
        fatal(EXIT_USAGE, "prep: --all-test puts every user in the test split; it takes no %s",
              frac_flag ? frac_flag : heldout_flag);
    if (!(o.val_frac + o.test_frac < 1))
        fatal(EXIT_USAGE, "prep: --val-frac %g + --test-frac %g = %g leaves no training user; the sum must be below 1 "
                          "(--all-test for a file that is only evaluated)",
              o.val_frac, o.test_frac, o.val_frac + o.test_frac);
    if (o.all_test) o.val_frac = 0, o.test_frac = 0; /* unused: every user is a test user */

    struct stat st; /* only for the progress decision; prep_run reports a missing file */
    int big = stat(o.in_path, &st) == 0 && st.st_size > (off_t)PREP_PROGRESS_BYTES;
    rep.tty = isatty(STDERR_FILENO);
    rep.progress = !rep.quiet && (rep.tty || big);
    rep.t0 = now_seconds(), rep.last_decile = 0;
    o.on_bad_line = on_bad_line, o.on_progress = on_progress, o.ctx = &rep;

    PrepStats s;
    char err[4600]; /* room for two paths */
    int rc = prep_run(&o, &s, err, sizeof err);
    clear_progress(&rep);
    if (!o.strict) print_bad_line_summary(&s, &rep); /* strict: the one bad line is the error below */
    if (rc != 0) fatal(rc, "%s", err);
    print_warnings(&o, &s);
    if (!rep.quiet) print_counts(&o, &s);
    return EXIT_OK;
}
