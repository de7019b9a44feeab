/* pthread.c - the moment to hook a Go c-shared library.
 *
 * Every Go c-shared library starts its runtime from its ELF constructor on a
 * new thread (runtime/cgo's _cgo_sys_thread_create -> pthread_create), on
 * Go 1.19-1.27 alike.  The layer, preloaded first, provides pthread_create:
 * before the real one runs it hooks whatever Go module the loader has added,
 * while none of its code has run yet. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>

#include "start/start.h"
#include "go/go.h"

typedef int create_fn(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *);

TETHER_EXPORT int pthread_create(pthread_t *thread, const pthread_attr_t *attr,
                                 void *(*start)(void *), void *arg)
{
	static create_fn *real;

	if (!real)
		real = (create_fn *)dlsym(RTLD_NEXT, "pthread_create");
	tether_start_preloaded(0);
	tether_go_hook_new_modules();
	return real(thread, attr, start, arg);
}
