// Fuzz the shard reader: any bytes as a token shard, opened and read window by window.
#include "data.h"
#include "fuzz.h"
#include <sys/mman.h>

enum { SEQ = 4, VOCAB = 300, B = 2 };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static Dataset d;  // static: its contents must survive the longjmp of a die()
    const char *path = fuzz_write_file("shard.bin", data, size);
    unsigned char fds[FUZZ_FDS];
    fuzz_open_fds(fds);
    jmp_buf env;
    die_jump = &env;
    if (setjmp(env) == 0) {
        dataset_open(&d, path, "data.train", SEQ, VOCAB, 1);
        die_jump = NULL;
        int in[B * SEQ], tg[B * SEQ];
        for (size_t i = 0; i < d.n_windows + B; i += B) {  // past the end: into the next epoch
            dataset_batch_at(&d, i, B, in, tg);
            for (int t = 0; t < B * SEQ; t++)
                if (in[t] < 0 || in[t] >= VOCAB || tg[t] < 0 || tg[t] >= VOCAB) abort();
        }
        dataset_fixed_batch(&d, 0, d.n_windows, 1, in, tg);
        dataset_close(&d);
    } else {  // what dataset_open had set up when it died
        for (int i = 0; i < d.n_shards; i++) {
            if (d.shards[i].map && d.shards[i].map != MAP_FAILED) munmap(d.shards[i].map, d.shards[i].map_bytes);
            free(d.shards[i].path);
        }
        free(d.shards);
        free(d.first_window);
        free(d.order);
        memset(&d, 0, sizeof d);
    }
    die_jump = NULL;
    fuzz_close_new_fds(fds);
    return 0;
}
