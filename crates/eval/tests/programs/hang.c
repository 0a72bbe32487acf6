/* Never ends (the --run-timeout test): prints once, then sleeps forever. */
#include <stdio.h>
#include <unistd.h>
int main(void) {
    printf("hanging\n");
    fflush(stdout);
    for (;;) sleep(1);
}
