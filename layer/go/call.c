/* call.c - the C side of the Go trampoline, run on the system stack.
 *
 * runtime.asmcgocall calls this on g0 with the call record that
 * tether_go_funnel keeps on the goroutine stack; the 64-bit result goes back
 * through the record (asmcgocall returns only 32 bits). */
#include "go/go.h"
#include "go/runtime.h"

void tether_go_call(struct tether_go_call *c)
{
	c->nr_ret = tether_dispatch(c->nr_ret, c->a[0], c->a[1], c->a[2], c->a[3], c->a[4], c->a[5]);
}
