/* env.c - read the environment handed to the constructor (no libc). */
#include "core/core.h"

const char *tether_getenv(char **envp, const char *name)
{
	for (; envp && *envp; envp++) {
		const char *s = *envp;
		const char *n = name;

		while (*n && *s == *n) {
			s++;
			n++;
		}
		if (!*n && *s == '=')
			return s + 1;
	}
	return 0;
}
