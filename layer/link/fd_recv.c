/* fd_recv.c - receive one message and the descriptors that may ride along
 * with it (SCM_RIGHTS): the agent's replies (request.c: a batch of sockets
 * made in the target) and the session's HELLO_REPLY, which brings the trace
 * ring (session.c). */
#include "link/link.h"

#define SYS_recvmsg 47
#define SOL_SOCKET 1
#define SCM_RIGHTS 1
#define MSG_CMSG_CLOEXEC 0x40000000
#define EINTR 4

struct iovec {
	void *base;
	unsigned long len;
};

struct msghdr {
	void *name;
	unsigned int namelen;
	struct iovec *iov;
	unsigned long iovlen;
	void *control;
	unsigned long controllen;
	int flags;
};

struct cmsghdr {
	unsigned long len;
	int level;
	int type;
};

long tether_recv_fds(long conn, void *buf, unsigned long size, int *fds, int max, int cloexec)
{
	unsigned long control[(sizeof(struct cmsghdr) + TETHER_SOCKETS_MAX * sizeof(int) + 7) / 8];
	struct iovec iov = {buf, size};
	struct msghdr msg = {0, 0, &iov, 1, control, (sizeof(struct cmsghdr) + (unsigned)max * sizeof(int) + 7) & ~7ul, 0};
	const struct cmsghdr *c = (const struct cmsghdr *)control;
	long n;

	for (int i = 0; i < max; i++)
		fds[i] = -1;
	if (max < 1 || max > TETHER_SOCKETS_MAX)
		return -22; /* EINVAL */
	do
		n = tether_raw_syscall6(SYS_recvmsg, conn, (long)&msg, cloexec ? MSG_CMSG_CLOEXEC : 0, 0, 0, 0);
	while (n == -EINTR);
	/* More descriptors than max: the kernel closed the rest (MSG_CTRUNC). */
	if (n > 0 && msg.controllen >= sizeof *c + sizeof(int) && c->level == SOL_SOCKET &&
	    c->type == SCM_RIGHTS)
		for (unsigned long i = 0; i < (c->len - sizeof *c) / sizeof(int) && i < (unsigned long)max; i++)
			fds[i] = ((const int *)(c + 1))[i];
	return n;
}
