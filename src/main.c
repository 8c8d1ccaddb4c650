/* The mgate binary: the library with its built-in handlers. */
#include "mgate.h"

int main(int argc, char **argv) { return mgate_main(argc, argv, NULL, NULL); }
