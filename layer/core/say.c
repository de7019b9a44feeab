/* say.c - messages from the layer to the program's stderr (no libc, no stdio).
 *
 * The layer speaks only when something is wrong or when asked to: the
 * program's output belongs to the user.  Each message is one write so lines
 * from several processes do not interleave. */
#include "core/core.h"

#define SYS_write 1

void tether_say(const char *const *parts)
{
	char line[512];
	unsigned long n = 0;

	for (; *parts; parts++)
		for (const char *p = *parts; *p && n < sizeof line - 1; p++)
			line[n++] = *p;
	line[n++] = '\n';
	/* A failed write of a diagnostic has nowhere better to go. */
	tether_raw_syscall6(SYS_write, 2, (long)line, (long)n, 0, 0, 0);
}

char *tether_fmt_ulong(char *p, unsigned long v, unsigned base)
{
	char digits[64];
	int n = 0;

	do {
		digits[n++] = "0123456789abcdef"[v % base];
		v /= base;
	} while (v);
	while (n)
		*p++ = digits[--n];
	*p = '\0';
	return p;
}
