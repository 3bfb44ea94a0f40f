#include "common.h"
#include <stdarg.h>
#include <time.h>
#include <unistd.h>

jmp_buf *die_jump;
char die_prefix[32];
static void (*die_cleanup)(void);

void at_die(void (*cleanup)(void)) { die_cleanup = cleanup; }

void die(int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    if (die_jump) {  // a fuzz harness: still format the message (its arguments are part of what is tested)
        char message[4096];
        vsnprintf(message, sizeof message, fmt, ap);
        va_end(ap);
        longjmp(*die_jump, code);
    }
    fprintf(stderr, "error: %s", die_prefix);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    if (die_cleanup) die_cleanup();
#ifdef __SANITIZE_ADDRESS__
    // Whatever the program had allocated when it died is not a leak: skip LeakSanitizer's check at
    // exit (an atexit handler), which would report buffers the caller only held in registers.
    fflush(NULL);
    _exit(code);
#else
    exit(code);
#endif
}

void warn(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("warning: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

void *xcalloc(size_t n, size_t size) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) die(1, "out of memory allocating %zu x %zu bytes", n, size);
    return p;
}

uint64_t fnv1a(uint64_t h, const void *data, size_t n) {
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>

FILE *open_input(const char *path, const char **why) {
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);  // O_NONBLOCK: opening a FIFO must not wait
    if (fd < 0) { *why = strerror(errno); return NULL; }
    struct stat st = {0};
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        *why = S_ISDIR(st.st_mode) ? "a directory, not a regular file" : "not a regular file";
        close(fd);
        errno = EINVAL;
        return NULL;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    FILE *f = fdopen(fd, "rb");
    if (!f) { *why = strerror(errno); close(fd); }
    return f;
}

int write_file_atomic(const char *path, const void *data, size_t size) {
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    if (!f) return -1;
    int ok = fwrite(data, 1, size, f) == size && fflush(f) == 0 && fsync(fileno(f)) == 0;
    int err = errno;
    if (fclose(f) != 0) ok = 0;
    if (!ok || rename(tmp, path) != 0) {
        err = ok ? errno : err;
        unlink(tmp);
        errno = err;
        return -1;
    }
    return 0;
}

int make_dirs(const char *path) {
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) { errno = ENAMETOOLONG; return -1; }
    for (char *p = buf + 1; ; p++) {
        if (*p == '/' || *p == '\0') {
            char saved = *p;
            *p = '\0';
            if (mkdir(buf, 0755) != 0 && errno != EEXIST) return -1;
            *p = saved;
            if (!saved) break;
        }
    }
    struct stat st;
    if (stat(path, &st) != 0) return -1;
    if (!S_ISDIR(st.st_mode)) { errno = ENOTDIR; return -1; }
    return 0;
}
