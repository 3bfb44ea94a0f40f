// Checkpoints read by the commands that do not train: the weights-only load, and a checkpoint
// written without an optimizer (--convert's output), which must be the very file a zeroed AdamW
// gives, so that it resumes like any other.
#include "checkpoint.h"
#include "testing.h"
#include <string.h>

static int all_zero(const real *x, size_t n) {
    for (size_t i = 0; i < n; i++) if (x[i] != 0) return 0;
    return 1;
}

static int same_file(const char *a, const char *b) {
    char cmd[512], out[256];
    snprintf(cmd, sizeof cmd, "cmp %s %s", a, b);
    return run_command(cmd, out, sizeof out) == 0;
}

static void test_checkpoint_weights_only(void) {
    char dir[] = "build/tmp/normgpt_ckptw_XXXXXX", trained[128], fresh[128], zeroed[128];
    CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    snprintf(trained, sizeof trained, "%s/trained.bin", dir);
    snprintf(fresh, sizeof fresh, "%s/fresh.bin", dir);
    snprintf(zeroed, sizeof zeroed, "%s/zeroed.bin", dir);
    Config c = tiny_config(1, 1);
    GPT a, b;
    gpt_build(&a, &c);
    gpt_build(&b, &c);
    gpt_init(&a, 5);
    size_t n = a.n_params;
    AdamW opt;
    adamw_init(&opt, n);
    for (size_t i = 0; i < n; i++) { opt.m[i] = (real)i; opt.v[i] = (real)(3 * i); }
    opt.t = 4;
    static RunState st = {7, 99, 0x0123456789ABCDEFull, 1, {{2.5, 0.25}}, 3}, got;
    checkpoint_write(trained, &c, &a, &opt, &st);

    checkpoint_load_weights(trained, &b, &got);
    CHECK(!memcmp(a.params, b.params, n * sizeof(real)), "weights differ after a weights-only load");
    CHECK(got.step == 7 && got.data_position == 99 && got.sample_rng == 0x0123456789ABCDEFull && got.world_size == 3 &&
          got.n_history == 1 && got.history[0][0] == 2.5 && got.history[0][1] == 0.25,
          "run state differs after a weights-only load");
    memset(b.params, 0, n * sizeof(real));
    checkpoint_load_weights(trained, &b, NULL);
    CHECK(!memcmp(a.params, b.params, n * sizeof(real)), "weights differ after a load without run state");

    // No optimizer: the file a zeroed AdamW writes, byte for byte; a full load reads zero moments.
    checkpoint_write(fresh, &c, &a, NULL, &st);
    AdamW zero;
    adamw_init(&zero, n);
    checkpoint_write(zeroed, &c, &a, &zero, &st);
    CHECK(same_file(fresh, zeroed), "a checkpoint without optimizer differs from one with a zeroed AdamW");
    checkpoint_load(fresh, &b, &opt, &got);
    CHECK(opt.t == 0 && all_zero(opt.m, n) && all_zero(opt.v, n), "fresh optimizer state is not zero after a load");
    CHECK(!memcmp(a.params, b.params, n * sizeof(real)) && got.step == 7, "weights or step differ after a full load");

    char cmd[256], out[256];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    run_command(cmd, out, sizeof out);
    adamw_free(&opt); adamw_free(&zero);
    gpt_free(&a); gpt_free(&b);
}

const TestCase checkpoint_tests[] = {
    {"checkpoint: weights-only load, no optimizer", test_checkpoint_weights_only},
    {NULL, NULL},
};
