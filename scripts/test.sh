#!/usr/bin/env bash
# The README's test command: installs the test fixtures (package registries
# only) and runs every test of the workspace. Works on a fresh machine with
# just the Rust toolchain and python3/pip.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/anectx-target}

./scripts/fixtures.sh
cargo test --workspace --all-targets --locked "$@"
