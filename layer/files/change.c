/* change.c - changes by path (mkdir, rmdir, unlink, rename, truncate,
 * chmod, utimensat) on paths the file rules decide.
 *
 * Where a change happens follows where a write would: WRITE paths change in
 * the target, LOCAL and READ ones here (a READ path's change is said once,
 * as its writes are), NOT_FOUND ones do not exist (ENOENT).  In the target
 * a change never leaves its root: the parent directory is opened with
 * RESOLVE_IN_ROOT and the last component named relative to it (mkdirat,
 * unlinkat and renameat2 do not follow it); chmod, truncate and utimensat,
 * which follow links, act on the file opened with RESOLVE_IN_ROOT through
 * its /proc/self/fd link.  A rename between here and the target is EXDEV,
 * as between two file systems: mv and Go's callers then copy. */
#include "files/internal.h"

#define SYS_truncate 76
#define SYS_ftruncate 77
#define SYS_rename 82
#define SYS_mkdir 83
#define SYS_rmdir 84
#define SYS_unlink 87
#define SYS_chmod 90
#define SYS_mkdirat 258
#define SYS_unlinkat 263
#define SYS_renameat 264
#define SYS_fchmodat 268
#define SYS_utimensat 280
#define SYS_renameat2 316
#define SYS_fchmodat2 452
#define AT_FDCWD (-100)
#define AT_SYMLINK_NOFOLLOW 0x100
#define AT_REMOVEDIR 0x200
#define O_WRONLY 01
#define O_DIRECTORY 0200000
#define O_NOFOLLOW 0400000
#define O_CLOEXEC 02000000
#define O_PATH 010000000
#define ENOENT 2
#define EBUSY 16
#define EXDEV 18

enum where { HERE, THERE, NOWHERE };

/* Where a change to the path at (dirfd, addr) happens; for THERE, p holds
 * the path (the caller puts it back). */
static enum where where(struct tether_path *p, long dirfd, long addr)
{
	unsigned char action = tether_files_decide_path(p, dirfd, addr);

	if (action == TETHER_FILES_LOCAL)
		return HERE;
	if (action == TETHER_FILES_WRITE)
		return THERE;
	if (action == TETHER_FILES_READ)
		tether_files_notice(p, (long)tether_strlen(p->text), -1, action, TETHER_FILES_WRITTEN_HERE);
	tether_path_put(p);
	return action == TETHER_FILES_READ ? HERE : NOWHERE;
}

/* p's parent directory opened in the target (or -errno), its last
 * component in *name.  p is absolute and clean: no "." or ".." in it. */
static long parent_there(struct tether_path *p, const char **name)
{
	char *slash = p->text, *s;
	long fd;

	for (s = p->text; *s; s++)
		if (*s == '/')
			slash = s;
	if (!slash[1])
		return -EBUSY; /* the root itself */
	*name = slash + 1;
	if (slash == p->text)
		return tether_files_open_there("/", O_PATH | O_DIRECTORY | O_CLOEXEC, 0);
	*slash = '\0';
	fd = tether_files_open_there(p->text, O_PATH | O_DIRECTORY | O_CLOEXEC, 0);
	*slash = '/';
	return fd;
}

/* nr (mkdirat or unlinkat) on (parent, name) in the target, with arg. */
static long at_parent(long nr, long dirfd, long addr, long arg, long raw_nr, long raw_a1, long raw_a2, long raw_a3)
{
	struct tether_path p;
	const char *name;
	long fd, r;

	switch (where(&p, dirfd, addr)) {
	case HERE:
		return tether_raw_syscall6(raw_nr, raw_a1, raw_a2, raw_a3, 0, 0, 0);
	case NOWHERE:
		return -ENOENT;
	case THERE:
		break;
	}
	fd = parent_there(&p, &name);
	r = fd < 0 ? fd : tether_files_closing(fd, tether_raw_syscall6(nr, fd, (long)name, arg, 0, 0, 0));
	tether_path_put(&p);
	return r;
}

static long files_mkdir(long nr, long a1, long a2, long a3, long a4, long a5, long a6)
{
	(void)a4, (void)a5, (void)a6;
	if (nr == SYS_mkdir)
		return at_parent(SYS_mkdirat, AT_FDCWD, a1, a2, nr, a1, a2, 0);
	return at_parent(SYS_mkdirat, a1, a2, a3, nr, a1, a2, a3);
}

static long files_unlink(long nr, long a1, long a2, long a3, long a4, long a5, long a6)
{
	(void)a4, (void)a5, (void)a6;
	if (nr == SYS_unlinkat)
		return at_parent(SYS_unlinkat, a1, a2, a3 & AT_REMOVEDIR, nr, a1, a2, a3);
	return at_parent(SYS_unlinkat, AT_FDCWD, a1, nr == SYS_rmdir ? AT_REMOVEDIR : 0, nr, a1, 0, 0);
}

static long files_rename(long nr, long a1, long a2, long a3, long a4, long a5, long a6)
{
	long olddir = AT_FDCWD, old = a1, newdir = AT_FDCWD, new = a2, flags = 0, from, to, r;
	struct tether_path p, q;
	const char *from_name, *to_name;
	enum where a, b;

	(void)a6;
	if (nr != SYS_rename)
		olddir = a1, old = a2, newdir = a3, new = a4, flags = nr == SYS_renameat2 ? a5 : 0;
	a = where(&p, olddir, old);
	b = where(&q, newdir, new);
	if (a == HERE && b == HERE)
		return tether_raw_syscall6(nr, a1, a2, a3, a4, a5, 0);
	if (a == NOWHERE || b == NOWHERE)
		r = -ENOENT;
	else if (a != b)
		r = -EXDEV;
	else if ((from = parent_there(&p, &from_name)) < 0)
		r = from;
	else if ((to = parent_there(&q, &to_name)) < 0)
		r = tether_files_closing(from, to);
	else
		r = tether_files_closing(from, tether_files_closing(to, tether_raw_syscall6(
			SYS_renameat2, from, (long)from_name, to, (long)to_name, flags, 0)));
	if (a == THERE)
		tether_path_put(&p);
	if (b == THERE)
		tether_path_put(&q);
	return r;
}

/* nr on the file itself, opened in the target (following a link unless
 * nofollow), by its /proc/self/fd name; how: open flags beyond O_PATH's. */
static long on_file(long dirfd, long addr, int nofollow, long how, long nr, long a2, long a3, long raw_nr,
                    long raw_a1, long raw_a2, long raw_a3, long raw_a4)
{
	struct tether_path p;
	char at[32];
	long fd;

	switch (where(&p, dirfd, addr)) {
	case HERE:
		return tether_raw_syscall6(raw_nr, raw_a1, raw_a2, raw_a3, raw_a4, 0, 0);
	case NOWHERE:
		return -ENOENT;
	case THERE:
		break;
	}
	fd = tether_files_open_there(p.text, (how ? how : O_PATH) | O_CLOEXEC | (nofollow ? O_NOFOLLOW : 0), 0);
	tether_path_put(&p);
	if (fd < 0)
		return fd;
	if (how) /* truncate: on the descriptor opened for writing */
		return tether_files_closing(fd, tether_raw_syscall6(nr, fd, a2, 0, 0, 0, 0));
	tether_files_fd_link(at, fd);
	return tether_files_closing(fd, nr == SYS_utimensat
		? tether_raw_syscall6(nr, AT_FDCWD, (long)at, a2, 0, 0, 0)
		: tether_raw_syscall6(nr, (long)at, a2, a3, 0, 0, 0));
}

static long files_truncate(long nr, long path, long length, long a3, long a4, long a5, long a6)
{
	(void)a3, (void)a4, (void)a5, (void)a6;
	return on_file(AT_FDCWD, path, 0, O_WRONLY, SYS_ftruncate, length, 0, nr, path, length, 0, 0);
}

static long files_chmod(long nr, long a1, long a2, long a3, long a4, long a5, long a6)
{
	(void)a5, (void)a6;
	if (nr == SYS_chmod)
		return on_file(AT_FDCWD, a1, 0, 0, SYS_chmod, a2, 0, nr, a1, a2, 0, 0);
	if (nr == SYS_fchmodat) /* no flags argument */
		return on_file(a1, a2, 0, 0, SYS_chmod, a3, 0, nr, a1, a2, a3, 0);
	return on_file(a1, a2, (int)(a4 & AT_SYMLINK_NOFOLLOW), 0, SYS_chmod, a3, 0, nr, a1, a2, a3, a4);
}

static long files_utimensat(long nr, long dirfd, long path, long times, long flags, long a5, long a6)
{
	(void)a5, (void)a6;
	if (!path) /* futimens: the descriptor's own file */
		return tether_raw_syscall6(nr, dirfd, path, times, flags, 0, 0);
	return on_file(dirfd, path, (int)(flags & AT_SYMLINK_NOFOLLOW), 0, SYS_utimensat, times, 0, nr, dirfd, path,
	               times, flags);
}

void tether_files_change_install(void)
{
	tether_set_handler(SYS_mkdir, files_mkdir, TETHER_MAY_BLOCK);
	tether_set_handler(SYS_mkdirat, files_mkdir, TETHER_MAY_BLOCK);
	tether_set_handler(SYS_rmdir, files_unlink, TETHER_MAY_BLOCK);
	tether_set_handler(SYS_unlink, files_unlink, TETHER_MAY_BLOCK);
	tether_set_handler(SYS_unlinkat, files_unlink, TETHER_MAY_BLOCK);
	tether_set_handler(SYS_rename, files_rename, TETHER_MAY_BLOCK);
	tether_set_handler(SYS_renameat, files_rename, TETHER_MAY_BLOCK);
	tether_set_handler(SYS_renameat2, files_rename, TETHER_MAY_BLOCK);
	tether_set_handler(SYS_truncate, files_truncate, TETHER_MAY_BLOCK);
	tether_set_handler(SYS_chmod, files_chmod, TETHER_MAY_BLOCK);
	tether_set_handler(SYS_fchmodat, files_chmod, TETHER_MAY_BLOCK);
	tether_set_handler(SYS_fchmodat2, files_chmod, TETHER_MAY_BLOCK);
	tether_set_handler(SYS_utimensat, files_utimensat, TETHER_MAY_BLOCK);
}
