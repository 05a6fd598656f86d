"""The audit log (``audit_log``) and the model registry rows (``models``) in PostgreSQL.

Who did what, when. Two ways in, chosen by who is writing:

- **while the engine runs** nothing here is called from a trading process: the supervisor
  publishes an ``AuditEvent`` on ``control`` and infer a ``ModelRegistered`` on ``forecasts``;
  the recorder journals them with the trading records and writes them with ``Writer`` (which
  calls ``audit_rows`` / ``write_rows`` below). A database that is down delays them, it loses
  and blocks nothing. Each row carries the digest of its frame (migration 0006), so a record
  delivered twice (a recorder restart, a journal replay) is stored once.
- **either way** a row is stored as the next link of its engine's hash chain
  (``ops.store.audit_chain``, migration 0008) and the chain's head is anchored outside the
  database (``ops.store.audit_anchor``): ``gekko db audit --verify`` checks both.
- **outside a run** (``gekko db migrate``, ``gekko train`` / ``export``, ``gekko resume`` of a
  stopped engine) the command writes directly (``record_outside_run``) with the statement
  timeout, and a database that does not answer costs one warning line, never the command.

Risk's trading-state changes are in ``risk_events`` already: they are not repeated here.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import getpass
import hashlib
import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec

from engine.messages import AuditEvent, ModelRegistered
from ops.store.audit_chain import Head
from ops.store.audit_chain import append as append_chained

log = logging.getLogger("gekko.audit")

MAX_DETAIL = 8_000  # characters of detail JSON kept (a ring frame, a readable row)

_enc = msgspec.msgpack.Encoder()


def os_user() -> str:
    """The OS user running this process (the actor of an operator command)."""
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry (a container with an arbitrary uid)
        return f"uid {os.getuid()}"


def audit_event(actor: str, action: str, **detail: Any) -> AuditEvent:
    """An audit record stamped now; ``detail`` must be JSON-able (others become strings).
    Its text is redacted (``ops.secrets.redact``): the audit log is read by more people than
    those who may know the database password."""
    from ops.secrets import redact

    text = redact(msgspec.json.encode(detail, enc_hook=str).decode())
    if len(text) > MAX_DETAIL:
        text = msgspec.json.encode({"truncated": text[:MAX_DETAIL]}).decode()
    return AuditEvent(time.time_ns(), actor, action, text)


def config_sha256(path: str | Path) -> str:
    """sha256 of a config file as redacted (``ops.secrets.config_digest``, the digest the bridge
    caches in Redis): a digest of its plaintext password would let it be guessed offline.
    "" when it cannot be read: the audit row is still written."""
    from ops.secrets import config_digest

    try:
        return config_digest(Path(path).read_text())
    except (OSError, UnicodeDecodeError):
        return ""


def _ts(wall_ns: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(wall_ns / 1e9, dt.UTC)


def _detail_json(text: str) -> str:
    """The detail as a JSON object: text that is not one (bad input) is kept, wrapped."""
    try:
        obj = msgspec.json.decode(text)
    except (msgspec.DecodeError, UnicodeDecodeError):
        obj = None
    if isinstance(obj, dict):
        return text
    return msgspec.json.encode({"raw": text[:MAX_DETAIL]}).decode()


def _created(text: str) -> dt.datetime | None:
    try:
        t = dt.datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return None
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


def _digest(frame: bytes) -> bytes:
    return hashlib.blake2b(frame, digest_size=16).digest()


# --- rows (what ``Writer`` stores) ---------------------------------------------------------------
def audit_rows(run_id: int, msg: Any, frame: bytes | None = None) -> list[tuple]:
    """``audit_log`` rows of one message: (ts, actor, action, detail, run_id, event_hash)."""
    frame = frame if frame is not None else _enc.encode(msg)
    if type(msg) is AuditEvent:
        return [
            (
                _ts(msg.wall_ns),
                msg.actor[:200],
                msg.action[:200],
                _detail_json(msg.detail),
                run_id,
                _digest(frame),
            )
        ]
    if type(msg) is ModelRegistered:
        detail = {"name": msg.name, "version": msg.version, "artifact": msg.artifact}
        if msg.old_version:
            detail["old_version"] = msg.old_version
        return [
            (
                _ts(msg.wall_ns),
                msg.actor[:200],
                f"model.{msg.action}"[:200],
                msgspec.json.encode(detail).decode(),
                run_id,
                _digest(frame),
            )
        ]
    return []


def model_row(msg: ModelRegistered) -> tuple:
    """A ``models`` row: (name, version, created_at, artifact, params, metrics)."""
    return (
        msg.name,
        msg.version,
        _created(msg.created),
        msg.artifact,
        _detail_json(msg.params),
        _detail_json(msg.metrics),
    )


_MODEL_SQL = (
    "INSERT INTO models (name, version, created_at, artifact, params, metrics)"
    " VALUES (%s, %s, coalesce(%s, now()), %s, %s::jsonb, %s::jsonb)"
    " ON CONFLICT (name, version) DO UPDATE SET created_at = EXCLUDED.created_at,"
    " artifact = EXCLUDED.artifact, params = EXCLUDED.params, metrics = EXCLUDED.metrics"
)


def write_rows(
    conn: Any,
    audit: Sequence[tuple],
    models: Sequence[tuple],
    engine_id: str = "",
    *,
    expect: Head | None = None,
) -> Head | None:
    """Store rows inside the caller's transaction (a few per run: plain statements), the audit
    rows chained to ``engine_id``'s log (``expect``: see ``audit_chain.append``); returns its
    new head (None: no audit rows)."""
    if models:
        with conn.cursor() as cur:
            cur.executemany(_MODEL_SQL, list(models))
    return append_chained(conn, engine_id, audit, expect)


def write_messages(conn: Any, run_id: int, msgs: Iterable[Any], engine_id: str = "") -> Head | None:
    """Store ``AuditEvent`` / ``ModelRegistered`` messages (one transaction, the caller's)."""
    audit: list[tuple] = []
    models: list[tuple] = []
    for m in msgs:
        audit += audit_rows(run_id, m)
        if type(m) is ModelRegistered:
            models.append(model_row(m))
    return write_rows(conn, audit, models, engine_id)


def _anchor(cfg: Any, head: Head | None, run_id: int = 0) -> None:
    """Anchor a committed head written outside the recorder (it is that command's last)."""
    if cfg is not None and head is not None and head.added:
        from ops.store.audit_anchor import write_anchor

        write_anchor(cfg, head, run_id)


# --- outside a run: write directly, warn on failure ----------------------------------------------
@contextlib.contextmanager
def open_database(cfg: Any) -> Iterator[Any]:
    """A connection (autocommit, statement timeout) to the configured database, migrated.

    ``embedded``: the server under ``var/pg`` is adopted if an engine runs it, else started
    for the block and stopped after it (as ``gekko db`` commands do). Raises on failure.
    Migrations applied here are audited (actor: the OS user) in the same connection.
    """
    from ops.store.migrate import migrate
    from ops.store.pg import PgSettings, configured_connection

    with configured_connection(PgSettings.from_config(cfg)) as conn:
        done = migrate(conn)
        if done:
            record_migrations(
                conn, done, os_user(), "automatic, before writing the record", cfg=cfg
            )
        yield conn


def record_migrations(
    conn: Any, done: Sequence[Any], actor: str, how: str, *, cfg: Any = None
) -> None:
    """One ``migration.apply`` row for the migrations just applied on ``conn`` (in the chain of
    ``cfg``'s engine, anchored; without ``cfg``: the chain of engine "")."""
    ev = audit_event(
        actor,
        "migration.apply",
        migrations=[f"{m.version:04d}_{m.name}" for m in done],
        how=how,
        pid=os.getpid(),
    )
    with conn.transaction():
        head = write_messages(conn, 0, [ev], cfg.engine.id if cfg is not None else "")
    _anchor(cfg, head)


def record_outside_run(cfg: Any, msgs: Sequence[Any], what: str) -> bool:
    """Write audit / model records directly (a CLI command, no engine in between).

    Storage off: one line saying it is skipped. A database that does not answer: one warning
    line (``what`` says what was not recorded); the command itself goes on. Returns stored?
    """
    from ops.store.pg import PgSettings

    if not PgSettings.from_config(cfg).enabled:
        print(
            f"gekko: [storage.postgres] mode is 'off': {what} not recorded in PostgreSQL",
            file=sys.stderr,
        )
        return False
    try:
        with open_database(cfg) as conn:
            with conn.transaction():
                head = write_messages(conn, 0, msgs, cfg.engine.id)
            _anchor(cfg, head)
        return True
    except Exception as exc:
        from ops.secrets import redact

        first = redact((str(exc).strip().splitlines() or [""])[0])
        print(
            f"gekko: warning: PostgreSQL unreachable ({type(exc).__name__}: {first}): "
            f"{what} not recorded in the database",
            file=sys.stderr,
        )
        return False


def record_or_journal(
    dsn: str,
    settings: Any,
    journal: str | Path,
    run_id: int,
    msgs: Sequence[Any],
    *,
    cfg: Any = None,
) -> bool:
    """The supervisor at the end of a run (its recorder has stopped): write directly (in the
    chain of ``cfg``'s engine, anchored); if the database does not answer, append the records to
    the run's journal, which the next run's recorder replays
    (``PgRecordStore.replay_leftovers``). Returns written now?"""
    from ops.store.pg import connect

    if dsn:
        try:
            with connect(dsn, settings) as conn:
                with conn.transaction():
                    head = write_messages(
                        conn, run_id, msgs, cfg.engine.id if cfg is not None else ""
                    )
                _anchor(cfg, head, run_id)
            return True
        except Exception as exc:
            log.warning("audit: database unreachable at stop (%s): journaled for the next run", exc)
    try:
        from ops.store.journal import Journal

        j = Journal(journal)
        j.append(msgs)
        j.close()
    except OSError as exc:
        log.error("audit: could not journal %d records either (%s): lost", len(msgs), exc)
    return False


# --- reading -------------------------------------------------------------------------------------
def query(conn: Any, last: int = 50, action: str = "") -> list[tuple]:
    """The newest ``last`` rows by time (``action``: exact, or a prefix such as ``operator``),
    oldest first: (id, ts, actor, action, detail, run_id)."""
    where, params = "", []
    if action:
        where = "WHERE action = %s OR action LIKE %s"
        params = [action, action.replace("%", r"\%").replace("_", r"\_") + ".%"]
    rows = conn.execute(
        f"SELECT id, ts, actor, action, detail, run_id FROM audit_log {where}"
        " ORDER BY ts DESC, id DESC LIMIT %s",
        [*params, max(0, last)],
    ).fetchall()
    return rows[::-1]


def format_row(row: tuple) -> str:
    rid, ts, actor, action, detail, run_id = row
    when = ts.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"
    text = msgspec.json.encode(detail).decode() if not isinstance(detail, str) else detail
    run = f" run {run_id}" if run_id else ""
    return f"{rid:>6}  {when}  {actor:<12} {action:<18}{run}  {text}"
