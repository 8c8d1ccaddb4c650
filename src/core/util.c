#include "core/util.h"

#include <stdio.h>
#include <stdlib.h>

#ifdef MGATE_ASSERTS
void mgate_assert_failed(const char *cond, const char *file, int line)
{
    fprintf(stderr, "%s:%d: invariant broken: %s\n", file, line, cond);
    abort();
}
#else
/* An empty translation unit is not ISO C. */
typedef int mgate_util_unused;
#endif
