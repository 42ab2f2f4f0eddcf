/* peak: see peak.h. */
#include "src/peak.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>

#include "src/ops.h"
#include "src/rng.h"
#include "src/util.h"

double peak_sgemm_gflops(int n, int reps)
{
    float *a = xmalloc_aligned(sizeof(float) * n * n, "sgemm benchmark");
    float *b = xmalloc_aligned(sizeof(float) * n * n, "sgemm benchmark");
    float *c = xmalloc_aligned(sizeof(float) * n * n, "sgemm benchmark");
    Rng r = rng_seed(7, 0);
    for (long i = 0; i < (long)n * n; i++) {
        a[i] = (float)rng_uniform(&r) - 0.5f;
        b[i] = (float)rng_uniform(&r) - 0.5f;
    }
    double times[64];
    if (reps > 64) reps = 64;
    for (int k = -1; k < reps; k++) {
        double t0 = now_seconds();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
        if (k >= 0) times[k] = now_seconds() - t0;
    }
    double t = median(times, reps);
    xfree_aligned(a);
    xfree_aligned(b);
    xfree_aligned(c);
    return 2.0 * n * (double)n * n / t / 1e9;
}

/* FSPO_PEAK_GFLOPS when it is a positive number, else 0 */
static double peak_from_env(void)
{
    const char *pk = getenv("FSPO_PEAK_GFLOPS");
    char *end = NULL;
    double g = pk ? strtod(pk, &end) : 0;
    return pk && end != pk && *end == '\0' && g > 0 && isfinite(g) ? g : 0;
}

int peak_overridden(void) { return peak_from_env() > 0; }

double peak_measure_gflops(int bf16) { return bf16 ? matmul_bf16_peak_gflops(1024, 3) : peak_sgemm_gflops(1024, 3); }

double peak_train_gflops(int bf16)
{
    double g = peak_from_env();
    return g > 0 ? g : peak_measure_gflops(bf16);
}
