/* pending.c - relayed connects still in flight (tether exec, MODE_STREAMS).
 *
 * A Go program's sockets are non-blocking, and Go's connect waits for the
 * outcome in its netpoller: on EINPROGRESS it waits for the descriptor to
 * be writable, reads SO_ERROR, and waits again while SO_ERROR says
 * EINPROGRESS (docs/go-internals.md section 10), so its dial deadlines and
 * context cancellation act on the wait.  net.c therefore sends STREAM on a
 * data connection, puts that connection in place of the program's socket
 * and answers EINPROGRESS at once; the agent connects in the target and
 * answers STREAM_REPLY (the target socket's addresses) or ERROR, the first
 * bytes on the connection.  SO_ERROR on a pending descriptor takes that
 * answer if it has all come (it wakes the poller as any arrival does), and
 * says EINPROGRESS until then.  A connection that ends before any answer is
 * a spare the agent no longer knows (it restarted): the connect is made
 * again through the stand-in (CONNECT), as net.c does at once for a
 * blocking one.  Programs that are not Go read SO_ERROR once: they get the
 * blocking round trip (net.c).  The table is small; a full one recycles
 * its oldest entry, whose SO_ERROR is then the kernel's (0). */
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
#define ECONNRESET 104
#define EINPROGRESS 115
#define ESTALE 116
#define SLOTS 64

struct pending {
	unsigned long ino; /* 0: free */
	struct tether_net_kind kind;
	long len;
	unsigned char sa[TETHER_SOCKADDR_MAX];
};

static struct pending slots[SLOTS];
static unsigned next_slot, count;
static int lock;

void tether_pending_add(long fd, const unsigned char *sa, long len, const struct tether_net_kind *k)
{
	unsigned long ino = tether_net_inode(fd);
	struct pending *p;

	if (!ino)
		return;
	tether_net_lock(&lock);
	p = &slots[next_slot++ % SLOTS];
	if (!p->ino)
		count++;
	p->ino = ino;
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

/* The agent's answer on fd, if it has all come: 0 (connected; the target
 * socket's addresses are recorded), -EINPROGRESS (not yet), -ESTALE (the
 * connection ended first) or the connect's -errno. */
static long answer(long fd)
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
	/* All there: take it off the stream, which then carries only the relayed bytes. */
	if (tether_raw_syscall6(SYS_recvfrom, fd, (long)words, f->length, MSG_DONTWAIT, 0, 0) != f->length)
		return -EPROTO;
	if ((n = tether_check_reply(words, f->length, TETHER_MSG_STREAM_REPLY, 0)) < 0)
		return n;
	tether_net_relayed(fd, (const unsigned char *)(f + 1), (const unsigned char *)f + f->length, 0, 0);
	return 0;
}

static long pending_getsockopt(long nr, long fd, long level, long name, long optval, long optlenp, long a6)
{
	struct pending p;
	unsigned room;
	int err;
	long r;

	if (level != SOL_SOCKET || name != SO_ERROR || !take_entry(fd, &p))
		return tether_raw_syscall6(nr, fd, level, name, optval, optlenp, a6);
	if (tether_peek(&room, optlenp, sizeof room) != sizeof room || room < sizeof err) {
		put_back(&p);
		return tether_raw_syscall6(nr, fd, level, name, optval, optlenp, a6); /* the kernel's EFAULT/EINVAL */
	}
	r = answer(fd);
	if (r == -EINPROGRESS)
		put_back(&p);
	else if (r == -ESTALE)
		r = tether_net_connect_again(fd, p.sa, p.len, &p.kind);
	err = (int)-r;
	room = sizeof err;
	if (tether_poke(optval, &err, sizeof err) < 0 || tether_poke(optlenp, &room, sizeof room) < 0)
		return -EFAULT;
	return 0;
}

void tether_pending_install(void)
{
	tether_set_handler(SYS_getsockopt, pending_getsockopt, TETHER_MAY_BLOCK);
}
