/* runtime.h - one hooked Go runtime, as amd64.S and hook.c see it (inside go/ only).
 *
 * A process may hold several Go runtimes (a Go program that loads a Go
 * c-shared library, or a C program that loads two), each of its own Go
 * version: the trampolines are shared, and each runtime's patched functions
 * jump to small stubs of its own that load its record into R11 first.
 * Included by assembly, hence the offsets as plain numbers; the C side
 * checks them against the struct. */
#ifndef TETHER_GO_RUNTIME_H
#define TETHER_GO_RUNTIME_H

#define TETHER_GO_RUNTIMES 4	/* runtimes hooked per process; stubs in amd64.S */

#define RT_ASMCGOCALL	0	/* runtime.asmcgocall (ABI0 body) */
#define RT_ENTERSYSCALL	8	/* runtime.entersyscall (ABIInternal) */
#define RT_EXITSYSCALL	16	/* runtime.exitsyscall (ABIInternal) */
#define RT_ENTERED_PC	24	/* funnel+14: where entersyscall returns */
#define RT_EXITED_PC	32	/* funnel+28: where exitsyscall returns */
#define RT_G_M		40	/* offset of g.m */
#define RT_M_CURG	48	/* offset of m.curg */
#define RT_G_SYSCALLSP	56	/* offset of g.syscallsp */
#define RT_VFORK_ARGS	64	/* rawVforkSyscall's argument count (1-3) */
#define RT_SIZE		72

/* Each runtime's stubs, in this order, in tether_go_stubs (amd64.S). */
#define STUB_FUNNEL	0
#define STUB_ENTERED	1
#define STUB_VFORK	2
#define STUBS_PER_RUNTIME 3

#ifndef __ASSEMBLER__
struct tether_go_runtime {
	unsigned long asmcgocall, entersyscall, exitsyscall;
	unsigned long entered_pc, exited_pc;
	unsigned long g_m, m_curg, g_syscallsp;
	unsigned long vfork_args;
};

#define TETHER_RT_AT(field, offset) \
	_Static_assert(__builtin_offsetof(struct tether_go_runtime, field) == offset, #offset)
TETHER_RT_AT(asmcgocall, RT_ASMCGOCALL);
TETHER_RT_AT(entersyscall, RT_ENTERSYSCALL);
TETHER_RT_AT(exitsyscall, RT_EXITSYSCALL);
TETHER_RT_AT(entered_pc, RT_ENTERED_PC);
TETHER_RT_AT(exited_pc, RT_EXITED_PC);
TETHER_RT_AT(g_m, RT_G_M);
TETHER_RT_AT(m_curg, RT_M_CURG);
TETHER_RT_AT(g_syscallsp, RT_G_SYSCALLSP);
TETHER_RT_AT(vfork_args, RT_VFORK_ARGS);
_Static_assert(sizeof(struct tether_go_runtime) == RT_SIZE, "RT_SIZE");

extern struct tether_go_runtime tether_go_runtimes[TETHER_GO_RUNTIMES];
extern const void *const tether_go_stubs[TETHER_GO_RUNTIMES * STUBS_PER_RUNTIME];

/* amd64.S: what the patched Go functions jump to (the first three
 * through their runtime's stubs). */
void tether_go_funnel(void);
void tether_go_entered(void);
void tether_go_exited(void);
void tether_go_vfork(void);

/* call.c: the call record amd64.S keeps in the funnel's argument spill
 * slots: the syscall number in, the kernel-style result out. */
struct tether_go_call {
	long nr_ret;
	long a[6];
};
void tether_go_call(struct tether_go_call *c);

/* patch.c: overwrite TETHER_PATCH_BYTES at `at` with `jmp *target`. */
#define TETHER_PATCH_BYTES 14
int tether_patch_jump(unsigned long at, const void *target);
#endif

#endif
