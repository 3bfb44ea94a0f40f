"""Figures and the summary table of normgpt runs, read from their run directories (log.jsonl, config.json,
layer_removal.json). Used by scripts/plot (any run directories) and scripts/compare (a spec's runs).

A run is labelled by a variant (the curves' colour) and a panel (runs that share a panel share a subplot
or a figure: the grid point of a compare spec, e.g. "n_layer=12"); seeds of one variant and panel are
averaged in the table and drawn in the same colour.
"""
import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import system_python  # noqa: E402

system_python.require("matplotlib", "python3-matplotlib")
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


class Run:
    def __init__(self, path, variant, panel="", seed=None):
        self.path, self.variant, self.panel, self.seed = path, variant, panel, seed
        self.steps, self.val, self.diag = [], [], []  # (step, record) lists in log order
        with open(os.path.join(path, "log.jsonl")) as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                rec = json.loads(line)
                if "diag" in rec:
                    self.diag.append((rec["step"], rec["diag"]))
                elif "val_loss" in rec:
                    self.val.append((rec["step"], rec["val_loss"]))
                elif "loss" in rec:
                    self.steps.append(rec)
        self.config = json.load(open(os.path.join(path, "config.json")))
        removal = os.path.join(path, "layer_removal.json")
        self.removal = json.load(open(removal)) if os.path.exists(removal) else None

    def final_val(self):
        return self.val[-1][1] if self.val else float("nan")

    def median(self, key):
        # Skip the first steps: start-up (page faults, thread pools) makes them slower than the rest.
        values = [r[key] for r in self.steps[min(5, len(self.steps) // 4):]]
        return float(np.median(values)) if values else float("nan")


# Variant styles: ten tab10 colours, then black, each once with solid lines and circles; beyond eleven
# variants the colours repeat with dashed lines and other markers. (tab20's light/dark pairs of one
# hue are hard to tell apart.)
_PALETTE = [plt.get_cmap("tab10")(i) for i in range(10)] + [(0.0, 0.0, 0.0, 1.0)]
_LINES = ["-", "--", ":"]
_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h"]


def _styles(variants):
    """variant -> dict(color, ls, marker) for plot()."""
    n = len(_PALETTE)
    return {v: dict(color=_PALETTE[i % n], ls=_LINES[i // n % len(_LINES)],
                    marker=_MARKERS[(i + i // n) % len(_MARKERS)]) for i, v in enumerate(variants)}


def _legend_outside(fig, axes, **kw):
    """One legend for the whole figure, right of the panels (never over a curve); handles from
    every panel, each label once."""
    handles = {}
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="center left", bbox_to_anchor=(1.0, 0.5),
                   fontsize=8, frameon=False, **kw)


def _ordered(values):
    seen = []
    for v in values:
        if v not in seen:
            seen.append(v)
    return seen


def _suffix(panel):
    return "_" + panel if panel else ""


def _ema(values, beta=0.9):
    out, avg = [], None
    for v in values:
        avg = v if avg is None else beta * avg + (1 - beta) * v
        out.append(avg)
    return out


def _grid(n, width=4.2, height=3.2, sharey=False):
    cols = min(4, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False, sharey=sharey)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def _save(fig, out_dir, name, written):
    fig.tight_layout()
    path = os.path.join(out_dir, name)
    fig.savefig(path, dpi=110, bbox_inches="tight")  # "tight": figure legends right of the panels
    plt.close(fig)
    written.append(path)


def _padded(lo, hi, frac=0.04):
    pad = (hi - lo) * frac or 0.05
    return lo - pad, hi + pad


def plot_losses(runs, out_dir, written):
    """Per panel, the whole run (nothing clipped) above a zoom on the second half of training, whose
    y range fits every curve in that half."""
    panels = _ordered(r.panel for r in runs)
    styles = _styles(_ordered(r.variant for r in runs))
    fig, grid = plt.subplots(2, len(panels), figsize=(5 * len(panels), 7.2), squeeze=False)
    for col, panel in enumerate(panels):
        group = [r for r in runs if r.panel == panel]
        last = max([s["step"] for r in group for s in r.steps] + [s for r in group for s, _ in r.val] + [1])
        for row, start in ((0, 0), (1, last / 2)):
            ax, shown = grid[row][col], []
            labelled = set()
            for r in group:
                st = styles[r.variant]
                label = None if r.variant in labelled else r.variant
                labelled.add(r.variant)
                train = [(s["step"], e) for s, e in zip(r.steps, _ema([s["loss"] for s in r.steps]))]
                val = list(r.val)
                if train:
                    ax.plot(*zip(*train), color=st["color"], ls=st["ls"], lw=0.8, alpha=0.45)
                if val:
                    ax.plot(*zip(*val), color=st["color"], ls=st["ls"], marker=st["marker"], ms=3, lw=1.2,
                            label=label)
                shown += [y for x, y in train + val if x >= start and math.isfinite(y)]
            ax.set_xlim(*_padded(start, last, 0.02))
            if shown:
                ax.set_ylim(*_padded(min(shown), max(shown)))
            ax.set_title((panel + ", " if panel else "") + ("whole run" if row == 0 else "second half"))
            ax.set_xlabel("step")
            ax.set_ylabel("loss (thin: train, EMA 0.9; marks: val)")
            ax.grid(alpha=0.3)
    _legend_outside(fig, grid[0])
    _save(fig, out_dir, "loss.png", written)


def _numeric_grid(runs):
    """The grid key and its values when every panel is one numeric key=value, else None."""
    keys, values = set(), {}
    for r in runs:
        if "=" not in r.panel or "," in r.panel:
            return None
        key, value = r.panel.split("=", 1)
        try:
            values[r.panel] = float(value)
        except ValueError:
            return None
        keys.add(key)
    return (keys.pop(), values) if len(keys) == 1 else None


def plot_val_vs_grid(runs, out_dir, written):
    grid = _numeric_grid(runs)
    if not grid:
        return
    key, values = grid
    variants = _ordered(r.variant for r in runs)
    styles = _styles(variants)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for v in variants:
        xs, means, stds = [], [], []
        for panel in sorted({r.panel for r in runs if r.variant == v}, key=lambda p: values[p]):
            finals = [r.final_val() for r in runs if r.variant == v and r.panel == panel]
            xs.append(values[panel])
            means.append(np.mean(finals))
            stds.append(np.std(finals))
        st = styles[v]
        ax.errorbar(xs, means, yerr=stds, marker=st["marker"], ls=st["ls"], ms=4, capsize=2, color=st["color"],
                    label=v)
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(set(values.values())))
    ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.set_xlabel(key)
    ax.set_ylabel("final val loss")
    ax.grid(alpha=0.3)
    _legend_outside(fig, [ax])
    _save(fig, out_dir, "val_loss_vs_%s.png" % key, written)


def _first_seed(runs, panel):
    """One run per variant of a panel (the first seed): per-layer profiles are shown for one seed."""
    chosen = {}
    for r in runs:
        if r.panel == panel and r.variant not in chosen:
            chosen[r.variant] = r
    return chosen


def _pick_steps(diag, count):
    steps = [s for s, _ in diag]
    if len(steps) <= count:
        return steps
    picks = sorted({steps[round(i * (len(steps) - 1) / (count - 1))] for i in range(count)})
    return picks


def _plot_per_block(runs, out_dir, written, name, n_steps, series, ylabel):
    """One panel per variant, all on one y scale: per-block values of each (diagnostic key, line
    style) in `series`, a line per chosen step, coloured from early to late."""
    for panel in _ordered(r.panel for r in runs):
        chosen = {v: r for v, r in _first_seed(runs, panel).items() if r.diag}
        if not chosen:
            continue
        picks = {v: _pick_steps(r.diag, n_steps) for v, r in chosen.items()}
        same_steps = len({tuple(p) for p in picks.values()}) == 1
        fig, axes = _grid(len(chosen), sharey=True)
        positive = []
        for k, (ax, (variant, r)) in enumerate(zip(axes, chosen.items())):
            steps = picks[variant]
            cmap = plt.get_cmap("viridis")
            for i, (step, d) in enumerate(s for s in r.diag if s[0] in steps):
                color = cmap(i / max(1, len(steps) - 1))
                for j, (key, style) in enumerate(series):
                    # a log axis has no place for 0 (DyT's FFN gradient is exactly 0 at step 1): left out
                    values = [v if v is not None and v > 0 else np.nan for v in d[key]]
                    positive += [v for v in values if v == v]
                    ax.plot(range(len(values)), values, style, color=color, label="step %d" % step if j == 0 else None)
            ax.set_yscale("log")
            ax.set_title(variant)
            ax.set_xlabel("block")
            ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
            if k % 4 == 0:
                ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
            if not same_steps:
                ax.legend(fontsize=7)
        if positive:
            axes[0].set_ylim(min(positive) / 1.5, max(positive) * 1.5)
        if same_steps:
            _legend_outside(fig, axes[:1])
        _save(fig, out_dir, "%s%s.png" % (name, _suffix(panel)), written)


def plot_grad_norms(runs, out_dir, written):
    _plot_per_block(runs, out_dir, written, "grad_norm", 4, [("grad_norm", "-"), ("ffn_grad_norm", ":")],
                    "grad norm (solid: block, dotted: FFN W)")


def plot_rms(runs, out_dir, written):
    _plot_per_block(runs, out_dir, written, "rms", 6, [("rms", "-")], "RMS of block output")


def plot_angles(runs, out_dir, written):
    for panel in _ordered(r.panel for r in runs):
        chosen = {v: r for v, r in _first_seed(runs, panel).items() if r.diag}
        if not chosen:
            continue
        L = max(len(r.diag[-1][1]["angle"]) for r in chosen.values())
        grid = np.full((len(chosen), L), np.nan)
        for i, r in enumerate(chosen.values()):
            angle = r.diag[-1][1]["angle"]
            grid[i, : len(angle)] = [np.nan if a is None else a for a in angle]
        fig, ax = plt.subplots(figsize=(max(5, 0.22 * L + 3), 0.4 * len(chosen) + 1.6))
        # A square-root colour scale: the first blocks turn the stream far more than the rest.
        im = ax.imshow(grid, aspect="auto", cmap="magma", norm=matplotlib.colors.PowerNorm(0.5, vmin=0),
                       interpolation="nearest")
        ax.set_yticks(range(len(chosen)))
        ax.set_yticklabels(list(chosen))
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_xlabel("block")
        ax.set_title("angular distance input -> output\narccos(cos)/pi, last logged step%s" %
                     (" (%s)" % panel if panel else ""), fontsize=9)
        fig.colorbar(im, ax=ax)
        _save(fig, out_dir, "angle%s.png" % _suffix(panel), written)


REMOVAL_LINTHRESH = 1e-3  # val loss increases below this are drawn on the linear part of the axis


def _symlog_ticks(lo, hi):
    """0, and the powers of ten (with sign) between lo and hi beyond the linear part, for a symlog
    axis labelled in plain numbers."""
    ticks = [0.0]
    for sign, end in ((1, hi), (-1, -lo)):
        k = math.floor(math.log10(REMOVAL_LINTHRESH))
        while end > 0 and 10.0 ** k <= end * 1.0001:
            ticks.append(sign * 10.0 ** k)
            k += 1
    return sorted(ticks)


def plot_removal(runs, out_dir, written):
    """Per variant, the val loss increase from skipping each block; one symlog y scale for all panels,
    ticks at 0 and powers of ten, so tiny deltas read as ~0 rather than as crowded labels."""
    for panel in _ordered(r.panel for r in runs):
        variants = _ordered(r.variant for r in runs if r.panel == panel and r.removal)
        if not variants:
            continue
        means = {v: np.array([r.removal["delta"] for r in runs if r.panel == panel and r.variant == v
                              and r.removal]).mean(axis=0) for v in variants}
        everything = np.concatenate(list(means.values()))
        top = max(float(everything.max()), REMOVAL_LINTHRESH)
        bottom = min(float(everything.min()), 0.0)
        # headroom of a third of a decade above the tallest bar (and below the lowest negative one)
        lim = (bottom * 2 if bottom < -REMOVAL_LINTHRESH else -REMOVAL_LINTHRESH / 2, top * 2)
        fig, axes = _grid(len(variants), sharey=True)
        for k, (ax, v) in enumerate(zip(axes, variants)):
            # red: skipping the block costs loss; blue: the model does better without it
            ax.bar(range(len(means[v])), means[v], color=np.where(means[v] < 0, "tab:blue", "tab:red"))
            ax.set_xlim(-0.6, len(means[v]) - 0.4)
            ax.set_yscale("symlog", linthresh=REMOVAL_LINTHRESH)
            ax.set_ylim(*lim)
            ax.yaxis.set_major_locator(matplotlib.ticker.FixedLocator(_symlog_ticks(*lim)))
            ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda y, _: "%g" % y))
            ax.yaxis.set_minor_locator(matplotlib.ticker.NullLocator())
            ax.axhline(0, color="black", lw=0.6)
            ax.set_title(v)
            ax.set_xlabel("block skipped")
            ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
            if k % 4 == 0:
                ax.set_ylabel("val loss increase")
            ax.grid(alpha=0.3, axis="y")
        _save(fig, out_dir, "layer_removal%s.png" % _suffix(panel), written)


def summary_table(runs):
    has_panel = any(r.panel for r in runs)
    head = "| variant |" + (" panel |" if has_panel else "") + \
        " final val loss (mean ± spread over seeds) | seeds | tokens/s | ms/step |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for panel in _ordered(r.panel for r in runs):
        for v in _ordered(r.variant for r in runs if r.panel == panel):
            group = [r for r in runs if r.variant == v and r.panel == panel]
            finals = [r.final_val() for r in group]
            loss = "%.4f" % np.mean(finals)
            if len(group) > 1:  # spread: the population standard deviation of the seeds
                loss += " ± %.4f" % np.std(finals)
            tok = np.mean([r.median("tokens_per_s") for r in group])
            ms = np.mean([r.median("ms") for r in group])
            lines.append("| %s |%s %s | %d | %.0f | %.1f |" % (v, (" %s |" % panel) if has_panel else "", loss,
                                                                 len(group), tok, ms))
    return "\n".join(lines) + "\n"


def plot_all(runs, out_dir):
    """Every figure the runs have data for, and summary.md; returns the paths written."""
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for plot in (plot_losses, plot_val_vs_grid, plot_grad_norms, plot_rms, plot_angles, plot_removal):
        plot(runs, out_dir, written)
    path = os.path.join(out_dir, "summary.md")
    with open(path, "w") as f:
        f.write(summary_table(runs))
    written.append(path)
    return written
