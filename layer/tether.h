/* tether.h - declarations shared by the files of libtether.so.
 *
 * The layer is built with -fvisibility=hidden: only symbols marked
 * TETHER_EXPORT are visible to the dynamic linker (and so to ctypes and to
 * the program the layer is preloaded into).  Nothing here needs libc, so the
 * layer can later be linked with -nostdlib. */
#ifndef TETHER_H
#define TETHER_H

#define TETHER_EXPORT __attribute__((visibility("default")))

/* Size of the dispatch table.  x86-64 syscall numbers are below 512 (the
 * x32 range starts at 512 and is not handled). */
#define TETHER_NR_MAX 512

/* Signature shared by the raw syscall, the dispatcher and every handler: the
 * syscall number, then its six arguments as the kernel sees them.  The return
 * value follows the kernel convention: >= 0 on success, -errno on failure. */
typedef long tether_syscall_fn(long nr, long a1, long a2, long a3, long a4,
                               long a5, long a6);

/* syscall_raw.S: issue the syscall instruction, bypassing libc. */
tether_syscall_fn tether_raw_syscall6;

/* dispatch.c: route a syscall to its handler, or pass it through. */
TETHER_EXPORT tether_syscall_fn tether_dispatch;

/* init.c: 1 once the layer's ELF constructor has run, else 0. */
TETHER_EXPORT int tether_layer_loaded(void);

#endif
