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

/* One exp for every vector width (the same operations lane by lane, so
 * v8_exp and v16_exp give bitwise equal results). */
#define VEC_DEFINE_EXP(name, vf, vi, set1, select, vmin, vmax)                                                   \
    static inline vf name(vf x)                                                                                   \
    {                                                                                                             \
        const vf lo = set1(-87.33654f), hi = set1(88.3762626647949f);                                             \
        vi zero = x < lo;                                                                                         \
        x = vmin(vmax(x, lo), hi);                                                                                \
        vf fx = x * set1(1.44269504088896341f) + set1(0.5f);                                                      \
        vi n = __builtin_convertvector(fx, vi); /* truncates toward zero */                                       \
        vf nf = __builtin_convertvector(n, vf);                                                                   \
        vi gt = nf > fx; /* floor: step down where truncation went up */                                          \
        n += gt;         /* gt is -1 where true */                                                                \
        nf = __builtin_convertvector(n, vf);                                                                      \
        x = x - nf * set1(0.693359375f);                                                                          \
        x = x - nf * set1(-2.12194440e-4f);                                                                       \
        vf z = x * x;                                                                                             \
        vf y = set1(1.9875691500E-4f);                                                                            \
        y = y * x + set1(1.3981999507E-3f);                                                                       \
        y = y * x + set1(8.3334519073E-3f);                                                                       \
        y = y * x + set1(4.1665795894E-2f);                                                                       \
        y = y * x + set1(1.6666665459E-1f);                                                                       \
        y = y * x + set1(5.0000001201E-1f);                                                                       \
        y = y * z + x + set1(1.0f);                                                                               \
        vi e = (n + 127) << 23;                                                                                   \
        y = y * (vf)e;                                                                                            \
        return select(zero, set1(0.0f), y);                                                                       \
    }

VEC_DEFINE_EXP(v8_exp, v8f, v8i, v8_set1, v8_select, v8_min, v8_max)

/* bf16 rounding of 8 floats on their bit patterns: round to nearest, ties
 * to even (add 0x7fff plus the lowest kept bit, keep the high half); a NaN
 * keeps its sign and top payload bits and gets the quiet bit, so no NaN
 * rounds to infinity. */
typedef uint16_t v8h __attribute__((vector_size(16)));
typedef uint32_t v8u __attribute__((vector_size(32)));
/* Where the build has AVX512-BF16 (every CPU with AMX has it), the
 * instruction VCVTNEPS2BF16 rounds the same way in one step, NaNs alike,
 * except that it flushes subnormal inputs to zero: a vector holding one
 * takes the bit-pattern path, so the results are the same bits either way. */
#if defined(__AVX512BF16__) && defined(__AVX512VL__)
#include <immintrin.h>
#define HW_BF16 1
#else
#define HW_BF16 0
#endif
static inline v8h v8_to_bf16(v8f x)
{
    v8u b = (v8u)x;
#if HW_BF16
    __m256i bi = (__m256i)b;
    if (!(_mm256_testn_epi32_mask(bi, _mm256_set1_epi32(0x7f800000)) &
          _mm256_test_epi32_mask(bi, _mm256_set1_epi32(0x007fffff)))) {
        __m128bh h = _mm256_cvtneps_pbh((__m256)x);
        v8h r;
        memcpy(&r, &h, sizeof r);
        return r;
    }
#endif
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

/* 8 bf16 values widened to floats (exact) */
static inline v8f v8_load_bf16(const uint16_t *p)
{
    v8h h;
    memcpy(&h, p, sizeof h);
    return (v8f)(__builtin_convertvector(h, v8u) << 16);
}

static inline float scalar_exp(float x)
{
    v8f v = v8_exp(v8_set1(x));
    return v[0];
}

/* ---- 16 lanes (AVX-512 builds only) ----------------------------------------
 * With -march=native on a CPU with AVX-512 (VEC16 is 1), the elementwise
 * loops run 16 lanes per instruction; elsewhere VEC16 is 0 and the same loops
 * take their 8-lane path (GCC would split 16-lane vectors into two 8-lane
 * halves anyway, but passing them between functions needs AVX-512's ABI).
 * Each lane does the 8-lane code's operations, and sums keep the 8-lane
 * order (v16_acc8 adds the low half, then the high half, to an 8-lane
 * accumulator: exactly the 8-lane loop's two steps), so results are bitwise
 * the same with or without AVX-512. */
#if defined(__AVX512F__)
#define VEC16 1
typedef float v16f __attribute__((vector_size(64)));
typedef int32_t v16i __attribute__((vector_size(64)));
typedef uint32_t v16u __attribute__((vector_size(64)));
typedef uint16_t v16h __attribute__((vector_size(32)));

static inline v16f v16_set1(float x) { return (v16f){ x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x }; }
static inline v16f v16_load(const float *p)
{
    v16f v;
    memcpy(&v, p, sizeof v);
    return v;
}
static inline void v16_store(float *p, v16f v) { memcpy(p, &v, sizeof v); }
static inline v16f v16_select(v16i mask, v16f a, v16f b) { return (v16f)(((v16i)a & mask) | ((v16i)b & ~mask)); }
static inline v16f v16_max(v16f a, v16f b) { return v16_select(a > b, a, b); }
static inline v16f v16_min(v16f a, v16f b) { return v16_select(a < b, a, b); }
static inline v8f v16_lo(v16f v) { return __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7); }
static inline v8f v16_hi(v16f v) { return __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15); }
/* acc + v[0:8] + v[8:16], in that order (= two steps of an 8-lane sum) */
static inline v8f v16_acc8(v8f acc, v16f v) { return (acc + v16_lo(v)) + v16_hi(v); }

VEC_DEFINE_EXP(v16_exp, v16f, v16i, v16_set1, v16_select, v16_min, v16_max)

static inline v16f v16_load_bf16(const uint16_t *p)
{
    v16h h;
    memcpy(&h, p, sizeof h);
    return (v16f)(__builtin_convertvector(h, v16u) << 16);
}

/* v8_to_bf16 on 16 lanes */
static inline void v16_store_bf16(uint16_t *p, v16f x)
{
    v16u b = (v16u)x;
#if HW_BF16
    __m512i bi = (__m512i)b;
    if (!(_mm512_testn_epi32_mask(bi, _mm512_set1_epi32(0x7f800000)) &
          _mm512_test_epi32_mask(bi, _mm512_set1_epi32(0x007fffff)))) {
        __m256bh h = _mm512_cvtneps_pbh((__m512)x);
        memcpy(p, &h, sizeof h);
        return;
    }
#endif
    v16u r = (b + 0x7fffu + ((b >> 16) & 1u)) >> 16;
    v16u nan = (v16u)((b & 0x7fffffffu) > 0x7f800000u);
    r = (r & ~nan) | (((b >> 16) | 0x40u) & nan);
    v16h h = __builtin_convertvector(r, v16h);
    memcpy(p, &h, sizeof h);
}
#else
#define VEC16 0
#endif

/* The widest of the two: elementwise loops are written once in vw_* and
 * finish with a scalar loop of the same formula. */
#if VEC16
#define VW 16
typedef v16f vwf;
#define vw_set1 v16_set1
#define vw_load v16_load
#define vw_store v16_store
#define vw_exp v16_exp
#define vw_store_bf16 v16_store_bf16
#define vw_load_bf16 v16_load_bf16
#else
#define VW 8
typedef v8f vwf;
#define vw_set1 v8_set1
#define vw_load v8_load
#define vw_store v8_store
#define vw_exp v8_exp
#define vw_store_bf16 v8_store_bf16
#define vw_load_bf16 v8_load_bf16
#endif

#endif
