"""A hedging venue's two legs in exec's order table and positions table, the strategies'
contexts and a restarted risk process (engine/hedge_legs.py): a long and a short of one
instrument held at once stay two legs everywhere, ``REDUCE_ONLY`` fills move the opposite leg,
and the net (what reconciliation compares with the venue) is what it always was."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

import tests.test_backtest_kinds as tk
from engine import hedge_legs
from engine.enums import OrderFlag
from engine.messages import Liquidation, NewOrder, OrderFilled, Quote, Settlement
from engine.oms import OrderTable
from engine.strategies.base import Strategy
from tests.test_engine_e2e import (
    _wait_for,
    eid,  # noqa: F401  (the fixture)
    is_ready,
    running_engine,
    set_key,
    summary_of,
    write_config,
)
from tests.test_risk_e2e import risk_worker
from tests.test_sim_hedging import Hedger

_RO = int(OrderFlag.REDUCE_ONLY)


def _order(coid: int, side: int, qty: int, flags: int = 0) -> NewOrder:
    return NewOrder(
        client_order_id=coid, strategy_id=1, instrument_id=1, side=side, order_type=1, tif=1,
        px=100, qty=qty, ts_origin=1, ts_approved=1, flags=flags,
    )  # fmt: skip


def _fill(o: NewOrder) -> OrderFilled:
    return OrderFilled(
        o.client_order_id, o.client_order_id, 1, o.side, 100, o.qty, o.qty, 0, 0.0, 1,
        o.client_order_id, 1, 1, 1,
    )  # fmt: skip


def test_order_table_keeps_the_legs_of_a_hedged_instrument_and_restores_them():
    """Buy 5, sell 3 (a short leg, not a close), buy 1 REDUCE_ONLY (closes a short lot): legs
    (5, -2), net 3. A netting instrument's legs are its net on its side. A table restored from
    the snapshots has the same legs; a liquidation closes the leg opposite its side and a
    settlement leaves both flat."""
    t = OrderTable()
    t.hedged = {1}
    for o in (_order(1, 1, 5), _order(2, -1, 3), _order(3, 1, 1, _RO)):
        t.add(o, 1)
        assert t.apply(_fill(o))
    assert t.legs(1) == (5, -2) and t.position(1) == 3
    plain = OrderTable()  # the same fills on a netting venue: one net position
    for o in (_order(1, 1, 5), _order(2, -1, 3), _order(3, 1, 1, _RO)):
        plain.add(o, 1)
        plain.apply(_fill(o))
    assert plain.legs(1) == (3, 0) and plain.position(1) == 3
    again = OrderTable.restore(t.snapshot())
    again.hedged = {1}
    assert again.legs(1) == (5, -2) and again.position(1) == 3
    again.apply_account(
        Liquidation(1, 1, 100, 2, 0.0, 1, 1, liquidation_id=7)
    )  # a buy: closes the short
    assert again.legs(1) == (5, 0) and again.position(1) == 5
    again.apply_account(Settlement(1, 0, 100, 1, 5, 1, 1, settlement_id=9))
    assert again.legs(1) == (0, 0) and again.position(1) == 0


def test_hedge_legs_move_a_reduce_only_past_its_leg_opens_its_own_side():
    legs: dict[int, tuple[int, int]] = {7: (2, -1)}
    hedge_legs.move(legs, 7, 3, True)  # closes the short 1, the other 2 open long
    assert legs[7] == (4, 0)
    assert hedge_legs.legs_of(legs, {7}, 7, 4) == (4, 0)
    assert hedge_legs.legs_of(legs, set(), 7, -3) == (0, -3)


def test_a_hedged_long_and_short_in_a_backtest_are_two_legs_in_exec_and_the_context(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Quote 1: buy 2 BTC and sell 1 (two legs); quote 2: buy 0.4 REDUCE_ONLY (closes 0.4 of
    the short leg). Exec's order table and the strategy's context hold legs (2000, -600) with
    the net 1400, as the venue, the portfolio and risk."""
    monkeypatch.setattr(
        tk,
        "_BASE",
        tk._BASE.replace("tests.test_backtest_kinds:Script", f"{Hedger.__module__}:Hedger"),
    )
    rt, s = tk._backtest(
        tmp_path,
        [tk.PERP],
        [
            ("2026-01-05T06:00:00", "BTCUSDT-PERP", 50_000.0, 50_000.2),
            ("2026-01-05T06:30:00", "BTCUSDT-PERP", 50_010.0, 50_010.2),
            ("2026-01-05T07:00:00", "BTCUSDT-PERP", 50_020.0, 50_020.2),
        ],
        [[1, "buy", 2_000, 0], [1, "sell", 1_000, 0], [2, "buy", 400, 1]],
        cash="{ USDT = 40000.0 }",
        sim='account = "margin"\nposition_mode = "hedging"',
    )
    assert rt.venue.positions_by_side()[1] == (2_000, -600)
    assert rt.exec.table.legs(1) == (2_000, -600)
    assert rt.exec.table.position(1) == s["positions"][1] == 1_400
    ctx = rt.host.slots[0].ctx
    assert ctx.legs(1) == (2_000, -600) and ctx.position(1) == 1_400
    assert (int(rt.risk.long_pos[1]), int(rt.risk.short_pos[1])) == (2_000, -600)


# --- a real engine: risk SIGKILLed and restarted on a hedging simulated venue -----------------

PERP = 1
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
funding_interval_s = 3600
funding_rate = 0.0
initial_margin = 0.1
maintenance_margin = 0.05
initial_price = 100.0
annual_vol = 0.2

[[strategies]]
id = 1
path = "tests.test_hedge_legs:TwoLegs"
instruments = ["ETH-PERP"]
params = {{ flag = "{flag}" }}
"""


class TwoLegs(Strategy):
    """Buys 2 and sells 1 on its first quote (two legs on a hedging venue); once the file
    ``params.flag`` exists, buys 1 REDUCE_ONLY (closes the short leg), once."""

    def on_start(self) -> None:
        self.opened = False
        self.closed = False

    def on_quote(self, q: Quote) -> None:
        if q.ask_qty <= 0 or q.bid_qty <= 0:
            return
        if not self.opened:
            self.opened = True
            self.ctx.buy(PERP, 2, q.ask_px + 2)
            self.ctx.sell(PERP, 1, q.bid_px - 2)
        elif not self.closed and os.path.exists(self.params["flag"]):
            self.closed = True
            self.ctx.buy(PERP, 1, q.ask_px + 2, flags=_RO)


def _config(tmp_path: Path, engine_id: str, flag: Path) -> Path:
    cfg = write_config(tmp_path, engine_id)
    text = cfg.read_text()
    text = text[: text.index("\n[[instruments]]")] + "\n" + INSTRUMENTS.format(flag=flag)
    for section, key, value in (
        ("storage.postgres", "mode", '"off"'),
        ("inference", "enabled", "false"),
        ("portfolio", "benchmark", '""'),
        ("sim", "account", '"margin"'),
        ("sim", "position_mode", '"hedging"'),
    ):
        text = set_key(text, section, key, value)
    cfg.write_text(text)
    return cfg


def _legs(engine_id: str) -> tuple[int, int, int]:
    """(net, long, short) of the perpetual in exec's positions table."""
    from procs.runtime import POSITION_DTYPE
    from shm.seqlock import SeqlockTable

    table = SeqlockTable.attach(engine_id, "positions", POSITION_DTYPE)
    try:
        for r in table.read_all():
            if int(r["instrument_id"]) == PERP:
                return int(r["position"]), int(r["long_pos"]), int(r["short_pos"])
        return 0, 0, 0
    finally:
        table.close()


@pytest.mark.timeout(150)
def test_risk_killed_on_a_hedging_venue_comes_back_with_both_legs(
    tmp_path: Path,
    eid: str,  # noqa: F811
) -> None:
    """Long 2 and short 1 held at once; risk is SIGKILLed and restarted (seeded from exec's
    table). A REDUCE_ONLY buy of 1 then closes the short leg: a restarted risk that had the
    legs back as one net long (2 - 1 = long 1, short 0) refuses it as increasing the position;
    with both legs it passes, and the venue's legs end (2, 0)."""
    flag = tmp_path / "close.flag"
    cfg = _config(tmp_path, eid, flag)
    with running_engine(cfg, tmp_path, eid) as proc:
        assert _wait_for(lambda: _legs(eid) == (1, 2, -1), 30), _legs(eid)
        old = risk_worker(proc.pid)
        assert old is not None
        os.kill(old.pid, signal.SIGKILL)
        assert _wait_for(lambda: is_ready(eid, "risk", not_pid=old.pid), 60), "no restart"
        flag.write_text("go")
        assert _wait_for(lambda: _legs(eid) == (2, 2, 0), 30), _legs(eid)
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-3000:]
    s = summary_of(tmp_path)
    assert [r["worker"] for r in s["restarts"]] == ["risk"] and s["consistent"], s["restarts"]
    assert s["positions"]["ETH-PERP"]["position"] == 2


class _Quiet(Strategy):
    pass


def test_a_restarted_strategy_is_seeded_with_both_legs_and_a_redelivered_fill_taken_out():
    """Exec's table says long 5, short -2 (net 3) at t=100; a fill of that time the ring
    delivers again (a sell of 2, before the restart) is in the seed already: the legs stay."""
    from engine.strategy_host import StrategyHost
    from tests.test_sim_kinds import PERP as INS

    iid = INS.instrument_id
    host = StrategyHost([_Quiet], [INS])
    host.set_hedged([iid])
    assert host.seed_positions({iid: 3}, 100, {iid: (5, -2)}) == []
    ctx = host.slots[0].ctx
    assert ctx.legs(iid) == (5, -2) and ctx.position(iid) == 3
    coid = (1 << 32) | 1  # strategy 1's, a previous incarnation's order
    fill = OrderFilled(coid, coid, iid, -1, 100, 2, 2, 0, 0.0, 1, 1, 50, 50, 50)
    host.on_exec_event(fill, 200)
    assert ctx.legs(iid) == (5, -2) and ctx.position(iid) == 3
    newer = OrderFilled(coid + 1, coid + 1, iid, 1, 100, 1, 1, 0, 0.0, 1, 2, 150, 150, 150)
    host.on_exec_event(newer, 200)  # after the seed: a plain buy grows the long leg
    assert ctx.legs(iid) == (6, -2) and ctx.position(iid) == 4
