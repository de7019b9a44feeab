/* accept.c - what accept gives on a listener that takes the target's port.
 *
 * Behind a redirect (the target's app holds the port; --port-map) the
 * kernel's accepted socket is bound to the port the redirect sends to:
 * its name is made the one its client connected to (SO_ORIGINAL_DST), as
 * the program would see without tether.
 *
 * Through a tcp:// or ssh:// agent the program's listener is one end of a
 * unix SOCK_SEQPACKET pair (LISTEN_RELAYED, listen.c); the stand-in agent
 * sends on it, for each connection the agent accepted in the target, an
 * ACCEPT_REPLY frame (where the client connected, who the client is) with
 * the data connection that relays it beside it.  accept() and accept4()
 * on such a listener receive one and return that descriptor, the
 * client's address as accept gives it, and getsockname/getpeername then
 * name the target's socket (net/relayed.c).  Readiness is the pair's:
 * poll, epoll and Go's poller see the listener readable when a connection
 * waits, and a non-blocking listener says EAGAIN when none does. */
#include "incoming/internal.h"
#include "link/link.h"
#include "net/net.h"

#define SYS_close 3
#define SYS_getsockname 51
#define SYS_getsockopt 55
#define SYS_fcntl 72
#define AF_INET6 10
#define SOL_IP 0
#define IPPROTO_IPV6 41
#define SO_ORIGINAL_DST 80 /* SOL_IP and, as IP6T_SO_ORIGINAL_DST, IPPROTO_IPV6 */
#define F_GETFL 3
#define F_SETFL 4
#define O_NONBLOCK 04000
#define SOCK_NONBLOCK O_NONBLOCK
#define SOCK_CLOEXEC 02000000
#define EFAULT 14
#define EINVAL 22
#define ECONNABORTED 103

static long fail(long conn, long err)
{
	tether_raw_syscall6(SYS_close, conn, 0, 0, 0, 0, 0);
	return -err;
}

void tether_incoming_name_accepted(long conn)
{
	unsigned char own[28], dst[28] = {0};
	unsigned own_len = sizeof own, len = 16;

	if (tether_raw_syscall6(SYS_getsockname, conn, (long)own, (long)&own_len, 0, 0, 0) < 0 || own_len > sizeof own)
		return;
	/* IPv4, also a dual-stack socket's: an IPv4-mapped IPv6 address. */
	if (tether_raw_syscall6(SYS_getsockopt, conn, SOL_IP, SO_ORIGINAL_DST, (long)dst, (long)&len, 0) == 0) {
		if (own[0] == AF_INET6) {
			for (int i = 0; i < 4; i++)
				own[20 + i] = dst[4 + i]; /* sockaddr_in6: address at 8, ::ffff:a.b.c.d's last 4 bytes */
			own[2] = dst[2];
			own[3] = dst[3];
			tether_net_name(conn, own, own_len);
		} else {
			tether_net_name(conn, dst, len);
		}
		return;
	}
	len = sizeof dst;
	if (tether_raw_syscall6(SYS_getsockopt, conn, IPPROTO_IPV6, SO_ORIGINAL_DST, (long)dst, (long)&len, 0) == 0)
		tether_net_name(conn, dst, len);
}

long tether_incoming_accept_relayed(long fd, long addr, long lenp, long flags)
{
	unsigned long words[TETHER_SMALL_FRAME / 8];
	const struct tether_frame *f = (const struct tether_frame *)words;
	const unsigned char *peer;
	unsigned peer_len, room;
	long n, fl;
	int conn;

	n = tether_recv_fds(fd, words, sizeof words, &conn, 1, flags & SOCK_CLOEXEC);
	if (n < 0)
		return n; /* EAGAIN on a non-blocking listener with nothing waiting */
	if (n == 0)
		return -EINVAL; /* tether's side is gone: this is no listener any more */
	if (conn < 0)
		return -ECONNABORTED;
	if ((unsigned long)n < sizeof *f || f->length != (unsigned long)n || f->type != TETHER_MSG_ACCEPT_REPLY ||
	    tether_net_relayed(conn, (const unsigned char *)(f + 1), (const unsigned char *)f + n, &peer, &peer_len) < 0)
		return fail(conn, ECONNABORTED); /* as the kernel says of a connection lost before accept */
	if (flags & SOCK_NONBLOCK) {
		fl = tether_raw_syscall6(SYS_fcntl, conn, F_GETFL, 0, 0, 0, 0);
		if (fl < 0 || tether_raw_syscall6(SYS_fcntl, conn, F_SETFL, fl | O_NONBLOCK, 0, 0, 0) < 0)
			return fail(conn, ECONNABORTED);
	}
	if (addr) {
		if (tether_peek(&room, lenp, sizeof room) != sizeof room)
			return fail(conn, EFAULT);
		if ((int)room < 0)
			return fail(conn, EINVAL);
		if (tether_poke(addr, peer, room < peer_len ? room : peer_len) < 0 ||
		    tether_poke(lenp, &peer_len, sizeof peer_len) < 0)
			return fail(conn, EFAULT);
	}
	return conn;
}
