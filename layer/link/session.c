/* session.c - the layer's line to the session (tether trace, tether exec).
 *
 * When TETHER_SESSION names a unix socket, the constructor connects to it,
 * says who it is (HELLO: pid, executable, Go build id) and gets back the mode
 * and this executable's own hook plan (HELLO_REPLY).  Every process connects
 * for itself, so a child started by the hooked program, whatever its binary,
 * gets the plan for that binary; when tracing, the reply brings the trace
 * ring (trace/ring.c) along.  The socket is close-on-exec and sits at a high
 * descriptor number, out of the way of the program's own. */
#include "link/link.h"

#define SYS_close 3
#define SYS_socket 41
#define SYS_connect 42
#define SYS_sendto 44
#define SYS_readlink 89
#define SYS_getpid 39
#define SYS_getppid 110
#define SYS_gettid 186
#define AF_UNIX 1
#define SOCK_SEQPACKET 5
#define SOCK_CLOEXEC 02000000
#define MSG_DONTWAIT 0x40
#define MSG_NOSIGNAL 0x4000
#define PATH_MAX_UN 108

int tether_session_fd = -1;
static char session_path[PATH_MAX_UN]; /* for a forked child's own line */

static long raw(long nr, long a1, long a2, long a3, long a4, long a5, long a6)
{
	return tether_raw_syscall6(nr, a1, a2, a3, a4, a5, a6);
}

static int connect_to(const char *path)
{
	struct {
		unsigned short family;
		char path[PATH_MAX_UN];
	} addr = {AF_UNIX, {0}};
	unsigned long n = tether_strlen(path);
	long fd;

	if (n >= sizeof addr.path)
		return -36; /* ENAMETOOLONG */
	for (unsigned long i = 0; i < n; i++)
		addr.path[i] = path[i];
	fd = raw(SYS_socket, AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, 0, 0, 0);
	if (fd < 0)
		return (int)fd;
	if (raw(SYS_connect, fd, (long)&addr, (long)(2 + n + 1), 0, 0, 0) < 0) {
		raw(SYS_close, fd, 0, 0, 0, 0, 0);
		return -111; /* ECONNREFUSED */
	}
	fd = tether_fd_park(fd);
	return (int)fd;
}

/* The program dups onto the session line's number: the line moves. */
static void evict(long fd)
{
	long moved;

	if (fd != __atomic_load_n(&tether_session_fd, __ATOMIC_ACQUIRE) || (moved = tether_fd_renumber(fd)) < 0)
		return;
	__atomic_store_n(&tether_session_fd, (int)moved, __ATOMIC_RELEASE);
	raw(SYS_close, fd, 0, 0, 0, 0, 0);
}

unsigned char *tether_put_string(unsigned char *p, const char *s, unsigned n)
{
	p[0] = (unsigned char)n;
	p[1] = (unsigned char)(n >> 8);
	for (unsigned i = 0; i < n; i++)
		p[2 + i] = (unsigned char)s[i];
	return p + 2 + n;
}

static int send_on(int fd, const void *frame, unsigned long length)
{
	if (fd < 0)
		return -9; /* EBADF */
	return (int)raw(SYS_sendto, fd, (long)frame, (long)length, MSG_NOSIGNAL, 0, 0);
}

int tether_session_send(const void *frame, unsigned long length)
{
	return send_on(__atomic_load_n(&tether_session_fd, __ATOMIC_ACQUIRE), frame, length);
}

/* RING_WAKE, never blocking: a full socket buffer already has the session
 * coming back to read. */
void tether_session_wake(void)
{
	static const struct tether_frame wake = {sizeof wake, TETHER_MSG_RING_WAKE, 0, 0};
	int fd = __atomic_load_n(&tether_session_fd, __ATOMIC_ACQUIRE);

	if (fd >= 0)
		raw(SYS_sendto, fd, (long)&wake, sizeof wake, MSG_DONTWAIT | MSG_NOSIGNAL, 0, 0);
}

/* Send the request in buf (payload up to end) on line and receive the
 * reply, which must be reply_type with the same id, into buf; a descriptor
 * that came with it goes to *fd (else -1).  Returns its length or -errno.
 * The reply is read by the thread that asked: callers hold the line for
 * the exchange (start-up, a new line, or the lock in tether_session_plan). */
static long exchange(int line, unsigned char *buf, unsigned long size, const unsigned char *end,
                     unsigned short type, unsigned long id, unsigned short reply_type, int *fd)
{
	struct tether_frame *f = (struct tether_frame *)buf;
	long n;

	f->length = (unsigned)(end - buf);
	f->type = type;
	f->flags = 0;
	f->id = id;
	*fd = -1;
	if (send_on(line, buf, f->length) < 0)
		return -32; /* EPIPE */
	n = tether_recv_fds(line, buf, size, fd, 1, 1);
	if (n < (long)sizeof *f || f->length != (unsigned)n || f->type != reply_type || f->id != id) {
		if (*fd >= 0)
			raw(SYS_close, *fd, 0, 0, 0, 0, 0);
		*fd = -1;
		return -71; /* EPROTO */
	}
	return n;
}

/* Copy the u16-prefixed string at p into out as a C string; returns where
 * the next item starts, or 0 if it does not fit in out or before end. */
static const unsigned char *take_string(const unsigned char *p, const unsigned char *end, char *out,
                                        unsigned size)
{
	unsigned len;

	if (end - p < 2)
		return 0;
	len = (unsigned)p[0] | (unsigned)p[1] << 8;
	if (len >= size || (unsigned long)(end - p - 2) < len)
		return 0;
	for (unsigned i = 0; i < len; i++)
		out[i] = (char)p[2 + i];
	out[len] = '\0';
	return p + 2 + len;
}

/* Connect and exchange HELLO / HELLO_REPLY.  On success *mode is set, the
 * strings of the reply (NUL-terminated, maybe empty) are in r: this
 * executable's hook plan, the agent's socket and the outgoing rules; and
 * *ring is the trace ring's memfd if one came along, else -1. */
int tether_session_open(const char *path, const char *go_build_id, unsigned id_len,
                        unsigned *mode, struct tether_session_reply *reply, int *ring)
{
	unsigned long words[TETHER_FRAME_MAX / 8]; /* aligned for the structs below */
	unsigned char *buf = (unsigned char *)words;
	struct tether_hello *h = (struct tether_hello *)(buf + sizeof(struct tether_frame));
	const struct tether_hello_reply *r = (const struct tether_hello_reply *)h;
	char exe[1024];
	long exe_len, n;
	unsigned char *p;

	*ring = -1;
	tether_session_fd = connect_to(path);
	if (tether_session_fd < 0)
		return tether_session_fd;
	tether_fd_on_evict(evict);
	for (unsigned long i = 0; path[i]; i++) /* it fitted: connect_to checked */
		session_path[i] = path[i];
	exe_len = raw(SYS_readlink, (long)"/proc/self/exe", (long)exe, sizeof exe, 0, 0, 0);
	if (exe_len < 0)
		exe_len = 0;
	if (id_len > 512)
		id_len = 0;
	h->version = TETHER_PROTOCOL_VERSION;
	h->reserved = 0;
	h->capabilities = TETHER_CAP_TRACE_RING;
	h->pid = (int)raw(SYS_getpid, 0, 0, 0, 0, 0, 0);
	h->ppid = (int)raw(SYS_getppid, 0, 0, 0, 0, 0, 0);
	p = tether_put_string((unsigned char *)(h + 1), exe, (unsigned)exe_len);
	p = tether_put_string(p, go_build_id, id_len);
	n = exchange(tether_session_fd, buf, sizeof words, p, TETHER_MSG_HELLO, 1, TETHER_MSG_HELLO_REPLY, ring);
	if (n < 0)
		return (int)n;
	p = (unsigned char *)(r + 1);
	if (n < (long)(sizeof(struct tether_frame) + sizeof *r) || r->version != TETHER_PROTOCOL_VERSION ||
	    !(p = (unsigned char *)take_string(p, buf + n, reply->plan, sizeof reply->plan)) ||
	    !(p = (unsigned char *)take_string(p, buf + n, reply->agent, sizeof reply->agent)) ||
	    !(p = (unsigned char *)take_string(p, buf + n, reply->rules, sizeof reply->rules)) || p != buf + n) {
		if (*ring >= 0)
			raw(SYS_close, *ring, 0, 0, 0, 0, 0);
		*ring = -1;
		return -71; /* EPROTO */
	}
	*mode = r->mode;
	return 0;
}

/* Requests on the main line after HELLO, one at a time: the reply is read
 * by the thread that asked. */
static int asking;

/* Ask for the hook plan of a module loaded later (a Go c-shared library). */
int tether_session_plan(const char *path, const char *go_build_id, unsigned id_len,
                        char *plan, unsigned plan_size)
{
	unsigned long words[TETHER_FRAME_MAX / 8];
	unsigned char *buf = (unsigned char *)words;
	unsigned long n = tether_strlen(path);
	unsigned char *p;
	long got;
	int err, fd;

	if (tether_session_fd < 0)
		return -9; /* EBADF */
	if (n > 1024 || id_len > 512)
		return -36; /* ENAMETOOLONG */
	while (__atomic_exchange_n(&asking, 1, __ATOMIC_ACQUIRE))
		;
	p = tether_put_string(buf + sizeof(struct tether_frame), path, (unsigned)n);
	p = tether_put_string(p, go_build_id, id_len);
	got = exchange(tether_session_fd, buf, sizeof words, p, TETHER_MSG_PLAN_REQUEST, 2, TETHER_MSG_PLAN_REPLY,
	               &fd);
	if (fd >= 0)
		raw(SYS_close, fd, 0, 0, 0, 0, 0); /* none is due */
	if (got < 0)
		err = (int)got;
	else
		err = take_string(buf + sizeof(struct tether_frame), buf + got, plan, plan_size) == buf + got ? 0 : -71;
	__atomic_store_n(&asking, 0, __ATOMIC_RELEASE);
	return err;
}

long tether_session_files(void *payload, unsigned long size)
{
	unsigned long words[TETHER_FRAME_MAX / 8];
	unsigned char *buf = (unsigned char *)words, *out = payload;
	const struct tether_frame *f = (const struct tether_frame *)buf;
	unsigned long have = 0;
	long got;
	int fd;

	if (tether_session_fd < 0)
		return -9; /* EBADF */
	while (__atomic_exchange_n(&asking, 1, __ATOMIC_ACQUIRE))
		;
	got = exchange(tether_session_fd, buf, sizeof words, buf + sizeof *f, TETHER_MSG_FILES_REQUEST, 3,
	               TETHER_MSG_FILES_REPLY, &fd);
	for (;;) {
		if (fd >= 0)
			raw(SYS_close, fd, 0, 0, 0, 0, 0); /* none is due */
		if (got < 0)
			break;
		got -= (long)sizeof *f;
		if ((unsigned long)got > size - have) {
			got = -90; /* EMSGSIZE */
			break;
		}
		for (long i = 0; i < got; i++)
			out[have + (unsigned long)i] = buf[sizeof *f + (unsigned long)i];
		have += (unsigned long)got;
		if (!(f->flags & TETHER_FLAG_MORE)) {
			got = (long)have;
			break;
		}
		got = tether_recv_fds(tether_session_fd, buf, sizeof words, &fd, 1, 1);
		if (got < (long)sizeof *f || f->length != (unsigned)got || f->type != TETHER_MSG_FILES_REPLY || f->id != 3)
			got = -71; /* EPROTO */
	}
	__atomic_store_n(&asking, 0, __ATOMIC_RELEASE);
	return got;
}

/* A line of its own for a child forked without exec, and a trace ring of
 * its own (RING_REQUEST): the line and ring it inherited are its parent's.
 * On success the inherited line is let go and *ring is the ring's memfd;
 * else -errno, and the child goes on with its parent's line. */
int tether_session_fork(int pid, int *ring)
{
	union {
		struct {
			struct tether_frame f;
			struct tether_ring_request q;
		} m;
		unsigned char bytes[64]; /* room for the reply; an ERROR one is cut, and refused */
	} buf = {.m = {.q = {pid, 0}}};
	int line = session_path[0] ? connect_to(session_path) : -2; /* ENOENT */
	long n;

	*ring = -1;
	if (line < 0)
		return line;
	n = exchange(line, buf.bytes, sizeof buf, (unsigned char *)(&buf.m + 1), TETHER_MSG_RING_REQUEST, 3,
	             TETHER_MSG_RING_REPLY, ring);
	if (n != sizeof(struct tether_frame) || *ring < 0) {
		if (*ring >= 0)
			raw(SYS_close, *ring, 0, 0, 0, 0, 0);
		*ring = -1;
		tether_fd_close(line);
		return n < 0 ? (int)n : -71; /* EPROTO */
	}
	line = __atomic_exchange_n(&tether_session_fd, line, __ATOMIC_ACQ_REL);
	if (line >= 0)
		tether_fd_close(line);
	return 0;
}

/* Before this thread execs a static program: EXEC_NOTICE on a line of its
 * own (the one inherited may be shared with a parent, as in Go's fork
 * child), so that the session attaches to this thread and loads the layer
 * at the exec.  0 when the session waits for the exec, else -errno (the
 * program will run unhooked; the session has said why). */
int tether_session_exec_notice(const char *path)
{
	union {
		struct {
			struct tether_frame f;
			struct tether_exec_notice n;
		} m;
		unsigned long words[TETHER_SMALL_FRAME / 8];
	} buf;
	const struct tether_exec_notice_reply *r = (const void *)(&buf.m.f + 1);
	unsigned long n = tether_strlen(path);
	int line, fd, status;
	long got;

	if (n > TETHER_SMALL_FRAME - sizeof buf.m - 2)
		return -36; /* ENAMETOOLONG */
	line = session_path[0] ? connect_to(session_path) : -2; /* ENOENT */
	if (line < 0)
		return line;
	buf.m.n.pid = (int)raw(SYS_getpid, 0, 0, 0, 0, 0, 0);
	buf.m.n.tid = (int)raw(SYS_gettid, 0, 0, 0, 0, 0, 0);
	got = exchange(line, (unsigned char *)&buf, sizeof buf,
	               tether_put_string((unsigned char *)(&buf.m + 1), path, (unsigned)n), TETHER_MSG_EXEC_NOTICE, 4,
	               TETHER_MSG_EXEC_NOTICE_REPLY, &fd);
	if (fd >= 0)
		raw(SYS_close, fd, 0, 0, 0, 0, 0); /* none is due */
	if (got == (long)(sizeof(struct tether_frame) + sizeof *r))
		status = r->status > 0 && r->status < 4096 ? -r->status : r->status ? -71 : 0;
	else
		status = got < 0 ? (int)got : -71; /* EPROTO */
	tether_fd_close(line);
	return status;
}
