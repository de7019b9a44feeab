/* internal.h - what the files of trace/ share, and no one else. */
#ifndef TETHER_TRACE_INTERNAL_H
#define TETHER_TRACE_INTERNAL_H

#include "trace/trace.h"
#include "link/link.h"

/* ring.c: the producer side of the trace ring (link/protocol.h).  put
 * writes one record of type and flags, its payload n bytes (a multiple of
 * 8, at most TETHER_FRAME_MAX - 16), for process pid, the caller: 0 when
 * written, or dropped because the session is gone; -errno when the caller
 * should send it as a frame instead (no ring, a child sharing the ring's
 * process's memory, a forked child that could not get a ring of its own,
 * or a full ring while this thread is already writing a record: a signal
 * handler must not wait for the record it interrupted). */
int tether_ring_put(unsigned short type, unsigned short flags, const unsigned long *payload, unsigned long n,
                    int pid);

#endif
