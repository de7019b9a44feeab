/* trace/ - tether trace: every call through the dispatcher reported to the
 * session (trace.c, core/'s tap), written into the process's trace ring in
 * shared memory (ring.c) or sent as a frame where there is none.  Uses
 * core/ and link/. */
#ifndef TETHER_TRACE_H
#define TETHER_TRACE_H

#include "core/core.h"

/* ring.c: map the trace ring the session sent (a memfd; closed here). */
int tether_ring_attach(int fd);
/* trace.c: report every call from now on. */
void tether_trace_install(void);
/* An exec made for another process (posix_spawn's child), as that
 * process's. */
void tether_trace_exec_for(int pid, long nr, const long *args);

#endif
