/* files/internal.h - what files/'s own files share: the rules and the
 * paths they are asked about.  Private to files/. */
#ifndef TETHER_FILES_INTERNAL_H
#define TETHER_FILES_INTERNAL_H

#include "files/files.h"
#include "link/link.h"

#define TETHER_PATH_MAX 4096

/* files.c: OPEN path in the target (the agent opens it; read-only): the
 * descriptor or -errno.  target.c: MODE_FILES's handlers; 0 or -1 if the
 * session's rules did not come or make no sense. */
long tether_files_open_in_target(const char *path, int flags, unsigned mode);
int tether_files_target_install(void);

/* rules.c: where the rules the session sends go (FILES_REPLY's payload),
 * then checked (n bytes of it; 0 or -1); which decides path (its bytes, n
 * of them): the action in *action, the rule's index or -1 (the fallback)
 * returned. */
unsigned char *tether_files_rules_buffer(unsigned long *size);
int tether_files_rules_set(unsigned long n);
int tether_files_decide(const unsigned char *path, unsigned long n, unsigned char *action);
unsigned char tether_files_flags(void);

/* target.c, for change.c: the decision for a call's path (p holds it unless
 * LOCAL; the session told when -v); path opened in the target's root
 * (RESOLVE_IN_ROOT), the descriptor or -errno; tell the session about p;
 * r after closing fd; "/proc/self/fd/N" for fd. */
struct tether_path;
unsigned char tether_files_decide_path(struct tether_path *p, long dirfd, long addr);
long tether_files_open_there(const char *path, long flags, long mode);
void tether_files_notice(const struct tether_path *p, long n, int rule, unsigned char action, unsigned char what);
long tether_files_closing(long fd, long r);
void tether_files_fd_link(char out[32], long fd);

/* change.c: the handlers of changes by path (mkdir, unlink, rename, ...). */
void tether_files_change_install(void);

/* paths.c: a path as the rules see it: absolute, with "." and ".." and
 * repeated slashes taken out, in one of a few buffers of PATH_MAX bytes
 * (detours run on small stacks; a caller holds one for the call).  Returns
 * its length, or -1: the kernel should see this call as it is (a path
 * relative to a descriptor, unreadable, empty or too long). */
struct tether_path {
	char *text;		/* NUL-terminated */
	int slot;
};
long tether_path_get(struct tether_path *p, long dirfd, long addr);
void tether_path_put(struct tether_path *p);

#endif
