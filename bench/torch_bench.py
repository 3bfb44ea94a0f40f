#!/usr/bin/python3
"""Training throughput of the PyTorch model (tests/torch/torch_gpt.py): eager PyTorch on the CPU, fp32 or
(--bf16) bf16 autocast (torch.autocast('cpu', dtype=torch.bfloat16) around the forward and loss).

    /usr/bin/python3 bench/torch_bench.py --config FILE [--threads N] [--warmup 3] [--steps 10] [--bf16]

FILE is a normgpt config, a run's resolved RUN_DIR/config.json, or a checkpoint. A config that is not
resolved (configs/*.json leave keys to their defaults) is resolved by ./train itself: one step of a
throwaway run in a temporary directory, whose config.json is read back, so both programs build the
same model. A timed step is what normgpt's step does: zero the gradients, forward and backward over
train.total_batch_tokens / (batch_size * seq_len) micro-batches of (batch_size, seq_len) tokens,
clip the gradient norm to train.grad_clip, refresh BHyT's c when normgpt would, and one AdamW update
(weight decay on matrices and embeddings only). Tokens are drawn at random (speed does not depend
on them). After --warmup untimed steps, --steps steps are timed; the last line is

    torch_bench tokens_per_s=T ms_per_step=M threads=N steps=S tokens_per_step=K torch=VERSION precision=P config=FILE

with T = S * K / (wall time of the S steps) and M the median step time. Run it alone: PyTorch's
OpenMP threads and normgpt's slow each other down badly when both run on the same cores.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests", "torch"))  # the PyTorch model the parity test checks

from torch_gpt import GPT, read_checkpoint  # noqa: E402


def resolved_config(path):
    """The resolved config of a checkpoint, a run's config.json or any config (via ./train)."""
    with open(path, "rb") as f:
        head = f.read(4)
    if int.from_bytes(head, "little") == 20261122:
        return read_checkpoint(path)[0]["config"]
    config = json.load(open(path))
    if "blocks" in config.get("model", {}) and "n_kv_head" in config.get("model", {}):
        return config
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [os.path.join(REPO, "train"), "--config", path, "--train.steps=1", "--train.warmup_steps=0",
               "--eval.every=0", "--data.val=", "--sample.tokens=0", "--train.threads=1",
               "--out.dir=" + tmp, "--overwrite"]
        run = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        if run.returncode != 0:
            raise SystemExit(f"{path}: ./train could not resolve it: {(run.stderr or run.stdout).strip()}")
        resolved = json.load(open(os.path.join(tmp, "config.json")))
    resolved["train"]["steps"] = config.get("train", {}).get("steps", resolved["train"]["steps"])
    return resolved


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="torch.set_num_threads (default: all cores)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast for the forward (mixed precision)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    config = resolved_config(args.config)
    t = config["train"]
    B, T = t["batch_size"], t["seq_len"]
    accum = t["total_batch_tokens"] // (B * T)
    model = GPT(config)
    params = model.trainable()
    decay = [p for n, p in params.items() if n in model.decayed]
    no_decay = [p for n, p in params.items() if n not in model.decayed]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": t["weight_decay"]},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=t["lr"], betas=(t["beta1"], t["beta2"]), eps=t["eps"], foreach=True)
    refresh = config["model"]["bhyt_refresh"] or max(1, min(1000, t["steps"] // 50))
    V = model.spec.V
    batches = [(torch.randint(V, (B, T)), torch.randint(V, (B, T))) for _ in range(accum)]

    def step(i):
        opt.zero_grad(set_to_none=True)
        for x, y in batches:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
                _, loss = model(x, y)
            (loss / accum).backward()
        if t["grad_clip"] > 0:
            torch.nn.utils.clip_grad_norm_(params.values(), t["grad_clip"])
        opt.step()
        if i % refresh == 0:
            model.refresh_bhyt()

    for i in range(1, args.warmup + 1):
        step(i)
    times = []
    start = time.perf_counter()
    for i in range(args.warmup + 1, args.warmup + args.steps + 1):
        t0 = time.perf_counter()
        step(i)
        times.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - start
    tokens = t["total_batch_tokens"]
    print(f"{sum(p.numel() for p in params.values())} parameters, {tokens} tokens per step = {B} x {T} x {accum}, "
          f"{args.threads} threads, torch {torch.__version__}", file=sys.stderr)
    print(f"torch_bench tokens_per_s={args.steps * tokens / elapsed:.1f} ms_per_step={1e3 * statistics.median(times):.1f} "
          f"threads={args.threads} steps={args.steps} tokens_per_step={tokens} torch={torch.__version__} "
          f"precision={'bf16' if args.bf16 else 'fp32'} config={args.config}")


if __name__ == "__main__":
    main()
