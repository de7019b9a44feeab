/* fds.c - the layer's own descriptors, kept out of the program's way.
 *
 * The session socket and the pooled agent connections live for the whole
 * run in the program's descriptor table.  They are moved high (past what
 * programs use) and registered here, so libc's close, close_range and
 * closefrom (libc/io.c) skip them: a program that closes every descriptor
 * before exec (Python's subprocess does) must not cut the layer off, nor
 * later get our number back for a file of its own and receive our frames.
 * To the program they do not exist: closing one reads EBADF, and a dup2 or
 * dup3 onto one first moves ours out of the way (tether_fd_evict: their
 * owners, in link/ and net/, say how). */
#include "core/core.h"

#define SYS_close 3
#define SYS_fcntl 72
#define F_DUPFD_CLOEXEC 1030
#define HIGH_FD 700 /* below FD_SETSIZE (1024) and the usual RLIMIT_NOFILE */
#define OWN_MAX 64 /* the session socket, agent connections, spare target sockets */

static int own[OWN_MAX] = {[0 ... OWN_MAX - 1] = -1};

long tether_fd_park(long fd)
{
	long high = tether_raw_syscall6(SYS_fcntl, fd, F_DUPFD_CLOEXEC, HIGH_FD, 0, 0, 0);

	if (high >= 0) {
		tether_raw_syscall6(SYS_close, fd, 0, 0, 0, 0, 0);
		fd = high;
	}
	for (int i = 0; i < OWN_MAX; i++) {
		int free = -1;

		if (__atomic_compare_exchange_n(&own[i], &free, (int)fd, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
			break;
	}
	return fd;
}

void tether_fd_release(long fd)
{
	for (int i = 0; i < OWN_MAX; i++) {
		int mine = (int)fd;

		if (__atomic_compare_exchange_n(&own[i], &mine, -1, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
			break;
	}
}

void tether_fd_close(long fd)
{
	tether_fd_release(fd);
	tether_raw_syscall6(SYS_close, fd, 0, 0, 0, 0, 0);
}

int tether_fd_is_ours(long fd)
{
	if (fd < HIGH_FD)
		return 0;
	for (int i = 0; i < OWN_MAX; i++)
		if (__atomic_load_n(&own[i], __ATOMIC_ACQUIRE) == fd)
			return 1;
	return 0;
}

/* The lowest of ours in [first, last], or -1. */
long tether_fd_next_ours(unsigned long first, unsigned long last)
{
	long best = -1;

	for (int i = 0; i < OWN_MAX; i++) {
		int fd = __atomic_load_n(&own[i], __ATOMIC_ACQUIRE);

		if (fd >= 0 && (unsigned long)fd >= first && (unsigned long)fd <= last && (best < 0 || fd < best))
			best = fd;
	}
	return best;
}

static tether_evict_fn *evict_owners[TETHER_EVICT_MAX];

/* At start-up, before the program's threads: the list is read unlocked. */
void tether_fd_on_evict(tether_evict_fn *fn)
{
	for (int i = 0; i < TETHER_EVICT_MAX; i++)
		if (!evict_owners[i] || evict_owners[i] == fn) {
			evict_owners[i] = fn;
			return;
		}
}

void tether_fd_evict(long fd)
{
	for (int i = 0; i < TETHER_EVICT_MAX && evict_owners[i]; i++)
		evict_owners[i](fd);
}

long tether_fd_renumber(long fd)
{
	long moved = tether_raw_syscall6(SYS_fcntl, fd, F_DUPFD_CLOEXEC, HIGH_FD, 0, 0, 0);

	if (moved < 0)
		return moved;
	for (int i = 0; i < OWN_MAX; i++) {
		int mine = (int)fd;

		if (__atomic_compare_exchange_n(&own[i], &mine, (int)moved, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
			break;
	}
	return moved;
}
