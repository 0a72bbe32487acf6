/* The udev stubs a static MPI program needs: one copy, the benchmark's (it writes that file out
   at run time); the MPI tests compile it through this file. */
#include "../../../eval/src/mpi/noudev.c"
