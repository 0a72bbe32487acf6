/* The smallest guest: greets, echoes its arguments, exits with argv[1] if numeric. */
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    printf("hello from %s\n", argv[0]);
    for (int i = 1; i < argc; i++) printf("arg %d: %s\n", i, argv[i]);
    return argc > 1 ? atoi(argv[1]) : 0;
}
