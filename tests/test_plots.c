// scripts/compare --plot-only --runs DIR redraws a spec's figures from copies of its runs (an
// experiment's logs/, no checkpoints), and `make compare` without SPEC= prints its usage.
#include "testing.h"
#include <string.h>

#define PLOTS_DIR "build/tmp/normgpt_plots"

static void test_compare_from_logs(void) {
    static char out[1 << 14];
    // two of the depth study's variants at two depths, figures into PLOTS_DIR
    FILE *f = fopen(PLOTS_DIR ".json", "w");
    fputs("{\"out\": \"runs/depth_study2\", \"figures\": \"" PLOTS_DIR "\", \"grid\": {\"model.n_layer\": [6, 24]},\n"
          " \"variants\": {\"pre_ln/lr=0.003\": {\"config\": \"configs/pre_ln.json\", \"overrides\": {\"train.lr\": 0.003}},\n"
          "              \"post_ln/lr=0.003\": {\"config\": \"configs/post_ln.json\", \"overrides\": {\"train.lr\": 0.003}}}}\n", f);
    fclose(f);
    int rc = run_command("rm -rf " PLOTS_DIR " && /usr/bin/python3 scripts/compare " PLOTS_DIR ".json --plot-only "
                         "--runs docs/experiments/depth_study/logs", out, sizeof out);
    CHECK(rc == 0, "compare --runs (rc %d): %s", rc, out);
    static const char *figures[] = {"loss.png", "val_loss_vs_n_layer.png", "grad_norm_n_layer=6.png", "rms_n_layer=24.png",
                                    "angle_n_layer=6.png", "layer_removal_n_layer=24.png"};
    char cmd[256];
    for (size_t i = 0; i < sizeof figures / sizeof figures[0]; i++) {
        snprintf(cmd, sizeof cmd, "test -s " PLOTS_DIR "/%s", figures[i]);
        CHECK(run_command(cmd, out, sizeof out) == 0, "no %s", figures[i]);
    }
    rc = run_command("cat " PLOTS_DIR "/summary.md", out, sizeof out);
    CHECK(rc == 0 && strstr(out, "| pre_ln/lr=0.003 | n_layer=24 |") && strstr(out, "| post_ln/lr=0.003 | n_layer=6 |"),
          "summary.md: %s", out);
    rc = run_command("/usr/bin/python3 scripts/compare " PLOTS_DIR ".json --runs docs/experiments/depth_study/logs",
                     out, sizeof out);
    CHECK(rc == 1 && strstr(out, "--plot-only"), "--runs without --plot-only (rc %d): %s", rc, out);
    remove(PLOTS_DIR ".json");
}

static void test_make_compare_usage(void) {
    static char out[4096];
    int rc = run_command("make --no-print-directory compare SPEC=", out, sizeof out);
    CHECK(rc == 2 && strstr(out, "usage: make compare SPEC="), "make compare (rc %d): %s", rc, out);
}

const TestCase plot_tests[] = {
    {"plots: compare --plot-only --runs redraws from logs", test_compare_from_logs},
    {"plots: make compare without SPEC prints usage", test_make_compare_usage},
    {NULL, NULL},
};
