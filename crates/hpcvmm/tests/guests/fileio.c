/* File I/O round trips inside the working directory (the guest root in the VM). */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CHECK(what, expr) do { long _r = (long)(expr); \
    printf("%-28s %ld%s%s\n", what, _r, _r < 0 ? " errno=" : "", _r < 0 ? strerrorname_np(errno) : ""); } while (0)

static int cmp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void list(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) { printf("opendir %s: %s\n", dir, strerrorname_np(errno)); return; }
    char *names[64]; int n = 0; struct dirent *e;
    while ((e = readdir(d)) && n < 64)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) names[n++] = strdup(e->d_name);
    closedir(d);
    qsort(names, n, sizeof *names, cmp);
    printf("ls %s:", dir);
    for (int i = 0; i < n; i++) { printf(" %s", names[i]); free(names[i]); }
    printf("\n");
}

int main(void) {
    char buf[256];
    struct stat st;
    CHECK("mkdir work", mkdir("work", 0755));
    CHECK("mkdir work again", mkdir("work", 0755));
    int fd = open("work/a.txt", O_CREAT | O_RDWR | O_TRUNC, 0644);
    CHECK("open a.txt", fd >= 3);
    CHECK("write", write(fd, "hello world\n", 12));
    CHECK("lseek set 0", lseek(fd, 0, SEEK_SET));
    memset(buf, 0, sizeof buf);
    CHECK("read", read(fd, buf, sizeof buf));
    printf("content: %s", buf);
    CHECK("read at eof", read(fd, buf, sizeof buf));
    CHECK("pwrite HELLO@0", pwrite(fd, "HELLO", 5, 0));
    memset(buf, 0, sizeof buf);
    CHECK("pread 5@6", pread(fd, buf, 5, 6));
    printf("pread got: %s\n", buf);
    CHECK("offset unchanged", lseek(fd, 0, SEEK_CUR));
    CHECK("lseek end", lseek(fd, 0, SEEK_END));
    CHECK("lseek bad whence", lseek(fd, 0, 42));
    CHECK("fstat", fstat(fd, &st));
    printf("size=%ld reg=%d mode=%o\n", (long)st.st_size, S_ISREG(st.st_mode), st.st_mode & 0777);
    CHECK("ftruncate 5", ftruncate(fd, 5));
    CHECK("fstat", fstat(fd, &st));
    printf("size after truncate=%ld\n", (long)st.st_size);
    CHECK("close", close(fd));
    CHECK("close again", close(fd));
    CHECK("stat a", stat("work/a.txt", &st));
    CHECK("rename a->b", rename("work/a.txt", "work/b.txt"));
    CHECK("stat a", stat("work/a.txt", &st));
    CHECK("stat b", stat("work/b.txt", &st));
    printf("b size=%ld\n", (long)st.st_size);
    /* O_APPEND and dup share one offset */
    fd = open("work/b.txt", O_WRONLY | O_APPEND);
    CHECK("write append", write(fd, "++", 2));
    int fd2 = dup(fd);
    CHECK("dup", fd2 > fd);
    CHECK("write via dup", write(fd2, "!!", 2));
    close(fd2);
    close(fd);
    FILE *f = fopen("work/b.txt", "r");
    memset(buf, 0, sizeof buf);
    fgets(buf, sizeof buf, f);
    fclose(f);
    printf("b now: %s\n", buf);
    for (const char *n = "cde"; *n; n++) {
        char p[32];
        snprintf(p, sizeof p, "work/%c.dat", *n);
        FILE *g = fopen(p, "w");
        fprintf(g, "file %c\n", *n);
        fclose(g);
    }
    CHECK("mkdir work/sub", mkdir("work/sub", 0700));
    list("work");
    /* openat / fstatat relative to a directory fd */
    int dfd = open("work", O_RDONLY | O_DIRECTORY);
    CHECK("open dir", dfd >= 3);
    int xfd = openat(dfd, "sub/x", O_CREAT | O_WRONLY, 0600);
    CHECK("openat sub/x", xfd >= 3);
    CHECK("write x", write(xfd, "xyz", 3));
    close(xfd);
    CHECK("fstatat sub/x", fstatat(dfd, "sub/x", &st, 0));
    printf("x size=%ld mode=%o\n", (long)st.st_size, st.st_mode & 0777);
    CHECK("access sub/x R_OK", faccessat(dfd, "sub/x", R_OK, 0));
    CHECK("unlinkat sub/x", unlinkat(dfd, "sub/x", 0));
    CHECK("unlinkat sub dir", unlinkat(dfd, "sub", AT_REMOVEDIR));
    close(dfd);
    /* a 1 MiB file in 64 KiB chunks, checksummed back */
    fd = open("work/big.bin", O_CREAT | O_RDWR | O_TRUNC, 0644);
    static unsigned char chunk[65536];
    unsigned long sum = 0;
    for (int i = 0; i < 16; i++) {
        for (int j = 0; j < 65536; j++) { chunk[j] = (unsigned char)(i * 7 + j * 13); sum += chunk[j]; }
        if (write(fd, chunk, sizeof chunk) != sizeof chunk) printf("short write\n");
    }
    lseek(fd, 0, SEEK_SET);
    unsigned long sum2 = 0; long total = 0, n;
    while ((n = read(fd, chunk, sizeof chunk)) > 0) {
        for (long j = 0; j < n; j++) sum2 += chunk[j];
        total += n;
    }
    close(fd);
    printf("big: %ld bytes, checksum match=%d\n", total, sum == sum2);
    /* chdir / getcwd (relative part only: natively the cwd is a host temp dir) */
    CHECK("chdir work", chdir("work"));
    char *cwd = getcwd(buf, sizeof buf);
    printf("cwd ends in /work=%d\n", cwd && strlen(cwd) >= 5 && !strcmp(cwd + strlen(cwd) - 5, "/work"));
    CHECK("stat ../work/c.dat", stat("../work/c.dat", &st));
    CHECK("chdir ..", chdir(".."));
    /* pipes */
    int p[2];
    CHECK("pipe", pipe(p));
    CHECK("write pipe", write(p[1], "through a pipe", 14));
    memset(buf, 0, sizeof buf);
    CHECK("read pipe", read(p[0], buf, sizeof buf));
    printf("pipe: %s\n", buf);
    close(p[0]);
    close(p[1]);
    /* cleanup, with the errors Linux gives */
    CHECK("rmdir non-empty", rmdir("work"));
    CHECK("unlink missing", unlink("work/nope"));
    CHECK("open missing", open("work/nope", O_RDONLY));
    CHECK("open excl existing", open("work/b.txt", O_CREAT | O_EXCL | O_WRONLY, 0600));
    CHECK("unlink dir", unlink("work"));
    const char *files[] = {"work/b.txt", "work/c.dat", "work/d.dat", "work/e.dat", "work/big.bin"};
    for (int i = 0; i < 5; i++) CHECK(files[i], unlink(files[i]));
    CHECK("rmdir work", rmdir("work"));
    CHECK("access work", access("work", F_OK));
    return 0;
}
