"""The port through which processes reach the system of record without importing ``ops``.

``procs`` sits below ``ops`` (DESIGN §1), but the recorder writes to PostgreSQL and exec files
what its start-up reconciliation found there. So the storage implementation (``ops.store.sink``)
registers itself here (``ops.worker`` does it before a worker runs), and processes only see these
two small protocols. With no store registered (storage off, inline tests) the recorder is not
started. Recovery never reads the database: exec rebuilds from its own journal and the venue,
risk asks exec (``procs.recovery``), so a database that is down never holds a restart back.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

RUN_ID_ENV = "GEKKO_RUN_ID"


class RecordStore(Protocol):
    """What the recorder writes through (one instance per recorder process)."""

    def write_gating(self, records: list[tuple[Any, bytes]]) -> int:
        """Store trading records (message, exact frame) idempotently in one transaction."""
        ...

    def write_md(self, msgs: list[Any]) -> int: ...

    def write_positions(self, rows: list[tuple]) -> None: ...

    def journal_append(self, frames: list[bytes]) -> None: ...

    def journal_frames(self) -> Iterator[bytes]: ...

    def journal_truncate(self) -> None: ...

    def tick(self, now: float) -> None:
        """Every pass (``now``: monotonic seconds): periodic work such as anchoring the audit
        chain's head."""
        ...

    def close(self) -> None: ...


class RecoverySource(Protocol):
    """The record of a run (``load``: for tools and tests; recovery does not use it), and where
    exec files what reconciliation found."""

    def load(self, run_id: int) -> Any:
        """``ops.store.reader.RunState``-like: ``orders``, ``events`` (publication order)."""
        ...

    def record_reconciliation(self, run_id: int, process: str, events: Iterable[Any]) -> None: ...

    def close(self) -> None: ...


_record_store: Callable[[Any], RecordStore] | None = None
_recovery_source: Callable[[Any], RecoverySource | None] | None = None


def register(
    record_store: Callable[[Any], RecordStore] | None,
    recovery_source: Callable[[Any], RecoverySource | None] | None,
) -> None:
    global _record_store, _recovery_source
    _record_store, _recovery_source = record_store, recovery_source


def open_record_store(cfg: Any) -> RecordStore:
    if _record_store is None:
        raise RuntimeError("no record store registered (ops.store.sink.install was not called)")
    return _record_store(cfg)


def open_recovery_source(cfg: Any) -> RecoverySource | None:
    return None if _recovery_source is None else _recovery_source(cfg)


def run_id() -> int:
    """This run's id (the supervisor exports it; 0 outside a supervised run)."""
    try:
        return int(os.environ.get(RUN_ID_ENV, "0"))
    except ValueError:
        return 0
