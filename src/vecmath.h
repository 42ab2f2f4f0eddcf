/* vecmath: 8-wide float helpers in GCC vector extensions (no intrinsics,
 * so any -march works; -march=native makes them AVX2/AVX-512 code).
 *
 * v8_exp is Cephes' expf (range reduction by ln 2, degree-6 polynomial,
 * about 1 ulp on [-87, 88]); inputs below -87.3 give exactly 0, so a masked
 * score of -inf has probability 0. Every element goes through the same
 * code (tails are padded into a full vector), so results never depend on
 * where a row starts or how rows are split over threads. */
#ifndef FSPO_VECMATH_H
#define FSPO_VECMATH_H

#include <stdint.h>
#include <string.h>

typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));

static inline v8f v8_set1(float x) { return (v8f){ x, x, x, x, x, x, x, x }; }
static inline v8f v8_load(const float *p)
{
    v8f v;
    memcpy(&v, p, sizeof v);
    return v;
}
static inline void v8_store(float *p, v8f v) { memcpy(p, &v, sizeof v); }
/* first n (< 8) elements, the rest `fill` */
static inline v8f v8_load_part(const float *p, int n, float fill)
{
    float tmp[8];
    for (int i = 0; i < 8; i++) tmp[i] = i < n ? p[i] : fill;
    return v8_load(tmp);
}
static inline void v8_store_part(float *p, v8f v, int n)
{
    float tmp[8];
    v8_store(tmp, v);
    for (int i = 0; i < n; i++) p[i] = tmp[i];
}
static inline v8f v8_select(v8i mask, v8f a, v8f b) { return (v8f)(((v8i)a & mask) | ((v8i)b & ~mask)); }
static inline v8f v8_max(v8f a, v8f b) { return v8_select(a > b, a, b); }
static inline v8f v8_min(v8f a, v8f b) { return v8_select(a < b, a, b); }
static inline float v8_hmax(v8f v)
{
    float m = v[0];
    for (int i = 1; i < 8; i++) m = v[i] > m ? v[i] : m;
    return m;
}
/* fixed pairwise order */
static inline float v8_hsum(v8f v) { return ((v[0] + v[4]) + (v[2] + v[6])) + ((v[1] + v[5]) + (v[3] + v[7])); }

static inline v8f v8_exp(v8f x)
{
    const v8f lo = v8_set1(-87.33654f), hi = v8_set1(88.3762626647949f);
    v8i zero = x < lo;
    x = v8_min(v8_max(x, lo), hi);
    v8f fx = x * v8_set1(1.44269504088896341f) + v8_set1(0.5f);
    v8i n = __builtin_convertvector(fx, v8i); /* truncates toward zero */
    v8f nf = __builtin_convertvector(n, v8f);
    v8i gt = nf > fx; /* floor: step down where truncation went up */
    n += gt;          /* gt is -1 where true */
    nf = __builtin_convertvector(n, v8f);
    x = x - nf * v8_set1(0.693359375f);
    x = x - nf * v8_set1(-2.12194440e-4f);
    v8f z = x * x;
    v8f y = v8_set1(1.9875691500E-4f);
    y = y * x + v8_set1(1.3981999507E-3f);
    y = y * x + v8_set1(8.3334519073E-3f);
    y = y * x + v8_set1(4.1665795894E-2f);
    y = y * x + v8_set1(1.6666665459E-1f);
    y = y * x + v8_set1(5.0000001201E-1f);
    y = y * z + x + v8_set1(1.0f);
    v8i e = (n + 127) << 23;
    y = y * (v8f)e;
    return v8_select(zero, v8_set1(0.0f), y);
}

/* bf16 rounding of 8 floats on their bit patterns: round to nearest, ties
 * to even (add 0x7fff plus the lowest kept bit, keep the high half); a NaN
 * keeps its sign and top payload bits and gets the quiet bit, so no NaN
 * rounds to infinity. */
typedef uint16_t v8h __attribute__((vector_size(16)));
typedef uint32_t v8u __attribute__((vector_size(32)));
static inline v8h v8_to_bf16(v8f x)
{
    v8u b = (v8u)x;
    v8u r = (b + 0x7fffu + ((b >> 16) & 1u)) >> 16;
    v8u nan = (v8u)((b & 0x7fffffffu) > 0x7f800000u);
    r = (r & ~nan) | (((b >> 16) | 0x40u) & nan);
    return __builtin_convertvector(r, v8h);
}
static inline void v8_store_bf16(uint16_t *p, v8f x)
{
    v8h h = v8_to_bf16(x);
    memcpy(p, &h, sizeof h);
}
static inline void v8_store_bf16_part(uint16_t *p, v8f x, int n)
{
    v8h h = v8_to_bf16(x);
    for (int i = 0; i < n; i++) p[i] = h[i];
}

static inline float scalar_exp(float x)
{
    v8f v = v8_exp(v8_set1(x));
    return v[0];
}

#endif
