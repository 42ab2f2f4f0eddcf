/* dataset: HDF5 container of prepared preference data; see dataset.h. */
#include "io/dataset.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/h5util.h"
#include "io/tokenizer_json.h"
#include "src/checksum.h"
#include "src/util.h"

#define DATASET_FORMAT "fspo-dataset"

static const char *const split_names[SPLIT_COUNT] = { "train", "validation", "test" };

const char *dataset_split_name(int split) { return split >= 0 && split < SPLIT_COUNT ? split_names[split] : "?"; }

int dataset_split_parse(const char *s)
{
    for (int k = 0; k < SPLIT_COUNT; k++)
        if (!strcmp(s, split_names[k])) return k;
    return -1;
}

/* Byte-tokenizer ids are hashed as uint16, as versions 1 and 2 stored
 * them: a byte dataset keeps its checksum across the format change (and
 * checkpoints' data_checksum stay valid). Other ids as int32. */
static uint64_t tokens_checksum(const Dataset *d)
{
    if (d->tok.bpe) return checksum64(d->tokens, sizeof(int32_t) * d->n_tokens);
    uint16_t *narrow = malloc(sizeof(uint16_t) * (size_t)(d->n_tokens ? d->n_tokens : 1));
    if (!narrow) fatal(EXIT_RUNTIME, "out of memory checking a dataset's checksum");
    for (int64_t i = 0; i < d->n_tokens; i++) narrow[i] = (uint16_t)d->tokens[i];
    uint64_t h = checksum64(narrow, sizeof(uint16_t) * d->n_tokens);
    free(narrow);
    return h;
}

uint64_t dataset_checksum(const Dataset *d)
{
    uint64_t h = tokens_checksum(d);
    h = checksum_combine(h, checksum64(d->prompt, sizeof(int64_t) * 2 * d->n_pairs));
    h = checksum_combine(h, checksum64(d->chosen, sizeof(int64_t) * 2 * d->n_pairs));
    h = checksum_combine(h, checksum64(d->rejected, sizeof(int64_t) * 2 * d->n_pairs));
    h = checksum_combine(h, checksum64(d->user_pairs, sizeof(int64_t) * 2 * d->n_users));
    h = checksum_combine(h, checksum64(d->user_desc, sizeof(int64_t) * 2 * d->n_users));
    h = checksum_combine(h, checksum64(d->user_split, d->n_users)); /* v1: the held-out flags */
    for (int64_t u = 0; u < d->n_users; u++) h = checksum_combine(h, checksum64(d->user_ids[u], strlen(d->user_ids[u])));
    return h;
}

static int span_ok(const int64_t *s, int64_t n_tokens, int allow_empty)
{
    return s[0] >= 0 && s[1] >= (allow_empty ? 0 : 1) && s[0] <= n_tokens && s[1] <= n_tokens - s[0];
}

int dataset_validate(const Dataset *d, char *err, size_t errlen)
{
    if (d->n_users < 0 || d->n_pairs < 0 || d->n_tokens < 0)
        return set_err(err, errlen, "negative counts (users %lld, pairs %lld, tokens %lld)", (long long)d->n_users,
                       (long long)d->n_pairs, (long long)d->n_tokens);
    if (d->vocab != tok_n_ids(&d->tok))
        return set_err(err, errlen, "vocab %lld, but the tokenizer %s has %d ids", (long long)d->vocab,
                       tok_name(&d->tok), (int)tok_n_ids(&d->tok));
    for (int64_t i = 0; i < d->n_tokens; i++)
        if (d->tokens[i] < 0 || d->tokens[i] >= d->vocab)
            return set_err(err, errlen, "token %lld has id %d, outside vocab %lld", (long long)i, (int)d->tokens[i],
                           (long long)d->vocab);
    for (int64_t p = 0; p < d->n_pairs; p++)
        if (!span_ok(d->prompt + 2 * p, d->n_tokens, 0) || !span_ok(d->chosen + 2 * p, d->n_tokens, 0) ||
            !span_ok(d->rejected + 2 * p, d->n_tokens, 0))
            return set_err(err, errlen, "pair %lld: a prompt/chosen/rejected span is empty or outside the token "
                                        "stream",
                           (long long)p);
    int64_t next = 0;
    for (int64_t u = 0; u < d->n_users; u++) {
        const int64_t *r = d->user_pairs + 2 * u;
        if (r[0] != next || r[1] < 1 || r[1] > d->n_pairs - r[0])
            return set_err(err, errlen, "user %lld: pair range [%lld, +%lld) is not contiguous or out of range",
                           (long long)u, (long long)r[0], (long long)r[1]);
        next = r[0] + r[1];
        if (!span_ok(d->user_desc + 2 * u, d->n_tokens, 1))
            return set_err(err, errlen, "user %lld: description span outside the token stream", (long long)u);
        if (d->user_split[u] >= SPLIT_COUNT)
            return set_err(err, errlen, "user %lld: split code %u (0 train, 1 validation, 2 test)", (long long)u,
                           d->user_split[u]);
        if (!d->user_ids || !d->user_ids[u]) return set_err(err, errlen, "user %lld: no id", (long long)u);
    }
    if (next != d->n_pairs)
        return set_err(err, errlen, "users cover %lld of %lld pairs", (long long)next, (long long)d->n_pairs);
    return 0;
}

static int write_all(const char *tmp, const Dataset *d)
{
    hid_t f = h5_create(tmp);
    if (f < 0) return -1;
    int rc = 0;
    int64_t np2[2] = { d->n_pairs, 2 }, nu2[2] = { d->n_users, 2 };
    rc |= h5_attr_write_str(f, "format", DATASET_FORMAT);
    rc |= h5_attr_write_i64(f, "format_version", DATASET_FORMAT_VERSION);
    rc |= h5_attr_write_i64(f, "vocab", d->vocab);
    rc |= h5_attr_write_i64(f, "n_users", d->n_users);
    rc |= h5_attr_write_i64(f, "n_pairs", d->n_pairs);
    rc |= h5_attr_write_i64(f, "n_tokens", d->n_tokens);
    rc |= h5_attr_write_str(f, "source", d->source);
    rc |= h5_attr_write_f64(f, "val_frac", d->val_frac);
    rc |= h5_attr_write_f64(f, "test_frac", d->test_frac);
    rc |= h5_attr_write_i64(f, "seed", d->seed);
    rc |= h5_attr_write_u64(f, "checksum", d->checksum);
    rc |= h5_write(f, "tokens", H5T_STD_I32LE, H5T_NATIVE_INT32, 1, &d->n_tokens, d->tokens);
    rc |= tokenizer_h5_write(f, &d->tok);
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    hid_t gp = H5Gcreate2(f, "pairs", lcpl, H5P_DEFAULT, H5P_DEFAULT);
    hid_t gu = H5Gcreate2(f, "users", lcpl, H5P_DEFAULT, H5P_DEFAULT);
    H5Pclose(lcpl);
    if (gp < 0 || gu < 0) rc = -1;
    if (rc == 0) {
        rc |= h5_write(gp, "prompt", H5T_STD_I64LE, H5T_NATIVE_INT64, 2, np2, d->prompt);
        rc |= h5_write(gp, "chosen", H5T_STD_I64LE, H5T_NATIVE_INT64, 2, np2, d->chosen);
        rc |= h5_write(gp, "rejected", H5T_STD_I64LE, H5T_NATIVE_INT64, 2, np2, d->rejected);
        rc |= h5_write(gu, "pairs", H5T_STD_I64LE, H5T_NATIVE_INT64, 2, nu2, d->user_pairs);
        rc |= h5_write(gu, "description", H5T_STD_I64LE, H5T_NATIVE_INT64, 2, nu2, d->user_desc);
        rc |= h5_write(gu, "split", H5T_STD_U8LE, H5T_NATIVE_UINT8, 1, &d->n_users, d->user_split);
        rc |= h5_write_strings(gu, "id", d->user_ids, d->n_users);
    }
    if (gp >= 0) H5Gclose(gp);
    if (gu >= 0) H5Gclose(gu);
    if (H5Fflush(f, H5F_SCOPE_GLOBAL) < 0) rc = -1;
    if (H5Fclose(f) < 0) rc = -1;
    if (rc == 0 && h5_seal(tmp) != 0) rc = -1;
    return rc ? -1 : 0;
}

int dataset_write(const char *path, Dataset *d, char *err, size_t errlen)
{
    char why[512];
    if (dataset_validate(d, why, sizeof why) != 0) return set_err(err, errlen, "%s: refusing to write: %s", path, why);
    d->format_version = DATASET_FORMAT_VERSION;
    d->checksum = dataset_checksum(d);
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    if (write_all(tmp, d) != 0) {
        int e = errno;
        unlink(tmp);
        return set_err(err, errlen, "%s: writing failed (%s)", tmp, e ? strerror(e) : "HDF5 write error");
    }
    if (commit_tmp(tmp, path, why, sizeof why) != 0) return set_err(err, errlen, "%s: %s", tmp, why);
    h5_trust(path);
    return 0;
}

static const char *type_text(hid_t ftype)
{
    return H5Tequal(ftype, H5T_STD_U16LE) > 0   ? "uint16"
           : H5Tequal(ftype, H5T_STD_U8LE) > 0  ? "uint8"
           : H5Tequal(ftype, H5T_STD_I32LE) > 0 ? "int32 little-endian"
                                                 : "int64 little-endian";
}

/* Reads dataset `name` of loc, stored as file type ftype (what fspo writes
 * for it), into memory type `type`; it must have exactly the given dims. */
static int read_exact_as(hid_t loc, const char *name, int ndim, int64_t d0, int64_t d1, hid_t ftype, hid_t type,
                         void *dst, const char *path, char *err, size_t errlen)
{
    int nd = 0;
    int64_t d[4];
    int have = h5_dims(loc, name, ftype, &nd, d);
    if (have == -2)
        return set_err(err, errlen, "%s: dataset '%s' is not of the type fspo writes (%s)", path, name,
                       type_text(ftype));
    if (have != 0) return set_err(err, errlen, "%s: dataset '%s' missing", path, name);
    if (nd != ndim || d[0] != d0 || (ndim == 2 && d[1] != d1))
        return set_err(err, errlen, "%s: dataset '%s' has the wrong shape for %lld entries", path, name,
                       (long long)d0);
    if (d0 > 0 && h5_read(loc, name, type, dst) != 0)
        return set_err(err, errlen, "%s: dataset '%s' cannot be read (corrupt file)", path, name);
    return 0;
}

/* read_exact_as with the file type fspo writes for that memory type */
static int read_exact(hid_t loc, const char *name, int ndim, int64_t d0, int64_t d1, hid_t type, void *dst,
                      const char *path, char *err, size_t errlen)
{
    hid_t ftype = H5Tequal(type, H5T_NATIVE_UINT16) > 0 ? H5T_STD_U16LE
                  : H5Tequal(type, H5T_NATIVE_UINT8) > 0 ? H5T_STD_U8LE
                  : H5Tequal(type, H5T_NATIVE_INT32) > 0 ? H5T_STD_I32LE
                                                         : H5T_STD_I64LE;
    return read_exact_as(loc, name, ndim, d0, d1, ftype, type, dst, path, err, errlen);
}

static int open_dataset_file(const char *path, hid_t *f, int64_t *ver, char *err, size_t errlen)
{
    char why[256], fmt[64] = "";
    *ver = -1;
    if (h5_check_file(path, why, sizeof why) != 0) return set_err(err, errlen, "%s: %s", path, why);
    *f = h5_open_ro(path);
    if (*f < 0) return set_err(err, errlen, "%s: HDF5 cannot open it (truncated or corrupt)", path);
    if (h5_attr_read_str(*f, "format", fmt, sizeof fmt) != 0 || strcmp(fmt, DATASET_FORMAT) != 0) {
        H5Fclose(*f);
        return set_err(err, errlen, "%s: not an fspo dataset (format attribute '%s'); make one with 'fspo prep'",
                       path, fmt);
    }
    if (h5_attr_read_i64(*f, "format_version", ver) != 0 || *ver < 1 || *ver > DATASET_FORMAT_VERSION) {
        H5Fclose(*f);
        return set_err(err, errlen, "%s: dataset format version %lld, this build reads versions 1 to %d", path,
                       (long long)*ver, DATASET_FORMAT_VERSION);
    }
    return 0;
}

int dataset_read(const char *path, Dataset *d, char *err, size_t errlen)
{
    memset(d, 0, sizeof *d);
    hid_t f = -1;
    if (open_dataset_file(path, &f, &d->format_version, err, errlen) != 0) return -1;
    int v1 = d->format_version == 1;
    int rc = 0;
    if (h5_attr_read_i64(f, "n_users", &d->n_users) || h5_attr_read_i64(f, "n_pairs", &d->n_pairs) ||
        h5_attr_read_i64(f, "n_tokens", &d->n_tokens) || h5_attr_read_i64(f, "vocab", &d->vocab) ||
        h5_attr_read_u64(f, "checksum", &d->checksum))
        rc = set_err(err, errlen, "%s: dataset attributes missing or malformed", path);
    if (rc == 0) rc = tokenizer_h5_read(f, path, &d->tok, err, errlen);
    if (rc == 0 && d->format_version < 3 && d->tok.bpe)
        rc = set_err(err, errlen, "%s: tokenizer %s in a version-%lld dataset (only %s was)", path,
                     tok_name(&d->tok), (long long)d->format_version, TOKENIZER_ID);
    h5_attr_read_str(f, "source", d->source, sizeof d->source);
    if (v1) {
        h5_attr_read_f64(f, "heldout_frac", &d->test_frac);
    } else {
        h5_attr_read_f64(f, "val_frac", &d->val_frac);
        h5_attr_read_f64(f, "test_frac", &d->test_frac);
    }
    h5_attr_read_i64(f, "seed", &d->seed);
    /* counts bound the allocations below: a hostile header must not ask for terabytes */
    if (rc == 0 && (d->n_users < 0 || d->n_pairs < 0 || d->n_tokens < 0 || d->n_users > (1LL << 32) ||
                    d->n_pairs > (1LL << 34) || d->n_tokens > (1LL << 38)))
        rc = set_err(err, errlen, "%s: implausible counts in the header", path);
    /* and every array they size must fit in the file: allocations stay bounded by its size */
    struct stat st;
    double need = 2.0 * d->n_tokens + 48.0 * d->n_pairs + 33.0 * d->n_users;
    if (rc == 0 && stat(path, &st) == 0 && need > (double)st.st_size)
        rc = set_err(err, errlen, "%s: the header's counts (%lld tokens, %lld pairs, %lld users) need %.0f bytes of "
                                  "arrays, the file has %lld",
                     path, (long long)d->n_tokens, (long long)d->n_pairs, (long long)d->n_users, need,
                     (long long)st.st_size);
    if (rc == 0) {
        size_t np = (size_t)d->n_pairs, nu = (size_t)d->n_users;
        d->tokens = malloc(sizeof(int32_t) * (d->n_tokens ? d->n_tokens : 1));
        d->prompt = malloc(sizeof(int64_t) * 2 * (np ? np : 1));
        d->chosen = malloc(sizeof(int64_t) * 2 * (np ? np : 1));
        d->rejected = malloc(sizeof(int64_t) * 2 * (np ? np : 1));
        d->user_pairs = malloc(sizeof(int64_t) * 2 * (nu ? nu : 1));
        d->user_desc = malloc(sizeof(int64_t) * 2 * (nu ? nu : 1));
        d->user_split = malloc(nu ? nu : 1);
        if (!d->tokens || !d->prompt || !d->chosen || !d->rejected || !d->user_pairs || !d->user_desc ||
            !d->user_split)
            rc = set_err(err, errlen, "%s: out of memory reading the dataset", path);
    }
    hid_t gp = -1, gu = -1;
    if (rc == 0 && (!h5_group_exists(f, "/pairs") || !h5_group_exists(f, "/users")))
        rc = set_err(err, errlen, "%s: group /pairs or /users missing", path);
    if (rc == 0) {
        gp = H5Gopen2(f, "pairs", H5P_DEFAULT);
        gu = H5Gopen2(f, "users", H5P_DEFAULT);
        /* format 3 stores int32 ids; 1 and 2 stored the byte vocabulary as uint16 */
        rc = read_exact_as(f, "tokens", 1, d->n_tokens, 0, d->format_version >= 3 ? H5T_STD_I32LE : H5T_STD_U16LE,
                           H5T_NATIVE_INT32, d->tokens, path, err, errlen);
    }
    if (rc == 0) rc = read_exact(gp, "prompt", 2, d->n_pairs, 2, H5T_NATIVE_INT64, d->prompt, path, err, errlen);
    if (rc == 0) rc = read_exact(gp, "chosen", 2, d->n_pairs, 2, H5T_NATIVE_INT64, d->chosen, path, err, errlen);
    if (rc == 0) rc = read_exact(gp, "rejected", 2, d->n_pairs, 2, H5T_NATIVE_INT64, d->rejected, path, err, errlen);
    if (rc == 0) rc = read_exact(gu, "pairs", 2, d->n_users, 2, H5T_NATIVE_INT64, d->user_pairs, path, err, errlen);
    if (rc == 0)
        rc = read_exact(gu, "description", 2, d->n_users, 2, H5T_NATIVE_INT64, d->user_desc, path, err, errlen);
    if (rc == 0)
        rc = read_exact(gu, v1 ? "heldout" : "split", 1, d->n_users, 0, H5T_NATIVE_UINT8, d->user_split, path, err,
                        errlen);
    if (rc == 0 && h5_read_strings(gu, "id", d->n_users, &d->user_ids) != 0)
        rc = set_err(err, errlen, "%s: users/id missing or not %lld strings", path, (long long)d->n_users);
    if (gp >= 0) H5Gclose(gp);
    if (gu >= 0) H5Gclose(gu);
    H5Fclose(f);
    uint64_t sum = rc == 0 ? dataset_checksum(d) : 0; /* of the arrays as stored */
    for (int64_t u = 0; rc == 0 && v1 && u < d->n_users; u++) {
        if (d->user_split[u] > 1)
            rc = set_err(err, errlen, "%s: user %lld: held-out flag %u", path, (long long)u, d->user_split[u]);
        d->user_split[u] = d->user_split[u] ? SPLIT_TEST : SPLIT_TRAIN;
    }
    char why[512];
    if (rc == 0 && dataset_validate(d, why, sizeof why) != 0) rc = set_err(err, errlen, "%s: %s", path, why);
    if (rc == 0 && sum != d->checksum)
        rc = set_err(err, errlen, "%s: content checksum mismatch (corrupt file)", path);
    if (rc != 0) dataset_free(d);
    return rc;
}

int dataset_read_tokenizer(const char *path, Tokenizer *t, char *err, size_t errlen)
{
    memset(t, 0, sizeof *t);
    hid_t f = -1;
    int64_t version;
    if (open_dataset_file(path, &f, &version, err, errlen) != 0) return -1;
    int rc = tokenizer_h5_read(f, path, t, err, errlen);
    H5Fclose(f);
    return rc;
}

void dataset_free(Dataset *d)
{
    free(d->tokens);
    free(d->prompt);
    free(d->chosen);
    free(d->rejected);
    free(d->user_pairs);
    free(d->user_desc);
    free(d->user_split);
    h5_free_strings(d->user_ids, d->n_users);
    tok_free(&d->tok);
    memset(d, 0, sizeof *d);
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

int dataset_print(const char *path, FILE *out, char *err, size_t errlen)
{
    Dataset d;
    if (dataset_read(path, &d, err, errlen) != 0) return -1;
    int64_t users[SPLIT_COUNT] = { 0 }, pairs[SPLIT_COUNT] = { 0 }, with_desc = 0;
    int64_t *counts = malloc(sizeof(int64_t) * (d.n_users ? d.n_users : 1));
    if (!counts) {
        dataset_free(&d);
        return set_err(err, errlen, "%s: out of memory", path);
    }
    for (int64_t u = 0; u < d.n_users; u++) {
        users[d.user_split[u]]++;
        pairs[d.user_split[u]] += d.user_pairs[2 * u + 1];
        with_desc += d.user_desc[2 * u + 1] > 0;
        counts[u] = d.user_pairs[2 * u + 1];
    }
    qsort(counts, d.n_users, sizeof *counts, cmp_i64);
    fprintf(out, "dataset %s (format %s v%lld%s)\n", path, DATASET_FORMAT, (long long)d.format_version,
            d.format_version == 1 ? ": held-out users read as test users" : "");
    fprintf(out, "  source %s, tokenizer %s (vocab %lld), seed %lld\n", d.source, tok_name(&d.tok), (long long)d.vocab,
            (long long)d.seed);
    fprintf(out, "  users %lld: %lld train / %lld validation / %lld test (val_frac %.3f, test_frac %.3f; %lld with "
                 "a description)\n",
            (long long)d.n_users, (long long)users[SPLIT_TRAIN], (long long)users[SPLIT_VALIDATION],
            (long long)users[SPLIT_TEST], d.val_frac, d.test_frac, (long long)with_desc);
    fprintf(out, "  pairs %lld: %lld train / %lld validation / %lld test; tokens %lld\n", (long long)d.n_pairs,
            (long long)pairs[SPLIT_TRAIN], (long long)pairs[SPLIT_VALIDATION], (long long)pairs[SPLIT_TEST],
            (long long)d.n_tokens);
    if (d.n_users)
        fprintf(out, "  pairs per user: min %lld, median %lld, max %lld\n", (long long)counts[0],
                (long long)counts[d.n_users / 2], (long long)counts[d.n_users - 1]);
    fprintf(out, "  content checksum %016llx: verified\n", (unsigned long long)d.checksum);
    free(counts);
    dataset_free(&d);
    return 0;
}
