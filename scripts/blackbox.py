#!/usr/bin/env python3
"""Black-box check of `anectx serve`'s HTTP hardening.

Starts `anectx serve` on loopback (no API key, a hung upstream LLM) and shows
each hostile request refused:

  - a foreign Host header (DNS rebinding)      -> 421
  - a foreign Origin (a web page)              -> 403
  - slow request headers (slowloris)           -> connection closed
  - a hung upstream LLM                        -> 504
  - an oversized body                          -> 413
  - /admin/reload without the admin token      -> 401

Usage: scripts/blackbox.py [path/to/anectx]   (default: target/release/anectx,
or $ANECTX_BIN). Needs only python3. Exits non-zero when any check fails.
"""

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

HEADER_TIMEOUT_S = 2
FIRST_BYTE_S = 2


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def hung_upstream():
    """An 'LLM' that accepts connections and never answers."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    held = []

    def run():
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            held.append(c)

    threading.Thread(target=run, daemon=True).start()
    return srv


def request(port, method, path, body=None, headers=None, timeout=30):
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method)
    req.add_header("Content-Type", "application/json")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def raw_host(port, host):
    """urllib always sends the connection's host; send a foreign one by hand."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(f"GET /v1/models HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    return int(data.split(b" ", 2)[1])


def slow_headers_closed_within(port, limit):
    with socket.create_connection(("127.0.0.1", port), timeout=limit) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        start = time.monotonic()
        try:
            while s.recv(4096):
                pass
        except socket.timeout:
            return None
        return time.monotonic() - start


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("ANECTX_BIN", "target/release/anectx")
    llm = hung_upstream()
    port = free_port()
    with tempfile.TemporaryDirectory() as home:
        env = dict(os.environ, HOME=home, XDG_CONFIG_HOME=os.path.join(home, ".config"))
        for k in ("ANECTX_API_KEY", "ANECTX_STORE", "ANECTX_MODEL", "ANECTX_CONFIG"):
            env.pop(k, None)
        cmd = [
            binary, "serve", "--port", str(port),
            "--llm", f"http://127.0.0.1:{llm.getsockname()[1]}/v1",
            "--llm-first-byte-secs", str(FIRST_BYTE_S),
            "--header-timeout-secs", str(HEADER_TIMEOUT_S),
            "--payload-limit-mb", "1",
        ]
        server = subprocess.Popen(cmd, cwd=home, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 120
            while True:
                if server.poll() is not None:
                    print(server.stderr.read().decode(), file=sys.stderr)
                    sys.exit(f"anectx serve exited with {server.returncode}")
                try:
                    if request(port, "GET", "/health", timeout=2)[0] == 200:
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    sys.exit("anectx serve did not answer /health within 120 s")
                time.sleep(0.2)

            results = []

            def check(name, ok, detail):
                results.append(ok)
                print(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}")

            s = raw_host(port, "evil.example")
            check("foreign Host", s in (403, 421), f"HTTP {s}")
            s, _ = request(port, "GET", "/v1/models", headers={"Origin": "http://evil.example"})
            check("foreign Origin", s == 403, f"HTTP {s}")
            t = slow_headers_closed_within(port, 30)
            check(
                "slow headers",
                t is not None,
                "still open after 30 s" if t is None else f"closed after {t:.1f} s (--header-timeout-secs {HEADER_TIMEOUT_S})",
            )
            start = time.monotonic()
            s, _ = request(port, "POST", "/v1/chat/completions",
                           {"model": "m", "messages": [{"role": "user", "content": "hi"}]}, timeout=60)
            check("hung upstream", s == 504, f"HTTP {s} after {time.monotonic() - start:.1f} s")
            s, _ = request(port, "POST", "/v1/embeddings", b'{"input": "' + b"a" * (2 << 20) + b'"}')
            check("oversized body", s == 413, f"HTTP {s} for a 2 MiB body (--payload-limit-mb 1)")
            s, _ = request(port, "POST", "/admin/reload", {})
            check("/admin/reload without the token", s == 401, f"HTTP {s}")
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
            llm.close()
    failed = results.count(False)
    print(f"{len(results) - failed}/{len(results)} refused as expected")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
