"""A real run whose config holds a database password in its DSN (storage on, the bridge on):
afterwards the password is nowhere — not in Redis, not in any PostgreSQL table, not under
var/ (logs, journals, summary.json, orders/fills), not in what `gekko` printed."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from ops.cli import main as gekko_main
from ops.store.redis_store import client_for_url, key
from tests.test_bridge import set_key
from tests.test_engine_e2e import gekko, shm_entries, write_config

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def role_dsn(pg_dsn: str) -> Iterator[tuple[str, str]]:
    """(a DSN of the test database as a new role with a password, that password)."""
    role, password = "gk" + uuid.uuid4().hex[:8], "Pw" + uuid.uuid4().hex
    with psycopg.connect(pg_dsn, autocommit=True) as c:
        c.execute(f"CREATE ROLE {role} LOGIN SUPERUSER PASSWORD '{password}'")
    assert "postgres:@" in pg_dsn  # the fixture's superuser, no password
    yield pg_dsn.replace("postgres:@", f"{role}:{password}@", 1), password
    with psycopg.connect(pg_dsn, autocommit=True) as c:  # its objects go with it
        c.execute(f"REASSIGN OWNED BY {role} TO postgres")
        c.execute(f"DROP OWNED BY {role}")
        c.execute(f"DROP ROLE {role}")


def _redis_blobs(url: str, eid: str) -> dict[str, bytes]:
    """Every key of the engine with everything it holds, as bytes."""
    client = client_for_url(url)
    out: dict[str, bytes] = {}
    try:
        for k in client.scan_iter(match=f"*{eid}*", count=500):
            kind = client.type(k)
            if kind == b"hash":
                items = client.hgetall(k).items()
                val = b"".join(a + b for a, b in items)
            elif kind == b"stream":
                val = b"".join(
                    b"".join(a + b for a, b in fields.items()) for _, fields in client.xrange(k)
                )
            elif kind == b"string":
                val = client.get(k) or b""
            else:
                val = repr(client.dump(k)).encode()
            out[k.decode()] = k + val
    finally:
        for k in list(out):
            client.delete(k)
        client.close()
    return out


def _tables_holding(dsn: str, needle: str) -> list[str]:
    with psycopg.connect(dsn, autocommit=True) as c:
        tables = c.execute(
            "SELECT quote_ident(table_schema) || '.' || quote_ident(table_name)"
            " FROM information_schema.tables WHERE table_type = 'BASE TABLE'"
            " AND table_schema NOT IN ('pg_catalog', 'information_schema')"
        ).fetchall()
        assert len(tables) > 5  # migrated: the run wrote its record here
        return [
            t
            for (t,) in tables
            if c.execute(
                f"SELECT count(*) FROM {t} x WHERE x::text LIKE %s", [f"%{needle}%"]
            ).fetchone()[0]
        ]


def test_a_run_leaves_the_database_password_nowhere(
    tmp_path: Path, role_dsn: tuple[str, str], redis_url: str, capsys: pytest.CaptureFixture
) -> None:
    dsn, password = role_dsn
    eid = "s" + uuid.uuid4().hex[:7]
    cfg = write_config(tmp_path, eid)
    text = cfg.read_text()
    text = set_key(text, "storage.postgres", "mode", f'"{dsn}"')
    text = set_key(text, "storage.postgres", "journal_fsync", "false")
    text = set_key(text, "storage.redis", "mode", f'"{redis_url}"')
    text = set_key(text, "bridge", "enabled", "true")
    mac_key = "made-up-bridge-mac-key-" + uuid.uuid4().hex  # (written in the file itself)
    text = set_key(text, "bridge", "mac_key", f'"{mac_key}"')
    text = set_key(text, "inference", "enabled", "false")
    text = set_key(text, "supervisor", "startup_timeout_s", "120.0")
    cfg.write_text(text)

    r = gekko("run", "--config", str(cfg), "--duration", "3", timeout=200)
    assert r.returncode == 0, r.stderr[-3000:]
    assert gekko_main(["db", "audit", "--config", str(cfg)]) == 0  # in-process: no startup
    audit = capsys.readouterr()
    assert "run.start" in audit.out

    blobs = _redis_blobs(redis_url, eid)
    conf = key(eid, "config")
    assert conf in blobs and b"postgresql://" in blobs[conf]  # the bridge cached it, redacted
    leaks = [k for k, v in blobs.items() if password.encode() in v]
    assert leaks == [], f"password in Redis keys {leaks}"
    assert [k for k, v in blobs.items() if mac_key.encode() in v] == []  # nor the bridge's key
    assert _tables_holding(dsn, password) == [] and _tables_holding(dsn, mac_key) == []
    var = tmp_path / "var"
    files = [p for p in var.rglob("*") if p.is_file()]
    assert (var / "last_run" / "summary.json") in files and (
        var / "last_run" / "fills.jsonl"
    ) in files
    assert [p for p in files if password.encode() in p.read_bytes()] == []
    assert [p for p in files if mac_key.encode() in p.read_bytes()] == []
    for out in (r.stdout, r.stderr, audit.out, audit.err):
        assert password not in out and mac_key not in out
    assert shm_entries(eid) == []
