/* metrics: JSONL metrics log via jansson; see metrics.h. */
#include "io/metrics.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "src/util.h"

struct MetricsLog {
    FILE *f;
    char path[4096];
};

/* Rewrites path keeping complete lines with step <= keep_upto (atomic: tmp + rename). */
static int truncate_log(const char *path, long keep_upto, char *err, size_t errlen)
{
    FILE *in = fopen(path, "r");
    if (!in) return errno == ENOENT ? 0 : set_err(err, errlen, "%s: %s", path, strerror(errno));
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *out = fopen(tmp, "w");
    if (!out) {
        fclose(in);
        return set_err(err, errlen, "%s: %s", tmp, strerror(errno));
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, in)) > 0) {
        if (line[n - 1] != '\n') break; /* torn last line of a crashed run */
        json_error_t je;
        json_t *obj = json_loads(line, 0, &je);
        json_t *step = obj ? json_object_get(obj, "step") : NULL;
        int keep = step && json_is_integer(step) && json_integer_value(step) <= keep_upto;
        json_decref(obj);
        if (keep) fputs(line, out);
    }
    free(line);
    fclose(in);
    int rc = fflush(out) == 0 && fsync(fileno(out)) == 0;
    if (fclose(out) != 0) rc = 0;
    if (!rc || rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return set_err(err, errlen, "%s: cannot rewrite for resume: %s", path, strerror(e));
    }
    return 0;
}

MetricsLog *metrics_open(const char *path, long keep_upto, char *err, size_t errlen)
{
    if (keep_upto >= 0) {
        if (truncate_log(path, keep_upto, err, errlen) != 0) return NULL;
    } else if (unlink(path) != 0 && errno != ENOENT) {
        set_err(err, errlen, "%s: %s", path, strerror(errno));
        return NULL;
    }
    MetricsLog *m = calloc(1, sizeof *m);
    if (!m) {
        set_err(err, errlen, "out of memory");
        return NULL;
    }
    snprintf(m->path, sizeof m->path, "%s", path);
    m->f = fopen(path, "a");
    if (!m->f) {
        set_err(err, errlen, "%s: %s", path, strerror(errno));
        free(m);
        return NULL;
    }
    return m;
}

int metrics_log(MetricsLog *m, long step, const Metric *fields, int n)
{
    json_t *obj = json_object();
    json_object_set_new(obj, "step", json_integer(step));
    for (int i = 0; i < n; i++)
        json_object_set_new(obj, fields[i].name, isfinite(fields[i].value) ? json_real(fields[i].value) : json_null());
    char *s = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9));
    json_decref(obj);
    if (!s) return -1;
    int rc = fprintf(m->f, "%s\n", s) < 0 || fflush(m->f) != 0 ? -1 : 0;
    free(s);
    return rc;
}

void metrics_close(MetricsLog *m)
{
    if (!m) return;
    fclose(m->f);
    free(m);
}
