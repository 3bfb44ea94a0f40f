// Fuzz the config parser: any bytes as a config file. Valid configs must survive the round trip
// through the resolved JSON that run directories and checkpoints store.
#include "config.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static Config cfg, back;  // static: a Config holds the whole block table
    char *text = xcalloc(size + 1, 1);
    memcpy(text, data, size);
    unsigned char fds[FUZZ_FDS];
    fuzz_open_fds(fds);
    jmp_buf env;
    die_jump = &env;
    if (setjmp(env) == 0) {
        config_defaults(&cfg);
        config_apply_json(&cfg, text, "fuzz.json");
        config_validate(&cfg);
        die_jump = NULL;  // from here on a die() is a bug: it exits and libFuzzer reports it
        char *resolved = config_to_json(&cfg);
        config_defaults(&back);
        config_apply_json(&back, resolved, "resolved");
        config_validate(&back);
        if (config_first_difference(&cfg, &back)) abort();
        free(resolved);
    }
    die_jump = NULL;
    fuzz_close_new_fds(fds);
    free(text);
    return 0;
}
