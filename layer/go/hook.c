/* hook.c - apply a hook plan to a Go module (executable or c-shared).
 *
 * The session computes the plan in Python from the binary's own function
 * table (tether inspect) and hands it over (HELLO_REPLY, PLAN_REPLY), or it
 * comes from the environment (TETHER_GO_PLAN):
 *
 *   1;<go build id>;g=<g.m>:<m.curg>:<g.syscallsp>;funnel=<addr>:<code>;
 *   vfork=<addr>:<code>:<args>;asmcgocall=<addr>:<code>;enter=<addr>:<code>;
 *   exit=<addr>:<code>
 *
 * (one line; numbers in hex; several plans may be joined with '|', one is
 * chosen by build id).  Addresses are link-time, the load bias is added
 * here; <code> is the function's first 16 bytes; vfork is present only when
 * the program links os/exec; enter and exit are runtime.entersyscall and
 * runtime.exitsyscall.  Nothing is patched unless the build id matches the
 * module and every function still starts with its recorded bytes: a stale or
 * foreign plan is never applied.
 *
 * Several Go runtimes in one process are hooked, each with its own record
 * and stubs (runtime.h): a Go executable and the Go c-shared libraries
 * it or a C program loads, up to TETHER_GO_RUNTIMES. */
#include "go/go.h"
#include "go/runtime.h"

#define CODE_BYTES 16
#define SYS_exit_group 231
#define EXIT_REFUSED 2

enum { FUNNEL, VFORK, ASMCGOCALL, ENTER, EXIT, NFUNCS };

static const char *const names[NFUNCS] = {"funnel", "vfork", "asmcgocall", "enter", "exit"};

struct func {
	unsigned long addr;
	unsigned char code[CODE_BYTES];
	unsigned args;
	int present;
};

/* Read by amd64.S, through each runtime's stubs. */
struct tether_go_runtime tether_go_runtimes[TETHER_GO_RUNTIMES];
static int runtimes_used;

static const void *stub(int runtime, int which)
{
	return tether_go_stubs[runtime * STUBS_PER_RUNTIME + which];
}

/* Parse "<hex>" up to a stop character; 0 on success. */
static int parse_hex(const char **s, unsigned long *out)
{
	unsigned long v = 0;
	int n = 0;

	for (; tether_hexdigit(**s) >= 0 && n < 16; (*s)++, n++)
		v = v << 4 | (unsigned long)tether_hexdigit(**s);
	*out = v;
	return n ? 0 : -1;
}

static int starts(const char *s, const char *prefix)
{
	while (*prefix)
		if (*s++ != *prefix++)
			return 0;
	return 1;
}

/* Stop before the program runs: unhooked, it would silently talk to the
 * wrong network. */
__attribute__((noreturn))
static void refuse(const char *why, const char *detail)
{
	tether_say((const char *[]){"tether: cannot hook this Go program: ", why, detail, 0});
	for (;;)
		tether_raw_syscall6(SYS_exit_group, EXIT_REFUSED, 0, 0, 0, 0, 0);
}

/* Parse one plan (up to '|' or the end) into funcs and the build id. */
static int parse(const char *s, struct func *funcs, unsigned long goff[3], const char **id,
                 unsigned *id_len)
{
	if (!starts(s, "1;"))
		return -1;
	s += 2;
	*id = s;
	while (*s && *s != ';' && *s != '|')
		s++;
	*id_len = (unsigned)(s - *id);
	if (!starts(s, ";g=") || (s += 3, parse_hex(&s, &goff[0])) || *s++ != ':' ||
	    parse_hex(&s, &goff[1]) || *s++ != ':' || parse_hex(&s, &goff[2]))
		return -1;
	while (*s == ';') {
		int k;
		unsigned long args = 0;

		s++;
		for (k = 0; k < NFUNCS; k++)
			if (starts(s, names[k]) && s[tether_strlen(names[k])] == '=')
				break;
		if (k == NFUNCS)
			return -1;
		s += tether_strlen(names[k]) + 1;
		if (parse_hex(&s, &funcs[k].addr) || *s++ != ':' || tether_hex_bytes(&s, funcs[k].code, CODE_BYTES))
			return -1;
		if (*s == ':') {
			s++;
			if (parse_hex(&s, &args))
				return -1;
		}
		funcs[k].args = (unsigned)args;
		funcs[k].present = 1;
	}
	return *s && *s != '|' ? -1 : 0;
}

/* The plan in the '|'-separated list whose build id is id, or 0.  A list
 * that does not parse is refused whole. */
static const char *pick(const char *plans, const char *id, unsigned id_len)
{
	for (const char *p = plans; p; ) {
		struct func funcs[NFUNCS] = {0};
		unsigned long goff[3];
		const char *want;
		unsigned want_len;

		if (parse(p, funcs, goff, &want, &want_len))
			refuse("malformed TETHER_GO_PLAN", "");
		if (want_len == id_len && !tether_memcmp(want, id, id_len))
			return p;
		while (*p && *p != '|')
			p++;
		p = *p ? p + 1 : 0;
	}
	return 0;
}

int tether_go_hook(const struct tether_module *m, const char *plans)
{
	struct func funcs[NFUNCS] = {0};
	unsigned long goff[3];
	const char *id, *plan, *want;
	unsigned id_len = 0, want_len;
	struct tether_go_runtime *rt;
	int k;

	id = tether_go_buildid(m, &id_len);
	if (!id)
		return 0; /* not Go: nothing to patch */
	plan = pick(plans, id, id_len);
	if (!plan)
		return -1;
	if (parse(plan, funcs, goff, &want, &want_len) || !funcs[FUNNEL].present ||
	    !funcs[ASMCGOCALL].present || !funcs[ENTER].present || !funcs[EXIT].present)
		refuse("malformed TETHER_GO_PLAN", "");
	for (int k = 0; k < NFUNCS; k++) {
		funcs[k].addr += m->bias;
		if (funcs[k].present && tether_memcmp((const void *)funcs[k].addr, funcs[k].code, CODE_BYTES))
			refuse("code differs from the hook plan at ", names[k]);
	}
	if (funcs[VFORK].present && (funcs[VFORK].args < 1 || funcs[VFORK].args > 3))
		refuse("unexpected rawVforkSyscall argument count", "");
	k = __atomic_fetch_add(&runtimes_used, 1, __ATOMIC_ACQ_REL);
	if (k >= TETHER_GO_RUNTIMES) {
		tether_say((const char *[]){"tether: warning: more Go runtimes in this process than "
		                            "tether hooks (4): this one is not hooked", 0});
		return -1;
	}

	rt = &tether_go_runtimes[k];
	rt->g_m = goff[0];
	rt->m_curg = goff[1];
	rt->g_syscallsp = goff[2];
	rt->asmcgocall = funcs[ASMCGOCALL].addr;
	rt->entersyscall = funcs[ENTER].addr;
	rt->exitsyscall = funcs[EXIT].addr;
	rt->vfork_args = funcs[VFORK].args;
	/* Three jumps in the funnel (tether inspect checked it has the code
	 * for them): its entry, and the two addresses entersyscall and
	 * exitsyscall return to on the blocking path of amd64.S.  No code of
	 * this runtime runs yet: the main executable is patched before it
	 * starts, a library before its runtime's first thread (start/pthread.c); the
	 * record is complete before the jumps to its stubs exist. */
	rt->entered_pc = funcs[FUNNEL].addr + TETHER_PATCH_BYTES;
	rt->exited_pc = funcs[FUNNEL].addr + 2 * TETHER_PATCH_BYTES;
	if (tether_patch_jump(funcs[FUNNEL].addr, stub(k, STUB_FUNNEL)) ||
	    tether_patch_jump(rt->entered_pc, stub(k, STUB_ENTERED)) ||
	    tether_patch_jump(rt->exited_pc, tether_go_exited))
		refuse("mprotect refused to patch ", names[FUNNEL]);
	if (funcs[VFORK].present && tether_patch_jump(funcs[VFORK].addr, stub(k, STUB_VFORK)))
		refuse("mprotect refused to patch ", names[VFORK]);
	return 1;
}
