/* Small helpers the other layers would otherwise write by hand. */
#ifndef MGATE_CORE_UTIL_H
#define MGATE_CORE_UTIL_H

#include <stddef.h>

/* The struct that holds `ptr` as its member `member` (an intrusive object
 * handed back by a callback: a timer, a deferred call, a pending verdict). */
#define container_of(ptr, type, member) ((type *)(void *)((char *)(ptr) - offsetof(type, member)))

/*
 * ASSERT(cond): an invariant.  Checked in the sanitizer build
 * (MGATE_SANITIZE defines MGATE_ASSERTS), where a broken one aborts with
 * its place; compiled out otherwise, so it may sit on the hot path.
 */
#ifdef MGATE_ASSERTS
void mgate_assert_failed(const char *cond, const char *file, int line) __attribute__((noreturn));
#define ASSERT(cond) ((cond) ? (void)0 : mgate_assert_failed(#cond, __FILE__, __LINE__))
#else
#define ASSERT(cond) ((void)sizeof(!(cond)))
#endif

#endif
