/* exec.c - exec'd programs stay under tether.
 *
 * A child finds the layer and its session through LD_PRELOAD and
 * TETHER_SESSION.  A program that execs with an environment of its own
 * (Go's Cmd.Env, execle, env -i) would drop them and run untraced, or talk
 * to the network from here instead of the target; so execve and execveat,
 * from Go's hooks and libc's wrappers alike, get both back: TETHER_SESSION
 * as this process received it, and the layer's path at the head of
 * LD_PRELOAD.  The new list lives on this stack until the exec.
 * LD_PRELOAD cannot reach a static program: when the session can load the
 * layer into one at its exec (MODE_INJECT), it is told first. */
#include "exec/exec.h"
#include "link/link.h"

#define SYS_open 2
#define SYS_close 3
#define SYS_pread64 17
#define SYS_execve 59
#define SYS_execveat 322
#define O_RDONLY 0
#define O_CLOEXEC 02000000
#define PT_INTERP 3
#define PHNUM_MAX 64
#define ENV_MAX 16384		/* entries an exec may pass through here */
#define E2BIG 7

static const char *session_entry;	/* "TETHER_SESSION=..." */
static int inject;			/* MODE_INJECT: the session loads the layer into static programs */
static const char *layer_path;		/* the first LD_PRELOAD entry: this layer */
static unsigned long layer_len;

static int has_prefix(const char *s, const char *prefix)
{
	return !tether_memcmp(s, prefix, tether_strlen(prefix));
}

/* 1 if the LD_PRELOAD value names this layer. */
static int preloads_layer(const char *value)
{
	while (*value) {
		const char *end = value;

		while (*end && *end != ':' && *end != ' ')
			end++;
		if ((unsigned long)(end - value) == layer_len && !tether_memcmp(value, layer_path, layer_len))
			return 1;
		value = *end ? end + 1 : end;
	}
	return 0;
}

long tether_exec_env_size(char *const *envp, unsigned long *preload_size)
{
	const char *preload = 0;
	int has_session = 0;
	unsigned long n = 0;

	if (!session_entry)
		return 0;
	for (; envp && envp[n]; n++) {
		if (n == ENV_MAX)
			return -E2BIG;
		if (has_prefix(envp[n], "TETHER_SESSION="))
			has_session = !tether_memcmp(envp[n], session_entry, tether_strlen(session_entry) + 1);
		else if (has_prefix(envp[n], "LD_PRELOAD="))
			preload = envp[n] + 11;
	}
	if (has_session && preload && preloads_layer(preload))
		return 0;
	/* "LD_PRELOAD=" this layer [":" the rest] and the NUL: exact, as the
	 * caller's stack may be a static Go program's small g0 stack */
	*preload_size = 11 + layer_len + (preload && *preload && !preloads_layer(preload) ? 1 + tether_strlen(preload) : 0) + 1;
	return *preload_size > TETHER_PRELOAD_MAX ? -E2BIG : (long)n + 3;
}

void tether_exec_env_build(char *const *envp, char **env, char *preload_entry)
{
	const char *preload = 0;
	unsigned long m = 0;
	char *p = preload_entry;

	for (unsigned long i = 0; envp && envp[i]; i++) {
		if (has_prefix(envp[i], "LD_PRELOAD="))
			preload = envp[i] + 11;
		else if (!has_prefix(envp[i], "TETHER_SESSION="))
			env[m++] = envp[i];
	}
	for (const char *s = "LD_PRELOAD="; *s; s++)
		*p++ = *s;
	for (unsigned long i = 0; i < layer_len; i++)
		*p++ = layer_path[i];
	if (preload && *preload && !preloads_layer(preload)) {
		*p++ = ':';
		for (const char *s = preload; *s; s++)
			*p++ = *s;
	}
	*p = '\0';
	env[m++] = (char *)session_entry;
	env[m++] = preload_entry;
	env[m] = 0;
}

static long raw(long nr, long a1, long a2, long a3, long a4)
{
	return tether_raw_syscall6(nr, a1, a2, a3, a4, 0, 0);
}

/* 1 if path is an x86-64 ELF program with no interpreter: LD_PRELOAD will
 * not load the layer into it. */
static int is_static(long path)
{
	struct {
		unsigned char ident[16];
		unsigned short type, machine;
		unsigned version;
		unsigned long entry, phoff, shoff;
		unsigned flags;
		unsigned short ehsize, phentsize, phnum;
	} eh;
	struct { unsigned type, flags; unsigned long rest[6]; } ph;
	long fd = raw(SYS_open, path, O_RDONLY | O_CLOEXEC, 0, 0), found = 1;

	if (fd < 0)
		return 0; /* the exec will say why */
	if (raw(SYS_pread64, fd, (long)&eh, sizeof eh, 0) != sizeof eh || tether_memcmp(eh.ident, "\177ELF\2\1", 6) ||
	    (eh.type != 2 && eh.type != 3) || eh.machine != 62 || eh.phentsize != sizeof ph || eh.phnum > PHNUM_MAX)
		found = 0;
	for (unsigned i = 0; found && i < eh.phnum; i++)
		if (raw(SYS_pread64, fd, (long)&ph, sizeof ph, (long)(eh.phoff + i * sizeof ph)) != sizeof ph ||
		    ph.type == PT_INTERP)
			found = 0;
	raw(SYS_close, fd, 0, 0, 0);
	return (int)found;
}

/* A static program is next: the session loads the layer at its exec.  Its
 * path, from the program's memory, copied safely; one too long for the
 * notice runs unhooked. */
static void notice_if_static(long path)
{
	char copy[TETHER_SMALL_FRAME - 64];
	long n;

	if (!is_static(path) || (n = tether_peek(copy, path, sizeof copy)) <= 0)
		return;
	for (long i = 0; i < n; i++)
		if (!copy[i]) {
			tether_session_exec_notice(copy);
			return;
		}
}

static long exec_with_layer(long nr, long a1, long a2, long a3, long a4, long a5, long a6)
{
	char *const *envp = (char *const *)(nr == SYS_execve ? a3 : a4);
	unsigned long preload_size = 0;
	long size = tether_exec_env_size(envp, &preload_size);

	/* execveat's path is taken as at AT_FDCWD (or absolute): as Go and libc use it */
	if (inject)
		notice_if_static(nr == SYS_execve ? a1 : a2);
	if (size <= 0)
		return size < 0 ? size : tether_raw_syscall6(nr, a1, a2, a3, a4, a5, a6);
	char *env[size];
	char preload_entry[preload_size];

	tether_exec_env_build(envp, env, preload_entry);
	if (nr == SYS_execve)
		a3 = (long)env;
	else
		a4 = (long)env;
	return tether_raw_syscall6(nr, a1, a2, a3, a4, a5, a6);
}

void tether_exec_install(char **envp, int inject_static)
{
	const char *session = tether_getenv(envp, "TETHER_SESSION");
	const char *preload = tether_getenv(envp, "LD_PRELOAD");

	if (!session || !*session || !preload)
		return;
	session_entry = session - 15; /* the entry starts "TETHER_SESSION=" */
	layer_path = preload;
	while (preload[layer_len] && preload[layer_len] != ':' && preload[layer_len] != ' ')
		layer_len++;
	inject = inject_static;
	tether_set_handler(SYS_execve, exec_with_layer, 0);
	tether_set_handler(SYS_execveat, exec_with_layer, 0);
}
