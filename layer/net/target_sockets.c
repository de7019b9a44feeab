/* target_sockets.c - descriptors from the agent ahead of need (tether exec).
 *
 * A connect to a remote destination swaps a socket made in the target in
 * place of the program's and connects it here (net.c): a socket belongs to
 * the network namespace it was made in, so the connection starts there.
 * Asking the agent for one costs a round trip, longer than a loopback
 * connect; so it hands out BATCH at a time, and the spares wait here, per
 * kind, among the layer's own descriptors (core/fds.c).  Through a relaying
 * network agent (MODE_STREAMS) the spares are data connections to it,
 * already proven to it by the stand-in (STREAMS): a connect sends STREAM on
 * one itself (net.c), one round trip to the agent.  None is handed out
 * once the agent is gone, so that a lost target fails every connect alike.
 * Slots are taken and filled with atomic exchanges, no lock.  The spares
 * belong to the process that asked for them: a forked child closes its
 * copies, which share their sockets with the parent's, and asks for its
 * own. */
#include "net/internal.h"

#define AF_INET6 10
#define SOCK_STREAM 1
#define SOCK_DGRAM 2
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define ECONNREFUSED 111
#define BATCH 8
#define KINDS 5 /* IPv4 and IPv6, TCP and UDP; data connections (STREAMS) */
#define STREAMS (KINDS - 1)

static int spares[KINDS][BATCH] = {[0 ... KINDS - 1] = {[0 ... BATCH - 1] = -1}};
static int owner;

static void drop_inherited(void)
{
	int pid = tether_current_pid();

	if (__atomic_load_n(&owner, __ATOMIC_ACQUIRE) == pid)
		return;
	for (int k = 0; k < KINDS; k++)
		for (int i = 0; i < BATCH; i++) {
			int fd = __atomic_exchange_n(&spares[k][i], -1, __ATOMIC_ACQ_REL);

			if (fd >= 0)
				tether_fd_close(fd);
		}
	__atomic_store_n(&owner, pid, __ATOMIC_RELEASE);
}

static void keep(int *slot, long fd)
{
	fd = tether_fd_park(fd);
	for (int i = 0; i < BATCH; i++) {
		int free = -1;

		if (__atomic_compare_exchange_n(&slot[i], &free, (int)fd, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
			return;
	}
	tether_fd_close(fd); /* another thread filled the slots meanwhile */
}

long tether_target_socket(int family, int type, int protocol)
{
	unsigned long words[TETHER_SMALL_FRAME / 8];
	struct tether_frame *f = (struct tether_frame *)words;
	struct tether_socket *s = (struct tether_socket *)(f + 1);
	int usual = protocol == (type == SOCK_STREAM ? IPPROTO_TCP : IPPROTO_UDP);
	int *slot = spares[(family == AF_INET6) * 2 + (type == SOCK_DGRAM)];
	int fds[BATCH];
	long n;

	drop_inherited();
	if (tether_agent_gone())
		return -ECONNREFUSED; /* as every request once the agent is gone, spares or not */
	for (int i = 0; usual && i < BATCH; i++) {
		int fd = __atomic_exchange_n(&slot[i], -1, __ATOMIC_ACQ_REL);

		if (fd >= 0) {
			tether_fd_release(fd); /* the caller's now */
			return fd;
		}
	}
	s->family = (unsigned short)family;
	s->socktype = (unsigned short)type;
	s->protocol = protocol;
	s->count = usual ? BATCH : 1;
	s->reserved = 0;
	f->length = (unsigned)(sizeof *f + sizeof *s);
	f->type = TETHER_MSG_SOCKET;
	f->flags = 0;
	f->id = 1;
	n = tether_ask_fds(words, sizeof words, TETHER_MSG_SOCKET_REPLY, 0, fds, (int)s->count, 1);
	for (long i = 1; i < n; i++)
		keep(slot, fds[i]);
	return n < 0 ? n : fds[0];
}

long tether_target_stream(void)
{
	unsigned long words[TETHER_SMALL_FRAME / 8];
	struct tether_frame *f = (struct tether_frame *)words;
	struct tether_streams *s = (struct tether_streams *)(f + 1);
	int *slot = spares[STREAMS];
	int fds[BATCH];
	long n;

	drop_inherited();
	if (tether_agent_gone())
		return -ECONNREFUSED;
	for (int i = 0; i < BATCH; i++) {
		int fd = __atomic_exchange_n(&slot[i], -1, __ATOMIC_ACQ_REL);

		if (fd >= 0) {
			tether_fd_release(fd);
			return fd;
		}
	}
	s->count = BATCH;
	s->reserved = 0;
	f->length = (unsigned)(sizeof *f + sizeof *s);
	f->type = TETHER_MSG_STREAMS;
	f->flags = 0;
	f->id = 1;
	n = tether_ask_fds(words, sizeof words, TETHER_MSG_STREAMS_REPLY, 0, fds, BATCH, 1);
	for (long i = 1; i < n; i++)
		keep(slot, fds[i]);
	return n < 0 ? n : fds[0];
}

void tether_target_sockets_forget(long fd)
{
	for (int k = 0; k < KINDS; k++)
		for (int i = 0; i < BATCH; i++) {
			int spare = (int)fd;

			if (__atomic_compare_exchange_n(&spares[k][i], &spare, -1, 0, __ATOMIC_ACQ_REL,
			                                __ATOMIC_RELAXED)) {
				tether_fd_close(fd);
				return;
			}
		}
}
