"""TLS to everything outside the host (ops/tls.py): the config refuses plain text and unverified
TLS to another host, and real handshakes against real servers (tests/_tls_proxy.py in front of
the session's PostgreSQL and Redis, certificates made here with trustme) connect with a good
certificate and are refused, with a clear error, for a wrong host name, an expired certificate,
a self-signed one, an old protocol version or a missing client certificate."""

from __future__ import annotations

import datetime as dt
import re
import ssl
from pathlib import Path
from types import SimpleNamespace

import pytest
import trustme

from ops.config import Config, ConfigError, parse_config
from ops.store.pg import PgSettings, connect
from ops.store.redis_store import RedisUnavailable
from ops.store.redis_store import connect as redis_connect
from ops.tls import plaintext_allowed
from tests._tls_proxy import TlsProxy, self_signed, server_context
from tests.conftest import ROOT

BASE = (ROOT / "config.toml").read_text()


def _with(section: str, **keys: object) -> str:
    """config.toml with ``keys`` set in ``[section]`` (replacing a key the file already has)."""
    lines = BASE.splitlines()
    start = lines.index(f"[{section}]")
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("[")), len(lines))
    body = lines[start + 1 : end]
    for k, v in keys.items():
        val = ("true" if v else "false") if isinstance(v, bool) else f'"{v}"'
        body = [ln for ln in body if not re.match(rf"{k}\s*=", ln)] + [f"{k} = {val}"]
    return "\n".join([*lines[: start + 1], *body, *lines[end:]]) + "\n"


def _pg(**keys: object) -> Config:
    return parse_config(_with("storage.postgres", **keys), "t.toml")


def _redis(**keys: object) -> Config:
    return parse_config(_with("storage.redis", **keys), "t.toml")


def _refused(text: str, key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(text, "t.toml")
    assert err.value.key == key
    assert problem in err.value.problem, err.value.problem


# --- the config: plain text or unverified TLS to another host is refused --------------------------
def test_a_dsn_to_another_host_gets_verify_full_and_tls_1_3() -> None:
    dsn = _pg(mode="postgresql://gekko@db.example:5432/gekko").storage.postgres.dsn()
    assert dsn == (
        "postgresql://gekko@db.example:5432/gekko"
        "?sslmode=verify-full&ssl_min_protocol_version=TLSv1.3"
    )
    assert PgSettings.from_config(_pg(mode="postgresql://gekko@db.example/g")).mode.endswith(
        "sslmode=verify-full&ssl_min_protocol_version=TLSv1.3"
    )


def test_a_local_dsn_is_left_as_written() -> None:
    for dsn in ("postgresql://g@127.0.0.1:5432/g", "postgresql://g@localhost/g", "postgresql:///g"):
        assert _pg(mode=dsn).storage.postgres.dsn() == dsn


@pytest.mark.parametrize("mode", ["disable", "prefer", "require", "verify-ca"])
def test_a_dsn_to_another_host_without_verify_full_is_refused(mode: str) -> None:
    text = _with("storage.postgres", mode="postgresql://g@db.example/g", sslmode=mode)
    _refused(text, "storage.postgres.sslmode", "does not verify the server")
    _refused(text, "storage.postgres.sslmode", "allow_plaintext = true")


def test_allow_plaintext_beside_the_dsn_accepts_it() -> None:
    cfg = _pg(mode="postgresql://g@db.example/g", sslmode="disable", allow_plaintext=True)
    assert cfg.storage.postgres.dsn() == "postgresql://g@db.example/g?sslmode=disable"
    cfg = _pg(mode="postgresql://g@db.example/g", allow_plaintext=True)  # libpq's own default
    assert cfg.storage.postgres.dsn() == "postgresql://g@db.example/g"


def test_a_ca_or_client_certificate_turns_verify_full_on_for_a_local_dsn(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    dsn = _pg(mode="postgresql://g@localhost/g", sslrootcert=ca).storage.postgres.dsn()
    assert f"sslmode=verify-full&ssl_min_protocol_version=TLSv1.3&sslrootcert={ca}" in dsn


def test_allowed_plain_text_is_named_at_every_start() -> None:
    pg = _pg(mode="postgresql://g@db.example/g", allow_plaintext=True).storage.postgres
    rd = _redis(mode="redis://cache.example/0", allow_plaintext=True).storage.redis
    assert plaintext_allowed(pg.mode, pg.tls, rd.mode, rd.tls) == [
        "storage.postgres: allow_plaintext: db.example is not verified",
        "storage.redis: allow_plaintext: cache.example is plain text",
    ]
    local = _pg(mode="postgresql://g@127.0.0.1/g", allow_plaintext=True).storage.postgres
    assert plaintext_allowed(local.mode, local.tls, "embedded", rd.tls) == []


def test_tls_settings_inside_the_dsn_are_refused() -> None:
    text = _with("storage.postgres", mode="postgresql://g@db.example/g?sslmode=disable")
    _refused(text, "storage.postgres.mode", "write these as keys of [storage.postgres]")
    dsn = "postgresql://g@127.0.0.1/g?host=db.example"  # the host libpq really uses counts
    assert (
        _pg(mode=dsn)
        .storage.postgres.dsn()
        .endswith("&sslmode=verify-full&ssl_min_protocol_version=TLSv1.3")
    )
    _refused(
        _with("storage.postgres", mode=dsn, sslmode="require"),
        "storage.postgres.sslmode",
        "db.example",
    )
    _refused(
        _with(
            "storage.postgres",
            mode="postgresql://g@db.example/g",
            ssl_min_protocol_version="TLSv1.1",
        ),
        "storage.postgres.ssl_min_protocol_version",
        "must be one of TLSv1.2, TLSv1.3",
    )


def test_client_certificate_files_are_checked(tmp_path: Path) -> None:
    dsn = "postgresql://g@db.example/g"
    cert, key = tmp_path / "c.pem", tmp_path / "c.key"
    cert.write_text("x")
    key.write_text("x")
    key.chmod(0o644)
    _refused(
        _with("storage.postgres", mode=dsn, sslcert=cert), "storage.postgres.sslkey", "give both"
    )
    _refused(
        _with("storage.postgres", mode=dsn, sslcert=cert, sslkey=key),
        "storage.postgres.sslkey",
        "accessible by group or others",
    )
    _refused(
        _with("storage.postgres", mode=dsn, sslrootcert=tmp_path / "none.pem"),
        "storage.postgres.sslrootcert",
        "cannot read",
    )
    key.chmod(0o600)
    out = _pg(mode=dsn, sslcert=cert, sslkey=key, sslrootcert=cert).storage.postgres.dsn()
    assert f"sslrootcert={cert}&sslcert={cert}&sslkey={key}" in out


@pytest.mark.parametrize(
    ("keys", "key", "problem"),
    [
        ({"mode": "redis://cache.example:6379/0"}, "storage.redis.mode", "is plain text"),
        ({"mode": "redis+cluster://cache.example:7000"}, "storage.redis.mode", "is plain text"),
        (
            {"mode": "rediss://cache.example/0?ssl_cert_reqs=none"},
            "storage.redis.mode",
            "write these as keys of [storage.redis]",
        ),
        (
            {"mode": "redis://127.0.0.1:6379/0", "ssl_ca_certs": "/etc/hosts"},
            "storage.redis.ssl_ca_certs",
            "needs a rediss:// URL",
        ),
        (
            {"mode": "rediss://cache.example/0", "ssl_min_version": "TLSv1"},
            "storage.redis.ssl_min_version",
            "must be one of",
        ),
    ],
)
def test_redis_urls_that_leave_the_host_unprotected_are_refused(
    keys: dict[str, str], key: str, problem: str
) -> None:
    _refused(_with("storage.redis", **keys), key, problem)


def test_redis_urls_that_are_accepted() -> None:
    for url in ("redis://127.0.0.1:6379/0", "unix:///tmp/r.sock", "rediss://cache.example/0"):
        assert _redis(mode=url).storage.redis.mode == url
    assert _redis(
        mode="redis://cache.example/0", allow_plaintext=True
    ).storage.redis.allow_plaintext


def test_a_venue_over_plain_text_to_another_host_is_refused() -> None:
    venue = '\n[[venues]]\nname = "bx"\nkind = "binanceus"\nrest_url = "{}"\nws_url = "{}"\n'
    with pytest.raises(ConfigError) as err:
        parse_config(BASE + venue.format("http://api.example:80", ""), "t.toml")
    assert err.value.key.endswith("rest_url") and "plain text to api.example" in err.value.problem
    with pytest.raises(ConfigError) as err:
        parse_config(BASE + venue.format("", "ws://stream.example:9443"), "t.toml")
    assert err.value.key.endswith("ws_url")
    parse_config(BASE + venue.format("http://127.0.0.1:8080", "ws://127.0.0.1:8081"), "t.toml")
    parse_config(
        BASE + venue.format("http://api.example", "") + "allow_plaintext = true\n", "t.toml"
    )


def test_nothing_in_the_engine_turns_verification_off() -> None:
    weakening = re.compile(
        r"verify\s*=\s*False|[\"']verify[\"']\s*:\s*False|CERT_NONE|check_hostname\s*=\s*False"
        r"|ssl\s*=\s*False|ssl_cert_reqs\s*=\s*[\"']none|_create_unverified_context"
    )
    hits = [
        f"{p.relative_to(ROOT)}:{n}"
        for d in ("engine", "ops", "procs", "models", "shm", "perf")
        for p in (ROOT / d).rglob("*.py")
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if weakening.search(line)
    ]
    assert hits == []


# --- certificates ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    d = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    hosts = ["localhost", "127.0.0.1", "db.test.example"]
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=2)

    def leaf(name: str, cert: trustme.LeafCert) -> tuple[Path, Path]:
        c, k = d / f"{name}.pem", d / f"{name}.key"
        cert.cert_chain_pems[0].write_to_path(str(c))
        cert.private_key_pem.write_to_path(str(k))
        k.chmod(0o600)
        return c, k

    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    return SimpleNamespace(
        ca=d / "ca.pem",
        good=leaf("good", ca.issue_cert(*hosts)),
        wrong_host=leaf("wrong", ca.issue_cert("other.example")),
        expired=leaf(
            "expired", ca.issue_cert(*hosts, not_before=past, not_after=past + dt.timedelta(days=1))
        ),
        self_signed=self_signed(d, hosts),
        client=leaf("client", ca.issue_cert("gekko-client")),
    )


# --- PostgreSQL: the engine's own connection path (config → PgSettings → connect) -----------------
@pytest.fixture
def pg_socket(pg_server: object) -> str:
    from psycopg.conninfo import conninfo_to_dict

    info = conninfo_to_dict(pg_server.get_uri())  # type: ignore[attr-defined]
    return f"{info['host']}/.s.PGSQL.{info.get('port') or 5432}"


def _pg_connect(port: int, certs: SimpleNamespace, **keys: object) -> None:
    # db.test.example is another host to the config (verify-full by default); hostaddr takes the
    # connection to the proxy without DNS, and the certificate must name db.test.example
    dsn = f"postgresql://postgres@db.test.example:{port}/postgres?hostaddr=127.0.0.1"
    cfg = _pg(mode=dsn, sslrootcert=certs.ca, **keys)
    with connect(PgSettings.from_config(cfg).mode) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_postgres_with_a_good_certificate_connects_over_tls_1_3(
    pg_socket: str, certs: SimpleNamespace
) -> None:
    with TlsProxy(server_context(*certs.good), pg_socket, postgres=True) as proxy:
        _pg_connect(proxy.port, certs)
    assert proxy.versions == ["TLSv1.3"]


@pytest.mark.parametrize(
    ("which", "why"),
    [
        ("wrong_host", 'does not match host name "db.test.example"'),
        ("expired", "certificate verify failed"),
        ("self_signed", "certificate verify failed"),
    ],
)
def test_postgres_with_a_bad_certificate_is_refused(
    pg_socket: str, certs: SimpleNamespace, which: str, why: str
) -> None:
    import psycopg

    ctx = server_context(*getattr(certs, which))
    with (
        TlsProxy(ctx, pg_socket, postgres=True) as proxy,
        pytest.raises(psycopg.OperationalError, match=re.escape(why)),
    ):
        _pg_connect(proxy.port, certs)


def test_postgres_client_certificate_and_protocol_version(
    pg_socket: str, certs: SimpleNamespace
) -> None:
    import psycopg

    ctx = server_context(*certs.good, client_ca=certs.ca)
    with TlsProxy(ctx, pg_socket, postgres=True) as proxy:
        with pytest.raises(psycopg.OperationalError):
            _pg_connect(proxy.port, certs)  # no client certificate: the server refuses
        _pg_connect(proxy.port, certs, sslcert=certs.client[0], sslkey=certs.client[1])
    assert ("DNS", "gekko-client") in proxy.client_certs[-1]["subjectAltName"]
    old = server_context(
        *certs.good, min_version=ssl.TLSVersion.TLSv1_2, max_version=ssl.TLSVersion.TLSv1_2
    )
    with TlsProxy(old, pg_socket, postgres=True) as proxy:
        with pytest.raises(psycopg.OperationalError, match="SSL"):
            _pg_connect(proxy.port, certs)  # TLS 1.3 minimum by default
        _pg_connect(proxy.port, certs, ssl_min_protocol_version="TLSv1.2")
    assert proxy.versions == ["TLSv1.2"]


# --- Redis: config → redis_store.connect ----------------------------------------------------------
def _redis_connect(
    port: int, certs: SimpleNamespace, scheme: str = "rediss", **keys: object
) -> None:
    cfg = _redis(mode=f"{scheme}://localhost:{port}/0", ssl_ca_certs=certs.ca, **keys)
    client = redis_connect(cfg)
    try:
        assert client.ping()
    finally:
        client.close()


@pytest.fixture
def redis_socket(redis_server: object) -> str:
    return redis_server.socket  # type: ignore[attr-defined]


def test_redis_with_a_good_certificate_connects_over_tls_1_3(
    redis_socket: str, certs: SimpleNamespace
) -> None:
    with TlsProxy(server_context(*certs.good), redis_socket) as proxy:
        _redis_connect(proxy.port, certs)
    assert proxy.versions and set(proxy.versions) == {"TLSv1.3"}


@pytest.mark.parametrize(
    ("which", "why"),
    [
        ("wrong_host", "Hostname mismatch"),
        ("expired", "certificate has expired"),
        ("self_signed", "self-signed certificate"),
    ],
)
def test_redis_with_a_bad_certificate_is_refused(
    redis_socket: str, certs: SimpleNamespace, which: str, why: str
) -> None:
    ctx = server_context(*getattr(certs, which))
    with TlsProxy(ctx, redis_socket) as proxy, pytest.raises(RedisUnavailable) as err:
        _redis_connect(proxy.port, certs)
    assert "TLS: the server's certificate was refused" in str(err.value)
    assert why in str(err.value)


def test_redis_client_certificate_and_protocol_version(
    redis_socket: str, certs: SimpleNamespace
) -> None:
    ctx = server_context(*certs.good, client_ca=certs.ca)
    with TlsProxy(ctx, redis_socket) as proxy:
        with pytest.raises(RedisUnavailable):
            _redis_connect(proxy.port, certs)
        _redis_connect(proxy.port, certs, ssl_certfile=certs.client[0], ssl_keyfile=certs.client[1])
    old = server_context(
        *certs.good, min_version=ssl.TLSVersion.TLSv1_2, max_version=ssl.TLSVersion.TLSv1_2
    )
    with TlsProxy(old, redis_socket) as proxy:
        with pytest.raises(RedisUnavailable, match="TLS handshake failed"):
            _redis_connect(proxy.port, certs)
        _redis_connect(proxy.port, certs, ssl_min_version="TLSv1.2")
    assert set(proxy.versions) == {"TLSv1.2"}


def test_a_redis_cluster_over_tls_keeps_the_1_3_floor_on_its_nodes(
    redis_socket: str, certs: SimpleNamespace
) -> None:
    # RedisCluster drops ssl_min_version from its nodes' arguments; ours puts it back. The
    # server is no cluster: verified TLS, then CLUSTER's refusal, proves the handshake happened
    old = server_context(
        *certs.good, min_version=ssl.TLSVersion.TLSv1_2, max_version=ssl.TLSVersion.TLSv1_2
    )
    with TlsProxy(old, redis_socket) as proxy, pytest.raises(RedisUnavailable) as err:
        _redis_connect(proxy.port, certs, scheme="rediss+cluster")
    assert "TLS handshake failed" in str(err.value)
    no_cluster = pytest.raises(RedisUnavailable, match="[Cc]luster mode is not enabled")
    with TlsProxy(server_context(*certs.good), redis_socket) as proxy, no_cluster:
        _redis_connect(proxy.port, certs, scheme="rediss+cluster")
    assert set(proxy.versions) == {"TLSv1.3"}


def test_the_bridge_audits_a_redis_refused_for_tls_once_an_outage(
    redis_socket: str, certs: SimpleNamespace
) -> None:
    import json

    from procs.bridge import _Backoff, _Bridge

    ctx = server_context(*certs.expired)
    with TlsProxy(ctx, redis_socket) as proxy, pytest.raises(RedisUnavailable) as err:
        _redis_connect(proxy.port, certs)  # what the bridge's factory raises (ops/store/bus.py)

    published: list = []
    bridge = SimpleNamespace(  # the state redis_failed uses
        m=SimpleNamespace(inc_i=lambda *a: None),
        c_err=0,
        backoff=_Backoff(),
        out=SimpleNamespace(publish=published.append),
        engine_id="e1",
        bus=object(),
    )
    _Bridge.redis_failed(bridge, "connecting", err.value)  # type: ignore[arg-type]
    _Bridge.redis_failed(bridge, "connecting", err.value)  # type: ignore[arg-type]  # same outage
    [ev] = published
    assert (ev.actor, ev.action) == ("bridge", "tls.refused") and bridge.bus is None
    detail = json.loads(ev.detail)
    assert detail["service"] == "redis" and "certificate has expired" in detail["reason"]


# --- venues: ccxt verifies (the engine's own exchange factory) ------------------------------------
def test_a_venue_with_an_untrusted_certificate_is_refused(certs: SimpleNamespace) -> None:
    """The start of a run (config -> resolve_run -> ccxt's load_markets) against an https
    address whose certificate no CA the system trusts signed: refused, naming why."""
    from engine.venues.ccxt_session import make_exchange
    from ops.venue_run import resolve_run

    assert make_exchange("binanceus", {}).verify is True  # and it refuses to build without
    venue = '\n[[venues]]\nname = "bx"\nkind = "binanceus"\nrest_url = "https://127.0.0.1:{}"\n'
    ctx = server_context(*certs.good)  # the proxy's upstream is never reached
    with TlsProxy(ctx, ("127.0.0.1", 9)) as proxy, pytest.raises(ConfigError) as err:
        resolve_run(parse_config(BASE + venue.format(proxy.port), "t.toml"))
    assert err.value.key == "venues[bx]"
    assert (
        "markets not loaded: TLS: the server's certificate was refused "
        "(unable to get local issuer certificate)" in err.value.problem
    )
    assert proxy.errors  # the handshake ended at the client's refusal


# --- the engine: every process that uses the record goes through TLS ------------------------------
def _engine_over_tls(tmp_path: Path, eid: str, port: int, dbname: str, ca: Path) -> Path:
    from tests.test_engine_e2e import set_key
    from tests.test_recovery import _engine_config

    dsn = f"postgresql://postgres@db.test.example:{port}/{dbname}?hostaddr=127.0.0.1"
    cfg = _engine_config(tmp_path, eid, dsn)
    cfg.write_text(set_key(cfg.read_text(), "storage.postgres", "sslrootcert", f'"{ca}"'))
    return cfg


def test_a_refused_database_is_kept_for_the_audit_and_is_not_fatal(
    tmp_path: Path, pg_dsn: str, pg_socket: str, certs: SimpleNamespace
) -> None:
    from psycopg.conninfo import conninfo_to_dict

    from ops.config import load_config
    from ops.services import EmbeddedServices

    dbname = conninfo_to_dict(pg_dsn)["dbname"]
    with TlsProxy(server_context(*certs.expired), pg_socket, postgres=True) as proxy:
        cfg = load_config(_engine_over_tls(tmp_path, "tlsref", proxy.port, dbname, certs.ca))
        services = EmbeddedServices(cfg, run_id=1)
        services.start_postgres()  # the recorder journals until the database is verified
    [(service, why)] = services.tls_refused  # the supervisor audits it as tls.refused
    assert service == "postgres" and "certificate verify failed" in why


@pytest.mark.timeout(120)
def test_a_whole_run_records_through_verified_tls(
    tmp_path: Path, pg_dsn: str, pg_socket: str, certs: SimpleNamespace
) -> None:
    """The DSN with its TLS parameters reaches every worker (GEKKO_PG_DSN): the proxy takes TLS
    only, so every row the run wrote came over a verified TLS 1.3 connection."""
    import uuid

    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    from tests.test_engine_e2e import gekko

    dbname = conninfo_to_dict(pg_dsn)["dbname"]
    eid = "t" + uuid.uuid4().hex[:7]
    with TlsProxy(server_context(*certs.good), pg_socket, postgres=True) as proxy:
        cfg = _engine_over_tls(tmp_path, eid, proxy.port, dbname, certs.ca)
        r = gekko("run", "--config", str(cfg), "--duration", "2")
    assert r.returncode == 0, r.stderr[-3000:]
    assert proxy.errors == [] and len(proxy.versions) >= 2  # the supervisor's and the workers'
    assert set(proxy.versions) == {"TLSv1.3"}
    with psycopg.connect(pg_dsn) as c:
        assert c.execute("SELECT count(*) FROM runs").fetchone()[0] == 1
        assert c.execute("SELECT count(*) FROM orders").fetchone()[0] > 0
