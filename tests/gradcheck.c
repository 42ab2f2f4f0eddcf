#include "tests/gradcheck.h"

#include <math.h>

static double at(LossFn f, void *ctx, float *x, size_t i, float x0, float d)
{
    x[i] = x0 + d;
    double v = f(ctx);
    x[i] = x0;
    return v;
}

double gradcheck(LossFn f, void *ctx, float *x, const float *analytic, size_t n, float h, size_t max_elems)
{
    size_t stride = n <= max_elems ? 1 : n / max_elems;
    double max_diff = 0, scale = 1e-30;
    for (size_t i = 0; i < n; i += stride) {
        float x0 = x[i];
        double fd = (8.0 * (at(f, ctx, x, i, x0, h) - at(f, ctx, x, i, x0, -h)) -
                     (at(f, ctx, x, i, x0, 2 * h) - at(f, ctx, x, i, x0, -2 * h))) /
                    (12.0 * h);
        double d = fabs(fd - analytic[i]);
        if (d > max_diff || isnan(d)) max_diff = isnan(d) ? INFINITY : d;
        if (fabs(analytic[i]) > scale) scale = fabs(analytic[i]);
    }
    return max_diff / scale;
}
