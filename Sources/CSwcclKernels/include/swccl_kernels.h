/*
 * Reduction kernels for the 8- and 16-bit floating-point element types of SwiftCCL
 * (float16, bfloat16, float8 e4m3, float8 e5m2). Internal to SwiftCCL: these symbols are not
 * part of the public C ABI (which exports only swccl* names).
 *
 * Semantics: every element is converted to float, the operation is computed in float and the
 * result is rounded to nearest-even back to the element type.
 *   - float16, bfloat16, e5m2: overflow rounds to +-infinity (IEEE behaviour).
 *   - e4m3 (OCP FP8 E4M3FN, no infinities): overflow and +-infinity saturate to +-448.
 *   - NaN stays NaN (quiet). max/min are `a > b ? a : b` / `a < b ? a : b` (like x86 maxps/minps):
 *     a NaN in `a` is not propagated by max/min.
 * `dst` may be identical to `a` and/or `b` (in place) but must not partially overlap them.
 * Buffers need no particular alignment. Assumes the default floating-point environment (round to
 * nearest, no FTZ/DAZ): with FTZ/DAZ set, bfloat16 subnormals would be flushed.
 */
#ifndef SWCCL_KERNELS_H
#define SWCCL_KERNELS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Operation codes (the caller reduces avg as sum and then calls sck_scale_*). */
enum {
    SCK_OP_SUM = 0,
    SCK_OP_PROD = 1,
    SCK_OP_MAX = 2,
    SCK_OP_MIN = 3
};

/* dst[i] = a[i] op b[i] for i in [0, n). Unknown op values leave dst untouched. */
void sck_reduce_f16(int op, void *dst, const void *a, const void *b, size_t n);
void sck_reduce_bf16(int op, void *dst, const void *a, const void *b, size_t n);
void sck_reduce_f8e4m3(int op, void *dst, const void *a, const void *b, size_t n);
void sck_reduce_f8e5m2(int op, void *dst, const void *a, const void *b, size_t n);

/* buf[i] = buf[i] / divisor for i in [0, n) (finalisation of avg). */
void sck_scale_f16(void *buf, size_t n, float divisor);

/* memcpy with non-temporal (streaming) stores for the bulk of dst: for outputs larger than the caches,
 * it saves reading each destination line before writing it (≈1.5× memcpy at 64 MiB here). Ends with a
 * store fence. Plain memcpy on targets without SSE2. */
void sck_copy_nt(void *dst, const void *src, size_t n);
void sck_scale_bf16(void *buf, size_t n, float divisor);
void sck_scale_f8e4m3(void *buf, size_t n, float divisor);
void sck_scale_f8e5m2(void *buf, size_t n, float divisor);

#ifdef __cplusplus
}
#endif

#endif /* SWCCL_KERNELS_H */
