"""The PostgreSQL implementation of ``procs.storage``: the recorder's store, exec's and risk's
recovery source. ``install()`` registers both (``ops.worker`` calls it before a worker runs).
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ops.store.audit_anchor import AnchorPolicy
from ops.store.journal import Journal, iter_frames
from ops.store.pg import PgSettings, make_pool, resolve_dsn, run_tx
from ops.store.reader import RunState, load_run_state
from ops.store.writer import Rows, Writer
from procs import storage
from procs.storage import run_id as current_run_id

log = logging.getLogger("gekko.store")


def journal_dir(cfg: Any) -> Path:
    p = cfg.storage.postgres
    return Path(p.journal_dir) if p.journal_dir else Path(cfg.engine.var_dir) / "journal"


def journal_path(cfg: Any, run_id: int) -> Path:
    """One journal per run: a record replayed later still knows which run it belongs to."""
    return journal_dir(cfg) / f"{cfg.engine.id}-{run_id}.journal"


_JOURNAL_NAME = re.compile(r"^(?P<eid>[A-Za-z0-9]+)-(?P<run>\d+)\.journal$")


def is_unavailable(exc: BaseException) -> bool:
    """A database we cannot reach (retry later) rather than one refusing what we sent."""
    import psycopg
    from psycopg_pool import PoolTimeout

    return isinstance(
        exc, psycopg.OperationalError | psycopg.InterfaceError | PoolTimeout | OSError
    )


class PgRecordStore:
    """The recorder's view: COPY batches through a pool, the journal beside it."""

    def __init__(self, cfg: Any, run_id: int | None = None) -> None:
        self.cfg = cfg
        self.settings = PgSettings.from_config(cfg)
        self.run_id = current_run_id() if run_id is None else run_id
        self.journal = Journal(
            journal_path(cfg, self.run_id), fsync=cfg.storage.postgres.journal_fsync
        )
        self.writer = Writer(cfg.engine.id)
        self.anchors = AnchorPolicy(cfg, self.run_id)
        dsn = resolve_dsn(self.settings)
        if not dsn:
            raise RuntimeError(
                "storage.postgres: no DSN (embedded PostgreSQL is started by the supervisor)"
            )
        self.pool = make_pool(dsn, self.settings)
        self._setup_done = False
        self._rejected = 0  # records the database refused (not a connectivity problem)

    def _setup(self) -> None:
        if self._setup_done:
            return

        def tx(conn: Any) -> None:
            Writer.write_run(conn, self.run_id, self.cfg.engine.id, self.cfg.source_path)
            Writer.write_instruments(conn, self.cfg.instruments)

        run_tx(self.pool, tx)
        self._setup_done = True
        self.replay_leftovers()

    def replay_leftovers(self) -> int:
        """Journals of earlier runs (a crash with the database down): replay, then remove."""
        n = 0
        for p in sorted(journal_dir(self.cfg).glob(f"{self.cfg.engine.id}-*.journal")):
            mt = _JOURNAL_NAME.match(p.name)
            if mt is None or int(mt.group("run")) == self.run_id:
                continue
            frames = list(iter_frames(p))
            if frames:
                n += self._write_frames(int(mt.group("run")), frames)
                self._committed()
                log.warning("replayed %d records journaled by run %s", len(frames), mt.group("run"))
            p.unlink()
        return n

    def _write_frames(self, run_id: int, frames: list[bytes]) -> int:
        import msgspec

        from engine.messages import Message

        dec = msgspec.msgpack.Decoder(Message)
        rows = Rows()
        for f in frames:
            with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
                rows.add(run_id, dec.decode(f), f)
        return run_tx(self.pool, lambda conn: self.writer.write(conn, rows))

    def _committed(self) -> None:
        """A write committed: the audit chain's head it left is what the next write expects to
        find (``Writer.committed``), and may be due for an anchor."""
        if self.writer.head is not None:
            self.writer.committed = self.writer.head
        self.anchors.note(self.writer.head)

    @property
    def rejected(self) -> int:
        """Records refused: by the database, or before it (a value out of its column's range)."""
        return self._rejected + self.writer.refused

    # --- procs.storage.RecordStore ---------------------------------------------------------------
    def write_gating(self, records: list[tuple[Any, bytes]]) -> int:
        self._setup()
        rows = Rows()
        for msg, frame in records:
            rows.add(self.run_id, msg, frame)
        try:
            n = run_tx(self.pool, lambda conn: self.writer.write(conn, rows))
            self._committed()
            return n
        except Exception as exc:
            if is_unavailable(exc) or len(records) == 1:
                raise
            # the database answered but refused the batch (a value out of a column's range):
            # one bad record must not block the others forever. Write them one by one; log and
            # count (``rejected``) what the schema refuses.
            n = 0
            for rec in records:
                try:
                    n += self.write_gating([rec])
                except Exception as one:
                    if is_unavailable(one):
                        raise
                    self._rejected += 1
                    log.error(
                        "recorder: record refused by the database, dropped: %r (%s)", rec[0], one
                    )
            return n

    def write_md(self, msgs: list[Any]) -> int:
        self._setup()
        rows = Rows()
        for msg in msgs:
            rows.add(self.run_id, msg)
        if not len(rows):
            return 0

        def tx(conn: Any) -> int:
            # market data is non-gating and may be lost anyway: no wait for the WAL flush
            # (trading records keep synchronous commits: the journal is truncated after them)
            conn.execute("SET LOCAL synchronous_commit = off")
            return self.writer.write(conn, rows)

        try:
            return run_tx(self.pool, tx)
        except Exception as exc:
            if is_unavailable(exc):
                raise
            self._rejected += len(rows)
            log.error(
                "recorder: %d market-data rows refused by the database, dropped (%s)",
                len(rows),
                exc,
            )
            return 0

    def write_positions(self, rows: list[tuple]) -> None:
        if rows:
            self._setup()
            run_tx(self.pool, lambda conn: Writer.write_positions(conn, self.run_id, rows))

    def journal_append(self, frames: list[bytes]) -> None:
        self.journal.append((), frames=frames)

    def journal_frames(self) -> Iterator[bytes]:
        return self.journal.frames()

    def journal_truncate(self) -> None:
        if self.journal.appended or self.journal.path.exists() and self.journal.path.stat().st_size:
            self.journal.truncate()

    def tick(self, now: float) -> None:
        """Time passes (the recorder, every pass): anchor the audit chain when it is due."""
        self.anchors.tick(now)

    def close(self) -> None:
        self.anchors.anchor()  # what this recorder wrote and did not anchor yet
        self.journal.close()
        with contextlib.suppress(Exception):
            self.pool.close(timeout=1.0)


class PgRecoverySource:
    """Exec's and risk's view at start: this run's record (journal + database)."""

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg
        self.settings = PgSettings.from_config(cfg)
        self.dsn = resolve_dsn(self.settings)

    def _conn(self) -> Any:
        from ops.store.pg import connect

        return connect(self.dsn, self.settings)

    def load(self, run_id: int) -> RunState:
        """This run's record. A database that does not answer is waited for (backoff with
        jitter, up to ``recovery_timeout_s``): trading must not resume on half a record. Past
        that, the journal alone (what the database had is then missing: logged loudly)."""
        import time

        from ops.store.pg import Backoff

        jpath = journal_path(self.cfg, run_id)
        deadline = time.monotonic() + self.cfg.storage.postgres.recovery_timeout_s
        backoff = Backoff(0.05, 1.0)
        while True:
            try:
                with self._conn() as conn:
                    return load_run_state(conn, run_id, jpath)
            except Exception as exc:
                if time.monotonic() > deadline:
                    log.error(
                        "recovery: database unreachable (%s): recovering from the journal only", exc
                    )
                    return load_run_state(None, run_id, jpath)
                time.sleep(backoff.next_delay())

    def record_reconciliation(self, run_id: int, process: str, events: Iterable[Any]) -> None:
        evs = list(events)
        if not evs:
            return
        try:
            with self._conn() as conn:
                run_tx(conn, lambda c: Writer.write_reconciliation(c, run_id, process, evs))
        except Exception as exc:
            log.error("recovery: could not store %d reconciliation events (%s)", len(evs), exc)

    def close(self) -> None:
        pass


def _recovery(cfg: Any) -> PgRecoverySource | None:
    s = PgSettings.from_config(cfg)
    if not s.enabled or not resolve_dsn(s):
        return None
    return PgRecoverySource(cfg)


def install() -> None:
    """Register the PostgreSQL store with ``procs.storage``."""
    storage.register(PgRecordStore, _recovery)
