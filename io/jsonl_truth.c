/* jsonl_truth: reads synthetic users' ground truth (fspo synth's
 * OUT.truth.jsonl) into memory; see jsonl.h.
 *
 * The file is small (one short line per user), so it is read whole with
 * getline and jansson. Records are kept sorted by user id so [eval] finds
 * a held-out user's weights by binary search. A line that is not a full,
 * well-typed record stops the read: oracle numbers computed from a
 * half-read truth file would look exact and be wrong. */
#include "io/jsonl.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "src/util.h"

typedef struct {
    UserTruth pub;       /* what callers see; its pointers point into the fields below */
    char *user_id, *flavor, *description;
    double *weights;
    char **names;
} TruthRecord;

struct TruthSet {
    TruthRecord *rec;
    int64_t n, cap;
};

static void record_free(TruthRecord *r)
{
    free(r->user_id), free(r->flavor), free(r->description), free(r->weights);
    if (r->names)
        for (int k = 0; k < r->pub.n_attrs; k++) free(r->names[k]);
    free(r->names);
}

void truth_free(TruthSet *t)
{
    if (!t) return;
    for (int64_t i = 0; i < t->n; i++) record_free(&t->rec[i]);
    free(t->rec);
    free(t);
}

int64_t truth_count(const TruthSet *t) { return t ? t->n : 0; }

/* A string field, copied; optional ones may be absent ("" then). */
static int string_field(json_t *obj, const char *key, int required, char **out, const char **why)
{
    json_t *v = json_object_get(obj, key);
    if (!v && !required) v = NULL;
    else if (!v || !json_is_string(v)) {
        *why = key;
        return -1;
    }
    *out = strdup(v ? json_string_value(v) : "");
    return *out ? 0 : -1;
}

/* Parses one line into r; -1 with a reason. */
static int parse_record(const char *line, size_t len, TruthRecord *r, char *why, size_t whylen)
{
    json_error_t jerr;
    json_t *obj = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!obj) return set_err(why, whylen, "malformed JSON: %s (column %d)", jerr.text, jerr.column);
    int rc = -1;
    const char *bad = NULL;
    json_t *w = json_object_get(obj, "weights"), *names = json_object_get(obj, "attr_names");
    json_t *ver = json_object_get(obj, "scorer_version"), *temp = json_object_get(obj, "temperature");
    if (!json_is_object(obj)) bad = "not a JSON object";
    else if (string_field(obj, "user_id", 1, &r->user_id, &bad) || string_field(obj, "flavor", 0, &r->flavor, &bad) ||
             string_field(obj, "description", 0, &r->description, &bad))
        bad = bad ? bad : "out of memory";
    else if (!json_is_array(w) || json_array_size(w) < 1 || json_array_size(w) > 64) bad = "weights (1..64 numbers)";
    else if (!json_is_array(names) || json_array_size(names) != json_array_size(w))
        bad = "attr_names (one string per weight)";
    else if (!json_is_integer(ver)) bad = "scorer_version";
    else if (temp && !json_is_number(temp)) bad = "temperature";
    if (bad) {
        set_err(why, whylen, "missing or invalid field '%s'", bad);
        goto done;
    }
    int n = (int)json_array_size(w);
    r->weights = calloc((size_t)n, sizeof(double));
    r->names = calloc((size_t)n, sizeof(char *));
    if (!r->weights || !r->names) {
        set_err(why, whylen, "out of memory");
        goto done;
    }
    r->pub.n_attrs = n;
    for (int k = 0; k < n; k++) {
        json_t *x = json_array_get(w, (size_t)k), *s = json_array_get(names, (size_t)k);
        if (!json_is_number(x) || !isfinite(json_number_value(x)) || !json_is_string(s)) {
            set_err(why, whylen, "weight or attribute name %d is not a finite number / a string", k);
            goto done;
        }
        r->weights[k] = json_number_value(x);
        r->names[k] = strdup(json_string_value(s));
        if (!r->names[k]) {
            set_err(why, whylen, "out of memory");
            goto done;
        }
    }
    r->pub.user_id = r->user_id, r->pub.flavor = r->flavor, r->pub.description = r->description;
    r->pub.weights = r->weights, r->pub.attr_names = (const char *const *)r->names;
    r->pub.temperature = temp ? json_number_value(temp) : 0;
    r->pub.scorer_version = (int)json_integer_value(ver);
    rc = 0;
done:
    json_decref(obj);
    return rc;
}

static int by_user_id(const void *a, const void *b)
{
    return strcmp(((const TruthRecord *)a)->user_id, ((const TruthRecord *)b)->user_id);
}

static int blank(const char *s)
{
    for (; *s; s++)
        if (*s != ' ' && *s != '\t' && *s != '\r' && *s != '\n') return 0;
    return 1;
}

TruthSet *truth_read(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        set_err(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    TruthSet *t = calloc(1, sizeof *t);
    char *line = NULL, why[256];
    size_t cap = 0;
    long line_no = 0;
    ssize_t len;
    int ok = t != NULL;
    while (ok && (len = getline(&line, &cap, f)) >= 0) {
        line_no++;
        if (blank(line)) continue;
        if (t->n == t->cap) {
            int64_t nc = t->cap ? 2 * t->cap : 256;
            TruthRecord *r = realloc(t->rec, sizeof *r * (size_t)nc);
            if (!r) {
                set_err(err, errlen, "%s: out of memory", path);
                ok = 0;
                break;
            }
            t->rec = r, t->cap = nc;
        }
        TruthRecord *r = &t->rec[t->n];
        memset(r, 0, sizeof *r);
        if (parse_record(line, (size_t)len, r, why, sizeof why) != 0) {
            set_err(err, errlen, "%s:%ld: %s", path, line_no, why);
            record_free(r);
            ok = 0;
            break;
        }
        t->n++;
    }
    if (ok && ferror(f)) set_err(err, errlen, "%s: read error: %s", path, strerror(errno)), ok = 0;
    free(line);
    fclose(f);
    if (ok && t->n == 0) set_err(err, errlen, "%s: no user records", path), ok = 0;
    if (ok) {
        qsort(t->rec, (size_t)t->n, sizeof *t->rec, by_user_id);
        for (int64_t i = 1; i < t->n; i++)
            if (!strcmp(t->rec[i].user_id, t->rec[i - 1].user_id)) {
                set_err(err, errlen, "%s: user '%s' appears twice", path, t->rec[i].user_id);
                ok = 0;
                break;
            }
    }
    if (!ok) {
        truth_free(t);
        return NULL;
    }
    return t;
}

const UserTruth *truth_find(const TruthSet *t, const char *user_id)
{
    int64_t lo = 0, hi = t->n;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        int c = strcmp(t->rec[mid].user_id, user_id);
        if (c == 0) return &t->rec[mid].pub;
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}
