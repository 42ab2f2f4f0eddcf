/* jsonl writing: preference rows and synthetic users' ground truth, one JSON
 * object per line, via jansson; see jsonl.h.
 *
 * Protocol: rows go to FILE.tmp; jsonl_writer_close flushes, fsyncs,
 * renames it to FILE and fsyncs the directory, so FILE is either absent, the
 * previous version, or complete. Errors are sticky: after a write returns
 * -1 (a string that is not valid UTF-8, a non-finite weight, a full disk)
 * nothing more is written, and jsonl_writer_close discards the temporary
 * file and returns -1 with the first error's message. A caller therefore
 * never ships a file with a row silently missing.
 *
 * Strings carry explicit lengths and may hold NUL bytes (written as
 * \u0000). Values go through json_stringn, which rejects invalid UTF-8 --
 * jansson would otherwise emit bytes no JSON reader accepts; only the
 * constant keys use the _nocheck setters. */
#include "io/jsonl.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/dataset.h"
#include "src/util.h"

struct JsonlWriter {
    FILE *f;
    char *path, *tmp;
    long rows;      /* lines written so far, to name the failing one */
    int failed;     /* sticky: see the protocol above */
    char err[512];
};

/* Records the first error; later ones are consequences of it. */
static int writer_fail(JsonlWriter *w, const char *fmt, const char *detail)
{
    if (!w->failed) {
        w->failed = 1;
        snprintf(w->err, sizeof w->err, fmt, w->path, w->rows + 1, detail);
    }
    return -1;
}

static char *concat(const char *a, const char *b)
{
    size_t na = strlen(a), nb = strlen(b);
    char *s = malloc(na + nb + 1);
    if (s) {
        memcpy(s, a, na);
        memcpy(s + na, b, nb + 1);
    }
    return s;
}

JsonlWriter *jsonl_writer_open(const char *path, char *err, size_t errlen)
{
    JsonlWriter *w = calloc(1, sizeof *w);
    if (w) {
        w->path = concat(path, "");
        w->tmp = concat(path, ".tmp");
    }
    if (!w || !w->path || !w->tmp) {
        set_err(err, errlen, "%s: out of memory", path);
        jsonl_writer_abort(w);
        return NULL;
    }
    w->f = fopen(w->tmp, "w");
    if (!w->f) {
        set_err(err, errlen, "%s: cannot create: %s", w->tmp, strerror(errno));
        jsonl_writer_abort(w);
        return NULL;
    }
    /* rows are small and many: a big buffer keeps write(2) calls rare */
    setvbuf(w->f, NULL, _IOFBF, 1 << 20);
    return w;
}

/* Adds key: string of n bytes; -1 if the bytes are not valid UTF-8. */
static int set_string(json_t *obj, const char *key, const char *s, size_t n)
{
    json_t *v = json_stringn(s ? s : "", s ? n : 0);
    return v ? json_object_set_new_nocheck(obj, key, v) : -1;
}

/* Writes obj as one line and drops it. */
/* Reals get 15 significant digits: 0.1 reads "0.1", not 0.10000000000000001,
 * and any value with at most 15 significant digits (fspo synth's weights are
 * multiples of 1e-6) still parses back to the same double. */
static int write_line(JsonlWriter *w, json_t *obj)
{
    int rc = json_dumpf(obj, w->f, JSON_COMPACT | JSON_REAL_PRECISION(15));
    json_decref(obj);
    if (rc != 0 || fputc('\n', w->f) == EOF)
        return writer_fail(w, "%s.tmp: line %ld: write failed: %s", strerror(errno ? errno : EIO));
    w->rows++;
    return 0;
}

int jsonl_write_row(JsonlWriter *w, const PrefRow *row)
{
    if (w->failed) return -1;
    json_t *obj = json_object();
    if (!obj) return writer_fail(w, "%s: line %ld: %s", "out of memory");
    struct {
        const char *key, *s;
        size_t n;
        int optional; /* absent when s is NULL */
    } fields[] = {
        { "user_id", row->user_id, row->user_id ? strlen(row->user_id) : 0, 0 },
        { "prompt", row->prompt, row->prompt_len, 0 },
        { "chosen", row->chosen, row->chosen_len, 0 },
        { "rejected", row->rejected, row->rejected_len, 0 },
        { "user_description", row->user_description, row->user_description_len, 1 },
        { "split", row->split, row->split ? strlen(row->split) : 0, 1 },
    };
    if (row->split && dataset_split_parse(row->split) < 0) {
        json_decref(obj);
        return writer_fail(w, "%s: line %ld: field 'split' is '%s', not train, validation or test", row->split);
    }
    for (int i = 0; i < (int)(sizeof fields / sizeof *fields); i++) {
        if (fields[i].optional && !fields[i].s) continue;
        if (!fields[i].s) {
            json_decref(obj);
            return writer_fail(w, "%s: line %ld: field '%s' is missing", fields[i].key);
        }
        if (set_string(obj, fields[i].key, fields[i].s, fields[i].n) != 0) {
            json_decref(obj);
            return writer_fail(w, "%s: line %ld: field '%s' is not valid UTF-8", fields[i].key);
        }
    }
    return write_line(w, obj);
}

/* A JSON array of n strings; NULL if one is missing or not UTF-8. */
static json_t *string_array(const char *const *items, int n)
{
    json_t *a = json_array();
    for (int i = 0; a && i < n; i++) {
        json_t *v = items[i] ? json_string(items[i]) : NULL;
        if (!v || json_array_append_new(a, v) != 0) {
            json_decref(a);
            return NULL;
        }
    }
    return a;
}

/* NULL if a weight is not finite (JSON has no NaN). */
static json_t *real_array(const double *x, int n)
{
    json_t *a = json_array();
    for (int i = 0; a && i < n; i++) {
        json_t *v = json_real(x[i]); /* NULL for NaN and inf */
        if (!v || json_array_append_new(a, v) != 0) {
            json_decref(a);
            return NULL;
        }
    }
    return a;
}

int jsonl_write_truth(JsonlWriter *w, const UserTruth *t)
{
    if (w->failed) return -1;
    if (t->n_attrs < 1 || !t->weights || !t->attr_names || !t->user_id)
        return writer_fail(w, "%s: line %ld: %s", "ground truth needs a user id, weights and attribute names");
    json_t *obj = json_object();
    if (!obj) return writer_fail(w, "%s: line %ld: %s", "out of memory");
    const char *bad = NULL;
    if (set_string(obj, "user_id", t->user_id, strlen(t->user_id)) != 0) bad = "user_id is not valid UTF-8";
    else if (set_string(obj, "flavor", t->flavor, t->flavor ? strlen(t->flavor) : 0) != 0)
        bad = "flavor is not valid UTF-8";
    else if (set_string(obj, "description", t->description, t->description ? strlen(t->description) : 0) != 0)
        bad = "description is not valid UTF-8";
    else if (json_object_set_new_nocheck(obj, "scorer_version", json_integer(t->scorer_version)) != 0 ||
             json_object_set_new_nocheck(obj, "temperature", json_real(t->temperature)) != 0)
        bad = "temperature is not finite";
    else if (json_object_set_new_nocheck(obj, "attr_names", string_array(t->attr_names, t->n_attrs)) != 0)
        bad = "an attribute name is missing or not valid UTF-8";
    else if (json_object_set_new_nocheck(obj, "weights", real_array(t->weights, t->n_attrs)) != 0)
        bad = "a weight is not finite";
    else if (t->population && set_string(obj, "population", t->population, strlen(t->population)) != 0)
        bad = "population is not valid UTF-8";
    else if (t->has_split && json_object_set_new_nocheck(obj, "interpolated", json_boolean(t->interpolated)) != 0)
        bad = "out of memory";
    if (bad) {
        json_decref(obj);
        return writer_fail(w, "%s: line %ld: %s", bad);
    }
    return write_line(w, obj);
}

/* Makes the rename itself durable; a filesystem that cannot fsync a
 * directory (some network ones) has nothing more to offer, so that is not
 * an error. */
static void fsync_parent_dir(const char *path)
{
    char *dir = concat(path, "");
    if (!dir) return;
    char *slash = strrchr(dir, '/');
    if (slash == dir) slash[1] = '\0';
    else if (slash) *slash = '\0';
    else strcpy(dir, ".");
    int fd = open(dir, O_RDONLY);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
    free(dir);
}

static void writer_free(JsonlWriter *w)
{
    free(w->path);
    free(w->tmp);
    free(w);
}

int jsonl_writer_close(JsonlWriter *w, char *err, size_t errlen)
{
    if (!w) return set_err(err, errlen, "no writer");
    if (w->failed) {
        set_err(err, errlen, "%s", w->err);
        jsonl_writer_abort(w);
        return -1;
    }
    int ok = fflush(w->f) == 0 && fsync(fileno(w->f)) == 0;
    int e = errno;
    if (fclose(w->f) != 0 && ok) {
        ok = 0;
        e = errno;
    }
    w->f = NULL;
    if (ok && rename(w->tmp, w->path) != 0) {
        ok = 0;
        e = errno;
    }
    if (!ok) {
        set_err(err, errlen, "%s: cannot write: %s", w->tmp, strerror(e));
        unlink(w->tmp);
        writer_free(w);
        return -1;
    }
    fsync_parent_dir(w->path);
    writer_free(w);
    return 0;
}

void jsonl_writer_abort(JsonlWriter *w)
{
    if (!w) return;
    if (w->f) fclose(w->f);
    if (w->tmp) unlink(w->tmp);
    writer_free(w);
}
