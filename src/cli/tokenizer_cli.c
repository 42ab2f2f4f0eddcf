/* `fspo tokenizer`: learn a byte-level BPE into a Hugging Face
 * tokenizer.json, and encode, decode and split text with one. The logic is
 * in tokenizer_bpe.c (src) and tokenizer_json.c (io). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "io/jsonl.h"
#include "io/tokenizer_json.h"
#include "src/cli/cli.h"
#include "src/cli/commands.h"
#include "src/tokenizer.h"
#include "src/util.h"

static const char usage_text[] =
    "usage: fspo tokenizer train CORPUS... --vocab V -o TOK.json [--min-count N] [--quiet]\n"
    "       fspo tokenizer encode TOK.json TEXT|- | --file F...\n"
    "       fspo tokenizer decode TOK.json [--skip-special] ID...|-\n"
    "       fspo tokenizer split TEXT|-\n"
    "       fspo tokenizer stats TOK.json DATA.jsonl\n"
    "       fspo tokenizer export DATA.h5|CKPT.h5 -o TOK.json\n\n"
    "Byte-level BPE in Hugging Face's tokenizer.json format (GPT-2 style: ByteLevel\n"
    "pre-tokenizer with the GPT-2 regex, BPE model, ByteLevel decoder), with ids\n"
    "equal to Hugging Face tokenizers' for the same file (docs/formats.md).\n\n"
    "  train    learns a BPE of V tokens from the corpus files: a .jsonl file is read\n"
    "           as preference rows (prompt, chosen, rejected and user_description are\n"
    "           texts), any other file line by line (each line with its newline is a\n"
    "           text). Ids 0..255 are the bytes, 256..263 fspo's special tokens\n"
    "           (<|bos|>, <|eos|>, ...; never learned from text), merges follow.\n"
    "           Stops early when no pair occurs --min-count times (default 2).\n"
    "           Deterministic: the same corpus gives the same file in any order.\n"
    "  encode   prints the ids of TEXT ('-' reads stdin) on one line; with --file,\n"
    "           one line per file, each file's whole content one text\n"
    "  decode   writes the bytes of the ids (arguments, or whitespace-separated on\n"
    "           stdin with '-'); --skip-special drops special tokens\n"
    "  split    prints the pre-tokenizer's pieces of TEXT, one per line, in byte-level\n"
    "           characters as Hugging Face shows them (a space is \xC4\xA0, a newline \xC4\x8A)\n"
    "  stats    average tokens per prompt and per answer against bytes on a\n"
    "           preference JSONL, and the encoding speed\n"
    "  export   writes the tokenizer.json a dataset (fspo prep --tokenizer) or a\n"
    "           checkpoint carries (exit 2 if it has the byte tokenizer, which has none)\n\n"
    "Exit 0 done; 1 read/write failure; 2 bad usage or input (an unreadable or\n"
    "unsupported tokenizer.json, a bad corpus line).\n";

/* Speeds are reported per second of this process's CPU time too: on a
 * shared machine wall-clock speeds say more about the neighbours. */
static double cpu_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double per_s(double x, double s) { return x / (s > 1e-9 ? s : 1e-9); }

/* ---- input ---- */

static char *read_all(FILE *f, const char *name, size_t *n)
{
    char *buf = read_stream(f, n);
    if (!buf && errno == ENOMEM) fatal(EXIT_RUNTIME, "tokenizer: out of memory reading %s", name);
    if (!buf) fatal(EXIT_RUNTIME, "tokenizer: read error on %s", name);
    return buf;
}

static char *read_file(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f) fatal(EXIT_USAGE, "tokenizer: %s: cannot open: %s", path, strerror(errno));
    char *s = read_all(f, path, n);
    fclose(f);
    return s;
}

/* TEXT, or stdin for "-". */
static char *text_arg(const char *arg, size_t *n)
{
    if (!strcmp(arg, "-")) return read_all(stdin, "stdin", n);
    *n = strlen(arg);
    char *s = malloc(*n + 1);
    if (!s) fatal(EXIT_RUNTIME, "tokenizer: out of memory");
    memcpy(s, arg, *n + 1);
    return s;
}

static Bpe *load(const char *path)
{
    char err[1024];
    Bpe *b = tokenizer_json_read(path, err, sizeof err);
    if (!b) fatal(EXIT_USAGE, "tokenizer: %s", err);
    return b;
}

static int has_suffix(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcmp(s + n - k, suffix);
}

/* Feeds each row's texts to fn; stops at the first bad line (exit 2). */
static void for_each_row(const char *path, void (*fn)(void *ctx, const PrefRow *row), void *ctx)
{
    char err[1024];
    JsonlReader *r = jsonl_reader_open(path, (size_t)1 << 26, err, sizeof err);
    if (!r) fatal(EXIT_USAGE, "tokenizer: %s", err);
    PrefRow row;
    long line;
    int rc;
    while ((rc = jsonl_next_row(r, &row, &line, err, sizeof err)) == 1) fn(ctx, &row);
    jsonl_reader_close(r);
    if (rc < 0) fatal(rc == -1 ? EXIT_USAGE : EXIT_RUNTIME, "tokenizer: %s", err);
}

/* ---- train ---- */

static void add_row(void *ctx, const PrefRow *row)
{
    BpeCorpus *c = ctx;
    bpe_corpus_add(c, row->prompt, row->prompt_len);
    bpe_corpus_add(c, row->chosen, row->chosen_len);
    bpe_corpus_add(c, row->rejected, row->rejected_len);
    if (row->user_description) bpe_corpus_add(c, row->user_description, row->user_description_len);
}

static void add_lines(BpeCorpus *c, const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) fatal(EXIT_USAGE, "tokenizer: %s: cannot open: %s", path, strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, f)) > 0) bpe_corpus_add(c, line, (size_t)n);
    if (ferror(f)) fatal(EXIT_RUNTIME, "tokenizer: %s: read error", path);
    free(line);
    fclose(f);
}

static int train(int argc, char **argv)
{
    const char *cmd = "tokenizer train", *out = NULL;
    BpeLearnOptions opt = { .vocab_size = 0, .min_count = 2 };
    int quiet = 0, n_files = 0;
    const char **files = calloc((size_t)argc, sizeof *files);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-o") || !strcmp(a, "--output")) out = cli_str(cmd, argc, argv, &i);
        else if (!strcmp(a, "--vocab")) opt.vocab_size = cli_int(cmd, argc, argv, &i, TOKENIZER_VOCAB, 1 << 24);
        else if (!strcmp(a, "--min-count")) opt.min_count = cli_int(cmd, argc, argv, &i, 1, 2147483647);
        else if (!strcmp(a, "--quiet")) quiet = 1;
        else if (a[0] == '-' && a[1])
            fatal(EXIT_USAGE, "%s: unknown option '%s' (see 'fspo tokenizer --help')", cmd, a);
        else files[n_files++] = a;
    }
    if (!n_files) fatal(EXIT_USAGE, "%s: no corpus file given", cmd);
    if (!opt.vocab_size) fatal(EXIT_USAGE, "%s: --vocab V is required", cmd);
    if (!out) fatal(EXIT_USAGE, "%s: -o TOK.json is required", cmd);
    /* the output (and its .tmp, written first) must not be a corpus file: it would be destroyed */
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", out);
    for (int i = 0; i < n_files; i++)
        if (same_file(out, files[i]) || same_file(tmp, files[i]))
            fatal(EXIT_USAGE, "%s: -o %s would overwrite %s, a corpus file: choose another name", cmd, out, files[i]);
    double t0 = now_seconds(), c0 = cpu_seconds();
    BpeCorpus *c = bpe_corpus_new();
    for (int i = 0; i < n_files; i++) {
        if (has_suffix(files[i], ".jsonl")) for_each_row(files[i], add_row, c);
        else add_lines(c, files[i]);
    }
    double t1 = now_seconds(), c1 = cpu_seconds();
    char err[1024];
    BpeLearnStats st;
    Bpe *b = bpe_learn(c, &opt, &st, err, sizeof err);
    if (!b) fatal(EXIT_USAGE, "%s: %s", cmd, err);
    double t2 = now_seconds(), c2 = cpu_seconds();
    if (tokenizer_json_write(b, out, err, sizeof err) != 0) fatal(EXIT_RUNTIME, "%s: %s", cmd, err);
    if (!quiet) {
        double mb = (double)st.bytes / 1e6;
        fprintf(stderr,
                "tokenizer: %.2f MB, %lld pieces (%lld distinct, %lld distinct pairs)\n"
                "tokenizer: reading and counting %.2f s (%.2f s CPU), merging %.2f s (%.2f s CPU)\n"
                "tokenizer: learned at %.1f MB/s of CPU time (%.1f MB/s wall): %d merges, vocabulary %d%s\n"
                "tokenizer: wrote %s\n",
                mb, (long long)st.pieces, (long long)st.unique_pieces, (long long)st.pairs, t1 - t0, c1 - c0,
                t2 - t1, c2 - c1, per_s(mb, c2 - c0), per_s(mb, t2 - t0), st.merges, st.vocab,
                st.vocab < opt.vocab_size ? " (stopped early: no pair left occurs --min-count times)" : "", out);
    }
    bpe_free(b);
    bpe_corpus_free(c);
    free(files);
    return EXIT_OK;
}

/* ---- encode, decode, split ---- */

static void print_ids(const Bpe *b, const char *s, size_t n)
{
    int32_t *ids = malloc(sizeof *ids * (n ? n : 1));
    if (!ids) fatal(EXIT_RUNTIME, "tokenizer: out of memory");
    size_t k = bpe_encode(b, s, n, ids);
    for (size_t i = 0; i < k; i++) printf("%s%d", i ? " " : "", ids[i]);
    putchar('\n');
    free(ids);
}

static int encode(int argc, char **argv)
{
    const char *cmd = "tokenizer encode";
    if (argc < 3) fatal(EXIT_USAGE, "%s: usage: fspo tokenizer encode TOK.json TEXT|- | --file F...", cmd);
    Bpe *b = load(argv[1]);
    if (!strcmp(argv[2], "--file")) {
        for (int i = 2; i < argc; i++) {
            if (strcmp(argv[i], "--file") != 0) fatal(EXIT_USAGE, "%s: expected --file F, got '%s'", cmd, argv[i]);
            const char *path = cli_str(cmd, argc, argv, &i);
            size_t n;
            char *s = read_file(path, &n);
            print_ids(b, s, n);
            free(s);
        }
    } else {
        if (argc != 3) fatal(EXIT_USAGE, "%s: expected one TEXT (quote it), got %d arguments", cmd, argc - 2);
        size_t n;
        char *s = text_arg(argv[2], &n);
        print_ids(b, s, n);
        free(s);
    }
    bpe_free(b);
    return fflush(stdout) == 0 ? EXIT_OK : EXIT_RUNTIME;
}

static int32_t parse_id(const char *cmd, const char *s, size_t n)
{
    char buf[32];
    if (n == 0 || n >= sizeof buf) fatal(EXIT_USAGE, "%s: '%.*s' is not an id", cmd, (int)(n > 40 ? 40 : n), s);
    memcpy(buf, s, n);
    buf[n] = '\0';
    char *end;
    errno = 0;
    long v = strtol(buf, &end, 10);
    if (errno || *end || v < 0 || v > INT32_MAX) fatal(EXIT_USAGE, "%s: '%s' is not an id", cmd, buf);
    return (int32_t)v;
}

static int decode(int argc, char **argv)
{
    const char *cmd = "tokenizer decode";
    if (argc < 2) fatal(EXIT_USAGE, "%s: usage: fspo tokenizer decode TOK.json [--skip-special] ID...|-", cmd);
    Bpe *b = load(argv[1]);
    int skip = 0, cap = argc, n = 0;
    int32_t *ids = malloc(sizeof *ids * (size_t)cap);
    char *in = NULL;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--skip-special")) skip = 1;
        else if (!strcmp(argv[i], "-")) {
            size_t len;
            in = read_all(stdin, "stdin", &len);
            for (size_t p = 0; p < len;) {
                size_t q = p;
                while (q < len && !strchr(" \t\r\n", in[q])) q++;
                if (q > p) {
                    if (n == cap) ids = realloc(ids, sizeof *ids * (size_t)(cap *= 2));
                    if (!ids) fatal(EXIT_RUNTIME, "%s: out of memory", cmd);
                    ids[n++] = parse_id(cmd, in + p, q - p);
                }
                p = q + 1;
            }
        } else ids[n++] = parse_id(cmd, argv[i], strlen(argv[i]));
    }
    for (int i = 0; i < n; i++)
        if (ids[i] >= bpe_n_ids(b)) fatal(EXIT_USAGE, "%s: id %d is not below %d", cmd, ids[i], bpe_n_ids(b));
    size_t need = bpe_decode(b, ids, (size_t)n, NULL, 0, skip);
    char *text = malloc(need + 1);
    if (!text) fatal(EXIT_RUNTIME, "%s: out of memory", cmd);
    bpe_decode(b, ids, (size_t)n, text, need + 1, skip);
    fwrite(text, 1, need, stdout);
    free(text);
    free(in);
    free(ids);
    bpe_free(b);
    return fflush(stdout) == 0 ? EXIT_OK : EXIT_RUNTIME;
}

static int split(int argc, char **argv)
{
    if (argc != 2) fatal(EXIT_USAGE, "tokenizer split: expected one TEXT (quote it) or '-'");
    size_t n;
    char *s = text_arg(argv[1], &n);
    char *shown = malloc(2 * n + 1);
    if (!shown) fatal(EXIT_RUNTIME, "tokenizer: out of memory");
    for (size_t i = 0; i < n;) {
        size_t e = bpe_piece_end(s, n, i);
        fwrite(shown, 1, bpe_byte_level(s + i, e - i, shown), stdout);
        putchar('\n');
        i = e;
    }
    free(shown);
    free(s);
    return fflush(stdout) == 0 ? EXIT_OK : EXIT_RUNTIME;
}

/* ---- stats ---- */

enum { F_PROMPT, F_ANSWER, F_DESC, N_FIELDS };

/* The texts, kept in memory so one timed loop encodes them all. */
typedef struct {
    char *buf;
    size_t used, cap;
    size_t *off, *len;
    int *field;
    size_t n, ncap;
} Texts;

static void keep(Texts *t, int field, const char *s, size_t n)
{
    if (t->used + n > t->cap) {
        while (t->used + n > t->cap) t->cap = t->cap ? 2 * t->cap : 1 << 20;
        t->buf = realloc(t->buf, t->cap);
    }
    if (t->n == t->ncap) {
        t->ncap = t->ncap ? 2 * t->ncap : 1024;
        t->off = realloc(t->off, sizeof *t->off * t->ncap);
        t->len = realloc(t->len, sizeof *t->len * t->ncap);
        t->field = realloc(t->field, sizeof *t->field * t->ncap);
    }
    if (!t->buf || !t->off || !t->len || !t->field) fatal(EXIT_RUNTIME, "tokenizer: out of memory");
    memcpy(t->buf + t->used, s, n);
    t->off[t->n] = t->used, t->len[t->n] = n, t->field[t->n++] = field;
    t->used += n;
}

static void keep_row(void *ctx, const PrefRow *row)
{
    keep(ctx, F_PROMPT, row->prompt, row->prompt_len);
    keep(ctx, F_ANSWER, row->chosen, row->chosen_len);
    keep(ctx, F_ANSWER, row->rejected, row->rejected_len);
    if (row->user_description) keep(ctx, F_DESC, row->user_description, row->user_description_len);
}

static int stats(int argc, char **argv)
{
    if (argc != 3) fatal(EXIT_USAGE, "tokenizer stats: usage: fspo tokenizer stats TOK.json DATA.jsonl");
    Bpe *b = load(argv[1]);
    Texts t = { 0 };
    for_each_row(argv[2], keep_row, &t);
    size_t longest = 1;
    for (size_t i = 0; i < t.n; i++) longest = t.len[i] > longest ? t.len[i] : longest;
    int32_t *ids = malloc(sizeof *ids * longest);
    if (!ids) fatal(EXIT_RUNTIME, "tokenizer: out of memory");
    long long texts[N_FIELDS] = { 0 }, bytes[N_FIELDS] = { 0 }, tokens[N_FIELDS] = { 0 }, all = 0;
    double t0 = now_seconds(), c0 = cpu_seconds();
    for (size_t i = 0; i < t.n; i++) {
        texts[t.field[i]]++, bytes[t.field[i]] += (long long)t.len[i], all += (long long)t.len[i];
        tokens[t.field[i]] += (long long)bpe_encode(b, t.buf + t.off[i], t.len[i], ids);
    }
    double wall = now_seconds() - t0, cpu = cpu_seconds() - c0;
    static const char *const names[N_FIELDS] = { "prompt", "answer", "description" };
    printf("%s: %d ids, on %s\n%-12s %8s %12s %12s %12s\n", argv[1], bpe_n_ids(b), argv[2], "text", "count",
           "bytes/text", "tokens/text", "bytes/token");
    for (int f = 0; f < N_FIELDS; f++)
        if (texts[f])
            printf("%-12s %8lld %12.1f %12.1f %12.2f\n", names[f], texts[f], (double)bytes[f] / (double)texts[f],
                   (double)tokens[f] / (double)texts[f], tokens[f] ? (double)bytes[f] / (double)tokens[f] : 0);
    printf("encoding: %.2f MB at %.1f MB/s of CPU time (%.1f MB/s wall)\n", (double)all / 1e6,
           per_s((double)all / 1e6, cpu), per_s((double)all / 1e6, wall));
    free(ids);
    free(t.buf), free(t.off), free(t.len), free(t.field);
    bpe_free(b);
    return EXIT_OK;
}

/* ---- export ---- */

static int export_json(int argc, char **argv)
{
    const char *cmd = "tokenizer export", *in = NULL, *out = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-o")) out = cli_str(cmd, argc, argv, &i);
        else if (argv[i][0] == '-' && argv[i][1]) fatal(EXIT_USAGE, "%s: unknown option '%s'", cmd, argv[i]);
        else if (in) fatal(EXIT_USAGE, "%s: more than one input ('%s' and '%s')", cmd, in, argv[i]);
        else in = argv[i];
    }
    if (!in || !out) fatal(EXIT_USAGE, "%s: usage: fspo tokenizer export DATA.h5|CKPT.h5 -o TOK.json", cmd);
    Tokenizer t;
    char err[4600];
    if (tokenizer_load(in, &t, err, sizeof err) != 0) fatal(EXIT_USAGE, "%s: %s", cmd, err);
    if (!t.bpe) fatal(EXIT_USAGE, "%s: %s uses the byte tokenizer (%s): it has no tokenizer.json", cmd, in, TOKENIZER_ID);
    int rc = tokenizer_json_write(t.bpe, out, err, sizeof err);
    tok_free(&t);
    if (rc != 0) fatal(EXIT_RUNTIME, "%s: %s", cmd, err);
    return EXIT_OK;
}

int cmd_tokenizer(int argc, char **argv)
{
    if (argc < 2 || cli_is_help(argv[1])) {
        fputs(usage_text, argc < 2 ? stderr : stdout);
        return argc < 2 ? EXIT_USAGE : EXIT_OK;
    }
    const char *sub = argv[1];
    if (!strcmp(sub, "train")) return train(argc - 1, argv + 1);
    if (!strcmp(sub, "encode")) return encode(argc - 1, argv + 1);
    if (!strcmp(sub, "decode")) return decode(argc - 1, argv + 1);
    if (!strcmp(sub, "split")) return split(argc - 1, argv + 1);
    if (!strcmp(sub, "stats")) return stats(argc - 1, argv + 1);
    if (!strcmp(sub, "export")) return export_json(argc - 1, argv + 1);
    fatal(EXIT_USAGE, "tokenizer: unknown subcommand '%s' (train, encode, decode, split, stats, export)", sub);
}
