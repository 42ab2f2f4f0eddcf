/* check: the C tests' tiny harness. Each check prints one line,
 * "PASS: name" or "FAIL: name: detail"; tests/run.sh counts them. */
#ifndef FSPO_CHECK_H
#define FSPO_CHECK_H

#include <stddef.h>

/* Records one check; returns ok. */
int check(int ok, const char *name, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Exit status for main: 1 if any check failed. */
int check_status(void);

/* max|a-b| / max(max|b|, floor): errors relative to the tensor's scale, so a
 * near-zero element does not turn rounding noise into a huge ratio. */
double rel_err(const float *a, const float *b, size_t n, double floor);
double rel_err_d(const double *a, const double *b, size_t n, double floor);

#endif
