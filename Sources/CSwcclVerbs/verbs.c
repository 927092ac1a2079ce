#define _GNU_SOURCE
#include "cswccl_verbs.h"
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <arpa/inet.h>

static struct {
    struct ibv_device **(*get_device_list)(int *);
    void (*free_device_list)(struct ibv_device **);
    const char *(*get_device_name)(struct ibv_device *);
    struct ibv_context *(*open_device)(struct ibv_device *);
    int (*close_device)(struct ibv_context *);
    int (*query_device)(struct ibv_context *, struct ibv_device_attr *);
    int (*query_port)(struct ibv_context *, uint8_t, struct _compat_ibv_port_attr *);
    int (*query_gid_ex)(struct ibv_context *, uint32_t, uint32_t, struct ibv_gid_entry *, uint32_t, size_t);
    struct ibv_pd *(*alloc_pd)(struct ibv_context *);
    int (*dealloc_pd)(struct ibv_pd *);
    struct ibv_comp_channel *(*create_comp_channel)(struct ibv_context *);
    int (*destroy_comp_channel)(struct ibv_comp_channel *);
    struct ibv_cq *(*create_cq)(struct ibv_context *, int, void *, struct ibv_comp_channel *, int);
    int (*destroy_cq)(struct ibv_cq *);
    int (*get_cq_event)(struct ibv_comp_channel *, struct ibv_cq **, void **);
    void (*ack_cq_events)(struct ibv_cq *, unsigned int);
    int (*get_async_event)(struct ibv_context *, struct ibv_async_event *);
    void (*ack_async_event)(struct ibv_async_event *);
    const char *(*event_type_str)(enum ibv_event_type);
    struct ibv_mr *(*reg_mr)(struct ibv_pd *, void *, size_t, int);
    int (*dereg_mr)(struct ibv_mr *);
    struct ibv_qp *(*create_qp)(struct ibv_pd *, struct ibv_qp_init_attr *);
    int (*modify_qp)(struct ibv_qp *, struct ibv_qp_attr *, int);
    int (*destroy_qp)(struct ibv_qp *);
    const char *(*wc_status_str)(enum ibv_wc_status);
} api;
static int loaded;

int cswccl_verbs_load(char *why, size_t why_len) {
    if (loaded) return 0;
    void *h = dlopen("libibverbs.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        snprintf(why, why_len, "libibverbs.so.1 not found (install rdma-core / libibverbs1): %s", dlerror());
        return -1;
    }
#define LOAD(field, name)                                                                           \
    do {                                                                                            \
        *(void **)&api.field = dlsym(h, name);                                                      \
        if (!api.field) {                                                                           \
            snprintf(why, why_len, "libibverbs.so.1 lacks %s (rdma-core too old?)", name);          \
            dlclose(h);                                                                             \
            return -2;                                                                              \
        }                                                                                           \
    } while (0)
    LOAD(get_device_list, "ibv_get_device_list");
    LOAD(free_device_list, "ibv_free_device_list");
    LOAD(get_device_name, "ibv_get_device_name");
    LOAD(open_device, "ibv_open_device");
    LOAD(close_device, "ibv_close_device");
    LOAD(query_device, "ibv_query_device");
    LOAD(query_port, "ibv_query_port");
    LOAD(query_gid_ex, "_ibv_query_gid_ex");
    LOAD(alloc_pd, "ibv_alloc_pd");
    LOAD(dealloc_pd, "ibv_dealloc_pd");
    LOAD(create_comp_channel, "ibv_create_comp_channel");
    LOAD(destroy_comp_channel, "ibv_destroy_comp_channel");
    LOAD(create_cq, "ibv_create_cq");
    LOAD(destroy_cq, "ibv_destroy_cq");
    LOAD(get_cq_event, "ibv_get_cq_event");
    LOAD(ack_cq_events, "ibv_ack_cq_events");
    LOAD(get_async_event, "ibv_get_async_event");
    LOAD(ack_async_event, "ibv_ack_async_event");
    LOAD(event_type_str, "ibv_event_type_str");
    LOAD(reg_mr, "ibv_reg_mr");
    LOAD(dereg_mr, "ibv_dereg_mr");
    LOAD(create_qp, "ibv_create_qp");
    LOAD(modify_qp, "ibv_modify_qp");
    LOAD(destroy_qp, "ibv_destroy_qp");
    LOAD(wc_status_str, "ibv_wc_status_str");
#undef LOAD
    loaded = 1;
    return 0;
}

struct ibv_device **cswccl_ibv_get_device_list(int *num) { return api.get_device_list(num); }
void cswccl_ibv_free_device_list(struct ibv_device **list) { api.free_device_list(list); }
const char *cswccl_ibv_get_device_name(struct ibv_device *device) { return api.get_device_name(device); }
struct ibv_context *cswccl_ibv_open_device(struct ibv_device *device) { return api.open_device(device); }
int cswccl_ibv_close_device(struct ibv_context *context) { return api.close_device(context); }
int cswccl_ibv_query_device(struct ibv_context *context, struct ibv_device_attr *attr) { return api.query_device(context, attr); }

/* As verbs.h's ___ibv_query_port: the provider's extended op if it has one, else the compat symbol. */
int cswccl_ibv_query_port(struct ibv_context *context, uint8_t port, struct ibv_port_attr *attr) {
    struct verbs_context *vctx = verbs_get_ctx_op(context, query_port);
    if (vctx) return vctx->query_port(context, port, attr, sizeof(*attr));
    memset(attr, 0, sizeof(*attr));
    return api.query_port(context, port, (struct _compat_ibv_port_attr *)attr);
}

int cswccl_ibv_query_gid_ex(struct ibv_context *context, uint32_t port, uint32_t index, struct ibv_gid_entry *entry) {
    return api.query_gid_ex(context, port, index, entry, 0, sizeof(*entry));
}

/* ---- data path ---- */

struct ibv_pd *cswccl_ibv_alloc_pd(struct ibv_context *context) { return api.alloc_pd(context); }
int cswccl_ibv_dealloc_pd(struct ibv_pd *pd) { return api.dealloc_pd(pd); }

static int set_nonblocking(int fd) {
    int flags = fcntl(fd, F_GETFL);
    return flags < 0 ? -1 : fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

struct ibv_comp_channel *cswccl_ibv_create_comp_channel(struct ibv_context *context) {
    struct ibv_comp_channel *ch = api.create_comp_channel(context);
    if (ch && set_nonblocking(ch->fd) != 0) {
        int e = errno;
        api.destroy_comp_channel(ch);
        errno = e;
        return NULL;
    }
    return ch;
}
int cswccl_ibv_destroy_comp_channel(struct ibv_comp_channel *channel) { return api.destroy_comp_channel(channel); }
int cswccl_comp_channel_fd(const struct ibv_comp_channel *channel) { return channel->fd; }
struct ibv_cq *cswccl_ibv_create_cq(struct ibv_context *context, int cqe, struct ibv_comp_channel *channel) {
    return api.create_cq(context, cqe, NULL, channel, 0);
}
int cswccl_ibv_destroy_cq(struct ibv_cq *cq) { return api.destroy_cq(cq); }
int cswccl_req_notify(struct ibv_cq *cq) { return ibv_req_notify_cq(cq, 0); }

int cswccl_drain_cq_events(struct ibv_comp_channel *channel) {
    int n = 0;
    struct ibv_cq *cq;
    void *ctx;
    while (api.get_cq_event(channel, &cq, &ctx) == 0) {
        api.ack_cq_events(cq, 1);
        n++;
    }
    return n;
}

int cswccl_async_fd(struct ibv_context *context) {
    return set_nonblocking(context->async_fd) == 0 ? context->async_fd : -1;
}

int cswccl_read_async_event(struct ibv_context *context, int *fatal, uint32_t *qp_num, char *what, size_t what_len) {
    struct ibv_async_event ev;
    if (api.get_async_event(context, &ev) != 0) return 0;
    *qp_num = 0;
    *fatal = 0;
    switch (ev.event_type) {
    case IBV_EVENT_QP_FATAL:
    case IBV_EVENT_QP_REQ_ERR:
    case IBV_EVENT_QP_ACCESS_ERR:
    case IBV_EVENT_PATH_MIG_ERR:
        *qp_num = ev.element.qp ? ev.element.qp->qp_num : 0;
        *fatal = 1;
        break;
    case IBV_EVENT_CQ_ERR:
    case IBV_EVENT_DEVICE_FATAL:
    case IBV_EVENT_PORT_ERR:
        *fatal = 1;
        break;
    default:
        break;
    }
    snprintf(what, what_len, "%s", api.event_type_str(ev.event_type));
    api.ack_async_event(&ev);
    return 1;
}

struct ibv_mr *cswccl_reg_mr(struct ibv_pd *pd, void *addr, size_t len, int writable) {
    return api.reg_mr(pd, addr, len, writable ? IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ : 0);
}
int cswccl_dereg_mr(struct ibv_mr *mr) { return api.dereg_mr(mr); }

struct ibv_qp *cswccl_create_rc_qp(struct ibv_pd *pd, struct ibv_cq *cq, uint32_t max_send, uint32_t max_recv,
                                   uint32_t max_inline, uint32_t *qp_num, uint32_t *inline_granted) {
    struct ibv_qp_init_attr a;
    memset(&a, 0, sizeof a);
    a.send_cq = cq;
    a.recv_cq = cq;
    a.qp_type = IBV_QPT_RC;
    a.sq_sig_all = 0;
    a.cap.max_send_wr = max_send;
    a.cap.max_recv_wr = max_recv;
    a.cap.max_send_sge = 1;
    a.cap.max_recv_sge = 1;
    a.cap.max_inline_data = max_inline;
    struct ibv_qp *qp = api.create_qp(pd, &a);
    if (qp) {
        *qp_num = qp->qp_num;
        *inline_granted = a.cap.max_inline_data;
    }
    return qp;
}
int cswccl_destroy_qp(struct ibv_qp *qp) { return api.destroy_qp(qp); }

static enum ibv_mtu mtu_enum(int bytes) {
    if (bytes >= 4096) return IBV_MTU_4096;
    if (bytes >= 2048) return IBV_MTU_2048;
    if (bytes >= 1024) return IBV_MTU_1024;
    if (bytes >= 512) return IBV_MTU_512;
    return IBV_MTU_256;
}

int cswccl_connect_qp(struct ibv_qp *qp, uint8_t port, int gid_index, int is_roce, const uint8_t *remote_gid,
                      uint16_t remote_lid, uint32_t remote_qpn, uint32_t remote_psn, uint32_t local_psn,
                      int mtu_bytes, uint8_t timeout, uint8_t retry_cnt, const char **step) {
    struct ibv_qp_attr a;
    int r;
    memset(&a, 0, sizeof a);
    a.qp_state = IBV_QPS_INIT;
    a.pkey_index = 0;
    a.port_num = port;
    a.qp_access_flags = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ;
    *step = "RESET to INIT";
    if ((r = api.modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS)) != 0) return r;

    memset(&a, 0, sizeof a);
    a.qp_state = IBV_QPS_RTR;
    a.path_mtu = mtu_enum(mtu_bytes);
    a.dest_qp_num = remote_qpn;
    a.rq_psn = remote_psn;
    a.max_dest_rd_atomic = 1;
    a.min_rnr_timer = 12; /* 0.64 ms */
    a.ah_attr.port_num = port;
    a.ah_attr.sl = 0;
    if (is_roce) {
        a.ah_attr.is_global = 1;
        memcpy(a.ah_attr.grh.dgid.raw, remote_gid, 16);
        a.ah_attr.grh.sgid_index = (uint8_t)gid_index;
        a.ah_attr.grh.hop_limit = 64;
        a.ah_attr.grh.traffic_class = 0;
    } else {
        a.ah_attr.dlid = remote_lid;
    }
    *step = "INIT to RTR";
    if ((r = api.modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN | IBV_QP_RQ_PSN |
                                       IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER)) != 0)
        return r;

    memset(&a, 0, sizeof a);
    a.qp_state = IBV_QPS_RTS;
    a.sq_psn = local_psn;
    a.timeout = timeout;
    a.retry_cnt = retry_cnt;
    a.rnr_retry = 7; /* receiver not ready: retry without limit (the transport's deadlines bound the wait) */
    a.max_rd_atomic = 1;
    *step = "RTR to RTS";
    return api.modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_SQ_PSN | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY |
                                     IBV_QP_MAX_QP_RD_ATOMIC);
}

int cswccl_qp_to_error(struct ibv_qp *qp) {
    struct ibv_qp_attr a;
    memset(&a, 0, sizeof a);
    a.qp_state = IBV_QPS_ERR;
    return api.modify_qp(qp, &a, IBV_QP_STATE);
}

uint16_t cswccl_port_lid(const struct ibv_port_attr *a) { return a->lid; }

int cswccl_post_send(struct ibv_qp *qp, uint64_t wr_id, int op, const void *laddr, uint32_t len, uint32_t lkey,
                     uint64_t raddr, uint32_t rkey, uint32_t imm, int signaled, int inline_data) {
    struct ibv_sge sge = {.addr = (uintptr_t)laddr, .length = len, .lkey = lkey};
    struct ibv_send_wr wr, *bad = NULL;
    memset(&wr, 0, sizeof wr);
    wr.wr_id = wr_id;
    wr.sg_list = len > 0 ? &sge : NULL;
    wr.num_sge = len > 0 ? 1 : 0;
    wr.opcode = op == CSWCCL_OP_SEND ? IBV_WR_SEND : op == CSWCCL_OP_WRITE ? IBV_WR_RDMA_WRITE : IBV_WR_RDMA_WRITE_WITH_IMM;
    wr.send_flags = (signaled ? IBV_SEND_SIGNALED : 0) | (inline_data ? IBV_SEND_INLINE : 0);
    if (op != CSWCCL_OP_SEND) {
        wr.wr.rdma.remote_addr = raddr;
        wr.wr.rdma.rkey = rkey;
    }
    if (op == CSWCCL_OP_WRITE_IMM) wr.imm_data = htonl(imm);
    return ibv_post_send(qp, &wr, &bad);
}

int cswccl_post_recv(struct ibv_qp *qp, uint64_t wr_id, void *addr, uint32_t len, uint32_t lkey) {
    struct ibv_sge sge = {.addr = (uintptr_t)addr, .length = len, .lkey = lkey};
    struct ibv_recv_wr wr, *bad = NULL;
    memset(&wr, 0, sizeof wr);
    wr.wr_id = wr_id;
    wr.sg_list = &sge;
    wr.num_sge = 1;
    return ibv_post_recv(qp, &wr, &bad);
}

int cswccl_poll_cq(struct ibv_cq *cq, int n, cswccl_wc *out) {
    struct ibv_wc wc[32];
    if (n > 32) n = 32;
    int got = ibv_poll_cq(cq, n, wc);
    for (int i = 0; i < got; i++) {
        out[i].wr_id = wc[i].wr_id;
        out[i].status = wc[i].status;
        switch (wc[i].opcode) {
        case IBV_WC_SEND: out[i].opcode = 0; break;
        case IBV_WC_RDMA_WRITE: out[i].opcode = 1; break;
        case IBV_WC_RECV: out[i].opcode = 2; break;
        case IBV_WC_RECV_RDMA_WITH_IMM: out[i].opcode = 3; break;
        default: out[i].opcode = 4; break;
        }
        out[i].byte_len = wc[i].byte_len;
        out[i].imm = (wc[i].wc_flags & IBV_WC_WITH_IMM) ? ntohl(wc[i].imm_data) : 0;
        out[i].qp_num = wc[i].qp_num;
        out[i].vendor_err = wc[i].vendor_err;
    }
    return got;
}

const char *cswccl_wc_status_str(uint32_t status) { return api.wc_status_str((enum ibv_wc_status)status); }
