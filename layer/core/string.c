/* string.c - the few string and number helpers the layer needs, without libc. */
#include "core/core.h"

unsigned long tether_strlen(const char *s)
{
	unsigned long n = 0;

	while (s[n])
		n++;
	return n;
}

int tether_memcmp(const void *a, const void *b, unsigned long n)
{
	const unsigned char *x = a, *y = b;

	for (unsigned long i = 0; i < n; i++)
		if (x[i] != y[i])
			return x[i] < y[i] ? -1 : 1;
	return 0;
}

int tether_hexdigit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

int tether_hex_bytes(const char **s, unsigned char *out, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		int hi = tether_hexdigit((*s)[0]), lo = hi >= 0 ? tether_hexdigit((*s)[1]) : -1;

		if (lo < 0)
			return -1;
		out[i] = (unsigned char)(hi << 4 | lo);
		*s += 2;
	}
	return 0;
}
