/* io.c - libc's descriptor I/O entry points, into the dispatcher.
 *
 * As libc.c: each makes the syscall glibc's wrapper makes (pread is pread64
 * on x86-64, and so on), through the dispatcher, with libc's error style. */
#include "libc/libc.h"

#define CALL TETHER_LIBC_CALL

TETHER_EXPORT long read(int fd, void *buf, unsigned long n)
{
	return CALL(0, fd, buf, n, 0, 0, 0);
}

TETHER_EXPORT long write(int fd, const void *buf, unsigned long n)
{
	return CALL(1, fd, buf, n, 0, 0, 0);
}

#define EBADF 9
#define SYS_close_range 436

/* The layer's own descriptors (core/fds.c) are not the program's to close. */
TETHER_EXPORT int close(int fd)
{
	if (tether_fd_is_ours(fd))
		return (int)tether_libc_result(-EBADF);
	return (int)CALL(3, fd, 0, 0, 0, 0, 0);
}

/* close_range and closefrom close around the layer's descriptors. */
TETHER_EXPORT int close_range(unsigned first, unsigned last, int flags)
{
	long ours, r;

	while (first <= last && (ours = tether_fd_next_ours(first, last)) >= 0) {
		if ((unsigned long)ours > first &&
		    (r = tether_dispatch_inline(SYS_close_range, first, ours - 1, flags, 0, 0, 0)) < 0)
			return (int)tether_libc_result(r);
		if ((unsigned long)ours == last)
			return 0;
		first = (unsigned)ours + 1;
	}
	return first <= last ? (int)CALL(SYS_close_range, first, last, flags, 0, 0, 0) : 0;
}

TETHER_EXPORT void closefrom(int lowfd)
{
	close_range(lowfd < 0 ? 0 : (unsigned)lowfd, ~0u, 0);
}

TETHER_EXPORT long pread(int fd, void *buf, unsigned long n, long offset)
{
	return CALL(17, fd, buf, n, offset, 0, 0);
}

TETHER_EXPORT long pread64(int fd, void *buf, unsigned long n, long offset)
{
	return CALL(17, fd, buf, n, offset, 0, 0);
}

TETHER_EXPORT long pwrite(int fd, const void *buf, unsigned long n, long offset)
{
	return CALL(18, fd, buf, n, offset, 0, 0);
}

TETHER_EXPORT long pwrite64(int fd, const void *buf, unsigned long n, long offset)
{
	return CALL(18, fd, buf, n, offset, 0, 0);
}

TETHER_EXPORT long readv(int fd, const void *iov, int n)
{
	return CALL(19, fd, iov, n, 0, 0, 0);
}

TETHER_EXPORT long writev(int fd, const void *iov, int n)
{
	return CALL(20, fd, iov, n, 0, 0, 0);
}

TETHER_EXPORT int dup(int fd)
{
	return (int)CALL(32, fd, 0, 0, 0, 0, 0);
}

TETHER_EXPORT int dup2(int fd, int to)
{
	if (tether_fd_is_ours(to))
		tether_fd_evict(to);
	return (int)CALL(33, fd, to, 0, 0, 0, 0);
}

TETHER_EXPORT int dup3(int fd, int to, int flags)
{
	if (tether_fd_is_ours(to))
		tether_fd_evict(to);
	return (int)CALL(292, fd, to, flags, 0, 0, 0);
}

/* The third argument, when there is one, is an int or a pointer: either
 * way it travels in the same register, read here as a long. */
TETHER_EXPORT int fcntl(int fd, int cmd, ...)
{
	__builtin_va_list ap;
	long arg;

	__builtin_va_start(ap, cmd);
	arg = __builtin_va_arg(ap, long);
	__builtin_va_end(ap);
	return (int)CALL(72, fd, cmd, arg, 0, 0, 0);
}

TETHER_EXPORT int fcntl64(int fd, int cmd, ...)
{
	__builtin_va_list ap;
	long arg;

	__builtin_va_start(ap, cmd);
	arg = __builtin_va_arg(ap, long);
	__builtin_va_end(ap);
	return (int)CALL(72, fd, cmd, arg, 0, 0, 0);
}

/* _FORTIFY_SOURCE builds call these when the buffer's size is known. */
void __chk_fail(void) __attribute__((noreturn));

TETHER_EXPORT long __read_chk(int fd, void *buf, unsigned long n, unsigned long size)
{
	if (n > size)
		__chk_fail();
	return read(fd, buf, n);
}

TETHER_EXPORT long __pread_chk(int fd, void *buf, unsigned long n, long offset, unsigned long size)
{
	if (n > size)
		__chk_fail();
	return pread(fd, buf, n, offset);
}

TETHER_EXPORT long __pread64_chk(int fd, void *buf, unsigned long n, long offset, unsigned long size)
{
	if (n > size)
		__chk_fail();
	return pread(fd, buf, n, offset);
}
