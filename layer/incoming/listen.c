/* listen.c - a listener on a TCP port takes the target's port.
 *
 * On listen(), a TCP socket bound to a port (Go's net.Listen, libc's
 * bind and listen) is offered to the agent in a LISTEN request, on a
 * connection of its own that the layer keeps.  The agent either says
 * "here" (the settings keep this port local: the listen goes on as if
 * tether were not there) or sends a socket already listening in the
 * target, which takes the place of the program's as a connect's does
 * (net/: same number, flags, options, epoll registrations), so the
 * kernel delivers the target's connections to the program itself.  When
 * that socket is bound elsewhere than the program asked (a redirected
 * port, a mirror's loopback socket, --port-map), getsockname keeps giving
 * what the program asked for.
 *
 * The kept connection is the listener's lease: when the program closes
 * the listener the layer closes it, and when the process ends (even by
 * SIGKILL) the kernel does; either way the agent undoes what it set up
 * in the target.  A forked child shares the lease with its parent, as it
 * shares the listener.
 *
 * Through a network agent (tcp://, ssh://) the socket that comes is one end
 * of a unix SOCK_SEQPACKET pair instead (LISTEN_RELAYED), on which
 * connections the agent accepted come with their addresses: accept and
 * accept4 on it take them (accept.c). */
#include "incoming/internal.h"
#include "link/link.h"
#include "net/net.h"

#define SYS_close 3
#define SYS_getsockname 51
#define SYS_accept 43
#define SYS_listen 50
#define SYS_getsockopt 55
#define SYS_accept4 288
#define AF_INET 2
#define AF_INET6 10
#define SOL_SOCKET 1
#define SO_TYPE 3
#define SO_PROTOCOL 38
#define SOCK_STREAM 1
#define IPPROTO_TCP 6
#define IPPROTO_IPV6 41
#define IPV6_V6ONLY 26
#define LEASES 16
#define MESSAGE_MAX 200

struct sockaddr_inet {
	unsigned short family, port; /* port in network order */
	unsigned char rest[24];
};

/* The program's listeners in the target and their leases; fd -1: free.
 * kind: what accept does on it (accept.c): PLAIN, the kernel's accept;
 * RENAMED, the target's socket is bound elsewhere than the program asked
 * (a redirect, --port-map): an accepted socket is named by where its
 * client connected; RELAYED, a network agent's (LISTEN_RELAYED). */
enum { PLAIN, RENAMED, RELAYED };
static struct lease { int fd, conn, kind; } leases[LEASES] = {[0 ... LEASES - 1] = {-1, -1, PLAIN}};
static int nleases, nspecial; /* nspecial: leases not PLAIN */

static long raw(long nr, long a1, long a2, long a3, long a4, long a5)
{
	return tether_raw_syscall6(nr, a1, a2, a3, a4, a5, 0);
}

static int sockopt(long fd, int level, int name)
{
	int v = -1;
	unsigned len = sizeof v;

	return raw(SYS_getsockopt, fd, level, name, (long)&v, (long)&len) < 0 ? -1 : v;
}

/* A lease slot for fd with conn, or -1. */
static int keep(long fd, long conn, int kind)
{
	for (int i = 0; i < LEASES; i++) {
		int free = -1;

		if (__atomic_compare_exchange_n(&leases[i].fd, &free, -2, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) {
			leases[i].conn = (int)conn;
			leases[i].kind = kind;
			if (kind != PLAIN)
				__atomic_add_fetch(&nspecial, 1, __ATOMIC_RELEASE);
			__atomic_store_n(&leases[i].fd, (int)fd, __ATOMIC_RELEASE);
			__atomic_add_fetch(&nleases, 1, __ATOMIC_RELEASE);
			return i;
		}
	}
	return -1;
}

/* fd's lease, if it has one, ends: the agent undoes what it set up. */
static void end_lease(long fd)
{
	for (int i = 0; i < LEASES; i++) {
		int held = (int)fd;

		if (__atomic_compare_exchange_n(&leases[i].fd, &held, -2, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) {
			tether_fd_close(leases[i].conn);
			if (leases[i].kind != PLAIN)
				__atomic_sub_fetch(&nspecial, 1, __ATOMIC_RELEASE);
			__atomic_sub_fetch(&nleases, 1, __ATOMIC_RELEASE);
			__atomic_store_n(&leases[i].fd, -1, __ATOMIC_RELEASE);
			return;
		}
	}
}

/* The program dups onto a lease's connection: the lease moves (core/'s evict). */
static void move_lease(long conn)
{
	for (int i = 0; i < LEASES; i++)
		if (__atomic_load_n(&leases[i].fd, __ATOMIC_ACQUIRE) >= 0 && leases[i].conn == conn) {
			long moved = tether_fd_renumber(conn);

			if (moved >= 0)
				leases[i].conn = (int)moved;
			return;
		}
}

/* The agent's reason for refusing, as the user should read it. */
static void say_refused(const unsigned long *words, long port)
{
	const struct tether_frame *f = (const struct tether_frame *)words;
	const unsigned char *p = (const unsigned char *)(f + 1) + sizeof(struct tether_error);
	char msg[MESSAGE_MAX + 1], num[8];
	unsigned n;

	if (f->type != TETHER_MSG_ERROR || f->length < sizeof *f + sizeof(struct tether_error) + 2)
		return;
	n = (unsigned)p[0] | (unsigned)p[1] << 8;
	if (n > MESSAGE_MAX)
		n = MESSAGE_MAX;
	if (n > TETHER_SMALL_FRAME - sizeof *f - sizeof(struct tether_error) - 2)
		n = TETHER_SMALL_FRAME - sizeof *f - sizeof(struct tether_error) - 2;
	for (unsigned i = 0; i < n; i++)
		msg[i] = p[2 + i] ? (char)p[2 + i] : ' ';
	msg[n] = '\0';
	tether_fmt_ulong(num, (unsigned long)port, 10);
	tether_say((const char *[]){"tether: listen on port ", num, ": ", msg, 0});
}

static long incoming_listen(long nr, long fd, long backlog, long a3, long a4, long a5, long a6)
{
	unsigned long words[TETHER_SMALL_FRAME / 8];
	struct tether_frame *f = (struct tether_frame *)words;
	struct tether_listen *l = (struct tether_listen *)(f + 1);
	unsigned char *p = (unsigned char *)(l + 1);
	struct sockaddr_inet asked = {0, 0, {0}}, now = {0, 0, {0}};
	unsigned len = sizeof asked, now_len = sizeof now;
	long conn, n;
	int sock, relayed, renamed;

	if (raw(SYS_getsockname, fd, (long)&asked, (long)&len, 0, 0) < 0 || len > sizeof asked ||
	    (asked.family != AF_INET && asked.family != AF_INET6) || !asked.port ||
	    sockopt(fd, SOL_SOCKET, SO_TYPE) != SOCK_STREAM || sockopt(fd, SOL_SOCKET, SO_PROTOCOL) != IPPROTO_TCP ||
	    tether_net_in_target(fd))
		return tether_raw_syscall6(nr, fd, backlog, a3, a4, a5, a6);
	l->family = asked.family;
	l->flags = asked.family == AF_INET6 && sockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY) == 1 ? TETHER_LISTEN_V6ONLY : 0;
	l->backlog = (int)backlog;
	p[0] = (unsigned char)len;
	p[1] = 0;
	for (unsigned i = 0; i < len; i++)
		p[2 + i] = ((const unsigned char *)&asked)[i];
	f->length = (unsigned)(sizeof *f + sizeof *l + 2 + len);
	f->type = TETHER_MSG_LISTEN;
	f->flags = 0;
	f->id = 1;
	conn = tether_agent_connection();
	if (conn < 0)
		return conn;
	n = tether_ask_on(conn, words, sizeof words, TETHER_MSG_LISTEN_REPLY, sizeof(struct tether_listen_reply),
	                  &sock, 1, 1);
	if (n <= 0) {
		tether_fd_close(conn);
		if (n < 0)
			say_refused(words, __builtin_bswap16(asked.port));
		return n < 0 ? n : tether_raw_syscall6(nr, fd, backlog, a3, a4, a5, a6);
	}
	relayed = ((const struct tether_listen_reply *)(f + 1))->how == TETHER_LISTEN_RELAYED;
	renamed = !relayed && raw(SYS_getsockname, sock, (long)&now, (long)&now_len, 0, 0) == 0 &&
	          (now_len != len || tether_memcmp(&now, &asked, len));
	if (keep(fd, conn, relayed ? RELAYED : renamed ? RENAMED : PLAIN) < 0) {
		tether_fd_close(conn);
		raw(SYS_close, sock, 0, 0, 0, 0);
		return -105; /* ENOBUFS: more listeners than leases */
	}
	if ((n = tether_net_swap(fd, sock)) < 0) {
		end_lease(fd);
		return n;
	}
	if (relayed || renamed)
		tether_net_name(fd, (const unsigned char *)&asked, len);
	return 0;
}

static int kind_of(long fd)
{
	for (int i = 0; i < LEASES; i++)
		if (__atomic_load_n(&leases[i].fd, __ATOMIC_ACQUIRE) == fd)
			return leases[i].kind;
	return PLAIN;
}

/* accept and accept4 (its flags in a4) on a listener that is not PLAIN;
 * one load when there is none. */
static long incoming_accept(long nr, long fd, long addr, long lenp, long a4, long a5, long a6)
{
	long conn;

	switch (__atomic_load_n(&nspecial, __ATOMIC_ACQUIRE) ? kind_of(fd) : PLAIN) {
	case RELAYED:
		return tether_incoming_accept_relayed(fd, addr, lenp, nr == SYS_accept4 ? a4 : 0);
	case RENAMED:
		if ((conn = tether_raw_syscall6(nr, fd, addr, lenp, a4, a5, a6)) >= 0)
			tether_incoming_name_accepted(conn);
		return conn;
	default:
		return tether_raw_syscall6(nr, fd, addr, lenp, a4, a5, a6);
	}
}

/* A listener's close ends its lease; one load when there is none. */
static long incoming_close(long nr, long fd, long a2, long a3, long a4, long a5, long a6)
{
	if (__atomic_load_n(&nleases, __ATOMIC_ACQUIRE))
		end_lease(fd);
	return tether_raw_syscall6(nr, fd, a2, a3, a4, a5, a6);
}

void tether_incoming_install(void)
{
	tether_fd_on_evict(move_lease);
	tether_set_handler(SYS_listen, incoming_listen, TETHER_MAY_BLOCK);
	tether_set_handler(SYS_close, incoming_close, 0);
	tether_set_handler(SYS_accept, incoming_accept, TETHER_MAY_BLOCK);
	tether_set_handler(SYS_accept4, incoming_accept, TETHER_MAY_BLOCK);
}
