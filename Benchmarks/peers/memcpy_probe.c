/* memcpy probe: single-thread copy bandwidth (bytes copied per second) between two pre-faulted
 * buffers, the yardstick docs/PERFORMANCE.md sets the shared-memory collectives against.
 * Usage: memcpy_probe [bytes ...]   (default 1 MiB and 64 MiB). Prints "memcpy <bytes> <GB/s>" lines;
 * each figure is the median of 15 timed copies after 3 warm-ups. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    size_t sizes[16];
    int n = 0;
    for (int i = 1; i < argc && n < 16; i++) sizes[n++] = strtoull(argv[i], NULL, 0);
    if (n == 0) { sizes[n++] = 1 << 20; sizes[n++] = 64 << 20; }
    for (int s = 0; s < n; s++) {
        size_t bytes = sizes[s];
        char *a = malloc(bytes), *b = malloc(bytes);
        if (!a || !b) { perror("malloc"); return 1; }
        memset(a, 1, bytes);
        memset(b, 2, bytes);
        /* Enough repetitions per timing to last about a millisecond even for small sizes. */
        int reps = bytes >= (8 << 20) ? 1 : (int)((8 << 20) / bytes);
        double t[15];
        for (int i = 0; i < 18; i++) {
            double t0 = now();
            for (int r = 0; r < reps; r++) { memcpy(b, a, bytes); __asm__ volatile("" ::: "memory"); }
            double dt = (now() - t0) / reps;
            if (i >= 3) t[i - 3] = dt;
        }
        qsort(t, 15, sizeof t[0], cmp);
        printf("memcpy %zu %.2f\n", bytes, bytes / t[7] / 1e9);
        free(a);
        free(b);
    }
    return 0;
}
