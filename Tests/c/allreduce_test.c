/*
 * allreduce_test.c - end-to-end test of the C ABI of SwiftCCL (libswccl.so) from plain C99.
 *
 *   usage: allreduce_test [nranks]        (default 3, at most 32)
 *
 * The parent checks swcclGetVersion, makes a swcclUniqueId and forks one child per rank. Each child
 * creates its communicator (rank 1 with swcclCommInitRankConfig), runs swcclAllReduce for every type,
 * operator, count and placement below, compares every element with values computed here independently,
 * checks that misuse returns swcclInvalidArgument with a message, and destroys the communicator.
 * Each child prints one line per failure and exits 0 on success. The parent prints one line per failed
 * rank and, last, "N passed, M failed" (ranks), and exits non-zero on any failure. Everything is killed
 * after 120 s.
 *
 * Inputs are small integers so that every result is exact:
 *   sum/max/min/avg: element i of rank r = ((r + i) % 5) - 2   (unsigned types: (r + i) % 5)
 *   prod:            element i of rank r = (r + i) % 2 ? -1 : 1  (unsigned types: 2 : 1)
 * Integer avg is the truncating division of the sum; float avg may be off by 2 ulp (or 1e-6 relative).
 * half and bfloat16 are passed as raw uint16 bit patterns (sum, prod, max, min; count 1000).
 *
 * Build: gcc -std=c99 -Wall -Wextra -Werror -Iinclude Tests/c/allreduce_test.c -LDIR -lswccl -Wl,-rpath,DIR
 * Environment: SWCCL_SOCKET_IFNAME defaults to "lo" here; SWCCL_TEST_VERBOSE=1 prints progress.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "swccl.h"

#define MAX_RANKS 32
#define MAX_COUNT ((size_t)1048577)
#define GUARD 16            /* elements after the data that must stay untouched */
#define GUARD_BYTE 0xA5
#define PERIOD 10           /* inputs and results repeat every 10 elements (lcm of 5 and 2) */
#define MAX_FAIL_LINES 60   /* per rank */
#ifndef TIMEOUT_SECONDS
#define TIMEOUT_SECONDS 120  /* whole test, all ranks */
#endif

enum kind { K_SINT, K_UINT, K_FLOAT, K_HALF, K_BF16 };

typedef struct {
  const char* name;
  swcclDataType_t type;
  size_t size;
  enum kind kind;
} type_info;

static const type_info kTypes[] = {
  { "int8",     swcclInt8,     1, K_SINT  },
  { "uint8",    swcclUint8,    1, K_UINT  },
  { "int32",    swcclInt32,    4, K_SINT  },
  { "uint32",   swcclUint32,   4, K_UINT  },
  { "int64",    swcclInt64,    8, K_SINT  },
  { "uint64",   swcclUint64,   8, K_UINT  },
  { "float",    swcclFloat,    4, K_FLOAT },
  { "double",   swcclDouble,   8, K_FLOAT },
  { "half",     swcclHalf,     2, K_HALF  },
  { "bfloat16", swcclBfloat16, 2, K_BF16  },
};
#define NTYPES (sizeof kTypes / sizeof kTypes[0])

typedef struct {
  const char* name;
  swcclRedOp_t op;
} op_info;

static const op_info kOps[] = {
  { "sum", swcclSum }, { "prod", swcclProd }, { "max", swcclMax }, { "min", swcclMin }, { "avg", swcclAvg },
};
#define NOPS (sizeof kOps / sizeof kOps[0])

static const size_t kCounts[] = { 0, 1, 7, 1000, 1048577 };
#define NCOUNTS (sizeof kCounts / sizeof kCounts[0])

#include "fork_ranks.h"

/* ---------------------------------------------------------------------------------------------- */
/* Values                                                                                         */
/* ---------------------------------------------------------------------------------------------- */

/* Exact binary16 / bfloat16 bits of a small integer: expBits/mantBits = 5/10 (half) or 8/7 (bf16).
   Exact as long as |v| < 2^(mantBits+1). */
static uint16_t encode_small_float(long long v, int expBits, int mantBits) {
  uint16_t sign = 0;
  unsigned long long a;
  int e = 0;
  int bias = (1 << (expBits - 1)) - 1;
  if (v == 0) return 0;
  if (v < 0) {
    sign = 0x8000u;
    a = (unsigned long long)(-v);
  } else {
    a = (unsigned long long)v;
  }
  while ((a >> (e + 1)) != 0) e++;
  return (uint16_t)(sign | (unsigned)((e + bias) << mantBits) |
                    (unsigned)((a - (1ull << e)) << (mantBits - e)));
}

static uint16_t half_from_int(long long v) { return encode_small_float(v, 5, 10); }
static uint16_t bf16_from_int(long long v) { return encode_small_float(v, 8, 7); }

/* Input of rank r at element i. */
static long long input_value(enum kind kind, swcclRedOp_t op, int r, size_t i) {
  size_t k = (size_t)r + i;
  if (op == swcclProd) {
    if (kind == K_UINT) return (k % 2) ? 2 : 1;
    return (k % 2) ? -1 : 1;
  }
  if (kind == K_UINT) return (long long)(k % 5);
  return (long long)(k % 5) - 2;
}

/* Writes integer v as one element of type t (unsigned: modulo 2^bits). */
static void encode_int(const type_info* t, long long v, unsigned char* out) {
  switch (t->kind) {
  case K_SINT:
    if (t->size == 1) { int8_t x = (int8_t)v; memcpy(out, &x, 1); }
    else if (t->size == 4) { int32_t x = (int32_t)v; memcpy(out, &x, 4); }
    else { int64_t x = (int64_t)v; memcpy(out, &x, 8); }
    break;
  case K_UINT: {
    unsigned long long u = (unsigned long long)v;
    if (t->size == 1) { uint8_t x = (uint8_t)u; memcpy(out, &x, 1); }
    else if (t->size == 4) { uint32_t x = (uint32_t)u; memcpy(out, &x, 4); }
    else { uint64_t x = (uint64_t)u; memcpy(out, &x, 8); }
    break;
  }
  case K_FLOAT:
    if (t->size == 4) { float x = (float)v; memcpy(out, &x, 4); }
    else { double x = (double)v; memcpy(out, &x, 8); }
    break;
  case K_HALF: { uint16_t x = half_from_int(v); memcpy(out, &x, 2); break; }
  case K_BF16: { uint16_t x = bf16_from_int(v); memcpy(out, &x, 2); break; }
  }
}

/* Expected result at element i (any i with the same i % PERIOD). For float avg, *avg gets the
   expected quotient (float division for float, double for double); otherwise *out the exact bits. */
static void expected_value(const type_info* t, swcclRedOp_t op, int nranks, size_t i, unsigned char* out,
                           double* avg) {
  long long acc = input_value(t->kind, op, 0, i);
  unsigned long long uacc = (unsigned long long)acc; /* unsigned product wraps, as in the element type */
  int r;
  for (r = 1; r < nranks; r++) {
    long long x = input_value(t->kind, op, r, i);
    switch (op) {
    case swcclProd: uacc *= (unsigned long long)x; acc *= x; break;
    case swcclMax: if (x > acc) acc = x; break;
    case swcclMin: if (x < acc) acc = x; break;
    default: acc += x; break; /* sum, avg */
    }
  }
  *avg = 0.0;
  if (op == swcclProd && t->kind == K_UINT) acc = (long long)uacc; /* bits kept, reduced mod 2^size */
  if (op == swcclAvg) {
    if (t->kind == K_FLOAT) {
      if (t->size == 4) *avg = (double)((float)acc / (float)nranks);
      else *avg = (double)acc / (double)nranks;
    }
    acc /= nranks; /* C division truncates toward zero */
  }
  encode_int(t, acc, out);
}

/* ---------------------------------------------------------------------------------------------- */
/* Comparison                                                                                     */
/* ---------------------------------------------------------------------------------------------- */

static double load_float(const type_info* t, const unsigned char* p) {
  if (t->size == 4) { float f; memcpy(&f, p, 4); return (double)f; }
  { double d; memcpy(&d, p, 8); return d; }
}

static long long ordered_bits(const type_info* t, double v) {
  if (t->size == 4) {
    float f = (float)v;
    int32_t b;
    memcpy(&b, &f, 4);
    return b < 0 ? (long long)INT32_MIN - (long long)b : (long long)b;
  } else {
    int64_t b;
    memcpy(&b, &v, 8);
    /* map sign-magnitude onto a monotonic scale; fine for the small values compared here */
    return b < 0 ? -(long long)(b & INT64_MAX) : (long long)b;
  }
}

static int avg_close(const type_info* t, double got, double exp) {
  double diff = got > exp ? got - exp : exp - got;
  double mag = exp < 0 ? -exp : exp;
  long long d;
  if (got == exp) return 1;
  if (got != got) return 0; /* NaN */
  if (diff <= 1e-6 * mag) return 1;
  d = ordered_bits(t, got) - ordered_bits(t, exp);
  return d >= -2 && d <= 2;
}

/* Does element p equal the expected element e (bits, or value for floats: +0 == -0)? */
static int elem_equal(const type_info* t, const unsigned char* p, const unsigned char* e) {
  switch (t->kind) {
  case K_FLOAT: return load_float(t, p) == load_float(t, e);
  case K_HALF:
  case K_BF16: {
    uint16_t a, b;
    memcpy(&a, p, 2);
    memcpy(&b, e, 2);
    return a == b || ((a & 0x7fffu) == 0 && (b & 0x7fffu) == 0);
  }
  default: return memcmp(p, e, t->size) == 0;
  }
}

static void format_elem(const type_info* t, const unsigned char* p, char* buf, size_t n) {
  switch (t->kind) {
  case K_SINT:
    if (t->size == 1) { int8_t x; memcpy(&x, p, 1); snprintf(buf, n, "%d", (int)x); }
    else if (t->size == 4) { int32_t x; memcpy(&x, p, 4); snprintf(buf, n, "%ld", (long)x); }
    else { int64_t x; memcpy(&x, p, 8); snprintf(buf, n, "%lld", (long long)x); }
    break;
  case K_UINT:
    if (t->size == 1) { uint8_t x; memcpy(&x, p, 1); snprintf(buf, n, "%u", (unsigned)x); }
    else if (t->size == 4) { uint32_t x; memcpy(&x, p, 4); snprintf(buf, n, "%lu", (unsigned long)x); }
    else { uint64_t x; memcpy(&x, p, 8); snprintf(buf, n, "%llu", (unsigned long long)x); }
    break;
  case K_FLOAT: snprintf(buf, n, "%.17g", load_float(t, p)); break;
  case K_HALF:
  case K_BF16: { uint16_t x; memcpy(&x, p, 2); snprintf(buf, n, "0x%04x", (unsigned)x); break; }
  }
}

/* ---------------------------------------------------------------------------------------------- */
/* One all-reduce                                                                                 */
/* ---------------------------------------------------------------------------------------------- */

static int is_fatal(swcclResult_t r) { return r != swcclSuccess && r != swcclInvalidArgument && r != swcclInvalidUsage; }

static void fill(unsigned char* buf, size_t count, size_t size, unsigned char pattern[PERIOD][8]) {
  size_t i;
  for (i = 0; i < count; i++) memcpy(buf + i * size, pattern[i % PERIOD], size);
}

static int guard_intact(const unsigned char* buf, size_t count, size_t size) {
  size_t i;
  for (i = count * size; i < (count + GUARD) * size; i++)
    if (buf[i] != GUARD_BYTE) return 0;
  return 1;
}

/* Runs one all-reduce and checks it; returns 0 if the communicator broke (caller stops). */
static int run_one(swcclComm_t comm, const type_info* t, const op_info* o, size_t count, int inplace,
                   unsigned char* sendbuf, unsigned char* recvbuf) {
  unsigned char in[PERIOD][8], exp[PERIOD][8];
  double expAvg[PERIOD];
  const char* place = inplace ? "in-place" : "out-of-place";
  const int floatAvg = (t->kind == K_FLOAT && o->op == swcclAvg);
  size_t i, bad = 0, first = 0;
  unsigned char* out = inplace ? sendbuf : recvbuf;
  swcclResult_t res;

  for (i = 0; i < PERIOD; i++) {
    encode_int(t, input_value(t->kind, o->op, g_rank, i), in[i]);
    expected_value(t, o->op, g_nranks, i, exp[i], &expAvg[i]);
  }
  memset(sendbuf, GUARD_BYTE, (count + GUARD) * t->size);
  memset(recvbuf, GUARD_BYTE, (count + GUARD) * t->size);
  fill(sendbuf, count, t->size, in);

  res = swcclAllReduce(sendbuf, out, count, t->type, o->op, comm, NULL);
  if (res != swcclSuccess) {
    fail("type=%s op=%s count=%zu %s: swcclAllReduce returned %d (%s): %s", t->name, o->name, count, place,
         (int)res, str_or_null(swcclGetErrorString(res)), str_or_null(swcclGetLastError(comm)));
    return !is_fatal(res);
  }

  for (i = 0; i < count; i++) {
    const unsigned char* p = out + i * t->size;
    int ok = floatAvg ? avg_close(t, load_float(t, p), expAvg[i % PERIOD]) : elem_equal(t, p, exp[i % PERIOD]);
    if (!ok) {
      if (bad == 0) first = i;
      bad++;
    }
  }
  if (bad) {
    char got[64], want[64];
    format_elem(t, out + first * t->size, got, sizeof got);
    if (floatAvg) snprintf(want, sizeof want, "%.17g", expAvg[first % PERIOD]);
    else format_elem(t, exp[first % PERIOD], want, sizeof want);
    fail("type=%s op=%s count=%zu %s: %zu of %zu elements wrong (first at %zu: got %s, expected %s)", t->name,
         o->name, count, place, bad, count, first, got, want);
  }
  if (!guard_intact(out, count, t->size))
    fail("type=%s op=%s count=%zu %s: wrote past the end of recvbuff", t->name, o->name, count, place);
  if (!inplace) {
    for (i = 0; i < count; i++)
      if (memcmp(sendbuf + i * t->size, in[i % PERIOD], t->size) != 0) break;
    if (i < count || !guard_intact(sendbuf, count, t->size))
      fail("type=%s op=%s count=%zu %s: sendbuff was modified (element %zu)", t->name, o->name, count, place, i);
  }
  return 1;
}

/* ---------------------------------------------------------------------------------------------- */
/* Misuse                                                                                         */
/* ---------------------------------------------------------------------------------------------- */

static void expect_invalid(const char* what, swcclResult_t res, swcclComm_t comm) {
  const char* last = swcclGetLastError(NULL);
  if (res != swcclInvalidArgument) {
    fail("misuse %s: returned %d (%s), expected swcclInvalidArgument (%d)", what, (int)res,
         str_or_null(swcclGetErrorString(res)), (int)swcclInvalidArgument);
    return;
  }
  if (last == NULL || last[0] == '\0') fail("misuse %s: swcclGetLastError(NULL) is empty", what);
  else if (g_verbose) printf("rank %d: %s -> %s\n", g_rank, what, last);
  if (comm != NULL) {
    const char* commLast = swcclGetLastError(comm);
    if (commLast == NULL || commLast[0] == '\0') fail("misuse %s: swcclGetLastError(comm) is empty", what);
  }
}

static void check_misuse(swcclComm_t comm, swcclUniqueId id, unsigned char* sendbuf, unsigned char* recvbuf) {
  swcclComm_t bad;
  int dummy = 0;
  int n = -1;

  expect_invalid("swcclAllReduce(sendbuff NULL, count 5)",
                 swcclAllReduce(NULL, recvbuf, 5, swcclFloat, swcclSum, comm, NULL), comm);
  expect_invalid("swcclAllReduce(datatype 99)",
                 swcclAllReduce(sendbuf, recvbuf, 5, (swcclDataType_t)99, swcclSum, comm, NULL), comm);
  expect_invalid("swcclAllReduce(op 99)",
                 swcclAllReduce(sendbuf, recvbuf, 5, swcclFloat, (swcclRedOp_t)99, comm, NULL), comm);
  expect_invalid("swcclAllReduce(comm NULL)",
                 swcclAllReduce(sendbuf, recvbuf, 5, swcclFloat, swcclSum, NULL, NULL), NULL);

  bad = (swcclComm_t)(void*)&dummy;
  expect_invalid("swcclCommInitRank(rank -1)", swcclCommInitRank(&bad, g_nranks, id, -1), NULL);
  if (bad != NULL) fail("misuse swcclCommInitRank(rank -1): *comm not set to NULL");
  bad = (swcclComm_t)(void*)&dummy;
  expect_invalid("swcclCommInitRank(rank nranks)", swcclCommInitRank(&bad, g_nranks, id, g_nranks), NULL);
  if (bad != NULL) fail("misuse swcclCommInitRank(rank nranks): *comm not set to NULL");

  expect_invalid("swcclCommCount(comm NULL)", swcclCommCount(NULL, &n), NULL);
  expect_invalid("swcclCommCount(count NULL)", swcclCommCount(comm, NULL), comm);
}

/* After misuse the communicator must still work: one small int32 sum. */
/* swcclCommRegister / swcclCommDeregister: a registered buffer works in an allreduce; bad handles and
 * arguments are argument errors. */
static void check_registration(swcclComm_t comm, int rank, int nranks) {
  enum { N = 4099 };
  int32_t* buf = (int32_t*)malloc(N * sizeof(int32_t));
  void* handle = NULL;
  size_t i;
  swcclResult_t res;
  if (buf == NULL) { fail("rank %d: out of memory", rank); return; }
  for (i = 0; i < N; i++) buf[i] = (int32_t)(rank + 1);
  res = swcclCommRegister(comm, buf, N * sizeof(int32_t), &handle);
  if (res != swcclSuccess || handle == NULL) fail("rank %d: swcclCommRegister returned %d", rank, (int)res);
  res = swcclAllReduce(buf, buf, N, swcclInt32, swcclSum, comm, NULL);
  if (res != swcclSuccess) fail("rank %d: allreduce on a registered buffer returned %d", rank, (int)res);
  for (i = 0; i < N; i++) {
    if (buf[i] != (int32_t)(nranks * (nranks + 1) / 2)) { fail("rank %d: registered allreduce element %zu = %d", rank, i, (int)buf[i]); break; }
  }
  res = swcclCommDeregister(comm, handle);
  if (res != swcclSuccess) fail("rank %d: swcclCommDeregister returned %d", rank, (int)res);
  res = swcclCommDeregister(comm, handle);
  if (res != swcclInvalidArgument) fail("rank %d: deregistering twice returned %d, expected swcclInvalidArgument", rank, (int)res);
  res = swcclCommRegister(comm, NULL, 16, &handle);
  if (res != swcclInvalidArgument) fail("rank %d: registering NULL returned %d, expected swcclInvalidArgument", rank, (int)res);
  res = swcclCommRegister(comm, buf, 16, NULL);
  if (res != swcclInvalidArgument) fail("rank %d: registering with a NULL handle returned %d", rank, (int)res);
  free(buf);
}

/* swcclRedOpCreatePreMulSum: each rank's input times a scalar, then summed; immediate and pointer
 * residence; destroy; misuse. */
static void check_premulsum(swcclComm_t comm, int rank, int nranks) {
  enum { N = 5003 };
  float* buf = (float*)malloc(N * sizeof(float));
  float half = 0.5f, scale = 4.0f;
  swcclRedOp_t op1, op2;
  swcclResult_t res;
  size_t i;
  if (buf == NULL) { fail("rank %d: out of memory", rank); return; }
  res = swcclRedOpCreatePreMulSum(&op1, &half, swcclFloat, 1, comm);
  if (res != swcclSuccess) fail("rank %d: swcclRedOpCreatePreMulSum (immediate) returned %d", rank, (int)res);
  half = 100.0f; /* immediate: the value was copied at creation */
  res = swcclRedOpCreatePreMulSum(&op2, &scale, swcclFloat, 0, comm);
  if (res != swcclSuccess) fail("rank %d: swcclRedOpCreatePreMulSum (pointer) returned %d", rank, (int)res);
  for (i = 0; i < N; i++) buf[i] = (float)((rank + (int)i) % 7);
  res = swcclAllReduce(buf, buf, N, swcclFloat, op1, comm, NULL);
  if (res != swcclSuccess) fail("rank %d: allreduce with a premulsum op returned %d", rank, (int)res);
  for (i = 0; i < N; i++) {
    float want = 0.0f;
    int r;
    for (r = 0; r < nranks; r++) want += 0.5f * (float)((r + (int)i) % 7);
    if (buf[i] != want) { fail("rank %d: premulsum allreduce element %zu = %g, expected %g", rank, i, (double)buf[i], (double)want); break; }
  }
  scale = 2.0f; /* pointer residence: read when the operation runs */
  for (i = 0; i < N; i++) buf[i] = 1.0f;
  res = swcclAllReduce(buf, buf, N, swcclFloat, op2, comm, NULL);
  if (res != swcclSuccess || buf[0] != 2.0f * (float)nranks || buf[N - 1] != 2.0f * (float)nranks)
    fail("rank %d: premulsum (pointer) allreduce returned %d, element 0 = %g", rank, (int)res, (double)buf[0]);
  res = swcclAllReduce(buf, buf, N, swcclInt32, op1, comm, NULL);
  if (res != swcclInvalidArgument) fail("rank %d: premulsum op with another datatype returned %d", rank, (int)res);
  if (swcclRedOpDestroy(op1, comm) != swcclSuccess || swcclRedOpDestroy(op2, comm) != swcclSuccess)
    fail("rank %d: swcclRedOpDestroy failed", rank);
  res = swcclRedOpDestroy(op1, comm);
  if (res != swcclInvalidArgument) fail("rank %d: destroying an op twice returned %d", rank, (int)res);
  res = swcclRedOpDestroy(swcclSum, comm);
  if (res != swcclInvalidArgument) fail("rank %d: destroying a built-in op returned %d", rank, (int)res);
  res = swcclRedOpCreatePreMulSum(&op1, NULL, swcclFloat, 1, comm);
  if (res != swcclInvalidArgument) fail("rank %d: NULL scalar returned %d", rank, (int)res);
  res = swcclRedOpCreatePreMulSum(&op1, &scale, swcclFloat, 7, comm);
  if (res != swcclInvalidArgument) fail("rank %d: residence 7 returned %d", rank, (int)res);
  free(buf);
}

static void check_still_usable(swcclComm_t comm, unsigned char* sendbuf, unsigned char* recvbuf) {
  int32_t* s = (int32_t*)(void*)sendbuf;
  int32_t* d = (int32_t*)(void*)recvbuf;
  int32_t want = (int32_t)(g_nranks * (g_nranks - 1) / 2);
  int i;
  swcclResult_t res;
  for (i = 0; i < 7; i++) { s[i] = g_rank; d[i] = -1; }
  res = swcclAllReduce(s, d, 7, swcclInt32, swcclSum, comm, NULL);
  if (res != swcclSuccess) {
    fail("swcclAllReduce after misuse returned %d (%s): %s", (int)res, str_or_null(swcclGetErrorString(res)),
         str_or_null(swcclGetLastError(comm)));
    return;
  }
  for (i = 0; i < 7; i++)
    if (d[i] != want) {
      fail("swcclAllReduce after misuse: element %d is %ld, expected %ld", i, (long)d[i], (long)want);
      return;
    }
}

/* ---------------------------------------------------------------------------------------------- */
/* Child                                                                                          */
/* ---------------------------------------------------------------------------------------------- */

static void run_rank(int rank, int nranks, swcclUniqueId id) {
  swcclComm_t comm = NULL;
  swcclResult_t res;
  unsigned char *sendbuf, *recvbuf;
  size_t bytes = (MAX_COUNT + GUARD) * 8;
  size_t ci, ti, oi;
  int count = -1, userRank = -1, inplace, alive = 1;
  const char* s;

  g_rank = rank;
  g_nranks = nranks;

  if (rank == 1) {
    swcclConfig_t config = SWCCL_CONFIG_INITIALIZER;
    config.timeoutMs = 20000;
    config.commName = "ctest";
    res = swcclCommInitRankConfig(&comm, nranks, id, rank, &config);
  } else {
    res = swcclCommInitRank(&comm, nranks, id, rank);
  }
  if (res != swcclSuccess || comm == NULL) {
    fail("%s returned %d (%s): %s", rank == 1 ? "swcclCommInitRankConfig" : "swcclCommInitRank", (int)res,
         str_or_null(swcclGetErrorString(res)), str_or_null(swcclGetLastError(NULL)));
    child_exit(1);
  }
  if (g_verbose) printf("rank %d: communicator ready\n", rank);

  res = swcclCommCount(comm, &count);
  if (res != swcclSuccess || count != nranks)
    fail("swcclCommCount returned %d, count %d (expected %d)", (int)res, count, nranks);
  res = swcclCommUserRank(comm, &userRank);
  if (res != swcclSuccess || userRank != rank)
    fail("swcclCommUserRank returned %d, rank %d (expected %d)", (int)res, userRank, rank);

  s = swcclGetErrorString(swcclInvalidArgument);
  if (s == NULL || s[0] == '\0') fail("swcclGetErrorString(swcclInvalidArgument) is empty");
  s = swcclGetErrorString((swcclResult_t)77);
  if (s == NULL) fail("swcclGetErrorString(77) is NULL");

  sendbuf = (unsigned char*)malloc(bytes);
  recvbuf = (unsigned char*)malloc(bytes);
  if (sendbuf == NULL || recvbuf == NULL) {
    fail("out of memory");
    swcclCommAbort(comm);
    child_exit(1);
  }

  /* Same order on every rank. */
  for (ci = 0; ci < NCOUNTS && alive; ci++) {
    size_t n = kCounts[ci];
    for (ti = 0; ti < NTYPES && alive; ti++) {
      const type_info* t = &kTypes[ti];
      int narrow = (t->kind == K_HALF || t->kind == K_BF16);
      if (narrow && n != 1000) continue;
      for (oi = 0; oi < NOPS && alive; oi++) {
        const op_info* o = &kOps[oi];
        if (narrow && o->op == swcclAvg) continue; /* not exact in 16-bit floats */
        for (inplace = 0; inplace < 2 && alive; inplace++)
          alive = run_one(comm, t, o, n, inplace, sendbuf, recvbuf);
      }
      if (g_verbose && alive) printf("rank %d: %s count %zu done\n", rank, t->name, n);
    }
  }
  if (!alive) {
    printf("rank %d: communicator broken, aborting it\n", rank);
    swcclCommAbort(comm);
    child_exit(1);
  }

  check_misuse(comm, id, sendbuf, recvbuf);
  check_still_usable(comm, sendbuf, recvbuf);
  check_registration(comm, rank, nranks);
  check_premulsum(comm, rank, nranks);

  res = swcclCommDestroy(comm);
  if (res != swcclSuccess)
    fail("swcclCommDestroy returned %d (%s): %s", (int)res, str_or_null(swcclGetErrorString(res)),
         str_or_null(swcclGetLastError(NULL)));
  free(sendbuf);
  free(recvbuf);
  if (g_verbose || g_failures) printf("rank %d: %d failure(s)\n", rank, g_failures);
  child_exit(g_failures ? 1 : 0);
}

/* ---------------------------------------------------------------------------------------------- */
/* Parent                                                                                         */
/* ---------------------------------------------------------------------------------------------- */


static int self_check_encoders(void) {
  /* Known bit patterns: half 1 = 0x3c00, 2 = 0x4000, -2 = 0xc000, 3 = 0x4200, 100 = 0x5640;
     bf16 1 = 0x3f80, -1 = 0xbf80, 2 = 0x4000, 3 = 0x4040, 100 = 0x42c8. */
  return half_from_int(1) == 0x3c00 && half_from_int(2) == 0x4000 && half_from_int(-2) == 0xc000 &&
         half_from_int(3) == 0x4200 && half_from_int(100) == 0x5640 && half_from_int(0) == 0 &&
         bf16_from_int(1) == 0x3f80 && bf16_from_int(-1) == 0xbf80 && bf16_from_int(2) == 0x4000 &&
         bf16_from_int(3) == 0x4040 && bf16_from_int(100) == 0x42c8 && bf16_from_int(0) == 0;
}

static void rank_entry(int rank, int nranks, void* arg) { run_rank(rank, nranks, *(swcclUniqueId*)arg); }

int main(int argc, char** argv) {
  int nranks = 3, version = -1, parentFailed = 0;
  swcclUniqueId id;
  swcclResult_t res;
  const char* verbose = getenv("SWCCL_TEST_VERBOSE");

  g_verbose = verbose != NULL && verbose[0] != '\0' && strcmp(verbose, "0") != 0;
  if (argc > 1) {
    char* end = NULL;
    long v = strtol(argv[1], &end, 10);
    if (end == argv[1] || *end != '\0' || v < 1 || v > MAX_RANKS) {
      fprintf(stderr, "usage: %s [nranks 1..%d]\n", argv[0], MAX_RANKS);
      return 2;
    }
    nranks = (int)v;
  }
  setvbuf(stdout, NULL, _IOLBF, 0);
  setenv("SWCCL_SOCKET_IFNAME", "lo", 0); /* before the library reads its environment */

  if (!self_check_encoders()) {
    printf("parent: FAIL half/bfloat16 encoders of this test are wrong\n");
    parentFailed = 1;
  }

  res = swcclGetVersion(&version);
  if (res != swcclSuccess || version != SWCCL_VERSION_CODE) {
    printf("parent: FAIL swcclGetVersion returned %d, version %d (header SWCCL_VERSION_CODE %d)\n", (int)res,
           version, SWCCL_VERSION_CODE);
    parentFailed = 1;
  }

  memset(&id, 0, sizeof id);
  res = swcclGetUniqueId(&id);
  if (res != swcclSuccess) {
    printf("parent: FAIL swcclGetUniqueId returned %d (%s): %s\n", (int)res,
           str_or_null(swcclGetErrorString(res)), str_or_null(swcclGetLastError(NULL)));
    printf("0 passed, %d failed\n", nranks);
    return 1;
  }

  printf("allreduce_test: nranks=%d, library version %d\n", nranks, version);
  return fork_ranks(nranks, rank_entry, &id, parentFailed);
}
