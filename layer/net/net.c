/* net.c - outgoing connections made in the target (tether exec).
 *
 * connect() on an IPv4/IPv6 TCP or UDP socket to a destination the rules
 * send to the target (route.c) takes a socket of the same kind made inside
 * the target (target_sockets.c: the agent hands them out).  It takes the
 * place of the program's descriptor (dup3: same number, close-on-exec
 * kept), gets the program's file status flags (O_NONBLOCK) and the socket
 * options the program set, and then the kernel connects it, here: a socket
 * belongs to the network namespace it was made in, so the connection
 * starts from the target, and the program sees exactly what a local
 * connect gives (0, EINPROGRESS, an error; blocking as its socket says).
 * Go registers a socket with its poller only after connect returns
 * (docs/go-internals.md section 10), so the swap is invisible to it.
 * Unconnected UDP: sendto()/sendmsg() to a remote address first moves the
 * socket into the target the same way (move_udp).
 * Through a network agent (no MODE_SOCKETS) the agent connects and the
 * descriptor is a relay stream instead: the connect is finished when the
 * reply comes, which also names the target socket's addresses (relayed.c). */
#include "net/internal.h"

#define SYS_close 3
#define SYS_socket 41
#define SYS_connect 42
#define SYS_sendto 44
#define SYS_recvfrom 45
#define SYS_sendmsg 46
#define SYS_bind 49
#define SYS_getsockname 51
#define SYS_getpeername 52
#define SYS_getsockopt 55
#define SYS_setsockopt 54
#define SYS_fcntl 72
#define SYS_dup3 292
#define AF_INET 2
#define AF_INET6 10
#define SOCK_STREAM 1
#define SOCK_DGRAM 2
#define SOL_SOCKET 1
#define SO_TYPE 3
#define SO_PROTOCOL 38
#define SO_NETNS_COOKIE 71
#define SO_RCVBUF 8
#define SO_SNDBUF 7
#define IPPROTO_IP 0
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define IPPROTO_IPV6 41
#define F_GETFD 1
#define F_GETFL 3
#define F_SETFL 4
#define FD_CLOEXEC 1
#define O_CLOEXEC 02000000
#define SOCK_CLOEXEC O_CLOEXEC
#define MSG_NOSIGNAL 0x4000
#define EINTR 4
#define EPROTO 71
#define ECONNRESET 104
#define ESTALE 116
#define EISCONN 106
#define EINPROGRESS 115
#define O_NONBLOCK 04000

static struct tether_route route;
static int sockets; /* MODE_SOCKETS: the agent hands out sockets made in the target */
static int streams; /* MODE_STREAMS: the stand-in hands out data connections to the agent */

static long raw(long nr, long a1, long a2, long a3, long a4, long a5)
{
	return tether_raw_syscall6(nr, a1, a2, a3, a4, a5, 0);
}

/* Options a program sets before connect that must follow its socket into
 * the target: those whose value differs from a fresh socket's made here
 * (so, set by the program) are set on the target's socket.  Comparing with
 * the target's socket instead would carry this namespace's defaults, such
 * as buffer sizes, and a buffer size set explicitly stops the kernel from
 * tuning it: throughput collapses.  An option the kernel rejects for this
 * kind of socket is skipped. */
static const struct { int level, name; } carried[] = {
	{SOL_SOCKET, 2},  /* SO_REUSEADDR */
	{SOL_SOCKET, 6},  /* SO_BROADCAST */
	{SOL_SOCKET, SO_SNDBUF},
	{SOL_SOCKET, SO_RCVBUF},
	{SOL_SOCKET, 9},  /* SO_KEEPALIVE */
	{SOL_SOCKET, 12}, /* SO_PRIORITY */
	{SOL_SOCKET, 13}, /* SO_LINGER */
	{SOL_SOCKET, 15}, /* SO_REUSEPORT */
	{SOL_SOCKET, 20}, /* SO_RCVTIMEO */
	{SOL_SOCKET, 21}, /* SO_SNDTIMEO */
	{SOL_SOCKET, 36}, /* SO_MARK */
	{IPPROTO_TCP, 1}, /* TCP_NODELAY */
	{IPPROTO_TCP, 4}, /* TCP_KEEPIDLE */
	{IPPROTO_TCP, 5}, /* TCP_KEEPINTVL */
	{IPPROTO_TCP, 6}, /* TCP_KEEPCNT */
	{IPPROTO_TCP, 18}, /* TCP_USER_TIMEOUT */
	{IPPROTO_IP, 1},  /* IP_TOS */
	{IPPROTO_IP, 2},  /* IP_TTL */
	{IPPROTO_IPV6, 16}, /* IPV6_UNICAST_HOPS */
	{IPPROTO_IPV6, 67}, /* IPV6_TCLASS */
};

#define NCARRIED (sizeof carried / sizeof carried[0])

union optval {
	long l[2];		/* the largest carried: struct timeval, struct linger */
	int i;
};

/* A fresh socket's values, per kind (IPv4/IPv6 x TCP/UDP), read once. */
static struct defaults {
	int ready;
	unsigned len[NCARRIED];	/* 0: the kernel has no such option for this kind */
	union optval val[NCARRIED];
} defaults[2][2];

static const struct defaults *defaults_for(int family, int type, int protocol)
{
	struct defaults *d = &defaults[family == AF_INET6][type == SOCK_DGRAM];
	long fresh;

	if (protocol != (type == SOCK_STREAM ? IPPROTO_TCP : IPPROTO_UDP))
		return 0;
	if (__atomic_load_n(&d->ready, __ATOMIC_ACQUIRE))
		return d;
	fresh = raw(SYS_socket, family, type | SOCK_CLOEXEC, protocol, 0, 0);
	if (fresh < 0)
		return 0;
	/* Two threads may fill it at once: both write the same values. */
	for (unsigned i = 0; i < NCARRIED; i++) {
		d->len[i] = sizeof d->val[i];
		if (raw(SYS_getsockopt, fresh, carried[i].level, carried[i].name, (long)&d->val[i],
		        (long)&d->len[i]) < 0)
			d->len[i] = 0;
	}
	raw(SYS_close, fresh, 0, 0, 0, 0);
	__atomic_store_n(&d->ready, 1, __ATOMIC_RELEASE);
	return d;
}

static void carry_options(long from, long to, int family, int type, int protocol)
{
	const struct defaults *d = defaults_for(family, type, protocol);

	if (!d)
		return;
	for (unsigned i = 0; i < NCARRIED; i++) {
		union optval set = {{0, 0}};
		unsigned len = sizeof set;
		int level = carried[i].level, name = carried[i].name;

		if (!d->len[i] || raw(SYS_getsockopt, from, level, name, (long)&set, (long)&len) < 0 ||
		    (len == d->len[i] && !tether_memcmp(&set, &d->val[i], len)))
			continue;
		if (level == SOL_SOCKET && (name == SO_SNDBUF || name == SO_RCVBUF))
			set.i /= 2; /* the kernel reports twice what was set */
		raw(SYS_setsockopt, to, level, name, (long)&set, len);
	}
}

static int sockopt_int(long fd, int name)
{
	int v = -1;
	unsigned len = sizeof v;

	if (raw(SYS_getsockopt, fd, SOL_SOCKET, name, (long)&v, (long)&len) < 0)
		return -1;
	return v;
}

static int kind_of(long fd, int family, struct tether_net_kind *k)
{
	k->family = family;
	k->type = sockopt_int(fd, SO_TYPE);
	k->protocol = sockopt_int(fd, SO_PROTOCOL);
	k->fd_flags = (int)raw(SYS_fcntl, fd, F_GETFD, 0, 0, 0);
	k->fl = (int)raw(SYS_fcntl, fd, F_GETFL, 0, 0, 0);
	return (k->type == SOCK_STREAM || k->type == SOCK_DGRAM) && k->protocol >= 0 && k->fd_flags >= 0 &&
	       k->fl >= 0 ? 0 : -1;
}

/* Put the target's socket newfd in place of fd, as the program made it,
 * registered with epoll as the program had registered fd (registrations.c;
 * the kernel drops that with the old socket). */
static long swap_in(long fd, long newfd, const struct tether_net_kind *k)
{
	struct tether_epoll_reg reg;
	int registered = tether_registration_of(fd, &reg);
	long n;

	carry_options(fd, newfd, k->family, k->type, k->protocol);
	n = raw(SYS_dup3, newfd, fd, k->fd_flags & FD_CLOEXEC ? O_CLOEXEC : 0, 0, 0);
	raw(SYS_close, newfd, 0, 0, 0, 0);
	if (n < 0)
		return n;
	raw(SYS_fcntl, fd, F_SETFL, k->fl, 0, 0);
	if (registered)
		tether_registration_restore(fd, &reg);
	return 0;
}

/* The target socket's two addresses, each a u16 length and bytes, at p
 * (before end), as a relayed CONNECT_REPLY and an ACCEPT_REPLY carry them:
 * relayed.c answers getsockname/getpeername on fd with them.  The peer's
 * are put in *peer, *peer_len if the caller wants them.  0, or -1 if they
 * do not fit. */
int tether_net_relayed(long fd, const unsigned char *p, const unsigned char *end, const unsigned char **peer_out,
                       unsigned *peer_len_out)
{
	const unsigned char *local, *peer;
	unsigned local_len, peer_len;

	if (end - p < 2 || (local_len = (unsigned)p[0] | (unsigned)p[1] << 8) > (unsigned long)(end - p - 2))
		return -1;
	local = p + 2;
	p = local + local_len;
	if (end - p < 2 || (peer_len = (unsigned)p[0] | (unsigned)p[1] << 8) > (unsigned long)(end - p - 2))
		return -1;
	peer = p + 2;
	tether_relayed_add(fd, local, local_len, peer, peer_len);
	if (peer_out) {
		*peer_out = peer;
		*peer_len_out = peer_len;
	}
	return 0;
}

/* The network namespace a socket belongs to (SO_NETNS_COOKIE, Linux 5.14),
 * or 0 if the kernel cannot tell. */
static unsigned long netns_cookie(long fd)
{
	unsigned long cookie = 0;
	unsigned len = sizeof cookie;

	if (raw(SYS_getsockopt, fd, SOL_SOCKET, SO_NETNS_COOKIE, (long)&cookie, (long)&len) < 0)
		return 0;
	return cookie;
}

static unsigned long here_cookie(void)
{
	static unsigned long cookie;
	unsigned long c = __atomic_load_n(&cookie, __ATOMIC_RELAXED);
	long probe;

	if (!c && (probe = raw(SYS_socket, AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0, 0, 0)) >= 0) {
		c = netns_cookie(probe);
		raw(SYS_close, probe, 0, 0, 0, 0);
		__atomic_store_n(&cookie, c, __ATOMIC_RELAXED);
	}
	return c;
}

/* swap_in for a socket the program may have registered with epoll already
 * (Go does a UDP socket's when it makes it). */
static long swap_registered(long fd, long newfd, const struct tether_net_kind *k)
{
	struct tether_epoll_reg regs[8];
	unsigned nregs = tether_epoll_find((int)fd, regs, sizeof regs / sizeof regs[0]);
	long err;

	if ((err = swap_in(fd, newfd, k)) < 0)
		return err;
	tether_epoll_restore((int)fd, regs, nregs);
	return 0;
}

static long connect_standin(long fd, const unsigned char *sa, long len, const struct tether_net_kind *k,
                            unsigned short flags, long (*swap)(long, long, const struct tether_net_kind *));

/* Before an unconnected UDP socket first sends to a remote address, it is
 * replaced by one made in the target (bound to the same port if the
 * program had bound it), so that datagram and all that follow leave from
 * there and replies come back to it.  A socket already in the target (its
 * namespace cookie is not this one's) is left alone.  Returns 0, or
 * -errno to fail the send with. */
static long move_udp(long fd, const unsigned char *sa)
{
	struct { unsigned short family, port; unsigned char rest[24]; } bound = {0, 0, {0}};
	unsigned bound_len = sizeof bound;
	unsigned long here = here_cookie(), cookie = netns_cookie(fd);
	struct tether_net_kind k;
	long newfd;

	if (kind_of(fd, sa[0], &k) < 0 || k.type != SOCK_DGRAM)
		return 0; /* the kernel answers for anything but a UDP socket */
	if (!here || !cookie)
		return -97; /* EAFNOSUPPORT: without namespace cookies the move cannot be tracked */
	if (cookie != here)
		return 0;
	if (raw(SYS_getsockname, fd, (long)&bound, (long)&bound_len, 0, 0) < 0)
		bound.port = 0;
	if (!sockets) {
		/* A network agent's relay, bound to the same port (or any). */
		bound.family = (unsigned short)k.family;
		for (unsigned i = 0; i < sizeof bound.rest; i++)
			bound.rest[i] = 0;
		return connect_standin(fd, (const unsigned char *)&bound, k.family == AF_INET6 ? 28 : 16, &k,
		                       TETHER_FLAG_BIND, swap_registered);
	}
	newfd = tether_target_socket(k.family, SOCK_DGRAM, k.protocol);
	if (newfd < 0)
		return newfd;
	if (bound.port) {
		/* The same port, any address: the program's own address is not the target's. */
		for (unsigned i = 0; i < sizeof bound.rest; i++)
			bound.rest[i] = 0;
		raw(SYS_bind, newfd, (long)&bound, bound_len, 0, 0);
	}
	return swap_registered(fd, newfd, &k);
}

static long net_sendto(long nr, long fd, long buf, long len, long flags, long addr, long addrlen)
{
	unsigned char sa[TETHER_SOCKADDR_MAX];
	long err;

	if (streams && (err = tether_pending_settle(fd)) < 0)
		return err;
	if (addr && addrlen >= 2 && addrlen <= TETHER_SOCKADDR_MAX && tether_peek(sa, addr, (unsigned long)addrlen) == addrlen &&
	    tether_route_remote(&route, sa, addrlen) == 1 && (err = move_udp(fd, sa)) < 0)
		return err;
	/* A relayed one (moved just now, or before) sends through its relay. */
	if (streams && tether_datagrams_sendto(fd, buf, len, flags, addr, addrlen, &err))
		return err;
	return tether_raw_syscall6(nr, fd, buf, len, flags, addr, addrlen);
}

static long net_sendmsg(long nr, long fd, long msg, long flags, long a4, long a5, long a6)
{
	struct { long name; unsigned namelen; } head; /* the start of struct msghdr */
	unsigned char sa[TETHER_SOCKADDR_MAX];
	long err;

	if (streams && (err = tether_pending_settle(fd)) < 0)
		return err;
	if (tether_peek(&head, msg, sizeof head) == sizeof head && head.name && head.namelen >= 2 &&
	    head.namelen <= TETHER_SOCKADDR_MAX && tether_peek(sa, head.name, head.namelen) == head.namelen &&
	    tether_route_remote(&route, sa, head.namelen) == 1 && (err = move_udp(fd, sa)) < 0)
		return err;
	if (streams && tether_datagrams_sendmsg(fd, msg, flags, &err))
		return err;
	return tether_raw_syscall6(nr, fd, msg, flags, a4, a5, a6);
}

/* Already the target's: connected before (a program asking again gets the
 * kernel's EALREADY or EISCONN), or a UDP socket move_udp moved. */
static int in_target(long fd)
{
	unsigned long here = here_cookie(), cookie = netns_cookie(fd);

	return here && cookie && cookie != here;
}

/* CONNECT, or STREAM (the same payload), for sa in words. */
static void connect_frame(unsigned long *words, unsigned short type, unsigned short flags, const unsigned char *sa,
                          long len, const struct tether_net_kind *k)
{
	struct tether_frame *f = (struct tether_frame *)words;
	struct tether_connect *c = (struct tether_connect *)(f + 1);
	unsigned char *p = (unsigned char *)(c + 1);

	c->family = sa[0];
	c->socktype = (unsigned short)k->type;
	c->protocol = k->protocol;
	c->timeout_ms = 0; /* the agent's own */
	p[0] = (unsigned char)len;
	p[1] = 0;
	for (long i = 0; i < len; i++)
		p[2 + i] = sa[i];
	f->length = (unsigned)(sizeof *f + sizeof *c + 2 + (unsigned long)len);
	f->type = type;
	f->flags = flags;
	f->id = 1;
}

/* n bytes at buf from conn, all of them: 0, or -errno (-ECONNRESET at the
 * end of the stream). */
static long recv_exact(long conn, void *buf, unsigned long n)
{
	for (unsigned long got = 0; got < n;) {
		long r = raw(SYS_recvfrom, conn, (long)buf + (long)got, (long)(n - got), 0, 0);

		if (r == -EINTR)
			continue;
		if (r <= 0)
			return r ? r : -ECONNRESET;
		got += (unsigned long)r;
	}
	return 0;
}

/* A TCP connect through a network agent's data connection at hand
 * (MODE_STREAMS): STREAM on it, and its reply read to the byte (the
 * target's first bytes may follow at once): one round trip to the agent.
 * A non-blocking socket does not wait for the reply: the connection takes
 * its place at once and the connect is pending.c's to finish, through the
 * program's poller (-EINPROGRESS).  -ESTALE: the connection
 * failed before an answer (the agent restarted): the caller goes the
 * stand-in's way instead. */
static long connect_streamed(long fd, const unsigned char *sa, long len, const struct tether_net_kind *k)
{
	unsigned long words[TETHER_SMALL_FRAME / 8];
	struct tether_frame *f = (struct tether_frame *)words;
	long conn = tether_target_stream(), n;

	if (conn < 0)
		return conn;
	connect_frame(words, TETHER_MSG_STREAM, 0, sa, len, k);
	n = raw(SYS_sendto, conn, (long)words, f->length, MSG_NOSIGNAL, 0);
	if (n != f->length) {
		raw(SYS_close, conn, 0, 0, 0, 0);
		return -ESTALE;
	}
	if (k->fl & O_NONBLOCK) {
		tether_pending_add(fd, conn, sa, len, k); /* first: a registration swap_in makes again is a pending one */
		if ((n = swap_in(fd, conn, k)) < 0)
			return n;
		return -EINPROGRESS;
	}
	if (recv_exact(conn, words, sizeof *f) < 0) {
		raw(SYS_close, conn, 0, 0, 0, 0);
		return -ESTALE;
	}
	n = f->length < sizeof *f || f->length > sizeof words ? -EPROTO
	                                                      : recv_exact(conn, f + 1, f->length - sizeof *f);
	if (!n)
		n = tether_check_reply(words, f->length, TETHER_MSG_STREAM_REPLY, 0);
	if (n < 0) {
		raw(SYS_close, conn, 0, 0, 0, 0);
		return n;
	}
	if ((n = swap_in(fd, conn, k)) < 0) /* conn is consumed either way */
		return n;
	tether_net_relayed(fd, (const unsigned char *)(f + 1), (const unsigned char *)f + f->length, 0, 0);
	return 0;
}

/* Through the stand-in: the agent connects there (or, with FLAG_BIND, binds
 * a UDP socket to sa's port), and the stand-in sends a relay stream (TCP)
 * or one end of a datagram relay (UDP: datagrams.c).  swap is swap_in, or
 * swap_registered for a socket the program's poller knows. */
static long connect_standin(long fd, const unsigned char *sa, long len, const struct tether_net_kind *k,
                            unsigned short flags, long (*swap)(long, long, const struct tether_net_kind *))
{
	unsigned long words[TETHER_SMALL_FRAME / 8];
	struct tether_frame *f = (struct tether_frame *)words;
	const unsigned char *peer = 0;
	unsigned peer_len = 0;
	long newfd, n;
	int status;

	connect_frame(words, TETHER_MSG_CONNECT, flags, sa, len, k);
	newfd = tether_ask(words, sizeof words, TETHER_MSG_CONNECT_REPLY, sizeof(struct tether_connect_reply), 1);
	if (newfd < 0)
		return newfd;
	status = ((const struct tether_connect_reply *)(f + 1))->status;
	if ((n = swap(fd, newfd, k)) < 0)
		return n;
	if (f->flags & TETHER_FLAG_RELAYED)
		tether_net_relayed(fd, (const unsigned char *)(f + 1) + sizeof(struct tether_connect_reply),
		                   (const unsigned char *)f + f->length, &peer, &peer_len);
	if (k->type == SOCK_DGRAM) {
		tether_datagrams_add(fd, k->family, peer, peer_len);
		if (!peer_len)
			tether_relayed_peer(fd, 0, 0);
	}
	return status ? -EPROTO /* the agent says connected with 0 */ : 0;
}

/* Through a network agent: it connects there and sends a relay stream. */
static long connect_relayed(long fd, const unsigned char *sa, long len, const struct tether_net_kind *k)
{
	unsigned char peer[TETHER_SOCKADDR_MAX];
	unsigned peer_len = sizeof peer;
	long n;

	/* Connected already (a relayed socket is a stream to the agent): as the kernel says it. */
	if (k->type == SOCK_STREAM && !raw(SYS_getpeername, fd, (long)peer, (long)&peer_len, 0, 0))
		return -EISCONN;

	if (streams && k->type == SOCK_STREAM && (n = connect_streamed(fd, sa, len, k)) != -ESTALE)
		return n;
	return connect_standin(fd, sa, len, k, 0, swap_in);
}

long tether_net_connect_again(long fd, const unsigned char *sa, long len, const struct tether_net_kind *k)
{
	return connect_standin(fd, sa, len, k, 0, swap_registered);
}

static long net_connect(long nr, long fd, long addr, long len, long a4, long a5, long a6)
{
	unsigned char sa[TETHER_SOCKADDR_MAX];
	struct tether_net_kind k;
	long newfd, n;

	if (len < 2 || len > TETHER_SOCKADDR_MAX || tether_peek(sa, addr, (unsigned long)len) != len)
		return tether_raw_syscall6(nr, fd, addr, len, a4, a5, a6);
	if (streams && (tether_datagrams_connect(fd, sa, len, &n) || tether_pending_connect(fd, &n)))
		return n;
	if (tether_route_remote(&route, sa, len) != 1 || kind_of(fd, sa[0], &k) < 0)
		return tether_raw_syscall6(nr, fd, addr, len, a4, a5, a6);
	if (!sockets)
		return connect_relayed(fd, sa, len, &k);
	if (!in_target(fd)) {
		newfd = tether_target_socket(k.family, k.type, k.protocol);
		if (newfd < 0)
			return newfd;
		if ((n = swap_in(fd, newfd, &k)) < 0)
			return n;
	}
	return tether_raw_syscall6(nr, fd, addr, len, a4, a5, a6);
}

long tether_net_swap(long fd, long newfd)
{
	struct { unsigned short family; } sa = {0};
	unsigned len = sizeof sa;
	struct tether_net_kind k;

	/* getsockname fills what fits: the family is enough here. */
	if (raw(SYS_getsockname, fd, (long)&sa, (long)&len, 0, 0) < 0 || kind_of(fd, sa.family, &k) < 0) {
		raw(SYS_close, newfd, 0, 0, 0, 0);
		return -88; /* ENOTSOCK */
	}
	return swap_registered(fd, newfd, &k);
}

int tether_net_in_target(long fd)
{
	return in_target(fd);
}

void tether_net_name(long fd, const unsigned char *sa, unsigned len)
{
	tether_relayed_add(fd, sa, len, 0, 0);
}

int tether_net_install(const char *rules, unsigned mode, int go)
{
	if (tether_route_parse(rules, &route) < 0)
		return -22; /* EINVAL */
	sockets = !!(mode & TETHER_MODE_SOCKETS);
	streams = !!(mode & TETHER_MODE_STREAMS);
	if (streams)
		tether_pending_install(go);
	if (!go)
		tether_registrations_install(streams);
	tether_set_handler(SYS_sendto, net_sendto, TETHER_MAY_BLOCK);
	tether_set_handler(SYS_sendmsg, net_sendmsg, TETHER_MAY_BLOCK);
	tether_relayed_install();
	if (sockets || streams)
		tether_fd_on_evict(tether_target_sockets_forget);
	return tether_set_handler(SYS_connect, net_connect, TETHER_MAY_BLOCK);
}
