/* Tests/c/event_test.c - stream events (swcclEventCreate/Record/Query/Wait/Destroy) through the C ABI.
 *
 *   usage: event_test NRANKS     (2..16 forked ranks; the parent hosts the rendezvous)
 *
 * Each rank, in order:
 *   handles    misuse answered, never a crash: NULL event (swcclInvalidArgument everywhere), a destroyed
 *              event (swcclInvalidUsage for record, query, wait and destroy, also after 200 new events
 *              took slots), a stream passed as an event and an event as a stream, recording on a
 *              destroyed stream; a new event and one recorded with a NULL stream are complete.
 *   not joined rank 0 enqueues an all-reduce on a stream while the other ranks have not called it yet
 *              (they wait for rank 0's word on a pipe): swcclEventQuery and swcclEventWait with
 *              timeouts 0 and 30 ms say swcclInProgress; then the others join and swcclEventWait(-1)
 *              says swcclSuccess with the exact sum in the buffer.
 *   in flight  12 operations (all-reduces of 1 to 300000 elements, all-gather, broadcast, reduce-scatter)
 *              enqueued on one stream with an event after each; the events are polled (last to first)
 *              until all are complete: an event never reports completion before an earlier one, each
 *              buffer is exact as soon as its event completed; one event recorded twice marks the
 *              second point.
 *   failure    on a split communicator: an all-reduce (event 1), then an all-reduce where rank 1 passes a
 *              different count (event 2), then another (event 3): event 1 succeeds, events 2 and 3
 *              report the same error as swcclStreamSynchronize, and swcclGetLastError names a rank;
 *              after the synchronize, event 2 still reports it and a new event does not; an operation
 *              on the broken communicator is then refused at once (nothing enqueued).
 *   destroyed  an event recorded on a stream that is then destroyed (with work pending) is complete and
 *              successful; recording on the destroyed stream is refused.
 *   fork       rank 0 forks a child: the inherited event is refused (swcclInvalidUsage, "inherited")
 *              for query, wait and record; the child's own event works; destroying the inherited one
 *              only forgets it.
 *   dead peer  on another split communicator (timeout 10 s) the last rank exits; the others' all-reduces
 *              on a stream fail and both their events report the error (not swcclSuccess, not
 *              swcclInProgress) with a message naming a rank, within the timeout.
 * Prints "N passed, M failed" (ranks) last. */
#define MAX_RANKS 16
#define MAX_FAIL_LINES 20
#define TIMEOUT_SECONDS 150
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
#include "fork_ranks.h"

static swcclUniqueId g_id;
static int g_go[2]; /* rank 0 writes one byte per other rank once its operation is enqueued */

/* Input element i of rank r for operation k: exact in float (small integers). */
static float input(int k, int r, size_t i) { return (float)((k * 7 + r * 3 + (int)(i % 1000)) % 64); }

static int is_error(swcclResult_t r) { return r != swcclSuccess && r != swcclInProgress; }

static void handles(swcclStream_t s) {
  swcclEvent_t e = NULL, e2 = NULL, stale = NULL, many[200];
  swcclStream_t gone = NULL;
  int i;
  EXPECT_RESULT(swcclEventCreate(NULL), swcclInvalidArgument);
  EXPECT_RESULT(swcclEventDestroy(NULL), swcclInvalidArgument);
  EXPECT_RESULT(swcclEventRecord(NULL, s), swcclInvalidArgument);
  EXPECT_RESULT(swcclEventQuery(NULL), swcclInvalidArgument);
  EXPECT_RESULT(swcclEventWait(NULL, 0), swcclInvalidArgument);
  EXPECT_RESULT(swcclEventWait(NULL, -1), swcclInvalidArgument);
  EXPECT_RESULT(swcclEventCreate(&e), swcclSuccess);
  if (!e) { fail("swcclEventCreate gave NULL"); return; }
  EXPECT_RESULT(swcclEventQuery(e), swcclSuccess);   /* never recorded: complete */
  EXPECT_RESULT(swcclEventWait(e, -1), swcclSuccess);
  EXPECT_RESULT(swcclEventRecord(e, NULL), swcclSuccess);
  EXPECT_RESULT(swcclEventQuery(e), swcclSuccess);
  EXPECT_RESULT(swcclEventRecord(e, s), swcclSuccess); /* nothing enqueued on s yet */
  EXPECT_RESULT(swcclEventWait(e, 0), swcclSuccess);
  stale = e;
  EXPECT_RESULT(swcclEventDestroy(e), swcclSuccess);
  EXPECT_RESULT(swcclEventDestroy(stale), swcclInvalidUsage);
  EXPECT_RESULT(swcclEventQuery(stale), swcclInvalidUsage);
  EXPECT_RESULT(swcclEventWait(stale, 0), swcclInvalidUsage);
  EXPECT_RESULT(swcclEventWait(stale, -1), swcclInvalidUsage);
  EXPECT_RESULT(swcclEventRecord(stale, s), swcclInvalidUsage);
  if (!strstr(swcclGetLastError(NULL), "event")) fail("a destroyed event: last error \"%s\" does not say event", swcclGetLastError(NULL));
  for (i = 0; i < 200; i++) {
    many[i] = NULL;
    EXPECT_RESULT(swcclEventCreate(&many[i]), swcclSuccess);
  }
  EXPECT_RESULT(swcclEventQuery(stale), swcclInvalidUsage); /* its slot may be taken again: still refused */
  for (i = 0; i < 200; i++) EXPECT_RESULT(swcclEventDestroy(many[i]), swcclSuccess);
  EXPECT_RESULT(swcclEventCreate(&e2), swcclSuccess);
  EXPECT_RESULT(swcclEventQuery((swcclEvent_t)s), swcclInvalidUsage);      /* a stream is not an event */
  EXPECT_RESULT(swcclEventRecord(e2, (swcclStream_t)e2), swcclInvalidUsage); /* an event is not a stream */
  EXPECT_RESULT(swcclStreamQuery((swcclStream_t)e2), swcclInvalidUsage);
  EXPECT_RESULT(swcclStreamCreate(&gone), swcclSuccess);
  EXPECT_RESULT(swcclStreamDestroy(gone), swcclSuccess);
  EXPECT_RESULT(swcclEventRecord(e2, gone), swcclInvalidUsage);
  EXPECT_RESULT(swcclEventQuery(e2), swcclSuccess); /* the failed record left the mark alone */
  EXPECT_RESULT(swcclEventDestroy(e2), swcclSuccess);
}

/* Rank 0's operation is pending while the others have not called it. */
static void not_joined(swcclComm_t comm, swcclStream_t s) {
  int32_t x[8];
  int i, n = g_nranks;
  char c = 1;
  for (i = 0; i < 8; i++) x[i] = g_rank * 100 + i;
  if (g_rank == 0) {
    swcclEvent_t e = NULL;
    EXPECT_RESULT(swcclEventCreate(&e), swcclSuccess);
    EXPECT_RESULT(swcclAllReduce(x, x, 8, swcclInt32, swcclSum, comm, s), swcclSuccess);
    EXPECT_RESULT(swcclEventRecord(e, s), swcclSuccess);
    if (n > 1) {
      EXPECT_RESULT(swcclEventQuery(e), swcclInProgress);
      EXPECT_RESULT(swcclEventWait(e, 0), swcclInProgress);
      EXPECT_RESULT(swcclEventWait(e, 30), swcclInProgress);
      EXPECT_RESULT(swcclStreamQuery(s), swcclInProgress);
      for (i = 1; i < n; i++)
        if (write(g_go[1], &c, 1) != 1) fail("write to the pipe: %s", strerror(errno));
    }
    EXPECT_RESULT(swcclEventWait(e, -1), swcclSuccess);
    EXPECT_RESULT(swcclEventQuery(e), swcclSuccess);
    EXPECT_RESULT(swcclEventDestroy(e), swcclSuccess);
  } else {
    ssize_t got;
    do { got = read(g_go[0], &c, 1); } while (got < 0 && errno == EINTR);
    if (got != 1) fail("read from the pipe: %s", got < 0 ? strerror(errno) : "end of file");
    EXPECT_RESULT(swcclAllReduce(x, x, 8, swcclInt32, swcclSum, comm, NULL), swcclSuccess);
  }
  for (i = 0; i < 8; i++)
    if (x[i] != 100 * n * (n - 1) / 2 + n * i) { fail("not joined: x[%d] = %d", i, (int)x[i]); break; }
}

#define OPS 12

/* Checks operation k's output; 1 if exact. */
static int check_op(int k, int kind, float* out, size_t count) {
  int n = g_nranks, r;
  size_t i;
  for (i = 0; i < count; i++) {
    float want = 0;
    switch (kind) {
    case 0: for (r = 0; r < n; r++) want += input(k, r, i); break;                  /* allreduce */
    case 1: want = input(k, (int)(i / (count / n)), i % (count / n)); break;       /* allgather */
    case 2: want = input(k, k % n, i); break;                                      /* broadcast */
    default: for (r = 0; r < n; r++) want += input(k, r, g_rank * count + i); break; /* reducescatter */
    }
    if (out[i] != want) {
      fail("in flight: operation %d (kind %d) [%zu] = %g, want %g", k, kind, i, out[i], want);
      return 0;
    }
  }
  return 1;
}

static void in_flight(swcclComm_t comm, swcclStream_t s) {
  static const size_t counts[OPS] = { 1, 1000, 300000, 2, 4096, 65536, 7, 100000, 3, 1, 20000, 250000 };
  float* in[OPS];
  float* out[OPS];
  size_t outCount[OPS];
  int kind[OPS], done[OPS], k, j, n = g_nranks, ndone = 0, sweeps = 0;
  size_t i;
  swcclEvent_t ev[OPS], twice = NULL;
  for (k = 0; k < OPS; k++) {
    size_t c = counts[k];
    kind[k] = k % 4 == 3 ? 1 : k % 4 == 1 && k > 4 ? 2 : k == 10 ? 3 : 0;
    outCount[k] = kind[k] == 1 ? c * n : c;
    in[k] = malloc((kind[k] == 3 ? c * n : c) * sizeof(float));
    out[k] = malloc(outCount[k] * sizeof(float));
    if (!in[k] || !out[k]) { fail("malloc"); child_exit(1); }
    for (i = 0; i < (kind[k] == 3 ? c * n : c); i++) in[k][i] = input(k, g_rank, i);
    for (i = 0; i < outCount[k]; i++) out[k][i] = -1;
    ev[k] = NULL;
    EXPECT_RESULT(swcclEventCreate(&ev[k]), swcclSuccess);
    done[k] = 0;
  }
  EXPECT_RESULT(swcclEventCreate(&twice), swcclSuccess);
  for (k = 0; k < OPS; k++) {
    size_t c = counts[k];
    switch (kind[k]) {
    case 0: EXPECT_RESULT(swcclAllReduce(in[k], out[k], c, swcclFloat, swcclSum, comm, s), swcclSuccess); break;
    case 1: EXPECT_RESULT(swcclAllGather(in[k], out[k], c, swcclFloat, comm, s), swcclSuccess); break;
    case 2: EXPECT_RESULT(swcclBroadcast(in[k], out[k], c, swcclFloat, k % n, comm, s), swcclSuccess); break;
    default: EXPECT_RESULT(swcclReduceScatter(in[k], out[k], c, swcclFloat, swcclSum, comm, s), swcclSuccess); break;
    }
    EXPECT_RESULT(swcclEventRecord(ev[k], s), swcclSuccess);
    if (k == 2) EXPECT_RESULT(swcclEventRecord(twice, s), swcclSuccess);
    if (k == 8) EXPECT_RESULT(swcclEventRecord(twice, s), swcclSuccess); /* moves the mark to after op 8 */
  }
  /* Wait for a middle one first: its buffer (and every earlier one) is final at once. */
  EXPECT_RESULT(swcclEventWait(ev[5], -1), swcclSuccess);
  for (k = 0; k <= 5; k++) {
    EXPECT_RESULT(swcclEventQuery(ev[k]), swcclSuccess);
    check_op(k, kind[k], out[k], outCount[k]);
  }
  /* Poll last to first: a complete event implies every earlier one complete. */
  while (ndone < OPS && sweeps < 1000000) {
    int seenComplete = 0;
    sweeps++;
    for (k = OPS - 1; k >= 0; k--) {
      swcclResult_t r = swcclEventQuery(ev[k]);
      if (r == swcclSuccess) {
        seenComplete = 1;
        if (!done[k]) { done[k] = 1; ndone++; if (!check_op(k, kind[k], out[k], outCount[k])) ndone = OPS; }
      } else if (r == swcclInProgress) {
        if (seenComplete) { fail("in flight: event %d is in progress after a later event completed", k); ndone = OPS; break; }
      } else {
        fail("in flight: event %d: %d (%s)", k, (int)r, swcclGetLastError(NULL));
        ndone = OPS;
        break;
      }
    }
    if (ndone < OPS) (void)swcclEventWait(ev[OPS - 1], 1); /* a pause between sweeps */
  }
  EXPECT_RESULT(swcclEventWait(ev[OPS - 1], -1), swcclSuccess);
  for (j = 0; j < OPS; j++) if (!done[j]) fail("in flight: event %d never seen complete", j);
  /* The event recorded twice marks the point after op 8: complete, and op 8 is done. */
  EXPECT_RESULT(swcclEventQuery(twice), swcclSuccess);
  EXPECT_RESULT(swcclStreamSynchronize(s), swcclSuccess);
  for (k = 0; k < OPS; k++) {
    EXPECT_RESULT(swcclEventDestroy(ev[k]), swcclSuccess);
    free(in[k]);
    free(out[k]);
  }
  EXPECT_RESULT(swcclEventDestroy(twice), swcclSuccess);
}

/* An operation that fails (rank 1 passes another count) makes its event and the later ones report it. */
static void failure(swcclComm_t bad) {
  swcclStream_t s = NULL;
  swcclEvent_t e1 = NULL, e2 = NULL, e3 = NULL, e4 = NULL, e5 = NULL;
  int32_t x[32];
  int i;
  swcclResult_t r2, r3, rs;
  char text[512];
  for (i = 0; i < 32; i++) x[i] = 1;
  EXPECT_RESULT(swcclStreamCreate(&s), swcclSuccess);
  EXPECT_RESULT(swcclEventCreate(&e1), swcclSuccess);
  EXPECT_RESULT(swcclEventCreate(&e2), swcclSuccess);
  EXPECT_RESULT(swcclEventCreate(&e3), swcclSuccess);
  EXPECT_RESULT(swcclEventCreate(&e4), swcclSuccess);
  EXPECT_RESULT(swcclEventCreate(&e5), swcclSuccess);
  EXPECT_RESULT(swcclAllReduce(x, x, 8, swcclInt32, swcclSum, bad, s), swcclSuccess);
  EXPECT_RESULT(swcclEventRecord(e1, s), swcclSuccess);
  EXPECT_RESULT(swcclAllReduce(x + 8, x + 8, g_rank == 1 ? 17 : 16, swcclInt32, swcclSum, bad, s), swcclSuccess);
  EXPECT_RESULT(swcclEventRecord(e2, s), swcclSuccess);
  /* Enqueued, or refused at once if the stream's thread already found the communicator broken. */
  (void)swcclAllReduce(x, x, 8, swcclInt32, swcclSum, bad, s);
  EXPECT_RESULT(swcclEventRecord(e3, s), swcclSuccess);
  EXPECT_RESULT(swcclEventWait(e1, -1), swcclSuccess);
  for (i = 0; i < 8; i++) if (x[i] != g_nranks) { fail("failure: the first all-reduce gave x[%d] = %d", i, (int)x[i]); break; }
  r2 = swcclEventWait(e2, -1);
  snprintf(text, sizeof text, "%s", swcclGetLastError(NULL));
  if (!is_error(r2)) fail("failure: the event after a mismatched all-reduce says %d, want an error", (int)r2);
  else if (!strstr(text, "rank")) fail("failure: the event's error text names no rank: \"%s\"", text);
  r3 = swcclEventWait(e3, -1);
  if (r3 != r2) fail("failure: the event after the skipped operation says %d, the failed one %d", (int)r3, (int)r2);
  EXPECT_RESULT(swcclEventQuery(e2), r2); /* asking again answers the same */
  EXPECT_RESULT(swcclEventQuery(e1), swcclSuccess);
  rs = swcclStreamSynchronize(s);
  if (rs != r2) fail("failure: swcclStreamSynchronize says %d, the event %d", (int)rs, (int)r2);
  EXPECT_RESULT(swcclEventQuery(e2), r2); /* recorded before the synchronize: still the error */
  EXPECT_RESULT(swcclEventRecord(e4, s), swcclSuccess);
  EXPECT_RESULT(swcclEventQuery(e4), swcclSuccess); /* recorded after it: the error was reported */
  /* The communicator is broken: the next operation is refused at once, nothing is enqueued. */
  if (!is_error(swcclAllReduce(x, x, 8, swcclInt32, swcclSum, bad, s))) fail("failure: an operation on the broken communicator was accepted");
  EXPECT_RESULT(swcclEventRecord(e5, s), swcclSuccess);
  EXPECT_RESULT(swcclEventWait(e5, -1), swcclSuccess);
  EXPECT_RESULT(swcclStreamSynchronize(s), swcclSuccess);
  EXPECT_RESULT(swcclEventDestroy(e1), swcclSuccess);
  EXPECT_RESULT(swcclEventDestroy(e2), swcclSuccess);
  EXPECT_RESULT(swcclEventDestroy(e3), swcclSuccess);
  EXPECT_RESULT(swcclEventDestroy(e4), swcclSuccess);
  EXPECT_RESULT(swcclEventDestroy(e5), swcclSuccess);
  EXPECT_RESULT(swcclStreamDestroy(s), swcclSuccess);
}

/* An event outlives its stream; the destroyed stream cannot be recorded on. */
static void destroyed_stream(swcclComm_t comm) {
  swcclStream_t s = NULL;
  swcclEvent_t e = NULL;
  static float x[50000];
  int i, n = g_nranks;
  for (i = 0; i < 50000; i++) x[i] = (float)(i % 100);
  EXPECT_RESULT(swcclStreamCreate(&s), swcclSuccess);
  EXPECT_RESULT(swcclEventCreate(&e), swcclSuccess);
  EXPECT_RESULT(swcclAllReduce(x, x, 50000, swcclFloat, swcclSum, comm, s), swcclSuccess);
  EXPECT_RESULT(swcclEventRecord(e, s), swcclSuccess);
  EXPECT_RESULT(swcclStreamDestroy(s), swcclSuccess); /* completes the work first */
  EXPECT_RESULT(swcclEventQuery(e), swcclSuccess);
  EXPECT_RESULT(swcclEventWait(e, -1), swcclSuccess);
  EXPECT_RESULT(swcclEventRecord(e, s), swcclInvalidUsage);
  for (i = 0; i < 50000; i++)
    if (x[i] != (float)(n * (i % 100))) { fail("destroyed stream: x[%d] = %g", i, x[i]); break; }
  EXPECT_RESULT(swcclEventDestroy(e), swcclSuccess);
}

/* A forked child may not use its parent's event. */
static void forked(swcclStream_t s) {
  swcclEvent_t e = NULL;
  pid_t pid;
  int st = 0;
  EXPECT_RESULT(swcclEventCreate(&e), swcclSuccess);
  EXPECT_RESULT(swcclEventRecord(e, s), swcclSuccess);
  fflush(stdout);
  pid = fork();
  if (pid < 0) { fail("fork: %s", strerror(errno)); return; }
  if (pid == 0) {
    swcclEvent_t mine = NULL;
    int bad = 0;
    alarm(30);
    if (swcclEventQuery(e) != swcclInvalidUsage || !strstr(swcclGetLastError(NULL), "inherited")) bad |= 1;
    if (swcclEventWait(e, -1) != swcclInvalidUsage) bad |= 2;
    if (swcclEventRecord(e, NULL) != swcclInvalidUsage) bad |= 4;
    if (swcclEventCreate(&mine) != swcclSuccess || swcclEventRecord(mine, NULL) != swcclSuccess ||
        swcclEventQuery(mine) != swcclSuccess || swcclEventDestroy(mine) != swcclSuccess) bad |= 8;
    if (swcclEventRecord(mine, s) != swcclInvalidUsage) bad |= 16; /* destroyed; and s is the parent's */
    if (swcclEventDestroy(e) != swcclSuccess) bad |= 32;             /* forgotten */
    if (bad) printf("rank %d: forked child: FAIL code %d (%s)\n", g_rank, bad, swcclGetLastError(NULL));
    child_exit(bad ? 1 : 0);
  }
  while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) fail("fork: the child's checks failed (status 0x%x)", (unsigned)st);
  EXPECT_RESULT(swcclEventQuery(e), swcclSuccess); /* the parent's event is intact */
  EXPECT_RESULT(swcclEventDestroy(e), swcclSuccess);
}

/* The last rank leaves; the others' operations fail and their events report it. */
static void dead_peer(swcclComm_t dead) {
  swcclStream_t s = NULL;
  swcclEvent_t a = NULL, b = NULL;
  float x[1024];
  int i;
  swcclResult_t ra, rb;
  char text[512];
  for (i = 0; i < 1024; i++) x[i] = 1;
  EXPECT_RESULT(swcclStreamCreate(&s), swcclSuccess);
  EXPECT_RESULT(swcclEventCreate(&a), swcclSuccess);
  EXPECT_RESULT(swcclEventCreate(&b), swcclSuccess);
  EXPECT_RESULT(swcclAllReduce(x, x, 1024, swcclFloat, swcclSum, dead, s), swcclSuccess);
  EXPECT_RESULT(swcclEventRecord(a, s), swcclSuccess);
  EXPECT_RESULT(swcclAllReduce(x, x, 1024, swcclFloat, swcclSum, dead, s), swcclSuccess);
  EXPECT_RESULT(swcclEventRecord(b, s), swcclSuccess);
  ra = swcclEventWait(a, -1);
  snprintf(text, sizeof text, "%s", swcclGetLastError(NULL));
  rb = swcclEventWait(b, -1);
  if (!is_error(ra)) fail("dead peer: the event says %d, want an error", (int)ra);
  else if (!strstr(text, "rank")) fail("dead peer: the error names no rank: \"%s\"", text);
  if (rb != ra) fail("dead peer: the later event says %d, the first %d", (int)rb, (int)ra);
  swcclStreamDestroy(s); /* returns the error again unless cleared */
  EXPECT_RESULT(swcclEventDestroy(a), swcclSuccess);
  EXPECT_RESULT(swcclEventDestroy(b), swcclSuccess);
}

static void rank_main(int rank, int n, void* arg) {
  swcclComm_t comm = NULL, bad = NULL, dead = NULL;
  swcclStream_t s = NULL;
  swcclConfig_t cfg = SWCCL_CONFIG_INITIALIZER;
  (void)arg;
  (void)g_verbose;
  g_rank = rank;
  g_nranks = n;
  close(g_go[1 - (rank == 0)]); /* rank 0 writes, the others read */
  cfg.timeoutMs = 30000;
  if (swcclCommInitRankConfig(&comm, n, g_id, rank, &cfg) != swcclSuccess) {
    fail("swcclCommInitRankConfig: %s", swcclGetLastError(NULL));
    child_exit(1);
  }
  cfg.timeoutMs = 10000;
  cfg.commName = "bad";
  EXPECT_RESULT(swcclCommSplit(comm, 0, rank, &bad, &cfg), swcclSuccess);
  cfg.commName = "dead";
  EXPECT_RESULT(swcclCommSplit(comm, 0, rank, &dead, &cfg), swcclSuccess);
  EXPECT_RESULT(swcclStreamCreate(&s), swcclSuccess);
  handles(s);
  not_joined(comm, s);
  in_flight(comm, s);
  if (n > 1 && bad) failure(bad);
  destroyed_stream(comm);
  if (rank == 0) forked(s);
  EXPECT_RESULT(swcclStreamSynchronize(s), swcclSuccess);
  EXPECT_RESULT(swcclBarrier(comm, NULL), swcclSuccess); /* everyone is done before the last rank leaves */
  if (n > 1 && dead) {
    if (rank == n - 1) child_exit(g_failures ? 1 : 0);
    dead_peer(dead);
  }
  EXPECT_RESULT(swcclStreamDestroy(s), swcclSuccess);
  if (bad) swcclCommAbort(bad);
  if (dead) swcclCommAbort(dead);
  swcclCommAbort(comm); /* a peer left: do not wait for it */
  child_exit(g_failures ? 1 : 0);
}

int main(int argc, char** argv) {
  int n = argc > 1 ? atoi(argv[1]) : 2;
  swcclResult_t res;
  if (n < 2 || n > MAX_RANKS) { fprintf(stderr, "usage: event_test NRANKS (2..%d)\n", MAX_RANKS); return 2; }
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (pipe(g_go) != 0) { printf("parent: FAIL pipe: %s\n", strerror(errno)); return 1; }
  res = swcclGetUniqueId(&g_id);
  if (res != swcclSuccess) {
    printf("parent: FAIL swcclGetUniqueId returned %d: %s\n", (int)res, str_or_null(swcclGetLastError(NULL)));
    return 1;
  }
  return fork_ranks(n, rank_main, NULL, 0);
}
