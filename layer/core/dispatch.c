/* dispatch.c - route each syscall to its handler.
 *
 * tether_handlers is written only by the constructor, before the program's
 * own threads exist, and only read afterwards (also by go/amd64.S, which
 * takes the fast passthrough when a slot is empty).  Dispatching allocates
 * nothing and takes no lock: it is safe from any thread or signal handler. */
#include "core/core.h"

tether_syscall_fn *tether_handlers[TETHER_NR_MAX];
unsigned char tether_may_block[TETHER_NR_MAX];
tether_tap_fn *tether_tap;

long tether_dispatch(long nr, long a1, long a2, long a3, long a4, long a5,
                     long a6)
{
	return tether_dispatch_inline(nr, a1, a2, a3, a4, a5, a6);
}

/* For detours built outside the layer (tests, embedders): install fn for
 * nr.  Only before the program's own code runs, i.e. from a constructor:
 * the table is not written while other threads may read it. */
int tether_set_handler(long nr, tether_syscall_fn *fn, unsigned flags)
{
	if ((unsigned long)nr >= TETHER_NR_MAX || flags & ~TETHER_MAY_BLOCK)
		return -22; /* EINVAL */
	/* The flag first: a handler set while the program runs (net/datagrams.c)
	 * is never seen without it. */
	__atomic_store_n(&tether_may_block[nr], (unsigned char)(flags & TETHER_MAY_BLOCK), __ATOMIC_RELEASE);
	__atomic_store_n(&tether_handlers[nr], fn, __ATOMIC_RELEASE);
	return 0;
}

/* TETHER_ROUTE_ALL=1: every syscall takes the full hooked path (trampoline,
 * stack switch, dispatcher) and, unless a detour is installed, is then
 * passed through.  It isolates the cost and the correctness of the hook
 * path from any detour. */
void tether_route_all(void)
{
	for (int nr = 0; nr < TETHER_NR_MAX; nr++)
		if (!tether_handlers[nr])
			tether_handlers[nr] = tether_raw_syscall6;
}
