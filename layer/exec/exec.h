/* exec/ - exec'd programs stay under tether: execve and execveat, from
 * Go's hooks and libc's wrappers alike, keep LD_PRELOAD and TETHER_SESSION,
 * and before a static program (which LD_PRELOAD cannot reach) the session
 * is told, to load the layer at the exec (exec.c).  Uses core/ and link/. */
#ifndef TETHER_EXEC_H
#define TETHER_EXEC_H

#include "core/core.h"

/* From envp, this process's start-up environment.  For other ways to exec
 * (posix_spawn: libc/proc.c): env_size is the slots a new list for envp
 * needs (0: envp will do as it is, -E2BIG: too long) and *preload_size
 * the bytes of its LD_PRELOAD entry; env_build fills env (that many slots)
 * and preload_entry (that many bytes). */
#define TETHER_PRELOAD_MAX 4096
void tether_exec_install(char **envp, int inject_static);
long tether_exec_env_size(char *const *envp, unsigned long *preload_size);
void tether_exec_env_build(char *const *envp, char **env, char *preload_entry);

#endif
