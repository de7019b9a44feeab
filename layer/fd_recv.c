/* fd_recv.c - receive one message and the descriptor that may ride along
 * with it (SCM_RIGHTS): the agent's replies (request.c) and the session's
 * HELLO_REPLY, which brings the trace ring (session.c). */
#include "tether.h"

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

long tether_recv_fd(long conn, void *buf, unsigned long size, int *fd, int cloexec)
{
	unsigned long control[(sizeof(struct cmsghdr) + sizeof(int) + 7) / 8];
	struct iovec iov = {buf, size};
	struct msghdr msg = {0, 0, &iov, 1, control, sizeof control, 0};
	const struct cmsghdr *c = (const struct cmsghdr *)control;
	long n;

	*fd = -1;
	do
		n = tether_raw_syscall6(SYS_recvmsg, conn, (long)&msg, cloexec ? MSG_CMSG_CLOEXEC : 0, 0, 0, 0);
	while (n == -EINTR);
	if (n > 0 && msg.controllen >= sizeof *c + sizeof(int) && c->level == SOL_SOCKET &&
	    c->type == SCM_RIGHTS)
		*fd = *(const int *)(c + 1);
	return n;
}
