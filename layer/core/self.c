/* self.c - this process: its pid, the calling thread's ids without a
 * syscall, and reads of its own memory that survive a bad pointer from the
 * program (process_vm_readv answers EFAULT where a plain load would crash). */
#include "core/core.h"

#define SYS_getpid 39
#define SYS_gettid 186
#define SYS_process_vm_readv 310
#define SYS_process_vm_writev 311

/* This process's pid, asked of the kernel each time: a cached copy would
 * be the parent's in a child made by a vfork or clone the layer does not
 * see (glibc's vfork and posix_spawn), and a vfork child writing the cache
 * would write its parent's. */
int tether_current_pid(void)
{
	return (int)tether_raw_syscall6(SYS_getpid, 0, 0, 0, 0, 0, 0);
}

/* The ids a thread last asked the kernel for, valid while gen equals
 * tether_self_gen.  Initial-exec TLS: the layer is preloaded (or loaded
 * into the static TLS surplus), and the threads that reach it are pthreads,
 * Go's included (cgo).  tether_self_gen starts at 1, so a new thread's
 * zeroed entry is stale. */
#ifndef TETHER_NO_TLS
static __thread struct {
	int pid, tid;
	unsigned gen;
} ids __attribute__((tls_model("initial-exec")));
#endif
unsigned tether_self_gen = 1;
static int self_pid; /* the process whose memory this is */

void tether_self_init(void)
{
	__atomic_store_n(&self_pid, tether_current_pid(), __ATOMIC_RELAXED);
}

int tether_self_pid(void)
{
	return __atomic_load_n(&self_pid, __ATOMIC_RELAXED);
}

/* In a fork child, which has its own memory: the cached ids are its
 * parent's. */
void tether_self_forked(void)
{
	tether_self_init();
	__atomic_add_fetch(&tether_self_gen, 1, __ATOMIC_RELEASE);
}

/* A child sharing this memory (vfork, whose wrapper bumps the generation)
 * gets its ids from the kernel each time and never stores them: they
 * would land in the cache of the parent thread it borrowed the TLS of. */
#ifdef TETHER_NO_TLS
/* The build injected into static programs, which set up no TLS for it.
 * Their threads are all Go's, and Go points FS just past m.tls[0], where g
 * lives (-8(FS): settls adds 8 to &m.tls[0]); m.tls has 6 slots and
 * linux/amd64 uses only the first (Go 1.19-1.27, runtime2.go tlsSlots).
 * The cache takes the next two: 0(FS) pid and tid, 8(FS) the generation.
 * No call reaches the dispatcher before rt0_go's settls.  A Go program
 * with libc, attached to while it runs, has glibc's TCB at FS instead: no
 * cache there (tether_self_fs_cache 0). */
#define FS_IDS 0
#define FS_GEN 8

int tether_self_fs_cache;

static unsigned long fs_load(unsigned long offset)
{
	unsigned long v;

	__asm__ volatile("movq %%fs:(%1), %0" : "=r"(v) : "r"(offset));
	return v;
}

static void fs_store(unsigned long offset, unsigned long v)
{
	__asm__ volatile("movq %0, %%fs:(%1)" : : "r"(v), "r"(offset) : "memory");
}

void tether_self_ids(int *pid, int *tid)
{
	unsigned gen = __atomic_load_n(&tether_self_gen, __ATOMIC_ACQUIRE);
	unsigned long ids;

	if (!tether_self_fs_cache) {
		*pid = tether_current_pid();
		*tid = (int)tether_raw_syscall6(SYS_gettid, 0, 0, 0, 0, 0, 0);
		return;
	}
	if (fs_load(FS_GEN) == gen) {
		ids = fs_load(FS_IDS);
		*pid = (int)(unsigned)ids;
		*tid = (int)(ids >> 32);
		return;
	}
	*pid = tether_current_pid();
	*tid = (int)tether_raw_syscall6(SYS_gettid, 0, 0, 0, 0, 0, 0);
	if (*pid != __atomic_load_n(&self_pid, __ATOMIC_RELAXED))
		return;
	fs_store(FS_IDS, (unsigned long)(unsigned)*pid | (unsigned long)(unsigned)*tid << 32);
	/* gen last: a signal handler in between finds the entry stale */
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	fs_store(FS_GEN, gen);
}
#else
void tether_self_ids(int *pid, int *tid)
{
	unsigned gen = __atomic_load_n(&tether_self_gen, __ATOMIC_ACQUIRE);

	if (ids.gen == gen) {
		*pid = ids.pid;
		*tid = ids.tid;
		return;
	}
	*pid = tether_current_pid();
	*tid = (int)tether_raw_syscall6(SYS_gettid, 0, 0, 0, 0, 0, 0);
	if (*pid != __atomic_load_n(&self_pid, __ATOMIC_RELAXED))
		return;
	ids.pid = *pid;
	ids.tid = *tid;
	/* gen last: a signal handler in between finds the entry stale */
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	ids.gen = gen;
}
#endif

long tether_peek(void *dst, long addr, unsigned long n)
{
	struct { void *base; unsigned long len; } local = {dst, n}, remote = {(void *)addr, n};

	if (!addr)
		return -14; /* EFAULT */
	return tether_raw_syscall6(SYS_process_vm_readv, tether_current_pid(),
	                           (long)&local, 1, (long)&remote, 1, 0);
}

/* The write twin of tether_peek: EFAULT for a bad pointer, as the kernel's
 * own copy to the program would give. */
long tether_poke(long addr, const void *src, unsigned long n)
{
	struct { const void *base; unsigned long len; } local = {src, n}, remote = {(void *)addr, n};

	if (!addr)
		return -14; /* EFAULT */
	return tether_raw_syscall6(SYS_process_vm_writev, tether_current_pid(),
	                           (long)&local, 1, (long)&remote, 1, 0);
}
