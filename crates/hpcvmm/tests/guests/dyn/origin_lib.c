/* A library found through $ORIGIN or LD_LIBRARY_PATH. */
#include <stdio.h>
#include <string.h>
int origin_value(const char *who) { return (int)strlen(who) * 7; }
