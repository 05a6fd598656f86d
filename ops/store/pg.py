"""PostgreSQL: where it runs (embedded or a DSN), how to connect, how to retry.

Why it looks like this:

- ``mode = "embedded"`` (the default) starts a real PostgreSQL server from the ``pgserver``
  package with its data under ``<var_dir>/pg`` — no server to install, nothing to download. The
  supervisor owns it: it starts it before any worker and stops it after the last one. Workers
  never start it themselves; they get its DSN in ``GEKKO_PG_DSN``.
- The server must not outlive its supervisor. ``<data_dir>.owner`` records who started it (pid and
  start time, ``ops/identity.py``); a guardian process (``ops/guardian.py``) stops it with
  ``pg_ctl stop -m fast`` when the supervisor dies without doing so (SIGKILL), and a start that
  finds a server whose owner is gone stops that orphan (a log line says so) before starting
  fresh. A server whose owner is alive (another engine, a ``gekko db`` command) is adopted and
  left running at the end.
- Any other mode value is a DSN (``postgresql://...``) of a server someone else runs; its TLS
  parameters (``sslmode`` verify-full for another host, the CA, a client certificate, TLS 1.3)
  are appended to it once, in ``PgSettings.from_config`` (ops/tls.py).
- Every connection carries a ``statement_timeout``: a stuck database must turn into an error the
  recorder can handle (journal, retry), never into a process that hangs.
- Reconnection and retries back off exponentially with full jitter, so a fleet of processes that
  lost the database together does not hammer it in lock-step when it comes back.
- Serialization failures and deadlocks are retried transparently (``run_tx``): they are the
  database asking for a retry, not a bug.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ops.fsperm import allow_traverse
from ops.identity import ProcessIdentity, read_record, remove_record_if_mine, write_record

log = logging.getLogger("gekko.store")
logging.getLogger("pgserver").setLevel(logging.WARNING)  # it logs every pg_ctl call at INFO

DSN_ENV = "GEKKO_PG_DSN"
RUN_ID_ENV = "GEKKO_RUN_ID"
T = TypeVar("T")


@dataclass(frozen=True)
class PgSettings:
    """What the store needs from ``[storage.postgres]`` (decoupled from the config module)."""

    mode: str = "embedded"
    data_dir: str = ""
    pool_size: int = 4
    statement_timeout_ms: int = 5000
    connect_timeout_s: float = 5.0

    @classmethod
    def from_config(cls, cfg: Any) -> PgSettings:
        p = cfg.storage.postgres
        data_dir = p.data_dir or str(Path(cfg.engine.var_dir) / "pg")
        # p.dsn(): a DSN carries its TLS parameters (ops/tls.py) to every connection, workers too
        return cls(
            p.dsn(), data_dir, p.pool_size, int(p.statement_timeout_s * 1000), p.connect_timeout_s
        )

    @property
    def enabled(self) -> bool:
        return self.mode != "off"


class Backoff:
    """Exponential backoff with full jitter: the n-th delay is uniform in [0, min(cap, base*2^n)]."""

    def __init__(
        self, base_s: float = 0.05, cap_s: float = 5.0, rng: random.Random | None = None
    ) -> None:
        self.base_s, self.cap_s = base_s, cap_s
        self.attempts = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        ceiling = min(self.cap_s, self.base_s * (2**self.attempts))
        self.attempts += 1
        return self._rng.uniform(0.0, ceiling)

    def reset(self) -> None:
        self.attempts = 0


def owner_path(data_dir: str | Path) -> Path:
    d = Path(data_dir).resolve()
    return d.with_name(d.name + ".owner")


def system_user() -> str | None:
    """The OS user pgserver runs PostgreSQL as: ``pgserver`` under root, else ourselves."""
    return "pgserver" if hasattr(os, "geteuid") and os.geteuid() == 0 else None


def server_running(data_dir: str | Path) -> bool:
    from pgserver.utils import PostmasterInfo

    info = PostmasterInfo.read_from_pgdata(Path(data_dir).resolve())
    return info is not None and info.is_running()


def pg_ctl_stop(data_dir: str | Path) -> None:
    """``pg_ctl stop -m fast`` (open sessions ended, data flushed); raises on failure.

    Under root pg_ctl runs as the server's user, who may have lost its way to the data (a
    parent narrowed meanwhile): then the postmaster named in ``postmaster.pid`` — checked to be
    a postgres of this data directory — gets SIGINT, which is the same fast shutdown."""
    from pgserver._commands import pg_ctl

    d = Path(data_dir).resolve()
    try:
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=d, user=system_user())
    except subprocess.CalledProcessError:
        if not _signal_postmaster(d):
            raise


def _signal_postmaster(d: Path) -> bool:
    import psutil

    try:
        pid = int((d / "postmaster.pid").read_text().split()[0])
        p = psutil.Process(pid)
        if "postgres" not in p.name() or str(d) not in p.cmdline():
            return False
        p.send_signal(signal.SIGINT)
        p.wait(30)
    except (OSError, ValueError, IndexError, psutil.Error):
        return False
    log.warning("embedded PostgreSQL under %s: pg_ctl failed; stopped by SIGINT", d)
    return True


def stop_if_owned_by(data_dir: str | Path, owner: ProcessIdentity) -> bool:
    """Stop the server under ``data_dir`` if ``owner`` started it (the guardian's job)."""
    got, _ = read_record(owner_path(data_dir))
    if got != owner or not server_running(data_dir):
        return False
    log.warning(
        "embedded PostgreSQL under %s: its supervisor (pid %d) is gone; stopping it",
        data_dir,
        owner.pid,
    )
    pg_ctl_stop(data_dir)
    remove_record_if_mine(owner_path(data_dir), owner)
    return True


class EmbeddedPostgres:
    """A PostgreSQL server under ``data_dir``, run by ``pgserver`` (as user ``pgserver`` under root)."""

    def __init__(self, data_dir: str | Path) -> None:
        self.data_dir = Path(data_dir).resolve()
        self._server: Any = None
        self.adopted = False  # a live process of someone else's runs it: not ours to stop
        self._me: ProcessIdentity | None = None

    def start(self) -> str:
        """Start (or adopt a server its live owner runs on this data dir); returns its DSN.

        A server left running by an owner that is gone is stopped first, then started fresh."""
        import pgserver

        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        # a private directory holding the data stays private, passable by the server's user
        # (ops/fsperm.py): pg_ctl runs as that user and widened prefixes are narrowed again
        private = self.data_dir.parent.stat().st_mode & 0o077 in (0, 0o011)
        if private:
            allow_traverse(self.data_dir.parent, system_user())
        me = ProcessIdentity.current()
        owner, _ = read_record(owner_path(self.data_dir))
        running = server_running(self.data_dir)
        self.adopted = running and owner is not None and owner != me and owner.alive()
        if running and not self.adopted and owner != me:
            log.warning(
                "embedded PostgreSQL under %s was left running by %s: stopping it before "
                "starting fresh",
                self.data_dir,
                f"pid {owner.pid}, which is gone" if owner else "an unknown owner",
            )
            pg_ctl_stop(self.data_dir)
        if not self.adopted:
            write_record(owner_path(self.data_dir), me, data_dir=str(self.data_dir))
            self._me = me
        # cleanup_mode None: we stop it ourselves (``stop``), never from some child's atexit
        self._server = pgserver.get_server(self.data_dir, cleanup_mode=None)
        if private:  # pgserver widened it to o+rx
            allow_traverse(self.data_dir.parent, system_user())
        return self.dsn()

    def dsn(self, database: str | None = None) -> str:
        return self._server.get_uri(database)

    def stop(self) -> None:
        """Stop the server (fast shutdown: open sessions are ended, data is flushed); an adopted
        server is left to its owner."""
        if self._server is None:
            return
        try:
            if not self.adopted:
                pg_ctl_stop(self.data_dir)
                if self._me is not None:
                    remove_record_if_mine(owner_path(self.data_dir), self._me)
        except subprocess.CalledProcessError as exc:
            log.warning(
                "embedded PostgreSQL: pg_ctl stop failed (%s); it may already be stopped", exc
            )
        finally:
            import pgserver.postgres_server as ps

            with contextlib.suppress(Exception):
                ps.PostgresServer._instances.pop(self.data_dir, None)
                self._server.global_process_id_list.get_and_remove(os.getpid())

    def restart(self) -> str:
        """Start again after ``stop`` (the DSN does not change: the socket lives in the data dir)."""
        self._server = None
        return self.start()


def resolve_dsn(settings: PgSettings) -> str:
    """The DSN a worker connects to: the supervisor's embedded server (env) or the config's."""
    if not settings.enabled:
        return ""
    env = os.environ.get(DSN_ENV, "")
    if env:
        return env
    if settings.mode == "embedded":
        return ""  # only the supervisor (or a test) starts it and exports GEKKO_PG_DSN
    return settings.mode


def conn_kwargs(settings: PgSettings) -> dict[str, Any]:
    return {
        "connect_timeout": max(1, int(settings.connect_timeout_s)),
        "options": f"-c statement_timeout={settings.statement_timeout_ms}",
        "autocommit": False,
    }


def connect(dsn: str, settings: PgSettings | None = None) -> Any:
    """One connection with the statement timeout set."""
    import psycopg

    return psycopg.connect(dsn, **conn_kwargs(settings or PgSettings()))


@contextlib.contextmanager
def configured_connection(settings: PgSettings) -> Any:
    """An autocommit connection to the configured database for a command outside a run.

    ``embedded``: the server under ``data_dir`` is adopted if an engine runs it, else started
    for the block and stopped after it. Raises on failure."""
    server = None
    try:
        if settings.mode == "embedded":
            server = EmbeddedPostgres(settings.data_dir)
            dsn = server.start()
        else:
            dsn = settings.mode
        with connect(dsn, settings) as conn:
            conn.autocommit = True
            yield conn
    finally:
        if server is not None:
            server.stop()  # a server adopted from a running engine is left running


def make_pool(
    dsn: str, settings: PgSettings | None = None, *, open_wait_s: float | None = None
) -> Any:
    """A psycopg_pool ConnectionPool (opened without waiting: a dead database is not fatal here)."""
    from psycopg_pool import ConnectionPool

    s = settings or PgSettings()
    pool = ConnectionPool(
        dsn,
        min_size=1,
        max_size=max(1, s.pool_size),
        kwargs=conn_kwargs(s),
        open=False,
        timeout=min(1.0, s.connect_timeout_s),  # a dead database must not stall the caller long
        reconnect_timeout=0,  # never give up reconnecting in the background
        check=ConnectionPool.check_connection,  # a server restart leaves stale connections behind
        name="gekko",
    )
    pool.open(wait=open_wait_s is not None, timeout=open_wait_s or 1.0)
    return pool


RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})  # serialization_failure, deadlock_detected


def run_tx(
    pool_or_conn: Any, fn: Callable[[Any], T], *, attempts: int = 5, backoff: Backoff | None = None
) -> T:
    """Run ``fn(conn)`` in one transaction; retry on serialization failure / deadlock."""
    import psycopg

    bo = backoff or Backoff(0.005, 0.2)
    for attempt in range(attempts):
        try:
            if hasattr(pool_or_conn, "getconn"):  # a pool
                with pool_or_conn.connection() as conn, conn.transaction():
                    return fn(conn)
            conn = pool_or_conn
            with conn.transaction():
                return fn(conn)
        except psycopg.Error as exc:
            state = getattr(exc, "sqlstate", None)
            if state in RETRYABLE_SQLSTATES and attempt + 1 < attempts:
                log.info("transaction retry %d after %s", attempt + 1, state)
                time.sleep(bo.next_delay())
                continue
            raise
    raise AssertionError("unreachable")
