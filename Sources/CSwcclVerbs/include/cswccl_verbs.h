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

/* ---- the data path: thin wrappers with plain arguments, so Swift never touches verbs unions ---- */

struct ibv_pd *cswccl_ibv_alloc_pd(struct ibv_context *context);
int cswccl_ibv_dealloc_pd(struct ibv_pd *pd);
/* A completion channel whose descriptor is non-blocking (poll(2) tells when to read it). */
struct ibv_comp_channel *cswccl_ibv_create_comp_channel(struct ibv_context *context);
int cswccl_ibv_destroy_comp_channel(struct ibv_comp_channel *channel);
int cswccl_comp_channel_fd(const struct ibv_comp_channel *channel);
struct ibv_cq *cswccl_ibv_create_cq(struct ibv_context *context, int cqe, struct ibv_comp_channel *channel);
int cswccl_ibv_destroy_cq(struct ibv_cq *cq);
/* Arms the CQ for one notification on the channel (next completion of any kind). */
int cswccl_req_notify(struct ibv_cq *cq);
/* Reads and acknowledges every pending event of the channel; returns how many (0 if none). */
int cswccl_drain_cq_events(struct ibv_comp_channel *channel);
/* Sets the context's asynchronous-event descriptor non-blocking and returns it. */
int cswccl_async_fd(struct ibv_context *context);
/* One asynchronous event if any: 1 and its description (and the QP number, or 0) filled in; 0 if none. */
int cswccl_read_async_event(struct ibv_context *context, int *fatal, uint32_t *qp_num, char *what, size_t what_len);

/* Registers [addr, addr+len): with writable, for local write, remote write and remote read; else for
 * local reads only (a send source in read-only memory). NULL with errno set on failure. */
struct ibv_mr *cswccl_reg_mr(struct ibv_pd *pd, void *addr, size_t len, int writable);
int cswccl_dereg_mr(struct ibv_mr *mr);
static inline uint32_t cswccl_mr_lkey(const struct ibv_mr *mr) { return mr->lkey; }
static inline uint32_t cswccl_mr_rkey(const struct ibv_mr *mr) { return mr->rkey; }

/* An RC queue pair on `cq` (send and receive); its number in *qp_num. NULL with errno set on failure. */
struct ibv_qp *cswccl_create_rc_qp(struct ibv_pd *pd, struct ibv_cq *cq, uint32_t max_send, uint32_t max_recv,
                                   uint32_t max_inline, uint32_t *qp_num, uint32_t *inline_granted);
int cswccl_destroy_qp(struct ibv_qp *qp);
/* RESET -> INIT -> RTR -> RTS towards the remote QP. gid is the remote GID (16 bytes); on InfiniBand
 * (is_roce == 0) the remote LID addresses it instead. mtu in bytes (256..4096). timeout and retry as
 * ibv_qp_attr. Returns 0 or an errno; *step names the transition that failed. */
int cswccl_connect_qp(struct ibv_qp *qp, uint8_t port, int gid_index, int is_roce, const uint8_t *remote_gid,
                      uint16_t remote_lid, uint32_t remote_qpn, uint32_t remote_psn, uint32_t local_psn,
                      int mtu_bytes, uint8_t timeout, uint8_t retry_cnt, const char **step);
/* Moves a QP to the error state: outstanding work requests complete with a flush status. */
int cswccl_qp_to_error(struct ibv_qp *qp);
/* The port's LID (InfiniBand addressing). */
uint16_t cswccl_port_lid(const struct ibv_port_attr *a);

enum { CSWCCL_OP_SEND = 0, CSWCCL_OP_WRITE = 1, CSWCCL_OP_WRITE_IMM = 2 };
/* Posts one work request with one scatter entry. Returns 0 or an errno (ENOMEM: send queue full). */
int cswccl_post_send(struct ibv_qp *qp, uint64_t wr_id, int op, const void *laddr, uint32_t len, uint32_t lkey,
                     uint64_t raddr, uint32_t rkey, uint32_t imm, int signaled, int inline_data);
int cswccl_post_recv(struct ibv_qp *qp, uint64_t wr_id, void *addr, uint32_t len, uint32_t lkey);

/* A work completion reduced to what the transport reads. opcode: 0 send, 1 write, 2 recv, 3 recv with
 * immediate (the immediate in host order), 4 other. */
typedef struct {
    uint64_t wr_id;
    uint32_t status;
    uint32_t opcode;
    uint32_t byte_len;
    uint32_t imm;
    uint32_t qp_num;
    uint32_t vendor_err;
} cswccl_wc;
/* Polls up to n completions into out; returns how many, or a negative value on error. */
int cswccl_poll_cq(struct ibv_cq *cq, int n, cswccl_wc *out);
const char *cswccl_wc_status_str(uint32_t status);
static inline int cswccl_wc_is_flush(uint32_t status) { return status == IBV_WC_WR_FLUSH_ERR; }
#endif
