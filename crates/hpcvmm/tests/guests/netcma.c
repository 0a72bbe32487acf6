/* The network namespace files, the interface list and cross-memory attach as UCX and Open MPI
   use them (issue 12), with hostile arguments: every line must equal the native run's. */
#define _GNU_SOURCE
#include <errno.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

static void rc(const char *what, long r) {
    if (r < 0) printf("%s: -1 %s\n", what, strerrorname_np(errno));
    else printf("%s: %ld\n", what, r);
}

static long vm_rw(int nr, pid_t pid, struct iovec *l, unsigned long nl, struct iovec *r,
                  unsigned long nr_, unsigned long flags) {
    return syscall(nr, pid, l, nl, r, nr_, flags);
}

int main(void) {
    /* /proc/net is a symlink to self/net: the namespace's files, as natively */
    FILE *f = fopen("/proc/net/route", "r");
    char word[64] = "";
    if (f && fscanf(f, "%63s", word) == 1) printf("route header: %s\n", word);
    else printf("route: not readable\n");
    if (f) fclose(f);
    f = fopen("/proc/self/net/dev", "r");
    printf("self/net/dev readable: %d\n", f != NULL);
    if (f) fclose(f);

    /* SIOCGIFCONF */
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    struct ifconf ifc = {.ifc_len = 0, .ifc_buf = NULL};
    rc("ifconf size query", ioctl(s, SIOCGIFCONF, &ifc));
    int need = ifc.ifc_len;
    printf("ifconf size is whole ifreqs: %d\n", need > 0 && need % (int)sizeof(struct ifreq) == 0);
    struct ifreq reqs[64];
    ifc.ifc_len = sizeof reqs;
    ifc.ifc_req = reqs;
    rc("ifconf list", ioctl(s, SIOCGIFCONF, &ifc));
    printf("ifconf list length equals the size query: %d\n", ifc.ifc_len == need);
    int lo = 0;
    for (int i = 0; i < ifc.ifc_len / (int)sizeof(struct ifreq); i++)
        lo |= !strcmp(reqs[i].ifr_name, "lo");
    printf("ifconf names lo: %d\n", lo);
    ifc.ifc_len = sizeof(struct ifreq) - 1; /* room for none */
    rc("ifconf short buffer", ioctl(s, SIOCGIFCONF, &ifc));
    printf("short buffer length: %d\n", ifc.ifc_len);
    ifc.ifc_len = -5;
    rc("ifconf negative length", ioctl(s, SIOCGIFCONF, &ifc));
    printf("negative length gives: %d\n", ifc.ifc_len);
    rc("ifconf at a bad address", ioctl(s, SIOCGIFCONF, (void *)8));
    ifc.ifc_len = sizeof reqs;
    ifc.ifc_buf = (char *)8;
    rc("ifconf into a bad buffer", ioctl(s, SIOCGIFCONF, &ifc));
    close(s);

    /* process_vm_readv/writev on itself, and hostile arguments */
    char src[32] = "cross-memory attach", dst[32] = {0};
    pid_t me = getpid();
    struct iovec l = {dst, sizeof dst}, r = {src, sizeof src};
    rc("readv self", vm_rw(SYS_process_vm_readv, me, &l, 1, &r, 1, 0));
    printf("read: %s\n", dst);
    char two[8] = "ABCDEFG";
    struct iovec wl = {two, 3}, wr[2] = {{dst, 2}, {dst + 10, 1}};
    rc("writev self scattered", vm_rw(SYS_process_vm_writev, me, &wl, 1, wr, 2, 0));
    printf("written: %.12s\n", dst);
    rc("flags 1", vm_rw(SYS_process_vm_readv, me, &l, 1, &r, 1, 1));
    rc("1025 local iovecs", vm_rw(SYS_process_vm_readv, me, &l, 1025, &r, 1, 0));
    rc("1025 remote iovecs", vm_rw(SYS_process_vm_readv, me, &l, 1, &r, 1025, 0));
    rc("local iovec array at a bad address",
       vm_rw(SYS_process_vm_readv, me, (struct iovec *)8, 1, &r, 1, 0));
    rc("remote iovec array at a bad address",
       vm_rw(SYS_process_vm_readv, me, &l, 1, (struct iovec *)8, 1, 0));
    struct iovec bad = {(void *)8, 16};
    rc("remote buffer at a bad address", vm_rw(SYS_process_vm_readv, me, &l, 1, &bad, 1, 0));
    rc("local buffer at a bad address", vm_rw(SYS_process_vm_readv, me, &bad, 1, &r, 1, 0));
    struct iovec part[2] = {{src, 4}, {(void *)8, 4}};
    rc("second remote iovec bad: partial", vm_rw(SYS_process_vm_readv, me, &l, 1, part, 2, 0));
    struct iovec none = {dst, 0};
    rc("nothing to move, no such pid", vm_rw(SYS_process_vm_readv, 0x3ffffff0, &none, 1, &r, 1, 0));
    rc("no such pid", vm_rw(SYS_process_vm_readv, 0x3ffffff0, &l, 1, &r, 1, 0));
    rc("pid 0", vm_rw(SYS_process_vm_readv, 0, &l, 1, &r, 1, 0));
    return 0;
}
