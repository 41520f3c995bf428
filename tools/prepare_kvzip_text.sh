#!/usr/bin/env bash
# tools/prepare_kvzip_text.sh — real English text for the Fast KVzip study on SmolLM2
# (tools/kvzip_study.sh), from Debian packages, in two disjoint sets tokenised with SmolLM2's
# own tokenizer (its GGUF) into llm.c shards:
#   train: gate training text, about 4 MB of documentation prose: the Debian Reference, the
#          Debian FAQ, the Debian Developer's Reference, the Debian Policy Manual, the GNU Coding
#          Standards and Information for Maintainers of GNU Software, and the Python 3.11
#          tutorial, HOWTOs, FAQ, language reference and glossary (reST sources as shipped),
#          and about 4 MB of public-domain books: Jane Austen's six novels (Project Gutenberg
#          texts as Debian's r-cran-janeaustenr ships them in an R lazy-load database; the .deb
#          is fetched with `apt-get download` and unpacked here, R is not installed);
#          `kvtrain prepare` holds out every 20th block of 8192 tokens as data.val;
#          -> OUT_DIR/train/train_{train,val}_000000.bin
#   eval:  evaluation text, three books from other packages: The Debian Administrator's Handbook
#          (en-US HTML, pages in reading order, stripped to text), the Debian GNU/Linux
#          Installation Guide for amd64 (its plain-text edition) and the Securing Debian Manual
#          (harden-doc, en-US HTML like the handbook; last, so the first two keep their window
#          numbers), no validation split
#          -> OUT_DIR/eval/eval_train_000000.bin (the "train" in the name is prepare's; it is
#          the evaluation set)
# and OUT_DIR/SOURCES.md: every source file, its package, version and license, the bytes and
# tokens of each text, and the 13-word-shingle overlap of eval with train (must be ~0).
# Installs the packages (tools/setup.sh lists them) when one is missing; needs root then.
# Skips everything when the outputs exist and are newer than this script.
#
#   bash tools/prepare_kvzip_text.sh
#
# Environment:
#   KVTRAIN    the kvtrain binary [build/kvtrain]
#   TOKENIZER  SmolLM2's GGUF [build/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf]
#   OUT_DIR    where the texts, shards and SOURCES.md go [build/kvzip_text]
set -euo pipefail
cd "$(dirname "$0")/.."
KVTRAIN=${KVTRAIN:-build/kvtrain}
TOKENIZER=${TOKENIZER:-build/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf}
OUT_DIR=${OUT_DIR:-build/kvzip_text}
SELF=tools/prepare_kvzip_text.sh

fresh=1
for f in "$OUT_DIR/train/stats.json" "$OUT_DIR/eval/stats.json" "$OUT_DIR/SOURCES.md"; do
  [[ -f "$f" && "$f" -nt "$SELF" ]] || fresh=0
done
if [[ $fresh == 1 ]]; then
  echo "prepare_kvzip_text: $OUT_DIR is up to date (remove $OUT_DIR/SOURCES.md to redo it)"
  grep -E "^\| \*\*(train|eval)" "$OUT_DIR/SOURCES.md" || true
  exit 0
fi

pkgs=(debian-reference-en debian-faq developers-reference debian-policy gnu-standards python3.11-doc
      debian-handbook installation-guide-amd64 harden-doc)
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    bash tools/setup.sh
    break
  fi
done
[[ -x "$KVTRAIN" ]] || { echo "prepare_kvzip_text: no kvtrain binary at $KVTRAIN" >&2; exit 1; }
[[ -f "$TOKENIZER" ]] || { echo "prepare_kvzip_text: no tokenizer $TOKENIZER (bash tools/fetch_smollm2.sh)" >&2; exit 1; }

rm -rf "$OUT_DIR/text"
mkdir -p "$OUT_DIR/text/train" "$OUT_DIR/text/eval"
# The Austen novels: the package's .deb, unpacked without installing it (it would pull in R).
AUSTEN_DIR=$OUT_DIR/deb/janeaustenr
if [[ ! -f "$AUSTEN_DIR/version" ]]; then
  rm -rf "$OUT_DIR/deb"
  mkdir -p "$AUSTEN_DIR"
  (cd "$OUT_DIR/deb" && apt-get download -qq r-cran-janeaustenr) ||
    { echo "prepare_kvzip_text: apt-get download r-cran-janeaustenr failed (run apt-get update?)" >&2; exit 1; }
  deb=$(ls "$OUT_DIR"/deb/r-cran-janeaustenr_*.deb)
  dpkg-deb -x "$deb" "$AUSTEN_DIR"
  dpkg-deb -f "$deb" Version > "$AUSTEN_DIR/version"
fi

# 1. The texts, and OUT_DIR/text/sources.json naming what each was made of.
/usr/bin/python3 - "$OUT_DIR/text" "$AUSTEN_DIR" <<'PY'
import glob, gzip, html.parser, json, os, re, subprocess, sys

sys.path.insert(0, "tools")
from r_lazyload import RdbError, string_vectors  # noqa: E402

out, austen_dir = sys.argv[1], sys.argv[2]
AUSTEN_RDB = os.path.join(austen_dir, "usr/lib/R/site-library/janeaustenr/data/Rdata.rdb")
PY_SRC = "/usr/share/doc/python3.11/html/_sources"
LICENSES = {
    "debian-reference-en": "GPL-2+",
    "debian-faq": "verbatim/modified copying permitted with notice (Software in the Public Interest)",
    "developers-reference": "GPL-2",
    "debian-policy": "GPL-2+",
    "gnu-standards": "GFDL-1.3+ (no invariant sections)",
    "python3.11-doc": "PSF-2.0 (Python documentation)",
    "debian-handbook": "GPL-2+ or CC-BY-SA-3.0",
    "installation-guide-amd64": "GPL-2",
    "harden-doc": "GPL-2+",
    "r-cran-janeaustenr": "public domain (the novels, Project Gutenberg texts); MIT (the package)",
}


def version(pkg):
    if pkg == "r-cran-janeaustenr":  # unpacked, not installed
        return open(os.path.join(austen_dir, "version")).read().strip()
    return subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], check=True,
                          capture_output=True, text=True).stdout


def read(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as f:
        return f.read()


def clean(text):
    text = text.replace("\x1f", "").replace("\x0c", "\n").replace("\r", "")
    text = re.sub(r"[ \t]+\n", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


class HtmlText(html.parser.HTMLParser):
    """Text of a DocBook/publican page: paragraphs, headings, lists, tables and <pre> blocks;
    the page banner, navigation bars, index anchors and the table of contents are left out."""
    BLOCK = {"p", "div", "h1", "h2", "h3", "h4", "h5", "h6", "li", "tr", "table", "pre", "dt", "dd",
             "br", "ul", "ol", "dl", "blockquote"}
    SKIP_CLASS = ("docnav", "toc", "indexterm", "navheader", "navfooter")
    SKIP_ID = ("banner", "title")
    VOID = {"br", "img", "meta", "link", "hr", "input", "col", "area", "base", "wbr"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts, self.stack, self.skip, self.pre = [], [], 0, 0
        self.body = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "body":
            self.body = True
        if tag in self.VOID:
            if tag == "br":
                self.parts.append("\n")
            return
        cls = (a.get("class") or "").split()
        skip = tag in ("script", "style", "head") or a.get("id") in self.SKIP_ID or \
            any(c in self.SKIP_CLASS for c in cls)
        self.stack.append((tag, skip))
        if skip:
            self.skip += 1
        if tag == "pre":
            self.pre += 1
        if tag in self.BLOCK and not self.skip:
            self.parts.append("\n\n" if tag in ("p", "pre", "h1", "h2", "h3", "h4", "table") or
                              "para" in cls else "\n")

    def handle_endtag(self, tag):
        if tag in self.VOID:
            return
        while self.stack:
            t, skip = self.stack.pop()
            if skip:
                self.skip -= 1
            if t == "pre":
                self.pre -= 1
            if t in self.BLOCK and not self.skip:
                self.parts.append("\n")
            if t == tag:
                break

    def handle_data(self, data):
        if self.skip or not self.body:
            return
        if not self.pre:
            data = re.sub(r"\s+", " ", data)
            if not self.parts or self.parts[-1].endswith("\n"):
                data = data.lstrip()
            if not data:
                return
        self.parts.append(data)

    def text(self):
        t = "".join(self.parts)
        t = "\n".join(line.strip() if not line.startswith(" ") else line.rstrip() for line in t.split("\n"))
        return clean(t)


def html_text(path):
    p = HtmlText()
    p.feed(read(path))
    p.close()
    return p.text()


def publican_pages(base):
    """A publican book's pages in reading order: index.html, then each page's rel=next (as
    shipped, or gzipped by the package: harden-doc's changelog.html.gz)."""
    pages, page = [], "index.html"
    while page and page not in pages:
        pages.append(page)
        path = os.path.join(base, page)
        m = re.search(r'<link rel="next" href="([^"#]+)"', read(path if os.path.exists(path) else path + ".gz"))
        page = m.group(1) if m else None
    return [p if os.path.exists(p) else p + ".gz" for p in (os.path.join(base, p) for p in pages)]


def austen_novels():
    """The six novels, one file each, hard-wrapped lines joined into paragraphs."""
    files = []
    try:
        vectors = string_vectors(AUSTEN_RDB)
    except (OSError, RdbError) as e:
        sys.exit(f"prepare_kvzip_text: {e}")
    for lines in vectors:
        if not any(l.strip() for l in lines):
            continue
        paras = re.split(r"\n\s*\n", "\n".join(lines))
        text = "\n\n".join(" ".join(l.strip() for l in p.split("\n") if l.strip()) for p in paras)
        title = next(l for l in lines if l.strip()).strip()
        path = os.path.join(out, "austen", re.sub(r"[^a-z]+", "-", title.lower()).strip("-") + ".txt")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        files.append(path)
    if len(files) != 6:
        sys.exit(f"prepare_kvzip_text: {AUSTEN_RDB}: {len(files)} novels, not 6")
    return sorted(files)


def rst_files(*parts):
    files = []
    for part in parts:
        path = os.path.join(PY_SRC, part)
        files += sorted(glob.glob(path + "/**/*.rst.txt", recursive=True)) if os.path.isdir(path) else [path]
    return files


# (set, name, package, files, reader)
TEXTS = [
    ("train", "debian-reference", "debian-reference-en",
     ["/usr/share/debian-reference/debian-reference.en.txt.gz"], read),
    ("train", "debian-faq", "debian-faq", ["/usr/share/doc/debian/FAQ/debian-faq.en.txt.gz"], read),
    ("train", "developers-reference", "developers-reference",
     sorted(glob.glob("/usr/share/developers-reference/_sources/*.rst.txt")), read),
    ("train", "debian-policy", "debian-policy",
     sorted(glob.glob("/usr/share/doc/debian-policy/policy.html/_sources/*.rst.txt")), read),
    ("train", "gnu-coding-standards", "gnu-standards", ["/usr/share/doc/gnu-standards/standards.text.gz"], read),
    ("train", "gnu-maintainers", "gnu-standards", ["/usr/share/doc/gnu-standards/maintain.text.gz"], read),
    ("train", "python-tutorial", "python3.11-doc", rst_files("tutorial"), read),
    ("train", "python-howto", "python3.11-doc", rst_files("howto"), read),
    ("train", "python-faq", "python3.11-doc", rst_files("faq"), read),
    ("train", "python-reference", "python3.11-doc", rst_files("reference"), read),
    ("train", "python-glossary", "python3.11-doc", rst_files("glossary.rst.txt"), read),
    ("train", "jane-austen-novels", "r-cran-janeaustenr", austen_novels(), read),
    ("eval", "debian-handbook", "debian-handbook",
     publican_pages("/usr/share/doc/debian-handbook/html/en-US"), html_text),
    ("eval", "debian-installation-guide", "installation-guide-amd64",
     ["/usr/share/doc/installation-guide-amd64/en/install.en.txt.gz"], read),
    # appended last, so the windows of the two texts above keep their numbers
    ("eval", "securing-debian-manual", "harden-doc",
     publican_pages("/usr/share/doc/harden-doc/html/en-US"), html_text),
]

sources = []
for i, (split, name, pkg, files, reader) in enumerate(TEXTS):
    if not files:
        sys.exit(f"prepare_kvzip_text: no files for {name} (package {pkg})")
    text = clean("\n\n".join(reader(f) for f in files))
    path = os.path.join(out, split, f"{i:02d}_{name}.txt")
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    sources.append({"set": split, "text": path, "name": name, "package": pkg, "version": version(pkg),
                    "license": LICENSES[pkg], "files": files, "bytes": len(text.encode("utf-8"))})
    print(f"prepare_kvzip_text: {path}: {len(text.encode('utf-8'))} bytes from {len(files)} file(s) of {pkg}")
with open(os.path.join(out, "sources.json"), "w") as f:
    json.dump(sources, f, indent=1)
PY

# 2. The shards, SmolLM2's tokenizer. Per-text token counts come from prepare's log.
"$KVTRAIN" prepare --input "$OUT_DIR"/text/train/*.txt --out "$OUT_DIR/train" --tokenizer "$TOKENIZER" \
  --val-fraction 0.05 --val-block 8192 --name train | tee "$OUT_DIR/text/prepare_train.log"
"$KVTRAIN" prepare --input "$OUT_DIR"/text/eval/*.txt --out "$OUT_DIR/eval" --tokenizer "$TOKENIZER" \
  --val-fraction 0 --name eval | tee "$OUT_DIR/text/prepare_eval.log"

# 3. SOURCES.md (written last: its presence marks the outputs complete).
/usr/bin/python3 - "$OUT_DIR" <<'PY'
import json, os, re, sys, zlib

out = sys.argv[1]
sources = json.load(open(os.path.join(out, "text", "sources.json")))
tokens = {}
for split in ("train", "eval"):
    for line in open(os.path.join(out, "text", f"prepare_{split}.log")):
        m = re.match(r"prepare: (.*\.txt): (\d+) tokens$", line.strip())
        if m:
            tokens[os.path.normpath(m.group(1))] = int(m.group(2))
stats = {s: json.load(open(os.path.join(out, s, "stats.json"))) for s in ("train", "eval")}


def shingles(path, n=13):
    words = open(path, encoding="utf-8").read().lower().split()
    return {zlib.crc32(" ".join(words[i:i + n]).encode()) for i in range(len(words) - n + 1)}


train_sh = set()
for s in sources:
    if s["set"] == "train":
        train_sh |= shingles(s["text"])
eval_sh = set()
for s in sources:
    if s["set"] == "eval":
        eval_sh |= shingles(s["text"])
overlap = len(eval_sh & train_sh) / max(1, len(eval_sh))

L = ["# Texts of the Fast KVzip study on SmolLM2-135M-Instruct", "",
     "Made by `tools/prepare_kvzip_text.sh` from Debian packages; tokenised by `kvtrain prepare` with",
     "SmolLM2's tokenizer (its GGUF). Each text is one document ([BOS] text [EOS]).", "",
     "| set | text | package (version) | license | bytes | tokens |", "|---|---|---|---|---:|---:|"]
for split in ("train", "eval"):
    nb = nt = 0
    for s in sources:
        if s["set"] != split:
            continue
        t = tokens.get(os.path.normpath(s["text"]), 0)
        nb, nt = nb + s["bytes"], nt + t
        L.append(f"| {split} | {os.path.basename(s['text'])} | {s['package']} ({s['version']}) | "
                 f"{s['license']} | {s['bytes']:,} | {t:,} |")
    L.append(f"| **{split} total** | | | | **{nb:,}** | **{nt:,}** |")
st, se = stats["train"], stats["eval"]
L += ["",
      f"- train shards (`{out}/train`): {st['train_tokens']:,} tokens for gate training "
      f"({', '.join(st['train_shards'])}), {st['val_tokens']:,} held out ({st['val_shard']}: every 20th "
      f"block of 8192 tokens of the same texts) for the gates' held-out evaluation (data.val);",
      f"- eval shard (`{out}/eval`): {se['train_tokens']:,} tokens ({', '.join(se['train_shards'])}; "
      f"prepare names it \"train\", it is the evaluation set): {se['train_tokens'] // 1088} windows of "
      f"1024 context + 64 continuation tokens;",
      f"- disjointness: {100 * overlap:.3f}% of the eval text's {len(eval_sh):,} distinct 13-word "
      f"shingles also occur in the training text (different packages and authors; what overlaps is "
      f"quoted commands and boilerplate).", ""]
for s in sources:
    L.append(f"## {s['set']}: {os.path.basename(s['text'])} — {len(s['files'])} source file(s) of {s['package']}")
    L.append("")
    L += [f"  `{f}`" for f in s["files"]]
    L.append("")
open(os.path.join(out, "SOURCES.md.tmp"), "w").write("\n".join(L))
os.replace(os.path.join(out, "SOURCES.md.tmp"), os.path.join(out, "SOURCES.md"))
print("\n".join(l for l in L if l.startswith("| **") or l.startswith("- ")))
PY
