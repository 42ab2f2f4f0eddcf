#include "tests/check.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>

static int n_failed;

int check(int ok, const char *name, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("%s: %s: ", ok ? "PASS" : "FAIL", name);
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    fflush(stdout);
    if (!ok) n_failed++;
    return ok;
}

int check_status(void) { return n_failed ? 1 : 0; }

double rel_err(const float *a, const float *b, size_t n, double floor)
{
    double mx = 0, scale = floor;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (d > mx || isnan(d)) mx = isnan(d) ? INFINITY : d;
        if (fabs((double)b[i]) > scale) scale = fabs((double)b[i]);
    }
    return mx / scale;
}

double rel_err_d(const double *a, const double *b, size_t n, double floor)
{
    double mx = 0, scale = floor;
    for (size_t i = 0; i < n; i++) {
        double d = fabs(a[i] - b[i]);
        if (d > mx || isnan(d)) mx = isnan(d) ? INFINITY : d;
        if (fabs(b[i]) > scale) scale = fabs(b[i]);
    }
    return mx / scale;
}
