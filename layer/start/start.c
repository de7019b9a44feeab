/* start.c - what the layer sets up before the program's own code runs, in
 * both builds: libtether.so, preloaded (init.c), and the build injected
 * into static programs (inject.c).
 *
 * It reaches the session if there is one (TETHER_SESSION; tether trace and
 * tether exec set it), which answers with the mode and this executable's
 * hook plan; else takes the plan from TETHER_GO_PLAN; installs what the
 * mode asks for; then hooks the main executable's Go syscall entry points.
 * It stays silent unless something is wrong, or TETHER_LAYER_DEBUG=1 asks
 * for a "loaded" line: the program's output is the user's. */
#include "start/start.h"
#include "exec/exec.h"
#include "files/files.h"
#include "go/go.h"
#include "incoming/incoming.h"
#include "link/link.h"
#include "net/net.h"
#include "trace/trace.h"

#define SYS_getpid 39
#define SYS_exit_group 231
#define EXIT_REFUSED 2

static int loaded;
static struct tether_session_reply reply;

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

/* The program must not run outside the session it was started under: its
 * syscalls would silently go to the wrong place (or untraced). */
__attribute__((noreturn))
static void no_session(const char *path, int err)
{
	char num[24];

	tether_fmt_ulong(num, (unsigned long)-err, 10);
	tether_say((const char *[]){"tether: cannot reach the tether session at ", path,
	                            " (errno ", num, "); is `tether` still running?", 0});
	for (;;)
		tether_raw_syscall6(SYS_exit_group, EXIT_REFUSED, 0, 0, 0, 0, 0);
}

__attribute__((noreturn))
static void refuse(const char *why)
{
	tether_say((const char *[]){"tether: ", why, "; is this libtether.so from the same tether?", 0});
	for (;;)
		tether_raw_syscall6(SYS_exit_group, EXIT_REFUSED, 0, 0, 0, 0, 0);
}

unsigned tether_start(char **envp)
{
	const char *session = tether_getenv(envp, "TETHER_SESSION");
	const char *plan = tether_getenv(envp, "TETHER_GO_PLAN");
	struct tether_module exe;
	int have_exe = tether_main_exe(&exe) == 0;
	const char *build_id = 0;
	unsigned build_id_len = 0, mode = 0;

	if (have_exe)
		build_id = tether_go_buildid(&exe, &build_id_len);
	tether_self_init();
	if (session && *session) {
		int ring = -1;
		int err = tether_session_open(session, build_id ? build_id : "", build_id_len, &mode, &reply, &ring);

		if (err < 0)
			no_session(session, err);
		plan = reply.plan[0] ? reply.plan : 0;
		/* Without a ring, events go to the socket as frames: slower, same trace. */
		if (ring >= 0 && tether_ring_attach(ring) < 0)
			tether_say((const char *[]){"tether: warning: the session's trace ring is unusable; "
			                            "tracing without it (slower)", 0});
		if (mode & TETHER_MODE_TRACE)
			tether_trace_install();
		tether_exec_install(envp, !!(mode & TETHER_MODE_INJECT));
		if (mode & (TETHER_MODE_NET | TETHER_MODE_DNS | TETHER_MODE_FILES) && tether_request_init(reply.agent) < 0)
			refuse("the session named no usable agent socket");
		if (mode & TETHER_MODE_NET && tether_net_install(reply.rules, mode, build_id != 0) < 0)
			refuse("the session sent outgoing rules the layer cannot read");
		if (mode & (TETHER_MODE_DNS | TETHER_MODE_FILES) && tether_files_install(mode) < 0)
			refuse("the session sent file rules the layer cannot read");
		if (mode & TETHER_MODE_INCOMING)
			tether_incoming_install();
		if (mode & (TETHER_MODE_NET | TETHER_MODE_DNS | TETHER_MODE_FILES | TETHER_MODE_INCOMING))
			tether_refuse_bypasses();
	}
	if (tether_tap || is_one(tether_getenv(envp, "TETHER_ROUTE_ALL")))
		tether_route_all();
	if (have_exe && build_id && plan && tether_go_hook(&exe, plan) < 0)
		/* A Go program started by a hooked one, without its own plan. */
		tether_say((const char *[]){"tether: warning: no hook plan for this Go program "
		                            "(started by a hooked one); it runs unhooked", 0});
	__atomic_store_n(&loaded, 1, __ATOMIC_RELEASE);
	if (is_one(tether_getenv(envp, "TETHER_LAYER_DEBUG")))
		say_loaded();
	return mode;
}
