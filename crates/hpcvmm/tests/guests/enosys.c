/* Unknown system calls answer -1/ENOSYS and the program carries on. */
#include <stdio.h>
#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <sys/syscall.h>

int main(void) {
    for (long nr = 1000; nr < 1003; nr++) {
        errno = 0;
        long r = syscall(nr, 1, 2, 3);
        printf("syscall %ld -> %ld %s\n", nr, r, errno == ENOSYS ? "ENOSYS" : strerror(errno));
    }
    errno = 0;
    long r = syscall(1000);
    printf("again -> %ld %s\n", r, errno == ENOSYS ? "ENOSYS" : strerror(errno));
    printf("still alive\n");
    return 0;
}
