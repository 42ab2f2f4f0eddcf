/* metrics: the run's metrics log, one JSON object per logged step
 * (<run_dir>/metrics.jsonl), with TRL's DPOTrainer names (loss,
 * rewards/chosen, rewards/margins, ..., plus tokens_per_sec, mfu).
 *
 * Resume-safe: opening at step s first drops every line after s (and a
 * torn last line from a crash), so a run resumed from its checkpoint at
 * step s never logs a step twice and the log equals an uninterrupted run's. */
#ifndef FSPO_METRICS_H
#define FSPO_METRICS_H

#include <stddef.h>

typedef struct MetricsLog MetricsLog;

/* Opens path for appending after keeping only complete lines whose "step"
 * is <= keep_upto (keep_upto < 0: start a new, empty log). NULL and err on failure. */
MetricsLog *metrics_open(const char *path, long keep_upto, char *err, size_t errlen);

/* One logged field: its name in metrics.jsonl and this step's value. */
typedef struct {
    const char *name;
    double value;
} Metric;

/* Appends {"step": step, fields[i].name: fields[i].value, ...} in table
 * order and flushes it to the kernel. Non-finite values are written as
 * null (JSON has no NaN). */
int metrics_log(MetricsLog *m, long step, const Metric *fields, int n);

void metrics_close(MetricsLog *m);

#endif
