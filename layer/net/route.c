/* route.c - which outgoing connections go to the target.
 *
 * The session turns tether exec's rules (--local, --remote, the target's
 * name servers, the defaults) into an ordered list; the first rule that
 * matches decides, and the last entry is the default.  Text form, ';'
 * between rules (src/tether/session/policy.py writes it):
 *
 *   <L|R><family 0|4|6>/<address in hex>/<prefix length>/<port or 0>
 *   *<L|R>        the default
 *
 * Family 0 matches any address.  An IPv4-mapped IPv6 address is matched as
 * the IPv4 address it carries.  Parsed once at start-up; evaluating it
 * takes no lock and makes no syscall. */
#include "net/internal.h"

#define AF_INET 2
#define AF_INET6 10

static const char *number(const char *p, unsigned *out, unsigned max)
{
	unsigned v = 0;

	if (*p < '0' || *p > '9')
		return 0;
	while (*p >= '0' && *p <= '9') {
		v = v * 10 + (unsigned)(*p++ - '0');
		if (v > max)
			return 0;
	}
	*out = v;
	return p;
}

/* Parse text into r; returns the number of rules or -1 if malformed. */
int tether_route_parse(const char *p, struct tether_route *r)
{
	r->n = 0;
	r->default_remote = 0;
	for (;;) {
		struct tether_route_rule *rule;
		unsigned family, prefix, port, nbytes;

		if (*p == '*') {
			if ((p[1] != 'L' && p[1] != 'R') || p[2])
				return -1;
			r->default_remote = p[1] == 'R';
			return (int)r->n;
		}
		if (r->n == TETHER_ROUTE_MAX || (*p != 'L' && *p != 'R'))
			return -1;
		rule = &r->rules[r->n];
		rule->remote = *p++ == 'R';
		if (!(p = number(p, &family, 6)) || (family != 0 && family != 4 && family != 6) || *p++ != '/')
			return -1;
		nbytes = family == 4 ? 4 : family == 6 ? 16 : 0;
		for (unsigned i = 0; i < 16; i++)
			rule->addr[i] = 0;
		if (tether_hex_bytes(&p, rule->addr, nbytes) < 0)
			return -1;
		if (*p++ != '/' || !(p = number(p, &prefix, nbytes * 8)) || *p++ != '/' ||
		    !(p = number(p, &port, 65535)) || *p++ != ';')
			return -1;
		rule->family = (unsigned char)family;
		rule->prefix = (unsigned char)prefix;
		rule->port = (unsigned short)port;
		r->n++;
	}
}

static int prefix_match(const unsigned char *a, const unsigned char *b, unsigned bits)
{
	unsigned i = 0;

	for (; bits >= 8; bits -= 8, i++)
		if (a[i] != b[i])
			return 0;
	return !bits || ((a[i] ^ b[i]) & (0xff00u >> bits) & 0xff) == 0;
}

/* 1 if the connection to sa goes to the target, 0 if it stays here, -1 if
 * sa is not an IPv4/IPv6 address (it stays here). */
int tether_route_remote(const struct tether_route *r, const unsigned char *sa, long len)
{
	static const unsigned char v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
	const unsigned char *addr;
	unsigned family, port;

	if (len >= 8 && sa[0] == AF_INET && sa[1] == 0) {
		family = 4;
		addr = sa + 4;
	} else if (len >= 24 && sa[0] == AF_INET6 && sa[1] == 0) {
		family = 6;
		addr = sa + 8;
		if (!tether_memcmp(addr, v4mapped, 12)) {
			family = 4;
			addr += 12;
		}
	} else {
		return -1;
	}
	port = (unsigned)sa[2] << 8 | sa[3];
	for (unsigned i = 0; i < r->n; i++) {
		const struct tether_route_rule *rule = &r->rules[i];

		if ((rule->family == 0 || rule->family == family) && (!rule->port || rule->port == port) &&
		    (rule->family == 0 || prefix_match(addr, rule->addr, rule->prefix)))
			return rule->remote;
	}
	return r->default_remote;
}

/* For tests: the verdict of rules (text) on one socket address; -2 if the
 * rules do not parse. */
int tether_route_verdict(const char *rules, const unsigned char *sa, long len)
{
	struct tether_route r;

	if (tether_route_parse(rules, &r) < 0)
		return -2;
	return tether_route_remote(&r, sa, len);
}
