/* What a dynamically linked program sees of its start: the auxv the kernel (here: the VMM)
 * gave the interpreter, checked against what the loader itself reports. */
#define _GNU_SOURCE
#include <link.h>
#include <stdio.h>
#include <string.h>
#include <sys/auxv.h>
#include <unistd.h>

extern void _start(void);

struct seen {
    int n;
    struct dl_phdr_info main;
    int ldso_at_base;
};

static int cb(struct dl_phdr_info *i, size_t size, void *data) {
    struct seen *s = data;
    (void)size;
    if (s->n++ == 0)
        s->main = *i;
    if (strstr(i->dlpi_name, "ld-linux") && i->dlpi_addr == getauxval(AT_BASE))
        s->ldso_at_base = 1;
    return 0;
}

int main(int argc, char **argv) {
    struct seen s = {0};
    dl_iterate_phdr(cb, &s);
    printf("argc=%d\n", argc);
    printf("AT_ENTRY is _start=%d\n", getauxval(AT_ENTRY) == (unsigned long)&_start);
    printf("AT_BASE set=%d is ld.so=%d\n", getauxval(AT_BASE) != 0, s.ldso_at_base);
    printf("AT_PHDR is main phdr=%d\n", getauxval(AT_PHDR) == (unsigned long)s.main.dlpi_phdr);
    printf("AT_PHNUM matches=%d\n", getauxval(AT_PHNUM) == s.main.dlpi_phnum);
    printf("pie=%d objects>=3=%d\n", s.main.dlpi_addr != 0, s.n >= 3);
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    exe[n > 0 ? n : 0] = 0;
    const char *fn = (const char *)getauxval(AT_EXECFN);
    printf("AT_EXECFN is /proc/self/exe=%d\n", fn && strcmp(fn, exe) == 0);
    printf("argv0=%s\n", argv[0]);
    return 0;
}
