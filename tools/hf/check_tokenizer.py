#!/usr/bin/env python3
"""The exported tokenizer.json (tools/sp_tokenizer_json.h) under transformers 5.x gives the ids
of kvtrain's SentencePiece model (docs/export.md).

  python tools/hf/check_tokenizer.py EXPORT_DIR [EXPORT_DIR ...]

For each directory written by `kvtrain export` from a kvtrain SentencePiece tokenizer:
AutoTokenizer.from_pretrained(DIR) on varied texts (newlines, whitespace runs and tabs, leading
and trailing spaces, digits, punctuation, non-ASCII letters, CJK, emoji, characters the model
has no piece for, a long text) must give
  1. add_special_tokens=False: exactly SentencePiece's ids for DIR/tokenizer.model (the model
     and library kvtrain's data/tokenizer.cpp encodes with);
  2. add_special_tokens=True: BOS first, then the same ids;
  3. decode(ids) == the text (SentencePiece's decode is exact for kvtrain's models);
and the bos/eos/unk tokens and ids are the SentencePiece model's. Exit status 1 on any mismatch.
"""

import json
import os
import sys

TEXTS = [
    "the lord said unto moses",
    "The LORD said unto Moses, \"Go!\"",
    "  two  spaces,   three, and a\ttab\tor\t\ttwo",
    " leading space",
    "trailing space ",
    "line one\nline two\n\nafter a blank line\n",
    "\n\n\n",
    "windows\r\nline end",
    "digits 0123456789, 1984 and 3.14159; 10,000",
    "café naïve über Straße été déjà-vu",
    "日本語のテキスト 中文 한국어",
    "emoji 🙂🚀 and symbols © ± → ∞",
    "Ωmega, Ελληνικά, русский текст",
    "\u00a0non-breaking\u2009thin space",
    "x" * 40 + " " + "ab" * 30,
    "",
    " ",
    "a",
    "(a) [b] {c} <d> it's \"q\" 'r' -- ...",
]


def main():
    if len(sys.argv) < 2:
        print(__doc__)
        return 2
    import sentencepiece as spm
    import transformers
    from transformers import AutoTokenizer
    transformers.logging.set_verbosity_error()
    texts = TEXTS + ["\n".join(TEXTS) * 5]  # and one long document
    failures = 0
    for d in sys.argv[1:]:
        with open(os.path.join(d, "config.json")) as f:
            remote = json.load(f)["model_type"] != "llama"
        sp = spm.SentencePieceProcessor(model_file=os.path.join(d, "tokenizer.model"))
        tok = AutoTokenizer.from_pretrained(d, trust_remote_code=remote)
        bad = []
        for t in texts:
            want = sp.encode(t)
            got = tok(t, add_special_tokens=False)["input_ids"]
            with_bos = tok(t)["input_ids"]
            back = tok.decode(got)
            if got != want or with_bos != [sp.bos_id()] + want or back != t or sp.decode(want) != t:
                bad.append(t)
                print(f"[{d}] MISMATCH {t[:60]!r}: hf {got[:16]} vs sentencepiece {want[:16]}, "
                      f"bos {with_bos[:1]}, decode {back[:60]!r}", flush=True)
        specials = (tok.bos_token, tok.bos_token_id, tok.eos_token, tok.eos_token_id, tok.unk_token)
        want_sp = (sp.id_to_piece(sp.bos_id()), sp.bos_id(), sp.id_to_piece(sp.eos_id()), sp.eos_id(),
                   sp.id_to_piece(sp.unk_id()))
        if specials != want_sp:
            bad.append("special tokens")
            print(f"[{d}] special tokens {specials} vs sentencepiece {want_sp}")
        n_ids = sum(len(sp.encode(t)) for t in texts)
        print(f"[{d}] {type(tok).__name__}: {len(texts) - len(bad)} of {len(texts)} texts ({n_ids} ids) equal "
              f"SentencePiece's ids, BOS first, decode exact: {'PASS' if not bad else 'FAIL'}", flush=True)
        failures += len(bad)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
