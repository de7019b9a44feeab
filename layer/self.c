/* self.c - this process: its pid, and reads of its own memory that
 * survive a bad pointer from the program (process_vm_readv answers EFAULT
 * where a plain load would crash). */
#include "tether.h"

#define SYS_getpid 39
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
