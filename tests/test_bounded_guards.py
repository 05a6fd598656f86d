"""Bounded prices move in steps: exec's price-gap check and risk's flash-move guard measure a
binary in ticks and a betting selection in ladder ticks (engine.price_gap, engine.market_guard);
the other kinds keep their relative bands."""

from __future__ import annotations

import numpy as np
import pytest

from engine.betting import ladder_position
from engine.exec_engine import ExecEngine, ExecPolicy
from engine.instruments import Instrument
from engine.market_guard import MarketGuard
from engine.messages import (
    InstrumentHalted,
    InstrumentResumed,
    NewOrder,
    OrderType,
    Quote,
    Side,
    TimeInForce,
)
from engine.price_gap import PriceGapGuard
from engine.risk import RiskGate, RiskLimits

S = 1_000_000_000
SPOT = Instrument(instrument_id=0, symbol="AAA")
YES = Instrument(instrument_id=1, symbol="YES", kind="binary", market_id="m1")  # tick 0.01
BET = Instrument(instrument_id=2, symbol="HORSE", kind="betting", market_id="1.23")
FINE = Instrument(instrument_id=3, symbol="FINE", kind="binary", tick_size=0.001, market_id="m2")
INS = [SPOT, YES, BET, FINE]
DEF = ExecPolicy()  # the shipped defaults: 100 bps, 3 ticks, 5 ladder ticks


def quote(iid: int, bid: int, ask: int, t: int) -> Quote:
    return Quote(iid, bid, 10, ask, 10, t, t)


def market(iid: int, ts: int, px: int = 0, coid: int = 1) -> NewOrder:
    return NewOrder(
        coid, 1, iid, Side.BUY, OrderType.MARKET, TimeInForce.IOC, px, 1, ts, ts, stop_px=0
    )


def gap(ins: Instrument, before: tuple[int, int], after: tuple[int, int], pol=DEF) -> str:
    g = PriceGapGuard()
    g.note(quote(ins.instrument_id, *before, 10))
    g.note(quote(ins.instrument_id, *after, 20))
    o = market(ins.instrument_id, 10)
    return g.why(o, pol.price_gap_bps, ins, pol.price_gap_ticks, pol.price_gap_ladder_ticks)


def test_ladder_position_counts_ladder_ticks_whatever_the_odds():
    assert ladder_position(200, 0.01) - ladder_position(160, 0.01) == pytest.approx(40)
    assert ladder_position(300, 0.01) - ladder_position(298, 0.01) == pytest.approx(1)
    assert ladder_position(201, 0.01) == pytest.approx(99.5)  # a mid between 2.00 and 2.02
    assert ladder_position(1, 0.01) == 0 and ladder_position(10**6, 0.01) == 349  # clamped


def test_price_gap_of_a_binary_is_in_ticks():
    """At 0.35 one tick is 285 bps: the relative band refused it; 3 ticks pass, 4 do not."""
    assert gap(YES, (34, 36), (35, 37)) == ""  # 1 tick
    assert gap(YES, (34, 36), (37, 39)) == ""  # 3 ticks
    why = gap(YES, (34, 36), (38, 40))
    assert "4.0 ticks" in why and "band 3 ticks" in why
    assert gap(YES, (34, 36), (38, 40), ExecPolicy(price_gap_ticks=0)) == ""  # off for binaries


def test_price_gap_of_a_fine_ticked_binary_needs_the_relative_band_too():
    """Ticking 0.001, 0.500 -> 0.504 is 4 ticks but 80 bps: the wider band (100 bps) holds;
    0.500 -> 0.520 is past both."""
    assert gap(FINE, (499, 501), (503, 505)) == ""
    assert "20.0 ticks" in gap(FINE, (499, 501), (519, 521))
    assert "20.0 ticks" in gap(FINE, (499, 501), (519, 521), ExecPolicy(price_gap_bps=0))


def test_price_gap_of_a_betting_selection_is_in_ladder_ticks():
    """Mid 2.01 -> 1.97 is 4 ladder ticks (2 %): passes; 4.05 -> 3.725 is 6 (8 %, steps of 0.05
    and 0.10 there): refused; 2.01 -> 1.605 is 40."""
    assert gap(BET, (200, 202), (196, 198)) == ""
    why = gap(BET, (400, 410), (370, 375))
    assert "6.0 ladder ticks" in why and "band 5 ladder ticks" in why
    assert "40.0 ladder ticks" in gap(BET, (200, 202), (160, 161))


def test_price_gap_of_other_kinds_stays_relative():
    assert gap(SPOT, (9_990, 10_010), (10_080, 10_100)) == ""  # 90 bps
    assert "bps" in gap(SPOT, (9_990, 10_010), (10_190, 10_210))  # 200 bps
    # no instrument known: relative, as before
    g = PriceGapGuard()
    g.note(quote(0, 34, 36, 10))
    g.note(quote(0, 35, 37, 20))
    assert "bps" in g.why(market(0, 10), 100.0)


class _Venue:
    """Takes every order and says nothing: what exec sends is what it chose to send."""

    def __init__(self) -> None:
        self.sent: list[int] = []

    def submit(self, order: NewOrder, now_ns: int) -> list:
        self.sent.append(order.client_order_id)
        return []

    def on_market_data(self, msg: object, now_ns: int) -> list:
        return []

    def poll(self, now_ns: int) -> list:
        return []


def test_exec_sends_a_binary_market_order_after_a_one_tick_move():
    v = _Venue()
    e = ExecEngine(v, INS, ExecPolicy(), algo_engine=None)
    for t, (b, a) in ((10, (34, 36)), (20, (35, 37))):
        e.on_market_data(quote(1, b, a, t), t)
    out = e.on_order(market(1, 10, coid=1), 21)
    assert "OrderRejected" not in [type(m).__name__ for m in out] and v.sent == [1], out
    e.on_market_data(quote(1, 45, 47, 30), 30)  # 10 ticks since the tick of order 2
    out = e.on_order(market(1, 20, coid=2), 31)
    assert [type(m).__name__ for m in out] == ["OrderRejected"] and "ticks" in out[0].reason
    assert v.sent == [1] and e.gap_rejects == 1


def flash(g: MarketGuard, iid: int, before: float, after: float) -> list:
    px = np.zeros(g.n)
    px[iid] = before
    g.on_prices(px, 0)
    px[iid] = after
    return g.on_prices(px, S // 2)


def guard() -> MarketGuard:
    lim = RiskLimits()  # the shipped defaults: 3 %, 10 ticks, 50 ladder ticks
    return RiskGate(lim, INS).guard


def test_flash_guard_measures_a_betting_selection_in_ladder_ticks():
    assert not flash(guard(), 2, 200.0, 160.0)  # odds shorten 2.00 -> 1.60: 40 ladder ticks
    g = guard()
    out = flash(g, 2, 200.0, 140.0)  # 60 ladder ticks
    assert [type(m) for m in out] == [InstrumentHalted] and g.halted[2]
    assert "-60.0 ladder ticks" in out[0].reason and "band 50 ladder ticks" in out[0].reason
    px = np.array([0.0, 0.0, 140.0])
    for t in range(1, 8):  # calm at 1.40: resumes after the window and the cooldown
        out = g.on_prices(px, S // 2 + t * S)
        if out:
            break
    assert [type(m) for m in out] == [InstrumentResumed] and not g.halted[2]


def test_flash_guard_measures_a_binary_in_ticks():
    assert not flash(guard(), 1, 3.0, 5.0)  # 0.03 -> 0.05: +67 %, 2 ticks
    assert not flash(guard(), 1, 35.0, 45.0)  # 10 ticks: the band
    g = guard()
    out = flash(g, 1, 35.0, 46.0)
    assert [type(m) for m in out] == [InstrumentHalted] and "+11.0 ticks" in out[0].reason
    off = RiskGate(RiskLimits(flash_band_ticks=0.0), INS).guard
    assert not flash(off, 1, 3.0, 90.0) and off.on  # off for binaries, on for the others


def test_flash_guard_of_a_fine_ticked_binary_needs_the_relative_band_too():
    assert not flash(guard(), 3, 500.0, 511.0)  # 11 ticks, 2.2 %: within 3 %
    g = guard()
    out = flash(g, 3, 500.0, 560.0)  # 60 ticks, 12 %
    assert [type(m) for m in out] == [InstrumentHalted] and "+60.0 ticks" in out[0].reason


def test_flash_guard_keeps_the_relative_band_for_other_kinds():
    g = guard()
    assert not flash(g, 0, 10_000.0, 10_290.0)  # 2.9 %
    out = flash(g, 0, 10_000.0, 10_400.0)
    assert [type(m) for m in out] == [InstrumentHalted] and "+4.00%" in out[0].reason
    only_bounded = RiskGate(RiskLimits(flash_band_pct=0.0), INS).guard
    assert only_bounded.on and not flash(only_bounded, 0, 100.0, 200.0)
    assert flash(only_bounded, 2, 200.0, 120.0)  # 80 ladder ticks
    assert not RiskGate(RiskLimits.off(), INS).guard.on


def test_risks_price_band_of_bounded_kinds_is_in_ticks():
    """A limit buy of a binary at 0.04 with the mid at 0.03 is 33 % away but one tick: passes
    (5 ticks: the wider band); 0.10 is 7: refused. A back at 2.10 with the mid 2.00 is 5 ladder ticks (10
    pass); 2.50 is 25. A spot limit keeps the relative band (5 %)."""
    from engine.messages import IntentNew

    lim = RiskLimits.off(
        max_order_notional=1e9,
        max_position_lots=10**6,
        price_band_pct=5.0,
        price_band_ticks=5.0,
        price_band_ladder_ticks=10.0,
    )
    g = RiskGate(lim, INS)
    for iid, (b, a) in ((0, (9_990, 10_010)), (1, (2, 4)), (2, (199, 201)), (3, (480, 520))):
        g.on_market_data(quote(iid, b, a, 1))

    def limit(iid: int, px: int, coid: int) -> list:
        it = IntentNew(coid, 1, iid, Side.BUY, OrderType.LIMIT, TimeInForce.GTC, px, 1, 1, 1)
        return g.on_intent(it, 2)

    assert isinstance(limit(1, 4, 1)[0], NewOrder)
    assert isinstance(limit(1, 8, 2)[0], NewOrder)  # 5 ticks: the band
    out = limit(1, 10, 3)
    assert "price band" in out[0].reason and out[0].value == 7.0 and out[0].limit == 5.0
    assert isinstance(limit(2, 210, 4)[0], NewOrder)
    out = limit(2, 250, 5)
    assert "price band" in out[0].reason and out[0].value == pytest.approx(25.0)
    # ticking 0.001, a TWAP child 2 ticks through a 0.48 / 0.52 book is 22 ticks but 4.4 %
    assert isinstance(limit(3, 522, 8)[0], NewOrder)
    assert "price band" in limit(3, 560, 9)[0].reason  # 60 ticks, 12 %
    assert isinstance(limit(0, 10_400, 6)[0], NewOrder)  # 4 %
    assert "price band" in limit(0, 10_600, 7)[0].reason  # 6 %
