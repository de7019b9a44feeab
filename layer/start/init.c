/* init.c - libtether.so's start, preloaded into programs that have the
 * dynamic loader: the ELF constructor, or pthread_create when a Go
 * library's constructor runs first (pthread.c).  On top of start.c's work:
 * libc's name lookups answered by the target (net/dns.c) and the Go
 * libraries the loader brought (go/modules.c). */
#include "start/start.h"
#include "go/go.h"
#include "link/link.h"
#include "net/net.h"

extern char **environ; /* libc's, for a start from pthread_create */

void tether_start_preloaded(char **envp)
{
	static int started;

	if (__atomic_exchange_n(&started, 1, __ATOMIC_ACQ_REL))
		return;
	if (!envp)
		envp = environ;
	tether_go_modules_start(tether_getenv(envp, "TETHER_GO_PLAN"));
	if (tether_start(envp) & TETHER_MODE_DNS)
		tether_dns_install();
}

/* glibc's ld.so calls init_array functions with (argc, argv, envp), both at
 * program start (LD_PRELOAD) and on dlopen, so the environment arrives
 * before libc's own initialisation.  musl passes no arguments: revisit
 * before supporting it. */
__attribute__((constructor))
static void tether_init(int argc, char **argv, char **envp)
{
	(void)argc;
	(void)argv;
	tether_start_preloaded(envp);
	/* Go libraries the program was linked with are already loaded; one
	 * whose constructor ran before this one was hooked by pthread_create. */
	tether_go_hook_new_modules();
}
