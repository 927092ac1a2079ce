/* Tests/c/lifecycle_test.c - communicator life cycle and misuse through the C ABI.
 *
 *   usage: lifecycle_test NRANKS     (NRANKS >= 3: forked ranks; the in-process part runs first)
 *
 * In process: a thread's last error (swcclGetLastError(NULL)) not seen by a later thread that reuses
 * its id; misuse answered by swcclInvalidArgument/swcclInvalidUsage and a message, never a crash
 * (uninitialised config, NULL pointers, bad rank counts, unknown type and op, destroy twice, use after
 * destroy, a destroyed handle among 200 new ones, a stream passed as a communicator); ranks that disagree on the rank count (swcclInvalidUsage on both) or never arrive
 * (swcclTimeout); swcclCommInitAll with 3 ranks driven by 3 threads, then from this one thread by
 * groups (an allreduce on each communicator and a ring of sends and receives, without streams,
 * with one stream per communicator and with one stream shared by all); a group failure reported by swcclGroupEnd, or by
 * swcclStreamSynchronize with a stream, and by swcclGetLastError(comm); finalize then destroy.
 * Forked ranks: swcclCommInitFromEnv from torchrun-style variables (RANK, WORLD_SIZE, MASTER_ADDR,
 * MASTER_PORT), allreduce, swcclCommSplit (two colors, reversed keys) and an allreduce on each half;
 * swcclCommShrink of a copy whose last rank left (argument errors first, then SWCCL_SHRINK_ABORT and
 * an allreduce on the survivors); then swcclCommAbort from another thread while a collective is blocked (rank 1 never joins it): the
 * blocked call returns an error promptly; the other ranks get an error and swcclCommGetAsyncError
 * reports it. Prints "N passed, M failed" (ranks, plus the in-process part as one) last. */
#define MAX_RANKS 16
#define MAX_FAIL_LINES 20
#define TIMEOUT_SECONDS 120
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "swccl.h"
#include "fork_ranks.h"

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

/* ---- in process ------------------------------------------------------------------------------ */

struct thread_arg { swcclComm_t comm; int rank; int n; int ok; };

static void* init_all_thread(void* p) {
  struct thread_arg* a = p;
  float x[100];
  int i;
  for (i = 0; i < 100; i++) x[i] = (float)(a->rank + i);
  a->ok = swcclAllReduce(x, x, 100, swcclFloat, swcclSum, a->comm, NULL) == swcclSuccess;
  for (i = 0; i < 100; i++)
    if (x[i] != (float)(a->n * i + a->n * (a->n - 1) / 2)) a->ok = 0;
  return NULL;
}

struct init_arg { swcclUniqueId id; int nranks; int rank; int timeout_ms; swcclResult_t result; };

static void* init_thread(void* p) {
  struct init_arg* a = p;
  swcclComm_t c = NULL;
  swcclConfig_t cfg = SWCCL_CONFIG_INITIALIZER;
  cfg.timeoutMs = a->timeout_ms;
  a->result = swcclCommInitRankConfig(&c, a->nranks, a->id, a->rank, &cfg);
  if (c) swcclCommDestroy(c);
  return NULL;
}

/* Communicators of initAll driven from this thread by one group per step; with streams when given. */
static void init_all_groups(swcclComm_t* comms, int n, swcclStream_t* streams) {
  enum { COUNT = 1000 };
  static float x[3][COUNT], ring_out[3][COUNT], ring_in[3][COUNT];
  const char* how = streams ? "with streams" : "without streams";
  int i, r, step;
  for (step = 0; step < 3; step++) {
    for (r = 0; r < n; r++)
      for (i = 0; i < COUNT; i++) {
        x[r][i] = (float)(r * 7 + i + step);
        ring_out[r][i] = (float)(r * 1000 + i);
        ring_in[r][i] = -1;
      }
    EXPECT_RESULT(swcclGroupStart(), swcclSuccess);
    for (r = 0; r < n; r++) {
      swcclStream_t s = streams ? streams[r] : NULL;
      EXPECT_RESULT(swcclAllReduce(x[r], x[r], COUNT, swcclFloat, swcclSum, comms[r], s), swcclSuccess);
      EXPECT_RESULT(swcclSend(ring_out[r], COUNT, swcclFloat, (r + 1) % n, comms[r], s), swcclSuccess);
      EXPECT_RESULT(swcclRecv(ring_in[r], COUNT, swcclFloat, (r + n - 1) % n, comms[r], s), swcclSuccess);
    }
    EXPECT_RESULT(swcclGroupEnd(), swcclSuccess);
    if (streams)
      for (r = 0; r < n; r++) EXPECT_RESULT(swcclStreamSynchronize(streams[r]), swcclSuccess);
    for (r = 0; r < n; r++)
      for (i = 0; i < COUNT; i++) {
        float want = (float)(7 * n * (n - 1) / 2 + n * (i + step));
        if (x[r][i] != want) { fail("group %s, step %d: rank %d allreduce[%d] = %g, want %g", how, step, r, i, x[r][i], want); break; }
        if (ring_in[r][i] != (float)(((r + n - 1) % n) * 1000 + i)) {
          fail("group %s, step %d: rank %d received [%d] = %g", how, step, r, i, ring_in[r][i]);
          break;
        }
      }
  }
}

/* A group that fails when it runs (a send to self with no receive from self) on a 1-rank
 * communicator: swcclGroupEnd reports it, or with a stream swcclStreamSynchronize; either way
 * swcclGetLastError(comm) says what happened. */
static void group_failure(swcclStream_t stream) {
  swcclComm_t comm = NULL;
  swcclUniqueId id;
  float x[4] = {1, 2, 3, 4};
  const char* how = stream ? "with a stream" : "without a stream";
  EXPECT_RESULT(swcclGetUniqueId(&id), swcclSuccess);
  EXPECT_RESULT(swcclCommInitRank(&comm, 1, id, 0), swcclSuccess);
  if (strlen(swcclGetLastError(comm)) != 0) fail("a new communicator has a last error: %s", swcclGetLastError(comm));
  EXPECT_RESULT(swcclGroupStart(), swcclSuccess);
  EXPECT_RESULT(swcclSend(x, 4, swcclFloat, 0, comm, stream), swcclSuccess);
  if (stream) {
    EXPECT_RESULT(swcclGroupEnd(), swcclSuccess);
    EXPECT_RESULT(swcclStreamSynchronize(stream), swcclInvalidUsage);
  } else {
    EXPECT_RESULT(swcclGroupEnd(), swcclInvalidUsage);
  }
  if (!strstr(swcclGetLastError(comm), "to self"))
    fail("group failure %s: swcclGetLastError(comm) = \"%s\"", how, swcclGetLastError(comm));
  EXPECT_RESULT(swcclCommDestroy(comm), swcclSuccess);
}

/* The last error of a call without a communicator belongs to the calling thread: one thread makes
 * an error and exits; a thread started after it (glibc usually hands it the same thread id) has none. */
static void* make_thread_error(void* p) {
  if (swcclCommInitRank(NULL, 1, *(swcclUniqueId*)p, 0) != swcclInvalidArgument) return (void*)1;
  return strlen(swcclGetLastError(NULL)) == 0 ? (void*)1 : NULL;
}

static void* read_thread_error(void* p) {
  const char* last = swcclGetLastError(NULL);
  snprintf((char*)p, 256, "%s", last ? last : "(NULL)");
  return NULL;
}

static void thread_errors_are_private(swcclUniqueId* id) {
  pthread_t a, b;
  void* bad = NULL;
  char seen[256] = "";
  if (pthread_create(&a, NULL, make_thread_error, id) != 0) { fail("thread errors: pthread_create"); return; }
  pthread_join(a, &bad);
  if (bad) fail("thread errors: the first thread got no error message for swcclCommInitRank(NULL, ...)");
  if (pthread_create(&b, NULL, read_thread_error, seen) != 0) { fail("thread errors: pthread_create"); return; }
  pthread_join(b, NULL);
  if (seen[0] != '\0')
    fail("a new thread%s inherits the last error \"%s\" of a thread that exited",
         pthread_equal(a, b) ? " (with the same thread id)" : "", seen);
}

static int in_process(void) {
  swcclComm_t comm = NULL, comms[3];
  swcclUniqueId id;
  swcclConfig_t bad;
  pthread_t th[3];
  struct thread_arg args[3];
  float x[4] = {1, 2, 3, 4};
  int i;
  g_rank = -1;
  memset(&bad, 0, sizeof bad); /* never initialised with SWCCL_CONFIG_INITIALIZER */
  EXPECT_RESULT(swcclGetUniqueId(&id), swcclSuccess);
  thread_errors_are_private(&id);
  EXPECT_RESULT(swcclCommInitRankConfig(&comm, 1, id, 0, &bad), swcclInvalidArgument);
  if (strlen(swcclGetLastError(NULL)) == 0) fail("no message for an uninitialised config");
  EXPECT_RESULT(swcclCommInitRank(NULL, 1, id, 0), swcclInvalidArgument);
  EXPECT_RESULT(swcclCommInitRank(&comm, 0, id, 0), swcclInvalidArgument);
  EXPECT_RESULT(swcclCommInitRank(&comm, 2, id, 2), swcclInvalidArgument);
  EXPECT_RESULT(swcclCommInitRank(&comm, 2, id, -1), swcclInvalidArgument);
  EXPECT_RESULT(swcclCommInitAll(NULL, 2, NULL), swcclInvalidArgument);
  EXPECT_RESULT(swcclCommInitAll(comms, 0, NULL), swcclInvalidArgument);
  {
    /* devlist (NCCL's devices): read, must be distinct and non-negative; the error names the value. */
    static const int dup[3] = { 4, 1, 4 }, neg[2] = { 0, -2 };
    comms[0] = comms[1] = comms[2] = (swcclComm_t)1;
    EXPECT_RESULT(swcclCommInitAll(comms, 3, dup), swcclInvalidArgument);
    if (!strstr(swcclGetLastError(NULL), "devlist[2] = 4") || !strstr(swcclGetLastError(NULL), "duplicate"))
      fail("swcclCommInitAll with devlist {4, 1, 4}: message \"%s\" does not name the duplicate", swcclGetLastError(NULL));
    if (comms[0] || comms[1] || comms[2]) fail("swcclCommInitAll with a bad devlist left comms[] not NULL");
    EXPECT_RESULT(swcclCommInitAll(comms, 2, neg), swcclInvalidArgument);
    if (!strstr(swcclGetLastError(NULL), "devlist[1] = -2")) fail("swcclCommInitAll with devlist {0, -2}: message \"%s\"", swcclGetLastError(NULL));
  }
  /* A one-rank communicator for the argument checks of a live handle. */
  EXPECT_RESULT(swcclGetUniqueId(&id), swcclSuccess);
  EXPECT_RESULT(swcclCommInitRank(&comm, 1, id, 0), swcclSuccess);
  EXPECT_RESULT(swcclAllReduce(x, x, 4, (swcclDataType_t)99, swcclSum, comm, NULL), swcclInvalidArgument);
  EXPECT_RESULT(swcclAllReduce(x, x, 4, swcclFloat, (swcclRedOp_t)99, comm, NULL), swcclInvalidArgument);
  EXPECT_RESULT(swcclAllReduce(NULL, x, 4, swcclFloat, swcclSum, comm, NULL), swcclInvalidArgument);
  EXPECT_RESULT(swcclBroadcast(x, x, 4, swcclFloat, 5, comm, NULL), swcclInvalidArgument);
  EXPECT_RESULT(swcclSend(x, 4, swcclFloat, -1, comm, NULL), swcclInvalidArgument);
  EXPECT_RESULT(swcclSend(x, 4, swcclFloat, 0, comm, NULL), swcclInvalidUsage);        /* self, no group */
  EXPECT_RESULT(swcclAllReduce(x, x, 4, swcclFloat, swcclSum, comm, NULL), swcclSuccess); /* still usable */
  {
    /* After finalize: clean-up calls and queries work, anything that would start something does not. */
    swcclRedOp_t pre, pre2;
    float scale = 2;
    void* reg = NULL;
    int n = 0;
    swcclResult_t async = swcclInternalError;
    EXPECT_RESULT(swcclRedOpCreatePreMulSum(&pre, &scale, swcclFloat, 1, comm), swcclSuccess);
    EXPECT_RESULT(swcclCommRegister(comm, x, sizeof x, &reg), swcclSuccess);
    EXPECT_RESULT(swcclCommFinalize(comm), swcclSuccess);
    EXPECT_RESULT(swcclCommFinalize(comm), swcclInvalidUsage);
    EXPECT_RESULT(swcclAllReduce(x, x, 4, swcclFloat, swcclSum, comm, NULL), swcclInvalidUsage);
    EXPECT_RESULT(swcclRedOpCreatePreMulSum(&pre2, &scale, swcclFloat, 1, comm), swcclInvalidUsage);
    EXPECT_RESULT(swcclCommRegister(comm, x, sizeof x, &reg), swcclInvalidUsage);
    EXPECT_RESULT(swcclCommDeregister(comm, reg), swcclSuccess);
    EXPECT_RESULT(swcclCommDeregister(comm, reg), swcclInvalidArgument);                    /* twice */
    EXPECT_RESULT(swcclRedOpDestroy(pre, comm), swcclSuccess);
    EXPECT_RESULT(swcclCommCount(comm, &n), swcclSuccess);
    EXPECT_RESULT(swcclCommGetAsyncError(comm, &async), swcclSuccess);
    if (n != 1 || async != swcclSuccess) fail("queries after finalize: count %d, async error %d", n, (int)async);
  }
  EXPECT_RESULT(swcclCommDestroy(comm), swcclSuccess);
  EXPECT_RESULT(swcclCommDestroy(comm), swcclInvalidUsage);                            /* twice */
  EXPECT_RESULT(swcclAllReduce(x, x, 4, swcclFloat, swcclSum, comm, NULL), swcclInvalidUsage); /* after */
  if (strlen(swcclGetLastError(NULL)) == 0) fail("no message for a destroyed communicator");
  EXPECT_RESULT(swcclCommDestroy(NULL), swcclSuccess);
  EXPECT_RESULT(swcclCommAbort(comm), swcclInvalidUsage);                              /* after destroy */
  {
    /* A destroyed handle stays refused while new communicators are made and destroyed (with
     * address-valued handles, a new one at the freed address was accepted as the old), and a
     * stream handle is not a communicator. */
    swcclComm_t fresh[200];
    swcclStream_t s;
    int i, accepted = 0;
    for (i = 0; i < 200; i++) {
      EXPECT_RESULT(swcclCommInitAll(&fresh[i], 1, NULL), swcclSuccess);
      if (swcclAllReduce(x, x, 4, swcclFloat, swcclSum, comm, NULL) != swcclInvalidUsage) accepted++;
      if (i % 2 == 0) EXPECT_RESULT(swcclCommDestroy(fresh[i]), swcclSuccess);
    }
    if (accepted) fail("a destroyed communicator handle was accepted %d times after new ones were made", accepted);
    for (i = 1; i < 200; i += 2) EXPECT_RESULT(swcclAllReduce(x, x, 4, swcclFloat, swcclSum, fresh[i], NULL), swcclSuccess);
    for (i = 0; i < 200; i += 2) EXPECT_RESULT(swcclAllReduce(x, x, 4, swcclFloat, swcclSum, fresh[i], NULL), swcclInvalidUsage);
    EXPECT_RESULT(swcclStreamCreate(&s), swcclSuccess);
    EXPECT_RESULT(swcclAllReduce(x, x, 4, swcclFloat, swcclSum, (swcclComm_t)(void*)s, NULL), swcclInvalidUsage);
    EXPECT_RESULT(swcclStreamDestroy(s), swcclSuccess);
    for (i = 1; i < 200; i += 2) EXPECT_RESULT(swcclCommDestroy(fresh[i]), swcclSuccess);
  }
  {
    /* Streams: NULL is an argument error, a destroyed one a usage error, everywhere. */
    swcclStream_t s;
    EXPECT_RESULT(swcclStreamCreate(NULL), swcclInvalidArgument);
    EXPECT_RESULT(swcclStreamSynchronize(NULL), swcclInvalidArgument);
    EXPECT_RESULT(swcclStreamQuery(NULL), swcclInvalidArgument);
    EXPECT_RESULT(swcclStreamDestroy(NULL), swcclInvalidArgument);
    EXPECT_RESULT(swcclStreamCreate(&s), swcclSuccess);
    EXPECT_RESULT(swcclStreamQuery(s), swcclSuccess);
    EXPECT_RESULT(swcclStreamDestroy(s), swcclSuccess);
    EXPECT_RESULT(swcclStreamDestroy(s), swcclInvalidUsage);
    EXPECT_RESULT(swcclStreamSynchronize(s), swcclInvalidUsage);
    EXPECT_RESULT(swcclStreamQuery(s), swcclInvalidUsage);
    EXPECT_RESULT(swcclGetUniqueId(&id), swcclSuccess);
    EXPECT_RESULT(swcclCommInitRank(&comm, 1, id, 0), swcclSuccess);
    EXPECT_RESULT(swcclAllReduce(x, x, 4, swcclFloat, swcclSum, comm, s), swcclInvalidUsage);
    EXPECT_RESULT(swcclAllReduce(x, x, 4, swcclFloat, swcclSum, comm, NULL), swcclSuccess);
    EXPECT_RESULT(swcclCommDestroy(comm), swcclSuccess);
  }
  {
    /* A half-set SWCCL_RANK/SWCCL_SIZE pair is an error, not a silent fall-through to RANK. */
    setenv("SWCCL_RANK", "0", 1);
    EXPECT_RESULT(swcclCommInitFromEnv(&comm, NULL), swcclInvalidUsage);
    if (comm != NULL) fail("InitFromEnv left a communicator after an error");
    unsetenv("SWCCL_RANK");
  }
  /* Ranks that disagree on the rank count, then a rank whose peer never comes. */
  {
    struct init_arg a[2];
    pthread_t t[2];
    double t0;
    EXPECT_RESULT(swcclGetUniqueId(&a[0].id), swcclSuccess);
    a[1].id = a[0].id;
    a[0].nranks = 2; a[0].rank = 0; a[1].nranks = 3; a[1].rank = 1;
    a[0].timeout_ms = a[1].timeout_ms = 20000;
    for (i = 0; i < 2; i++) pthread_create(&t[i], NULL, init_thread, &a[i]);
    for (i = 0; i < 2; i++) {
      pthread_join(t[i], NULL);
      if (a[i].result != swcclInvalidUsage)
        fail("rank %d of %d among ranks that disagree: result %d, expected swcclInvalidUsage (%s)", a[i].rank, a[i].nranks,
             (int)a[i].result, swcclGetLastError(NULL));
    }
    EXPECT_RESULT(swcclGetUniqueId(&a[0].id), swcclSuccess);
    a[0].nranks = 2; a[0].rank = 0; a[0].timeout_ms = 500;
    t0 = now_s();
    init_thread(&a[0]);
    if (a[0].result != swcclTimeout) fail("rank 0 of 2 alone: result %d, expected swcclTimeout", (int)a[0].result);
    if (now_s() - t0 > 5) fail("rank 0 of 2 alone took %.1f s with a 0.5 s timeout", now_s() - t0);
  }
  group_failure(NULL);
  {
    swcclStream_t s;
    EXPECT_RESULT(swcclStreamCreate(&s), swcclSuccess);
    group_failure(s);
    EXPECT_RESULT(swcclStreamDestroy(s), swcclSuccess);
  }
  /* Ranks as threads (a devlist as NCCL programs pass it: accepted, meaningless on host memory). */
  {
    static const int devs[3] = { 2, 0, 1 };
    EXPECT_RESULT(swcclCommInitAll(comms, 3, devs), swcclSuccess);
  }
  for (i = 0; i < 3; i++) {
    int r = -1, n = -1;
    args[i].comm = comms[i]; args[i].rank = i; args[i].n = 3; args[i].ok = 0;
    EXPECT_RESULT(swcclCommUserRank(comms[i], &r), swcclSuccess);
    EXPECT_RESULT(swcclCommCount(comms[i], &n), swcclSuccess);
    if (r != i || n != 3) fail("initAll communicator %d says rank %d of %d", i, r, n);
    pthread_create(&th[i], NULL, init_all_thread, &args[i]);
  }
  for (i = 0; i < 3; i++) {
    pthread_join(th[i], NULL);
    if (!args[i].ok) fail("initAll: allreduce on thread %d", i);
  }
  /* The same communicators from this one thread, by groups. */
  init_all_groups(comms, 3, NULL);
  {
    swcclStream_t streams[3];
    for (i = 0; i < 3; i++) EXPECT_RESULT(swcclStreamCreate(&streams[i]), swcclSuccess);
    init_all_groups(comms, 3, streams);
    for (i = 1; i < 3; i++) EXPECT_RESULT(swcclStreamDestroy(streams[i]), swcclSuccess);
    /* One stream shared by all three: the group's three parts still progress together. */
    streams[1] = streams[2] = streams[0];
    init_all_groups(comms, 3, streams);
    EXPECT_RESULT(swcclStreamDestroy(streams[0]), swcclSuccess);
  }
  for (i = 0; i < 3; i++) EXPECT_RESULT(swcclCommDestroy(comms[i]), swcclSuccess);
  printf("in process: %s\n", g_failures ? "FAILED" : "passed");
  return g_failures;
}

/* ---- forked ranks ---------------------------------------------------------------------------- */

static int g_port;

struct abort_arg { swcclComm_t comm; double delay; };

static void* abort_later(void* p) {
  struct abort_arg* a = p;
  struct timespec t = { 0, (long)(a->delay * 1e9) };
  nanosleep(&t, NULL);
  swcclCommAbort(a->comm);
  return NULL;
}

static void rank_main(int rank, int n, void* arg) {
  swcclComm_t comm = NULL, half = NULL;
  swcclConfig_t cfg = SWCCL_CONFIG_INITIALIZER;
  char buf[32];
  int i, v[64], hr = -1, hn = -1;
  (void)arg;
  g_failures = 0; /* the in-process part's count stays with the parent */
  g_rank = rank;
  g_nranks = n;
  if (g_verbose) printf("rank %d of %d\n", rank, n);
  snprintf(buf, sizeof buf, "%d", rank); setenv("RANK", buf, 1);
  snprintf(buf, sizeof buf, "%d", n); setenv("WORLD_SIZE", buf, 1);
  setenv("MASTER_ADDR", "127.0.0.1", 1);
  snprintf(buf, sizeof buf, "%d", g_port); setenv("MASTER_PORT", buf, 1);
  cfg.timeoutMs = 3000;
  if (swcclCommInitFromEnv(&comm, &cfg) != swcclSuccess) {
    fail("swcclCommInitFromEnv: %s", swcclGetLastError(NULL));
    child_exit(1);
  }
  for (i = 0; i < 64; i++) v[i] = rank * 64 + i;
  EXPECT_RESULT(swcclAllReduce(v, v, 64, swcclInt32, swcclSum, comm, NULL), swcclSuccess);
  for (i = 0; i < 64; i++)
    if (v[i] != 64 * n * (n - 1) / 2 + n * i) { fail("allreduce after init from env: v[%d] = %d", i, v[i]); break; }
  /* Split into even and odd ranks, reversed order inside each. */
  EXPECT_RESULT(swcclCommSplit(comm, rank % 2, -rank, &half, NULL), swcclSuccess);
  if (half) {
    int members = (n - rank % 2 + 1) / 2;
    swcclCommUserRank(half, &hr);
    swcclCommCount(half, &hn);
    if (hn != members || hr != (n - 1 - rank) / 2) fail("split: rank %d of %d, expected %d of %d", hr, hn, (n - 1 - rank) / 2, members);
    v[0] = rank;
    EXPECT_RESULT(swcclAllReduce(v, v, 1, swcclInt32, swcclMax, half, NULL), swcclSuccess);
    if (v[0] != (rank % 2 == 0 ? (n - 1) - (n - 1) % 2 : (n - 1) - (n % 2 == 0 ? 0 : 1))) fail("split allreduce max %d", v[0]);
    EXPECT_RESULT(swcclCommDestroy(half), swcclSuccess);
  } else fail("split gave no communicator");
  /* Shrink after a failure: a copy of comm loses its last rank (the process just leaves); the others
   * see the error, then shrink it with SWCCL_SHRINK_ABORT and work on without that rank. */
  {
    swcclComm_t dup = NULL, small = NULL;
    int gone = n - 1, bad[2] = { n - 1, n - 1 }, sr = -1, sn = -1;
    EXPECT_RESULT(swcclCommSplit(comm, 0, rank, &dup, NULL), swcclSuccess);
    if (rank == gone) child_exit(g_failures ? 1 : 0);
    for (i = 0; i < 64; i++) v[i] = 1;
    if (swcclAllReduce(v, v, 64, swcclInt32, swcclSum, dup, NULL) == swcclSuccess) fail("allreduce with a departed rank succeeded");
    else if (!strstr(swcclGetLastError(dup), "rank")) fail("error does not name a rank: %s", swcclGetLastError(dup));
    EXPECT_RESULT(swcclCommShrink(dup, bad, 2, &small, NULL, SWCCL_SHRINK_ABORT), swcclInvalidArgument); /* listed twice */
    EXPECT_RESULT(swcclCommShrink(dup, bad, 1, &small, NULL, 7), swcclInvalidArgument);                  /* bad flags */
    EXPECT_RESULT(swcclCommShrink(dup, &rank, 1, &small, NULL, SWCCL_SHRINK_ABORT), swcclInvalidArgument); /* self */
    EXPECT_RESULT(swcclCommShrink(dup, bad, 1, &small, NULL, SWCCL_SHRINK_ABORT), swcclSuccess);
    if (small) {
      swcclCommUserRank(small, &sr);
      swcclCommCount(small, &sn);
      if (sr != rank || sn != n - 1) fail("shrunk communicator: rank %d of %d, expected %d of %d", sr, sn, rank, n - 1);
      for (i = 0; i < 64; i++) v[i] = rank + i;
      EXPECT_RESULT(swcclAllReduce(v, v, 64, swcclInt32, swcclSum, small, NULL), swcclSuccess);
      for (i = 0; i < 64; i++)
        if (v[i] != (n - 1) * (n - 2) / 2 + (n - 1) * i) { fail("allreduce on the shrunk communicator: v[%d] = %d", i, v[i]); break; }
      EXPECT_RESULT(swcclCommDestroy(small), swcclSuccess);
    }
    EXPECT_RESULT(swcclCommDestroy(dup), swcclSuccess);
  }
  /* Abort while blocked: rank 1 never joins this allreduce; rank 0 aborts from another thread. */
  if (rank == 1) {
    struct timespec t = { 1, 0 };
    nanosleep(&t, NULL);
    swcclCommAbort(comm);
    child_exit(g_failures ? 1 : 0);
  }
  {
    pthread_t th;
    struct abort_arg a = { comm, 0.3 };
    double t0 = now_s(), dt;
    swcclResult_t res;
    if (rank == 0) pthread_create(&th, NULL, abort_later, &a);
    res = swcclAllReduce(v, v, 64, swcclInt32, swcclSum, comm, NULL);
    dt = now_s() - t0;
    if (res == swcclSuccess) fail("allreduce without rank 1 succeeded");
    if (rank == 0) {
      pthread_join(th, NULL);
      if (dt > 2.0) fail("the blocked allreduce returned %.2f s after the abort started", dt);
      printf("rank 0: blocked allreduce returned %d after %.2f s (abort at 0.3 s)\n", (int)res, dt);
    } else {
      swcclResult_t async = swcclSuccess;
      EXPECT_RESULT(swcclCommGetAsyncError(comm, &async), swcclSuccess);
      if (async == swcclSuccess) fail("swcclCommGetAsyncError reports no error after a failed allreduce (%d)", (int)res);
      if (strlen(swcclGetLastError(comm)) == 0) fail("no swcclGetLastError text");
      if (dt > 2 * 3.0 + 1) fail("error after %.2f s (timeout 3 s)", dt);
      EXPECT_RESULT(swcclCommAbort(comm), swcclSuccess);
    }
  }
  child_exit(g_failures ? 1 : 0);
}

int main(int argc, char** argv) {
  int n = argc > 1 ? atoi(argv[1]) : 3;
  int parent_failed;
  if (n < 3 || n > MAX_RANKS) { fprintf(stderr, "usage: lifecycle_test NRANKS (3..%d)\n", MAX_RANKS); return 2; }
  setvbuf(stdout, NULL, _IOLBF, 0);
  parent_failed = in_process() != 0;
  g_port = 20000 + (int)(getpid() % 20000);
  return fork_ranks(n, rank_main, NULL, parent_failed);
}
