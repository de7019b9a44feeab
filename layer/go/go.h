/* go/ - Go programs and libraries, which make their syscalls without libc:
 * where a loaded module sits and its Go build id (main_exe.c), applying a
 * hook plan to it (hook.c: patch.c writes the jumps), the trampolines the
 * patched functions jump to (amd64.S) and their C side (call.c: into the
 * dispatcher), and the Go c-shared libraries the loader adds later
 * (modules.c).  runtime.h is the record of one hooked runtime, shared by
 * amd64.S and hook.c; this header is the folder's interface.  Uses core/
 * and link/ (a library's plan is asked of the session). */
#ifndef TETHER_GO_H
#define TETHER_GO_H

#include "core/core.h"

/* main_exe.c: a loaded ELF module, as the dynamic loader placed it. */
struct tether_module {
	unsigned long bias;	/* run-time address minus link-time address */
	const void *phdr;	/* its program headers, in memory */
	unsigned phnum;
};
int tether_main_exe(struct tether_module *m);
const char *tether_go_buildid(const struct tether_module *m, unsigned *len);

/* hook.c: hook a module's Go syscall entry points with the plan for its
 * build id among plans; 1 hooked, 0 not Go, -1 no plan or not hooked. */
int tether_go_hook(const struct tether_module *m, const char *plans);

/* modules.c: once at start-up, the plans TETHER_GO_PLAN gave (0: ask the
 * session for each library); then hook Go modules loaded since the last
 * call (c-shared libraries; the main program is start/'s). */
void tether_go_modules_start(const char *env_plans);
void tether_go_hook_new_modules(void);

/* amd64.S: the funnel's tail (its result to Go's registers, ret) and the
 * same after the syscall made again: where the injector resumes a thread
 * that was inside the funnel's SYSCALL when it attached (tether trace -p). */
void tether_go_result(void);
void tether_go_restart(void);

#endif
