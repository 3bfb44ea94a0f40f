#!/usr/bin/python3
"""Load a normgpt checkpoint in Python: numpy arrays, or PyTorch tensors.

    /usr/bin/python3 scripts/normgpt_checkpoint.py CKPT_OR_RUN_DIR [--npz OUT.npz]

prints the step, the model's shape and the tensor table; --npz saves the parameters by name.
From Python (numpy is the only requirement; PyTorch only for torch_state_dict):

    import sys; sys.path.insert(0, "scripts")
    import normgpt_checkpoint as nc
    ckpt = nc.load("runs/default")            # a checkpoint file, or a run directory: its newest
    ckpt.step, ckpt.config["model"]           # the resolved config the run was made with
    ckpt.params["h.0.attn.qkv.weight"]        # float32 array, shape (out, in) as in the C program
    ckpt.adam_m, ckpt.adam_v                  # AdamW moments, laid out like params
    state = nc.torch_state_dict(ckpt)         # {name: torch.Tensor}, copies

The format (src/checkpoint.h): a 1024-byte header of 256 little-endian int32 — [0] magic 20261122,
[1] version 1, [2] metadata length L, [3] bytes per value (4), [4] data offset D, [5..6] number of
parameters P (int64), [7..8] FNV-1a 64 checksum of bytes 1024..end — then L bytes of JSON metadata
(the resolved config, the run state and the tensor table: name, shape, offset in values), then at D
the P parameters, the P AdamW first moments and the P second moments, float32. Arrays are views of
one read-only buffer. The checksum is not verified here (./train verifies it on every load).
Parameter names and layouts are README's "Checkpoints" table; a linear layer's weight is
(out_features, in_features), as torch.nn.Linear keeps it.
"""
import argparse
import glob
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import system_python  # noqa: E402

system_python.require("numpy", "python3-numpy")
import numpy as np  # noqa: E402

CKPT_MAGIC, CKPT_VERSION, HEADER_BYTES = 20261122, 1, 1024
PATH_HELP = "a checkpoint file or a run directory (its newest checkpoint)"  # the argument load() takes


class CheckpointError(Exception):
    pass


class Checkpoint:
    """path, config (dict), step, meta (the whole metadata), params / adam_m / adam_v ({name: array})."""

    def __init__(self, path, meta, sections):
        self.path, self.meta = path, meta
        self.config, self.step = meta["config"], meta["step"]
        self.params = sections["params"]
        self.adam_m, self.adam_v = sections.get("adam_m"), sections.get("adam_v")


def newest_in(run_dir):
    """The run directory's checkpoint with the most steps (ckpt_SSSSSSSS.bin)."""
    found = sorted(glob.glob(os.path.join(run_dir, "ckpt_*.bin")))
    if not found:
        raise CheckpointError(f"{run_dir}: no ckpt_*.bin in this run directory")
    return found[-1]


def load(path):
    """The Checkpoint in a file, or the newest one in a run directory."""
    if os.path.isdir(path):
        path = newest_in(path)
    try:
        raw = np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        raise CheckpointError(f"{path}: {e.strerror}")
    if raw.size < HEADER_BYTES:
        raise CheckpointError(f"{path}: shorter than a checkpoint header ({raw.size} bytes)")
    header = raw[:HEADER_BYTES].view("<i4")
    if header[0] != CKPT_MAGIC or header[1] != CKPT_VERSION or header[3] != 4:
        raise CheckpointError(f"{path}: not a version-{CKPT_VERSION} float32 normgpt checkpoint "
                              f"(magic {header[0]}, version {header[1]})")
    meta_len, data_offset = int(header[2]), int(header[4])
    n = int(header[5:7].view("<i8")[0])
    meta = json.loads(raw[HEADER_BYTES:HEADER_BYTES + meta_len].tobytes())
    names = meta.get("sections", ["params", "adam_m", "adam_v"])
    if raw.size < data_offset + 4 * n * len(names):
        raise CheckpointError(f"{path}: truncated ({raw.size} bytes, the header promises "
                              f"{data_offset + 4 * n * len(names)})")
    raw.flags.writeable = False
    sections = {}
    for k, name in enumerate(names):
        values = raw[data_offset + 4 * n * k:data_offset + 4 * n * (k + 1)].view("<f4")
        sections[name] = {t["name"]: values[t["offset"]:t["offset"] + int(np.prod(t["shape"]))]
                          .reshape(t["shape"]) for t in meta["tensors"]}
    return Checkpoint(path, meta, sections)


def torch_state_dict(ckpt):
    """The parameters as {name: torch.Tensor} (float32 copies, writable)."""
    import torch
    return {name: torch.from_numpy(np.array(a)) for name, a in ckpt.params.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("path", help=PATH_HELP)
    ap.add_argument("--npz", help="save the parameters to this .npz file, by name")
    args = ap.parse_args()
    try:
        ckpt = load(args.path)
    except CheckpointError as e:
        sys.exit(f"normgpt_checkpoint.py: {e}")
    m = ckpt.config["model"]
    kinds = sorted({f"{b['placement']}+{b['norm']}" for b in m["blocks"]})
    print(f"{ckpt.path}: step {ckpt.step}, {ckpt.meta['n_params']:,} parameters; {m['n_layer']} blocks "
          f"({', '.join(kinds)}), width {m['n_embd']}, {m['n_head']} heads, vocabulary {m['vocab_size']}")
    for name, a in ckpt.params.items():
        print(f"  {name:32s} {str(tuple(a.shape)):>14s}  rms {float(np.sqrt(np.mean(a.astype(np.float64) ** 2))):.4g}")
    if args.npz:
        np.savez(args.npz, **ckpt.params)
        print(f"wrote {args.npz}")


if __name__ == "__main__":
    main()
