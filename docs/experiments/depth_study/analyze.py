#!/usr/bin/python3
"""Numbers behind the depth study's write-up, from the copied logs: analyze.py [LOGS_DIR] > analysis.md

Per method and depth: final val loss; the per-block gradient-norm ratio last/first block at step 1 and at
the last logged step (all block parameters, and FFN weights alone; "0/0" when both are exactly zero, as in
a stalled run); the largest block gradient norm at the last logged step; the output RMS of the last block over
the first; the mean angular distance of the deepest and the shallowest quarter of the blocks; the mean
layer-removal loss increase of the deeper and the shallower half; for DyT/BHyT the mean tanh saturation;
for BHyT the assumed over the actual mean square at the second site. First line: the loss of the best
context-free model on the evaluation windows (the training set's token frequencies), the level a stalled
run sits at.
"""
import glob
import math
import os
import sys

import numpy as np

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..")
sys.path.insert(0, os.path.join(REPO, "scripts"))
import runplots  # noqa: E402


def quarter(values, deep):
    n = max(1, len(values) // 4)
    return float(np.mean(values[-n:] if deep else values[:n]))


def half(values, deep):
    n = max(1, len(values) // 2)
    return float(np.mean(values[-n:] if deep else values[:n]))


def ratio(last, first):
    """last/first as text; a stalled run's blocks can have exactly zero gradient."""
    if first == 0:
        return "0/0" if last == 0 else "%.2g/0" % last
    return "%.3g" % (last / first)


def nanmean(values):
    v = [x for x in values if x is not None]
    return float(np.mean(v)) if v else float("nan")


def shard_tokens(pattern):
    """The tokens of every llm.c shard matching pattern, in glob order (a 256-int32 header, then uint16)."""
    parts = []
    for path in sorted(glob.glob(os.path.join(REPO, pattern))):
        with open(path, "rb") as f:
            n = int(np.frombuffer(f.read(1024), dtype=np.int32)[2])
            parts.append(np.frombuffer(f.read(2 * n), dtype=np.uint16))
    return parts


def unigram_loss(config):
    """Cross-entropy of the training set's token frequencies on the evaluation windows that train.c's
    evaluate() reads: eval.batches * batch_size windows spread evenly over the validation shards."""
    T, count = config["train"]["seq_len"], config["eval"]["batches"] * config["train"]["batch_size"]
    vocab = config["model"]["vocab_size"]
    counts = sum(np.bincount(t, minlength=vocab) for t in shard_tokens(config["data"]["train"]))
    logp = np.log((counts + 0.01) / (counts + 0.01).sum())
    shards = shard_tokens(config["data"]["val"])
    first = np.cumsum([0] + [(len(t) - 1) // T for t in shards])
    targets = []
    for b in range(count):
        w = b * int(first[-1]) // count
        i = int(np.searchsorted(first, w, side="right")) - 1
        start = (w - int(first[i])) * T
        targets.append(shards[i][start + 1:start + T + 1])
    return -float(np.mean(logp[np.concatenate(targets)]))


def main():
    logs = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "logs")
    runs = []
    for path in sorted(glob.glob(os.path.join(logs, "*", "*", "*"))):
        variant, panel, seed = path.split(os.sep)[-3:]
        runs.append(runplots.Run(path, variant, panel, seed))
    runs.sort(key=lambda r: (r.variant, int(r.panel.split("=")[1])))
    loss = unigram_loss(runs[0].config)
    print("Context-free (unigram) loss on the evaluation windows: %.4f (perplexity %.0f)\n" % (loss, math.exp(loss)))
    print("| method | L | val loss | grad last/first step 1 | (FFN W) | grad last/first end | (FFN W) "
          "| max block grad end | RMS last/first end | angle deep/shallow quarter | removal deep/shallow half "
          "| tanh sat. | BHyT ms approx/actual |")
    print("|" + "---|" * 13)
    for r in runs:
        first, last = r.diag[0][1], r.diag[-1][1]
        g0 = ratio(first["grad_norm"][-1], first["grad_norm"][0])
        f0 = ratio(first["ffn_grad_norm"][-1], first["ffn_grad_norm"][0])
        g1 = ratio(last["grad_norm"][-1], last["grad_norm"][0])
        f1 = ratio(last["ffn_grad_norm"][-1], last["ffn_grad_norm"][0])
        gmax = max(last["grad_norm"])
        rms = ratio(last["rms"][-1], last["rms"][0])
        angle = "%.3f / %.3f" % (quarter(last["angle"], True), quarter(last["angle"], False))
        removal = "%+.3f / %+.3f" % (half(r.removal["delta"], True), half(r.removal["delta"], False)) \
            if r.removal else "-"
        sats = [x for x in last["sat1"] + last["sat2"] if x is not None]
        sat = "%.3f" % np.mean(sats) if sats else "-"
        approx, actual = nanmean(last["ms_approx"]), nanmean(last["ms_actual"])
        ms = "%.2f" % (approx / actual) if approx == approx else "-"
        print("| %s | %s | %.4f | %s | %s | %s | %s | %.2g | %s | %s | %s | %s | %s |" % (
            r.variant, r.panel.split("=")[1], r.final_val(), g0, f0, g1, f1, gmax, rms, angle, removal, sat, ms))


if __name__ == "__main__":
    main()
