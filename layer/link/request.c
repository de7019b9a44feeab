/* request.c - requests to the agent that may bring a descriptor back.
 *
 * A request takes a connection to the agent's socket for itself, sends
 * one frame and reads one reply, so a slow connect in one thread never
 * holds up a file open in another.  Idle connections wait in a small pool
 * (taken and returned with atomic exchanges, no lock) because making one
 * costs more than the request.  The pool belongs to the process that
 * filled it: a forked child finds another pid and starts its own, so two
 * processes never read each other's replies. */
#include "link/link.h"

#define SYS_close 3
#define SYS_poll 7
#define SYS_getpid 39
#define SYS_socket 41
#define SYS_connect 42
#define SYS_sendto 44
#define SYS_setsockopt 54
#define AF_UNIX 1
#define SOCK_SEQPACKET 5
#define SOCK_CLOEXEC 02000000
#define SOL_SOCKET 1
#define SO_RCVTIMEO 20
#define MSG_NOSIGNAL 0x4000
#define POLLIN 1
#define POLLERR 8
#define POLLHUP 16
#define POLLRDHUP 0x2000
#define EAGAIN 11
#define EPIPE 32
#define ECONNRESET 104
#define ECONNREFUSED 111
#define REPLY_TIMEOUT_S 30	/* the agent answers at once; this only bounds a wedged one */

static struct {
	unsigned short family;
	char path[108];
} agent_addr = {AF_UNIX, {0}};
static unsigned agent_addr_len;

static tether_evict_fn forget;

int tether_request_init(const char *agent_path)
{
	unsigned long n = tether_strlen(agent_path);

	if (n == 0 || n >= sizeof agent_addr.path)
		return -22; /* EINVAL */
	for (unsigned long i = 0; i < n; i++)
		agent_addr.path[i] = agent_path[i];
	agent_addr_len = (unsigned)(2 + n + 1);
	tether_fd_on_evict(forget);
	return 0;
}

static long raw(long nr, long a1, long a2, long a3, long a4, long a5)
{
	return tether_raw_syscall6(nr, a1, a2, a3, a4, a5, 0);
}

#define POOL_SIZE 16
static int pool[POOL_SIZE] = {-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1};
static int pool_pid;

static long new_connection(void)
{
	struct { long sec, usec; } timeout = {REPLY_TIMEOUT_S, 0};
	long conn = raw(SYS_socket, AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, 0, 0);

	if (conn < 0)
		return conn;
	raw(SYS_setsockopt, conn, SOL_SOCKET, SO_RCVTIMEO, (long)&timeout, sizeof timeout);
	if (raw(SYS_connect, conn, (long)&agent_addr, agent_addr_len, 0, 0) < 0) {
		raw(SYS_close, conn, 0, 0, 0, 0);
		return -ECONNREFUSED; /* the agent is gone */
	}
	return tether_fd_park(conn);
}

/* An idle connection from the pool (*pooled = 1), else a new one. */
static long take_connection(int *pooled)
{
	int pid = (int)raw(SYS_getpid, 0, 0, 0, 0, 0);

	if (__atomic_load_n(&pool_pid, __ATOMIC_ACQUIRE) != pid) {
		/* A child: the inherited connections are its parent's. */
		for (int i = 0; i < POOL_SIZE; i++) {
			int fd = __atomic_exchange_n(&pool[i], -1, __ATOMIC_ACQ_REL);

			if (fd >= 0)
				tether_fd_close(fd);
		}
		__atomic_store_n(&pool_pid, pid, __ATOMIC_RELEASE);
	}
	*pooled = 1;
	for (int i = 0; i < POOL_SIZE; i++) {
		int fd = __atomic_exchange_n(&pool[i], -1, __ATOMIC_ACQ_REL);

		if (fd >= 0)
			return fd;
	}
	*pooled = 0;
	return new_connection();
}

/* An idle pooled connection the program wants the number of is dropped. */
static void forget(long fd)
{
	for (int i = 0; i < POOL_SIZE; i++) {
		int idle = (int)fd;

		if (__atomic_compare_exchange_n(&pool[i], &idle, -1, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) {
			tether_fd_close(fd);
			return;
		}
	}
}

static void give_back(long conn)
{
	for (int i = 0; i < POOL_SIZE; i++) {
		int idle = -1;

		if (__atomic_compare_exchange_n(&pool[i], &idle, (int)conn, 0, __ATOMIC_ACQ_REL,
		                                __ATOMIC_RELAXED))
			return;
	}
	tether_fd_close(conn);
}

/* Whether the agent has gone: an idle connection it hung up says so, as
 * does its socket refusing a new one.  One poll when it is there. */
int tether_agent_gone(void)
{
	struct { int fd; short events, revents; } p = {-1, POLLIN | POLLRDHUP, 0};
	int pooled;
	long conn;

	if (!agent_addr_len)
		return 1;
	conn = take_connection(&pooled);
	if (conn < 0)
		return 1;
	p.fd = (int)conn;
	if (raw(SYS_poll, (long)&p, 1, 0, 0, 0) == 1 && p.revents & (POLLHUP | POLLRDHUP | POLLERR)) {
		tether_fd_close(conn);
		return 1;
	}
	give_back(conn);
	return 0;
}

/* Send the request in buf on conn and receive the reply into buf: its
 * length, 0 if the agent closed the connection, or -errno; the descriptors
 * that came with it in fds (up to max: the kernel closes any more). */
static long exchange_on(long conn, void *buf, unsigned long size, int *fds, int max, int cloexec)
{
	const struct tether_frame *f = buf;
	long n = raw(SYS_sendto, conn, (long)buf, f->length, MSG_NOSIGNAL, 0);

	if (n < 0)
		return n;
	n = tether_recv_fds(conn, buf, size, fds, max, cloexec);
	return n == -EAGAIN ? -110 /* ETIMEDOUT */ : n;
}

static void close_all(int *fds, int max)
{
	for (int i = 0; i < max; i++)
		if (fds[i] >= 0) {
			raw(SYS_close, fds[i], 0, 0, 0, 0);
			fds[i] = -1;
		}
}

long tether_request(void *buf, unsigned long size, int *fds, int max, int cloexec)
{
	const struct tether_frame *f = buf;
	int pooled;
	long conn, n;

	for (int i = 0; i < max; i++)
		fds[i] = -1;
	if (max > TETHER_SOCKETS_MAX)
		return -22; /* EINVAL */
	if (!agent_addr_len)
		return -ECONNREFUSED;
	conn = take_connection(&pooled);
	if (conn < 0)
		return conn;
	n = exchange_on(conn, buf, size, fds, max, cloexec);
	if (pooled && n <= 0 && n != -110) {
		/* An idle connection the agent dropped (or the agent is gone): the
		 * request did not arrive or got no answer, and buf still holds it.
		 * One try on a fresh connection, which fails at once without agent. */
		tether_fd_close(conn);
		conn = new_connection();
		if (conn < 0)
			return conn;
		n = exchange_on(conn, buf, size, fds, max, cloexec);
	}
	/* A reply is whole, or an ERROR cut short by a small buffer (its errno came). */
	if (n > 0 && n >= (long)sizeof *f &&
	    (f->length == (unsigned long)n || (f->type == TETHER_MSG_ERROR && f->length > (unsigned long)n))) {
		give_back(conn);
		return n;
	}
	tether_fd_close(conn);
	close_all(fds, max);
	/* Hung up or reset without a reply: the agent went away mid-request
	 * (killed while our connect sat in its backlog); say so as when it
	 * is already gone. */
	if (n == 0 || n == -ECONNRESET || n == -EPIPE)
		return -ECONNREFUSED;
	return n < 0 ? n : -71; /* EPROTO: a reply that is no frame */
}

/* A reply of reply_type with payload bytes and up to max descriptors, of
 * which there are n: how many (at least min), or -errno. */
static long check_reply(const unsigned long *words, long n, unsigned short reply_type, unsigned long payload,
                        int *fds, int max, int min)
{
	const struct tether_frame *f = (const struct tether_frame *)words;
	int got = 0;

	if (n < 0)
		return n;
	while (got < max && fds[got] >= 0)
		got++;
	/* payload: the reply's fixed part; a variable part may follow it */
	if (f->type == reply_type && n >= (long)(sizeof *f + payload) && got >= min)
		return got;
	close_all(fds, max);
	if (f->type == TETHER_MSG_ERROR && n >= (long)(sizeof *f + sizeof(struct tether_error))) {
		int err = ((const struct tether_error *)(f + 1))->err;
		return err > 0 && err < 4096 ? -err : -5; /* EIO */
	}
	return -71; /* EPROTO */
}

long tether_check_reply(const unsigned long *words, long n, unsigned short reply_type, unsigned long payload)
{
	return check_reply(words, n, reply_type, payload, 0, 0, 0);
}

long tether_ask_fds(unsigned long *words, unsigned long size, unsigned short reply_type, unsigned long payload,
                    int *fds, int max, int cloexec)
{
	return check_reply(words, tether_request(words, size, fds, max, cloexec), reply_type, payload, fds, max, 1);
}

long tether_agent_connection(void)
{
	return agent_addr_len ? new_connection() : -ECONNREFUSED;
}

long tether_ask_on(long conn, unsigned long *words, unsigned long size, unsigned short reply_type,
                   unsigned long payload, int *fds, int max, int cloexec)
{
	long n;

	for (int i = 0; i < max; i++)
		fds[i] = -1;
	n = exchange_on(conn, words, size, fds, max, cloexec);
	if (n == 0 || n == -ECONNRESET || n == -EPIPE)
		return -ECONNREFUSED; /* the agent is gone */
	return check_reply(words, n, reply_type, payload, fds, max, 0);
}

long tether_ask(unsigned long *words, unsigned long size, unsigned short reply_type, unsigned long payload,
                int cloexec)
{
	int fd;
	long n = tether_ask_fds(words, size, reply_type, payload, &fd, 1, cloexec);

	return n < 0 ? n : fd;
}
