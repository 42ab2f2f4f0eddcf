/* bench: helpers shared by `fspo bench` modes (src/cli/bench.c, src/cli/bench_fspo.c). */
#ifndef FSPO_BENCH_H
#define FSPO_BENCH_H

#include "src/batch.h"

/* `rows` causal rows of T random bytes (the same on every rank), next-token
 * targets, and malloc'd logp/dlogp [K] with dlogp = -1/K. */
void bench_lm_batch(Batch *b, int rows, int T, float **logp, float **dlogp);

/* a /proc/self/status field in kB (VmHWM = peak RSS, VmRSS = now), -1 if unknown */
long bench_status_kb(const char *key);
/* --pref / --ckpt / --dp modes; -1 if argv asks for none of them */
int bench_extra(int argc, char **argv);

#endif
