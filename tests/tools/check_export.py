#!/usr/bin/python3
"""The Hugging Face export's test (tests/test_export.c): scripts/export_hf.py on a checkpoint, then

  * model.safetensors parsed here from the format's definition (8-byte little-endian header length,
    JSON header, data_offsets tiling the data that follows);
  * its names and shapes are those of the class's state dict (GPT2LMHeadModel or LlamaForCausalLM),
    derived from the written config.json;
  * logits of a forward written here against that layout (GPT-2 or Llama math, float64, not
    tests/torch/torch_gpt.py) equal the C program's logits in DUMP (build/grad_dump) to 1e-4 relative.

    tests/tools/check_export.py CKPT DUMP OUT_DIR gpt2|llama
"""
import json
import math
import os
import subprocess
import sys

import numpy as np
import torch
import torch.nn.functional as F

DUMP_MAGIC = 20261123
TOLERANCE = 1e-4


def read_safetensors(path):
    raw = open(path, "rb").read()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    data = raw[8 + n:]
    header.pop("__metadata__", None)
    tensors, end = {}, 0
    for name, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        begin, stop = info["data_offsets"]
        assert info["dtype"] == "F32", f"{name}: dtype {info['dtype']}"
        assert begin == end and stop - begin == 4 * math.prod(info["shape"]), f"{name}: offsets {begin}, {stop}"
        tensors[name] = torch.from_numpy(np.frombuffer(data[begin:stop], "<f4").reshape(info["shape"]).copy())
        end = stop
    assert end == len(data), f"data is {len(data)} bytes, tensors end at {end}"
    return tensors


def gpt2_layout(c):
    C, V, I = c["n_embd"], c["vocab_size"], c["n_inner"] or 4 * c["n_embd"]
    shapes = {"transformer.wte.weight": (V, C), "transformer.wpe.weight": (c["n_positions"], C),
              "transformer.ln_f.weight": (C,), "transformer.ln_f.bias": (C,)}
    for l in range(c["n_layer"]):
        h = f"transformer.h.{l}."
        for ln in ("ln_1", "ln_2"):
            shapes.update({h + ln + ".weight": (C,), h + ln + ".bias": (C,)})
        for name, shape in (("attn.c_attn", (C, 3 * C)), ("attn.c_proj", (C, C)),
                            ("mlp.c_fc", (C, I)), ("mlp.c_proj", (I, C))):
            shapes.update({h + name + ".weight": shape, h + name + ".bias": (shape[1],)})
    if not c["tie_word_embeddings"]:
        shapes["lm_head.weight"] = (V, C)
    return shapes


def llama_layout(c):
    C, V, I = c["hidden_size"], c["vocab_size"], c["intermediate_size"]
    H, Hkv = c["num_attention_heads"], c["num_key_value_heads"]
    hd = c.get("head_dim", C // H)
    shapes = {"model.embed_tokens.weight": (V, C), "model.norm.weight": (C,)}
    for l in range(c["num_hidden_layers"]):
        h = f"model.layers.{l}."
        shapes.update({h + "input_layernorm.weight": (C,), h + "post_attention_layernorm.weight": (C,),
                       h + "self_attn.q_proj.weight": (H * hd, C), h + "self_attn.k_proj.weight": (Hkv * hd, C),
                       h + "self_attn.v_proj.weight": (Hkv * hd, C), h + "self_attn.o_proj.weight": (C, H * hd),
                       h + "mlp.gate_proj.weight": (I, C), h + "mlp.up_proj.weight": (I, C),
                       h + "mlp.down_proj.weight": (C, I)})
    if not c["tie_word_embeddings"]:
        shapes["lm_head.weight"] = (V, C)
    return shapes


def causal_attention(q, k, v):  # (B, heads, T, hd)
    T = q.shape[2]
    att = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
    att = att.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
    return att.softmax(-1) @ v


def gpt2_forward(w, c, idx):
    B, T = idx.shape
    C, H = c["n_embd"], c["n_head"]
    ln = lambda x, p: F.layer_norm(x, (C,), w[p + ".weight"], w[p + ".bias"], c["layer_norm_epsilon"])
    conv1d = lambda x, p: x @ w[p + ".weight"] + w[p + ".bias"]  # GPT-2's Conv1D: weight (in, out)
    x = w["transformer.wte.weight"][idx] + w["transformer.wpe.weight"][:T]
    for l in range(c["n_layer"]):
        h = f"transformer.h.{l}."
        q, k, v = conv1d(ln(x, h + "ln_1"), h + "attn.c_attn").split(C, dim=-1)
        heads = lambda t: t.view(B, T, H, C // H).transpose(1, 2)
        y = causal_attention(heads(q), heads(k), heads(v)).transpose(1, 2).reshape(B, T, C)
        x = x + conv1d(y, h + "attn.c_proj")
        x = x + conv1d(F.gelu(conv1d(ln(x, h + "ln_2"), h + "mlp.c_fc"), approximate="tanh"), h + "mlp.c_proj")
    x = ln(x, "transformer.ln_f")
    return x @ w.get("lm_head.weight", w["transformer.wte.weight"]).T


def llama_forward(w, c, idx):
    B, T = idx.shape
    C, H, Hkv = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"]
    hd = c.get("head_dim", C // H)
    rms = lambda x, p: x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + c["rms_norm_eps"]) * w[p]
    lin = lambda x, p: x @ w[p].T
    inv_freq = 1.0 / c["rope_theta"] ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd)
    freqs = torch.arange(T, dtype=torch.float64)[:, None] * inv_freq
    cos, sin = torch.cat((freqs, freqs), -1).cos(), torch.cat((freqs, freqs), -1).sin()
    rotate_half = lambda t: torch.cat((-t[..., hd // 2:], t[..., :hd // 2]), -1)
    rope = lambda t: t * cos + rotate_half(t) * sin
    x = w["model.embed_tokens.weight"][idx]
    for l in range(c["num_hidden_layers"]):
        h = f"model.layers.{l}."
        a = rms(x, h + "input_layernorm.weight")
        q = lin(a, h + "self_attn.q_proj.weight").view(B, T, H, hd).transpose(1, 2)
        k = lin(a, h + "self_attn.k_proj.weight").view(B, T, Hkv, hd).transpose(1, 2)
        v = lin(a, h + "self_attn.v_proj.weight").view(B, T, Hkv, hd).transpose(1, 2)
        rep = lambda t: t[:, :, None].expand(B, Hkv, H // Hkv, T, hd).reshape(B, H, T, hd)  # repeat_kv
        y = causal_attention(rope(q), rep(rope(k)), rep(v)).transpose(1, 2).reshape(B, T, H * hd)
        x = x + lin(y, h + "self_attn.o_proj.weight")
        m = rms(x, h + "post_attention_layernorm.weight")
        x = x + lin(F.silu(lin(m, h + "mlp.gate_proj.weight")) * lin(m, h + "mlp.up_proj.weight"),
                    h + "mlp.down_proj.weight")
    x = rms(x, "model.norm.weight")
    return x @ w.get("lm_head.weight", w["model.embed_tokens.weight"]).T


def read_dump(path):
    raw = open(path, "rb").read()
    h = np.frombuffer(raw[:32], "<i4")
    assert h[0] == DUMP_MAGIC, f"{path}: not a grad_dump file"
    B, T, V = (int(v) for v in h[2:5])
    inputs = np.frombuffer(raw, "<i4", B * T, 32).reshape(B, T)
    logits = np.frombuffer(raw, "<f4", B * T * V, 32 + 8 * B * T + 8).reshape(B, T, V)
    return torch.from_numpy(inputs.astype(np.int64)), torch.from_numpy(logits.astype(np.float64))


def main():
    ckpt, dump, out, arch = sys.argv[1:5]
    subprocess.run([sys.executable, "scripts/export_hf.py", ckpt, out], check=True)
    config = json.load(open(os.path.join(out, "config.json")))
    expect_class = {"gpt2": "GPT2LMHeadModel", "llama": "LlamaForCausalLM"}[arch]
    assert config["architectures"] == [expect_class], f"config.json: {config['architectures']}"
    tensors = read_safetensors(os.path.join(out, "model.safetensors"))
    layout = (gpt2_layout if arch == "gpt2" else llama_layout)(config)
    got = {name: tuple(t.shape) for name, t in tensors.items()}
    missing, extra = sorted(set(layout) - set(got)), sorted(set(got) - set(layout))
    assert not missing and not extra, f"missing {missing[:3]}, unexpected {extra[:3]}"
    wrong = [(n, got[n], layout[n]) for n in layout if got[n] != layout[n]]
    assert not wrong, f"shapes (name, written, expected): {wrong[:3]}"
    idx, c_logits = read_dump(dump)
    weights = {n: t.double() for n, t in tensors.items()}
    with torch.no_grad():
        ref = (gpt2_forward if arch == "gpt2" else llama_forward)(weights, config, idx)
    err = float((c_logits - ref).norm() / ref.norm())
    print(f"{arch}: {len(tensors)} tensors as {expect_class}; logits ||normgpt - HF forward|| / ||HF|| = {err:.2e}")
    assert err < TOLERANCE, f"logits differ: {err:.2e} >= {TOLERANCE}"


if __name__ == "__main__":
    main()
