/* start/ - the layer's start-up, the one folder that knows every other:
 * start.c reaches the session, installs what the mode asks for (trace/,
 * net/, files/, exec/) and hooks the Go executable (go/).  It runs from
 * libtether.so's ELF constructor (init.c), or earlier from pthread_create
 * when a Go library's constructor runs first (pthread.c, which also hooks
 * Go libraries before their runtime starts); in static programs, which
 * have no loader, from inject.c, called by tether's injector at exec.
 * Nothing uses start/. */
#ifndef TETHER_START_H
#define TETHER_START_H

#include "core/core.h"

/* start.c: everything both builds set up, from the environment envp (the
 * program's, or the injector's for a static one); the session's mode (0
 * without a session).  tether_layer_loaded: 1 once it has run. */
unsigned tether_start(char **envp);
TETHER_EXPORT int tether_layer_loaded(void);
/* bypass.c: refuse what would escape the detours (io_uring), when the
 * session carries the program's network or files to a target. */
void tether_refuse_bypasses(void);
/* init.c: tether_start once, and what only programs with libc have;
 * envp 0 means libc's environ. */
void tether_start_preloaded(char **envp);

#endif
