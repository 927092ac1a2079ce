/* CSwcclVerbs: libibverbs for the verbs transport, loaded at run time (dlopen), as NCCL does, so that
 * libswccl.so loads and runs (TCP, shared memory) where rdma-core is not installed. Only the types come
 * from <infiniband/verbs.h> (libibverbs-dev at build time); no symbol of libibverbs is linked.
 * verbs.h's function-like macros and static inlines (ibv_query_port, ibv_query_gid_ex, ...) have
 * wrappers here that call through the loaded pointers. */
#ifndef CSWCCL_VERBS_H
#define CSWCCL_VERBS_H
#include <infiniband/verbs.h>
#include <stddef.h>
#include <stdint.h>

/* 0: loaded. -1: libibverbs.so.1 not found; -2: it lacks a needed function. why receives a reason. */
int cswccl_verbs_load(char *why, size_t why_len);

struct ibv_device **cswccl_ibv_get_device_list(int *num);
void cswccl_ibv_free_device_list(struct ibv_device **list);
const char *cswccl_ibv_get_device_name(struct ibv_device *device);
struct ibv_context *cswccl_ibv_open_device(struct ibv_device *device);
int cswccl_ibv_close_device(struct ibv_context *context);
int cswccl_ibv_query_device(struct ibv_context *context, struct ibv_device_attr *attr);
int cswccl_ibv_query_port(struct ibv_context *context, uint8_t port, struct ibv_port_attr *attr);
/* One GID table entry with its type (IB / RoCE v1 / RoCE v2); non-zero when the index is unused. */
int cswccl_ibv_query_gid_ex(struct ibv_context *context, uint32_t port, uint32_t index, struct ibv_gid_entry *entry);

/* Accessors Swift cannot reach through the verbs unions and anonymous members. */
static inline int cswccl_gid_entry_is_roce_v2(const struct ibv_gid_entry *e) { return e->gid_type == IBV_GID_TYPE_ROCE_V2; }
static inline int cswccl_gid_entry_is_roce_v1(const struct ibv_gid_entry *e) { return e->gid_type == IBV_GID_TYPE_ROCE_V1; }
static inline const uint8_t *cswccl_gid_bytes(const struct ibv_gid_entry *e) { return e->gid.raw; }
static inline int cswccl_port_is_active(const struct ibv_port_attr *a) { return a->state == IBV_PORT_ACTIVE; }
static inline int cswccl_port_is_ethernet(const struct ibv_port_attr *a) { return a->link_layer == IBV_LINK_LAYER_ETHERNET; }
static inline int cswccl_port_mtu_bytes(const struct ibv_port_attr *a) { return 128 << (int)a->active_mtu; }
#endif
