// grad_dump: what the trainer computes for one batch, for the PyTorch parity test
// (tests/test_torch.c runs it, then tests/torch/torch_parity.py compares) and the bf16 gradient test
// (tests/test_bf16.c: the same batch in fp32 and in bf16).
//
//   build/grad_dump CKPT OUT B T [PRECISION]     PRECISION: fp32 (default) or bf16
//
// Loads CKPT into the model its config describes, takes B windows of T tokens (the first B of an
// evenly spaced set of validation windows, as evaluation does; random tokens from the seed when the
// config has no data.val), and writes OUT, little-endian:
//   int32 [8]      magic 20261123, version 1, B, T, V, 0, n_params (int64)
//   int32 [B*T]    inputs
//   int32 [B*T]    targets
//   float64        mean cross-entropy
//   float32 [B*T*V] logits
//   float32 [P]    gradient of the mean cross-entropy, laid out like the checkpoint's parameters
#include "checkpoint.h"
#include "data.h"
#include "model.h"
#include "rng.h"
#include <errno.h>
#include <omp.h>
#include <string.h>

#define DUMP_MAGIC 20261123

static void write_all(FILE *f, const void *data, size_t size, const char *path) {
    if (fwrite(data, 1, size, f) != size) die(1, "%s: cannot write: %s", path, strerror(errno));
}

int main(int argc, char **argv) {
    if (argc != 5 && argc != 6) die(EXIT_CONFIG, "usage: grad_dump CKPT OUT B T [PRECISION]");
    const char *path = argv[1], *out_path = argv[2];
    int B = atoi(argv[3]), T = atoi(argv[4]);
    Config cfg;
    checkpoint_read_config(path, &cfg);
    // Activation buffers are sized from these (config_validate checks them); BHyT's c is read from
    // the checkpoint, not recomputed for this T.
    cfg.batch_size = B;
    cfg.seq_len = T;
    cfg.total_batch_tokens = (long)B * T;
    if (argc == 6) snprintf(cfg.precision, sizeof cfg.precision, "%s", argv[5]);
    config_validate(&cfg);
    int *inputs = xcalloc((size_t)B * T, sizeof(int)), *targets = xcalloc((size_t)B * T, sizeof(int));
    if (cfg.val_data[0]) {
        Dataset val;
        dataset_open(&val, cfg.val_data, "data.val", T, cfg.vocab_size, (uint64_t)cfg.seed);
        dataset_fixed_batch(&val, 0, (size_t)B, B, inputs, targets);
        dataset_close(&val);
    } else {
        Rng r = rng_stream((uint64_t)cfg.seed, 3);
        for (int i = 0; i < B * T; i++) inputs[i] = (int)rng_below(&r, (uint64_t)cfg.vocab_size);
        for (int i = 0; i < B * T; i++) targets[i] = (int)rng_below(&r, (uint64_t)cfg.vocab_size);
    }
    GPT m;
    gpt_build(&m, &cfg);
    checkpoint_load_weights(path, &m, NULL);

    size_t NV = (size_t)B * T * m.V;
    real *logits = xcalloc(NV, sizeof(real));
    gpt_forward(&m, inputs, NULL, B, T);  // without targets the raw logits stay in m.fwd.logits
    memcpy(logits, m.fwd.logits, NV * sizeof(real));
    double loss = gpt_forward(&m, inputs, targets, B, T);
    gpt_zero_grad(&m);
    gpt_backward(&m, inputs, targets, B, T, (real)(1.0 / ((double)B * T)));

    FILE *f = fopen(out_path, "wb");
    if (!f) die(1, "%s: cannot open: %s", out_path, strerror(errno));
    int32_t header[8] = {DUMP_MAGIC, 1, B, T, m.V, 0};
    int64_t n_params = (int64_t)m.n_params;
    memcpy(&header[6], &n_params, sizeof n_params);
    write_all(f, header, sizeof header, out_path);
    write_all(f, inputs, (size_t)B * T * sizeof(int), out_path);
    write_all(f, targets, (size_t)B * T * sizeof(int), out_path);
    write_all(f, &loss, sizeof loss, out_path);
    write_all(f, logits, NV * sizeof(real), out_path);
    write_all(f, m.grads, m.n_params * sizeof(real), out_path);
    if (fclose(f) != 0) die(1, "%s: cannot write: %s", out_path, strerror(errno));
    printf("%s: loss %.6f on %d x %d tokens, %zu parameters\n", out_path, loss, B, T, m.n_params);
    free(inputs); free(targets); free(logits);
    gpt_free(&m);
    return 0;
}
