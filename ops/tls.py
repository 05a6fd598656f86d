"""TLS to the services outside the host: what counts as local, and what a DSN or URL must carry.

Why one module: the rule "a connection that leaves the host is encrypted and its server
verified, or the operator wrote ``allow_plaintext = true`` beside it" is checked when the config
loads (ops/config.py, errors naming the key) and applied where the connections are made
(ops/store/pg.py, ops/store/redis_store.py, engine/venues/ccxt_session.py); both read it here.
Only names and literal addresses decide locality (no DNS at load): ``localhost``, loopback IPs
and unix sockets are local, every other host is not. The contract: docs/security.md, "TLS".
"""

from __future__ import annotations

import ipaddress
import os
import ssl
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

TLS_VERSIONS = ("TLSv1.2", "TLSv1.3")  # below 1.2 is never accepted
PG_SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


class TlsConfigError(ValueError):
    """A TLS setting that cannot be used; ``key`` is the config key (relative to its section)."""

    def __init__(self, key: str, problem: str) -> None:
        self.key, self.problem = key, problem
        super().__init__(f"{key}: {problem}")


def is_local_host(host: str) -> bool:
    """A unix socket (empty host, a path, an abstract ``@name``), ``localhost`` or a loopback IP."""
    h = host.strip().strip("[]").lower()
    if not h or h.startswith(("/", "@")) or h in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(h.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def _check_file(path: str, key: str, *, private: bool = False) -> None:
    try:
        st = Path(path).stat()
    except OSError as exc:
        raise TlsConfigError(key, f"cannot read {path}: {exc.strerror or exc}") from None
    if private and st.st_mode & 0o077:
        mode = stat.S_IMODE(st.st_mode)
        raise TlsConfigError(
            key, f"private key {path} is accessible by group or others (mode {mode:04o}): chmod 600"
        )


def _client_cert(cert: str, key: str, cert_key: str, key_key: str) -> None:
    if bool(cert) != bool(key):
        raise TlsConfigError(
            cert_key if not cert else key_key, f"give both {cert_key} and {key_key}"
        )
    if cert:
        _check_file(cert, cert_key)
        _check_file(key, key_key, private=True)


# --- PostgreSQL ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class PgTls:
    """``[storage.postgres]``'s TLS keys (libpq's names)."""

    sslmode: str = ""  # "" = verify-full for another host or when a CA / client cert is given,
    # else libpq's default
    sslrootcert: str = ""  # CA file ("system": the OS store; "" = libpq's ~/.postgresql/root.crt)
    sslcert: str = ""  # client certificate (with sslkey)
    sslkey: str = ""
    ssl_min_protocol_version: str = "TLSv1.3"
    allow_plaintext: bool = False

    def params(self, dsn: str) -> dict[str, str]:
        """The libpq parameters to add to ``dsn``; raises ``TlsConfigError`` naming the key."""
        if self.sslmode and self.sslmode not in PG_SSLMODES:
            raise TlsConfigError("sslmode", f"must be one of {', '.join(PG_SSLMODES)}")
        if self.ssl_min_protocol_version not in TLS_VERSIONS:
            raise TlsConfigError(
                "ssl_min_protocol_version", f"must be one of {', '.join(TLS_VERSIONS)}"
            )
        given = _pg_conninfo(dsn)
        inline = [k for k in given if k.startswith("ssl") or k == "requiressl"]
        if inline:
            raise TlsConfigError(
                "mode",
                f"the DSN sets {', '.join(inline)}: write these as keys of [storage.postgres]",
            )
        hosts = _pg_hosts(given)
        remote = [h for h in hosts if not is_local_host(h)]
        wants_tls = (remote and not self.allow_plaintext) or self.sslrootcert or self.sslcert
        mode = self.sslmode or ("verify-full" if wants_tls else "")
        if remote and mode != "verify-full" and not self.allow_plaintext:
            raise TlsConfigError(
                "sslmode",
                f"{mode or 'no TLS'} to {remote[0]} (not this host) does not verify the server: "
                'use sslmode = "verify-full", or write allow_plaintext = true to accept it',
            )
        _client_cert(self.sslcert, self.sslkey, "sslcert", "sslkey")
        if self.sslrootcert and self.sslrootcert != "system":
            _check_file(self.sslrootcert, "sslrootcert")
        if not mode:
            return {}
        out = {"sslmode": mode}
        if mode != "disable":
            out["ssl_min_protocol_version"] = self.ssl_min_protocol_version
            for k in ("sslrootcert", "sslcert", "sslkey"):
                if getattr(self, k):
                    out[k] = getattr(self, k)
        return out

    def dsn(self, dsn: str) -> str:
        """``dsn`` (a postgresql:// URL) with the TLS parameters appended to its query."""
        params = self.params(dsn)
        if not params:
            return dsn
        extra = "&".join(f"{k}={quote(v, safe='/')}" for k, v in params.items())
        return dsn + ("&" if "?" in dsn else "?") + extra


def _pg_conninfo(dsn: str) -> dict[str, str]:
    from psycopg.conninfo import conninfo_to_dict

    try:
        return {k: str(v) for k, v in conninfo_to_dict(dsn).items() if v is not None}
    except Exception as exc:  # psycopg.ProgrammingError: libpq's parse error
        raise TlsConfigError("mode", f"not a valid DSN ({exc})") from None


def _pg_hosts(info: dict[str, str]) -> list[str]:
    """Every host libpq may connect to: ``host`` and ``hostaddr`` lists, else PGHOST(ADDR)."""
    hosts = [h for k in ("host", "hostaddr") for h in info.get(k, "").split(",") if h]
    if not hosts:
        hosts = [h for k in ("PGHOST", "PGHOSTADDR") for h in os.environ.get(k, "").split(",") if h]
    return hosts or [""]


# --- Redis ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RedisTls:
    """``[storage.redis]``'s TLS keys (redis-py's names); the defaults verify the server."""

    ssl_ca_certs: str = ""  # CA file ("" = the system's CAs)
    ssl_certfile: str = ""  # client certificate (with ssl_keyfile)
    ssl_keyfile: str = ""
    ssl_min_version: str = "TLSv1.3"
    allow_plaintext: bool = False

    def kwargs(self, url: str) -> dict[str, Any]:
        """redis-py keyword arguments for ``url``; raises ``TlsConfigError`` naming the key."""
        if self.ssl_min_version not in TLS_VERSIONS:
            raise TlsConfigError("ssl_min_version", f"must be one of {', '.join(TLS_VERSIONS)}")
        parts = urlsplit(url)
        scheme = parts.scheme.removesuffix("+cluster")
        inline = [k for k in parse_qs(parts.query) if k.lower().startswith("ssl")]
        if inline:
            raise TlsConfigError(
                "mode", f"the URL sets {', '.join(inline)}: write these as keys of [storage.redis]"
            )
        files = [k for k in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile") if getattr(self, k)]
        if scheme != "rediss":
            if files:
                raise TlsConfigError(files[0], "needs a rediss:// URL (TLS)")
            host = "" if scheme == "unix" else (parts.hostname or "")
            if not is_local_host(host) and not self.allow_plaintext:
                raise TlsConfigError(
                    "mode",
                    f"{scheme}:// to {host} (not this host) is plain text: use rediss://, "
                    "or write allow_plaintext = true to accept it",
                )
            return {}
        _client_cert(self.ssl_certfile, self.ssl_keyfile, "ssl_certfile", "ssl_keyfile")
        if self.ssl_ca_certs:
            _check_file(self.ssl_ca_certs, "ssl_ca_certs")
        out: dict[str, Any] = {
            "ssl_cert_reqs": "required",
            "ssl_check_hostname": True,
            "ssl_min_version": tls_version(self.ssl_min_version),
        }
        for k in files:
            out[k] = getattr(self, k)
        return out


def tls_version(name: str) -> ssl.TLSVersion:
    return ssl.TLSVersion.TLSv1_3 if name == "TLSv1.3" else ssl.TLSVersion.TLSv1_2


# --- plain-text addresses (venues' rest_url / ws_url) --------------------------------------------
def plaintext_to_remote(url: str) -> str | None:
    """The host of an ``http://`` / ``ws://`` ``url`` that leaves this host, else None."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "ws"):
        return None
    host = parts.hostname or ""
    return None if is_local_host(host) else host


# --- errors ----------------------------------------------------------------------------------------
def tls_reason(exc: BaseException) -> str:
    """``exc``'s message, led by the TLS reason when a handshake failed somewhere in its chain
    (a client library wraps the ``ssl`` error in its own connection error)."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, ssl.SSLCertVerificationError):
            inner = getattr(e, "certificate_error", e)  # aiohttp wraps it once more
            why = getattr(inner, "verify_message", None) or inner
            return f"TLS: the server's certificate was refused ({why}): {exc}"
        if isinstance(e, ssl.SSLError):
            return f"TLS handshake failed ({e.reason or e}): {exc}"
        e = e.__cause__ or e.__context__
    return str(exc)


def is_tls_failure(message: str) -> bool:
    """Whether a connection error's text (libpq's, redis-py's) is a TLS refusal."""
    return any(s in message for s in ("SSL", "TLS", "certificate"))


def plaintext_allowed(pg_dsn: str, pg: PgTls, redis_url: str, rd: RedisTls) -> list[str]:
    """One line per remote address that ``allow_plaintext`` lets go unverified (warned at start)."""
    out = []
    if pg.allow_plaintext and pg_dsn.startswith(("postgresql://", "postgres://")):
        remote = [h for h in _pg_hosts(_pg_conninfo(pg_dsn)) if not is_local_host(h)]
        if remote and (pg.sslmode or "prefer") != "verify-full":
            out.append(f"storage.postgres: allow_plaintext: {remote[0]} is not verified")
    if rd.allow_plaintext and "://" in redis_url:
        parts = urlsplit(redis_url)
        if not parts.scheme.startswith("rediss") and not is_local_host(parts.hostname or ""):
            out.append(f"storage.redis: allow_plaintext: {parts.hostname} is plain text")
    return out
