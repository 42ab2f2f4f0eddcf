/* fspo prep in C: the JSONL reader's line handling and bad-line reasons,
 * and prep_run's grouping, dedupe, min-pairs, split and atomic output,
 * checked by reading the written dataset back. The CLI, the 100-line
 * fixture and the h5py round trip are in tests/test_prep.sh. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/dataset.h"
#include "io/jsonl.h"
#include "src/prep.h"
#include "src/util.h"
#include "tests/check.h"

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
        { "{\"user_id\": \"u\", \"prompt\": \"p\", \"chosen\": \"c\", \"rejected\": \"r\", \"split\": \"dev\"}",
          "field 'split' is not \"train\", \"validation\" or \"test\" (it is 'dev')" },
        { "{\"user_id\": \"u\", \"prompt\": \"p\", \"chosen\": \"c\", \"rejected\": \"r\", \"split\": \"Test\"}",
          "field 'split' is not \"train\", \"validation\" or \"test\" (it is 'Test')" },
        { "{\"user_id\": \"u\", \"prompt\": \"p\", \"chosen\": \"c\", \"rejected\": \"r\", \"split\": 2}",
          "field 'split' is not \"train\", \"validation\" or \"test\" (it is an integer)" },
        { "{\"user_id\": \"u\", \"prompt\": \"p\", \"chosen\": \"c\", \"rejected\": \"r\", \"split\": null}",
          "field 'split' is not \"train\", \"validation\" or \"test\" (it is null)" },
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
                               "\"user_description\": \"d\\u0000\", \"split\": \"validation\"}\n"
                               "{\"user_id\": \"x\", \"prompt\": \"p\", \"chosen\": \"c\", \"rejected\": \"last\", "
                               "\"user_description\": \"\"}";
    const char *path = write_file("lines.jsonl", data, sizeof data - 1);
    char err[512];
    JsonlReader *r = jsonl_reader_open(path, 4096, err, sizeof err);
    PrefRow row;
    long line = 0;
    int rc = jsonl_next_row(r, &row, &line, err, sizeof err);
    check(rc == 1 && line == 1 && !strcmp(row.user_id, "7") && row.prompt_len == 3 && !memcmp(row.prompt, "a\0b", 3) &&
              row.chosen_len == 4 && !strcmp(row.chosen, "\xF0\x9F\x98\x80") && !row.user_description && !row.split,
          "reader: BOM, CRLF, integer id, NUL and non-BMP text", "rc %d line %ld id '%s' prompt_len %zu", rc, line,
          rc == 1 ? row.user_id : err, rc == 1 ? row.prompt_len : 0);
    rc = jsonl_next_row(r, &row, &line, err, sizeof err);
    check(rc == 1 && line == 5 && !strcmp(row.user_id, "-12") && row.user_description_len == 2 &&
              !memcmp(row.user_description, "d\0", 2) && row.split && !strcmp(row.split, "validation"),
          "reader: blank lines skipped silently, description with NUL, a split field", "rc %d line %ld", rc, line);
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
    return (PrepOptions){ .in_path = in, .out_path = out, .val_frac = 0.0, .test_frac = 0.0, .seed = 1, .min_pairs = 2,
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
    o.val_frac = 0.5, o.test_frac = 0.499999;
    rc = prep_run(&o, &s, err, sizeof err);
    check(rc == EXIT_USAGE && strstr(err, "none of the 1 users is a training user") && strstr(err, "--all-test") &&
              !exists(out),
          "prep: no training user is an error", "rc %d: %s", rc, err);
    o = options(in, out);
    o.val_frac = 0.5, o.test_frac = 0.5;
    rc = prep_run(&o, &s, err, sizeof err);
    check(rc == EXIT_USAGE && strstr(err, "sum below 1") && !exists(out), "prep: val_frac + test_frac = 1 is refused",
          "rc %d: %s", rc, err);
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

/* The split is a function of (seed, id) alone and hits the fractions; the
 * test users for T do not depend on V, and validation + test for (V, T)
 * are the test users for V + T (one hash, nested intervals). */
static void test_split(void)
{
    int n = 100000, count[SPLIT_COUNT] = { 0 }, other_seed_same = 0, test_moved = 0, union_moved = 0;
    char id[32];
    for (int i = 0; i < n; i++) {
        int k = snprintf(id, sizeof id, "user-%d", i);
        Split sp = prep_split_of(1234, id, (size_t)k, 0.1, 0.2);
        count[sp]++;
        other_seed_same += sp == prep_split_of(1235, id, (size_t)k, 0.1, 0.2);
        test_moved += (sp == SPLIT_TEST) != (prep_split_of(1234, id, (size_t)k, 0.45, 0.2) == SPLIT_TEST);
        union_moved += (sp != SPLIT_TRAIN) != (prep_split_of(1234, id, (size_t)k, 0, 0.3) == SPLIT_TEST);
    }
    /* binomial standard deviations: 95 and 126 users; 6 of them as the bound */
    check(abs(count[SPLIT_VALIDATION] - 10000) < 570 && abs(count[SPLIT_TEST] - 20000) < 760 &&
              count[SPLIT_TRAIN] == n - count[SPLIT_VALIDATION] - count[SPLIT_TEST],
          "split: fractions V 0.1, T 0.2", "%d train / %d validation / %d test of %d", count[SPLIT_TRAIN],
          count[SPLIT_VALIDATION], count[SPLIT_TEST], n);
    /* independent hashes agree with probability 0.7^2 + 0.1^2 + 0.2^2 = 0.54 (sd 158 users) */
    check(abs(other_seed_same - 54000) < 950, "split: another seed, an independent split", "%d of %d agree (54000 "
          "expected)", other_seed_same, n);
    check(test_moved == 0 && union_moved == 0, "split: test users ignore V; validation + test of (V, T) = test of V + T",
          "%d and %d users moved", test_moved, union_moved);
    check(prep_split_of(7, "x", 1, 0.0, 0.0) == SPLIT_TRAIN, "split: fractions 0 hold out nobody", "%s", "");
}

#define SROW(u, p, sp) "{\"user_id\": \"" u "\", \"prompt\": \"" p "\", \"chosen\": \"c\", \"rejected\": \"r\"" sp "}\n"
#define TEST_ ", \"split\": \"test\""
#define VAL_ ", \"split\": \"validation\""
#define TRAIN_ ", \"split\": \"train\""

/* The split of user `id` in the dataset at path; -1 if absent or unreadable. */
static int split_in(const char *path, const char *id)
{
    Dataset d;
    char err[512];
    if (dataset_read(path, &d, err, sizeof err) != 0) return -1;
    int sp = -1;
    for (int64_t u = 0; u < d.n_users; u++)
        if (!strcmp(d.user_ids[u], id)) sp = d.user_split[u];
    dataset_free(&d);
    return sp;
}

/* A row's "split" field forces its user's split (one row is enough; rows
 * without it do not disagree); rows naming two splits stop the run, in
 * either order, also when one is an exact copy of the other; --all-test
 * overrides everything. */
static void test_forced_split(void)
{
    char out[600], err[1024];
    snprintf(out, sizeof out, "%s/forced.h5", dir);
    const char *in = write_text("forced.jsonl", SROW("a", "p1", "") SROW("a", "p2", TEST_) SROW("b", "p1", VAL_)
                                                    SROW("b", "p2", VAL_) SROW("c", "p1", "") SROW("c", "p2", "")
                                                    SROW("d", "p1", TRAIN_) SROW("d", "p2", ""));
    /* nearly every unforced user would be test by the hash: d's "train" must win */
    PrepOptions o = options(in, out);
    o.val_frac = 0, o.test_frac = 0.99;
    PrepStats s;
    int rc = prep_run(&o, &s, err, sizeof err);
    Split c_hash = prep_split_of(1, "c", 1, 0, 0.99);
    check(rc == 0 && split_in(out, "a") == SPLIT_TEST && split_in(out, "b") == SPLIT_VALIDATION &&
              split_in(out, "d") == SPLIT_TRAIN && split_in(out, "c") == (int)c_hash && s.forced_users == 3 &&
              s.split_users[SPLIT_TRAIN] + s.split_users[SPLIT_VALIDATION] + s.split_users[SPLIT_TEST] == 4,
          "prep: a row's split field decides its user's split", "rc %d %s; a %d b %d c %d (hash %d) d %d; %lld forced",
          rc, rc ? err : "", split_in(out, "a"), split_in(out, "b"), split_in(out, "c"), c_hash, split_in(out, "d"),
          (long long)s.forced_users);
    o.all_test = 1;
    rc = prep_run(&o, &s, err, sizeof err);
    check(rc == 0 && split_in(out, "a") == SPLIT_TEST && split_in(out, "b") == SPLIT_TEST &&
              split_in(out, "c") == SPLIT_TEST && split_in(out, "d") == SPLIT_TEST && s.split_users[SPLIT_TEST] == 4,
          "prep: --all-test makes every user a test user, a row's \"train\" too", "rc %d %s", rc, rc ? err : "");
    unlink(out);

    static const struct { const char *name, *rows, *want; } conflicts[] = {
        { "train then test", SROW("a", "p1", TRAIN_) SROW("b", "p1", "") SROW("a", "p2", TEST_),
          ":3: the rows of user 'a' disagree on 'split': 'test' here, 'train' on line 1" },
        { "test then train", SROW("a", "p2", TEST_) SROW("b", "p1", "") SROW("a", "p1", TRAIN_),
          ":3: the rows of user 'a' disagree on 'split': 'train' here, 'test' on line 1" },
        { "an exact copy with another split", SROW("a", "p1", VAL_) SROW("a", "p1", TEST_),
          ":2: the rows of user 'a' disagree on 'split': 'test' here, 'validation' on line 1" },
    };
    for (int i = 0; i < 3; i++) {
        const char *path = write_text("conflict.jsonl", conflicts[i].rows);
        o = options(path, out); /* not strict: still fatal */
        rc = prep_run(&o, &s, err, sizeof err);
        char label[96];
        snprintf(label, sizeof label, "prep: conflicting split fields stop the run (%s)", conflicts[i].name);
        check(rc == EXIT_USAGE && strstr(err, conflicts[i].want) && strstr(err, "nothing written") && !exists(out),
              label, "rc %d: %s", rc, err);
    }
    /* a bad split value is a bad line like any other: skipped, the user keeps its other rows */
    in = write_text("badsplit.jsonl", SROW("a", "p1", TEST_) SROW("a", "p2", ", \"split\": \"dev\"")
                                          SROW("a", "p3", "") SROW("b", "p1", "") SROW("b", "p2", ""));
    o = options(in, out);
    rc = prep_run(&o, &s, err, sizeof err);
    check(rc == 0 && s.bad_lines == 1 && s.kinds[0].first_line == 2 && split_in(out, "a") == SPLIT_TEST &&
              s.pairs == 4,
          "prep: a split value other than the three is a bad line", "rc %d %s; %lld bad, kind '%s'", rc,
          rc ? err : "", (long long)s.bad_lines, s.n_kinds ? s.kinds[0].kind : "");
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
    test_forced_split();
    test_reason_kinds();
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) return 1;
    return check_status();
}
