/* threads: how many threads each rank runs (OpenBLAS and the pool of the
 * non-BLAS loops, src/pool.h) and where that number comes from. */
#ifndef FSPO_THREADS_H
#define FSPO_THREADS_H

#include <stddef.h>

/* Threads per rank: `configured` (mpi.threads_per_rank) when > 0, else
 * SLURM_CPUS_PER_TASK, else this node's cores / `local_ranks`, capped by the
 * CPUs this rank is bound to. Rank 0 warns when a configured count exceeds
 * the binding. Writes the source of the number to why. */
int threads_per_rank(int configured, int local_ranks, int rank, char *why, size_t len);

/* Runs OpenBLAS and the thread pool on n threads. */
void threads_use(int n);

#endif
