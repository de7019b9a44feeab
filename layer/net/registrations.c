/* registrations.c - a libc program's epoll registrations, kept for a
 * socket swap.
 *
 * A swap (net.c: a socket made in the target, or a data connection to the
 * agent, put in place of the program's at its connect) drops the old
 * socket's epoll registrations with it.  A program that registers a socket
 * before it connects (nginx does, for its upstreams) would then wait on it
 * forever.  So the last ADD or MOD of each descriptor is kept here, with
 * its socket's inode, and swap_in makes it again on the new socket when the
 * descriptor still names that socket (a number reused after close names
 * another inode).  A pending connect's (pending.c) is made as pollers.c
 * makes it.  Go registers a socket after its connect (and a UDP socket's
 * at creation: epoll.c reads those from /proc): not installed for Go. */
#include "net/internal.h"

#define SYS_epoll_ctl 233
#define EPOLL_CTL_ADD 1
#define EPOLL_CTL_DEL 2
#define EPOLL_CTL_MOD 3
#define KEPT_MAX 16384 /* descriptors below this are kept; a static table, no allocation */

struct kept {
	unsigned long ino; /* 0: none */
	int epfd;
	unsigned events;
	unsigned long data;
};

static struct kept kept[KEPT_MAX];
static int pollers;

static long registrations_epoll_ctl(long nr, long epfd, long op, long fd, long event, long a5, long a6)
{
	struct __attribute__((packed)) { unsigned events; unsigned long data; } ev; /* x86-64: 12 bytes */
	long r = pollers ? tether_pollers_epoll_ctl(nr, epfd, op, fd, event, a5, a6)
	                 : tether_raw_syscall6(nr, epfd, op, fd, event, a5, a6);

	if (r < 0 || fd < 0 || fd >= KEPT_MAX)
		return r;
	if (op == EPOLL_CTL_DEL) {
		if (kept[fd].epfd == (int)epfd)
			kept[fd].ino = 0;
	} else if ((op == EPOLL_CTL_ADD || op == EPOLL_CTL_MOD) && tether_peek(&ev, event, sizeof ev) == sizeof ev) {
		kept[fd].ino = 0; /* while it changes: a swap on another thread finds none */
		kept[fd].epfd = (int)epfd;
		kept[fd].events = ev.events;
		kept[fd].data = ev.data;
		__atomic_store_n(&kept[fd].ino, tether_net_inode(fd), __ATOMIC_RELEASE);
	}
	return r;
}

int tether_registration_of(long fd, struct tether_epoll_reg *reg)
{
	unsigned long ino;

	if (fd < 0 || fd >= KEPT_MAX || !(ino = __atomic_load_n(&kept[fd].ino, __ATOMIC_ACQUIRE)) ||
	    ino != tether_net_inode(fd))
		return 0;
	reg->epfd = kept[fd].epfd;
	reg->events = kept[fd].events;
	reg->data = kept[fd].data;
	return 1;
}

void tether_registration_restore(long fd, const struct tether_epoll_reg *reg)
{
	struct __attribute__((packed)) { unsigned events; unsigned long data; } ev = {reg->events, reg->data};

	registrations_epoll_ctl(SYS_epoll_ctl, reg->epfd, EPOLL_CTL_ADD, fd, (long)&ev, 0, 0);
}

void tether_registrations_install(int with_pollers)
{
	pollers = with_pollers;
	tether_set_handler(SYS_epoll_ctl, registrations_epoll_ctl, 0);
}
