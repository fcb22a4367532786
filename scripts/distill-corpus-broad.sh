#!/usr/bin/env bash
# Builds a training corpus for `anectx distill` chosen for breadth, not for
# any evaluation topic: seven kinds of text, each from pinned packages of a
# registry (Debian's archive, PyPI) or from this repository's own locked
# crates, each capped so that no kind dominates.
#
#   everyday-english   GCIDE (Webster's 1913 and later additions): headword → definition
#   prose-quotations   fortune files (fortunes, fortunes-min): quotations, anecdotes, jokes
#   technical-docs     the Python 3.11 documentation sources, the Debian Reference, man pages (sections 5 and 7)
#   news-releases      Python's "What's New" documents (release news, 2.0 to 3.11)
#   law-policy         licence texts (/usr/share/common-licenses), the Debian Constitution, Social
#                      Contract and Policy Manual
#   code-comments      `//` comments in the source of the crates in this repository's Cargo.lock
#   science-math       docstrings of scipy, sympy, networkx and statsmodels (pinned wheels from PyPI)
#
# Passages are packed from consecutive paragraphs of one document up to a
# length drawn between 30 and 160 words (the collections a user indexes have
# chunks of that size; single lines teach short texts only). Where a document
# gives a heading (an rst/HTML section title, a dictionary headword), the line
# is `HEADING<TAB>BODY`: `anectx distill --pair-weight` uses the heading as a
# pseudo-query of the body; other lines get a sentence or a span of their own.
# Nothing is read from the evaluation collections (../shared/data/eval), and
# no source was chosen by their topics.
#
# Usage: scripts/distill-corpus-broad.sh OUT_FILE [PASSAGES]
# Writes OUT_FILE (one passage per line, deduplicated, shuffled with a fixed
# seed) and OUT_FILE.manifest.json (sources with versions, passages available
# and taken per kind, mean words, sha256 of the result).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:?usage: $0 OUT_FILE [PASSAGES]}"
TOTAL="${2:-16000}"
WORK="${DISTILL_WORK:-$(mktemp -d)}"
mkdir -p "$WORK/debs" "$WORK/wheels" "$(dirname "$OUT")"
DEBS="dict-gcide=0.48.5+nmu2 fortunes=1:1.99.1-7.3 fortunes-min=1:1.99.1-7.3 python3.11-doc=3.11.2-6+deb12u9 debian-reference-en=2.100 doc-debian=11.3+nmu1 debian-policy=4.6.2.0 manpages=6.03-2"
if ! ls "$WORK"/debs/dict-gcide_*.deb >/dev/null 2>&1; then
    (cd "$WORK/debs" && apt-get download $DEBS >/dev/null 2>&1) || {
        echo "apt-get download failed (needs Debian's package index: apt-get update)" >&2
        exit 1
    }
fi
if [ ! -d "$WORK/x" ]; then
    for deb in "$WORK"/debs/*.deb; do dpkg-deb -x "$deb" "$WORK/x"; done
fi
PIP="${PIP:-.fixtures/venv/bin/pip}"
[ -x "$PIP" ] || PIP="python3 -m pip"
if ! ls "$WORK"/wheels/scipy-*.whl >/dev/null 2>&1; then
    $PIP download -q --no-deps --only-binary=:all: --python-version 3.11 -d "$WORK/wheels" \
        scipy==1.14.1 sympy==1.13.3 networkx==3.4.2 statsmodels==0.14.4
fi
cargo fetch --locked -q
python3 - "$OUT" "$TOTAL" "$WORK" <<'PY'
import ast, glob, gzip, hashlib, html, json, os, random, re, sys, tarfile, zipfile
out, total, work = sys.argv[1], int(sys.argv[2]), sys.argv[3]
x = os.path.join(work, "x")
rng = random.Random(20261207)
FORBIDDEN = os.path.realpath("../shared/data/eval")

# Share of the passages for each kind (fixed before looking at any result).
SHARES = {
    "everyday-english": 0.16,
    "prose-quotations": 0.10,
    "technical-docs": 0.20,
    "news-releases": 0.08,
    "law-policy": 0.10,
    "code-comments": 0.14,
    "science-math": 0.22,
}
kinds = {k: [] for k in SHARES}
sources = {k: [] for k in SHARES}

def words_ok(p):
    alpha = sum(c.isalpha() or c == " " for c in p) / max(1, len(p))
    return alpha >= 0.8

def pack(paragraphs, kind, heading=None):
    """Packs consecutive paragraphs of one document into passages of a
    drawn length (30..160 words)."""
    cur, target = [], rng.randint(30, 160)
    def flush():
        nonlocal cur, target
        text = " ".join(" ".join(cur).split())
        n = len(text.split())
        if n >= 12 and words_ok(text):
            if n > 180:
                text = " ".join(text.split()[:180])
            kinds[kind].append((heading + "\t" + text) if heading else text)
        cur, target = [], rng.randint(30, 160)
    for p in paragraphs:
        p = " ".join(p.split())
        if not p or "\t" in p:
            continue
        cur.append(p)
        if len(" ".join(cur).split()) >= target:
            flush()
    if cur:
        flush()

def paragraphs(text):
    return [p for p in re.split(r"\n\s*\n", text) if p.strip()]

# everyday-english: GCIDE entries, "Headword<TAB>definition".
t = gzip.open(os.path.join(x, "usr/share/dictd/gcide.dict.dz"), "rt", errors="replace").read()
for entry in re.split(r"\n\n(?=[A-Z][^\n]*\\)", t):
    m = re.match(r"([A-Za-z][A-Za-z' -]{1,40}?) \\", entry)
    if not m:
        continue
    head = m.group(1).strip()
    body = entry.split("\n", 1)[1] if "\n" in entry else ""
    body = re.sub(r"\[[^\]]*\]", " ", body)
    body = re.sub(r"--\s*[A-Z][\w. ]{0,30}\.", " ", body)
    body = re.sub(r"[{}\\`\"*]", "", body)
    pack(paragraphs(body), "everyday-english", head)
sources["everyday-english"].append("debian:dict-gcide 0.48.5+nmu2")

# prose-quotations: fortune files (each fortune a passage, packed when short).
for f in sorted(glob.glob(os.path.join(x, "usr/share/games/fortunes/*"))):
    if f.endswith((".dat", ".u8")) or os.path.islink(f) or "ascii-art" in f:
        continue
    items = open(f, encoding="utf-8", errors="replace").read().split("\n%\n")
    pack(items, "prose-quotations")
sources["prose-quotations"].append("debian:fortunes 1:1.99.1-7.3, fortunes-min 1:1.99.1-7.3")

def rst_sections(text):
    """(heading, paragraphs) of an rst document; directives and code blocks
    dropped, inline markup unwrapped."""
    lines = text.split("\n")
    out, head, buf, skip_indent = [], None, [], None
    i = 0
    while i < len(lines):
        l = lines[i]
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if skip_indent is not None:
            if l.strip() and (len(l) - len(l.lstrip())) <= skip_indent:
                skip_indent = None
            else:
                i += 1
                continue
        if nxt and re.fullmatch(r"([=\-~^\"*+#])\1{2,}", nxt.strip()) and l.strip() and len(nxt.strip()) >= len(l.strip()) - 2:
            out.append((head, "\n".join(buf)))
            head, buf = re.sub(r"[`:*]", "", l.strip()), []
            i += 2
            continue
        if re.match(r"\s*\.\. ", l) or l.rstrip().endswith("::"):
            if l.rstrip().endswith("::") and not re.match(r"\s*\.\. ", l):
                buf.append(l.rstrip()[:-1])
            skip_indent = len(l) - len(l.lstrip())
            buf.append("")
            i += 1
            continue
        if re.fullmatch(r"\s*[=\-~^\"*+#]{3,}\s*", l) or l.lstrip().startswith(">>>"):
            i += 1
            continue
        buf.append(l)
        i += 1
    out.append((head, "\n".join(buf)))
    res = []
    for h, b in out:
        b = re.sub(r":[a-z:]+:`~?!?([^`<]*?)(?:\s*<[^>]*>)?`", r"\1", b)
        b = re.sub(r"`([^`<]*?)(?:\s*<[^>]*>)?`_*", r"\1", b)
        b = re.sub(r"\*\*?|\|", "", b)
        res.append((h, paragraphs(b)))
    return res

def html_sections(text):
    text = re.sub(r"(?s)<(script|style|pre)[^>]*>.*?</\1>", " ", text)
    parts = re.split(r"(?s)<h[1-4][^>]*>(.*?)</h[1-4]>", text)
    res = [(None, parts[0])] + [(parts[i], parts[i + 1]) for i in range(1, len(parts) - 1, 2)]
    out = []
    for h, body in res:
        h = " ".join(html.unescape(re.sub(r"<[^>]+>", " ", h)).split()) if h else None
        if h:
            h = re.sub(r"^[\d.]+\s*", "", h).rstrip("¶ ").strip() or None
        paras = [" ".join(html.unescape(re.sub(r"<[^>]+>", " ", p)).split())
                 for p in re.findall(r"(?s)<p[^>]*>(.*?)</p>", body)]
        out.append((h, paras))
    return out

def roff_text(text):
    keep = []
    for l in text.split("\n"):
        if l.startswith((".\\\"", "'\\\"")):
            continue
        if l.startswith("."):
            m = re.match(r"\.(SH|SS)\s+(.*)", l)
            if m:
                keep.append("\n" + m.group(2).strip('"') + "\n")
            elif re.match(r"\.(PP|P|LP|TP|IP|HP|sp|br)\b", l):
                keep.append("")
            elif re.match(r"\.(B|I|BR|IR|RB|RI|BI|IB)\s", l):
                keep.append(re.sub(r"\"", "", l.split(None, 1)[1]))
            continue
        keep.append(l)
    t = "\n".join(keep)
    t = re.sub(r"\\f[BIRP]|\\f\(..|\\\(..|\\[-e&]|\\\*.", "", t)
    return t.replace("\\", "")

# technical-docs and news-releases: the Python documentation (What's New
# documents are release news), the Debian Reference, man pages 5 and 7.
pydoc = os.path.join(x, "usr/share/doc/python3.11/html/_sources")
for f in sorted(glob.glob(pydoc + "/**/*.rst.txt", recursive=True)):
    kind = "news-releases" if "/whatsnew/" in f else "technical-docs"
    for h, ps in rst_sections(open(f, encoding="utf-8", errors="replace").read()):
        pack(ps, kind, h)
sources["technical-docs"].append("debian:python3.11-doc 3.11.2-6+deb12u9 (Python 3.11 documentation sources, except whatsnew/)")
sources["news-releases"].append("debian:python3.11-doc 3.11.2-6+deb12u9 (whatsnew/: What's New in Python 2.0 .. 3.11)")
for f in sorted(glob.glob(os.path.join(x, "usr/share/debian-reference/*.en.html"))):
    for h, ps in html_sections(open(f, encoding="utf-8", errors="replace").read()):
        pack(ps, "technical-docs", h)
sources["technical-docs"].append("debian:debian-reference-en 2.100")
for f in sorted(glob.glob(os.path.join(x, "usr/share/man/man[57]/*.gz"))):
    t = roff_text(gzip.open(f, "rt", errors="replace").read())
    pack(paragraphs(t), "technical-docs")
sources["technical-docs"].append("debian:manpages 6.03-2 (sections 5 and 7)")

# law-policy: licences, the Debian Constitution and Social Contract (newest
# versions only), the Debian Policy Manual.
for f in sorted(glob.glob("/usr/share/common-licenses/*")):
    if os.path.isfile(f) and not os.path.islink(f):
        pack(paragraphs(open(f, encoding="utf-8", errors="replace").read()), "law-policy")
sources["law-policy"].append("/usr/share/common-licenses (base-files)")
for name in ("constitution.txt.gz", "social-contract.txt.gz"):
    t = gzip.open(os.path.join(x, "usr/share/doc/debian", name), "rt", errors="replace").read()
    pack(paragraphs(t), "law-policy")
sources["law-policy"].append("debian:doc-debian 11.3+nmu1 (constitution, social contract)")
for f in sorted(glob.glob(os.path.join(x, "usr/share/doc/debian-policy/policy.html/*.html"))):
    for h, ps in html_sections(open(f, encoding="utf-8", errors="replace").read()):
        pack(ps, "law-policy", h)
sources["law-policy"].append("debian:debian-policy 4.6.2.0")

# code-comments: `//` comment blocks (not doc comments) in the locked crates.
lock = open("Cargo.lock", encoding="utf-8").read()
pkgs = re.findall(r'\[\[package\]\]\nname = "([^"]+)"\nversion = "([^"]+)"\nsource = "registry', lock)
# Read from the downloaded .crate archives (`cargo fetch --locked` above
# fetches every locked crate, whatever the platform), not from the unpacked
# sources, which hold only the crates some build has needed here.
reg = sorted(glob.glob(os.path.join(os.environ.get("CARGO_HOME", os.path.expanduser("~/.cargo")), "registry/cache/*")))
ncrates = 0
for name, ver in sorted(pkgs):
    d = next((os.path.join(r, f"{name}-{ver}.crate") for r in reg if os.path.isfile(os.path.join(r, f"{name}-{ver}.crate"))), None)
    if not d:
        continue
    ncrates += 1
    with tarfile.open(d, "r:gz") as t:
        members = sorted((m for m in t.getmembers() if m.isfile() and m.name.endswith(".rs") and m.name.split("/")[1:2] == ["src"]), key=lambda m: m.name)
        files = [t.extractfile(m).read().decode("utf-8", errors="replace") for m in members]
    for src in files:
        blocks, cur = [], []
        for l in src.split("\n"):
            s = l.strip()
            if s.startswith("//") and not s.startswith(("///", "//!")):
                cur.append(s[2:].strip())
            else:
                if cur:
                    blocks.append(" ".join(cur))
                cur = []
        pack([b for b in blocks if len(b.split()) >= 6], "code-comments")
sources["code-comments"].append(f"crates.io: {ncrates} crates of this repository's Cargo.lock")

# science-math: docstrings of pinned scientific wheels (prose paragraphs, not
# parameter tables or examples), headed by the function or class name.
for whl in sorted(glob.glob(os.path.join(work, "wheels/*.whl"))):
    z = zipfile.ZipFile(whl)
    for n in sorted(z.namelist()):
        if not n.endswith(".py") or "/tests/" in n:
            continue
        try:
            tree = ast.parse(z.read(n).decode("utf-8", "replace"))
        except (SyntaxError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.Module)):
                doc = ast.get_docstring(node)
                if not doc:
                    continue
                doc = re.split(r"\n\s*(Parameters|Returns|Examples|See Also|References|Notes|Attributes|Yields|Raises)\s*\n\s*-{3,}", doc)[0]
                doc = re.sub(r"(?m)^\s*>>>.*$", "", doc)
                doc = re.sub(r":[a-z:]+:`~?([^`]*)`|``?([^`]*)``?", lambda m: m.group(1) or m.group(2) or "", doc)
                head = getattr(node, "name", None)
                if head and head.startswith("_"):
                    continue
                pack(paragraphs(doc), "science-math", head.replace("_", " ") if head else None)
    sources["science-math"].append("pypi:" + "==".join(os.path.basename(whl).split("-")[:2]))

taken = {}
allp = []
for k, share in SHARES.items():
    xs = sorted(set(kinds[k]))
    rng.shuffle(xs)
    want = int(round(total * share))
    taken[k] = xs[:want]
    allp.extend(taken[k])
rng.shuffle(allp)
with open(out, "w", encoding="utf-8") as fh:
    for p in allp:
        fh.write(p + "\n")
sha = hashlib.sha256(open(out, "rb").read()).hexdigest()
def words(p):
    return len(p.split("\t")[-1].split())
manifest = {
    "purpose": "breadth: seven kinds of text, none chosen by an evaluation collection's topics",
    "evaluation_collections_read": False,
    "passages": len(allp),
    "sha256": sha,
    "kinds": {
        k: {
            "share": SHARES[k],
            "sources": sources[k],
            "available": len(set(kinds[k])),
            "taken": len(taken[k]),
            "with_heading": sum("\t" in p for p in taken[k]),
            "mean_words": round(sum(map(words, taken[k])) / max(1, len(taken[k])), 1),
        }
        for k in SHARES
    },
}
json.dump(manifest, open(out + ".manifest.json", "w"), indent=2)
print(f"{out}: {len(allp)} passages; " + ", ".join(f"{k} {len(v)}/{len(set(kinds[k]))}" for k, v in taken.items()))
PY
