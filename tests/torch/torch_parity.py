#!/usr/bin/python3
"""Parity of normgpt's C model with the PyTorch one (tests/torch/torch_gpt.py), as llm.c tests
against PyTorch.

    /usr/bin/python3 tests/torch/torch_parity.py [--tol 1e-4] [--perturb NAME:FACTOR] CKPT DUMP [CKPT DUMP ...]

DUMP is what build/grad_dump wrote for CKPT and a batch: the batch, the C program's loss, logits and
gradients (format in tests/tools/grad_dump.c). The PyTorch model loads CKPT, computes the same in
fp32, and every compared quantity must agree: the error of a tensor is ||c - torch|| / ||torch||
(L2 over all its entries), for the logits, the loss, the gradient of every trained parameter and,
when the checkpoint was written right after a refresh, BHyT's c recomputed from the weights;
the largest must be below --tol. Per pair a verdict line "parity CKPT: ... ok|FAIL" (after one line
per tensor with -v); exit 0 if every pair is within, 1 if not.
--perturb multiplies one parameter, or model.norm_eps, on the PyTorch side after loading (to show that
the test can fail).
"""
import argparse
import sys

import numpy as np
import torch

from torch_gpt import GPT, read_checkpoint

DUMP_MAGIC, DUMP_VERSION = 20261123, 1


def read_dump(path):
    raw = open(path, "rb").read()
    h = np.frombuffer(raw[:32], "<i4")
    if h[0] != DUMP_MAGIC or h[1] != DUMP_VERSION:
        raise SystemExit(f"{path}: not a grad_dump file")
    B, T, V = (int(v) for v in h[2:5])
    n_params = int(h[6:8].view("<i8")[0])
    off, N = 32, B * T
    inputs = np.frombuffer(raw, "<i4", N, off).reshape(B, T)
    targets = np.frombuffer(raw, "<i4", N, off + 4 * N).reshape(B, T)
    off += 8 * N
    loss = float(np.frombuffer(raw, "<f8", 1, off)[0])
    logits = np.frombuffer(raw, "<f4", N * V, off + 8).reshape(B, T, V)
    grads = np.frombuffer(raw, "<f4", n_params, off + 8 + 4 * N * V)
    return inputs, targets, loss, logits, grads


def rel_error(c, ref):
    c, ref = np.asarray(c, np.float64), np.asarray(ref, np.float64)
    denom = np.linalg.norm(ref)
    diff = np.linalg.norm(c - ref)
    return diff / denom if denom > 0 else (0.0 if diff == 0 else float("inf"))


def check(ckpt, dump, args):
    """Compare one checkpoint's PyTorch results with its dump; print the table and verdict; True if ok."""
    meta, params = read_checkpoint(ckpt)
    model = GPT(meta["config"], dtype=getattr(torch, args.dtype))
    model.load(params)
    if args.perturb:
        name, factor = args.perturb.rsplit(":", 1)
        if name == "norm_eps":
            model.spec.eps *= float(factor)
        elif name in model.p:
            with torch.no_grad():
                model.p[name].mul_(float(factor))
        else:
            raise SystemExit(f"--perturb: {ckpt} has no parameter {name}")
    inputs, targets, c_loss, c_logits, c_grads = read_dump(dump)
    if c_logits.shape[-1] != model.spec.V or c_grads.size != sum(a.size for a in params.values()):
        raise SystemExit(f"{dump}: does not belong to {ckpt}")

    logits, loss = model(torch.from_numpy(inputs.astype(np.int64)), torch.from_numpy(targets.astype(np.int64)))
    loss.backward()

    rows = [("logits", rel_error(c_logits, logits.detach().numpy())),
            ("loss", rel_error(c_loss, loss.item()))]
    offset = 0
    for name, a in params.items():
        c_grad = c_grads[offset:offset + a.size].reshape(a.shape)
        offset += a.size
        p = model.p[name]
        if isinstance(p, torch.nn.Parameter):  # buffers (BHyT's c) have no gradient
            rows.append(("grad " + name, rel_error(c_grad, p.grad.numpy())))
    # BHyT's c is refreshed after the update of every `refresh`-th step: at such a step the stored c
    # must be what this model computes from the stored weights.
    m = meta["config"]["model"]
    refresh = m["bhyt_refresh"] or max(1, min(1000, meta["config"]["train"]["steps"] // 50))
    if meta["step"] % refresh == 0:
        stored = {n: float(t) for n, t in model.p.items() if n.endswith(".bhyt_c")}
        model.refresh_bhyt()
        rows += [(name, rel_error(c, float(model.p[name]))) for name, c in stored.items()]
    if args.verbose:
        for what, err in rows:
            print(f"  {err:.2e}  {what}")
    what, worst = max(rows, key=lambda r: r[1])
    ok = worst < args.tol
    print(f"parity {ckpt}: loss C {c_loss:.6f} torch {loss.item():.6f}; max relative error {worst:.2e} "
          f"({what}), limit {args.tol:.0e}: {'ok' if ok else 'FAIL'}")
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("pairs", nargs="+", metavar="CKPT DUMP")
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                    help="precision of the PyTorch side (float64 shows how much of a difference is fp32 rounding)")
    ap.add_argument("--perturb", help="NAME:FACTOR, multiply parameter NAME (or norm_eps) on the PyTorch side")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every tensor's error")
    args = ap.parse_args()
    if len(args.pairs) % 2:
        ap.error("give checkpoints and dumps in pairs")
    torch.set_num_threads(1)
    results = [check(args.pairs[i], args.pairs[i + 1], args) for i in range(0, len(args.pairs), 2)]
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
