/*
 * swccl.h - C interface of SwiftCCL, a collective communication library for host memory.
 *
 * The interface follows NCCL: code written for NCCL ports by renaming `nccl` to `swccl` (and `NCCL_` to
 * `SWCCL_`). The differences are:
 *
 *   - Every buffer is ordinary host (CPU) memory. There is no device memory and no device selection.
 *   - The trailing `cudaStream_t` of NCCL is a `swcclStream_t`, a CPU execution queue created with
 *     swcclStreamCreate. A NULL stream means "run on the calling thread": the call blocks until the
 *     operation has completed on this rank and its buffers may be reused.
 *
 * Errors (the swcclResult_t of every call) follow NCCL's model:
 *   - swcclInvalidArgument: a bad argument (NULL pointer, out-of-range rank/count/type/op, ...). The call
 *     had no effect; the communicator is still usable.
 *   - swcclInvalidUsage: a valid argument used at the wrong time or in the wrong state (wrong call order,
 *     a finalized communicator, a handle -- communicator or stream -- that was destroyed or aborted,
 *     ...). Argument-level misuse leaves the communicator usable; ranks that turn out to disagree
 *     inside an operation (different collectives, counts or types) break it, with this code.
 *   - swcclSystemError, swcclInternalError, swcclRemoteError, swcclTimeout: the communicator is broken.
 *     Call swcclCommAbort on it; a new communicator may then be built. Later operations on a broken
 *     communicator return the error that broke it.
 *   - swcclGetLastError then describes what happened in one line: operation, rank, peer, host, cause.
 *
 * Blocking calls never wait forever: every blocking step is bounded by the communicator's timeout
 * (swcclConfig_t.timeoutMs, else the environment variable SWCCL_TIMEOUT_MS, else the library default);
 * when it expires the call returns swcclTimeout.
 *
 * Thread safety (as NCCL): calls on one communicator must not run concurrently from several threads,
 * except swcclCommAbort, swcclCommGetAsyncError and swcclGetLastError, which may be called from any
 * thread at any time. Different communicators may be used concurrently from different threads.
 *
 * This header is plain C99 (also valid C11 and C++); it is imported by Swift as well.
 */
#ifndef SWCCL_H_
#define SWCCL_H_

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------------------------------ */
/* Version                                                                                          */
/* ------------------------------------------------------------------------------------------------ */

#define SWCCL_MAJOR 0
#define SWCCL_MINOR 1
#define SWCCL_PATCH 0
/** SWCCL_MAJOR * 10000 + SWCCL_MINOR * 100 + SWCCL_PATCH, written as a literal because Swift does not
    import macros holding expressions. Update it with the three above (Tests/c/header_test.c checks). */
#define SWCCL_VERSION_CODE 100
/** Version code of MAJOR.MINOR.PATCH, for comparisons with SWCCL_VERSION_CODE (C/C++ only). */
#define SWCCL_VERSION(X, Y, Z) ((X) * 10000 + (Y) * 100 + (Z))

/* ------------------------------------------------------------------------------------------------ */
/* Types                                                                                            */
/* ------------------------------------------------------------------------------------------------ */

/** Opaque communicator handle. Not an address (never dereference it): a tagged number that stays
 * refused once destroyed, even after later communicators are created. */
typedef struct swcclComm* swcclComm_t;

/** Opaque CPU execution queue. NULL means: run on the calling thread, blocking. */
typedef struct swcclStream* swcclStream_t;

/** Opaque point in a stream (swcclEventCreate), to learn when the operations before it completed. */
typedef struct swcclEvent* swcclEvent_t;

#define SWCCL_UNIQUE_ID_BYTES 128
/**
 * Rendezvous identifier made by swcclGetUniqueId and copied (by value, out of band) to every rank that
 * calls swcclCommInitRank. Plain bytes: may be sent over any channel, written to a file, etc.
 */
typedef struct { char internal[SWCCL_UNIQUE_ID_BYTES]; } swcclUniqueId;

/** Result of every call. Values are fixed (1 is unused, as in NCCL where it was a CUDA error). */
typedef enum {
  swcclSuccess         = 0,  /**< The call completed (or, with a stream, was enqueued) successfully.  */
  swcclSystemError     = 2,  /**< A system call or the network failed. The communicator is broken.    */
  swcclInternalError   = 3,  /**< A bug or inconsistency inside the library. The communicator is broken. */
  swcclInvalidArgument = 4,  /**< A bad argument. The call had no effect; the communicator is usable. */
  swcclInvalidUsage    = 5,  /**< Wrong call order or state (e.g. ranks disagree, finalized comm).    */
  swcclRemoteError     = 6,  /**< A peer failed or went away. The communicator is broken.             */
  swcclInProgress      = 7,  /**< Work is still pending (swcclStreamQuery, swcclEventQuery/Wait).     */
  swcclTimeout         = 8,  /**< A blocking step exceeded the timeout. The communicator is broken.   */
  swcclNumResults      = 9
} swcclResult_t;

/** Element types. Aliases share a value. 16- and 8-bit floats are passed as raw bit patterns. */
typedef enum {
  swcclInt8       = 0, swcclChar    = 0,
  swcclUint8      = 1,
  swcclInt32      = 2, swcclInt     = 2,
  swcclUint32     = 3,
  swcclInt64      = 4,
  swcclUint64     = 5,
  swcclFloat16    = 6, swcclHalf    = 6,   /**< IEEE 754 binary16                                    */
  swcclFloat32    = 7, swcclFloat   = 7,
  swcclFloat64    = 8, swcclDouble  = 8,
  swcclBfloat16   = 9,                     /**< bfloat16: the upper 16 bits of an IEEE binary32       */
  swcclFloat8e4m3 = 10,                    /**< OCP FP8 E4M3 (no infinities, one NaN pattern)          */
  swcclFloat8e5m2 = 11,                    /**< OCP FP8 E5M2                                           */
  swcclNumTypes   = 12
} swcclDataType_t;

/**
 * Reduction operators. swcclAvg sums, then divides by the number of ranks (integers: truncating
 * division). Values >= swcclNumOps are operators made at run time (swcclRedOpCreatePreMulSum) and are
 * valid only with the communicator that made them.
 */
typedef enum {
  swcclSum      = 0,
  swcclProd     = 1,
  swcclMax      = 2,
  swcclMin      = 3,
  swcclAvg      = 4,
  swcclNumOps   = 5,
  swcclMaxRedOp = 0x7fffffff  /**< Not an operator: keeps the enum int-sized for run-time operators. */
} swcclRedOp_t;

/** Where the scalar of swcclRedOpCreatePreMulSum lives (values of its `residence` argument). */
typedef enum {
  swcclScalarDevice        = 0,  /**< Pointer to memory read when each operation using the op runs.  */
  swcclScalarHostImmediate = 1   /**< Value read once, during swcclRedOpCreatePreMulSum.            */
} swcclScalarResidence_t;

#define SWCCL_CONFIG_MAGIC 0x5357434Cu /* 'SWCL' */

/**
 * Communicator options. Versioned: always start from SWCCL_CONFIG_INITIALIZER, then set fields.
 * The first three fields are fixed forever; new fields are only ever added at the end, and the library
 * reads only the fields that lie within `size`. The library does not modify the struct and copies the
 * strings it needs, so the struct and its strings need only stay valid for the duration of the call.
 */
typedef struct {
  size_t       size;        /**< sizeof(swcclConfig_t) as compiled by the caller.                    */
  unsigned int magic;       /**< SWCCL_CONFIG_MAGIC.                                                  */
  unsigned int version;     /**< SWCCL_VERSION_CODE as compiled by the caller.                        */
  int          timeoutMs;   /**< Deadline of every blocking step, in ms; <= 0: library default
                                 (SWCCL_TIMEOUT_MS).                                                  */
  const char*  transports;  /**< NULL or "auto", or a comma-separated list of "shm", "ib" (RDMA
                                 verbs) and "tcp" such as "shm,tcp" or "ib"; per pair of ranks the
                                 first that applies: shm on one host, ib where both have an RDMA
                                 port, else tcp. Other names: swcclInvalidArgument; "ib" alone on a
                                 host without an RDMA port: swcclSystemError saying why.              */
  const char*  commName;    /**< Shown in logs and in every error ("allreduce #17 on comm 'dp': ...");
                                 NULL: "comm".                                                        */
  /* Fields below were added in 0.1 for NCCL's ncclConfig_t (issue 15); a caller compiled against an
     older header passes a smaller `size` and gets their defaults. */
  int          blocking;    /**< 1 (or SWCCL_CONFIG_UNDEF_INT): calls block as documented. 0:
                                 nonblocking communicator, as NCCL's: swcclCommInitRank(Config),
                                 swcclCommInitFromEnv, swcclCommSplit and swcclCommFinalize return
                                 swcclInProgress at once and finish in the background; operations
                                 called with stream == NULL are checked, return swcclInProgress and
                                 run in the background in call order (a stream given still behaves as
                                 usual). Poll swcclCommGetAsyncError: swcclInProgress while anything
                                 is pending, then swcclSuccess or the error. Any other value:
                                 swcclInvalidArgument.                                                */
  int          cgaClusterSize; /**< NCCL's CUDA launch setting: accepted and ignored (host memory).   */
  int          minCTAs;     /**< Accepted and ignored (CUDA thread blocks).                           */
  int          maxCTAs;     /**< Accepted and ignored (CUDA thread blocks).                           */
  const char*  netName;     /**< NULL, or the network between hosts by NCCL's names: "Socket" (TCP,
                                 same as transports "shm,tcp") or "IB" (RDMA verbs, "shm,ib"); ranks
                                 on one host use shared memory either way. Another name, or both
                                 netName and transports set: swcclInvalidArgument.                    */
  int          splitShare;  /**< 0, 1 or SWCCL_CONFIG_UNDEF_INT; accepted: here a communicator made by
                                 swcclCommSplit always has connections of its own (there is nothing of
                                 the parent's to share). Other values: swcclInvalidArgument.          */
} swcclConfig_t;

/** "Not set" for the int fields of swcclConfig_t (NCCL's NCCL_CONFIG_UNDEF_INT). */
#define SWCCL_CONFIG_UNDEF_INT (-2147483647 - 1)

/** Initial value of every swcclConfig_t: `swcclConfig_t cfg = SWCCL_CONFIG_INITIALIZER;` */
#define SWCCL_CONFIG_INITIALIZER \
  { sizeof(swcclConfig_t), SWCCL_CONFIG_MAGIC, SWCCL_VERSION_CODE, 0, NULL, NULL, \
    SWCCL_CONFIG_UNDEF_INT, SWCCL_CONFIG_UNDEF_INT, SWCCL_CONFIG_UNDEF_INT, SWCCL_CONFIG_UNDEF_INT, NULL, \
    SWCCL_CONFIG_UNDEF_INT }

/** `color` of swcclCommSplit for a rank that joins no new communicator. */
#define SWCCL_SPLIT_NOCOLOR (-1)

/** `shrinkFlags` of swcclCommShrink. */
#define SWCCL_SHRINK_DEFAULT 0x00 /**< The parent has no operation in flight.                       */
#define SWCCL_SHRINK_ABORT   0x01 /**< End the parent's operations in flight first (after a failure). */

/* ------------------------------------------------------------------------------------------------ */
/* Errors and version                                                                               */
/* ------------------------------------------------------------------------------------------------ */

/**
 * Name and short description of a result code, e.g. "invalid argument".
 * Never blocks. Never returns NULL: an unknown value gives a string saying so. The string is static.
 */
const char* swcclGetErrorString(swcclResult_t result);

/**
 * One line describing the last error: operation, rank, peer, host and cause, e.g.
 * "swcclAllReduce: rank 2 (comm 'train'), peer 3 on host node7: connection reset by peer".
 * With comm == NULL (or a handle that is no longer live): the last error of any call made by the
 * calling thread. With a live communicator: its own last error only — of a call given that
 * communicator, of an operation a stream or a group ran on it, or the failure that broke it.
 * Never blocks; callable from any thread. Never returns NULL: "" when there was no error. Reading does
 * not clear the error. The string belongs to the library; it stays valid until the next swccl call
 * on the same thread (comm == NULL) or until the communicator records another error or is destroyed.
 */
const char* swcclGetLastError(swcclComm_t comm);

/**
 * Stores the version code of the loaded library (SWCCL_VERSION_CODE it was built with) in *version.
 * Never blocks. Returns swcclInvalidArgument if version is NULL.
 */
swcclResult_t swcclGetVersion(int* version);

/* ------------------------------------------------------------------------------------------------ */
/* Communicators                                                                                    */
/* ------------------------------------------------------------------------------------------------ */

/**
 * Makes a new rendezvous identifier for swcclCommInitRank. Call it once per communicator, on one
 * process, and copy the result to all ranks. Unless SWCCL_COMM_ID=host:port is set, this starts a
 * rendezvous listener in the calling process (on an interface chosen by SWCCL_SOCKET_IFNAME /
 * SWCCL_SOCKET_FAMILY); that process must stay alive until every rank has finished swcclCommInitRank.
 * With SWCCL_COMM_ID set, the identifier names that address and rank 0 hosts the rendezvous there;
 * its secret is then derived from the address and SWCCL_JOB_SECRET (or the launcher's job key or ids:
 * docs/RELIABILITY.md, "Who can join a job"), otherwise it is 128 random bits.
 * No network round trip; blocks only briefly (until the listener thread runs, and for a host name in
 * SWCCL_COMM_ID, its name resolution).
 * Returns swcclInvalidArgument if uniqueId is NULL, SWCCL_COMM_ID cannot be parsed or resolved,
 * SWCCL_SOCKET_IFNAME matches no interface that is up, or SWCCL_SOCKET_FAMILY is not AF_INET/AF_INET6;
 * swcclSystemError if no interface is up at all or no listening socket could be opened.
 */
swcclResult_t swcclGetUniqueId(swcclUniqueId* uniqueId);

/**
 * Creates the communicator of rank `rank` among `nranks` ranks that all pass the same commId.
 * Collective and blocking: returns once all nranks ranks have joined and connected (bounded by the
 * timeout). Each rank calls it from its own process or thread. Same as swcclCommInitRankConfig with a
 * NULL config. On success *comm holds the new communicator; on any error *comm is set to NULL (if comm
 * is not NULL) and nothing needs to be freed.
 * Returns swcclInvalidArgument (without contacting anyone) if comm is NULL, nranks is not in
 * [1, 65536], rank is not in [0, nranks), commId is not an identifier made by swcclGetUniqueId, or
 * SWCCL_SOCKET_IFNAME / SWCCL_SOCKET_FAMILY select no interface; swcclInvalidUsage if the ranks
 * disagree (different nranks, two ranks with the same rank); swcclTimeout if not all ranks joined in
 * time; swcclSystemError / swcclRemoteError on network failures, or when a rank that had joined the
 * rendezvous left it (failed, exited or crashed) before all arrived. The error text (swcclGetLastError)
 * names the rank at fault: the one that did not arrive, left or was claimed twice, or rank 0 when the
 * rendezvous it hosts never answered or closed. The process that hosts the rendezvous returns only
 * once every rank has been told the outcome (bounded by the timeout).
 * Inside swcclGroupStart/swcclGroupEnd (NCCL's one thread initialising several ranks): the call checks
 * its arguments, stores the new handle in *comm at once and returns swcclSuccess; the initialisation
 * runs at the outermost swcclGroupEnd, each recorded one on a thread of its own, all at once, and
 * swcclGroupEnd returns their first error. Until then, and for good if its initialisation failed, the
 * handle refuses other calls (swcclInvalidArgument while pending, as NCCL; then the error that made it
 * fail, also given by swcclCommGetAsyncError and swcclGetLastError(comm)); destroy it either way.
 */
swcclResult_t swcclCommInitRank(swcclComm_t* comm, int nranks, swcclUniqueId commId, int rank);

/**
 * As swcclCommInitRank, with options. config may be NULL (all defaults); otherwise it must come from
 * SWCCL_CONFIG_INITIALIZER. Collective and blocking, as swcclCommInitRank.
 * With config->blocking == 0 (a nonblocking communicator, as NCCL's): stores the handle in *comm,
 * returns swcclInProgress at once and initialises in the background (inside a group: from the
 * group's end, which then returns swcclInProgress); poll swcclCommGetAsyncError(*comm) until it is no
 * longer swcclInProgress. Other calls on the handle before that return swcclInvalidArgument, as NCCL's
 * ("use before the previous call returned swcclSuccess").
 * Returns, besides the errors of swcclCommInitRank, swcclInvalidArgument if config has a wrong magic,
 * a size smaller than its three fixed fields or larger than 4096 (not a struct from this header), a
 * transports list with an unknown name, or a field out of its range (blocking, netName, splitShare);
 * and
 * swcclSystemError if a transport the list requires cannot be used between some pair of ranks.
 */
swcclResult_t swcclCommInitRankConfig(swcclComm_t* comm, int nranks, swcclUniqueId commId, int rank,
                                      swcclConfig_t* config);

/**
 * Creates ndev communicators inside this process, ranks 0..ndev-1, stored in comms[0..ndev-1].
 * devlist: NCCL's list of CUDA devices, one per rank. On host memory devices mean nothing: devlist
 * may be NULL; when not NULL, its ndev ints are read and must be distinct and non-negative (checked
 * as NCCL would, otherwise ignored).
 * Blocks until all are connected. Since a call with a NULL stream blocks its thread, use them from one
 * thread per rank, with streams, or by issuing the operations of all ranks inside one
 * swcclGroupStart/swcclGroupEnd (as NCCL's single-thread multi-device use).
 * The ranks meet at a rendezvous of their own in this process (SWCCL_COMM_ID is not used). Each rank
 * holds shared-memory FIFOs to every other (memory grows with nranks squared): a few dozen ranks is
 * the practical limit of one process.
 * Returns swcclInvalidArgument if comms is NULL, ndev is not in [1, 65536], or devlist holds a
 * negative or repeated value (the message names it); swcclSystemError if the threads or the memory
 * of the ranks cannot be had. On any error comms[] entries are set to NULL and no communicator is
 * returned (ranks already started give up within the timeout).
 */
swcclResult_t swcclCommInitAll(swcclComm_t* comms, int ndev, const int* devlist);

/**
 * Creates the communicator of this process from the launcher's environment. Rank and size come from,
 * in this order: SWCCL_RANK / SWCCL_SIZE; torchrun (RANK, WORLD_SIZE); Open MPI
 * (OMPI_COMM_WORLD_RANK, OMPI_COMM_WORLD_SIZE); PMI (PMI_RANK, PMI_SIZE); Slurm (SLURM_PROCID,
 * SLURM_NTASKS). The rendezvous address comes from SWCCL_COMM_ID=host:port, else MASTER_ADDR and
 * MASTER_PORT + 1 (torchrun's own store keeps MASTER_PORT); rank 0 hosts the rendezvous there.
 * Only processes that share SWCCL_JOB_SECRET (or, failing that, the launcher's job key) can join;
 * without either, anyone who can reach the address can (docs/RELIABILITY.md, "Who can join a job").
 * config may be NULL. Collective and blocking, as
 * swcclCommInitRank, whose errors it returns; in addition swcclInvalidUsage if the environment names
 * no rank, size or rendezvous address, holds values that cannot be parsed (or a rendezvous host that
 * does not resolve), more than 65536 ranks, or only one of SWCCL_RANK and SWCCL_SIZE.
 */
swcclResult_t swcclCommInitFromEnv(swcclComm_t* comm, swcclConfig_t* config);

/**
 * Splits comm: ranks passing the same color form one new communicator, ordered by key, then by their
 * rank in comm. A rank passing SWCCL_SPLIT_NOCOLOR joins none and gets *newcomm = NULL.
 * config NULL: the new communicators inherit comm's options. Collective over all ranks of comm and
 * blocking. comm itself is unchanged and stays usable. Nonblocking (config->blocking == 0, or config
 * NULL and comm nonblocking): returns swcclInProgress at once with the handle in *newcomm; the split
 * runs in the background after comm's operations queued there, and both comm and *newcomm report
 * swcclInProgress from swcclCommGetAsyncError until it finished.
 * Returns swcclInvalidArgument if comm or newcomm is NULL, or color is negative and not
 * SWCCL_SPLIT_NOCOLOR, or config is invalid; errors of communicator creation otherwise.
 */
swcclResult_t swcclCommSplit(swcclComm_t comm, int color, int key, swcclComm_t* newcomm,
                             swcclConfig_t* config);

/**
 * Makes a new communicator of the ranks of comm not listed in excludeRanksList (excludeRanksCount
 * ranks of comm), renumbered in their order in comm. Only the remaining ranks call it, all with the same
 * list; excluded (e.g. failed) ranks must not. shrinkFlags: SWCCL_SHRINK_DEFAULT when comm has no
 * operation in flight; SWCCL_SHRINK_ABORT to end comm's operations in flight first (error recovery).
 * comm's connections are closed by the call (it cannot be used for operations afterwards) and it must
 * still be destroyed or aborted by the caller. config NULL: inherit comm's. Collective over the
 * remaining ranks and blocking. Needs no excluded rank: the new bootstrap root is the lowest remaining
 * rank, on the TCP port it published when comm was made (so not with SWCCL_TRANSPORTS=shm alone).
 * Returns swcclInvalidArgument if comm or newcomm is NULL, excludeRanksCount < 0, the list is NULL with
 * a positive count, names a rank out of range, twice, or the calling rank, or shrinkFlags is unknown;
 * swcclInvalidUsage if comm is finalized or destroyed, or the new root published no TCP port;
 * errors of communicator creation otherwise.
 */
swcclResult_t swcclCommShrink(swcclComm_t comm, int* excludeRanksList, int excludeRanksCount,
                              swcclComm_t* newcomm, swcclConfig_t* config, int shrinkFlags);

/**
 * Completes all operations of comm enqueued on streams (and waits for one in flight on another
 * thread). Blocking, bounded by the timeout; not collective. Afterwards only swcclCommDestroy (which
 * closes the connections), swcclCommAbort, the queries (swcclCommCount, swcclCommUserRank,
 * swcclCommGetAsyncError, swcclGetLastError) and the clean-up calls swcclCommDeregister and
 * swcclRedOpDestroy may be called on comm; other calls (collectives, send/recv, split, shrink,
 * register, swcclRedOpCreatePreMulSum) return swcclInvalidUsage. An operation that fails while
 * completing reports its error through swcclStreamSynchronize as usual.
 * Returns swcclInvalidArgument if comm is NULL, swcclInvalidUsage if comm was already finalized or
 * destroyed, swcclTimeout if enqueued operations did not finish within the timeout (comm is then
 * broken, as swcclCommGetAsyncError says: abort it). A nonblocking communicator: returns
 * swcclInProgress at once and finalizes in the background after its queued operations
 * (swcclCommGetAsyncError says when).
 */
swcclResult_t swcclCommFinalize(swcclComm_t comm);

/**
 * Frees comm. If swcclCommFinalize was not called, finalizes it first (blocking, as swcclCommFinalize).
 * The handle must not be used afterwards. comm == NULL: nothing happens, swcclSuccess.
 * Returns the error of the implicit finalize, if any; comm is freed in every case. A handle already
 * destroyed or aborted: swcclInvalidUsage, nothing happens.
 * Fork: in a child forked after comm was created, comm is the parent's: every operation on it is
 * swcclInvalidUsage, and swcclCommDestroy (or swcclCommAbort) only forgets the handle -- nothing the
 * parent shares (connections, shared memory) is touched, so the parent's job goes on. A child may
 * create communicators of its own.
 */
swcclResult_t swcclCommDestroy(swcclComm_t comm);

/**
 * Ends comm at once: operations in progress on it (in any thread or stream) stop and return an error,
 * connections are closed without waiting for peers (which then see swcclRemoteError or swcclTimeout),
 * and all its resources are freed. Callable from any thread, including while another thread is blocked
 * in a call on comm; never blocks long. The handle must not be used once both have returned.
 * comm == NULL: nothing happens, swcclSuccess. A handle already destroyed or aborted:
 * swcclInvalidUsage, nothing happens. Returns swcclSuccess otherwise.
 */
swcclResult_t swcclCommAbort(swcclComm_t comm);

/**
 * Stores in *asyncError the state of comm: swcclInProgress while its initialisation (nonblocking or
 * in a group) or, for a nonblocking communicator, operations it runs in the background are pending;
 * then swcclSuccess while it is healthy, or the error that broke it (or made its initialisation
 * fail). Errors are found by operations: one that failed in a blocking call, on a stream, in a group
 * or in the background, or a swcclCommFinalize that timed out. An operation still blocked
 * waiting for a dead peer shows here once it has failed (within the timeout). A communicator broken by
 * ranks that disagreed inside an operation reports swcclInvalidUsage.
 * Never blocks; callable from any thread.
 * Returns swcclInvalidArgument if comm or asyncError is NULL.
 */
swcclResult_t swcclCommGetAsyncError(swcclComm_t comm, swcclResult_t* asyncError);

/**
 * Stores the number of ranks of comm in *count. Never blocks.
 * Returns swcclInvalidArgument if comm or count is NULL.
 */
swcclResult_t swcclCommCount(const swcclComm_t comm, int* count);

/**
 * Stores the rank of the caller in comm in *rank. Never blocks.
 * Returns swcclInvalidArgument if comm or rank is NULL.
 */
swcclResult_t swcclCommUserRank(const swcclComm_t comm, int* rank);

/**
 * Registers the buffer [buff, buff + size) with comm so that operations on it can avoid copies
 * (with the RDMA verbs transport: ibv_reg_mr, kept until swcclCommDeregister; TCP and shared
 * memory need none); *handle receives a registration handle. Local (not
 * collective); may block briefly while memory is registered. Registration is optional: unregistered
 * buffers always work. Release with swcclCommDeregister before freeing the memory or comm.
 * Returns swcclInvalidArgument if comm, buff or handle is NULL or size is 0; swcclInvalidUsage if comm
 * is finalized; swcclSystemError if the memory could not be registered (a transport that pins memory).
 */
swcclResult_t swcclCommRegister(const swcclComm_t comm, void* buff, size_t size, void** handle);

/**
 * Releases a registration made by swcclCommRegister on the same comm. Does not wait: as with NCCL,
 * synchronize the streams whose operations use the buffer first. Allowed after swcclCommFinalize.
 * Returns swcclInvalidArgument if comm is NULL or handle is not a live registration of comm.
 */
swcclResult_t swcclCommDeregister(const swcclComm_t comm, void* handle);

/* ------------------------------------------------------------------------------------------------ */
/* Reduction operators made at run time                                                             */
/* ------------------------------------------------------------------------------------------------ */

/**
 * Makes an operator, stored in *op, that multiplies each rank's input by that rank's scalar (of type
 * datatype) and then sums across ranks. residence: swcclScalarHostImmediate (1) reads *scalar now;
 * swcclScalarDevice (0) reads it each time an operation using op runs, so scalar must stay valid until
 * then. The operator is valid only with comm and with this datatype. Local; never blocks.
 * Returns swcclInvalidArgument if op, scalar or comm is NULL, datatype is not a valid type, or residence
 * is neither 0 nor 1; swcclInvalidUsage if comm is finalized, or already holds 2^20 live operators.
 */
swcclResult_t swcclRedOpCreatePreMulSum(swcclRedOp_t* op, void* scalar, swcclDataType_t datatype,
                                        int residence /* 1 = host immediate */, swcclComm_t comm);

/**
 * Destroys an operator made by swcclRedOpCreatePreMulSum on comm. Allowed as soon as the last call
 * given op has returned (operations already enqueued with it still complete correctly), and after
 * swcclCommFinalize. Its value may be handed out again by a later swcclRedOpCreatePreMulSum. Never blocks.
 * Returns swcclInvalidArgument if comm is NULL, op is a built-in operator, or op is not a live operator
 * of comm.
 */
swcclResult_t swcclRedOpDestroy(swcclRedOp_t op, swcclComm_t comm);

/* ------------------------------------------------------------------------------------------------ */
/* Streams: CPU execution queues                                                                    */
/* ------------------------------------------------------------------------------------------------ */

/**
 * Creates a stream in *stream: operations enqueued on it run in order, in the background, while the
 * enqueueing call returns at once. A stream may carry operations of several communicators.
 * Does not block. Returns swcclInvalidArgument if stream is NULL; swcclSystemError if no thread or
 * memory could be obtained.
 */
swcclResult_t swcclStreamCreate(swcclStream_t* stream);

/**
 * Waits for all work enqueued on stream to finish, then frees it. Blocking.
 * Returns swcclInvalidArgument if stream is NULL; swcclInvalidUsage if it is not a live stream
 * (destroyed already); otherwise the stream's first error not yet cleared by swcclStreamSynchronize,
 * else swcclSuccess. The stream is freed in every case but these two.
 */
swcclResult_t swcclStreamDestroy(swcclStream_t stream);

/**
 * Blocks until all work enqueued on stream so far has finished.
 * Returns swcclSuccess if all of it succeeded, else the first error of the stream since the last
 * synchronize. Once an operation on the stream failed, work enqueued after it is skipped (its result
 * would be meaningless) until this call reports the error; the error is then cleared and the stream
 * runs new work again (on a new communicator: the failed one is broken). Returns
 * swcclInvalidArgument if stream is NULL, swcclInvalidUsage if it is not a live stream.
 */
swcclResult_t swcclStreamSynchronize(swcclStream_t stream);

/**
 * Never blocks. Returns swcclSuccess if all work enqueued on stream has finished successfully,
 * swcclInProgress if some is still pending, or the stream's first error (not cleared: swcclStreamSynchronize clears it).
 * Returns swcclInvalidArgument if stream is NULL, swcclInvalidUsage if it is not a live stream.
 */
swcclResult_t swcclStreamQuery(swcclStream_t stream);

/* ------------------------------------------------------------------------------------------------ */
/* Events: completion of the operations enqueued on a stream up to a point                          */
/*                                                                                                  */
/* An event marks a point in a stream (swcclEventRecord: after every operation enqueued on it so     */
/* far) and tells when every operation before that point has completed, and whether one failed,     */
/* without waiting for operations enqueued later (unlike swcclStreamSynchronize). Record one after   */
/* each operation to follow them one by one (an asynchronous handle per operation). Events play the */
/* role of CUDA events (cudaEventRecord / cudaEventQuery / cudaEventSynchronize) for host streams.  */
/* An event's outcome covers the operations before its mark that ran since the stream's last        */
/* swcclStreamSynchronize (a failure that call reported and cleared before the event was recorded   */
/* is not reported again); since a stream skips work queued behind a failure, the operation that    */
/* failed and every later one up to the next synchronize report that failure. An event keeps what   */
/* it needs of its stream: it may outlive it (the stream's destroy completes its work first).        */
/* Events may be used from any thread, also while another thread waits on the same event.          */
/* In a forked child an event inherited from the parent is refused (swcclInvalidUsage) except by     */
/* swcclEventDestroy, which only forgets it.                                                        */
/* ------------------------------------------------------------------------------------------------ */

/**
 * Creates an event in *event. A new event is complete (as one recorded with a NULL stream).
 * Never blocks. Returns swcclInvalidArgument if event is NULL.
 */
swcclResult_t swcclEventCreate(swcclEvent_t* event);

/**
 * Frees event. Allowed at any time (pending operations are not affected); a thread waiting on it
 * in swcclEventWait returns normally. Never blocks.
 * Returns swcclInvalidArgument if event is NULL; swcclInvalidUsage if it is not a live event
 * (destroyed already), nothing happens.
 */
swcclResult_t swcclEventDestroy(swcclEvent_t event);

/**
 * Marks the point in stream after every operation enqueued on it so far (by any thread); recording
 * again moves the mark. stream == NULL: the event is complete at once (operations without a stream
 * completed before their call returned). Never blocks.
 * Returns swcclInvalidArgument if event is NULL; swcclInvalidUsage if event or stream is not a live
 * handle of its kind (destroyed, or inherited by a forked child). On error the mark is unchanged.
 */
swcclResult_t swcclEventRecord(swcclEvent_t event, swcclStream_t stream);

/**
 * Never blocks. Returns swcclSuccess once every operation before the mark completed successfully,
 * swcclInProgress while one is pending, or, once all completed, the result code of the first of them
 * that failed (swcclGetLastError(NULL) then names its operation, rank, peer and cause). Querying
 * does not clear anything: later calls answer the same.
 * Returns swcclInvalidArgument if event is NULL, swcclInvalidUsage if it is not a live event.
 */
swcclResult_t swcclEventQuery(swcclEvent_t event);

/**
 * Blocks until every operation before the mark completed, then returns as swcclEventQuery. Polls
 * briefly (SWCCL_SPIN_US, at most 50 us, yielding the core), then sleeps until the stream's thread finishes an
 * operation: no busy waiting, and it is woken as soon as the operation completes. Holds no lock the
 * stream needs. timeoutMs >= 0: returns swcclInProgress if not complete within timeoutMs
 * milliseconds (0: a query); timeoutMs < 0: no limit of its own (each operation is still bounded by
 * its communicator's timeout, so the wait ends).
 * Returns swcclInvalidArgument if event is NULL, swcclInvalidUsage if it is not a live event.
 */
swcclResult_t swcclEventWait(swcclEvent_t event, int timeoutMs);

/* ------------------------------------------------------------------------------------------------ */
/* Collective operations                                                                            */
/*                                                                                                  */
/* All ranks of comm must call the same collectives in the same order with matching count, datatype,*/
/* op and root. count == 0 is valid and does nothing (it still matches across ranks). Buffers are    */
/* host memory; sizes below are in elements of datatype.                                            */
/*                                                                                                  */
/* stream == NULL: the call blocks until the operation has completed on this rank (bounded by the   */
/* timeout). With a stream: the call validates its arguments, enqueues the operation and returns;    */
/* the buffers must stay valid and untouched until the stream has run it; errors of the operation    */
/* are reported by swcclStreamSynchronize / swcclStreamQuery and swcclCommGetAsyncError.             */
/* Inside swcclGroupStart/swcclGroupEnd: the call validates and records the operation; it runs at    */
/* the outermost swcclGroupEnd.                                                                     */
/* A nonblocking communicator (swcclConfig_t.blocking = 0) with stream == NULL: the call validates,  */
/* returns swcclInProgress and the operation runs in the background after the communicator's earlier */
/* ones; keep the buffers until swcclCommGetAsyncError no longer says swcclInProgress (it then says  */
/* swcclSuccess or the first error). Such a call on a communicator whose initialisation is pending   */
/* returns swcclInvalidArgument (as NCCL).                                                          */
/*                                                                                                  */
/* Each returns swcclInvalidArgument (no effect, comm still usable) if comm is NULL, a buffer needed */
/* on this rank is NULL while count > 0, datatype or op is not valid (op: built-in or a live        */
/* run-time operator of comm for this datatype), root/peer is not in [0, nranks), or the buffers     */
/* overlap other than in the allowed in-place way; swcclInvalidUsage if comm is finalized, stream  */
/* is not a live stream, or (in a group) another call of comm in the group named another stream;   */
/* swcclInvalidUsage (comm broken) if the ranks passed different arguments that must agree (the     */
/* collective, count (a count of 0 is still a call), datatype, op, root, pre-multiplied sum, the    */
/* algorithm setting; docs/RELIABILITY.md, "Argument agreement"), the error naming the disagreeing  */
/* rank; swcclSystemError, swcclInternalError, swcclRemoteError or swcclTimeout if the operation    */
/* failed or comm was already broken by an earlier failure (the communicator is broken: abort it).  */
/* ------------------------------------------------------------------------------------------------ */

/**
 * Reduces count elements of sendbuff across all ranks with op and leaves the result in recvbuff on
 * every rank. In place when sendbuff == recvbuff.
 */
swcclResult_t swcclAllReduce(const void* sendbuff, void* recvbuff, size_t count, swcclDataType_t datatype,
                             swcclRedOp_t op, swcclComm_t comm, swcclStream_t stream);

/**
 * Copies count elements from sendbuff on rank root to recvbuff on every rank. sendbuff is used only on
 * root. In place when sendbuff == recvbuff.
 */
swcclResult_t swcclBroadcast(const void* sendbuff, void* recvbuff, size_t count, swcclDataType_t datatype,
                             int root, swcclComm_t comm, swcclStream_t stream);

/**
 * NCCL's legacy in-place broadcast: copies count elements of buff on rank root to buff on every rank.
 * Same as swcclBroadcast(buff, buff, count, datatype, root, comm, stream).
 */
swcclResult_t swcclBcast(void* buff, size_t count, swcclDataType_t datatype, int root, swcclComm_t comm,
                         swcclStream_t stream);

/**
 * Reduces count elements of sendbuff across all ranks with op into recvbuff on rank root. recvbuff is
 * used only on root. In place when sendbuff == recvbuff.
 */
swcclResult_t swcclReduce(const void* sendbuff, void* recvbuff, size_t count, swcclDataType_t datatype,
                          swcclRedOp_t op, int root, swcclComm_t comm, swcclStream_t stream);

/**
 * Gathers sendcount elements from every rank into recvbuff (nranks * sendcount elements) on every rank,
 * rank r's data at offset r * sendcount. In place when sendbuff == recvbuff + rank * sendcount.
 */
swcclResult_t swcclAllGather(const void* sendbuff, void* recvbuff, size_t sendcount,
                             swcclDataType_t datatype, swcclComm_t comm, swcclStream_t stream);

/**
 * Reduces sendbuff (nranks * recvcount elements) across ranks with op and leaves block r of the result
 * (recvcount elements at offset r * recvcount) in recvbuff of rank r. In place when
 * recvbuff == sendbuff + rank * recvcount.
 */
swcclResult_t swcclReduceScatter(const void* sendbuff, void* recvbuff, size_t recvcount,
                                 swcclDataType_t datatype, swcclRedOp_t op, swcclComm_t comm,
                                 swcclStream_t stream);

/**
 * Sends block j (count elements at offset j * count) of sendbuff to rank j, which stores it as block
 * `rank` of its recvbuff. Both buffers hold nranks * count elements. Not in place: sendbuff and
 * recvbuff must not overlap.
 */
swcclResult_t swcclAlltoAll(const void* sendbuff, void* recvbuff, size_t count, swcclDataType_t datatype,
                            swcclComm_t comm, swcclStream_t stream);

/**
 * Gathers count elements from every rank into recvbuff (nranks * count elements) on rank root, rank r's
 * data at offset r * count. recvbuff is used only on root. In place on root when
 * sendbuff == recvbuff + root * count.
 */
swcclResult_t swcclGather(const void* sendbuff, void* recvbuff, size_t count, swcclDataType_t datatype,
                          int root, swcclComm_t comm, swcclStream_t stream);

/**
 * Sends block r (count elements at offset r * count) of sendbuff (nranks * count elements, used only on
 * root) to recvbuff of rank r. In place on root when recvbuff == sendbuff + root * count.
 */
swcclResult_t swcclScatter(const void* sendbuff, void* recvbuff, size_t count, swcclDataType_t datatype,
                           int root, swcclComm_t comm, swcclStream_t stream);

/**
 * Sends count elements of sendbuff to rank peer, which must call swcclRecv with the same count and
 * datatype. Sends and receives between the same pair match in call order. With stream == NULL and
 * outside a group, blocks until the data has been handed over (the peer may need to post its receive
 * first). Inside swcclGroupStart/swcclGroupEnd, all sends and receives of the group progress together,
 * so a ring of sends and receives in one group cannot deadlock. peer may be the calling rank only
 * inside a group that also holds the matching swcclRecv (outside one: swcclInvalidUsage, no effect).
 */
swcclResult_t swcclSend(const void* sendbuff, size_t count, swcclDataType_t datatype, int peer,
                        swcclComm_t comm, swcclStream_t stream);

/**
 * Receives count elements from rank peer into recvbuff; the counterpart of swcclSend (same matching,
 * blocking and grouping rules).
 */
swcclResult_t swcclRecv(void* recvbuff, size_t count, swcclDataType_t datatype, int peer,
                        swcclComm_t comm, swcclStream_t stream);

/**
 * Synchronizes all ranks of comm: completes on a rank only after every rank has called it.
 * Blocking with stream == NULL; enqueued otherwise.
 */
swcclResult_t swcclBarrier(swcclComm_t comm, swcclStream_t stream);

/**
 * Starts a group: until the matching swcclGroupEnd, operations called on this thread (on any
 * communicators) are only validated and recorded. Groups nest; only the outermost end runs them.
 * Never blocks; never fails (returns swcclSuccess).
 */
swcclResult_t swcclGroupStart(void);

/**
 * Ends a group. At the outermost end, the recorded operations of every communicator start together:
 * per communicator, its receives and sends are all posted before any is waited for, then its
 * collectives run in call order. Communicators progress concurrently (one thread each), so one thread
 * may drive all the communicators of swcclCommInitAll. The operations of one communicator whose calls
 * named a stream are enqueued on it as one unit and the call returns (their errors come from
 * swcclStreamSynchronize); those with stream == NULL run and the call blocks until all have
 * completed. Every operation of one communicator within a group must name the same stream (or all
 * NULL): the call naming another returns swcclInvalidUsage and is not recorded.
 * Communicator initialisations recorded in the group (swcclCommInitRank and friends) run first, each
 * on its own thread, all at once; the call waits for them (not for nonblocking ones).
 * Returns swcclInvalidUsage if no group is open on this thread; otherwise the first error of the
 * initialisations and of the operations run without a stream (each communicator's error is also its
 * swcclGetLastError), else swcclInProgress if work of nonblocking communicators (initialisations, or
 * operations called without a stream) goes on in the background, else swcclSuccess. A failing
 * communicator does not keep the others from running.
 */
swcclResult_t swcclGroupEnd(void);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* SWCCL_H_ */
