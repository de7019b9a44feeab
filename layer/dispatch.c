/* dispatch.c - route each syscall to its handler.
 *
 * The table is const and filled at compile time (designated initializers,
 * e.g. [SYS_openat] = handle_openat), so dispatching reads no mutable state:
 * it allocates nothing, takes no lock and is safe from any thread or signal
 * handler.  A NULL entry means "not hooked": the call goes to the kernel. */
#include "tether.h"

static tether_syscall_fn *const handlers[TETHER_NR_MAX] = {
	0 /* no syscall is hooked yet */
};

long tether_dispatch(long nr, long a1, long a2, long a3, long a4, long a5,
                     long a6)
{
	/* Unsigned compare also sends negative numbers to the kernel, which
	 * answers -ENOSYS for anything it does not know. */
	tether_syscall_fn *handler = 0;

	if ((unsigned long)nr < TETHER_NR_MAX)
		handler = handlers[nr];
	if (!handler)
		handler = tether_raw_syscall6;
	return handler(nr, a1, a2, a3, a4, a5, a6);
}
