#!/usr/bin/env python3
"""tools/make_bpe_fixture.py — the SmolLM2 tokenizer fixture: llama.cpp's token ids for ~1 MB of
varied text (docs/design.md, "Importing models"), checked by tests/tools/bpe_fixture_check.cpp.

  PY=$(bash tools/py_venv.sh --llama-cpp)
  "$PY" tools/make_bpe_fixture.py ids  --gguf G   # re-tokenize the committed text (llama.cpp)
  "$PY" tools/make_bpe_fixture.py text            # re-collect the text (changes the fixture!)
  "$PY" tools/make_bpe_fixture.py hf   --gguf G   # where transformers' tokenizer differs (report)
  G = build/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf (tools/fetch_smollm2.sh)

Files in tests/data/bpe_smollm2/ (--out DIR), both gzip, written byte-for-byte reproducibly:
  chunks.txt.gz  the text, committed so it never changes: a header line, then per chunk
                 "chunk INDEX SOURCE NBYTES\\n" + NBYTES bytes of UTF-8 + "\\n".
  ids.txt.gz     a header line (llama-cpp-python version, the GGUF's SHA-256), then per chunk
                 "INDEX special ID ID ...\\n" (special-token strings parsed) and
                 "INDEX literal ID ID ...\\n" (all text plain), from
                 llama_cpp.Llama(G, vocab_only=True).tokenize(bytes, add_bos=False, special=...).

`text` reads its sources from this machine: datasets/kjv/kjv.txt (tools/prepare_kjv.sh; --kjv), the
Python standard library of the running interpreter, C++ of this repository at commit PIN_COMMIT
(git show), and the translations in /usr/share/locale/*/LC_MESSAGES/{glib20,gtk20}.mo; the
digits, whitespace, emoji and special-token sections are generated from a fixed seed. Chunks are
cut at line ends near CHUNK bytes (a line longer than MAX_CHUNK at a code point boundary).
"""
import argparse
import gettext
import gzip
import hashlib
import io
import os
import random
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "data", "bpe_smollm2")
PIN_COMMIT = "c3cd57a"  # the repository's C++ sources quoted in the fixture
CHUNK, MAX_CHUNK = 3000, 4000
HEADER_CHUNKS = b"#kvtrain-bpe-fixture chunks v1\n"
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<repo_name>", "<reponame>",
            "<file_sep>", "<filename>", "<gh_stars>", "<issue_start>", "<issue_comment>",
            "<issue_closed>", "<jupyter_start>", "<jupyter_text>", "<jupyter_code>",
            "<jupyter_output>", "<jupyter_script>", "<empty_output>"]


# ---- text sources ------------------------------------------------------------------------------

def kjv(path):
    """English prose: fixed passages of the King James Bible (line ranges of kjv.txt)."""
    lines = open(path, encoding="utf-8").read().split("\n")
    out = []
    for a, b in [(0, 700), (14000, 14700), (23145, 23900), (30500, 31000)]:  # Ge, Ps, Mt, Re
        out.append("\n".join(lines[a:b]) + "\n")
    return "".join(out)


PY_FILES = ["textwrap.py", "heapq.py", "bisect.py", "json/decoder.py", "json/encoder.py",
            "string.py", "fractions.py", "calendar.py", "colorsys.py", "shlex.py", "csv.py",
            "base64.py", "glob.py", "fnmatch.py", "ipaddress.py", "statistics.py"]


def python_code():
    base = os.path.dirname(os.__file__)
    return "".join(open(os.path.join(base, f), encoding="utf-8").read() for f in PY_FILES)


CPP_FILES = ["data/bpe.cpp", "data/gguf.cpp", "data/gguf_quant.cpp", "data/shard.cpp",
             "train/checkpoint.cpp", "train/h5_io.cpp", "train/trainer.cpp", "tools/cmd_bench.cpp",
             "tools/cmd_export.cpp", "tools/safetensors.cpp", "tools/memory_check.cpp"]


def cpp_code():
    return "".join(subprocess.run(["git", "-C", ROOT, "show", f"{PIN_COMMIT}:{f}"], check=True,
                                  capture_output=True).stdout.decode("utf-8") for f in CPP_FILES)


LANGS = ["ru", "uk", "bg", "el", "he", "ar", "fa", "hi", "bn", "ta", "te", "th", "ka", "hy", "am",
         "ja", "zh_CN", "zh_TW", "ko", "vi", "tr", "pl", "cs", "de", "fr", "es", "pt_BR", "is",
         "km", "my", "si", "gu", "pa", "ml", "kn", "ug"]


def translations(rng):
    """Non-ASCII letters in many scripts: translated messages of GLib and GTK."""
    out = []
    for lang in LANGS:
        msgs = []
        for dom in ["glib20", "gtk20"]:
            p = f"/usr/share/locale/{lang}/LC_MESSAGES/{dom}.mo"
            if not os.path.exists(p):
                continue
            cat = gettext.GNUTranslations(open(p, "rb"))._catalog
            for k in sorted(cat, key=str):
                v = cat[k]
                if isinstance(v, str) and v and v != k and isinstance(k, str) and k:
                    msgs.append(v)
        if not msgs:
            continue
        rng.shuffle(msgs)
        text, n = [f"== {lang} ==\n"], 0
        for m in msgs:
            text.append(m.rstrip("\n") + "\n")
            n += len(m.encode())
            if n > 6000:
                break
        out.append("".join(text))
    return "".join(out)


UNICODE_DIGITS = ["٠١٢٣٤٥٦٧٨٩", "۰۱۲۳۴۵۶۷۸۹", "०१२३४५६७८९", "০১২৩৪৫৬৭৮৯", "๐๑๒๓๔๕๖๗๘๙",
                  "０１２３４５６７８９", "𝟎𝟏𝟐𝟑𝟒𝟓𝟔𝟕𝟖𝟗", "①②③④⑤⑥⑦⑧⑨⑩", "ⅠⅡⅢⅣⅤⅫⅯ", "¹²³⁴⁵⁶⁷⁸⁹⁰",
                  "½¼¾⅓⅞", "〇一二三四五六七八九"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December"]


def digits(rng):
    """Numbers, dates and times in many notations."""
    r = rng.randint
    lines = []
    for i in range(1400):
        y, mo, d = r(1600, 2099), r(1, 12), r(1, 28)
        hh, mm, ss = r(0, 23), r(0, 59), r(0, 59)
        n = r(0, 10 ** r(1, 15))
        forms = [
            f"{y}-{mo:02d}-{d:02d}", f"{d:02d}/{mo:02d}/{y}", f"{mo}/{d}/{y % 100:02d}",
            f"{d}.{mo}.{y}", f"{MONTHS[mo - 1]} {d}, {y}", f"{d} {MONTHS[mo - 1][:3]} {y}",
            f"{y}-{mo:02d}-{d:02d}T{hh:02d}:{mm:02d}:{ss:02d}Z", f"{hh}:{mm:02d}",
            f"{hh:02d}:{mm:02d}:{ss:02d}.{r(0, 999):03d}", f"{n}", f"{n:,}", f"{n:_}",
            f"-{r(0, 999)}.{r(0, 99999)}", f"{rng.random() * 10 ** r(-5, 30):.6g}",
            f"{r(0, 100)}.{r(0, 9)}%", f"0x{r(0, 2 ** 32):X}", f"0b{r(0, 255):b}",
            f"v{r(0, 20)}.{r(0, 99)}.{r(0, 999)}-rc{r(1, 9)}",
            f"{r(1, 255)}.{r(0, 255)}.{r(0, 255)}.{r(0, 255)}:{r(1, 65535)}",
            f"+{r(1, 99)} ({r(100, 999)}) {r(100, 999)}-{r(1000, 9999)}",
            f"{r(1, 31)}{['st', 'nd', 'rd', 'th'][r(0, 3)]}", f"{r(1, 9)}/{r(2, 16)}",
            f"{r(10, 99)}–{r(100, 999)}", f"${r(0, 99999)}.{r(0, 99):02d}", f"€{r(0, 999)},{r(0, 99)}",
            f"ISBN 978-{r(0, 9)}-{r(100, 999)}-{r(10000, 99999)}-{r(0, 9)}",
            "".join(str(r(0, 9)) for _ in range(r(1, 40))),
            rng.choice(UNICODE_DIGITS)[: r(1, 10)], f"x{rng.choice('²³¹')}+y{rng.choice('₀₁₂₃')}",
            f"{r(0, 9)}{rng.choice(['', ' ', '  '])}{r(0, 99)}{rng.choice(['a', 'kg', 'px', ' km'])}",
        ]
        k = r(2, 6)
        words = [rng.choice(forms) for _ in range(k)]
        sep = rng.choice([" ", ", ", "; ", " | ", "\t", " - ", "/", ""])
        lines.append(rng.choice(["Entry", "On", "Total:", "ID", "Ref.", "#", "At", ""]) + " " +
                     sep.join(words) + rng.choice([".", "", ":", "!", "?", " ."]))
    return "\n".join(lines) + "\n"


SPACES = [" ", "  ", "   ", "    ", "\t", "\t\t", " \t", "\t ", "\u00a0", "\u2003", "\u3000",
          "\u2009", "\u200b", "\u202f", "\u0085", "\u2028", "\u2029", "\f", "\v", "\r", "\r\n",
          "\n", "\n\n", "\n\n\n", " \n", "  \n  ", "\u180e", "\ufeff", "\u1680", "\u205f"]
WORDS = ["the", "word", "Hello", "x", "if", "(a)", "42", "don't", "it's", "WE'LL", "we're",
         "I'm", "they'VE", "'s", "--", "...", "foo_bar", "über", "naïve", "café", "日本", "мир"]


def whitespace(rng):
    """Whitespace runs, tabs, line ends and Unicode spaces between words and at line ends."""
    out = []
    for _ in range(1300):
        parts = [" " * rng.randint(0, 12) + "\t" * rng.randint(0, 2)]
        for _ in range(rng.randint(1, 8)):
            parts.append(rng.choice(WORDS))
            parts.append(rng.choice(SPACES) if rng.random() < 0.6 else " " * rng.randint(1, 20))
        out.append("".join(parts) + rng.choice(["\n", " \n", "\n\n", "\t\n", "\r\n", "   \n"]))
    return "".join(out)


EMOJI = ["😀", "😂", "🥲", "🎉", "🚀", "🔥", "✨", "❤️", "❤", "👍", "👍🏽", "👋🏿", "👨‍👩‍👧‍👦",
         "🧑🏻‍💻", "🏳️‍🌈", "🇩🇪", "🇯🇵", "🇺🇸", "1️⃣", "#️⃣", "*️⃣", "©️", "™", "☕", "⚽", "🐍",
         "🦀", "🤖", "🫠", "🪐", "🧪", "✅", "❌", "⭐", "⚠️", "➡️", "🔟", "🈶", "🀄", "🃏"]
SYMBOLS = ["★", "✓", "©", "®", "€", "£", "¥", "₹", "∑", "∫", "√", "∞", "≠", "≤", "→", "⇒", "┌─┐",
           "│", "└─┘", "░▒▓", "•", "…", "«", "»", "„", "“", "”", "‘", "’", "¿", "¡", "§", "¶",
           "e\u0301", "a\u0308", "n\u0303", "\u0915\u094d\u0937", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "ﬁ", "Ǆ", "ß",
           "İ", "ǅ", "\u1100\u1161\u11a8", "각", "ᄀ", "𠜎", "𝄞", "\U000e0041", "\ue000"]


def emoji(rng):
    """Emoji (ZWJ sequences, skin tones, flags, keycaps) and symbols, between and inside words."""
    out = []
    for _ in range(1500):
        line = []
        for _ in range(rng.randint(2, 9)):
            c = rng.random()
            if c < 0.35:
                line.append(rng.choice(EMOJI) * rng.randint(1, 3))
            elif c < 0.6:
                line.append(rng.choice(SYMBOLS))
            else:
                line.append(rng.choice(WORDS))
            line.append(rng.choice([" ", "", " ", "  ", "\t"]))
        out.append("".join(line) + "\n")
    return "".join(out)


NEAR = ["<|endoftext|", "|endoftext|>", "<|endoftext |>", "< |im_start| >", "<|im_start|  >",
        "<|IM_END|>", "<<|im_end|>>", "<|im_<|im_end|>start|>", "<|im_start|><|im_end|>",
        "<|endoftext|><|endoftext|>", "x<|endoftext|>y", " <|im_end|> ", "\n<|im_start|>\n",
        "<file_sep>a.py", "<filename>", "<jupyter_code>print(1)<jupyter_output>1<empty_output>",
        "<repo_name>kvtrain<gh_stars>1000", "<issue_start>bug<issue_comment>ok<issue_closed>",
        "<jupyter_start><jupyter_text><jupyter_script>", "<reponame>", "<|im_end|>.", "<|im_end|>\n\n",
        "'<|endoftext|>'", "\"<|im_start|>\"", "`<|im_end|>`", "<|endoftext|>123", "١<|im_end|>"]


def special(rng, pool):
    """Chat transcripts (SmolLM2's template) and text around the special-token strings; each
    record is a chunk of its own."""
    recs = []
    for i in range(200):
        msg = [rng.choice(pool) for _ in range(rng.randint(1, 4))]
        t = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        for j, m in enumerate(msg):
            t += f"<|im_start|>{'user' if j % 2 == 0 else 'assistant'}\n{m}<|im_end|>\n"
        if rng.random() < 0.5:
            t += "<|im_start|>assistant\n"
        for _ in range(rng.randint(1, 6)):
            pos = rng.randint(0, len(t))
            t = t[:pos] + rng.choice(NEAR + SPECIALS) + t[pos:]
        t += rng.choice(["<|endoftext|>", "", "\n<|endoftext|>", "<|endoftext|>\n"])
        recs.append(t)
    return recs


def lines_of(text, n):
    """Short lines of text, for the chat transcripts."""
    ls = [l for l in text.split("\n") if l.strip()]
    return ls[:n]


def split_chunks(text):
    """Cuts text at line ends near CHUNK bytes; a longer line at a code point boundary."""
    data = text.encode("utf-8")
    out, p = [], 0
    while p < len(data):
        if len(data) - p <= MAX_CHUNK:
            out.append(data[p:])
            break
        q = data.rfind(b"\n", p + 1, p + CHUNK)
        if q < 0:
            q = data.find(b"\n", p + CHUNK, p + MAX_CHUNK)
        if q < 0:
            q = p + CHUNK
            while (data[q] & 0xC0) == 0x80:  # not inside a code point
                q -= 1
            q -= 1
        out.append(data[p:q + 1])
        p = q + 1
    return out


def build_text(out, kjv_path):
    rng = random.Random(20261202)
    prose = kjv(kjv_path)
    multi = translations(rng)
    sections = [("kjv", prose), ("python", python_code()), ("cpp", cpp_code()), ("i18n", multi),
                ("digits", digits(rng)), ("whitespace", whitespace(rng)), ("emoji", emoji(rng))]
    chunks = []
    for name, text in sections:
        chunks += [(name, c) for c in split_chunks(text)]
    pool = lines_of(prose, 300) + lines_of(multi, 300) + lines_of(digits(random.Random(1)), 100) + \
        lines_of(emoji(random.Random(2)), 100)
    chunks += [("special", c) for r in special(rng, pool) for c in split_chunks(r)]
    buf = io.BytesIO(HEADER_CHUNKS)
    buf.seek(0, 2)
    for i, (name, c) in enumerate(chunks):
        buf.write(f"chunk {i} {name} {len(c)}\n".encode() + c + b"\n")
    write_gz(os.path.join(out, "chunks.txt.gz"), buf.getvalue())
    sizes = {}
    for name, c in chunks:
        sizes[name] = sizes.get(name, 0) + len(c)
    print(f"{len(chunks)} chunks, {sum(sizes.values())} bytes: " +
          ", ".join(f"{k} {v}" for k, v in sizes.items()))


# ---- files -------------------------------------------------------------------------------------

def write_gz(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f, gzip.GzipFile(filename="", mode="wb", fileobj=f, mtime=0,
                                              compresslevel=9) as g:
        g.write(data)
    print(f"wrote {path} ({os.path.getsize(path)} bytes, {len(data)} uncompressed)")


def read_chunks(out):
    data = gzip.open(os.path.join(out, "chunks.txt.gz")).read()
    if not data.startswith(HEADER_CHUNKS):
        sys.exit("chunks.txt.gz: not a kvtrain-bpe-fixture chunks v1 file")
    p, chunks = len(HEADER_CHUNKS), []
    while p < len(data):
        e = data.index(b"\n", p)
        _, idx, name, n = data[p:e].decode().split(" ")
        n = int(n)
        chunks.append((name, data[e + 1:e + 1 + n]))
        assert int(idx) == len(chunks) - 1 and data[e + 1 + n:e + 2 + n] == b"\n"
        p = e + 2 + n
    return chunks


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


def make_ids(out, gguf):
    import llama_cpp
    llm = llama_cpp.Llama(model_path=gguf, vocab_only=True, verbose=False)
    buf = io.StringIO()
    buf.write(f"#kvtrain-bpe-fixture ids v1 llama-cpp-python {llama_cpp.__version__} "
              f"{os.path.basename(gguf)} sha256 {sha256(gguf)}\n")
    n = 0
    for i, (_, c) in enumerate(read_chunks(out)):
        for mode in ["special", "literal"]:
            ids = llm.tokenize(c, add_bos=False, special=mode == "special")
            n += len(ids)
            buf.write(f"{i} {mode} " + " ".join(map(str, ids)) + "\n")
    write_gz(os.path.join(out, "ids.txt.gz"), buf.getvalue().encode())
    print(f"{n} ids")


def read_ids(out):
    ids = {}
    for line in gzip.open(os.path.join(out, "ids.txt.gz")).read().decode().split("\n")[1:]:
        if line:
            i, mode, *rest = line.split(" ")
            ids[(int(i), mode)] = [int(x) for x in rest]
    return ids


def hf_report(out, gguf):
    """Where transformers' tokenizer (converted from the GGUF) differs from llama.cpp's ids."""
    import transformers
    tok = transformers.AutoTokenizer.from_pretrained(os.path.dirname(os.path.abspath(gguf)),
                                                     gguf_file=os.path.basename(gguf))
    chunks, ids = read_chunks(out), read_ids(out)
    print(f"transformers {transformers.__version__}, {type(tok).__name__}")
    for mode in ["special", "literal"]:
        bad, by_src, examples, digit_first = 0, {}, [], 0
        for i, (name, c) in enumerate(chunks):
            text = c.decode("utf-8")
            if mode == "special":
                got = tok.encode(text, add_special_tokens=False)
            else:
                got = tok.encode(text, add_special_tokens=False, split_special_tokens=True)
            want = ids[(i, mode)]
            if got != want:
                bad += 1
                by_src[name] = by_src.get(name, 0) + 1
                k = next((k for k in range(min(len(got), len(want))) if got[k] != want[k]),
                         min(len(got), len(want)))
                at = len(tok.decode(want[:k]).encode())
                rest = c[at:]
                ws = len(rest) - len(rest.lstrip())
                digit_first += ws >= 2 and rest[ws:ws + 1].decode("utf-8", "replace").isnumeric()
                if by_src[name] == 1:  # the first of each source
                    ctx = tok.decode(want[max(0, k - 3):k + 4])
                    examples.append(f"chunk {i} ({name}) token {k}: near {ctx!r}: llama.cpp "
                                    f"{[tok.decode([t]) for t in want[k:k + 4]]} transformers "
                                    f"{[tok.decode([t]) for t in got[k:k + 4]]}")
        print(f"{mode}: {bad}/{len(chunks)} chunks differ; by source {by_src}; "
              f"{digit_first} of them first where a run of 2+ spaces precedes a digit")
        for e in examples:
            print("  " + e)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("what", choices=["text", "ids", "hf"])
    ap.add_argument("--gguf", help="SmolLM2 GGUF (for ids and hf)")
    ap.add_argument("--out", default=OUT)
    ap.add_argument("--kjv", default=os.path.join(ROOT, "datasets", "kjv", "kjv.txt"),
                    help="for text: the KJV's plain text (tools/prepare_kjv.sh)")
    a = ap.parse_args()
    if a.what == "text":
        build_text(a.out, a.kjv)
    elif not a.gguf:
        sys.exit(f"make_bpe_fixture.py {a.what}: give --gguf")
    elif a.what == "ids":
        make_ids(a.out, a.gguf)
    else:
        hf_report(a.out, a.gguf)


if __name__ == "__main__":
    main()
