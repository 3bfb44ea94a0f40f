// Weights that leave the program: scripts/normgpt_checkpoint.py reads a run, scripts/export_hf.py
// writes the Hugging Face layout. For a GPT-2-shaped run (tied head) and a Llama-shaped one (GQA,
// untied head), tests/tools/check_export.py parses the safetensors file, checks names and shapes
// against the class's state dict, and compares the logits of its own HF-layout forward with the
// C program's (build/grad_dump). A Post-LN run is refused with one line.
#include "testing.h"
#include <string.h>

#define EXPORT_DIR "build/tmp/normgpt_export"
// Six steps at lr 1e-2 (no warmup) move every gain and bias away from its init.
#define EXPORT_RUN "./train --train.batch_size=4 --train.seq_len=64 --train.total_batch_tokens=256 " \
                   "--train.warmup_steps=1 --train.lr=1e-2 --eval.every=0 --sample.tokens=0 " \
                   "--out.checkpoint_every=0 --train.threads=1 --overwrite"

static char out[1 << 16];

static void test_export_hf(void) {
    static const struct { const char *arch, *config, *overrides; } cases[] = {
        {"gpt2", "configs/pre_ln.json", ""},
        {"llama", "configs/pre_rmsnorm.json",
         "--model.pos=rope --model.ffn=swiglu --model.bias=false --model.n_kv_head=2 --model.tie_embeddings=false"},
    };
    static char cmd[2048];
    for (int i = 0; i < 2; i++) {
        snprintf(cmd, sizeof cmd, EXPORT_RUN " --train.steps=6 --config %s %s --out.dir=" EXPORT_DIR "/%s && "
                 "OMP_NUM_THREADS=1 build/grad_dump " EXPORT_DIR "/%s/ckpt_00000006.bin " EXPORT_DIR "/%s/dump.bin 2 64 && "
                 "/usr/bin/python3 tests/tools/check_export.py " EXPORT_DIR "/%s/ckpt_00000006.bin " EXPORT_DIR
                 "/%s/dump.bin " EXPORT_DIR "/%s/hf %s", cases[i].config, cases[i].overrides, cases[i].arch,
                 cases[i].arch, cases[i].arch, cases[i].arch, cases[i].arch, cases[i].arch, cases[i].arch);
        int rc = run_command(cmd, out, sizeof out);
        CHECK(rc == 0 && strstr(out, "logits ||normgpt - HF forward||"), "%s (rc %d): %s", cases[i].arch, rc, out);
    }
    // The loader's command line on a run directory: its newest checkpoint.
    int rc = run_command("/usr/bin/python3 scripts/normgpt_checkpoint.py " EXPORT_DIR "/gpt2", out, sizeof out);
    CHECK(rc == 0 && strstr(out, "ckpt_00000006.bin: step 6") && strstr(out, "h.3.mlp.proj.weight"),
          "normgpt_checkpoint.py (rc %d): %s", rc, out);
}

static void test_export_refuses(void) {
    int rc = run_command(EXPORT_RUN " --train.steps=1 --config configs/post_ln.json --out.dir=" EXPORT_DIR "/post && "
                         "/usr/bin/python3 scripts/export_hf.py " EXPORT_DIR "/post " EXPORT_DIR "/post/hf",
                         out, sizeof out);
    const char *line = strstr(out, "export_hf.py:");
    CHECK(rc == 1 && line && strstr(line, "post+layernorm") && !strchr(strchr(line, '\n') + 1, '\n'),
          "post_ln export (rc %d): %s", rc, out);
    // LNS keeps Pre-LN's tensors but not its function: refused, not exported as GPT-2.
    rc = run_command(EXPORT_RUN " --train.steps=1 --config configs/pre_ln.json --model.lns=true --out.dir=" EXPORT_DIR
                     "/lns && /usr/bin/python3 scripts/export_hf.py " EXPORT_DIR "/lns " EXPORT_DIR "/lns/hf",
                     out, sizeof out);
    CHECK(rc == 1 && strstr(out, "model.lns = true has no counterpart"), "lns export (rc %d): %s", rc, out);
    rc = run_command("/usr/bin/python3 scripts/export_hf.py README.md " EXPORT_DIR "/x", out, sizeof out);
    CHECK(rc == 1 && strstr(out, "README.md: not a version-1"), "not a checkpoint (rc %d): %s", rc, out);
}

const TestCase export_tests[] = {
    {"export: GPT-2 and Llama layouts give normgpt's logits", test_export_hf},
    {"export: other architectures refused in one line", test_export_refuses},
    {NULL, NULL},
};
