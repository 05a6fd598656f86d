"""Exec SIGKILLed after a funding payment and a settlement, every process running: the restarted
exec rebuilds its positions from its journal's fills *and* account events, agrees with the
simulated venue (the expired future is flat at both), and trading goes on.

The engine trades a perpetual (funding every second of market time) and a dated future that
expires 4 s into the synthetic market. Once exec's journal holds a FundingPayment and the
future's Settlement, exec is killed; the supervisor restarts it. Before account events were
journaled, recovery counted the future's fill and not its expiry: 1 lot against the venue's 0,
and exec refused to trade (the run stopped, exit 1). Now: the run ends cleanly, the restarted
exec's positions table shows the future flat with its expiry P&L realized, the perpetual's
position is the venue's, and perpetual fills follow the restart.
"""

from __future__ import annotations

import os
import signal
import struct
import time
from pathlib import Path

import msgspec
import pytest

from engine.messages import (
    FundingPayment,
    Liquidation,
    Message,
    OrderPartiallyFilled,
    Quote,
    Settlement,
)
from engine.strategies.base import Strategy
from procs.exec_journal import load_exec_journal
from tests.test_engine_e2e import (
    _alive,
    _children,
    _cmd,
    _wait_for,
    eid,  # noqa: F401  (the fixture)
    is_ready,
    running_engine,
    set_key,
    summary_of,
    write_config,
)

pytestmark = pytest.mark.timeout(150)

PERP, FUT = 1, 2
INSTRUMENTS = """
[[instruments]]
instrument_id = 1
symbol = "ETH-PERP"
venue = "sim"
asset_class = "crypto"
sector = "crypto"
kind = "perpetual"
tick_size = 0.01
lot_size = 1.0
currency = "USD"
funding_interval_s = 1
funding_rate = 0.001
initial_margin = 0.1
maintenance_margin = 0.05
initial_price = 100.0
annual_vol = 0.2

[[instruments]]
instrument_id = 2
symbol = "ES-FUT"
venue = "sim"
asset_class = "future"
sector = "index"
kind = "future"
tick_size = 0.25
lot_size = 1.0
currency = "USD"
contract_size = 50.0
expiry_ns = 4000000000
initial_margin = 0.06
maintenance_margin = 0.05
initial_price = 100.0
annual_vol = 0.2

[[strategies]]
id = 1
path = "tests.test_settle_restart:Accumulate"
instruments = ["ETH-PERP", "ES-FUT"]
"""


class Accumulate(Strategy):
    """Buys 1 future on its first quote, and 1 perpetual lot whenever none is working and
    half a second has passed since the last (at most 40): it trades for the whole run."""

    def on_start(self) -> None:
        self.fut_sent = False
        self.perp_sent = 0
        self.next_ns = 0

    def on_quote(self, q: Quote) -> None:
        if q.ask_qty <= 0 or q.bid_qty <= 0:
            return
        ctx = self.ctx
        if q.instrument_id == FUT and not self.fut_sent:
            self.fut_sent = True
            ctx.buy(FUT, 1, q.ask_px + 2)
        elif q.instrument_id == PERP and self.perp_sent < 40 and ctx.now_ns >= self.next_ns:
            if any(o.instrument_id == PERP for o in ctx.open_orders.values()):
                return
            self.perp_sent += 1
            self.next_ns = ctx.now_ns + 500_000_000
            ctx.buy(PERP, 1, q.ask_px + 2)


def _config(tmp_path: Path, engine_id: str) -> Path:
    cfg = write_config(tmp_path, engine_id)
    text = cfg.read_text()
    text = text[: text.index("\n[[instruments]]")] + "\n" + INSTRUMENTS
    for section, key, value in (
        ("storage.postgres", "mode", '"off"'),  # exec recovers from its own journal
        ("inference", "enabled", "false"),
        ("portfolio", "benchmark", '""'),
        ("sim", "account", '"margin"'),
        ("market", "event_interval_us", "2000.0"),  # about market time = wall time
    ):
        text = set_key(text, section, key, value)
    cfg.write_text(text)
    return cfg


def _exec_worker(sup_pid: int):  # type: ignore[no-untyped-def]
    for p in _children(sup_pid):
        if "ops.worker" in _cmd(p) and "exec" in _cmd(p) and _alive(p):
            return p
    return None


def _journal(tmp_path: Path) -> list[object]:
    paths = list((tmp_path / "var" / "exec").glob("*.journal"))
    return load_exec_journal(paths[0], 1 << 62).events if paths else []


def _venue_positions(tmp_path: Path) -> dict[int, int]:
    """The simulated venue's positions from its own record (fills, settled: 0, liquidations)."""
    (path,) = (tmp_path / "var" / "venue").glob("*.venue")
    data, dec, pos = path.read_bytes(), msgspec.msgpack.Decoder(Message), 0
    out: dict[int, int] = {}
    while pos + 4 <= len(data):
        (n,) = struct.unpack_from("<I", data, pos)
        ev = dec.decode(data[pos + 4 : pos + 4 + n])
        pos += 4 + n
        if isinstance(ev, OrderPartiallyFilled):
            out[ev.instrument_id] = out.get(ev.instrument_id, 0) + ev.side * ev.fill_qty
        elif isinstance(ev, Settlement):
            out[ev.instrument_id] = 0
        elif isinstance(ev, Liquidation):
            out[ev.instrument_id] = out.get(ev.instrument_id, 0) + ev.side * ev.qty
    return out


def _exec_rows(engine_id: str) -> dict[int, tuple[int, float]]:
    """(position, realized) per instrument in exec's positions table."""
    from procs.runtime import POSITION_DTYPE
    from shm.seqlock import SeqlockTable

    table = SeqlockTable.attach(engine_id, "positions", POSITION_DTYPE)
    try:
        return {
            int(r["instrument_id"]): (int(r["position"]), float(r["realized"]))
            for r in table.read_all()
        }
    finally:
        table.close()


def test_exec_killed_after_funding_and_settlement_resumes_agreeing_with_the_venue(
    tmp_path: Path,
    eid: str,  # noqa: F811
) -> None:
    cfg = _config(tmp_path, eid)
    with running_engine(cfg, tmp_path, eid) as proc:

        def paid_and_settled() -> bool:
            evs = _journal(tmp_path)
            return any(type(e) is FundingPayment for e in evs) and any(
                type(e) is Settlement and e.instrument_id == FUT for e in evs
            )

        assert _wait_for(paid_and_settled, 60), "no funding payment and expiry in the journal"
        before = _exec_rows(eid)
        assert before[FUT][0] == 0, before  # exec's own table: flat after the expiry
        fills_before = sum(isinstance(e, OrderPartiallyFilled) for e in _journal(tmp_path))
        w = _exec_worker(proc.pid)
        assert w is not None
        os.kill(w.pid, signal.SIGKILL)
        assert _wait_for(lambda: is_ready(eid, "exec", not_pid=w.pid), 60), "no restart"
        # rebuilt from the journal: the expired future is flat, its expiry P&L realized again
        after = _exec_rows(eid)
        assert after[FUT] == pytest.approx(before[FUT]), (before, after)

        def traded_again() -> bool:
            n = sum(isinstance(e, OrderPartiallyFilled) for e in _journal(tmp_path))
            return n >= fills_before + 2

        assert _wait_for(traded_again, 40), "no trading after the restart"
        time.sleep(0.5)
        venue = _venue_positions(tmp_path)
        rows = _exec_rows(eid)
        assert rows[FUT][0] == venue.get(FUT, 0) == 0
        assert rows[PERP][0] == venue[PERP] > 0, (rows, venue)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-3000:]
    s = summary_of(tmp_path)
    assert [r["worker"] for r in s["restarts"]] == ["exec"] and s["consistent"], s["restarts"]
    fut = s["positions"]["ES-FUT"]
    assert fut["position"] == fut["position_from_fills"] == 0, fut
    assert s["positions"]["ETH-PERP"]["position"] == _venue_positions(tmp_path)[PERP]
