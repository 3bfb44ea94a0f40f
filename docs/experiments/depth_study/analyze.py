#!/usr/bin/python3
"""Every figure and table of the depth study (second edition), from the committed logs alone:

    /usr/bin/python3 docs/experiments/depth_study/analyze.py [--logs DIR] [--figures DIR]

reads logs/METHOD/lr=LR/n_layer=L/seedS (copied by study.py), writes figures/*.png and analysis.md (next to the figures directory)
(tables: the sweep, the chosen learning rates, loss against depth, fragility, per-run diagnostics).
Which runs exist decides what is drawn: a partial study gives partial figures, each titled with how many
of its planned runs it contains.
"""
import argparse
import glob
import math
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
sys.path.insert(0, os.path.join(REPO, "scripts"))
sys.path.insert(0, HERE)
import runplots  # noqa: E402
import study  # noqa: E402
import matplotlib  # noqa: E402  (runplots has chosen the backend)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

STALL_MARGIN = 0.05  # a final val loss within this of the unigram level (or above) is a stall
SPIKE_JUMP = 1.0     # a training loss this far above the lowest before it, after warmup, is a spike
PLANNED_DEPTHS = sorted(set(study.SWEEP_DEPTHS + [study.MIDDLE_DEPTH, study.DEEP_DEPTH]))
STALL_FLAT = 0.02    # above the unigram level, a second half that gains less than this is a stall


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
    evaluate() reads: eval.batches * batch_size windows spread evenly over the validation shards: the
    level a run that learned nothing from the context sits at."""
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


class Study:
    """The finished runs in the logs: run(method, lr, depth, seed) -> runplots.Run with .outcome."""

    def __init__(self, logs):
        study.LOGS = logs
        self.state = study.Runs(logs_only=True)
        self.runs = {}
        for path in glob.glob(os.path.join(logs, "*", "lr=*", "n_layer=*", "seed*")):
            if not os.path.exists(os.path.join(path, "outcome")):
                continue
            method, lrn, depthn, seedn = os.path.relpath(path, logs).split(os.sep)
            key = (method, float(lrn[3:]), int(depthn[8:]), int(seedn[4:]))
            r = runplots.Run(path, method, depthn, key[3])
            r.outcome = open(os.path.join(path, "outcome")).read().strip()
            self.runs[key] = r
        present = {k[0] for k in self.runs}
        self.methods = [m for m, _ in study.METHODS if m in present]  # compared across depth
        self.arms = [m for m in study.ARMS if m in present]            # swept only

    def final(self, method, lr, depth, seed):
        r = self.runs.get((method, lr, depth, seed))
        if r is None:
            return None
        return float("inf") if r.outcome == "diverged" else r.final_val()

    def lrs(self, method, depth):
        return sorted({k[1] for k in self.runs if k[0] == method and k[2] == depth})

    def depths(self):
        return sorted({k[2] for k in self.runs})

    def seeds_at(self, method, lr, depth):
        return [s for s in study.SEEDS if (method, lr, depth, s) in self.runs]

    def chosen(self, method, depth):
        return study.chosen_lr(self.state, method, depth)


def mean_spread(values):
    v = [x for x in values if x is not None]
    if not v:
        return None, None
    return float(np.mean(v)), (float(np.std(v)) if len(v) > 1 else None)


def fragility(run, unigram):
    """(label, detail) of one run: diverged; stalled (ends at the unigram level, or above it with a flat
    second half); slow (above the unigram level but still falling: the lr is too small for the budget);
    spiked (a training-loss jump after warmup); or ok."""
    if run.outcome == "diverged":
        last = run.steps[-1]["step"] if run.steps else 0
        return "diverged", "non-finite loss after step %d" % last
    warmup = run.config["train"]["warmup_steps"]
    spikes, best = [], float("inf")
    for s in run.steps:
        if s["step"] > warmup and s["loss"] > best + SPIKE_JUMP:
            spikes.append(s["step"])
        best = min(best, s["loss"])
    final = run.final_val()
    halfway = min(run.val, key=lambda sv: abs(sv[0] - run.val[-1][0] / 2))[1]
    if final > unigram + STALL_MARGIN:
        if halfway - final < STALL_FLAT:
            return "stalled", "val %.3f, flat (unigram %.3f)" % (final, unigram)
        return "slow", "val %.3f, still falling (unigram %.3f)" % (final, unigram)
    if final >= unigram - STALL_MARGIN:
        return "stalled", "val %.3f (unigram %.3f)" % (final, unigram)
    if spikes:
        return "spiked", "%d steps > %.1f above the best so far (first at %d)" % (len(spikes), SPIKE_JUMP, spikes[0])
    return "ok", ""


def styles(methods):
    every = runplots._styles([m for m, _ in study.METHODS] + list(study.ARMS))
    return {m: every[m] for m in methods}


def partial_note(done, planned):
    return "" if done >= planned else " — PARTIAL: %d of %d planned runs" % (done, planned)


def plot_lr_sweep(st, unigram, out, written):
    depths = study.SWEEP_DEPTHS
    sty = styles(st.methods + st.arms)
    fig, axes = plt.subplots(1, len(depths), figsize=(6 * len(depths), 4.8), sharey=True, squeeze=False)
    axes = list(axes.flat)
    done = sum(1 for k in st.runs if k[2] in depths and k[3] == study.SWEEP_SEED)
    planned = sum(len(study.sweep_lrs(m)) for m, _ in study.available_methods() + study.available_methods(arms=True)) \
        * len(depths)
    finite = []
    for ax, depth in zip(axes, depths):
        for m in st.methods + st.arms:
            xs, ys, es = [], [], []
            for lr in st.lrs(m, depth):
                mean, spread = mean_spread([st.final(m, lr, depth, s) for s in st.seeds_at(m, lr, depth)])
                if mean is None or not math.isfinite(mean):
                    continue
                xs.append(lr)
                ys.append(mean)
                es.append(spread or 0.0)
            diverged = [lr for lr in st.lrs(m, depth) if st.final(m, lr, depth, study.SWEEP_SEED) == float("inf")]
            s = sty[m]
            if xs:
                ax.errorbar(xs, ys, yerr=es, color=s["color"], ls=s["ls"], marker=s["marker"], ms=4, capsize=2,
                            lw=1.2, label=m)
                finite += ys
            for lr in diverged:  # drawn at the top edge, as a cross
                ax.plot([lr], [1.0], transform=ax.get_xaxis_transform(), marker="x", color=s["color"], ms=8,
                        clip_on=False)
        ax.axhline(unigram, color="grey", ls="--", lw=0.8)
        ax.text(0.01, unigram, "unigram level", va="bottom", fontsize=7, color="grey", transform=ax.get_yaxis_transform())
        ax.set_xscale("log")
        grid = sorted({k[1] for k in st.runs if k[2] in depths} | {lr for m in st.methods for lr in study.sweep_lrs(m)})
        ax.set_xticks([lr for lr in grid if lr in study.LADDER])  # labelled; the refinement rungs unlabelled
        ax.set_xticks([lr for lr in grid if lr not in study.LADDER], minor=True)
        ax.set_xlim(grid[0] / 1.4, grid[-1] * 1.4)
        if not any(k[2] == depth for k in st.runs):
            ax.text(0.5, 0.5, "not yet run", transform=ax.transAxes, ha="center", color="grey")
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: "%g" % x))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("peak learning rate (cosine to lr/10, %d warmup steps%s)" % (
            study.RECIPE["train.warmup_steps"], "".join("; %s: %d" % (m, o["train.warmup_steps"])
                                                       for m, (_, o) in study.ARMS.items() if "train.warmup_steps" in o)))
        ax.set_title("%d layers" % depth)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("final val loss (mean ± std over seeds)")
    if finite:
        axes[0].set_ylim(min(min(finite), unigram) - 0.05, max(max(finite), unigram) + 0.08)
    fig.suptitle("Learning-rate sweep, seed 1337 (x at the top: diverged; unlabelled ticks: refinement rungs)"
                 + partial_note(done, planned), fontsize=10)
    runplots._legend_outside(fig, axes)
    runplots._save(fig, out, "lr_sweep.png", written)


def depth_axis(ax, depths):
    """A log2 axis of the depths that were run."""
    ax.set_xscale("log", base=2)
    ax.set_xticks(depths)
    ax.set_xlim(depths[0] / 1.3, depths[-1] * 1.3)
    ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.set_xlabel("layers")


def not_run_note(st):
    missing = [d for d in PLANNED_DEPTHS if d not in st.depths()]
    return "; not run: %s layers" % ", ".join(map(str, missing)) if missing else ""


def plot_loss_vs_depth(st, unigram, out, written):
    sty = styles(st.methods)
    fig, ax = plt.subplots(figsize=(7, 4.8))
    shown, done = [], 0
    for i, m in enumerate(st.methods):
        # each method a little to the side of the depth it belongs to, so that error bars do not overlap
        dodge = 2 ** (0.025 * (i - (len(st.methods) - 1) / 2))
        xs, ys, es, ns = [], [], [], []
        for depth in st.depths():
            lr = st.chosen(m, depth)
            if lr is None:
                continue
            seeds = st.seeds_at(m, lr, depth)
            done += len(seeds)
            mean, spread = mean_spread([st.final(m, lr, depth, s) for s in seeds])
            if mean is None or not math.isfinite(mean):
                continue
            xs.append(depth * dodge)
            ys.append(mean)
            es.append(spread or 0.0)
            ns.append(len(seeds))
        if xs:
            s = sty[m]
            ax.errorbar(xs, ys, yerr=es, color=s["color"], ls=s["ls"], marker=s["marker"], ms=4, capsize=2,
                        label=m)
            shown += ys
    if not shown:
        plt.close(fig)
        return
    planned = len(study.available_methods()) * len(st.depths()) * len(study.SEEDS)
    ax.axhline(unigram, color="grey", ls="--", lw=0.8)
    ax.text(0.01, unigram, "unigram level", va="bottom", fontsize=7, color="grey", transform=ax.get_yaxis_transform())
    depth_axis(ax, st.depths())
    ax.set_ylabel("final val loss at the method's chosen lr\n(mean ± std over the seeds that finished)")
    ax.grid(alpha=0.3)
    ax.set_title("Loss against depth" + partial_note(done, planned) + not_run_note(st), fontsize=10)
    runplots._legend_outside(fig, [ax])
    runplots._save(fig, out, "loss_vs_depth.png", written)


DEPTH_SUMMARY = [
    # (title, function of a run -> value or None, log y)
    ("output RMS of the last block\n(end of training)", lambda r: r.diag[-1][1]["rms"][-1] if r.diag else None, True),
    ("grad norm, first block / last block\n(end of training; > 1: early blocks learn more)",
     lambda r: (r.diag[-1][1]["grad_norm"][0] / r.diag[-1][1]["grad_norm"][-1])
     if r.diag and r.diag[-1][1]["grad_norm"][-1] > 0 else None, True),
    ("val loss increase from skipping a block,\nmean over the deeper half", lambda r: half(r.removal["delta"], True)
     if r.removal else None, False),
]


def plot_depth_summary(st, out, written):
    """Sections 3-5 in one figure: per method, a diagnostic of the chosen-lr runs against depth (mean and
    std over seeds)."""
    runs = chosen_runs(st)
    if not runs:
        return
    sty = styles(st.methods)
    fig, axes = plt.subplots(1, len(DEPTH_SUMMARY), figsize=(5 * len(DEPTH_SUMMARY), 4.2), squeeze=False)
    axes = list(axes.flat)
    for ax, (title, value, log) in zip(axes, DEPTH_SUMMARY):
        for m in st.methods:
            xs, ys, es = [], [], []
            for d in st.depths():
                vals = [value(r) for r in runs if r.variant == m and r.panel == "n_layer=%d" % d]
                vals = [v for v in vals if v is not None and (v > 0 or not log)]
                if vals:
                    xs.append(d)
                    ys.append(float(np.mean(vals)))
                    es.append(float(np.std(vals)))
            if xs:
                s = sty[m]
                ax.errorbar(xs, ys, yerr=es, color=s["color"], ls=s["ls"], marker=s["marker"], ms=4, capsize=2,
                            label=m)
        depth_axis(ax, st.depths())
        if log:
            ax.set_yscale("log")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
    fig.suptitle("Diagnostics against depth at each method's chosen lr (mean ± std over seeds)" + not_run_note(st),
                 fontsize=10)
    runplots._legend_outside(fig, axes)
    runplots._save(fig, out, "depth_summary.png", written)


def chosen_runs(st):
    """Runs at each method's chosen lr, per depth (seed 1337 first), as runplots.Run with variant =
    method and panel = n_layer=L."""
    runs = []
    for depth in st.depths():
        for m in st.methods:
            lr = st.chosen(m, depth)
            if lr is None:
                continue
            for s in st.seeds_at(m, lr, depth):
                r = st.runs[(m, lr, depth, s)]
                if r.outcome == "done":
                    runs.append(r)
    return runs


def quarter(values, deep):
    n = max(1, len(values) // 4)
    return float(np.mean(values[-n:] if deep else values[:n]))


def half(values, deep):
    n = max(1, len(values) // 2)
    return float(np.mean(values[-n:] if deep else values[:n]))


def ratio(last, first):
    if first == 0:
        return "0/0" if last == 0 else "%.2g/0" % last
    return "%.3g" % (last / first)


def tables(st, unigram):
    lines = ["# Depth study (second edition): numbers from the logs", "",
             "Generated by `analyze.py` from `logs/`; do not edit. Context-free (unigram) loss on the evaluation "
             "windows: **%.4f** (a run at or above %.2f has *stalled*)." % (unigram, unigram - STALL_MARGIN), ""]
    # 1. the sweep
    for depth in study.SWEEP_DEPTHS:
        lrs = sorted({k[1] for k in st.runs if k[2] == depth and k[3] == study.SWEEP_SEED})
        if not lrs:
            continue
        lines += ["## Learning-rate sweep, %d layers (seed %d; final val loss; **bold**: best; x: diverged; "
                  "-: not run)" % (depth, study.SWEEP_SEED), "",
                  "| method | " + " | ".join("%g" % lr for lr in lrs) + " | best lr |",
                  "|---|" + "---|" * (len(lrs) + 1)]
        for m in st.methods + st.arms:
            b = study.best_lr(st.state, m, depth)[0]
            cells = []
            for lr in lrs:
                v = st.final(m, lr, depth, study.SWEEP_SEED)
                cell = "-" if v is None else ("x" if v == float("inf") else "%.3f" % v)
                cells.append("**%s**" % cell if lr == b else cell)
            lines.append("| %s | %s | %s |" % (m, " | ".join(cells), "%g" % b if b else "sweep unfinished"))
        lines.append("")
    # 2. loss against depth
    depths = st.depths()
    lines += ["## Loss against depth at each method's chosen lr (mean ± std over seeds, then each seed's)", "",
              "Chosen lr: the sweep's best at 6 and 24 layers; at 12 the better of those two (seed 1337); at 48 "
              "the 24-layer best.", "",
              "| method | " + " | ".join("%d layers" % d for d in depths) + " |", "|---|" + "---|" * len(depths)]
    for m in st.methods:
        cells = []
        for d in depths:
            lr = st.chosen(m, d)
            if lr is None:
                cells.append("undecided")
                continue
            seeds = st.seeds_at(m, lr, d)
            finals = [st.final(m, lr, d, s) for s in seeds]
            mean, spread = mean_spread(finals)
            if mean is None:
                cells.append("lr %g: not run" % lr)
            else:
                cells.append("%.3f%s (lr %g; seeds %s: %s)" % (
                    mean, " ± %.3f" % spread if spread is not None else "", lr, " ".join(map(str, seeds)),
                    " ".join("%.3f" % v for v in finals)))
        lines.append("| %s | %s |" % (m, " | ".join(cells)))
    lines.append("")
    # companions against their method, at the method's chosen lr
    rows = []
    for c, m in study.COMPANIONS.items():
        for d in study.SWEEP_DEPTHS:
            lr = st.chosen(m, d)
            if lr is None or not st.seeds_at(c, lr, d):
                continue
            cells = []
            for name in (c, m):
                seeds = st.seeds_at(name, lr, d)
                mean, spread = mean_spread([st.final(name, lr, d, s) for s in seeds])
                cells.append("%.4f%s (n=%d)" % (mean, " ± %.4f" % spread if spread is not None else "", len(seeds)))
            diffs = [abs(st.final(c, lr, d, s) - st.final(m, lr, d, s)) for s in st.seeds_at(c, lr, d)
                     if st.final(m, lr, d, s) is not None]
            rows.append("| %s | %s | %d | %g | %s | %s | %s |" % (c, m, d, lr, cells[0], cells[1],
                                                                "%.4f" % max(diffs) if diffs else "-"))
    if rows:
        lines += ["## Companions at their method's chosen lr (final val loss, mean ± std over seeds)", "",
                  "| companion | method | layers | lr | companion | method | largest same-seed difference |",
                  "|---|---|---|---|---|---|---|"] + rows + [""]
    # 6. fragility
    all_lrs = sorted({k[1] for k in st.runs})
    lines += ["## Fragility: every finished run", "",
              "stalled: final val within %.2f of the unigram level, or above it with less than %.2f gained over the "
              "second half; slow: above the unigram level and still falling (the lr is too small for this budget); "
              "spiked: a training loss more than %.1f above the lowest before it, after warmup; diverged: stopped on "
              "a non-finite loss. Several seeds: one label per seed." % (STALL_MARGIN, STALL_FLAT, SPIKE_JUMP), "",
              "| method | layers | " + " | ".join("lr %g" % lr for lr in all_lrs) + " |",
              "|---|---|" + "---|" * len(all_lrs)]
    for m in st.methods + st.arms:
        for d in depths:
            cells = []
            for lr in all_lrs:
                labels = [fragility(st.runs[(m, lr, d, s)], unigram)[0] for s in st.seeds_at(m, lr, d)]
                cells.append("/".join(labels) if labels else "")
            if any(cells):
                lines.append("| %s | %d | %s |" % (m, d, " | ".join(cells)))
    lines.append("")
    # 3-5. diagnostics of the chosen runs, seed 1337
    lines += ["## Diagnostics at the chosen lr (seed %d, last logged step)" % study.SWEEP_SEED, "",
              "grad last/first: per-block gradient norm of the last block over the first's (step 1 and end; FFN W: "
              "the FFN weights alone); RMS last/first: output RMS of the last block over the first's; angle: mean "
              "angular distance of the deepest / shallowest quarter; removal: mean val-loss increase from skipping "
              "one block of the deeper / shallower half.", "",
              "| method | L | lr | val loss | grad last/first step 1 | (FFN W) | grad last/first end | (FFN W) | "
              "RMS last | RMS last/first | angle deep/shallow | removal deep/shallow |", "|" + "---|" * 12]
    for r in chosen_runs(st):
        if r.seed != study.SWEEP_SEED or not r.diag:
            continue
        first, last = r.diag[0][1], r.diag[-1][1]
        lr = r.config["train"]["lr"]
        removal = "%+.3f / %+.3f" % (half(r.removal["delta"], True), half(r.removal["delta"], False)) \
            if r.removal else "-"
        lines.append("| %s | %s | %g | %.3f | %s | %s | %s | %s | %.3g | %s | %.3f / %.3f | %s |" % (
            r.variant, r.panel.split("=")[1], lr, r.final_val(),
            ratio(first["grad_norm"][-1], first["grad_norm"][0]), ratio(first["ffn_grad_norm"][-1], first["ffn_grad_norm"][0]),
            ratio(last["grad_norm"][-1], last["grad_norm"][0]), ratio(last["ffn_grad_norm"][-1], last["ffn_grad_norm"][0]),
            last["rms"][-1], ratio(last["rms"][-1], last["rms"][0]),
            quarter(last["angle"], True), quarter(last["angle"], False), removal))
    lines.append("")
    # timing
    lines += ["## Time per run (two runs at a time on the shared machine, under nice 19)", "",
              "wall: start of training to the end of the probe, runs that were never stopped and resumed; "
              "ms/step and tokens/s: the trainer's medians (training steps only).", "",
              "| layers | runs | median wall minutes | median ms/step | median tokens/s |", "|---|---|---|---|---|"]
    for d in depths:
        group = [r for k, r in st.runs.items() if k[2] == d and r.steps]
        walls = [float(open(p).read()) for p in (os.path.join(r.path, "wall_seconds") for r in group) if os.path.exists(p)]
        lines.append("| %d | %d | %s | %.0f | %.0f |" % (
            d, len(group), "%.1f" % (np.median(walls) / 60) if walls else "-",
            np.median([r.median("ms") for r in group]), np.median([r.median("tokens_per_s") for r in group])))
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--logs", default=os.path.join(HERE, "logs"))
    parser.add_argument("--figures", default=os.path.join(HERE, "figures"))
    args = parser.parse_args()
    os.chdir(REPO)
    st = Study(os.path.abspath(args.logs))
    if not st.runs:
        sys.exit("analyze.py: no finished runs in %s" % args.logs)
    unigram = unigram_loss(next(iter(st.runs.values())).config)
    os.makedirs(args.figures, exist_ok=True)
    written = []
    plot_lr_sweep(st, unigram, args.figures, written)
    plot_loss_vs_depth(st, unigram, args.figures, written)
    plot_depth_summary(st, args.figures, written)
    chosen = chosen_runs(st)
    for plot in (runplots.plot_losses, runplots.plot_grad_norms, runplots.plot_rms, runplots.plot_angles,
                 runplots.plot_removal) if chosen else ():  # figures of the runs at the chosen lrs
        plot(chosen, args.figures, written)
    path = os.path.join(os.path.dirname(os.path.abspath(args.figures)), "analysis.md")
    with open(path, "w") as f:
        f.write(tables(st, unigram))
    written.append(path)
    for p in written:
        print("wrote", os.path.relpath(p, REPO))


if __name__ == "__main__":
    main()
