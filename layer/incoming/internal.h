/* internal.h - what the files of incoming/ share, and no one else. */
#ifndef TETHER_INCOMING_INTERNAL_H
#define TETHER_INCOMING_INTERNAL_H

#include "incoming/incoming.h"

/* accept.c: accept4 on a listener a network agent serves (LISTEN_RELAYED):
 * the next connection's descriptor, or -errno; and the name of a socket
 * accepted behind a redirect made where its client connected. */
long tether_incoming_accept_relayed(long fd, long addr, long lenp, long flags);
void tether_incoming_name_accepted(long conn);

#endif
