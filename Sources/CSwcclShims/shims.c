/* What must run at fork time, before any Swift code can: the child's bookkeeping of pthread_atfork.
 * Nothing here is exported from libswccl.so (hidden visibility; the version script keeps swccl* only). */
#define _GNU_SOURCE 1 /* F_OFD_SETLK, F_OFD_GETLK */
#include "swccl_shims.h"
#include <pthread.h>
#include <stdatomic.h>

#define CSHIM_HIDDEN __attribute__((visibility("hidden")))

/* Bumped in every forked child: objects remember the generation they were made in, so a child can
 * tell an inherited communicator (its parent's) from its own without a system call. */
static _Atomic uint64_t fork_generation;
/* Set on the one thread a forked child starts with: the Swift runtime on that thread still caches the
 * parent thread's id for its locks (FUTEX_LOCK_PI owner words), so Swift code that contends a
 * runtime lock there spins forever. Library entry points run on a fresh thread while this is set. */
static __thread int stale_thread;
/* Descriptors that hold a liveness lock (the shared-memory segment's OFD read lock). A forked child
 * closes its copies so that the lock lives exactly as long as the owner process: after the child's
 * close, the description is referenced by the parent alone and is released when the parent dies. */
#define CSHIM_LOCK_FDS 4096
static _Atomic int lock_fds[CSHIM_LOCK_FDS];

/* The stand-in thread of a forked child's first thread: every library call made on that thread runs
 * here instead, one at a time, in order; it is always the same thread, so what the library keeps per
 * thread (the last error, an open group, the current stream) stays consistent across calls. */
static struct {
    pthread_mutex_t m;
    pthread_cond_t c;
    int running;
    int pending;
    int done;
    void (*fn)(void *);
    void *context;
} proxy = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, 0, 0, 0 };

static void cshim_atfork_child(void) {
    stale_thread = 1;
    /* The parent's stand-in thread (if any) is not in this process; its lock may have been held. */
    pthread_mutex_init(&proxy.m, NULL);
    pthread_cond_init(&proxy.c, NULL);
    proxy.running = proxy.pending = proxy.done = 0;
    atomic_fetch_add(&fork_generation, 1);
    for (int i = 0; i < CSHIM_LOCK_FDS; i++) {
        int fd = atomic_exchange(&lock_fds[i], 0) - 1;
        if (fd >= 0) close(fd);
    }
}

__attribute__((constructor)) static void cshim_fork_init(void) {
    pthread_atfork(NULL, NULL, cshim_atfork_child);
}

CSHIM_HIDDEN uint64_t cshim_fork_generation(void) { return atomic_load_explicit(&fork_generation, memory_order_relaxed); }
CSHIM_HIDDEN int cshim_thread_is_stale(void) { return stale_thread; }

CSHIM_HIDDEN int cshim_track_lock_fd(int fd) {
    for (int i = 0; i < CSHIM_LOCK_FDS; i++) {
        int expected = 0;
        if (atomic_compare_exchange_strong(&lock_fds[i], &expected, fd + 1)) return i;
    }
    return -1;
}
CSHIM_HIDDEN void cshim_untrack_lock_fd(int slot, int fd) {
    if (slot < 0 || slot >= CSHIM_LOCK_FDS) return;
    int expected = fd + 1;
    atomic_compare_exchange_strong(&lock_fds[slot], &expected, 0);
}

static void *cshim_proxy_main(void *unused) {
    (void)unused;
    pthread_mutex_lock(&proxy.m);
    for (;;) {
        while (!proxy.pending) pthread_cond_wait(&proxy.c, &proxy.m);
        void (*fn)(void *) = proxy.fn;
        void *context = proxy.context;
        pthread_mutex_unlock(&proxy.m);
        fn(context);
        pthread_mutex_lock(&proxy.m);
        proxy.pending = 0;
        proxy.done = 1;
        pthread_cond_broadcast(&proxy.c);
    }
    return NULL;
}

/* Runs fn(context) on the stand-in thread (started at the first call) and waits for it; 0, or an
 * errno value if the thread could not be started (then fn did not run). */
CSHIM_HIDDEN int cshim_run_on_proxy(void (*fn)(void *), void *context) {
    pthread_mutex_lock(&proxy.m);
    if (!proxy.running) {
        pthread_t t;
        pthread_attr_t a;
        pthread_attr_init(&a);
        pthread_attr_setstacksize(&a, 8u << 20);
        pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
        int r = pthread_create(&t, &a, cshim_proxy_main, NULL);
        pthread_attr_destroy(&a);
        if (r != 0) { pthread_mutex_unlock(&proxy.m); return r; }
        proxy.running = 1;
    }
    proxy.fn = fn;
    proxy.context = context;
    proxy.done = 0;
    proxy.pending = 1;
    pthread_cond_broadcast(&proxy.c);
    while (!proxy.done) pthread_cond_wait(&proxy.c, &proxy.m);
    pthread_mutex_unlock(&proxy.m);
    return 0;
}

/* Open file description locks on byte 0 of a file: held (read) by a segment's owner for its lifetime,
 * probed (write, F_OFD_GETLK: nothing is taken) by its peers. Locks belong to the inode, so they work
 * across PID and mount namespaces where pids do not, and the kernel drops them when the owner dies. */
CSHIM_HIDDEN int cshim_ofd_hold_read(int fd) {
    struct flock l = { .l_type = F_RDLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 1, .l_pid = 0 };
    return fcntl(fd, F_OFD_SETLK, &l);
}
/* 1: someone holds a lock on byte 0; 0: nobody; -1: the probe failed (errno). */
CSHIM_HIDDEN int cshim_ofd_probe(int fd) {
    struct flock l = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 1, .l_pid = 0 };
    if (fcntl(fd, F_OFD_GETLK, &l) != 0) return -1;
    return l.l_type == F_UNLCK ? 0 : 1;
}

/* The inode of this process's PID namespace (0 if /proc is not there to say). */
CSHIM_HIDDEN uint64_t cshim_pid_namespace(void) {
    struct stat st;
    if (stat("/proc/self/ns/pid", &st) != 0) return 0;
    return (uint64_t)st.st_ino;
}
