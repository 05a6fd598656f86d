"""Execution algorithms (engine.algos) against the simulated exchange, without the OMS.

A small loop (``Loop``) plays ExecEngine's role: it sends the child orders the AlgoEngine returns
to a real ``SimExchange``, hands every venue event about a child back to the engine, calls the
timer exactly at ``next_wakeup_ns`` and records what would go upstream.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.algos.engine import AlgoEngine
from engine.algos.vwap import VolumeProfile, VwapProfile
from engine.instruments import Instrument, InstrumentTable
from engine.messages import (
    AlgoKind,
    AlgoProgress,
    AlgoState,
    BookSnapshot,
    CancelOrder,
    CancelRejectReason,
    NewOrder,
    OrderAccepted,
    OrderCanceled,
    OrderCancelRejected,
    OrderFilled,
    OrderPartiallyFilled,
    OrderRejected,
    OrderType,
    TimeInForce,
    Trade,
)
from engine.sources.synthetic import InstrumentSpec, SyntheticMarket
from engine.venues.sim import SimExchange

IID = 1
INS = Instrument(instrument_id=IID, symbol="AAA", tick_size=0.01, lot_size=1.0)
TABLE = InstrumentTable([INS])
MS = 1_000_000
S = 1_000_000_000
BUY, SELL = 1, -1
PARENT = 1 << 32 | 1


def parent(
    algo: int,
    qty: int,
    params: dict[str, float],
    *,
    side: int = BUY,
    px: int = 0,
    tif: int = TimeInForce.GTC,
    coid: int = PARENT,
) -> NewOrder:
    return NewOrder(
        client_order_id=coid,
        strategy_id=1,
        instrument_id=IID,
        side=side,
        order_type=OrderType.LIMIT if px else OrderType.MARKET,
        tif=tif,
        px=px,
        qty=qty,
        ts_origin=5,
        ts_approved=5,
        algo=int(algo),
        algo_params=params,
    )


def market(seed: int = 3, interval_ns: int = MS, **kw) -> SyntheticMarket:
    spec = InstrumentSpec.from_instrument(INS, 100.0, annual_vol=0.2)
    return SyntheticMarket([spec], seed=seed, mean_interval_ns=interval_ns, **kw)


class Loop:
    """ExecEngine's role: children to the venue, child events to the engine, timer on time."""

    def __init__(self, venue: SimExchange | None = None, **engine_kw) -> None:
        self.venue = venue or SimExchange(TABLE)
        ids = iter(range(1000, 10**9))
        self.algos = AlgoEngine(TABLE, lambda: next(ids), **engine_kw)
        self.upstream: list[object] = []
        self.children: list[tuple[int, NewOrder]] = []  # (sent at, order)
        self.child_events: list[object] = []
        self.max_shown = 0  # most child quantity resting at the venue at once
        self.now = 0

    def dispatch(self, items: list[object], now: int) -> None:
        for x in items:
            if isinstance(x, NewOrder):
                assert x.algo == 0 and self.algos.is_child(x.client_order_id)
                self.children.append((now, x))
                self.route(self.venue.submit(x, now), now)
            elif isinstance(x, CancelOrder):
                self.route(self.venue.cancel(x, now), now)
            else:
                self.upstream.append(x)
        shown = sum(o.qty for o in self.venue.open_orders())
        self.max_shown = max(self.max_shown, shown)

    def route(self, events: list[object], now: int) -> None:
        for ev in events:
            if self.algos.is_child(ev.client_order_id):
                self.child_events.append(ev)
                self.dispatch(self.algos.on_child_event(ev, now), now)
            else:
                self.upstream.append(ev)

    def advance(self, now: int) -> None:
        for _ in range(100_000):
            w = self.algos.next_wakeup_ns()
            if w is None or w > now:
                break
            w = max(w, self.now)
            self.now = w
            self.route(self.venue.poll(w), w)
            self.dispatch(self.algos.on_timer(w), w)
        self.now = max(self.now, now)
        self.route(self.venue.poll(now), now)

    def submit(self, order: NewOrder, now: int) -> None:
        self.advance(now)
        self.dispatch(self.algos.submit(order, now), now)

    def cancel(self, coid: int, now: int) -> None:
        self.advance(now)
        self.dispatch(self.algos.cancel(coid, now), now)

    def md(self, msg: object) -> None:
        now = msg.ts_event  # type: ignore[attr-defined]
        self.advance(now)
        self.route(self.venue.on_market_data(msg, now), now)
        self.dispatch(self.algos.on_market_data(msg, now), now)

    def run(self, source, n: int) -> None:
        for msg in source.events(n):
            self.md(msg)

    # views ------------------------------------------------------------------------------------
    def parent_events(self, coid: int = PARENT) -> list[object]:
        return [e for e in self.upstream if getattr(e, "client_order_id", None) == coid]

    def parent_fills(self, coid: int = PARENT) -> list[OrderPartiallyFilled]:
        return [e for e in self.parent_events(coid) if isinstance(e, OrderPartiallyFilled)]

    def progress(self, coid: int = PARENT) -> list[AlgoProgress]:
        return [e for e in self.parent_events(coid) if isinstance(e, AlgoProgress)]

    def child_fill_qty(self) -> int:
        return sum(e.fill_qty for e in self.child_events if isinstance(e, OrderPartiallyFilled))


def assert_children_sum_to_parent(loop: Loop, qty: int, coid: int = PARENT) -> None:
    """Child fills = parent fills; children sent - children's unfilled ends = parent's fills;
    parent events keep cum + leaves = qty, and the parent ends exactly once."""
    fills = loop.parent_fills(coid)
    cum = sum(f.fill_qty for f in fills)
    assert cum == loop.child_fill_qty()
    for f in fills:
        assert f.cum_qty + f.leaves_qty == qty
    sent = sum(o.qty for _, o in loop.children)
    unfilled = sum(
        e.leaves_qty
        for e in loop.child_events
        if isinstance(e, OrderCanceled) or type(e).__name__ == "OrderExpired"
    )
    rejected = {
        e.client_order_id
        for e in loop.child_events
        if isinstance(e, OrderRejected)  # (a refused cancel/replace is another type)
    }
    sent -= sum(o.qty for _, o in loop.children if o.client_order_id in rejected)
    assert sent - unfilled == cum
    ends = [e for e in loop.parent_events(coid) if isinstance(e, OrderFilled | OrderCanceled)]
    assert len(ends) == 1
    if isinstance(ends[0], OrderFilled):
        assert cum == qty
    else:
        assert ends[0].leaves_qty == qty - cum
    assert loop.venue.open_orders() == []


# --- TWAP ---------------------------------------------------------------------------------------


def test_twap_equal_slices_evenly_spaced_children_sum_to_parent() -> None:
    loop = Loop()
    mkt = market()
    loop.run(mkt, 50)
    t0 = loop.now
    loop.submit(parent(AlgoKind.TWAP, 500, {"duration_s": 1.0, "slices": 10}), t0)
    loop.run(mkt, 3000)
    times = [t for t, _ in loop.children]
    assert times == [t0 + k * 100 * MS for k in range(10)]
    assert [o.qty for _, o in loop.children] == [50] * 10
    assert all(
        o.tif == TimeInForce.IOC and o.order_type == OrderType.MARKET for _, o in loop.children
    )
    ev = loop.parent_events()
    assert isinstance(ev[0], OrderAccepted)
    assert_children_sum_to_parent(loop, 500)
    assert isinstance(loop.parent_fills()[-1], OrderFilled)
    prog = loop.progress()
    assert prog[-1].state == AlgoState.DONE and prog[-1].filled_qty == 500
    assert prog[-1].remaining_qty == 0 and prog[-1].children_open == 0
    assert len({f.fill_id for f in loop.parent_fills()}) == len(loop.parent_fills())


def test_twap_randomised_times_stay_near_the_grid_and_in_order() -> None:
    def run(seed: float) -> list[int]:
        loop = Loop()
        mkt = market()
        loop.run(mkt, 20)
        t0 = loop.now
        p = {"duration_s": 1.0, "slices": 8, "randomize": 0.5, "seed": seed}
        loop.submit(parent(AlgoKind.TWAP, 80, p), t0)
        loop.run(mkt, 2500)
        assert_children_sum_to_parent(loop, 80)
        return [t - t0 for t, _ in loop.children]

    a, b, c = run(1), run(1), run(2)
    interval = 125 * MS
    assert a == b and a != c  # seeded
    assert a == sorted(a) and len(a) == 8
    for k, dt in enumerate(a):
        assert abs(dt - k * interval) <= 0.25 * interval + 1
    assert any(dt != k * interval for k, dt in enumerate(a[1:], 1))


def snap(bids: list[tuple[int, int]], asks: list[tuple[int, int]], t: int) -> BookSnapshot:
    return BookSnapshot(
        IID,
        [p for p, _ in bids],
        [q for _, q in bids],
        [p for p, _ in asks],
        [q for _, q in asks],
        t,
        t,
    )


def test_twap_catches_up_what_earlier_slices_could_not_fill() -> None:
    loop = Loop()
    loop.md(snap([(99, 100)], [(101, 100)], 1))
    # buy limit 100: the first two slices find no ask at or below 100
    loop.submit(parent(AlgoKind.TWAP, 40, {"duration_s": 0.4, "slices": 4}, px=100), 10)
    loop.advance(10 + 250 * MS)  # slices 0, 1 and 2 are due by now
    assert [o.qty for _, o in loop.children] == [10, 20, 30]
    assert loop.algos.parent(PARENT).filled == 0
    loop.md(snap([(99, 100)], [(100, 25)], 10 + 260 * MS))  # only 25 lots at 100
    loop.advance(10 + 310 * MS)  # last slice: target 40, catch up all of it
    assert [o.qty for _, o in loop.children] == [10, 20, 30, 40]
    assert loop.algos.parent(PARENT).filled == 25
    loop.advance(10 + 400 * MS)  # window over: 15 lots never found a seller at 100
    end = loop.parent_events()[-2]
    assert isinstance(end, OrderCanceled) and end.leaves_qty == 15
    assert "window ended with 15 of 40 lots unfilled" in end.reason
    assert all(o.px == 100 and o.order_type == OrderType.LIMIT for _, o in loop.children)
    assert_children_sum_to_parent(loop, 40)


# --- VWAP ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        {"profile": VwapProfile.U_SHAPE},
        {"profile": VwapProfile.FRONT, "slices": 10},
        {"w0": 1.0, "w1": 0.0, "w2": 3.0, "w3": 1.0},
    ],
)
def test_vwap_tracks_its_profile(params: dict[str, float]) -> None:
    """Tolerance: just before each slice, the filled quantity equals floor(qty * F(t)) within
    0.5% of the parent (the market here always has the liquidity)."""
    qty = 1000
    loop = Loop()
    mkt = market(seed=11)
    loop.run(mkt, 20)
    t0 = loop.now
    loop.submit(parent(AlgoKind.VWAP, qty, {"duration_s": 2.0, **params}), t0)
    algo = loop.algos.parent(PARENT).impl
    profile_share = algo.expected_share
    checked = 0
    for msg in mkt.events(5000):
        w = loop.algos.next_wakeup_ns()
        if w is not None and msg.ts_event >= w and w < t0 + 2 * S:
            share = profile_share(w)
            filled = loop.algos.parent(PARENT).filled
            assert abs(filled - qty * share) <= 0.005 * qty + 1, (w - t0, filled, share)
            checked += 1
        loop.md(msg)
    assert checked >= 9
    assert_children_sum_to_parent(loop, qty)
    sizes = [o.qty for _, o in loop.children]
    if params.get("profile") == VwapProfile.FRONT:
        assert sizes == sorted(sizes, reverse=True) and sizes[0] > 2 * sizes[-1]
    if "w1" in params:  # a zero-weight quarter of the window: no child in it
        assert not any(t0 + 500 * MS <= t < t0 + 1000 * MS for t, _ in loop.children)


def test_volume_profile_integrates_its_step_function() -> None:
    prof = VolumeProfile([1.0, 3.0], period_ns=100)  # 1 over [0,50), 3 over [50,100)
    assert prof.fraction(0, 50, 100) == pytest.approx(0.25)
    assert prof.fraction(25, 75, 125) == pytest.approx((25 + 75) / (25 + 150 + 25))
    assert prof.fraction(0, 150, 200) == pytest.approx(0.5 + 0.125)
    assert prof.fraction(10, 5, 90) == 0.0 and prof.fraction(10, 95, 90) == 1.0
    with pytest.raises(ValueError):
        VolumeProfile([1.0, math.nan], 100)


def test_vwap_on_recorded_volume_follows_where_the_market_traded() -> None:
    # a 1 s "day" in 4 buckets: the market trades 3x as much in the second half of it
    loop = Loop(volume_buckets=4, volume_period_ns=S)
    trades = [
        Trade(IID, 100, 10 if (t % S) < S // 2 else 30, 1, t, t) for t in range(0, 4 * S, 50 * MS)
    ]
    loop.algos.load_volume(IID, trades[: len(trades) // 2])
    for tr in trades[len(trades) // 2 :]:
        loop.dispatch(loop.algos.on_market_data(tr, tr.ts_event), tr.ts_event)
    loop.md(snap([(99, 10_000)], [(100, 10_000)], 4 * S))
    t0 = 4 * S
    loop.submit(
        parent(AlgoKind.VWAP, 400, {"end_ns": 5 * S, "slices": 4, "profile": VwapProfile.RECORDED}),
        t0,
    )
    loop.advance(5 * S)
    assert [o.qty for _, o in loop.children] == [50, 50, 150, 150]
    assert_children_sum_to_parent(loop, 400)


# --- iceberg ------------------------------------------------------------------------------------


@pytest.mark.parametrize("variance", [0.0, 0.6])
def test_iceberg_never_shows_more_than_its_display_size(variance: float) -> None:
    loop = Loop()
    mkt = market(seed=5, interval_ns=MS)
    loop.run(mkt, 50)
    bid, _ = loop.venue.book(IID).best_bid()
    p = {"display_qty": 15, "variance": variance, "seed": 4}
    loop.submit(parent(AlgoKind.ICEBERG, 120, p, side=BUY, px=bid + 2), loop.now)
    for msg in mkt.events(20000):
        loop.md(msg)
        assert loop.max_shown <= 15
        if loop.algos.parent(PARENT).state != AlgoState.WORKING:
            break
    sizes = [o.qty for _, o in loop.children]
    assert len(sizes) >= 3 and max(sizes) <= 15
    if variance:
        assert len(set(sizes[:-1])) > 1 and min(sizes) >= 6
    else:
        assert sizes[:-1] == [15] * (len(sizes) - 1)
    assert all(o.px == bid + 2 and o.tif == TimeInForce.GTC for _, o in loop.children)
    assert loop.algos.parent(PARENT).state == AlgoState.DONE
    assert_children_sum_to_parent(loop, 120)


def test_cancel_of_the_parent_cancels_its_children() -> None:
    loop = Loop(SimExchange(TABLE, latency_ns=100_000))
    loop.md(snap([(99, 100)], [(101, 100)], 1))
    loop.submit(parent(AlgoKind.ICEBERG, 100, {"display_qty": 10}, px=99), 10)
    loop.advance(200_000)
    assert len(loop.venue.open_orders()) == 1
    loop.md(Trade(IID, 99, 105, SELL, 300_000, 300_000))  # eats the queue (100) and 5 of ours
    assert loop.algos.parent(PARENT).filled == 5
    loop.cancel(PARENT, 400_000)
    assert any(isinstance(e, OrderAccepted) for e in loop.parent_events())
    assert not any(isinstance(e, OrderCanceled) for e in loop.parent_events())  # not yet: latency
    loop.advance(600_000)
    end = [e for e in loop.parent_events() if isinstance(e, OrderCanceled)]
    assert len(end) == 1 and end[0].leaves_qty == 95 and end[0].reason == "canceled"
    assert loop.progress()[-1].state == AlgoState.CANCELED
    assert_children_sum_to_parent(loop, 100)
    # a second cancel is refused as a venue refuses it, not with an exception
    out = loop.algos.cancel(PARENT, 700_000)
    assert isinstance(out[0], OrderCancelRejected) and out[0].reason == CancelRejectReason.NOT_OPEN
    (unknown,) = loop.algos.cancel(PARENT + 99, 700_000)
    assert isinstance(unknown, OrderCancelRejected)
    assert unknown.reason == CancelRejectReason.UNKNOWN_ORDER


# --- POV ----------------------------------------------------------------------------------------


def test_pov_participates_at_its_rate() -> None:
    loop = Loop()
    mkt = market(seed=9)
    loop.run(mkt, 50)
    t0 = loop.now
    loop.submit(parent(AlgoKind.POV, 10_000, {"rate": 0.2, "min_child": 5}), t0)
    market_volume = 0
    for msg in mkt.events(6000):
        loop.md(msg)
        if isinstance(msg, Trade) and msg.ts_event >= t0:
            market_volume += msg.qty
            filled = loop.algos.parent(PARENT).filled
            assert filled <= 0.25 * market_volume + 1  # never ahead of the target rate
    filled = loop.algos.parent(PARENT).filled
    assert market_volume > 1000
    assert filled / (filled + market_volume) == pytest.approx(0.2, abs=0.01)
    loop.cancel(PARENT, loop.now)
    loop.advance(loop.now + MS)
    assert_children_sum_to_parent(loop, 10_000)


# --- bad parameters -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("algo", "params", "px", "reason"),
    [
        (AlgoKind.TWAP, {"slices": 5}, 0, "duration_s (or end_ns) is required"),
        (AlgoKind.TWAP, {"duration_s": 1, "slice": 5}, 0, "unknown parameter(s) slice"),
        (AlgoKind.TWAP, {"duration_s": math.nan}, 0, "duration_s must be finite"),
        (AlgoKind.TWAP, {"duration_s": 1, "slices": 0}, 0, "slices must be >= 1"),
        (AlgoKind.TWAP, {"duration_s": 1, "slices": 2.5}, 0, "slices must be a whole number"),
        (AlgoKind.TWAP, {"duration_s": 1, "randomize": 1.0}, 0, "randomize must be < 1.0"),
        (AlgoKind.VWAP, {"duration_s": 1, "profile": 9}, 0, "unknown profile 9"),
        (AlgoKind.VWAP, {"duration_s": 1, "w0": 0, "w1": 0}, 0, "weights are all zero"),
        (AlgoKind.VWAP, {"duration_s": 1, "w0": 1, "w2": 1}, 0, "missing w1"),
        (AlgoKind.VWAP, {"duration_s": 1, "profile": 0}, 0, "no volume recorded"),
        (AlgoKind.ICEBERG, {"display_qty": 10}, 0, "must be a LIMIT order"),
        (AlgoKind.ICEBERG, {}, 100, "display_qty is required"),
        (AlgoKind.POV, {"rate": 1.0}, 0, "rate must be < 1.0"),
        (AlgoKind.POV, {"rate": -0.1}, 0, "rate must be > 0.0"),
        (9, {}, 0, "unknown algorithm 9"),
    ],
)
def test_invalid_parameters_reject_the_parent_with_a_reason(
    algo: int, params: dict[str, float], px: int, reason: str
) -> None:
    loop = Loop()
    loop.submit(parent(algo, 100, params, px=px), 10)
    rej = [e for e in loop.upstream if isinstance(e, OrderRejected)]
    assert len(rej) == 1 and reason in rej[0].reason and rej[0].client_order_id == PARENT
    assert loop.children == [] and loop.algos.working() == []
    assert loop.progress()[-1].state == AlgoState.REJECTED


def test_duplicate_parent_and_stray_child_events_are_ignored_and_counted() -> None:
    loop = Loop()
    loop.md(snap([(99, 100)], [(101, 100)], 1))
    order = parent(AlgoKind.ICEBERG, 50, {"display_qty": 10}, px=99)
    loop.submit(order, 10)
    loop.submit(order, 20)
    assert loop.algos.duplicates == 1 and len(loop.children) == 1
    child = loop.children[0][1].client_order_id
    fill = OrderPartiallyFilled(child, 1, IID, BUY, 99, 3, 3, 7, 0.0, 1, 77, 0, 30, 30)
    loop.dispatch(loop.algos.on_child_event(fill, 30), 30)
    loop.dispatch(loop.algos.on_child_event(fill, 31), 31)  # same fill id again
    assert loop.algos.parent(PARENT).filled == 3
    assert loop.algos.anomalies == {"duplicate_fill": 1}
    stray = OrderPartiallyFilled(424242, 1, IID, BUY, 99, 3, 3, 7, 0.0, 1, 78, 0, 32, 32)
    assert loop.algos.on_child_event(stray, 32) == []
    assert loop.algos.anomalies == {"duplicate_fill": 1, "unknown_child": 1}


# --- property: the bookkeeping invariants under random schedules and latency ---------------------


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    qty=st.integers(1, 400),
    slices=st.integers(1, 12),
    randomize=st.sampled_from([0.0, 0.3, 0.9]),
    limit_offset=st.integers(-3, 3),
    latency_us=st.sampled_from([0, 300, 5000]),
    cancel_at_ms=st.one_of(st.none(), st.integers(1, 300)),
    seed=st.integers(0, 50),
    passive=st.booleans(),
)
def test_twap_children_never_exceed_the_parent(
    qty: int,
    slices: int,
    randomize: float,
    limit_offset: int,
    latency_us: int,
    cancel_at_ms: int | None,
    seed: int,
    passive: bool,
) -> None:
    loop = Loop(SimExchange(TABLE, latency_ns=latency_us * 1000, seed=seed))
    mkt = market(seed=seed)
    loop.run(mkt, 30)
    t0 = loop.now
    ask, _ = loop.venue.book(IID).best_ask()
    p = {"duration_s": 0.25, "slices": slices, "randomize": randomize, "seed": seed}
    if passive:
        p["passive"] = 1
    loop.submit(parent(AlgoKind.TWAP, qty, p, px=ask + limit_offset), t0)
    cancelled = False
    for msg in mkt.events(700):
        if cancel_at_ms is not None and not cancelled and msg.ts_event >= t0 + cancel_at_ms * MS:
            loop.cancel(PARENT, msg.ts_event)
            cancelled = True
        loop.md(msg)
        par = loop.algos.parent(PARENT)
        assert par.filled + par.open_qty <= qty
        assert sum(o.qty for o in loop.venue.open_orders()) <= qty - par.filled
    loop.advance(loop.now + 20 * MS)
    assert loop.algos.parent(PARENT).state in (AlgoState.DONE, AlgoState.CANCELED)
    assert_children_sum_to_parent(loop, qty)


# --- the strategy-facing helper -----------------------------------------------------------------


def test_strategy_context_asks_for_an_algo_parent_and_tracks_its_progress() -> None:
    import msgspec

    from engine.messages import IntentNew
    from engine.strategies.base import StrategyContext

    ctx = StrategyContext(3, [INS])
    coid = ctx.algo(AlgoKind.TWAP, IID, BUY, 100, {"duration_s": 30, "slices": 6}, px=101)
    (intent,) = ctx.take_intents()
    assert isinstance(intent, IntentNew) and intent.client_order_id == coid
    assert intent.algo == AlgoKind.TWAP and intent.algo_params == {
        "duration_s": 30.0,
        "slices": 6.0,
    }
    assert intent.order_type == OrderType.LIMIT and intent.px == 101 and intent.qty == 100
    wire = msgspec.msgpack.encode(intent)
    assert msgspec.msgpack.decode(wire, type=IntentNew) == intent
    assert ctx.open_orders[coid].qty == 100
    prog = AlgoProgress(coid, IID, AlgoKind.TWAP, 40, 60, 1, AlgoState.WORKING, 9, 50)
    ctx.apply_exec_event(prog)
    assert ctx.algo_progress[coid] == prog and coid in ctx.open_orders
    with pytest.raises(ValueError):
        ctx.algo(AlgoKind.NONE, IID, BUY, 10, {})


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    display=st.integers(1, 40),
    qty=st.integers(1, 300),
    variance=st.sampled_from([0.0, 0.5, 0.95]),
    latency_us=st.sampled_from([0, 500, 3000]),
    offset=st.integers(-1, 3),
    side=st.sampled_from([BUY, SELL]),
    seed=st.integers(0, 1000),
)
def test_iceberg_shows_at_most_display_whatever_the_flow(
    display: int, qty: int, variance: float, latency_us: int, offset: int, side: int, seed: int
) -> None:
    loop = Loop(SimExchange(TABLE, latency_ns=latency_us * 1000, seed=seed))
    mkt = market(seed=seed)
    loop.run(mkt, 30)
    touch = (
        loop.venue.book(IID).best_bid()[0] if side == BUY else loop.venue.book(IID).best_ask()[0]
    )
    p = {"display_qty": display, "variance": variance, "seed": seed}
    loop.submit(parent(AlgoKind.ICEBERG, qty, p, side=side, px=touch + side * offset), loop.now)
    for msg in mkt.events(1500):
        loop.md(msg)
        assert loop.max_shown <= display
        par = loop.algos.parent(PARENT)
        assert par.open_children <= 1 and par.filled + par.open_qty <= qty
    loop.cancel(PARENT, loop.now)
    loop.advance(loop.now + 20 * MS)
    assert loop.max_shown <= display and all(o.qty <= display for _, o in loop.children)
    assert_children_sum_to_parent(loop, qty)


def test_repeated_child_rejections_stop_the_parent_with_the_venues_reason() -> None:
    loop = Loop()
    loop.md(snap([(99, 100)], [(101, 100)], 1))
    # our own resting sell at 101: every buy child would trade with it (self-trade prevention)
    own = NewOrder(77, 1, IID, SELL, OrderType.LIMIT, TimeInForce.GTC, 101, 5, 1, 1)
    loop.route(loop.venue.submit(own, 2), 2)
    loop.submit(parent(AlgoKind.TWAP, 50, {"duration_s": 1.0, "slices": 10}), 10)
    loop.advance(10 + S)
    end = [e for e in loop.parent_events() if isinstance(e, OrderCanceled)]
    assert len(loop.children) == 3  # three slices, three refusals, then it stopped
    assert len(end) == 1 and end[0].leaves_qty == 50
    assert end[0].reason.startswith("child rejected by the venue: self-trade prevention")
    assert loop.algos.working() == [] and loop.algos.next_wakeup_ns() is None


def test_passive_twap_rests_at_the_touch_reposts_each_slice_and_sweeps_at_the_end() -> None:
    loop = Loop()
    loop.md(snap([(99, 100)], [(101, 500)], 1))
    p = {"duration_s": 0.4, "slices": 4, "passive": 1}
    loop.submit(parent(AlgoKind.TWAP, 40, p, px=102), 10)
    assert [(o.px, o.qty, o.tif) for _, o in loop.children] == [(99, 10, TimeInForce.GTC)]
    # a sell print at 99 eats the 100 lots ahead of us and 4 of ours (maker fill at 99)
    loop.md(Trade(IID, 99, 104, SELL, 50 * MS, 50 * MS))
    assert loop.algos.parent(PARENT).filled == 4
    loop.md(snap([(100, 30)], [(101, 500)], 60 * MS))  # the bid moved up to 100
    loop.advance(10 + 100 * MS)  # slice 1: the resting 6 are canceled, 16 re-posted at 100
    resting = loop.venue.open_orders()
    assert sum(o.qty for o in resting) == 16 and {o.px for o in resting} == {100}
    loop.advance(10 + 400 * MS)  # the window ends: nothing rests, the rest is taken at 101
    last = loop.children[-1][1]
    assert last.tif == TimeInForce.IOC and last.px == 102 and last.qty == 36
    fills = loop.parent_fills()
    assert [(f.fill_px, f.fill_qty) for f in fills] == [(99, 4), (101, 36)]
    assert isinstance(fills[-1], OrderFilled) and fills[-1].liquidity == 2
    assert max(o.qty for _, o in loop.children[:-1]) <= 30
    assert_children_sum_to_parent(loop, 40)


def test_volume_profile_add_many_is_add_one_by_one():
    """The fast replay records prints in bulk: the same buckets and sums as ``add`` per print,
    bucket edges and times before the origin included."""
    rng = np.random.default_rng(5)
    period = 86_400_000_000_000
    edges = np.arange(-3, 300) * (period // 7) + rng.integers(-2, 3, 303)
    ts = np.concatenate([rng.integers(-period, 3 * period, 2000), edges])
    qty = rng.integers(1, 10_000, len(ts))
    for buckets, origin in ((288, 0), (7, 12_345), (1, 0)):
        one = VolumeProfile(np.zeros(buckets), period, origin)
        many = VolumeProfile(np.zeros(buckets), period, origin)
        for t, q in zip(ts.tolist(), qty.tolist(), strict=True):
            one.add(t, q)
        many.add_many(ts, qty)
        assert np.array_equal(one.weights, many.weights)
