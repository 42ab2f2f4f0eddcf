/* bench: helpers shared by `fspo bench` modes (src/bench.c, src/bench_fspo.c). */
#ifndef FSPO_BENCH_H
#define FSPO_BENCH_H

double bench_median(const double *v, int n);
/* a /proc/self/status field in kB (VmHWM = peak RSS, VmRSS = now), -1 if unknown */
long bench_status_kb(const char *key);
/* --pref / --ckpt / --dp modes; -1 if argv asks for none of them */
int bench_extra(int argc, char **argv);

#endif
