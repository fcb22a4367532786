#!/usr/bin/env bash
# Builds the training text for `anectx distill` offline, from documentation
# that is already on this machine:
#   - Markdown files and Rust doc comments under ~/.cargo/registry/src
#   - Python docstrings under .fixtures/venv/lib (the test fixtures' venv)
#   - plain-text documentation under /usr/share/doc (no copyright files)
#   - two public-domain novels that ship as test data (Around the World in 80
#     Days in the esaxx-rs crate, the Sherlock Holmes stories in the rustc
#     sources), for general English prose
# Nothing is read from the evaluation collections (../shared/data/eval), so the
# evaluation stays honest.
#
# Usage: scripts/distill-corpus.sh [OUT_FILE] [MAX_PASSAGES]
# Writes OUT_FILE (one passage per line, deduplicated, shuffled with a fixed
# seed) and OUT_FILE.sources (the roots, file counts and the blake3/sha256 of
# the result).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-/tmp/anectx-distill/corpus.txt}"
MAX="${2:-60000}"
mkdir -p "$(dirname "$OUT")"
python3 - "$OUT" "$MAX" <<'PY'
import ast, hashlib, os, random, re, sys
out, cap = sys.argv[1], int(sys.argv[2])
home = os.path.expanduser("~")
roots = {
    "cargo-markdown": os.path.join(home, ".cargo/registry/src"),
    "cargo-rustdoc": os.path.join(home, ".cargo/registry/src"),
    "python-docstrings": ".fixtures/venv/lib",
    "usr-share-doc": "/usr/share/doc",
    "literature": "",
}
import glob
novels = sorted(glob.glob(os.path.join(home, ".cargo/registry/src/*/esaxx-rs-*/data/eighty.txt"))[:1]
    + glob.glob("/usr/src/rustc-*/src/tools/rustc-perf/collector/compile-benchmarks/regex/regex-capi/examples/sherlock.txt")[:1])
roots["literature"] = " ".join(novels)
FORBIDDEN = os.path.realpath("../shared/data/eval")
counts = {k: 0 for k in roots}
paras = []

def clean_md(text):
    text = re.sub(r"```.*?```", "\n\n", text, flags=re.S)
    text = re.sub(r"<[^>]+>", " ", text)
    text = re.sub(r"!\[[^\]]*\]\([^)]*\)", " ", text)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"\[([^\]]*)\]\[[^\]]*\]", r"\1", text)
    text = re.sub(r"`([^`]*)`", r"\1", text)
    text = re.sub(r"[*_#>|]+", " ", text)
    return text

def add_text(text):
    for p in re.split(r"\n\s*\n", text):
        p = " ".join(p.split())
        words = p.split()
        if len(words) < 6:
            continue
        alpha = sum(c.isalpha() or c == " " for c in p) / max(1, len(p))
        if alpha < 0.8 or "http" in p and len(words) < 12:
            continue
        paras.append(p)

def walk(root, exts):
    for d, dirs, files in os.walk(root):
        if os.path.realpath(d).startswith(FORBIDDEN):
            dirs[:] = []
            continue
        dirs.sort()
        for f in sorted(files):
            if f.lower().endswith(exts):
                yield os.path.join(d, f)

def read(path, limit=400_000):
    try:
        with open(path, "r", encoding="utf-8") as fh:
            return fh.read(limit)
    except (UnicodeDecodeError, OSError):
        return None

for p in walk(roots["cargo-markdown"], (".md",)):
    t = read(p)
    if t:
        counts["cargo-markdown"] += 1
        add_text(clean_md(t))
for p in walk(roots["cargo-rustdoc"], (".rs",)):
    t = read(p)
    if not t:
        continue
    counts["cargo-rustdoc"] += 1
    doc = []
    for line in t.splitlines():
        s = line.strip()
        if s.startswith("///") or s.startswith("//!"):
            doc.append(s[3:])
        elif doc:
            add_text(clean_md("\n".join(doc)))
            doc = []
for p in walk(roots["python-docstrings"], (".py",)):
    t = read(p)
    if not t:
        continue
    try:
        tree = ast.parse(t)
    except (SyntaxError, ValueError):
        continue
    counts["python-docstrings"] += 1
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            ds = ast.get_docstring(node)
            if ds:
                # keep the prose, drop reST/numpydoc parameter sections
                ds = re.split(r"\n\s*(Parameters|Returns|Examples?|Raises|Notes|See Also|Yields|Attributes)\s*\n\s*-{3,}", ds)[0]
                ds = re.sub(r">>>.*", "", ds)
                add_text(clean_md(ds))
for p in walk(roots["usr-share-doc"], (".txt", "readme", ".md", "news", "faq")):
    if "copyright" in p.lower():
        continue
    t = read(p)
    if t:
        counts["usr-share-doc"] += 1
        add_text(clean_md(t))

n_doc_paras = len(paras)
for p in novels:
    t = read(p, 2_000_000)
    if t:
        counts["literature"] += 1
        t = t.split("*** START OF", 1)[-1].split("*** END OF", 1)[0]
        add_text(t)

# Split long paragraphs into passages of <= 60 words; also keep single
# sentences (query-like short texts).
passages, prose = [], []
for n_para, p in enumerate(paras):
    if n_para == n_doc_paras:
        prose_start = len(passages)
    words = p.split()
    for i in range(0, len(words), 60):
        chunk = words[i:i + 60]
        if len(chunk) >= 6:
            passages.append(" ".join(chunk))
    for s in re.split(r"(?<=[.!?])\s+", p):
        if 5 <= len(s.split()) <= 30 and s != p:
            passages.append(s)
prose_start = locals().get("prose_start", len(passages))
# The novels' passages are always kept; documentation fills up to the cap.
seen, uniq, novel = set(), [], []
for i, p in enumerate(passages):
    k = re.sub(r"\W+", " ", p.lower()).strip()
    if k not in seen:
        seen.add(k)
        (novel if i >= prose_start else uniq).append(p)
random.Random(20261128).shuffle(uniq)
uniq = novel + uniq[:max(0, cap - len(novel))]
random.Random(20261129).shuffle(uniq)
data = ("\n".join(uniq) + "\n").encode()
with open(out, "wb") as fh:
    fh.write(data)
with open(out + ".sources", "w") as fh:
    for k, v in roots.items():
        fh.write(f"{k}\t{v}\t{counts[k]} files\n")
    fh.write(f"paragraphs\t{len(paras)}\npassages_unique\t{len(seen)}\nwritten\t{len(uniq)}\n")
    fh.write(f"sha256\t{hashlib.sha256(data).hexdigest()}\n")
print(f"{out}: {len(uniq)} passages ({len(data)} bytes) from {counts}")
PY
