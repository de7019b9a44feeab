/* bypass.c - refuse the syscalls whose work would escape the detours.
 *
 * An io_uring submits socket, file and I/O operations the kernel then runs
 * on its own: none of them passes through the dispatcher, so a program
 * using one would connect, read and open here, silently.  io_uring_setup
 * answers ENOSYS, as on a kernel without io_uring; the programs that use it
 * (libuv, tokio-uring, liburing users) then fall back on the plain calls
 * tether carries.  Said once per process so the user knows why.
 *
 * Reached by Go's syscall package (the hooked funnel) and libc's syscall()
 * (libc/); code that makes the syscall inline itself (liburing) is not. */
#include "start/start.h"

#define SYS_io_uring_setup 425
#define ENOSYS 38

static int said;

static long refuse_io_uring(long nr, long a1, long a2, long a3, long a4, long a5, long a6)
{
	(void)nr, (void)a1, (void)a2, (void)a3, (void)a4, (void)a5, (void)a6;
	if (!__atomic_exchange_n(&said, 1, __ATOMIC_RELAXED))
		tether_say((const char *[]){"tether: io_uring refused (ENOSYS): its operations would "
		                            "bypass the target; the program falls back on plain syscalls", 0});
	return -ENOSYS;
}

void tether_refuse_bypasses(void)
{
	tether_set_handler(SYS_io_uring_setup, refuse_io_uring, 0);
}
