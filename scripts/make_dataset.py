#!/usr/bin/python3
"""Turn text files into a SentencePiece tokenizer and llm.c-style token shards.

    scripts/make_dataset.py --train PATH... [--val PATH...] --out DIR --name NAME
                            [--vocab-size 8192] [--shard-tokens 100000000]

A PATH is a file, a directory (every file below it, recursively, except hidden
ones) or a quoted glob. Each file is one document, read as UTF-8 with line
endings normalized to "\\n".

Tokenizer. spm_train learns a BPE model from the train documents only. The
options serve two goals:
  * Lossless text. Identity normalization, no whitespace collapsing and byte
    fallback make every document decode back to exactly its own text, so the
    model sees the real characters, indentation and runs of spaces. The script
    checks this for every document and warns when it fails (for example, text
    containing the SentencePiece meta-space U+2581 comes back as a space).
  * Identical bytes on every run. All lines are used in file order (no
    sampling, no shuffling), training uses one thread, and spm_train runs in
    the temporary directory with relative names, because it stores its options,
    input path included, inside the .model file.
add_dummy_prefix is off. With it, SentencePiece puts a meta-space before every
line, and decoding by plain byte concatenation would show a stray space at the
start of every line. Without it, a line-initial word is tokenized without a
leading space, as in GPT-2, and the bytes are exactly the text. Digits are split
into single-digit pieces so that numbers get a consistent tokenization.

Newlines. spm_encode reads one line at a time and never sees "\\n", so every
line is encoded separately and the byte-fallback token <0x0A> is put between a
document's lines.

Shards (llm.c format): a header of 256 little-endian int32, [20240520, 1,
token count, 0...], followed by the tokens as little-endian uint16; when the
vocabulary has more than 65535 entries, [20240801, 7, token count, 0...] and
uint32 tokens. Every document is preceded by the separator <s> (id 1), as
llm.c's GPT-2 shards put <|endoftext|> before each document. A shard is closed
when the next document would take it past --shard-tokens; documents are never
split, so one longer than that gets a shard of its own. Shards are named
NAME_train_000000.bin, NAME_train_000001.bin, ... and NAME_val_000000.bin, ...;
old shards of the same NAME in DIR are deleted first, so that no stale shard
from an earlier run is left for a training program to pick up.

tokenizer.bin (llm.c format, version 2): a header of 256 little-endian int32,
[20240328, 2, vocab size, 1 (the separator id <s>), 0...], then for each id in
order a uint8 length and that many bytes: what the token contributes to the
decoded text. In text pieces the meta-space U+2581 becomes " "; a byte piece
<0xAB> becomes the single byte 0xAB (a character missing from the vocabulary is
spread over several tokens, so decode by concatenating bytes); the
control tokens <s> and </s> have length 0 (llm.c's GPT-2 reader asserts that no
entry is empty; a reader of this file must allow it); <unk> is " ⁇ ",
SentencePiece's own surface for it, though with byte fallback the encoder never
produces it.
tokenizer.model and tokenizer.vocab are the SentencePiece files themselves.
"""

import argparse
import glob
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
from array import array

UNK_ID, BOS_ID, EOS_ID = 0, 1, 2
UNK_SURFACE = " \u2047 "
META_SPACE = "\u2581"
HEADER_INTS = 256
TOKENIZER_MAGIC, TOKENIZER_VERSION = 20240328, 2
UINT16_SHARD = (20240520, 1, "H")  # magic, version, array typecode
UINT32_SHARD = (20240801, 7, "I")

# SentencePiece ModelProto: field 1 holds the pieces; in each piece, field 1
# is the text and field 3 the type.
PIECE_NORMAL, PIECE_UNKNOWN, PIECE_CONTROL, PIECE_BYTE = 1, 2, 3, 6


class DatasetError(Exception):
    pass


def files_below(directory):
    """Every file below directory, leaving out hidden ones such as .git."""
    found = []
    for root, dirs, names in os.walk(directory):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [os.path.join(root, name) for name in names if not name.startswith(".")]
    return sorted(found)


def expand(specs):
    """Files named by files, directories and globs, in a stable order."""
    files = []
    for spec in specs:
        if os.path.isfile(spec):
            found = [spec]
        elif os.path.isdir(spec):
            found = files_below(spec)
            if not found:
                raise DatasetError(f"directory has no files: {spec}")
        else:
            found = sorted(p for p in glob.glob(spec, recursive=True) if os.path.isfile(p))
            if not found:
                raise DatasetError(f"no such file, directory or matching glob: {spec}")
        files += found
    return list(dict.fromkeys(os.path.normpath(f) for f in files))


def collect_lines(paths, dest):
    """Writes the documents' lines to one file for spm; returns lines per document."""
    counts = []
    with open(dest, "w", encoding="utf-8", newline="\n") as out:
        for path in paths:
            try:
                with open(path, encoding="utf-8") as f:
                    text = f.read()
            except UnicodeDecodeError as e:
                raise DatasetError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})")
            except OSError as e:
                raise DatasetError(f"{path}: {e.strerror}")
            out.write(text + "\n")
            counts.append(text.count("\n") + 1)
    return counts


def run(cmd, cwd):
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        tail = "\n".join(result.stderr.strip().splitlines()[-5:])
        raise DatasetError(f"{cmd[0]} failed:\n{tail}")


def train_tokenizer(workdir, vocab_size):
    run(["spm_train", "--input=train.txt", "--model_prefix=tokenizer",
         "--model_type=bpe", f"--vocab_size={vocab_size}",
         "--byte_fallback=true", "--character_coverage=1.0",
         "--normalization_rule_name=identity", "--remove_extra_whitespaces=false",
         "--add_dummy_prefix=false", "--split_digits=true",
         f"--unk_id={UNK_ID}", f"--bos_id={BOS_ID}", f"--eos_id={EOS_ID}", "--pad_id=-1",
         "--input_sentence_size=0", "--shuffle_input_sentence=false",
         # the largest value spm accepts: longer lines would be left out of training
         "--max_sentence_length=1073741824",
         "--num_threads=1", "--minloglevel=1"], cwd=workdir)


def read_varint(buf, pos):
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, pos


def proto_fields(buf):
    """Yields (field number, value) of a protobuf message; skips fixed-width fields."""
    pos = 0
    while pos < len(buf):
        key, pos = read_varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = read_varint(buf, pos)
            yield field, value
        elif wire == 2:
            size, pos = read_varint(buf, pos)
            yield field, buf[pos:pos + size]
            pos += size
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")


def read_pieces(model_path):
    """(piece, type) for every id of a SentencePiece .model file."""
    with open(model_path, "rb") as f:
        model = f.read()
    pieces = []
    for field, value in proto_fields(model):
        if field == 1:
            attrs = dict(proto_fields(value))
            pieces.append((attrs[1].decode("utf-8"), attrs.get(3, PIECE_NORMAL)))
    return pieces


def token_bytes(piece, kind):
    if kind == PIECE_BYTE:
        return bytes([int(piece[3:5], 16)])
    if kind == PIECE_CONTROL:
        return b""
    if kind == PIECE_UNKNOWN:
        return UNK_SURFACE.encode("utf-8")
    return piece.replace(META_SPACE, " ").encode("utf-8")


def write_tokenizer_bin(path, table):
    with open(path, "wb") as f:
        f.write(struct.pack(f"<{HEADER_INTS}i", TOKENIZER_MAGIC, TOKENIZER_VERSION,
                            len(table), BOS_ID, *[0] * (HEADER_INTS - 4)))
        for data in table:
            f.write(struct.pack("<B", len(data)) + data)


def encoded_documents(workdir, split, line_counts, newline_id):
    """Yields (tokens, text) per document: <s>, then its lines joined by <0x0A>."""
    with open(os.path.join(workdir, f"{split}.txt"), encoding="utf-8", newline="\n") as text, \
         open(os.path.join(workdir, f"{split}.ids"), encoding="ascii") as ids:
        for count in line_counts:
            tokens, lines = [BOS_ID], []
            for i in range(count):
                if i:
                    tokens.append(newline_id)
                tokens.extend(map(int, ids.readline().split()))
                lines.append(text.readline()[:-1])
            yield tokens, "\n".join(lines)


def write_shard(path, tokens, shard_format):
    magic, version, _ = shard_format
    if sys.byteorder == "big":
        tokens.byteswap()
    with open(path, "wb") as f:
        f.write(struct.pack(f"<{HEADER_INTS}i", magic, version, len(tokens),
                            *[0] * (HEADER_INTS - 3)))
        f.write(tokens.tobytes())


def write_split(docs, paths, out_prefix, shard_tokens, shard_format, table):
    """Writes the shards of one split.

    Returns the shard paths, the token count and the paths of documents whose
    tokens do not decode to their exact text."""
    shards, total, mismatched = [], 0, []
    shard = array(shard_format[2])

    def flush():
        shards.append(f"{out_prefix}_{len(shards):06d}.bin")
        write_shard(shards[-1], shard, shard_format)

    for (tokens, text), path in zip(docs, paths):
        if b"".join(table[t] for t in tokens) != text.encode("utf-8"):
            mismatched.append(path)
        if shard and len(shard) + len(tokens) > shard_tokens:
            flush()
            shard = array(shard_format[2])
        shard.extend(tokens)
        total += len(tokens)
    if shard:
        flush()
    return shards, total, mismatched


def remove_old_shards(out_dir, name):
    pattern = re.compile(re.escape(name) + r"_(train|val)_\d{6}\.bin")
    for entry in os.listdir(out_dir):
        if pattern.fullmatch(entry):
            os.remove(os.path.join(out_dir, entry))


def make_dataset(args):
    train_paths = expand(args.train)
    val_paths = expand(args.val)
    overlap = {os.path.realpath(p) for p in train_paths} & {os.path.realpath(p) for p in val_paths}
    if overlap:
        raise DatasetError(f"file in both --train and --val: {sorted(overlap)[0]}")
    for tool in ("spm_train", "spm_encode"):
        if shutil.which(tool) is None:
            raise DatasetError(f"{tool} not found (Debian package: sentencepiece)")
    splits = {"train": train_paths, "val": val_paths} if val_paths else {"train": train_paths}
    shard_format = UINT32_SHARD if args.vocab_size > 65535 else UINT16_SHARD

    with tempfile.TemporaryDirectory(prefix="make_dataset.") as workdir:
        line_counts = {split: collect_lines(paths, os.path.join(workdir, f"{split}.txt"))
                       for split, paths in splits.items()}
        train_tokenizer(workdir, args.vocab_size)
        pieces = read_pieces(os.path.join(workdir, "tokenizer.model"))
        table = [token_bytes(piece, kind) for piece, kind in pieces]
        newline_id = pieces.index(("<0x0A>", PIECE_BYTE))

        os.makedirs(args.out, exist_ok=True)
        remove_old_shards(args.out, args.name)
        results = {}
        for split, paths in splits.items():
            run(["spm_encode", "--model=tokenizer.model", "--output_format=id",
                 f"--input={split}.txt", f"--output={split}.ids"], cwd=workdir)
            docs = encoded_documents(workdir, split, line_counts[split], newline_id)
            out_prefix = os.path.join(args.out, f"{args.name}_{split}")
            results[split] = write_split(docs, paths, out_prefix, args.shard_tokens,
                                         shard_format, table)
        for name in ("tokenizer.model", "tokenizer.vocab"):
            shutil.copyfile(os.path.join(workdir, name), os.path.join(args.out, name))
    write_tokenizer_bin(os.path.join(args.out, "tokenizer.bin"), table)

    token_type = "uint16" if shard_format is UINT16_SHARD else "uint32"
    print(f"vocab size: {len(pieces)} ({token_type} tokens), "
          f"separator <s> = {BOS_ID}, newline <0x0A> = {newline_id}")
    for split, (shards, total, mismatched) in results.items():
        print(f"{split}: {len(splits[split]):,} documents, {total:,} tokens "
              f"(separators included) in {len(shards)} shard(s)")
        if mismatched:
            print(f"warning: {len(mismatched)} {split} document(s) do not decode to their "
                  f"exact text, first: {mismatched[0]}", file=sys.stderr)
    for shards, _, _ in results.values():
        for path in shards:
            print(f"wrote {path}")
    for name in ("tokenizer.model", "tokenizer.vocab", "tokenizer.bin"):
        print(f"wrote {os.path.join(args.out, name)}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", nargs="+", required=True, metavar="PATH",
                        help="training documents: files, directories or globs")
    parser.add_argument("--val", nargs="*", default=[], metavar="PATH",
                        help="validation documents: files, directories or globs")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--name", required=True, help="shard name prefix, e.g. brown")
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--shard-tokens", type=int, default=100_000_000,
                        help="close a shard before it grows past this many tokens")
    args = parser.parse_args()
    if args.vocab_size < 260:
        parser.error("--vocab-size must be at least 260 (3 special tokens and 256 bytes)")
    if args.shard_tokens < 1:
        parser.error("--shard-tokens must be positive")
    try:
        make_dataset(args)
    except DatasetError as e:
        print(f"make_dataset.py: error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
