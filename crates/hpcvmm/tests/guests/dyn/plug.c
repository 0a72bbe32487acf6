/* A plugin the dlopen test builds as a shared library: global data, a constructor, a call into
 * libm (a dependency the loader must find), thread-local storage. */
#include <math.h>
#include <stdio.h>

static int loaded;
static __thread int calls;
int plug_counter = 100;

__attribute__((constructor)) static void plug_init(void) { loaded = 1; }

const char *plug_name(void) { return loaded ? "plug(loaded)" : "plug(no ctor)"; }

int plug_square(int x) {
    calls++;
    plug_counter++;
    return x * x + (int)floor(sqrt((double)x * x) - x) + calls - 1;
}
