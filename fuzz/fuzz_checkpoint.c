// Fuzz the checkpoint loader: any bytes as the only checkpoint of a run directory, found, its
// config read and, for models small enough to build, loaded. Inputs of even length get the
// checksum of their bytes written into their header, so that mutated metadata (the config and the
// run state) gets past the checksum and reaches the code that validates it.
#include "checkpoint.h"
#include "fuzz.h"

#define MAX_PARAMS (1 << 22)  // larger models would only test the allocator

#define HEADER_BYTES 1024

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static Config cfg;
    static uint8_t fixed[1 << 22];
    if (size % 2 == 0 && size >= HEADER_BYTES && size <= sizeof fixed) {
        memcpy(fixed, data, size);
        uint64_t hash = fnv1a(FNV_OFFSET, fixed + HEADER_BYTES, size - HEADER_BYTES);
        for (int b = 0; b < 8; b++) fixed[28 + b] = (uint8_t)(hash >> 8 * b);  // header ints 7 and 8
        data = fixed;
    }
    const char *path = fuzz_write_file("ckpt_00000001.bin", data, size);
    char dir[128];
    snprintf(dir, sizeof dir, "%.*s", (int)(strrchr(path, '/') - path), path);
    unsigned char fds[FUZZ_FDS];
    fuzz_open_fds(fds);
    char *volatile found = NULL;  // volatile: set between setjmp and a longjmp
    jmp_buf env;
    die_jump = &env;
    if (setjmp(env) == 0) {
        found = checkpoint_find_latest(dir);
        checkpoint_read_config(found, &cfg);
        config_validate(&cfg);
        double params = (double)cfg.vocab_size * cfg.n_embd * 2 + (double)cfg.block_size * cfg.n_embd +
                        (double)cfg.n_layer * cfg.n_embd * (12.0 * cfg.n_embd + (double)cfg.ffn_hidden * 3 + 64);
        if (params < MAX_PARAMS && cfg.batch_size * cfg.seq_len <= 4096) {
            GPT m;
            AdamW opt;
            static RunState st;
            cfg.batch_size = cfg.seq_len = 1;  // activation buffers for one token are enough to load
            gpt_build(&m, &cfg);
            adamw_init(&opt, m.n_params);
            jmp_buf inner;  // a bad tensor table or run state dies after the model is built: free it
            die_jump = &inner;
            if (setjmp(inner) == 0) checkpoint_load(found, &m, &opt, &st);
            die_jump = &env;
            adamw_free(&opt);
            gpt_free(&m);
        }
    }
    die_jump = NULL;
    free(found);
    fuzz_close_new_fds(fds);
    return 0;
}
