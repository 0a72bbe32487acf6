/* Dies in the way argv[1] says: null, ud2, div0, abort, wild (write far outside memory). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    const char *m = argc > 1 ? argv[1] : "";
    printf("about to %s\n", m);
    fflush(stdout);
    if (!strcmp(m, "null")) {
        *(volatile int *)0 = 42;
    } else if (!strcmp(m, "ud2")) {
        __asm__ volatile("ud2");
    } else if (!strcmp(m, "div0")) {
        volatile int a = 1, b = 0;
        printf("%d\n", a / b);
    } else if (!strcmp(m, "abort")) {
        abort();
    } else if (!strcmp(m, "wild")) {
        *(volatile long *)0x7f0000000000UL = 1;
    } else if (!strcmp(m, "int3")) {
        __asm__ volatile("int3");
    }
    printf("survived %s\n", m);
    return 0;
}
