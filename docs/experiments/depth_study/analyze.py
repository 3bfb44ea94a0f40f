#!/usr/bin/python3
"""Numbers behind the depth study's write-up, from the copied logs: analyze.py [LOGS_DIR] > analysis.md

Per method and depth: final val loss; the per-block gradient-norm ratio last/first block at step 1 and at
the last logged step (all block parameters, and FFN weights alone); the output RMS of the last block over
the first; the mean angular distance of the deepest and the shallowest quarter of the blocks; the mean
layer-removal loss increase of the deeper and the shallower half; for DyT/BHyT the mean tanh saturation;
for BHyT the assumed over the actual mean square at the second site.
"""
import glob
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "scripts"))
import runplots  # noqa: E402


def quarter(values, deep):
    n = max(1, len(values) // 4)
    return float(np.mean(values[-n:] if deep else values[:n]))


def half(values, deep):
    n = max(1, len(values) // 2)
    return float(np.mean(values[-n:] if deep else values[:n]))


def nanmean(values):
    v = [x for x in values if x is not None]
    return float(np.mean(v)) if v else float("nan")


def main():
    logs = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "logs")
    runs = []
    for path in sorted(glob.glob(os.path.join(logs, "*", "*", "*"))):
        variant, panel, seed = path.split(os.sep)[-3:]
        runs.append(runplots.Run(path, variant, panel, seed))
    runs.sort(key=lambda r: (r.variant, int(r.panel.split("=")[1])))
    print("| method | L | val loss | grad last/first step 1 | (FFN W) | grad last/first end | (FFN W) "
          "| RMS last/first end | angle deep/shallow quarter | removal deep/shallow half | tanh sat. | BHyT ms approx/actual |")
    print("|" + "---|" * 12)
    for r in runs:
        first, last = r.diag[0][1], r.diag[-1][1]
        g0 = first["grad_norm"][-1] / first["grad_norm"][0]
        f0 = first["ffn_grad_norm"][-1] / first["ffn_grad_norm"][0]
        g1 = last["grad_norm"][-1] / last["grad_norm"][0]
        f1 = last["ffn_grad_norm"][-1] / last["ffn_grad_norm"][0]
        rms = last["rms"][-1] / last["rms"][0]
        angle = "%.3f / %.3f" % (quarter(last["angle"], True), quarter(last["angle"], False))
        removal = "%+.3f / %+.3f" % (half(r.removal["delta"], True), half(r.removal["delta"], False)) \
            if r.removal else "-"
        sats = [x for x in last["sat1"] + last["sat2"] if x is not None]
        sat = "%.3f" % np.mean(sats) if sats else "-"
        approx, actual = nanmean(last["ms_approx"]), nanmean(last["ms_actual"])
        ms = "%.2f" % (approx / actual) if approx == approx else "-"
        print("| %s | %s | %.4f | %.3g | %.3g | %.3g | %.3g | %.3g | %s | %s | %s | %s |" % (
            r.variant, r.panel.split("=")[1], r.final_val(), g0, f0, g1, f1, rms, angle, removal, sat, ms))


if __name__ == "__main__":
    main()
