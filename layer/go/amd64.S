/* amd64.S - trampolines patched over Go's syscall entry functions.
 *
 * tether_go_funnel replaces the funnel every Go syscall reaches (Go 1.19-1.22
 * runtime/internal/syscall.Syscall6, 1.23-1.25 internal/runtime/syscall.
 * Syscall6, 1.26-1.27 internal/runtime/syscall/linux.Syscall6).  Its Go
 * declaration on all these versions:
 *
 *   func Syscall6(num, a1, a2, a3, a4, a5, a6 uintptr) (r1, r2, errno uintptr)
 *
 * ABIInternal (asm_linux_amd64.s): num AX, a1 BX, a2 CX, a3 DI, a4 SI, a5 R8,
 * a6 R9; results r1 AX, r2 BX, errno CX; R14 holds g and X15 is zero on entry
 * and must be again on return.  tether inspect checks the funnel starts with
 * exactly the register moves this file assumes before a plan is made.
 *
 * An empty dispatcher slot is passed to the kernel right here, on the
 * caller's stack, as the funnel itself would: a few instructions.  A hooked
 * number goes to C through the binary's own runtime.asmcgocall (ABI0), which
 * switches to the thread's system stack (g0) exactly as cgo does and needs no
 * g or m offsets: C never runs on a goroutine stack.
 *
 * Each hooked runtime (runtime.h) has its own stubs, at the end of this
 * file: the patched function jumps to its runtime's stub, which points R11
 * at the runtime's record and jumps here.  R11 is free on entry to these
 * functions (a scratch register in both of Go's ABIs). */
#include "go/runtime.h"

#define NR_MAX 512		/* TETHER_NR_MAX in core/core.h */
#define CLONE_VM 0x100
#define SYS_clone3 435

/* The call record (struct tether_go_call: nr in / result out, a1..a6) lives
 * in the funnel's argument spill slots: ABIInternal has every caller reserve
 * spill space for the callee's register arguments just above the return
 * address (cmd/compile/abi-internal.md, Go 1.17+), 7 words for Syscall6's
 * num and a1..a6.  Nothing is added between the funnel's frame and its
 * caller, so Go's unwinder and GC always see the frames they expect. */
#define SPILL	8		/* 0(SP) on entry is the return address */
#define S_A3	(SPILL + 24)
/* asmcgocall(fn, arg) int32, ABI0: fn+0(FP), arg+8(FP), ret+16(FP); and
 * one word of ours above them: the runtime's record, kept across the call. */
#define CGO_ARGS 32
#define CGO_RUNTIME 24

	.text
	.globl	tether_go_funnel
	.hidden	tether_go_funnel
	.type	tether_go_funnel, @function
tether_go_funnel:			/* R11 = the runtime's record */
	cmpq	$NR_MAX, %rax
	jae	.Lpass			/* unknown numbers: the kernel says ENOSYS */
	leaq	tether_handlers(%rip), %r10
	cmpq	$0, (%r10,%rax,8)
	jne	.Lhooked
.Lpass:
	/* The funnel's own first instructions: Go registers to the kernel's. */
	movq	%rsi, %r10		/* a4 */
	movq	%rdi, %rdx		/* a3 */
	movq	%rcx, %rsi		/* a2 */
	movq	%rbx, %rdi		/* a1 */
	syscall				/* num already in AX */
	.globl	tether_go_result
	.hidden	tether_go_result
tether_go_result:
	/* As the funnel: CMPQ AX, $0xfffffffffffff001; JLS ok.  So only
	 * results above -4095 unsigned are errors. */
	cmpq	$-4095, %rax
	ja	.Lerror
	movq	%rdx, %rbx		/* r2 = DX as the kernel left it */
	xorl	%ecx, %ecx		/* errno = 0 */
	ret
.Lerror:
	negq	%rax
	movq	%rax, %rcx		/* errno */
	movq	$-1, %rax		/* r1 */
	xorl	%ebx, %ebx		/* r2 */
	ret

.Lhooked:
	movq	%rax, SPILL+0(%rsp)	/* nr */
	movq	%rbx, SPILL+8(%rsp)	/* a1 */
	movq	%rcx, SPILL+16(%rsp)	/* a2 */
	movq	%rdi, SPILL+24(%rsp)	/* a3 */
	movq	%rsi, SPILL+32(%rsp)	/* a4 */
	movq	%r8, SPILL+40(%rsp)	/* a5 */
	movq	%r9, SPILL+48(%rsp)	/* a6 */
	leaq	tether_may_block(%rip), %r10
	cmpb	$0, (%r10,%rax)
	je	.Lcall
	/* A detour that may block, on a user goroutine not yet in a syscall
	 * (a RawSyscall: socket, getsockname, ...; syscall.Syscall has already
	 * called entersyscall): enter Go's syscall state around it as cgo does,
	 * or with one P every other goroutine would stop.  R14 = g (ABIInternal);
	 * field offsets per Go version come with the plan (G_OFFSETS in
	 * tether/analysis/plan.py): g.m 0x30; m.curg 0xc0 (1.19-1.24) or 0xb8
	 * (1.25+); g.syscallsp 0x70 (1.19-1.24) or 0x68 (1.25+).  On g0 or
	 * gsignal (netpoll, signal handlers) m.curg != g and entersyscall would
	 * throw: those stay on the plain path. */
	testq	%r14, %r14
	jz	.Lcall
	movq	RT_G_M(%r11), %r10
	movq	(%r14,%r10), %r10	/* g.m */
	testq	%r10, %r10
	jz	.Lcall
	movq	RT_M_CURG(%r11), %r12	/* R12: scratch in ABIInternal */
	cmpq	%r14, (%r10,%r12)	/* m.curg == g: a user goroutine */
	jne	.Lcall
	movq	RT_G_SYSCALLSP(%r11), %r10
	cmpq	$0, (%r14,%r10)		/* g.syscallsp != 0: already in a syscall */
	jne	.Lcall
	/* entersyscall records its caller's pc and sp for Go's unwinder: make
	 * the caller the funnel itself, at funnel+14, where its frame is empty
	 * and the return address above is the funnel's real one.  It returns
	 * there, and the jump patched at funnel+14 leads to tether_go_entered. */
	pushq	RT_ENTERED_PC(%r11)
	jmp	*RT_ENTERSYSCALL(%r11)

.Lcall:
	subq	$CGO_ARGS, %rsp
	leaq	tether_go_call(%rip), %r10
	movq	%r10, 0(%rsp)		/* fn */
	leaq	CGO_ARGS+SPILL(%rsp), %r10
	movq	%r10, 8(%rsp)		/* arg: the call record */
	/* asmcgocall switches to g0 unless already on g0 or gsignal, reading g
	 * from TLS and, in 1.19's gosave_systemstack_switch, from R14: both
	 * hold g here.  R14 survives: C keeps it (callee-saved) and asmcgocall
	 * does not write it.  Its 32-bit result is not used. */
	call	*RT_ASMCGOCALL(%r11)
	addq	$CGO_ARGS, %rsp
	xorps	%xmm15, %xmm15		/* X15 = 0, ABIInternal's zero register */
	movq	SPILL+0(%rsp), %rax	/* result */
	movq	S_A3(%rsp), %rdx	/* the kernel leaves DX (a3) as it was */
	jmp	tether_go_result
	.size	tether_go_funnel, . - tether_go_funnel

/* tether trace -p: a thread that was blocked in the funnel's own SYSCALL
 * (funnel+14: Go 1.21+'s netpoller waits in EpollWait through the funnel)
 * when the layer patched it resumes here instead of at funnel+14, now a
 * jump: the injector sets RIP to tether_go_result when the call is done,
 * or here with RAX = the call's number when the kernel would restart it. */
	.globl	tether_go_restart
	.hidden	tether_go_restart
	.type	tether_go_restart, @function
tether_go_restart:
	syscall
	jmp	tether_go_result
	.size	tether_go_restart, . - tether_go_restart

/* Reached from funnel+14 (through the runtime's stub: R11 = its record)
 * when entersyscall returns: the goroutine is in _Gsyscall, its P may be
 * handed to another thread while the detour runs on g0.  Then exitsyscall,
 * called as if from funnel+28 for the same reason as above; it may resume
 * the goroutine on another thread, so nothing is kept in registers or
 * thread-local storage across it: only on the goroutine's stack, which Go
 * neither scans below syscallsp nor moves while the goroutine is in a
 * syscall.  Both are ABIInternal: they return with R14 = g and X15 = 0. */
	.globl	tether_go_entered
	.hidden	tether_go_entered
	.type	tether_go_entered, @function
tether_go_entered:
	subq	$CGO_ARGS, %rsp
	leaq	tether_go_call(%rip), %r10
	movq	%r10, 0(%rsp)
	leaq	CGO_ARGS+SPILL(%rsp), %r10
	movq	%r10, 8(%rsp)
	movq	%r11, CGO_RUNTIME(%rsp)
	call	*RT_ASMCGOCALL(%r11)
	movq	CGO_RUNTIME(%rsp), %r11
	addq	$CGO_ARGS, %rsp
	pushq	RT_EXITED_PC(%r11)
	jmp	*RT_EXITSYSCALL(%r11)
	.size	tether_go_entered, . - tether_go_entered

	.globl	tether_go_exited
	.hidden	tether_go_exited
	.type	tether_go_exited, @function
tether_go_exited:
	movq	SPILL+0(%rsp), %rax	/* result */
	movq	S_A3(%rsp), %rdx
	jmp	tether_go_result
	.size	tether_go_exited, . - tether_go_exited

/* tether_go_vfork replaces syscall.rawVforkSyscall (ABI0, NOSPLIT|NOFRAME):
 *
 *   1.19:   func rawVforkSyscall(trap, a1 uintptr) (r1, err uintptr)
 *   1.21:   func rawVforkSyscall(trap, a1, a2 uintptr) (r1, err uintptr)
 *   1.22+:  func rawVforkSyscall(trap, a1, a2, a3 uintptr) (r1, err uintptr)
 *
 * trap at 8(SP), a1 (the clone flags) at 16(SP), then a2, a3; r1 and err
 * follow the last argument.  The runtime's record (R11, from its stub)
 * holds the count (1-3), read by tether inspect from the function's own
 * first instructions.
 *
 * It is clone with CLONE_VM removed: the child still runs before the parent
 * resumes (CLONE_VFORK) but in its own copy of memory, so when the layer
 * runs C in the child (a hooked dup3, execve, ...) nothing it writes (TLS g,
 * g.sched, g0's stack) can reach the waiting parent. */
	.globl	tether_go_vfork
	.hidden	tether_go_vfork
	.type	tether_go_vfork, @function
tether_go_vfork:
	/* The count stays in R12 (free in ABI0): syscall clobbers R11. */
	movl	RT_VFORK_ARGS(%r11), %r12d
	movq	16(%rsp), %rdi		/* a1: clone flags, or clone3's args */
	cmpq	$SYS_clone3, 8(%rsp)
	je	3f
	andq	$~CLONE_VM, %rdi
0:	xorl	%esi, %esi
	xorl	%edx, %edx
	cmpl	$2, %r12d
	jb	1f
	movq	24(%rsp), %rsi		/* a2 (1.21+) */
	cmpl	$3, %r12d
	jb	1f
	movq	32(%rsp), %rdx		/* a3 (1.22+) */
1:	xorl	%r10d, %r10d
	xorl	%r8d, %r8d
	xorl	%r9d, %r9d
	movq	8(%rsp), %rax		/* trap */
	syscall
	testq	%rax, %rax
	jnz	4f
	/* The child, in its own memory: the thread ids cached there are the
	 * parent's (core/self.c). */
	incl	tether_self_gen(%rip)
4:	leaq	16(%rsp,%r12,8), %rcx	/* &r1, just after the last argument */
	cmpq	$-4095, %rax
	ja	2f
	movq	%rax, 0(%rcx)		/* r1 */
	movq	$0, 8(%rcx)		/* err */
	ret
2:	negq	%rax
	movq	$-1, 0(%rcx)
	movq	%rax, 8(%rcx)
	ret
	/* clone3 (1.21+, for cgroup or time-namespace requests): the flags are
	 * the first field of struct clone_args, in the caller's memory. */
3:	andq	$~CLONE_VM, 0(%rdi)
	jmp	0b
	.size	tether_go_vfork, . - tether_go_vfork

/* The stubs: for runtime k, one per patched entry (runtime.h's order),
 * listed in tether_go_stubs for hook.c. */
.macro STUB k, target
	.text
tether_go_stub_\k\()_\target:
	leaq	tether_go_runtimes+\k*RT_SIZE(%rip), %r11
	jmp	\target
	.section .data.rel.ro, "aw"
	.quad	tether_go_stub_\k\()_\target
.endm

.macro RUNTIME_STUBS k
	STUB	\k, tether_go_funnel
	STUB	\k, tether_go_entered
	STUB	\k, tether_go_vfork
.endm

	.section .data.rel.ro, "aw"
	.balign	8
	.globl	tether_go_stubs
	.hidden	tether_go_stubs
	.type	tether_go_stubs, @object
tether_go_stubs:
	RUNTIME_STUBS 0
	RUNTIME_STUBS 1
	RUNTIME_STUBS 2
	RUNTIME_STUBS 3
	.section .data.rel.ro, "aw"
	.if	. - tether_go_stubs != TETHER_GO_RUNTIMES * STUBS_PER_RUNTIME * 8
	.error	"one RUNTIME_STUBS line per runtime of TETHER_GO_RUNTIMES"
	.endif
	.size	tether_go_stubs, . - tether_go_stubs

	.section .note.GNU-stack, "", @progbits
