/*
 * cshared_host: load a Go c-shared library with dlopen and call its TetherProbe.
 *
 *     cshared_host LIB.so [N]     prints TetherProbe(N) (N defaults to 21) and exits 0
 *
 * Exits 1 if the library or the symbol cannot be found, 2 on bad usage. The library is
 * never dlclose'd: a Go runtime cannot be unloaded.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: %s LIB.so [N]\n", argv[0]);
        return 2;
    }
    int n = argc == 3 ? atoi(argv[2]) : 21;

    void *lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (lib == NULL) {
        fprintf(stderr, "cshared_host: dlopen: %s\n", dlerror());
        return 1;
    }
    int (*probe)(int);
    *(void **)&probe = dlsym(lib, "TetherProbe");
    if (probe == NULL) {
        fprintf(stderr, "cshared_host: dlsym TetherProbe: %s\n", dlerror());
        return 1;
    }

    printf("%d\n", probe(n));
    fflush(stdout);
    return 0;
}
