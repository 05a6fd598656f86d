"""The cost-aware rule through the simulated exchange: it trades only an edge that pays the round
trip, a true signal then makes money net of fees and the reversed one loses it, fees are the
venue's, and an order that arrives after the book moved away does not fill."""

from __future__ import annotations

import numpy as np
import pytest

from engine.micro_pnl import CostRule, simulate


def _stream(n: int, jump: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    """A 1-tick spread; every 5th event the mid jumps by ``jump`` ticks up or down; the true
    P(up) of the next jump is known at every event."""
    rng = np.random.default_rng(seed)
    ts = np.arange(n, dtype=np.int64) * 10**6
    bid = np.empty(n, np.int64)
    p_up = np.empty(n)
    level = 10_000
    nxt = rng.choice([-1, 1])
    for i in range(n):
        if i % 5 == 0 and i:
            level += jump * nxt
            nxt = rng.choice([-1, 1])
        bid[i] = level
        p_up[i] = 1.0 if nxt > 0 else 0.0
    ask = bid + 1
    size = np.full(n, 500, np.int64)
    return ts, bid, size, ask, size.copy(), p_up


def test_a_true_signal_that_beats_the_spread_makes_money_net_and_its_reverse_loses() -> None:
    ts, bp, bs, ap, az, p = _stream(2000, jump=4)
    rule = CostRule(expected_move=4.0, taker_fee_bps=0.5, qty=100, min_gap_ns=0)
    good = simulate("true", ts, bp, bs, ap, az, p, 0.01, rule)
    assert good.trades > 300 and good.net > 0 and good.hit_rate > 0.99
    # each round trip: +4 ticks of mid, one tick of spread crossed in and out (half each way);
    # the last one is still open at the end, marked at a mid that has not moved yet
    assert good.gross == pytest.approx(good.trades * 100 * 3 * 0.01, abs=4.0)
    bad = simulate("reversed", ts, bp, bs, ap, az, 1 - p, 0.01, rule)
    assert bad.net < 0 and bad.gross == pytest.approx(-bad.trades * 100 * 5 * 0.01, abs=6.0)


def test_an_edge_smaller_than_the_round_trip_is_not_traded() -> None:
    ts, bp, bs, ap, az, p = _stream(500, jump=1)
    # an expected move of 1 tick cannot pay a 1-tick spread plus fees
    r = simulate("x", ts, bp, bs, ap, az, p, 0.01, CostRule(expected_move=1.0, min_gap_ns=0))
    assert r.trades == 0 and r.net == 0.0
    # without the cost check it trades, and the costs show
    blind = CostRule(expected_move=1.0, margin=0.0, conviction=0.2, min_gap_ns=0)
    r = simulate("x", ts, bp, bs, ap, az, p, 0.01, blind)
    assert r.trades > 50 and r.net < 0


def test_fees_are_the_venues_on_every_fill() -> None:
    ts, bp, bs, ap, az, p = _stream(300, jump=4)
    r = simulate("x", ts, bp, bs, ap, az, p, 0.01, CostRule(4.0, taker_fee_bps=1.0, min_gap_ns=0))
    assert r.trades > 0
    # two fills a round trip of 100 at ~100.00 (the last trip: one): 1 bp of ~10 000 each
    assert r.fees == pytest.approx((2 * r.trades - 1) * 100 * 100.0 * 1e-4, rel=0.02)
    assert r.net == pytest.approx(r.gross - r.fees)


def test_an_order_that_arrives_after_the_book_moved_away_does_not_fill() -> None:
    ts, bp, bs, ap, az, p = _stream(2000, jump=4)
    # 5 ms of latency: decided on the event before a jump, the IOC meets the jumped book
    slow = CostRule(4.0, min_gap_ns=0, latency_ns=5 * 10**6)
    fast = CostRule(4.0, min_gap_ns=0)
    assert (
        simulate("s", ts, bp, bs, ap, az, p, 0.01, slow).trades
        < simulate("f", ts, bp, bs, ap, az, p, 0.01, fast).trades
    )
