/* Allocation failures on demand, for tests only (docs/TESTING.md, "Allocation
 * failures").  Linked into the mgate binary of the sanitizer build alone
 * (-DMGATE_SANITIZE=ON), with the linker told to send mgate's own calls to
 * malloc, calloc, realloc, strdup... here (-Wl,--wrap=...: the top-level
 * CMakeLists.txt).  Each wrapper either fails the call (NULL, errno ENOMEM) or
 * passes it to the real function, which in that build is ASan's allocator: every
 * allocation mgate makes is still seen by ASan, and LeakSanitizer reports what
 * was not freed at exit.  The plain and release builds have none of this.
 *
 * Inactive unless FAILMALLOC is set, a list of key=value separated by
 * commas:
 *   every=N       fail every Nth counted call (default 1)
 *   limit=C       fail at most C calls (every=K,limit=1: only the Kth call)
 *   after=accept  start counting at the first connection accepted (default), so
 *                 that start-up, which exits with a message when it cannot
 *                 allocate, is not what is tested
 *   after=start   count from the first call
 *   ssl           count and fail OpenSSL's allocations too (CRYPTO_set_mem_functions)
 *   trace         print the stack of each failed call
 * At exit one line on stderr says how many calls were counted and failed:
 *   failmalloc: counted=C failed=F
 *
 * Only allocations made by mgate's own code (and OpenSSL's with "ssl") are
 * seen: libc's internal ones, libcurl's, jansson's and inih's are not wrapped.
 * The counters are atomic: workers are threads. */
#include <errno.h>
#include <openssl/crypto.h>
#include <sanitizer/common_interface_defs.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

void *__real_malloc(size_t n);
void *__real_calloc(size_t k, size_t n);
void *__real_realloc(void *p, size_t n);
char *__real_strdup(const char *s);
char *__real_strndup(const char *s, size_t n);
ssize_t __real_getline(char **line, size_t *cap, FILE *f);
int __real_accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags);

void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t k, size_t n);
void *__wrap_realloc(void *p, size_t n);
char *__wrap_strdup(const char *s);
char *__wrap_strndup(const char *s, size_t n);
int __wrap_asprintf(char **out, const char *fmt, ...);
ssize_t __wrap_getline(char **line, size_t *cap, FILE *f);
int __wrap_accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags);

static struct {
    bool enabled;
    bool ssl;
    bool trace;
    unsigned long every;
    unsigned long limit;
    atomic_bool counting;
    atomic_ulong counted;
    atomic_ulong failed;
} fm = {.every = 1};

/* True when this call is to fail.  Called by every wrapper. */
static bool fail_now(const char *what, size_t n)
{
    if (!atomic_load_explicit(&fm.counting, memory_order_relaxed))
        return false;
    unsigned long k = atomic_fetch_add(&fm.counted, 1) + 1;
    if (k % fm.every != 0)
        return false;
    if (fm.limit && atomic_fetch_add(&fm.failed, 1) >= fm.limit) {
        atomic_fetch_sub(&fm.failed, 1);
        return false;
    }
    if (!fm.limit)
        atomic_fetch_add(&fm.failed, 1);
    if (fm.trace) {
        char line[96];
        int len = snprintf(line, sizeof(line), "failmalloc: failing call %lu (%s %zu)\n", k, what, n);
        if (write(2, line, (size_t)len) < 0) {
            /* nothing to do: a trace line is a help, not a result */
        }
        __sanitizer_print_stack_trace();
    }
    errno = ENOMEM;
    return true;
}

void *__wrap_malloc(size_t n) { return fail_now("malloc", n) ? NULL : __real_malloc(n); }

void *__wrap_calloc(size_t k, size_t n) { return fail_now("calloc", k * n) ? NULL : __real_calloc(k, n); }

/* realloc(p, 0) frees: never failed, as it cannot fail in glibc either. */
void *__wrap_realloc(void *p, size_t n)
{
    return n && fail_now("realloc", n) ? NULL : __real_realloc(p, n);
}

char *__wrap_strdup(const char *s) { return fail_now("strdup", strlen(s) + 1) ? NULL : __real_strdup(s); }

char *__wrap_strndup(const char *s, size_t n)
{
    return fail_now("strndup", strnlen(s, n) + 1) ? NULL : __real_strndup(s, n);
}

int __wrap_asprintf(char **out, const char *fmt, ...)
{
    if (fail_now("asprintf", 0))
        return -1;
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(out, fmt, ap);
    va_end(ap);
    return n;
}

/* A failed getline is -1 with errno ENOMEM, as glibc's when it cannot grow
 * the line. */
ssize_t __wrap_getline(char **line, size_t *cap, FILE *f)
{
    return fail_now("getline", *cap) ? -1 : __real_getline(line, cap, f);
}

/* The first accepted connection means mgate is serving: start counting then
 * (after=accept). */
int __wrap_accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags)
{
    int c = __real_accept4(fd, addr, len, flags);
    if (c >= 0 && fm.enabled)
        atomic_store(&fm.counting, true);
    return c;
}

/* OpenSSL's allocations, counted only with "ssl". */
static void *ssl_malloc(size_t n, const char *file, int line)
{
    (void)file, (void)line;
    return fm.ssl && fail_now("CRYPTO_malloc", n) ? NULL : __real_malloc(n);
}

static void *ssl_realloc(void *p, size_t n, const char *file, int line)
{
    (void)file, (void)line;
    return fm.ssl && n && fail_now("CRYPTO_realloc", n) ? NULL : __real_realloc(p, n);
}

static void ssl_free(void *p, const char *file, int line)
{
    (void)file, (void)line;
    free(p);
}

static void bad_spec(const char *spec)
{
    fprintf(stderr, "failmalloc: FAILMALLOC=\"%s\": expected every=N,limit=C,after=accept|start,ssl,trace\n",
            spec);
    _exit(2);
}

static unsigned long number(const char *spec, const char *v)
{
    char *end;
    unsigned long n = strtoul(v, &end, 10);
    if (end == v || (*end && *end != ','))
        bad_spec(spec);
    return n;
}

/* Read FAILMALLOC before main (getenv allocates nothing). */
__attribute__((constructor)) static void failmalloc_init(void)
{
    const char *spec = getenv("FAILMALLOC");
    if (!spec || !*spec)
        return;
    fm.enabled = true;
    bool now = false;
    for (const char *p = spec; *p;) {
        size_t klen = strcspn(p, ",");
        if (!strncmp(p, "every=", 6))
            fm.every = number(spec, p + 6);
        else if (!strncmp(p, "limit=", 6))
            fm.limit = number(spec, p + 6);
        else if (klen == 12 && !strncmp(p, "after=accept", 12))
            now = false;
        else if (klen == 11 && !strncmp(p, "after=start", 11))
            now = true;
        else if (klen == 3 && !strncmp(p, "ssl", 3))
            fm.ssl = true;
        else if (klen == 5 && !strncmp(p, "trace", 5))
            fm.trace = true;
        else
            bad_spec(spec);
        p += klen + (p[klen] == ',');
    }
    if (fm.every == 0)
        bad_spec(spec);
    if (fm.ssl && !CRYPTO_set_mem_functions(ssl_malloc, ssl_realloc, ssl_free)) {
        fprintf(stderr, "failmalloc: OpenSSL allocated before main; \"ssl\" is not possible\n");
        _exit(2);
    }
    atomic_store(&fm.counting, now);
}

__attribute__((destructor)) static void failmalloc_report(void)
{
    if (fm.enabled)
        fprintf(stderr, "failmalloc: counted=%lu failed=%lu\n", atomic_load(&fm.counted), atomic_load(&fm.failed));
}
