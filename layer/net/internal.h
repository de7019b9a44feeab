/* internal.h - what the files of net/ share, and no one else. */
#ifndef TETHER_NET_INTERNAL_H
#define TETHER_NET_INTERNAL_H

#include "net/net.h"
#include "link/link.h"

/* The small tables of relayed.c, pending.c and datagrams.c: a spin lock
 * each, held for a few loads and stores (never across a syscall), and the
 * socket's inode as their key (a dup shares it; a descriptor number reused
 * after close names another inode). */
static inline void tether_net_lock(int *lock)
{
	while (__atomic_exchange_n(lock, 1, __ATOMIC_ACQUIRE))
		__builtin_ia32_pause();
}

static inline void tether_net_unlock(int *lock)
{
	__atomic_store_n(lock, 0, __ATOMIC_RELEASE);
}

static inline unsigned long tether_net_inode(long fd)
{
	unsigned long st[18]; /* struct stat on x86-64: 144 bytes, st_ino at offset 8 */

	if (tether_raw_syscall6(5 /* SYS_fstat */, fd, (long)st, 0, 0, 0, 0) < 0)
		return 0;
	return st[1];
}

/* target_sockets.c: a socket of this kind made in the target (MODE_SOCKETS),
 * from the spares the agent handed out, or -errno; forget drops fd if it is
 * a spare (the program wants its number: core/'s evict). */
long tether_target_socket(int family, int type, int protocol);
/* target_sockets.c: a data connection to a relaying network agent, proven
 * to it and not yet asked anything (MODE_STREAMS), or -errno. */
long tether_target_stream(void);
void tether_target_sockets_forget(long fd);

/* route.c: the ordered local/remote rules for outgoing connections. */
#define TETHER_ROUTE_MAX 64
struct tether_route_rule {
	unsigned char remote, family, prefix; /* family 0, 4 or 6 */
	unsigned short port;		      /* 0: any */
	unsigned char addr[16];
};
struct tether_route {
	unsigned n;
	int default_remote;
	struct tether_route_rule rules[TETHER_ROUTE_MAX];
};
int tether_route_parse(const char *text, struct tether_route *r);
int tether_route_remote(const struct tether_route *r, const unsigned char *sa, long len);

/* epoll.c: a descriptor's epoll registrations, read before a swap and
 * added again after it. */
struct tether_epoll_reg {
	int epfd;
	unsigned events;
	unsigned long data;
};
unsigned tether_epoll_find(int fd, struct tether_epoll_reg *regs, unsigned max);
void tether_epoll_restore(int fd, const struct tether_epoll_reg *regs, unsigned n);

/* net.c: what a socket swap keeps of the program's socket. */
#define TETHER_SOCKADDR_MAX 128
struct tether_net_kind {
	int family, type, protocol, fd_flags, fl;
};
/* net.c: connect fd through the stand-in (CONNECT), its registrations with
 * epoll kept: for a pending connect whose data connection ended unanswered.
 * 0 or -errno. */
long tether_net_connect_again(long fd, const unsigned char *sa, long len, const struct tether_net_kind *k);

/* pending.c: fd is (about to be: conn, put there next) a data connection
 * whose STREAM is not answered yet (non-blocking connect); SO_ERROR takes
 * the answer when it has come. */
void tether_pending_add(long fd, long conn, const unsigned char *sa, long len, const struct tether_net_kind *k);
void tether_pending_install(int go);
/* pending.c: whether any connect is pending; fd's answer so far, not taken
 * (0 if fd is not pending, else as SO_ERROR would give it: -EINPROGRESS,
 * 0, -errno; -ESTALE: the connection ended unanswered). */
int tether_pending_any(void);
long tether_pending_state(long fd);
/* pending.c: before a read, write or connect on fd: its answer taken if it
 * has come (0: go on), else -EAGAIN (a blocking socket waits), or the
 * connect's -errno.  connect: 1 if fd is pending, with *result what a
 * second connect gives (-EALREADY, -EISCONN, -errno). */
long tether_pending_settle(long fd);
int tether_pending_connect(long fd, long *result);
/* pending.c: the program's epoll registration of a pending fd, kept while
 * pollers.c waits on it for readable instead; watched finds it by the epoll
 * set and the event's data: the fd, or -1. */
int tether_pending_watch(long fd, int epfd, unsigned events, unsigned long data);
long tether_pending_watched(int epfd, unsigned long data, unsigned *events);
void tether_pending_unwatch(long fd, int epfd);
/* pollers.c: epoll, poll and select see a pending socket writable once it
 * is answered (libc programs); epoll_ctl is registrations.c's handler,
 * which passes it on here. */
void tether_pollers_install(void);
long tether_pollers_epoll_ctl(long nr, long epfd, long op, long fd, long event, long a5, long a6);

/* registrations.c: a libc program's last epoll registration of fd, if fd
 * still names the socket it was made for (of: 1, and *reg), made again on
 * the socket swapped in (restore), through pollers.c when installed (with
 * pollers: MODE_STREAMS). */
void tether_registrations_install(int with_pollers);
int tether_registration_of(long fd, struct tether_epoll_reg *reg);
void tether_registration_restore(long fd, const struct tether_epoll_reg *reg);

/* datagrams.c: UDP sockets relayed through a network agent, each one end
 * of a SOCK_SEQPACKET pair carrying struct tether_datagram records.  add:
 * fd is one now (peer: the target socket's connected peer, or none).  The
 * others: 1 if fd is one, with the call's result in *result; 0 if not (the
 * caller goes on as for any socket). */
void tether_datagrams_add(long fd, int family, const unsigned char *peer, unsigned peer_len);
/* datagrams.c: its read and write handlers in place (once; pending.c's
 * answers are taken there too). */
void tether_datagrams_install(void);
int tether_datagrams_sendto(long fd, long buf, long len, long flags, long addr, long addrlen, long *result);
int tether_datagrams_sendmsg(long fd, long msg, long flags, long *result);
int tether_datagrams_connect(long fd, const unsigned char *sa, long len, long *result);
int tether_datagrams_getsockopt(long fd, long level, long name, long optval, long optlenp, long *result);

/* relayed.c: sockets that stand for a socket in the target (through a
 * network agent's relay), and the addresses getsockname/getpeername give. */
void tether_relayed_add(long fd, const unsigned char *local, unsigned local_len, const unsigned char *peer,
                        unsigned peer_len);
void tether_relayed_install(void);
/* relayed.c: the peer getpeername gives for fd from now on (len 0: none). */
void tether_relayed_peer(long fd, const unsigned char *peer, unsigned len);

#endif
