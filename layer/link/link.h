/* link/ - the layer's lines out of the process: to the session (session.c:
 * hello, hook plans, trace frames, a forked child's own line) and to the
 * agent (request.c: one request on a connection of its own, descriptors
 * back), and the receipt of descriptors (fd_recv.c).  What travels on them
 * is protocol.h, the wire that src/tether/protocol/ mirrors.  Uses core/. */
#ifndef TETHER_LINK_H
#define TETHER_LINK_H

#include "core/core.h"
#include "link/protocol.h"

/* session.c: the connection to tether's session, if any. */
extern int tether_session_fd;
struct tether_session_reply {
	char plan[2048];
	char agent[108];	/* a unix socket path */
	char rules[2048];
};
int tether_session_open(const char *path, const char *go_build_id, unsigned id_len,
                        unsigned *mode, struct tether_session_reply *reply, int *ring);
int tether_session_send(const void *frame, unsigned long length);
void tether_session_wake(void); /* RING_WAKE, if it can go at once */
/* A u16 length and n bytes of s at p (the wire's strings); returns the end. */
unsigned char *tether_put_string(unsigned char *p, const char *s, unsigned n);
int tether_session_plan(const char *path, const char *go_build_id, unsigned id_len,
                        char *plan, unsigned plan_size);
/* The file rules (FILES_REQUEST): FILES_REPLY's payload, over its frames,
 * into payload (size bytes); its length or -errno. */
long tether_session_files(void *payload, unsigned long size);
/* In a child forked without exec: a line of its own (it replaces the
 * inherited one) and the memfd of a trace ring of its own in *ring. */
int tether_session_fork(int pid, int *ring);
/* Before this thread execs path, a static program (MODE_INJECT): the
 * session attaches and loads the layer at the exec.  0, or -errno. */
int tether_session_exec_notice(const char *path);

/* fd_recv.c: one message on conn into buf, and the descriptors that came
 * with it in fds (up to max, 1 to TETHER_SOCKETS_MAX; -1 in the slots
 * left).  Its length, 0 at end of stream, or -errno. */
long tether_recv_fds(long conn, void *buf, unsigned long size, int *fds, int max, int cloexec);

/* Requests and replies of a fixed size (SOCKET, CONNECT, the resolver's
 * OPEN) fit in this; a buffer on the stack of this size, not a whole
 * TETHER_FRAME_MAX, as detours run on g0, which in a static Go program is
 * 8 KiB (Go 1.19) or 16 KiB (1.21+).  An ERROR reply cut short still
 * gives its errno. */
#define TETHER_SMALL_FRAME 512

/* request.c: one request to the agent on a connection of its own, so
 * requests from many threads run side by side.  The reply replaces the
 * request in buf; descriptors that came with it are stored in fds (up to
 * max, at most TETHER_SOCKETS_MAX; -1 in the slots left).  Returns the
 * reply's length or -errno. */
int tether_request_init(const char *agent_path);
long tether_request(void *buf, unsigned long size, int *fds, int max, int cloexec);
/* The same for a request whose answer is reply_type with payload bytes and
 * descriptors (words: a buffer of size bytes, a multiple of 8): how many
 * (1 to max), or -errno (the agent's ERROR, else EPROTO); tether_ask: one,
 * the descriptor. */
long tether_ask_fds(unsigned long *words, unsigned long size, unsigned short reply_type, unsigned long payload,
                    int *fds, int max, int cloexec);
long tether_ask(unsigned long *words, unsigned long size, unsigned short reply_type, unsigned long payload,
                int cloexec);
int tether_agent_gone(void);
/* A reply of n bytes in words (one read elsewhere, e.g. on a data
 * connection): 0 if it is reply_type with payload bytes at least, else
 * -errno (the agent's ERROR, else EPROTO). */
long tether_check_reply(const unsigned long *words, long n, unsigned short reply_type, unsigned long payload);
/* A connection to the agent of the caller's own (one of the layer's
 * descriptors), for a request whose effect lasts as long as the connection
 * (LISTEN), and a request on it: as tether_ask_fds, but a reply may come
 * with no descriptor (0). */
long tether_agent_connection(void);
long tether_ask_on(long conn, unsigned long *words, unsigned long size, unsigned short reply_type,
                   unsigned long payload, int *fds, int max, int cloexec);

#endif
