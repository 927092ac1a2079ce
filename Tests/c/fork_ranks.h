/* Tests/c/fork_ranks.h - what the forking C tests share.
 * Rank side: the rank's identity, failure lines (at most MAX_FAIL_LINES per rank), leaving the child.
 * Parent side: start one child process per rank, wait for all of them under one overall alarm
 * (children still running then are SIGKILLed), print a line per failed rank and the closing
 * "N passed, M failed" line (counting ranks).
 *
 * The including file defines MAX_RANKS, MAX_FAIL_LINES and TIMEOUT_SECONDS and includes <errno.h>,
 * <signal.h>, <stdarg.h>, <stdio.h>, <string.h>, <sys/types.h>, <sys/wait.h> and <unistd.h>. */
#ifndef SWCCL_TEST_FORK_RANKS_H
#define SWCCL_TEST_FORK_RANKS_H

/* ---- rank side ------------------------------------------------------------------------------ */

static int g_rank = -1;
static int g_nranks = 0;
static int g_verbose = 0;
static int g_failures = 0; /* failed checks in this child */

#ifdef __GNUC__
static void fail(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
#endif

/* Counts a failed check and prints it as one line "rank R: FAIL ...". */
static void fail(const char* fmt, ...) {
  va_list ap;
  g_failures++;
  if (g_failures > MAX_FAIL_LINES) {
    if (g_failures == MAX_FAIL_LINES + 1) printf("rank %d: FAIL (further failures not shown)\n", g_rank);
    return;
  }
  printf("rank %d: FAIL ", g_rank);
  va_start(ap, fmt);
  vprintf(fmt, ap);
  va_end(ap);
  printf("\n");
  fflush(stdout);
}

static const char* str_or_null(const char* s) { return s ? s : "(null)"; }

#ifdef SWCCL_H_
/* A check of one call's result; on a mismatch, the call, both results and the last error text. */
#define EXPECT_RESULT(call, want)                                                                      \
  do {                                                                                                 \
    swcclResult_t r_ = (call);                                                                         \
    if (r_ != (want)) fail("%s returned %d, expected %s (%s)", #call, (int)r_, #want,                  \
                           str_or_null(swcclGetLastError(NULL)));                                      \
  } while (0)
#endif

/* Leaves the child without running atexit handlers inherited from the parent. */
static void child_exit(int code) {
  fflush(stdout);
  fflush(stderr);
  _exit(code);
}

/* ---- parent side ---------------------------------------------------------------------------- */

static volatile pid_t g_children[MAX_RANKS];
static volatile int g_nchildren = 0;
static volatile sig_atomic_t g_timed_out = 0;

static void kill_children(void) { /* async-signal-safe */
  int i;
  for (i = 0; i < g_nchildren; i++)
    if (g_children[i] > 0) kill(g_children[i], SIGKILL);
}

static void on_alarm(int sig) {
  (void)sig;
  g_timed_out = 1;
  kill_children();
}

/* The body of one rank; it ends the child process itself (with _exit) and never returns. */
typedef void (*rank_main_fn)(int rank, int nranks, void* arg);

/* Runs `nranks` ranks as children; returns the process exit code (non-zero if a rank or the parent,
 * as told by `parentFailed`, failed). */
static int fork_ranks(int nranks, rank_main_fn rank_main, void* arg, int parentFailed) {
  int status[MAX_RANKS];
  int r, passed = 0, failed = 0;
  struct sigaction sa;

  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_alarm;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;
  sigaction(SIGALRM, &sa, NULL);
  alarm(TIMEOUT_SECONDS);

  fflush(stdout);
  fflush(stderr);
  for (r = 0; r < nranks; r++) {
    pid_t pid = fork();
    if (pid < 0) {
      printf("parent: FAIL fork of rank %d: %s\n", r, strerror(errno));
      break;
    }
    if (pid == 0) {
      signal(SIGALRM, SIG_DFL);
      alarm(TIMEOUT_SECONDS + 5); /* in case the parent itself goes away */
      rank_main(r, nranks, arg);
      child_exit(1); /* not reached */
    }
    g_children[r] = pid;
    g_nchildren = r + 1;
  }
  if (g_nchildren < nranks) kill_children(); /* fork failed: the others cannot complete */

  for (r = 0; r < nranks; r++) {
    int st = 0;
    pid_t got;
    if (r >= g_nchildren) {
      printf("rank %d: FAILED (not started)\n", r);
      status[r] = 1;
      continue;
    }
    do {
      got = waitpid(g_children[r], &st, 0);
    } while (got < 0 && errno == EINTR);
    if (got < 0) {
      printf("rank %d: FAILED (waitpid: %s)\n", r, strerror(errno));
      status[r] = 1;
    } else if (WIFEXITED(st) && WEXITSTATUS(st) == 0) {
      status[r] = 0;
    } else if (WIFEXITED(st)) {
      printf("rank %d: FAILED (exit code %d)\n", r, WEXITSTATUS(st));
      status[r] = 1;
    } else if (WIFSIGNALED(st)) {
      if (g_timed_out && WTERMSIG(st) == SIGKILL)
        printf("rank %d: FAILED (timed out after %d s, killed)\n", r, TIMEOUT_SECONDS);
      else
        printf("rank %d: FAILED (killed by signal %d)\n", r, WTERMSIG(st));
      status[r] = 1;
    } else {
      printf("rank %d: FAILED (status 0x%x)\n", r, (unsigned)st);
      status[r] = 1;
    }
    g_children[r] = 0;
  }
  alarm(0);

  for (r = 0; r < nranks; r++) {
    if (status[r] == 0) passed++;
    else failed++;
  }
  printf("%d passed, %d failed\n", passed, failed);
  return (failed || parentFailed) ? 1 : 0;
}

#endif
