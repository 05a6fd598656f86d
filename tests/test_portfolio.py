"""Portfolio: positions are the sum of signed fills; the cost and cash views of P&L agree."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.instruments import Instrument
from engine.messages import OrderFilled, OrderPartiallyFilled, Quote, Side
from engine.portfolio import Portfolio

INS = [
    Instrument(instrument_id=1, symbol="AAA", tick_size=0.01, lot_size=1.0),
    Instrument(instrument_id=4, symbol="BTC", tick_size=0.5, lot_size=0.001),
]


def fill(iid: int, side: int, px: int, qty: int, fee: float = 0.0, partial: bool = False):
    cls = OrderPartiallyFilled if partial else OrderFilled
    return cls(1, 1, iid, side, px, qty, qty, 0, fee, 1, 1, 0, 0, 0)


def test_round_trip_realizes_pnl():
    p = Portfolio(INS)
    p.on_fill(fill(1, Side.BUY, 10_000, 10, fee=0.5))  # buy 10 @ 100.00
    p.on_fill(fill(1, Side.BUY, 10_200, 10, fee=0.5))  # avg 101.00
    assert p.position(1) == 20 and p.positions[1].avg_px == pytest.approx(10_100)
    p.on_fill(fill(1, Side.SELL, 10_300, 5))  # +2.00 x 5
    assert p.realized() == pytest.approx(10.0)
    p.mark(1, 10_000)
    assert p.unrealized() == pytest.approx(-1.0 * 15)
    assert p.fees() == pytest.approx(1.0)
    assert p.equity() - p.initial_cash == pytest.approx(10.0 - 15.0 - 1.0)


def test_crossing_zero_reopens_at_fill_price():
    p = Portfolio(INS)
    p.on_fill(fill(1, Side.BUY, 100, 3))
    p.on_fill(fill(1, Side.SELL, 110, 5))  # close 3 (+30 ticks), open short 2 @ 110
    pos = p.positions[1]
    assert pos.position == -2 and pos.avg_px == 110
    assert p.realized() == pytest.approx(30 * 0.01)
    p.on_fill(fill(1, Side.BUY, 100, 2))
    assert pos.position == 0 and pos.avg_px == 0.0
    assert p.realized() == pytest.approx((30 + 20) * 0.01)


def test_multiplier_and_summary():
    p = Portfolio(INS, initial_cash=1_000.0)
    p.on_fill(fill(4, Side.BUY, 120_000, 2_000))  # 2 BTC @ 60_000
    p.mark(4, 122_000)  # 61_000
    assert p.unrealized() == pytest.approx(2_000.0)
    p.on_market_data(Quote(4, 121_000, 1, 121_002, 1, 0, 0))
    s = p.summary()
    assert s["positions"] == {1: 0, 4: 2_000}
    assert s["instruments"][4]["mark"] == 121_001
    assert s["unrealized"] == pytest.approx(1_001 * 0.5 * 2)
    assert s["equity"] == pytest.approx(1_000.0 + s["net_pnl"])
    p.on_fill(fill(9, Side.BUY, 1, 1))  # unknown instrument: ignored, counted
    assert p.unknown_fills == 1 and p.fill_count == 1


fills_st = st.lists(
    st.tuples(
        st.sampled_from([1, 4]),
        st.sampled_from([Side.BUY, Side.SELL]),
        st.integers(1, 1_000_000),  # px ticks
        st.integers(1, 5_000),  # qty lots
        st.floats(0, 5, allow_nan=False),  # fee
        st.booleans(),
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(fills=fills_st, marks=st.tuples(st.integers(1, 1_000_000), st.integers(1, 1_000_000)))
def test_position_is_sum_of_signed_fills_and_pnl_views_agree(fills, marks):
    p = Portfolio(INS, initial_cash=50_000.0)
    expected = {1: 0, 4: 0}
    for iid, side, px, qty, fee, partial in fills:
        p.on_fill(fill(iid, side, px, qty, fee, partial))
        expected[iid] += int(side) * qty
    assert {iid: p.position(iid) for iid in expected} == expected
    assert p.fill_count == len(fills)
    p.mark(1, marks[0])
    p.mark(4, marks[1])
    scale = 1.0 + sum(px * qty for _, _, px, qty, _, _ in fills) * 0.5
    assert p.realized() + p.unrealized() - p.fees() == pytest.approx(
        p.equity() - p.initial_cash, abs=1e-9 * scale
    )
    assert p.fees() == pytest.approx(sum(f[4] for f in fills))
