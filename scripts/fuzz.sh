#!/usr/bin/env bash
# Runs every fuzz target (issue 18 item 8) for SECS seconds each, one after
# the other, with a fixed seed (printed; override with ANECTX_FUZZ_SEED):
#   scripts/fuzz.sh [SECS]          # default 600 (10 minutes per target)
#   ANECTX_FUZZ_SEED=0x1234 scripts/fuzz.sh 60
# Targets: the .mlpackage reader (crates/cli/tests/fuzz_mlpackage.rs), the
# HTTP JSON bodies (crates/server/tests/api/fuzz.rs) and the document
# extractors (crates/engine/tests/fuzz_extract.rs); seeds in fuzz/corpus/.
# Without SECS set, the same tests run a fixed 300 cases as part of
# `cargo test`. A failure names the seed and case and saves the input under
# $TMPDIR/anectx-fuzz/.
set -euo pipefail
cd "$(dirname "$0")/.."
export ANECTX_FUZZ_SECS="${1:-600}"
export ANECTX_FUZZ_SEED="${ANECTX_FUZZ_SEED:-0x5eed}"
echo "fuzz: ${ANECTX_FUZZ_SECS} s per target, seed ${ANECTX_FUZZ_SEED}"
# Built once with the workspace's feature set (as CI builds it).
cargo test --workspace --all-targets --locked --no-run
run() { # package, test target, test name
  cargo test --locked --workspace --test "$2" -- --exact "$3" --nocapture 2>&1 \
    | grep -E '^fuzz |panicked|test result'
}
run anectx-cli fuzz_mlpackage the_mlpackage_reader_survives_mutated_packages
run anectx-server api fuzz::json_bodies_survive_mutation
run anectx-engine fuzz_extract extractors_survive_mutated_documents
