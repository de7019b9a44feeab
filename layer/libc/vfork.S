/* vfork.S - vfork for programs that use libc (Python's subprocess does).
 *
 * The child runs in its parent's memory, on its stack and with the TLS of
 * the thread that called vfork, until it execs or exits.  The layer caches
 * each thread's pid and tid (core/self.c); in the child that entry is the
 * parent's, so the child bumps tether_self_gen, which makes it ask the
 * kernel for its ids (and, its pid not being the parent's, never store
 * them).  A C wrapper cannot return twice from one frame on a shared
 * stack: the return address is taken off the stack into a register the
 * syscall keeps (rdx), and put back by each of parent and child. */
#define SYS_vfork 58

	.text
	.globl	vfork
	.type	vfork, @function
vfork:
	popq	%rdx
	movl	$SYS_vfork, %eax
	syscall
	pushq	%rdx
	testq	%rax, %rax
	jnz	1f
	lock incl	tether_self_gen(%rip)
	ret
1:	cmpq	$-4095, %rax
	jae	2f
	ret
2:	movq	%rax, %rdi
	jmp	tether_libc_result	/* errno, and -1 */
	.size	vfork, . - vfork

	.section .note.GNU-stack, "", @progbits
