#!/usr/bin/python3
"""Export a normgpt checkpoint to the Hugging Face layout: model.safetensors + config.json.

    /usr/bin/python3 scripts/export_hf.py CKPT_OR_RUN_DIR OUT_DIR

Two architectures map exactly onto transformers classes (every block the same):
  * pre + layernorm + gelu + learned positions -> GPT2LMHeadModel. GPT-2's Conv1D layers store their
    weights as (in, out), so every linear weight is transposed; c_attn's outputs are q, k, v, each head
    after head, as normgpt's qkv; normgpt's GELU is the tanh form ("gelu_new"). A model without
    biases gets zero biases (GPT-2 always has them). Tied embeddings: no lm_head.weight is written
    (transformers ties it to wte); untied: lm_head.weight and "tie_word_embeddings": false.
  * pre + rmsnorm + swiglu + rope, no biases -> LlamaForCausalLM. q/k/v/o_proj come from the rows of
    qkv and proj; gate_proj and up_proj are the first and second halves of the SwiGLU input layer.
    normgpt's RoPE pairs dimension i with i + head_size/2 at angle t * theta^(-2i/head_size), which
    is Llama's rotate_half layout, so q and k rows are written as they are.
Anything else (other placements or norms, per-block mixes, embed_scale, embed_norm, lns, center_stream, a head bias,
grouped-query attention in GPT-2) is refused with one line. The safetensors file is written with
numpy: an 8-byte little-endian header length, the JSON header (dtype, shape, data_offsets of each
tensor, padded with spaces to a multiple of 8), then the float32 data. config.json has the fields
those classes' configs read; tokenizer files are not written.
"""
import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import normgpt_checkpoint  # noqa: E402


class ExportError(Exception):
    pass


def architecture(m):
    """'gpt2' or 'llama' for the model config m, or ExportError saying why neither."""
    kinds = {(b["placement"], b["norm"]) for b in m["blocks"]}
    kind = kinds.pop() if len(kinds) == 1 else None
    if kind == ("pre", "layernorm") and m["ffn"] == "gelu" and m["pos"] == "learned" \
            and m["final_norm"] == "layernorm":
        arch = "gpt2"
    elif kind == ("pre", "rmsnorm") and m["ffn"] == "swiglu" and m["pos"] == "rope" \
            and m["final_norm"] == "rmsnorm":
        arch = "llama"
    else:
        blocks = ", ".join(sorted(f"{p}+{n}" for p, n in {(b["placement"], b["norm"]) for b in m["blocks"]}))
        raise ExportError(f"blocks {blocks}, ffn {m['ffn']}, pos {m['pos']}, final_norm {m['final_norm']}: "
                          "only pre+layernorm+gelu+learned (GPT-2) or pre+rmsnorm+swiglu+rope (Llama) export")
    for key, refused in (("embed_scale", True), ("center_stream", True), ("head_bias", True), ("lns", True),
                         ("embed_norm", True)):
        if m.get(key, False) == refused:
            raise ExportError(f"model.{key} = {str(refused).lower()} has no counterpart in {arch}")
    if arch == "gpt2" and m["n_kv_head"] not in (0, m["n_head"]):
        raise ExportError("GPT-2 has no grouped-query attention (model.n_kv_head)")
    if arch == "llama" and m["bias"]:
        raise ExportError("model.bias = true: the Llama export takes models without biases")
    return arch


def ffn_hidden(m):  # as the C program sizes it
    if m["ffn_hidden"]:
        return m["ffn_hidden"]
    return (8 * m["n_embd"] // 3 + 31) // 32 * 32 if m["ffn"] == "swiglu" else 4 * m["n_embd"]


def gpt2_tensors(m, p):
    C, L = m["n_embd"], m["n_layer"]
    bias = (lambda name, n: p[name]) if m["bias"] else (lambda name, n: np.zeros(n, np.float32))
    t = {"transformer.wte.weight": p["wte"], "transformer.wpe.weight": p["wpe"]}
    for l in range(L):
        src, dst = f"h.{l}.", f"transformer.h.{l}."
        for a, b in (("norm1", "ln_1"), ("norm2", "ln_2")):
            t[dst + b + ".weight"] = p[src + a + ".weight"]
            t[dst + b + ".bias"] = bias(src + a + ".bias", C)
        for a, b in (("attn.qkv", "attn.c_attn"), ("attn.proj", "attn.c_proj"),
                     ("mlp.fc", "mlp.c_fc"), ("mlp.proj", "mlp.c_proj")):
            w = p[src + a + ".weight"]
            t[dst + b + ".weight"] = w.T  # Conv1D: (in, out)
            t[dst + b + ".bias"] = bias(src + a + ".bias", w.shape[0])
    t["transformer.ln_f.weight"] = p["lnf.weight"]
    t["transformer.ln_f.bias"] = bias("lnf.bias", C)
    if not m["tie_embeddings"]:
        t["lm_head.weight"] = p["lm_head.weight"]
    config = {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
        "vocab_size": m["vocab_size"], "n_positions": m["block_size"], "n_ctx": m["block_size"],
        "n_embd": C, "n_layer": L, "n_head": m["n_head"], "n_inner": ffn_hidden(m),
        "activation_function": "gelu_new", "layer_norm_epsilon": m["norm_eps"],
        "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0,
        "initializer_range": m["init_std"], "scale_attn_weights": True,
        "tie_word_embeddings": m["tie_embeddings"],
    }
    return t, config


def llama_tensors(m, p):
    C, L, H = m["n_embd"], m["n_layer"], m["n_head"]
    Hkv, hs, F = m["n_kv_head"] or H, C // H, ffn_hidden(m)
    t = {"model.embed_tokens.weight": p["wte"]}
    for l in range(L):
        src, dst = f"h.{l}.", f"model.layers.{l}."
        qkv, fc = p[src + "attn.qkv.weight"], p[src + "mlp.fc.weight"]
        t[dst + "input_layernorm.weight"] = p[src + "norm1.weight"]
        t[dst + "self_attn.q_proj.weight"] = qkv[:H * hs]
        t[dst + "self_attn.k_proj.weight"] = qkv[H * hs:(H + Hkv) * hs]
        t[dst + "self_attn.v_proj.weight"] = qkv[(H + Hkv) * hs:]
        t[dst + "self_attn.o_proj.weight"] = p[src + "attn.proj.weight"]
        t[dst + "post_attention_layernorm.weight"] = p[src + "norm2.weight"]
        t[dst + "mlp.gate_proj.weight"] = fc[:F]
        t[dst + "mlp.up_proj.weight"] = fc[F:]
        t[dst + "mlp.down_proj.weight"] = p[src + "mlp.proj.weight"]
    t["model.norm.weight"] = p["lnf.weight"]
    if not m["tie_embeddings"]:
        t["lm_head.weight"] = p["lm_head.weight"]
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "vocab_size": m["vocab_size"], "max_position_embeddings": m["block_size"],
        "hidden_size": C, "intermediate_size": F, "num_hidden_layers": L,
        "num_attention_heads": H, "num_key_value_heads": Hkv, "head_dim": hs,
        "hidden_act": "silu", "rms_norm_eps": m["norm_eps"], "rope_theta": m["rope_theta"],
        "rope_scaling": None, "attention_bias": False, "mlp_bias": False, "attention_dropout": 0.0,
        "initializer_range": m["init_std"], "tie_word_embeddings": m["tie_embeddings"],
    }
    return t, config


def write_safetensors(path, tensors, metadata):
    """The safetensors format, float32 tensors in the given order."""
    header, offset = {"__metadata__": metadata}, 0
    for name, a in tensors.items():
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [offset, offset + 4 * a.size]}
        offset += 4 * a.size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(np.uint64(len(text)).astype("<u8").tobytes())
        f.write(text)
        for a in tensors.values():
            f.write(np.ascontiguousarray(a, dtype="<f4").tobytes())


def export(path, out_dir):
    ckpt = normgpt_checkpoint.load(path)
    m = ckpt.config["model"]
    arch = architecture(m)
    tensors, config = (gpt2_tensors if arch == "gpt2" else llama_tensors)(m, ckpt.params)
    config["torch_dtype"] = "float32"
    os.makedirs(out_dir, exist_ok=True)
    write_safetensors(os.path.join(out_dir, "model.safetensors"), tensors,
                      {"format": "pt", "source": f"normgpt {os.path.basename(ckpt.path)} step {ckpt.step}"})
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    return ckpt, arch


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("path", help=normgpt_checkpoint.PATH_HELP)
    ap.add_argument("out_dir", help="directory for model.safetensors and config.json")
    args = ap.parse_args()
    try:
        ckpt, arch = export(args.path, args.out_dir)
    except normgpt_checkpoint.CheckpointError as e:
        sys.exit(f"export_hf.py: {e}")
    except ExportError as e:
        sys.exit(f"export_hf.py: {args.path}: {e}")
    print(f"{ckpt.path} (step {ckpt.step}) -> {args.out_dir}/model.safetensors, config.json "
          f"({'GPT2LMHeadModel' if arch == 'gpt2' else 'LlamaForCausalLM'})")


if __name__ == "__main__":
    main()
