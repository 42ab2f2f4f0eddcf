/* Dataset container: write -> read round trip, validation of every
 * structural invariant, checksum and format errors naming the file. */
#include <fcntl.h>
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/dataset.h"
#include "io/h5util.h"
#include "src/tokenizer.h"
#include "tests/check.h"

/* 3 users with 2, 3, 1 pairs; user 1 validation, user 2 test; user 2 has a description. */
static void make_dataset(Dataset *d)
{
    memset(d, 0, sizeof *d);
    d->n_users = 3;
    d->n_pairs = 6;
    d->n_tokens = 60;
    d->tokens = malloc(sizeof(int32_t) * 60);
    for (int i = 0; i < 60; i++) d->tokens[i] = (i * 37) % TOKENIZER_VOCAB;
    d->prompt = malloc(sizeof(int64_t) * 12);
    d->chosen = malloc(sizeof(int64_t) * 12);
    d->rejected = malloc(sizeof(int64_t) * 12);
    for (int p = 0; p < 6; p++) {
        int64_t *pr = d->prompt + 2 * p, *c = d->chosen + 2 * p, *r = d->rejected + 2 * p;
        pr[0] = p * 9, pr[1] = 3, c[0] = p * 9 + 3, c[1] = 3, r[0] = p * 9 + 6, r[1] = 3;
    }
    d->user_pairs = malloc(sizeof(int64_t) * 6);
    int64_t up[6] = { 0, 2, 2, 3, 5, 1 };
    memcpy(d->user_pairs, up, sizeof up);
    d->user_desc = calloc(6, sizeof(int64_t));
    d->user_desc[4] = 54, d->user_desc[5] = 6;
    d->user_split = calloc(3, 1);
    d->user_split[1] = SPLIT_VALIDATION, d->user_split[2] = SPLIT_TEST;
    d->user_ids = malloc(sizeof(char *) * 3);
    d->user_ids[0] = strdup("alice");
    d->user_ids[1] = strdup("bob \"the\" builder");
    d->user_ids[2] = strdup("user-ü-3");
    d->vocab = TOKENIZER_VOCAB;
    snprintf(d->source, sizeof d->source, "users.jsonl");
    d->val_frac = 0.25, d->test_frac = 0.125;
    d->seed = 9;
}

static int same_content(const Dataset *a, const Dataset *b)
{
    if (a->n_users != b->n_users || a->n_pairs != b->n_pairs || a->n_tokens != b->n_tokens) return 0;
    if (memcmp(a->tokens, b->tokens, sizeof(int32_t) * a->n_tokens) || memcmp(a->prompt, b->prompt, 16 * a->n_pairs) ||
        memcmp(a->chosen, b->chosen, 16 * a->n_pairs) || memcmp(a->rejected, b->rejected, 16 * a->n_pairs) ||
        memcmp(a->user_pairs, b->user_pairs, 16 * a->n_users) || memcmp(a->user_desc, b->user_desc, 16 * a->n_users) ||
        memcmp(a->user_split, b->user_split, a->n_users))
        return 0;
    for (int64_t u = 0; u < a->n_users; u++)
        if (strcmp(a->user_ids[u], b->user_ids[u])) return 0;
    return !strcmp(tok_name(&a->tok), tok_name(&b->tok)) && a->vocab == b->vocab;
}

static int same(const Dataset *a, const Dataset *b)
{
    return same_content(a, b) && !strcmp(a->source, b->source) &&
           a->val_frac == b->val_frac && a->test_frac == b->test_frac && a->seed == b->seed &&
           a->checksum == b->checksum;
}

static void test_round_trip(const char *dir)
{
    Dataset d, back;
    make_dataset(&d);
    char path[512], err[1024];
    snprintf(path, sizeof path, "%s/data.h5", dir);
    int rc = dataset_write(path, &d, err, sizeof err);
    check(rc == 0, "dataset write", "%s", rc ? err : path);
    rc = dataset_read(path, &back, err, sizeof err);
    check(rc == 0 && same(&d, &back) && back.format_version == DATASET_FORMAT_VERSION, "dataset round trip", "%s",
          rc ? err : "every array, id and attribute equal");
    if (rc == 0) dataset_free(&back);
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    check(access(path, F_OK) == 0 && access(tmp, F_OK) != 0, "no temporary left behind", "%s", tmp);
    dataset_free(&d);
}

typedef void (*Break)(Dataset *d);
static void brk_span(Dataset *d) { d->chosen[2 * 4 + 1] = 100; }
static void brk_empty(Dataset *d) { d->rejected[2 * 0 + 1] = 0; }
static void brk_token(Dataset *d) { d->tokens[7] = 300; }
static void brk_gap(Dataset *d) { d->user_pairs[2] = 3; }
static void brk_cover(Dataset *d) { d->user_pairs[5] = 0; }
static void brk_flag(Dataset *d) { d->user_split[2] = 3; }
static void brk_desc(Dataset *d) { d->user_desc[0] = 59, d->user_desc[1] = 5; }

static void test_validation(const char *dir)
{
    static const struct { const char *name; Break brk; const char *want; } cases[] = {
        { "span outside the stream", brk_span, "pair 4: a prompt/chosen/rejected span is empty or outside" },
        { "empty answer", brk_empty, "pair 0: a prompt/chosen/rejected span is empty" },
        { "token outside vocab", brk_token, "token 7 has id 300, outside vocab 264" },
        { "users not contiguous", brk_gap, "user 1: pair range [3, +3) is not contiguous" },
        { "user with no pairs", brk_cover, "user 2: pair range [5, +0) is not contiguous or out of range" },
        { "bad split code", brk_flag, "user 2: split code 3 (0 train, 1 validation, 2 test)" },
        { "description outside", brk_desc, "user 0: description span outside" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        Dataset d;
        make_dataset(&d);
        cases[i].brk(&d);
        char path[512], err[1024] = "";
        snprintf(path, sizeof path, "%s/bad%zu.h5", dir, i);
        int rc = dataset_write(path, &d, err, sizeof err);
        char label[96];
        snprintf(label, sizeof label, "dataset refuses: %s", cases[i].name);
        check(rc == -1 && strstr(err, cases[i].want) && access(path, F_OK) != 0, label, "%s", err);
        dataset_free(&d);
    }
}

static void test_bad_files(const char *dir)
{
    Dataset d, back;
    make_dataset(&d);
    char path[512], err[1024];
    snprintf(path, sizeof path, "%s/flip.h5", dir);
    dataset_write(path, &d, err, sizeof err);
    /* flip one token in the stored stream: the content checksum catches it */
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t ds = H5Dopen2(f, "tokens", H5P_DEFAULT);
    haddr_t off = H5Dget_offset(ds);
    H5Dclose(ds);
    H5Fclose(f);
    int fd = open(path, O_RDWR);
    int32_t v = 5;
    if (pwrite(fd, &v, 4, (off_t)off + 4 * 11) != 4) perror("pwrite");
    close(fd);
    int rc = dataset_read(path, &back, err, sizeof err);
    check(rc == -1 && strstr(err, "flip.h5: file checksum mismatch"), "dataset bit flip", "%s", err);
    /* behind a valid seal (an edit through HDF5), the content checksum still catches it */
    h5_seal(path);
    rc = dataset_read(path, &back, err, sizeof err);
    check(rc == -1 && strstr(err, "flip.h5: content checksum mismatch"), "dataset bit flip behind a valid seal", "%s",
          err);
    /* a checkpoint-like foreign HDF5 file, a text file, a missing file */
    snprintf(path, sizeof path, "%s/foreign.h5", dir);
    f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    H5Fclose(f);
    rc = dataset_read(path, &back, err, sizeof err);
    check(rc == -1 && strstr(err, "no fspo seal"), "dataset: foreign HDF5", "%s", err);
    snprintf(path, sizeof path, "%s/text.h5", dir);
    FILE *t = fopen(path, "w");
    fputs("{\"user_id\": 1}\n", t);
    fclose(t);
    rc = dataset_read(path, &back, err, sizeof err);
    check(rc == -1 && strstr(err, "not an HDF5 file"), "dataset: JSONL given instead", "%s", err);
    rc = dataset_read("/nonexistent/data.h5", &back, err, sizeof err);
    check(rc == -1 && strstr(err, "/nonexistent/data.h5: No such file"), "dataset: missing file", "%s", err);
    dataset_free(&d);
}

/* uint8 dataset `name` of the file, read with HDF5 alone; n entries. */
static int read_u8(const char *path, const char *name, uint8_t *out, int64_t n)
{
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) return -1;
    int rc = -1;
    if (H5Lexists(f, "users", H5P_DEFAULT) > 0 && H5Lexists(f, name, H5P_DEFAULT) > 0) {
        hid_t ds = H5Dopen2(f, name, H5P_DEFAULT), sp = H5Dget_space(ds);
        if (H5Sget_simple_extent_npoints(sp) == n) rc = H5Dread(ds, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, out);
        H5Sclose(sp);
        H5Dclose(ds);
    }
    H5Fclose(f);
    return rc < 0 ? -1 : 0;
}

/* tests/data/dataset_v1.h5 was written by the version-1 code (fspo prep
 * --heldout-frac 0.3 --seed 7 of dataset_v1.jsonl, before the three-way
 * split): it still reads, its held-out users as test users, its checksum
 * verified; written again it becomes a current-version file with the same split. */
static void test_version1(const char *dir)
{
    const char *v1 = "tests/data/dataset_v1.h5";
    Dataset d, back;
    char err[1024], path[512];
    int rc = dataset_read(v1, &d, err, sizeof err);
    check(rc == 0 && d.format_version == 1 && d.val_frac == 0 && d.test_frac == 0.3, "version-1 dataset reads",
          "%s", rc ? err : "format_version 1, heldout_frac 0.3 read as test_frac");
    if (rc != 0) return;
    uint8_t *held = malloc((size_t)d.n_users);
    int ok = read_u8(v1, "users/heldout", held, d.n_users) == 0, n_test = 0, n_held = 0;
    for (int64_t u = 0; ok && u < d.n_users; u++) {
        ok = d.user_split[u] == (held[u] ? SPLIT_TEST : SPLIT_TRAIN);
        n_test += d.user_split[u] == SPLIT_TEST, n_held += held[u];
    }
    check(ok && n_held > 0 && n_held < d.n_users, "version 1: held-out users are the test users, the rest train",
          "%d of %lld held out in /users/heldout (read with HDF5), %d test", n_held, (long long)d.n_users, n_test);
    snprintf(path, sizeof path, "%s/upgraded.h5", dir);
    rc = dataset_write(path, &d, err, sizeof err);
    if (rc == 0) rc = dataset_read(path, &back, err, sizeof err);
    uint8_t *split = malloc((size_t)d.n_users);
    ok = rc == 0 && back.format_version == DATASET_FORMAT_VERSION &&
         read_u8(path, "users/split", split, d.n_users) == 0 && !memcmp(split, d.user_split, (size_t)d.n_users) &&
         read_u8(path, "users/heldout", held, d.n_users) != 0 && back.test_frac == 0.3;
    check(ok, "version 1 written again: the current version, /users/split with the same codes", "%s", rc ? err : "");
    if (rc == 0) dataset_free(&back);
    free(held), free(split);
    dataset_free(&d);

    /* a version from the future is refused by name */
    make_dataset(&d);
    snprintf(path, sizeof path, "%s/v9.h5", dir);
    dataset_write(path, &d, err, sizeof err);
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    int64_t nine = 9;
    hid_t a = H5Aopen(f, "format_version", H5P_DEFAULT);
    H5Awrite(a, H5T_NATIVE_INT64, &nine);
    H5Aclose(a);
    H5Fclose(f);
    h5_seal(path);
    rc = dataset_read(path, &back, err, sizeof err);
    check(rc == -1 && strstr(err, "v9.h5: dataset format version 9, this build reads versions 1 to 3"),
          "dataset: a newer format version is refused", "%s", err);
    dataset_free(&d);
}

/* tests/data/dataset_v2.h5 was written by the version-2 code (fspo prep
 * --val-frac 0.2 --test-frac 0.2 --seed 7 of dataset_v1.jsonl; uint16
 * ids): it reads, its checksum (of the uint16 stream, computed by that
 * code) verified, as the byte tokenizer; every prompt's ids, read as bytes,
 * are text of the JSONL; the ids equal the stored uint16 values read
 * directly with HDF5; written again it is a version-3 file with int32 ids
 * and the same content. */
static void test_version2(const char *dir)
{
    const char *v2 = "tests/data/dataset_v2.h5";
    Dataset d, back;
    char err[1024], path[512];
    int rc = dataset_read(v2, &d, err, sizeof err);
    check(rc == 0 && d.format_version == 2 && !strcmp(tok_name(&d.tok), TOKENIZER_ID) && d.vocab == TOKENIZER_VOCAB,
          "version-2 dataset reads (its uint16 checksum verified)", "%s", rc ? err : "byte tokenizer, vocab 264");
    if (rc != 0) return;
    FILE *f = fopen("tests/data/dataset_v1.jsonl", "rb");
    static char jsonl[1 << 16];
    size_t got = f ? fread(jsonl, 1, sizeof jsonl - 1, f) : 0;
    if (f) fclose(f);
    jsonl[got] = '\0';
    int found = 0;
    for (int64_t p = 0; p < d.n_pairs; p++) {
        char text[512], quoted[540];
        tok_decode(&d.tok, d.tokens + d.prompt[2 * p], (size_t)d.prompt[2 * p + 1], text, sizeof text, 1);
        snprintf(quoted, sizeof quoted, "\"prompt\": \"%s\"", text);
        found += strstr(jsonl, quoted) != NULL;
    }
    uint16_t *raw = malloc(sizeof(uint16_t) * (size_t)d.n_tokens);
    hid_t h = H5Fopen(v2, H5F_ACC_RDONLY, H5P_DEFAULT);
    int same = h >= 0 && h5_read(h, "tokens", H5T_NATIVE_UINT16, raw) == 0;
    if (h >= 0) H5Fclose(h);
    for (int64_t i = 0; same && i < d.n_tokens; i++) same = raw[i] == d.tokens[i];
    free(raw);
    check(found == d.n_pairs && same, "version 2: ids are the JSONL's bytes, equal to the stored uint16 values",
          "%d of %lld prompts found in the JSONL", found, (long long)d.n_pairs);
    snprintf(path, sizeof path, "%s/v2again.h5", dir);
    rc = dataset_write(path, &d, err, sizeof err);
    if (rc == 0) rc = dataset_read(path, &back, err, sizeof err);
    check(rc == 0 && back.format_version == 3 && same_content(&d, &back), "version 2 written again: version 3, same ids",
          "%s", rc ? err : "");
    if (rc == 0) dataset_free(&back);
    dataset_free(&d);
}

/* test_dataset --dump DATA.h5 N: the first N pairs as "user<TAB>prompt
 * ids<TAB>chosen ids<TAB>rejected ids", for the shell tests' oracles. */
static int dump(const char *path, int64_t n)
{
    Dataset d;
    char err[1024];
    if (dataset_read(path, &d, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    for (int64_t u = 0; u < d.n_users; u++)
        for (int64_t p = d.user_pairs[2 * u]; p < d.user_pairs[2 * u] + d.user_pairs[2 * u + 1] && p < n; p++) {
            printf("%s", d.user_ids[u]);
            const int64_t *sp[3] = { d.prompt + 2 * p, d.chosen + 2 * p, d.rejected + 2 * p };
            for (int k = 0; k < 3; k++)
                for (int64_t i = 0; i < sp[k][1]; i++) printf("%s%d", i ? " " : "\t", (int)d.tokens[sp[k][0] + i]);
            printf("\n");
        }
    dataset_free(&d);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 4 && !strcmp(argv[1], "--dump")) return dump(argv[2], atoll(argv[3]));
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    char dir[] = "/tmp/fspo-dataset.XXXXXX";
    if (!mkdtemp(dir)) return 1;
    test_round_trip(dir);
    test_version2(dir);
    test_validation(dir);
    test_bad_files(dir);
    test_version1(dir);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) fprintf(stderr, "cleanup failed\n");
    return check_status();
}
