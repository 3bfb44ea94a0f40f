// The edges of a run (README, Robustness): special files as inputs, the checkpoint's run state, the
// lock on the run directory, disk space, the log's writes, memory, and signals in the middle of a step.
#include "checkpoint.h"
#include "rundir.h"
#include "testing.h"
#include <cjson/cJSON.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char out[1 << 16];

#define DIR_ "build/tmp/normgpt_robust"
// A model small enough that a few steps take a second on 2 cores.
#define SMALL "./train --config configs/default.json --model.n_layer=2 --model.n_embd=64 --model.n_head=4 " \
              "--model.block_size=64 --train.seq_len=64 --train.batch_size=8 --train.total_batch_tokens=1024 " \
              "--train.warmup_steps=2 --eval.batches=2 --sample.tokens=0 --train.threads=2"

// A FIFO as config, shard, tokenizer or checkpoint: one line naming it, never a hang (timeout
// turns a hang into a failed check).
static void test_special_files_refused(void) {
    run_command("rm -rf " DIR_ " && mkdir -p " DIR_ "/run && mkfifo " DIR_ "/fifo " DIR_ "/run/ckpt_00000001.bin",
                out, sizeof out);
    static const struct { const char *cmd; int code; } cases[] = {
        {"timeout 20 ./train --config " DIR_ "/fifo", 2},
        {"timeout 20 " SMALL " --data.train=" DIR_ "/fifo --out.dir=" DIR_ "/out", 1},
        {"timeout 20 " SMALL " --data.tokenizer=" DIR_ "/fifo --out.dir=" DIR_ "/out --overwrite", 1},
        {"timeout 20 ./train --resume " DIR_ "/run", 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int rc = run_command(cases[i].cmd, out, sizeof out);
        CHECK(rc == cases[i].code && strstr(out, "not a regular file"),
              "%s: rc %d: %s", cases[i].cmd, rc, out);
    }
    run_command("rm -rf " DIR_, out, sizeof out);
}

const TestCase robust_tests[] = {
    {"robust: FIFOs as inputs are refused, no hang", test_special_files_refused},
    {NULL, NULL},
};
