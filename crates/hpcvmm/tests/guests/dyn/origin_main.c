/* Linked against liborigin.so, found at run time through an $ORIGIN rpath or
 * LD_LIBRARY_PATH (or missing: the loader's own error, exit 127). */
#include <stdio.h>
#include <unistd.h>
int origin_value(const char *who);
int main(int argc, char **argv) {
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    exe[n > 0 ? n : 0] = 0;
    printf("argv0=%s value=%d exe_is_abs=%d\n", argv[0], origin_value(argv[0]), exe[0] == '/');
    return 0;
}
