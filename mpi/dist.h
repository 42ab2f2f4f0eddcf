/* dist: everything fspo asks of MPI (only mpi/ calls MPI).
 *
 * Data parallelism needs little: one broadcast of the initial state, a
 * gradient allreduce per step (in buckets, started while the backward is
 * still running), one small allreduce of metrics and flags per step, and
 * a way to bring every rank down at once when one of them fails. */
#ifndef FSPO_DIST_H
#define FSPO_DIST_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    int rank, size;             /* in MPI_COMM_WORLD */
    int local_rank, local_size; /* ranks sharing this node */
} Dist;

/* Initializes MPI (works as a singleton without mpirun too) and installs
 * dist_abort as the fatal() hook, so an error on one rank ends the job. */
void dist_init(int *argc, char ***argv, Dist *d);
void dist_finalize(void);
/* MPI_Abort: every rank of the job stops within seconds. */
_Noreturn void dist_abort(int code);
int dist_initialized(void);

void dist_barrier(void);
void dist_bcast(void *buf, size_t bytes, int root);
/* In-place sums over ranks (metrics, counts). */
void dist_allreduce_sum_f64(double *v, int n);
/* Maximum over ranks: agreement on stop flags and failures. */
int dist_allreduce_max_int(int v);
/* The same for n values at once, in place. */
void dist_allreduce_max_ints(int *v, int n);
/* 1 if every rank passed the same value. */
int dist_all_equal_u64(uint64_t v);
/* Rank r's `bytes` bytes land at all + r * bytes on root (all: size x bytes). */
void dist_gather_bytes(const void *mine, size_t bytes, void *all, int root);

/* Gradient reduction in buckets over the flat gradient buffer. The buffer
 * is split at `cuts` (increasing offsets, the last == n) into ranges that
 * the backward finishes from the end towards the start; as soon as all
 * ranges from some cut to n are final, dist_reducer_ready() starts their
 * MPI_Iallreduce (summing in place) so communication overlaps the rest of
 * the backward. dist_reducer_finish() starts what is left and waits for
 * all: the gradients are then the SUM over ranks (the loss is normalized by
 * global counts, src/loss.h, so no rescaling follows). */
typedef struct GradReducer GradReducer;
GradReducer *dist_reducer_create(float *grads, const size_t *cuts, int n_cuts, double bucket_bytes);
void dist_reducer_free(GradReducer *r);
void dist_reducer_begin(GradReducer *r);           /* a new step: nothing started yet */
void dist_reducer_ready(GradReducer *r, size_t from); /* grads[from..n) are final */
void dist_reducer_finish(GradReducer *r);
/* ZeRO-1 (mpi.shard_optimizer): the same buckets reduce-scattered
 * instead. bounds[0..size] split the flat vector into the ranks' slices
 * (bounds[0] = 0, bounds[size] = n; rank k owns [bounds[k], bounds[k+1]),
 * src/optim.h: optim_shard_range); each bucket's MPI_Ireduce_scatter hands
 * every rank the sum of the bucket's part inside its slice. After
 * dist_reducer_finish, grads[bounds[rank], bounds[rank+1]) hold the SUM
 * over ranks; the rest of grads is left unspecified. */
GradReducer *dist_reducer_create_sharded(float *grads, const size_t *cuts, int n_cuts, double bucket_bytes,
                                         const size_t *bounds);
/* The buckets: n_buckets + 1 increasing offsets from 0 to n in *start;
 * returns n_buckets. */
int dist_reducer_buckets(const GradReducer *r, const size_t **start);
/* The slices' collectives, bucket by bucket (every count fits an int):
 * every rank's slice of buf (n floats) to every rank, in place, all at once; */
void dist_slices_allgather(GradReducer *r, float *buf);
/* or started bucket by bucket (every rank starts b = 0, 1, ... in order,
 * e.g. as the optimizer finishes each: optim_update_parts), then waited
 * for; returns the seconds waited. */
void dist_slices_allgather_start(GradReducer *r, float *buf, int b);
double dist_slices_allgather_wait(GradReducer *r);
/* elements [s, e) of the vector the slices make, to root's out (e - s
 * floats; ignored elsewhere): every rank passes its slice as `mine`
 * (bounds[rank+1] - bounds[rank] floats) and sends what of it lies in
 * [s, e); e - s must fit an int (one tensor: a checkpoint's moments). */
void dist_slices_gather_range(GradReducer *r, const float *mine, size_t s, size_t e, float *out, int root);

/* Point to point, in chunks of 2^30 floats: n floats to rank dest, and
 * from rank src (a ZeRO-1 resume: rank 0 hands each rank its moments). */
void dist_send_floats(const float *buf, size_t n, int dest);
void dist_recv_floats(float *buf, size_t n, int src);
/* Buckets not yet complete (polls them once): for the overlap benchmark. */
int dist_reducer_pending(GradReducer *r);
/* Seconds spent inside finish (waiting) and total communication started,
 * for the overlap figure. */
void dist_reducer_stats(const GradReducer *r, double *wait_s, int *buckets);

/* Median seconds of a blocking in-place allreduce of n floats (3 runs):
 * what the gradient reduction would cost if nothing overlapped it. */
double dist_time_allreduce(float *buf, size_t n);
/* The same for r's reduction (every bucket started at once, then waited
 * for; 3 runs): the sharded runs' figure. Overwrites r's gradients. */
double dist_reducer_time(GradReducer *r);

#endif
