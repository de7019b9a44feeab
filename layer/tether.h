/* tether.h - declarations shared by the files of libtether.so.
 *
 * The layer is built with -fvisibility=hidden: only symbols marked
 * TETHER_EXPORT are visible to the dynamic linker (and so to ctypes and to
 * the program the layer is preloaded into).  The syscall path never calls
 * libc; libc serves only start-up (dlsym, environ, dl_iterate_phdr). */
#ifndef TETHER_H
#define TETHER_H

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
extern int tether_tracing; /* trace.c */
long tether_trace_call(tether_syscall_fn *fn, long nr, long a1, long a2, long a3, long a4,
                       long a5, long a6);

/* The dispatcher's body, inlined into the libc entry points (libc*.c) so a
 * passthrough costs no call beyond the raw syscall's.  Unsigned compare
 * also sends negative numbers to the kernel, which answers -ENOSYS. */
static inline long tether_dispatch_inline(long nr, long a1, long a2, long a3, long a4, long a5,
                                          long a6)
{
	tether_syscall_fn *handler = 0;

	if ((unsigned long)nr < TETHER_NR_MAX)
		handler = tether_handlers[nr];
	if (tether_tracing)
		return tether_trace_call(handler ? handler : tether_raw_syscall6, nr, a1, a2, a3, a4, a5, a6);
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

/* init.c: 1 once the layer's ELF constructor has run, else 0. */
TETHER_EXPORT int tether_layer_loaded(void);
void tether_start(char **envp);		/* once; envp 0 means libc's environ */
const char *tether_go_plans(void);	/* TETHER_GO_PLAN, or 0 */

/* env.c, say.c, string.c: what the layer would otherwise take from libc. */
const char *tether_getenv(char **envp, const char *name);
void tether_say(const char *const *parts); /* NULL-terminated; one line to fd 2 */
char *tether_fmt_ulong(char *p, unsigned long v, unsigned base);
unsigned long tether_strlen(const char *s);
int tether_memcmp(const void *a, const void *b, unsigned long n);
int tether_hexdigit(char c);	/* 0-15 for 0-9 a-f, else -1 */
/* n bytes from 2n lowercase hex digits at *s, which moves past them; 0 or -1. */
int tether_hex_bytes(const char **s, unsigned char *out, unsigned n);

/* main_exe.c: a loaded ELF module, as the dynamic loader placed it. */
struct tether_module {
	unsigned long bias;	/* run-time address minus link-time address */
	const void *phdr;	/* its program headers, in memory */
	unsigned phnum;
};
int tether_main_exe(struct tether_module *m);
const char *tether_go_buildid(const struct tether_module *m, unsigned *len);

/* patch.c: overwrite TETHER_PATCH_BYTES at `at` with `jmp *target`. */
#define TETHER_PATCH_BYTES 14
int tether_patch_jump(unsigned long at, const void *target);

/* go_hook.c: hook a module's Go syscall entry points with the plan for its
 * build id among plans; 1 hooked, 0 not Go, -1 no plan or not hooked. */
int tether_go_hook(const struct tether_module *m, const char *plans);

/* modules.c: hook Go modules loaded since the last call (c-shared libraries). */
void tether_go_hook_new_modules(void);
void tether_module_seen(const struct tether_module *m);

/* session.c: the connection to tether's session, if any. */
extern int tether_session_fd;
struct tether_session_reply {
	char plan[2048];
	char agent[108];	/* a unix socket path */
	char rules[2048];
};
int tether_session_open(const char *path, const char *go_build_id, unsigned id_len,
                        unsigned *mode, struct tether_session_reply *reply, int *ring);
int tether_session_send(const void *frame, unsigned long length);
void tether_session_wake(void); /* RING_WAKE, if it can go at once */
/* A u16 length and n bytes of s at p (the wire's strings); returns the end. */
unsigned char *tether_put_string(unsigned char *p, const char *s, unsigned n);
int tether_session_plan(const char *path, const char *go_build_id, unsigned id_len,
                        char *plan, unsigned plan_size);
/* In a child forked without exec: a line of its own (it replaces the
 * inherited one) and the memfd of a trace ring of its own in *ring. */
int tether_session_fork(int pid, int *ring);

/* fd_recv.c: one message on conn into buf, and the descriptors that came
 * with it in fds (up to max, 1 to TETHER_SOCKETS_MAX; -1 in the slots
 * left).  Its length, 0 at end of stream, or -errno. */
long tether_recv_fds(long conn, void *buf, unsigned long size, int *fds, int max, int cloexec);

/* ring.c: the producer side of the trace ring (protocol.h).  attach maps
 * the memfd the session sent (and closes it); put writes one record of
 * type and flags, its payload n bytes (a multiple of 8, at most
 * TETHER_FRAME_MAX - 16), for process pid, the caller: 0 when written, or
 * dropped because the session is gone; -errno when the caller should send
 * it as a frame instead (no ring, a child sharing the ring's process's
 * memory, a forked child that could not get a ring of its own, or a full
 * ring while this thread is already writing a record: a signal handler
 * must not wait for the record it interrupted). */
int tether_ring_attach(int fd);
int tether_ring_put(unsigned short type, unsigned short flags, const unsigned long *payload, unsigned long n,
                    int pid);

/* fds.c: the layer's own descriptors (session, agent connections): moved
 * high and registered by park, so libc's close and close_range skip them;
 * fd_close unregisters and closes. */
long tether_fd_park(long fd);
void tether_fd_close(long fd);
void tether_fd_release(long fd); /* unregistered, left open: the caller's now */
int tether_fd_is_ours(long fd);
long tether_fd_next_ours(unsigned long first, unsigned long last); /* lowest in range, or -1 */
void tether_fd_evict(long fd); /* before the program dups onto fd, one of ours */

/* self.c: this process's pid, and reads of its memory that a bad pointer
 * cannot crash (bytes copied or -errno).  tether_self_ids: the calling
 * thread's pid and tid, cached per thread.  Bumping tether_self_gen makes
 * every cache stale: vfork.S and trace.c do it in a child sharing this
 * memory, go_amd64.S in a Go fork child (their ids are then asked each
 * time); tether_self_forked in a fork child with memory of its own (trace.c);
 * tether_self_init once at start. */
int tether_current_pid(void);
extern unsigned tether_self_gen;
void tether_self_init(void);
void tether_self_forked(void);
int tether_self_pid(void); /* the process whose memory this is */
void tether_self_ids(int *pid, int *tid);
long tether_peek(void *dst, long addr, unsigned long n);
long tether_poke(long addr, const void *src, unsigned long n);

/* request.c: one request to the agent on a connection of its own, so
 * requests from many threads run side by side.  The reply replaces the
 * request in buf; descriptors that came with it are stored in fds (up to
 * max, at most TETHER_SOCKETS_MAX; -1 in the slots left).  Returns the
 * reply's length or -errno. */
int tether_request_init(const char *agent_path);
long tether_request(void *buf, unsigned long size, int *fds, int max, int cloexec);
/* The same for a request whose answer is reply_type with payload bytes and
 * descriptors (words: a TETHER_FRAME_MAX buffer): how many (1 to max), or
 * -errno (the agent's ERROR, else EPROTO); tether_ask: one, the descriptor. */
long tether_ask_fds(unsigned long *words, unsigned short reply_type, unsigned long payload, int *fds, int max,
                    int cloexec);
long tether_ask(unsigned long *words, unsigned short reply_type, unsigned long payload, int cloexec);
/* Drop fd if it is an idle pooled connection (the program wants its number). */
void tether_request_forget(long fd);
int tether_agent_gone(void);

/* target_sockets.c: a socket of this kind made in the target (MODE_SOCKETS),
 * from the spares the agent handed out, or -errno; forget drops fd if it is
 * a spare (the program wants its number). */
long tether_target_socket(int family, int type, int protocol);
void tether_target_sockets_forget(long fd);

/* route.c: the ordered local/remote rules for outgoing connections. */
#define TETHER_ROUTE_MAX 64
struct tether_route_rule {
	unsigned char remote, family, prefix; /* family 0, 4 or 6 */
	unsigned short port;		      /* 0: any */
	unsigned char addr[16];
};
struct tether_route {
	unsigned n;
	int default_remote;
	struct tether_route_rule rules[TETHER_ROUTE_MAX];
};
int tether_route_parse(const char *text, struct tether_route *r);
int tether_route_remote(const struct tether_route *r, const unsigned char *sa, long len);
TETHER_EXPORT int tether_route_verdict(const char *rules, const unsigned char *sa, long len);

/* epoll.c: a descriptor's epoll registrations, read before a swap and
 * added again after it. */
struct tether_epoll_reg {
	int epfd;
	unsigned events;
	unsigned long data;
};
unsigned tether_epoll_find(int fd, struct tether_epoll_reg *regs, unsigned max);
void tether_epoll_restore(int fd, const struct tether_epoll_reg *regs, unsigned n);

/* libc.c: a kernel-style result as libc returns it (-1 and errno), and a
 * syscall made the libc way through the dispatcher (libc*.c). */
long tether_libc_result(long r);
#define TETHER_LIBC_CALL(nr, a1, a2, a3, a4, a5, a6)                                              \
	tether_libc_result(tether_dispatch_inline(nr, (long)(a1), (long)(a2), (long)(a3), (long)(a4),      \
	                                          (long)(a5), (long)(a6)))

/* net.c, files.c: the detours of tether exec; net.c takes the rules text. */
int tether_net_install(const char *rules, int sockets);

/* relayed.c: sockets that stand for a socket in the target (through a
 * network agent's relay), and the addresses getsockname/getpeername give. */
void tether_relayed_add(long fd, const unsigned char *local, unsigned local_len, const unsigned char *peer,
                        unsigned peer_len);
void tether_relayed_install(void);
void tether_files_install(void);
/* exec.c: execve and execveat keep LD_PRELOAD and TETHER_SESSION (from
 * envp, this process's start-up environment).  For other ways to exec:
 * env_size is the slots a new list for envp needs (0: envp will do as it
 * is, -E2BIG: too long); env_build fills env (that many slots, and a
 * TETHER_PRELOAD_MAX buffer for the LD_PRELOAD entry). */
#define TETHER_PRELOAD_MAX 4096
void tether_exec_install(char **envp);
long tether_exec_env_size(char *const *envp);
int tether_exec_env_build(char *const *envp, char **env, char *preload_entry);
/* dns.c: answer libc's host name lookups from the target. */
void tether_dns_install(void);

/* trace.c: report each call through the dispatcher to the session
 * (tether_tracing and tether_trace_call are declared above); and an exec
 * made for another process (posix_spawn's child), as that process's. */
void tether_trace_exec_for(int pid, long nr, const long *args);

/* go_amd64.S: what the patched Go functions jump to (the first three
 * through their runtime's stubs: go_runtime.h). */
void tether_go_funnel(void);
void tether_go_entered(void);
void tether_go_exited(void);
void tether_go_vfork(void);

/* go_call.c: the call record go_amd64.S keeps in the funnel's argument
 * spill slots: the syscall number in, the kernel-style result out. */
struct tether_go_call {
	long nr_ret;
	long a[6];
};
void tether_go_call(struct tether_go_call *c);

#endif
