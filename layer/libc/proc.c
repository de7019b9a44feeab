/* proc.c - libc's process entry points: fork and the exec family.
 *
 * exec*() make execve (or execveat) through the dispatcher, so the tracer
 * reports each before it runs, as it does Go's.  execvp's PATH search is
 * done here because glibc's calls its internal execve, which no
 * interposition reaches.  fork stays glibc's (its atfork handlers and lock
 * resets must run); the layer only reports it.
 * vfork is vfork.S's (a C wrapper cannot return twice on one stack); its
 * child's exec comes through here like any other.  posix_spawn execs inside
 * glibc: the layer gives it the environment exec/exec.c gives every exec, and
 * reports the exec as the child's once the spawn succeeded. */
#include "libc/libc.h"
#include "exec/exec.h"
#include "trace/trace.h"

#define CALL TETHER_LIBC_CALL
#define SYS_execve 59
#define SYS_fork 57
#define SYS_execveat 322
#define AT_EMPTY_PATH 0x1000
#define EACCES 13
#define ENOENT 2
#define ENOEXEC 8
#define ENOTDIR 20
#define ENODEV 19
#define ESTALE 116
#define ETIMEDOUT 110
#define E2BIG 7
#define PATH_MAX 4096
#define ARGS_MAX 4096 /* arguments an execl-style list may pass here */

extern char **environ;
void *dlsym(void *handle, const char *name);
int *__errno_location(void);

static long libc_fork(long nr, long a1, long a2, long a3, long a4, long a5, long a6)
{
	static int (*real)(void);
	long pid;

	(void)nr, (void)a1, (void)a2, (void)a3, (void)a4, (void)a5, (void)a6;
	if (!real)
		real = (int (*)(void))dlsym((void *)-1L /* RTLD_NEXT */, "fork");
	pid = real();
	return pid < 0 ? -(long)*__errno_location() : pid;
}

TETHER_EXPORT int fork(void)
{
	tether_tap_fn *tap = tether_tap;
	long pid = tap ? tap(libc_fork, SYS_fork, 0, 0, 0, 0, 0, 0) : libc_fork(SYS_fork, 0, 0, 0, 0, 0, 0);

	return (int)tether_libc_result(pid);
}

TETHER_EXPORT int execve(const char *path, char *const argv[], char *const envp[])
{
	return (int)CALL(SYS_execve, path, argv, envp, 0, 0, 0);
}

TETHER_EXPORT int execv(const char *path, char *const argv[])
{
	return execve(path, argv, environ);
}

TETHER_EXPORT int fexecve(int fd, char *const argv[], char *const envp[])
{
	return (int)CALL(SYS_execveat, fd, "", argv, envp, AT_EMPTY_PATH, 0);
}

/* A file execve refused as no executable format: a shell script without
 * #!, which execvp runs with /bin/sh, as glibc does. */
static void exec_script(const char *file, char *const argv[], char *const envp[])
{
	unsigned long argc = 0;

	while (argv[argc] && argc < ARGS_MAX)
		argc++;
	{
		char *sh_argv[argc + 3];

		sh_argv[0] = "/bin/sh";
		sh_argv[1] = (char *)file;
		for (unsigned long i = 1; i < argc; i++)
			sh_argv[i + 1] = argv[i];
		sh_argv[argc > 0 ? argc + 1 : 2] = 0;
		execve("/bin/sh", sh_argv, envp);
	}
}

TETHER_EXPORT int execvpe(const char *file, char *const argv[], char *const envp[])
{
	const char *dirs = 0, *p;
	unsigned long file_len = tether_strlen(file);
	int denied = 0;

	if (!*file) {
		*__errno_location() = ENOENT;
		return -1;
	}
	for (p = file; *p; p++)
		if (*p == '/') {
			execve(file, argv, envp);
			if (*__errno_location() == ENOEXEC)
				exec_script(file, argv, envp);
			return -1;
		}
	for (char **e = environ; e && *e; e++)
		if (!tether_memcmp(*e, "PATH=", 5)) {
			dirs = *e + 5;
			break;
		}
	if (!dirs)
		dirs = "/bin:/usr/bin"; /* glibc's default (confstr _CS_PATH) */
	for (p = dirs;; p++) {
		const char *start = p;
		char path[PATH_MAX];
		unsigned long n;

		while (*p && *p != ':')
			p++;
		n = (unsigned long)(p - start);
		if (n + 1 + file_len < sizeof path) {
			for (unsigned long i = 0; i < n; i++)
				path[i] = start[i];
			if (n)
				path[n++] = '/'; /* an empty entry is the current directory */
			for (unsigned long i = 0; i <= file_len; i++)
				path[n + i] = file[i];
			execve(path, argv, envp);
			switch (*__errno_location()) {
			case EACCES:
				denied = 1;
				/* fall through */
			case ENOENT: case ENOTDIR: case ENODEV: case ESTALE: case ETIMEDOUT:
				break;
			case ENOEXEC:
				exec_script(path, argv, envp);
				return -1;
			default:
				return -1;
			}
		}
		if (!*p)
			break;
	}
	if (denied)
		*__errno_location() = EACCES;
	return -1;
}

TETHER_EXPORT int execvp(const char *file, char *const argv[])
{
	return execvpe(file, argv, environ);
}

/* The execl forms: the argument list, up to its NULL, as an argv.  The
 * list's length (with the first argument), or 0 when it is too long. */
static unsigned long list_length(__builtin_va_list ap)
{
	__builtin_va_list count;
	unsigned long n = 1;

	__builtin_va_copy(count, ap);
	while (__builtin_va_arg(count, char *))
		if (++n > ARGS_MAX) {
			n = 0;
			break;
		}
	__builtin_va_end(count);
	return n;
}

/* Fills argv[0..argc] and moves ap past the list's NULL (to execle's envp). */
static void list_fill(char **argv, const char *first, unsigned long argc, __builtin_va_list ap)
{
	argv[0] = (char *)first;
	for (unsigned long i = 1; i < argc; i++)
		argv[i] = __builtin_va_arg(ap, char *);
	(void)__builtin_va_arg(ap, char *);
	argv[argc] = 0;
}

enum list_exec { BY_PATH, BY_SEARCH, WITH_ENV };

/* execl, execlp, execle: the list as an argv (and execle's envp after it). */
static int exec_list(enum list_exec how, const char *target, const char *arg, __builtin_va_list ap)
{
	unsigned long argc = list_length(ap);

	if (!argc) {
		*__errno_location() = E2BIG;
		return -1;
	}
	char *argv[argc + 1];
	list_fill(argv, arg, argc, ap);
	if (how == WITH_ENV)
		return execve(target, argv, __builtin_va_arg(ap, char *const *));
	return how == BY_SEARCH ? execvpe(target, argv, environ) : execve(target, argv, environ);
}

#define EXEC_LIST(name, how)                                                  \
	TETHER_EXPORT int name(const char *target, const char *arg, ...)      \
	{                                                                     \
		__builtin_va_list ap;                                         \
		int r;                                                        \
		__builtin_va_start(ap, arg);                                  \
		r = exec_list(how, target, arg, ap);                          \
		__builtin_va_end(ap);                                         \
		return r;                                                     \
	}

EXEC_LIST(execl, BY_PATH)
EXEC_LIST(execlp, BY_SEARCH)
EXEC_LIST(execle, WITH_ENV)

typedef int spawn_fn(int *, const char *, const void *, const void *, char *const[], char *const[]);

static int spawn(const char *name, void **real, int *pid, const char *file, const void *actions,
                 const void *attr, char *const argv[], char *const envp[])
{
	unsigned long preload_size = 1;
	long size = tether_exec_env_size(envp, &preload_size);
	int child = 0, r;

	if (!*real)
		*real = dlsym((void *)-1L /* RTLD_NEXT */, name);
	if (size < 0)
		return (int)-size; /* posix_spawn returns the error number */
	char *env[size > 0 ? size : 1];
	char preload_entry[preload_size];

	if (size > 0) {
		tether_exec_env_build(envp, env, preload_entry);
		envp = env;
	}
	r = ((spawn_fn *)*real)(&child, file, actions, attr, argv, envp);
	if (r == 0 && tether_tap) {
		const long args[6] = {(long)file, (long)argv, (long)envp, 0, 0, 0};

		tether_trace_exec_for(child, SYS_execve, args);
	}
	if (r == 0 && pid)
		*pid = child;
	return r;
}

TETHER_EXPORT int posix_spawn(int *pid, const char *path, const void *actions, const void *attr,
                              char *const argv[], char *const envp[])
{
	static void *real;

	return spawn("posix_spawn", &real, pid, path, actions, attr, argv, envp);
}

TETHER_EXPORT int posix_spawnp(int *pid, const char *file, const void *actions, const void *attr,
                               char *const argv[], char *const envp[])
{
	static void *real;

	return spawn("posix_spawnp", &real, pid, file, actions, attr, argv, envp);
}
