/* target.c - calls on paths the file rules give to the target (MODE_FILES).
 *
 * The agent hands over one descriptor: the target's root directory as it
 * sees it (a pid target's mount namespace, a netns target's host files
 * with /etc/netns/NAME over /etc; through a network agent, the root of the
 * stand-in's FUSE file system, agent/fuse.py).  Every path the rules give to the
 * target is then opened here with openat2(root, path, RESOLVE_IN_ROOT):
 * the kernel resolves it inside the target's tree (no ".." or symbolic
 * link leaves it) and the descriptor is the program's own, so reads,
 * writes, mmap and directory listings run at native speed with no round
 * trip.  Calls without a descriptor (stat, access, readlink, statfs,
 * getxattr) open the path with O_PATH and ask about that.
 *
 * READ paths opened for writing are opened here instead (the session says
 * so once per path); changes by path (mkdir, unlink, rename, ...) are
 * change.c's.  Paths relative to a descriptor other than the working
 * directory's run here. */
#include "files/internal.h"

#define SYS_open 2
#define SYS_stat 4
#define SYS_lstat 6
#define SYS_access 21
#define SYS_close 3
#define SYS_readlink 89
#define SYS_openat 257
#define SYS_newfstatat 262
#define SYS_readlinkat 267
#define SYS_faccessat 269
#define SYS_statfs 137
#define SYS_fstatfs 138
#define SYS_getxattr 191
#define SYS_lgetxattr 192
#define SYS_listxattr 194
#define SYS_llistxattr 195
#define SYS_statx 332
#define SYS_openat2 437
#define SYS_faccessat2 439
#define EAGAIN 11
#define AT_FDCWD (-100)
#define AT_SYMLINK_NOFOLLOW 0x100
#define AT_EACCESS 0x200
#define AT_EMPTY_PATH 0x1000
#define AT_STATX_SYNC_TYPE 0x6000
#define O_ACCMODE 3
#define O_CREAT 0100
#define O_TRUNC 01000
#define O_APPEND 02000
#define O_NOFOLLOW 0400000
#define O_CLOEXEC 02000000
#define O_PATH 010000000
#define O_TMPFILE 020000000
#define RESOLVE_NO_MAGICLINKS 0x02
#define RESOLVE_IN_ROOT 0x10
#define OPEN_RETRIES 16
#define ENOENT 2
#define EIO 5

struct open_how {
	unsigned long flags, mode, resolve;
};

static long root = -1;

static void root_evicted(long fd)
{
	if (fd == __atomic_load_n(&root, __ATOMIC_ACQUIRE))
		__atomic_store_n(&root, tether_fd_renumber(fd), __ATOMIC_RELEASE);
}

/* The target's root, asked of the agent once per process. */
static long target_root(void)
{
	long fd = __atomic_load_n(&root, __ATOMIC_ACQUIRE), none = -1;

	if (fd >= 0)
		return fd;
	fd = tether_files_open_in_target("/", 0200000 /* O_DIRECTORY */, 0);
	if (fd < 0) {
		tether_say((const char *[]){"tether: the target's files are out of reach (its agent does not "
		                            "answer); calls on them fail with EIO", 0});
		return -EIO;
	}
	fd = tether_fd_park(fd);
	if (!__atomic_compare_exchange_n(&root, &none, fd, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
		tether_fd_close(fd); /* another thread was first */
		fd = none;
	}
	return fd;
}

long tether_files_open_there(const char *path, long flags, long mode)
{
	long at = target_root();
	struct open_how how = {(unsigned long)flags, (unsigned long)mode, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS};

	if (at < 0)
		return at;
	if (!(flags & (O_CREAT | O_TMPFILE)))
		how.mode = 0; /* openat2 refuses a mode it would not use */
	/* EAGAIN: a rename or mount anywhere in the system raced a ".." in path, and the kernel
	 * asks the caller to retry (openat2(2), RESOLVE_IN_ROOT). */
	for (int tries = 0;; tries++) {
		long fd = tether_raw_syscall6(SYS_openat2, at, (long)path, (long)&how, sizeof how, 0, 0);
		if (fd != -EAGAIN || tries == OPEN_RETRIES)
			return fd;
	}
}

void tether_files_notice(const struct tether_path *p, long n, int rule, unsigned char action, unsigned char what)
{
	unsigned long words[TETHER_SMALL_FRAME / 8];
	struct tether_frame *f = (struct tether_frame *)words;
	struct tether_files_notice *note = (struct tether_files_notice *)(f + 1);
	unsigned long room = TETHER_SMALL_FRAME - sizeof *f - sizeof *note - 2;

	note->rule = rule;
	note->action = action;
	note->what = what;
	note->reserved = 0;
	f->length = (unsigned)(tether_put_string((unsigned char *)(note + 1), p->text,
	                                         (unsigned)((unsigned long)n < room ? (unsigned long)n : room)) -
	                       (unsigned char *)words);
	f->type = TETHER_MSG_FILES_NOTICE;
	f->flags = 0;
	f->id = 0;
	tether_session_send(words, f->length);
}

/* The path's decision; p holds the path unless it is LOCAL. */
unsigned char tether_files_decide_path(struct tether_path *p, long dirfd, long addr)
{
	long n = tether_path_get(p, dirfd, addr);
	unsigned char action;
	int rule;

	if (n < 0)
		return TETHER_FILES_LOCAL;
	rule = tether_files_decide((const unsigned char *)p->text, (unsigned long)n, &action);
	if (tether_files_flags() & TETHER_FILES_VERBOSE)
		tether_files_notice(p, n, rule, action, TETHER_FILES_DECIDED);
	if (action == TETHER_FILES_LOCAL)
		tether_path_put(p);
	return action;
}

static long files_open_at(long dirfd, long addr, long flags, long mode)
{
	struct tether_path p;
	unsigned char action = tether_files_decide_path(&p, dirfd, addr);
	int writes = (flags & O_ACCMODE) != 0 || flags & (O_CREAT | O_TRUNC | O_APPEND | O_TMPFILE);
	long r;

	if (action == TETHER_FILES_LOCAL)
		return tether_raw_syscall6(SYS_openat, dirfd, addr, flags, mode, 0, 0);
	if (action == TETHER_FILES_NOT_FOUND)
		r = -ENOENT;
	else if (action == TETHER_FILES_READ && writes) {
		tether_files_notice(&p, (long)tether_strlen(p.text), -1, action, TETHER_FILES_WRITTEN_HERE);
		r = tether_raw_syscall6(SYS_openat, dirfd, addr, flags, mode, 0, 0);
	} else
		r = tether_files_open_there(p.text, flags, mode);
	tether_path_put(&p);
	return r;
}

static long files_openat(long nr, long dirfd, long path, long flags, long mode, long a5, long a6)
{
	(void)nr, (void)a5, (void)a6;
	return files_open_at(dirfd, path, flags, mode);
}

static long files_open(long nr, long path, long flags, long mode, long a4, long a5, long a6)
{
	(void)nr, (void)a4, (void)a5, (void)a6;
	return files_open_at(AT_FDCWD, path, flags, mode);
}

/* For a call about a path: its decision, and for the target an O_PATH
 * descriptor of it there (or -errno) in *fd. */
static unsigned char about(long dirfd, long addr, int follow, long *fd)
{
	struct tether_path p;
	unsigned char action = tether_files_decide_path(&p, dirfd, addr);

	if (action == TETHER_FILES_LOCAL)
		return action;
	*fd = action == TETHER_FILES_NOT_FOUND
		      ? -ENOENT
		      : tether_files_open_there(p.text, O_PATH | O_CLOEXEC | (follow ? 0 : O_NOFOLLOW), 0);
	tether_path_put(&p);
	return action;
}

long tether_files_closing(long fd, long r)
{
	tether_raw_syscall6(SYS_close, fd, 0, 0, 0, 0, 0);
	return r;
}

static long stat_at(long nr, long dirfd, long path, long buf, long flags)
{
	long fd;

	if (flags & AT_EMPTY_PATH || about(dirfd, path, !(flags & AT_SYMLINK_NOFOLLOW), &fd) == TETHER_FILES_LOCAL)
		return nr == SYS_newfstatat ? tether_raw_syscall6(nr, dirfd, path, buf, flags, 0, 0)
		                            : tether_raw_syscall6(nr, path, buf, 0, 0, 0, 0);
	return fd < 0 ? fd
	              : tether_files_closing(fd, tether_raw_syscall6(SYS_newfstatat, fd, (long)"", buf, AT_EMPTY_PATH, 0, 0));
}

static long files_newfstatat(long nr, long dirfd, long path, long buf, long flags, long a5, long a6)
{
	(void)a5, (void)a6;
	return stat_at(nr, dirfd, path, buf, flags);
}

static long files_stat(long nr, long path, long buf, long a3, long a4, long a5, long a6)
{
	(void)a3, (void)a4, (void)a5, (void)a6;
	return stat_at(nr, AT_FDCWD, path, buf, nr == SYS_lstat ? AT_SYMLINK_NOFOLLOW : 0);
}

static long files_statx(long nr, long dirfd, long path, long flags, long mask, long buf, long a6)
{
	long fd;

	(void)a6;
	if (flags & AT_EMPTY_PATH || about(dirfd, path, !(flags & AT_SYMLINK_NOFOLLOW), &fd) == TETHER_FILES_LOCAL)
		return tether_raw_syscall6(nr, dirfd, path, flags, mask, buf, 0);
	return fd < 0 ? fd : tether_files_closing(fd, tether_raw_syscall6(SYS_statx, fd, (long)"", AT_EMPTY_PATH |
	                                                             (flags & AT_STATX_SYNC_TYPE), mask, buf, 0));
}

static long access_at(long nr, long dirfd, long path, long how, long flags)
{
	long fd;

	if (flags & AT_EMPTY_PATH || about(dirfd, path, !(flags & AT_SYMLINK_NOFOLLOW), &fd) == TETHER_FILES_LOCAL)
		return nr == SYS_access ? tether_raw_syscall6(nr, path, how, 0, 0, 0, 0)
		                        : tether_raw_syscall6(nr, dirfd, path, how, flags, 0, 0);
	return fd < 0 ? fd : tether_files_closing(fd, tether_raw_syscall6(SYS_faccessat2, fd, (long)"", how,
	                                                             AT_EMPTY_PATH | (flags & AT_EACCESS), 0, 0));
}

static long files_access(long nr, long path, long how, long a3, long a4, long a5, long a6)
{
	(void)a3, (void)a4, (void)a5, (void)a6;
	return access_at(nr, AT_FDCWD, path, how, 0);
}

static long files_faccessat(long nr, long dirfd, long path, long how, long flags, long a5, long a6)
{
	(void)a5, (void)a6;
	return access_at(nr, dirfd, path, how, nr == SYS_faccessat ? 0 : flags); /* faccessat has no flags */
}

static long readlink_at(long nr, long dirfd, long path, long buf, long size)
{
	long fd;

	if (about(dirfd, path, 0, &fd) == TETHER_FILES_LOCAL)
		return nr == SYS_readlink ? tether_raw_syscall6(nr, path, buf, size, 0, 0, 0)
		                          : tether_raw_syscall6(nr, dirfd, path, buf, size, 0, 0);
	return fd < 0 ? fd
	              : tether_files_closing(fd, tether_raw_syscall6(SYS_readlinkat, fd, (long)"", buf, size, 0, 0));
}

static long files_readlink(long nr, long path, long buf, long size, long a4, long a5, long a6)
{
	(void)a4, (void)a5, (void)a6;
	return readlink_at(nr, AT_FDCWD, path, buf, size);
}

static long files_readlinkat(long nr, long dirfd, long path, long buf, long size, long a5, long a6)
{
	(void)a5, (void)a6;
	return readlink_at(nr, dirfd, path, buf, size);
}

static long files_statfs(long nr, long path, long buf, long a3, long a4, long a5, long a6)
{
	long fd;

	(void)a3, (void)a4, (void)a5, (void)a6;
	if (about(AT_FDCWD, path, 1, &fd) == TETHER_FILES_LOCAL)
		return tether_raw_syscall6(nr, path, buf, 0, 0, 0, 0);
	return fd < 0 ? fd : tether_files_closing(fd, tether_raw_syscall6(SYS_fstatfs, fd, buf, 0, 0, 0, 0));
}

/* "/proc/self/fd/N": an O_PATH descriptor has no fgetxattr (nor fchmod), but
 * its link there leads to the file itself (to a symbolic link opened
 * O_NOFOLLOW too). */
void tether_files_fd_link(char out[32], long fd)
{
	static const char prefix[] = "/proc/self/fd/";
	char digits[20];
	int n = 0, at = 0;

	while (prefix[at]) {
		out[at] = prefix[at];
		at++;
	}
	do
		digits[n++] = (char)('0' + fd % 10);
	while ((fd /= 10) && n < 20);
	while (n)
		out[at++] = digits[--n];
	out[at] = '\0';
}

static long files_xattr(long nr, long path, long a2, long a3, long a4, long a5, long a6)
{
	int get = nr == SYS_getxattr || nr == SYS_lgetxattr;
	char at[32];
	long fd;

	(void)a5, (void)a6;
	if (about(AT_FDCWD, path, nr == SYS_getxattr || nr == SYS_listxattr, &fd) == TETHER_FILES_LOCAL)
		return tether_raw_syscall6(nr, path, a2, a3, a4, 0, 0);
	if (fd < 0)
		return fd;
	tether_files_fd_link(at, fd);
	return tether_files_closing(fd, tether_raw_syscall6(get ? SYS_getxattr : SYS_listxattr, (long)at, a2, a3, a4, 0, 0));
}

int tether_files_target_install(void)
{
	unsigned long size;
	unsigned char *rules = tether_files_rules_buffer(&size);
	long n = tether_session_files(rules, size);

	if (n < 0 || tether_files_rules_set((unsigned long)n) < 0)
		return -1;
	tether_fd_on_evict(root_evicted);
	tether_set_handler(SYS_open, files_open, TETHER_MAY_BLOCK);
	tether_set_handler(SYS_openat, files_openat, TETHER_MAY_BLOCK);
	tether_set_handler(SYS_stat, files_stat, TETHER_MAY_BLOCK);
	tether_set_handler(SYS_lstat, files_stat, TETHER_MAY_BLOCK);
	tether_set_handler(SYS_newfstatat, files_newfstatat, TETHER_MAY_BLOCK);
	tether_set_handler(SYS_statx, files_statx, TETHER_MAY_BLOCK);
	tether_set_handler(SYS_access, files_access, TETHER_MAY_BLOCK);
	tether_set_handler(SYS_faccessat, files_faccessat, TETHER_MAY_BLOCK);
	tether_set_handler(SYS_faccessat2, files_faccessat, TETHER_MAY_BLOCK);
	tether_set_handler(SYS_readlink, files_readlink, TETHER_MAY_BLOCK);
	tether_set_handler(SYS_readlinkat, files_readlinkat, TETHER_MAY_BLOCK);
	tether_set_handler(SYS_statfs, files_statfs, TETHER_MAY_BLOCK);
	tether_set_handler(SYS_getxattr, files_xattr, TETHER_MAY_BLOCK);
	tether_set_handler(SYS_lgetxattr, files_xattr, TETHER_MAY_BLOCK);
	tether_set_handler(SYS_listxattr, files_xattr, TETHER_MAY_BLOCK);
	tether_set_handler(SYS_llistxattr, files_xattr, TETHER_MAY_BLOCK);
	tether_files_change_install();
	return 0;
}
