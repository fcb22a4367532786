#!/usr/bin/env bash
# The first run on a Mac (issue 22): one command, one report file to attach
# to an issue. Nothing in anectx has run on a Mac before this script.
#
#   scripts/mac-check.sh [REPORT_DIR]      # default: ./mac-check-<date>
#
# Steps (each is run even when an earlier one failed; each step's exit
# status, time and output tail go into REPORT_DIR/mac-check-report.md):
#   1. the machine: macOS version and build, chip, memory, toolchain, commit;
#   2. release build of `anectx` and the `macos_smoke` example;
#   3. the Core ML crates' tests (compile cache, temporary paths, the
#      runtime's Apple code, `--backend auto`'s decision);
#   4. `macos_smoke`: MiniLM and a ConvEmbedder exported with `--ids`, loaded
#      on all four compute-unit settings, compared with candle, placement;
#   5. `anectx embed --json` with the default backend (auto): which runtime
#      it picked, the probe's cosines, the Neural Engine share;
#   6. `anectx bench --quick --backend coreml` at 1, 2, 4 and 6 instances;
#   7. a soak (SOAK_SECS, default 600): `anectx serve --backend coreml`
#      embedding without pause while its resident memory is sampled;
#   8. `anectx quickstart` with the auto backend.
#
# Environment: SOAK_SECS (default 600), SOAK_SAMPLE_SECS (default 15).
set -uo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
if [[ "$(uname -s)" != "Darwin" ]]; then
  echo "scripts/mac-check.sh needs macOS (Core ML): it is the check for the first run on a Mac." >&2
  echo "On $(uname -s), run ./scripts/test.sh; CI type-checks the Apple code with ./scripts/check-macos-all." >&2
  exit 2
fi

out=${1:-"$PWD/mac-check-$(date +%Y%m%d-%H%M%S)"}
mkdir -p "$out"
out=$(cd "$out" && pwd)
report="$out/mac-check-report.md"
soak_secs=${SOAK_SECS:-600}
sample_secs=${SOAK_SAMPLE_SECS:-15}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/anectx-target}
anectx="$CARGO_TARGET_DIR/release/anectx"
cd "$root"

summary=()
{
  echo "# anectx mac-check report"
  echo
  echo "Started $(date -u +%Y-%m-%dT%H:%M:%SZ). Attach this file to an issue."
  echo
} > "$report"

# step NAME COMMAND…: runs the command, logs to a file, appends its status
# and the log's tail to the report.
step() {
  local name=$1
  shift
  local slug log start rc secs
  slug=$(echo "$name" | tr -cs 'A-Za-z0-9' '-' | sed 's/-$//')
  log="$out/$slug.log"
  echo "== $name" >&2
  start=$(date +%s)
  "$@" > "$log" 2>&1
  rc=$?
  secs=$(( $(date +%s) - start ))
  summary+=("| $name | $([[ $rc == 0 ]] && echo ok || echo "FAILED ($rc)") | ${secs} s |")
  {
    echo "## $name"
    echo
    echo "\`$*\` → exit $rc in ${secs} s"
    echo
    echo '```'
    tail -n 150 "$log"
    echo '```'
    echo
  } >> "$report"
  return 0
}

machine() {
  sw_vers
  echo "build: $(sw_vers -buildVersion)"
  uname -a
  sysctl -n machdep.cpu.brand_string
  echo "memory: $(( $(sysctl -n hw.memsize) / 1073741824 )) GiB"
  echo "cores: $(sysctl -n hw.perflevel0.physicalcpu 2>/dev/null || echo ?) performance, $(sysctl -n hw.perflevel1.physicalcpu 2>/dev/null || echo ?) efficiency"
  rustc -V
  cargo -V
  echo "commit: $(git -C "$root" rev-parse HEAD 2>/dev/null || echo unknown)"
  git -C "$root" status --short 2>/dev/null | head -20
}

build() {
  ./scripts/fixtures.sh || echo "(fixtures failed: the smoke test falls back to a random ConvEmbedder)"
  cargo build --release -p anectx --bin anectx --example macos_smoke
}

# The soak: serve on a free port, embed without pause, sample RSS.
soak() {
  local log="$out/soak-serve.log" pid addr=""
  "$anectx" serve --backend coreml --port 0 > "$out/soak-stdout.log" 2> "$log" &
  pid=$!
  for _ in $(seq 1 240); do
    addr=$(sed -n 's|^anectx listening on http://||p' "$out/soak-stdout.log" | head -1)
    [[ -n "$addr" ]] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  if [[ -z "$addr" ]]; then
    echo "serve did not start:"
    cat "$log"
    kill "$pid" 2>/dev/null
    return 1
  fi
  echo "serve pid $pid on $addr; soak for ${soak_secs} s, RSS every ${sample_secs} s"
  curl -s "http://$addr/info"
  echo
  local body='{"model":"x","input":["The quick brown fox jumps over the lazy dog.","A second, somewhat longer sentence about tides, moons and gravity, to fill a bucket."]}'
  local end=$(( $(date +%s) + soak_secs )) next=0 ok=0 bad=0 first="" last="" max=0 rss now
  echo "seconds rss_kb requests_ok requests_failed"
  local t0
  t0=$(date +%s)
  while (( $(date +%s) < end )); do
    if curl -s -o /dev/null -w '%{http_code}' -H 'content-type: application/json' \
        -d "$body" "http://$addr/v1/embeddings" | grep -q '^200$'; then
      ok=$((ok + 1))
    else
      bad=$((bad + 1))
    fi
    now=$(date +%s)
    if (( now >= next )); then
      rss=$(ps -o rss= -p "$pid" | tr -d ' ')
      [[ -z "$rss" ]] && { echo "serve exited"; break; }
      [[ -z "$first" && $((now - t0)) -ge 30 ]] && first=$rss
      last=$rss
      (( rss > max )) && max=$rss
      echo "$((now - t0)) $rss $ok $bad"
      next=$((now + sample_secs))
    fi
  done
  kill "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  echo "requests: $ok ok, $bad failed"
  echo "rss after warm-up: ${first:-?} kB; at the end: ${last:-?} kB; peak: $max kB"
  if [[ -n "$first" && -n "$last" ]]; then
    echo "growth after warm-up: $(( last - first )) kB over the soak"
  fi
  tail -n 20 "$log"
  (( bad == 0 ))
}

step "machine" machine
step "release build" build
step "Core ML crates' tests" cargo test --release -p anectx-coreml-runtime -p anectx-coreml
step "macos_smoke" "$CARGO_TARGET_DIR/release/examples/macos_smoke"
step "embed with the default backend (auto)" "$anectx" embed --json "hello from a Mac"
step "bench --quick, Core ML at 1/2/4/6 instances" "$anectx" bench --quick --backend coreml \
  --concurrency 1,2,4,6 --out "$out/bench"
step "soak (${soak_secs} s, resident memory)" soak
step "quickstart (auto backend)" "$anectx" quickstart --dir "$out/quickstart" --force --backend auto

{
  echo "## Summary"
  echo
  echo "| step | result | time |"
  echo "| --- | --- | --- |"
  printf '%s\n' "${summary[@]}"
  echo
  echo "Bench reports: $out/bench/report.json and report.html (attach them too if you can)."
} >> "$report"
echo "report: $report" >&2
