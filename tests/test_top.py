"""``gekko top`` (issue 14): the screen drawn from a snapshot, the keys, the supervisor's recent
activity; then a real engine watched from a real terminal (tmux) as an operator would: the
processes and rings on screen, ``k`` ``y`` engaging the kill switch, ``r`` ``y`` releasing it,
``q`` quitting."""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from engine.messages import NewOrder, OrderFilled, OrderRejected
from ops.activity import activity
from ops.config import load_config
from ops.report import RunRecord
from ops.top import KeyState, fetch_activity
from ops.top_view import Frame, render
from tests.conftest import ROOT


def _snap(ts: float, md_published: int, *, kill: bool = False, hb: float = 0.05) -> dict[str, Any]:
    """A snapshot shaped as ``EngineView.snapshot()`` gives it (docs/metrics.md)."""
    return {
        "engine_id": "demo",
        "ts": ts,
        "alive": True,
        "workers": [
            {
                "name": "feed",
                "pid": 101,
                "state": "ready",
                "heartbeat_age_s": 0.05,
                "incarnation": 0,
                "restarts": 0,
                "core": 2,
                "cpu_pct": 97.0,
            },
            {
                "name": "risk",
                "pid": 103,
                "state": "ready",
                "heartbeat_age_s": hb,
                "incarnation": 2,
                "restarts": 2,
                "core": 4,
                "cpu_pct": None,
            },
        ],  # fmt: skip
        "rings": [
            {
                "name": "md",
                "capacity_bytes": 1 << 22,
                "published": md_published,
                "messages": md_published // 40,
                "closed": False,
                "readers": [
                    {
                        "name": "strategy",
                        "gating": True,
                        "lag_bytes": 1024,
                        "fill": 0.0002,
                        "missed": 0,
                    },
                    {
                        "name": "recorder",
                        "gating": False,
                        "lag_bytes": 3_900_000,
                        "fill": 0.93,
                        "missed": 12,
                    },
                ],
            },
            {
                "name": "control",
                "published": 512,
                "readers": [
                    {"name": w, "gating": True, "lag_bytes": 0, "fill": 0.0, "missed": 0}
                    for w in ("feed", "strategy", "risk", "exec")
                ],
            },
        ],  # fmt: skip
        "latency": {
            "tick_to_order": {
                "worker": "exec",
                "count": 1234,
                "p50_ns": 41_000.0,
                "p90_ns": 60_000.0,
                "p99_ns": 95_000.0,
                "p99.9_ns": 2.1e6,
                "max_ns": float("nan"),
            },
        },  # fmt: skip
        "counters": {"risk": {"approved": 120, "rejected": 3, "kills": int(kill)}},
        "positions": [
            {
                "instrument": "AAPL",
                "venue": "sim",
                "qty": 12,
                "avg_px": 187.25,
                "mark_px": 188.01,
                "realized": -3.5,
                "unrealized": 9.0,
                "fees": 0.12,
            },
        ],  # fmt: skip
        "trading_state": {
            "state": "HALTED" if kill else "ACTIVE",
            "reason": "gekko kill" if kill else "start",
            "source": "operator" if kill else "start",
            "since_wall_ns": 0,
        },
        "kill_switch": kill,
        "venues": [],
    }


def _text(frame: Frame) -> str:
    c = Console(width=frame.width, color_system=None, force_terminal=False)
    with c.capture() as cap:
        c.print(render(frame))
    return cap.get()


def _line(text: str, start: str) -> str:
    return next(x for x in text.splitlines() if x.strip().startswith(start))


def test_the_screen_shows_processes_rings_latency_risk_and_positions() -> None:
    act = {
        "run_id": 17,
        "orders": [{"kind": "NewOrder", "strategy_id": 1, "instrument": "AAPL", "side": "buy",
                    "qty": 5.0, "px": 187.31}],
        "fills": [{"instrument": "AAPL", "side": "sell", "qty": 5.0, "px": 187.29, "fee": 0.01}],
        "rejects": [{"source": "risk", "instrument": "AAPL", "reason": "risk: kill switch"}],
        "pnl_by_strategy": [{"strategy": "MarketMaker", "fills": 3, "realized": 1.0,
                             "unrealized": -2.0, "fees": 0.1, "net": -1.1,
                             "positions": {"AAPL": 12.0, "MSFT": -3.0}}],
        "counts": {"orders_new": 5, "fills": 3, "risk_rejects": 1, "venue_rejects": 0},
    }  # fmt: skip
    prev = _snap(100.0, 1000)
    for width in (200, 100):  # side by side, and stacked
        text = _text(Frame(_snap(102.0, 9192), prev, act, width=width))
        assert "run 17" in text and "trading ACTIVE" in text and "kill switch off" in text
        # one row per process: pid, state, core, CPU, heartbeat age, restarts
        assert re.search(r"feed +101 +ready +2 +97% +0\.1s ago +0\b", text), text
        assert re.search(r"risk +103 +ready +4 +- +0\.1s ago +2\b", text), text
        # the ring's rate is over the two snapshots: 204 frames in 2 s; a row per reader
        assert re.search(r"md +102/s +9\.0 KiB +strategy +1\.0 KiB +0\.0% +0\b", text)
        assert re.search(r" +recorder \(non-gating\) +3\.7 MiB +93\.0% +12\b", text)
        # a ring whose readers are all caught up takes one row
        assert re.search(r"control +0 B/s +512 B +all 4 readers +0 B +0\.0% +0\b", text), text
        assert re.search(r"tick_to_order +1,234 +41\.0µs +60\.0µs +95\.0µs +2,100µs +-", text)
        assert "187.25" in _line(text, "AAPL") and "188.01" in _line(text, "AAPL")
        assert re.search(r"MarketMaker +3 +1\.00 +-2\.00 +0\.10 +-1\.10 +AAPL 12 · MSFT -3", text)
        assert "MarketMaker" in text and "risk: kill switch" in text and "187.31" in text
        assert "approved 120" in text and "orders 5" in text


def test_a_stale_heartbeat_a_pending_question_and_the_engaged_kill_switch_are_on_screen() -> None:
    """A heartbeat older than [supervisor] heartbeat_timeout_s is drawn in bold red; the first
    frame (no previous snapshot) has no rates; no activity says why."""
    c = Console(width=200, color_system="standard", force_terminal=True)
    frame = Frame(
        _snap(100.0, 1000, kill=True, hb=7.5),
        None,
        None,
        "no answer from the supervisor: no control socket at /x",
        "Engage the kill switch of engine 'demo'? (y/n)",
        stale_after_s=5.0,
        width=200,
    )
    with c.capture() as cap:
        c.print(render(frame))
    ansi = cap.get()
    assert re.search(r"\x1b\[1;31m +7\.5s ago", ansi)  # bold red
    assert not re.search(r"\x1b\[1;31m +0\.1s ago", ansi) and "0.1s ago" in ansi
    text = _text(frame)
    assert "trading HALTED" in text and "kill switch ENGAGED" in text
    assert "Engage the kill switch of engine 'demo'? (y/n)" in text
    assert "operator: gekko kill" in text and "kills 1" in text
    assert "no answer from the supervisor" in text
    assert _line(text, "md ").split()[1] == "-"  # no rate without a previous snapshot


def test_keys_ask_before_acting_and_anything_but_y_cancels() -> None:
    k = KeyState()
    assert k.press("x") == ("", "")
    assert k.press("k") == ("ask", "k")
    assert k.press("y") == ("do", "k")
    assert k.press("r") == ("ask", "r")
    assert k.press("n") == ("cancel", "r")
    assert k.press("k") == ("ask", "k")
    assert k.press("q") == ("cancel", "k")  # q answers the question: it does not quit
    assert k.press("y") == ("", "")  # a y with no question does nothing
    assert k.press("r") == ("ask", "r") and k.press("Y") == ("do", "r")
    assert k.press("q") == ("quit", "")


def test_the_supervisors_activity_is_in_instrument_units_newest_last() -> None:
    cfg = load_config(ROOT / "config.toml")
    ins = cfg.instruments[0]
    rec = RunRecord(cfg)
    sid = cfg.strategy_specs()[0]["strategy_id"]
    for i in range(20):
        coid = sid << 32 | i
        rec.on_order(NewOrder(coid, sid, ins.instrument_id, 1, 1, 1, 18_731 + i, 5, 0, i))
    fill = OrderFilled(
        sid << 32 | 19, 7, ins.instrument_id, 1, 18_750, 5, 5, 0, 0.02, 1, 1, 0, 0, 99
    )
    rec.on_event(fill)
    rec.on_risk(OrderRejected(sid << 32 | 21, ins.instrument_id, "risk: kill switch", 0, 0, 5))
    rec.on_event(OrderRejected(sid << 32 | 22, ins.instrument_id, "venue: no money", 0, 0, 6))
    a = activity(rec, cfg, n=4)
    assert [o["client_order_id"] & 0xFFFF for o in a["orders"]] == [16, 17, 18, 19]
    last = a["orders"][-1]
    assert last["instrument"] == ins.symbol and last["side"] == "buy"
    assert last["px"] == pytest.approx(ins.ticks_to_px(18_750))
    assert last["qty"] == pytest.approx(ins.lots_to_qty(5))
    assert a["fills"][0]["px"] == pytest.approx(ins.ticks_to_px(18_750))
    assert [(r["source"], r["reason"]) for r in a["rejects"]] == [
        ("risk", "risk: kill switch"),
        ("venue", "venue: no money"),
    ]
    assert a["counts"] == {
        "orders_new": 20,
        "fills": 1,
        "risk_rejects": 1,
        "venue_rejects": 1,
        "risk_events": 0,
    }
    # what cannot be built is said, never raised into the supervisor's loop
    assert "could not build" in activity(object(), cfg)["error"]
    # every configured strategy, by name; those without a fill at zero
    pnl = {s["strategy_id"]: s for s in a["pnl_by_strategy"]}
    assert sorted(pnl) == sorted(s["strategy_id"] for s in cfg.strategy_specs())
    assert pnl[sid]["fills"] == 1 and pnl[sid]["strategy"] == "MarketMaker"
    assert pnl[sid]["positions"] == {ins.symbol: ins.lots_to_qty(5)}  # its own, in units
    assert all(s["fills"] == 0 and s["net"] == 0 for i, s in pnl.items() if i != sid)


def test_top_without_an_engine_or_a_terminal_says_so(
    tmp_path: Path, engine_id: str, capsys: pytest.CaptureFixture
) -> None:
    from ops.cli import main
    from tests.test_engine_e2e import write_config

    cfg = write_config(tmp_path, engine_id)
    assert main(["top", "--once", "--config", str(cfg)]) == 1
    err = capsys.readouterr().err
    assert f"no engine {engine_id!r} is running" in err, err
    # the live console needs a terminal (here stdout is captured): it says to use --once
    assert main(["top", "--config", str(cfg)]) == 2
    assert "use --once" in capsys.readouterr().err


# --- a real engine, a real terminal ---------------------------------------------------------------
@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """One `gekko run` shared by the module (no PostgreSQL: nothing here reads it); stopped
    with SIGTERM at the end, its regions removed whatever happened."""
    from tests.test_engine_e2e import running_engine, set_key, write_config

    tmp = tmp_path_factory.mktemp("top")
    eid = "t" + uuid.uuid4().hex[:8]
    cfg = write_config(tmp, eid)
    text = set_key(cfg.read_text(), "storage.postgres", "mode", '"off"')
    cfg.write_text(set_key(text, "report", "html", "false"))  # a faster stop
    try:
        with running_engine(cfg, tmp, eid) as proc:
            yield cfg, eid
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=60)
    finally:
        _remove_regions(eid)


def _remove_regions(eid: str) -> None:
    import posix_ipc

    from shm.region import list_regions, list_semaphores

    for name in list_regions(eid):
        with contextlib.suppress(Exception):
            posix_ipc.unlink_shared_memory(name)
    for name in list_semaphores(eid):
        with contextlib.suppress(Exception):
            posix_ipc.unlink_semaphore(name)


def _state(cfg: Path) -> dict[str, Any]:
    from procs.risk import load_state, state_path

    return load_state(state_path(load_config(cfg))) or {}


def _wait(pred: Any, timeout: float = 30.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.1)
    return False


def test_top_once_prints_the_engine_and_the_supervisors_activity(
    engine: tuple[Path, str], capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg, eid = engine
    from ops.cli import main
    from tests.test_engine_e2e import wait_counter

    assert wait_counter(eid, "exec", "new_orders", 3), "no orders reached exec"
    # the supervisor's read-only answer: built by its loop once a second, so wait for orders
    conf = load_config(cfg)
    assert _wait(lambda: (fetch_activity(conf)[0] or {}).get("orders")), fetch_activity(conf)
    got, _ = fetch_activity(conf)
    assert got is not None and got["engine"] == eid and got["phase"] == "running"
    symbols = {i.symbol for i in conf.instruments}
    assert {o["instrument"] for o in got["orders"]} <= symbols
    monkeypatch.setenv("COLUMNS", "100")  # as wide as a terminal would say (stacked panels)
    assert main(["top", "--once", "--interval", "0.3", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert f"engine {eid}" in out and "trading ACTIVE" in out
    for worker in ("feed", "strategy", "risk", "exec"):
        assert re.search(rf"^{worker} +\d+ +ready ", out, re.M), out
    for ring in ("md", "intents", "orders", "events"):
        assert re.search(rf"^{ring} +[\d,]+/s ", out, re.M), out
    assert re.search(r"^tick_to_order +[1-9][\d,]* +[\d.,]+µs", out, re.M), out
    # from the supervisor's activity: P&L per strategy by name, the orders it recorded
    for s in load_config(cfg).strategies:
        assert (s.name or s.path.split(":")[-1]) in out
    assert re.search(r"^(new|replace|cancel) +\d+ +[A-Z]+ ", out, re.M), out


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_an_operator_in_tmux_engages_and_releases_the_kill_switch(
    engine: tuple[Path, str], tmp_path: Path
) -> None:
    cfg, eid = engine
    sock = str(tmp_path / "tmux.sock")
    rc = tmp_path / "rc"

    def tmux(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["tmux", "-S", sock, *args], capture_output=True, text=True)

    def screen() -> str:
        return tmux("capture-pane", "-p", "-t", "top").stdout

    def shows(text: str) -> bool:
        return text in screen()

    top = f"{sys.executable} -m ops.cli top --interval 0.3 --config {cfg}"
    r = tmux("new-session", "-d", "-s", "top", "-x", "200", "-y", "60", "-c", str(ROOT),
             f"{top}; echo $? > {rc}")  # fmt: skip
    assert r.returncode == 0, r.stderr
    try:
        # the second frame has the rings' rates (the first has no earlier snapshot)
        assert _wait(lambda: re.search(r"^orders +[\d,]+/s ", screen(), re.M)), screen()
        text = screen()
        for worker in ("feed", "strategy", "risk", "exec"):
            assert re.search(rf"^{worker} +\d+ +ready ", text, re.M), text
        assert "Processes" in text and "Rings" in text and "kill switch off" in text
        # k asks first; anything but y cancels, and nothing is sent
        tmux("send-keys", "-t", "top", "k")
        assert _wait(lambda: shows(f"Engage the kill switch of engine '{eid}'? (y/n)")), screen()
        tmux("send-keys", "-t", "top", "n")
        assert _wait(lambda: shows("kill: cancelled")), screen()
        assert _state(cfg).get("state", "ACTIVE") == "ACTIVE"
        # k y: the kill switch, through the control socket as `gekko kill`
        tmux("send-keys", "-t", "top", "k")
        assert _wait(lambda: shows("(y/n)")), screen()
        tmux("send-keys", "-t", "top", "y")
        assert _wait(lambda: _state(cfg).get("state") == "HALTED"), _state(cfg)
        assert _state(cfg)["source"] == "operator" and "gekko top" in _state(cfg)["reason"]
        assert _wait(lambda: shows("kill switch ENGAGED")), screen()
        assert f"gekko kill (gekko top): delivered to engine '{eid}'" in screen()
        # r y releases it, the same way as `gekko resume`
        tmux("send-keys", "-t", "top", "r")
        assert _wait(lambda: shows(f"Release the kill switch of engine '{eid}'? (y/n)"))
        tmux("send-keys", "-t", "top", "y")
        assert _wait(lambda: _state(cfg).get("state") == "ACTIVE"), _state(cfg)
        assert _wait(lambda: shows("kill switch off")), screen()
        # q quits, exit code 0, and the terminal gets its screen back
        tmux("send-keys", "-t", "top", "q")
        assert _wait(lambda: rc.exists() and rc.read_text().strip() != ""), screen()
        assert rc.read_text().strip() == "0"
    finally:
        tmux("kill-server")
