/* Private to the nats binding (nats.c: connections, nats_sub.c: subscriptions, nats_msg.c:
 * messages): the three userdata types and what each file offers the others. */
#ifndef AP_NATS_LUA_H
#define AP_NATS_LUA_H

#include "binding.h"
#include "nats.h"

#define CONN_TYPE "autopgo.nats"
#define SUB_TYPE  "autopgo.nats_sub"
#define MSG_TYPE  "autopgo.nats_msg"

typedef struct msg_ud msg_ud;

typedef struct {
    ap_nats *n;
    lua_State *L;
    ap_pending pending; /* callbacks in flight; pins the userdata while the connection is open */
    int event_ref;      /* on_event */
    int connected_once;
    int closing, closed;
    msg_ud *msgs; /* live messages: they must not outlive the connection's threads */
} conn_ud;

typedef struct {
    ap_nats_sub *s;
    conn_ud *c;
    int ref; /* registry ref to this userdata (the subscription's opaque finds it) */
    int pull;
} sub_ud;

struct msg_ud {
    natsMsg *m;
    conn_ud *c;
    msg_ud *prev, *next;
};

/* nats_msg.c */
void ap_nats_lua_push_msg(lua_State *L, conn_ud *c, natsMsg *m);
/* Frees every live message of c (at close: none may outlive the connection's threads). */
void ap_nats_lua_release_msgs(conn_ud *c);
void ap_nats_lua_register_msg(lua_State *L);

/* nats_sub.c */
/* Pushes a new subscription of the connection at conn_idx with its callbacks. */
sub_ud *ap_nats_lua_new_sub(lua_State *L, conn_ud *c, int conn_idx, int on_msg_idx,
                            int on_stopped_idx);
/* Ends every subscription of the connection whose user value table is at uv_idx. */
void ap_nats_lua_release_subs(lua_State *L, int uv_idx);
void ap_nats_lua_register_sub(lua_State *L);

#endif
