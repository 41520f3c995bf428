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

  python tools/hf/check_tokenizer.py [EXPORT_DIR ...] --imported DIR FROM_DIR

also checks the export DIR of an imported-style checkpoint that embeds FROM_DIR's tokenizer.json
and a ChatML template (tools/hf/check_parity.sh makes it): tokenizer.json is FROM_DIR's byte for
byte, no tokenizer.model; AutoTokenizer has bos "<s>", eos "</s>", the same ids as FROM_DIR's on
the texts above; its chat_template equals chat_template.jinja and tokenizer_config.json's, and
apply_chat_template renders a user turn as
"<|im_start|>user\n...<|im_end|>\n<|im_start|>assistant\n"; generation_config's eos is 2; the model
gives FROM_DIR's logits exactly.
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


def check_imported(d, src, texts):
    """The --imported checks (see the docstring); returns the number of failures."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    bad = []

    def read(path):
        with open(path, "rb") as f:
            return f.read()
    if read(os.path.join(d, "tokenizer.json")) != read(os.path.join(src, "tokenizer.json")):
        bad.append("tokenizer.json is not the embedded one")
    if os.path.exists(os.path.join(d, "tokenizer.model")):
        bad.append("tokenizer.model written")
    tok, ref = AutoTokenizer.from_pretrained(d), AutoTokenizer.from_pretrained(src)
    if (tok.bos_token, tok.eos_token, tok.bos_token_id, tok.eos_token_id) != ("<s>", "</s>", 1, 2):
        bad.append(f"special tokens {(tok.bos_token, tok.eos_token, tok.bos_token_id, tok.eos_token_id)}")
    for t in texts:
        if tok(t)["input_ids"] != ref(t)["input_ids"]:
            bad.append(f"ids of {t[:30]!r}")
    with open(os.path.join(d, "tokenizer_config.json")) as f:
        cfg_template = json.load(f).get("chat_template")
    jinja = read(os.path.join(d, "chat_template.jinja")).decode()
    if not (tok.chat_template == jinja == cfg_template):
        bad.append("chat_template differs between AutoTokenizer, chat_template.jinja, tokenizer_config.json")
    msgs = [{"role": "user", "content": "hello there"}]
    text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    want = "<|im_start|>user\nhello there<|im_end|>\n<|im_start|>assistant\n"
    if text != want:
        bad.append(f"apply_chat_template gave {text!r}, want {want!r}")
    with open(os.path.join(d, "generation_config.json")) as f:
        if json.load(f)["eos_token_id"] != 2:
            bad.append("generation_config eos_token_id")
    ids = torch.tensor([tok(texts[0])["input_ids"]])
    with torch.no_grad():
        a = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32)(input_ids=ids).logits
        b = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)(input_ids=ids).logits
    if not torch.equal(a, b):
        bad.append("logits differ from the source model's")
    for b_ in bad:
        print(f"[{d}] {b_}", flush=True)
    print(f"[{d}] imported: tokenizer.json verbatim, bos/eos strings, ids, chat template ({text!r}), "
          f"generation eos, logits: {'PASS' if not bad else 'FAIL'}", flush=True)
    return len(bad)


def main():
    import argparse
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dirs", nargs="*")
    ap.add_argument("--imported", nargs=2, metavar=("DIR", "FROM_DIR"))
    args = ap.parse_args()
    if not args.dirs and not args.imported:
        ap.error("give export directories and/or --imported DIR FROM_DIR")
    import sentencepiece as spm
    import transformers
    from transformers import AutoTokenizer
    transformers.logging.set_verbosity_error()
    texts = TEXTS + ["\n".join(TEXTS) * 5]  # and one long document
    failures = 0
    transformers.utils.logging.disable_progress_bar()
    for d in args.dirs:
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
    if args.imported:
        failures += check_imported(args.imported[0], args.imported[1], texts)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
