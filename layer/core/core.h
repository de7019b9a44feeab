/* core/ - what every other folder of libtether.so stands on, knowing none
 * of them: the raw syscall, the one dispatcher and its handler table,
 * this process's ids and safe reads of its memory, the layer's own
 * descriptors, and the few things the layer would otherwise take from libc
 * (environment lookup, a line on stderr, numbers and strings).
 *
 * Dependencies in the layer flow one way (tests/test_layout.py keeps it
 * so): core/ includes no other folder; link/ uses core/; the capabilities
 * (go/, libc/, net/, files/, trace/, exec/) use core/ and link/ and each
 * other only one way; start/ puts them all together and nothing uses it.
 * A folder is used through its header, which is named after it.
 *
 * The layer is built with -fvisibility=hidden: only symbols marked
 * TETHER_EXPORT are visible to the dynamic linker (and so to ctypes and to
 * the program the layer is preloaded into).  The syscall path never calls
 * libc; libc serves only start-up (dlsym, environ, dl_iterate_phdr) and the
 * libc entry points (libc/). */
#ifndef TETHER_CORE_H
#define TETHER_CORE_H

#define TETHER_EXPORT __attribute__((visibility("default")))

/* Size of the dispatch table.  x86-64 syscall numbers are below 512 (the
 * x32 range starts at 512 and is not handled). */
#define TETHER_NR_MAX 512

/* Signature shared by the raw syscall, the dispatcher and every handler: the
 * syscall number, then its six arguments as the kernel sees them.  The return
 * value follows the kernel convention: >= 0 on success, -errno on failure. */
typedef long tether_syscall_fn(long nr, long a1, long a2, long a3, long a4,
                               long a5, long a6);

/* syscall_raw.S: issue the syscall instruction, bypassing libc. */
tether_syscall_fn tether_raw_syscall6;

/* dispatch.c: route a syscall to its handler, or pass it through. */
TETHER_EXPORT tether_syscall_fn tether_dispatch;

/* dispatch.c: one handler per syscall number; NULL passes it through. */
extern tether_syscall_fn *tether_handlers[TETHER_NR_MAX];

/* dispatch.c: when set (tether trace: trace/), every dispatched call goes
 * through the tap, which is handed the function that would have run. */
typedef long tether_tap_fn(tether_syscall_fn *fn, long nr, long a1, long a2, long a3, long a4, long a5,
                           long a6);
extern tether_tap_fn *tether_tap;

/* The dispatcher's body, inlined into the libc entry points (libc/) so a
 * passthrough costs no call beyond the raw syscall's.  Unsigned compare
 * also sends negative numbers to the kernel, which answers -ENOSYS. */
static inline long tether_dispatch_inline(long nr, long a1, long a2, long a3, long a4, long a5,
                                          long a6)
{
	tether_syscall_fn *handler = 0;
	tether_tap_fn *tap = tether_tap;

	if ((unsigned long)nr < TETHER_NR_MAX)
		handler = tether_handlers[nr];
	if (tap)
		return tap(handler ? handler : tether_raw_syscall6, nr, a1, a2, a3, a4, a5, a6);
	if (handler)
		return handler(nr, a1, a2, a3, a4, a5, a6);
	{
		/* The passthrough, in place: the kernel's registers (syscall_raw.S). */
		register long r10 __asm__("r10") = a4, r8 __asm__("r8") = a5, r9 __asm__("r9") = a6;
		long ret;

		__asm__ volatile("syscall"
		                 : "=a"(ret)
		                 : "a"(nr), "D"(a1), "S"(a2), "d"(a3), "r"(r10), "r"(r8), "r"(r9)
		                 : "rcx", "r11", "memory");
		return ret;
	}
}
/* Nonzero where the handler may block: on raw Go calls the trampoline then
 * enters Go's syscall state around it so other goroutines keep running. */
extern unsigned char tether_may_block[TETHER_NR_MAX];
#define TETHER_MAY_BLOCK 1u
void tether_route_all(void);
TETHER_EXPORT int tether_set_handler(long nr, tether_syscall_fn *fn, unsigned flags);

/* env.c, say.c, string.c: what the layer would otherwise take from libc. */
const char *tether_getenv(char **envp, const char *name);
void tether_say(const char *const *parts); /* NULL-terminated; one line to fd 2 */
char *tether_fmt_ulong(char *p, unsigned long v, unsigned base);
unsigned long tether_strlen(const char *s);
int tether_memcmp(const void *a, const void *b, unsigned long n);
int tether_hexdigit(char c);	/* 0-15 for 0-9 a-f, else -1 */
/* n bytes from 2n lowercase hex digits at *s, which moves past them; 0 or -1. */
int tether_hex_bytes(const char **s, unsigned char *out, unsigned n);

/* self.c: this process's pid, and reads of its memory that a bad pointer
 * cannot crash (bytes copied or -errno).  tether_self_ids: the calling
 * thread's pid and tid, cached per thread.  Bumping tether_self_gen makes
 * every cache stale: libc/vfork.S and trace/ do it in a child sharing this
 * memory, go/amd64.S in a Go fork child (their ids are then asked each
 * time); tether_self_forked in a fork child with memory of its own (trace/);
 * tether_self_init once at start. */
int tether_current_pid(void);
extern unsigned tether_self_gen;
/* The injected build (TETHER_NO_TLS): 1 where FS is Go's own (a static
 * program), so the thread-id cache may live in m.tls. */
extern int tether_self_fs_cache;
void tether_self_init(void);
void tether_self_forked(void);
int tether_self_pid(void); /* the process whose memory this is */
void tether_self_ids(int *pid, int *tid);
long tether_peek(void *dst, long addr, unsigned long n);
long tether_poke(long addr, const void *src, unsigned long n);

/* fds.c: the layer's own descriptors (session line, agent connections,
 * spare target sockets): moved high and registered by park, so libc's
 * close and close_range skip them; fd_close unregisters and closes. */
long tether_fd_park(long fd);
void tether_fd_close(long fd);
void tether_fd_release(long fd); /* unregistered, left open: the caller's now */
int tether_fd_is_ours(long fd);
long tether_fd_next_ours(unsigned long first, unsigned long last); /* lowest in range, or -1 */
/* Before the program dups onto fd, one of ours: each owner registered with
 * on_evict (at start-up, up to TETHER_EVICT_MAX) is told, and moves or
 * drops fd if it is its own.  An owner that moves one takes a renumbered
 * copy (registered in fd's place, fd left open for the owner to close once
 * nothing uses it), or -errno. */
typedef void tether_evict_fn(long fd);
#define TETHER_EVICT_MAX 8
void tether_fd_on_evict(tether_evict_fn *fn);
void tether_fd_evict(long fd);
long tether_fd_renumber(long fd);

#endif
