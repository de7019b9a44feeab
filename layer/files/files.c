/* files.c - files read from the target (tether exec): with MODE_FILES, the
 * paths the file rules give it (target.c); else, with MODE_DNS, only the
 * resolver's files, as here.
 *
 * The resolver's files (resolv.conf, hosts, nsswitch.conf, ...) are opened
 * by the agent inside the target, so names resolve as they do there: Go's
 * own resolver reads them with openat and then sends its queries with
 * connect, which net/net.c sends out from the target too.  Only read-only
 * opens of these exact paths travel; every other open runs here. */
#include "files/internal.h"

#define SYS_open 2
#define SYS_openat 257
#define O_ACCMODE 3
#define O_CLOEXEC 02000000
#define PATH_MAX_TARGET 64
#define RUN_HERE (-4096L - 1) /* neither a descriptor nor -errno */

static const char *const target_paths[] = {
	"/etc/resolv.conf", "/etc/hosts", "/etc/nsswitch.conf", "/etc/host.conf", "/etc/gai.conf",
};

static int is_target_path(const char *path)
{
	for (unsigned i = 0; i < sizeof target_paths / sizeof target_paths[0]; i++) {
		unsigned long n = tether_strlen(target_paths[i]) + 1;

		if (!tether_memcmp(path, target_paths[i], n))
			return 1;
	}
	return 0;
}

long tether_files_open_in_target(const char *path, int flags, unsigned mode)
{
	unsigned long words[TETHER_SMALL_FRAME / 8]; /* the paths are the resolver's files' */
	struct tether_frame *f = (struct tether_frame *)words;
	struct tether_open *o = (struct tether_open *)(f + 1);

	o->flags = flags;
	o->mode = mode;
	f->length = (unsigned)(tether_put_string((unsigned char *)(o + 1), path, (unsigned)tether_strlen(path)) -
	                       (unsigned char *)words);
	f->type = TETHER_MSG_OPEN;
	f->flags = 0;
	f->id = 1;
	return tether_ask(words, sizeof words, TETHER_MSG_OPEN_REPLY, 0, flags & O_CLOEXEC);
}

/* The target's descriptor (or -errno), or RUN_HERE. */
static long maybe_target(long path_addr, long flags, long mode)
{
	char path[PATH_MAX_TARGET];
	long n = tether_peek(path, path_addr, sizeof path);

	if (n <= 0 || (flags & O_ACCMODE) != 0)
		return RUN_HERE;
	path[n - 1] = '\0'; /* longer paths cannot match */
	if (!is_target_path(path))
		return RUN_HERE;
	return tether_files_open_in_target(path, (int)flags, (unsigned)mode);
}

static long files_openat(long nr, long dirfd, long path, long flags, long mode, long a5, long a6)
{
	long fd = maybe_target(path, flags, mode);

	return fd != RUN_HERE ? fd : tether_raw_syscall6(nr, dirfd, path, flags, mode, a5, a6);
}

static long files_open(long nr, long path, long flags, long mode, long a4, long a5, long a6)
{
	long fd = maybe_target(path, flags, mode);

	return fd != RUN_HERE ? fd : tether_raw_syscall6(nr, path, flags, mode, a4, a5, a6);
}

int tether_files_install(unsigned mode)
{
	if (mode & TETHER_MODE_FILES)
		return tether_files_target_install();
	tether_set_handler(SYS_openat, files_openat, TETHER_MAY_BLOCK);
	tether_set_handler(SYS_open, files_open, TETHER_MAY_BLOCK);
	return 0;
}
