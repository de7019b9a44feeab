/* ring.c - the producer side of the trace ring (link/protocol.h has the layout
 * and the protocol both sides keep; src/tether/session/ring.py is the
 * session's side).
 *
 * A traced syscall must not wait for the session: an event costs one
 * fetch-add, a copy of about a hundred bytes, one store and one
 * compare-and-swap, no syscall.  Only when the session is a whole ring
 * behind does a producer wait (on a futex the session wakes as it frees
 * space), so nothing is lost.  Producers keep published up to date so that
 * the session, in Python, never walks the records one by one: that costs
 * it more per record than the program spends making the call. */
#include "trace/internal.h"

#define SYS_close 3
#define SYS_poll 7
#define SYS_lseek 8
#define SYS_mmap 9
#define SYS_munmap 11
#define SYS_futex 202
#define SEEK_END 2
#define PROT_READ 1
#define PROT_WRITE 2
#define MAP_SHARED 1
#define FUTEX_WAIT 0		/* not _PRIVATE: the word is shared with the session */
#define POLLERR 0x8
#define POLLHUP 0x10
#define POLLNVAL 0x20
#define WAIT_NS 10000000	/* between looks at whether the session is still there */
#define EINVAL 22
#define EPIPE 32
#define EPROTO 71
#define ENOBUFS 105

/* A ring as its producers see it.  Our own copies of its geometry: the
 * program could scribble on the shared header, and a record must never
 * land outside the mapping. */
struct producer {
	struct tether_ring *r;
	unsigned char *records;
	unsigned long size, mask;
	/* Only the process the ring was given to writes it: one killed in the
	 * middle of a record would hold up the trace of every other. */
	int pid;
};
/* Two: a forked child sets up its own ring (own_ring) in the slot its
 * parent's is not in, and none of its threads ever writes that one. */
static struct producer slots[2];
static struct producer *current; /* 0: none, or given up on */
#ifndef TETHER_NO_TLS
/* 1 while this thread is in tether_ring_put: a signal handler's put nests */
static __thread int writing __attribute__((tls_model("initial-exec")));
#define WRITING writing
#define SET_WRITING(v) (writing = (v))
#else
/* The injected build has no TLS, nor needs it here: only Go's calls reach
 * it, and Go's signal handlers make none through the funnel. */
#define WRITING 0
#define SET_WRITING(v) ((void)0)
#endif

static long raw(long nr, long a1, long a2, long a3, long a4, long a5, long a6)
{
	return tether_raw_syscall6(nr, a1, a2, a3, a4, a5, a6);
}

int tether_ring_attach(int fd)
{
	struct producer *in = __atomic_load_n(&current, __ATOMIC_ACQUIRE);
	struct producer *slot = in == &slots[0] ? &slots[1] : &slots[0];
	long length = raw(SYS_lseek, fd, 0, SEEK_END, 0, 0, 0);
	long p = -EINVAL;
	struct tether_ring *r;

	if (length > (long)(sizeof *r + TETHER_FRAME_MAX))
		p = raw(SYS_mmap, 0, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	raw(SYS_close, fd, 0, 0, 0, 0, 0); /* the mapping stays */
	if (p < 0)
		return (int)p;
	r = (struct tether_ring *)p;
	if (r->magic != TETHER_RING_MAGIC || r->version != TETHER_RING_VERSION || r->size & (r->size - 1) ||
	    r->size != (unsigned long)length - sizeof *r) {
		raw(SYS_munmap, p, length, 0, 0, 0, 0);
		return -EPROTO;
	}
	slot->r = r;
	slot->records = (unsigned char *)(r + 1);
	slot->pid = tether_current_pid();
	slot->size = r->size;
	slot->mask = (r->size - 1) & ~7UL;
	__atomic_store_n(&current, slot, __ATOMIC_RELEASE);
	return 0;
}

/* A child forked without exec has its parent's ring mapped: its first event
 * asks the session for a ring of its own.  Its events go to the socket
 * while it asks, if it cannot have one, and in a child sharing its
 * parent's memory (vfork, clone with CLONE_VM), which must not touch any of
 * this: it would change its parent's state. */
static struct producer *own_ring(const struct producer *inherited, int pid)
{
	static int asked; /* the last process that asked */
	int last = __atomic_load_n(&asked, __ATOMIC_RELAXED);
	int fd;

	if (pid != tether_self_pid() || last == pid ||
	    !__atomic_compare_exchange_n(&asked, &last, pid, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
		return 0;
	if (tether_session_fork(pid, &fd) < 0 || tether_ring_attach(fd) < 0)
		return 0;
	raw(SYS_munmap, (long)inherited->r, (long)(sizeof *inherited->r + inherited->size), 0, 0, 0, 0);
	return __atomic_load_n(&current, __ATOMIC_ACQUIRE);
}

static int session_gone(void)
{
	struct {
		int fd;
		short events, revents;
	} p = {__atomic_load_n(&tether_session_fd, __ATOMIC_ACQUIRE), 0, 0};

	return p.fd < 0 || (raw(SYS_poll, (long)&p, 1, 0, 0, 0, 0) == 1 && p.revents & (POLLHUP | POLLERR | POLLNVAL));
}

/* Called when a load saw sleeping set; of the producers that see it, one
 * sends the wake-up. */
static void wake_session(struct tether_ring *r)
{
	if (__atomic_exchange_n(&r->sleeping, 0, __ATOMIC_ACQ_REL))
		tether_session_wake();
}

/* Wait until the record ending at end fits: the session is a whole ring
 * behind.  0, or -EPIPE when the session reads no more or is gone.  The
 * futex wait times out now and then: the session's wake can be missed (it
 * stores tail, then reads waiters, with no fence between: Python has
 * none), and a session that was killed wakes no one. */
static int wait_for_room(const struct producer *p, unsigned long end)
{
	struct { long sec, nsec; } wait = {0, WAIT_NS};
	struct tether_ring *r = p->r;
	int err = 0;

	__atomic_add_fetch(&r->waiters, 1, __ATOMIC_SEQ_CST);
	for (;;) {
		unsigned seq = __atomic_load_n(&r->space, __ATOMIC_SEQ_CST);

		if (end - __atomic_load_n(&r->tail, __ATOMIC_SEQ_CST) <= p->size)
			break;
		if (__atomic_load_n(&r->closed, __ATOMIC_ACQUIRE) || session_gone()) {
			err = -EPIPE;
			break;
		}
		if (__atomic_load_n(&r->sleeping, __ATOMIC_RELAXED))
			wake_session(r);
		raw(SYS_futex, (long)&r->space, FUTEX_WAIT, seq, (long)&wait, 0, 0);
	}
	__atomic_sub_fetch(&r->waiters, 1, __ATOMIC_SEQ_CST);
	return err;
}

/* Move published from `from` (where the caller's record starts; it has
 * just written it) to `to`, and on over every record written since, until
 * one is not: a producer whose record was not next when it finished leaves
 * that to the one before it.  Each compare-and-swap comes after its
 * producer's header store and before its header loads, and x86 lets
 * neither pass a locked instruction, so of two producers finishing side by
 * side one always sees the other's record.  A header is trusted only where
 * the session has zeroed the previous lap. */
static void publish(const struct producer *p, unsigned long from, unsigned long to)
{
	struct tether_ring *r = p->r;

	while (__atomic_compare_exchange_n(&r->published, &from, to, 0, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED)) {
		unsigned long header;
		unsigned length;

		from = to;
		if (from >= __atomic_load_n(&r->head, __ATOMIC_SEQ_CST) ||
		    from + 8 - __atomic_load_n(&r->tail, __ATOMIC_SEQ_CST) > p->size)
			return;
		header = __atomic_load_n((unsigned long *)(p->records + (from & p->mask)), __ATOMIC_SEQ_CST);
		length = (unsigned)header;
		if (length <= 8 || length > TETHER_FRAME_MAX || length & 7)
			return; /* not written yet (0), or no record the layer writes */
		to = from + length;
	}
}

int tether_ring_put(unsigned short type, unsigned short flags, const unsigned long *payload, unsigned long n,
                    int pid)
{
	const struct producer *p = __atomic_load_n(&current, __ATOMIC_ACQUIRE);
	unsigned long length = sizeof(struct tether_record) + n;
	/* struct tether_record as one word, built in a register */
	unsigned long header = length | (unsigned long)type << 32 | (unsigned long)flags << 48;
	int nested = WRITING;
	unsigned long start, size, mask;
	unsigned char *records;
	struct tether_ring *r;

	if (p && p->pid != pid)
		p = own_ring(p, pid);
	if (!p)
		return -ENOBUFS;
	r = p->r;
	records = p->records;
	size = p->size;
	mask = p->mask;
	if (nested) {
		/* A signal handler interrupted a put on this thread: that record
		 * cannot commit before this one does, so this one must not wait
		 * for room; it takes only what is free now. */
		start = __atomic_load_n(&r->head, __ATOMIC_RELAXED);
		do
			if (start + length - __atomic_load_n(&r->tail, __ATOMIC_ACQUIRE) > size)
				return -ENOBUFS;
		while (!__atomic_compare_exchange_n(&r->head, &start, start + length, 1, __ATOMIC_RELAXED,
		                                    __ATOMIC_RELAXED));
	} else {
		SET_WRITING(1);
		__atomic_signal_fence(__ATOMIC_SEQ_CST);
		start = __atomic_fetch_add(&r->head, length, __ATOMIC_RELAXED);
		if (start + length - __atomic_load_n(&r->tail, __ATOMIC_ACQUIRE) > size &&
		    wait_for_room(p, start + length) < 0) {
			/* Never to be committed: the session is gone and the rest
			 * of the trace with it, not the program. */
			__atomic_store_n(&current, 0, __ATOMIC_RELEASE);
			SET_WRITING(0);
			return 0;
		}
	}
	for (unsigned long i = 0; i < n; i += 8)
		*(unsigned long *)(records + ((start + 8 + i) & mask)) = payload[i / 8];
	/* The header last, in one store: nothing reads the record before it. */
	__atomic_store_n((unsigned long *)(records + (start & mask)), header, __ATOMIC_RELEASE);
	publish(p, start, start + length);
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	SET_WRITING(nested);
	if (__atomic_load_n(&r->sleeping, __ATOMIC_RELAXED))
		wake_session(r);
	return 0;
}
