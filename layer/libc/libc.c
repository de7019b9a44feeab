/* libc.c - libc's socket entry points, into the dispatcher.
 *
 * Programs that use libc (C, Python, curl, ...) reach the kernel through
 * libc's wrappers, which the dynamic linker finds in the layer first (it is
 * preloaded).  Each wrapper here makes the syscall glibc would make, through
 * the same dispatcher as the Go hooks, so a detour (net/net.c) or the tracer is
 * written once; the kernel-style result becomes libc's -1 and errno.  The
 * layer's own calls are raw syscalls, so these are never re-entered.
 * io.c and files.c do the same for I/O and files; net/dns.c answers
 * name lookups.
 *
 * One difference from glibc's wrappers: these are no pthread cancellation
 * points (pthread_cancel acts at the next one). */
#include "libc/libc.h"

int *__errno_location(void); /* libc's, for the thread's errno */

long tether_libc_result(long r)
{
	if (r < 0 && r > -4096) {
		*__errno_location() = (int)-r;
		return -1;
	}
	return r;
}

#define CALL TETHER_LIBC_CALL

TETHER_EXPORT int socket(int family, int type, int protocol)
{
	return (int)CALL(41, family, type, protocol, 0, 0, 0);
}

TETHER_EXPORT int connect(int fd, const void *addr, unsigned len)
{
	return (int)CALL(42, fd, addr, len, 0, 0, 0);
}

TETHER_EXPORT int accept(int fd, void *addr, unsigned *len)
{
	return (int)CALL(43, fd, addr, len, 0, 0, 0);
}

TETHER_EXPORT int accept4(int fd, void *addr, unsigned *len, int flags)
{
	return (int)CALL(288, fd, addr, len, flags, 0, 0);
}

TETHER_EXPORT long send(int fd, const void *buf, unsigned long n, int flags)
{
	return CALL(44, fd, buf, n, flags, 0, 0);
}

TETHER_EXPORT long sendto(int fd, const void *buf, unsigned long n, int flags, const void *addr, unsigned len)
{
	return CALL(44, fd, buf, n, flags, addr, len);
}

TETHER_EXPORT long sendmsg(int fd, const void *msg, int flags)
{
	return CALL(46, fd, msg, flags, 0, 0, 0);
}

TETHER_EXPORT long recv(int fd, void *buf, unsigned long n, int flags)
{
	return CALL(45, fd, buf, n, flags, 0, 0);
}

TETHER_EXPORT long recvfrom(int fd, void *buf, unsigned long n, int flags, void *addr, unsigned *len)
{
	return CALL(45, fd, buf, n, flags, addr, len);
}

TETHER_EXPORT long recvmsg(int fd, void *msg, int flags)
{
	return CALL(47, fd, msg, flags, 0, 0, 0);
}

TETHER_EXPORT int shutdown(int fd, int how)
{
	return (int)CALL(48, fd, how, 0, 0, 0, 0);
}

TETHER_EXPORT int bind(int fd, const void *addr, unsigned len)
{
	return (int)CALL(49, fd, addr, len, 0, 0, 0);
}

TETHER_EXPORT int listen(int fd, int backlog)
{
	return (int)CALL(50, fd, backlog, 0, 0, 0, 0);
}

TETHER_EXPORT int getsockname(int fd, void *addr, unsigned *len)
{
	return (int)CALL(51, fd, addr, len, 0, 0, 0);
}

TETHER_EXPORT int getpeername(int fd, void *addr, unsigned *len)
{
	return (int)CALL(52, fd, addr, len, 0, 0, 0);
}

/* SO_ERROR of a relayed connect in flight is the agent's answer (net/pending.c). */
TETHER_EXPORT int getsockopt(int fd, int level, int name, void *value, unsigned *len)
{
	return (int)CALL(55, fd, level, name, value, len, 0);
}

/* _FORTIFY_SOURCE builds call these when the buffer's size is known. */
void __chk_fail(void) __attribute__((noreturn));

TETHER_EXPORT long __recv_chk(int fd, void *buf, unsigned long n, unsigned long size, int flags)
{
	if (n > size)
		__chk_fail();
	return recv(fd, buf, n, flags);
}

TETHER_EXPORT long __recvfrom_chk(int fd, void *buf, unsigned long n, unsigned long size, int flags,
                                  void *addr, unsigned *len)
{
	if (n > size)
		__chk_fail();
	return recvfrom(fd, buf, n, flags, addr, len);
}
