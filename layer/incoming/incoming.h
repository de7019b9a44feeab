/* incoming/ - the target's TCP ports for the program's listeners (tether
 * exec --incoming): listen() asks the agent (LISTEN), which answers with a
 * listening socket made in the target, put in place of the program's, or
 * lets the program listen here; closing such a listener ends what the
 * agent set up for it (listen.c).  Through a network agent, connections
 * it accepted there come to the program's accept() (accept.c).  Twin of src/tether/agent/incoming.py.
 * Uses core/, link/ and net/ (the swap). */
#ifndef TETHER_INCOMING_H
#define TETHER_INCOMING_H

#include "core/core.h"

/* listen.c: the detours of listen, close, accept and accept4 (MODE_INCOMING). */
void tether_incoming_install(void);

#endif
