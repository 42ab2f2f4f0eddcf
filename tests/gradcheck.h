/* gradcheck: finite-difference checking shared by the op and model tests.
 *
 * The function under test is a scalar loss f(x) evaluated in fp32 inside
 * and summed in double. The derivative uses the fourth-order central
 * stencil (8[f(x+h) - f(x-h)] - [f(x+2h) - f(x-2h)]) / 12h: its truncation
 * error is O(h^4), so h can be large (1e-2) and the fp32 rounding in f,
 * divided by h, stays far below the 1e-3 tolerance. The error reported per
 * tensor is max|fd - analytic| / max|analytic| over the checked elements. */
#ifndef FSPO_GRADCHECK_H
#define FSPO_GRADCHECK_H

#include <stddef.h>

typedef double (*LossFn)(void *ctx);

/* Checks up to max_elems elements of x (all if n <= max_elems, else an
 * evenly spread subset) against analytic[]; returns the relative error. */
double gradcheck(LossFn f, void *ctx, float *x, const float *analytic, size_t n, float h, size_t max_elems);

#endif
