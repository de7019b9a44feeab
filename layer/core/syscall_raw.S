/* syscall_raw.S - the syscall instruction, for the layer's own calls and its
 * detours (the dispatcher's passthrough makes its own, inline: core.h).
 *
 * long tether_raw_syscall6(long nr, long a1, long a2, long a3,
 *                          long a4, long a5, long a6);
 *
 * The C ABI passes nr,a1..a5 in rdi,rsi,rdx,rcx,r8,r9 and a6 on the stack;
 * the kernel wants nr in rax and a1..a6 in rdi,rsi,rdx,r10,r8,r9.  a4 goes in
 * r10 rather than rcx because the syscall instruction overwrites rcx (and r11)
 * with the return address (and flags).  The kernel's result is returned as
 * is: -errno on failure, with no errno variable to touch. */

	.text
	.globl	tether_raw_syscall6
	/* Internal to the layer: callers bind directly, not through the PLT. */
	.hidden	tether_raw_syscall6
	.type	tether_raw_syscall6, @function
tether_raw_syscall6:
	.cfi_startproc
	movq	%rdi, %rax	/* nr */
	movq	%rsi, %rdi	/* a1 */
	movq	%rdx, %rsi	/* a2 */
	movq	%rcx, %rdx	/* a3 */
	movq	%r8, %r10	/* a4 */
	movq	%r9, %r8	/* a5 */
	movq	8(%rsp), %r9	/* a6: first stack argument, above the return address */
	syscall
	ret
	.cfi_endproc
	.size	tether_raw_syscall6, . - tether_raw_syscall6

/* Without this note the linker would mark libtether.so as needing an
 * executable stack, which recent glibc refuses to dlopen. */
	.section .note.GNU-stack, "", @progbits
