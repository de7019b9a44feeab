/*
 * cshared_linked: a C program linked against a Go c-shared library (DT_NEEDED), so the
 * library's Go runtime starts while the program itself starts, before main.
 *
 *     cshared_linked        prints TetherProbe(21), i.e. 42
 */
#include <stdio.h>

extern int TetherProbe(int n);

int main(void)
{
    printf("%d\n", TetherProbe(21));
    return 0;
}
