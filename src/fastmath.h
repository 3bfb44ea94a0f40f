// exp, tanh and erf for the fp32 build that vectorize. glibc's expf, tanhf and erff are scalar calls that stop
// a loop from vectorizing (its vector versions need -ffast-math, which would also compile away our
// isfinite checks); these are branch-free, so the loops that call them run 16 lanes wide on AVX-512.
// All keep NaN a NaN; tests/test_kernels.c checks their error against libm over the float range.
#ifndef NORMGPT_FASTMATH_H
#define NORMGPT_FASTMATH_H
#include <math.h>
#include <stdint.h>
#include <string.h>

// Cephes' expf: x = n ln2 + r with |r| <= ln2/2 (ln2 split in two for an exact n ln2), a degree-7
// polynomial for e^r, and 2^n built in the exponent bits. Clamped to [-87, 88] (results stay normal
// floats: below e^-87 the softmax and sigmoid only need "tiny", above e^88 float overflows).
static inline float fast_expf(float x) {
    x = x < -87.0f ? -87.0f : x;  // comparisons, not fminf/fmaxf, which would turn NaN into a bound
    x = x > 88.0f ? 88.0f : x;
    float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round to nearest
    float r = x - n * 0.693359375f + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    // n + 127 lands in the low mantissa bits of n + 1.5 * 2^23 (+ 127); shifted up, it is 2^n.
    float biased = n + 12583039.0f;
    uint32_t bits;  // unsigned: the shift of a NaN's bits is defined, and a NaN stays a NaN through p
    memcpy(&bits, &biased, sizeof bits);
    bits = (bits - 0x4B400000u) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

// Near zero an odd polynomial (Cephes' tanhf, |x| < 0.625), where 1 - 2/(e^2|x| + 1) would lose
// the relative precision of small outputs; beyond it that formula, with tanh's sign.
static inline float fast_tanhf(float x) {
    float z = x * x;
    float small = ((((-5.70498872745e-3f * z + 2.06390887954e-2f) * z - 5.37397155531e-2f) * z +
                    1.33314422036e-1f) * z - 3.33332819422e-1f) * z * x + x;
    float large = copysignf(1.0f - 2.0f / (fast_expf(2.0f * fabsf(x)) + 1.0f), x);
    return fabsf(x) < 0.625f ? small : large;
}

// erf: below |x| = 1 an odd polynomial x P(x^2) (our own fit, relative error 9e-8 in exact arithmetic),
// which keeps the relative precision of small outputs; from 1 on 1 - e^(-x^2) Q(t), t = 1 / (1 + x/2)
// (the form of Numerical Recipes' erfc, our own degree-6 fit on [0.875, 4]: absolute error 1e-8 in exact
// arithmetic), with |x| clamped at 4, where erf is 1 in float. In float: at most 2e-7 absolute and
// 3e-7 relative error (tests/test_kernels.c checks it against libm's erf over the float range).
static inline float fast_erff(float x) {
    float a = fabsf(x), z = x * x;
    float small = (((((-5.6958053e-4f * z + 4.9342653e-3f) * z - 2.6726730e-2f) * z + 1.1280777e-1f) * z -
                    3.7612414e-1f) * z + 1.1283791f) * x;
    a = a > 4.0f ? 4.0f : a;  // a comparison, not fminf, which would turn NaN into 4
    float t = 1.0f / (1.0f + 0.5f * a);
    float q = (((((-4.7636922e-2f * t - 7.4099876e-2f) * t + 4.2341644e-1f) * t + 8.9225337e-2f) * t +
                3.3495566e-1f) * t + 2.7287742e-1f) * t + 6.6130847e-4f;
    float large = copysignf(1.0f - q * fast_expf(-a * a), x);
    return fabsf(x) < 1.0f ? small : large;
}

#endif
