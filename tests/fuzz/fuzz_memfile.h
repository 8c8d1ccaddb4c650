/*
 * Files in memory for the fuzzers whose parser opens a path (the config
 * loader, the acl handler's files): a memfd rewritten with each input and
 * named /proc/self/fd/N, so the parser runs its own fopen and stdio
 * reading as it does on a real file, without touching the disk.
 */
#ifndef MGATE_FUZZ_MEMFILE_H
#define MGATE_FUZZ_MEMFILE_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

struct memfile {
    int fd;
    char path[32];
};

static inline void memfile_put(struct memfile *m, const char *name, const void *p, size_t n)
{
    if (!m->fd) {
        m->fd = memfd_create(name, 0);
        if (m->fd < 0) {
            perror("memfd_create");
            abort();
        }
        snprintf(m->path, sizeof(m->path), "/proc/self/fd/%d", m->fd);
    }
    if (ftruncate(m->fd, 0) < 0 || (n && pwrite(m->fd, p, n, 0) != (ssize_t)n)) {
        perror("memfile");
        abort();
    }
}

#endif
