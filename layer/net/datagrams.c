/* datagrams.c - UDP sockets relayed through a network agent (MODE_STREAMS).
 *
 * Such a socket is, here, one end of a unix SOCK_SEQPACKET pair whose
 * records the stand-in relays to a UDP socket in the target (agent/relay.py):
 * each record is a struct tether_datagram head naming the peer, then the
 * datagram's bytes.  net.c makes one on connect() (CONNECT), and on the
 * first sendto() of an unconnected socket to a remote address (CONNECT with
 * FLAG_BIND: bound to the program's port, connected nowhere).  The calls
 * that move datagrams on such a descriptor put the head on and take it off
 * here, with the peer's address where the caller wants it: read, readv,
 * recvfrom, recvmsg, recvmmsg; write, writev, sendto, sendmsg (net.c's
 * handlers call in), sendmmsg.  Their handlers are installed with the first
 * such socket, so a program that has none pays nothing for them.  connect()
 * on one sets, here, the peer its sends go to and its receives come from
 * (others are dropped, as the kernel drops them for a connected socket).
 * Sockets are known by inode, descriptors by a bit per number that may
 * name one: a dup of one (dup, dup2, dup3, fcntl F_DUPFD: Go's File and
 * FileConn make them) gets the bit, so its datagrams are framed too, and a
 * number closed and reused names another inode.  getsockopt answers
 * SO_TYPE, SO_DOMAIN and SO_PROTOCOL as for the UDP socket it stands for.
 * recvmmsg's timeout is not applied (the first datagram is waited for as
 * the socket's blocking mode says). */
#include "net/internal.h"

#define SYS_read 0
#define SYS_write 1
#define SYS_readv 19
#define SYS_writev 20
#define SYS_dup 32
#define SYS_dup2 33
#define SYS_recvfrom 45
#define SYS_sendmsg 46
#define SYS_recvmsg 47
#define SYS_fcntl 72
#define SYS_dup3 292
#define SYS_recvmmsg 299
#define SYS_sendmmsg 307
#define F_DUPFD 0
#define F_DUPFD_CLOEXEC 1030
#define SOL_SOCKET 1
#define SO_TYPE 3
#define SO_PROTOCOL 38
#define SO_DOMAIN 39
#define SOCK_DGRAM 2
#define IPPROTO_UDP 17
#define AF_INET 2
#define AF_INET6 10
#define MSG_PEEK 2
#define MSG_TRUNC 0x20
#define MSG_DONTWAIT 0x40
#define MSG_NOSIGNAL 0x4000
#define MSG_WAITFORONE 0x10000
#define EAGAIN 11
#define EFAULT 14
#define EINVAL 22
#define EPIPE 32
#define EMSGSIZE 90
#define EAFNOSUPPORT 97
#define ENETDOWN 100
#define ECONNRESET 104
#define EDESTADDRREQ 89
#define EPROTO 71
#define SLOTS 64
#define FDS 65536     /* descriptors above are not relayed (their datagrams go raw) */
#define IOV_MAX 1024  /* the kernel's */
#define IOVS 64       /* a call's buffers, at most (more: EMSGSIZE) */
#define UDP_MAX 65535 /* what one datagram may carry here, at most */

struct iovec {
	long base;
	unsigned long len;
};

struct msghdr {
	long name;
	unsigned namelen;
	long iov;
	unsigned long iovlen;
	long control;
	unsigned long controllen;
	int flags;
};

struct mmsghdr {
	struct msghdr hdr;
	unsigned len;
};

struct slot {
	unsigned long ino; /* 0: free */
	int fd;		   /* the last descriptor seen naming it (a slot whose fd does not: reusable) */
	unsigned char family;   /* of the UDP socket it stands for */
	unsigned char peer_len; /* 0: unconnected */
	unsigned char peer[TETHER_DATAGRAM_ADDR_MAX];
};

static struct slot slots[SLOTS];
static unsigned char hint[FDS / 8]; /* a bit per descriptor number that may be one */
static unsigned next_slot;
static int lock, installed;

static int hinted(long fd)
{
	return fd >= 0 && fd < FDS && __atomic_load_n(&hint[fd / 8], __ATOMIC_RELAXED) & 1 << (fd % 8);
}

/* fd's slot, copied into *s: 1, or 0 if fd is not a relayed UDP socket. */
static int find(long fd, struct slot *s)
{
	unsigned long ino;
	int found = 0;

	if (!hinted(fd))
		return 0;
	ino = tether_net_inode(fd);
	tether_net_lock(&lock);
	for (unsigned i = 0; i < SLOTS && !found && ino; i++)
		if (slots[i].ino == ino) {
			found = 1;
			slots[i].fd = (int)fd;
			*s = slots[i];
		}
	if (!found) /* fd was closed; its number now names another descriptor */
		__atomic_and_fetch(&hint[fd / 8], (unsigned char)~(1 << (fd % 8)), __ATOMIC_RELAXED);
	tether_net_unlock(&lock);
	return found;
}

/* A call's message: our head, then the program's buffers (iovlen of them
 * at iov). */
struct message {
	struct tether_datagram head;
	struct iovec v[IOVS + 1];
	struct msghdr m;
	unsigned long total; /* the program's bytes */
};

static long gather(struct message *b, long iov, unsigned long n)
{
	if (n > IOVS)
		return n > IOV_MAX ? -EINVAL : -EMSGSIZE;
	b->v[0].base = (long)&b->head;
	b->v[0].len = sizeof b->head;
	if (n && tether_peek(b->v + 1, iov, n * sizeof *b->v) != (long)(n * sizeof *b->v))
		return -EFAULT;
	b->total = 0;
	for (unsigned long i = 1; i <= n; i++)
		b->total += b->v[i].len;
	b->m = (struct msghdr){0, 0, (long)b->v, n + 1, 0, 0, 0};
	return 0;
}

static long send_on(long fd, const struct slot *s, long iov, unsigned long iovlen, int flags, long to,
                    unsigned to_len)
{
	struct message b = {.head = {0, 0, {0}}};
	struct tether_datagram *head = &b.head;
	long n = gather(&b, iov, iovlen);

	if (n < 0)
		return n;
	if (to) {
		if (to_len < 2 || to_len > sizeof head->addr || tether_peek(head->addr, to, to_len) != to_len)
			return to_len < 2 || to_len > sizeof head->addr ? -EINVAL : -EFAULT;
		if (head->addr[0] != AF_INET && head->addr[0] != AF_INET6)
			return -EAFNOSUPPORT;
		head->addr_len = (unsigned short)to_len;
	} else if (s->peer_len) {
		head->addr_len = s->peer_len;
		for (unsigned i = 0; i < s->peer_len; i++)
			head->addr[i] = s->peer[i];
	} else {
		return -EDESTADDRREQ;
	}
	if (b.total > UDP_MAX)
		return -EMSGSIZE;
	n = tether_raw_syscall6(SYS_sendmsg, fd, (long)&b.m, flags | MSG_NOSIGNAL, 0, 0, 0);
	if (n == -EPIPE || n == -ECONNRESET)
		return -ENETDOWN; /* the relay is gone: the agent or its link */
	return n < 0 ? n : n - (long)sizeof *head;
}

/* One datagram into the program's buffers; its peer's address in *from
 * (room for TETHER_DATAGRAM_ADDR_MAX bytes) and its length in *from_len;
 * the kernel's msg_flags in *mflags.  Its length, or -errno. */
static long recv_on(long fd, const struct slot *s, long iov, unsigned long iovlen, int flags, unsigned char *from,
                    unsigned *from_len, int *mflags)
{
	struct message b;
	struct tether_datagram *head = &b.head;
	long n = gather(&b, iov, iovlen);

	if (n < 0)
		return n;
	for (;;) {
		b.m.flags = 0;
		n = tether_raw_syscall6(SYS_recvmsg, fd, (long)&b.m, flags, 0, 0, 0);
		if (n < 0)
			return n == -ECONNRESET ? -ENETDOWN : n;
		if (n == 0)
			return -ENETDOWN; /* the stand-in ended the relay */
		if ((unsigned long)n < sizeof *head || head->addr_len > sizeof head->addr)
			return -EPROTO;
		/* A connected socket takes only its peer's datagrams. */
		if (!s->peer_len || flags & MSG_PEEK ||
		    (head->addr_len == s->peer_len && !tether_memcmp(head->addr, s->peer, s->peer_len)))
			break;
	}
	for (unsigned i = 0; i < head->addr_len; i++)
		from[i] = head->addr[i];
	*from_len = head->addr_len;
	*mflags = b.m.flags;
	return n - (long)sizeof *head;
}

/* The address where the caller asked for it (addr, *lenp in and out), as
 * the kernel gives it: cut to the room, its full length in *lenp. */
static long give_address(long addr, long lenp, const unsigned char *from, unsigned from_len)
{
	unsigned room;

	if (!addr || !lenp)
		return 0;
	if (tether_peek(&room, lenp, sizeof room) != sizeof room)
		return -EFAULT;
	if (tether_poke(addr, from, room < from_len ? room : from_len) < 0 ||
	    tether_poke(lenp, &from_len, sizeof from_len) < 0)
		return -EFAULT;
	return 0;
}

int tether_datagrams_sendto(long fd, long buf, long len, long flags, long addr, long addrlen, long *result)
{
	struct iovec one = {buf, (unsigned long)len};
	struct slot s;

	if (!find(fd, &s))
		return 0;
	*result = send_on(fd, &s, (long)&one, 1, (int)flags, addr, (unsigned)addrlen);
	return 1;
}

static long msg_send(long fd, const struct slot *s, long msg, int flags)
{
	struct msghdr h;

	if (tether_peek(&h, msg, sizeof h) != sizeof h)
		return -EFAULT;
	return send_on(fd, s, h.iov, h.iovlen, flags, h.name, h.name ? h.namelen : 0);
}

int tether_datagrams_sendmsg(long fd, long msg, long flags, long *result)
{
	struct slot s;

	if (!find(fd, &s))
		return 0;
	*result = msg_send(fd, &s, msg, (int)flags);
	return 1;
}

static long msg_recv(long fd, const struct slot *s, long msg, int flags)
{
	unsigned char from[TETHER_DATAGRAM_ADDR_MAX];
	unsigned from_len = 0;
	struct msghdr h;
	unsigned long none = 0;
	int mflags = 0;
	long n;

	if (tether_peek(&h, msg, sizeof h) != sizeof h)
		return -EFAULT;
	n = recv_on(fd, s, h.iov, h.iovlen, flags, from, &from_len, &mflags);
	if (n < 0)
		return n;
	if (h.name) {
		unsigned room = h.namelen;

		if (tether_poke(h.name, from, room < from_len ? room : from_len) < 0)
			return -EFAULT;
	}
	/* msg_namelen (where there is a name), msg_controllen (no control
	 * messages come) and msg_flags. */
	if ((h.name && tether_poke(msg + 8, &from_len, sizeof from_len) < 0) ||
	    tether_poke(msg + 40, &none, sizeof none) < 0 ||
	    tether_poke(msg + 48, &mflags, sizeof mflags) < 0)
		return -EFAULT;
	return n;
}

/* A call on a socket that is not a relayed UDP one: the kernel's, once a
 * pending connect's answer is taken (pending.c). */
static long pass(long nr, long fd, long a2, long a3, long a4, long a5, long a6)
{
	long r = tether_pending_settle(fd);

	return r < 0 ? r : tether_raw_syscall6(nr, fd, a2, a3, a4, a5, a6);
}

static long dg_read(long nr, long fd, long buf, long len, long a4, long a5, long a6)
{
	unsigned char from[TETHER_DATAGRAM_ADDR_MAX];
	struct iovec one = {buf, (unsigned long)len};
	unsigned from_len;
	struct slot s;
	int mflags;

	if (!find(fd, &s))
		return pass(nr, fd, buf, len, a4, a5, a6);
	if (nr == SYS_read)
		return recv_on(fd, &s, (long)&one, 1, 0, from, &from_len, &mflags);
	if (nr == SYS_write)
		return send_on(fd, &s, (long)&one, 1, 0, 0, 0);
	if (nr == SYS_readv)
		return recv_on(fd, &s, buf, (unsigned long)len, 0, from, &from_len, &mflags);
	return send_on(fd, &s, buf, (unsigned long)len, 0, 0, 0); /* writev */
}

static long dg_recvfrom(long nr, long fd, long buf, long len, long flags, long addr, long lenp)
{
	unsigned char from[TETHER_DATAGRAM_ADDR_MAX];
	struct iovec one = {buf, (unsigned long)len};
	unsigned from_len;
	struct slot s;
	int mflags;
	long n, err;

	if (!find(fd, &s))
		return pass(nr, fd, buf, len, flags, addr, lenp);
	n = recv_on(fd, &s, (long)&one, 1, (int)flags, from, &from_len, &mflags);
	if (n >= 0 && (err = give_address(addr, lenp, from, from_len)) < 0)
		return err;
	return n;
}

static long dg_recvmsg(long nr, long fd, long msg, long flags, long a4, long a5, long a6)
{
	struct slot s;

	if (!find(fd, &s))
		return pass(nr, fd, msg, flags, a4, a5, a6);
	return msg_recv(fd, &s, msg, (int)flags);
}

/* recvmmsg and sendmmsg: one datagram at a time; after the first, only
 * those already there (MSG_DONTWAIT), as MSG_WAITFORONE asks. */
static long dg_mmsg(long nr, long fd, long vec, long vlen, long flags, long a5, long a6)
{
	struct slot s;
	long done = 0, n = 0;

	if (!find(fd, &s))
		return pass(nr, fd, vec, vlen, flags, a5, a6);
	for (; done < vlen && done < IOV_MAX; done++) {
		long msg = vec + done * (long)sizeof(struct mmsghdr);
		int f = (int)(flags & ~MSG_WAITFORONE) | (done ? MSG_DONTWAIT : 0);
		unsigned len;

		n = nr == SYS_recvmmsg ? msg_recv(fd, &s, msg, f) : msg_send(fd, &s, msg, f);
		if (n < 0)
			break;
		len = (unsigned)n;
		if (tether_poke(msg + (long)sizeof(struct msghdr), &len, sizeof len) < 0) {
			n = -EFAULT;
			break;
		}
	}
	return done ? done : n;
}

/* A dup of a relayed socket is one too: its number gets the bit. */
static long dg_dup(long nr, long fd, long a2, long a3, long a4, long a5, long a6)
{
	long r = tether_raw_syscall6(nr, fd, a2, a3, a4, a5, a6);
	struct slot s;

	if (r >= 0 && r < FDS && (nr != SYS_fcntl || a2 == F_DUPFD || a2 == F_DUPFD_CLOEXEC) && find(fd, &s))
		__atomic_or_fetch(&hint[r / 8], (unsigned char)(1 << (r % 8)), __ATOMIC_RELEASE);
	return r;
}

int tether_datagrams_getsockopt(long fd, long level, long name, long optval, long optlenp, long *result)
{
	struct slot s;
	unsigned room;
	int value;

	if (level != SOL_SOCKET || (name != SO_TYPE && name != SO_DOMAIN && name != SO_PROTOCOL) || !find(fd, &s))
		return 0;
	value = name == SO_TYPE ? SOCK_DGRAM : name == SO_DOMAIN ? s.family : IPPROTO_UDP;
	room = sizeof value;
	*result = tether_poke(optval, &value, sizeof value) < 0 || tether_poke(optlenp, &room, sizeof room) < 0
	              ? -EFAULT : 0;
	return 1;
}

void tether_datagrams_install(void)
{
	if (__atomic_exchange_n(&installed, 1, __ATOMIC_ACQ_REL))
		return;
	tether_set_handler(SYS_read, dg_read, TETHER_MAY_BLOCK);
	tether_set_handler(SYS_write, dg_read, TETHER_MAY_BLOCK);
	tether_set_handler(SYS_readv, dg_read, TETHER_MAY_BLOCK);
	tether_set_handler(SYS_writev, dg_read, TETHER_MAY_BLOCK);
	tether_set_handler(SYS_recvfrom, dg_recvfrom, TETHER_MAY_BLOCK);
	tether_set_handler(SYS_recvmsg, dg_recvmsg, TETHER_MAY_BLOCK);
	tether_set_handler(SYS_recvmmsg, dg_mmsg, TETHER_MAY_BLOCK);
	tether_set_handler(SYS_sendmmsg, dg_mmsg, TETHER_MAY_BLOCK);
	tether_set_handler(SYS_dup, dg_dup, 0);
	tether_set_handler(SYS_dup2, dg_dup, 0);
	tether_set_handler(SYS_dup3, dg_dup, 0);
	tether_set_handler(SYS_fcntl, dg_dup, TETHER_MAY_BLOCK); /* F_SETLKW waits */
}

static void set_peer(unsigned long ino, const unsigned char *peer, unsigned peer_len)
{
	tether_net_lock(&lock);
	for (unsigned i = 0; i < SLOTS; i++)
		if (slots[i].ino == ino) {
			slots[i].peer_len = (unsigned char)peer_len;
			for (unsigned j = 0; j < peer_len; j++)
				slots[i].peer[j] = peer[j];
		}
	tether_net_unlock(&lock);
}

/* A slot for a new socket: a free one, else one whose last descriptor
 * names it no more, else the oldest.  Under the lock. */
static struct slot *new_slot(void)
{
	for (unsigned i = 0; i < SLOTS; i++)
		if (!slots[i].ino)
			return &slots[i];
	for (unsigned i = 0; i < SLOTS; i++)
		if (tether_net_inode(slots[i].fd) != slots[i].ino)
			return &slots[i];
	return &slots[next_slot++ % SLOTS];
}

void tether_datagrams_add(long fd, int family, const unsigned char *peer, unsigned peer_len)
{
	unsigned long ino = tether_net_inode(fd);
	struct slot *s;

	if (!ino || fd >= FDS || peer_len > TETHER_DATAGRAM_ADDR_MAX)
		return;
	tether_datagrams_install();
	tether_net_lock(&lock);
	s = new_slot();
	s->ino = ino;
	s->fd = (int)fd;
	s->family = (unsigned char)family;
	s->peer_len = 0;
	tether_net_unlock(&lock);
	set_peer(ino, peer, peer_len);
	__atomic_or_fetch(&hint[fd / 8], (unsigned char)(1 << (fd % 8)), __ATOMIC_RELEASE);
}

int tether_datagrams_connect(long fd, const unsigned char *sa, long len, long *result)
{
	struct slot s;

	if (!find(fd, &s))
		return 0;
	*result = 0;
	if (len >= 2 && sa[0] == 0 && sa[1] == 0) /* AF_UNSPEC: connected no more */
		len = 0;
	else if (len < 2 || len > TETHER_DATAGRAM_ADDR_MAX)
		*result = -EINVAL;
	else if (sa[0] != AF_INET && sa[0] != AF_INET6)
		*result = -EAFNOSUPPORT;
	if (!*result) {
		set_peer(s.ino, sa, (unsigned)len);
		tether_relayed_peer(fd, sa, (unsigned)len);
	}
	return 1;
}
