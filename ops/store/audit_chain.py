"""The audit log's hash chain, one per engine: what makes ``audit_log`` tamper-evident.

Each row carries ``seq`` (1, 2, 3, ... within its engine), ``prev_hash`` (the previous row's
``hash``; the first row's is the engine's genesis hash) and ``hash`` = SHA-256 over the row's
canonical encoding and ``prev_hash`` (migration 0008). A row altered, deleted or inserted in the
database breaks the chain where it happened; ``ops.store.audit_verify`` finds the break.

Why the chain is extended inside the writing transaction, from the database's own head, under a
per-engine advisory lock: audit rows reach the database from several writers (the recorder, a
journal replayed after an outage, the supervisor at stop, CLI commands outside a run) and a row
may be delivered twice. Reading the head where the rows are stored — never from memory — makes a
recorder restart or a replay continue the chain instead of forking or restarting it, and a
duplicate (the same frame digest) is skipped before it takes a position.

What is hashed: MessagePack of [version, engine, seq, ts in µs, actor, action, detail as
PostgreSQL's jsonb text, run, frame digest], the values as the database hands them back, so a
verifier recomputes exactly what was hashed (jsonb normalises the detail: it is hashed after).
Rows from before migration 0008 stay unchained; the engine's genesis (``audit_genesis``) holds
their count, last id and digest, which freezes them too.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import msgspec

log = logging.getLogger("gekko.audit")

VERSION = 1
TAMPERED = "audit.chain_tampered"  # the action of a writer's record that its last head is gone
_LOCK = 0x67_6B_61_63  # "gkac": first key of pg_advisory_xact_lock(int, int), per engine second
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_US = dt.timedelta(microseconds=1)
_enc = msgspec.msgpack.Encoder()

_INSERT = (
    "INSERT INTO audit_log (ts, actor, action, detail, run_id, event_hash,"
    " engine_id, seq, prev_hash, hash)"
    " VALUES (%s, %s, %s, %s::jsonb, %s, %s, %s, %s, %s, %s)"
    " ON CONFLICT (event_hash) DO NOTHING RETURNING id"
)


class Head(NamedTuple):
    """An engine's chain head after a write: its last ``seq`` and ``hash``; ``added``: rows
    this write appended (duplicates skipped)."""

    engine_id: str
    seq: int
    hash: bytes
    added: int = 0


class Genesis(NamedTuple):
    engine_id: str
    created_at: dt.datetime
    legacy_rows: int
    legacy_last_id: int
    legacy_sha256: bytes
    hash: bytes


def micros(ts: dt.datetime) -> int:
    """A timestamptz as integer µs since the epoch (exact: no float on the way)."""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=dt.UTC)
    return (ts - _EPOCH) // _US


def row_hash(
    engine_id: str,
    seq: int,
    ts: dt.datetime,
    actor: str,
    action: str,
    detail_text: str,
    run_id: int,
    event_hash: bytes | None,
    prev_hash: bytes,
) -> bytes:
    """The hash of one chained row (``detail_text``: PostgreSQL's ``detail::text``)."""
    body = _enc.encode(
        [
            VERSION,
            engine_id,
            seq,
            micros(ts),
            actor,
            action,
            detail_text,
            run_id,
            bytes(event_hash) if event_hash is not None else None,
        ]
    )
    return hashlib.sha256(b"gekko-audit-row\0" + bytes(prev_hash) + body).digest()


def genesis_hash(
    engine_id: str, created_at: dt.datetime, rows: int, last_id: int, digest: bytes
) -> bytes:
    body = _enc.encode([VERSION, engine_id, micros(created_at), rows, last_id, bytes(digest)])
    return hashlib.sha256(b"gekko-audit-genesis\0" + body).digest()


_LEGACY_SQL = (
    "SELECT id, ts, actor, action, detail::text, run_id, event_hash FROM audit_log"
    " WHERE seq IS NULL AND id <= %s ORDER BY id"
)


def legacy_digest(rows: Iterable[tuple]) -> tuple[int, bytes]:
    """(count, SHA-256) of unchained rows (id, ts, actor, action, detail text, run, digest)."""
    h = hashlib.sha256(b"gekko-audit-legacy\0")
    n = 0
    for rid, ts, actor, action, detail, run_id, ev in rows:
        ev = bytes(ev) if ev is not None else None
        h.update(_enc.encode([rid, micros(ts), actor, action, detail, run_id, ev]))
        n += 1
    return n, h.digest()


def read_legacy(conn: Any, last_id: int) -> list[tuple]:
    return conn.execute(_LEGACY_SQL, (last_id,)).fetchall()


def _genesis(conn: Any, engine_id: str) -> bytes:
    """The engine's genesis hash, the genesis written first if it has none."""
    got = conn.execute(
        "SELECT hash FROM audit_genesis WHERE engine_id = %s", (engine_id,)
    ).fetchone()
    if got is not None:
        return bytes(got[0])
    last = conn.execute("SELECT coalesce(max(id), 0) FROM audit_log WHERE seq IS NULL").fetchone()
    last_id = int(last[0])
    n, digest = legacy_digest(read_legacy(conn, last_id))
    now = dt.datetime.now(dt.UTC)
    h = genesis_hash(engine_id, now, n, last_id, digest)
    conn.execute(
        "INSERT INTO audit_genesis (engine_id, created_at, legacy_rows, legacy_last_id,"
        " legacy_sha256, hash) VALUES (%s, %s, %s, %s, %s, %s)",
        (engine_id, now, n, last_id, digest, h),
    )
    return h


def head(conn: Any, engine_id: str) -> Head:
    """The engine's chain head in the database (seq 0 and the genesis hash when empty)."""
    got = conn.execute(
        "SELECT seq, hash FROM audit_log WHERE engine_id = %s AND seq IS NOT NULL"
        " ORDER BY seq DESC LIMIT 1",
        (engine_id,),
    ).fetchone()
    if got is not None:
        return Head(engine_id, int(got[0]), bytes(got[1]))
    return Head(engine_id, 0, _genesis(conn, engine_id))


def _lost(conn: Any, expect: Head, top: Head, run_id: int) -> tuple | None:
    """An ``audit.chain_tampered`` row when the head this writer committed last (``expect``)
    is no longer in the database as it wrote it: rows deleted or rewritten under it."""
    got = conn.execute(
        "SELECT hash FROM audit_log WHERE engine_id = %s AND seq = %s",
        (expect.engine_id, expect.seq),
    ).fetchone()
    if got is not None and bytes(got[0]) == expect.hash:
        return None
    found = "missing" if got is None else "a different hash"
    log.error(
        "audit: the chain of %s lost its seq %d since this process wrote it (%s; the head is"
        " now seq %d): records were deleted or rewritten in the database",
        expect.engine_id,
        expect.seq,
        found,
        top.seq,
    )
    detail = {"expected_seq": expect.seq, "expected_hash": expect.hash.hex(), "found": found}
    detail["head_seq"] = top.seq
    key = hashlib.blake2b(_enc.encode([expect, top]), digest_size=16).digest()
    now = dt.datetime.now(dt.UTC)
    return (now, "gekko", TAMPERED, msgspec.json.encode(detail).decode(), run_id, key)


def append(
    conn: Any, engine_id: str, rows: Sequence[tuple], expect: Head | None = None
) -> Head | None:
    """Chain and store ``audit_log`` rows (ts, actor, action, detail text, run_id, event_hash)
    of ``engine_id``, in order, inside the caller's transaction (a savepoint of its own).

    A row whose frame digest is stored already is skipped and takes no position. ``expect``:
    the head this writer committed last; if the database lost it, an ``audit.chain_tampered``
    row goes first. Returns the new head (``added`` = rows appended), or None when ``rows`` is
    empty."""
    if not rows:
        return None
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_LOCK, engine_id))
        top = head(conn, engine_id)
        if expect is not None and expect.seq > 0:
            tampered = _lost(conn, expect, top, rows[0][4])
            rows = [tampered, *rows] if tampered else rows
        # the detail as the database will store and return it (jsonb normalises the text)
        texts = [r[3] for r in rows]
        norm = conn.execute(
            "SELECT t::jsonb::text FROM unnest(%s::text[]) WITH ORDINALITY AS u(t, n) ORDER BY n",
            (texts,),
        ).fetchall()
        seq, prev, added = top.seq, top.hash, 0
        with conn.cursor() as cur:
            for (ts, actor, action, detail, run_id, ev), (text,) in zip(rows, norm, strict=True):
                h = row_hash(engine_id, seq + 1, ts, actor, action, text, run_id, ev, prev)
                cur.execute(
                    _INSERT, (ts, actor, action, detail, run_id, ev, engine_id, seq + 1, prev, h)
                )
                if cur.fetchone() is None:  # delivered before (a restart, a replay)
                    continue
                seq, prev, added = seq + 1, h, added + 1
        return Head(engine_id, seq, prev, added)
