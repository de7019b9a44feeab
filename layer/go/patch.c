/* patch.c - overwrite a function's entry with an absolute jump.
 *
 *   ff 25 00 00 00 00    jmp *0(%rip)
 *   <8-byte target>
 *
 * 14 bytes that reach any address and clobber no register: Go's text in a
 * non-PIE executable (0x400000) is usually more than 2 GiB from the layer,
 * out of reach of a rel32 jump.  Called only while the process has a single
 * thread (the constructor, before the program runs), so plain stores are
 * enough. */
#include "go/go.h"
#include "go/runtime.h"

#define SYS_mprotect 10
#define PROT_READ 1
#define PROT_WRITE 2
#define PROT_EXEC 4
#define PAGE 4096UL

int tether_patch_jump(unsigned long at, const void *target)
{
	unsigned long first = at & ~(PAGE - 1);
	unsigned long len = ((at + TETHER_PATCH_BYTES + PAGE - 1) & ~(PAGE - 1)) - first;
	unsigned long to = (unsigned long)target;
	unsigned char *p = (unsigned char *)at;
	long r;

	/* Writable and not executable while written: never both at once. */
	r = tether_raw_syscall6(SYS_mprotect, (long)first, (long)len, PROT_READ | PROT_WRITE, 0, 0, 0);
	if (r < 0)
		return (int)r;
	p[0] = 0xff;
	p[1] = 0x25;
	p[2] = p[3] = p[4] = p[5] = 0;
	for (int i = 0; i < 8; i++)
		p[6 + i] = (unsigned char)(to >> (8 * i));
	r = tether_raw_syscall6(SYS_mprotect, (long)first, (long)len, PROT_READ | PROT_EXEC, 0, 0, 0);
	return (int)r;
}
