/*
 * mpi_allreduce — times an MPI collective on float32 data, nccl-tests style.
 *
 *   mpirun -np N ./mpi_allreduce [MINBYTES [MAXBYTES [WARMUP [ITERS [COLL [STEPFACTOR]]]]]]
 *     MINBYTES, MAXBYTES  sizes in bytes, K/M/G suffixes (powers of 1024); steps by a factor
 *                         STEPFACTOR (default 2) (defaults 8 and 64M)
 *     WARMUP, ITERS       untimed / timed iterations per size (defaults 5, 20)
 *     COLL                allreduce (default) | allgather | reducescatter | bcast
 *
 * Output on rank 0, one line per size:   size_bytes time_us algbw busbw
 *   (lines starting with '#' are comments). time_us = (slowest rank's elapsed time for ITERS
 *   back-to-back calls, after a barrier) / ITERS. algbw = size / time in GB/s (1e9 B/s).
 *   busbw = algbw * factor: allreduce 2(n-1)/n, allgather and reducescatter (n-1)/n, bcast 1.
 *   As in nccl-tests, size is the whole array for allgather and reducescatter: each rank
 *   contributes (allgather) / receives (reducescatter) size/n bytes; for allreduce and bcast
 *   it is the buffer size.
 *   Sizes are rounded down to a multiple of 4 bytes (allreduce, bcast) or 4n bytes (the
 *   others); sizes that round to zero are skipped.
 *
 * Buffers are allocated once at the largest size and written before timing, so neither page
 * faults of our buffers nor allocation are timed (MPI's own internal scratch buffers are its
 * business). Out-of-place for allreduce/allgather/reducescatter; in-place for bcast.
 */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ctype.h>

enum coll { ALLREDUCE, ALLGATHER, REDUCESCATTER, BCAST };

static const char *coll_names[] = {"allreduce", "allgather", "reducescatter", "bcast"};

static size_t parse_size(const char *s) {
    char *end;
    double v = strtod(s, &end);
    if (end == s || v < 0) {
        fprintf(stderr, "bad size '%s'\n", s);
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    switch (toupper((unsigned char)*end)) {
    case 'K': v *= 1024.0; break;
    case 'M': v *= 1024.0 * 1024.0; break;
    case 'G': v *= 1024.0 * 1024.0 * 1024.0; break;
    case '\0': case 'B': break;
    default:
        fprintf(stderr, "bad size suffix in '%s'\n", s);
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    return (size_t)v;
}

static int parse_coll(const char *s) {
    char buf[32];
    size_t j = 0;
    /* accept all_reduce, all-reduce, AllReduce, reduce_scatter, broadcast, ... */
    for (size_t i = 0; s[i] && j + 1 < sizeof buf; i++)
        if (s[i] != '_' && s[i] != '-') buf[j++] = (char)tolower((unsigned char)s[i]);
    buf[j] = '\0';
    if (!strcmp(buf, "broadcast")) return BCAST;
    for (int c = 0; c < 4; c++)
        if (!strcmp(buf, coll_names[c])) return c;
    return -1;
}

static void *xalloc(size_t bytes) {
    void *p = NULL;
    if (bytes == 0) bytes = 64;
    if (posix_memalign(&p, 4096, bytes) != 0) {
        fprintf(stderr, "out of memory (%zu bytes)\n", bytes);
        MPI_Abort(MPI_COMM_WORLD, 3);
    }
    return p;
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank, n;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &n);

    size_t minb = argc > 1 ? parse_size(argv[1]) : 8;
    size_t maxb = argc > 2 ? parse_size(argv[2]) : 64u << 20;
    int warmup = argc > 3 ? atoi(argv[3]) : 5;
    int iters = argc > 4 ? atoi(argv[4]) : 20;
    int coll = argc > 5 ? parse_coll(argv[5]) : ALLREDUCE;
    int step = argc > 6 ? atoi(argv[6]) : 2;
    if (coll < 0 || iters <= 0 || warmup < 0 || minb == 0 || maxb < minb || step < 2) {
        if (rank == 0)
            fprintf(stderr,
                    "usage: %s [MINBYTES [MAXBYTES [WARMUP [ITERS [allreduce|allgather|"
                    "reducescatter|bcast [STEPFACTOR]]]]]]\n",
                    argv[0]);
        MPI_Finalize();
        return 2;
    }

    /* Buffers sized for the largest step. For allgather the send buffer holds one block
     * (max/n), for reducescatter the receive buffer does; allocate max for both anyway. */
    size_t maxcount = maxb / sizeof(float);
    float *sendbuf = xalloc(maxcount * sizeof(float));
    float *recvbuf = xalloc(maxcount * sizeof(float));
    for (size_t i = 0; i < maxcount; i++) {
        sendbuf[i] = (float)((rank + 1) * ((i % 64) + 1));
        recvbuf[i] = 0.0f;
    }

    double factor;
    switch (coll) {
    case ALLREDUCE: factor = 2.0 * (n - 1) / n; break;
    case ALLGATHER:
    case REDUCESCATTER: factor = (double)(n - 1) / n; break;
    default: factor = 1.0; break;
    }

    if (rank == 0) {
        char ver[MPI_MAX_LIBRARY_VERSION_STRING];
        int len;
        MPI_Get_library_version(ver, &len);
        char *nl = strchr(ver, '\n');
        if (nl) *nl = '\0';
        printf("# mpi_allreduce coll %s nranks %d type float redop sum warmup %d iters %d\n",
               coll_names[coll], n, warmup, iters);
        printf("# %s\n", ver);
        printf("# size_bytes time_us algbw busbw\n");
        fflush(stdout);
    }

    for (size_t bytes = minb; bytes <= maxb; bytes *= (size_t)step) {
        size_t unit = (coll == ALLGATHER || coll == REDUCESCATTER) ? sizeof(float) * n : sizeof(float);
        size_t size = bytes / unit * unit;
        if (size == 0) {
            if (bytes > maxb / 2) break;
            continue;
        }
        size_t count = size / sizeof(float); /* total elements */
        size_t block = count / n;           /* per-rank elements (allgather/reducescatter) */
        if (count > (size_t)0x7fffffff) {
            if (rank == 0) fprintf(stderr, "size %zu too large for int counts\n", size);
            break;
        }

        double t0 = 0.0;
        for (int it = -warmup; it < iters; it++) {
            if (it == 0) {
                MPI_Barrier(MPI_COMM_WORLD);
                t0 = MPI_Wtime();
            }
            switch (coll) {
            case ALLREDUCE:
                MPI_Allreduce(sendbuf, recvbuf, (int)count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
                break;
            case ALLGATHER:
                MPI_Allgather(sendbuf, (int)block, MPI_FLOAT, recvbuf, (int)block, MPI_FLOAT,
                              MPI_COMM_WORLD);
                break;
            case REDUCESCATTER:
                MPI_Reduce_scatter_block(sendbuf, recvbuf, (int)block, MPI_FLOAT, MPI_SUM,
                                         MPI_COMM_WORLD);
                break;
            case BCAST:
                MPI_Bcast(sendbuf, (int)count, MPI_FLOAT, 0, MPI_COMM_WORLD);
                break;
            }
        }
        double elapsed = MPI_Wtime() - t0, slowest = 0.0;
        MPI_Reduce(&elapsed, &slowest, 1, MPI_DOUBLE, MPI_MAX, 0, MPI_COMM_WORLD);

        /* Light sanity check on the last result (inputs are integers, sums exact). */
        if (coll == ALLREDUCE) {
            double want = (double)n * (n + 1) / 2.0 * 1.0; /* element 0: (rank+1)*1 summed */
            if (recvbuf[0] != (float)want && rank == 0)
                fprintf(stderr, "# warning: allreduce result %g, expected %g\n", recvbuf[0], want);
        }

        if (rank == 0) {
            double time_us = slowest / iters * 1e6;
            double algbw = (double)size / (time_us * 1e-6) / 1e9;
            printf("%12zu %12.2f %8.3f %8.3f\n", size, time_us, algbw, algbw * factor);
            fflush(stdout);
        }
        if (bytes > maxb / (size_t)step) break; /* avoid overflow */
    }

    free(sendbuf);
    free(recvbuf);
    MPI_Finalize();
    return 0;
}
