#define _GNU_SOURCE
#include "cswccl_verbs.h"
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

static struct {
    struct ibv_device **(*get_device_list)(int *);
    void (*free_device_list)(struct ibv_device **);
    const char *(*get_device_name)(struct ibv_device *);
    struct ibv_context *(*open_device)(struct ibv_device *);
    int (*close_device)(struct ibv_context *);
    int (*query_device)(struct ibv_context *, struct ibv_device_attr *);
    int (*query_port)(struct ibv_context *, uint8_t, struct _compat_ibv_port_attr *);
    int (*query_gid_ex)(struct ibv_context *, uint32_t, uint32_t, struct ibv_gid_entry *, uint32_t, size_t);
} api;

int cswccl_verbs_load(char *why, size_t why_len) {
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
#undef LOAD
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
