#include "placement.h"
#include <stdio.h>
#include <string.h>

const PlacementSpec PLACEMENTS[PLACEMENTS_COUNT] = {
    [PLACE_PRE] = {.name = "pre", .attn_in_norm = 1, .ffn_in_norm = 1,
                   .zero_mean_stream = 1, .preset_rest = PLACE_PRE},
    [PLACE_POST] = {.name = "post", .attn_post_norm = 1, .ffn_post_norm = 1,
                    .preset_rest = PLACE_POST},
    [PLACE_HYBRID] = {.name = "hybrid", .qkv_norm = 1, .ffn_in_norm = 1, .ffn_from_norm = 1,
                      .preset_rest = PLACE_HYBRID},
    // As a preset, HybridNorm* is HybridNorm with this block first.
    [PLACE_HYBRID_STAR] = {.name = "hybrid_star", .attn_in_norm = 1, .qkv_norm = 1, .ffn_in_norm = 1,
                           .preset_rest = PLACE_HYBRID},
    [PLACE_BHYT] = {.name = "bhyt", .attn_in_norm = 1, .ffn_in_norm = 1, .shared_stat = 1, .norms = NORM_BIT(NORM_BHYT),
                    .preset_rest = PLACE_BHYT},
    [PLACE_BHYT_STAR] = {.name = "bhyt_star", .attn_in_norm = 1, .ffn_in_norm = 1, .norms = NORM_BIT(NORM_BHYT),
                         .preset_rest = PLACE_BHYT_STAR},
    [PLACE_PERI] = {.name = "peri", .attn_in_norm = 1, .attn_out_norm = 1, .ffn_in_norm = 1, .ffn_out_norm = 1,
                    .preset_rest = PLACE_PERI},
    [PLACE_DEEPNORM] = {.name = "deepnorm", .attn_post_norm = 1, .ffn_post_norm = 1, .scaled_residual = 1,
                        .xavier_init = 1, .preset_rest = PLACE_DEEPNORM,
                        .norms = NORM_BIT(NORM_LAYERNORM) | NORM_BIT(NORM_RMSNORM) | NORM_BIT(NORM_DYT) | NORM_BIT(NORM_DERF)},
};

int placement_by_name(const char *name) {
    for (int p = 0; p < PLACEMENTS_COUNT; p++)
        if (!strcmp(PLACEMENTS[p].name, name)) return p;
    return -1;
}

const char *placement_refuses(Placement p, NormKind k) {
    static char why[128];
    const PlacementSpec *place = &PLACEMENTS[p];
    if (place->norms && !(place->norms & NORM_BIT(k))) {
        int n = snprintf(why, sizeof why, "placement %s needs norm", place->name);
        int left = __builtin_popcount(place->norms), first = 1;
        for (int q = 0; q < NORM_KINDS; q++) {
            if (!(place->norms & NORM_BIT(q)) || n >= (int)sizeof why) continue;
            left--;
            n += snprintf(why + n, sizeof why - n, "%s%s", first ? " " : left ? ", " : " or ", NORM_OPS[q].name);
            first = 0;
        }
    } else if (NORM_OPS[k].compresses_stream && !place->zero_mean_stream) {
        int n = snprintf(why, sizeof why, "%s works only with placement", NORM_OPS[k].name);
        for (int q = 0; q < PLACEMENTS_COUNT; q++)
            if (PLACEMENTS[q].zero_mean_stream && n < (int)sizeof why)
                n += snprintf(why + n, sizeof why - n, " %s", PLACEMENTS[q].name);
    } else {
        return NULL;
    }
    return why;
}
