/* net/ - the program's network, taken from the target (tether exec):
 * outgoing connects and unconnected UDP through sockets made there
 * (net.c, target_sockets.c: spares the agent hands out) or relayed by a
 * network agent (pending.c: connects in flight; datagrams.c: UDP), the
 * local/remote rules (route.c), epoll registrations kept across a socket
 * swap (epoll.c), the addresses of relayed sockets (relayed.c), and libc's
 * name lookups answered there (dns.c).  Uses core/ and link/. */
#ifndef TETHER_NET_H
#define TETHER_NET_H

#include "core/core.h"

/* net.c: the detours of connect, sendto, sendmsg and, for relayed sockets,
 * getsockname and getpeername; rules is route.c's text; mode the session's
 * (MODE_SOCKETS: the agent hands out sockets made in the target;
 * MODE_STREAMS: data connections to a relaying agent); go: the program is
 * Go, whose poller finishes a non-blocking connect (pending.c). */
int tether_net_install(const char *rules, unsigned mode, int go);
/* net.c: for incoming/: put newfd (made in the target) in place of the
 * program's socket fd as a connect does (flags, options and epoll
 * registrations kept; newfd is consumed); whether fd already is the
 * target's; and the address getsockname gives for fd from now on (len
 * bytes of sa), where the target's socket is bound elsewhere. */
long tether_net_swap(long fd, long newfd);
int tether_net_in_target(long fd);
void tether_net_name(long fd, const unsigned char *sa, unsigned len);
/* net.c: fd stands for a target socket whose two addresses (u16 length and
 * bytes each, as CONNECT_REPLY and ACCEPT_REPLY carry them) are at p, before
 * end: getsockname and getpeername give them; the peer's in *peer (if not
 * NULL).  0, or -1 if they do not fit. */
int tether_net_relayed(long fd, const unsigned char *p, const unsigned char *end, const unsigned char **peer,
                       unsigned *peer_len);
/* dns.c: answer libc's host name lookups from the target. */
void tether_dns_install(void);
/* route.c: rules' verdict on a socket address, for tests and the fuzzer. */
TETHER_EXPORT int tether_route_verdict(const char *rules, const unsigned char *sa, long len);

#endif
