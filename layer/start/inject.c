/* inject.c - the start of the build tether injects into static programs.
 *
 * A static program has no dynamic loader, so LD_PRELOAD never loads
 * libtether.so.  Instead tether's injector (src/tether/session/inject.py)
 * stops the program at its exec, before its first instruction; maps this
 * build, which needs neither libc nor TLS (a static program sets up none
 * for it); relocates it; and calls tether_inject_start, the build's ELF
 * entry point, on the program's own stack, with an environment of its own:
 * TETHER_SESSION, LD_PRELOAD naming libtether.so for the dynamic programs
 * this one execs (exec/ passes both on), and the TETHER_* settings.  The
 * program's environment holds none of them.  When this returns the
 * injector puts registers and code back as the kernel left them and lets
 * go: no ptrace remains, and the hooked path is the preloaded layer's. */
#include "start/start.h"

TETHER_EXPORT long tether_inject_start(char **envp)
{
	tether_start(envp);
	return 0;
}
