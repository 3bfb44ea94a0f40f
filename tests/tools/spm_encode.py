#!/usr/bin/python3
"""SentencePiece's own ids for the encoder test (tests/test_tokenizer.c).

    tests/tools/spm_encode.py MODEL FILE...

Prints one line per FILE: the ids of its bytes, space-separated. The bytes go to SentencePiece as
they are, malformed UTF-8 included (its normalizer turns each bad byte into U+FFFD).
"""
import sys

import sentencepiece

model = sentencepiece.SentencePieceProcessor(model_file=sys.argv[1])
for path in sys.argv[2:]:
    with open(path, "rb") as f:
        print(" ".join(map(str, model.encode(f.read()))))
