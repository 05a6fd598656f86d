"""Tax-loss harvesting: candidates, the wash-sale window, specific lots reaching the portfolio."""

from __future__ import annotations

import pytest

from engine.lots import LotBook
from engine.messages import NewOrder, Side
from engine.strategies.tax_harvest import HarvestPlanner
from tests.test_rebalancer import DAY, run

W = 30 * DAY


def test_planner_candidates_threshold_and_recent_purchases():
    book = LotBook(1, 0.01)
    book.apply(10, 10_000, ts=0, ref=(1, 1))  # 100.00
    book.apply(10, 8_000, ts=20 * DAY, ref=(2, 2))  # 80.00
    planner = HarvestPlanner({1: 2}, threshold=0.1, window_ns=W)
    assert planner.candidates(book, 9_500) == []  # -5 %: under the threshold
    assert [lot.ref for lot in planner.candidates(book, 8_500)] == [(1, 1)]
    # the 80.00 lot, bought 25 days ago, would stay: selling the other at a loss is a wash sale
    assert planner.plan(book, 8_500, 45 * DAY) is None
    h = planner.plan(book, 8_500, 51 * DAY)
    assert h is not None and h.qty == 10 and h.substitute == 2
    assert h.loss == pytest.approx(-150.0)
    # both lots at a loss: both sold, nothing recent stays behind
    h = planner.plan(book, 7_000, 45 * DAY)
    assert h is not None and h.qty == 20
    assert HarvestPlanner({}, 0.1).plan(book, 7_000, 45 * DAY) is None  # no substitute
    assert HarvestPlanner({1: 2}, 0.1, min_loss=1e6).plan(book, 7_000, 45 * DAY) is None


def test_planner_windows():
    planner = HarvestPlanner({1: 2}, threshold=0.1, window_ns=W)
    book = LotBook(1, 0.01)
    book.apply(10, 10_000, ts=0)
    planner.on_fill(1, 5 * DAY, book.apply(-10, 9_000, 5 * DAY))
    assert not planner.can_buy(1, 35 * DAY)  # exactly 30 days: still inside
    assert planner.can_buy(1, 35 * DAY + 1) and planner.can_buy(2, 6 * DAY)
    planner.on_fill(2, 6 * DAY, [])
    assert planner.can_buy(2, 6 * DAY)
    book2 = LotBook(2, 0.01)
    book2.apply(10, 10_000, ts=0)
    planner.on_fill(2, 7 * DAY, book2.apply(-10, 11_000, 7 * DAY))  # a gain: no window
    assert planner.can_buy(2, 7 * DAY)
    assert planner.plan(LotBook(2, 0.01), 5_000, 8 * DAY) is None  # not harvestable: no sub
    planner2 = HarvestPlanner({1: 2}, 0.1, window_ns=W)
    planner2.blocked_until[2] = 100 * DAY
    book.apply(10, 10_000, ts=0)
    assert planner2.plan(book, 5_000, 50 * DAY) is None  # the substitute may not be bought
    with pytest.raises(ValueError):
        HarvestPlanner({1: 1})


def aaa_path(iid, t):
    if iid != 1:
        return 50.0
    if t < 5 * DAY:
        return 100.0
    if t < 40 * DAY:
        return 70.0
    if t < 55 * DAY:
        return 60.0
    return 90.0


PARAMS = {
    "targets": {"AAA": 0.5},
    "capital": 1e5,
    "interval_s": 86_400,
    "harvest": True,
    "harvest_threshold": 0.35,
    "substitutes": {"AAA": "BBB"},
}


def test_harvest_end_to_end_respects_the_wash_sale_window():
    # LIFO in the portfolio: without the strategy naming its lots, the sale would close the
    # newer 70.00 lot instead of the 100.00 one the harvester chose
    rt, s, venue, strat = run(PARAMS, aaa_path, 90, lot_method="lifo")
    orders = [o for o in s["orders_sent"] if isinstance(o, NewOrder)]
    aaa_sells = [o for o in orders if o.instrument_id == 1 and o.side == Side.SELL]
    assert len(aaa_sells) == 1
    t_sale = aaa_sells[0].ts_approved
    assert 40 * DAY <= t_sale < 42 * DAY
    assert strat.planner.harvests == 1
    # the substitute was bought right away, AAA not again until 30 days had passed
    bbb_buys = [o for o in orders if o.instrument_id == 2 and o.side == Side.BUY]
    assert bbb_buys and min(o.ts_approved for o in bbb_buys) == t_sale
    aaa_buys = [o.ts_approved for o in orders if o.instrument_id == 1 and o.side == Side.BUY]
    assert [t for t in aaa_buys if t_sale - W <= t <= t_sale + W] == []
    assert max(aaa_buys) > t_sale + W  # and then the substitute went back into AAA
    bbb_sells = [o for o in orders if o.instrument_id == 2 and o.side == Side.SELL]
    assert bbb_sells and min(o.ts_approved for o in bbb_sells) > t_sale + W
    pf = rt.portfolio
    assert pf.summary()["wash_sales"] == 0
    # the portfolio closed the lot the harvester named: its realized loss on AAA is that lot's
    aaa_fills = [f for f in venue.fills if f.instrument_id == 1]
    first_buy = aaa_fills[0]
    sale_fills = [f for f in aaa_fills if f.side == Side.SELL]
    assert sum(f.fill_qty for f in sale_fills) == first_buy.fill_qty  # exactly that lot
    expected = sum((f.fill_px - first_buy.fill_px) * f.fill_qty * 0.01 for f in sale_fills)
    assert pf.positions[1].realized == pytest.approx(expected)
    assert expected < -0.35 * first_buy.fill_qty * 100  # the loss passed the threshold
    assert s["pnl_by_strategy"][5]["realized"] == pytest.approx(pf.realized())


def test_without_harvesting_the_loss_is_kept_and_aaa_never_sold():
    rt, s, venue, strat = run({**PARAMS, "harvest": False}, aaa_path, 54)  # before the rally
    orders = [o for o in s["orders_sent"] if isinstance(o, NewOrder)]
    assert not [o for o in orders if o.instrument_id == 1 and o.side == Side.SELL]
    assert not [o for o in orders if o.instrument_id == 2]
    assert rt.portfolio.realized() == 0.0
