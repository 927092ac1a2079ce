/*
 * Compile-only test of include/swccl.h against the C ABI contract: the header stands alone,
 * tolerates double inclusion, and every name, enum value and function signature is as specified.
 * Valid as C99, C11 and C++ (compiled with g++ -x c++). A wrong prototype is a compile error:
 * assigning a function to a pointer of a different type is an error in C++ and, with -Werror, in C.
 */
#include "swccl.h"
#include "swccl.h" /* include guard */

#include <stddef.h>

#define SWCCL_TEST_CAT2(a, b) a##b
#define SWCCL_TEST_CAT(a, b) SWCCL_TEST_CAT2(a, b)
/* C99 has no _Static_assert: a negative array size fails to compile. */
#define CHECK(cond) typedef char SWCCL_TEST_CAT(swccl_check_line_, __LINE__)[(cond) ? 1 : -1]

/* Version */
CHECK(SWCCL_MAJOR == 0);
CHECK(SWCCL_MINOR == 1);
CHECK(SWCCL_PATCH == 0);
CHECK(SWCCL_VERSION_CODE == SWCCL_MAJOR * 10000 + SWCCL_MINOR * 100 + SWCCL_PATCH);
CHECK(SWCCL_VERSION_CODE == SWCCL_VERSION(SWCCL_MAJOR, SWCCL_MINOR, SWCCL_PATCH));
CHECK(SWCCL_CONFIG_MAGIC == 0x5357434Cu);
CHECK(SWCCL_SPLIT_NOCOLOR == -1);
CHECK(SWCCL_UNIQUE_ID_BYTES == 128);
CHECK(sizeof(swcclUniqueId) == 128);

/* swcclResult_t */
CHECK(swcclSuccess == 0);
CHECK(swcclSystemError == 2);
CHECK(swcclInternalError == 3);
CHECK(swcclInvalidArgument == 4);
CHECK(swcclInvalidUsage == 5);
CHECK(swcclRemoteError == 6);
CHECK(swcclInProgress == 7);
CHECK(swcclTimeout == 8);
CHECK(swcclNumResults == 9);

/* swcclDataType_t */
CHECK(swcclInt8 == 0 && swcclChar == 0);
CHECK(swcclUint8 == 1);
CHECK(swcclInt32 == 2 && swcclInt == 2);
CHECK(swcclUint32 == 3);
CHECK(swcclInt64 == 4);
CHECK(swcclUint64 == 5);
CHECK(swcclFloat16 == 6 && swcclHalf == 6);
CHECK(swcclFloat32 == 7 && swcclFloat == 7);
CHECK(swcclFloat64 == 8 && swcclDouble == 8);
CHECK(swcclBfloat16 == 9);
CHECK(swcclFloat8e4m3 == 10);
CHECK(swcclFloat8e5m2 == 11);
CHECK(swcclNumTypes == 12);

/* swcclRedOp_t */
CHECK(swcclSum == 0);
CHECK(swcclProd == 1);
CHECK(swcclMax == 2);
CHECK(swcclMin == 3);
CHECK(swcclAvg == 4);
CHECK(swcclNumOps == 5);
CHECK(sizeof(swcclRedOp_t) == sizeof(int));

/* swcclConfig_t: the first three fields are fixed forever. */
CHECK(offsetof(swcclConfig_t, size) == 0);
CHECK(offsetof(swcclConfig_t, magic) == sizeof(size_t));
CHECK(offsetof(swcclConfig_t, version) == sizeof(size_t) + sizeof(unsigned int));
CHECK(offsetof(swcclConfig_t, timeoutMs) > offsetof(swcclConfig_t, version));
CHECK(offsetof(swcclConfig_t, transports) > offsetof(swcclConfig_t, timeoutMs));
CHECK(offsetof(swcclConfig_t, commName) > offsetof(swcclConfig_t, transports));

/* Every function, with its exact type. */
static int check_prototypes(void) {
  const char* (*getErrorString)(swcclResult_t) = swcclGetErrorString;
  const char* (*getLastError)(swcclComm_t) = swcclGetLastError;
  swcclResult_t (*getVersion)(int*) = swcclGetVersion;
  swcclResult_t (*getUniqueId)(swcclUniqueId*) = swcclGetUniqueId;
  swcclResult_t (*commInitRank)(swcclComm_t*, int, swcclUniqueId, int) = swcclCommInitRank;
  swcclResult_t (*commInitRankConfig)(swcclComm_t*, int, swcclUniqueId, int, swcclConfig_t*) =
      swcclCommInitRankConfig;
  swcclResult_t (*commInitAll)(swcclComm_t*, int, const int*) = swcclCommInitAll;
  swcclResult_t (*commInitFromEnv)(swcclComm_t*, swcclConfig_t*) = swcclCommInitFromEnv;
  swcclResult_t (*commSplit)(swcclComm_t, int, int, swcclComm_t*, swcclConfig_t*) = swcclCommSplit;
  swcclResult_t (*commShrink)(swcclComm_t, int*, int, swcclComm_t*, swcclConfig_t*, int) = swcclCommShrink;
  swcclResult_t (*commFinalize)(swcclComm_t) = swcclCommFinalize;
  swcclResult_t (*commDestroy)(swcclComm_t) = swcclCommDestroy;
  swcclResult_t (*commAbort)(swcclComm_t) = swcclCommAbort;
  swcclResult_t (*commGetAsyncError)(swcclComm_t, swcclResult_t*) = swcclCommGetAsyncError;
  swcclResult_t (*commCount)(const swcclComm_t, int*) = swcclCommCount;
  swcclResult_t (*commUserRank)(const swcclComm_t, int*) = swcclCommUserRank;
  swcclResult_t (*commRegister)(const swcclComm_t, void*, size_t, void**) = swcclCommRegister;
  swcclResult_t (*commDeregister)(const swcclComm_t, void*) = swcclCommDeregister;
  swcclResult_t (*redOpCreatePreMulSum)(swcclRedOp_t*, void*, swcclDataType_t, int, swcclComm_t) =
      swcclRedOpCreatePreMulSum;
  swcclResult_t (*redOpDestroy)(swcclRedOp_t, swcclComm_t) = swcclRedOpDestroy;
  swcclResult_t (*streamCreate)(swcclStream_t*) = swcclStreamCreate;
  swcclResult_t (*streamDestroy)(swcclStream_t) = swcclStreamDestroy;
  swcclResult_t (*streamSynchronize)(swcclStream_t) = swcclStreamSynchronize;
  swcclResult_t (*streamQuery)(swcclStream_t) = swcclStreamQuery;
  swcclResult_t (*bcast)(void*, size_t, swcclDataType_t, int, swcclComm_t, swcclStream_t) = swcclBcast;
  swcclResult_t (*eventCreate)(swcclEvent_t*) = swcclEventCreate;
  swcclResult_t (*eventDestroy)(swcclEvent_t) = swcclEventDestroy;
  swcclResult_t (*eventRecord)(swcclEvent_t, swcclStream_t) = swcclEventRecord;
  swcclResult_t (*eventQuery)(swcclEvent_t) = swcclEventQuery;
  swcclResult_t (*eventWait)(swcclEvent_t, int) = swcclEventWait;
  swcclResult_t (*allReduce)(const void*, void*, size_t, swcclDataType_t, swcclRedOp_t, swcclComm_t,
                             swcclStream_t) = swcclAllReduce;
  swcclResult_t (*broadcast)(const void*, void*, size_t, swcclDataType_t, int, swcclComm_t,
                             swcclStream_t) = swcclBroadcast;
  swcclResult_t (*reduce)(const void*, void*, size_t, swcclDataType_t, swcclRedOp_t, int, swcclComm_t,
                          swcclStream_t) = swcclReduce;
  swcclResult_t (*allGather)(const void*, void*, size_t, swcclDataType_t, swcclComm_t, swcclStream_t) =
      swcclAllGather;
  swcclResult_t (*reduceScatter)(const void*, void*, size_t, swcclDataType_t, swcclRedOp_t, swcclComm_t,
                                 swcclStream_t) = swcclReduceScatter;
  swcclResult_t (*alltoAll)(const void*, void*, size_t, swcclDataType_t, swcclComm_t, swcclStream_t) =
      swcclAlltoAll;
  swcclResult_t (*gather)(const void*, void*, size_t, swcclDataType_t, int, swcclComm_t, swcclStream_t) =
      swcclGather;
  swcclResult_t (*scatter)(const void*, void*, size_t, swcclDataType_t, int, swcclComm_t, swcclStream_t) =
      swcclScatter;
  swcclResult_t (*send)(const void*, size_t, swcclDataType_t, int, swcclComm_t, swcclStream_t) = swcclSend;
  swcclResult_t (*recv)(void*, size_t, swcclDataType_t, int, swcclComm_t, swcclStream_t) = swcclRecv;
  swcclResult_t (*barrier)(swcclComm_t, swcclStream_t) = swcclBarrier;
  swcclResult_t (*groupStart)(void) = swcclGroupStart;
  swcclResult_t (*groupEnd)(void) = swcclGroupEnd;

  const void* all[] = {
    (const void*)&getErrorString, (const void*)&getLastError, (const void*)&getVersion,
    (const void*)&getUniqueId, (const void*)&commInitRank, (const void*)&commInitRankConfig,
    (const void*)&commInitAll, (const void*)&commInitFromEnv, (const void*)&commSplit,
    (const void*)&commShrink, (const void*)&commFinalize, (const void*)&commDestroy,
    (const void*)&commAbort, (const void*)&commGetAsyncError, (const void*)&commCount,
    (const void*)&commUserRank, (const void*)&commRegister, (const void*)&commDeregister,
    (const void*)&redOpCreatePreMulSum, (const void*)&redOpDestroy, (const void*)&streamCreate,
    (const void*)&streamDestroy, (const void*)&streamSynchronize, (const void*)&streamQuery,
    (const void*)&allReduce, (const void*)&broadcast, (const void*)&reduce, (const void*)&allGather,
    (const void*)&reduceScatter, (const void*)&alltoAll, (const void*)&gather, (const void*)&scatter,
    (const void*)&send, (const void*)&recv, (const void*)&barrier, (const void*)&groupStart,
    (const void*)&groupEnd, (const void*)&eventCreate, (const void*)&eventDestroy,
    (const void*)&eventRecord, (const void*)&eventQuery, (const void*)&eventWait, (const void*)&bcast,
  };
  return (int)(sizeof all / sizeof all[0]);
}

int main(void) {
  swcclConfig_t config = SWCCL_CONFIG_INITIALIZER;
  swcclUniqueId id;
  swcclComm_t comm = NULL;
  swcclStream_t stream = NULL;
  swcclResult_t result = swcclSuccess;
  swcclDataType_t type = swcclBfloat16;
  swcclRedOp_t op = swcclAvg;
  swcclScalarResidence_t residence = swcclScalarHostImmediate;
  id.internal[0] = 0;
  config.timeoutMs = 1000;
  config.commName = "header_test";
  config.blocking = 0;
  config.netName = "Socket";
  return (config.size == sizeof(swcclConfig_t) && config.magic == SWCCL_CONFIG_MAGIC &&
          config.version == SWCCL_VERSION_CODE && config.transports == NULL && comm == NULL &&
          config.splitShare == SWCCL_CONFIG_UNDEF_INT && config.minCTAs == SWCCL_CONFIG_UNDEF_INT &&
          stream == NULL && result == swcclSuccess && type == 9 && op == 4 && residence == 1 &&
          id.internal[0] == 0 && check_prototypes() == 43)
             ? 0
             : 1;
}
