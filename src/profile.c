#include "profile.h"
#include "common.h"
#include <string.h>

#define MAX_SECTIONS 64

typedef struct {
    const char *name;
    double seconds, flops;
    long calls;
} Section;

int profile_enabled = 0;
static Section sections[MAX_SECTIONS];
static int n_sections;

double profile_start(void) { return profile_enabled ? now_seconds() : 0; }

void profile_stop(const char *section, double start, double flops) {
    if (!profile_enabled) return;
    double elapsed = now_seconds() - start;
    int i = 0;
    while (i < n_sections && sections[i].name != section && strcmp(sections[i].name, section) != 0) i++;
    if (i == n_sections) {
        if (n_sections == MAX_SECTIONS) die(1, "internal: more than %d profile sections", MAX_SECTIONS);
        sections[n_sections++] = (Section){.name = section};
    }
    sections[i].seconds += elapsed;
    sections[i].flops += flops;
    sections[i].calls++;
}

static int by_time_desc(const void *a, const void *b) {
    double x = ((const Section *)a)->seconds, y = ((const Section *)b)->seconds;
    return (x < y) - (x > y);
}

void profile_print(FILE *out, long steps, double step_seconds) {
    if (steps <= 0) return;
    qsort(sections, n_sections, sizeof *sections, by_time_desc);
    double total = 0, matmul = 0;
    for (int i = 0; i < n_sections; i++) {
        total += sections[i].seconds;
        if (sections[i].flops > 0) matmul += sections[i].seconds;
    }
    fprintf(out, "profile over %ld steps (%.1f ms/step measured):\n", steps, 1e3 * step_seconds);
    fprintf(out, "  %-28s %9s %7s %8s %9s\n", "kernel", "ms/step", "%step", "calls", "GFLOP/s");
    for (int i = 0; i < n_sections; i++) {
        const Section *s = &sections[i];
        char rate[16] = "";
        if (s->flops > 0) snprintf(rate, sizeof rate, "%.1f", s->flops / s->seconds / 1e9);
        fprintf(out, "  %-28s %9.2f %6.1f%% %8.1f %9s\n", s->name, 1e3 * s->seconds / steps,
                100 * s->seconds / steps / step_seconds, (double)s->calls / steps, rate);
    }
    fprintf(out, "  %-28s %9.2f %6.1f%%   (matmuls %.1f%%, the rest %.1f%%)\n", "timed total", 1e3 * total / steps,
            100 * total / steps / step_seconds, 100 * matmul / steps / step_seconds,
            100 * (total - matmul) / steps / step_seconds);
}
