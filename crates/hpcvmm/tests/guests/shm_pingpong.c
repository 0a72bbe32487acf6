/* Two processes (two VMs) share a file with mmap(MAP_SHARED): ping-pong through shared words
   by spinning (no system call), then a futex handoff across the mapping.
   usage: shm_pingpong ROLE(0|1) PATH ITERS */
#include <fcntl.h>
#include <linux/futex.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

struct shared {
    _Atomic unsigned ping, pong;
    _Atomic unsigned flag;
    _Atomic unsigned waiting; /* role 1 is about to sleep on flag */
    unsigned payload[1021];
};

int main(int argc, char **argv) {
    if (argc != 4) return 2;
    int role = atoi(argv[1]);
    long iters = atol(argv[3]);
    int fd = -1;
    if (role == 0) {
        fd = open(argv[2], O_RDWR | O_CREAT | O_TRUNC, 0600);
        if (fd < 0 || ftruncate(fd, sizeof(struct shared)) != 0) { perror("create"); return 1; }
    } else {
        for (int i = 0; i < 20000 && fd < 0; i++) {
            fd = open(argv[2], O_RDWR);
            if (fd < 0) { struct timespec t = {0, 1000000}; nanosleep(&t, 0); }
        }
        if (fd < 0) { perror("open"); return 1; }
        struct timespec t = {0, 20000000};
        nanosleep(&t, 0); /* let role 0 finish ftruncate */
    }
    struct shared *s = mmap(0, sizeof *s, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (s == MAP_FAILED) { perror("mmap"); return 1; }
    close(fd);
    for (long i = 1; i <= iters; i++) {
        if (role == 0) {
            s->payload[i % 1021] = (unsigned)i;
            atomic_store(&s->ping, (unsigned)i);
            while (atomic_load(&s->pong) != (unsigned)i) {}
        } else {
            while (atomic_load(&s->ping) != (unsigned)i) {}
            if (s->payload[i % 1021] != (unsigned)i) { printf("bad payload at %ld\n", i); return 1; }
            atomic_store(&s->pong, (unsigned)i);
        }
    }
    /* futex handoff: role 1 sleeps on flag, role 0 sets it and wakes it */
    if (role == 1) {
        atomic_store(&s->waiting, 1);
        while (atomic_load(&s->flag) == 0)
            syscall(SYS_futex, &s->flag, FUTEX_WAIT, 0, 0, 0, 0);
        printf("role 1: %ld round trips, woken with flag %u\n", iters, atomic_load(&s->flag));
    } else {
        /* Set the flag only once role 1 is (all but) asleep on it: a FUTEX_WAIT that already
           sees the flag set never sleeps, and there would be nobody to wake. */
        while (atomic_load(&s->waiting) == 0) {}
        struct timespec t = {0, 200000000};
        nanosleep(&t, 0);
        atomic_store(&s->flag, 7);
        long woke = 0;
        for (int k = 0; k < 200 && woke == 0; k++) {
            woke = syscall(SYS_futex, &s->flag, FUTEX_WAKE, 1, 0, 0, 0);
            if (!woke) { struct timespec u = {0, 5000000}; nanosleep(&u, 0); }
        }
        printf("role 0: %ld round trips, woke %ld\n", iters, woke > 0 ? 1L : 0L);
        unlink(argv[2]);
    }
    munmap(s, sizeof *s);
    return 0;
}
