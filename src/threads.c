/* threads: see threads.h. */
#include "src/threads.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "src/pool.h"
#include "src/util.h"

int threads_per_rank(int configured, int local_ranks, int rank, char *why, size_t len)
{
    int t = configured;
    const char *src = "mpi.threads_per_rank";
    if (t <= 0) {
        const char *s = getenv("SLURM_CPUS_PER_TASK");
        char *end;
        long v = s ? strtol(s, &end, 10) : 0;
        if (s && *end == '\0' && v > 0 && v < 4096) t = (int)v, src = "SLURM_CPUS_PER_TASK";
    }
    int bound = affinity_cpus();
    if (t <= 0) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        t = (int)(cores / local_ranks);
        src = "cores / ranks on this node";
        if (bound > 0 && bound < t) t = bound, src = "the CPUs this rank is bound to";
        if (t < 1) t = 1;
    } else if (bound > 0 && bound < t && rank == 0) {
        /* mpirun binds each rank to one core by default (np <= 2): more
         * threads than that only take turns on it */
        fprintf(stderr, "train: warning: %s = %d threads per rank, but this rank may run on %d CPU(s) only (launcher "
                        "binding): they will share them; use mpirun --bind-to none or --map-by slot:PE=%d\n",
                src, t, bound, t);
    }
    snprintf(why, len, "%s", src);
    return t;
}

void threads_use(int n)
{
    openblas_set_num_threads(n);
    pool_set_threads(n);
}
