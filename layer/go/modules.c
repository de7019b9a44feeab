/* modules.c - find Go modules the dynamic loader added (c-shared libraries).
 *
 * Called before any new thread starts (start/pthread.c): a Go c-shared library's
 * constructor starts its runtime on a new thread, so at that moment the
 * library is mapped and relocated but none of its Go code has run, and it
 * can be patched as safely as the main executable at start-up. */
#define _GNU_SOURCE /* dl_iterate_phdr */
#include <link.h>

#include "go/go.h"
#include "link/link.h"

#define MAX_SEEN 64

static unsigned long seen[MAX_SEEN]; /* bias + phdr of modules already looked at */
static int nseen;
static int lock;
static char plan[4096];
static const char *env_plans;

static int mark_seen(unsigned long key)
{
	for (int i = 0; i < nseen; i++)
		if (seen[i] == key)
			return 0;
	if (nseen < MAX_SEEN)
		seen[nseen++] = key;
	return 1;
}

void tether_go_modules_start(const char *plans)
{
	env_plans = plans;
}

static int visit(struct dl_phdr_info *info, size_t size, void *data)
{
	struct tether_module m = {info->dlpi_addr, info->dlpi_phdr, info->dlpi_phnum};
	const char *id, *plans;
	unsigned id_len = 0;

	(void)size;
	(void)data;
	/* The main program (glibc lists it with an empty name) is start/'s. */
	if (!info->dlpi_name[0] || !mark_seen(m.bias + (unsigned long)m.phdr))
		return 0;
	id = tether_go_buildid(&m, &id_len);
	if (!id)
		return 0;
	plans = env_plans;
	if (!plans && tether_session_plan(info->dlpi_name, id, id_len, plan, sizeof plan) == 0)
		plans = plan[0] ? plan : 0;
	if (!plans || tether_go_hook(&m, plans) < 0)
		tether_say((const char *[]){"tether: warning: Go library ", info->dlpi_name,
		                            " has no hook plan; it runs unhooked", 0});
	return 0;
}

void tether_go_hook_new_modules(void)
{
	while (__atomic_exchange_n(&lock, 1, __ATOMIC_ACQUIRE))
		;
	dl_iterate_phdr(visit, 0);
	__atomic_store_n(&lock, 0, __ATOMIC_RELEASE);
}
