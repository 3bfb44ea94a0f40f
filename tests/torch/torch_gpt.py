#!/usr/bin/python3
"""normgpt's model in eager PyTorch, written from docs/norms.md and README's file formats.

It serves two purposes: the parity test (tests/torch/torch_parity.py: a normgpt checkpoint gives
the same logits, loss and gradients here as in the C program) and the speed baseline
(bench/torch_bench.py).

A model is described by the resolved config that normgpt saves (RUN_DIR/config.json, or the
"config" of a checkpoint's metadata). Parameters are kept by their checkpoint names ("h.0.attn.qkv.weight"),
in the checkpoint's storage order, so a checkpoint loads by name and gradients compare by name.
Shapes: B batch, T time, S residual stream width (C, or C-1 with CRMSNorm), C attention width,
H query heads, Hkv key/value heads, hs head size, F FFN hidden width, V vocabulary.
"""
import json
import math

import numpy as np
import torch
import torch.nn.functional as F

CKPT_MAGIC, CKPT_VERSION = 20261122, 1
BHYT_EPS = 1e-6  # BHyT's eps is fixed (docs/norms.md), not model.norm_eps

# What each placement puts where (docs/norms.md, "Placements"):
#   attn_in: N1 before attention; attn_post: N1 after the attention residual; qkv_norm: per-head
#   RMSNorm of q, k, v; ffn_in: N2 before the FFN; ffn_from_norm: the FFN residual starts from N2(h);
#   ffn_post: N2 after the FFN residual; shared_stat: BHyT's approximate second site; attn_out/ffn_out:
#   Peri-LN's norms on the sublayer outputs before the residual add; deepnorm: DeepNorm's
#   h = N1(alpha x + Attn(x)), x' = N2(alpha h + FFN(h)) with its Xavier init.
PLACEMENTS = {
    "pre":         dict(attn_in=1, ffn_in=1),
    "bhyt_star":   dict(attn_in=1, ffn_in=1),
    "post":        dict(attn_post=1, ffn_post=1),
    "hybrid":      dict(qkv_norm=1, ffn_in=1, ffn_from_norm=1),
    "hybrid_star": dict(attn_in=1, qkv_norm=1, ffn_in=1),
    "bhyt":        dict(attn_in=1, ffn_in=1, shared_stat=1),
    "peri":        dict(attn_in=1, attn_out=1, ffn_in=1, ffn_out=1),
    "deepnorm":    dict(attn_post=1, ffn_post=1, deepnorm=1),
}
SWITCHES = ("attn_in", "attn_post", "attn_out", "qkv_norm", "ffn_in", "ffn_from_norm", "ffn_post", "ffn_out",
            "shared_stat", "deepnorm")


def read_checkpoint(path):
    """(metadata dict, {name: float32 array}) of a normgpt checkpoint (README, "Checkpoints")."""
    raw = open(path, "rb").read()
    if len(raw) < 1024:
        raise SystemExit(f"{path}: too short for a normgpt checkpoint")
    h = np.frombuffer(raw[:1024], "<i4")
    if h[0] != CKPT_MAGIC or h[1] != CKPT_VERSION or h[3] != 4:
        raise SystemExit(f"{path}: not a version-{CKPT_VERSION} float32 normgpt checkpoint")
    meta = json.loads(raw[1024:1024 + int(h[2])].decode())
    n = int(h[5:7].view("<i8")[0])
    values = np.frombuffer(raw, "<f4", count=n, offset=int(h[4]))
    params = {}
    for t in meta["tensors"]:
        size = int(np.prod(t["shape"]))
        params[t["name"]] = values[t["offset"]:t["offset"] + size].reshape(t["shape"])
    return meta, params


class Spec:
    """The model facts a resolved config implies."""

    def __init__(self, config):
        m = config["model"]
        self.V, self.maxT, self.L = m["vocab_size"], m["block_size"], m["n_layer"]
        self.H, self.C = m["n_head"], m["n_embd"]
        self.Hkv = m["n_kv_head"] or self.H
        self.hs = self.C // self.H
        self.blocks = [(b["placement"], b["norm"]) for b in m["blocks"]]
        # QK-norm per block: the block's own key, else model.qk_norm (docs/norms.md, "QK-norm").
        self.qk = [b.get("qk_norm", m["qk_norm"]) for b in m["blocks"]]
        self.qk_full, self.qk_affine, self.qk_eps = m["qk_norm_mode"] == "full", m["qk_norm_affine"], m["qk_norm_eps"]
        self.S = self.C - 1 if self.blocks[0][1] == "crmsnorm" else self.C
        self.swiglu = m["ffn"] == "swiglu"
        self.F = m["ffn_hidden"] or ((8 * self.C // 3 + 31) // 32 * 32 if self.swiglu else 4 * self.C)
        self.rope, self.theta = m["pos"] == "rope", m["rope_theta"]
        self.bias, self.tied, self.head_bias = m["bias"], m["tie_embeddings"], m["head_bias"]
        self.embed_scale, self.center = m["embed_scale"], m["center_stream"]
        self.final_norm, self.eps, self.kappa = m["final_norm"], m["norm_eps"], m["bhyt_kappa"]
        self.embed_norm = m.get("embed_norm", False)
        self.lns = m.get("lns", False)
        # DeepNorm's constants: 0 (unset) means the decoder-only formulas of docs/norms.md
        self.alpha = m.get("deepnorm_alpha", 0) or (2 * self.L) ** 0.25
        self.beta = m.get("deepnorm_beta", 0) or (8 * self.L) ** -0.25
        self.m = m
        self.seq_len = config["train"]["seq_len"]

    def norm_tensors(self, prefix, kind, scale_init):
        """(name, shape, init) of one norm operator's parameters, in storage order."""
        out = []
        if kind in ("dyt", "bhyt", "derf"):
            out.append((prefix + ".scale", (1,), ("const", scale_init)))
        if kind == "derf":
            out.append((prefix + ".shift", (1,), ("const", self.m["derf_shift"])))
        if kind != "crmsnorm":
            out.append((prefix + ".weight", (self.S,), ("const", 1.0)))
        if kind == "derf" or self.bias and (kind in ("layernorm", "dyt") or (kind == "rmsnorm" and self.center)):
            out.append((prefix + ".bias", (self.S,), ("const", 0.0)))
        return out

    def tensors(self):
        """(name, shape, init) of every stored tensor, in the checkpoint's order; init is
        ("const", v), ("normal", std), ("xavier", [(rows, std), ...]) (DeepNorm: slices of rows) or
        ("buffer", None)."""
        m, S, C, hs = self.m, self.S, self.C, self.hs
        std = m["init_std"]
        scaled = m["init"] in ("gpt2", "megatron") and (not self.lns or m.get("lns_scaled_init", False))
        writer = std / math.sqrt(2 * self.L) if scaled else std
        wte_std = math.sqrt(2 / 5) if m["init"] == "mixln" else std
        QKV = (self.H + 2 * self.Hkv) * hs
        FC = 2 * self.F if self.swiglu else self.F

        def linear(prefix, out_f, in_f, s):
            return [(prefix + ".weight", (out_f, in_f), ("normal", s))] + \
                   ([(prefix + ".bias", (out_f,), ("const", 0.0))] if self.bias else [])

        def xavier(prefix, slices, in_f):  # DeepNorm: std = gain sqrt(2 / (fan_in + fan_out)) per slice
            init = [(rows, gain * math.sqrt(2 / (in_f + rows))) for rows, gain in slices]
            out_f = sum(rows for rows, _ in slices)
            return [(prefix + ".weight", (out_f, in_f), ("xavier", init))] + \
                   ([(prefix + ".bias", (out_f,), ("const", 0.0))] if self.bias else [])

        t = [("wte", (self.V, S), ("normal", wte_std))]
        if not self.rope:
            t.append(("wpe", (self.maxT, S), ("normal", std)))
        if self.embed_scale:
            t.append(("embed_scale", (1,), ("const", math.sqrt(S))))
        derf_attn = m["derf_alpha_attn"] or m["derf_alpha"]  # 0 = unset
        derf_other = m["derf_alpha_other"] or m["derf_alpha"]
        if self.embed_norm:
            t += self.norm_tensors("embed_norm", m["norm"], derf_other if m["norm"] == "derf" else m["dyt_alpha_ffn"])
        for l, (place, kind) in enumerate(self.blocks):
            p, sw = f"h.{l}", PLACEMENTS[place]
            alpha1 = {"dyt": m["dyt_alpha_attn"], "derf": derf_attn}.get(kind, m["bhyt_lambda1"])
            alpha2 = {"dyt": m["dyt_alpha_ffn"], "derf": derf_other}.get(kind, m["bhyt_lambda2"])
            if sw.get("attn_in") or sw.get("attn_post"):
                t += self.norm_tensors(p + ".norm1", kind, alpha1)
            if sw.get("qkv_norm"):
                t += [(f"{p}.attn.{x}_norm.weight", (hs,), ("const", 1.0)) for x in "qkv"]
            if self.qk[l] and self.qk_affine:
                t += [(f"{p}.attn.qknorm_{x}.weight", (heads * hs if self.qk_full else hs,), ("const", 1.0))
                      for x, heads in (("q", self.H), ("k", self.Hkv))]
            b, F_ = self.beta, self.F
            if sw.get("deepnorm"):
                t += xavier(p + ".attn.qkv", [(self.H * hs, 1), (self.Hkv * hs, 1), (self.Hkv * hs, b)], S)
                t += xavier(p + ".attn.proj", [(S, b)], C)
            else:
                t += linear(p + ".attn.qkv", QKV, S, std) + linear(p + ".attn.proj", S, C, writer)
            if sw.get("attn_out"):
                t += self.norm_tensors(p + ".norm1_out", kind, alpha1)
            if sw.get("ffn_in") or sw.get("ffn_post"):
                t += self.norm_tensors(p + ".norm2", kind, alpha2)
            if sw.get("deepnorm"):
                t += xavier(p + ".mlp.fc", [(F_, b)] * (2 if self.swiglu else 1), S)
                t += xavier(p + ".mlp.proj", [(S, b)], F_)
            else:
                t += linear(p + ".mlp.fc", FC, S, std) + linear(p + ".mlp.proj", S, self.F, writer)
            if sw.get("ffn_out"):
                t += self.norm_tensors(p + ".norm2_out", kind, alpha2)
            if sw.get("shared_stat"):
                t.append((p + ".bhyt_c", (1,), ("buffer", None)))
        if self.final_norm != "none":
            lam = {"dyt": m["dyt_alpha_ffn"], "derf": derf_other}.get(self.final_norm, m["bhyt_final_lambda"])
            t += self.norm_tensors("lnf", self.final_norm, lam)
        if not self.tied:
            t.append(("lm_head.weight", (self.V, S), ("normal", std)))
        if self.head_bias:
            t.append(("lm_head.bias", (self.V,), ("const", 0.0)))
        return t


def rms(x, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)


class GPT(torch.nn.Module):
    def __init__(self, config, dtype=torch.float32, seed=0):
        super().__init__()
        self.spec = s = Spec(config)
        self.dtype = dtype
        self.p = {}
        self.future = {}
        gen = torch.Generator().manual_seed(seed)
        for name, shape, (kind, value) in s.tensors():
            if kind == "normal":
                data = torch.randn(shape, generator=gen, dtype=dtype) * value
            elif kind == "xavier":
                data = torch.cat([torch.randn((rows, shape[1]), generator=gen, dtype=dtype) * std
                                  for rows, std in value])
            else:
                data = torch.full(shape, value or 0.0, dtype=dtype)
            if kind == "buffer":
                self.register_buffer(name.replace(".", "_"), data)
                self.p[name] = data
            else:
                param = torch.nn.Parameter(data)
                self.register_parameter(name.replace(".", "_"), param)
                self.p[name] = param
        self.decayed = {name for name, shape, (kind, _) in s.tensors() if kind in ("normal", "xavier")}
        if s.rope:  # angle t * theta^(-2i/hs), in double as normgpt does, then rounded
            i = torch.arange(s.hs // 2, dtype=torch.float64)
            angle = torch.arange(s.maxT, dtype=torch.float64)[:, None] * s.theta ** (-2 * i / s.hs)
            self.rope_cos, self.rope_sin = angle.cos().to(dtype), angle.sin().to(dtype)
        self.refresh_bhyt()

    def trainable(self):
        return {n: p for n, p in self.p.items() if isinstance(p, torch.nn.Parameter)}

    def load(self, params):
        """Copy the tensors of a checkpoint (read_checkpoint) in; names and shapes must match."""
        expect = [(n, tuple(t.shape)) for n, t in self.p.items()]
        got = [(n, tuple(a.shape)) for n, a in params.items()]
        if expect != got:
            i = next(i for i in range(max(len(expect), len(got))) if expect[i:i + 1] != got[i:i + 1])
            raise SystemExit(f"checkpoint tensor {i} is {got[i:i + 1] or 'missing'}, the model expects "
                             f"{expect[i:i + 1] or 'none'}")
        with torch.no_grad():
            for n, a in params.items():
                self.p[n].copy_(torch.from_numpy(np.array(a)))

    @torch.no_grad()
    def refresh_bhyt(self):
        """BHyT's c = ||W_V W_O||_F^2 / (T d), value heads repeated for GQA (docs/norms.md)."""
        s = self.spec
        for l, (place, _) in enumerate(s.blocks):
            if not PLACEMENTS[place].get("shared_stat"):
                continue
            wqkv, wo = self.p[f"h.{l}.attn.qkv.weight"], self.p[f"h.{l}.attn.proj.weight"]
            wv = wqkv[(s.H + s.Hkv) * s.hs:].view(s.Hkv, s.hs, s.S)
            wv = wv.repeat_interleave(s.H // s.Hkv, dim=0).reshape(s.C, s.S)  # (C, S): value rows per query head
            self.p[f"h.{l}.bhyt_c"].fill_(float((wo @ wv).pow(2).sum()) / (s.seq_len * s.S))

    # --- layers -------------------------------------------------------------------------------

    def norm(self, prefix, kind, x, lns=1.0):
        """The operator `kind` with prefix's parameters; times LayerNorm Scaling's 1/sqrt(l) when given."""
        return self.operator(prefix, kind, x) * lns if lns != 1.0 else self.operator(prefix, kind, x)

    def operator(self, prefix, kind, x):
        p, s = self.p, self.spec
        w, b = p.get(prefix + ".weight"), p.get(prefix + ".bias")
        if kind == "layernorm":
            return F.layer_norm(x, (s.S,), w, b, s.eps)
        if kind == "rmsnorm":
            y = rms(x, s.eps) * w
            return y + b if b is not None else y
        if kind == "crmsnorm":  # the implicit d-th feature is -sum(x): mean square over d = S + 1
            ssum = x.sum(-1, keepdim=True)
            return x * torch.rsqrt((x.pow(2).sum(-1, keepdim=True) + ssum * ssum) / (s.S + 1) + s.eps)
        if kind == "dyt":
            y = torch.tanh(p[prefix + ".scale"] * x) * w
            return y + b if b is not None else y
        if kind == "bhyt":
            return torch.tanh(p[prefix + ".scale"] / s.kappa * rms(x, BHYT_EPS)) * w
        if kind == "derf":  # beta always present
            return torch.erf(p[prefix + ".scale"] * x + p[prefix + ".shift"]) * w + b
        raise ValueError(kind)

    def rotate(self, x, T):  # x (B, heads, T, hs), LLaMA's rotate-half pairing (i, i + hs/2)
        half = self.spec.hs // 2
        cos, sin = self.rope_cos[:T], self.rope_sin[:T]
        x1, x2 = x[..., :half], x[..., half:]
        return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)

    def linear(self, prefix, x):
        return F.linear(x, self.p[prefix + ".weight"], self.p.get(prefix + ".bias"))

    def attention(self, l, x, qkv_norm):  # x (B,T,S) -> (B,T,S)
        s, p = self.spec, self.p
        B, T, _ = x.shape
        qkv = self.linear(f"h.{l}.attn.qkv", x)
        q, k, v = qkv.split([s.H * s.hs, s.Hkv * s.hs, s.Hkv * s.hs], dim=-1)
        q = q.view(B, T, s.H, s.hs)
        k = k.view(B, T, s.Hkv, s.hs)
        v = v.view(B, T, s.Hkv, s.hs)
        if qkv_norm:  # per head, one gain of size hs per projection; before RoPE
            q = rms(q, s.eps) * p[f"h.{l}.attn.q_norm.weight"]
            k = rms(k, s.eps) * p[f"h.{l}.attn.k_norm.weight"]
            v = rms(v, s.eps) * p[f"h.{l}.attn.v_norm.weight"]
        if s.qk[l]:  # after QKV-norm, before RoPE; q and k only
            q, k = self.qk_norm(l, q, "q"), self.qk_norm(l, k, "k")
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        if s.rope:
            q, k = self.rotate(q, T), self.rotate(k, T)
        if s.Hkv != s.H:  # query head h reads kv head h // (H / Hkv)
            k = k.repeat_interleave(s.H // s.Hkv, dim=1)
            v = v.repeat_interleave(s.H // s.Hkv, dim=1)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(s.hs))
        if T not in self.future:  # the causal mask: position t sees s <= t
            self.future[T] = torch.ones(T, T, dtype=torch.bool).triu(1)
        att = att.masked_fill(self.future[T], float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, s.C)
        return self.center(self.linear(f"h.{l}.attn.proj", y))

    def qk_norm(self, l, x, which):
        """QK-norm of x (B,T,heads,hs): per head (a gain of hs shared by the heads) or over all heads*hs of
        the token (a gain per channel); mean of squares and rsqrt written out, as F.rms_norm computes."""
        s = self.spec
        B, T, heads, hs = x.shape
        rows = x.reshape(B, T, heads * hs) if s.qk_full else x
        y = rows * torch.rsqrt(rows.pow(2).mean(-1, keepdim=True) + s.qk_eps)
        if s.qk_affine:
            y = y * self.p[f"h.{l}.attn.qknorm_{which}.weight"]
        return y.reshape(B, T, heads, hs)

    def ffn(self, l, x):
        hidden = self.linear(f"h.{l}.mlp.fc", x)
        if self.spec.swiglu:
            gate, up = hidden.chunk(2, dim=-1)
            act = F.silu(gate) * up
        else:
            act = F.gelu(hidden, approximate="tanh")
        return self.center(self.linear(f"h.{l}.mlp.proj", act))

    def center(self, x):  # model.center_stream: every writer into the stream is zero-mean per token
        return x - x.mean(-1, keepdim=True) if self.spec.center else x

    def block(self, l, x):
        s, sw = self.spec, PLACEMENTS[self.spec.blocks[l][0]]
        kind, n1, n2 = s.blocks[l][1], f"h.{l}.norm1", f"h.{l}.norm2"
        get = lambda key: sw.get(key, 0)
        lns = 1 / math.sqrt(l + 1) if s.lns else 1.0  # every residual-width norm of block l (1-based l + 1)
        norm = lambda prefix, y: self.norm(prefix, kind, y, lns)
        if get("attn_out"):  # Peri-LN: u = N1(x); h = x + N1o(Attn(u)); x' = h + N2o(FFN(N2(h)))
            h = x + norm(n1 + "_out", self.attention(l, norm(n1, x), False))
            return h + norm(n2 + "_out", self.ffn(l, norm(n2, h)))
        if get("deepnorm"):  # DeepNorm: the residual up-weighted by alpha inside a post-norm block
            h = norm(n1, s.alpha * x + self.attention(l, x, False))
            return norm(n2, s.alpha * h + self.ffn(l, h))
        if get("shared_stat"):  # BHyT: one statistic s = mean(x^2) of the block input for both sites
            ms = x.pow(2).mean(-1, keepdim=True)
            lam1, lam2 = self.p[n1 + ".scale"], self.p[n2 + ".scale"]
            u = torch.tanh(lam1 / s.kappa * x * torch.rsqrt(ms + BHYT_EPS)) * self.p[n1 + ".weight"]
            h = x + self.attention(l, u, False)
            correction = self.p[f"h.{l}.bhyt_c"] * lam1.detach() ** 2 / s.kappa ** 2
            v = torch.tanh(lam2 / s.kappa * h * torch.rsqrt(ms + correction + BHYT_EPS)) * self.p[n2 + ".weight"]
            return h + self.ffn(l, v)
        h = x + self.attention(l, norm(n1, x) if get("attn_in") else x, get("qkv_norm"))
        if get("attn_post"):
            h = norm(n1, h)
        z = norm(n2, h) if get("ffn_in") else h
        out = (z if get("ffn_from_norm") else h) + self.ffn(l, z)
        return norm(n2, out) if get("ffn_post") else out

    def forward(self, idx, targets=None):
        """idx (B,T) int64 -> logits (B,T,V), and the mean cross-entropy when targets are given."""
        s, p = self.spec, self.p
        T = idx.shape[1]
        x = F.embedding(idx, p["wte"])
        if s.embed_scale:
            x = x * p["embed_scale"]
        if not s.rope:
            x = x + p["wpe"][:T]
        if s.embed_norm:
            x = self.norm("embed_norm", s.m["norm"], x)
        x = self.center(x)
        for l in range(s.L):
            x = self.block(l, x)
        if s.final_norm != "none":
            x = self.norm("lnf", s.final_norm, x)
        logits = F.linear(x, p["wte"] if s.tied else p["lm_head.weight"], p.get("lm_head.bias"))
        if targets is None:
            return logits, None
        return logits, F.cross_entropy(logits.view(-1, s.V), targets.reshape(-1))
