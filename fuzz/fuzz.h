// Shared by the libFuzzer targets. The parsers report bad input through die(), which exits; here
// die_jump (common.h) turns that into a longjmp back to the harness, so that one process tries many
// inputs and libFuzzer keeps its coverage. A bad input is expected to end in die(); a crash, a
// sanitizer report or a real exit is a bug. die() leaves behind whatever the parser had open: the
// harness closes the file descriptors (thousands of inputs would exhaust them); leaked memory is
// not checked (make fuzz runs with -detect_leaks=0).
#ifndef NORMGPT_FUZZ_H
#define NORMGPT_FUZZ_H
#include "common.h"
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#define FUZZ_FDS 1024

static inline void fuzz_open_fds(unsigned char *open_now) {
    for (int fd = 0; fd < FUZZ_FDS; fd++) open_now[fd] = fcntl(fd, F_GETFD) != -1;
}

static inline void fuzz_close_new_fds(const unsigned char *before) {
    for (int fd = 0; fd < FUZZ_FDS; fd++)
        if (!before[fd] && fcntl(fd, F_GETFD) != -1) close(fd);
}

static char fuzz_dir[64], fuzz_path[128];

static void fuzz_remove_file(void) {
    unlink(fuzz_path);
    rmdir(fuzz_dir);
}

// A file holding the input, in a directory of this process's own (removed at exit); returns its path.
static inline const char *fuzz_write_file(const char *name, const uint8_t *data, size_t size) {
    if (!fuzz_dir[0]) {
        snprintf(fuzz_dir, sizeof fuzz_dir, "/tmp/normgpt_fuzz_%d", (int)getpid());
        make_dirs(fuzz_dir);
        atexit(fuzz_remove_file);
    }
    snprintf(fuzz_path, sizeof fuzz_path, "%s/%s", fuzz_dir, name);
    FILE *f = fopen(fuzz_path, "wb");
    if (!f || fwrite(data, 1, size, f) != size || fclose(f) != 0) abort();
    return fuzz_path;
}

#endif
