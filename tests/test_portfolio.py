"""Portfolio: positions are the sum of signed fills, P&L comes from tax lots (FIFO by default),
the cost and cash views of P&L agree, attribution by strategy sums to the whole."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.instruments import Instrument
from engine.messages import (
    CancelRejectReason,
    NewOrder,
    OrderCanceled,
    OrderCancelRejected,
    OrderFilled,
    OrderPartiallyFilled,
    Quote,
    Side,
)
from engine.portfolio import Portfolio

INS = [
    Instrument(instrument_id=1, symbol="AAA", tick_size=0.01, lot_size=1.0),
    Instrument(instrument_id=4, symbol="BTC", tick_size=0.5, lot_size=0.001, venue="kraken"),
]

_fill_ids = iter(range(1, 10**9))


def fill(
    iid: int,
    side: int,
    px: int,
    qty: int,
    fee: float = 0.0,
    partial: bool = False,
    coid: int = 1,
    ts: int = 0,
):
    cls = OrderPartiallyFilled if partial else OrderFilled
    leaves = 1 if partial else 0  # a partial fill leaves the order open
    return cls(coid, 1, iid, side, px, qty, qty, leaves, fee, 1, next(_fill_ids), 0, ts, 0)


def test_round_trip_realizes_fifo_pnl():
    p = Portfolio(INS)
    p.on_fill(fill(1, Side.BUY, 10_000, 10, fee=0.5))  # buy 10 @ 100.00
    p.on_fill(fill(1, Side.BUY, 10_200, 10, fee=0.5))  # buy 10 @ 102.00, avg 101.00
    assert p.position(1) == 20 and p.positions[1].avg_px == pytest.approx(10_100)
    p.on_fill(fill(1, Side.SELL, 10_300, 5))  # FIFO: closes 5 of the 100.00 lot: +3.00 x 5
    assert p.realized() == pytest.approx(15.0)
    assert [(lot.qty, lot.px) for lot in p.lots(1)] == [(5, 10_000), (10, 10_200)]
    assert p.positions[1].avg_px == pytest.approx((5 * 10_000 + 10 * 10_200) / 15)
    p.mark(1, 10_000)
    assert p.unrealized() == pytest.approx(0.0 * 5 - 2.0 * 10)
    assert p.fees() == pytest.approx(1.0)
    assert p.equity() - p.initial_cash == pytest.approx(15.0 - 20.0 - 1.0)


@pytest.mark.parametrize(("method", "realized"), [("fifo", 15.0), ("lifo", 5.0), ("hifo", 5.0)])
def test_lot_methods_move_pnl_between_realized_and_unrealized(method, realized):
    p = Portfolio(INS, lot_method=method)
    p.on_fill(fill(1, Side.BUY, 10_000, 10))
    p.on_fill(fill(1, Side.BUY, 10_200, 10))
    p.on_fill(fill(1, Side.SELL, 10_300, 5))
    p.mark(1, 10_300)
    assert p.realized() == pytest.approx(realized)
    assert p.realized() + p.unrealized() == pytest.approx(3.0 * 10 + 1.0 * 10)  # same total


def test_specific_lots_named_for_an_order_close_first():
    p = Portfolio(INS)
    p.on_fill(fill(1, Side.BUY, 10_000, 10, coid=11))
    p.on_fill(fill(1, Side.BUY, 9_000, 10, coid=12))
    p.on_fill(fill(1, Side.BUY, 11_000, 10, coid=13))
    third = p.lots(1)[2].ref
    p.designate_lots(20, [third])
    p.on_fill(fill(1, Side.SELL, 10_500, 4, coid=20, partial=True))
    p.on_fill(fill(1, Side.SELL, 10_500, 8, coid=20))  # 6 more from the named lot, then FIFO
    assert p.realized() == pytest.approx(-5.0 * 10 + 5.0 * 2)
    assert [(lot.qty, lot.px) for lot in p.lots(1)] == [(8, 10_000), (10, 9_000)]
    # a designation ends with its order: a later order closes by the method again
    p.designate_lots(21, [p.lots(1)[1].ref])
    p.on_event(OrderCanceled(21, 1, 0, "ioc", 0, 0, 0))
    p.on_fill(fill(1, Side.SELL, 10_000, 1, coid=21))
    assert [lot.qty for lot in p.lots(1)] == [7, 10]
    # ... but a refused cancel leaves the order, and so its designation, as they were
    p.designate_lots(22, [p.lots(1)[1].ref])
    p.on_event(OrderCancelRejected(22, 1, CancelRejectReason.REFUSED, "busy", 0, 0, 0))
    p.on_fill(fill(1, Side.SELL, 10_000, 1, coid=22))
    assert [lot.qty for lot in p.lots(1)] == [7, 9]


def test_crossing_zero_reopens_at_fill_price():
    p = Portfolio(INS)
    p.on_fill(fill(1, Side.BUY, 100, 3))
    p.on_fill(fill(1, Side.SELL, 110, 5))  # close 3 (+30 ticks), open short 2 @ 110
    pos = p.positions[1]
    assert pos.position == -2 and pos.avg_px == 110
    assert [(lot.direction, lot.qty) for lot in p.lots(1)] == [(-1, 2)]
    assert p.realized() == pytest.approx(30 * 0.01)
    p.on_fill(fill(1, Side.BUY, 100, 2))
    assert pos.position == 0 and pos.avg_px == 0.0 and p.lots(1) == []
    assert p.realized() == pytest.approx((30 + 20) * 0.01)


def test_multiplier_venue_and_summary():
    p = Portfolio(INS, initial_cash=1_000.0)
    p.on_fill(fill(4, Side.BUY, 120_000, 2_000))  # 2 BTC @ 60_000
    p.mark(4, 122_000)  # 61_000
    assert p.unrealized() == pytest.approx(2_000.0)
    p.on_market_data(Quote(4, 121_000, 1, 121_002, 1, 0, 0))
    s = p.summary()
    assert s["positions"] == {1: 0, 4: 2_000}
    assert s["instruments"][4]["mark"] == 121_001
    assert s["instruments"][4]["venue"] == "kraken"
    assert s["unrealized"] == pytest.approx(1_001 * 0.5 * 2)
    assert s["equity"] == pytest.approx(1_000.0 + s["net_pnl"])
    assert p.positions_by_venue() == {"kraken": {"BTC": 2_000}}
    p.on_fill(fill(9, Side.BUY, 1, 1))  # unknown instrument: ignored, counted
    p.on_fill(fill(1, Side.BUY, 100, 1, fee=float("nan")))  # malformed: ignored, counted
    p.on_fill(fill(1, Side.BUY, 0, 1))
    assert p.unknown_fills == 1 and p.bad_fills == 2 and p.fill_count == 1


def test_cash_per_currency_and_fx_totals():
    ins = [
        Instrument(instrument_id=1, symbol="AAA", tick_size=0.01, currency="USD"),
        Instrument(instrument_id=2, symbol="SAP", tick_size=0.01, currency="EUR"),
    ]
    p = Portfolio(ins, {"USD": 1_000.0, "EUR": 500.0}, fx_rates={"EUR": 1.1})
    assert p.initial_cash == pytest.approx(1_000 + 550)
    p.on_fill(fill(2, Side.BUY, 10_000, 3, fee=1.0))  # 300 EUR + 1 EUR fee
    assert p.cash_by_currency == {"USD": 1_000.0, "EUR": pytest.approx(199.0)}
    p.mark(2, 11_000)
    assert p.unrealized() == pytest.approx(30 * 1.1)
    assert p.equity() - p.initial_cash == pytest.approx(p.net_pnl())
    assert p.net_pnl() == pytest.approx((30 - 1) * 1.1)
    with pytest.raises(ValueError):
        Portfolio(ins, fx_rates={"EUR": float("nan")})
    with pytest.raises(ValueError):
        Portfolio(ins, lot_method="average")


def test_attribution_by_strategy_from_ids_and_orders():
    p = Portfolio(INS)
    a, b = (1 << 32) | 1, (2 << 32) | 1
    odd = 77  # an id outside the strategy_id << 32 scheme: its NewOrder names the strategy
    p.on_event(NewOrder(odd, 3, 1, Side.BUY, 2, 1, 10_000, 5, 0, 0))
    p.on_event(fill(1, Side.BUY, 10_000, 10, fee=0.1, coid=a))
    p.on_event(fill(1, Side.SELL, 10_100, 4, fee=0.1, coid=b))
    p.on_event(fill(1, Side.BUY, 10_050, 5, fee=0.1, coid=odd))
    p.mark(1, 10_200)
    by = p.strategy_pnl()
    assert set(by) == {1, 2, 3}
    assert by[1]["net"] == pytest.approx(2.0 * 10 - 0.1)
    assert by[2]["net"] == pytest.approx(-1.0 * 4 - 0.1)
    assert by[3]["net"] == pytest.approx(1.5 * 5 - 0.1)
    assert sum(v["net"] for v in by.values()) == pytest.approx(p.net_pnl())
    # what was remembered per order is forgotten when the order ends (bounded memory)
    assert p.strategy_of(odd) == 0
    p.on_event(NewOrder(78, 3, 1, Side.BUY, 2, 1, 10_000, 5, 0, 0))
    assert p.strategy_of(78) == 3
    p.on_event(OrderCanceled(78, 1, 5, "ioc", 0, 0, 0))
    assert p.strategy_of(78) == 0


def test_equity_curve_samples_equity_and_benchmark():
    p = Portfolio(INS, initial_cash=100.0, benchmark=4)
    p.sample(0)
    p.on_fill(fill(1, Side.BUY, 1_000, 10))
    p.mark(1, 1_100)
    p.mark(4, 100)
    p.sample(10)
    p.sample(10)  # same time: replaced, not duplicated
    p.sample(5)  # earlier than the last point: ignored
    ts, eq, bench = p.equity_curve()
    assert ts.tolist() == [0, 10]
    assert eq.tolist() == pytest.approx([100.0, 110.0])
    assert bench.tolist() == pytest.approx([0.0, 50.0])
    with pytest.raises(ValueError):
        Portfolio(INS, benchmark=99)


def test_wash_sale_is_flagged_when_bought_back_within_30_days():
    day = 86_400 * 10**9
    p = Portfolio(INS)
    p.on_fill(fill(1, Side.BUY, 10_000, 10, ts=0))
    p.on_fill(fill(1, Side.SELL, 9_000, 10, ts=40 * day))  # a loss, nothing bought around it
    assert p.summary()["wash_sales"] == 0
    p.on_fill(fill(1, Side.BUY, 9_100, 10, ts=60 * day))  # 20 days later: a wash sale
    assert p.summary()["wash_sales"] == 1
    assert p.summary()["wash_sale_disallowed_loss"] == pytest.approx(-100.0)
    p.on_fill(fill(1, Side.SELL, 9_000, 10, ts=70 * day))  # loss...
    p.on_fill(fill(1, Side.BUY, 9_000, 10, ts=101 * day))  # ...bought back after 31 days: fine
    assert p.summary()["wash_sales"] == 1
    # a purchase 10 days before a loss sale that is still held afterwards is the replacement
    p.on_fill(fill(1, Side.BUY, 9_000, 10, ts=110 * day))
    p.on_fill(fill(1, Side.SELL, 8_000, 10, ts=120 * day))  # FIFO sells the day-101 lot
    assert p.summary()["wash_sales"] == 2


# --- properties ------------------------------------------------------------------------------

steps_st = st.lists(
    st.one_of(
        st.tuples(
            st.just("fill"),
            st.sampled_from([1, 4]),
            st.sampled_from([Side.BUY, Side.SELL]),
            st.integers(1, 1_000_000),  # px ticks
            st.integers(1, 5_000),  # qty lots
            st.floats(0, 5, allow_nan=False),  # fee
            st.integers(1, 3),  # strategy id
        ),
        st.tuples(st.just("mark"), st.sampled_from([1, 4]), st.integers(1, 1_000_000)),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(steps=steps_st, method=st.sampled_from(["fifo", "lifo", "hifo"]))
def test_pnl_equals_change_in_equity_for_any_fills_and_prices(steps, method):
    p = Portfolio(INS, initial_cash=50_000.0, lot_method=method)
    expected = {1: 0, 4: 0}
    fees = 0.0
    scale = 1.0
    for step in steps:
        if step[0] == "mark":
            p.mark(step[1], step[2])
        else:
            _, iid, side, px, qty, fee, sid = step
            p.on_fill(fill(iid, side, px, qty, fee, coid=(sid << 32) | 1))
            expected[iid] += int(side) * qty
            fees += fee
            scale += px * qty
        for iid in (1, 4):  # lots never go negative and add up to the position
            lots = p.lots(iid)
            assert all(lot.qty > 0 for lot in lots)
            assert len({lot.direction for lot in lots}) <= 1
            assert sum(lot.direction * lot.qty for lot in lots) == p.position(iid)
        tol = 1e-9 * scale
        assert p.realized() + p.unrealized() - p.fees() == pytest.approx(
            p.equity() - p.initial_cash, abs=tol
        )
        assert sum(v["net"] for v in p.strategy_pnl().values()) == pytest.approx(
            p.net_pnl(), abs=tol
        )
    assert {iid: p.position(iid) for iid in expected} == expected
    assert p.fees() == pytest.approx(fees)


fills_st = st.lists(
    st.tuples(st.sampled_from([Side.BUY, Side.SELL]), st.integers(1, 1_000), st.integers(1, 50)),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(fills=fills_st)
def test_a_sell_closes_lots_in_fifo_order(fills):
    p = Portfolio(INS)
    for side, px, qty in fills:
        before = [(lot.ref, lot.qty) for lot in p.lots(1)]
        direction = before and p.lots(1)[0].direction
        p.on_fill(fill(1, side, px, qty))
        closed = p.last_closed
        if not before or direction == int(side):
            assert closed == []  # adding to (or opening) a position closes nothing
            continue
        # the closed lots are the oldest ones, in order; only the last may be partly closed
        assert [c.ref for c in closed] == [ref for ref, _ in before[: len(closed)]]
        for c, (_, q) in zip(closed[:-1], before, strict=False):
            assert c.qty == q
        assert sum(c.qty for c in closed) == min(qty, sum(q for _, q in before))
        remaining = [(lot.ref, lot.qty) for lot in p.lots(1)]
        if sum(c.qty for c in closed) < qty:  # crossed zero: one new lot the other way
            assert len(remaining) == 1 and p.lots(1)[0].direction == int(side)
        else:
            k = len(closed)
            last_left = before[k - 1][1] - closed[-1].qty
            expect = ([(before[k - 1][0], last_left)] if last_left else []) + before[k:]
            assert remaining == expect
