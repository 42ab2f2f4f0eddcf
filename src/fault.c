/* fault: see fault.h. */
#include "fault.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Whole-string matches only: what fspo train accepts. */
static int whole_hook(const char *f)
{
    int a, c, n = -1;
    long b;
    return (sscanf(f, "data@%d%n", &a, &n) == 1 && n > 0 && !f[n] && a >= 0) ||
           (n = -1, sscanf(f, "nan@%d:%ld%n", &a, &b, &n) == 2 && n > 0 && !f[n] && a >= 0 && b >= 0) ||
           (n = -1, sscanf(f, "nan@%d:%ld+%d%n", &a, &b, &c, &n) == 3 && n > 0 && !f[n] && a >= 0 && b >= 0 && c > 0) ||
           (n = -1, sscanf(f, "diverge@%d:%ld%n", &a, &b, &n) == 2 && n > 0 && !f[n] && a >= 0 && b >= 0) ||
           (n = -1, sscanf(f, "ckptfail@%ld%n", &b, &n) == 1 && n > 0 && !f[n] && b >= 0) ||
           (n = -1, sscanf(f, "ckptslow@%d%n", &a, &n) == 1 && n > 0 && !f[n] && a >= 0 && a <= 10000) ||
           !strcmp(f, "h5crash") || !strcmp(f, "h5hang");
}

Faults fault_parse(const char *f)
{
    Faults x = { .text = f, .valid = 1, .data_rank = -1, .nan_rank = -1, .nan_steps = 1, .diverge_rank = -1,
                 .ckptfail_step = -1 };
    if (!f) return x;
    x.valid = !*f || whole_hook(f);
    int r, n = -1;
    char canon[32];
    if (sscanf(f, "data@%d%n", &r, &n) == 1 && n > 0 && !f[n] && r >= 0 &&
        (snprintf(canon, sizeof canon, "data@%d", r), !strcmp(canon, f))) /* exactly "data@R" */
        x.data_rank = r;
    int k = 1;
    long s;
    if (sscanf(f, "nan@%d:%ld+%d", &r, &s, &k) >= 2) x.nan_rank = r, x.nan_step = s, x.nan_steps = k;
    if (sscanf(f, "diverge@%d:%ld", &r, &s) == 2) x.diverge_rank = r, x.diverge_step = s;
    if (sscanf(f, "ckptfail@%ld", &s) == 1) x.ckptfail_step = s;
    if (sscanf(f, "ckptslow@%d", &r) == 1 && r >= 0 && r <= 10000) x.ckptslow_ms = r;
    x.h5crash = !strcmp(f, "h5crash");
    x.h5hang = !strcmp(f, "h5hang");
    return x;
}

Faults fault_from_env(void) { return fault_parse(getenv("FSPO_FAULT")); }

int fault_nan_at(const Faults *f, int rank, long step)
{
    return f->nan_rank >= 0 && rank == f->nan_rank && step >= f->nan_step && step < f->nan_step + f->nan_steps;
}

int fault_diverge_at(const Faults *f, int rank, long step)
{
    return f->diverge_rank >= 0 && rank == f->diverge_rank && step == f->diverge_step;
}
