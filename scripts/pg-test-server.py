"""A throwaway PostgreSQL 16 + pgvector for anectx's tests.

Started by anectx-testing's `PgServer` (feature `pg`) with the venv that
scripts/fixtures.sh builds (PyPI package pgserver, which bundles PostgreSQL
and pgvector). It initialises a fresh data directory, starts the server on a
Unix socket only (no TCP port: nothing outside this machine can reach it),
prints one line, `host=<socket directory> port=<port>`, and then waits. When its stdin closes,
because the test finished, panicked or was killed, it stops the server and
deletes the data directory. Running as root, pgserver runs PostgreSQL as a
system user of its own (PostgreSQL refuses to run as root).
"""

import sys
import tempfile
import warnings

# platformdirs warns when XDG_RUNTIME_DIR is unset (CI, containers).
warnings.filterwarnings("ignore", module="platformdirs")

import pgserver  # noqa: E402


def main() -> int:
    data = tempfile.mkdtemp(prefix="anectx-pg-")
    server = pgserver.get_server(data, cleanup_mode="delete")
    info = server.get_postmaster_info()
    print(f"host={info.socket_dir} port={info.port}", flush=True)
    # Block until the parent closes our stdin (or dies).
    sys.stdin.read()
    return 0


if __name__ == "__main__":
    sys.exit(main())
