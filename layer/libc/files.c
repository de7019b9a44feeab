/* files.c - libc's file entry points, into the dispatcher.
 *
 * As libc.c: each makes the syscall glibc 2.34+ makes on x86-64 (open is
 * openat at AT_FDCWD, stat is newfstatat, ...), through the dispatcher, so
 * files/files.c's detours and the tracer see libc programs' opens too.  fopen and
 * opendir open through the dispatcher and hand the descriptor to libc's
 * fdopen and fdopendir: glibc's own fopen and opendir open through internal
 * calls no interposition reaches.  readdir's getdents64 stays inside libc. */
#include "libc/libc.h"

#define CALL TETHER_LIBC_CALL
#define AT_FDCWD (-100)
#define AT_SYMLINK_NOFOLLOW 0x100
#define O_WRONLY 01
#define O_RDWR 02
#define O_CREAT 0100
#define O_EXCL 0200
#define O_TRUNC 01000
#define O_APPEND 02000
#define O_NONBLOCK 04000
#define O_DIRECTORY 0200000
#define O_CLOEXEC 02000000
#define O_TMPFILE 020200000
#define EINVAL 22
#define ENOSYS 38

void *fdopen(int fd, const char *mode);
void *fdopendir(int fd);
void *dlsym(void *handle, const char *name);
int *__errno_location(void);

/* open's mode argument exists only with O_CREAT or O_TMPFILE. */
static unsigned mode_arg(int flags, __builtin_va_list *ap)
{
	return flags & O_CREAT || (flags & O_TMPFILE) == O_TMPFILE ? __builtin_va_arg(*ap, unsigned) : 0;
}

TETHER_EXPORT int openat(int dirfd, const char *path, int flags, ...)
{
	__builtin_va_list ap;
	unsigned mode;

	__builtin_va_start(ap, flags);
	mode = mode_arg(flags, &ap);
	__builtin_va_end(ap);
	return (int)CALL(257, dirfd, path, flags, mode, 0, 0);
}

TETHER_EXPORT int openat64(int dirfd, const char *path, int flags, ...)
{
	__builtin_va_list ap;
	unsigned mode;

	__builtin_va_start(ap, flags);
	mode = mode_arg(flags, &ap);
	__builtin_va_end(ap);
	return (int)CALL(257, dirfd, path, flags, mode, 0, 0);
}

TETHER_EXPORT int open(const char *path, int flags, ...)
{
	__builtin_va_list ap;
	unsigned mode;

	__builtin_va_start(ap, flags);
	mode = mode_arg(flags, &ap);
	__builtin_va_end(ap);
	return (int)CALL(257, AT_FDCWD, path, flags, mode, 0, 0);
}

TETHER_EXPORT int open64(const char *path, int flags, ...)
{
	__builtin_va_list ap;
	unsigned mode;

	__builtin_va_start(ap, flags);
	mode = mode_arg(flags, &ap);
	__builtin_va_end(ap);
	return (int)CALL(257, AT_FDCWD, path, flags, mode, 0, 0);
}

/* _FORTIFY_SOURCE's opens without a mode (glibc aborts on O_CREAT there;
 * the kernel then sees mode 0 instead). */
TETHER_EXPORT int __open_2(const char *path, int flags)
{
	return (int)CALL(257, AT_FDCWD, path, flags, 0, 0, 0);
}

TETHER_EXPORT int __open64_2(const char *path, int flags)
{
	return (int)CALL(257, AT_FDCWD, path, flags, 0, 0, 0);
}

TETHER_EXPORT int __openat_2(int dirfd, const char *path, int flags)
{
	return (int)CALL(257, dirfd, path, flags, 0, 0, 0);
}

TETHER_EXPORT int __openat64_2(int dirfd, const char *path, int flags)
{
	return (int)CALL(257, dirfd, path, flags, 0, 0, 0);
}

TETHER_EXPORT int creat(const char *path, unsigned mode)
{
	return (int)CALL(257, AT_FDCWD, path, O_CREAT | O_WRONLY | O_TRUNC, mode, 0, 0);
}

TETHER_EXPORT int creat64(const char *path, unsigned mode)
{
	return (int)CALL(257, AT_FDCWD, path, O_CREAT | O_WRONLY | O_TRUNC, mode, 0, 0);
}

/* fopen's mode as open flags (glibc's reading: r/w/a, then + x e and
 * letters it ignores, up to a ",ccs=" suffix), or -1. */
static int fopen_flags(const char *mode)
{
	int flags;

	switch (*mode) {
	case 'r': flags = 0; break;
	case 'w': flags = O_WRONLY | O_CREAT | O_TRUNC; break;
	case 'a': flags = O_WRONLY | O_CREAT | O_APPEND; break;
	default: return -1;
	}
	for (int i = 1; i < 7 && mode[i] && mode[i] != ','; i++) {
		if (mode[i] == '+')
			flags = (flags & ~O_WRONLY) | O_RDWR;
		else if (mode[i] == 'x')
			flags |= O_EXCL;
		else if (mode[i] == 'e')
			flags |= O_CLOEXEC;
	}
	return flags;
}

TETHER_EXPORT void *fopen(const char *path, const char *mode)
{
	int flags = fopen_flags(mode), fd, err;
	void *f;

	if (flags < 0) {
		*__errno_location() = EINVAL;
		return 0;
	}
	fd = (int)CALL(257, AT_FDCWD, path, flags, 0666, 0, 0);
	if (fd < 0)
		return 0;
	f = fdopen(fd, mode);
	if (!f) {
		err = *__errno_location();
		tether_raw_syscall6(3, fd, 0, 0, 0, 0, 0);
		*__errno_location() = err;
	}
	return f;
}

TETHER_EXPORT void *fopen64(const char *path, const char *mode)
{
	return fopen(path, mode);
}

/* freopen opens inside glibc too: the file is opened here, through the
 * dispatcher, and glibc reopens that same file by its /proc/self/fd link
 * (which names it wherever it was opened, the target included). */
TETHER_EXPORT void *freopen(const char *path, const char *mode, void *stream)
{
	static void *libc_freopen;
	char link[32] = "/proc/self/fd/";
	int flags = path ? fopen_flags(mode) : 0, fd;
	void *f;

	if (!libc_freopen)
		libc_freopen = dlsym((void *)-1L /* RTLD_NEXT */, "freopen");
	if (!path) /* a mode change of the same file */
		return ((void *(*)(const char *, const char *, void *))libc_freopen)(path, mode, stream);
	if (flags < 0) {
		*__errno_location() = EINVAL;
		return 0;
	}
	fd = (int)CALL(257, AT_FDCWD, path, flags & ~O_CLOEXEC, 0666, 0, 0);
	if (fd < 0)
		return 0;
	tether_fmt_ulong(link + 14, (unsigned long)fd, 10);
	/* The same mode but 'x': the file exists now, made by the open above. */
	char again[16];
	unsigned n = 0;

	for (const char *m = mode; *m && n < sizeof again - 1; m++)
		if (*m != 'x')
			again[n++] = *m;
	again[n] = '\0';
	f = ((void *(*)(const char *, const char *, void *))libc_freopen)(link, again, stream);
	tether_raw_syscall6(3, fd, 0, 0, 0, 0, 0);
	return f;
}

TETHER_EXPORT void *freopen64(const char *path, const char *mode, void *stream)
{
	return freopen(path, mode, stream);
}

TETHER_EXPORT void *opendir(const char *path)
{
	int fd = (int)CALL(257, AT_FDCWD, path, O_DIRECTORY | O_NONBLOCK | O_CLOEXEC, 0, 0, 0), err;
	void *d;

	if (fd < 0)
		return 0;
	d = fdopendir(fd);
	if (!d) {
		err = *__errno_location();
		tether_raw_syscall6(3, fd, 0, 0, 0, 0, 0);
		*__errno_location() = err;
	}
	return d;
}

TETHER_EXPORT long getdents64(int fd, void *buf, unsigned long n)
{
	return CALL(217, fd, buf, n, 0, 0, 0);
}

/* The stat family: struct stat is the kernel's on x86-64. */
TETHER_EXPORT int stat(const char *path, void *st)
{
	return (int)CALL(262, AT_FDCWD, path, st, 0, 0, 0);
}

TETHER_EXPORT int stat64(const char *path, void *st)
{
	return (int)CALL(262, AT_FDCWD, path, st, 0, 0, 0);
}

TETHER_EXPORT int lstat(const char *path, void *st)
{
	return (int)CALL(262, AT_FDCWD, path, st, AT_SYMLINK_NOFOLLOW, 0, 0);
}

TETHER_EXPORT int lstat64(const char *path, void *st)
{
	return (int)CALL(262, AT_FDCWD, path, st, AT_SYMLINK_NOFOLLOW, 0, 0);
}

TETHER_EXPORT int fstat(int fd, void *st)
{
	return (int)CALL(5, fd, st, 0, 0, 0, 0);
}

TETHER_EXPORT int fstat64(int fd, void *st)
{
	return (int)CALL(5, fd, st, 0, 0, 0, 0);
}

TETHER_EXPORT int fstatat(int dirfd, const char *path, void *st, int flags)
{
	return (int)CALL(262, dirfd, path, st, flags, 0, 0);
}

TETHER_EXPORT int fstatat64(int dirfd, const char *path, void *st, int flags)
{
	return (int)CALL(262, dirfd, path, st, flags, 0, 0);
}

/* glibc before 2.33 compiled stat() into these; binaries built then still
 * call them.  ver is _STAT_VER_LINUX (1): the kernel's struct stat. */
TETHER_EXPORT int __xstat(int ver, const char *path, void *st)
{
	(void)ver;
	return stat(path, st);
}

TETHER_EXPORT int __xstat64(int ver, const char *path, void *st)
{
	(void)ver;
	return stat(path, st);
}

TETHER_EXPORT int __lxstat(int ver, const char *path, void *st)
{
	(void)ver;
	return lstat(path, st);
}

TETHER_EXPORT int __lxstat64(int ver, const char *path, void *st)
{
	(void)ver;
	return lstat(path, st);
}

TETHER_EXPORT int __fxstat(int ver, int fd, void *st)
{
	(void)ver;
	return fstat(fd, st);
}

TETHER_EXPORT int __fxstat64(int ver, int fd, void *st)
{
	(void)ver;
	return fstat(fd, st);
}

TETHER_EXPORT int __fxstatat(int ver, int dirfd, const char *path, void *st, int flags)
{
	(void)ver;
	return fstatat(dirfd, path, st, flags);
}

TETHER_EXPORT int __fxstatat64(int ver, int dirfd, const char *path, void *st, int flags)
{
	(void)ver;
	return fstatat(dirfd, path, st, flags);
}

TETHER_EXPORT int statx(int dirfd, const char *path, int flags, unsigned mask, void *buf)
{
	return (int)CALL(332, dirfd, path, flags, mask, buf, 0);
}

TETHER_EXPORT int access(const char *path, int mode)
{
	return (int)CALL(21, path, mode, 0, 0, 0, 0);
}

TETHER_EXPORT long readlink(const char *path, char *buf, unsigned long size)
{
	return CALL(267, AT_FDCWD, path, buf, size, 0, 0);
}

TETHER_EXPORT long readlinkat(int dirfd, const char *path, char *buf, unsigned long size)
{
	return CALL(267, dirfd, path, buf, size, 0, 0);
}

TETHER_EXPORT int statfs(const char *path, void *buf)
{
	return (int)CALL(137, path, buf, 0, 0, 0, 0);
}

TETHER_EXPORT int statfs64(const char *path, void *buf)
{
	return (int)CALL(137, path, buf, 0, 0, 0, 0);
}

/* ls -l asks about ACLs and security labels by path: for a target's file the
 * attributes must come from there too. */
TETHER_EXPORT long getxattr(const char *path, const char *name, void *value, unsigned long size)
{
	return CALL(191, path, name, value, size, 0, 0);
}

TETHER_EXPORT long lgetxattr(const char *path, const char *name, void *value, unsigned long size)
{
	return CALL(192, path, name, value, size, 0, 0);
}

TETHER_EXPORT long listxattr(const char *path, char *list, unsigned long size)
{
	return CALL(194, path, list, size, 0, 0, 0);
}

TETHER_EXPORT long llistxattr(const char *path, char *list, unsigned long size)
{
	return CALL(195, path, list, size, 0, 0, 0);
}

/* With flags (AT_EACCESS, AT_SYMLINK_NOFOLLOW) faccessat needs faccessat2
 * (Linux 5.8); where the kernel lacks it, libc's own emulation answers. */
TETHER_EXPORT int faccessat(int dirfd, const char *path, int mode, int flags)
{
	static void *libc_faccessat;
	long r;

	if (!flags)
		return (int)CALL(269, dirfd, path, mode, 0, 0, 0);
	r = tether_dispatch_inline(439, dirfd, (long)path, mode, flags, 0, 0);
	if (r != -ENOSYS)
		return (int)tether_libc_result(r);
	if (!libc_faccessat)
		libc_faccessat = dlsym((void *)-1L /* RTLD_NEXT */, "faccessat");
	return ((int (*)(int, const char *, int, int))libc_faccessat)(dirfd, path, mode, flags);
}

TETHER_EXPORT int unlink(const char *path)
{
	return (int)CALL(87, path, 0, 0, 0, 0, 0);
}

TETHER_EXPORT int unlinkat(int dirfd, const char *path, int flags)
{
	return (int)CALL(263, dirfd, path, flags, 0, 0, 0);
}

TETHER_EXPORT int rename(const char *from, const char *to)
{
	return (int)CALL(82, from, to, 0, 0, 0, 0);
}

TETHER_EXPORT int renameat(int fromfd, const char *from, int tofd, const char *to)
{
	return (int)CALL(264, fromfd, from, tofd, to, 0, 0);
}

TETHER_EXPORT int mkdir(const char *path, unsigned mode)
{
	return (int)CALL(83, path, mode, 0, 0, 0, 0);
}

TETHER_EXPORT int mkdirat(int dirfd, const char *path, unsigned mode)
{
	return (int)CALL(258, dirfd, path, mode, 0, 0, 0);
}

TETHER_EXPORT int rmdir(const char *path)
{
	return (int)CALL(84, path, 0, 0, 0, 0, 0);
}

TETHER_EXPORT int renameat2(int fromfd, const char *from, int tofd, const char *to, unsigned flags)
{
	return (int)CALL(316, fromfd, from, tofd, to, flags, 0);
}

TETHER_EXPORT int truncate(const char *path, long length)
{
	return (int)CALL(76, path, length, 0, 0, 0, 0);
}

TETHER_EXPORT int truncate64(const char *path, long length)
{
	return (int)CALL(76, path, length, 0, 0, 0, 0);
}

TETHER_EXPORT int chmod(const char *path, unsigned mode)
{
	return (int)CALL(90, path, mode, 0, 0, 0, 0);
}

/* With AT_SYMLINK_NOFOLLOW fchmodat needs fchmodat2 (Linux 6.6). */
TETHER_EXPORT int fchmodat(int dirfd, const char *path, unsigned mode, int flags)
{
	return (int)(flags ? CALL(452, dirfd, path, mode, flags, 0, 0) : CALL(268, dirfd, path, mode, 0, 0, 0));
}

TETHER_EXPORT int utimensat(int dirfd, const char *path, const void *times, int flags)
{
	return (int)CALL(280, dirfd, path, times, flags, 0, 0);
}
