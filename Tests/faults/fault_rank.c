/* Tests/faults/fault_rank.c - one rank of the fault campaign (Tests/faults/campaign.py starts them).
 *
 * Joins a communicator with swcclCommInitFromEnv (SWCCL_RANK, SWCCL_SIZE, SWCCL_COMM_ID), then loops
 * over collectives, checking every result exactly: inputs are generated from (rank, iteration,
 * collective, index) as small int32 values, so every rank knows every other rank's input and the exact
 * result. Writes one line per event to stdout (line-buffered), which the campaign reads:
 *   LOOP t=MS                     entered the loop (MS: CLOCK_MONOTONIC in milliseconds)
 *   ERROR t=MS coll=C iter=I code=R msg=TEXT   a call failed (TEXT: swcclGetLastError)
 *   WRONG coll=C iter=I elem=K got=G want=W     a call succeeded with a wrong result
 *   RECOVERED                     (FAULT_SHRINK) the survivors' shrunk communicator works
 *   DONE                          every iteration passed
 * Exit: 0 DONE or an ERROR that ended the loop; 3 WRONG; 4 init failed (printed as ERROR too).
 *
 * Environment:
 *   FAULT_COLLS     comma list (default all): allreduce broadcast reduce allgather reducescatter
 *                   alltoall gather scatter sendrecv barrier
 *   FAULT_ITERS     iterations (default 100); each runs every collective of FAULT_COLLS
 *   FAULT_COUNT     elements per rank (default 4099; odd iterations use 16x as many: large messages)
 *   FAULT_MODE      plain | stream (each call on a stream, then synchronize) | group (each call in a group)
 *   FAULT_MISMATCH  COLL:WHAT:ITER — at iteration ITER this rank calls COLL with a different argument,
 *                   WHAT one of count, zero, root, type, op
 *   FAULT_FORK_AT   at this iteration the rank forks a child that calls an allreduce on the inherited
 *                   communicator (must fail), destroys it and exits normally
 *   FAULT_SHRINK    a file: after an error, wait for it to name the failed rank, shrink without it
 *                   and run 3 checked allreduces on the survivors
 *   FAULT_PAUSE_MS  sleep this long before each iteration (slow loops for stop/kill timing)
 */
#define _GNU_SOURCE 1
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "swccl.h"

static const char* names[] = {"allreduce", "broadcast", "reduce", "allgather", "reducescatter",
                              "alltoall", "gather", "scatter", "sendrecv", "barrier"};
enum { NCOLL = 10 };

static int rank, n;
static swcclComm_t comm;
static swcclStream_t stream;
static int mode;  /* 0 plain, 1 stream, 2 group */

static long long now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static int32_t v(int r, long long k, int iter, int c) { return (int32_t)(r + 1) * (int32_t)((k + 7 * iter + 3 * c) % 97 + 1); }

static void error_line(const char* coll, int iter, swcclResult_t code, swcclComm_t c) {
  const char* msg = swcclGetLastError(c);
  if (!msg || !*msg) msg = swcclGetLastError(NULL);
  printf("ERROR t=%lld coll=%s iter=%d code=%d msg=%s\n", now_ms(), coll, iter, (int)code, msg ? msg : "");
  fflush(stdout);
}

/* Runs one call in the configured mode; returns its result (the synchronize's or group end's). */
#define CALL(expr)                                                         \
  do {                                                                     \
    swcclResult_t r_;                                                      \
    if (mode == 2) swcclGroupStart();                                      \
    r_ = (expr);                                                           \
    if (mode == 2) { swcclResult_t e_ = swcclGroupEnd(); if (r_ == swcclSuccess) r_ = e_; } \
    if (mode == 1 && r_ == swcclSuccess) r_ = swcclStreamSynchronize(stream); \
    result = r_;                                                           \
  } while (0)

static int wrong(const char* coll, int iter, long long k, int32_t got, int32_t want) {
  printf("WRONG coll=%s iter=%d elem=%lld got=%d want=%d\n", coll, iter, k, (int)got, (int)want);
  fflush(stdout);
  return 3;
}

/* One collective; 0 ok, 2 error (printed), 3 wrong (printed). */
static int run(int c, int iter, int32_t* s, int32_t* r, long long count, const char* mismatch, int mismatchIter) {
  const char* coll = names[c];
  swcclResult_t result = swcclSuccess;
  swcclStream_t st = mode == 1 ? stream : NULL;
  long long cnt = count;
  int root = iter % n;
  swcclDataType_t type = swcclInt32;
  swcclRedOp_t op = swcclSum;
  long long S = (long long)n * (n + 1) / 2;
  if (mismatch && iter == mismatchIter && strncmp(mismatch, coll, strlen(coll)) == 0 && mismatch[strlen(coll)] == ':') {
    const char* what = mismatch + strlen(coll) + 1;
    if (!strncmp(what, "count", 5)) cnt = count + 1;
    else if (!strncmp(what, "zero", 4)) cnt = 0;
    else if (!strncmp(what, "root", 4)) root = (root + 1) % n;
    else if (!strncmp(what, "type", 4)) type = swcclFloat32;
    else if (!strncmp(what, "op", 2)) op = swcclMax;
  }
  long long k;
  int p;
  switch (c) {
  case 0:
    for (k = 0; k < count; k++) s[k] = v(rank, k, iter, c);
    CALL(swcclAllReduce(s, r, (size_t)cnt, type, op, comm, st));
    if (result) break;
    for (k = 0; k < count; k++) if (r[k] != (int32_t)(S * v(0, k, iter, c))) return wrong(coll, iter, k, r[k], (int32_t)(S * v(0, k, iter, c)));
    return 0;
  case 1:
    for (k = 0; k < count; k++) r[k] = rank == root ? v(root, k, iter, c) : -1;
    CALL(swcclBroadcast(r, r, (size_t)cnt, type, root, comm, st));
    if (result) break;
    root = iter % n;
    for (k = 0; k < count; k++) if (r[k] != v(root, k, iter, c)) return wrong(coll, iter, k, r[k], v(root, k, iter, c));
    return 0;
  case 2:
    for (k = 0; k < count; k++) { s[k] = v(rank, k, iter, c); r[k] = -1; }
    CALL(swcclReduce(s, r, (size_t)cnt, type, op, root, comm, st));
    if (result) break;
    if (rank == iter % n)
      for (k = 0; k < count; k++) if (r[k] != (int32_t)(S * v(0, k, iter, c))) return wrong(coll, iter, k, r[k], (int32_t)(S * v(0, k, iter, c)));
    return 0;
  case 3:
    for (k = 0; k < count; k++) s[k] = v(rank, k, iter, c);
    CALL(swcclAllGather(s, r, (size_t)cnt, type, comm, st));
    if (result) break;
    for (p = 0; p < n; p++)
      for (k = 0; k < count; k++) if (r[p * count + k] != v(p, k, iter, c)) return wrong(coll, iter, p * count + k, r[p * count + k], v(p, k, iter, c));
    return 0;
  case 4:
    for (k = 0; k < n * count; k++) s[k] = v(rank, k, iter, c);
    CALL(swcclReduceScatter(s, r, (size_t)cnt, type, op, comm, st));
    if (result) break;
    for (k = 0; k < count; k++) {
      int32_t want = (int32_t)(S * v(0, rank * count + k, iter, c));
      if (r[k] != want) return wrong(coll, iter, k, r[k], want);
    }
    return 0;
  case 5:
    for (k = 0; k < n * count; k++) s[k] = v(rank, k, iter, c);
    CALL(swcclAlltoAll(s, r, (size_t)cnt, type, comm, st));
    if (result) break;
    for (p = 0; p < n; p++)
      for (k = 0; k < count; k++) {
        int32_t want = v(p, rank * count + k, iter, c);
        if (r[p * count + k] != want) return wrong(coll, iter, p * count + k, r[p * count + k], want);
      }
    return 0;
  case 6:
    for (k = 0; k < count; k++) s[k] = v(rank, k, iter, c);
    CALL(swcclGather(s, r, (size_t)cnt, type, root, comm, st));
    if (result) break;
    if (rank == iter % n)
      for (p = 0; p < n; p++)
        for (k = 0; k < count; k++) if (r[p * count + k] != v(p, k, iter, c)) return wrong(coll, iter, p * count + k, r[p * count + k], v(p, k, iter, c));
    return 0;
  case 7:
    for (k = 0; k < n * count; k++) s[k] = v(root, k, iter, c);
    CALL(swcclScatter(s, r, (size_t)cnt, type, root, comm, st));
    if (result) break;
    root = iter % n;
    for (k = 0; k < count; k++) if (r[k] != v(root, rank * count + k, iter, c)) return wrong(coll, iter, k, r[k], v(root, rank * count + k, iter, c));
    return 0;
  case 8: {
    int next = (rank + 1) % n, prev = (rank + n - 1) % n;
    for (k = 0; k < count; k++) s[k] = v(rank, k, iter, c);
    if (n == 1) return 0;
    swcclGroupStart();
    swcclResult_t a = swcclSend(s, (size_t)cnt, type, next, comm, st);
    swcclResult_t b = swcclRecv(r, (size_t)count, type, prev, comm, st);
    result = swcclGroupEnd();
    if (!result) result = a ? a : b;
    if (!result && mode == 1) result = swcclStreamSynchronize(stream);
    if (result) break;
    for (k = 0; k < count; k++) if (r[k] != v(prev, k, iter, c)) return wrong(coll, iter, k, r[k], v(prev, k, iter, c));
    return 0;
  }
  case 9:
    CALL(swcclBarrier(comm, st));
    if (result) break;
    return 0;
  }
  error_line(coll, iter, result, comm);
  return 2;
}

static void recover(const char* file) {
  int victim = -1;
  for (int i = 0; i < 600 && victim < 0; i++) {  /* up to 60 s */
    FILE* f = fopen(file, "r");
    if (f) { if (fscanf(f, "%d", &victim) != 1) victim = -1; fclose(f); }
    if (victim < 0) usleep(100 * 1000);
  }
  if (victim < 0) { printf("ERROR t=%lld coll=shrink iter=0 code=0 msg=no victim named in %s\n", now_ms(), file); return; }
  swcclComm_t small = NULL;
  swcclResult_t r = swcclCommShrink(comm, &victim, 1, &small, NULL, SWCCL_SHRINK_ABORT);
  if (r != swcclSuccess) { error_line("shrink", 0, r, comm); return; }
  int sn = 0, sr = 0;
  swcclCommCount(small, &sn);
  swcclCommUserRank(small, &sr);
  int32_t x[1000];
  for (int it = 0; it < 3; it++) {
    for (int k = 0; k < 1000; k++) x[k] = (sr + 1) * (k + it);
    r = swcclAllReduce(x, x, 1000, swcclInt32, swcclSum, small, NULL);
    if (r) { error_line("allreduce-after-shrink", it, r, small); return; }
    for (int k = 0; k < 1000; k++)
      if (x[k] != sn * (sn + 1) / 2 * (k + it)) { wrong("allreduce-after-shrink", it, k, x[k], sn * (sn + 1) / 2 * (k + it)); exit(3); }
  }
  printf("RECOVERED\n");
  fflush(stdout);
  swcclCommDestroy(small);
}

int main(void) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  const char* e;
  int iters = (e = getenv("FAULT_ITERS")) ? atoi(e) : 100;
  long long count = (e = getenv("FAULT_COUNT")) ? atoll(e) : 4099;
  const char* colls = getenv("FAULT_COLLS");
  const char* mismatch = getenv("FAULT_MISMATCH");
  int mismatchIter = -1;
  if (mismatch) { const char* last = strrchr(mismatch, ':'); mismatchIter = last ? atoi(last + 1) : -1; }
  int forkAt = (e = getenv("FAULT_FORK_AT")) ? atoi(e) : -1;
  int pauseMs = (e = getenv("FAULT_PAUSE_MS")) ? atoi(e) : 0;
  const char* shrink = getenv("FAULT_SHRINK");
  mode = (e = getenv("FAULT_MODE")) ? (!strcmp(e, "stream") ? 1 : !strcmp(e, "group") ? 2 : 0) : 0;
  int use[NCOLL];
  for (int c = 0; c < NCOLL; c++) use[c] = !colls || strstr(colls, names[c]) != NULL;

  swcclResult_t r = swcclCommInitFromEnv(&comm, NULL);
  if (r != swcclSuccess) { error_line("init", 0, r, NULL); return 4; }
  swcclCommUserRank(comm, &rank);
  swcclCommCount(comm, &n);
  if (mode == 1 && swcclStreamCreate(&stream) != swcclSuccess) { error_line("stream", 0, r, NULL); return 4; }
  size_t big = (size_t)n * (size_t)(count * 16 + 1) + 16;
  int32_t* s = malloc(big * sizeof(int32_t));
  int32_t* rb = malloc(big * sizeof(int32_t));
  printf("LOOP t=%lld\n", now_ms());
  for (int iter = 0; iter < iters; iter++) {
    if (pauseMs) usleep((useconds_t)pauseMs * 1000);
    if (iter == forkAt) {
      fflush(stdout);
      pid_t pid = fork();
      if (pid == 0) {
        int32_t x[8] = {0};
        if (swcclAllReduce(x, x, 8, swcclInt32, swcclSum, comm, NULL) == swcclSuccess) { printf("WRONG coll=inherited iter=%d elem=0 got=0 want=0\n", iter); _exit(3); }
        swcclCommDestroy(comm);
        exit(0);
      }
      int st = 0;
      waitpid(pid, &st, 0);
      if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) { printf("WRONG coll=forked-child iter=%d elem=0 got=%d want=0\n", iter, st); return 3; }
    }
    long long cnt = (iter % 2) ? count * 16 + 1 : count;
    for (int c = 0; c < NCOLL; c++) {
      if (!use[c]) continue;
      int rc = run(c, iter, s, rb, cnt, mismatch, mismatchIter);
      if (rc == 3) return 3;
      if (rc == 2) {
        if (shrink) recover(shrink);
        swcclCommAbort(comm);
        return 0;
      }
    }
  }
  if (mode == 1) swcclStreamDestroy(stream);
  r = swcclCommDestroy(comm);
  if (r != swcclSuccess) { error_line("destroy", iters, r, NULL); return 0; }
  printf("DONE\n");
  return 0;
}
