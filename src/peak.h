/* peak: the MFU probe. MFU (model FLOPs utilization) is the model's useful
 * FLOP/s over this machine's ceiling for the products it runs, measured
 * here by timing large matrix products (fspo train at start-up, fspo bench). */
#ifndef FSPO_PEAK_H
#define FSPO_PEAK_H

/* Median GFLOP/s of `reps` n x n x n OpenBLAS sgemms on random inputs (one
 * warm-up call first). */
double peak_sgemm_gflops(int n, int reps);

/* The ceiling fspo train divides by: FSPO_PEAK_GFLOPS when it is a positive
 * number (valgrind runs the probe ~100x slower; anything else is ignored),
 * else the median of 3 timed 1024^3 products in the run's precision
 * (bf16: matmul_bf16_peak_gflops, else sgemm). */
double peak_train_gflops(int bf16);
/* The measurement alone (FSPO_PEAK_GFLOPS not read), and whether that
 * variable sets the ceiling. */
double peak_measure_gflops(int bf16);
int peak_overridden(void);

#endif
