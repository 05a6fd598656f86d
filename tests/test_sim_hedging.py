"""Hedging mode on the simulated exchange (engine/venues/sim_hedging.py): a long and a short of one
instrument held at once, ``REDUCE_ONLY`` closing the opposite leg, margin posted per leg — on the
venue alone and through a backtest built the way `gekko backtest` builds it
(ops/backtest_build.py), with the P&L by hand in the portfolio, risk and the venue."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import tests.test_backtest_kinds as tk
from engine.enums import OrderFlag
from engine.messages import Liquidation, OrderRejected, Quote
from engine.strategies.base import Strategy
from engine.venues.sim import SimExchange
from tests.test_sim_kinds import PERP, _md, _of, _order

_RO = int(OrderFlag.REDUCE_ONLY)


def _ro(order: Any) -> Any:
    import msgspec

    return msgspec.structs.replace(order, flags=_RO)


def test_a_buy_and_a_sell_open_two_legs_and_reduce_only_closes_the_opposite_one(tmp_path):
    sim = SimExchange([PERP], balance={"USDT": 100_000.0}, position_mode="hedging")
    t = 10**9
    _md(sim, PERP, 50_000.0, 50_000.2, t)
    sim.submit(_order(PERP, 1, 2_000, t), t)  # long 2 BTC at 50000.2
    sim.submit(_order(PERP, -1, 1_000, t), t)  # a short leg of 1 BTC at 50000.0, not a close
    assert sim.positions_by_side()[PERP.instrument_id] == (2_000, -1_000)
    assert sim.positions()[PERP.instrument_id] == 1_000  # the net
    # a buy REDUCE_ONLY closes the short leg (never more than it holds)
    rej = _of(sim.submit(_ro(_order(PERP, 1, 1_500, t)), t), OrderRejected)
    assert "short leg 1000" in rej[0].reason
    sim.submit(_ro(_order(PERP, 1, 1_000, t)), t)
    assert sim.positions_by_side()[PERP.instrument_id] == (2_000, 0)
    # cash: -2 x 50000.2 + 1 x 50000.0 - 1 x 50000.2 (notional moves; equity is what matters)
    assert sim._accounts.cash["USDT"] == pytest.approx(100_000 - 100_000.4 + 50_000 - 50_000.2)


def test_each_leg_posts_its_margin():
    """Long 2 BTC at ~50000 needs 10,000 of initial margin (10%); a short leg of 1 BTC adds
    5,000 where a netting venue would release margin: with 12,000 of equity it is refused."""
    net = SimExchange([PERP], balance={"USDT": 12_000.0})
    hedged = SimExchange([PERP], balance={"USDT": 12_000.0}, position_mode="hedging")
    t = 10**9
    for sim in (net, hedged):
        _md(sim, PERP, 50_000.0, 50_000.2, t)
        sim.submit(_order(PERP, 1, 2_000, t), t)
    assert not _of(net.submit(_order(PERP, -1, 1_000, t), t), OrderRejected)
    (rej,) = _of(hedged.submit(_order(PERP, -1, 1_000, t), t), OrderRejected)
    assert "insufficient margin" in rej.reason
    _, im, _ = hedged._accounts.margin(hedged, "USDT")
    assert im == pytest.approx(0.1 * 2 * 50_000.1)


def test_liquidation_closes_each_leg_and_the_record_brings_the_legs_back(tmp_path):
    path = tmp_path / "h.rec"
    sim = SimExchange([PERP], balance={"USDT": 20_000.0}, position_mode="hedging", record_path=path)
    t = 10**9
    _md(sim, PERP, 50_000.0, 50_000.2, t)
    sim.submit(_order(PERP, 1, 2_000, t), t)
    sim.submit(_order(PERP, -1, 1_000, t), t)
    sim.close_record()
    again = SimExchange(
        [PERP], balance={"USDT": 20_000.0}, position_mode="hedging", record_path=path
    )
    assert again.positions_by_side()[PERP.instrument_id] == (2_000, -1_000)
    # cash -30000.4 (2 x 50000.2 paid, 1 x 50000.0 received): equity at the mark M is
    # M - 30000.4, maintenance 5% of both legs 0.15 M; at 30000: -0.4 < 4500, liquidated,
    # one Liquidation per leg (a sell closing the long, a buy closing the short)
    ev = _md(again, PERP, 29_999.9, 30_000.1, 2 * t)
    liq = _of(ev, Liquidation)
    assert sorted((x.side, x.qty) for x in liq) == [(-1, 2_000), (1, 1_000)]
    assert again.positions_by_side()[PERP.instrument_id] == (0, 0)
    again.close_record()


class Hedger(Strategy):
    """``params.orders`` = [[quote number, "buy" | "sell", lots, reduce_only], ...]: market
    orders sent on the n-th quote (from 1)."""

    def on_start(self) -> None:
        self.n = 0

    def on_quote(self, q: Quote) -> None:
        self.n += 1
        for k, side, qty, ro in self.params["orders"]:
            if k == self.n:
                send = self.ctx.buy if side == "buy" else self.ctx.sell
                send(q.instrument_id, int(qty), None, flags=_RO if ro else 0)


def test_a_hedged_long_and_short_held_at_once_in_a_backtest(tmp_path: Path, monkeypatch):
    """06:00: buy 2 BTC at the ask 50000.2 (the long leg) and sell 1 at the bid 50000.0 (a short
    leg, not a close). 07:00: sell 2 REDUCE_ONLY at 50100.0 closes the long: realized
    2 x (50100.0 - 50000.2) = 199.6. 07:30: the short is left, marked at 49900.1 (mid rounded
    down): unrealized 1 x (50000.0 - 49900.1) = 99.9. No funding before 08:00, no fees."""
    monkeypatch.setattr(
        tk, "_BASE", tk._BASE.replace("tests.test_backtest_kinds:Script", f"{__name__}:Hedger")
    )
    rt, s = tk._backtest(
        tmp_path,
        [tk.PERP],
        [
            ("2026-01-05T06:00:00", "BTCUSDT-PERP", 50_000.0, 50_000.2),
            ("2026-01-05T07:00:00", "BTCUSDT-PERP", 50_100.0, 50_100.2),
            ("2026-01-05T07:30:00", "BTCUSDT-PERP", 49_900.0, 49_900.2),
        ],
        [[1, "buy", 2_000, 0], [1, "sell", 1_000, 0], [2, "sell", 2_000, 1]],
        cash="{ USDT = 20000.0 }",
        sim='account = "margin"\nposition_mode = "hedging"',
    )
    assert s["venue_positions"][1] == s["positions"][1] == s["risk_positions"][1] == -1_000
    p = rt.portfolio.positions[1]
    assert (p.long_qty, p.short_qty) == (0, 1_000)  # the short leg, in lots held short
    assert (int(rt.risk.long_pos[1]), int(rt.risk.short_pos[1])) == (0, -1_000)
    assert s["pnl"]["realized"] == pytest.approx(199.6)
    assert s["pnl"]["unrealized"] == pytest.approx(99.9)
    assert s["pnl"]["equity"] == pytest.approx(20_000 + 199.6 + 99.9)
    assert rt.venue.positions_by_side()[1] == (0, -1_000)


def _fill(coid: int, iid: int, side: int, qty: int, px: int) -> Any:
    from engine.messages import OrderFilled

    return OrderFilled(coid, coid, iid, side, px, qty, qty, 0, 0.0, 1, coid, 1, 1, 1)


def test_risk_keeps_the_legs_apart_checks_reduce_only_per_leg_and_flattens_each_leg():
    """Risk on a hedging venue's instrument: a buy and a sell fill two legs (net 1000); a
    REDUCE_ONLY buy is checked against the short leg (a netting gate would see a long and
    refuse any buy-to-reduce); flatten sends one REDUCE_ONLY close per leg."""
    from engine.messages import Control, ControlCommand, IntentNew, NewOrder, RiskEvent
    from engine.risk import RiskGate, RiskLimits
    from tests.test_risk_margin import PERP as RPERP

    lim = RiskLimits.off(capital=1e6, max_position_lots=10**9, max_order_notional=1e12)
    g = RiskGate(lim, [RPERP], hedging=[1])
    g.on_market_data(Quote(1, 599_990, 1, 600_010, 1, 1, 1))
    g.on_prices(10)

    def ask(n: int, side: int, qty: int, flags: int = 0) -> list[Any]:
        it = IntentNew((1 << 32) | n, 1, 1, side, 1, 2, 600_000, qty, 5, 6, flags=flags)
        return g.on_intent(it, 20)

    for n, side, qty in ((1, 1, 2_000), (2, -1, 1_000)):
        (o,) = ask(n, side, qty)
        g.on_exec_event(_fill(o.client_order_id, 1, side, qty, 600_000))
    assert (int(g.position[1]), int(g.long_pos[1]), int(g.short_pos[1])) == (1_000, 2_000, -1_000)
    # a buy REDUCE_ONLY of 1500 would close more than the short leg (1000): refused
    out = ask(3, 1, 1_500, _RO)
    assert isinstance(out[0], RiskEvent) and "reduce-only" in out[0].reason
    (o,) = ask(4, 1, 1_000, _RO)  # closes the short leg, not the long
    g.on_exec_event(_fill(o.client_order_id, 1, 1, 1_000, 600_000))
    assert (int(g.long_pos[1]), int(g.short_pos[1])) == (2_000, 0)
    (o,) = ask(5, -1, 500)  # a plain sell opens a short leg again
    g.on_exec_event(_fill(o.client_order_id, 1, -1, 500, 600_000))
    out = g.on_control(Control(int(ControlCommand.FLATTEN), "", 30))
    closes = sorted((o.side, o.qty, o.flags) for o in out if isinstance(o, NewOrder))
    assert closes == [(-1, 2_000, _RO), (1, 500, _RO)]


def test_risk_checks_a_replace_of_a_reduce_only_order_against_the_opposite_leg():
    """Long 2000 and short 1000 on a hedging venue, max position 2500 lots. A REDUCE_ONLY buy
    of 500 rests (it closes short lots). Enlarged to 1000 it still closes no more than the
    short leg: approved (checked against the long leg it would make 3000, over the limit).
    Enlarged to 1500 it would close more than the short leg: refused as reduce-only."""
    from engine.messages import IntentNew, IntentReplace, ReplaceOrder, RiskEvent
    from engine.risk import RiskGate, RiskLimits
    from tests.test_risk_margin import PERP as RPERP

    lim = RiskLimits.off(capital=1e6, max_position_lots=2_500, max_order_notional=1e12)
    g = RiskGate(lim, [RPERP], hedging=[1])
    g.on_market_data(Quote(1, 599_990, 1, 600_010, 1, 1, 1))
    g.on_prices(10)

    def ask(n: int, side: int, qty: int, flags: int = 0) -> list[Any]:
        it = IntentNew((1 << 32) | n, 1, 1, side, 1, 2, 600_000, qty, 5, 6, flags=flags)
        return g.on_intent(it, 20)

    for n, side, qty in ((1, 1, 2_000), (2, -1, 1_000)):
        (o,) = ask(n, side, qty)
        g.on_exec_event(_fill(o.client_order_id, 1, side, qty, 600_000))
    (ro,) = ask(3, 1, 500, _RO)
    coid = ro.client_order_id

    def replace(qty: int, t: int) -> list[Any]:
        return g.on_intent(IntentReplace(coid, 1, 1, 600_000, qty, t, t), t)

    (ok,) = replace(1_000, 30)
    assert isinstance(ok, ReplaceOrder) and ok.new_qty == 1_000
    out = replace(1_500, 40)
    assert isinstance(out[0], RiskEvent) and "reduce-only" in out[0].reason
    # a restarted risk rebuilds the order from the record: still REDUCE_ONLY, same answers
    g = RiskGate(lim, [RPERP], hedging=[1])
    g.on_market_data(Quote(1, 599_990, 1, 600_010, 1, 1, 1))
    g.on_prices(10)
    g.on_fill(1, 1, 2_000, 600_000, 0.0)
    g.on_fill(1, -1, 1_000, 600_000, 0.0)
    assert g.restore([ro], []) == 1
    (ok,) = replace(1_000, 50)
    assert isinstance(ok, ReplaceOrder) and ok.new_qty == 1_000
    out = replace(1_500, 60)
    assert isinstance(out[0], RiskEvent) and "reduce-only" in out[0].reason


def test_risk_counts_the_margin_of_both_legs():
    """Capital 10,000, margin usage capped at 50 % (5,000); BTC at 60,000, 5 % initial margin.
    Long 1 BTC posts 3,000. A plain sell of 1 BTC would close it on a netting venue; on a
    hedging one it opens a short leg: 6,000 of margin for both legs, refused. 0.5 BTC (4,500)
    passes."""
    from engine.messages import IntentNew, RiskEvent
    from engine.risk import RiskGate, RiskLimits
    from tests.test_risk_margin import PERP as RPERP

    def gate(hedging: list[int]) -> RiskGate:
        lim = RiskLimits.off(
            capital=10_000.0,
            max_position_lots=10**9,
            max_order_notional=1e12,
            max_margin_pct=50.0,
        )
        g = RiskGate(lim, [RPERP], hedging=hedging)
        g.on_market_data(Quote(1, 599_990, 1, 600_010, 1, 1, 1))
        g.on_prices(10)
        it = IntentNew((1 << 32) | 1, 1, 1, 1, 1, 2, 600_000, 1_000, 5, 6)
        (o,) = g.on_intent(it, 20)
        g.on_exec_event(_fill(o.client_order_id, 1, 1, 1_000, 600_000))
        return g

    def sell(g: RiskGate, n: int, qty: int) -> list[Any]:
        return g.on_intent(IntentNew((1 << 32) | n, 1, 1, -1, 1, 2, 600_000, qty, 5, 6), 30)

    assert not isinstance(sell(gate([]), 2, 1_000)[0], RiskEvent)  # netting: it reduces
    hedged = gate([1])
    out = sell(hedged, 2, 1_000)
    assert isinstance(out[0], RiskEvent) and out[0].reason == "margin usage"
    assert out[0].value == pytest.approx(60.0)  # 6,000 of 10,000
    (o,) = sell(hedged, 3, 500)
    hedged.on_exec_event(_fill(o.client_order_id, 1, -1, 500, 600_000))
    assert hedged.acct.im_total == pytest.approx(4_500.0)  # both legs, not the net 0.5 BTC
    hedged.refresh_exposure()
    assert hedged.acct.im_total == pytest.approx(4_500.0)
