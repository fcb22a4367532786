"""A throwaway PostgreSQL 16 + pgvector for anectx's tests.

Started by anectx-testing's `PgServer` (feature `pg`) with the venv that
scripts/fixtures.sh builds (PyPI package pgserver, which bundles PostgreSQL
and pgvector). It initialises a fresh data directory, starts the server on a
Unix socket only (no TCP port: nothing outside this machine can reach it),
prints one line, `host=<socket directory> port=<port>`, and then waits. When its stdin closes,
because the test finished, panicked or was killed, it stops the server and
deletes the data directory. Running as root, pgserver runs PostgreSQL as a
system user of its own (PostgreSQL refuses to run as root).

With --tls it also listens on 127.0.0.1 for clients that ask for TLS, with a
certificate from a throwaway CA, and prints
`host=<socket directory> port=<port> tls_port=<port> ca=<CA file>`.
pgserver's PostgreSQL is built without SSL, so a small proxy here answers
the SSLRequest, ends TLS and passes the bytes to the server's socket.
"""

import datetime
import os
import socket
import ssl
import struct
import sys
import tempfile
import threading
import warnings

# platformdirs warns when XDG_RUNTIME_DIR is unset (CI, containers).
warnings.filterwarnings("ignore", module="platformdirs")

import pgserver  # noqa: E402


def certificates(out_dir):
    """A throwaway CA and a server certificate it signs for localhost and
    127.0.0.1, written to out_dir: (ca.pem, server.crt, server.key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    import ipaddress

    now = datetime.datetime.now(datetime.timezone.utc)
    day = datetime.timedelta(days=1)

    def name(cn):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("anectx test CA"))
        .issuer_name(name("anectx test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - day)
        .not_valid_after(now + day)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name("localhost"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - day)
        .not_valid_after(now + day)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_path = os.path.join(out_dir, "ca.pem")
    with open(ca_path, "wb") as f:
        f.write(ca.public_bytes(serialization.Encoding.PEM))
    crt = os.path.join(out_dir, "server.crt")
    key_path = os.path.join(out_dir, "server.key")
    with open(crt, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        )
    os.chmod(key_path, 0o600)
    return ca_path, crt, key_path


SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104


def recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        got = sock.recv(n - len(buf))
        if not got:
            raise ConnectionError("closed")
        buf += got
    return buf


def pump(src, dst):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.close()
            except OSError:
                pass


def tls_proxy(unix_path, ctx):
    """Listens on 127.0.0.1 and answers PostgreSQL's SSLRequest as a server
    with TLS would: 'S', then the TLS handshake with ctx, then the decrypted
    bytes go to the server's Unix socket (and back). A client that does not
    ask for TLS is passed through in plain text. Returns the port."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(64)

    def handle(conn):
        try:
            while True:
                head = recv_exact(conn, 8)
                length, code = struct.unpack("!II", head)
                if length == 8 and code == SSL_REQUEST:
                    conn.sendall(b"S")
                    conn = ctx.wrap_socket(conn, server_side=True)
                    first = b""
                    break
                if length == 8 and code == GSSENC_REQUEST:
                    conn.sendall(b"N")
                    continue
                first = head
                break
            up = socket.socket(socket.AF_UNIX)
            up.connect(unix_path)
            if first:
                up.sendall(first)
        except (OSError, ConnectionError, ssl.SSLError):
            conn.close()
            return
        threading.Thread(target=pump, args=(conn, up), daemon=True).start()
        threading.Thread(target=pump, args=(up, conn), daemon=True).start()

    def accept():
        while True:
            conn, _ = lsock.accept()
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return lsock.getsockname()[1]


def main() -> int:
    tls = "--tls" in sys.argv[1:]
    data = tempfile.mkdtemp(prefix="anectx-pg-")
    server = pgserver.get_server(data, cleanup_mode="delete")
    info = server.get_postmaster_info()
    if not tls:
        print(f"host={info.socket_dir} port={info.port}", flush=True)
        # Block until the parent closes our stdin (or dies).
        sys.stdin.read()
        return 0
    # TLS mode: pgserver's PostgreSQL is built without SSL, so TLS ends in
    # a proxy on 127.0.0.1 that speaks PostgreSQL's SSLRequest, with a
    # certificate from a throwaway CA; what the client sees is a server
    # with TLS.
    with tempfile.TemporaryDirectory(prefix="anectx-pg-tls-") as certs:
        ca, crt, key = certificates(certs)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(crt, key)
        unix_path = os.path.join(str(info.socket_dir), f".s.PGSQL.{info.port}")
        port = tls_proxy(unix_path, ctx)
        print(f"host={info.socket_dir} port={info.port} tls_port={port} ca={ca}", flush=True)
        sys.stdin.read()
    return 0


if __name__ == "__main__":
    sys.exit(main())
