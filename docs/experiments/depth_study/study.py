#!/usr/bin/python3
"""The depth study, second edition: a resumable driver over scripts/compare.

    docs/experiments/depth_study/study.py [--commit-every MIN] [--stop-at HH:MM]   run, or continue
    docs/experiments/depth_study/study.py --status                                  what is done, what is left

Run from anywhere after `make`; runs go to runs/depth_study2/METHOD/lr=LR/n_layer=L/seedS (untracked),
and each finished run's log.jsonl, config.json, command.txt, layer_removal.json, the tails of train.out
and probe.out, its outcome and its wall time are copied to docs/experiments/depth_study/logs/ (same layout), from which analyze.py draws
every figure. Rerunning continues: finished runs are kept, stopped ones resume from their checkpoints.

The plan, each step a scripts/compare spec written to docs/experiments/depth_study/specs/:
  A   learning-rate sweep, seed 1337, at 6 and then 24 layers: every method at LRS, the Pre-Norm family
      also at 6e-3; a method whose best lr sits at the edge of what it tried gets the next rung of
      LADDER (repeated until its best is inside, or the ladder ends);
  B   seeds 1 and 2 at each method's best lr at 6 and at 24 layers (best chosen per depth from seed 1337),
      and the COMPANIONS' three seeds at their method's best lr; then the ARMS (a method with one setting
      changed) get A's sweep at 6 layers, and seeds 1 and 2 at their best lr where it trains;
  C   12 layers: seed 1337 at the 6- and the 24-layer best lrs (one run when they agree), then seeds 1
      and 2 at the better of the two; then the ARMS' sweep (and seeds) at 24 layers; 48 layers: 3 seeds at the
      24-layer best lr.
A run that stopped on a non-finite loss (the trainer exits 1, keeping its last good checkpoint) counts
as finished ("diverged") and is not run again.

Methods come from METHODS, in one place; a method whose config does not exist yet is skipped with a note
and joins the study once it does (its runs are then simply missing from the steps already done: the
next invocation runs them).
"""
import argparse
import datetime
import fcntl
import glob
import importlib.machinery
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
OUT = "runs/depth_study2"
LOGS = os.path.join(HERE, "logs")
SPECS = os.path.join(HERE, "specs")

# name, and whether it belongs to the Pre-Norm family (norms only on the branch inputs, whose best lr
# sat at the top of the grid in the calibration): those also get 6e-3 in the sweep.
METHODS = [
    ("pre_ln", True), ("post_ln", False), ("mix_ln", False), ("hybridnorm", False), ("pre_rmsnorm", True),
    ("pre_crmsnorm", True), ("dyt", False), ("bhyt", False),
    ("peri_ln", True), ("lns", True), ("deepnorm", False), ("derf", False), ("pre_ln_qknorm", True),
]
# Arms: a method with some of its own settings changed, swept (seed 1337, 6 and 24 layers, its base method's
# lrs) after phase B, to ask whether a stall is the setting's: DyT's and Derf's non-LLM default alpha0 0.5
# (DyT tabulates alpha0 only for widths >= 1024), and Post-LN with 25% warmup (Post-LN is known to need long
# warmup). name -> (base method, overrides).
ARMS = {
    "dyt_alpha0.5": ("dyt", {"model.dyt_alpha_attn": 0.5, "model.dyt_alpha_ffn": 0.5}),
    "derf_alpha0.5": ("derf", {"model.derf_alpha_attn": 0.5, "model.derf_alpha_other": 0.5}),
    "post_ln_warmup25": ("post_ln", {"train.warmup_steps": 88}),
}
# Companions: a close variant of a method, run only at that method's chosen lr (seeds SEEDS, at SWEEP_DEPTHS),
# for the claims that compare the two: HybridNorm* against HybridNorm, BHyT* against BHyT, and the centred
# Pre-RMSNorm, the same function as Pre-LN (the study's built-in control: equal to Pre-LN up to rounding).
COMPANIONS = {"hybridnorm_star": "hybridnorm", "bhyt_star": "bhyt", "pre_rmsnorm_centered": "pre_ln"}
LRS = [1e-4, 3e-4, 1e-3, 3e-3]
PRE_FAMILY_EXTRA = [6e-3]
LADDER = [3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 6e-3, 1e-2]
# A narrow window (both ladder neighbours of the best at least REFINE_GAP worse, the best not stalled)
# gets the rung between the best and each neighbour, once: the Post family's best sat between two
# stalls at 6 layers, and a factor of 3 is a coarse step there. MIDPOINT: rounded geometric means.
REFINE_GAP = 0.1
STALLED = 6.99  # final val loss at or above this is at the unigram level (7.04): a stall
MIDPOINT = {(3e-5, 1e-4): 6e-5, (1e-4, 3e-4): 2e-4, (3e-4, 1e-3): 6e-4, (1e-3, 3e-3): 2e-3, (3e-3, 6e-3): 4e-3,
            (6e-3, 1e-2): 8e-3}
SWEEP_DEPTHS = [6, 24]
SWEEP_SEED = 1337
SEEDS = [1337, 1, 2]
MIDDLE_DEPTH, DEEP_DEPTH = 12, 48

# One epoch of Brown: 1,439,432 training tokens / 4096 per step = 351 steps; 350 are taken. Every run
# gets all of these, overriding its config (which all set the default recipe: lr 3e-3, 30 warmup steps of
# 470, 256-token windows); lr and min_lr = lr/10 come from the step. Width 64 and bf16 matmuls are the
# budget's cut (width 128 in fp32 measured 2.6x the time: the full plan would take about 19 hours).
RECIPE = {
    "model.n_embd": 64, "train.precision": "bf16", "model.n_head": 4, "model.block_size": 128,
    "model.bias": True, "model.tie_embeddings": True,
    "train.seq_len": 128, "train.batch_size": 32, "train.total_batch_tokens": 4096,
    "train.steps": 350, "train.warmup_steps": 35, "train.schedule": "cosine",
    "train.weight_decay": 0.1, "train.beta1": 0.9, "train.beta2": 0.95, "train.grad_clip": 1.0,
    "eval.every": 50, "eval.batches": 8,
    "sample.every": 0, "sample.tokens": 0,
    "diag.every": 25,
    "out.checkpoint_every": 50, "out.keep": 1,
}
COMPARE = os.path.join(REPO, "scripts", "compare")


def load_compare():
    loader = importlib.machinery.SourceFileLoader("compare", COMPARE)
    spec = importlib.util.spec_from_loader("compare", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


compare = load_compare()


def base_method(method):
    return ARMS[method][0] if method in ARMS else method


def config_path(method):
    return "configs/%s.json" % base_method(method)


def pre_family(method):
    return dict(METHODS)[base_method(method)]


def available_methods(note=False, arms=False):
    """The methods (or, with arms, the arms) whose config exists, as (name, pre-family) pairs."""
    names = list(ARMS) if arms else [m for m, _ in METHODS]
    found = [(m, pre_family(m)) for m in names if os.path.exists(os.path.join(REPO, config_path(m)))]
    if note and not arms:
        for m in names:
            if not os.path.exists(os.path.join(REPO, config_path(m))):
                print("note: %s not found: %s is left out until it exists" % (config_path(m), m), flush=True)
        for m, _ in found:
            check_config(m)
    return found


def check_config(method):
    """Print the train/eval/data settings of a method's config that the recipe leaves as they are and that
    differ from Pre-LN's (every method should train the same way but for its norm)."""
    def flat(path):
        cfg = json.load(open(os.path.join(REPO, path)))
        return {"%s.%s" % (sec, k): v for sec, body in cfg.items() if isinstance(body, dict) for k, v in body.items()}
    own, ref = flat(config_path(method)), flat(config_path("pre_ln"))
    differ = sorted(k for k in set(own) | set(ref) if not k.startswith(("model.", "out.")) and k not in RECIPE
                    and k not in ("train.lr", "train.min_lr") and own.get(k) != ref.get(k))
    if differ:
        print("note: %s differs from configs/pre_ln.json in %s (kept: the recipe does not override them)"
              % (config_path(method), ", ".join("%s=%s" % (k, own.get(k)) for k in differ)), flush=True)


def lr_name(lr):
    return "lr=%g" % lr


def variant(method, lr):
    return "%s/%s" % (method, lr_name(lr))


def run_dir(root, method, lr, depth, seed):
    return os.path.join(root, method, lr_name(lr), "n_layer=%d" % depth, "seed%d" % seed)


def spec_for(method_lrs, depth, seeds):
    """A compare spec: each (method, lr) of method_lrs a variant, at one depth, over seeds."""
    variants = {}
    for method, lr in method_lrs:
        own = dict(ARMS[method][1]) if method in ARMS else {}
        own.update({"train.lr": lr, "train.min_lr": float("%g" % (lr / 10))})
        variants[variant(method, lr)] = {"config": config_path(method), "overrides": own}
    return {"out": OUT, "figures": os.path.join(OUT, "figures", "n_layer=%d" % depth), "jobs": 2, "threads": 1,
            "probe": True, "seeds": seeds, "overrides": RECIPE, "grid": {"model.n_layer": [depth]},
            "variants": variants}


class Runs:
    """The state of every run the study knows about, read from runs/ (and, for runs finished in another
    session whose run directory is gone, from the copied logs); with logs_only, from the logs alone."""

    def __init__(self, logs_only=False):
        self.logs_only = logs_only

    def outcome(self, method, lr, depth, seed):
        """'done', 'diverged' or None (not finished)."""
        d = run_dir(os.path.join(REPO, OUT), method, lr, depth, seed)
        if self.logs_only or not os.path.isdir(d):  # e.g. finished in another session whose runs/ is gone
            copied = os.path.join(run_dir(LOGS, method, lr, depth, seed), "outcome")
            return open(copied).read().strip() if os.path.exists(copied) else None
        job = compare.expand(spec_for([(method, lr)], depth, [seed]), "study")[0]
        cwd = os.getcwd()
        os.chdir(REPO)
        try:
            if job.state(True) == "done":
                return "done"
            saved = job.path("command.txt")
            same = os.path.exists(saved) and open(saved).read() == " ".join(job.command)
            out = job.path("train.out")
            if same and os.path.exists(out) and "is not finite" in tail(out, 5):
                return "diverged"
            return None
        finally:
            os.chdir(cwd)

    def final_val(self, method, lr, depth, seed):
        """Final val loss of a finished run (inf when it diverged), None if not finished."""
        o = self.outcome(method, lr, depth, seed)
        if o is None:
            return None
        if o == "diverged":
            return float("inf")
        d = run_dir(os.path.join(REPO, OUT), method, lr, depth, seed)
        if self.logs_only or not os.path.isdir(d):
            d = run_dir(LOGS, method, lr, depth, seed)
        val = None
        for line in open(os.path.join(d, "log.jsonl")):
            if '"val_loss"' in line:
                val = json.loads(line)["val_loss"]
        return val


def tail(path, n):
    with open(path, "rb") as f:
        f.seek(0, 2)
        f.seek(max(0, f.tell() - 200 * n))
        return "\n".join(f.read().decode(errors="replace").splitlines()[-n:]) + "\n"


def best_lr(runs, method, depth):
    """(best lr or None, the lrs tried beyond the sweep, the lrs still to run) from the seed-1337 runs at
    depth: the best is known once every lr tried has finished and the best is not at an edge of what was
    tried (or the ladder ends there, or everything diverged), and, where its window is narrow, once the
    two midpoints around it have finished too."""
    tried = sweep_lrs(method)
    while True:
        vals = {lr: runs.final_val(method, lr, depth, SWEEP_SEED) for lr in tried}
        extra = [lr for lr in tried if lr not in sweep_lrs(method)]
        missing = [lr for lr, v in vals.items() if v is None]
        if missing:
            return None, extra, missing
        best = min(tried, key=lambda lr: (vals[lr], lr))
        i = LADDER.index(best)
        edge = None
        if best == tried[-1] and i + 1 < len(LADDER):
            edge = LADDER[i + 1]
        elif best == tried[0] and i > 0:
            edge = LADDER[i - 1]
        if edge is None or vals[best] == float("inf"):
            break
        tried = sorted(tried + [edge])
    mids = refinements(vals, tried, best)
    if not mids:
        return best, extra, []
    vals.update({lr: runs.final_val(method, lr, depth, SWEEP_SEED) for lr in mids})
    missing = [lr for lr in mids if vals[lr] is None]
    if missing:
        return None, extra + mids, missing
    return min(tried + mids, key=lambda lr: (vals[lr], lr)), extra + mids, []


def refinements(vals, tried, best):
    """The midpoints to try around a best whose window is narrow (see MIDPOINT), else []."""
    i = tried.index(best)
    if i == 0 or i == len(tried) - 1 or vals[best] >= STALLED:
        return []
    lower, upper = tried[i - 1], tried[i + 1]
    if min(vals[lower], vals[upper]) - vals[best] < REFINE_GAP:
        return []
    return [MIDPOINT[(lower, best)], MIDPOINT[(best, upper)]]


def middle_candidates(runs, method):
    """The lrs tried at MIDDLE_DEPTH: the 6- and the 24-layer best (None until both are known)."""
    b = [best_lr(runs, method, d)[0] for d in SWEEP_DEPTHS]
    return None if None in b else sorted(set(b))


def chosen_lr(runs, method, depth):
    """The lr a method is compared at, at a depth (None while undecided): the sweep's best at a swept
    depth; at MIDDLE_DEPTH the better (seed 1337) of the 6- and 24-layer best; at DEEP_DEPTH the
    24-layer best."""
    if depth in SWEEP_DEPTHS:
        return best_lr(runs, method, depth)[0]
    if depth == DEEP_DEPTH:
        return best_lr(runs, method, SWEEP_DEPTHS[-1])[0]
    candidates = middle_candidates(runs, method)
    if candidates is None:
        return None
    vals = {lr: runs.final_val(method, lr, depth, SWEEP_SEED) for lr in candidates}
    if any(v is None for v in vals.values()):
        return None
    return min(candidates, key=lambda lr: (vals[lr], lr))


def sweep_lrs(method):
    return sorted(set(LRS + (PRE_FAMILY_EXTRA if pre_family(method) else [])))


def plan(runs):
    """The next steps: a list of (name, depth, [(method, lr)], seeds) whose runs are not all finished, in
    the order they are to run; a step that depends on unfinished runs is not listed yet. Also returns
    the planned-but-not-yet-decidable counts for the time estimate."""
    methods = [m for m, _ in available_methods()]
    steps, undecided = [], 0
    best = {}
    for depth in SWEEP_DEPTHS:
        steps.append(("A_sweep_n%d" % depth, depth, [(m, lr) for m in methods for lr in sweep_lrs(m)], [SWEEP_SEED]))
        edges = []
        for m in methods:
            b, extra, _ = best_lr(runs, m, depth)
            edges += [(m, lr) for lr in extra]
            if b is not None:
                best[(m, depth)] = b
        if edges:
            steps.append(("A_edges_n%d" % depth, depth, edges, [SWEEP_SEED]))
    for depth in SWEEP_DEPTHS:
        chosen = [(m, best[(m, depth)]) for m in methods if (m, depth) in best]
        undecided += 2 * (len(methods) - len(chosen))
        if chosen:
            steps.append(("B_seeds_n%d" % depth, depth, chosen, SEEDS))
        companions = [(c, best[(m, depth)]) for c, m in COMPANIONS.items()
                      if (m, depth) in best and os.path.exists(os.path.join(REPO, config_path(c)))]
        if companions:
            steps.append(("B_companions_n%d" % depth, depth, companions, SEEDS))
    arms = [m for m, _ in available_methods(arms=True)]

    def arm_steps(depth):
        bests = {m: best_lr(runs, m, depth) for m in arms}
        edges = [(m, lr) for m in arms for lr in bests[m][1]]
        # seeds only where the arm trains at its best lr: a stall at every lr needs no spread
        trains = [(m, bests[m][0]) for m in arms
                  if bests[m][0] is not None and runs.final_val(m, bests[m][0], depth, SWEEP_SEED) < STALLED]
        return [("A_arms_n%d" % depth, depth, [(m, lr) for m in arms for lr in sweep_lrs(m)], [SWEEP_SEED])] + \
            ([("A_arms_edges_n%d" % depth, depth, edges, [SWEEP_SEED])] if edges else []) + \
            ([("A_arms_seeds_n%d" % depth, depth, trains, SEEDS)] if trains else [])
    # the shallow arms, then 12 layers with its seeds, then the deep arms: the depth comparison needs the
    # 12-layer seeds more than the deep arms need to run first
    steps += arm_steps(SWEEP_DEPTHS[0])
    middle, middle_seeds, deep = [], [], []
    for m in methods:
        candidates = middle_candidates(runs, m)
        if candidates is None:
            undecided += 4 + 3
            continue
        middle += [(m, lr) for lr in candidates]
        chosen = chosen_lr(runs, m, MIDDLE_DEPTH)
        if chosen is None:
            undecided += 2
        else:
            middle_seeds.append((m, chosen))
        deep.append((m, chosen_lr(runs, m, DEEP_DEPTH)))
    if middle:
        steps.append(("C_lr_n%d" % MIDDLE_DEPTH, MIDDLE_DEPTH, middle, [SWEEP_SEED]))
    if middle_seeds:
        steps.append(("C_seeds_n%d" % MIDDLE_DEPTH, MIDDLE_DEPTH, middle_seeds, SEEDS))
    steps += arm_steps(SWEEP_DEPTHS[1])
    if deep:
        steps.append(("C_seeds_n%d" % DEEP_DEPTH, DEEP_DEPTH, deep, SEEDS))
    return steps, undecided


def pending(runs, step):
    """The unfinished runs of a step, grouped as specs: (method_lrs, seeds) pairs (a diverged run is
    finished, so a method whose seeds differ in what is left gets a spec of its own)."""
    name, depth, method_lrs, seeds = step
    groups = {}
    for m, lr in method_lrs:
        left = tuple(s for s in seeds if runs.outcome(m, lr, depth, s) is None)
        if left:
            groups.setdefault(left, []).append((m, lr))
    return [(mls, list(s)) for s, mls in groups.items()]


def collect():
    """Copy every finished run's record into LOGS; returns how many were new or changed."""
    runs, changed = Runs(), 0
    for path in glob.glob(os.path.join(REPO, OUT, "*", "lr=*", "n_layer=*", "seed*")):
        rel = os.path.relpath(path, os.path.join(REPO, OUT))
        method, lrn, depthn, seedn = rel.split(os.sep)
        lr, depth, seed = float(lrn[3:]), int(depthn[8:]), int(seedn[4:])
        o = runs.outcome(method, lr, depth, seed)
        if o is None:
            continue
        dest = os.path.join(LOGS, rel)
        os.makedirs(dest, exist_ok=True)
        files = {"log.jsonl": None, "config.json": None, "command.txt": None, "layer_removal.json": None,
                 "train.out": "train.out.tail", "probe.out": "probe.out.tail"}
        for src, tailed in files.items():
            s = os.path.join(path, src)
            if not os.path.exists(s):
                continue
            d = os.path.join(dest, tailed or src)
            text = tail(s, 25) if tailed else open(s).read()
            if not os.path.exists(d) or open(d).read() != text:
                with open(d, "w") as f:
                    f.write(text)
                changed += 1
        wall = wall_seconds(path)
        w_path = os.path.join(dest, "wall_seconds")
        if wall is not None and not os.path.exists(w_path):
            with open(w_path, "w") as f:
                f.write("%.0f\n" % wall)
            changed += 1
        o_path = os.path.join(dest, "outcome")
        if not os.path.exists(o_path) or open(o_path).read().strip() != o:
            with open(o_path, "w") as f:
                f.write(o + "\n")
            changed += 1
    return changed


def commit(message):
    git = ["git", "-C", REPO, "-c", "user.name=normgpt", "-c", "user.email=normgpt@localhost"]
    subprocess.run(git + ["add", LOGS, SPECS], check=False)
    if subprocess.run(git + ["diff", "--cached", "--quiet", "--", LOGS, SPECS]).returncode != 0:
        subprocess.run(git + ["commit", "-q", "-m", message, "--", LOGS, SPECS], check=False)
        print("committed: " + message, flush=True)


def finished_count():
    return sum(1 for _ in glob.glob(os.path.join(LOGS, "*", "lr=*", "n_layer=*", "seed*", "outcome")))


def wall_seconds(path):
    """Wall seconds of a finished run from the start of its training to the end of its probe (the mtimes of
    command.txt and layer_removal.json), None for a run that was stopped and resumed (its train.out says so)
    or has no probe."""
    files = [os.path.join(path, f) for f in ("command.txt", "layer_removal.json", "train.out")]
    if not all(os.path.exists(f) for f in files) or "stopped by signal" in open(files[2]).read():
        return None
    return os.path.getmtime(files[1]) - os.path.getmtime(files[0])


def measured_seconds():
    """Median wall seconds of a finished, never resumed run per depth."""
    per = {}
    for path in glob.glob(os.path.join(REPO, OUT, "*", "lr=*", "n_layer=*", "seed*")):
        wall = wall_seconds(path)
        if wall is not None:
            per.setdefault(int(path.split("n_layer=")[1].split(os.sep)[0]), []).append(wall)
    return {d: sorted(v)[len(v) // 2] for d, v in per.items()}


def estimate(runs, steps, undecided):
    """Print runs finished / left per step and the time left at 2 runs at a time."""
    seconds = measured_seconds()
    def per_run(depth):
        if depth in seconds:
            return seconds[depth]
        if seconds:  # scale a measured depth by the matmul FLOPs (compare's cost)
            d0 = min(seconds, key=lambda d: abs(d - depth))
            return seconds[d0] * cost(depth) / cost(d0)
        return None
    total, unknown = 0.0, False
    for step in steps:
        name, depth, method_lrs, seeds = step
        left = sum(len(s) * len(mls) for mls, s in pending(runs, step))
        all_runs = len(method_lrs) * len(seeds)
        t = per_run(depth)
        print("  %-14s %3d/%3d runs finished, %3d left%s" % (name, all_runs - left, all_runs, left,
              ", ~%.0f s per run" % t if t else ""), flush=True)
        if t is None:
            unknown = unknown or left > 0
        else:
            total += left * t / 2
    t12 = per_run(MIDDLE_DEPTH)
    if undecided and t12:
        total += undecided * t12 / 2
        print("  + about %d runs not yet decidable (best lrs pending), counted at the 12-layer time" % undecided)
    print("time left at 2 runs at a time: %s%s" % (compare.format_duration(total), " + unmeasured depths" if unknown else ""),
          flush=True)


def cost(depth):
    L, C, V, T = depth, RECIPE["model.n_embd"], 8192, RECIPE["train.seq_len"]
    return 6 * (12 * L * C * C + V * C) + 12 * L * C * T


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--status", action="store_true", help="print what is finished and what is left, run nothing")
    parser.add_argument("--commit-every", type=float, metavar="MIN", default=0,
                        help="copy finished runs' logs and git-commit them (logs/ and specs/ only) every MIN minutes")
    parser.add_argument("--stop-at", metavar="HH:MM", help="at this (local) time stop the trainers (they checkpoint)")
    args = parser.parse_args()
    os.chdir(REPO)
    os.environ.pop("OPENBLAS_CORETYPE", None)  # a forced core type halves sgemm on this kind of CPU
    available_methods(note=True)
    runs = Runs()
    if args.status:
        steps, undecided = plan(runs)
        estimate(runs, steps, undecided)
        return
    os.makedirs(OUT, exist_ok=True)
    lock = open(os.path.join(OUT, ".lock"), "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        sys.exit("study.py: another study.py is running on %s" % OUT)
    if not os.path.exists("train"):
        sys.exit("study.py: ./train not found in %s: run make first" % REPO)
    os.makedirs(SPECS, exist_ok=True)
    child, stopping = [], []

    def stop(*_):
        stopping.append(True)
        for p in child:
            p.send_signal(signal.SIGTERM)  # compare passes it on; the trainers checkpoint and exit
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if args.stop_at:
        h, m = map(int, args.stop_at.split(":"))
        now = datetime.datetime.now()
        at = now.replace(hour=h, minute=m, second=0, microsecond=0)
        if at <= now:
            at += datetime.timedelta(days=1)
        timer = threading.Timer((at - now).total_seconds(), stop)
        timer.daemon = True
        timer.start()
        print("will stop at %s" % at.strftime("%H:%M"), flush=True)

    def committer():
        while not stopping:
            time.sleep(args.commit_every * 60)
            if collect():
                commit("depth study: logs of %d finished runs" % finished_count())
    if args.commit_every:
        threading.Thread(target=committer, daemon=True).start()
    while not stopping:
        steps, undecided = plan(runs)
        estimate(runs, steps, undecided)
        todo = [(step, g) for step in steps for g in pending(runs, step)]
        if not todo:
            print("every planned run has finished", flush=True)
            break
        (name, depth, _, _), (method_lrs, seeds) = todo[0]
        spec_file = os.path.join(SPECS, "%s.json" % name)
        # the spec of the whole step (documentation); compare runs the part still left
        with open(spec_file, "w") as f:
            json.dump(spec_for(todo[0][0][2], depth, todo[0][0][3]), f, indent=1)
            f.write("\n")
        part = os.path.join(OUT, "%s.left.json" % name)
        with open(part, "w") as f:
            json.dump(spec_for(method_lrs, depth, seeds), f, indent=1)
        print("== %s: %d runs (%d layers)" % (name, len(method_lrs) * len(seeds), depth), flush=True)
        p = subprocess.Popen(["/usr/bin/python3", COMPARE, part, "--status-every", "300"])
        child[:] = [p]
        rc = p.wait()
        child.clear()
        if collect():
            commit("depth study: logs of %d finished runs (%s)" % (finished_count(), name))
        if rc not in (0, 1):  # 1: some run failed (a divergence is one); others: stopped or broken
            if not stopping:
                sys.exit("study.py: scripts/compare exited %d" % rc)
    collect()
    commit("depth study: logs of %d finished runs" % finished_count())
    if stopping:
        print("stopped; run the same command to continue", flush=True)


if __name__ == "__main__":
    main()
