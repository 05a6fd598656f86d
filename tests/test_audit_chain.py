"""The audit log's hash chain (ops/store/audit_chain.py), its anchors (audit_anchor.py) and
``gekko db audit --verify`` (audit_verify.py): one chain per engine, continued — never forked or
restarted — by every writer (recorder, restarted recorder, journal replay, CLI, the supervisor at
stop); and rows altered, deleted and inserted directly in the real PostgreSQL are found exactly.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import pytest

from ops.config import ConfigError, parse_config
from ops.store.audit import audit_event, record_or_journal, record_outside_run
from ops.store.audit_anchor import Anchor, AnchorPolicy, anchor_paths, read_anchors
from ops.store.audit_chain import Head, row_hash
from ops.store.audit_verify import format_report, verify
from ops.store.migrate import MIGRATIONS_DIR, migrate
from ops.store.pg import PgSettings

pytestmark = pytest.mark.timeout(120)

DEAD_DSN = "postgresql://gekko@127.0.0.1:9/nowhere"  # the discard port: nothing listens
_enc = msgspec.msgpack.Encoder()


def _cfg(tmp_path: Path, dsn: str, eid: str = "e1", anchor_file: str = "", every: int = 100) -> Any:
    text = (
        f'[engine]\nid = "{eid}"\nvar_dir = "{tmp_path / "var"}"\n'
        f'[storage.postgres]\nmode = "{dsn}"\n'
        f'[audit]\nanchor_every = {every}\nanchor_file = "{anchor_file}"\n'
        '[[instruments]]\ninstrument_id = 0\nsymbol = "A"\n'
    )
    path = tmp_path / f"{eid}.toml"
    path.write_text(text)
    return parse_config(text, path)


def _chain(dsn: str, eid: str) -> list[tuple]:
    with psycopg.connect(dsn) as c:
        return c.execute(
            "SELECT id, seq, prev_hash, hash, action FROM audit_log WHERE engine_id = %s"
            " ORDER BY seq",
            (eid,),
        ).fetchall()


def _linked(rows: list[tuple]) -> bool:
    return [r[1] for r in rows] == list(range(1, len(rows) + 1)) and all(
        a[3] == b[2] for a, b in zip(rows, rows[1:], strict=False)
    )


def _store(cfg: Any, run_id: int) -> Any:
    from ops.store.sink import PgRecordStore

    return PgRecordStore(cfg, run_id=run_id)


def _records(*actions: str) -> list[tuple[Any, bytes]]:
    out = []
    for a in actions:
        ev = audit_event("alice", a, n=1.5, note="x")
        out.append((ev, _enc.encode(ev)))
    return out


# --- one chain per engine, whoever writes -------------------------------------------------------
def test_every_writer_continues_the_same_chain_and_anchors_it(
    tmp_path: Path, pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ops.store.sink import journal_path
    from procs.recorder import store_replay

    monkeypatch.setenv("GEKKO_PG_DSN", pg_dsn)
    anchor_file = tmp_path / "anchors.jsonl"
    cfg = _cfg(tmp_path, pg_dsn, anchor_file=str(anchor_file), every=2)
    other = _cfg(tmp_path, pg_dsn, eid="e2")
    with psycopg.connect(pg_dsn, autocommit=True) as c:
        migrate(c)
    # the recorder of run 1 writes three records (anchored: anchor_every = 2) ...
    first = _records("operator.kill", "operator.resume", "worker.restart")
    s1 = _store(cfg, 1)
    s1.write_gating(first)
    assert [a.seq for a in read_anchors([anchor_file])[0]] == [3]
    # ... and is restarted mid-batch: the new one delivers the last two again, and one more
    s1.close()
    s2 = _store(cfg, 1)
    s2.write_gating([*first[1:], *_records("config.reload")])
    # another engine's records interleave in the same table: a chain of their own
    record_outside_run(other, [audit_event("bob", "operator.kill")], "x")
    # the database goes down: records wait in the journal, replayed twice (stored once)
    late = _records("operator.flatten", "model.swap")
    s2.journal_append([f for _, f in late])
    assert store_replay(s2) == 2 and store_replay(s2) == 2
    s2.journal_truncate()
    s2.close()
    # a CLI command outside the run, then the supervisor's run.stop with the database gone ...
    assert record_outside_run(cfg, [audit_event("alice", "operator.resume")], "the resume")
    stop = audit_event("alice", "run.stop", exit_code=0)
    settings = PgSettings.from_config(cfg)
    assert not record_or_journal(DEAD_DSN, settings, journal_path(cfg, 1), 1, [stop], cfg=cfg)
    # ... replayed by the next run's recorder
    s3 = _store(cfg, 2)
    s3.write_gating([])
    s3.close()

    rows = _chain(pg_dsn, "e1")
    assert [r[4] for r in rows] == [
        "operator.kill",
        "operator.resume",
        "worker.restart",
        "config.reload",
        "operator.flatten",
        "model.swap",
        "operator.resume",
        "run.stop",
    ]
    assert _linked(rows) and _linked(_chain(pg_dsn, "e2"))
    # anchored: every writer's head, in the journal and the anchor file alike
    journal = [a for a in read_anchors(anchor_paths(cfg))[0] if a.engine_id == "e1"]
    in_file, problems = read_anchors([anchor_file])
    assert not problems and {(a.seq, a.hash) for a in in_file} <= {(a.seq, a.hash) for a in journal}
    assert [a.seq for a in in_file] == [3, 6, 7, 8]  # recorder, replay, CLI, next recorder
    heads = {r[1]: bytes(r[3]) for r in rows}
    assert all(heads[a.seq] == a.hash for a in journal)
    with psycopg.connect(pg_dsn) as c:
        rep = verify(c, read_anchors(anchor_paths(cfg))[0])
    assert rep.intact, format_report(rep)
    assert [(ch.engine_id, ch.rows) for ch in rep.chains] == [("e1", 8), ("e2", 1)]


def test_a_writer_that_finds_its_last_head_gone_records_it_in_the_chain(
    tmp_path: Path, pg_dsn: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Rows cut off the chain's end while the recorder runs: its next write says so, in the
    chain itself (and the log), so --verify finds it even with no anchor after the cut."""
    monkeypatch.setenv("GEKKO_PG_DSN", pg_dsn)
    cfg = _cfg(tmp_path, pg_dsn)
    with psycopg.connect(pg_dsn, autocommit=True) as c:
        migrate(c)
    s = _store(cfg, 1)
    s.write_gating(_records("operator.kill", "operator.resume", "operator.flatten"))
    with psycopg.connect(pg_dsn, autocommit=True) as c:
        c.execute("DELETE FROM audit_log WHERE engine_id = 'e1' AND seq = 3")
    s.write_gating(_records("config.reload"))
    s.close()
    rows = _chain(pg_dsn, "e1")
    assert _linked(rows) and [r[4] for r in rows] == [
        "operator.kill",
        "operator.resume",
        "audit.chain_tampered",
        "config.reload",
    ]
    assert "the chain of e1 lost its seq 3 since this process wrote it (missing" in caplog.text
    with psycopg.connect(pg_dsn) as c:
        rep = verify(c, [])
    assert [b.kind for b in rep.breaks] == ["deleted"], format_report(rep)
    assert f"'e1' seq 3: missing when id {rows[2][0]} (seq 3" in rep.breaks[0].text


# --- breaks, made directly in PostgreSQL --------------------------------------------------------
@pytest.fixture
def chained(tmp_path: Path, pg_dsn: str) -> Iterator[tuple[str, Any, list[int], list[Anchor]]]:
    """Legacy rows from before migration 0008, then 8 chained records of engine e1 interleaved
    with 3 of e2, anchored at seq 4 and 8 of e1. Yields (dsn, cfg, e1's ids by seq, anchors)."""
    old = tmp_path / "old"
    old.mkdir()
    for p in sorted(MIGRATIONS_DIR.glob("*.sql"))[:7]:
        shutil.copy(p, old / p.name)
    with psycopg.connect(pg_dsn, autocommit=True) as c:
        migrate(c, old)
        for k in range(2):
            c.execute(
                "INSERT INTO audit_log (actor, action, detail) VALUES ('old', 'legacy', %s)",
                (f'{{"k": {k}}}',),
            )
        migrate(c)
    cfg = _cfg(tmp_path, pg_dsn, every=4)
    policy = AnchorPolicy(cfg, 0)
    with psycopg.connect(pg_dsn, autocommit=True) as c:
        from ops.store.audit import write_messages

        for k in range(8):
            with c.transaction():
                head = write_messages(c, 0, [audit_event("alice", f"op.{k}", k=k)], "e1")
            policy.note(head)  # committed
            if k % 3 == 0:
                with c.transaction():
                    write_messages(c, 0, [audit_event("bob", f"other.{k}")], "e2")
    assert policy.written == 2
    ids = [r[0] for r in _chain(pg_dsn, "e1")]
    anchors = read_anchors(anchor_paths(cfg))[0]
    assert [a.seq for a in anchors] == [4, 8]
    yield pg_dsn, cfg, ids, anchors


def _first(dsn: str, anchors: list[Anchor], *tamper: Any) -> tuple[Any, list[str]]:
    """Tamper (statements, each a string or (sql, params)) in a transaction, verify inside it,
    roll back: (the first break, every break's line)."""
    with psycopg.connect(dsn) as c:
        assert verify(c, anchors).intact
        for t in tamper:
            c.execute(*((t,) if isinstance(t, str) else t))
        rep = verify(c, anchors)
        c.rollback()
    assert not rep.intact, "the tampering went unnoticed"
    return rep.breaks[0], [b.line() for b in rep.breaks]


def test_an_altered_record_is_named(chained: tuple) -> None:
    dsn, _, ids, anchors = chained
    for sql in (
        "UPDATE audit_log SET detail = '{\"k\": 99}' WHERE id = %s",
        "UPDATE audit_log SET actor = 'mallory' WHERE id = %s",
        "UPDATE audit_log SET ts = ts + interval '1 microsecond' WHERE id = %s",
        "UPDATE audit_log SET run_id = 5 WHERE id = %s",
    ):
        brk, lines = _first(dsn, anchors, (sql, (ids[2],)))
        assert (brk.kind, brk.pos, brk.engine_id) == ("altered", ids[2], "e1"), lines
        assert f"id {ids[2]} (seq 3" in brk.text and len(lines) == 1, lines


def test_a_record_rehashed_alone_is_named_by_its_successor(chained: tuple) -> None:
    """The attacker recomputes the altered row's own hash: the next row still names the old."""
    dsn, _, ids, anchors = chained
    with psycopg.connect(dsn) as c:
        eid, seq, ts, actor, action, detail, run_id, ev, prev = c.execute(
            "SELECT engine_id, seq, ts, actor, action, detail::text, run_id, event_hash,"
            " prev_hash FROM audit_log WHERE id = %s",
            (ids[5],),
        ).fetchone()
    fake = row_hash(eid, seq, ts, "mallory", action, detail, run_id, ev, prev)
    sql = "UPDATE audit_log SET actor = 'mallory', hash = %s WHERE id = %s"
    brk, lines = _first(dsn, anchors, (sql, (fake, ids[5])))
    assert (brk.kind, brk.pos) == ("altered", ids[5]), lines
    assert "hash was rewritten" in brk.text and f"id {ids[6]}" in brk.text


def test_a_deleted_record_is_named_by_its_place(chained: tuple) -> None:
    dsn, _, ids, anchors = chained
    brk, lines = _first(dsn, anchors, ("DELETE FROM audit_log WHERE id = %s", (ids[4],)))
    assert brk.kind == "deleted" and "'e1' seq 5: missing" in brk.text, lines
    assert f"after id {ids[3]}, before id {ids[5]}" in brk.text and len(lines) == 1, lines
    # two in a row
    brk, _ = _first(dsn, anchors, ("DELETE FROM audit_log WHERE id = ANY(%s)", ([ids[1], ids[2]],)))
    assert "seq 2..3: missing" in brk.text


def test_records_cut_off_the_end_are_found_by_the_anchor(chained: tuple) -> None:
    dsn, _, ids, anchors = chained
    brk, lines = _first(dsn, anchors, ("DELETE FROM audit_log WHERE id = ANY(%s)", (ids[6:],)))
    assert brk.kind == "deleted" and "seq 7..8 at least: cut off the chain's end" in brk.text
    assert len(lines) == 1, lines


def test_an_inserted_record_is_named(chained: tuple) -> None:
    dsn, _, ids, anchors = chained
    # a plain INSERT: no place in any chain
    brk, lines = _first(
        dsn,
        anchors,
        "INSERT INTO audit_log (actor, action, detail) VALUES ('mallory', 'operator.kill', '{}')",
    )
    assert brk.kind == "inserted" and "by mallory" in brk.text and brk.pos > ids[-1], lines
    # a copy of seq 3 claiming its place (the unique index dropped first)
    copy = (
        "INSERT INTO audit_log (ts, actor, action, detail, run_id, engine_id, seq, prev_hash,"
        " hash) SELECT ts, 'mallory', action, detail, run_id, engine_id, seq, prev_hash, hash"
        " FROM audit_log WHERE id = %s"
    )
    brk, lines = _first(dsn, anchors, "DROP INDEX audit_log_chain", (copy, (ids[2],)))
    assert brk.kind == "inserted" and f"seq 3 is id {ids[2]}'s" in brk.text, lines
    assert len(lines) == 1, lines


def test_a_chain_rehashed_after_a_change_is_caught_by_the_anchors(chained: tuple) -> None:
    """Someone who knows the algorithm alters seq 6 and re-hashes everything after it: the chain
    is consistent again, but not with the anchor at seq 8."""
    dsn, _, ids, anchors = chained
    with psycopg.connect(dsn) as c:
        c.execute("UPDATE audit_log SET actor = 'mallory' WHERE id = %s", (ids[5],))
        rows = c.execute(
            "SELECT id, engine_id, seq, ts, actor, action, detail::text, run_id, event_hash,"
            " prev_hash FROM audit_log WHERE engine_id = 'e1' AND seq >= 6 ORDER BY seq"
        ).fetchall()
        prev = bytes(rows[0][9])
        for rid, eid, seq, ts, actor, action, detail, run_id, ev, _ in rows:
            h = row_hash(eid, seq, ts, actor, action, detail, run_id, ev, prev)
            c.execute(
                "UPDATE audit_log SET prev_hash = %s, hash = %s WHERE id = %s", (prev, h, rid)
            )
            prev = h
        assert verify(c, []).intact  # without anchors it cannot be seen
        rep = verify(c, anchors)
        c.rollback()
    (brk,) = rep.breaks
    assert brk.kind == "rewritten" and "seq 5..8" in brk.text and brk.pos == ids[4]


def test_the_records_from_before_the_chain_are_frozen(chained: tuple) -> None:
    dsn, _, _, anchors = chained
    for sql in (
        "UPDATE audit_log SET actor = 'mallory' WHERE action = 'legacy' AND detail->>'k' = '1'",
        "DELETE FROM audit_log WHERE action = 'legacy' AND detail->>'k' = '0'",
    ):
        brk, lines = _first(dsn, anchors, sql)
        assert brk.kind == "altered" and "from before the chain" in brk.text, lines


def test_gekko_db_audit_verify(chained: tuple, capsys: pytest.CaptureFixture[str]) -> None:
    from ops.cli import main

    dsn, cfg, ids, _ = chained
    path = cfg.source_path
    assert main(["db", "audit", "--verify", "--config", path]) == 0
    out = capsys.readouterr().out
    assert "engine 'e1': 8 chained records (seq 1..8), 2 anchors checked" in out
    assert "2 records from before the chain" in out and "audit log intact" in out
    assert "warning: engine 'e2' has no anchors here" in out  # written without an anchor
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("DELETE FROM audit_log WHERE id = %s", (ids[3],))
    assert main(["db", "audit", "--verify", "--config", path]) == 1
    out = capsys.readouterr().out
    assert "audit log BROKEN: first break: deleted: engine 'e1' seq 4: missing" in out


# --- anchors and settings -----------------------------------------------------------------------
def test_anchor_policy_every_n_records_or_t_seconds(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, DEAD_DSN, anchor_file=str(tmp_path / "a.jsonl"), every=3)
    p = AnchorPolicy(cfg, 7)
    h = hashlib.sha256(b"x").digest()
    for seq in (1, 2):
        p.note(Head("e1", seq, h, 1))
    assert p.written == 0
    p.note(Head("e1", 3, h, 1))  # the third record: anchored
    p.note(Head("e1", 4, h, 1))
    p.tick(time.monotonic() + 1)
    assert p.written == 1
    p.tick(time.monotonic() + cfg.audit.anchor_interval_s + 1)  # T seconds after: anchored
    p.tick(time.monotonic() + 2 * cfg.audit.anchor_interval_s + 2)  # nothing new: nothing
    got, problems = read_anchors([tmp_path / "a.jsonl"])
    assert [(a.seq, a.run_id) for a in got] == [(3, 7), (4, 7)] and not problems
    # a torn last line (a crash mid-write) does not swallow the next anchor
    with open(tmp_path / "a.jsonl", "a") as f:
        f.write('{"engine": "e1", "se')
    p.note(Head("e1", 7, h, 3))
    got, problems = read_anchors([tmp_path / "a.jsonl"])
    assert [a.seq for a in got] == [3, 4, 7] and len(problems) == 1
    assert [a.seq for a in read_anchors(anchor_paths(cfg))[0]] == [3, 4, 7, 3, 4, 7]


def test_an_unwritable_anchor_file_is_an_error_naming_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    target = tmp_path / "ro" / "anchors.jsonl"
    target.parent.mkdir()
    os.chmod(target.parent, 0o500)
    try:
        cfg = _cfg(tmp_path, DEAD_DSN, anchor_file=str(target), every=1)
        if os.access(target.parent, os.W_OK):  # root ignores the mode: a file in the way
            os.chmod(target.parent, 0o700)
            target.mkdir()
        p = AnchorPolicy(cfg, 0)
        p.note(Head("e1", 1, b"\0" * 32, 1))
    finally:
        os.chmod(target.parent, 0o700)
    assert f"audit: chain anchor seq 1 not written to {target}" in caplog.text
    assert [a.seq for a in read_anchors(anchor_paths(cfg)[:1])[0]] == [1]  # the journal has it


def test_an_anchor_file_that_cannot_be_appended_to_is_refused_before_the_run(
    tmp_path: Path,
) -> None:
    from ops.preflight import check_anchor_file

    bad = _cfg(tmp_path, DEAD_DSN, anchor_file=str(tmp_path / "no" / "dir" / "a.jsonl"))
    with pytest.raises(ConfigError) as exc:
        check_anchor_file(bad)
    assert exc.value.key == "audit.anchor_file" and "cannot be opened for appending" in str(
        exc.value
    )
    good = _cfg(tmp_path, DEAD_DSN, anchor_file=str(tmp_path / "a.jsonl"))
    check_anchor_file(good)
    assert (tmp_path / "a.jsonl").exists()


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[audit]\nanchor_file = 'rel/anchors'\n", "audit.anchor_file"),
        ("[audit]\nanchor_every = 0\n", "audit.anchor_every"),
        ("[audit]\nanchor_interval_s = -1.0\n", "audit.anchor_interval_s"),
    ],
)
def test_audit_settings_are_checked(text: str, key: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config(text + '[[instruments]]\ninstrument_id = 0\nsymbol = "A"\n')
    assert exc.value.key == key
