#!/usr/bin/python3
"""Turn text files into a SentencePiece tokenizer, llm.c-style token shards and a manifest.

    /usr/bin/python3 scripts/make_dataset.py --train PATH... [--val PATH...] --out DIR --name NAME
                                             [--vocab-size 8192] [--shard-tokens 100000000]

Needs the Python module sentencepiece: Debian's python3-sentencepiece, for /usr/bin/python3
(`make test-deps` installs it); started by another python3, the script restarts under
/usr/bin/python3, or names the package and the command to run.

A PATH is a file, a directory (every file below it, recursively, except hidden
ones) or a quoted glob. Each file is one document, read as UTF-8 with line
endings normalized to "\\n".

Tokenizer. SentencePiece learns a BPE model from the train documents only. The
options serve two goals:
  * Lossless text. Identity normalization, no whitespace collapsing and byte
    fallback make every document decode back to exactly its own text, so the
    model sees the real characters, indentation and runs of spaces. The script
    checks this for every document and warns when it fails (for example, text
    containing the SentencePiece meta-space U+2581 comes back as a space).
  * Identical bytes on every run. All lines are used in file order (no
    sampling, no shuffling), training uses one thread, and it runs in the
    temporary directory with relative names, because SentencePiece stores its
    options, input path included, inside the .model file.
add_dummy_prefix is off. With it, SentencePiece puts a meta-space before every
line, and decoding by plain byte concatenation would show a stray space at the
start of every line. Without it, a line-initial word is tokenized without a
leading space, as in GPT-2, and the bytes are exactly the text. Digits are split
into single-digit pieces so that numbers get a consistent tokenization.

Newlines. The trainer sees one line at a time, so no piece contains "\\n": a
document is encoded whole, and each "\\n" becomes the byte-fallback token <0x0A>.

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
[20240328, 2, vocab size, 1 (the separator id <s>), 1 (an encoding section
follows), 0...], then for each id in order a uint8 length and that many bytes:
what the token contributes to the decoded text. In text pieces the meta-space
U+2581 becomes " "; a byte piece <0xAB> becomes the single byte 0xAB (a
character missing from the vocabulary is spread over several tokens, so decode
by concatenating bytes); the control tokens <s> and </s> have length 0 (llm.c's
GPT-2 reader asserts that no entry is empty; a reader of this file must allow
it); <unk> is " \u2047 ", SentencePiece's own surface for it, though with byte
fallback the encoder never produces it. Then the encoding section, which llm.c's
readers never reach: for each id its SentencePiece score as a little-endian
float32, then for each id its SentencePiece piece type as a uint8 (1 normal,
2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte). With the table it is
all normgpt's encoder (src/encode.c) needs to give SentencePiece's own ids.
tokenizer.model and tokenizer.vocab are the SentencePiece files themselves.

dataset.json, the manifest (paths relative to DIR):
    {"format": "normgpt-dataset", "version": 1, "name": NAME,
     "vocab_size": V, "tokenizer": "tokenizer.bin", "separator": 1,
     "token_type": "uint16" or "uint32",
     "train": {"shards": "NAME_train_*.bin", "shard_count": N, "documents": D, "tokens": T},
     "val":   {...the same, when --val is given}}
It holds what a run needs to know about the data: model.vocab_size, the
tokenizer and the shard globs (data.train, data.val); token counts include the
separators.
"""

import argparse
import glob
import json
import os
import re
import shutil
import struct
import sys
import tempfile
from array import array

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import system_python  # noqa: E402

UNK_ID, BOS_ID, EOS_ID = 0, 1, 2
UNK_SURFACE = " \u2047 "
META_SPACE = "\u2581"
HEADER_INTS = 256
TOKENIZER_MAGIC, TOKENIZER_VERSION, ENCODING_SECTION = 20240328, 2, 1
UINT16_SHARD = (20240520, 1, "H", "uint16")  # magic, version, array typecode, manifest name
UINT32_SHARD = (20240801, 7, "I", "uint32")
MANIFEST = "dataset.json"
# SentencePiece's piece types (ModelProto.SentencePiece.Type)
PIECE_NORMAL, PIECE_UNKNOWN, PIECE_CONTROL, PIECE_UNUSED, PIECE_BYTE = 1, 2, 3, 5, 6
TRAINER_OPTIONS = [
    "--input=train.txt", "--model_prefix=tokenizer", "--model_type=bpe",
    "--byte_fallback=true", "--character_coverage=1.0",
    "--normalization_rule_name=identity", "--remove_extra_whitespaces=false",
    "--add_dummy_prefix=false", "--split_digits=true",
    f"--unk_id={UNK_ID}", f"--bos_id={BOS_ID}", f"--eos_id={EOS_ID}", "--pad_id=-1",
    "--input_sentence_size=0", "--shuffle_input_sentence=false",
    # the largest value SentencePiece accepts: longer lines would be left out of training
    "--max_sentence_length=1073741824",
    "--num_threads=1", "--minloglevel=1"]


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


def read_document(path):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})")
    except OSError as e:
        raise DatasetError(f"{path}: {e.strerror}")


def train_tokenizer(spm, paths, workdir, vocab_size):
    """Trains on the documents' lines, written to workdir/train.txt; leaves workdir/tokenizer.*."""
    with open(os.path.join(workdir, "train.txt"), "w", encoding="utf-8", newline="\n") as out:
        for path in paths:
            out.write(read_document(path) + "\n")
    cwd = os.getcwd()
    os.chdir(workdir)
    try:
        spm.SentencePieceTrainer.train(" ".join(TRAINER_OPTIONS + [f"--vocab_size={vocab_size}"]))
    except RuntimeError as e:
        raise DatasetError(f"SentencePiece training failed: {e}")
    finally:
        os.chdir(cwd)


def piece_type(sp, i):
    for kind, test in ((PIECE_BYTE, sp.is_byte), (PIECE_CONTROL, sp.is_control),
                       (PIECE_UNKNOWN, sp.is_unknown), (PIECE_UNUSED, sp.is_unused)):
        if test(i):
            return kind
    return PIECE_NORMAL


def token_bytes(piece, kind):
    """What a token contributes to the decoded text."""
    if kind == PIECE_BYTE:
        return bytes([int(piece[3:5], 16)])
    if kind == PIECE_CONTROL:
        return b""
    if kind == PIECE_UNKNOWN:
        return UNK_SURFACE.encode("utf-8")
    return piece.replace(META_SPACE, " ").encode("utf-8")


def write_tokenizer_bin(path, sp):
    """tokenizer.bin with its encoding section (see the docstring); returns the decoding table."""
    kinds = [piece_type(sp, i) for i in range(sp.get_piece_size())]
    table = [token_bytes(sp.id_to_piece(i), kind) for i, kind in enumerate(kinds)]
    with open(path, "wb") as f:
        f.write(struct.pack(f"<{HEADER_INTS}i", TOKENIZER_MAGIC, TOKENIZER_VERSION,
                            len(table), BOS_ID, ENCODING_SECTION, *[0] * (HEADER_INTS - 5)))
        for data in table:
            f.write(struct.pack("<B", len(data)) + data)
        f.write(struct.pack(f"<{len(table)}f", *(sp.get_score(i) for i in range(len(table)))))
        f.write(bytes(kinds))
    return table


def encoded_documents(sp, paths):
    """Yields (tokens, text) per document: <s>, then the whole text encoded."""
    for path in paths:
        text = read_document(path)
        yield [BOS_ID] + sp.encode(text), text


def write_shard(path, tokens, shard_format):
    magic, version = shard_format[:2]
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


def manifest(name, vocab_size, shard_format, splits, results):
    """The dataset.json of the docstring."""
    data = {"format": "normgpt-dataset", "version": 1, "name": name, "vocab_size": vocab_size,
            "tokenizer": "tokenizer.bin", "separator": BOS_ID, "token_type": shard_format[3]}
    for split, (shards, total, _) in results.items():
        data[split] = {"shards": f"{name}_{split}_*.bin", "shard_count": len(shards),
                       "documents": len(splits[split]), "tokens": total}
    return data


def make_dataset(args, spm):
    train_paths = expand(args.train)
    val_paths = expand(args.val)
    overlap = {os.path.realpath(p) for p in train_paths} & {os.path.realpath(p) for p in val_paths}
    if overlap:
        raise DatasetError(f"file in both --train and --val: {sorted(overlap)[0]}")
    splits = {"train": train_paths, "val": val_paths} if val_paths else {"train": train_paths}
    shard_format = UINT32_SHARD if args.vocab_size > 65535 else UINT16_SHARD

    os.makedirs(args.out, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="make_dataset.") as workdir:
        train_tokenizer(spm, train_paths, workdir, args.vocab_size)
        for name in ("tokenizer.model", "tokenizer.vocab"):
            shutil.copyfile(os.path.join(workdir, name), os.path.join(args.out, name))
    sp = spm.SentencePieceProcessor(model_file=os.path.join(args.out, "tokenizer.model"))
    table = write_tokenizer_bin(os.path.join(args.out, "tokenizer.bin"), sp)

    remove_old_shards(args.out, args.name)
    results = {}
    for split, paths in splits.items():
        out_prefix = os.path.join(args.out, f"{args.name}_{split}")
        results[split] = write_split(encoded_documents(sp, paths), paths, out_prefix,
                                     args.shard_tokens, shard_format, table)
    with open(os.path.join(args.out, MANIFEST), "w", encoding="utf-8") as f:
        json.dump(manifest(args.name, len(table), shard_format, splits, results), f, indent=2)
        f.write("\n")

    print(f"vocab size: {len(table)} ({shard_format[3]} tokens), separator <s> = {BOS_ID}")
    for split, (shards, total, mismatched) in results.items():
        print(f"{split}: {len(splits[split]):,} documents, {total:,} tokens "
              f"(separators included) in {len(shards)} shard(s)")
        if mismatched:
            print(f"warning: {len(mismatched)} {split} document(s) do not decode to their "
                  f"exact text, first: {mismatched[0]}", file=sys.stderr)
    for shards, _, _ in results.values():
        for path in shards:
            print(f"wrote {path}")
    for name in ("tokenizer.model", "tokenizer.vocab", "tokenizer.bin", MANIFEST):
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
    system_python.require("sentencepiece", "python3-sentencepiece")
    import sentencepiece
    try:
        make_dataset(args, sentencepiece)
    except DatasetError as e:
        print(f"make_dataset.py: error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
