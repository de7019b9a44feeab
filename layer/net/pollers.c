/* pollers.c - a pending connect (pending.c) as a libc program's poller
 * sees it.
 *
 * The data connection that stands for a socket whose connect is pending is
 * writable from the start; the kernel's socket becomes writable only once
 * connected or failed, and a libc program reads SO_ERROR once, when epoll,
 * poll or select first says so.  So while a program waits for a pending
 * socket to be writable, the wait is for it to be readable (the agent's
 * answer arriving), and it is reported writable once the answer has all
 * come (pending.c's state: peeked, not taken), with POLLERR and POLLHUP if
 * the connect failed, as the kernel reports it.  A wake for an answer not
 * all come is not passed on; the wait goes on for the time left.  select
 * waits for the pending answers first, then selects.  Go waits in its own
 * netpoller and reads SO_ERROR until it says done: not installed for Go. */
#include "net/internal.h"

#define SYS_poll 7
#define SYS_select 23
#define SYS_clock_gettime 228
#define SYS_epoll_wait 232
#define SYS_epoll_ctl 233
#define SYS_pselect6 270
#define SYS_ppoll 271
#define SYS_epoll_pwait 281
#define SYS_epoll_pwait2 441
#define CLOCK_MONOTONIC 1
#define EPOLL_CTL_ADD 1
#define EPOLL_CTL_DEL 2
#define EPOLL_CTL_MOD 3
#define EPOLLIN 0x001u
#define EPOLLOUT 0x004u
#define EPOLLERR 0x008u
#define EPOLLHUP 0x010u
#define POLLIN 0x001
#define POLLOUT 0x004
#define POLLERR 0x008
#define POLLHUP 0x010
#define EINPROGRESS 115
#define ESTALE 116
#define WAITING_MAX 64 /* pending sockets one call waits for; more are left to the kernel */

struct epoll_event {
	unsigned events;
	unsigned long data;
} __attribute__((packed)); /* x86-64's layout: 12 bytes */

struct pollfd {
	int fd;
	short events, revents;
};

struct timespec {
	long sec, nsec;
};

static long raw(long nr, long a1, long a2, long a3, long a4, long a5, long a6)
{
	return tether_raw_syscall6(nr, a1, a2, a3, a4, a5, a6);
}

static long now_ns(void)
{
	struct timespec t;

	raw(SYS_clock_gettime, CLOCK_MONOTONIC, (long)&t, 0, 0, 0, 0);
	return t.sec * 1000000000 + t.nsec;
}

/* A call's time limit, to wait again for what is left of it. */
struct limit {
	int forever;
	long end;
};

static struct limit limit_ms(long ms)
{
	return (struct limit){ms < 0, ms < 0 ? 0 : now_ns() + ms * 1000000};
}

static struct limit limit_ts(long ts)
{
	struct timespec t;

	if (!ts || tether_peek(&t, ts, sizeof t) != sizeof t)
		return (struct limit){1, 0};
	return (struct limit){0, now_ns() + t.sec * 1000000000 + t.nsec};
}

/* What is left of l: 0 when it is over. */
static long left_ns(const struct limit *l)
{
	long left = l->end - now_ns();

	return left > 0 ? left : 0;
}

/* The timeout argument for what is left of l (in *ts for the timespec
 * forms, else in ms); 0 once it is over. */
static int time_left(const struct limit *l, int timespec, long *timeout, struct timespec *ts)
{
	long left;

	if (l->forever)
		return 1;
	if (!(left = left_ns(l)))
		return 0;
	if (timespec) {
		*ts = (struct timespec){left / 1000000000, left % 1000000000};
		*timeout = (long)ts;
	} else {
		*timeout = (left + 999999) / 1000000;
	}
	return 1;
}

/* An answered pending socket, as the kernel reports a finished connect. */
static unsigned finished(long state)
{
	return POLLOUT | (state && state != -ESTALE ? POLLERR | POLLHUP : 0);
}

static int waiting(long fd)
{
	return fd >= 0 && tether_pending_state(fd) == -EINPROGRESS;
}

long tether_pollers_epoll_ctl(long nr, long epfd, long op, long fd, long event, long a5, long a6)
{
	struct epoll_event ev, mine;
	long r;

	if (!tether_pending_any())
		return raw(nr, epfd, op, fd, event, a5, a6);
	tether_pending_unwatch(fd, (int)epfd);
	if ((op != EPOLL_CTL_ADD && op != EPOLL_CTL_MOD) || tether_peek(&ev, event, sizeof ev) != sizeof ev ||
	    !(ev.events & EPOLLOUT) || !waiting(fd) || !tether_pending_watch(fd, (int)epfd, ev.events, ev.data))
		return raw(nr, epfd, op, fd, event, a5, a6);
	mine.events = (ev.events & ~EPOLLOUT) | EPOLLIN;
	mine.data = ev.data;
	if ((r = raw(nr, epfd, op, fd, (long)&mine, a5, a6)) < 0)
		tether_pending_unwatch(fd, (int)epfd);
	return r;
}

/* The n events at events, less those of pending sockets not answered yet;
 * an answered one has its registration put back as the program made it.
 * How many are left. */
static long pass_ready(long epfd, long events, long n)
{
	long kept = 0;

	for (long i = 0; i < n; i++) {
		struct epoll_event ev;
		unsigned asked;
		long fd, state;

		if (tether_peek(&ev, events + i * (long)sizeof ev, sizeof ev) != sizeof ev)
			return n;
		if ((fd = tether_pending_watched((int)epfd, ev.data, &asked)) >= 0) {
			if ((state = tether_pending_state(fd)) == -EINPROGRESS)
				continue;
			ev.events = finished(state);
			tether_pending_unwatch(fd, (int)epfd);
			struct epoll_event program = {asked, ev.data};
			raw(SYS_epoll_ctl, epfd, EPOLL_CTL_MOD, fd, (long)&program, 0, 0);
		}
		tether_poke(events + kept++ * (long)sizeof ev, &ev, sizeof ev);
	}
	return kept;
}

/* epoll_wait, epoll_pwait (a timeout in ms) and epoll_pwait2 (a timespec). */
static long pollers_epoll_wait(long nr, long epfd, long events, long max, long timeout, long a5, long a6)
{
	struct limit l;
	struct timespec ts;
	int timed = tether_pending_any(); /* else no clock read: most waits have nothing pending */
	long n;

	if (timed)
		l = nr == SYS_epoll_pwait2 ? limit_ts(timeout) : limit_ms(timeout);
	for (;;) {
		n = raw(nr, epfd, events, max, timeout, a5, a6);
		if (n <= 0 || !tether_pending_any() || (n = pass_ready(epfd, events, n)))
			return n;
		if (!timed) { /* a connect made pending during the wait: its limit from now */
			l = nr == SYS_epoll_pwait2 ? limit_ts(timeout) : limit_ms(timeout);
			timed = 1;
		}
		if (!time_left(&l, nr == SYS_epoll_pwait2, &timeout, &ts))
			return 0;
	}
}

/* poll and ppoll: each pending socket waited for as writable is waited for
 * as readable; at most WAITING_MAX of them. */
static long pollers_poll(long nr, long fds, long nfds, long timeout, long a4, long a5, long a6)
{
	struct waiting_fd {
		long at; /* the pollfd's address */
		short events;
	} mine[WAITING_MAX];
	unsigned m = 0;
	struct limit l;
	struct timespec ts;
	long n;

	if (!tether_pending_any() || nfds <= 0)
		return raw(nr, fds, nfds, timeout, a4, a5, a6);
	for (long i = 0; i < nfds && m < WAITING_MAX; i++) {
		struct pollfd p;

		if (tether_peek(&p, fds + i * (long)sizeof p, sizeof p) != sizeof p)
			return raw(nr, fds, nfds, timeout, a4, a5, a6); /* the kernel's EFAULT */
		if (p.events & POLLOUT && waiting(p.fd))
			mine[m++] = (struct waiting_fd){fds + i * (long)sizeof p, p.events};
	}
	if (!m)
		return raw(nr, fds, nfds, timeout, a4, a5, a6);
	l = nr == SYS_ppoll ? limit_ts(timeout) : limit_ms(timeout);
	for (;;) {
		for (unsigned j = 0; j < m; j++) {
			short instead = (short)((mine[j].events & ~POLLOUT) | POLLIN);

			tether_poke(mine[j].at + 4, &instead, sizeof instead);
		}
		long got = n = raw(nr, fds, nfds, timeout, a4, a5, a6);
		for (unsigned j = 0; j < m; j++) {
			struct pollfd p;
			long state;

			tether_peek(&p, mine[j].at, sizeof p);
			p.events = mine[j].events;
			if (got > 0 && p.revents) {
				if ((state = tether_pending_state(p.fd)) == -EINPROGRESS) {
					p.revents = 0;
					n--;
				} else {
					p.revents = (short)finished(state);
				}
			}
			tether_poke(mine[j].at, &p, sizeof p);
		}
		if (n || got <= 0)
			return n;
		if (!time_left(&l, nr == SYS_ppoll, &timeout, &ts))
			return 0;
	}
}

/* select and pselect6: the pending sockets in the write set are waited for
 * first (their answers, within the call's time limit), then the call is
 * made; so a program sees them writable only once answered.  Timed out
 * first: nothing ready, as the kernel says it. */
static long pollers_select(long nr, long nfds, long rd, long wr, long ex, long t, long a6)
{
	struct pollfd mine[WAITING_MAX];
	unsigned m = 0;
	struct limit l;
	long left;

	if (!tether_pending_any() || !wr || nfds <= 0)
		return raw(nr, nfds, rd, wr, ex, t, a6);
	for (long word = 0; word * 64 < nfds && m < WAITING_MAX; word++) {
		unsigned long bits;

		if (tether_peek(&bits, wr + word * 8, sizeof bits) != sizeof bits)
			return raw(nr, nfds, rd, wr, ex, t, a6);
		for (long b = 0; b < 64 && word * 64 + b < nfds && m < WAITING_MAX; b++)
			if (bits >> b & 1 && waiting(word * 64 + b))
				mine[m++] = (struct pollfd){(int)(word * 64 + b), POLLIN, 0};
	}
	if (!m)
		return raw(nr, nfds, rd, wr, ex, t, a6);
	if (nr == SYS_select) {
		struct { long sec, usec; } tv;

		l = t && tether_peek(&tv, t, sizeof tv) == sizeof tv
		        ? (struct limit){0, now_ns() + tv.sec * 1000000000 + tv.usec * 1000}
		        : (struct limit){1, 0};
	} else {
		l = limit_ts(t);
	}
	for (unsigned j = 0; j < m;) {
		if (!waiting(mine[j].fd)) {
			j++;
			continue;
		}
		left = l.forever ? -1 : (left_ns(&l) + 999999) / 1000000;
		if (!left || raw(SYS_poll, (long)&mine[j], 1, left, 0, 0, 0) == 0) {
			unsigned long none = 0;

			for (long word = 0; word * 64 < nfds; word++)
				for (long set = 0; set < 3; set++)
					if ((set == 0 ? rd : set == 1 ? wr : ex))
						tether_poke((set == 0 ? rd : set == 1 ? wr : ex) + word * 8, &none, sizeof none);
			return 0;
		}
	}
	if (!l.forever && t) {
		left = left_ns(&l);
		if (nr == SYS_select) {
			struct { long sec, usec; } tv = {left / 1000000000, left % 1000000000 / 1000};

			tether_poke(t, &tv, sizeof tv);
		} else {
			struct timespec ts = {left / 1000000000, left % 1000000000};

			tether_poke(t, &ts, sizeof ts);
		}
	}
	return raw(nr, nfds, rd, wr, ex, t, a6);
}

void tether_pollers_install(void)
{
	tether_set_handler(SYS_epoll_wait, pollers_epoll_wait, TETHER_MAY_BLOCK);
	tether_set_handler(SYS_epoll_pwait, pollers_epoll_wait, TETHER_MAY_BLOCK);
	tether_set_handler(SYS_epoll_pwait2, pollers_epoll_wait, TETHER_MAY_BLOCK);
	tether_set_handler(SYS_poll, pollers_poll, TETHER_MAY_BLOCK);
	tether_set_handler(SYS_ppoll, pollers_poll, TETHER_MAY_BLOCK);
	tether_set_handler(SYS_select, pollers_select, TETHER_MAY_BLOCK);
	tether_set_handler(SYS_pselect6, pollers_select, TETHER_MAY_BLOCK);
}
