/* relayed.c - what getsockname and getpeername say for a relayed socket.
 *
 * Through a tcp:// agent the program's socket is a stream to the agent's
 * relay (for UDP, one end of a local SOCK_SEQPACKET pair whose datagrams
 * the stand-in agent relays); the agent's socket in the target is the one
 * the program meant.  The CONNECT reply carries that socket's addresses
 * (TETHER_FLAG_RELAYED); they are kept here and given by getsockname and
 * getpeername, as Go's net package asks right after connect.  Entries are
 * keyed by the socket's inode, not the descriptor: a dup shares it, and a
 * number reused after close names another socket with another inode.  The
 * table is small and recycles its oldest entry; the lock is taken only by
 * these calls on a process that has relayed sockets.  A listener in the
 * target bound elsewhere than the program asked (incoming/) has only its
 * own address here: an empty one is the kernel's to give. */
#include "net/internal.h"

#define SYS_getsockname 51
#define SYS_getpeername 52
#define SLOTS 256
#define SOCKADDR_MAX 28	/* sockaddr_in6: the largest address a relay stands for */

struct slot {
	unsigned long ino;	/* 0: free */
	unsigned char local_len, peer_len;
	unsigned char unconnected; /* getpeername: ENOTCONN (a relayed UDP socket without a peer) */
	unsigned char local[SOCKADDR_MAX], peer[SOCKADDR_MAX];
};

static struct slot slots[SLOTS];
static unsigned next_slot, used;
static int lock;

void tether_relayed_add(long fd, const unsigned char *local, unsigned local_len, const unsigned char *peer,
                        unsigned peer_len)
{
	unsigned long ino = tether_net_inode(fd);
	struct slot *s;

	if (!ino || local_len > SOCKADDR_MAX || peer_len > SOCKADDR_MAX)
		return;
	tether_net_lock(&lock);
	s = 0;
	for (unsigned i = 0; i < SLOTS && !s; i++)
		if (slots[i].ino == ino)
			s = &slots[i]; /* the same socket, named again */
	if (!s)
		s = &slots[next_slot++ % SLOTS];
	s->ino = ino;
	s->unconnected = 0;
	s->local_len = (unsigned char)local_len;
	s->peer_len = (unsigned char)peer_len;
	for (unsigned i = 0; i < local_len; i++)
		s->local[i] = local[i];
	for (unsigned i = 0; i < peer_len; i++)
		s->peer[i] = peer[i];
	__atomic_store_n(&used, 1, __ATOMIC_RELEASE);
	tether_net_unlock(&lock);
}

void tether_relayed_peer(long fd, const unsigned char *peer, unsigned len)
{
	unsigned long ino = tether_net_inode(fd);

	if (!ino || len > SOCKADDR_MAX)
		return;
	tether_net_lock(&lock);
	for (unsigned i = 0; i < SLOTS; i++)
		if (slots[i].ino == ino) {
			slots[i].peer_len = (unsigned char)len;
			slots[i].unconnected = !len;
			for (unsigned j = 0; j < len; j++)
				slots[i].peer[j] = peer[j];
		}
	tether_net_unlock(&lock);
}

/* As the kernel answers: the address cut to the caller's buffer, and its
 * full length in *lenp. */
static long relayed_name(long nr, long fd, long addr, long lenp, long a4, long a5, long a6)
{
	unsigned char sa[SOCKADDR_MAX];
	unsigned long ino;
	unsigned n = 0, room;
	int found = 0, unconnected = 0;

	if (!__atomic_load_n(&used, __ATOMIC_ACQUIRE) || !(ino = tether_net_inode(fd)))
		return tether_raw_syscall6(nr, fd, addr, lenp, a4, a5, a6);
	tether_net_lock(&lock);
	for (unsigned i = 0; i < SLOTS && !found; i++) {
		const struct slot *s = &slots[i];

		if (s->ino != ino)
			continue;
		found = 1;
		unconnected = nr == SYS_getpeername && s->unconnected;
		n = nr == SYS_getsockname ? s->local_len : s->peer_len;
		for (unsigned j = 0; j < n; j++)
			sa[j] = nr == SYS_getsockname ? s->local[j] : s->peer[j];
	}
	tether_net_unlock(&lock);
	if (unconnected)
		return -107; /* ENOTCONN */
	if (!found || !n)
		return tether_raw_syscall6(nr, fd, addr, lenp, a4, a5, a6);
	if (tether_peek(&room, lenp, sizeof room) != sizeof room)
		return -14; /* EFAULT */
	if ((int)room < 0)
		return -22; /* EINVAL */
	if (tether_poke(addr, sa, room < n ? room : n) < 0 || tether_poke(lenp, &n, sizeof n) < 0)
		return -14;
	return 0;
}

void tether_relayed_install(void)
{
	tether_set_handler(SYS_getsockname, relayed_name, 0);
	tether_set_handler(SYS_getpeername, relayed_name, 0);
}
