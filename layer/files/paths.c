/* paths.c - a call's path as the rules see it: read safely from the
 * program's memory (tether_peek: a bad pointer is the kernel's EFAULT to
 * give, not a crash here), made absolute against the working directory,
 * and cleaned of ".", ".." and repeated slashes by its text (as Go's
 * filepath.Clean does: a ".." after a symbolic link goes up from the link's
 * name, not from where it points).
 *
 * A path is up to PATH_MAX bytes, more than a detour's stack may hold (Go's
 * g0 is 8 KiB in a static Go 1.19 program), so paths live in a few static
 * buffers; a call takes one and gives it back, and one that finds all in
 * use yields until one is free. */
#include "files/internal.h"

#define SYS_sched_yield 24
#define SYS_getcwd 79
#define AT_FDCWD (-100)
#define SLOTS 16
#define FIRST_READ 256

static char buffers[SLOTS][TETHER_PATH_MAX];
static unsigned busy; /* bit i: buffers[i] is some call's */

static int take_slot(void)
{
	for (;;) {
		unsigned now = __atomic_load_n(&busy, __ATOMIC_RELAXED), free = ~now & ((1u << SLOTS) - 1);

		if (!free) {
			tether_raw_syscall6(SYS_sched_yield, 0, 0, 0, 0, 0, 0);
			continue;
		}
		int slot = __builtin_ctz(free);

		if (__atomic_compare_exchange_n(&busy, &now, now | 1u << slot, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
			return slot;
	}
}

void tether_path_put(struct tether_path *p)
{
	if (p->slot >= 0)
		__atomic_fetch_and(&busy, ~(1u << p->slot), __ATOMIC_RELEASE);
	p->slot = -1;
}

/* The NUL-terminated string at addr into buf (size bytes): its length, or
 * -1 if it is unreadable or does not fit. */
static long peek_string(char *buf, unsigned long size, long addr)
{
	unsigned long have = 0;

	while (have < size) {
		unsigned long want = have ? size - have : FIRST_READ;
		long got = tether_peek(buf + have, addr + (long)have, want);

		if (got <= 0)
			return -1;
		for (unsigned long i = have; i < have + (unsigned long)got; i++)
			if (!buf[i])
				return (long)i;
		have += (unsigned long)got;
	}
	return -1;
}

/* Clean the absolute path in s (n bytes) in place; its new length. */
static unsigned long clean(char *s, unsigned long n)
{
	unsigned long out = 1, in = 1; /* s[0] is '/' */

	while (in < n) {
		unsigned long end = in;

		while (end < n && s[end] != '/')
			end++;
		unsigned long len = end - in;

		if (len == 0 || (len == 1 && s[in] == '.')) {
			/* nothing */
		} else if (len == 2 && s[in] == '.' && s[in + 1] == '.') {
			while (out > 1 && s[out - 1] != '/')
				out--;
			if (out > 1)
				out--; /* and the slash before it, but the root's */
		} else {
			if (out > 1 && s[out - 1] != '/')
				s[out++] = '/';
			for (unsigned long i = in; i < end; i++)
				s[out++] = s[i];
		}
		in = end + 1;
	}
	if (out > 1 && s[out - 1] == '/')
		out--;
	s[out] = '\0';
	return out;
}

long tether_path_get(struct tether_path *p, long dirfd, long addr)
{
	char first;
	long n, cwd = 0;

	p->slot = -1;
	if (tether_peek(&first, addr, 1) != 1 || !first || (first != '/' && dirfd != AT_FDCWD))
		return -1;
	p->slot = take_slot();
	p->text = buffers[p->slot];
	if (first != '/') {
		cwd = tether_raw_syscall6(SYS_getcwd, (long)p->text, TETHER_PATH_MAX, 0, 0, 0, 0);
		if (cwd < 2 || p->text[0] != '/') { /* "(unreachable)/..." is not a path */
			tether_path_put(p);
			return -1;
		}
		p->text[cwd - 1] = '/'; /* getcwd counts its NUL */
	}
	n = peek_string(p->text + cwd, TETHER_PATH_MAX - (unsigned long)cwd, addr);
	if (n < 0) {
		tether_path_put(p);
		return -1;
	}
	return (long)clean(p->text, (unsigned long)(cwd + n));
}
