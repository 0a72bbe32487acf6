/* argv, environ and the auxiliary vector as a static glibc program sees them. */
#include <stdio.h>
#include <string.h>
#include <stdint.h>
#include <unistd.h>
#include <sys/auxv.h>

extern char **environ;

int main(int argc, char **argv) {
    printf("argc=%d\n", argc);
    for (int i = 0; i < argc; i++) printf("argv[%d]=<%s>\n", i, argv[i]);
    int n = 0;
    for (char **e = environ; *e; e++) {
        if (strncmp(*e, "DS_", 3) == 0) printf("env %s\n", *e);
        n++;
    }
    printf("environ count=%d\n", n);
    printf("AT_PAGESZ=%lu\n", getauxval(AT_PAGESZ));
    printf("sysconf pagesize=%ld\n", sysconf(_SC_PAGESIZE));
    const unsigned char *rnd = (const unsigned char *)getauxval(AT_RANDOM);
    printf("AT_RANDOM non-null=%d\n", rnd != NULL);
    if (rnd) {
        int nonzero = 0;
        for (int i = 0; i < 16; i++) nonzero |= rnd[i];
        printf("AT_RANDOM has entropy=%d\n", nonzero != 0);
    }
    const char *fn = (const char *)getauxval(AT_EXECFN);
    const char *base = fn ? strrchr(fn, '/') : NULL;
    printf("AT_EXECFN basename=%s\n", base ? base + 1 : (fn ? fn : "(null)"));
    printf("AT_ENTRY non-zero=%d AT_PHNUM>0=%d AT_PHENT=%lu\n", getauxval(AT_ENTRY) != 0,
           getauxval(AT_PHNUM) > 0, getauxval(AT_PHENT));
    printf("AT_CLKTCK=%lu\n", getauxval(AT_CLKTCK));
    printf("AT_UID=euid %d\n", getauxval(AT_UID) == (unsigned long)geteuid());
    printf("AT_SECURE=%lu\n", getauxval(AT_SECURE));
    /* The strings sit at the top of the stack: argv above the auxv and below AT_EXECFN. */
    printf("argv above stack var=%d\n", (uintptr_t)argv[0] > (uintptr_t)&argc);
    return 0;
}
