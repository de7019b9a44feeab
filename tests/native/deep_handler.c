/* deep_handler.c - a detour that needs a big stack, preloaded after libtether.so.
 *
 * It answers getppid with 4242 after touching 256 KiB of stack: on a
 * goroutine stack (2-8 KiB, grown only by Go's own prologues) that would
 * run into other memory; on the thread's system stack (g0, the pthread
 * stack of a cgo program) it is routine.  TETHER_TEST_SLOW_GETPPID=1 makes
 * it also sleep 2 s first, to test the scheduler while a detour blocks. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef long syscall_fn(long, long, long, long, long, long, long);

#define SYS_getppid 110
#define STACK_BYTES (256 * 1024)

static int slow;

static long deep_getppid(long nr, long a1, long a2, long a3, long a4, long a5, long a6)
{
	volatile unsigned char big[STACK_BYTES];
	unsigned sum = 0;

	(void)nr, (void)a1, (void)a2, (void)a3, (void)a4, (void)a5, (void)a6;
	if (slow) {
		struct timespec ts = {2, 0};
		nanosleep(&ts, 0);
	}
	for (unsigned i = 0; i < STACK_BYTES; i += 4096)
		big[i] = (unsigned char)i;
	big[STACK_BYTES - 1] = 1;
	for (unsigned i = 0; i < STACK_BYTES; i += 4096)
		sum += big[i];
	return 4242 + (long)(sum * 0) + big[STACK_BYTES - 1] - 1;
}

__attribute__((constructor)) static void install(void)
{
	int (*set)(long, syscall_fn *, unsigned) =
		(int (*)(long, syscall_fn *, unsigned))dlsym(RTLD_DEFAULT, "tether_set_handler");
	const char *s = getenv("TETHER_TEST_SLOW_GETPPID");

	if (!set)
		abort(); /* the test preloads libtether.so first */
	slow = s && strcmp(s, "1") == 0;
	/* flags: TETHER_MAY_BLOCK (1) when it sleeps */
	if (set(SYS_getppid, deep_getppid, slow ? 1u : 0u) != 0)
		abort();
}
