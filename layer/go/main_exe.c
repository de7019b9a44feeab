/* main_exe.c - where the main executable is loaded, and its Go build id.
 *
 * The load bias comes from the kernel's auxiliary vector (AT_PHDR minus the
 * PT_PHDR address the file asked for), read from /proc/self/auxv so it works
 * whatever the constructor's envp points at.  No libc. */
#include "go/go.h"

#define SYS_read 0
#define SYS_open 2
#define SYS_close 3
#define O_RDONLY 0
#define AT_NULL 0
#define AT_PHDR 3
#define AT_PHNUM 5
#define PT_PHDR 6
#define PT_NOTE 4
#define NT_GO_BUILDID 4

struct phdr64 {
	unsigned int type, flags;
	unsigned long offset, vaddr, paddr, filesz, memsz, align;
};

int tether_main_exe(struct tether_module *m)
{
	unsigned long aux[2 * 64];
	unsigned long phdr = 0, phnum = 0;
	long fd, n;

	fd = tether_raw_syscall6(SYS_open, (long)"/proc/self/auxv", O_RDONLY, 0, 0, 0, 0);
	if (fd < 0)
		return (int)fd;
	n = tether_raw_syscall6(SYS_read, fd, (long)aux, sizeof aux, 0, 0, 0);
	tether_raw_syscall6(SYS_close, fd, 0, 0, 0, 0, 0);
	if (n < 0)
		return (int)n;
	for (long i = 0; i + 1 < n / 8 && aux[i] != AT_NULL; i += 2) {
		if (aux[i] == AT_PHDR)
			phdr = aux[i + 1];
		else if (aux[i] == AT_PHNUM)
			phnum = aux[i + 1];
	}
	m->phdr = (const void *)phdr;
	m->phnum = (unsigned)phnum;
	for (unsigned i = 0; i < m->phnum; i++) {
		const struct phdr64 *ph = (const struct phdr64 *)phdr + i;

		if (ph->type == PT_PHDR) {
			m->bias = phdr - ph->vaddr;
			return 0;
		}
	}
	return -1;
}

/* The text of the module's Go build-id note ("Go", type 4), or 0. */
const char *tether_go_buildid(const struct tether_module *m, unsigned *len)
{
	for (unsigned i = 0; i < m->phnum; i++) {
		const struct phdr64 *ph = (const struct phdr64 *)m->phdr + i;
		const unsigned char *p, *end;

		if (ph->type != PT_NOTE)
			continue;
		p = (const unsigned char *)(m->bias + ph->vaddr);
		end = p + ph->filesz;
		while (p + 12 <= end) {
			const unsigned *h = (const unsigned *)p;
			const unsigned char *name = p + 12;
			const unsigned char *desc = name + ((h[0] + 3) & ~3u);

			if (desc + h[1] > end)
				break;
			/* The Go linker writes the owner as "Go\0\0", namesz 4. */
			if ((h[0] == 3 || h[0] == 4) && h[2] == NT_GO_BUILDID && name[0] == 'G' &&
			    name[1] == 'o' && name[2] == 0) {
				*len = h[1];
				return (const char *)desc;
			}
			p = desc + ((h[1] + 3) & ~3u);
		}
	}
	return 0;
}
