/* self.c - this process: its pid, and reads of its own memory that
 * survive a bad pointer from the program (process_vm_readv answers EFAULT
 * where a plain load would crash). */
#include "tether.h"

#define SYS_getpid 39
#define SYS_process_vm_readv 310

/* This process's pid, asked of the kernel once.  A child made by fork or
 * clone starts with the parent's copy, so it is reset where a child first
 * runs: in tether_trace_call for calls through the dispatcher, in
 * tether_go_vfork for Go's os/exec children. */
int tether_pid_cache;

int tether_current_pid(void)
{
	int pid = __atomic_load_n(&tether_pid_cache, __ATOMIC_RELAXED);

	if (!pid) {
		pid = (int)tether_raw_syscall6(SYS_getpid, 0, 0, 0, 0, 0, 0);
		__atomic_store_n(&tether_pid_cache, pid, __ATOMIC_RELAXED);
	}
	return pid;
}

long tether_peek(void *dst, long addr, unsigned long n)
{
	struct { void *base; unsigned long len; } local = {dst, n}, remote = {(void *)addr, n};

	if (!addr)
		return -14; /* EFAULT */
	return tether_raw_syscall6(SYS_process_vm_readv, tether_current_pid(),
	                           (long)&local, 1, (long)&remote, 1, 0);
}
