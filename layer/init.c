/* init.c - the ELF constructor run when libtether.so is loaded.
 *
 * It only records that the layer is loaded and, when TETHER_LAYER_DEBUG=1,
 * says so on stderr.  It must stay silent otherwise: the traced program's
 * output is the user's, not ours.  No libc: the environment comes from the
 * constructor's arguments and the line is written with a raw syscall. */
#include "tether.h"

#define SYS_write 1
#define SYS_getpid 39

static int loaded;

int tether_layer_loaded(void)
{
	/* Atomic: a dlopen in one thread may race a reader in another. */
	return __atomic_load_n(&loaded, __ATOMIC_ACQUIRE);
}

/* 1 if envp holds exactly name=1. */
static int env_is_one(char **envp, const char *name)
{
	for (; envp && *envp; envp++) {
		const char *s = *envp;
		const char *n = name;

		while (*n && *s == *n) {
			s++;
			n++;
		}
		if (!*n && s[0] == '=' && s[1] == '1' && s[2] == '\0')
			return 1;
	}
	return 0;
}

/* Append the decimal form of v (v >= 0) at p; return the new end. */
static char *put_ulong(char *p, unsigned long v)
{
	char digits[20]; /* 2^64 - 1 has 20 digits */
	int n = 0;

	do {
		digits[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	while (n)
		*p++ = digits[--n];
	return p;
}

static void say_loaded(void)
{
	static const char prefix[] = "tether: layer loaded pid=";
	char line[sizeof prefix + 20 + 1];
	char *p = line;
	unsigned long i;

	for (i = 0; i < sizeof prefix - 1; i++)
		*p++ = prefix[i];
	p = put_ulong(p, (unsigned long)tether_raw_syscall6(SYS_getpid, 0, 0, 0, 0, 0, 0));
	*p++ = '\n';
	/* One write so the line is not interleaved with other output; a failed
	 * or short write of a debug line is not worth handling. */
	tether_raw_syscall6(SYS_write, 2, (long)line, (long)(p - line), 0, 0, 0);
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
	__atomic_store_n(&loaded, 1, __ATOMIC_RELEASE);
	if (env_is_one(envp, "TETHER_LAYER_DEBUG"))
		say_loaded();
}
