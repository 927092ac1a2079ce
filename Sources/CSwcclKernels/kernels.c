/*
 * Reduction kernels for float16, bfloat16, float8 e4m3 and float8 e5m2 (see swccl_kernels.h).
 *
 * Structure: one loop per operation (the switch on the operation is outside the element loop).
 * Each loop exists in four aliasing variants (dst disjoint from both sources, dst == a, dst == b,
 * dst == a == b) whose pointers are `restrict`: LLVM's run-time overlap check rejects dst == a
 * and would otherwise fall back to a scalar loop for the common in-place case.
 * Loads and stores go through memcpy, so buffers need no alignment.
 *
 * On x86 CPUs with AVX2 and F16C (probed once at run time with __builtin_cpu_supports, then
 * cached) float16 uses F16C conversions (8 lanes per instruction) and the other types use copies of
 * the portable loops compiled for AVX2. Elsewhere the portable loops run, with a bit-exact scalar
 * float16 conversion. All variants round to nearest even and give identical results (NaN payloads
 * included); the standalone C test checks this.
 */
#include "swccl_kernels.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define SCK_X86 1
#else
#define SCK_X86 0
#endif

#define SCK_INLINE static inline __attribute__((always_inline))

typedef unsigned char sck_u8;

SCK_INLINE uint32_t sck_f2u(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
SCK_INLINE float sck_u2f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
SCK_INLINE uint16_t sck_ld16(const sck_u8 *p, size_t i) { uint16_t v; memcpy(&v, p + 2 * i, 2); return v; }
SCK_INLINE void sck_st16(sck_u8 *p, size_t i, uint16_t v) { memcpy(p + 2 * i, &v, 2); }

/* ---------------------------------------------------------------- conversions */

/* IEEE binary16 -> float, exact. NaNs come out quiet (as with VCVTPH2PS). */
SCK_INLINE float sck_half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t e = (h >> 10) & 0x1Fu, m = h & 0x3FFu;
    if (e == 0x1F) return sck_u2f(sign | 0x7F800000u | (m << 13) | (m ? 0x00400000u : 0));
    if (e != 0) return sck_u2f(sign | ((e + 112u) << 23) | (m << 13));
    /* zero or subnormal: m * 2^-24 is exact in float */
    return sck_u2f(sign | sck_f2u((float)m * 0x1p-24f));
}

/* float -> IEEE binary16, round to nearest even; overflow -> inf; NaN -> quiet NaN with the
 * payload truncated (as with VCVTPS2PH). */
SCK_INLINE uint16_t sck_float_to_half(float f) {
    uint32_t x = sck_f2u(f);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t a = x & 0x7FFFFFFFu;
    if (a > 0x7F800000u) return (uint16_t)(sign | 0x7E00u | ((a >> 13) & 0x3FFu));
    if (a >= 0x477FF000u) return (uint16_t)(sign | 0x7C00u);      /* >= 65520: rounds to inf */
    if (a < 0x38800000u) {                                         /* < 2^-14: subnormal half */
        /* 0.5f has an ulp of 2^-24 = the half subnormal step: the addition rounds (RNE) */
        float r = sck_u2f(a) + 0.5f;
        return (uint16_t)(sign | (sck_f2u(r) - 0x3F000000u));
    }
    a += 0xC8000FFFu + ((a >> 13) & 1u);                           /* rebias 127->15, RNE */
    return (uint16_t)(sign | (a >> 13));
}

SCK_INLINE float sck_bf16_to_float(uint16_t h) { return sck_u2f((uint32_t)h << 16); }

/* float -> bfloat16, round to nearest even; NaN stays NaN (quiet bit set). */
SCK_INLINE uint16_t sck_float_to_bf16(float f) {
    uint32_t x = sck_f2u(f);
    uint32_t rounded = (x + 0x7FFFu + ((x >> 16) & 1u)) >> 16;
    uint32_t nan = (x >> 16) | 0x40u;
    return (uint16_t)(((x & 0x7FFFFFFFu) > 0x7F800000u) ? nan : rounded);
}

/* 8-bit float decoding tables (generated; every entry is exact). */
static const float sck_e4m3_to_float[256] = {
    0.0f, 0x1p-9f, 0x1p-8f, 0x3p-9f, 0x1p-7f, 0x5p-9f, 0x3p-8f, 0x7p-9f,
    0x1p-6f, 0x9p-9f, 0x5p-8f, 0xBp-9f, 0x3p-7f, 0xDp-9f, 0x7p-8f, 0xFp-9f,
    0x1p-5f, 0x9p-8f, 0x5p-7f, 0xBp-8f, 0x3p-6f, 0xDp-8f, 0x7p-7f, 0xFp-8f,
    0x1p-4f, 0x9p-7f, 0x5p-6f, 0xBp-7f, 0x3p-5f, 0xDp-7f, 0x7p-6f, 0xFp-7f,
    0x1p-3f, 0x9p-6f, 0x5p-5f, 0xBp-6f, 0x3p-4f, 0xDp-6f, 0x7p-5f, 0xFp-6f,
    0x1p-2f, 0x9p-5f, 0x5p-4f, 0xBp-5f, 0x3p-3f, 0xDp-5f, 0x7p-4f, 0xFp-5f,
    0x1p-1f, 0x9p-4f, 0x5p-3f, 0xBp-4f, 0x3p-2f, 0xDp-4f, 0x7p-3f, 0xFp-4f,
    0x1p+0f, 0x9p-3f, 0x5p-2f, 0xBp-3f, 0x3p-1f, 0xDp-3f, 0x7p-2f, 0xFp-3f,
    0x1p+1f, 0x9p-2f, 0x5p-1f, 0xBp-2f, 0x3p+0f, 0xDp-2f, 0x7p-1f, 0xFp-2f,
    0x1p+2f, 0x9p-1f, 0x5p+0f, 0xBp-1f, 0x3p+1f, 0xDp-1f, 0x7p+0f, 0xFp-1f,
    0x1p+3f, 0x9p+0f, 0x5p+1f, 0xBp+0f, 0x3p+2f, 0xDp+0f, 0x7p+1f, 0xFp+0f,
    0x1p+4f, 0x9p+1f, 0x5p+2f, 0xBp+1f, 0x3p+3f, 0xDp+1f, 0x7p+2f, 0xFp+1f,
    0x1p+5f, 0x9p+2f, 0x5p+3f, 0xBp+2f, 0x3p+4f, 0xDp+2f, 0x7p+3f, 0xFp+2f,
    0x1p+6f, 0x9p+3f, 0x5p+4f, 0xBp+3f, 0x3p+5f, 0xDp+3f, 0x7p+4f, 0xFp+3f,
    0x1p+7f, 0x9p+4f, 0x5p+5f, 0xBp+4f, 0x3p+6f, 0xDp+4f, 0x7p+5f, 0xFp+4f,
    0x1p+8f, 0x9p+5f, 0x5p+6f, 0xBp+5f, 0x3p+7f, 0xDp+5f, 0x7p+6f, NAN,
    -0.0f, -0x1p-9f, -0x1p-8f, -0x3p-9f, -0x1p-7f, -0x5p-9f, -0x3p-8f, -0x7p-9f,
    -0x1p-6f, -0x9p-9f, -0x5p-8f, -0xBp-9f, -0x3p-7f, -0xDp-9f, -0x7p-8f, -0xFp-9f,
    -0x1p-5f, -0x9p-8f, -0x5p-7f, -0xBp-8f, -0x3p-6f, -0xDp-8f, -0x7p-7f, -0xFp-8f,
    -0x1p-4f, -0x9p-7f, -0x5p-6f, -0xBp-7f, -0x3p-5f, -0xDp-7f, -0x7p-6f, -0xFp-7f,
    -0x1p-3f, -0x9p-6f, -0x5p-5f, -0xBp-6f, -0x3p-4f, -0xDp-6f, -0x7p-5f, -0xFp-6f,
    -0x1p-2f, -0x9p-5f, -0x5p-4f, -0xBp-5f, -0x3p-3f, -0xDp-5f, -0x7p-4f, -0xFp-5f,
    -0x1p-1f, -0x9p-4f, -0x5p-3f, -0xBp-4f, -0x3p-2f, -0xDp-4f, -0x7p-3f, -0xFp-4f,
    -0x1p+0f, -0x9p-3f, -0x5p-2f, -0xBp-3f, -0x3p-1f, -0xDp-3f, -0x7p-2f, -0xFp-3f,
    -0x1p+1f, -0x9p-2f, -0x5p-1f, -0xBp-2f, -0x3p+0f, -0xDp-2f, -0x7p-1f, -0xFp-2f,
    -0x1p+2f, -0x9p-1f, -0x5p+0f, -0xBp-1f, -0x3p+1f, -0xDp-1f, -0x7p+0f, -0xFp-1f,
    -0x1p+3f, -0x9p+0f, -0x5p+1f, -0xBp+0f, -0x3p+2f, -0xDp+0f, -0x7p+1f, -0xFp+0f,
    -0x1p+4f, -0x9p+1f, -0x5p+2f, -0xBp+1f, -0x3p+3f, -0xDp+1f, -0x7p+2f, -0xFp+1f,
    -0x1p+5f, -0x9p+2f, -0x5p+3f, -0xBp+2f, -0x3p+4f, -0xDp+2f, -0x7p+3f, -0xFp+2f,
    -0x1p+6f, -0x9p+3f, -0x5p+4f, -0xBp+3f, -0x3p+5f, -0xDp+3f, -0x7p+4f, -0xFp+3f,
    -0x1p+7f, -0x9p+4f, -0x5p+5f, -0xBp+4f, -0x3p+6f, -0xDp+4f, -0x7p+5f, -0xFp+4f,
    -0x1p+8f, -0x9p+5f, -0x5p+6f, -0xBp+5f, -0x3p+7f, -0xDp+5f, -0x7p+6f, -NAN,
};
static const float sck_e5m2_to_float[256] = {
    0.0f, 0x1p-16f, 0x1p-15f, 0x3p-16f, 0x1p-14f, 0x5p-16f, 0x3p-15f, 0x7p-16f,
    0x1p-13f, 0x5p-15f, 0x3p-14f, 0x7p-15f, 0x1p-12f, 0x5p-14f, 0x3p-13f, 0x7p-14f,
    0x1p-11f, 0x5p-13f, 0x3p-12f, 0x7p-13f, 0x1p-10f, 0x5p-12f, 0x3p-11f, 0x7p-12f,
    0x1p-9f, 0x5p-11f, 0x3p-10f, 0x7p-11f, 0x1p-8f, 0x5p-10f, 0x3p-9f, 0x7p-10f,
    0x1p-7f, 0x5p-9f, 0x3p-8f, 0x7p-9f, 0x1p-6f, 0x5p-8f, 0x3p-7f, 0x7p-8f,
    0x1p-5f, 0x5p-7f, 0x3p-6f, 0x7p-7f, 0x1p-4f, 0x5p-6f, 0x3p-5f, 0x7p-6f,
    0x1p-3f, 0x5p-5f, 0x3p-4f, 0x7p-5f, 0x1p-2f, 0x5p-4f, 0x3p-3f, 0x7p-4f,
    0x1p-1f, 0x5p-3f, 0x3p-2f, 0x7p-3f, 0x1p+0f, 0x5p-2f, 0x3p-1f, 0x7p-2f,
    0x1p+1f, 0x5p-1f, 0x3p+0f, 0x7p-1f, 0x1p+2f, 0x5p+0f, 0x3p+1f, 0x7p+0f,
    0x1p+3f, 0x5p+1f, 0x3p+2f, 0x7p+1f, 0x1p+4f, 0x5p+2f, 0x3p+3f, 0x7p+2f,
    0x1p+5f, 0x5p+3f, 0x3p+4f, 0x7p+3f, 0x1p+6f, 0x5p+4f, 0x3p+5f, 0x7p+4f,
    0x1p+7f, 0x5p+5f, 0x3p+6f, 0x7p+5f, 0x1p+8f, 0x5p+6f, 0x3p+7f, 0x7p+6f,
    0x1p+9f, 0x5p+7f, 0x3p+8f, 0x7p+7f, 0x1p+10f, 0x5p+8f, 0x3p+9f, 0x7p+8f,
    0x1p+11f, 0x5p+9f, 0x3p+10f, 0x7p+9f, 0x1p+12f, 0x5p+10f, 0x3p+11f, 0x7p+10f,
    0x1p+13f, 0x5p+11f, 0x3p+12f, 0x7p+11f, 0x1p+14f, 0x5p+12f, 0x3p+13f, 0x7p+12f,
    0x1p+15f, 0x5p+13f, 0x3p+14f, 0x7p+13f, INFINITY, NAN, NAN, NAN,
    -0.0f, -0x1p-16f, -0x1p-15f, -0x3p-16f, -0x1p-14f, -0x5p-16f, -0x3p-15f, -0x7p-16f,
    -0x1p-13f, -0x5p-15f, -0x3p-14f, -0x7p-15f, -0x1p-12f, -0x5p-14f, -0x3p-13f, -0x7p-14f,
    -0x1p-11f, -0x5p-13f, -0x3p-12f, -0x7p-13f, -0x1p-10f, -0x5p-12f, -0x3p-11f, -0x7p-12f,
    -0x1p-9f, -0x5p-11f, -0x3p-10f, -0x7p-11f, -0x1p-8f, -0x5p-10f, -0x3p-9f, -0x7p-10f,
    -0x1p-7f, -0x5p-9f, -0x3p-8f, -0x7p-9f, -0x1p-6f, -0x5p-8f, -0x3p-7f, -0x7p-8f,
    -0x1p-5f, -0x5p-7f, -0x3p-6f, -0x7p-7f, -0x1p-4f, -0x5p-6f, -0x3p-5f, -0x7p-6f,
    -0x1p-3f, -0x5p-5f, -0x3p-4f, -0x7p-5f, -0x1p-2f, -0x5p-4f, -0x3p-3f, -0x7p-4f,
    -0x1p-1f, -0x5p-3f, -0x3p-2f, -0x7p-3f, -0x1p+0f, -0x5p-2f, -0x3p-1f, -0x7p-2f,
    -0x1p+1f, -0x5p-1f, -0x3p+0f, -0x7p-1f, -0x1p+2f, -0x5p+0f, -0x3p+1f, -0x7p+0f,
    -0x1p+3f, -0x5p+1f, -0x3p+2f, -0x7p+1f, -0x1p+4f, -0x5p+2f, -0x3p+3f, -0x7p+2f,
    -0x1p+5f, -0x5p+3f, -0x3p+4f, -0x7p+3f, -0x1p+6f, -0x5p+4f, -0x3p+5f, -0x7p+4f,
    -0x1p+7f, -0x5p+5f, -0x3p+6f, -0x7p+5f, -0x1p+8f, -0x5p+6f, -0x3p+7f, -0x7p+6f,
    -0x1p+9f, -0x5p+7f, -0x3p+8f, -0x7p+7f, -0x1p+10f, -0x5p+8f, -0x3p+9f, -0x7p+8f,
    -0x1p+11f, -0x5p+9f, -0x3p+10f, -0x7p+9f, -0x1p+12f, -0x5p+10f, -0x3p+11f, -0x7p+10f,
    -0x1p+13f, -0x5p+11f, -0x3p+12f, -0x7p+11f, -0x1p+14f, -0x5p+12f, -0x3p+13f, -0x7p+12f,
    -0x1p+15f, -0x5p+13f, -0x3p+14f, -0x7p+13f, -INFINITY, -NAN, -NAN, -NAN,
};

/* float -> OCP FP8 E4M3FN (bias 7, max 448, no inf; 0x7F/0xFF NaN), RNE, saturating. */
SCK_INLINE sck_u8 sck_float_to_e4m3(float f) {
    uint32_t x = sck_f2u(f);
    uint32_t sign = (x >> 24) & 0x80u;
    uint32_t a = x & 0x7FFFFFFFu;
    /* subnormal result (|f| < 2^-6): adding 2^14 (ulp 2^-9 = the e4m3 subnormal step) rounds */
    uint32_t sub = sck_f2u(sck_u2f(a) + 16384.0f) - 0x46800000u;
    /* normal result: rebias 127 -> 7 and round the 20 dropped mantissa bits to nearest even */
    uint32_t nor = (a + 0x7FFFFu + ((a >> 20) & 1u) - (120u << 23)) >> 20;
    uint32_t r = a < 0x3C800000u ? sub : nor;
    r = a > 0x43E00000u ? 0x7Eu : r;                                /* > 448 or inf: saturate */
    r = a > 0x7F800000u ? 0x7Fu : r;                                /* NaN */
    return (sck_u8)(sign | r);
}

/* float -> FP8 E5M2 (bias 15, max 57344, inf 0x7C, NaN 0x7D-0x7F), RNE, overflow -> inf. */
SCK_INLINE sck_u8 sck_float_to_e5m2(float f) {
    uint32_t x = sck_f2u(f);
    uint32_t sign = (x >> 24) & 0x80u;
    uint32_t a = x & 0x7FFFFFFFu;
    /* subnormal result (|f| < 2^-14): adding 2^7 (ulp 2^-16 = the e5m2 subnormal step) rounds */
    uint32_t sub = sck_f2u(sck_u2f(a) + 128.0f) - 0x43000000u;
    /* normal result: rebias 127 -> 15 and round the 21 dropped mantissa bits to nearest even */
    uint32_t nor = (a + 0xFFFFFu + ((a >> 21) & 1u) - (112u << 23)) >> 21;
    uint32_t r = a < 0x38800000u ? sub : nor;
    r = a >= 0x47700000u ? 0x7Cu : r;                               /* >= 61440 rounds to inf */
    r = a > 0x7F800000u ? 0x7Eu : r;                                /* NaN */
    return (sck_u8)(sign | r);
}

/* --------------------------------------------------------- element access per type */

SCK_INLINE float sck_ld_f16(const sck_u8 *p, size_t i) { return sck_half_to_float(sck_ld16(p, i)); }
SCK_INLINE void sck_st_f16(sck_u8 *p, size_t i, float v) { sck_st16(p, i, sck_float_to_half(v)); }
SCK_INLINE float sck_ld_bf16(const sck_u8 *p, size_t i) { return sck_bf16_to_float(sck_ld16(p, i)); }
SCK_INLINE void sck_st_bf16(sck_u8 *p, size_t i, float v) { sck_st16(p, i, sck_float_to_bf16(v)); }
SCK_INLINE float sck_ld_e4m3(const sck_u8 *p, size_t i) { return sck_e4m3_to_float[p[i]]; }
SCK_INLINE void sck_st_e4m3(sck_u8 *p, size_t i, float v) { p[i] = sck_float_to_e4m3(v); }
SCK_INLINE float sck_ld_e5m2(const sck_u8 *p, size_t i) { return sck_e5m2_to_float[p[i]]; }
SCK_INLINE void sck_st_e5m2(sck_u8 *p, size_t i, float v) { p[i] = sck_float_to_e5m2(v); }

/* ------------------------------------------------------------------ operations */

SCK_INLINE float sck_op_sum(float p, float q) { return p + q; }
SCK_INLINE float sck_op_prod(float p, float q) { return p * q; }
SCK_INLINE float sck_op_max(float p, float q) { return p > q ? p : q; }
SCK_INLINE float sck_op_min(float p, float q) { return p < q ? p : q; }

/* One reduction loop (type T, operation OP) in its four aliasing variants plus a dispatcher.
 * V is a name suffix and ATTR a function attribute, for the copies compiled for AVX2. */
#define SCK_DEFINE_BINARY(T, OP, V, ATTR)                                                         \
    ATTR static void sck_##T##V##_##OP##_3(sck_u8 *restrict d, const sck_u8 *restrict x,          \
                                           const sck_u8 *restrict y, size_t n) {                  \
        for (size_t i = 0; i < n; i++) sck_st_##T(d, i, sck_op_##OP(sck_ld_##T(x, i), sck_ld_##T(y, i))); \
    }                                                                                             \
    ATTR static void sck_##T##V##_##OP##_da(sck_u8 *restrict d, const sck_u8 *restrict y, size_t n) { \
        for (size_t i = 0; i < n; i++) sck_st_##T(d, i, sck_op_##OP(sck_ld_##T(d, i), sck_ld_##T(y, i))); \
    }                                                                                             \
    ATTR static void sck_##T##V##_##OP##_db(sck_u8 *restrict d, const sck_u8 *restrict x, size_t n) { \
        for (size_t i = 0; i < n; i++) sck_st_##T(d, i, sck_op_##OP(sck_ld_##T(x, i), sck_ld_##T(d, i))); \
    }                                                                                             \
    ATTR static void sck_##T##V##_##OP##_dd(sck_u8 *restrict d, size_t n) {                       \
        for (size_t i = 0; i < n; i++) {                                                          \
            float v = sck_ld_##T(d, i);                                                           \
            sck_st_##T(d, i, sck_op_##OP(v, v));                                                  \
        }                                                                                         \
    }                                                                                             \
    ATTR static void sck_##T##V##_##OP(sck_u8 *d, const sck_u8 *x, const sck_u8 *y, size_t n) {   \
        if (d == x) {                                                                             \
            if (d == y) sck_##T##V##_##OP##_dd(d, n);                                             \
            else sck_##T##V##_##OP##_da(d, y, n);                                                 \
        } else if (d == y) {                                                                      \
            sck_##T##V##_##OP##_db(d, x, n);                                                      \
        } else {                                                                                  \
            sck_##T##V##_##OP##_3(d, x, y, n);                                                    \
        }                                                                                         \
    }

/* All four operations, the op switch and the scaling loop for type T. */
#define SCK_DEFINE_TYPE(T, V, ATTR)                                                               \
    SCK_DEFINE_BINARY(T, sum, V, ATTR)                                                            \
    SCK_DEFINE_BINARY(T, prod, V, ATTR)                                                           \
    SCK_DEFINE_BINARY(T, max, V, ATTR)                                                            \
    SCK_DEFINE_BINARY(T, min, V, ATTR)                                                            \
    ATTR static void sck_##T##V##_reduce(int op, sck_u8 *d, const sck_u8 *x, const sck_u8 *y, size_t n) { \
        switch (op) {                                                                             \
        case SCK_OP_SUM: sck_##T##V##_sum(d, x, y, n); break;                                     \
        case SCK_OP_PROD: sck_##T##V##_prod(d, x, y, n); break;                                   \
        case SCK_OP_MAX: sck_##T##V##_max(d, x, y, n); break;                                     \
        case SCK_OP_MIN: sck_##T##V##_min(d, x, y, n); break;                                     \
        default: break;                                                                           \
        }                                                                                         \
    }                                                                                             \
    ATTR static void sck_##T##V##_scale(sck_u8 *restrict d, size_t n, float divisor) {            \
        for (size_t i = 0; i < n; i++) sck_st_##T(d, i, sck_ld_##T(d, i) / divisor);              \
    }

/* Portable versions (baseline x86-64 / any target). */
SCK_DEFINE_TYPE(f16, , )
SCK_DEFINE_TYPE(bf16, , )
SCK_DEFINE_TYPE(e4m3, , )
SCK_DEFINE_TYPE(e5m2, , )

#if SCK_X86
#define SCK_AVX2 __attribute__((target("avx2,f16c")))

/* The same loops compiled for AVX2: 8 lanes instead of 4 and table gathers for fp8 (about 2x for
 * bfloat16 and fp8). No FMA is enabled, so the results are identical to the portable versions. */
SCK_DEFINE_TYPE(bf16, _avx2, SCK_AVX2)
SCK_DEFINE_TYPE(e4m3, _avx2, SCK_AVX2)
SCK_DEFINE_TYPE(e5m2, _avx2, SCK_AVX2)

/* ------------------------------------------------------------------ float16 with F16C */

#define SCK_LDPH(p, i) _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)((p) + 2 * (i))))
#define SCK_STPH(p, i, v) \
    _mm_storeu_si128((__m128i *)(void *)((p) + 2 * (i)), _mm256_cvtps_ph((v), _MM_FROUND_TO_NEAREST_INT))

/* dst may equal a and/or b: every block is loaded completely before it is stored. */
#define SCK_DEFINE_F16C_BINARY(OP, VOP)                                                           \
    SCK_AVX2 static void sck_f16c_##OP(sck_u8 *d, const sck_u8 *x, const sck_u8 *y, size_t n) {   \
        size_t i = 0;                                                                             \
        for (; i + 16 <= n; i += 16) {                                                            \
            __m256 p0 = SCK_LDPH(x, i), p1 = SCK_LDPH(x, i + 8);                                  \
            __m256 q0 = SCK_LDPH(y, i), q1 = SCK_LDPH(y, i + 8);                                  \
            SCK_STPH(d, i, VOP(p0, q0));                                                          \
            SCK_STPH(d, i + 8, VOP(p1, q1));                                                      \
        }                                                                                         \
        if (i + 8 <= n) {                                                                         \
            __m256 p = SCK_LDPH(x, i), q = SCK_LDPH(y, i);                                        \
            SCK_STPH(d, i, VOP(p, q));                                                            \
            i += 8;                                                                               \
        }                                                                                         \
        if (i < n) {                                                                              \
            sck_u8 tx[16] = {0}, ty[16] = {0}, td[16];                                            \
            memcpy(tx, x + 2 * i, 2 * (n - i));                                                   \
            memcpy(ty, y + 2 * i, 2 * (n - i));                                                   \
            __m256 p = SCK_LDPH(tx, 0), q = SCK_LDPH(ty, 0);                                      \
            SCK_STPH(td, 0, VOP(p, q));                                                           \
            memcpy(d + 2 * i, td, 2 * (n - i));                                                   \
        }                                                                                         \
    }

SCK_DEFINE_F16C_BINARY(sum, _mm256_add_ps)
SCK_DEFINE_F16C_BINARY(prod, _mm256_mul_ps)
SCK_DEFINE_F16C_BINARY(max, _mm256_max_ps) /* maxps(p, q) == (p > q ? p : q) */
SCK_DEFINE_F16C_BINARY(min, _mm256_min_ps) /* minps(p, q) == (p < q ? p : q) */

SCK_AVX2 static void sck_f16c_reduce(int op, sck_u8 *d, const sck_u8 *x, const sck_u8 *y, size_t n) {
    switch (op) {
    case SCK_OP_SUM: sck_f16c_sum(d, x, y, n); break;
    case SCK_OP_PROD: sck_f16c_prod(d, x, y, n); break;
    case SCK_OP_MAX: sck_f16c_max(d, x, y, n); break;
    case SCK_OP_MIN: sck_f16c_min(d, x, y, n); break;
    default: break;
    }
}

SCK_AVX2 static void sck_f16c_scale(sck_u8 *d, size_t n, float divisor) {
    __m256 q = _mm256_set1_ps(divisor);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) SCK_STPH(d, i, _mm256_div_ps(SCK_LDPH(d, i), q));
    if (i < n) {
        sck_u8 t[16] = {0};
        memcpy(t, d + 2 * i, 2 * (n - i));
        SCK_STPH(t, 0, _mm256_div_ps(SCK_LDPH(t, 0), q));
        memcpy(d + 2 * i, t, 2 * (n - i));
    }
}

/* 0: not yet probed, 1: portable code, 2: AVX2 + F16C. A race only repeats the idempotent probe. */
static int sck_cpu_state;

static int sck_have_avx2(void) {
    int s = __atomic_load_n(&sck_cpu_state, __ATOMIC_RELAXED);
    if (s == 0) {
        __builtin_cpu_init();
        s = (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c")) ? 2 : 1;
        __atomic_store_n(&sck_cpu_state, s, __ATOMIC_RELAXED);
    }
    return s == 2;
}

#define SCK_DISPATCH(FAST, PORTABLE) do { if (sck_have_avx2()) FAST; else PORTABLE; } while (0)
#else
#define SCK_DISPATCH(FAST, PORTABLE) PORTABLE
#endif

/* ------------------------------------------------------------------ entry points */

void sck_reduce_f16(int op, void *dst, const void *a, const void *b, size_t n) {
    SCK_DISPATCH(sck_f16c_reduce(op, dst, a, b, n), sck_f16_reduce(op, dst, a, b, n));
}

void sck_reduce_bf16(int op, void *dst, const void *a, const void *b, size_t n) {
    SCK_DISPATCH(sck_bf16_avx2_reduce(op, dst, a, b, n), sck_bf16_reduce(op, dst, a, b, n));
}

void sck_reduce_f8e4m3(int op, void *dst, const void *a, const void *b, size_t n) {
    SCK_DISPATCH(sck_e4m3_avx2_reduce(op, dst, a, b, n), sck_e4m3_reduce(op, dst, a, b, n));
}

void sck_reduce_f8e5m2(int op, void *dst, const void *a, const void *b, size_t n) {
    SCK_DISPATCH(sck_e5m2_avx2_reduce(op, dst, a, b, n), sck_e5m2_reduce(op, dst, a, b, n));
}

void sck_scale_f16(void *buf, size_t n, float divisor) {
    SCK_DISPATCH(sck_f16c_scale(buf, n, divisor), sck_f16_scale(buf, n, divisor));
}

void sck_scale_bf16(void *buf, size_t n, float divisor) {
    SCK_DISPATCH(sck_bf16_avx2_scale(buf, n, divisor), sck_bf16_scale(buf, n, divisor));
}

void sck_scale_f8e4m3(void *buf, size_t n, float divisor) {
    SCK_DISPATCH(sck_e4m3_avx2_scale(buf, n, divisor), sck_e4m3_scale(buf, n, divisor));
}

void sck_scale_f8e5m2(void *buf, size_t n, float divisor) {
    SCK_DISPATCH(sck_e5m2_avx2_scale(buf, n, divisor), sck_e5m2_scale(buf, n, divisor));
}

void sck_copy_nt(void *dst, const void *src, size_t n) {
#if defined(__x86_64__)
    unsigned char *d = dst;
    const unsigned char *s = src;
    size_t head = (16 - ((uintptr_t)d & 15)) & 15;
    if (n < head + 256) { memcpy(d, s, n); return; }
    memcpy(d, s, head);
    d += head; s += head; n -= head;
    for (; n >= 64; d += 64, s += 64, n -= 64) {
        __m128i a = _mm_loadu_si128((const __m128i *)s), b = _mm_loadu_si128((const __m128i *)(s + 16));
        __m128i c = _mm_loadu_si128((const __m128i *)(s + 32)), e = _mm_loadu_si128((const __m128i *)(s + 48));
        _mm_stream_si128((__m128i *)d, a);
        _mm_stream_si128((__m128i *)(d + 16), b);
        _mm_stream_si128((__m128i *)(d + 32), c);
        _mm_stream_si128((__m128i *)(d + 48), e);
    }
    memcpy(d, s, n);
    _mm_sfence();
#else
    memcpy(dst, src, n);
#endif
}
