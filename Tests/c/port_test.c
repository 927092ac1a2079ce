/* Tests/c/port_test.c - NCCL habits that must port by renaming: several swcclCommInitRank calls in one
 * group from one thread (NCCL's example 3), swcclBcast, swcclConfig_t's NCCL fields, and nonblocking
 * communicators (blocking = 0).
 *
 *   usage: port_test NRANKS     (2..16; the in-process part runs first, then NRANKS forked ranks)
 *
 * In process:
 *   group init  one thread initialises 4 ranks of one communicator with swcclCommInitRank inside
 *               swcclGroupStart/End (nested once): swcclGroupEnd returns swcclSuccess, each handle says
 *               its rank; an all-reduce and a swcclBcast (root 2) on all four in one group are exact.
 *               A group whose two inits claim the same rank: swcclGroupEnd returns swcclInvalidUsage,
 *               the handles refuse use with that error, and destroying them succeeds.
 *   bcast       swcclBcast with a NULL buffer and count > 0: swcclInvalidArgument.
 *   config      on 1-rank communicators: netName "Socket" and "IB"-free runs work, an unknown netName,
 *               netName with transports, blocking 2 and splitShare 5 are swcclInvalidArgument (message
 *               names the field); cgaClusterSize/minCTAs/maxCTAs/splitShare = 1 are accepted; a struct
 *               of the older, shorter size with garbage after it works (blocking by default).
 * Forked ranks (nonblocking, blocking = 0):
 *   init        swcclCommInitRankConfig returns swcclInProgress; while the other ranks have not called it
 *               (they wait for rank 0's word on a pipe) swcclCommGetAsyncError says swcclInProgress and
 *               an all-reduce or swcclCommCount on it is swcclInvalidArgument (NCCL: use before the
 *               previous call returned swcclSuccess); then the state becomes swcclSuccess.
 *   background  6 all-reduces and a swcclBcast with stream NULL return swcclInProgress and run in order:
 *               once swcclCommGetAsyncError says swcclSuccess every buffer is exact; a group of one
 *               all-reduce returns swcclInProgress from swcclGroupEnd likewise.
 *   split       swcclCommSplit (config NULL: nonblocking like its parent) returns swcclInProgress; the
 *               halves become ready and an all-reduce on each is exact; swcclCommFinalize returns
 *               swcclInProgress and then swcclSuccess.
 *   failure     an all-reduce where rank 1 passes another count returns swcclInProgress, then
 *               swcclCommGetAsyncError reports an error and swcclGetLastError(comm) names a rank.
 * Every poll has a deadline (30 s). Prints "N passed, M failed" (ranks, plus the in-process part as
 * one) last. */
#define MAX_RANKS 16
#define MAX_FAIL_LINES 20
#define TIMEOUT_SECONDS 150
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "swccl.h"
#include "fork_ranks.h"

static swcclUniqueId g_id;
static int g_go[2];

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

/* Polls swcclCommGetAsyncError until it is not swcclInProgress (30 s deadline); returns the state. */
static swcclResult_t settle(swcclComm_t comm, const char* what) {
  double end = now_s() + 30;
  swcclResult_t state = swcclInProgress;
  while (now_s() < end) {
    swcclResult_t r = swcclCommGetAsyncError(comm, &state);
    if (r != swcclSuccess) { fail("%s: swcclCommGetAsyncError returned %d (%s)", what, (int)r, swcclGetLastError(NULL)); return r; }
    if (state != swcclInProgress) return state;
    { struct timespec d = { 0, 200000 }; nanosleep(&d, NULL); }
  }
  fail("%s: still in progress after 30 s", what);
  return swcclInProgress;
}

/* ---- in process ---------------------------------------------------------------------------- */

static void group_init(void) {
  enum { N = 4, COUNT = 5000 };
  swcclUniqueId id;
  swcclComm_t comms[N], twice[2];
  swcclConfig_t cfg = SWCCL_CONFIG_INITIALIZER;
  static float x[N][COUNT], b[N][COUNT];
  int r, i, n;
  double t0;
  EXPECT_RESULT(swcclGetUniqueId(&id), swcclSuccess);
  t0 = now_s();
  EXPECT_RESULT(swcclGroupStart(), swcclSuccess);
  EXPECT_RESULT(swcclGroupStart(), swcclSuccess); /* nested: only the outermost end runs them */
  for (r = 0; r < N; r++) {
    comms[r] = NULL;
    EXPECT_RESULT(swcclCommInitRank(&comms[r], N, id, r), swcclSuccess);
    if (!comms[r]) fail("group init: no handle for rank %d at the call", r);
  }
  EXPECT_RESULT(swcclGroupEnd(), swcclSuccess);
  EXPECT_RESULT(swcclGroupEnd(), swcclSuccess);
  if (g_verbose) printf("group init of %d ranks: %.3f s\n", N, now_s() - t0);
  for (r = 0; r < N; r++) {
    int rk = -1;
    EXPECT_RESULT(swcclCommUserRank(comms[r], &rk), swcclSuccess);
    EXPECT_RESULT(swcclCommCount(comms[r], &n), swcclSuccess);
    if (rk != r || n != N) fail("group init: handle %d says rank %d of %d", r, rk, n);
    for (i = 0; i < COUNT; i++) { x[r][i] = (float)(r + i % 50); b[r][i] = (float)(r * 1000 + i % 77); }
  }
  EXPECT_RESULT(swcclGroupStart(), swcclSuccess);
  for (r = 0; r < N; r++) {
    EXPECT_RESULT(swcclAllReduce(x[r], x[r], COUNT, swcclFloat, swcclSum, comms[r], NULL), swcclSuccess);
    EXPECT_RESULT(swcclBcast(b[r], COUNT, swcclFloat, 2, comms[r], NULL), swcclSuccess);
  }
  EXPECT_RESULT(swcclGroupEnd(), swcclSuccess);
  for (r = 0; r < N; r++)
    for (i = 0; i < COUNT; i++) {
      if (x[r][i] != (float)(N * (N - 1) / 2 + N * (i % 50))) { fail("group init: allreduce rank %d [%d] = %g", r, i, x[r][i]); break; }
      if (b[r][i] != (float)(2000 + i % 77)) { fail("group init: swcclBcast rank %d [%d] = %g", r, i, b[r][i]); break; }
    }
  EXPECT_RESULT(swcclBcast(NULL, 4, swcclFloat, 0, comms[0], NULL), swcclInvalidArgument);
  for (r = 0; r < N; r++) EXPECT_RESULT(swcclCommDestroy(comms[r]), swcclSuccess);

  /* Two inits claim rank 0: the group fails, each handle answers with the error. */
  EXPECT_RESULT(swcclGetUniqueId(&id), swcclSuccess);
  cfg.timeoutMs = 5000;
  EXPECT_RESULT(swcclGroupStart(), swcclSuccess);
  EXPECT_RESULT(swcclCommInitRankConfig(&twice[0], 2, id, 0, &cfg), swcclSuccess);
  EXPECT_RESULT(swcclCommInitRankConfig(&twice[1], 2, id, 0, &cfg), swcclSuccess);
  EXPECT_RESULT(swcclGroupEnd(), swcclInvalidUsage);
  for (r = 0; r < 2; r++) {
    swcclResult_t state = swcclSuccess;
    if (!twice[r]) { fail("failed group init: handle %d is NULL", r); continue; }
    EXPECT_RESULT(swcclCommCount(twice[r], &n), swcclInvalidUsage);
    EXPECT_RESULT(swcclCommGetAsyncError(twice[r], &state), swcclSuccess);
    if (state != swcclInvalidUsage) fail("failed group init: async state of handle %d is %d", r, (int)state);
    if (!strstr(swcclGetLastError(twice[r]), "rank")) fail("failed group init: last error \"%s\"", swcclGetLastError(twice[r]));
    EXPECT_RESULT(swcclCommDestroy(twice[r]), swcclSuccess);
  }
}

/* A 1-rank communicator with cfg: its init result (the communicator is destroyed). */
static swcclResult_t init_one(swcclConfig_t* cfg) {
  swcclUniqueId id;
  swcclComm_t c = NULL;
  swcclResult_t r;
  float x = 3;
  if (swcclGetUniqueId(&id) != swcclSuccess) return swcclInternalError;
  r = swcclCommInitRankConfig(&c, 1, id, 0, cfg);
  if (r == swcclSuccess) {
    if (swcclAllReduce(&x, &x, 1, swcclFloat, swcclSum, c, NULL) != swcclSuccess || x != 3) fail("config: allreduce on a 1-rank communicator");
    swcclCommDestroy(c);
  }
  return r;
}

static void config_fields(void) {
  swcclConfig_t cfg = SWCCL_CONFIG_INITIALIZER;
  swcclConfig_t* old;
  if (cfg.blocking != SWCCL_CONFIG_UNDEF_INT || cfg.netName != NULL || cfg.splitShare != SWCCL_CONFIG_UNDEF_INT)
    fail("SWCCL_CONFIG_INITIALIZER: blocking %d, splitShare %d", cfg.blocking, cfg.splitShare);
  cfg.netName = "Socket";
  EXPECT_RESULT(init_one(&cfg), swcclSuccess);
  cfg.netName = "Ethernet";
  EXPECT_RESULT(init_one(&cfg), swcclInvalidArgument);
  if (!strstr(swcclGetLastError(NULL), "netName")) fail("config: unknown netName: \"%s\"", swcclGetLastError(NULL));
  cfg.netName = "Socket";
  cfg.transports = "tcp";
  EXPECT_RESULT(init_one(&cfg), swcclInvalidArgument);
  cfg.netName = NULL;
  cfg.transports = NULL;
  cfg.blocking = 2;
  EXPECT_RESULT(init_one(&cfg), swcclInvalidArgument);
  if (!strstr(swcclGetLastError(NULL), "blocking")) fail("config: blocking 2: \"%s\"", swcclGetLastError(NULL));
  cfg.blocking = 1;
  cfg.splitShare = 5;
  EXPECT_RESULT(init_one(&cfg), swcclInvalidArgument);
  cfg.splitShare = 1;
  cfg.cgaClusterSize = 4;
  cfg.minCTAs = 1;
  cfg.maxCTAs = 32;
  EXPECT_RESULT(init_one(&cfg), swcclSuccess);
  /* An older caller's struct ends after commName: what follows is not read. */
  old = malloc(sizeof *old);
  if (!old) { fail("malloc"); return; }
  memset(old, 0x7f, sizeof *old);
  *old = (swcclConfig_t)SWCCL_CONFIG_INITIALIZER;
  old->size = offsetof(swcclConfig_t, blocking);
  old->blocking = 77;
  old->netName = (const char*)old; /* garbage past the struct the caller knew */
  EXPECT_RESULT(init_one(old), swcclSuccess);
  free(old);
}

static int in_process(void) {
  g_rank = -1;
  g_failures = 0;
  group_init();
  config_fields();
  if (g_failures == 0) printf("in process: passed\n");
  return g_failures;
}

/* ---- forked ranks: nonblocking ---------------------------------------------------------------- */

static void rank_main(int rank, int n, void* arg) {
  enum { K = 6, COUNT = 20000 };
  swcclComm_t comm = NULL, half = NULL;
  swcclConfig_t cfg = SWCCL_CONFIG_INITIALIZER;
  swcclResult_t state;
  static float x[K][COUNT], b[COUNT], g[64];
  int i, k, cnt = 0;
  char c = 1;
  (void)arg;
  g_failures = 0;
  g_rank = rank;
  g_nranks = n;
  close(g_go[1 - (rank == 0)]);
  cfg.blocking = 0;
  cfg.timeoutMs = 30000;
  cfg.commName = "nb";
  if (rank != 0) {
    ssize_t got;
    do { got = read(g_go[0], &c, 1); } while (got < 0 && errno == EINTR);
    if (got != 1) fail("read from the pipe");
  }
  EXPECT_RESULT(swcclCommInitRankConfig(&comm, n, g_id, rank, &cfg), swcclInProgress);
  if (!comm) { fail("nonblocking init gave no handle"); child_exit(1); }
  if (rank == 0) {
    EXPECT_RESULT(swcclCommGetAsyncError(comm, &state), swcclSuccess);
    if (state != swcclInProgress) fail("nonblocking init: state %d before the others joined", (int)state);
    EXPECT_RESULT(swcclAllReduce(g, g, 64, swcclFloat, swcclSum, comm, NULL), swcclInvalidArgument);
    if (!strstr(swcclGetLastError(NULL), "in progress")) fail("use during init: \"%s\"", swcclGetLastError(NULL));
    EXPECT_RESULT(swcclCommCount(comm, &cnt), swcclInvalidArgument);
    for (i = 1; i < n; i++)
      if (write(g_go[1], &c, 1) != 1) fail("write to the pipe");
  }
  state = settle(comm, "nonblocking init");
  if (state != swcclSuccess) { fail("nonblocking init: %d (%s)", (int)state, swcclGetLastError(comm)); child_exit(1); }
  EXPECT_RESULT(swcclCommCount(comm, &cnt), swcclSuccess);
  if (cnt != n) fail("count %d", cnt);

  /* Operations with stream NULL run in the background, in order. */
  for (k = 0; k < K; k++)
    for (i = 0; i < COUNT; i++) x[k][i] = (float)(k + rank + i % 31);
  for (i = 0; i < COUNT; i++) b[i] = (float)(rank * 10 + i % 13);
  for (k = 0; k < K; k++) {
    EXPECT_RESULT(swcclAllReduce(x[k], x[k], COUNT, swcclFloat, swcclSum, comm, NULL), swcclInProgress);
    if (k == 2) EXPECT_RESULT(swcclBcast(b, COUNT, swcclFloat, n - 1, comm, NULL), swcclInProgress);
  }
  /* Chained: the next all-reduce reads the previous one's output (in order, or wrong). */
  EXPECT_RESULT(swcclAllReduce(x[K - 1], x[K - 1], COUNT, swcclFloat, swcclSum, comm, NULL), swcclInProgress);
  state = settle(comm, "background operations");
  if (state != swcclSuccess) fail("background operations: %d (%s)", (int)state, swcclGetLastError(comm));
  for (k = 0; k < K; k++)
    for (i = 0; i < COUNT; i++) {
      float want = (float)(n * (k + i % 31) + n * (n - 1) / 2);
      if (k == K - 1) want *= (float)n;
      if (x[k][i] != want) { fail("background allreduce %d [%d] = %g, want %g", k, i, x[k][i], want); break; }
    }
  for (i = 0; i < COUNT; i++)
    if (b[i] != (float)((n - 1) * 10 + i % 13)) { fail("background swcclBcast [%d] = %g", i, b[i]); break; }
  for (i = 0; i < 64; i++) g[i] = (float)rank;
  EXPECT_RESULT(swcclGroupStart(), swcclSuccess);
  EXPECT_RESULT(swcclAllReduce(g, g, 64, swcclFloat, swcclMax, comm, NULL), swcclSuccess);
  EXPECT_RESULT(swcclGroupEnd(), swcclInProgress);
  if (settle(comm, "group on a nonblocking communicator") != swcclSuccess || g[63] != (float)(n - 1))
    fail("group on a nonblocking communicator: g[63] = %g", g[63]);

  /* Split (nonblocking like its parent). */
  EXPECT_RESULT(swcclCommSplit(comm, rank % 2, rank, &half, NULL), swcclInProgress);
  if (!half) fail("nonblocking split gave no handle");
  else {
    int members = (n - rank % 2 + 1) / 2;
    state = settle(half, "nonblocking split");
    if (state != swcclSuccess) fail("nonblocking split: %d (%s)", (int)state, swcclGetLastError(half));
    if (settle(comm, "parent after the split") != swcclSuccess) fail("parent after the split");
    for (i = 0; i < 64; i++) g[i] = 1;
    EXPECT_RESULT(swcclAllReduce(g, g, 64, swcclFloat, swcclSum, half, NULL), swcclInProgress);
    if (settle(half, "allreduce on a half") != swcclSuccess || g[0] != (float)members)
      fail("allreduce on a half: %g, want %d", g[0], members);
    EXPECT_RESULT(swcclCommFinalize(half), swcclInProgress);
    if (settle(half, "finalize") != swcclSuccess) fail("nonblocking finalize");
    EXPECT_RESULT(swcclCommDestroy(half), swcclSuccess);
  }

  /* A failure in the background reaches swcclCommGetAsyncError. */
  EXPECT_RESULT(swcclAllReduce(g, g, rank == 1 ? 33 : 32, swcclFloat, swcclSum, comm, NULL), swcclInProgress);
  state = settle(comm, "mismatched all-reduce");
  if (state == swcclSuccess || state == swcclInProgress) fail("mismatched all-reduce: state %d", (int)state);
  else if (!strstr(swcclGetLastError(comm), "rank")) fail("mismatched all-reduce: last error \"%s\"", swcclGetLastError(comm));
  swcclCommAbort(comm);
  child_exit(g_failures ? 1 : 0);
}

int main(int argc, char** argv) {
  int n = argc > 1 ? atoi(argv[1]) : 2;
  int parent_failed;
  swcclResult_t res;
  if (n < 2 || n > MAX_RANKS) { fprintf(stderr, "usage: port_test NRANKS (2..%d)\n", MAX_RANKS); return 2; }
  setvbuf(stdout, NULL, _IOLBF, 0);
  g_verbose = getenv("SWCCL_TEST_VERBOSE") != NULL;
  parent_failed = in_process() != 0;
  if (pipe(g_go) != 0) { printf("parent: FAIL pipe: %s\n", strerror(errno)); return 1; }
  res = swcclGetUniqueId(&g_id);
  if (res != swcclSuccess) { printf("parent: FAIL swcclGetUniqueId: %s\n", swcclGetLastError(NULL)); return 1; }
  return fork_ranks(n, rank_main, NULL, parent_failed);
}
