/* trace.c - report each hooked syscall to the session (tether trace).
 *
 * The handler runs the call, then records one SYSCALL event: numbers, the
 * result, and the memory that makes the line readable (paths, socket
 * addresses), copied with process_vm_readv so a bad pointer from the
 * program gives a shorter line, never a crash.  The event goes into the
 * trace ring (ring.c), or as a frame on the session socket when the ring
 * cannot take it.  Calls that do not return (execve, exit) are reported
 * before they run.  It wraps whatever handler the dispatcher picked, so a
 * detour is traced like a passthrough. */
#include "trace/internal.h"

#define SYS_clone 56
#define SYS_fork 57
#define SYS_vfork 58
#define SYS_clone3 435
#define CLONE_VM 0x100
#define STRING_MAX 256
#define SOCKADDR_MAX 128

enum { NONE, PATH, SOCKADDR_LEN_ARG, SOCKADDR_LEN_PTR };

struct item {
	unsigned char arg, how, len_arg;
};

/* What to copy for a syscall: up to two items.  len_arg is the argument
 * holding the length (SOCKADDR_LEN_ARG) or pointing at it after the call
 * (SOCKADDR_LEN_PTR). */
static void items_for(long nr, struct item it[2])
{
	it[0].how = it[1].how = NONE;
	switch (nr) {
	case 2: case 4: case 6: case 21: case 59: case 76: case 80: case 83: case 84:
	case 85: case 87: case 89: case 90: case 92: case 94: case 137:
		it[0] = (struct item){0, PATH, 0};
		break;
	case 82: case 86: case 88: /* rename, link, symlink */
		it[0] = (struct item){0, PATH, 0};
		it[1] = (struct item){1, PATH, 0};
		break;
	case 257: case 258: case 260: case 262: case 263: case 267: case 268: case 269:
	case 322: case 332: case 437: case 439:
		it[0] = (struct item){1, PATH, 0};
		break;
	case 264: case 265: case 316: /* renameat, linkat, renameat2 */
		it[0] = (struct item){1, PATH, 0};
		it[1] = (struct item){3, PATH, 0};
		break;
	case 266: /* symlinkat */
		it[0] = (struct item){0, PATH, 0};
		it[1] = (struct item){2, PATH, 0};
		break;
	case 42: case 49: /* connect, bind */
		it[0] = (struct item){1, SOCKADDR_LEN_ARG, 2};
		break;
	case 44: /* sendto */
		it[0] = (struct item){4, SOCKADDR_LEN_ARG, 5};
		break;
	case 43: case 288: case 51: case 52: /* accept, accept4, getsockname, getpeername */
		it[0] = (struct item){1, SOCKADDR_LEN_PTR, 2};
		break;
	case 45: /* recvfrom */
		it[0] = (struct item){4, SOCKADDR_LEN_PTR, 5};
		break;
	}
}

static unsigned char *put_item(unsigned char *p, const struct item *it, const long *args, long ret)
{
	struct tether_data *d = (struct tether_data *)p;
	unsigned char *bytes = (unsigned char *)(d + 1);
	long n, full;
	unsigned len32 = 0;

	if (it->how == PATH) {
		n = tether_peek(bytes, args[it->arg], STRING_MAX);
		if (n <= 0)
			return p;
		full = n;
		for (long i = 0; i < n; i++)
			if (!bytes[i]) {
				n = full = i;
				break;
			}
		if (full == STRING_MAX)
			full = STRING_MAX + 1; /* no NUL seen: cut */
		d->kind = TETHER_DATA_STRING;
	} else {
		if (it->how == SOCKADDR_LEN_ARG) {
			full = args[it->len_arg];
		} else {
			if (ret < 0 || tether_peek(&len32, args[it->len_arg], sizeof len32) != sizeof len32)
				return p;
			full = len32;
		}
		if (full <= 0)
			return p;
		n = tether_peek(bytes, args[it->arg], full < SOCKADDR_MAX ? (unsigned long)full : SOCKADDR_MAX);
		if (n <= 0)
			return p;
		d->kind = TETHER_DATA_SOCKADDR;
	}
	d->arg = it->arg;
	d->length = (unsigned short)n;
	d->full_length = (unsigned)(full > 0xffffffffL ? 0xffffffffL : full);
	p = bytes + n;
	while ((unsigned long)p & 7)
		*p++ = 0;
	return p;
}

/* An event of process pid, thread tid, written by process writer. */
static void report_as(int writer, int pid, int tid, long nr, const long *args, long ret, unsigned short flags)
{
	/* The payload, after room for the frame header it needs if the ring
	 * cannot take it. */
	unsigned long buf[(sizeof(struct tether_frame) + sizeof(struct tether_syscall_event) +
	                   2 * (sizeof(struct tether_data) + STRING_MAX + 8)) / 8 + 1];
	struct tether_frame *f = (struct tether_frame *)buf;
	struct tether_syscall_event *e = (struct tether_syscall_event *)(f + 1);
	unsigned char *p = (unsigned char *)(e + 1);
	unsigned long payload;
	struct item it[2];

	e->pid = pid;
	e->tid = tid;
	e->nr = nr;
	for (int i = 0; i < 6; i++)
		e->args[i] = args[i];
	e->ret = ret;
	items_for(nr, it);
	for (int i = 0; i < 2; i++)
		if (it[i].how != NONE)
			p = put_item(p, &it[i], args, ret);
	payload = (unsigned long)(p - (unsigned char *)e);
	if (tether_ring_put(TETHER_MSG_SYSCALL, flags, (const unsigned long *)e, payload, writer) == 0)
		return;
	f->length = (unsigned)(sizeof *f + payload);
	f->type = TETHER_MSG_SYSCALL;
	f->flags = flags;
	f->id = 0;
	/* A session that went away loses the rest of the trace, not the program. */
	tether_session_send(buf, f->length);
}

static void report(long nr, const long *args, long ret, unsigned short flags)
{
	int pid, tid;

	tether_self_ids(&pid, &tid);
	report_as(pid, pid, tid, nr, args, ret, flags);
}

void tether_trace_exec_for(int pid, long nr, const long *args)
{
	int me, tid;

	tether_self_ids(&me, &tid);
	report_as(me, pid, pid, nr, args, 0, TETHER_FLAG_ENTRY);
}

/* After a call returned 0: if it made a process and this is the child, the
 * thread ids cached for the parent are not its own (core/self.c).  A child with
 * memory of its own (fork, libc's too: libc/proc.c) takes over the cache;
 * one in the parent's memory (vfork, clone with CLONE_VM) only makes it
 * stale.  Go's and glibc's vfork never come here: go/amd64.S and libc/vfork.S
 * see to it themselves. */
static void child_of(long nr, long a1)
{
	unsigned long flags = (unsigned long)a1;

	if (nr == SYS_clone3 && tether_peek(&flags, a1, sizeof flags) != sizeof flags)
		return;
	if (nr == SYS_fork || ((nr == SYS_clone || nr == SYS_clone3) && !(flags & CLONE_VM)))
		tether_self_forked();
	else if (nr == SYS_vfork || nr == SYS_clone || nr == SYS_clone3) /* in the parent's memory */
		__atomic_add_fetch(&tether_self_gen, 1, __ATOMIC_RELEASE);
}

static int never_returns(long nr)
{
	return nr == 59 || nr == 322 || nr == 60 || nr == 231; /* execve(at), exit(_group) */
}

static long trace_call(tether_syscall_fn *fn, long nr, long a1, long a2, long a3, long a4, long a5, long a6)
{
	const long args[6] = {a1, a2, a3, a4, a5, a6};
	long ret;

	if (never_returns(nr))
		report(nr, args, 0, TETHER_FLAG_ENTRY);
	ret = fn(nr, a1, a2, a3, a4, a5, a6);
	if (ret == 0)
		child_of(nr, a1);
	report(nr, args, ret, 0);
	return ret;
}

void tether_trace_install(void)
{
	tether_tap = trace_call;
}
