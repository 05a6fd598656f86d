"""The ``audit_log`` and ``models`` tables: written while the engine runs (through the recorder),
by CLI commands outside a run (directly), and read back by ``gekko db audit`` and
``gekko models list --db``. Real PostgreSQL, real processes."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import time
import uuid
from pathlib import Path

import msgspec
import psycopg
import pytest

from engine.messages import AuditEvent
from models.registration import registered_message
from models.registry import SHIPPED, read_meta
from ops.store.audit import audit_event, os_user, record_or_journal
from ops.store.migrate import migrate
from ops.store.pg import PgSettings
from ops.store.writer import Rows, Writer
from tests.test_engine_e2e import write_config

pytestmark = pytest.mark.timeout(240)

DEAD_DSN = "postgresql://gekko@127.0.0.1:9/nowhere"  # the discard port: nothing listens


def _migrated(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as c:
        migrate(c)


def _audit(dsn: str, action: str = "") -> list[tuple]:
    with psycopg.connect(dsn) as c:
        return c.execute(
            "SELECT actor, action, detail, run_id FROM audit_log"
            " WHERE %s = '' OR action LIKE %s ORDER BY id",
            (action, action + "%"),
        ).fetchall()


def _models(dsn: str) -> list[tuple]:
    with psycopg.connect(dsn) as c:
        return c.execute(
            "SELECT name, version, artifact, params, metrics, created_at FROM models"
            " ORDER BY name, version"
        ).fetchall()


def _config(tmp_path: Path, dsn: str, *, inference: bool = True, eid: str = "") -> Path:
    """The default config with a private engine id and var dir, the database at ``dsn``."""
    cfg = write_config(tmp_path, eid or "a" + uuid.uuid4().hex[:7])
    text = cfg.read_text()
    start = text.index("[storage.postgres]")
    at = text.index('mode = "embedded"', start)
    text = text[:at] + f'mode = "{dsn}"' + text[at + len('mode = "embedded"') :]
    if not inference:
        inf = text.index("[inference]")
        at = text.index("enabled = true", inf)
        text = text[:at] + "enabled = false" + text[at + len("enabled = true") :]
    cfg.write_text(text)
    return cfg


# --- the writer: what the recorder stores, once ----------------------------------------------
def test_audit_and_model_records_are_stored_once_and_models_upserted(pg_dsn: str) -> None:
    _migrated(pg_dsn)
    ev = audit_event("alice", "operator.kill", command="gekko kill", n=1.5)
    reg = registered_message(SHIPPED, read_meta(SHIPPED), "serve", "infer")
    bad = AuditEvent(time.time_ns(), "bob", "odd", "not json {")
    enc = msgspec.msgpack.Encoder()
    w = Writer()
    for _ in range(2):  # delivered twice (a recorder restart, a journal replay): stored once
        rows = Rows()
        for m in (ev, reg, bad):
            rows.add(7, m, enc.encode(m))
        with psycopg.connect(pg_dsn) as c, c.transaction():
            w.write(c, rows)
    got = _audit(pg_dsn)
    assert [(a, b) for a, b, _, _ in got] == [
        ("alice", "operator.kill"),
        ("infer", "model.serve"),
        ("bob", "odd"),
    ]
    assert got[0][2] == {"command": "gekko kill", "n": 1.5} and got[0][3] == 7
    assert got[1][2]["name"] == "default" and got[1][2]["version"] == read_meta(SHIPPED)["version"]
    assert got[2][2] == {"raw": "not json {"}  # bad input kept, readable, not a failed batch
    ((name, version, artifact, params, metrics, created),) = _models(pg_dsn)
    meta = read_meta(SHIPPED)
    assert (name, version) == (meta["name"], meta["version"])
    assert artifact == str((SHIPPED / "model.onnx").resolve())
    assert params["training"]["data_sha256"] == meta["training"]["data_sha256"]
    assert params["hyperparameters"] == meta["hyperparameters"]
    assert metrics == json.loads(json.dumps(meta["metrics"]))
    assert created == dt.datetime.fromisoformat(meta["created"])
    # a re-registration (say `gekko export` after a retrain in place) updates the row
    meta2 = dict(meta, metrics={"table": [{"name": "nhits", "mase": 0.5, "dir_acc": 0.7}]})
    again = registered_message(SHIPPED, meta2, "export", "alice")
    rows = Rows()
    rows.add(0, again)
    with psycopg.connect(pg_dsn) as c, c.transaction():
        w.write(c, rows)
    ((_, _, _, _, metrics, _),) = _models(pg_dsn)
    assert metrics["table"][0]["mase"] == 0.5
    assert _audit(pg_dsn, "model.export")[0][0] == "alice"


def test_run_stop_written_directly_or_journaled_and_replayed_by_the_next_run(
    tmp_path: Path, pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ops.config import load_config
    from ops.store.sink import PgRecordStore, journal_path

    _migrated(pg_dsn)
    cfg = load_config(_config(tmp_path, pg_dsn, inference=False))
    settings = PgSettings.from_config(cfg)
    stop = audit_event("alice", "run.stop", exit_code=0, fills=3)
    jpath = journal_path(cfg, 111)
    # the database answers: written now, nothing journaled
    assert record_or_journal(pg_dsn, settings, jpath, 111, [stop]) is True
    assert not jpath.exists()
    # it does not: the record waits in run 111's journal ...
    late = audit_event("alice", "run.stop", exit_code=1, fills=4)
    assert record_or_journal(DEAD_DSN, settings, jpath, 111, [late]) is False
    assert jpath.exists() and jpath.stat().st_size > 0
    assert len(_audit(pg_dsn, "run.stop")) == 1
    # ... and the next run's recorder replays it, with run 111's id
    monkeypatch.setenv("GEKKO_PG_DSN", pg_dsn)
    store = PgRecordStore(cfg, run_id=222)
    store.write_gating([])
    store.close()
    got = _audit(pg_dsn, "run.stop")
    assert [(d["exit_code"], r) for _, _, d, r in got] == [(0, 111), (1, 111)]
    assert not jpath.exists()


def test_journaled_audit_and_model_records_are_replayed_once(
    tmp_path: Path, pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the recorder does with the supervisor's and infer's records while the database is
    down: journaled like trading records, replayed (twice here: stored once)."""
    from ops.config import load_config
    from ops.store.sink import PgRecordStore
    from procs.recorder import store_replay

    _migrated(pg_dsn)
    cfg = load_config(_config(tmp_path, pg_dsn, inference=False))
    enc = msgspec.msgpack.Encoder()
    msgs = [
        audit_event("supervisor", "worker.restart", worker="exec", restart=1),
        registered_message(SHIPPED, read_meta(SHIPPED), "swap", "infer", "v1"),
    ]
    monkeypatch.setenv("GEKKO_PG_DSN", pg_dsn)
    store = PgRecordStore(cfg, run_id=333)
    store.journal_append([enc.encode(m) for m in msgs])
    assert store_replay(store) == 3 and store_replay(store) == 3  # 2 audit rows + 1 model
    store.journal_truncate()
    store.close()
    got = _audit(pg_dsn)
    assert [(a, b, r) for a, b, _, r in got] == [
        ("supervisor", "worker.restart", 333),
        ("infer", "model.swap", 333),
    ]
    assert got[1][2]["old_version"] == "v1"
    assert len(_models(pg_dsn)) == 1


def test_operator_requests_pair_with_their_signal_kind(tmp_path: Path) -> None:
    from ops.operator import take_request, write_request

    write_request(tmp_path, "e1", "kill", "gekko kill", "alice")
    time.sleep(0.001)
    write_request(tmp_path, "e1", "resume", "gekko resume", "bob")
    write_request(tmp_path, "e1", "kill", "gekko kill", "carol")
    assert take_request(tmp_path, "e1", "resume")["actor"] == "bob"
    assert take_request(tmp_path, "e1", "kill")["actor"] == "alice"  # oldest first
    assert take_request(tmp_path, "e1", "kill")["actor"] == "carol"
    assert take_request(tmp_path, "e1", "kill") is None
    assert take_request(tmp_path, "other", "kill") is None
    # a torn or foreign file is dropped, not fatal
    (tmp_path / "operator" / "e1" / "1-2-kill.json").write_text("{torn")
    assert take_request(tmp_path, "e1", "kill") is None


# --- CLI commands outside a run: written directly ----------------------------------------------
def test_db_migrate_and_resume_of_a_stopped_engine_are_audited_and_listed(
    tmp_path: Path, pg_dsn: str
) -> None:
    from tests.test_engine_e2e import gekko

    cfg = _config(tmp_path, pg_dsn, inference=False)
    r = gekko("db", "migrate", "--config", str(cfg))
    assert r.returncode == 0 and "applied 0006_audit_key" in r.stdout, r.stderr
    from ops.config import load_config
    from procs.risk import save_state, state_path

    # the engine stopped HALTED: `gekko resume` re-arms its recorded state (no engine to signal)
    save_state(state_path(load_config(cfg)), {"state": "HALTED", "reason": "kill", "source": "x"})
    r = gekko("resume", "--config", str(cfg))
    assert r.returncode == 0 and "is now ACTIVE" in r.stdout, r.stderr
    (mig,) = _audit(pg_dsn, "migration")
    assert mig[0] == os_user() and "0001_initial" in mig[2]["migrations"]
    assert mig[2]["how"] == "gekko db migrate"
    (res,) = _audit(pg_dsn, "operator.resume")
    assert res[0] == os_user() and res[2]["engine_running"] is False
    r = gekko("db", "audit", "--config", str(cfg))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 2 and "migration.apply" in lines[0] and "operator.resume" in lines[1]
    r = gekko("db", "audit", "--config", str(cfg), "--action", "operator", "--json")
    (only,) = [json.loads(x) for x in r.stdout.splitlines()]
    assert only["action"] == "operator.resume" and only["actor"] == os_user()
    r = gekko("db", "audit", "--config", str(cfg), "--last", "1")
    assert len(r.stdout.splitlines()) == 1 and "operator.resume" in r.stdout
    r = gekko("db", "audit", "--config", str(cfg), "--action", "nothing.like.this")
    assert r.returncode == 0 and "no audit records" in r.stdout


TRAIN = [
    "train",
    "--source",
    "sine",
    "--bars",
    "500",
    "--input-size",
    "8",
    "--horizon",
    "2",
    "--hidden",
    "8",
    "--epochs",
    "2",
    "--folds",
    "1",
    "--no-progress",
]


def test_train_registers_its_model_and_a_dead_database_only_warns(
    tmp_path: Path, pg_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from ops.cli import main

    cfg = _config(tmp_path, pg_dsn, inference=False)
    root = tmp_path / "reg"
    assert main([*TRAIN, "--config", str(cfg), "--root", str(root), "--name", "toy"]) == 0
    assert "registered model toy v1 in PostgreSQL" in capsys.readouterr().out
    # re-exported in place: the same row, and an audit row saying who did it
    assert main(["export", "--model", str(root / "toy" / "v1"), "--config", str(cfg)]) == 0
    assert "registered model toy v1 in PostgreSQL" in capsys.readouterr().out
    ((name, version, artifact, params, metrics, _),) = _models(pg_dsn)
    meta = read_meta(root / "toy" / "v1")
    assert (name, version, artifact) == ("toy", "v1", str(root / "toy" / "v1" / "model.onnx"))
    assert params["training"]["command"] == meta["training"]["command"]
    assert params["training"]["seed"] == meta["training"]["seed"] == 0
    assert {r["name"] for r in metrics["table"]} >= {"nhits", "random walk"}
    got = [(actor, action, d["version"]) for actor, action, d, _ in _audit(pg_dsn, "model.")]
    assert got == [(os_user(), "model.train", "v1"), (os_user(), "model.export", "v1")]
    assert main(["models", "list", "--db", "--config", str(cfg)]) == 0
    listing = capsys.readouterr().out
    (row,) = [x for x in listing.splitlines() if x.startswith("toy")]
    mase = next(r["mase"] for r in metrics["table"] if r["name"] == "nhits")
    assert "v1" in row and f"{mase:.3f}" in row and "nhits" in row

    # a database that does not answer: one warning, the files written, exit 0
    (tmp_path / "dead").mkdir()
    dead = _config(tmp_path / "dead", DEAD_DSN, inference=False)
    dead_args = [*TRAIN, "--no-checkpoint", "--config", str(dead)]
    assert main([*dead_args, "--root", str(root), "--name", "toy"]) == 0
    err = capsys.readouterr().err
    assert "warning: PostgreSQL unreachable" in err and "toy v2 not recorded" in err
    assert read_meta(root / "toy" / "v2")["version"] == "v2"
    assert (root / "toy" / "v2" / "model.onnx").stat().st_size > 0
    assert len(_models(pg_dsn)) == 1  # nothing reached the other database, of course
    # storage off: one line saying so
    off = tmp_path / "off.toml"
    off.write_text(dead.read_text().replace(f'mode = "{DEAD_DSN}"', 'mode = "off"'))
    assert (
        main(
            [*TRAIN, "--no-checkpoint", "--config", str(off), "--root", str(root), "--name", "toy"]
        )
        == 0
    )
    assert "mode is 'off': model toy v3 not recorded" in capsys.readouterr().err


# --- a real run: start/stop, operator commands, a restart, the served and swapped model ------
def _serve_from_registry(cfg: Path, reg: Path) -> None:
    """Serve from a registry directory holding a copy of the shipped model as x/v1."""
    shutil.copytree(SHIPPED, reg / "v1")
    meta = json.loads((reg / "v1" / "meta.json").read_text())
    meta.update(name="x", version="v1", created="2026-01-01T00:00:00+00:00")
    (reg / "v1" / "meta.json").write_text(json.dumps(meta))
    text = cfg.read_text()
    at = text.index('model_dir = "', text.index("[inference]"))
    end = text.index("\n", at)
    cfg.write_text(text[:at] + f'model_dir = "{reg}"' + text[end:])


def test_a_run_leaves_its_audit_trail_and_the_served_models(tmp_path: Path, pg_dsn: str) -> None:
    from tests.test_engine_e2e import (
        _children,
        _cmd,
        _wait_for,
        gekko,
        health,
        running_engine,
        wait_counter,
    )

    eid = "m" + uuid.uuid4().hex[:7]
    cfg = _config(tmp_path, pg_dsn, eid=eid)
    reg = tmp_path / "registry"
    _serve_from_registry(cfg, reg)
    with running_engine(cfg, tmp_path, eid) as proc:
        # the operator: kill, then resume (actor: the OS user, via the gekko CLI)
        r = gekko("kill", "--config", str(cfg))
        assert r.returncode == 0, r.stderr
        assert wait_counter(eid, "risk", "kills", 1, 60)
        r = gekko("resume", "--config", str(cfg))
        assert r.returncode == 0, r.stderr
        # a new version appears: infer swaps it in
        shutil.copytree(reg / "v1", reg / "v2")
        meta = json.loads((reg / "v2" / "meta.json").read_text())
        meta.update(version="v2", created="2026-02-01T00:00:00+00:00")
        (reg / "v2" / "meta.json").write_text(json.dumps(meta))
        assert wait_counter(eid, "infer", "model_swaps", 1, 60)
        # a worker dies: the supervisor restarts it
        victim = [c for c in _children(proc.pid) if "strategy" in _cmd(c)][0]
        os.kill(victim.pid, signal.SIGKILL)
        assert _wait_for(lambda: health(eid).get("strategy", (0,))[0] not in (0, victim.pid), 60)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=90)
    assert proc.returncode == 0, err[-3000:]

    rows = _audit(pg_dsn)
    actions = [a for _, a, _, _ in rows]
    assert actions[0] == "migration.apply" and actions[-1] == "run.stop", actions
    (start,) = [d for _, a, d, _ in rows if a == "run.start"]
    assert start["engine_id"] == eid and start["user"] == os_user()
    assert start["config_path"] == str(cfg.resolve()) and start["pid"] == proc.pid
    import hashlib

    assert start["config_sha256"] == hashlib.sha256(cfg.read_bytes()).hexdigest()
    ops = [(actor, a, d["command"]) for actor, a, d, _ in rows if a.startswith("operator.")]
    assert ops == [
        (os_user(), "operator.kill", "gekko kill"),
        (os_user(), "operator.resume", "gekko resume"),
    ]
    (restart,) = [d for _, a, d, _ in rows if a == "worker.restart"]
    assert restart["worker"] == "strategy" and restart["reason"].startswith("exited")
    served = [(actor, a, d["version"]) for actor, a, d, _ in rows if a.startswith("model.")]
    assert served[0] == ("infer", "model.serve", "v1") and ("infer", "model.swap", "v2") in served
    (stop,) = [(d, run) for _, a, d, run in rows if a == "run.stop"]
    assert stop[0]["exit_code"] == 0 and stop[0]["reason"] == "SIGTERM"
    assert stop[0]["restarts"] == 1 and stop[0]["run_id"] == start["run_id"] == stop[1]
    # every row written during the run carries the run's id
    assert {run for _, a, _, run in rows if a != "migration.apply"} == {start["run_id"]}
    # the models table: both served versions, with their walk-forward metrics
    got = {(n, v): (art, m) for n, v, art, _, m, _ in _models(pg_dsn)}
    assert set(got) == {("x", "v1"), ("x", "v2")}
    assert got[("x", "v2")][0] == str(reg / "v2" / "model.onnx")
    assert got[("x", "v1")][1]["table"] == read_meta(SHIPPED)["metrics"]["table"]
    # one intact hash chain, the engine's, whose last anchor is run.stop's (the supervisor's)
    from ops.config import load_config
    from ops.store.audit_anchor import anchor_paths, read_anchors
    from ops.store.audit_verify import verify

    anchors, problems = read_anchors(anchor_paths(load_config(cfg)))
    assert not problems and anchors and anchors[-1].seq == len(rows)
    with psycopg.connect(pg_dsn) as c:
        rep = verify(c, anchors)
    assert rep.intact and [(ch.engine_id, ch.rows) for ch in rep.chains] == [(eid, len(rows))]
