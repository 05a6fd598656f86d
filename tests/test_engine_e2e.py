"""The whole engine as a user starts it: `gekko run` with real worker processes."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.timeout(180)


def write_config(
    tmp_path: Path,
    engine_id: str,
    *,
    extra: str = "",
    strategies: str | None = None,
    market: str = "",
) -> Path:
    """The default config.toml with a private engine id and var dir, plus overrides."""
    text = (ROOT / "config.toml").read_text()
    text = text.replace('id = "gekko"', f'id = "{engine_id}"').replace(
        'var_dir = "var"', f'var_dir = "{tmp_path / "var"}"'
    )
    # any free port for the exporter: engines of tests running side by side never share one
    text = text.replace('listen = "127.0.0.1:9464"', 'listen = "127.0.0.1:0"', 1)
    if strategies is not None:
        text = text[: text.index("[[strategies]]")] + strategies
    for line in market.splitlines():  # "key = value" replaces that key's line in [market]
        key = line.split("=")[0].strip()
        start = text.index("[market]")
        at = text.index(f"\n{key} = ", start) + 1
        text = text[:at] + line + text[text.index("\n", at) :]
    path = tmp_path / "config.toml"
    path.write_text(text + "\n" + extra)
    return path


def set_key(text: str, section: str, key: str, value: str) -> str:
    """Set ``key = value`` in TOML ``[section]`` of ``text`` (adding the key or the section)."""
    header = f"[{section}]"
    at = text.find(f"\n{header}")
    if at < 0:
        return f"{text}\n{header}\n{key} = {value}\n"
    start = at + len(header) + 1
    nxt = re.search(r"^\[", text[start + 1 :], re.M)
    end = start + 1 + nxt.start() if nxt else len(text)
    body = text[start:end]
    line = re.search(rf"^{re.escape(key)}\s*=.*$", body, re.M)
    body = (
        body[: line.start()] + f"{key} = {value}" + body[line.end() :]
        if line
        else f"\n{key} = {value}" + body
    )
    return text[:start] + body + text[end:]


def gekko(*args: str, timeout: float = 120, **kw) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    return subprocess.run(
        [sys.executable, "-m", "ops.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        **kw,
    )


def shm_entries(engine_id: str) -> list[str]:
    d = Path("/dev/shm")
    return [p.name for p in d.iterdir() if engine_id in p.name] if d.is_dir() else []


def summary_of(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "var" / "last_run" / "summary.json").read_text())


@pytest.fixture
def eid() -> str:
    return "e" + uuid.uuid4().hex[:7]


def test_run_trades_and_positions_equal_signed_fills(tmp_path: Path, eid: str) -> None:
    cfg = write_config(tmp_path, eid)
    r = gekko("run", "--config", str(cfg), "--duration", "6")
    assert r.returncode == 0, r.stderr[-3000:]
    s = summary_of(tmp_path)
    assert s["ticks"] > 5000
    assert s["orders_new"] > 0 and s["fills"] > 0
    fills = [
        json.loads(line)
        for line in (tmp_path / "var" / "last_run" / "fills.jsonl").read_text().splitlines()
    ]
    assert len(fills) == s["fills"]
    for sym, v in s["positions"].items():
        signed = sum(
            f["side"] * f["fill_qty"] for f in fills if f["instrument_id"] == v["instrument_id"]
        )
        assert v["position"] == signed == v["position_from_fills"], sym
    assert s["consistent"] is True
    assert "Gekko run summary" in r.stdout and "ticks/s" in r.stdout
    assert shm_entries(eid) == []


def test_broken_config_exits_2_naming_the_key(tmp_path: Path, eid: str) -> None:
    cfg = write_config(tmp_path, eid, extra="")
    cfg.write_text(cfg.read_text().replace("max_open_orders = 100", "max_open_orders = -5"))
    r = gekko("run", "--config", str(cfg), "--duration", "1")
    assert r.returncode == 2
    assert "risk.max_open_orders" in r.stderr and str(cfg) in r.stderr
    cfg.write_text(cfg.read_text().replace("[sim]\n", "[sim]\nlatncy_us = 3\n"))
    r = gekko("run", "--config", str(cfg))
    assert r.returncode == 2 and "sim.latncy_us: unknown key" in r.stderr
    assert shm_entries(eid) == []


def _children(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _cmd(p: psutil.Process) -> list[str]:
    """A process's command line, or [] once it is gone or a zombie (a killed, unreaped worker)."""
    try:
        return p.cmdline()
    except psutil.Error:
        return []


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _wait_for(pred, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.1)
    return False


# Multi-process tests wait for what they can observe (health rows, files, counters), never for a
# fixed time: on a loaded 2-core box the embedded services and the workers take a while to start.
START_TIMEOUT_S = 150.0


def health(eid: str) -> dict[str, tuple[int, int, int]]:
    """Each worker's health row as (pid, state, incarnation); {} while the table does not exist."""
    from procs.runtime import ALL_WORKERS, HEALTH_DTYPE
    from shm.seqlock import SeqlockTable

    try:
        table = SeqlockTable.attach(eid, "health", HEALTH_DTYPE)
    except Exception:
        return {}
    try:
        rows = table.read_all()
    finally:
        table.close()
    return {
        name: (int(r["pid"]), int(r["state"]), int(r["incarnation"]))
        for name, r in zip(ALL_WORKERS, rows, strict=False)
    }


def is_ready(eid: str, name: str, not_pid: int = 0) -> bool:
    """Worker ``name`` reports READY (a process other than ``not_pid``: a replacement)."""
    from procs.runtime import STATE_READY

    pid, state, _ = health(eid).get(name, (0, 0, 0))
    return pid != 0 and pid != not_pid and state == STATE_READY


def wait_ready(
    cfg: Path, eid: str, timeout: float = START_TIMEOUT_S, proc: subprocess.Popen | None = None
) -> bool:
    """Every worker the config enables reports READY (False on timeout or if ``proc`` exits)."""
    from ops.config import load_config
    from procs.runtime import enabled_workers

    names = enabled_workers(load_config(cfg))
    return _wait_for(
        lambda: (
            (proc is not None and proc.poll() is not None) or all(is_ready(eid, n) for n in names)
        ),
        timeout,
    ) and (proc is None or proc.poll() is None)


def counter(eid: str, worker: str, name: str) -> int:
    """A worker's shared-memory counter (-1 while its region does not exist)."""
    from procs.runtime import metrics_name
    from shm.metrics import MetricsRegion

    try:
        m = MetricsRegion.attach(eid, metrics_name(worker))
    except Exception:
        return -1
    try:
        return int(m.counters().get(name, -1))
    finally:
        with contextlib.suppress(Exception):
            m.close()


def wait_counter(eid: str, worker: str, name: str, at_least: int, timeout: float = 90) -> bool:
    """A worker's shared-memory counter reaches ``at_least`` within ``timeout`` seconds."""
    return _wait_for(lambda: counter(eid, worker, name) >= at_least, timeout)


@contextlib.contextmanager
def running_engine(cfg: Path, tmp_path: Path, eid: str) -> Iterator[subprocess.Popen[str]]:
    """`gekko run` in the background, up (every enabled worker READY)
    when the block starts; killed if the block
    leaves it running (a failed assertion must not leave an engine behind)."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ops.cli",
            "run",
            "--config",
            str(cfg),
            "--duration",
            "60",
            "--quiet",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert _wait_for(lambda: (tmp_path / "var" / f"gekko-{eid}.pid").exists(), 60)
        if not wait_ready(cfg, eid, proc=proc):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            _, err = proc.communicate(timeout=30)
            raise AssertionError(f"the engine did not become ready: {health(eid)}\n{err[-4000:]}")
        yield proc
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # the supervisor and its workers
            proc.communicate(timeout=30)


def test_sigkill_worker_is_restarted_and_sigterm_exits_clean(tmp_path: Path, eid: str) -> None:
    cfg = write_config(tmp_path, eid)
    with running_engine(cfg, tmp_path, eid) as proc:
        assert wait_counter(eid, "risk", "approved", 5), "no trading"
        victims = [c for c in _children(proc.pid) if "strategy" in _cmd(c)]
        assert victims, "strategy worker not found"
        old_pid = victims[0].pid
        os.kill(old_pid, signal.SIGKILL)
        # a new strategy process appears and reports ready
        assert _wait_for(lambda: is_ready(eid, "strategy", not_pid=old_pid), 90)
        assert any("strategy" in _cmd(c) and c.pid != old_pid for c in _children(proc.pid))
        # trading resumes: the new strategy's intents are approved
        approved = counter(eid, "risk", "approved")
        assert wait_counter(eid, "risk", "approved", approved + 5), "no trading after the restart"
        workers = _children(proc.pid)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-3000:]
    s = summary_of(tmp_path)
    assert [r["worker"] for r in s["restarts"]] == ["strategy"]
    assert "SIGTERM" in s["stop_reason"]
    assert s["consistent"] is True
    assert not any(_alive(p) for p in workers), "orphan worker left"
    assert shm_entries(eid) == []
    # orders kept flowing after the restart: the restarted incarnation's ids (block 1) appear
    orders = [
        json.loads(x)
        for x in (tmp_path / "var" / "last_run" / "orders.jsonl").read_text().splitlines()
    ]
    new = [o for o in orders if o["type"] == "NewOrder"]
    assert any((o["client_order_id"] & 0xFFFFFFFF) >= (1 << 24) for o in new), (
        "no order after the restart"
    )
    assert len({o["client_order_id"] for o in new}) == len(new), "a client order id was reused"


MOMENTUM_ONLY = """
[[strategies]]
id = 2
path = "engine.strategies.momentum:MomentumTaker"
instruments = ["AAPL", "MSFT", "XOM"]
[strategies.params]
fast = 10
slow = 40
size = 5
"""


def test_same_data_same_strategy_gives_the_same_orders_inline_and_multiprocess(
    tmp_path: Path, eid: str
) -> None:
    events = 6000
    cfg = write_config(
        tmp_path, eid, strategies=MOMENTUM_ONLY, market=f"max_events = {events}\nrate_hz = 4000.0"
    )
    # the staleness guards off: a stall of this shared box would (rightly) make the live run
    # skip ticks or refuse old intents that the simulated clock never sees as old
    text = cfg.read_text()
    for key in ("max_intent_age_ms", "max_backlog_ms"):
        text, n = re.subn(rf"(?m)^{key} = [0-9.]+", f"{key} = 0.0", text, count=1)
        assert n == 1, key
    cfg.write_text(text)
    r = gekko("run", "--config", str(cfg), "--until-feed-done", "--duration", "90")
    assert r.returncode == 0, r.stderr[-3000:]
    s = summary_of(tmp_path)
    assert s["stop_reason"] == "feed finished"
    live = [
        json.loads(x)
        for x in (tmp_path / "var" / "last_run" / "orders.jsonl").read_text().splitlines()
    ]
    live_new = [
        (o["client_order_id"], o["instrument_id"], o["side"], o["order_type"], o["px"], o["qty"])
        for o in live
        if o["type"] == "NewOrder"
    ]

    from engine.backtest import InlineRuntime
    from engine.messages import NewOrder
    from ops.config import load_config
    from procs.build import build_market, build_venue

    c = load_config(cfg)
    ins = c.instrument_table()
    rt = InlineRuntime(
        ins,
        c.strategy_specs(),
        c.risk,
        build_venue(c, ins),
        build_market(c),
        max_ticks=events,
    )
    summary = rt.run()
    inline_new = [
        (o.client_order_id, o.instrument_id, o.side, o.order_type, o.px, o.qty)
        for o in summary["orders_sent"]
        if isinstance(o, NewOrder)
    ]
    assert len(inline_new) > 5, "the momentum strategy should have traded"
    assert live_new == inline_new


def test_hung_worker_is_killed_and_restarted(tmp_path: Path, eid: str) -> None:
    """A worker that stops beating (SIGSTOP: alive but frozen) is killed and replaced."""
    cfg = write_config(tmp_path, eid)
    cfg.write_text(
        cfg.read_text().replace("heartbeat_timeout_s = 5.0", "heartbeat_timeout_s = 1.0")
    )
    with running_engine(cfg, tmp_path, eid) as proc:
        assert wait_counter(eid, "exec", "orders_in", 1), "exec never got an order"
        frozen = [c for c in _children(proc.pid) if "exec" in _cmd(c)]
        assert frozen, "exec worker not found"
        os.kill(frozen[0].pid, signal.SIGSTOP)
        assert _wait_for(lambda: is_ready(eid, "exec", not_pid=frozen[0].pid), 90), (
            "no replacement exec worker"
        )
        assert any("exec" in _cmd(c) and c.pid != frozen[0].pid for c in _children(proc.pid))
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-3000:]
    s = summary_of(tmp_path)
    assert [r["worker"] for r in s["restarts"]] == ["exec"]
    assert s["restarts"][0]["reason"] == "hung"
    assert "missed heartbeats" in err
    assert shm_entries(eid) == []


def test_kill_switch_halts_trading_until_resume(tmp_path: Path, eid: str) -> None:
    cfg = write_config(tmp_path, eid)
    with running_engine(cfg, tmp_path, eid) as proc:
        # orders rest at the venue (the market maker's quotes) before the kill
        assert wait_counter(eid, "exec", "new_orders", 5), "no orders reached exec"
        r = gekko("kill", "--config", str(cfg))
        assert r.returncode == 0, r.stderr
        # the kill arrived, and risk has since refused what the strategies still tried
        assert wait_counter(eid, "risk", "kills", 1, 60)
        assert wait_counter(eid, "risk", "rejected", counter(eid, "risk", "rejected") + 1, 60)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-3000:]
    s = summary_of(tmp_path)
    assert s["counters"]["risk"]["kills"] == 1
    assert s["risk_events"] >= 1
    # after the kill every new order the strategies still try is refused by risk
    assert s["risk_rejects"] > 0
    orders = [
        json.loads(x)
        for x in (tmp_path / "var" / "last_run" / "orders.jsonl").read_text().splitlines()
    ]
    assert any(o["type"] == "CancelOrder" for o in orders), "open orders were not canceled"
    assert s["consistent"] is True
    # no engine running: the command says so
    r = gekko("kill", "--config", str(cfg))
    assert r.returncode == 1 and f"no engine {eid!r} is running" in r.stderr


def test_workers_exit_when_the_supervisor_dies_and_the_next_start_cleans_up(
    tmp_path: Path, eid: str
) -> None:
    cfg = write_config(tmp_path, eid)
    with running_engine(cfg, tmp_path, eid) as proc:
        assert _wait_for(lambda: len(_children(proc.pid)) >= 4, 30)  # (all READY: see above)
        workers = _children(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)  # a crash: no clean-up at all
        proc.communicate(timeout=30)
        assert _wait_for(lambda: not any(_alive(w) for w in workers), 15), (
            "workers outlived the supervisor"
        )
    left = shm_entries(eid)
    assert left, "a crashed run leaves its regions behind"
    r = gekko("run", "--config", str(cfg), "--duration", "2", "--quiet")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "left by a crashed run" in r.stderr
    assert shm_entries(eid) == []
