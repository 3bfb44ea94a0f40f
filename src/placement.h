// Placements as data: where a block's norms sit and how its residuals are wired. One row per
// placement; config validation, model building, the decoder (through the one block forward), the
// start-up block table, diagnostics and docs/norms.md all read this table. A new placement is one
// row here plus whatever new wiring its flags need in model.c's block_forward and block_backward.
//   pre          h = x + Attn(N1(x));             x' = h + FFN(N2(h))
//   post         h = N1(x + Attn(x));             x' = N2(h + FFN(h))
//   hybrid       h = x + Attn_qkvnorm(x);         z = N2(h);  x' = z + FFN(z)
//   hybrid_star  h = x + Attn_qkvnorm(N1(x));     x' = h + FFN(N2(h))
//   bhyt         h = x + Attn(BHyT1(x));          x' = h + FFN(BHyT2~(h)), BHyT2~ scaled by x's statistic
//   bhyt_star    pre wiring with the exact BHyT at both sites
//   peri         h = x + N1o(Attn(N1(x)));        x' = h + N2o(FFN(N2(h)))   (Peri-LN: output norms too)
//   deepnorm     h = N1(a*x + Attn(x));           x' = N2(a*h + FFN(h)), a = model.deepnorm_alpha, Xavier init
#ifndef NORMGPT_PLACEMENT_H
#define NORMGPT_PLACEMENT_H
#include "norms.h"

typedef enum {
    PLACE_PRE, PLACE_POST, PLACE_HYBRID, PLACE_HYBRID_STAR, PLACE_BHYT, PLACE_BHYT_STAR, PLACE_PERI,
    PLACE_DEEPNORM, PLACEMENTS_COUNT
} Placement;

typedef struct {
    const char *name;           // as written in model.placement and model.blocks[].placement
    int attn_in_norm;           // N1 before attention
    int attn_post_norm;         // N1 after the attention residual
    int attn_out_norm;          // N1o on the attention output, before the residual add (Peri-LN)
    int qkv_norm;               // per-head RMSNorm of q, k, v
    int ffn_in_norm;            // N2 before the FFN
    int ffn_from_norm;          // the FFN residual starts from N2(h), not h
    int ffn_post_norm;          // N2 after the FFN residual
    int ffn_out_norm;           // N2o on the FFN output, before the residual add (Peri-LN)
    int scaled_residual;        // the residual is multiplied by DeepNorm's alpha before the sublayer is added
    int xavier_init;            // block matrices drawn with DeepNorm's beta-scaled Xavier-normal init
    int shared_stat;            // N2 is BHyT's approximate site, reusing N1's statistic of the block input
    unsigned norms;             // the norm operators it is defined with (NORM_BIT of each); 0: every one
    int zero_mean_stream;       // may run on the zero-mean stream (crmsnorm, model.center_stream)
    Placement preset_rest;      // as a model.placement preset: the placement of blocks 1..L-1
} PlacementSpec;

#define NORM_BIT(k) (1u << (k))
extern const PlacementSpec PLACEMENTS[PLACEMENTS_COUNT];

// The placement named `name`, or -1.
int placement_by_name(const char *name);
// Whether a block can be placement `p` with norm `k`: NULL, or why not (a phrase naming both).
// Config validation and the tests' placement x norm matrices share this one rule.
const char *placement_refuses(Placement p, NormKind k);

#endif
