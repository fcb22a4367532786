#!/usr/bin/env bash
# p99 latency of /v1/embeddings and /v1/context for two anectx binaries in
# one run (issue 18: before and after the HTTP limits), alternated so both
# see the same machine load. Needs wrk (Debian package `wrk`).
#   scripts/compare-p99.sh OLD_ANECTX NEW_ANECTX   # SECS=15 ROUNDS=3
set -euo pipefail
OLD=${1:?usage: scripts/compare-p99.sh OLD_ANECTX NEW_ANECTX}
NEW=${2:?usage: scripts/compare-p99.sh OLD_ANECTX NEW_ANECTX}
W=$(mktemp -d); mkdir -p $W/docs
root=$(cd "$(dirname "$0")/.." && pwd); cp "$root"/docs/*.md "$root"/README.md $W/docs/; printf 'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\nwrk.body = os.getenv("BODY")\n' > $W/post.lua
cd $W
export ANECTX_CONFIG=$W/empty.toml; : > $ANECTX_CONFIG
unset ANECTX_MODEL ANECTX_STORE ANECTX_BACKEND
$OLD index docs --store st-old > /dev/null 2>&1
$NEW index docs --store st-new > /dev/null 2>&1
start() { # bin store port
  "$1" serve --store "$2" --port "$3" > /dev/null 2>&1 &
  echo $!
}
PO=$(start $OLD st-old 18301); PN=$(start $NEW st-new 18302)
for p in 18301 18302; do for i in $(seq 1 120); do curl -s -o /dev/null http://127.0.0.1:$p/health && break; sleep 0.5; done; done
trap 'kill $PO $PN 2>/dev/null; rm -rf $W' EXIT
EMB='{"model":"x","input":["How are tides caused by the moon?"]}'
CTX='{"query":"how does the server shed load under pressure","budget":800}'
for round in $(seq 1 ${ROUNDS:-3}); do
  for route in embeddings context; do
    for which in old new; do
      port=$([ $which = old ] && echo 18301 || echo 18302)
      body=$([ $route = embeddings ] && echo "$EMB" || echo "$CTX")
      path=$([ $route = embeddings ] && echo /v1/embeddings || echo /v1/context)
      r=$(BODY="$body" wrk -t2 -c16 -d${SECS:-15}s --latency -s $W/post.lua http://127.0.0.1:$port$path)
      p50=$(echo "$r" | awk '$1=="50%"{print $2}'); p99=$(echo "$r" | awk '$1=="99%"{print $2}')
      rps=$(echo "$r" | awk '/Requests\/sec/{print $2}'); non2=$(echo "$r" | awk '/Non-2xx/{print $NF}')
      echo "round $round $route $which p50 $p50 p99 $p99 req/s $rps non2xx ${non2:-0}"
    done
  done
done
