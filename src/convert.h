// Turning a trained Pre-LN model into an equivalent Pre-RMSNorm or Pre-CRMSNorm model (Jiang et al.,
// arXiv 2305.14858; the math is in docs/norms.md, "Converting Pre-LN").
//
// Every reader of the residual stream in Pre-LN sits behind a LayerNorm, which ignores the stream's
// mean. So centring everything that writes into the stream changes no output, and on the zero-mean
// stream LayerNorm is RMSNorm. The LayerNorm biases move into the bias of the linear layer each one
// feeds (qkv, mlp.fc, the LM head). For rmsnorm the gains stay in the RMSNorms; for crmsnorm they are
// folded into those layers too, and the stream drops its last coordinate, which is minus the sum of
// the others.
#ifndef NORMGPT_CONVERT_H
#define NORMGPT_CONVERT_H
#include "config.h"
#include "model.h"

typedef enum { CONVERT_RMSNORM, CONVERT_CRMSNORM } ConvertKind;

// NULL when the validated `cfg` describes a Pre-LN model (every block pre with layernorm, a layernorm
// final norm); otherwise what stands in the way, as a phrase.
const char *convert_unsupported(const Config *cfg);
// Build `dst` (with its validated config `dst_cfg`) as the `kind` model computing the same logits as
// the Pre-LN model `src`. The converted layout depends only on the source config: the LM head is
// always untied (a tied head survives the centring of wte only behind an identity final affine, which
// training never leaves), and has a bias whenever the final LayerNorm has one. `dst` is an inference
// build (no gradients) with forward activations the size of src's.
void convert_model(const GPT *src, const Config *src_cfg, ConvertKind kind, GPT *dst, Config *dst_cfg);
// max |logits of a - logits of b| / max |logits of a| over a forward of both models on inputs (B,T).
double max_rel_logit_diff(GPT *a, GPT *b, const int *inputs, int B, int T);

#endif
