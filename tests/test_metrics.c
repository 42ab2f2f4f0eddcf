/* Metrics log: one JSON line per step, NaN as null, and resume truncation
 * that drops steps after the checkpoint and a torn last line. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/metrics.h"
#include "tests/check.h"

static int count_lines(const char *path, long *last_step)
{
    FILE *f = fopen(path, "r");
    char buf[4096];
    int n = 0;
    while (f && fgets(buf, sizeof buf, f)) {
        json_error_t je;
        json_t *o = json_loads(buf, 0, &je);
        if (!o) return -1; /* every line must parse */
        *last_step = (long)json_integer_value(json_object_get(o, "step"));
        json_decref(o);
        n++;
    }
    if (f) fclose(f);
    return n;
}

int main(void)
{
    char path[] = "/tmp/fspo-metrics.XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    char err[512];
    MetricsLog *m = metrics_open(path, -1, err, sizeof err);
    for (long s = 1; s <= 10; s++) {
        Metric v[3] = { { "loss", 1.0 / s }, { "rewards/accuracies", 0.5 }, { "grad_norm", s == 4 ? NAN : 2.0 } };
        metrics_log(m, s, v, 3);
    }
    metrics_close(m);
    long last = 0;
    int n = count_lines(path, &last);
    check(n == 10 && last == 10, "ten lines logged", "%d lines, last step %ld", n, last);
    FILE *f = fopen(path, "r");
    char line[512] = "";
    for (int i = 0; i < 4; i++) fgets(line, sizeof line, f);
    fclose(f);
    check(strstr(line, "\"step\":4") && strstr(line, "\"grad_norm\":null") && strstr(line, "\"rewards/accuracies\":0.5"),
          "NaN written as null, TRL names kept", "%s", line);
    /* a crash leaves a torn line; resume from the checkpoint at step 6 */
    f = fopen(path, "a");
    fputs("{\"step\":11,\"loss\":0.0", f);
    fclose(f);
    m = metrics_open(path, 6, err, sizeof err);
    n = count_lines(path, &last);
    check(m && n == 6 && last == 6, "resume keeps steps <= 6 and drops the torn line", "%d lines, last step %ld", n,
          last);
    Metric v[3] = { { "loss", 0.1 }, { "rewards/accuracies", 1.0 }, { "grad_norm", 3.0 } };
    metrics_log(m, 7, v, 3);
    metrics_close(m);
    n = count_lines(path, &last);
    check(n == 7 && last == 7, "appends after resume", "%d lines, last step %ld", n, last);
    m = metrics_open("/nonexistent/dir/metrics.jsonl", -1, err, sizeof err);
    check(m == NULL && strstr(err, "/nonexistent/dir/metrics.jsonl"), "unwritable path", "%s", err);
    unlink(path);
    return check_status();
}
