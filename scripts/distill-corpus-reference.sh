#!/usr/bin/env bash
# Builds reference prose for `anectx distill` from Debian packages (fetched
# with `apt-get download`, unpacked into a scratch folder, never installed):
#   - wordnet-base: WordNet 3.0 synsets — words, gloss and usage examples,
#     with the hypernym's gloss (general and scientific English definitions)
#   - r-bioc-go.db: Gene Ontology terms with their textual definitions,
#     alone and with the parent term's definition (biology and medicine)
#   - dict-foldoc (only when N_FOLDOC > 0): the Free On-line Dictionary of
#     Computing, definitions of computing and information-science terms
# and mixes them with a share of the documentation corpus written by
# scripts/distill-corpus.sh, so the student keeps its programming prose.
# EXCLUDE=FILE leaves out every passage already in FILE (a later stage's
# corpus holds only new text).
# Nothing is read from the evaluation collections (../shared/data/eval).
#
# Usage: [EXCLUDE=FILE] scripts/distill-corpus-reference.sh OUT_FILE [DOC_CORPUS] [N_DOC] [N_WORDNET] [N_GO] [N_FOLDOC]
# Writes OUT_FILE (one passage per line, deduplicated, shuffled with a fixed
# seed) and OUT_FILE.sources (package versions, counts, sha256).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:?usage: $0 OUT_FILE [DOC_CORPUS] [N_DOC] [N_WORDNET] [N_GO]}"
DOC="${2:-/tmp/anectx-distill/corpus.txt}"
N_DOC="${3:-12000}"
N_WN="${4:-30000}"
N_GO="${5:-20000}"
N_FOLDOC="${6:-0}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$(dirname "$OUT")"
PKGS="wordnet-base r-bioc-go.db"
if [ "$N_FOLDOC" -gt 0 ]; then PKGS="$PKGS dict-foldoc"; fi
(cd "$WORK" && apt-get download $PKGS >/dev/null 2>&1) || {
    echo "apt-get download $PKGS failed (needs Debian's package index)" >&2
    exit 1
}
for deb in "$WORK"/*.deb; do dpkg-deb -x "$deb" "$WORK/x"; done
python3 - "$OUT" "$DOC" "$N_DOC" "$N_WN" "$N_GO" "$WORK" "$N_FOLDOC" "${EXCLUDE:-}" <<'PY'
import glob, gzip, hashlib, os, random, re, sqlite3, sys
out, doc, n_doc, n_wn, n_go, work = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
n_foldoc, exclude_file = int(sys.argv[7]), sys.argv[8]
exclude = set()
if exclude_file:
    with open(exclude_file, encoding="utf-8") as fh:
        exclude = {l.strip() for l in fh}
rng = random.Random(20261128)

# WordNet: "lemma, lemma: gloss; examples" (+ "; a kind of <hypernym>: gloss").
wn = {}
for pos in ("noun", "verb", "adj", "adv"):
    path = os.path.join(work, "x/usr/share/wordnet", "data." + pos)
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if line.startswith("  "):
                continue
            head, _, gloss = line.partition(" | ")
            f = head.split()
            off, n_words = f[0], int(f[3], 16)
            words = [f[4 + 2 * i].replace("_", " ") for i in range(n_words)]
            words = [re.sub(r"\(.*\)$", "", w) for w in words]
            rest = f[4 + 2 * n_words:]
            n_ptr = int(rest[0])
            hyper = [rest[1 + 4 * i + 1] for i in range(n_ptr) if rest[1 + 4 * i] == "@"]
            wn[(pos[0], off)] = (words, gloss.strip(), hyper)
wn_passages = []
for (p, off), (words, gloss, hyper) in wn.items():
    text = ", ".join(words[:4]) + ": " + gloss
    if hyper and (p, hyper[0]) in wn and rng.random() < 0.5:
        hw, hg, _ = wn[(p, hyper[0])]
        text += "; a kind of " + hw[0] + ": " + hg.split(";")[0]
    if len(text.split()) >= 5:
        wn_passages.append(" ".join(text.split()))

# Gene Ontology: "term: definition" (+ the parent's).
db = sqlite3.connect(os.path.join(work, "x/usr/lib/R/site-library/GO.db/extdata/GO.sqlite"))
terms = {i: (t, d or "") for i, t, d in db.execute("select _id, term, definition from go_term")}
parent = {}
for tab in ("go_bp_parents", "go_mf_parents", "go_cc_parents"):
    for c, p, rel in db.execute(f"select _id, _parent_id, relationship_type from {tab}"):
        if rel == "is_a":
            parent.setdefault(c, p)
go_passages = []
for i, (t, d) in terms.items():
    if len(d.split()) < 4:
        continue
    text = t + ": " + d
    if i in parent and parent[i] in terms and rng.random() < 0.5:
        pt, pd = terms[parent[i]]
        text += " It is a kind of " + pt + ": " + pd
    go_passages.append(" ".join(text.split()))

docs = []
if n_doc > 0 and os.path.exists(doc):
    with open(doc, encoding="utf-8") as fh:
        docs = [l.strip() for l in fh if l.strip()]

# FOLDOC: "headword: definition" from the dictd file (entries start at
# column 0; {links} and <topics> are unwrapped; dates and notes dropped).
foldoc_passages = []
if n_foldoc > 0:
    t = gzip.open(os.path.join(work, "x/usr/share/dictd/foldoc.dict.dz"), "rt", errors="replace").read()
    for entry in re.split(r"\n(?=\S)", t):
        lines = entry.split("\n")
        head = lines[0].strip()
        body = " ".join(l.strip() for l in lines[1:] if l.strip())
        body = re.sub(r"\(\d{4}-\d{2}-\d{2}\)", " ", body)
        body = re.sub(r"\[[^\]]*\]", " ", body)
        body = re.sub(r"[{}]", "", body)
        body = re.sub(r"<[^>]+>", " ", body)
        body = re.sub(r"\(https?://[^)]*\)", " ", body)
        words = body.split()
        if head.startswith("00-") or len(words) < 6:
            continue
        for i in range(0, len(words), 60):
            chunk = words[i:i + 60]
            if len(chunk) >= 6:
                foldoc_passages.append(head + ": " + " ".join(chunk))

def take(xs, n):
    xs = sorted(set(xs) - exclude)
    rng.shuffle(xs)
    return xs[:n]

parts = {"documentation": take(docs, n_doc), "wordnet": take(wn_passages, n_wn), "gene-ontology": take(go_passages, n_go)}
if n_foldoc > 0:
    parts["foldoc"] = take(foldoc_passages, n_foldoc)
allp = [p for v in parts.values() for p in v]
rng.shuffle(allp)
with open(out, "w", encoding="utf-8") as fh:
    for p in allp:
        fh.write(p + "\n")
sha = hashlib.sha256(open(out, "rb").read()).hexdigest()
with open(out + ".sources", "w") as fh:
    for deb in sorted(glob.glob(os.path.join(work, "*.deb"))):
        fh.write(f"debian-package\t{os.path.basename(deb)}\n")
    fh.write(f"documentation-corpus\t{doc}\n")
    if exclude_file:
        fh.write(f"excluded-passages-of\t{exclude_file}\t{len(exclude)}\n")
    for k, v in parts.items():
        fh.write(f"{k}\t{len(v)} passages\n")
    fh.write(f"written\t{len(allp)}\nsha256\t{sha}\n")
print(f"{out}: {len(allp)} passages ({', '.join(f'{k} {len(v)}' for k, v in parts.items())})")
PY
