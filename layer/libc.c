/* libc.c - the libc entry points of tether exec's network detours.
 *
 * Programs that use libc (C, Python, curl, ...) call connect(), sendto()
 * and sendmsg() through the dynamic linker, which finds these first (the
 * layer is preloaded).  Each goes to the same dispatcher as the Go hooks,
 * so a detour is written once; the kernel-style result becomes libc's
 * -1 and errno.  The layer's own socket calls are raw syscalls, so these
 * are never re-entered.  Name lookups are dns.c's. */
#include "tether.h"

int *__errno_location(void); /* libc's, for the thread's errno */

static long libc_result(long r)
{
	if (r < 0 && r > -4096) {
		*__errno_location() = (int)-r;
		return -1;
	}
	return r;
}

TETHER_EXPORT int connect(int fd, const void *addr, unsigned len)
{
	return (int)libc_result(tether_dispatch(42, fd, (long)addr, len, 0, 0, 0));
}

TETHER_EXPORT long sendto(int fd, const void *buf, unsigned long n, int flags, const void *addr, unsigned len)
{
	return libc_result(tether_dispatch(44, fd, (long)buf, (long)n, flags, (long)addr, len));
}

TETHER_EXPORT long sendmsg(int fd, const void *msg, int flags)
{
	return libc_result(tether_dispatch(46, fd, (long)msg, flags, 0, 0, 0));
}
