/* fspo prep in C: the JSONL reader's line handling and bad-line reasons,
 * and prep_run's grouping, dedupe, min-pairs, split and atomic output,
 * checked by reading the written dataset back. The CLI, the 100-line
 * fixture and the h5py round trip are in tests/test_prep.sh. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "dataset.h"
#include "jsonl.h"
#include "prep.h"
#include "util.h"

static char dir[] = "/tmp/fspo-test-prep.XXXXXX";

static const char *write_file(const char *name, const char *data, size_t n)
{
    static char path[4][512];
    static int next;
    char *p = path[next++ % 4];
    snprintf(p, 512, "%s/%s", dir, name);
    FILE *f = fopen(p, "wb");
    fwrite(data, 1, n, f);
    fclose(f);
    return p;
}

static const char *write_text(const char *name, const char *text) { return write_file(name, text, strlen(text)); }

/* The reason part of "FILE:LINE: reason". */
static const char *reason_of(const char *err)
{
    const char *p = strstr(err, ".jsonl:");
    p = p ? strchr(p + 7, ':') : NULL;
    return p ? p + 2 : err;
}

/* ---- reader ---- */

static void test_reasons(void)
{
    static const struct { const char *line, *reason; } cases[] = {
        { "{\"user_id\": \"a\"", "malformed JSON: '}' expected near end of file (column 15)" },
        { "{\"user_id\": a}", "malformed JSON: invalid token near 'a' (column 13)" },
        { "{\"user_id\": \"a\x01\"}", "malformed JSON: control character 0x1 near '\"a' (column 14)" },
        { "[\"a\"]", "not a JSON object (it is an array)" },
        { "17", "not a JSON object (it is an integer)" },
        { "{\"prompt\": \"p\", \"chosen\": \"c\", \"rejected\": \"r\"}", "missing field 'user_id'" },
        { "{\"user_id\": \"u\", \"chosen\": \"c\", \"rejected\": \"r\"}", "missing field 'prompt'" },
        { "{\"user_id\": \"u\", \"prompt\": \"p\", \"rejected\": \"r\"}", "missing field 'chosen'" },
        { "{\"user_id\": \"u\", \"prompt\": \"p\", \"chosen\": \"c\"}", "missing field 'rejected'" },
        { "{\"user_id\": \"u\", \"prompt\": \"p\", \"chosen\": 3, \"rejected\": \"r\"}",
          "field 'chosen' is not a string (it is an integer)" },
        { "{\"user_id\": \"u\", \"prompt\": [], \"chosen\": \"c\", \"rejected\": \"r\"}",
          "field 'prompt' is not a string (it is an array)" },
        { "{\"user_id\": 2.0, \"prompt\": \"p\", \"chosen\": \"c\", \"rejected\": \"r\"}",
          "field 'user_id' is not a string or an integer (it is a real number)" },
        { "{\"user_id\": \"u\\u0000v\", \"prompt\": \"p\", \"chosen\": \"c\", \"rejected\": \"r\"}",
          "field 'user_id' contains a NUL character" },
        { "{\"user_id\": \"\", \"prompt\": \"p\", \"chosen\": \"c\", \"rejected\": \"r\"}", "empty 'user_id'" },
        { "{\"user_id\": \"u\", \"prompt\": \"\", \"chosen\": \"c\", \"rejected\": \"r\"}", "empty 'prompt'" },
        { "{\"user_id\": \"u\", \"prompt\": \"p\", \"chosen\": \"c\", \"rejected\": \"\"}", "empty 'rejected'" },
        { "{\"user_id\": \"u\", \"prompt\": \"p\", \"chosen\": \"c\", \"rejected\": \"r\", \"user_description\": {}}",
          "field 'user_description' is not a string (it is an object)" },
        { "{\"user_id\": \"u\", \"prompt\": \"p\", \"prompt\": \"q\", \"chosen\": \"c\", \"rejected\": \"r\"}",
          "malformed JSON: duplicate object key near '\"prompt\"' (column 40)" },
    };
    int n = (int)(sizeof cases / sizeof *cases), ok = 0;
    char err[1024], detail[2048] = "";
    for (int i = 0; i < n; i++) {
        const char *path = write_text("reason.jsonl", cases[i].line);
        JsonlReader *r = jsonl_reader_open(path, 1 << 20, err, sizeof err);
        PrefRow row;
        long line = 0;
        int rc = r ? jsonl_next_row(r, &row, &line, err, sizeof err) : -3;
        char want[600];
        snprintf(want, sizeof want, "%s:1: %s", path, cases[i].reason);
        if (rc == -1 && line == 1 && !strcmp(err, want)) ok++;
        else {
            size_t k = strlen(detail);
            snprintf(detail + k, sizeof detail - k, "; case %d: rc %d, '%s'", i, rc, reason_of(err));
        }
        jsonl_reader_close(r);
    }
    check(ok == n, "reader: each bad-line reason", "%d of %d exact%s", ok, n, detail);
}

/* Blank lines, CRLF, a BOM, an integer id, NUL in strings, a final line
 * without '\n': every good row arrives, with the right line number. */
static void test_line_handling(void)
{
    static const char data[] = "\xEF\xBB\xBF{\"user_id\": 7, \"prompt\": \"a\\u0000b\", \"chosen\": \"\xF0\x9F\x98\x80\", "
                               "\"rejected\": \"r\", \"extra\": [1]}\r\n"
                               "\n   \n\t\r\n"
                               "{\"user_id\": -12, \"prompt\": \"p\", \"chosen\": \"c\", \"rejected\": \"r\", "
                               "\"user_description\": \"d\\u0000\"}\n"
                               "{\"user_id\": \"x\", \"prompt\": \"p\", \"chosen\": \"c\", \"rejected\": \"last\", "
                               "\"user_description\": \"\"}";
    const char *path = write_file("lines.jsonl", data, sizeof data - 1);
    char err[512];
    JsonlReader *r = jsonl_reader_open(path, 4096, err, sizeof err);
    PrefRow row;
    long line = 0;
    int rc = jsonl_next_row(r, &row, &line, err, sizeof err);
    check(rc == 1 && line == 1 && !strcmp(row.user_id, "7") && row.prompt_len == 3 && !memcmp(row.prompt, "a\0b", 3) &&
              row.chosen_len == 4 && !strcmp(row.chosen, "\xF0\x9F\x98\x80") && !row.user_description,
          "reader: BOM, CRLF, integer id, NUL and non-BMP text", "rc %d line %ld id '%s' prompt_len %zu", rc, line,
          rc == 1 ? row.user_id : err, rc == 1 ? row.prompt_len : 0);
    rc = jsonl_next_row(r, &row, &line, err, sizeof err);
    check(rc == 1 && line == 5 && !strcmp(row.user_id, "-12") && row.user_description_len == 2 &&
              !memcmp(row.user_description, "d\0", 2),
          "reader: blank lines skipped silently, description with NUL", "rc %d line %ld", rc, line);
    rc = jsonl_next_row(r, &row, &line, err, sizeof err);
    check(rc == 1 && line == 6 && !strcmp(row.rejected, "last") && !row.user_description,
          "reader: final line without newline; \"\" description = none", "rc %d line %ld", rc, line);
    uint64_t done, total;
    rc = jsonl_next_row(r, &row, &line, err, sizeof err);
    jsonl_progress(r, &done, &total);
    check(rc == 0 && done == sizeof data - 1 && total == done, "reader: end of file and progress",
          "rc %d, %llu of %llu bytes", rc, (unsigned long long)done, (unsigned long long)total);
    jsonl_reader_close(r);
}

/* A 6 MB line with a 1 KiB limit is one bad line and the reader goes on;
 * its buffer never grows to the line (limit 1 KiB, so at most ~1 MiB). */
static void test_long_line(void)
{
    size_t big = 6u << 20;
    char *data = malloc(big + 4096);
    size_t n = (size_t)sprintf(data, "{\"user_id\": \"u\", \"prompt\": \"p\", \"chosen\": \"c\", \"rejected\": \"r\"}\n");
    memset(data + n, 'x', big);
    n += big;
    n += (size_t)sprintf(data + n, "\n%s", "{\"user_id\": \"v\", \"prompt\": \"p\", \"chosen\": \"c\", \"rejected\": \"s\"}\n");
    memset(data + n, 'y', 1025); /* over by one byte and last, with no newline */
    n += 1025;
    const char *path = write_file("long.jsonl", data, n);
    free(data);
    char err[512];
    JsonlReader *r = jsonl_reader_open(path, 1024, err, sizeof err);
    PrefRow row;
    long l1, l2, l3, l4, l5;
    int a = jsonl_next_row(r, &row, &l1, err, sizeof err);
    int b = jsonl_next_row(r, &row, &l2, err, sizeof err);
    char want[600];
    snprintf(want, sizeof want, "%s:2: line longer than 1024 bytes", path);
    int b_ok = b == -1 && l2 == 2 && !strcmp(err, want);
    int c = jsonl_next_row(r, &row, &l3, err, sizeof err);
    int c_ok = c == 1 && l3 == 3 && !strcmp(row.user_id, "v");
    int d = jsonl_next_row(r, &row, &l4, err, sizeof err);
    int d_ok = d == -1 && l4 == 4 && strstr(err, ":4: line longer than 1024 bytes");
    int e = jsonl_next_row(r, &row, &l5, err, sizeof err);
    check(a == 1 && b_ok && c_ok && d_ok && e == 0, "reader: over-long lines skipped, reading goes on",
          "rc %d %d %d %d %d, lines %ld %ld %ld %ld", a, b, c, d, e, l1, l2, l3, l4);
    jsonl_reader_close(r);
    /* exactly at the limit is fine */
    char at[128];
    int k = snprintf(at, sizeof at, "{\"user_id\": \"u\", \"prompt\": \"p\", \"chosen\": \"c\", \"rejected\": \"r\"}");
    path = write_file("exact.jsonl", at, (size_t)k);
    r = jsonl_reader_open(path, (size_t)k, err, sizeof err);
    a = jsonl_next_row(r, &row, &l1, err, sizeof err);
    check(a == 1, "reader: a line of exactly the limit is read", "%d bytes, rc %d %s", k, a, a == 1 ? "" : err);
    jsonl_reader_close(r);
}

static void test_open_and_io_errors(void)
{
    char err[512];
    JsonlReader *r = jsonl_reader_open("/nonexistent/x.jsonl", 1024, err, sizeof err);
    check(!r && strstr(err, "/nonexistent/x.jsonl: cannot open: No such file"), "reader: missing file", "%s", err);
    r = jsonl_reader_open(dir, 1024, err, sizeof err);
    check(!r && strstr(err, "is a directory"), "reader: a directory", "%s", err);
    /* reading /proc/self/mem at offset 0 fails with EIO: a real I/O error, not a bad line */
    r = jsonl_reader_open("/proc/self/mem", 1024, err, sizeof err);
    if (!r) {
        printf("SKIP: reader: I/O error: cannot open /proc/self/mem (%s)\n", err);
        return;
    }
    PrefRow row;
    long line;
    int rc = jsonl_next_row(r, &row, &line, err, sizeof err);
    check(rc == -2 && strstr(err, "read error") && strstr(err, strerror(EIO)), "reader: I/O error is -2",
          "rc %d: %s", rc, err);
    jsonl_reader_close(r);
}

/* ---- prep_run ---- */

static PrepOptions options(const char *in, const char *out)
{
    return (PrepOptions){ .in_path = in, .out_path = out, .heldout_frac = 0.0, .seed = 1, .min_pairs = 2,
                          .max_line_bytes = 1 << 20 };
}

static int span_is(const Dataset *d, const int64_t *span, const char *s, size_t n)
{
    if (span[1] != (int64_t)n) return 0;
    for (size_t i = 0; i < n; i++)
        if (d->tokens[span[0] + (int64_t)i] != (unsigned char)s[i]) return 0;
    return 1;
}

#define ROW(u, p, c, r) "{\"user_id\": \"" u "\", \"prompt\": \"" p "\", \"chosen\": \"" c "\", \"rejected\": \"" r "\"}\n"

/* Grouping, order, dedupe, chosen == rejected, min-pairs, descriptions. */
static void test_grouping(void)
{
    const char *in = write_text("group.jsonl",
                                ROW("b", "p1", "c1", "r1")                     /* 1 */
                                ROW("a", "p1", "c1", "r1")                     /* 2 */
                                ROW("b", "p2", "c2", "r2")                     /* 3 */
                                ROW("b", "p1", "c1", "r1")                     /* 4: duplicate of 1 */
                                ROW("a", "p2", "same", "same")                 /* 5: chosen == rejected */
                                "{\"user_id\": \"a\", \"prompt\": \"p3\", \"chosen\": \"c3\", \"rejected\": "
                                "\"r3\", \"user_description\": \"first\"}\n" /* 6 */
                                ROW("c", "p1", "c1", "r1")                     /* 7: c has 1 pair: dropped */
                                "{\"user_id\": \"a\", \"prompt\": \"p4\", \"chosen\": \"c4\", \"rejected\": "
                                "\"r4\", \"user_description\": \"second\"}\n" /* 8 */
                                ROW("b", "p1", "c1", "r1x"));                  /* 9: not a duplicate */
    char out[600], err[1024];
    snprintf(out, sizeof out, "%s/group.h5", dir);
    PrepOptions o = options(in, out);
    PrepStats s;
    int rc = prep_run(&o, &s, err, sizeof err);
    check(rc == 0 && s.rows_ok == 7 && s.bad_lines == 2 && s.users == 2 && s.pairs == 6 && s.dropped_users == 1 &&
              s.dropped_pairs == 1 && s.description_conflicts == 1 && s.pairs_min == 3 && s.pairs_max == 3,
          "prep: counts", "rc %d %s; rows %lld bad %lld users %lld pairs %lld dropped %lld", rc, rc ? err : "",
          (long long)s.rows_ok, (long long)s.bad_lines, (long long)s.users, (long long)s.pairs,
          (long long)s.dropped_users);
    int kinds_ok = s.n_kinds == 2 && !strcmp(s.kinds[0].kind, "duplicate of line N") && s.kinds[0].first_line == 4 &&
                   !strcmp(s.kinds[1].kind, "chosen and rejected are identical") && s.kinds[1].first_line == 5;
    check(kinds_ok, "prep: bad-line kinds", "%d kinds, first '%s'", s.n_kinds, s.n_kinds ? s.kinds[0].kind : "");
    Dataset d;
    if (rc != 0 || dataset_read(out, &d, err, sizeof err) != 0) {
        check(0, "prep: output reads back", "%s", err);
        return;
    }
    /* b first (first seen on line 1), its pairs in input order; then a */
    int ok = d.n_users == 2 && !strcmp(d.user_ids[0], "b") && !strcmp(d.user_ids[1], "a") &&
             d.user_pairs[0] == 0 && d.user_pairs[1] == 3 && d.user_pairs[2] == 3 && d.user_pairs[3] == 3;
    const char *want[6][3] = { { "p1", "c1", "r1" }, { "p2", "c2", "r2" }, { "p1", "c1", "r1x" },
                               { "p1", "c1", "r1" }, { "p3", "c3", "r3" }, { "p4", "c4", "r4" } };
    for (int p = 0; ok && p < 6; p++)
        ok = span_is(&d, d.prompt + 2 * p, want[p][0], strlen(want[p][0])) &&
             span_is(&d, d.chosen + 2 * p, want[p][1], strlen(want[p][1])) &&
             span_is(&d, d.rejected + 2 * p, want[p][2], strlen(want[p][2]));
    check(ok, "prep: users by first appearance, pairs in input order", "%lld users", (long long)d.n_users);
    check(d.user_desc[1] == 0 && span_is(&d, d.user_desc + 2, "first", 5), "prep: a user's first description wins",
          "spans (%lld,%lld) (%lld,%lld)", (long long)d.user_desc[0], (long long)d.user_desc[1],
          (long long)d.user_desc[2], (long long)d.user_desc[3]);
    check(d.n_tokens == s.tokens && d.n_tokens == 5 + 6 * 6 + 1, "prep: token stream holds exactly the kept text",
          "%lld tokens", (long long)d.n_tokens);
    dataset_free(&d);
}

static int exists(const char *path) { return access(path, F_OK) == 0; }

/* Every failure exits with its code and leaves nothing at the output path. */
static void test_failures(void)
{
    char out[600], tmp[700], err[1024];
    snprintf(out, sizeof out, "%s/fail.h5", dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", out);
    const char *in = write_text("fail.jsonl", ROW("a", "p1", "c1", "r1") ROW("a", "p2", "c2", "r2")
                                                  "{\"user_id\": \"a\"}\n" ROW("a", "p3", "c3", "r3"));
    PrepOptions o = options(in, out);
    PrepStats s;
    o.strict = 1;
    int rc = prep_run(&o, &s, err, sizeof err);
    check(rc == EXIT_USAGE && strstr(err, ":3: missing field 'prompt'") && strstr(err, "--strict") && !exists(out) &&
              !exists(tmp) && s.rows_ok == 2,
          "prep: --strict stops at the first bad line", "rc %d: %s", rc, err);
    o = options(in, out);
    o.min_pairs = 4;
    rc = prep_run(&o, &s, err, sizeof err);
    check(rc == EXIT_USAGE && strstr(err, "no user has at least 4 pairs") && !exists(out),
          "prep: no user left after --min-pairs", "rc %d: %s", rc, err);
    o = options(in, out);
    o.heldout_frac = 0.999999;
    rc = prep_run(&o, &s, err, sizeof err);
    check(rc == EXIT_USAGE && strstr(err, "at least one training user") && !exists(out),
          "prep: every user held out is an error", "rc %d: %s", rc, err);
    o = options("/nonexistent/in.jsonl", out);
    rc = prep_run(&o, &s, err, sizeof err);
    check(rc == EXIT_USAGE && strstr(err, "cannot open"), "prep: missing input", "rc %d: %s", rc, err);
    o = options(in, "/nonexistent/dir/out.h5");
    rc = prep_run(&o, &s, err, sizeof err);
    check(rc == EXIT_USAGE && strstr(err, "/nonexistent/dir/out.h5: cannot write"), "prep: unwritable output",
          "rc %d: %s", rc, err);
    o = options(in, in);
    rc = prep_run(&o, &s, err, sizeof err);
    check(rc == EXIT_USAGE && strstr(err, "output is the input"), "prep: output would overwrite the input",
          "rc %d: %s", rc, err);
}

/* The split is a function of (seed, id) alone and hits the fraction. */
static void test_split(void)
{
    int n = 100000, held = 0, other_seed_same = 0;
    char id[32];
    for (int i = 0; i < n; i++) {
        int k = snprintf(id, sizeof id, "user-%d", i);
        int h = prep_is_heldout(1234, id, (size_t)k, 0.1);
        held += h;
        other_seed_same += h == prep_is_heldout(1235, id, (size_t)k, 0.1);
    }
    check(held > 9500 && held < 10500, "split: held-out fraction", "%d of %d at 0.1", held, n);
    check(other_seed_same < n - 1000, "split: the seed changes the split", "%d of %d agree", other_seed_same, n);
    check(!prep_is_heldout(7, "x", 1, 0.0), "split: fraction 0 holds out nobody", "%s", "");
}

static void test_reason_kinds(void)
{
    static const char *cases[][2] = {
        { "malformed JSON: invalid token near 'x' (column 7)", "malformed JSON" },
        { "duplicate of line 12", "duplicate of line N" },
        { "line longer than 1048576 bytes", "line longer than N bytes" },
        { "field 'chosen' is not a string (it is null)", "field 'chosen' is not a string" },
        { "empty 'prompt'", "empty 'prompt'" },
    };
    int ok = 0;
    char kind[96];
    for (int i = 0; i < 5; i++) {
        prep_reason_kind(cases[i][0], kind, sizeof kind);
        ok += !strcmp(kind, cases[i][1]);
    }
    check(ok == 5, "summary kinds of reasons", "%d of 5", ok);
}

int main(void)
{
    if (!mkdtemp(dir)) return 1;
    test_reasons();
    test_line_handling();
    test_long_line();
    test_open_and_io_errors();
    test_grouping();
    test_failures();
    test_split();
    test_reason_kinds();
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) return 1;
    return check_status();
}
