"""Logs (ops/logs.py): ``log_format = "json"`` in every process of a real run, and the noise a
new user saw on every default run (docs/operations.md, "Logs")."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT
from tests.test_engine_e2e import set_key, write_config

pytestmark = pytest.mark.timeout(180)

FIELDS = ("ts", "level", "engine_id", "process", "incarnation", "pid", "logger", "msg")
WORKERS = {"supervisor", "feed", "strategy", "risk", "exec", "infer", "recorder"}


def _record(line: str) -> dict[str, Any]:
    obj = json.loads(line)
    assert isinstance(obj, dict), line
    return obj


def _micros(text: str) -> float:
    """``817µs`` / ``14.7ms`` / ``1.02s`` (ops/report.py ``_us``) in µs."""
    for unit, scale in (("µs", 1.0), ("ms", 1e3), ("s", 1e6)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * scale
    raise ValueError(text)


@dataclass
class Run:
    engine_id: str
    config: Path
    rc: int
    stdout: list[str]
    stderr: list[str]
    killed_pid: int


def _pump(stream: Any, into: list[str]) -> None:
    for line in stream:
        into.append(line)


def _wait_for(lines: list[str], pred: Any, timeout: float) -> dict[str, Any] | None:
    """The first JSON record of ``lines`` (growing) that ``pred`` accepts."""
    deadline = time.monotonic() + timeout
    seen = 0
    while time.monotonic() < deadline:
        while seen < len(lines):
            rec = json.loads(lines[seen])
            seen += 1
            if pred(rec):
                return rec
        time.sleep(0.05)
    return None


@pytest.fixture(scope="module")
def json_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """The default config as `make run` starts it (embedded PostgreSQL, a first start, no
    $XDG_RUNTIME_DIR as in a container or over ssh) but with ``log_format = "json"``: strategy
    is SIGKILLed once the engine runs, and the run is stopped with SIGINT once its new
    incarnation has logged."""
    tmp = tmp_path_factory.mktemp("jsonlogs")
    eid = "lg" + uuid.uuid4().hex[:8]
    cfg = write_config(tmp, eid)
    cfg.write_text(set_key(cfg.read_text(), "engine", "log_format", '"json"'))
    env = {k: v for k, v in os.environ.items() if k != "XDG_RUNTIME_DIR"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ops.cli", "run", "--config", str(cfg), "--duration", "90"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=env,
    )
    out: list[str] = []
    err: list[str] = []
    pumps = [
        threading.Thread(target=_pump, args=(proc.stdout, out), daemon=True),
        threading.Thread(target=_pump, args=(proc.stderr, err), daemon=True),
    ]
    for t in pumps:
        t.start()
    killed = 0
    try:
        running = _wait_for(err, lambda r: r["msg"].startswith(f"engine {eid} running"), 90)
        assert running is not None, "".join(err)
        started = _wait_for(err, lambda r: r["msg"].startswith("started strategy (pid"), 1)
        assert started is not None
        killed = int(started["msg"].split("pid ")[1].split(",")[0])
        os.kill(killed, signal.SIGKILL)
        again = _wait_for(err, lambda r: r["process"] == "strategy" and r["incarnation"] == 1, 60)
        assert again is not None, "".join(err)
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        for t in pumps:
            t.join(10)
    yield Run(eid, cfg, rc, out, err, killed)


def test_every_line_of_a_json_run_is_a_json_record_from_every_process(json_run: Run) -> None:
    assert json_run.rc == 0, "".join(json_run.stderr[-30:])
    procs = set()
    for stream in (json_run.stderr, json_run.stdout):
        assert stream
        for line in stream:
            rec = _record(line)
            assert all(k in rec for k in FIELDS), line
            assert rec["engine_id"] == json_run.engine_id
            assert rec["level"] in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
            assert isinstance(rec["incarnation"], int) and isinstance(rec["pid"], int)
            assert datetime.fromisoformat(rec["ts"].replace("Z", "+00:00")).tzinfo is not None
            procs.add(rec["process"])
    assert procs >= WORKERS
    # the status lines and the summary (stdout) are records of the supervisor
    msgs = [_record(line)["msg"] for line in json_run.stdout]
    assert any("ticks/s" in m for m in msgs) and any("Gekko run summary" in m for m in msgs)


def test_each_record_names_its_worker_and_incarnation(json_run: Run) -> None:
    recs = [_record(line) for line in json_run.stderr]
    strat = [r for r in recs if r["process"] == "strategy"]
    assert {r["incarnation"] for r in strat} == {0, 1}  # before and after the SIGKILL
    assert json_run.killed_pid in {r["pid"] for r in strat if r["incarnation"] == 0}
    assert json_run.killed_pid not in {r["pid"] for r in strat if r["incarnation"] == 1}
    assert {r["incarnation"] for r in recs if r["process"] == "supervisor"} == {0}
    assert any(
        r["process"] == "supervisor" and "incarnation 1" in r["msg"] and "strategy" in r["msg"]
        for r in recs
    )


def test_a_worker_crash_is_one_record_with_the_exception_text(json_run: Run) -> None:
    """A worker with no engine to attach to crashes: one ERROR record carrying the traceback."""
    r = subprocess.run(
        [sys.executable, "-m", "ops.worker", "strategy", "--config", str(json_run.config)]
        + ["--engine-id", "nosuch" + uuid.uuid4().hex[:4], "--incarnation", "3"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert r.returncode == 1
    (line,) = r.stderr.splitlines()
    rec = _record(line)
    assert (rec["level"], rec["process"], rec["incarnation"]) == ("ERROR", "strategy", 3)
    assert rec["msg"] == "strategy crashed" and "RegionError" in rec["exc"]


def test_warnings_prints_and_uncaught_errors_are_masked_json_records() -> None:
    """What does not go through a logger call in json mode: a Python warning, a line printed
    to stderr, an uncaught exception; secrets masked in each; the RuntimeDirWarning gone."""
    code = """
import sys, warnings
from ops.logs import setup_logging
setup_logging("probe", fmt="json", engine_id="e1", incarnation=2)
warnings.warn("XDG_RUNTIME_DIR is not set, falling back to /tmp/runtime-0")
warnings.warn("a real warning")
print("printed postgresql://u:hunter2x@db/g", file=sys.stderr)
raise RuntimeError("cannot reach redis://:hunter2x@r:6379/0")
"""
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert r.returncode == 1
    recs = [_record(line) for line in r.stderr.splitlines()]
    assert "hunter2x" not in r.stderr
    assert [x["logger"] for x in recs] == ["py.warnings", "stderr", "gekko"]
    assert all((x["engine_id"], x["process"], x["incarnation"]) == ("e1", "probe", 2) for x in recs)
    assert "a real warning" in recs[0]["msg"] and "XDG_RUNTIME_DIR" not in r.stderr
    assert recs[1]["msg"] == "printed postgresql://u:***@db/g"
    assert recs[2]["level"] == "CRITICAL" and "RuntimeError: cannot reach" in recs[2]["exc"]


def test_a_default_run_prints_none_of_the_noise_a_new_user_tripped_on(json_run: Run) -> None:
    """What every default run printed (the same messages as text; json only frames them)."""
    msgs = [_record(line)["msg"] for line in json_run.stdout + json_run.stderr]
    recs = [_record(line) for line in json_run.stderr]
    text = "\n".join(msgs)
    for noise in ("RuntimeDirWarning", "XDG_RUNTIME_DIR", "Warning:", "is not available here"):
        assert noise not in text, text
    assert not [r for r in recs if r["logger"] in ("py.warnings", "stderr")]
    # risk got the record's DSN at its first start: its one line is about the record, INFO
    (seed,) = [r for r in recs if "returns window" in r["msg"] and r["incarnation"] == 0]
    assert seed["level"] == "INFO" and "not seeded: record: " in seed["msg"], seed
    # the providers this build lacks are named once, in the serving line (INFO)
    serving = [r for r in recs if r["msg"].startswith("inference: serving")]
    assert len(serving) == 1 and serving[0]["level"] == "INFO"
    # a tick-to-order above the target is explained in the line below it (and only then)
    out = [_record(line)["msg"] for line in json_run.stdout]
    at = next(k for k, m in enumerate(out) if m.strip().startswith("tick-to-order:"))
    p50 = out[at].split("p50 ")[1].split()[0]  # "-": no order yet (a loaded host's short run)
    nxt = out[at + 1] if at + 1 < len(out) else ""
    explained = "above target:" in nxt and "docs/performance.md" in nxt
    assert explained == (p50 != "-" and _micros(p50) > 50), out[at : at + 2]


def test_the_summary_reads_as_a_person_reads_it() -> None:
    """Latencies in their unit (not 1021313µs), the note under a tick-to-order above target
    (and none under one that meets it), and the benign race behind a refusal every run has."""
    from ops.config import load_config
    from ops.report import _ran, _us, format_rejects, latency_note

    assert [_us(x) for x in (817_000, 14_713_000, 251_285_000, 1_021_313_000)] == [
        "817µs",
        "14.7ms",
        "251.3ms",
        "1.02s",
    ]
    cfg = load_config(ROOT / "config.toml")
    (note,) = latency_note(817_000, cfg)
    assert "not pinned" in note and "wait=block" in note and "docs/performance.md" in note
    assert latency_note(40_000, cfg) == [] and latency_note(None, cfg) == []
    lines = format_rejects({"risk_rejects_by_reason": {"replace of unknown order": 3}})
    assert len(lines) == 2 and "a race, not a fault" in lines[1]
    assert len(format_rejects({"risk_rejects_by_reason": {"stale_intent": 1}})) == 1
    # a --duration 20 run that took 9 s more to stop does not read as a 29 s run
    assert _ran({"elapsed_s": 29.3, "trading_s": 20.0}) == "20.0s trading (+9.3s to stop)"
    assert _ran({"elapsed_s": 5.0}) == "5.0s"
