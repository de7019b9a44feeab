/* syscall.c - libc's syscall(): the program's own syscalls by number.
 *
 * Programs and libraries call syscall(SYS_x, ...) for calls libc wraps
 * late or not at all (libuv's io_uring_setup, statx and copy_file_range on
 * older glibc, gettid), and some for plain socket calls.  Through the
 * dispatcher they meet the same detours as the wrapped calls.  Like glibc's,
 * it passes six arguments whatever the call takes: the unused ones are
 * whatever the caller's registers and stack held, and the kernel ignores
 * them. */
#include <stdarg.h>

#include "libc/libc.h"

TETHER_EXPORT long syscall(long nr, ...)
{
	va_list ap;
	long a[6];

	va_start(ap, nr);
	for (int i = 0; i < 6; i++)
		a[i] = va_arg(ap, long);
	va_end(ap);
	return TETHER_LIBC_CALL(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
}
