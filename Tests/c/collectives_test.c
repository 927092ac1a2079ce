/*
 * collectives_test.c - end-to-end test of the C ABI of SwiftCCL (libswccl.so) from plain C99: every
 * collective except all-reduce (Tests/c/allreduce_test.c has that), point-to-point and the barrier,
 * then streams and groups.
 *
 *   usage: collectives_test [nranks]        (default 3, at most 32)
 *
 * The parent makes a swcclUniqueId (and, with 2 ranks or more, a second one for the stream-error
 * communicator below) and forks one child per rank. Each child creates its communicator
 * with swcclCommInitRank and runs, always with stream NULL and in the same order on every rank:
 *
 *   swcclBroadcast      roots 0 and n-1, out-of-place and in place (sendbuff == recvbuff)
 *   swcclReduce         roots 0 and n-1, sum and max (and prod for int32), out-of-place and in place
 *   swcclAllGather      out-of-place and in place (sendbuff == recvbuff + rank*sendcount*size)
 *   swcclReduceScatter  sum and max (and prod for int32), out-of-place and in place
 *                       (recvbuff == sendbuff + rank*recvcount*size)
 *   swcclAlltoAll       out-of-place only (it has no in-place form)
 *   swcclGather         roots 0 and n-1, out-of-place and in place at the root
 *                       (sendbuff == recvbuff + root*count*size)
 *   swcclScatter        roots 0 and n-1, out-of-place and in place at the root
 *                       (recvbuff == sendbuff + root*count*size)
 *   swcclSend/swcclRecv rank r sends 3 messages to (r+1)%n and receives 3 from (r-1+n)%n; even ranks
 *                       send first, odd ranks (and rank n-1 when n is odd) receive first, since a send
 *                       above the eager size blocks until the receiver has posted (no groups used)
 *   swcclBarrier        between the sections; ranks publish a round number in a shared mapping before
 *                       each barrier and check after it that every rank has reached that round
 *
 * for the types int32, float, double and uint8 and the counts 0, 1, 7, 1000 and 65537 (per rank, per
 * block). Every element of every result is compared with values computed here independently, the bytes
 * after every receive buffer (guard) must stay untouched, send buffers must be left unchanged, and
 * buffers a rank does not use (recvbuff of reduce/gather off the root, sendbuff of broadcast/scatter off
 * the root) must not be written; with root n-1 those unused buffers are passed as NULL, and with count 0
 * out-of-place all buffers are NULL. Point-to-point messages of count 0 pass NULL on both sides, on
 * neither, and on one side only (the header allows NULL with count 0; the message still counts in
 * the pair's call order). SWCCL_TEST_P2P_NULL_MIX=0 leaves out the one-sided case.
 * Misuse must return swcclInvalidArgument with a message in swcclGetLastError(comm) and leave the
 * communicator usable: root out of range, swcclAlltoAll with sendbuff == recvbuff, swcclSend/swcclRecv
 * peer out of range, swcclAllGather with recvbuff NULL; then (after a misuse made by rank 0 alone) a
 * barrier and a small all-gather must still succeed.
 *
 * Then, after the misuse section (all exact, with guards):
 *   streams      on one stream, in order: 4 swcclAllReduce (float, 100003, sum), swcclBroadcast (int32,
 *                65537, root n-1, sendbuff NULL off the root), swcclAllGather (double, 1001 per rank),
 *                swcclReduceScatter (int32, 777 per rank, sum), each on its own buffers;
 *                swcclStreamQuery right after (swcclInProgress or swcclSuccess), swcclStreamSynchronize
 *                == swcclSuccess, every result checked, swcclStreamQuery == swcclSuccess. A misuse on the
 *                stream (sendbuff NULL, count 5) returns swcclInvalidArgument at the call, enqueues
 *                nothing (query still swcclSuccess), and an all-reduce on the stream then succeeds.
 *                swcclStreamDestroy: swcclSuccess, then swcclInvalidUsage for the destroyed handle;
 *                swcclStreamSynchronize/Query/Create(NULL): swcclInvalidArgument.
 *   groups       swcclGroupEnd without a group: swcclInvalidUsage. In one group each rank sends 1 MiB
 *                (262144 floats, far above the eager size: would deadlock without the group) to r+1 and
 *                to r-1 and receives from r-1 and from r+1, plus swcclAllReduce (int64, 33, sum, values
 *                above 2^32) and swcclBroadcast (int32, 4099, root 1 % n); GroupEnd == swcclSuccess.
 *                With 2 ranks both neighbours are the other rank and sends/receives match in call order
 *                (its first send fills the first receive); with 1 rank all go to the rank itself. Then a
 *                nested group (Start, Start, send/recv, End, End): the receive buffer must be untouched
 *                after the inner End and filled after the outer one; one more End: swcclInvalidUsage.
 *   stream error (2 ranks or more) a communicator made with swcclCommInitRankConfig, timeoutMs 1500;
 *                on a new stream an swcclAllReduce of 2000 elements on rank 1, 1000 elsewhere.
 *                swcclStreamSynchronize must return an error other than swcclInvalidArgument within
 *                6 s, with swcclGetLastError(NULL) non-empty; then swcclCommAbort (swcclSuccess) and
 *                swcclStreamDestroy (swcclSuccess: the error was already reported).
 * The main communicator must still be healthy afterwards (swcclCommGetAsyncError, a last barrier).
 *
 * Values are integers small enough to be exact in every type (float included): data-moving collectives
 * send values that identify the source rank and element; reductions use values in [-5, 5] (uint8:
 * [0, 10]; prod: +1/-1). Each call gets a new "salt" so that stale data from an earlier call is caught.
 *
 * Each child prints one line per failure (operation, type, count, root, op, placement, rank, first wrong
 * element, expected vs got) and exits 0 on success. The parent prints one line per failed rank and,
 * last, "N passed, M failed" (ranks), and exits non-zero on any failure. Everything is killed after
 * TIMEOUT_SECONDS.
 *
 * Build: gcc -std=c99 -Wall -Wextra -Werror -Iinclude Tests/c/collectives_test.c -LDIR -lswccl -Wl,-rpath,DIR
 * Environment: SWCCL_SOCKET_IFNAME defaults to "lo" and SWCCL_TIMEOUT_MS to 30000 here;
 * SWCCL_TEST_VERBOSE=1 prints progress; SWCCL_TEST_P2P_NULL_MIX=0 drops the one-sided NULL case above.
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
#include <sys/mman.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "swccl.h"

#define MAX_RANKS 32
#define MAX_COUNT ((size_t)65537)
#define GUARD_BYTES 64      /* bytes after every receive buffer that must stay untouched */
#define GUARD_BYTE 0xA5     /* also fills buffers that must not be written at all */
#define NMSG 3              /* point-to-point messages per direction and case */
#define MAX_FAIL_LINES 60   /* per rank */
#ifndef TIMEOUT_SECONDS
#define TIMEOUT_SECONDS 120  /* whole test, all ranks */
#endif

enum kind { K_SINT, K_UINT, K_FLOAT };

typedef struct {
  const char* name;
  swcclDataType_t type;
  size_t size;
  enum kind kind;
} type_info;

static const type_info kTypes[] = {
  { "int32",  swcclInt32,  4, K_SINT  },
  { "float",  swcclFloat,  4, K_FLOAT },
  { "double", swcclDouble, 8, K_FLOAT },
  { "uint8",  swcclUint8,  1, K_UINT  },
};
#define NTYPES (sizeof kTypes / sizeof kTypes[0])

typedef struct {
  const char* name;
  swcclRedOp_t op;
} op_info;

static const op_info kOps[] = { { "sum", swcclSum }, { "max", swcclMax }, { "prod", swcclProd } };
#define NOPS (sizeof kOps / sizeof kOps[0])

static const size_t kCounts[] = { 0, 1, 7, 1000, 65537 };
#define NCOUNTS (sizeof kCounts / sizeof kCounts[0])

#include "fork_ranks.h"

static unsigned g_salt = 0;  /* advanced identically on every rank, once per call */
static swcclComm_t g_comm = NULL;
static volatile int* g_slots = NULL; /* shared between the processes: barrier round reached by each rank */
static int g_round = 0;
static int g_p2pNullMix = 1;         /* SWCCL_TEST_P2P_NULL_MIX=0 turns it off: see test_sendrecv */

/* What a check is about: printed in front of every failure. */
typedef struct {
  const char* fn;
  const type_info* t;
  size_t count;
  int root;         /* -1: not a rooted operation */
  const char* op;   /* NULL: not a reduction */
  int inplace;      /* 0 out-of-place, 1 in place, -1: no such distinction */
} call_info;

static void describe(const call_info* c, char* buf, size_t n) {
  size_t k = 0;
  int w = snprintf(buf, n, "%s type=%s count=%zu", c->fn, c->t->name, c->count);
  if (w > 0) k = (size_t)w < n ? (size_t)w : n - 1;
  if (c->root >= 0 && k < n) {
    w = snprintf(buf + k, n - k, " root=%d", c->root);
    if (w > 0) k += (size_t)w < n - k ? (size_t)w : n - k - 1;
  }
  if (c->op != NULL && k < n) {
    w = snprintf(buf + k, n - k, " op=%s", c->op);
    if (w > 0) k += (size_t)w < n - k ? (size_t)w : n - k - 1;
  }
  if (c->inplace >= 0 && k < n) snprintf(buf + k, n - k, " %s", c->inplace ? "in-place" : "out-of-place");
}

#ifdef __GNUC__
static void cfail(const call_info* c, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
#endif

static void cfail(const call_info* c, const char* fmt, ...) {
  char head[256], msg[512];
  va_list ap;
  describe(c, head, sizeof head);
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  fail("%s: %s", head, msg);
}

/* ---------------------------------------------------------------------------------------------- */
/* Values                                                                                         */
/* ---------------------------------------------------------------------------------------------- */

static unsigned next_salt(void) { return ++g_salt; }

/* Element `idx` of the data rank `src` contributes to a data-moving collective. Identifies src and idx
   (uint8: as far as 8 bits allow). |value| < 2^24: exact in float. */
static long long move_value(const type_info* t, int src, size_t idx, unsigned salt) {
  if (t->kind == K_UINT) return (long long)(((unsigned)src * 59u + (unsigned)(idx % 256) * 7u + salt * 13u + 3u) & 255u);
  return ((long long)src << 18) + (long long)((idx * 7u + salt * 131u) & 0x3ffffu) - (1LL << 22);
}

/* Element `idx` of rank r's input to a reduction. */
static long long red_value(const type_info* t, swcclRedOp_t op, int r, size_t idx, unsigned salt) {
  size_t k = (size_t)r * 3u + idx + salt;
  if (op == swcclProd) return ((size_t)r + idx * 5u + salt) % 3u == 0 ? -1 : 1;
  if (t->kind == K_UINT) return (long long)((k * 5u) % 11u);
  return (long long)((k * 5u) % 11u) - 5;
}

/* The reduction over all ranks of element idx (sums of uint8 wrap when encoded, as in the type). */
static long long red_expected(const type_info* t, swcclRedOp_t op, size_t idx, unsigned salt) {
  long long acc = red_value(t, op, 0, idx, salt);
  int r;
  for (r = 1; r < g_nranks; r++) {
    long long x = red_value(t, op, r, idx, salt);
    if (op == swcclProd) acc *= x;
    else if (op == swcclMax) { if (x > acc) acc = x; }
    else acc += x;
  }
  return acc;
}

/* Writes integer v as element i of p (unsigned: modulo 2^bits). */
static void put(const type_info* t, unsigned char* p, size_t i, long long v) {
  unsigned char* out = p + i * t->size;
  switch (t->kind) {
  case K_SINT: { int32_t x = (int32_t)v; memcpy(out, &x, 4); break; }
  case K_UINT: { uint8_t x = (uint8_t)(unsigned long long)v; memcpy(out, &x, 1); break; }
  case K_FLOAT:
    if (t->size == 4) { float x = (float)v; memcpy(out, &x, 4); }
    else { double x = (double)v; memcpy(out, &x, 8); }
    break;
  }
}

/* p[i] = move_value(src, base + i) for i < n. */
static void gen_move(const type_info* t, unsigned char* p, size_t n, int src, size_t base, unsigned salt) {
  size_t i;
  for (i = 0; i < n; i++) put(t, p, i, move_value(t, src, base + i, salt));
}

/* p[i] = red_value(r, base + i) for i < n. */
static void gen_red(const type_info* t, swcclRedOp_t op, unsigned char* p, size_t n, int r, size_t base, unsigned salt) {
  size_t i;
  for (i = 0; i < n; i++) put(t, p, i, red_value(t, op, r, base + i, salt));
}

/* p[i] = red_expected(base + i) for i < n. */
static void gen_red_expected(const type_info* t, swcclRedOp_t op, unsigned char* p, size_t n, size_t base, unsigned salt) {
  size_t i;
  for (i = 0; i < n; i++) put(t, p, i, red_expected(t, op, base + i, salt));
}

/* ---------------------------------------------------------------------------------------------- */
/* Checks                                                                                         */
/* ---------------------------------------------------------------------------------------------- */

static double load_float(const type_info* t, const unsigned char* p) {
  if (t->size == 4) { float f; memcpy(&f, p, 4); return (double)f; }
  { double d; memcpy(&d, p, 8); return d; }
}

/* Exact equality: bits, or value for floats (so +0 == -0). */
static int elem_equal(const type_info* t, const unsigned char* p, const unsigned char* e) {
  if (t->kind == K_FLOAT) return load_float(t, p) == load_float(t, e);
  return memcmp(p, e, t->size) == 0;
}

static void format_elem(const type_info* t, const unsigned char* p, char* buf, size_t n) {
  switch (t->kind) {
  case K_SINT: { int32_t x; memcpy(&x, p, 4); snprintf(buf, n, "%ld", (long)x); break; }
  case K_UINT: { uint8_t x; memcpy(&x, p, 1); snprintf(buf, n, "%u", (unsigned)x); break; }
  case K_FLOAT: snprintf(buf, n, "%.17g", load_float(t, p)); break;
  }
}

/* Compares n elements of got with exp; `block` > 0 also names the block (of that many elements) of the
   first wrong element. Returns 1 if all are equal. */
static int check_elems(const call_info* c, const char* what, const unsigned char* got, const unsigned char* exp,
                       size_t n, size_t block) {
  const type_info* t = c->t;
  size_t i, bad = 0, first = 0;
  char g[64], w[64], where[96];
  for (i = 0; i < n; i++)
    if (!elem_equal(t, got + i * t->size, exp + i * t->size)) {
      if (bad == 0) first = i;
      bad++;
    }
  if (bad == 0) return 1;
  format_elem(t, got + first * t->size, g, sizeof g);
  format_elem(t, exp + first * t->size, w, sizeof w);
  if (block > 0) snprintf(where, sizeof where, "%zu (block %zu, element %zu)", first, first / block, first % block);
  else snprintf(where, sizeof where, "%zu", first);
  cfail(c, "%s: %zu of %zu elements wrong (first at %s: got %s, expected %s)", what, bad, n, where, g, w);
  return 0;
}

/* The GUARD_BYTES bytes at p must all still be GUARD_BYTE. */
static int check_guard(const call_info* c, const char* what, const unsigned char* p) {
  size_t i;
  for (i = 0; i < GUARD_BYTES; i++)
    if (p[i] != GUARD_BYTE) {
      cfail(c, "wrote past the end of %s (guard byte %zu is 0x%02x)", what, i, (unsigned)p[i]);
      return 0;
    }
  return 1;
}

/* A buffer the rank does not use: its nbytes and the guard after it must all still be GUARD_BYTE. */
static int check_untouched(const call_info* c, const char* what, const unsigned char* p, size_t nbytes) {
  size_t i;
  for (i = 0; i < nbytes + GUARD_BYTES; i++)
    if (p[i] != GUARD_BYTE) {
      cfail(c, "%s must not be written on this rank, but byte %zu of it is 0x%02x", what, i, (unsigned)p[i]);
      return 0;
    }
  return 1;
}

/* Fills nbytes and the guard after them with GUARD_BYTE. */
static void poison(unsigned char* p, size_t nbytes) { memset(p, GUARD_BYTE, nbytes + GUARD_BYTES); }

static int is_fatal(swcclResult_t r) { return r != swcclSuccess && r != swcclInvalidArgument && r != swcclInvalidUsage; }

/* Reports a failed call; returns 0 if the communicator broke (the caller stops), else 1. */
static int call_failed(const call_info* c, swcclResult_t res) {
  cfail(c, "returned %d (%s): %s", (int)res, str_or_null(swcclGetErrorString(res)),
        str_or_null(swcclGetLastError(g_comm)));
  return !is_fatal(res);
}

/* ---------------------------------------------------------------------------------------------- */
/* The collectives. Each returns 0 if the communicator broke, else 1. S, R and E are buffers of the  */
/* same (large enough) size: send, receive and expected data.                                      */
/* ---------------------------------------------------------------------------------------------- */

typedef struct {
  unsigned char* S;
  unsigned char* R;
  unsigned char* E;
} buffers;

static int test_broadcast(const type_info* t, size_t count, int root, int inplace, const buffers* b) {
  call_info c = { "swcclBroadcast", t, count, root, NULL, inplace };
  const size_t nb = count * t->size;
  const unsigned salt = next_salt();
  const int isRoot = g_rank == root;
  unsigned char *send, *recv, *out;
  swcclResult_t res;

  poison(b->S, nb);
  poison(b->R, nb);
  if (inplace) {
    if (isRoot) gen_move(t, b->S, count, root, 0, salt);
    send = recv = out = b->S;
  } else {
    if (isRoot) gen_move(t, b->S, count, root, 0, salt);
    else gen_move(t, b->S, count, g_rank, 0, salt); /* ignored off the root; must stay unchanged */
    send = (isRoot || root == 0) ? b->S : NULL;
    recv = out = b->R;
    if (count == 0) send = recv = NULL;
  }
  res = swcclBroadcast(send, recv, count, t->type, root, g_comm, NULL);
  if (res != swcclSuccess) return call_failed(&c, res);

  gen_move(t, b->E, count, root, 0, salt);
  check_elems(&c, "recvbuff", out, b->E, count, 0);
  check_guard(&c, "recvbuff", out + nb);
  if (!inplace && send != NULL) {
    gen_move(t, b->E, count, isRoot ? root : g_rank, 0, salt);
    check_elems(&c, "sendbuff (must be unchanged)", b->S, b->E, count, 0);
    check_guard(&c, "sendbuff", b->S + nb);
  }
  return 1;
}

static int test_reduce(const type_info* t, const op_info* o, size_t count, int root, int inplace, const buffers* b) {
  call_info c = { "swcclReduce", t, count, root, o->name, inplace };
  const size_t nb = count * t->size;
  const unsigned salt = next_salt();
  const int isRoot = g_rank == root;
  unsigned char *send, *recv;
  swcclResult_t res;

  poison(b->S, nb);
  poison(b->R, nb);
  gen_red(t, o->op, b->S, count, g_rank, 0, salt);
  if (inplace) {
    send = recv = b->S;
  } else {
    send = b->S;
    recv = (isRoot || root == 0) ? b->R : NULL;
    if (count == 0) send = recv = NULL;
  }
  res = swcclReduce(send, recv, count, t->type, o->op, root, g_comm, NULL);
  if (res != swcclSuccess) return call_failed(&c, res);

  if (isRoot) {
    unsigned char* out = inplace ? b->S : b->R;
    gen_red_expected(t, o->op, b->E, count, 0, salt);
    check_elems(&c, "recvbuff", out, b->E, count, 0);
    check_guard(&c, "recvbuff", out + nb);
  } else if (!inplace && recv != NULL) {
    check_untouched(&c, "recvbuff (used only on the root)", b->R, nb);
  }
  if (!inplace || !isRoot) {
    gen_red(t, o->op, b->E, count, g_rank, 0, salt);
    check_elems(&c, inplace ? "sendbuff == recvbuff off the root (must be unchanged)" : "sendbuff (must be unchanged)",
                b->S, b->E, count, 0);
    check_guard(&c, "sendbuff", b->S + nb);
  }
  return 1;
}

static int test_allgather(const type_info* t, size_t count, int inplace, const buffers* b) {
  call_info c = { "swcclAllGather", t, count, -1, NULL, inplace };
  const size_t nb = count * t->size, total = count * (size_t)g_nranks;
  const unsigned salt = next_salt();
  unsigned char *send, *recv;
  int j;
  swcclResult_t res;

  poison(b->S, nb);
  poison(b->R, total * t->size);
  if (inplace) {
    recv = b->R;
    send = b->R + (size_t)g_rank * nb;
    gen_move(t, send, count, g_rank, 0, salt);
  } else {
    gen_move(t, b->S, count, g_rank, 0, salt);
    send = b->S;
    recv = b->R;
    if (count == 0) send = recv = NULL;
  }
  res = swcclAllGather(send, recv, count, t->type, g_comm, NULL);
  if (res != swcclSuccess) return call_failed(&c, res);

  for (j = 0; j < g_nranks; j++) gen_move(t, b->E + (size_t)j * nb, count, j, 0, salt);
  check_elems(&c, "recvbuff", b->R, b->E, total, count);
  check_guard(&c, "recvbuff", b->R + total * t->size);
  if (!inplace) {
    gen_move(t, b->E, count, g_rank, 0, salt);
    check_elems(&c, "sendbuff (must be unchanged)", b->S, b->E, count, 0);
    check_guard(&c, "sendbuff", b->S + nb);
  }
  return 1;
}

static int test_reducescatter(const type_info* t, const op_info* o, size_t count, int inplace, const buffers* b) {
  call_info c = { "swcclReduceScatter", t, count, -1, o->name, inplace };
  const size_t nb = count * t->size, total = count * (size_t)g_nranks;
  const unsigned salt = next_salt();
  const size_t mine = (size_t)g_rank * count; /* first element of this rank's block */
  unsigned char *send, *recv;
  int j;
  swcclResult_t res;

  poison(b->S, total * t->size);
  poison(b->R, nb);
  gen_red(t, o->op, b->S, total, g_rank, 0, salt);
  send = b->S;
  recv = inplace ? b->S + mine * t->size : b->R;
  if (!inplace && count == 0) send = recv = NULL;
  res = swcclReduceScatter(send, recv, count, t->type, o->op, g_comm, NULL);
  if (res != swcclSuccess) return call_failed(&c, res);

  gen_red_expected(t, o->op, b->E, count, mine, salt);
  if (inplace) {
    check_elems(&c, "recvbuff (block rank of sendbuff)", b->S + mine * t->size, b->E, count, 0);
    /* The other blocks are input only: they must be unchanged. */
    for (j = 0; j < g_nranks; j++) {
      char what[96];
      if (j == g_rank) continue;
      gen_red(t, o->op, b->E, count, g_rank, (size_t)j * count, salt);
      snprintf(what, sizeof what, "sendbuff block %d (not this rank's, must be unchanged)", j);
      check_elems(&c, what, b->S + (size_t)j * nb, b->E, count, 0);
    }
    check_guard(&c, "sendbuff", b->S + total * t->size);
  } else {
    check_elems(&c, "recvbuff", b->R, b->E, count, 0);
    check_guard(&c, "recvbuff", b->R + nb);
    gen_red(t, o->op, b->E, total, g_rank, 0, salt);
    check_elems(&c, "sendbuff (must be unchanged)", b->S, b->E, total, count);
    check_guard(&c, "sendbuff", b->S + total * t->size);
  }
  return 1;
}

static int test_alltoall(const type_info* t, size_t count, const buffers* b) {
  call_info c = { "swcclAlltoAll", t, count, -1, NULL, -1 };
  const size_t nb = count * t->size, total = count * (size_t)g_nranks;
  const unsigned salt = next_salt();
  unsigned char *send = b->S, *recv = b->R;
  int j;
  swcclResult_t res;

  poison(b->S, total * t->size);
  poison(b->R, total * t->size);
  gen_move(t, b->S, total, g_rank, 0, salt);
  if (count == 0) send = recv = NULL;
  res = swcclAlltoAll(send, recv, count, t->type, g_comm, NULL);
  if (res != swcclSuccess) return call_failed(&c, res);

  /* Block j of recvbuff is block `rank` of rank j's sendbuff. */
  for (j = 0; j < g_nranks; j++) gen_move(t, b->E + (size_t)j * nb, count, j, (size_t)g_rank * count, salt);
  check_elems(&c, "recvbuff", b->R, b->E, total, count);
  check_guard(&c, "recvbuff", b->R + total * t->size);
  gen_move(t, b->E, total, g_rank, 0, salt);
  check_elems(&c, "sendbuff (must be unchanged)", b->S, b->E, total, count);
  check_guard(&c, "sendbuff", b->S + total * t->size);
  return 1;
}

static int test_gather(const type_info* t, size_t count, int root, int inplace, const buffers* b) {
  call_info c = { "swcclGather", t, count, root, NULL, inplace };
  const size_t nb = count * t->size, total = count * (size_t)g_nranks;
  const unsigned salt = next_salt();
  const int isRoot = g_rank == root;
  unsigned char *send, *recv;
  int j;
  swcclResult_t res;

  poison(b->S, nb);
  poison(b->R, total * t->size);
  if (isRoot && inplace) {
    recv = b->R;
    send = b->R + (size_t)root * nb;
    gen_move(t, send, count, root, 0, salt);
  } else {
    /* Off the root the in-place form does not exist: the same call as out-of-place. */
    gen_move(t, b->S, count, g_rank, 0, salt);
    send = b->S;
    recv = (isRoot || root == 0) ? b->R : NULL;
    if (count == 0 && !inplace) send = recv = NULL;
  }
  res = swcclGather(send, recv, count, t->type, root, g_comm, NULL);
  if (res != swcclSuccess) return call_failed(&c, res);

  if (isRoot) {
    for (j = 0; j < g_nranks; j++) gen_move(t, b->E + (size_t)j * nb, count, j, 0, salt);
    check_elems(&c, "recvbuff", b->R, b->E, total, count);
    check_guard(&c, "recvbuff", b->R + total * t->size);
  } else if (recv != NULL) {
    check_untouched(&c, "recvbuff (used only on the root)", b->R, total * t->size);
  }
  if (!(isRoot && inplace)) {
    gen_move(t, b->E, count, g_rank, 0, salt);
    check_elems(&c, "sendbuff (must be unchanged)", b->S, b->E, count, 0);
    check_guard(&c, "sendbuff", b->S + nb);
  }
  return 1;
}

static int test_scatter(const type_info* t, size_t count, int root, int inplace, const buffers* b) {
  call_info c = { "swcclScatter", t, count, root, NULL, inplace };
  const size_t nb = count * t->size, total = count * (size_t)g_nranks;
  const unsigned salt = next_salt();
  const int isRoot = g_rank == root;
  unsigned char *send, *recv;
  swcclResult_t res;

  poison(b->S, total * t->size);
  poison(b->R, nb);
  if (isRoot) {
    gen_move(t, b->S, total, root, 0, salt);
    send = b->S;
    recv = inplace ? b->S + (size_t)root * nb : b->R;
  } else {
    gen_move(t, b->S, total, g_rank, 0, salt); /* ignored off the root; must stay unchanged */
    send = root == 0 ? b->S : NULL;
    recv = b->R;
  }
  if (count == 0 && !inplace) send = recv = NULL;
  res = swcclScatter(send, recv, count, t->type, root, g_comm, NULL);
  if (res != swcclSuccess) return call_failed(&c, res);

  gen_move(t, b->E, count, root, (size_t)g_rank * count, salt);
  if (isRoot && inplace) {
    check_elems(&c, "recvbuff (block root of sendbuff)", b->S + (size_t)root * nb, b->E, count, 0);
  } else {
    check_elems(&c, "recvbuff", b->R, b->E, count, 0);
    check_guard(&c, "recvbuff", b->R + nb);
  }
  if (isRoot || send != NULL) {
    gen_move(t, b->E, total, g_rank, 0, salt); /* on the root g_rank == root */
    check_elems(&c, "sendbuff (must be unchanged)", b->S, b->E, total, count);
    check_guard(&c, "sendbuff", b->S + total * t->size);
  }
  return 1;
}

/* Rank r sends NMSG messages to (r+1)%n and receives NMSG from (r-1+n)%n. Message k has count elements
   except message 1 (count/3). Messages of count 0: message 0 passes NULL on both sides, the others real
   buffers on both sides; with SWCCL_TEST_P2P_NULL_MIX=1, message 0 passes NULL as sendbuff only and
   message 1 NULL as recvbuff only (valid too, but the library mismatches it: see the file header). */
static int test_sendrecv(const type_info* t, size_t count, const buffers* b) {
  call_info c = { "swcclSend/swcclRecv", t, count, -1, NULL, -1 };
  const int next = (g_rank + 1) % g_nranks, prev = (g_rank - 1 + g_nranks) % g_nranks;
  const int recvFirst = (g_rank % 2 == 1) || (g_nranks % 2 == 1 && g_rank == g_nranks - 1);
  const size_t stride = count * t->size + GUARD_BYTES;
  size_t counts[NMSG];
  unsigned salt[NMSG];
  int k, phase;
  swcclResult_t res;

  for (k = 0; k < NMSG; k++) {
    counts[k] = k == 1 ? count / 3 : count;
    salt[k] = next_salt();
    poison(b->S + (size_t)k * stride, counts[k] * t->size);
    poison(b->R + (size_t)k * stride, counts[k] * t->size);
    gen_move(t, b->S + (size_t)k * stride, counts[k], g_rank, 0, salt[k]);
  }
  for (phase = 0; phase < 2; phase++) {
    int sending = (phase == 0) != recvFirst;
    for (k = 0; k < NMSG; k++) {
      unsigned char* p = (sending ? b->S : b->R) + (size_t)k * stride;
      if (counts[k] == 0 && (g_p2pNullMix ? k == (sending ? 0 : 1) : k == 0)) p = NULL;
      if (sending) {
        c.fn = "swcclSend";
        res = swcclSend(p, counts[k], t->type, next, g_comm, NULL);
      } else {
        c.fn = "swcclRecv";
        res = swcclRecv(p, counts[k], t->type, prev, g_comm, NULL);
      }
      if (res != swcclSuccess) {
        char what[64];
        snprintf(what, sizeof what, "message %d of %zu elements, peer %d", k, counts[k], sending ? next : prev);
        cfail(&c, "%s: returned %d (%s): %s", what, (int)res, str_or_null(swcclGetErrorString(res)),
              str_or_null(swcclGetLastError(g_comm)));
        return !is_fatal(res);
      }
    }
  }
  for (k = 0; k < NMSG; k++) {
    char what[96];
    c.fn = "swcclRecv";
    c.count = counts[k];
    gen_move(t, b->E, counts[k], prev, 0, salt[k]);
    snprintf(what, sizeof what, "message %d from rank %d", k, prev);
    check_elems(&c, what, b->R + (size_t)k * stride, b->E, counts[k], 0);
    check_guard(&c, what, b->R + (size_t)k * stride + counts[k] * t->size);
    c.fn = "swcclSend";
    gen_move(t, b->E, counts[k], g_rank, 0, salt[k]);
    snprintf(what, sizeof what, "sendbuff of message %d (must be unchanged)", k);
    check_elems(&c, what, b->S + (size_t)k * stride, b->E, counts[k], 0);
  }
  return 1;
}

/* ---------------------------------------------------------------------------------------------- */
/* Barrier                                                                                        */
/* ---------------------------------------------------------------------------------------------- */

/* Returns 0 if the communicator broke. Every rank must have published this round before any returns. */
static int barrier(const char* where) {
  swcclResult_t res;
  int j;
  g_round++;
  if (g_round == 1 && g_rank == g_nranks - 1) { /* be late once: the others must wait */
    struct timespec ts = { 0, 200 * 1000 * 1000 };
    nanosleep(&ts, NULL);
  }
  if (g_slots != NULL) g_slots[g_rank] = g_round;
  res = swcclBarrier(g_comm, NULL);
  if (res != swcclSuccess) {
    fail("swcclBarrier (%s, round %d) returned %d (%s): %s", where, g_round, (int)res,
         str_or_null(swcclGetErrorString(res)), str_or_null(swcclGetLastError(g_comm)));
    return !is_fatal(res);
  }
  if (g_slots != NULL)
    for (j = 0; j < g_nranks; j++)
      if (g_slots[j] < g_round) {
        fail("swcclBarrier (%s, round %d) returned before rank %d reached it (it is at round %d)", where, g_round, j,
             g_slots[j]);
        break;
      }
  return 1;
}

/* ---------------------------------------------------------------------------------------------- */
/* Misuse                                                                                         */
/* ---------------------------------------------------------------------------------------------- */

static void expect_invalid(const char* what, swcclResult_t res) {
  const char* last = swcclGetLastError(g_comm);
  if (res != swcclInvalidArgument) {
    fail("misuse %s: returned %d (%s), expected swcclInvalidArgument (%d)", what, (int)res,
         str_or_null(swcclGetErrorString(res)), (int)swcclInvalidArgument);
    return;
  }
  if (last == NULL || last[0] == '\0') fail("misuse %s: swcclGetLastError(comm) is empty", what);
  else if (g_verbose) printf("rank %d: %s -> %s\n", g_rank, what, last);
  last = swcclGetLastError(NULL);
  if (last == NULL || last[0] == '\0') fail("misuse %s: swcclGetLastError(NULL) is empty", what);
}

static void check_misuse(const buffers* b) {
  const int n = g_nranks;
  int roots[2], i;
  char what[128];
  roots[0] = -1;
  roots[1] = n;

  for (i = 0; i < 2; i++) {
    int root = roots[i];
    snprintf(what, sizeof what, "swcclBroadcast(root %d)", root);
    expect_invalid(what, swcclBroadcast(b->S, b->R, 5, swcclInt32, root, g_comm, NULL));
    snprintf(what, sizeof what, "swcclReduce(root %d)", root);
    expect_invalid(what, swcclReduce(b->S, b->R, 5, swcclInt32, swcclSum, root, g_comm, NULL));
    snprintf(what, sizeof what, "swcclGather(root %d)", root);
    expect_invalid(what, swcclGather(b->S, b->R, 5, swcclInt32, root, g_comm, NULL));
    snprintf(what, sizeof what, "swcclScatter(root %d)", root);
    expect_invalid(what, swcclScatter(b->S, b->R, 5, swcclInt32, root, g_comm, NULL));
  }
  expect_invalid("swcclAlltoAll(sendbuff == recvbuff)", swcclAlltoAll(b->S, b->S, 5, swcclInt32, g_comm, NULL));
  snprintf(what, sizeof what, "swcclSend(peer %d)", n);
  expect_invalid(what, swcclSend(b->S, 5, swcclInt32, n, g_comm, NULL));
  expect_invalid("swcclSend(peer -1)", swcclSend(b->S, 5, swcclInt32, -1, g_comm, NULL));
  snprintf(what, sizeof what, "swcclRecv(peer %d)", n);
  expect_invalid(what, swcclRecv(b->R, 5, swcclInt32, n, g_comm, NULL));
  expect_invalid("swcclAllGather(recvbuff NULL, sendcount 5)", swcclAllGather(b->S, NULL, 5, swcclInt32, g_comm, NULL));
  /* Misuse by one rank alone must not desynchronize the others either. */
  if (g_rank == 0)
    expect_invalid("swcclAlltoAll(sendbuff == recvbuff) on rank 0 only",
                   swcclAlltoAll(b->R, b->R, 3, swcclFloat, g_comm, NULL));
}

/* ---------------------------------------------------------------------------------------------- */
/* Streams                                                                                        */
/* ---------------------------------------------------------------------------------------------- */

#define STREAM_NAR 4                     /* all-reduces enqueued first */
#define STREAM_AR_COUNT ((size_t)100003) /* float, sum */
#define STREAM_BC_COUNT ((size_t)65537)  /* int32, root n-1 */
#define STREAM_AG_COUNT ((size_t)1001)   /* double, per rank */
#define STREAM_RS_COUNT ((size_t)777)    /* int32, sum, per rank */
#define STREAM_X_COUNT ((size_t)1000)    /* int32, sum: the all-reduce after the misuse */
#define STREAM_ERROR_MAX_SECONDS 6.0     /* the failing stream operation (timeout 1500 ms) */

/* A buffer of nbytes and a guard after it, all GUARD_BYTE; NULL if out of memory. */
static unsigned char* alloc_poisoned(size_t nbytes) {
  unsigned char* p = (unsigned char*)malloc(nbytes + GUARD_BYTES);
  if (p != NULL) poison(p, nbytes);
  return p;
}

/* Reports `what` returning got instead of `expected` (with comm's last error, or the thread's). */
static void result_fail(const char* what, swcclResult_t got, const char* expected, swcclComm_t comm) {
  const char* last = got != swcclSuccess ? swcclGetLastError(comm) : NULL; /* none of its own on success */
  fail("%s returned %d (%s), expected %s%s%s", what, (int)got, str_or_null(swcclGetErrorString(got)), expected,
       last != NULL && last[0] != '\0' ? ": " : "", last != NULL ? last : "");
}

static double seconds_since(const struct timespec* t0) {
  struct timespec t1;
  clock_gettime(CLOCK_MONOTONIC, &t1);
  return (double)(t1.tv_sec - t0->tv_sec) + (double)(t1.tv_nsec - t0->tv_nsec) / 1e9;
}

/* On one stream, in this order: STREAM_NAR all-reduces (float, sum), a broadcast (int32, root n-1,
   sendbuff NULL off the root), an all-gather (double) and a reduce-scatter (int32, sum), each on its own
   buffers; swcclStreamQuery right after (in progress or success), swcclStreamSynchronize, exact checks
   of every result, swcclStreamQuery == success. Then a misuse on the stream (sendbuff NULL) must fail
   at the call, enqueue nothing and leave the stream usable: an all-reduce on it succeeds. Then
   swcclStreamDestroy succeeds once and returns swcclInvalidUsage for the destroyed handle, and NULL
   streams are invalid arguments. Returns 0 if the communicator broke. */
static int test_streams(void) {
  const type_info* tf = &kTypes[1]; /* float */
  const type_info* ti = &kTypes[0]; /* int32 */
  const type_info* td = &kTypes[2]; /* double */
  const int n = g_nranks, root = g_nranks - 1, isRoot = g_rank == g_nranks - 1;
  const size_t agTotal = STREAM_AG_COUNT * (size_t)n, rsTotal = STREAM_RS_COUNT * (size_t)n;
  size_t eBytes = STREAM_AR_COUNT * 4;
  unsigned char *arS[STREAM_NAR], *arR[STREAM_NAR], *bcS, *bcR, *agS, *agR, *rsS, *rsR, *xS, *xR, *E;
  unsigned saltAr[STREAM_NAR], saltBc, saltAg, saltRs, saltX;
  swcclStream_t s = NULL;
  swcclResult_t res;
  int k, j, oom = 0;
  char what[128];

  if (STREAM_BC_COUNT * 4 > eBytes) eBytes = STREAM_BC_COUNT * 4;
  if (agTotal * 8 > eBytes) eBytes = agTotal * 8;
  if (rsTotal * 4 > eBytes) eBytes = rsTotal * 4;
  for (k = 0; k < STREAM_NAR; k++) {
    arS[k] = alloc_poisoned(STREAM_AR_COUNT * 4);
    arR[k] = alloc_poisoned(STREAM_AR_COUNT * 4);
    oom |= arS[k] == NULL || arR[k] == NULL;
  }
  bcS = alloc_poisoned(STREAM_BC_COUNT * 4);
  bcR = alloc_poisoned(STREAM_BC_COUNT * 4);
  agS = alloc_poisoned(STREAM_AG_COUNT * 8);
  agR = alloc_poisoned(agTotal * 8);
  rsS = alloc_poisoned(rsTotal * 4);
  rsR = alloc_poisoned(STREAM_RS_COUNT * 4);
  xS = alloc_poisoned(STREAM_X_COUNT * 4);
  xR = alloc_poisoned(STREAM_X_COUNT * 4);
  E = alloc_poisoned(eBytes);
  if (oom || !bcS || !bcR || !agS || !agR || !rsS || !rsR || !xS || !xR || !E) {
    fail("streams: out of memory");
    return 0; /* the other ranks cannot complete without this one */
  }

  res = swcclStreamCreate(&s);
  if (res != swcclSuccess || s == NULL) {
    result_fail("swcclStreamCreate(&stream)", res, "swcclSuccess and a stream", NULL);
    return 0;
  }

  /* Enqueue everything; every call must only validate and enqueue. */
  for (k = 0; k < STREAM_NAR; k++) {
    saltAr[k] = next_salt();
    gen_red(tf, swcclSum, arS[k], STREAM_AR_COUNT, g_rank, 0, saltAr[k]);
  }
  saltBc = next_salt();
  saltAg = next_salt();
  saltRs = next_salt();
  if (isRoot) gen_move(ti, bcS, STREAM_BC_COUNT, root, 0, saltBc);
  gen_move(td, agS, STREAM_AG_COUNT, g_rank, 0, saltAg);
  gen_red(ti, swcclSum, rsS, rsTotal, g_rank, 0, saltRs);
  for (k = 0; k < STREAM_NAR; k++) {
    res = swcclAllReduce(arS[k], arR[k], STREAM_AR_COUNT, swcclFloat, swcclSum, g_comm, s);
    if (res != swcclSuccess) {
      snprintf(what, sizeof what, "stream: swcclAllReduce #%d (float, count %zu, sum) enqueue", k, STREAM_AR_COUNT);
      result_fail(what, res, "swcclSuccess", g_comm);
      return 0; /* the stream may be running: keep the buffers, abort */
    }
  }
  res = swcclBroadcast(isRoot ? bcS : NULL, bcR, STREAM_BC_COUNT, swcclInt32, root, g_comm, s);
  if (res != swcclSuccess) {
    snprintf(what, sizeof what, "stream: swcclBroadcast (int32, count %zu, root %d) enqueue", STREAM_BC_COUNT, root);
    result_fail(what, res, "swcclSuccess", g_comm);
    return 0;
  }
  res = swcclAllGather(agS, agR, STREAM_AG_COUNT, swcclDouble, g_comm, s);
  if (res != swcclSuccess) {
    snprintf(what, sizeof what, "stream: swcclAllGather (double, sendcount %zu) enqueue", STREAM_AG_COUNT);
    result_fail(what, res, "swcclSuccess", g_comm);
    return 0;
  }
  res = swcclReduceScatter(rsS, rsR, STREAM_RS_COUNT, swcclInt32, swcclSum, g_comm, s);
  if (res != swcclSuccess) {
    snprintf(what, sizeof what, "stream: swcclReduceScatter (int32, recvcount %zu, sum) enqueue", STREAM_RS_COUNT);
    result_fail(what, res, "swcclSuccess", g_comm);
    return 0;
  }
  res = swcclStreamQuery(s);
  if (res != swcclInProgress && res != swcclSuccess)
    result_fail("stream: swcclStreamQuery right after enqueueing", res, "swcclInProgress or swcclSuccess", g_comm);
  res = swcclStreamSynchronize(s);
  if (res != swcclSuccess) {
    result_fail("stream: swcclStreamSynchronize after 7 operations", res, "swcclSuccess", g_comm);
    if (is_fatal(res)) return 0;
  }

  /* Every result, exactly. */
  for (k = 0; k < STREAM_NAR; k++) {
    call_info c = { "stream: swcclAllReduce", tf, STREAM_AR_COUNT, -1, "sum", 0 };
    snprintf(what, sizeof what, "recvbuff of all-reduce #%d", k);
    gen_red_expected(tf, swcclSum, E, STREAM_AR_COUNT, 0, saltAr[k]);
    check_elems(&c, what, arR[k], E, STREAM_AR_COUNT, 0);
    check_guard(&c, what, arR[k] + STREAM_AR_COUNT * 4);
    snprintf(what, sizeof what, "sendbuff of all-reduce #%d (must be unchanged)", k);
    gen_red(tf, swcclSum, E, STREAM_AR_COUNT, g_rank, 0, saltAr[k]);
    check_elems(&c, what, arS[k], E, STREAM_AR_COUNT, 0);
  }
  {
    call_info c = { "stream: swcclBroadcast", ti, STREAM_BC_COUNT, root, NULL, 0 };
    gen_move(ti, E, STREAM_BC_COUNT, root, 0, saltBc);
    check_elems(&c, "recvbuff", bcR, E, STREAM_BC_COUNT, 0);
    check_guard(&c, "recvbuff", bcR + STREAM_BC_COUNT * 4);
    if (isRoot) check_elems(&c, "sendbuff (must be unchanged)", bcS, E, STREAM_BC_COUNT, 0);
  }
  {
    call_info c = { "stream: swcclAllGather", td, STREAM_AG_COUNT, -1, NULL, 0 };
    for (j = 0; j < n; j++) gen_move(td, E + (size_t)j * STREAM_AG_COUNT * 8, STREAM_AG_COUNT, j, 0, saltAg);
    check_elems(&c, "recvbuff", agR, E, agTotal, STREAM_AG_COUNT);
    check_guard(&c, "recvbuff", agR + agTotal * 8);
    gen_move(td, E, STREAM_AG_COUNT, g_rank, 0, saltAg);
    check_elems(&c, "sendbuff (must be unchanged)", agS, E, STREAM_AG_COUNT, 0);
  }
  {
    call_info c = { "stream: swcclReduceScatter", ti, STREAM_RS_COUNT, -1, "sum", 0 };
    gen_red_expected(ti, swcclSum, E, STREAM_RS_COUNT, (size_t)g_rank * STREAM_RS_COUNT, saltRs);
    check_elems(&c, "recvbuff", rsR, E, STREAM_RS_COUNT, 0);
    check_guard(&c, "recvbuff", rsR + STREAM_RS_COUNT * 4);
    gen_red(ti, swcclSum, E, rsTotal, g_rank, 0, saltRs);
    check_elems(&c, "sendbuff (must be unchanged)", rsS, E, rsTotal, STREAM_RS_COUNT);
  }
  res = swcclStreamQuery(s);
  if (res != swcclSuccess) result_fail("stream: swcclStreamQuery after synchronize", res, "swcclSuccess", g_comm);

  /* Misuse with a stream: rejected at the call, nothing enqueued, the stream stays usable. */
  expect_invalid("swcclAllReduce(sendbuff NULL, count 5) on a stream",
                 swcclAllReduce(NULL, xR, 5, swcclFloat, swcclSum, g_comm, s));
  res = swcclStreamQuery(s);
  if (res != swcclSuccess)
    result_fail("stream: swcclStreamQuery after a rejected call (nothing enqueued)", res, "swcclSuccess", g_comm);
  saltX = next_salt();
  gen_red(ti, swcclSum, xS, STREAM_X_COUNT, g_rank, 0, saltX);
  res = swcclAllReduce(xS, xR, STREAM_X_COUNT, swcclInt32, swcclSum, g_comm, s);
  if (res != swcclSuccess) {
    result_fail("stream: swcclAllReduce (int32, count 1000, sum) enqueue after the misuse", res, "swcclSuccess", g_comm);
    return 0;
  }
  res = swcclStreamSynchronize(s);
  if (res != swcclSuccess) {
    result_fail("stream: swcclStreamSynchronize after the misuse and one all-reduce", res, "swcclSuccess", g_comm);
    if (is_fatal(res)) return 0;
  } else {
    call_info c = { "stream: swcclAllReduce after the misuse", ti, STREAM_X_COUNT, -1, "sum", 0 };
    gen_red_expected(ti, swcclSum, E, STREAM_X_COUNT, 0, saltX);
    check_elems(&c, "recvbuff", xR, E, STREAM_X_COUNT, 0);
    check_guard(&c, "recvbuff", xR + STREAM_X_COUNT * 4);
  }

  /* Destroy once; the dead handle and NULL are rejected without a crash. */
  res = swcclStreamDestroy(s);
  if (res != swcclSuccess) result_fail("swcclStreamDestroy(stream)", res, "swcclSuccess", NULL);
  fflush(stdout); /* a crash below must not lose the lines above */
  res = swcclStreamDestroy(s);
  if (res != swcclInvalidUsage) result_fail("swcclStreamDestroy(stream) a second time", res, "swcclInvalidUsage", NULL);
  res = swcclStreamSynchronize(NULL);
  if (res != swcclInvalidArgument) result_fail("swcclStreamSynchronize(NULL)", res, "swcclInvalidArgument", NULL);
  res = swcclStreamQuery(NULL);
  if (res != swcclInvalidArgument) result_fail("swcclStreamQuery(NULL)", res, "swcclInvalidArgument", NULL);
  res = swcclStreamCreate(NULL);
  if (res != swcclInvalidArgument) result_fail("swcclStreamCreate(NULL)", res, "swcclInvalidArgument", NULL);

  for (k = 0; k < STREAM_NAR; k++) { free(arS[k]); free(arR[k]); }
  free(bcS); free(bcR); free(agS); free(agR); free(rsS); free(rsR); free(xS); free(xR); free(E);
  return 1;
}

/* An error while a stream runs an operation is reported by swcclStreamSynchronize: on a communicator
   made for this (timeout 1500 ms), rank 1 enqueues an all-reduce of 2000 elements, the others of 1000.
   Synchronize must return an error (not success, not swcclInvalidArgument) within
   STREAM_ERROR_MAX_SECONDS, with a message in swcclGetLastError(NULL); then the communicator is
   aborted and the stream destroyed (the error was already reported: swcclSuccess). Needs 2 ranks.
   Never breaks g_comm: returns 1. */
static int test_stream_error(swcclUniqueId id) {
  swcclConfig_t cfg = SWCCL_CONFIG_INITIALIZER;
  swcclComm_t comm = NULL;
  swcclStream_t s = NULL;
  swcclResult_t res;
  const size_t count = g_rank == 1 ? 2000 : 1000;
  const type_info* tf = &kTypes[1];
  unsigned char *S, *R;
  struct timespec t0;
  double elapsed;
  const char* last;
  char what[160];

  cfg.timeoutMs = 1500;
  cfg.commName = "stream-error";
  res = swcclCommInitRankConfig(&comm, g_nranks, id, g_rank, &cfg);
  if (res != swcclSuccess || comm == NULL) {
    result_fail("stream error: swcclCommInitRankConfig(timeoutMs 1500)", res, "swcclSuccess", NULL);
    return 1;
  }
  res = swcclStreamCreate(&s);
  if (res != swcclSuccess || s == NULL) {
    result_fail("stream error: swcclStreamCreate", res, "swcclSuccess and a stream", NULL);
    swcclCommAbort(comm);
    return 1;
  }
  S = alloc_poisoned(2000 * 4);
  R = alloc_poisoned(2000 * 4);
  if (S == NULL || R == NULL) {
    fail("stream error: out of memory");
    swcclCommAbort(comm);
    swcclStreamDestroy(s);
    free(S);
    free(R);
    return 1;
  }
  gen_red(tf, swcclSum, S, count, g_rank, 0, next_salt());

  snprintf(what, sizeof what, "stream error: swcclAllReduce(float, count %zu on rank %d, 1000 elsewhere) enqueue",
           count, g_rank);
  res = swcclAllReduce(S, R, count, swcclFloat, swcclSum, comm, s);
  if (res != swcclSuccess) result_fail(what, res, "swcclSuccess (arguments are valid on this rank)", comm);

  clock_gettime(CLOCK_MONOTONIC, &t0);
  res = swcclStreamSynchronize(s);
  last = swcclGetLastError(NULL);
  elapsed = seconds_since(&t0);
  snprintf(what, sizeof what,
           "stream error: swcclStreamSynchronize after an all-reduce whose count differs on rank 1 (here %zu)", count);
  if (res == swcclSuccess || res == swcclInvalidArgument || res == swcclInProgress)
    result_fail(what, res, "an error other than swcclInvalidArgument", comm);
  else if (last == NULL || last[0] == '\0')
    fail("%s returned %d (%s), but swcclGetLastError(NULL) is empty", what, (int)res,
         str_or_null(swcclGetErrorString(res)));
  else if (g_verbose)
    printf("rank %d: stream error -> %d (%s) after %.2f s: %s\n", g_rank, (int)res,
           str_or_null(swcclGetErrorString(res)), elapsed, last);
  if (elapsed > STREAM_ERROR_MAX_SECONDS)
    fail("%s took %.1f s (timeoutMs 1500; at most %.0f s expected)", what, elapsed, STREAM_ERROR_MAX_SECONDS);

  res = swcclCommAbort(comm);
  if (res != swcclSuccess) result_fail("stream error: swcclCommAbort", res, "swcclSuccess", NULL);
  res = swcclStreamDestroy(s);
  if (res != swcclSuccess)
    result_fail("stream error: swcclStreamDestroy (its error was already reported by synchronize)", res,
                "swcclSuccess", NULL);
  free(S);
  free(R);
  return 1;
}

/* ---------------------------------------------------------------------------------------------- */
/* Groups                                                                                         */
/* ---------------------------------------------------------------------------------------------- */

#define GROUP_P2P_COUNT ((size_t)262144) /* floats: 1 MiB, far above the eager size */
#define GROUP_AR_COUNT ((size_t)33)      /* int64, sum */
#define GROUP_BC_COUNT ((size_t)4099)    /* int32 */
#define GROUP_NEST_COUNT ((size_t)100000) /* floats, nested group */

/* Element i of rank r's input to the int64 all-reduce: needs more than 32 bits. */
static long long group_i64(int r, size_t i, unsigned salt) {
  return ((long long)(r + 1) << 40) + (long long)i * 1000003LL - (long long)r * 7 + (long long)salt;
}

/* In one group: rank r sends GROUP_P2P_COUNT floats to r+1 and to r-1 (in that order) and receives from
   r-1 and from r+1 (in that order), plus an int64 all-reduce and an int32 broadcast (root 1 % n). With 2
   ranks both neighbours are the other rank: its first send matches this rank's first receive, so the
   expected data is the same formula; with 1 rank everything goes to the rank itself. Then a nested group
   (a send/recv pair; nothing may run at the inner end) and swcclGroupEnd without a group.
   Returns 0 if the communicator broke. */
static int test_groups(void) {
  const type_info* tf = &kTypes[1];
  const type_info* ti = &kTypes[0];
  const int n = g_nranks, next = (g_rank + 1) % g_nranks, prev = (g_rank - 1 + g_nranks) % g_nranks;
  const int bcRoot = 1 % g_nranks, isRoot = g_rank == 1 % g_nranks;
  const size_t pb = GROUP_P2P_COUNT * 4;
  unsigned char *toNext, *toPrev, *fromPrev, *fromNext, *arS, *arR, *bcS, *bcR, *nS, *nR, *E;
  unsigned saltNext, saltPrev, saltAr, saltBc, saltNest;
  swcclResult_t res, r1, r2, r3, r4, r5, r6;
  size_t i;
  int j;

  res = swcclGroupEnd();
  if (res != swcclInvalidUsage) result_fail("swcclGroupEnd without swcclGroupStart", res, "swcclInvalidUsage", NULL);

  toNext = alloc_poisoned(pb);
  toPrev = alloc_poisoned(pb);
  fromPrev = alloc_poisoned(pb);
  fromNext = alloc_poisoned(pb);
  arS = alloc_poisoned(GROUP_AR_COUNT * 8);
  arR = alloc_poisoned(GROUP_AR_COUNT * 8);
  bcS = alloc_poisoned(GROUP_BC_COUNT * 4);
  bcR = alloc_poisoned(GROUP_BC_COUNT * 4);
  nS = alloc_poisoned(GROUP_NEST_COUNT * 4);
  nR = alloc_poisoned(GROUP_NEST_COUNT * 4);
  E = alloc_poisoned(pb);
  if (!toNext || !toPrev || !fromPrev || !fromNext || !arS || !arR || !bcS || !bcR || !nS || !nR || !E) {
    fail("groups: out of memory");
    return 0;
  }
  saltNext = next_salt();
  saltPrev = next_salt();
  saltAr = next_salt();
  saltBc = next_salt();
  gen_move(tf, toNext, GROUP_P2P_COUNT, g_rank, 0, saltNext);
  gen_move(tf, toPrev, GROUP_P2P_COUNT, g_rank, 0, saltPrev);
  for (i = 0; i < GROUP_AR_COUNT; i++) {
    long long v = group_i64(g_rank, i, saltAr);
    memcpy(arS + i * 8, &v, 8);
  }
  if (isRoot) gen_move(ti, bcS, GROUP_BC_COUNT, bcRoot, 0, saltBc);

  res = swcclGroupStart();
  if (res != swcclSuccess) result_fail("swcclGroupStart", res, "swcclSuccess", NULL);
  r1 = swcclSend(toNext, GROUP_P2P_COUNT, swcclFloat, next, g_comm, NULL);
  r2 = swcclSend(toPrev, GROUP_P2P_COUNT, swcclFloat, prev, g_comm, NULL);
  r3 = swcclRecv(fromPrev, GROUP_P2P_COUNT, swcclFloat, prev, g_comm, NULL);
  r4 = swcclRecv(fromNext, GROUP_P2P_COUNT, swcclFloat, next, g_comm, NULL);
  r5 = swcclAllReduce(arS, arR, GROUP_AR_COUNT, swcclInt64, swcclSum, g_comm, NULL);
  r6 = swcclBroadcast(isRoot ? bcS : NULL, bcR, GROUP_BC_COUNT, swcclInt32, bcRoot, g_comm, NULL);
  if (r1 != swcclSuccess || r2 != swcclSuccess || r3 != swcclSuccess || r4 != swcclSuccess || r5 != swcclSuccess ||
      r6 != swcclSuccess) {
    fail("group: recording returned send->next %d, send->prev %d, recv<-prev %d, recv<-next %d, allreduce %d, "
         "broadcast %d (expected all %d): %s", (int)r1, (int)r2, (int)r3, (int)r4, (int)r5, (int)r6,
         (int)swcclSuccess, str_or_null(swcclGetLastError(g_comm)));
    return 0; /* the group cannot match the other ranks' groups */
  }
  res = swcclGroupEnd();
  if (res != swcclSuccess) {
    result_fail("group (2 sends and 2 receives of 1 MiB, int64 all-reduce, int32 broadcast): swcclGroupEnd", res,
                "swcclSuccess", g_comm);
    if (is_fatal(res)) return 0;
  }

  {
    call_info c = { "group: swcclSend/swcclRecv", tf, GROUP_P2P_COUNT, -1, NULL, -1 };
    char what[96];
    /* prev sent its "to next" message to this rank; next its "to prev" message. */
    gen_move(tf, E, GROUP_P2P_COUNT, prev, 0, saltNext);
    snprintf(what, sizeof what, "first receive (from rank %d, its send to rank %d)", prev, (prev + 1) % n);
    check_elems(&c, what, fromPrev, E, GROUP_P2P_COUNT, 0);
    check_guard(&c, what, fromPrev + pb);
    gen_move(tf, E, GROUP_P2P_COUNT, next, 0, saltPrev);
    snprintf(what, sizeof what, "second receive (from rank %d, its send to rank %d)", next, (next - 1 + n) % n);
    check_elems(&c, what, fromNext, E, GROUP_P2P_COUNT, 0);
    check_guard(&c, what, fromNext + pb);
    gen_move(tf, E, GROUP_P2P_COUNT, g_rank, 0, saltNext);
    check_elems(&c, "sendbuff to the next rank (must be unchanged)", toNext, E, GROUP_P2P_COUNT, 0);
    gen_move(tf, E, GROUP_P2P_COUNT, g_rank, 0, saltPrev);
    check_elems(&c, "sendbuff to the previous rank (must be unchanged)", toPrev, E, GROUP_P2P_COUNT, 0);
  }
  for (i = 0; i < GROUP_AR_COUNT; i++) {
    long long got, want = 0;
    for (j = 0; j < n; j++) want += group_i64(j, i, saltAr);
    memcpy(&got, arR + i * 8, 8);
    if (got != want) {
      fail("group: swcclAllReduce type=int64 count=%zu op=sum: recvbuff element %zu: got %lld, expected %lld",
           GROUP_AR_COUNT, i, got, want);
      break;
    }
  }
  for (i = 0; i < GUARD_BYTES; i++)
    if (arR[GROUP_AR_COUNT * 8 + i] != GUARD_BYTE) {
      fail("group: swcclAllReduce type=int64 count=%zu op=sum: wrote past the end of recvbuff (guard byte %zu is 0x%02x)",
           GROUP_AR_COUNT, i, (unsigned)arR[GROUP_AR_COUNT * 8 + i]);
      break;
    }
  {
    call_info c = { "group: swcclBroadcast", ti, GROUP_BC_COUNT, bcRoot, NULL, 0 };
    gen_move(ti, E, GROUP_BC_COUNT, bcRoot, 0, saltBc);
    check_elems(&c, "recvbuff", bcR, E, GROUP_BC_COUNT, 0);
    check_guard(&c, "recvbuff", bcR + GROUP_BC_COUNT * 4);
  }

  /* Nested: only the outer end runs the pair. */
  saltNest = next_salt();
  gen_move(tf, nS, GROUP_NEST_COUNT, g_rank, 0, saltNest);
  r1 = swcclGroupStart();
  r2 = swcclGroupStart();
  r3 = swcclSend(nS, GROUP_NEST_COUNT, swcclFloat, next, g_comm, NULL);
  r4 = swcclRecv(nR, GROUP_NEST_COUNT, swcclFloat, prev, g_comm, NULL);
  if (r1 != swcclSuccess || r2 != swcclSuccess || r3 != swcclSuccess || r4 != swcclSuccess) {
    fail("nested group: swcclGroupStart %d, swcclGroupStart %d, swcclSend %d, swcclRecv %d (expected all %d): %s",
         (int)r1, (int)r2, (int)r3, (int)r4, (int)swcclSuccess, str_or_null(swcclGetLastError(g_comm)));
    return 0;
  }
  res = swcclGroupEnd();
  if (res != swcclSuccess) result_fail("nested group: inner swcclGroupEnd", res, "swcclSuccess", g_comm);
  {
    call_info c = { "nested group: swcclRecv", tf, GROUP_NEST_COUNT, -1, NULL, -1 };
    check_untouched(&c, "recvbuff after the inner swcclGroupEnd (only the outer end runs the group)", nR,
                    GROUP_NEST_COUNT * 4);
  }
  res = swcclGroupEnd();
  if (res != swcclSuccess) {
    result_fail("nested group: outer swcclGroupEnd", res, "swcclSuccess", g_comm);
    if (is_fatal(res)) return 0;
  } else {
    call_info c = { "nested group: swcclRecv", tf, GROUP_NEST_COUNT, -1, NULL, -1 };
    char what[64];
    gen_move(tf, E, GROUP_NEST_COUNT, prev, 0, saltNest);
    snprintf(what, sizeof what, "recvbuff (from rank %d)", prev);
    check_elems(&c, what, nR, E, GROUP_NEST_COUNT, 0);
    check_guard(&c, what, nR + GROUP_NEST_COUNT * 4);
  }
  res = swcclGroupEnd();
  if (res != swcclInvalidUsage)
    result_fail("swcclGroupEnd after the nested group was closed", res, "swcclInvalidUsage", NULL);

  free(toNext); free(toPrev); free(fromPrev); free(fromNext); free(arS); free(arR);
  free(bcS); free(bcR); free(nS); free(nR); free(E);
  return 1;
}

/* ---------------------------------------------------------------------------------------------- */
/* Child                                                                                          */
/* ---------------------------------------------------------------------------------------------- */

static void abort_and_exit(void) {
  printf("rank %d: communicator broken, aborting it\n", g_rank);
  swcclCommAbort(g_comm);
  child_exit(1);
}

static void run_rank(int rank, int nranks, swcclUniqueId id, swcclUniqueId errId) {
  swcclResult_t res, asyncErr = swcclSuccess;
  buffers b;
  size_t bytes = (size_t)(nranks > NMSG ? nranks : NMSG) * (MAX_COUNT * 8 + GUARD_BYTES) + GUARD_BYTES;
  size_t ci, ti, oi;
  int inplace, alive = 1, count = -1, ri;
  const type_info* int32 = &kTypes[0];

  g_rank = rank;
  g_nranks = nranks;

  res = swcclCommInitRank(&g_comm, nranks, id, rank);
  if (res != swcclSuccess || g_comm == NULL) {
    fail("swcclCommInitRank returned %d (%s): %s", (int)res, str_or_null(swcclGetErrorString(res)),
         str_or_null(swcclGetLastError(NULL)));
    child_exit(1);
  }
  res = swcclCommCount(g_comm, &count);
  if (res != swcclSuccess || count != nranks)
    fail("swcclCommCount returned %d, count %d (expected %d)", (int)res, count, nranks);
  if (g_verbose) printf("rank %d: communicator ready\n", rank);

  b.S = (unsigned char*)malloc(bytes);
  b.R = (unsigned char*)malloc(bytes);
  b.E = (unsigned char*)malloc(bytes);
  if (b.S == NULL || b.R == NULL || b.E == NULL) {
    fail("out of memory");
    swcclCommAbort(g_comm);
    child_exit(1);
  }

#define RUN(expr) do { if (alive) alive = (expr); } while (0)
#define SECTION(name) do { \
    if (alive) alive = barrier(name); \
    if (!alive) abort_and_exit(); \
    if (g_verbose) printf("rank %d: %s\n", g_rank, name); \
  } while (0)

  SECTION("start");
  for (ci = 0; ci < NCOUNTS; ci++)
    for (ti = 0; ti < NTYPES; ti++)
      for (ri = 0; ri < 2; ri++)
        for (inplace = 0; inplace < 2; inplace++)
          RUN(test_broadcast(&kTypes[ti], kCounts[ci], ri ? nranks - 1 : 0, inplace, &b));

  SECTION("broadcast done");
  for (ci = 0; ci < NCOUNTS; ci++)
    for (ti = 0; ti < NTYPES; ti++)
      for (oi = 0; oi < NOPS; oi++) {
        if (kOps[oi].op == swcclProd && &kTypes[ti] != int32) continue;
        for (ri = 0; ri < 2; ri++)
          for (inplace = 0; inplace < 2; inplace++)
            RUN(test_reduce(&kTypes[ti], &kOps[oi], kCounts[ci], ri ? nranks - 1 : 0, inplace, &b));
      }

  SECTION("reduce done");
  for (ci = 0; ci < NCOUNTS; ci++)
    for (ti = 0; ti < NTYPES; ti++)
      for (inplace = 0; inplace < 2; inplace++)
        RUN(test_allgather(&kTypes[ti], kCounts[ci], inplace, &b));

  SECTION("allgather done");
  for (ci = 0; ci < NCOUNTS; ci++)
    for (ti = 0; ti < NTYPES; ti++)
      for (oi = 0; oi < NOPS; oi++) {
        if (kOps[oi].op == swcclProd && &kTypes[ti] != int32) continue;
        for (inplace = 0; inplace < 2; inplace++)
          RUN(test_reducescatter(&kTypes[ti], &kOps[oi], kCounts[ci], inplace, &b));
      }

  SECTION("reducescatter done");
  for (ci = 0; ci < NCOUNTS; ci++)
    for (ti = 0; ti < NTYPES; ti++)
      RUN(test_alltoall(&kTypes[ti], kCounts[ci], &b));

  SECTION("alltoall done");
  for (ci = 0; ci < NCOUNTS; ci++)
    for (ti = 0; ti < NTYPES; ti++)
      for (ri = 0; ri < 2; ri++)
        for (inplace = 0; inplace < 2; inplace++)
          RUN(test_gather(&kTypes[ti], kCounts[ci], ri ? nranks - 1 : 0, inplace, &b));

  SECTION("gather done");
  for (ci = 0; ci < NCOUNTS; ci++)
    for (ti = 0; ti < NTYPES; ti++)
      for (ri = 0; ri < 2; ri++)
        for (inplace = 0; inplace < 2; inplace++)
          RUN(test_scatter(&kTypes[ti], kCounts[ci], ri ? nranks - 1 : 0, inplace, &b));

  SECTION("scatter done");
  if (nranks >= 2) { /* with one rank the peer would be the rank itself, which needs a group */
    for (ci = 0; ci < NCOUNTS; ci++)
      for (ti = 0; ti < NTYPES; ti++)
        RUN(test_sendrecv(&kTypes[ti], kCounts[ci], &b));
  }

  SECTION("send/recv done");
  check_misuse(&b);
  SECTION("after misuse");
  {
    /* Still usable after misuse: a small all-gather. */
    RUN(test_allgather(int32, 7, 0, &b));
    if (!alive) abort_and_exit();
  }
  SECTION("streams");
  RUN(test_streams());
  SECTION("groups");
  RUN(test_groups());
  SECTION("stream error");
  if (nranks >= 2) RUN(test_stream_error(errId));
  res = swcclCommGetAsyncError(g_comm, &asyncErr);
  if (res != swcclSuccess || asyncErr != swcclSuccess)
    fail("swcclCommGetAsyncError returned %d, asyncError %d (expected success, success)", (int)res, (int)asyncErr);
  SECTION("end");
#undef RUN
#undef SECTION

  res = swcclCommDestroy(g_comm);
  if (res != swcclSuccess)
    fail("swcclCommDestroy returned %d (%s): %s", (int)res, str_or_null(swcclGetErrorString(res)),
         str_or_null(swcclGetLastError(NULL)));
  free(b.S);
  free(b.R);
  free(b.E);
  if (g_verbose || g_failures) printf("rank %d: %d failure(s)\n", rank, g_failures);
  child_exit(g_failures ? 1 : 0);
}

/* ---------------------------------------------------------------------------------------------- */
/* Parent                                                                                         */
/* ---------------------------------------------------------------------------------------------- */


/* Memory shared by the children (one int per rank), from an unlinked temporary file. NULL on failure. */
static volatile int* shared_slots(void) {
  char path[256];
  const char* dir = getenv("TMPDIR");
  size_t len = MAX_RANKS * sizeof(int);
  void* p;
  int fd;
  snprintf(path, sizeof path, "%s/swccl-collectives.XXXXXX", dir && dir[0] ? dir : "/tmp");
  fd = mkstemp(path);
  if (fd < 0) return NULL;
  unlink(path);
  if (ftruncate(fd, (off_t)len) != 0) { close(fd); return NULL; }
  p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  if (p == MAP_FAILED) return NULL;
  memset(p, 0, len);
  return (volatile int*)p;
}

typedef struct { swcclUniqueId id, errId; } rank_ids;
static void rank_entry(int rank, int nranks, void* arg) {
  rank_ids* ids = (rank_ids*)arg;
  run_rank(rank, nranks, ids->id, ids->errId);
}

int main(int argc, char** argv) {
  int nranks = 3, parentFailed = 0;
  swcclUniqueId id, errId;
  swcclResult_t res;
  const char* verbose = getenv("SWCCL_TEST_VERBOSE");
  const char* nullMix = getenv("SWCCL_TEST_P2P_NULL_MIX");

  g_verbose = verbose != NULL && verbose[0] != '\0' && strcmp(verbose, "0") != 0;
  g_p2pNullMix = nullMix == NULL || nullMix[0] == '\0' || strcmp(nullMix, "0") != 0;
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
  /* Before the library reads its environment. A hang then fails with swcclTimeout and a message. */
  setenv("SWCCL_SOCKET_IFNAME", "lo", 0);
  setenv("SWCCL_TIMEOUT_MS", "30000", 0);

  g_slots = shared_slots();
  if (g_slots == NULL) {
    printf("parent: FAIL could not map shared memory for the barrier check: %s\n", strerror(errno));
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

  /* The communicator of the stream-error section (test_stream_error), with its own rendezvous. */
  memset(&errId, 0, sizeof errId);
  if (nranks >= 2) {
    res = swcclGetUniqueId(&errId);
    if (res != swcclSuccess) {
      printf("parent: FAIL swcclGetUniqueId (second communicator) returned %d (%s): %s\n", (int)res,
             str_or_null(swcclGetErrorString(res)), str_or_null(swcclGetLastError(NULL)));
      printf("0 passed, %d failed\n", nranks);
      return 1;
    }
  }

  {
    static rank_ids ids;
    ids.id = id;
    ids.errId = errId;
    printf("collectives_test: nranks=%d\n", nranks);
    return fork_ranks(nranks, rank_entry, &ids, parentFailed);
  }
}
