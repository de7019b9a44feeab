/* epoll.c - carry a descriptor's epoll registrations over to the socket
 * that replaces it.
 *
 * dup3 puts another open file behind a descriptor number; the kernel drops
 * the old file's epoll registrations with it.  A program that registered
 * the socket before the swap (Go does for a UDP socket at creation) would
 * wait forever on the new one.  The kernel lists every registration in
 * /proc/self/fdinfo/<epoll fd> ("tfd: <fd> events: <hex> data: <hex>"), so
 * they are read before the swap and added again after it. */
#include "net/internal.h"

#define SYS_read 0
#define SYS_open 2
#define SYS_close 3
#define SYS_readlink 89
#define SYS_epoll_ctl 233
#define SYS_getdents64 217
#define O_RDONLY 0
#define O_DIRECTORY 0200000
#define O_CLOEXEC 02000000
#define EPOLL_CTL_ADD 1
#define FDINFO_CHUNK 512

struct dirent64 {
	unsigned long ino;
	long off;
	unsigned short reclen;
	unsigned char type;
	char name[];
};

static long raw(long nr, long a1, long a2, long a3)
{
	return tether_raw_syscall6(nr, a1, a2, a3, 0, 0, 0);
}

static int parse_num(const char *s, int base, unsigned long *out)
{
	unsigned long v = 0;
	int any = 0;

	while (*s == ' ')
		s++;
	for (;; s++, any = 1) {
		int d = tether_hexdigit(*s);

		if (d < 0 || d >= base)
			break;
		v = v * (unsigned)base + (unsigned)d;
	}
	*out = v;
	return any;
}

/* The value after "key:" on line, or 0. */
static const char *field(const char *line, const char *end, const char *key)
{
	unsigned long n = tether_strlen(key);

	for (const char *p = line; p + n < end; p++)
		if (!tether_memcmp(p, key, n))
			return p + n;
	return 0;
}

/* A registration of fd on one line of epfd's fdinfo, appended to regs. */
static unsigned from_line(const char *line, const char *end, int epfd, int fd, struct tether_epoll_reg *regs,
                          unsigned n)
{
	const char *tfd, *events, *data;
	unsigned long v_fd, v_events, v_data;

	if (end - line < 4 || tether_memcmp(line, "tfd:", 4) || !(tfd = field(line, end, "tfd:")) ||
	    !(events = field(line, end, "events:")) || !(data = field(line, end, "data:")) ||
	    !parse_num(tfd, 10, &v_fd) || v_fd != (unsigned long)fd || !parse_num(events, 16, &v_events) ||
	    !parse_num(data, 16, &v_data))
		return n;
	regs[n].epfd = epfd;
	regs[n].events = (unsigned)v_events;
	regs[n].data = v_data;
	return n + 1;
}

/* Registrations of fd in the epoll instance epfd, appended to regs.  The
 * file lists every descriptor of the instance (Go's poller has them all),
 * a line each of under 128 bytes: read in small pieces, this may run on a
 * static Go program's g0 stack (8 KiB in Go 1.19). */
static unsigned from_fdinfo(int epfd, int fd, struct tether_epoll_reg *regs, unsigned n, unsigned max)
{
	char path[48] = "/proc/self/fdinfo/", buf[FDINFO_CHUNK + 1];
	unsigned long have = 0;
	long fi, got;

	tether_fmt_ulong(path + 18, (unsigned long)epfd, 10);
	fi = raw(SYS_open, (long)path, O_RDONLY | O_CLOEXEC, 0);
	if (fi < 0)
		return n;
	while (n < max && (got = raw(SYS_read, fi, (long)(buf + have), FDINFO_CHUNK - have)) > 0) {
		const char *line = buf, *end;

		have += (unsigned long)got;
		buf[have] = '\0';
		while (n < max) {
			for (end = line; *end && *end != '\n'; end++)
				;
			if (!*end)
				break; /* the rest of this line comes with the next read */
			n = from_line(line, end, epfd, fd, regs, n);
			line = end + 1;
		}
		have = (unsigned long)(buf + have - line);
		if (have == FDINFO_CHUNK)
			have = 0; /* no line is this long: drop it */
		for (unsigned long i = 0; i < have; i++)
			buf[i] = line[i];
	}
	raw(SYS_close, fi, 0, 0);
	return n;
}

unsigned tether_epoll_find(int fd, struct tether_epoll_reg *regs, unsigned max)
{
	static const char eventpoll[] = "anon_inode:[eventpoll]";
	unsigned long words[64]; /* small: see from_fdinfo */
	unsigned n = 0;
	long dir = raw(SYS_open, (long)"/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0), got;

	if (dir < 0)
		return 0;
	while ((got = raw(SYS_getdents64, dir, (long)words, sizeof words)) > 0) {
		for (long pos = 0; pos < got;) {
			const struct dirent64 *d = (const struct dirent64 *)((const char *)words + pos);
			char path[48] = "/proc/self/fd/", target[sizeof eventpoll];
			unsigned long epfd;

			pos += d->reclen;
			if (!parse_num(d->name, 10, &epfd) || epfd == (unsigned long)dir)
				continue;
			tether_fmt_ulong(path + 14, epfd, 10);
			if (raw(SYS_readlink, (long)path, (long)target, sizeof target) == sizeof eventpoll - 1 &&
			    !tether_memcmp(target, eventpoll, sizeof eventpoll - 1))
				n = from_fdinfo((int)epfd, fd, regs, n, max);
		}
	}
	raw(SYS_close, dir, 0, 0);
	return n;
}

void tether_epoll_restore(int fd, const struct tether_epoll_reg *regs, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		/* struct epoll_event is packed on x86-64: 12 bytes. */
		struct __attribute__((packed)) { unsigned events; unsigned long data; } ev = {regs[i].events,
		                                                                                regs[i].data};

		tether_raw_syscall6(SYS_epoll_ctl, regs[i].epfd, EPOLL_CTL_ADD, fd, (long)&ev, 0, 0);
	}
}
