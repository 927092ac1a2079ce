/* System calls Swift's Glibc module does not import (they are declared only under _GNU_SOURCE, which
 * would clash with the Glibc module's own view of the headers). Static inline, so nothing here is
 * exported from libswccl.so. Used only by Sources/SwiftCCL/Core/Syscalls.swift. */
#ifndef SWCCL_SHIMS_H
#define SWCCL_SHIMS_H
#include <stddef.h>
#include <stdint.h>
#include <unistd.h>
#include <fcntl.h>
#include <sys/syscall.h>
#include <sys/socket.h>
#include <sys/stat.h>

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
#endif
