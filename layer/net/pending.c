/* pending.c - relayed connects still in flight (tether exec, MODE_STREAMS).
 *
 * A program's non-blocking connect waits for the outcome in its poller: Go
 * waits for the descriptor to be writable, reads SO_ERROR, and waits again
 * while SO_ERROR says EINPROGRESS (docs/go-internals.md section 10); libc
 * programs (asyncio, libuv, curl, a socket with a timeout in Python) wait
 * once in epoll, poll or select and read SO_ERROR once.  net.c therefore
 * sends STREAM on a data connection, puts that connection in place of the
 * program's socket and answers EINPROGRESS at once; the agent connects in
 * the target and answers STREAM_REPLY (the target socket's addresses) or
 * ERROR, the first bytes on the connection.  SO_ERROR on a pending
 * descriptor takes that answer if it has all come, and says EINPROGRESS
 * until then; so do a read, a write or a second connect (EAGAIN, EALREADY).
 * The data connection is writable long before the answer, so for libc
 * programs pollers.c reports it writable only once the answer has come.  A
 * connection that ends before any answer is a spare the agent no longer
 * knows (it restarted): the connect is made again through the stand-in
 * (CONNECT), as net.c does at once for a blocking one.  The table is small;
 * a full one recycles its oldest entry, whose SO_ERROR is then the
 * kernel's (0). */
#include "net/internal.h"

#define SYS_recvfrom 45
#define SYS_getsockopt 55
#define SOL_SOCKET 1
#define SO_ERROR 4
#define MSG_PEEK 2
#define MSG_DONTWAIT 0x40
#define EINTR 4
#define EAGAIN 11
#define EFAULT 14
#define EPROTO 71
#define EISCONN 106
#define ECONNRESET 104
#define EALREADY 114
#define EINPROGRESS 115
#define ESTALE 116
#define SYS_fcntl 72
#define SYS_poll 7
#define F_GETFL 3
#define O_NONBLOCK 04000
#define POLLIN 1
#define SLOTS 64

struct pending {
	unsigned long ino; /* 0: free */
	long fd;	   /* the number it was connected on (a dup shares ino) */
	struct tether_net_kind kind;
	long len;
	unsigned char sa[TETHER_SOCKADDR_MAX];
	int epfd; /* -1, or the epoll set it is watched in for the program (pollers.c) */
	unsigned events;
	unsigned long data;
};

static struct pending slots[SLOTS];
static unsigned next_slot, count;
static int lock;

void tether_pending_add(long fd, long conn, const unsigned char *sa, long len, const struct tether_net_kind *k)
{
	unsigned long ino = tether_net_inode(conn);
	struct pending *p;

	if (!ino)
		return;
	tether_datagrams_install(); /* a read or write before the answer takes it first */
	tether_net_lock(&lock);
	p = &slots[next_slot++ % SLOTS];
	if (!p->ino)
		count++;
	p->ino = ino;
	p->fd = fd;
	p->epfd = -1;
	p->kind = *k;
	p->len = len;
	for (long i = 0; i < len; i++)
		p->sa[i] = sa[i];
	tether_net_unlock(&lock);
}

/* The entry for fd, moved out of the table into *out: 1, or 0 if none. */
static int take_entry(long fd, struct pending *out)
{
	unsigned long ino;
	int found = 0;

	if (!__atomic_load_n(&count, __ATOMIC_ACQUIRE) || !(ino = tether_net_inode(fd)))
		return 0;
	tether_net_lock(&lock);
	for (unsigned i = 0; i < SLOTS && !found; i++)
		if (slots[i].ino == ino) {
			*out = slots[i];
			slots[i].ino = 0;
			count--;
			found = 1;
		}
	tether_net_unlock(&lock);
	return found;
}

static void put_back(const struct pending *p)
{
	tether_net_lock(&lock);
	for (unsigned i = 0; i < SLOTS; i++)
		if (!slots[i].ino) {
			slots[i] = *p;
			count++;
			break;
		}
	tether_net_unlock(&lock);
}

static long peek(long fd, void *buf, unsigned long n)
{
	long r;

	while ((r = tether_raw_syscall6(SYS_recvfrom, fd, (long)buf, (long)n, MSG_PEEK | MSG_DONTWAIT, 0, 0)) == -EINTR)
		;
	return r;
}

/* The agent's answer on fd, if it has all come: 0 (connected), -EINPROGRESS
 * (not yet), -ESTALE (the connection ended first) or the connect's -errno.
 * take: also take it off the stream, which then carries only the relayed
 * bytes, and record the target socket's addresses. */
static long answer(long fd, int take)
{
	unsigned long words[TETHER_SMALL_FRAME / 8];
	struct tether_frame *f = (struct tether_frame *)words;
	long n = peek(fd, words, sizeof *f);

	if (n == -EAGAIN || (n > 0 && (unsigned long)n < sizeof *f))
		return -EINPROGRESS;
	if (n == 0 || n == -ECONNRESET)
		return -ESTALE;
	if (n < 0)
		return n;
	if (f->length < sizeof *f || f->length > sizeof words)
		return -EPROTO;
	n = peek(fd, words, f->length);
	if (n == -EAGAIN || (n >= 0 && n < f->length))
		return -EINPROGRESS;
	if (n < 0)
		return n;
	if (take && tether_raw_syscall6(SYS_recvfrom, fd, (long)words, f->length, MSG_DONTWAIT, 0, 0) != f->length)
		return -EPROTO;
	if ((n = tether_check_reply(words, f->length, TETHER_MSG_STREAM_REPLY, 0)) < 0)
		return n;
	if (take)
		tether_net_relayed(fd, (const unsigned char *)(f + 1), (const unsigned char *)f + f->length, 0, 0);
	return 0;
}

/* p's answer taken: what the program's next look at the socket gives
 * (0: connected; a connection that ended unanswered is connected again
 * through the stand-in), or -EINPROGRESS with p put back. */
static long settle(long fd, const struct pending *p)
{
	long r = answer(fd, 1);

	if (r == -EINPROGRESS)
		put_back(p);
	else if (r == -ESTALE)
		r = tether_net_connect_again(fd, p->sa, p->len, &p->kind);
	return r;
}

int tether_pending_any(void)
{
	return __atomic_load_n(&count, __ATOMIC_ACQUIRE) != 0;
}

/* Under the lock: the entry connected on fd's number that is still that
 * socket (an entry of a closed one may hold the number too). */
static struct pending *by_number(long fd, unsigned long ino)
{
	for (unsigned i = 0; i < SLOTS; i++)
		if (slots[i].ino == ino && slots[i].fd == fd)
			return &slots[i];
	return 0;
}

/* Whether an entry was connected on fd's number: a scan, no syscall, so
 * the calls that ask on every read and write pay no fstat for entries of
 * sockets closed before their answer was taken. */
static int number_pending(long fd)
{
	int found = 0;

	if (!tether_pending_any())
		return 0;
	tether_net_lock(&lock);
	for (unsigned i = 0; i < SLOTS && !found; i++)
		found = slots[i].ino && slots[i].fd == fd;
	tether_net_unlock(&lock);
	return found;
}

static int is_pending(long fd)
{
	unsigned long ino;
	int found;

	if (!number_pending(fd) || !(ino = tether_net_inode(fd)))
		return 0;
	tether_net_lock(&lock);
	found = by_number(fd, ino) != 0;
	tether_net_unlock(&lock);
	return found;
}

long tether_pending_state(long fd)
{
	return is_pending(fd) ? answer(fd, 0) : 0;
}

int tether_pending_watch(long fd, int epfd, unsigned events, unsigned long data)
{
	unsigned long ino = tether_net_inode(fd);
	struct pending *p;

	tether_net_lock(&lock);
	if ((p = ino ? by_number(fd, ino) : 0)) {
		p->epfd = epfd;
		p->events = events;
		p->data = data;
	}
	tether_net_unlock(&lock);
	return p != 0;
}

long tether_pending_watched(int epfd, unsigned long data, unsigned *events)
{
	for (unsigned i = 0; i < SLOTS; i++) {
		struct pending p;

		tether_net_lock(&lock);
		while (i < SLOTS && !(slots[i].ino && slots[i].epfd == epfd && slots[i].data == data))
			i++;
		if (i < SLOTS)
			p = slots[i];
		tether_net_unlock(&lock);
		if (i == SLOTS)
			break;
		if (tether_net_inode(p.fd) == p.ino) {
			*events = p.events;
			return p.fd;
		}
		/* Closed without EPOLL_CTL_DEL (the kernel drops the registration with it):
		 * the entry is gone too, lest a later socket's event be taken for it. */
		tether_net_lock(&lock);
		if (slots[i].ino == p.ino && slots[i].fd == p.fd) {
			slots[i].ino = 0;
			count--;
		}
		tether_net_unlock(&lock);
	}
	return -1;
}

void tether_pending_unwatch(long fd, int epfd)
{
	tether_net_lock(&lock);
	for (unsigned i = 0; i < SLOTS; i++)
		if (slots[i].ino && slots[i].fd == fd && slots[i].epfd == epfd)
			slots[i].epfd = -1;
	tether_net_unlock(&lock);
}

long tether_pending_settle(long fd)
{
	struct pending p;
	long r;
	struct { int fd; short events, revents; } one = {(int)fd, POLLIN, 0};

	if (!number_pending(fd) || !take_entry(fd, &p))
		return 0;
	while ((r = settle(fd, &p)) == -EINPROGRESS) {
		/* A socket made blocking since its connect waits, as the kernel's would. */
		if (tether_raw_syscall6(SYS_fcntl, fd, F_GETFL, 0, 0, 0, 0) & O_NONBLOCK)
			return -EAGAIN;
		if (!take_entry(fd, &p))
			return 0;
		tether_raw_syscall6(SYS_poll, (long)&one, 1, -1, 0, 0, 0);
	}
	return r;
}

int tether_pending_connect(long fd, long *result)
{
	struct pending p;

	if (!take_entry(fd, &p))
		return 0;
	*result = settle(fd, &p);
	/* As the kernel's second connect: EALREADY while in progress, EISCONN once connected. */
	if (*result == -EINPROGRESS)
		*result = -EALREADY;
	else if (!*result)
		*result = -EISCONN;
	return 1;
}

static long pending_getsockopt(long nr, long fd, long level, long name, long optval, long optlenp, long a6)
{
	struct pending p;
	unsigned room;
	int err;
	long r;

	if (tether_datagrams_getsockopt(fd, level, name, optval, optlenp, &r))
		return r;
	if (level != SOL_SOCKET || name != SO_ERROR || !take_entry(fd, &p))
		return tether_raw_syscall6(nr, fd, level, name, optval, optlenp, a6);
	if (tether_peek(&room, optlenp, sizeof room) != sizeof room || room < sizeof err) {
		put_back(&p);
		return tether_raw_syscall6(nr, fd, level, name, optval, optlenp, a6); /* the kernel's EFAULT/EINVAL */
	}
	r = settle(fd, &p);
	err = (int)-r;
	room = sizeof err;
	if (tether_poke(optval, &err, sizeof err) < 0 || tether_poke(optlenp, &room, sizeof room) < 0)
		return -EFAULT;
	return 0;
}

void tether_pending_install(int go)
{
	tether_set_handler(SYS_getsockopt, pending_getsockopt, TETHER_MAY_BLOCK);
	if (!go)
		tether_pollers_install();
}
