/* start/ - the layer's start-up, the one folder that knows every other:
 * the ELF constructor (init.c) reaches the session, installs what the mode
 * asks for (trace/, net/, files/, exec/) and hooks the Go executable
 * (go/); pthread.c starts it earlier when a Go library's constructor runs
 * first, and hooks Go libraries before their runtime starts.  Nothing uses
 * start/. */
#ifndef TETHER_START_H
#define TETHER_START_H

#include "core/core.h"

/* init.c: 1 once the layer's ELF constructor has run, else 0. */
TETHER_EXPORT int tether_layer_loaded(void);
void tether_start(char **envp); /* once; envp 0 means libc's environ */

#endif
