/* libc/ - the libc functions the layer stands in for, for programs that use
 * libc (C, Python, curl, ...): sockets (libc.c), descriptor I/O (io.c),
 * files (files.c), syscall() by number (syscall.c), processes: fork, the
 * exec family, posix_spawn (proc.c), and vfork (vfork.S).  The dynamic
 * linker binds the program's calls to them because the layer is
 * preloaded; each makes the syscall glibc's wrapper would, through core/'s
 * dispatcher, and returns libc-style.  Uses
 * core/, exec/ (a spawned child's environment) and trace/ (posix_spawn's
 * child, reported as its own).  Nothing calls into libc/: its functions
 * are reached by the program's own calls. */
#ifndef TETHER_LIBC_H
#define TETHER_LIBC_H

#include "core/core.h"

/* libc.c: a kernel-style result as libc returns it (-1 and errno), and a
 * syscall made the libc way through the dispatcher. */
long tether_libc_result(long r);
#define TETHER_LIBC_CALL(nr, a1, a2, a3, a4, a5, a6)                                              \
	tether_libc_result(tether_dispatch_inline(nr, (long)(a1), (long)(a2), (long)(a3), (long)(a4),      \
	                                          (long)(a5), (long)(a6)))

#endif
