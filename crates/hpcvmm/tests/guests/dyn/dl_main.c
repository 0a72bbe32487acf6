/* dlopen a library named on the command line, call into it through dlsym, read its data,
 * dlclose it; a missing library is reported with dlerror like any program would. */
#include <dlfcn.h>
#include <stdio.h>

int main(int argc, char **argv) {
    const char *lib = argc > 1 ? argv[1] : "libdsplug.so";
    void *h = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        printf("dlopen %s failed\n", lib);
        fprintf(stderr, "%s\n", dlerror());
        return 2;
    }
    const char *(*name)(void) = (const char *(*)(void))dlsym(h, "plug_name");
    int (*sq)(int) = (int (*)(int))dlsym(h, "plug_square");
    int *counter = (int *)dlsym(h, "plug_counter");
    if (!name || !sq || !counter) {
        printf("dlsym failed: %s\n", dlerror());
        return 3;
    }
    int s = 0;
    for (int i = 1; i <= 10; i++)
        s += sq(i);
    int q = sq(12);
    printf("%s square(12)=%d sum=%d counter=%d\n", name(), q, s, *counter);
    printf("missing symbol: %s\n", dlsym(h, "no_such_symbol") ? "found" : "absent");
    printf("dlclose=%d\n", dlclose(h));
    void *again = dlopen(lib, RTLD_LAZY);
    printf("reopened=%d\n", again != NULL);
    return 0;
}
