/* inject.c - the start of the build tether injects into static programs.
 *
 * A static program has no dynamic loader, so LD_PRELOAD never loads
 * libtether.so.  Instead tether's injector (src/tether/session/inject.py)
 * stops the program at its exec, before its first instruction, or a running
 * Go program it attaches to (tether trace -p); maps this build, which needs
 * neither libc nor TLS (a static program sets up none for it); relocates
 * it; and calls tether_inject_start, the build's ELF entry point, on a
 * stack of its own, with an environment of its own: TETHER_SESSION,
 * LD_PRELOAD naming libtether.so for the dynamic programs this one execs
 * (exec/ passes both on), and the TETHER_* settings.  The program's
 * environment holds none of them.  When this returns the injector puts
 * registers and code back as it found them and lets go: no ptrace remains,
 * and the hooked path is the preloaded layer's.
 *
 * TETHER_INJECT_FS=go says FS is Go's (core/self.c may cache there).  out
 * tells the injector, for a program it attached to, where the hooks are
 * switched off when it detaches (the tap and the handler table, which an
 * aligned store of zeros makes inert while threads run), and where a
 * thread that was inside the funnel's SYSCALL goes on (go/go.h). */
#include "start/start.h"
#include "go/go.h"

struct tether_inject_out {
	unsigned long tap, handlers, handlers_size;
	unsigned long go_result, go_restart;
};

TETHER_EXPORT long tether_inject_start(char **envp, struct tether_inject_out *out)
{
	const char *fs = tether_getenv(envp, "TETHER_INJECT_FS");

	tether_self_fs_cache = fs && fs[0] == 'g' && fs[1] == 'o' && !fs[2];
	tether_start(envp);
	out->tap = (unsigned long)&tether_tap;
	out->handlers = (unsigned long)tether_handlers;
	out->handlers_size = sizeof tether_handlers;
	out->go_result = (unsigned long)tether_go_result;
	out->go_restart = (unsigned long)tether_go_restart;
	return 0;
}
