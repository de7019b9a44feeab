/* go_amd64.S - trampolines patched over Go's syscall entry functions.
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
 * g or m offsets: C never runs on a goroutine stack. */

#define NR_MAX 512		/* TETHER_NR_MAX in tether.h */
#define CLONE_VM 0x100
#define SYS_clone3 435

/* The slow path's frame on the caller's stack.  The first three words are
 * asmcgocall's ABI0 arguments: fn+0(FP), arg+8(FP), ret+16(FP) (int32).
 * struct tether_go_call follows (tether.h); the saved g last. */
#define F_FN	0
#define F_ARG	8
#define F_CALL	24		/* struct tether_go_call: nr, a1..a6, ret */
#define F_A3	(F_CALL + 32)
#define F_RET	(F_CALL + 56)
#define F_G	(F_CALL + 64)
#define FRAME	(F_G + 8)	/* 96: small, the funnel's callers are NOSPLIT */

	.text
	.globl	tether_go_funnel
	.hidden	tether_go_funnel
	.type	tether_go_funnel, @function
tether_go_funnel:
	cmpq	$NR_MAX, %rax
	jae	.Lpass			/* unknown numbers: the kernel says ENOSYS */
	leaq	tether_handlers(%rip), %r11
	cmpq	$0, (%r11,%rax,8)
	jne	.Lslow
.Lpass:
	/* The funnel's own first instructions: Go registers to the kernel's. */
	movq	%rsi, %r10		/* a4 */
	movq	%rdi, %rdx		/* a3 */
	movq	%rcx, %rsi		/* a2 */
	movq	%rbx, %rdi		/* a1 */
	syscall				/* num already in AX */
.Lresult:
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

.Lslow:
	subq	$FRAME, %rsp
	movq	%rax, F_CALL+0(%rsp)	/* nr */
	movq	%rbx, F_CALL+8(%rsp)	/* a1 */
	movq	%rcx, F_CALL+16(%rsp)	/* a2 */
	movq	%rdi, F_CALL+24(%rsp)	/* a3 */
	movq	%rsi, F_CALL+32(%rsp)	/* a4 */
	movq	%r8, F_CALL+40(%rsp)	/* a5 */
	movq	%r9, F_CALL+48(%rsp)	/* a6 */
	movq	%r14, F_G(%rsp)		/* g: ABIInternal's R14 (Go 1.17+) */
	leaq	tether_go_call(%rip), %r11
	movq	%r11, F_FN(%rsp)
	leaq	F_CALL(%rsp), %r11
	movq	%r11, F_ARG(%rsp)
	/* asmcgocall reads g from TLS and, on 1.19's gosave_systemstack_switch,
	 * from R14: both hold g here.  Its 32-bit result is not used: the 64-bit
	 * return value comes back in the call record. */
	call	*tether_go_asmcgocall(%rip)
	movq	F_RET(%rsp), %rax
	movq	F_A3(%rsp), %rdx	/* the kernel leaves DX (a3) as it was */
	movq	F_G(%rsp), %r14		/* R14 = g again for ABIInternal code */
	xorps	%xmm15, %xmm15		/* X15 = 0, ABIInternal's zero register */
	addq	$FRAME, %rsp
	jmp	.Lresult
	.size	tether_go_funnel, . - tether_go_funnel

/* tether_go_vfork replaces syscall.rawVforkSyscall (ABI0, NOSPLIT|NOFRAME):
 *
 *   1.19:   func rawVforkSyscall(trap, a1 uintptr) (r1, err uintptr)
 *   1.21:   func rawVforkSyscall(trap, a1, a2 uintptr) (r1, err uintptr)
 *   1.22+:  func rawVforkSyscall(trap, a1, a2, a3 uintptr) (r1, err uintptr)
 *
 * trap at 8(SP), a1 (the clone flags) at 16(SP), then a2, a3; r1 and err
 * follow the last argument.  tether_go_vfork_args holds the count (1-3),
 * read by tether inspect from the function's own first instructions.
 *
 * It is clone with CLONE_VM removed: the child still runs before the parent
 * resumes (CLONE_VFORK) but in its own copy of memory, so when the layer
 * runs C in the child (a hooked dup3, execve, ...) nothing it writes (TLS g,
 * g.sched, g0's stack) can reach the waiting parent. */
	.globl	tether_go_vfork
	.hidden	tether_go_vfork
	.type	tether_go_vfork, @function
tether_go_vfork:
	movq	16(%rsp), %rdi		/* a1: clone flags, or clone3's args */
	cmpq	$SYS_clone3, 8(%rsp)
	je	3f
	andq	$~CLONE_VM, %rdi
0:	xorl	%esi, %esi
	xorl	%edx, %edx
	movl	tether_go_vfork_args(%rip), %r11d
	cmpl	$2, %r11d
	jb	1f
	movq	24(%rsp), %rsi		/* a2 (1.21+) */
	cmpl	$3, %r11d
	jb	1f
	movq	32(%rsp), %rdx		/* a3 (1.22+) */
1:	xorl	%r10d, %r10d
	xorl	%r8d, %r8d
	xorl	%r9d, %r9d
	movq	8(%rsp), %rax		/* trap */
	syscall
	movl	tether_go_vfork_args(%rip), %ecx
	leaq	16(%rsp,%rcx,8), %rcx	/* &r1, just after the last argument */
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

	.section .note.GNU-stack, "", @progbits
