/* System calls Swift's Glibc module does not import (they are declared only under _GNU_SOURCE, which
 * would clash with the Glibc module's own view of the headers). Static inline, or hidden functions of
 * shims.c (fork handling, OFD locks), so nothing here is exported from libswccl.so. Used only by Sources/SwiftCCL/Core/Syscalls.swift. */
#ifndef SWCCL_SHIMS_H
#define SWCCL_SHIMS_H
#include <stddef.h>
#include <stdint.h>
#include <unistd.h>
#include <fcntl.h>
#include <sys/syscall.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/mman.h>
#include <time.h>
#include <linux/futex.h>
#include <dlfcn.h>
#include <sys/prctl.h>

static inline int cshim_accept4(int fd, struct sockaddr *addr, socklen_t *len) {
    return (int)syscall(SYS_accept4, fd, addr, len, SOCK_NONBLOCK | SOCK_CLOEXEC);
}
static inline int cshim_eventfd(void) { return (int)syscall(SYS_eventfd2, 0, O_NONBLOCK | O_CLOEXEC); }
static inline long cshim_getrandom(void *buf, size_t n) { return (long)syscall(SYS_getrandom, buf, n, 0); }
static inline int cshim_gettid(void) { return (int)syscall(SYS_gettid); }
static inline int cshim_stat_dev(const char *path, uint64_t *dev) {
    struct stat st;
    if (stat(path, &st) != 0) return -1;
    *dev = (uint64_t)st.st_dev;
    return 0;
}

/* Futexes on words in shared mappings (not FUTEX_PRIVATE: the waker is another process). */
static inline int cshim_futex_wait(uint32_t *addr, uint32_t expected, int64_t timeout_ns) {
    struct timespec ts = { (time_t)(timeout_ns / 1000000000), (long)(timeout_ns % 1000000000) };
    return (int)syscall(SYS_futex, addr, FUTEX_WAIT, expected, &ts, NULL, 0);
}
static inline int cshim_futex_wake(uint32_t *addr) {
    return (int)syscall(SYS_futex, addr, FUTEX_WAKE, 0x7fffffff, NULL, NULL, 0);
}
/* Cross-memory attach: copies len bytes from address remote of process pid into local (one iovec
 * each side). Returns bytes copied or -1 (errno set). */
struct iovec;
static inline long cshim_process_vm_readv(int pid, void *local, const void *remote, size_t len) {
    struct { void *base; size_t len; } l = { local, len }, r = { (void *)remote, len };
    return (long)syscall(SYS_process_vm_readv, pid, &l, 1UL, &r, 1UL, 0UL);
}
/* Lets processes of the same user read this one's memory under Yama ptrace_scope 1 (as Open MPI does
 * for its single-copy transport); fails harmlessly where Yama is absent. */
static inline int cshim_allow_ptrace_any(void) {
#ifdef PR_SET_PTRACER
    return prctl(PR_SET_PTRACER, (unsigned long)-1 /* PR_SET_PTRACER_ANY */, 0, 0, 0);
#else
    return -1;
#endif
}
static inline int cshim_shm_open(const char *name, int oflag, unsigned mode) { return shm_open(name, oflag, (mode_t)mode); }

/* Atomics on words of a mapping shared between processes (Swift's Atomic cannot be placed there). */
static inline uint64_t cshim_load_acquire_u64(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline void cshim_store_release_u64(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
static inline uint32_t cshim_load_u32(const uint32_t *p) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }
static inline void cshim_store_u32(uint32_t *p, uint32_t v) { __atomic_store_n(p, v, __ATOMIC_SEQ_CST); }
static inline uint32_t cshim_fetch_add_u32(uint32_t *p, uint32_t v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
/* libnuma, loaded at run time so that libswccl.so runs where it is not installed. */
typedef struct {
    int (*available)(void);
    int (*max_node)(void);
    int (*node_of_cpu)(int);
    void (*tonode_memory)(void *, size_t, int);
    int (*num_configured_nodes)(void);
} cshim_numa_t;
/* 0: loaded and usable; -1: libnuma.so.1 not found; -2: a symbol is missing; -3: no NUMA support
 * in the kernel (numa_available() < 0). */
static inline int cshim_numa_load(cshim_numa_t *n) {
    void *h = dlopen("libnuma.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!h) return -1;
    n->available = (int (*)(void))dlsym(h, "numa_available");
    n->max_node = (int (*)(void))dlsym(h, "numa_max_node");
    n->node_of_cpu = (int (*)(int))dlsym(h, "numa_node_of_cpu");
    n->tonode_memory = (void (*)(void *, size_t, int))dlsym(h, "numa_tonode_memory");
    n->num_configured_nodes = (int (*)(void))dlsym(h, "numa_num_configured_nodes");
    if (!n->available || !n->max_node || !n->node_of_cpu || !n->tonode_memory || !n->num_configured_nodes) { dlclose(h); return -2; }
    if (n->available() < 0) return -3;
    return 0;
}
static inline int cshim_numa_max_node(const cshim_numa_t *n) { return n->max_node(); }
static inline int cshim_numa_configured_nodes(const cshim_numa_t *n) { return n->num_configured_nodes(); }
static inline int cshim_numa_node_of_cpu(const cshim_numa_t *n, int cpu) { return n->node_of_cpu(cpu); }
static inline void cshim_numa_tonode(const cshim_numa_t *n, void *p, size_t len, int node) { n->tonode_memory(p, len, node); }
static inline int cshim_getcpu(void) {
    unsigned cpu = 0;
    return syscall(SYS_getcpu, &cpu, NULL, NULL) == 0 ? (int)cpu : -1;
}

/* Fork safety and liveness locks (shims.c). */
uint64_t cshim_fork_generation(void);
int cshim_thread_is_stale(void);
int cshim_track_lock_fd(int fd);
void cshim_untrack_lock_fd(int slot, int fd);
int cshim_run_on_proxy(void (*fn)(void *), void *context);
int cshim_ofd_hold_read(int fd);
int cshim_ofd_probe(int fd);
uint64_t cshim_pid_namespace(void);

static inline void cshim_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}
#endif
