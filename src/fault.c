/* fault: see fault.h. */
#include "src/fault.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One pass over the value: each hook is scanned once, which both sets its
 * field the way its user always read it (a value that starts like the hook)
 * and tells whether the whole value is exactly that hook, which is what fspo
 * train accepts. */
static Faults fault_parse(const char *f)
{
    Faults x = { .text = f, .valid = 1, .data_rank = -1, .nan_rank = -1, .nan_steps = 1, .diverge_rank = -1,
                 .ckptfail_step = -1 };
    if (!f) return x;
    int whole = !*f, r, k = 1, n = -1, m = -1;
    long s;
    char canon[32];
    if (sscanf(f, "data@%d%n", &r, &n) == 1 && n > 0 && !f[n] && r >= 0) {
        whole = 1;
        if (snprintf(canon, sizeof canon, "data@%d", r), !strcmp(canon, f)) x.data_rank = r; /* exactly "data@R" */
    }
    n = -1;
    int got = sscanf(f, "nan@%d:%ld%n+%d%n", &r, &s, &n, &k, &m);
    if (got >= 2) {
        x.nan_rank = r, x.nan_step = s, x.nan_steps = k;
        whole |= r >= 0 && s >= 0 && ((got == 2 && n > 0 && !f[n]) || (got == 3 && m > 0 && !f[m] && k > 0));
    }
    n = -1;
    if (sscanf(f, "diverge@%d:%ld%n", &r, &s, &n) == 2) {
        x.diverge_rank = r, x.diverge_step = s;
        whole |= n > 0 && !f[n] && r >= 0 && s >= 0;
    }
    n = -1;
    if (sscanf(f, "ckptfail@%ld%n", &s, &n) == 1) {
        x.ckptfail_step = s;
        whole |= n > 0 && !f[n] && s >= 0;
    }
    n = -1;
    if (sscanf(f, "ckptslow@%d%n", &r, &n) == 1 && r >= 0 && r <= 10000) {
        x.ckptslow_ms = r;
        whole |= n > 0 && !f[n];
    }
    x.h5crash = !strcmp(f, "h5crash");
    x.h5hang = !strcmp(f, "h5hang");
    x.valid = whole || x.h5crash || x.h5hang;
    return x;
}

Faults fault_from_env(void)
{
    /* the last value parsed and what it gave: train, every checkpoint save
     * and the HDF5 validation (parent and child) share one parse */
    static Faults cached;
    static char cached_text[128];
    static int cached_state; /* 0 nothing cached, 1 unset, 2 cached_text */
    const char *f = getenv("FSPO_FAULT");
    int hit = f ? cached_state == 2 && !strcmp(f, cached_text) : cached_state == 1;
    if (!hit) {
        cached = fault_parse(f);
        cached_state = !f ? 1 : strlen(f) < sizeof cached_text ? 2 : 0; /* longer: parsed at each call */
        if (cached_state == 2) strcpy(cached_text, f);
    }
    Faults x = cached;
    x.text = f;
    return x;
}

int fault_nan_at(const Faults *f, int rank, long step)
{
    return f->nan_rank >= 0 && rank == f->nan_rank && step >= f->nan_step && step < f->nan_step + f->nan_steps;
}

int fault_diverge_at(const Faults *f, int rank, long step)
{
    return f->diverge_rank >= 0 && rank == f->diverge_rank && step == f->diverge_step;
}
