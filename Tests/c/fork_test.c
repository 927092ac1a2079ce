/* Tests/c/fork_test.c - a process that loaded libswccl.so forks (Python's multiprocessing, PyTorch's
 * DataLoader workers, a C server that forks workers).
 *
 *   usage: fork_test CHILDREN
 *
 * Part 1, a forked child starts its own job: the parent calls into the library, starts threads that
 * call into it too and then wait, and forks CHILDREN children one after the other; each child calls
 * swcclCommInitAll (3 communicators, threads of the child) and an allreduce on all three in a group,
 * checks the sums and destroys them. Before the fork handling, the child's first thread still carried
 * its parent thread's id in the Swift runtime's lock words and the child spun forever at 100 % CPU;
 * every child here must finish within its deadline.
 *
 * Part 2, a forked child inherits a communicator: two ranks (forked processes) make a communicator
 * over SWCCL_TRANSPORTS=tcp and then =shm; rank 0 forks a grandchild that calls an allreduce on the
 * inherited communicator (swcclInvalidUsage, the error says it is a forked child's), destroys it
 * (swcclSuccess, a local no-op) and exits normally (exit(0), atexit handlers run). The parent job then
 * runs 20 allreduces, checked exactly: the child's teardown must not have said goodbye on the parent's
 * connections (a TCP BYE, the shared-memory closed flag).
 *
 * Prints "N passed, M failed" last. */
#define _GNU_SOURCE 1
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "swccl.h"

static int passed = 0, failed = 0;
static void pass(const char* what) { passed++; printf("PASS: %s\n", what); fflush(stdout); }
static void failf(const char* what, const char* detail) {
  failed++;
  printf("FAIL: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
  fflush(stdout);
}

/* Waits for `pid` at most `seconds`; kills it then. Returns its exit code, or -1 (hung and killed) or
 * -2 (killed by a signal). */
static int wait_bounded(pid_t pid, int seconds) {
  struct timespec start, now;
  clock_gettime(CLOCK_MONOTONIC, &start);
  for (;;) {
    int st = 0;
    pid_t got = waitpid(pid, &st, WNOHANG);
    if (got == pid) return WIFEXITED(st) ? WEXITSTATUS(st) : -2;
    if (got < 0 && errno != EINTR) return -2;
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (now.tv_sec - start.tv_sec >= seconds) {
      kill(pid, SIGKILL);
      waitpid(pid, &st, 0);
      return -1;
    }
    usleep(10000);
  }
}

/* ---- part 1 ------------------------------------------------------------------------------------ */

static pthread_mutex_t park_m = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t park_c = PTHREAD_COND_INITIALIZER;
static int park_ready = 0, park_release = 0;

/* A thread that uses the library, then waits (the process is multi-threaded when it forks). */
static void* parked_user(void* arg) {
  (void)arg;
  int v = 0;
  swcclUniqueId id;
  for (int i = 0; i < 50; i++) { swcclGetVersion(&v); swcclGetUniqueId(&id); }
  pthread_mutex_lock(&park_m);
  park_ready++;
  pthread_cond_broadcast(&park_c);
  while (!park_release) pthread_cond_wait(&park_c, &park_m);
  pthread_mutex_unlock(&park_m);
  return NULL;
}

static int child_initall(void) {
  enum { N = 3, COUNT = 1001 };
  swcclComm_t comms[N];
  float* buf[N];
  swcclResult_t r = swcclCommInitAll(comms, N, NULL);
  if (r != swcclSuccess) { printf("child %d: swcclCommInitAll: %s\n", (int)getpid(), swcclGetLastError(NULL)); return 2; }
  for (int i = 0; i < N; i++) {
    buf[i] = malloc(COUNT * sizeof(float));
    for (int k = 0; k < COUNT; k++) buf[i][k] = (float)(i + 1) * (float)(k % 7);
  }
  swcclGroupStart();
  for (int i = 0; i < N; i++) swcclAllReduce(buf[i], buf[i], COUNT, swcclFloat, swcclSum, comms[i], NULL);
  r = swcclGroupEnd();
  if (r != swcclSuccess) { printf("child %d: group allreduce: %s\n", (int)getpid(), swcclGetLastError(NULL)); return 3; }
  for (int i = 0; i < N; i++)
    for (int k = 0; k < COUNT; k++)
      if (buf[i][k] != 6.0f * (float)(k % 7)) { printf("child %d: comm %d element %d is %g\n", (int)getpid(), i, k, buf[i][k]); return 4; }
  for (int i = 0; i < N; i++) { swcclCommDestroy(comms[i]); free(buf[i]); }
  return 0;
}

static void part1(int children) {
  pthread_t t[2];
  int v = 0;
  swcclUniqueId id;
  swcclGetVersion(&v);
  swcclGetUniqueId(&id);
  for (int i = 0; i < 2; i++) pthread_create(&t[i], NULL, parked_user, NULL);
  pthread_mutex_lock(&park_m);
  while (park_ready < 2) pthread_cond_wait(&park_c, &park_m);
  pthread_mutex_unlock(&park_m);
  int ok = 0;
  char detail[256] = "";
  for (int c = 0; c < children; c++) {
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) _exit(child_initall());
    int code = wait_bounded(pid, 60);
    if (code == 0) ok++;
    else if (detail[0] == 0)
      snprintf(detail, sizeof detail, "child %d %s", c, code == -1 ? "hung (killed after 60 s)" : code == -2 ? "was killed by a signal" : "failed");
  }
  pthread_mutex_lock(&park_m);
  park_release = 1;
  pthread_cond_broadcast(&park_c);
  pthread_mutex_unlock(&park_m);
  for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
  char what[128];
  snprintf(what, sizeof what, "%d children forked from a threaded parent each run swcclCommInitAll and a group allreduce (%d ok)", children, ok);
  if (ok == children) pass(what); else failf(what, detail);
}

/* ---- part 2 ------------------------------------------------------------------------------------ */

static int check_sum(swcclComm_t comm, int rank, int round) {
  enum { COUNT = 4097 };
  static double b[COUNT];
  for (int k = 0; k < COUNT; k++) b[k] = (double)(rank + 1) * (k + round);
  if (swcclAllReduce(b, b, COUNT, swcclFloat64, swcclSum, comm, NULL) != swcclSuccess) {
    printf("rank %d: allreduce round %d: %s\n", rank, round, swcclGetLastError(comm));
    return 1;
  }
  for (int k = 0; k < COUNT; k++)
    if (b[k] != 3.0 * (k + round)) { printf("rank %d: round %d element %d is %g\n", rank, round, k, b[k]); return 1; }
  return 0;
}

static int rank_main(int rank, swcclUniqueId id) {
  swcclComm_t comm;
  if (swcclCommInitRank(&comm, 2, id, rank) != swcclSuccess) { printf("rank %d: init: %s\n", rank, swcclGetLastError(NULL)); return 2; }
  if (check_sum(comm, rank, 0)) return 3;
  if (rank == 0) {
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
      static double x[8];
      swcclResult_t r = swcclAllReduce(x, x, 8, swcclFloat64, swcclSum, comm, NULL);
      const char* e = swcclGetLastError(comm);
      if (r != swcclInvalidUsage || !strstr(e, "forked child")) {
        printf("grandchild: allreduce on the inherited communicator returned %d: %s\n", (int)r, e);
        exit(5);
      }
      if (swcclCommDestroy(comm) != swcclSuccess) { printf("grandchild: destroy: %s\n", swcclGetLastError(NULL)); exit(6); }
      exit(0);  /* a normal exit: atexit handlers and all */
    }
    int code = wait_bounded(pid, 30);
    if (code != 0) { printf("rank 0: the forked child ended with %d\n", code); return 4; }
  }
  usleep(500 * 1000);  /* time for a goodbye on the parent's connections to arrive, had it been sent */
  for (int round = 1; round <= 20; round++)
    if (check_sum(comm, rank, round)) return 7;
  if (swcclCommDestroy(comm) != swcclSuccess) { printf("rank %d: destroy: %s\n", rank, swcclGetLastError(NULL)); return 8; }
  return 0;
}

static void part2(const char* transports) {
  swcclUniqueId id;
  setenv("SWCCL_TRANSPORTS", transports, 1);
  if (swcclGetUniqueId(&id) != swcclSuccess) { failf("swcclGetUniqueId", swcclGetLastError(NULL)); return; }
  pid_t pids[2];
  for (int r = 0; r < 2; r++) {
    fflush(stdout);
    pids[r] = fork();
    if (pids[r] == 0) _exit(rank_main(r, id));
  }
  int codes[2];
  for (int r = 0; r < 2; r++) codes[r] = wait_bounded(pids[r], 90);
  char what[160], detail[128];
  snprintf(what, sizeof what, "%s: a forked child's use and teardown of an inherited communicator leave the parent's job intact", transports);
  snprintf(detail, sizeof detail, "rank 0 ended with %d, rank 1 with %d", codes[0], codes[1]);
  if (codes[0] == 0 && codes[1] == 0) pass(what); else failf(what, detail);
  unsetenv("SWCCL_TRANSPORTS");
}

int main(int argc, char** argv) {
  int children = argc > 1 ? atoi(argv[1]) : 8;
  setvbuf(stdout, NULL, _IOLBF, 0);
  part1(children);
  part2("tcp");
  part2("shm");
  printf("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
