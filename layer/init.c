/* init.c - the ELF constructor run when libtether.so is loaded.
 *
 * It hooks the main executable's Go syscall entry points when the session
 * handed over a hook plan (TETHER_GO_PLAN), before the program's own code
 * runs.  It stays silent unless something is wrong, or TETHER_LAYER_DEBUG=1
 * asks for a "loaded" line: the program's output is the user's.  No libc:
 * the environment comes from the constructor's arguments. */
#include "tether.h"

#define SYS_getpid 39

static int loaded;

int tether_layer_loaded(void)
{
	/* Atomic: a dlopen in one thread may race a reader in another. */
	return __atomic_load_n(&loaded, __ATOMIC_ACQUIRE);
}

static int is_one(const char *value)
{
	return value && value[0] == '1' && value[1] == '\0';
}

static void say_loaded(void)
{
	char pid[24];

	tether_fmt_ulong(pid, (unsigned long)tether_raw_syscall6(SYS_getpid, 0, 0, 0, 0, 0, 0), 10);
	tether_say((const char *[]){"tether: layer loaded pid=", pid, 0});
}

/* glibc's ld.so calls init_array functions with (argc, argv, envp), both at
 * program start (LD_PRELOAD) and on dlopen, so the environment is reachable
 * without libc's environ.  musl passes no arguments: revisit before
 * supporting it. */
__attribute__((constructor))
static void tether_init(int argc, char **argv, char **envp)
{
	(void)argc;
	(void)argv;
	if (is_one(tether_getenv(envp, "TETHER_ROUTE_ALL")))
		tether_route_all();
	tether_go_hook_main(tether_getenv(envp, "TETHER_GO_PLAN"));
	__atomic_store_n(&loaded, 1, __ATOMIC_RELEASE);
	if (is_one(tether_getenv(envp, "TETHER_LAYER_DEBUG")))
		say_loaded();
}
