/* dns.c - host name lookups of libc programs, answered by the target.
 *
 * glibc's getaddrinfo reads resolv.conf and hosts and queries the name
 * server through its internal entry points (__open_nocancel, __connect),
 * which an interposed open() or connect() never sees.  So under tether exec
 * (MODE_DNS) the lookup functions themselves are answered by the agent,
 * which runs getaddrinfo (or, for reverse lookups, getnameinfo) in the
 * target (agent/dns.py).  Numeric addresses
 * and NULL nodes stay with libc: there is nothing to look up.  Go's own
 * resolver does not come here (files/files.c and net.c serve it); cgo's does.
 *
 * Results are built the way glibc's freeaddrinfo frees them (each entry and
 * its sockaddr in one malloc block, ai_canonname in another), so programs
 * free them with libc's freeaddrinfo, which is not interposed. */
#include "net/internal.h"

void *malloc(unsigned long n);
void free(void *p);
void *dlsym(void *handle, const char *name);
int *__errno_location(void);
int *__h_errno_location(void);
#define RTLD_NEXT ((void *)-1L)

#define AF_INET 2
#define AF_INET6 10
#define SOCK_STREAM 1
#define AI_CANONNAME 0x0002
#define AI_NUMERICHOST 0x0004
#define AI_V4MAPPED 0x0008
#define AI_ADDRCONFIG 0x0020
#define EAI_NONAME (-2)
#define EAI_AGAIN (-3)
#define EAI_FAIL (-4)
#define EAI_NODATA (-5)
#define EAI_SERVICE (-8)
#define EAI_MEMORY (-10)
#define EAI_SYSTEM (-11)
#define EAI_OVERFLOW (-12)
#define NI_NUMERICHOST 1
#define NI_NAMEREQD 8
#define NETDB_INTERNAL (-1)
#define HOST_NOT_FOUND 1
#define TRY_AGAIN 2
#define NO_RECOVERY 3
#define NO_DATA 4
#define ERANGE 34
#define NAME_MAX_DNS 253	/* longest host name DNS can carry */
#define SERVICE_MAX 64

struct sockaddr;
struct addrinfo {
	int ai_flags;
	int ai_family;
	int ai_socktype;
	int ai_protocol;
	unsigned ai_addrlen;
	struct sockaddr *ai_addr;
	char *ai_canonname;
	struct addrinfo *ai_next;
};

struct hostent {
	char *h_name;
	char **h_aliases;
	int h_addrtype;
	int h_length;
	char **h_addr_list;
};

typedef int getaddrinfo_fn(const char *, const char *, const struct addrinfo *, struct addrinfo **);
typedef void freeaddrinfo_fn(struct addrinfo *);
typedef int gethostbyname2_r_fn(const char *, int, struct hostent *, char *, unsigned long,
                                struct hostent **, int *);
typedef struct hostent *gethostbyname2_fn(const char *, int);
typedef int getnameinfo_fn(const void *, unsigned, char *, unsigned, char *, unsigned, int);
typedef int gethostbyaddr_r_fn(const void *, unsigned, int, struct hostent *, char *, unsigned long,
                               struct hostent **, int *);
typedef struct hostent *gethostbyaddr_fn(const void *, unsigned, int);

static int dns_on;

void tether_dns_install(void)
{
	dns_on = 1;
}

/* libc's own definition of a function this file interposes. */
static void *libc_next(void **cache, const char *name)
{
	void *fn = __atomic_load_n(cache, __ATOMIC_ACQUIRE);

	if (!fn) {
		fn = dlsym(RTLD_NEXT, name);
		__atomic_store_n(cache, fn, __ATOMIC_RELEASE);
	}
	return fn;
}

#define LIBC(name) ((name##_fn *)libc_next(&name##_cache, #name))
static void *getaddrinfo_cache, *freeaddrinfo_cache, *gethostbyname2_r_cache, *gethostbyname2_cache;
static void *getnameinfo_cache, *gethostbyaddr_r_cache, *gethostbyaddr_cache;

/* 1 if node is a numeric address libc reads itself (for family, 0: any). */
static int numeric(const char *node, int family)
{
	struct addrinfo hints = {AI_NUMERICHOST, family, 0, 0, 0, 0, 0, 0};
	struct addrinfo *res = 0;

	if (LIBC(getaddrinfo)(node, 0, &hints, &res) != 0)
		return 0;
	LIBC(freeaddrinfo)(res);
	return 1;
}

/* What the target answers, as a view into the reply in words. */
struct answer {
	int status;	/* 0 or EAI_*; errno set for EAI_SYSTEM */
	const char *canonname;
	unsigned canonname_len;
	const unsigned char *entries, *end;
};

static unsigned get_u16(const unsigned char *p)
{
	return p[0] | (unsigned)p[1] << 8;
}

/* The request of type in words (its payload ends at end) to the agent: the
 * reply's length (the reply replaces the request) or -errno. */
static long send_request(unsigned long *words, unsigned short type, const unsigned char *end)
{
	struct tether_frame *f = (struct tether_frame *)words;
	int newfd;
	long n;

	f->length = (unsigned)(end - (const unsigned char *)words);
	f->type = type;
	f->flags = 0;
	f->id = 1;
	n = tether_request(words, TETHER_FRAME_MAX, &newfd, 1, 1);
	if (newfd >= 0) /* no lookup reply carries one */
		tether_raw_syscall6(3 /* close */, newfd, 0, 0, 0, 0, 0);
	return n;
}

static void ask_target(unsigned long *words, const char *node, const char *service,
                       const struct addrinfo *hints, struct answer *a)
{
	struct tether_frame *f = (struct tether_frame *)words;
	struct tether_resolve *r = (struct tether_resolve *)(f + 1);
	const struct tether_resolve_reply *reply = (const void *)(f + 1);
	unsigned long node_len = tether_strlen(node), service_len = service ? tether_strlen(service) : 0;
	unsigned char *p;
	long n;

	a->status = EAI_NONAME;
	if (node_len > NAME_MAX_DNS)
		return;
	a->status = EAI_SERVICE;
	if (service_len > SERVICE_MAX)
		return;
	r->flags = hints->ai_flags;
	r->family = hints->ai_family;
	r->socktype = hints->ai_socktype;
	r->protocol = hints->ai_protocol;
	p = tether_put_string((unsigned char *)(r + 1), node, (unsigned)node_len);
	p = tether_put_string(p, service ? service : "", (unsigned)service_len);
	n = send_request(words, TETHER_MSG_RESOLVE, p);
	a->status = EAI_SYSTEM;
	if (n < 0) {
		*__errno_location() = (int)-n; /* the agent is gone (ECONNREFUSED) or wedged */
		return;
	}
	*__errno_location() = 71; /* EPROTO unless the reply makes sense */
	if (f->type != TETHER_MSG_RESOLVE_REPLY || n < (long)(sizeof *f + sizeof *reply + 2))
		return;
	a->end = (const unsigned char *)words + n;
	a->canonname_len = get_u16((const unsigned char *)(reply + 1));
	a->canonname = (const char *)(reply + 1) + 2;
	a->entries = (const unsigned char *)a->canonname + a->canonname_len;
	if (a->entries > a->end)
		return;
	a->status = reply->status;
	if (reply->status == EAI_SYSTEM)
		*__errno_location() = reply->err;
}

/* The next entry's family and sockaddr, or 0 at the end (or at a bad one). */
static const unsigned char *next_entry(struct answer *a, const struct tether_resolve_entry **e,
                                       unsigned *len)
{
	const unsigned char *sa;

	if (a->entries + sizeof **e + 2 > a->end)
		return 0;
	*e = (const struct tether_resolve_entry *)a->entries;
	*len = get_u16(a->entries + sizeof **e);
	sa = a->entries + sizeof **e + 2;
	if (sa + *len > a->end || *len != ((*e)->family == AF_INET6 ? 28u : 16u) ||
	    ((*e)->family != AF_INET && (*e)->family != AF_INET6))
		return 0;
	a->entries = sa + *len;
	return sa;
}

static void copy(void *dst, const void *src, unsigned long n)
{
	for (unsigned long i = 0; i < n; i++)
		((unsigned char *)dst)[i] = ((const unsigned char *)src)[i];
}

static void free_list(struct addrinfo *ai)
{
	while (ai) {
		struct addrinfo *next = ai->ai_next;

		free(ai->ai_canonname);
		free(ai);
		ai = next;
	}
}

/* The answer as getaddrinfo's list (glibc's allocation layout). */
static int to_addrinfo(struct answer *a, int flags, struct addrinfo **res)
{
	struct addrinfo *head = 0, **tail = &head;
	const struct tether_resolve_entry *e;
	const unsigned char *sa;
	unsigned len;

	while ((sa = next_entry(a, &e, &len))) {
		struct addrinfo *ai = malloc(sizeof *ai + len);

		if (!ai) {
			free_list(head);
			return EAI_MEMORY;
		}
		*ai = (struct addrinfo){0, e->family, e->socktype, e->protocol, len,
		                        (struct sockaddr *)(ai + 1), 0, 0};
		copy(ai + 1, sa, len);
		*tail = ai;
		tail = &ai->ai_next;
	}
	if (!head)
		return EAI_NONAME;
	if (flags & AI_CANONNAME && a->canonname_len) {
		head->ai_canonname = malloc(a->canonname_len + 1);
		if (!head->ai_canonname) {
			free_list(head);
			return EAI_MEMORY;
		}
		copy(head->ai_canonname, a->canonname, a->canonname_len);
		head->ai_canonname[a->canonname_len] = '\0';
	}
	*res = head;
	return 0;
}

TETHER_EXPORT int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
                              struct addrinfo **res)
{
	/* glibc's defaults for hints == NULL */
	struct addrinfo defaults = {AI_V4MAPPED | AI_ADDRCONFIG, 0, 0, 0, 0, 0, 0, 0};
	unsigned long words[TETHER_FRAME_MAX / 8];
	struct answer a;

	if (!dns_on || !node || !*node || (hints && hints->ai_flags & AI_NUMERICHOST))
		return LIBC(getaddrinfo)(node, service, hints, res);
	if (!hints)
		hints = &defaults;
	if (numeric(node, 0))
		return LIBC(getaddrinfo)(node, service, hints, res);
	ask_target(words, node, service, hints, &a);
	return a.status ? a.status : to_addrinfo(&a, hints->ai_flags, res);
}

/* The _r functions report through *h_errnop and, as glibc's do, through
 * h_errno as well (CPython reads the latter). */
static void set_h_errno(int *h_errnop, int value)
{
	*h_errnop = value;
	*__h_errno_location() = value;
}

static int h_errno_for(int status)
{
	switch (status) {
	case EAI_NONAME: return HOST_NOT_FOUND;
	case EAI_NODATA: return NO_DATA;
	case EAI_AGAIN: return TRY_AGAIN;
	case EAI_FAIL: return NO_RECOVERY;
	default: return NETDB_INTERNAL;
	}
}

/* Lays out a hostent in buf for count addresses of af and a name: the
 * pointer arrays, room for the addresses (h_addr_list[i] points into it, to
 * be filled), then the name.  0, or ERANGE when buf is too small. */
static int layout_hostent(struct hostent *h, char *buf, unsigned long size, int af, unsigned count,
                          const char *name, unsigned long name_len)
{
	const unsigned addr_len = af == AF_INET6 ? 16 : 4;
	char **addrs = (char **)(((unsigned long)buf + 7) & ~7ul);
	char *data;

	if ((unsigned long)((char *)addrs - buf) + (count + 2) * sizeof(char *) + count * addr_len + name_len + 1 >
	    size)
		return ERANGE;
	h->h_aliases = addrs + count + 1;
	h->h_aliases[0] = 0;
	data = (char *)(h->h_aliases + 1);
	for (unsigned i = 0; i < count; i++)
		addrs[i] = data + i * addr_len;
	addrs[count] = 0;
	data += count * addr_len;
	copy(data, name, name_len);
	data[name_len] = '\0';
	h->h_name = data;
	h->h_addrtype = af;
	h->h_length = (int)addr_len;
	h->h_addr_list = addrs;
	return 0;
}

/* The answer's addresses of family af as a hostent in buf. */
static int to_hostent(struct answer *a, const char *name, int af, struct hostent *h, char *buf,
                      unsigned long size)
{
	const unsigned addr_len = af == AF_INET6 ? 16 : 4, offset = af == AF_INET6 ? 8 : 4;
	const struct tether_resolve_entry *e;
	const unsigned char *sa;
	unsigned len, count = 0;
	struct answer scan = *a;
	int err;

	while ((sa = next_entry(&scan, &e, &len)))
		count += e->family == af;
	err = layout_hostent(h, buf, size, af, count, a->canonname_len ? a->canonname : name,
	                     a->canonname_len ? a->canonname_len : tether_strlen(name));
	if (err)
		return err;
	count = 0;
	while ((sa = next_entry(a, &e, &len)))
		if (e->family == af)
			copy(h->h_addr_list[count++], sa + offset, addr_len); /* sin_addr at 4, sin6_addr at 8 */
	return 0;
}

TETHER_EXPORT int gethostbyname2_r(const char *name, int af, struct hostent *ret, char *buf,
                                   unsigned long size, struct hostent **result, int *h_errnop)
{
	struct addrinfo hints = {AI_CANONNAME, af, SOCK_STREAM, 0, 0, 0, 0, 0};
	unsigned long words[TETHER_FRAME_MAX / 8];
	struct answer a;
	int err;

	if (!dns_on || !name || (af != AF_INET && af != AF_INET6) || numeric(name, af))
		return LIBC(gethostbyname2_r)(name, af, ret, buf, size, result, h_errnop);
	*result = 0;
	ask_target(words, name, 0, &hints, &a);
	if (a.status) {
		set_h_errno(h_errnop, h_errno_for(a.status));
		/* As glibc: not found is no error of the call; a failure is. */
		return *h_errnop == NETDB_INTERNAL ? *__errno_location() : 0;
	}
	err = to_hostent(&a, name, af, ret, buf, size);
	if (err) {
		set_h_errno(h_errnop, NETDB_INTERNAL);
		*__errno_location() = err;
		return err;
	}
	if (!ret->h_addr_list[0]) {
		set_h_errno(h_errnop, NO_DATA);
		return 0;
	}
	*result = ret;
	return 0;
}

TETHER_EXPORT int gethostbyname_r(const char *name, struct hostent *ret, char *buf, unsigned long size,
                                  struct hostent **result, int *h_errnop)
{
	return gethostbyname2_r(name, AF_INET, ret, buf, size, result, h_errnop);
}

/* The non-reentrant forms share one buffer, as glibc's do. */
static struct hostent static_host;
static unsigned long static_buf[1024 / 8 + 64];

TETHER_EXPORT struct hostent *gethostbyname2(const char *name, int af)
{
	struct hostent *result;

	if (!dns_on)
		return LIBC(gethostbyname2)(name, af);
	gethostbyname2_r(name, af, &static_host, (char *)static_buf, sizeof static_buf, &result,
	                 __h_errno_location());
	return result;
}

TETHER_EXPORT struct hostent *gethostbyname(const char *name)
{
	return gethostbyname2(name, AF_INET);
}

/* A reverse lookup in the target: status 0 and host and service in the
 * reply (views into words), or an EAI_* code (errno set for EAI_SYSTEM). */
struct names {
	const char *host, *service;
	unsigned host_len, service_len;
};

static int ask_names(unsigned long *words, const unsigned char *sa, unsigned len, int flags, struct names *out)
{
	struct tether_frame *f = (struct tether_frame *)words;
	struct tether_nameinfo *q = (struct tether_nameinfo *)(f + 1);
	const struct tether_resolve_reply *reply = (const void *)(f + 1);
	const unsigned char *p, *end;
	long n;

	q->flags = flags;
	n = send_request(words, TETHER_MSG_NAMEINFO, tether_put_string((unsigned char *)(q + 1), (const char *)sa, len));
	if (n < 0) {
		*__errno_location() = (int)-n;
		return EAI_SYSTEM;
	}
	*__errno_location() = 71; /* EPROTO unless the reply makes sense */
	end = (const unsigned char *)words + n;
	p = (const unsigned char *)(reply + 1);
	if (f->type != TETHER_MSG_NAMEINFO_REPLY || p + 4 > end)
		return EAI_SYSTEM;
	out->host_len = get_u16(p);
	out->host = (const char *)p + 2;
	p += 2 + out->host_len;
	if (p + 2 > end || p + 2 + get_u16(p) > end)
		return EAI_SYSTEM;
	out->service_len = get_u16(p);
	out->service = (const char *)p + 2;
	if (reply->status == EAI_SYSTEM)
		*__errno_location() = reply->err;
	return reply->status;
}

/* s (n bytes) and a NUL into dst of size; 0 or EAI_OVERFLOW. */
static int put_name(char *dst, unsigned size, const char *s, unsigned n)
{
	if (n >= size)
		return EAI_OVERFLOW;
	copy(dst, s, n);
	dst[n] = '\0';
	return 0;
}

TETHER_EXPORT int getnameinfo(const void *sa, unsigned len, char *host, unsigned hostlen, char *serv,
                              unsigned servlen, int flags)
{
	unsigned long words[TETHER_FRAME_MAX / 8];
	unsigned short family = len >= 2 ? *(const unsigned short *)sa : 0;
	struct names names;
	int status;

	if (!dns_on || !host || !hostlen || flags & NI_NUMERICHOST ||
	    !((family == AF_INET && len >= 16) || (family == AF_INET6 && len >= 28)))
		return LIBC(getnameinfo)(sa, len, host, hostlen, serv, servlen, flags);
	status = ask_names(words, sa, family == AF_INET ? 16 : 28, flags, &names);
	if (status)
		return status;
	if ((status = put_name(host, hostlen, names.host, names.host_len)))
		return status;
	return serv && servlen ? put_name(serv, servlen, names.service, names.service_len) : 0;
}

TETHER_EXPORT int gethostbyaddr_r(const void *addr, unsigned len, int af, struct hostent *ret, char *buf,
                                  unsigned long size, struct hostent **result, int *h_errnop)
{
	unsigned long words[TETHER_FRAME_MAX / 8];
	unsigned char sa[28] = {0};
	struct names names;
	int status;

	if (!dns_on || !((af == AF_INET && len == 4) || (af == AF_INET6 && len == 16)))
		return LIBC(gethostbyaddr_r)(addr, len, af, ret, buf, size, result, h_errnop);
	*result = 0;
	sa[0] = (unsigned char)af; /* sa_family, little-endian */
	copy(sa + (af == AF_INET ? 4 : 8), addr, len); /* sin_addr at 4, sin6_addr at 8 */
	status = ask_names(words, sa, af == AF_INET ? 16 : 28, NI_NAMEREQD, &names);
	if (status) {
		set_h_errno(h_errnop, h_errno_for(status));
		return *h_errnop == NETDB_INTERNAL ? *__errno_location() : 0;
	}
	if (layout_hostent(ret, buf, size, af, 1, names.host, names.host_len)) {
		set_h_errno(h_errnop, NETDB_INTERNAL);
		*__errno_location() = ERANGE;
		return ERANGE;
	}
	copy(ret->h_addr_list[0], addr, len);
	*result = ret;
	return 0;
}

TETHER_EXPORT struct hostent *gethostbyaddr(const void *addr, unsigned len, int af)
{
	struct hostent *result;

	if (!dns_on)
		return LIBC(gethostbyaddr)(addr, len, af);
	gethostbyaddr_r(addr, len, af, &static_host, (char *)static_buf, sizeof static_buf, &result,
	                __h_errno_location());
	return result;
}
