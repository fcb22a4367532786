#!/usr/bin/env python3
"""p50/p99 of POST /v1/context over HTTP: one store served from SQLite, and
the same documents served by a replica of a shared store (PostgreSQL +
pgvector), side by side in one run.

What it does, all on this machine (PostgreSQL on a Unix socket only, both
servers on 127.0.0.1):
1. writes each document of a BEIR collection (corpus.jsonl) to a file;
2. starts a throwaway PostgreSQL + pgvector (scripts/pg-test-server.py,
   from the venv scripts/fixtures.sh builds);
3. indexes the files into a local store, and into the shared store through
   a first cache (the indexer);
4. serves the local store, and the shared store from a second, new cache (a
   replica: it rebuilds its cache at start, then writes every interaction to
   the shared log before it answers);
5. sends the collection's queries to both, interleaved request by request
   (the order alternates), one persistent connection each, and reports
   latency percentiles as the client sees them, with the ratio replica/local.

Usage:
  .fixtures/venv/bin/python scripts/bench-context-http.py ../shared/data/eval/cisi \
      [--requests 600] [--warmup 30] [--budget 1200] [--log-sync full|normal]
      [--anectx PATH] [--json OUT]

Build the binary first: cargo build --release --locked -p anectx.
"""

import argparse
import http.client
import json
import os
import pathlib
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(xs, p):
    xs = sorted(xs)
    k = (len(xs) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def summary(ms):
    return {
        "requests": len(ms),
        "p50_ms": percentile(ms, 50),
        "p95_ms": percentile(ms, 95),
        "p99_ms": percentile(ms, 99),
        "mean_ms": statistics.fmean(ms),
    }


def wait_ready(port, proc, what, timeout=600):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            sys.exit(f"{what} exited with {proc.returncode}")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/health")
            if c.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    sys.exit(f"{what} did not become ready in {timeout} s")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("collection", type=pathlib.Path)
    ap.add_argument("--requests", type=int, default=600, help="timed requests per server")
    ap.add_argument("--warmup", type=int, default=30, help="untimed requests per server first")
    ap.add_argument("--budget", type=int, default=1200, help="budget_tokens of each request")
    ap.add_argument(
        "--anectx",
        default=os.path.expanduser("~/.cache/anectx-target/release/anectx"),
        help="the anectx binary (a release build)",
    )
    ap.add_argument("--json", type=pathlib.Path, help="also write the report here")
    ap.add_argument(
        "--log-sync",
        choices=["full", "normal"],
        default="full",
        help="both servers' --log-sync (normal: the replica's shared-log writes do not wait "
        "for PostgreSQL's flush either)",
    )
    ap.add_argument(
        "--pg-async-commit",
        action="store_true",
        help="a diagnostic: set PostgreSQL's synchronous_commit to off for the whole server "
        "(anectx does not do this), to see what the shared-log commit costs",
    )
    a = ap.parse_args()

    corpus = [json.loads(l) for l in open(a.collection / "corpus.jsonl") if l.strip()]
    queries = [json.loads(l)["text"] for l in open(a.collection / "queries.jsonl") if l.strip()]
    work = pathlib.Path(tempfile.mkdtemp(prefix="anectx-http-bench-"))
    docs = work / "docs"
    docs.mkdir()
    for d in corpus:
        text = (d.get("title") or "").strip()
        text = f"# {text}\n\n{d['text']}\n" if text else f"{d['text']}\n"
        (docs / f"{d['_id']}.md").write_text(text)
    config = work / "none.toml"
    config.write_text("")

    def env(cache):
        e = dict(os.environ)
        for k in ("ANECTX_MODEL", "ANECTX_STORE"):
            e.pop(k, None)
        e.update(ANECTX_CONFIG=str(config), XDG_CACHE_HOME=str(cache), HF_HUB_OFFLINE="1")
        return e

    py = ROOT / ".fixtures" / "venv" / "bin" / "python"
    pg = subprocess.Popen(
        [str(py), str(ROOT / "scripts" / "pg-test-server.py")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    servers = []
    try:
        loc = pg.stdout.readline().split()
        kv = dict(x.split("=", 1) for x in loc)
        url = f"postgresql://postgres@/postgres?host={kv['host']}&port={kv['port']}"
        if a.pg_async_commit:
            import pgserver

            psql = pathlib.Path(pgserver.__file__).parent / "pginstall" / "bin" / "psql"
            for sql in ("ALTER SYSTEM SET synchronous_commit = off", "SELECT pg_reload_conf()"):
                subprocess.run(
                    [str(psql), "-h", kv["host"], "-p", kv["port"], "-U", "postgres", "-c", sql],
                    check=True,
                    capture_output=True,
                )
        local = work / "store"

        def run(cache, *args):
            t = time.time()
            r = subprocess.run([a.anectx, *args], env=env(cache), capture_output=True, text=True)
            if r.returncode != 0:
                sys.exit(f"anectx {' '.join(args)} failed:\n{r.stderr}")
            return time.time() - t

        t_local = run(work / "c-local", "index", str(docs), "--store", str(local))
        t_shared = run(work / "c-indexer", "index", str(docs), "--store", url)
        ports = {}
        for name, cache, store in (
            ("local", work / "c-local", str(local)),
            ("replica", work / "c-replica", url),
        ):
            port = free_port()
            p = subprocess.Popen(
                [a.anectx, "serve", "--store", store, "--port", str(port), "--log-sync", a.log_sync],
                env=env(cache),
                stdout=subprocess.DEVNULL,
                stderr=open(work / f"serve-{name}.log", "w"),
            )
            servers.append(p)
            wait_ready(port, p, f"serve ({name})")
            ports[name] = port
        conns = {n: http.client.HTTPConnection("127.0.0.1", p, timeout=60) for n, p in ports.items()}

        def ask(name, q):
            body = json.dumps({"query": q, "budget_tokens": a.budget})
            t = time.perf_counter()
            c = conns[name]
            c.request("POST", "/v1/context", body, {"Content-Type": "application/json"})
            r = c.getresponse()
            data = r.read()
            dt = (time.perf_counter() - t) * 1000
            if r.status != 200:
                sys.exit(f"{name}: HTTP {r.status}: {data[:300]!r}")
            return dt

        ms = {"local": [], "replica": []}
        for i in range(a.warmup + a.requests):
            q = queries[i % len(queries)]
            order = ("local", "replica") if i % 2 == 0 else ("replica", "local")
            for n in order:
                dt = ask(n, q)
                if i >= a.warmup:
                    ms[n].append(dt)
        report = {
            "collection": str(a.collection),
            "documents": len(corpus),
            "budget_tokens": a.budget,
            "log_sync": a.log_sync,
            "pg_synchronous_commit": "off" if a.pg_async_commit else "on",
            "index_s": {"local": t_local, "shared_build_and_publish": t_shared},
            "local": summary(ms["local"]),
            "replica": summary(ms["replica"]),
        }
        report["ratio_replica_over_local"] = {
            k: report["replica"][k] / report["local"][k] for k in ("p50_ms", "p95_ms", "p99_ms", "mean_ms")
        }
        out = json.dumps(report, indent=2)
        print(out)
        if a.json:
            a.json.write_text(out + "\n")
    finally:
        for p in servers:
            p.terminate()
            p.wait()
        pg.stdin.close()
        pg.wait()


if __name__ == "__main__":
    main()
