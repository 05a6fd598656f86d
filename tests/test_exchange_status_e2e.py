"""A scheduled venue halt with every process running: the feed publishes the simulated exchange's
status on ``md``, exec forwards it on ``events``, and risk refuses the halted instrument's intents
with the halt's reason until the venue reopens it — the other instruments trade on throughout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.messages import RiskEventKind
from tests.test_engine_e2e import eid, gekko, summary_of, write_config  # noqa: F401
from tests.test_exchange_status import sim_keys

pytestmark = pytest.mark.timeout(240)


def _records(tmp_path: Path, name: str) -> list[dict]:
    path = tmp_path / "var" / "last_run" / name
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_scheduled_halt_risk_refuses_the_halted_instrument_then_approves_again(
    tmp_path: Path,
    eid: str,  # noqa: F811
) -> None:
    # market time runs slower than wall time (several messages per synthetic step): at 4000
    # messages/s the halt starts a few seconds into the feed and lasts a few seconds
    cfg = write_config(
        tmp_path,
        eid,
        market="rate_hz = 4000.0\nmax_events = 26000",
    )
    text = cfg.read_text()
    text = sim_keys(text, 'halts = [{instrument = "AAPL", at_s = 0.8, duration_s = 1.0}]')
    # no record needed here (and no embedded PostgreSQL to start on a loaded box)
    at = text.index("\nmode = ", text.index("[storage.postgres]")) + 1
    text = text[:at] + 'mode = "off"' + text[text.index("\n", at) :]
    cfg.write_text(text)
    r = gekko("run", "--config", str(cfg), "--until-feed-done", "--duration", "120", timeout=200)
    assert r.returncode == 0, r.stderr[-4000:]
    assert "feed: exchange status AAPL HALTED (scheduled halt)" in r.stderr
    assert "feed: exchange status AAPL OPEN" in r.stderr
    s = summary_of(tmp_path)
    counters = s["counters"]
    assert counters["feed"]["exchange_status"] == 2
    assert counters["risk"]["instrument_halts"] >= 1
    assert counters["risk"]["instrument_resumes"] >= 1

    ids = {sym: v["instrument_id"] for sym, v in s["positions"].items()}
    aapl, msft = ids["AAPL"], ids["MSFT"]
    risk = _records(tmp_path, "risk.jsonl")
    [halted] = [m for m in risk if m["type"] == "InstrumentHalted" and m["instrument_id"] == aapl]
    assert halted["reason"] == "venue halted: scheduled halt"
    [resumed] = [m for m in risk if m["type"] == "InstrumentResumed" and m["instrument_id"] == aapl]
    t_halt, t_open = halted["ts"], resumed["ts"]
    assert t_halt < t_open
    # risk refused the halted instrument's intents with the venue's reason, only during the halt
    refused = [
        m
        for m in risk
        if m["type"] == "RiskEvent"
        and m["kind"] == RiskEventKind.ORDER_REJECTED
        and m["reason"] == "instrument halted: venue halted: scheduled halt"
    ]
    assert refused, "no intent for the halted instrument was refused"
    assert {m["instrument_id"] for m in refused} == {aapl}
    assert all(t_halt <= m["ts"] <= t_open for m in refused)
    # what risk approved (ts_approved: risk's clock, the same as the halt's)
    orders = _records(tmp_path, "orders.jsonl")
    new = [o for o in orders if o["type"] == "NewOrder" and o["strategy_id"] != 0]

    def approved(iid: int, lo: int, hi: int) -> list[dict]:
        return [o for o in new if o["instrument_id"] == iid and lo <= o["ts_approved"] < hi]

    assert approved(aapl, 0, t_halt), "AAPL did not trade before the halt"
    assert approved(aapl, t_halt, t_open) == [], "an AAPL order was approved while halted"
    assert approved(aapl, t_open, 1 << 62), "AAPL did not trade again after the reopening"
    assert approved(msft, t_halt, t_open), "MSFT should trade on during AAPL's halt"
