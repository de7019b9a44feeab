/* protocol.h - the wire between the layer and the session.
 *
 * Mirrored by src/tether/protocol/ (wire.py and one module per family of
 * messages); tests/test_protocol.py compiles
 * this header and checks that sizes, offsets and numbers agree.  Every frame
 * starts with struct tether_frame; all integers are little-endian (the layer
 * only runs on x86-64).  The layer talks over a unix SOCK_SEQPACKET socket,
 * one frame per message, so frames from many threads never interleave. */
#ifndef TETHER_PROTOCOL_H
#define TETHER_PROTOCOL_H

#define TETHER_PROTOCOL_VERSION 3
#define TETHER_FRAME_MAX 4096	/* no frame is longer; parsers reject more */

/* frame types */
#define TETHER_MSG_HELLO 1	  /* layer -> session: who is speaking */
#define TETHER_MSG_HELLO_REPLY 2  /* session -> layer: mode and hook plan */
#define TETHER_MSG_PLAN_REQUEST 3 /* layer -> session: plan for a library (path, build id) */
#define TETHER_MSG_PLAN_REPLY 4	  /* session -> layer: that plan (maybe empty) */
#define TETHER_MSG_AGENT_HELLO 5  /* session -> agent: version, capabilities */
#define TETHER_MSG_AGENT_HELLO_REPLY 6
#define TETHER_MSG_AUTH_CHALLENGE 7 /* network agent -> session: its nonce (session<->agent only) */
#define TETHER_MSG_AUTH_RESPONSE 8 /* session -> agent: its nonce and proof of the token */
#define TETHER_MSG_AUTH_OK 9	  /* agent -> session: the agent's proof of the token */
#define TETHER_MSG_AUTH_TICKET 10 /* session -> agent: a data connection's ticket (protocol/auth.py) */
#define TETHER_MSG_ERROR 15	  /* reply to any request: errno and a message */
#define TETHER_MSG_SYSCALL 16	  /* layer -> session: one traced syscall */
#define TETHER_MSG_RING_WAKE 17	  /* layer -> session: its trace ring has records (no payload) */
#define TETHER_MSG_RING_REQUEST 18 /* layer -> session, from a forked child on a line of its own:
				    * a trace ring of its own (struct tether_ring_request) */
#define TETHER_MSG_RING_REPLY 19  /* session -> layer: no payload; the ring's memfd rides along */
#define TETHER_MSG_EXEC_NOTICE 20 /* layer -> session, on a line of its own: this thread is about to
				   * exec a static program (struct tether_exec_notice, the path) */
#define TETHER_MSG_EXEC_NOTICE_REPLY 21 /* session -> layer: struct tether_exec_notice_reply */
#define TETHER_MSG_FILES_REQUEST 22 /* layer -> session: the file rules (no payload) */
#define TETHER_MSG_FILES_REPLY 23 /* session -> layer: struct tether_files_rules and the rules */
#define TETHER_MSG_FILES_NOTICE 24 /* layer -> session: a path's decision (struct tether_files_notice) */
#define TETHER_MSG_CONNECT 32	  /* open and connect a socket in the target */
#define TETHER_MSG_CONNECT_REPLY 33 /* success; the descriptor rides along (SCM_RIGHTS) */
#define TETHER_MSG_OPEN 34	  /* open a file in the target, read-only */
#define TETHER_MSG_OPEN_REPLY 35  /* success; the descriptor rides along */
#define TETHER_MSG_SOCKET 38	  /* a socket made in the target, not connected */
#define TETHER_MSG_SOCKET_REPLY 39 /* success; the descriptor rides along */
#define TETHER_MSG_RESOLVE 40	  /* getaddrinfo() in the target */
#define TETHER_MSG_RESOLVE_REPLY 41 /* its status and addresses */
#define TETHER_MSG_NAMEINFO 42	  /* getnameinfo() in the target: an address's name */
#define TETHER_MSG_NAMEINFO_REPLY 43 /* its status, host and service */
#define TETHER_MSG_ENV 36	  /* session -> agent: the target's environment */
#define TETHER_MSG_ENV_REPLY 37	  /* NUL-terminated KEY=VALUE entries, maybe over several frames */
#define TETHER_MSG_READ_FILE 44	  /* session -> agent: a file's contents (path as OPEN) */
#define TETHER_MSG_READ_FILE_REPLY 45 /* the contents, maybe over several frames */
#define TETHER_MSG_STREAM 46	  /* session -> network agent, on a data connection: connect (as CONNECT), then relay */
#define TETHER_MSG_STREAM_REPLY 47 /* connected: two sockaddrs as CONNECT_REPLY's; the relayed bytes follow */
#define TETHER_MSG_INCOMING 48	  /* session -> agent: how the program's listeners are served */
#define TETHER_MSG_INCOMING_REPLY 49 /* taken (no payload) */
#define TETHER_MSG_LISTEN 50	  /* the program listens on a TCP port: the target's, or stay here */
#define TETHER_MSG_LISTEN_REPLY 51 /* how; in the target, the listening socket rides along */
#define TETHER_MSG_ACCEPT 52	  /* stand-in -> network agent, on a data connection: wait for a connection to a lease */
#define TETHER_MSG_ACCEPT_REPLY 53 /* one came: two sockaddrs as STREAM_REPLY's; its relayed bytes follow */
#define TETHER_MSG_STREAMS 54	  /* layer -> a network agent's stand-in: data connections ahead of need */
#define TETHER_MSG_STREAMS_REPLY 55 /* no payload; 1 to count connections, proven to the agent, ride along */
#define TETHER_MSG_TARGET_FILES 56	  /* session -> network agent's stand-in, then stand-in -> agent on each
				   * data connection of its file system: the target's files (Python only) */
#define TETHER_MSG_TARGET_FILES_REPLY 57 /* no payload; on a data connection, file operations follow */

/* frame flags */
#define TETHER_FLAG_ENTRY 1	/* SYSCALL sent before the call (execve, exit): no result */
#define TETHER_FLAG_MORE 2	/* ENV_REPLY, FILES_REPLY: more frames of the same reply follow */
#define TETHER_FLAG_RELAYED 4	/* CONNECT_REPLY: the descriptor is a stream to a relay; the
				 * target socket's own and peer addresses follow the status */
#define TETHER_FLAG_BIND 8	/* CONNECT, STREAM of a UDP socket: bind it to the sockaddr's
				 * port (any address) and connect it nowhere */

/* HELLO capabilities */
#define TETHER_CAP_TRACE_RING 1	/* takes a trace ring (struct tether_ring) with HELLO_REPLY */

/* HELLO_REPLY modes */
#define TETHER_MODE_TRACE 1	/* report every hooked syscall */
#define TETHER_MODE_NET 2	/* connects the rules send to the target go to the agent */
#define TETHER_MODE_DNS 4	/* open the resolver's files (resolv.conf, hosts) in the target */
#define TETHER_MODE_SOCKETS 8	/* the agent hands out sockets made in the target (SOCKET):
				 * connects take one and connect it here; without it (a
				 * relaying network agent) they are CONNECT requests */
#define TETHER_MODE_INJECT 16	/* the session loads the layer into static programs that
				 * hooked ones exec: tell it first (EXEC_NOTICE) */
#define TETHER_MODE_INCOMING 32	/* listen() on a TCP port asks the agent (LISTEN) */
#define TETHER_MODE_FILES 64	/* paths the file rules say are the target's are opened
				 * there (FILES_REQUEST at start; files/) */
#define TETHER_MODE_STREAMS 128	/* a relaying network agent's stand-in hands out data
				 * connections (STREAMS): a TCP connect sends STREAM on one */

/* AGENT_HELLO capabilities */
#define TETHER_CAP_SOCKETS 1	/* SOCKET replies carry descriptors made in the target */
#define TETHER_CAP_STREAMS 2	/* STREAMS replies carry data connections to a network agent */

/* data item kinds in a SYSCALL frame */
#define TETHER_DATA_STRING 1	/* NUL-free bytes of a C string (path), maybe cut */
#define TETHER_DATA_SOCKADDR 2	/* a struct sockaddr_*, as long as its length says */

struct tether_frame {
	unsigned int length;	/* whole frame, header included */
	unsigned short type;
	unsigned short flags;
	unsigned long id;	/* request id; replies repeat it; 0 for events */
};

/* HELLO payload, then two strings, each a u16 length and bytes: the
 * executable's path and its Go build id (empty if not Go). */
struct tether_hello {
	unsigned short version;
	unsigned short reserved;
	unsigned int capabilities;
	int pid;
	int ppid;
};

/* HELLO_REPLY payload, then three strings, each a u16 length and bytes: the
 * hook plan (the TETHER_GO_PLAN format of go/hook.c; empty when there is
 * nothing to hook), the path of the agent's socket for CONNECT and OPEN
 * requests, and the outgoing rules (net/route.c's format); both empty unless
 * the mode asks for them. */
struct tether_hello_reply {
	unsigned short version;
	unsigned short reserved;
	unsigned int mode;
};

/* PLAN_REQUEST payload: two strings as in HELLO (the library's path and Go
 * build id).  PLAN_REPLY payload: one string, the plan.
 *
 * RING_REQUEST payload: */
struct tether_ring_request {
	int pid;		/* the forked child's */
	unsigned int reserved;
};

/* EXEC_NOTICE: the thread that will exec (the session attaches to it with
 * ptrace, and loads the layer at its exec); then the path as execve gets
 * it (a u16 length and the bytes; relative to the process's directory). */
struct tether_exec_notice {
	int pid, tid;
};

/* EXEC_NOTICE_REPLY: 0, the session waits for the exec; or an errno, and
 * the program will run unhooked (the session has said why). */
struct tether_exec_notice_reply {
	int status;
	unsigned int reserved;
};

/* FILES_REPLY payload: this header, then count rules (each a struct
 * tether_files_rule and its ops), then classes byte sets of 32 bytes (bit
 * c of a set: byte c is in it).  A rule is a program for files/rules.c's
 * matcher, compiled by the session (session/files.py) from a regular
 * expression over the path's bytes; the program carries its own search
 * loop, so it runs from op 0 at the path's first byte.  The first rule
 * that matches decides; none: fallback. */
#define TETHER_FILES_LOCAL 0	/* the call runs here */
#define TETHER_FILES_READ 1	/* read in the target; opened for writing: here (a notice says so) */
#define TETHER_FILES_WRITE 2	/* read and written in the target */
#define TETHER_FILES_NOT_FOUND 3 /* ENOENT */
#define TETHER_FILES_VERBOSE 1	/* flags: a FILES_NOTICE for every decided path (tether exec -v) */
#define TETHER_FILES_OPS_MAX 255 /* ops in one rule */
#define TETHER_FILES_RULES_MAX 16384 /* the payload, over frames with TETHER_FLAG_MORE */

struct tether_files_rules {
	unsigned short count;
	unsigned short classes;
	unsigned char fallback;	/* TETHER_FILES_* */
	unsigned char flags;
	unsigned short reserved;
};

struct tether_files_rule {
	unsigned char action;	/* TETHER_FILES_* */
	unsigned char reserved;
	unsigned short ops;	/* 1 to TETHER_FILES_OPS_MAX */
};

#define TETHER_OP_BYTE 1	/* the byte arg */
#define TETHER_OP_ANY 2		/* any byte */
#define TETHER_OP_CLASS 3	/* a byte of class x */
#define TETHER_OP_SPLIT 4	/* go on at the next op and at x */
#define TETHER_OP_JMP 5		/* go on at x */
#define TETHER_OP_BOL 6		/* at the path's start */
#define TETHER_OP_EOL 7		/* at its end; arg 1: or before a last newline (Python's $) */
#define TETHER_OP_MATCH 8

struct tether_files_op {
	unsigned char op;	/* TETHER_OP_* */
	unsigned char arg;
	unsigned short x;	/* an op's index in the rule, or a class's */
};

/* FILES_NOTICE payload, then the path (a u16 length and bytes, cut to fit
 * TETHER_SMALL_FRAME).  rule: the deciding rule's index, or -1 for the
 * fallback. */
#define TETHER_FILES_WRITTEN_HERE 1 /* what: a READ path opened for writing, opened here */
#define TETHER_FILES_DECIDED 2	/* what: the decision (only with TETHER_FILES_VERBOSE) */

struct tether_files_notice {
	int rule;
	unsigned char action;
	unsigned char what;
	unsigned short reserved;
};

/*
 *
 * SYSCALL payload, then data items: struct tether_data and its bytes,
 * padded to 8 bytes. */
struct tether_syscall_event {
	int pid;
	int tid;
	long nr;
	long args[6];
	long ret;		/* kernel style: -errno on failure */
};

struct tether_data {
	unsigned char arg;	/* which argument (0-5) it was read from */
	unsigned char kind;	/* TETHER_DATA_* */
	unsigned short length;	/* bytes that follow */
	unsigned int full_length; /* before cutting to fit the frame */
};

/* The trace ring: shared memory (a memfd the session makes and passes with
 * HELLO_REPLY, SCM_RIGHTS, when tracing and the HELLO offered
 * TETHER_CAP_TRACE_RING) into which every thread of the process writes its
 * SYSCALL events with no syscall.  A child forked without exec asks for a
 * ring of its own (RING_REQUEST, on a new connection) with its first event;
 * one sharing its parent's memory (vfork) sends its events as frames.
 * head, published and tail count bytes since the start and never wrap; a
 * record lives at (position & (size - 1)) after this header, may run over
 * the end of the area and on at its start, and is 8-byte aligned, so its
 * header never does.
 *
 * A producer reserves with a fetch-add on head, waits while its record's
 * end is more than size bytes past tail (futex on space, counted in
 * waiters), writes the payload, then stores the record header in one
 * 8-byte release store: a zero header means "not yet written".  Then it
 * moves published over its record if published was at its start, and on
 * over the written records after it (a writer that finished first left
 * that to it): everything before published is written, in order.  The
 * session copies [tail, published) out in one piece, zeroes those bytes,
 * then moves tail, bumping space and waking the futex if there are
 * waiters.  It sets sleeping before it waits on the socket; the producer
 * that finds it set clears it and sends RING_WAKE.  Each group of fields
 * has its own cache line, by who writes it. */
#define TETHER_RING_MAGIC 0x676e6972u	/* "ring" */
#define TETHER_RING_VERSION 1

struct tether_ring {
	/* set by the session before it passes the ring on */
	unsigned int magic;
	unsigned int version;
	unsigned long size;	/* bytes of records after this header: a power of two */
	unsigned char pad0[48];
	/* producers */
	unsigned long head;	/* bytes reserved */
	unsigned long published; /* bytes written, in order */
	unsigned int waiters;	/* producers waiting for space */
	unsigned char pad1[44];
	/* the session */
	unsigned long tail;	/* bytes read and zeroed again */
	unsigned int space;	/* futex word: bumped when tail moves while there are waiters */
	unsigned int sleeping;	/* 1: the session waits for RING_WAKE before it reads again */
	unsigned int closed;	/* 1: the session reads no more: drop events, never wait */
	unsigned char pad2[44];
};

/* A record in the ring: this header, then the payload of the frame of that
 * type (SYSCALL: struct tether_syscall_event and its data items). */
struct tether_record {
	unsigned int length;	/* header and payload; the next record starts at the next
				 * multiple of 8 (the layer's are multiples of 8) */
	unsigned short type;	/* TETHER_MSG_SYSCALL */
	unsigned short flags;	/* TETHER_FLAG_ENTRY */
};

/* ERROR payload: then a u16 length and a message. */
struct tether_error {
	int err;		/* positive errno */
};

/* CONNECT payload: then a u16 length and the sockaddr bytes as the program
 * gave them.  The reply comes once connected; timeout_ms 0: the agent's
 * own limit (25 s). */
struct tether_connect {
	unsigned short family;
	unsigned short socktype;
	int protocol;
	unsigned int timeout_ms;
};

/* CONNECT_REPLY payload.  With TETHER_FLAG_RELAYED two sockaddrs follow,
 * each a u16 length and bytes: what getsockname and getpeername answer for
 * the descriptor (they would otherwise name the relay's connection). */
struct tether_connect_reply {
	int status;		/* 0: connected (a failure is an ERROR reply) */
};

/* A relayed UDP socket (through a network agent) is one end of a unix
 * SOCK_SEQPACKET pair here, each of whose records is this head and one
 * datagram's bytes: the peer it came from, or is for (addr_len 0: the
 * target socket's connected peer).  Between the stand-in and the agent,
 * each record follows a u32 length. */
#define TETHER_DATAGRAM_ADDR_MAX 28 /* sockaddr_in6 */
struct tether_datagram {
	unsigned short addr_len;
	unsigned short reserved;
	unsigned char addr[TETHER_DATAGRAM_ADDR_MAX];
};

/* SOCKET payload: the kind of socket to make in the target, and how many
 * (1 to TETHER_SOCKETS_MAX): the reply carries them all. */
#define TETHER_SOCKETS_MAX 16
struct tether_socket {
	unsigned short family;
	unsigned short socktype;
	int protocol;
	unsigned int count;
	unsigned int reserved;
};

/* RESOLVE payload: getaddrinfo's hints, then two strings (u16 length and
 * bytes): the node (host name) and the service (may be empty). */
struct tether_resolve {
	int flags;		/* AI_* as glibc numbers them */
	int family;
	int socktype;
	int protocol;
};

/* RESOLVE_REPLY payload, then a string (the canonical name, empty unless
 * AI_CANONNAME asked for it) and entries: struct tether_resolve_entry, a
 * u16 length and the sockaddr bytes.  Entries are in getaddrinfo's order. */
struct tether_resolve_reply {
	int status;		/* 0, or getaddrinfo's EAI_* code (glibc's numbers, negative) */
	int err;		/* errno, for EAI_SYSTEM */
};

struct tether_resolve_entry {
	unsigned short family;
	unsigned short socktype;
	int protocol;
};

/* NAMEINFO payload: flags (NI_* as glibc numbers them), then a u16 length
 * and the sockaddr bytes.  NAMEINFO_REPLY payload: struct
 * tether_resolve_reply (status and errno as for RESOLVE), then two strings:
 * the host and the service. */
struct tether_nameinfo {
	int flags;
};

/* INCOMING payload, then nports u16 ports and nmaps pairs of u16 (the
 * program's port, the target's).  The agent decides per LISTEN with it. */
#define TETHER_INCOMING_OFF 0	/* every listener stays here */
#define TETHER_INCOMING_MIRROR 1 /* the target's app serves; the program gets copies */
#define TETHER_INCOMING_STEAL 2	/* the program serves the target's port */
#define TETHER_INCOMING_LOOPBACK_LOCAL 1 /* flags: listeners on 127.0.0.1 or ::1 stay here */
#define TETHER_INCOMING_IGNORE 2 /* flags: the ports are the ones that stay here (else the only ones served) */
struct tether_incoming {
	unsigned short mode;
	unsigned short flags;
	unsigned short nports;	/* 0 and no IGNORE flag: every port */
	unsigned short nmaps;
};

/* LISTEN payload: then a u16 length and the sockaddr the program's socket
 * is bound to.  The layer sends it on a connection of its own and keeps
 * that connection for as long as the listener lives: the agent undoes
 * what it set up in the target when the connection closes. */
#define TETHER_LISTEN_V6ONLY 1	/* flags: the program's IPv6 socket is IPV6_V6ONLY */
struct tether_listen {
	unsigned short family;
	unsigned short flags;
	int backlog;
};

/* LISTEN_REPLY payload. */
#define TETHER_LISTEN_LOCAL 0	/* listen here, as if tether were not there */
#define TETHER_LISTEN_TARGET 1	/* the socket that rides along listens in the target */
#define TETHER_LISTEN_RELAYED 2	/* a network agent listens there; the socket that rides
				 * along (unix SOCK_SEQPACKET) brings each connection it
				 * accepts: an ACCEPT_REPLY frame, the descriptor beside it */
struct tether_listen_reply {
	unsigned short how;
	unsigned short reserved;
	unsigned int lease;	/* between a network agent and its stand-in only */
};

/* STREAMS payload: how many data connections (1 to TETHER_SOCKETS_MAX). */
struct tether_streams {
	unsigned int count;
	unsigned int reserved;
};

/* OPEN payload: then a u16 length and the path. */
struct tether_open {
	int flags;		/* the program's open flags; only O_RDONLY opens travel */
	unsigned int mode;
};

#endif
