/* poll.c - libc's pollers, into the dispatcher: epoll, poll and select,
 * where a relayed connect still in flight is reported writable only once
 * it has finished (net/pollers.c).
 *
 * As libc.c: each makes the syscall glibc's wrapper makes on x86-64 (the
 * signal-mask forms pass the mask and its size, 8 bytes; ppoll and pselect
 * give the kernel a copy of the timeout, which it writes to). */
#include "libc/libc.h"

#define CALL TETHER_LIBC_CALL
#define SIGSET_SIZE 8 /* _NSIG / 8 on x86-64 */

struct timespec {
	long sec, nsec;
};

void __chk_fail(void) __attribute__((noreturn));

TETHER_EXPORT int epoll_ctl(int epfd, int op, int fd, void *event)
{
	return (int)CALL(233, epfd, op, fd, event, 0, 0);
}

TETHER_EXPORT int epoll_wait(int epfd, void *events, int max, int timeout)
{
	return (int)CALL(232, epfd, events, max, timeout, 0, 0);
}

TETHER_EXPORT int epoll_pwait(int epfd, void *events, int max, int timeout, const void *sigmask)
{
	return (int)CALL(281, epfd, events, max, timeout, sigmask, SIGSET_SIZE);
}

TETHER_EXPORT int epoll_pwait2(int epfd, void *events, int max, const struct timespec *timeout, const void *sigmask)
{
	return (int)CALL(441, epfd, events, max, timeout, sigmask, SIGSET_SIZE);
}

TETHER_EXPORT int poll(void *fds, unsigned long nfds, int timeout)
{
	return (int)CALL(7, fds, nfds, timeout, 0, 0, 0);
}

TETHER_EXPORT int __poll_chk(void *fds, unsigned long nfds, int timeout, unsigned long fdslen)
{
	if (fdslen / 8 < nfds) /* sizeof (struct pollfd) */
		__chk_fail();
	return poll(fds, nfds, timeout);
}

TETHER_EXPORT int ppoll(void *fds, unsigned long nfds, const struct timespec *timeout, const void *sigmask)
{
	struct timespec copy;

	if (timeout)
		copy = *timeout;
	return (int)CALL(271, fds, nfds, timeout ? &copy : 0, sigmask, SIGSET_SIZE, 0);
}

TETHER_EXPORT int __ppoll_chk(void *fds, unsigned long nfds, const struct timespec *timeout, const void *sigmask,
                              unsigned long fdslen)
{
	if (fdslen / 8 < nfds)
		__chk_fail();
	return ppoll(fds, nfds, timeout, sigmask);
}

TETHER_EXPORT int select(int nfds, void *rd, void *wr, void *ex, void *timeout)
{
	return (int)CALL(23, nfds, rd, wr, ex, timeout, 0);
}

TETHER_EXPORT int pselect(int nfds, void *rd, void *wr, void *ex, const struct timespec *timeout,
                          const void *sigmask)
{
	struct timespec copy;
	struct {
		const void *mask;
		unsigned long size;
	} data = {sigmask, SIGSET_SIZE};

	if (timeout)
		copy = *timeout;
	return (int)CALL(270, nfds, rd, wr, ex, timeout ? &copy : 0, &data);
}
