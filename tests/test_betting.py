"""engine.betting: the Betfair ladder, back/lay P&L, liability, market exposure, green-up and
commission on net winnings, against hand-computed numbers."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.betting import (
    BetBook,
    bet_pnl,
    betfair_ladder_ok,
    commission,
    exposure_of,
    green_up,
    green_up_stake,
    ladder_prices,
    ladder_step,
    ladder_ticks,
    liability,
    locked_pnl,
    market_exposure,
    outcome_pnls,
)


def test_ladder_bands_and_ends():
    ok = [1.01, 1.99, 2.0, 2.02, 2.98, 3.05, 3.95, 4.1, 5.9, 6.2, 9.8, 10.5, 19.5, 21, 29, 32, 48,
          55, 95, 110, 990, 1000]  # fmt: skip
    bad = [1.0, 1.005, 2.01, 2.99, 3.01, 3.02, 4.05, 6.1, 10.2, 20.5, 31, 51, 101, 1010]
    assert all(betfair_ladder_ok(round(x * 100), 0.01) for x in ok)
    assert not any(betfair_ladder_ok(round(x * 100), 0.01) for x in bad)
    assert betfair_ladder_ok(302, 0.01) is False and betfair_ladder_ok(305, 0.01) is True
    assert betfair_ladder_ok(61, 0.05)  # 3.05 in ticks of 0.05
    assert not betfair_ladder_ok(1, 0.001)  # 0.001: not even whole hundredths
    prices = ladder_prices()
    assert len(prices) == 350 and prices[0] == 1.01 and prices[-1] == 1000.0
    assert prices == sorted(set(prices))


def test_ladder_rounding_and_steps():
    assert ladder_ticks(3.52, 0.01) == 350 and ladder_ticks(3.52, 0.01, up=True) == 355
    assert ladder_ticks(1.0, 0.01) == 101 and ladder_ticks(5000.0, 0.01) == 100_000
    assert ladder_step(200, 0.01, 1) == 202 and ladder_step(200, 0.01, -1) == 199
    assert ladder_step(101, 0.01, -5) == 101  # clamped at the ladder's end
    with pytest.raises(ValueError):
        ladder_step(201, 0.01, 1)


@settings(max_examples=100, deadline=None)
@given(st.floats(1.01, 1000.0), st.booleans())
def test_rounded_prices_are_on_the_ladder(odds, up):
    t = ladder_ticks(odds, 0.01, up=up)
    assert betfair_ladder_ok(t, 0.01)
    assert (t / 100 >= odds - 1e-9) if up else (t / 100 <= odds + 1e-9)


def test_back_and_lay_pnl_and_liability():
    # back 10 at 3.0: +20 if it wins, -10 if not; lay 10 at 3.0: the mirror, liability 20
    assert bet_pnl(1, 10, 3.0, True) == pytest.approx(20.0)
    assert bet_pnl(1, 10, 3.0, False) == pytest.approx(-10.0)
    assert bet_pnl(-1, 10, 3.0, True) == pytest.approx(-20.0)
    assert bet_pnl(-1, 10, 3.0, False) == pytest.approx(10.0)
    assert liability(1, 10, 3.0) == 10 and liability(-1, 10, 3.0) == pytest.approx(20.0)


def test_green_up_cash_out_by_hand():
    # back 10 at 3.0, the price shortens to 2.0: lay 10 x 3 / 2 = 15 at 2.0 -> +5 either way
    assert green_up_stake(10, 3.0, 2.0) == pytest.approx(15.0)
    side, stake = green_up(20.0, -10.0, 2.0)
    assert side == -1 and stake == pytest.approx(15.0)
    b = BetBook(1, 1.0, 0.01)
    b.apply(10, 300)
    assert b.unrealized(200) == pytest.approx(5.0) == locked_pnl(20.0, -10.0, 2.0)
    b.apply(-15, 200)
    assert (b.win, b.lose) == pytest.approx((5.0, 5.0))
    assert b.green_up(2.0)[1] == pytest.approx(0.0)
    # a lay greened up after the price drifts: lay 10 at 2.0, back at 4.0 -> 10 x 2 / 4 = 5
    side, stake = green_up(-10.0, 10.0, 4.0)
    assert side == 1 and stake == pytest.approx(5.0)
    assert bet_pnl(-1, 10, 2.0, True) + bet_pnl(1, 5, 4.0, True) == pytest.approx(5.0)
    assert bet_pnl(-1, 10, 2.0, False) + bet_pnl(1, 5, 4.0, False) == pytest.approx(5.0)


def test_market_exposure_is_the_worst_outcome():
    # back A 10 at 3.0, lay B 10 at 2.5 in a three-runner market
    books = {"A": (20.0, -10.0), "B": (-15.0, 10.0)}
    pnl = outcome_pnls(books)
    assert pnl == pytest.approx({"A": 30.0, "B": -25.0, None: 0.0})
    assert market_exposure(books) == pytest.approx(25.0)
    # backing both runners of a two-runner market: one of them wins for sure
    both = {"A": (10.0, -10.0), "B": (10.0, -10.0)}
    assert market_exposure(both, others=False) == 0.0
    assert market_exposure(both, others=True) == pytest.approx(20.0)
    assert market_exposure({}) == 0.0
    assert exposure_of([("A", 1, 10, 3.0), ("B", -1, 10, 2.5)]) == pytest.approx(25.0)


def test_commission_on_net_winnings_only():
    assert commission(30.0, 0.05) == pytest.approx(1.5)
    assert commission(-30.0, 0.05) == 0.0 and commission(0.0, 0.05) == 0.0


def test_bet_book_settles_and_clears():
    b = BetBook(7, 0.01, 0.01)  # stake lots of 0.01: 1000 lots = 10.00
    b.apply(1000, 300)
    b.apply(-400, 250)  # lay 4.00 at 2.5
    assert b.position == 600 and b.backed == 1000 and b.laid == 400
    assert (b.win, b.lose) == pytest.approx((20.0 - 6.0, -10.0 + 4.0))
    assert b.settle(True) == pytest.approx(14.0)
    assert not b.open and b.win == b.lose == 0.0 and b.unrealized(300) == 0.0
