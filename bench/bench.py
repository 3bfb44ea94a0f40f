#!/usr/bin/python3
"""make bench: normgpt's training speed against the machine's sgemm peak and against PyTorch.

    /usr/bin/python3 bench/bench.py [--steps 12] [--torch-steps 6] [--rounds 5] [--out bench/results.md]

Everything is measured in this one run, one program at a time (two OpenMP programs on the same
cores slow each other down several times), and reported as ratios:
  - MFU: model FLOPs per second (6 per matmul parameter per token, plus attention) over the sgemm
    peak that the same ./train process measured at start-up (the fastest of many short 512^3
    sgemm calls over about half a second; results before 2026-11-30: 1024^3, best of 4);
  - for the default config and every method's small config: ms per step, tokens/s, the step time
    relative to the fastest method, PyTorch's tokens/s on the same model (bench/torch_bench.py,
    eager fp32, same thread count) and normgpt's ratio to it, and generated tokens/s with the KV
    cache (./train --generate on the checkpoint the timed run wrote);
  - the default config on 1 and on 2 threads (the scaling), with the OpenBLAS core the environment
    forces and with the one OpenBLAS picks itself, and its memory: the budget printed at start-up
    against the peak resident size;
  - four ways on the default config and on a 6-layer d256 T128 B16 Pre-LN model: normgpt fp32,
    normgpt bf16 (train.precision=bf16), PyTorch eager fp32 and PyTorch bf16 autocast, every program
    in the tuned environment (TUNED_ENV), interleaved over --rounds rounds, medians; and both fp32
    programs again with libgomp's default wait policy instead of passive waits (DEFAULT_WAITS_ENV);
  - every method's bf16 step time next to its fp32 one;
  - build/matmul_bench: oneDNN bf16 and oneDNN fp32 against OpenBLAS sgemm on the models' shapes.
The table goes to stdout and, as markdown, to --out.
"""
import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METHODS = ["pre_ln", "post_ln", "mix_ln", "hybridnorm", "hybridnorm_star", "pre_rmsnorm", "pre_rmsnorm_centered",
           "pre_crmsnorm", "dyt", "bhyt", "bhyt_star", "peri_ln", "deepnorm", "lns", "derf",
           "pre_ln_qknorm"]


# Every program of the four-way comparison runs in this environment: passive OpenMP waits (spinning
# threads steal the cores of the next program), glibc's malloc keeping large blocks instead of
# returning them to the kernel each step, and OpenBLAS choosing its own core.
TUNED_ENV = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
TUNED_ENV.update(OMP_WAIT_POLICY="PASSIVE", MALLOC_MMAP_THRESHOLD_="33554432", MALLOC_TRIM_THRESHOLD_="4294967296",
                 MALLOC_TOP_PAD_="1073741824")
D256 = {"model": {"n_layer": 6, "n_embd": 256, "block_size": 128},
        "train": {"seq_len": 128, "batch_size": 16, "total_batch_tokens": 2048}}


def run(cmd, env=None):
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"bench: {' '.join(cmd)} failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return proc.stdout


def grab(pattern, text, what):
    match = re.search(pattern, text, re.M)
    if not match:
        sys.exit(f"bench: no '{what}' line in ./train's output")
    return match


def train_speed(config, threads, steps, out_dir, env=None, precision="fp32"):
    """Time `steps` training steps (the first excluded) of ./train --profile on `config`."""
    out = run(["./train", "--config", config, f"--train.steps={steps}", "--train.warmup_steps=1", "--eval.every=0",
               "--sample.tokens=0", f"--train.threads={threads}", "--out.checkpoint_every=0",
               f"--train.precision={precision}", f"--out.dir={out_dir}", "--overwrite", "--profile"], env)
    norm_ms = sum(float(m[1]) for m in re.finditer(r"^  norm \((?:fwd|bwd)\)\s+([\d.]+)", out, re.M))
    speed = grab(r"^speed: ([\d.]+) ms/step, (\d+) tok/s, MFU ([\d.]+)% .*sgemm peak ([\d.]+) GFLOP/s", out, "speed")
    budget = grab(r"^memory budget: .* = ([\d.]+) MiB", out, "memory budget")
    rss = grab(r"^peak memory: ([\d.]+) MiB resident, ([\d.]+)x", out, "peak memory")
    core = grab(r"sgemm core (\S+?)(,|$)", out, "sgemm core")
    return {"ms": float(speed[1]), "tok_s": float(speed[2]), "mfu": float(speed[3]), "peak": float(speed[4]),
            "budget": float(budget[1]), "rss": float(rss[1]), "rss_ratio": float(rss[2]), "core": core[1],
            "norm_ms": norm_ms,
            "checkpoint": os.path.join(out_dir, f"ckpt_{steps:08d}.bin")}


def torch_speed(config, threads, steps, env=None, bf16=False):
    out = run(["/usr/bin/python3", "bench/torch_bench.py", "--config", config, f"--threads={threads}",
               f"--steps={steps}"] + (["--bf16"] if bf16 else []), env)
    line = grab(r"^torch_bench tokens_per_s=([\d.]+) ms_per_step=([\d.]+).* torch=(\S+)", out, "torch_bench")
    return {"tok_s": float(line[1]), "ms": float(line[2]), "version": line[3]}


def generation_speed(checkpoint, threads, tokens):
    """Generated tokens/s of one sequence with the KV cache (./train --generate; its last line is JSON)."""
    out = run(["./train", "--generate", checkpoint, "--tokens", str(tokens), f"--train.threads={threads}"])
    return json.loads(out.strip().splitlines()[-1])["gen_tokens_per_s"]


def model_config(tmp, name, changes):
    """configs/default.json with `changes` (section -> key -> value), written to tmp/name.json."""
    config = json.load(open(os.path.join(REPO, "configs", "default.json")))
    for section, keys in changes.items():
        config.setdefault(section, {}).update(keys)
    path = os.path.join(tmp, f"{name}.json")
    json.dump(config, open(path, "w"), indent=2)
    return path


# libgomp's default wait policy (spin a while, then sleep): a second fp32 anchor, since passive waits are
# not the fastest setting for every program on every model.
DEFAULT_WAITS_ENV = {k: v for k, v in TUNED_ENV.items() if k != "OMP_WAIT_POLICY"}
FOUR_WAYS = ("normgpt fp32", "normgpt bf16", "PyTorch eager fp32", "PyTorch bf16 autocast")


def four_way(config, threads, rounds, steps, torch_steps, tmp):
    """Median tok/s of normgpt fp32 and bf16 and PyTorch fp32 and bf16 autocast, interleaved; and both fp32
    programs again with libgomp's default waits."""
    runs = {name: [] for name in FOUR_WAYS + ("normgpt fp32, default waits", "PyTorch eager fp32, default waits")}
    for _ in range(rounds):
        for precision in ("fp32", "bf16"):
            r = train_speed(config, threads, steps, f"{tmp}/four_{precision}", TUNED_ENV, precision)
            runs[f"normgpt {precision}"].append(r["tok_s"])
        runs["PyTorch eager fp32"].append(torch_speed(config, threads, torch_steps, TUNED_ENV)["tok_s"])
        runs["PyTorch bf16 autocast"].append(torch_speed(config, threads, torch_steps, TUNED_ENV, True)["tok_s"])
        runs["normgpt fp32, default waits"].append(
            train_speed(config, threads, steps, f"{tmp}/four_fp32_spin", DEFAULT_WAITS_ENV)["tok_s"])
        runs["PyTorch eager fp32, default waits"].append(torch_speed(config, threads, torch_steps, DEFAULT_WAITS_ENV)["tok_s"])
    return {name: statistics.median(v) for name, v in runs.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=12, help="normgpt steps per timed run (the first is not timed)")
    ap.add_argument("--torch-steps", type=int, default=6, help="PyTorch steps per timed run (after 3 warm-up steps)")
    ap.add_argument("--gen-tokens", type=int, default=256, help="tokens generated per method")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds of the four-way comparison")
    ap.add_argument("--out", default=os.path.join(REPO, "bench", "results.md"))
    args = ap.parse_args()
    threads = os.cpu_count()
    tmp = tempfile.mkdtemp(prefix="normgpt_bench_")
    lines = []

    def say(line=""):
        print(line, flush=True)
        lines.append(line)

    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    forced = os.environ.get("OPENBLAS_CORETYPE")
    say(f"machine: {cpu}, {threads} cores, {platform.system()} {platform.release()}; "
        f"OPENBLAS_CORETYPE={forced or '(unset)'}")
    say()

    # The default config: scaling and memory, with the environment's OpenBLAS core and with its own.
    default = "configs/default.json"
    two = train_speed(default, threads, args.steps, f"{tmp}/default_2")
    one = train_speed(default, 1, args.steps, f"{tmp}/default_1")
    own_env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    own = train_speed(default, threads, args.steps, f"{tmp}/default_own", own_env)
    say(f"## default config ({default})")
    say()
    say("| run | sgemm core | sgemm peak GFLOP/s | ms/step | tok/s | MFU |")
    say("| --- | --- | --- | --- | --- | --- |")
    say(f"| {threads} threads | {two['core']}{' (forced)' if forced else ''} | {two['peak']:.1f} | {two['ms']:.1f} | "
        f"{two['tok_s']:.0f} | {two['mfu']:.1f}% |")
    say(f"| 1 thread | {one['core']}{' (forced)' if forced else ''} | {one['peak']:.1f} | {one['ms']:.1f} | "
        f"{one['tok_s']:.0f} | {one['mfu']:.1f}% |")
    if forced:
        say(f"| {threads} threads, OPENBLAS_CORETYPE unset | {own['core']} | {own['peak']:.1f} | {own['ms']:.1f} | "
            f"{own['tok_s']:.0f} | {own['mfu']:.1f}% |")
    say()
    say(f"thread scaling 1 -> {threads}: {two['tok_s'] / one['tok_s']:.2f}x; memory: budget {two['budget']:.1f} MiB, "
        f"peak resident {two['rss']:.1f} MiB ({two['rss_ratio']:.2f}x the budget)")
    say()

    # The default config and every method's small config: step time, the norms' share of it, MFU,
    # PyTorch on the same model, generation.
    # Four ways, on the default config and on the d256 model.
    models = {"default config": default, "6-layer d256 T128 B16 Pre-LN": model_config(tmp, "d256", D256)}
    for title, config in models.items():
        med = four_way(config, threads, args.rounds, args.steps, args.torch_steps, tmp)
        say(f"## {title}: normgpt and PyTorch, fp32 and bf16 ({threads} threads, tuned environment, median of "
            f"{args.rounds} interleaved rounds)")
        say()
        say("| program | tok/s | vs PyTorch eager fp32 | vs PyTorch bf16 autocast |")
        say("| --- | --- | --- | --- |")
        for name in FOUR_WAYS:
            say(f"| {name} | {med[name]:.0f} | {med[name] / med['PyTorch eager fp32']:.2f}x | "
                f"{med[name] / med['PyTorch bf16 autocast']:.2f}x |")
        say()
        say(f"normgpt bf16 / fp32: {med['normgpt bf16'] / med['normgpt fp32']:.2f}x")
        spin, torch_spin = med["normgpt fp32, default waits"], med["PyTorch eager fp32, default waits"]
        say(f"fp32 with libgomp's default waits (spin, then sleep; the rest of the tuned environment kept): normgpt "
            f"{spin:.0f} tok/s, PyTorch {torch_spin:.0f} tok/s, normgpt / PyTorch {spin / torch_spin:.2f}x")
        say()

    results = {"default": two}
    results.update({m: train_speed(f"configs/{m}.json", threads, args.steps, f"{tmp}/{m}") for m in METHODS})
    for name, r in results.items():
        config = "configs/default.json" if name == "default" else f"configs/{name}.json"
        r["bf16_ms"] = train_speed(config, threads, args.steps, f"{tmp}/{name}_bf16", precision="bf16")["ms"]
    fastest = min(r["ms"] for r in results.values())
    torch_version = "?"
    for name, r in results.items():
        t = torch_speed("configs/default.json" if name == "default" else f"configs/{name}.json", threads, args.torch_steps)
        r["torch_tok_s"], torch_version = t["tok_s"], t["version"]
        r["gen_tok_s"] = generation_speed(r["checkpoint"], threads, args.gen_tokens)
    say(f"## every method ({threads} threads; configs/NAME.json; PyTorch {torch_version} eager fp32)")
    say()
    say("| config | ms/step | vs fastest | norms ms/step (fwd+bwd) | tok/s | MFU | PyTorch tok/s | normgpt / PyTorch "
        "| generated tok/s | bf16 ms/step | bf16 speed-up |")
    say("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, r in results.items():
        say(f"| {name} | {r['ms']:.1f} | +{100 * (r['ms'] / fastest - 1):.1f}% | {r['norm_ms']:.1f} | {r['tok_s']:.0f} "
            f"| {r['mfu']:.1f}% | {r['torch_tok_s']:.0f} | {r['tok_s'] / r['torch_tok_s']:.2f}x | {r['gen_tok_s']:.0f} "
            f"| {r['bf16_ms']:.1f} | {r['ms'] / r['bf16_ms']:.2f}x |")
    say()

    # oneDNN (bf16 and fp32) against OpenBLAS sgemm on the models' matmul shapes.
    say("## matmul products: oneDNN bf16 and fp32 against OpenBLAS sgemm (build/matmul_bench)")
    say()
    for line in run(["build/matmul_bench"], dict(TUNED_ENV, OMP_NUM_THREADS=str(threads))).splitlines():
        say(line)
    say()

    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"bench: wrote {args.out}")


if __name__ == "__main__":
    main()
