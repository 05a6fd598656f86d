"""Smart order routing (engine.routing.SmartRouter) over several simulated venues."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.instruments import Instrument, InstrumentTable
from engine.messages import (
    BookSnapshot,
    CancelOrder,
    CancelRejectReason,
    NewOrder,
    OrderAccepted,
    OrderCanceled,
    OrderCancelRejected,
    OrderFilled,
    OrderFlag,
    OrderPartiallyFilled,
    OrderRejected,
    OrderReplaced,
    OrderReplaceRejected,
    OrderType,
    Quote,
    ReplaceOrder,
    ReplaceRejectReason,
    TimeInForce,
    Trade,
)
from engine.routing import SmartRouter, VenueQuote, plan_take, take_cost
from engine.venues.base import Venue
from engine.venues.multi import ShiftedVenue, VenueSpec, build_sim_venues, shift_market_data
from engine.venues.sim import SimExchange

IID = 1
TICK = 0.01
TABLE = InstrumentTable([Instrument(instrument_id=IID, symbol="AAA", tick_size=TICK, lot_size=1.0)])
BUY, SELL = 1, -1
MKT, LMT = OrderType.MARKET, OrderType.LIMIT
GTC, IOC, FOK = TimeInForce.GTC, TimeInForce.IOC, TimeInForce.FOK


def order(coid, side, qty, px=0, *, tif=None, flags=0, iid=IID) -> NewOrder:
    typ = LMT if px else MKT
    return NewOrder(
        client_order_id=coid,
        strategy_id=1,
        instrument_id=iid,
        side=side,
        order_type=typ,
        tif=tif or (GTC if px else IOC),
        px=px,
        qty=qty,
        ts_origin=3,
        ts_approved=3,
        flags=flags,
    )


def snap(bids, asks, t=1) -> BookSnapshot:
    return BookSnapshot(
        IID,
        [p for p, _ in bids],
        [q for _, q in bids],
        [p for p, _ in asks],
        [q for _, q in asks],
        t,
        t,
    )


def two_venues(a_book, b_book, *, fee_a=(0.0, 0.0), fee_b=(0.0, 0.0), latency_ns=0):
    a = SimExchange(
        TABLE, name="A", maker_fee_bps=fee_a[0], taker_fee_bps=fee_a[1], latency_ns=latency_ns
    )
    b = SimExchange(
        TABLE, name="B", maker_fee_bps=fee_b[0], taker_fee_bps=fee_b[1], latency_ns=latency_ns
    )
    a.on_market_data(snap(*a_book), 1)
    b.on_market_data(snap(*b_book), 1)
    return SmartRouter({"A": a, "B": b}), a, b


def of(events, cls):
    return [e for e in events if type(e) is cls]


def fills(events):
    return [e for e in events if isinstance(e, OrderPartiallyFilled)]


def test_router_implements_the_venue_protocol() -> None:
    router, _, _ = two_venues(([(99, 10)], [(101, 10)]), ([(99, 10)], [(101, 10)]))
    members = [m for m in dir(Venue) if not m.startswith("_")]
    assert set(members) >= {"submit", "cancel", "replace", "on_market_data", "poll", "positions"}
    for m in members:
        assert callable(getattr(router, m)) or m == "name"
    assert router.name == "smart" and router.positions() == {} and router.open_orders() == []


# --- the split is the optimum ---------------------------------------------------------------------

levels_st = st.lists(st.tuples(st.integers(1, 4), st.integers(1, 40)), min_size=0, max_size=5)


def _ladder(start: int, steps: list[tuple[int, int]], direction: int) -> list[tuple[int, int]]:
    out, px = [], start
    for gap, q in steps:
        out.append((px, q))
        px += direction * gap
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    side=st.sampled_from([BUY, SELL]),
    a_steps=levels_st,
    b_steps=levels_st,
    a_top=st.integers(995, 1005),
    b_top=st.integers(995, 1005),
    fee_a=st.sampled_from([0.0, 1.0, 5.0, 30.0, 100.0]),
    fee_b=st.sampled_from([0.0, 2.0, 10.0, 50.0]),
    qty=st.integers(1, 150),
    limit=st.one_of(st.just(0), st.integers(990, 1012)),
)
def test_split_is_the_brute_force_optimum_after_fees(
    side, a_steps, b_steps, a_top, b_top, fee_a, fee_b, qty, limit
) -> None:
    # the book an order of `side` takes from: asks for a buy (rising), bids for a sell (falling)
    direction = 1 if side == BUY else -1
    a_lv, b_lv = _ladder(a_top, a_steps, direction), _ladder(b_top, b_steps, direction)
    other = [(900, 5)] if side == BUY else [(1100, 5)]
    a_book = (other, a_lv) if side == BUY else (a_lv, other)
    b_book = (other, b_lv) if side == BUY else (b_lv, other)
    router, a, b = two_venues(a_book, b_book, fee_a=(0.0, fee_a), fee_b=(0.0, fee_b))

    def within(lv):
        if not limit:
            return lv
        return [(p, q) for p, q in lv if (p <= limit if side == BUY else p >= limit)]

    a_ok, b_ok = within(a_lv), within(b_lv)
    avail_a, avail_b = sum(q for _, q in a_ok), sum(q for _, q in b_ok)
    total = min(qty, avail_a + avail_b)
    best = None
    for qa in range(0, min(total, avail_a) + 1):
        qb = total - qa
        if qb > avail_b:
            continue
        c = take_cost(a_ok, side, fee_a, qa) + take_cost(b_ok, side, fee_b, qb)
        best = c if best is None else min(best, c)

    quotes = router.quotes(IID, side)
    assert [q.levels for q in quotes] == [a_lv, b_lv]
    plan = plan_take(quotes, side, qty, limit)
    qa, qb = plan.get("A", 0), plan.get("B", 0)
    assert qa + qb == total
    got = take_cost(a_ok, side, fee_a, qa) + take_cost(b_ok, side, fee_b, qb)
    assert got == pytest.approx(best, rel=1e-12, abs=1e-9)

    # and the router really trades that split: what the fills cost equals the optimum
    if total == 0:
        return
    ev = router.submit(order(7, side, total, limit, tif=IOC), 2)
    fl = fills(ev)
    assert sum(f.fill_qty for f in fl) == total
    assert isinstance(fl[-1], OrderFilled) and fl[-1].cum_qty == total
    money = sum(side * f.fill_px * TICK * f.fill_qty + f.fee for f in fl)
    assert money == pytest.approx(best * TICK, rel=1e-9, abs=1e-9)  # paid incl. fees, or -proceeds
    assert a.positions().get(IID, 0) == side * qa and b.positions().get(IID, 0) == side * qb


def test_fees_can_make_the_worse_price_the_better_venue() -> None:
    # A asks 100.00 with a 30 bps taker fee (100.30 effective); B asks 100.10 with 5 bps (100.15)
    quotes = [VenueQuote("A", [(10_000, 50)], 30.0), VenueQuote("B", [(10_010, 50)], 5.0)]
    assert plan_take(quotes, BUY, 60) == {"B": 50, "A": 10}
    # a seller gets 100.00 - 30 bps at A (99.70) and 100.10 - 5 bps at B (100.05): B first
    assert plan_take(quotes, SELL, 20) == {"B": 20}


# --- merged events --------------------------------------------------------------------------------


def test_a_split_order_reads_as_one_order() -> None:
    router, a, b = two_venues(
        ([(99, 10)], [(100, 30), (102, 30)]), ([(99, 10)], [(101, 30), (103, 30)]), fee_b=(0, 0)
    )
    ev = router.submit(order(11, BUY, 80), 5)
    assert len(of(ev, OrderAccepted)) == 1 and ev[0].client_order_id == 11
    fl = fills(ev)
    assert sorted((f.fill_px, f.fill_qty) for f in fl) == [(100, 30), (101, 30), (102, 20)]
    # A's leg takes 100 x 30 and 102 x 20, B's 101 x 30: the cheapest 80 lots of both books
    assert [f.cum_qty for f in fl] == [30, 50, 80]
    assert all(f.cum_qty + f.leaves_qty == 80 for f in fl)
    assert len({f.fill_id for f in fl}) == 3 and all(f.client_order_id == 11 for f in fl)
    assert type(fl[-1]) is OrderFilled and not of(ev, OrderCanceled)
    assert router.positions() == {IID: 80}
    assert router.open_orders() == []


def test_market_order_beyond_all_liquidity_ends_with_one_cancel() -> None:
    router, _, _ = two_venues(([(99, 10)], [(100, 5)]), ([(99, 10)], [(101, 7)]))
    ev = router.submit(order(12, BUY, 20), 5)
    assert sum(f.fill_qty for f in fills(ev)) == 12
    c = of(ev, OrderCanceled)
    assert len(c) == 1 and c[0].leaves_qty == 8 and ev[-1] is c[0]
    assert len(of(ev, OrderAccepted)) == 1


def test_limit_order_takes_what_crosses_and_rests_the_rest_then_cancels_cleanly() -> None:
    router, a, b = two_venues(([(99, 10)], [(100, 5), (103, 50)]), ([(98, 200)], [(101, 5)]))
    ev = router.submit(order(13, BUY, 30, 101), 5)
    assert sum(f.fill_qty for f in fills(ev)) == 10  # 5 at A's 100, 5 at B's 101
    assert router.open_orders()[0].qty == 20
    # the rest rests where it is at the front: both venues' crossing size is gone, A's best bid
    # (99) is below 101 on either venue -> no queue; fee tie -> the first venue
    assert [o.qty for o in a.open_orders()] == [20] and b.open_orders() == []
    ev = router.cancel(CancelOrder(13, 1, IID, 9, 9), 6)
    c = of(ev, OrderCanceled)
    assert len(c) == 1 and c[0].leaves_qty == 20
    assert router.open_orders() == [] and a.open_orders() == []
    again = router.cancel(CancelOrder(13, 1, IID, 9, 9), 7)
    assert of(again, OrderCancelRejected)[0].reason == CancelRejectReason.NOT_OPEN
    assert not of(again, OrderRejected)


def test_fok_is_only_split_when_the_books_can_fill_it_all() -> None:
    router, a, b = two_venues(([(99, 10)], [(100, 5)]), ([(99, 10)], [(101, 5)]))
    ev = router.submit(order(14, BUY, 10, 101, tif=FOK), 5)
    assert type(fills(ev)[-1]) is OrderFilled and fills(ev)[-1].cum_qty == 10
    router2, _, _ = two_venues(([(99, 10)], [(100, 5)]), ([(99, 10)], [(101, 5)]))
    ev = router2.submit(order(15, BUY, 11, 101, tif=FOK), 5)
    assert fills(ev) == [] and of(ev, OrderCanceled)[0].leaves_qty == 11


# --- resting orders: the best expected fill --------------------------------------------------------


@pytest.mark.parametrize(
    ("a_book", "b_book", "fees", "expect"),
    [
        # same price, B has the shorter queue at 100
        (([(100, 500)], [(102, 10)]), ([(100, 10)], [(102, 10)]), ((0, 0), (0, 0)), "B"),
        # A's best bid is 101: at 100 we would sit behind the touch; at B, 100 is the touch
        (([(101, 5)], [(103, 10)]), ([(100, 50)], [(103, 10)]), ((0, 0), (0, 0)), "B"),
        # at A our 100 would improve its 99 bid (front of the queue): beats joining B's 100
        (([(99, 5)], [(103, 10)]), ([(100, 1)], [(103, 10)]), ((0, 0), (0, 0)), "A"),
        # identical books: the bigger maker rebate wins
        (([(100, 20)], [(102, 10)]), ([(100, 20)], [(102, 10)]), ((0.5, 0), (-0.3, 0)), "B"),
    ],
)
def test_resting_orders_go_where_they_fill_best(a_book, b_book, fees, expect) -> None:
    router, a, b = two_venues(a_book, b_book, fee_a=fees[0], fee_b=fees[1])
    ev = router.submit(order(21, BUY, 10, 100), 5)
    assert fills(ev) == [] and len(of(ev, OrderAccepted)) == 1
    venue = {"A": a, "B": b}[expect]
    other = {"A": b, "B": a}[expect]
    assert [o.qty for o in venue.open_orders()] == [10] and other.open_orders() == []


def test_post_only_never_goes_where_it_would_cross() -> None:
    router, a, b = two_venues(([(99, 5)], [(100, 10)]), ([(98, 5)], [(102, 10)]))
    ev = router.submit(order(22, BUY, 10, 100, flags=OrderFlag.POST_ONLY), 5)
    assert fills(ev) == [] and not of(ev, OrderRejected)
    assert a.open_orders() == [] and [o.qty for o in b.open_orders()] == [10]


def test_replace_of_a_single_venue_order_and_refusal_of_a_split_one() -> None:
    router, a, b = two_venues(([(99, 10)], [(100, 5)]), ([(99, 10)], [(101, 5), (104, 5)]))
    router.submit(order(31, BUY, 10, 97), 5)
    ev = router.replace(ReplaceOrder(31, 1, IID, 98, 6, 9, 9), 6)
    r = of(ev, OrderReplaced)
    assert len(r) == 1 and r[0].px == 98 and r[0].qty == 6
    assert router.open_orders()[0].qty == 6 and router.open_orders()[0].px == 98
    # 5 at A, 5 at B, the rest (10) rests at A at 101: two legs, one still open -> replaceable
    router.submit(order(32, BUY, 20, 101), 7)
    ev = router.replace(ReplaceOrder(32, 1, IID, 101, 4, 9, 9), 8)
    assert of(ev, OrderReplaced)[0].qty == 4
    assert router.open_orders()[-1].qty == 4


def test_every_leg_rejected_is_one_rejection() -> None:
    router, _, _ = two_venues(([(99, 10)], [(100, 5)]), ([(99, 10)], [(101, 5)]))
    ev = router.submit(order(41, BUY, 5, 100, iid=9), 5)
    assert len(ev) == 1 and type(ev[0]) is OrderRejected and "unknown instrument 9" in ev[0].reason
    ev = router.submit(order(41, BUY, 5, 100), 6)
    assert type(ev[0]) is OrderRejected and "duplicate" in ev[0].reason


def test_latency_events_merge_when_they_arrive() -> None:
    router, a, b = two_venues(([(99, 10)], [(100, 5)]), ([(99, 10)], [(101, 5)]), latency_ns=1000)
    assert router.submit(order(51, BUY, 10, 101, tif=IOC), 10) == []
    ev = router.poll(2000)
    assert len(of(ev, OrderAccepted)) == 1
    assert [f.cum_qty for f in fills(ev)] == [5, 10] and type(ev[-1]) is OrderFilled


# --- several venues from one market ----------------------------------------------------------------


def test_shifted_view_offsets_prices_and_scales_sizes() -> None:
    q = Quote(IID, 100, 11, 102, 3, 5, 5, 2)
    assert shift_market_data(q, 2, 0.5) == Quote(IID, 102, 6, 104, 2, 5, 5, 2)
    assert shift_market_data(Trade(IID, 100, 1, 1, 5, 5), -1, 0.1) == Trade(IID, 99, 1, 1, 5, 5)
    assert shift_market_data(q, 0, 1.0) is q
    sim = SimExchange(TABLE, name="B")
    v = ShiftedVenue(sim, px_offset_ticks=1, size_scale=2.0)
    v.on_market_data(snap([(99, 10)], [(101, 10)]), 1)
    assert v.book(IID).best_ask() == (102, 20) and v.name == "B"
    with pytest.raises(ValueError):
        ShiftedVenue(sim, size_scale=0)


def test_build_sim_venues_routes_to_the_cheaper_venue_of_one_market() -> None:
    specs = [
        VenueSpec("A", maker_fee_bps=-0.2, taker_fee_bps=3.0),
        VenueSpec("B", maker_fee_bps=0.0, taker_fee_bps=0.5, px_offset_ticks=-1, size_scale=0.5),
    ]
    router = build_sim_venues(TABLE, specs, seed=1)
    router.on_market_data(snap([(99, 40)], [(101, 40), (102, 40)]), 1)
    # B shows asks 100 x 20, 101 x 20 (cheaper and lower fee): a buy of 30 takes B first
    ev = router.submit(order(61, BUY, 30), 2)
    assert sum(f.fill_qty for f in fills(ev)) == 30
    assert router.venues["B"].positions() == {IID: 30}
    assert router.legs_sent == {"A": 0, "B": 1}


# --- config ---------------------------------------------------------------------------------------

_CFG = """
[[instruments]]
instrument_id = 1
symbol = "AAA"
"""


def test_config_venues_build_a_router_and_the_default_stays_one_venue() -> None:
    from ops.config import parse_config
    from procs.build import build_venue

    single = build_venue(parse_config(_CFG))
    assert isinstance(single, SimExchange)
    text = (
        _CFG
        + """
[[venues]]
name = "alpha"
taker_fee_bps = 3.0
[[venues]]
name = "beta"
taker_fee_bps = 0.5
latency_us = 0.0
px_offset_ticks = 1
size_scale = 0.5
"""
    )
    router = build_venue(parse_config(text))
    assert isinstance(router, SmartRouter) and list(router.venues) == ["alpha", "beta"]
    assert router.fees == {"alpha": (-0.5, 3.0), "beta": (-0.5, 0.5)}
    beta = router.venues["beta"]
    assert isinstance(beta, ShiftedVenue) and beta.latency_ns == 0 and beta.size_scale == 0.5


@pytest.mark.parametrize(
    ("entry", "key"),
    [
        ('name = "a"\nsize_scale = 0.0', "venues[0].size_scale"),
        ('name = "a"\nkind = "binance"', "venues[0].kind"),  # not a kind ("ccxt" is, now)
        ('name = "a"\nkind = "ccxt"', "venues[0].exchange"),  # the generic kind names its own
        ('name = "a b"', "venues[0].name"),
        ('name = "a"\ntaker_fee_bps = 5000.0', "venues[0].taker_fee_bps"),
        ('name = "a"\nlatency_us = -1.0', "venues[0].latency_us"),
        ('name = "a"\nfee = 1.0', "venues[0].fee"),
    ],
)
def test_config_venue_mistakes_name_the_key(entry: str, key: str) -> None:
    from ops.config import ConfigError, parse_config

    with pytest.raises(ConfigError) as exc:
        parse_config(_CFG + "[[venues]]\n" + entry + "\n")
    assert exc.value.key == key


def test_config_duplicate_venue_names_are_refused() -> None:
    from ops.config import ConfigError, parse_config

    with pytest.raises(ConfigError) as exc:
        parse_config(_CFG + '[[venues]]\nname = "a"\n[[venues]]\nname = "a"\n')
    assert exc.value.key == "venues[1].name"


# --- property: random order flow through ExecEngine behind the router -----------------------------


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    latency_us=st.sampled_from([0, 150, 2000]),
    ops=st.lists(
        st.tuples(
            st.sampled_from(["market", "gtc", "ioc", "fok", "cancel"]),
            st.sampled_from([BUY, SELL]),
            st.integers(1, 80),
            st.integers(-4, 4),
        ),
        min_size=1,
        max_size=14,
    ),
)
def test_routed_orders_read_as_consistent_single_orders(seed, latency_us, ops) -> None:
    from engine.exec_engine import ExecEngine
    from engine.sources.synthetic import InstrumentSpec, SyntheticMarket

    lat = latency_us * 1000
    router = build_sim_venues(
        TABLE,
        [
            VenueSpec("A", maker_fee_bps=-0.2, taker_fee_bps=2.0, latency_ns=lat),
            VenueSpec(
                "B", taker_fee_bps=0.5, latency_ns=2 * lat, px_offset_ticks=1, size_scale=0.4
            ),
        ],
        seed=seed,
    )
    ex = ExecEngine(router, TABLE)
    spec = InstrumentSpec.from_instrument(TABLE.by_id(IID), 100.0, annual_vol=0.3)
    mkt = SyntheticMarket([spec], seed=seed, mean_interval_ns=200_000)
    out: list[object] = []
    sent: dict[int, NewOrder] = {}
    now = 0

    def until(t: int) -> None:
        nonlocal now
        for _ in range(10_000):
            nxt = ex.next_event_ns()
            if nxt is None or nxt > t:
                break
            now = max(now, nxt)
            out.extend(ex.poll(now))
        now = max(now, t)
        out.extend(ex.poll(now))

    pending = list(ops)
    for k, msg in enumerate(mkt.events(40 * len(ops) + 200)):
        until(msg.ts_event)
        out.extend(ex.on_market_data(msg, now))
        if k % 40 == 39 and pending:
            kind, side, qty, off = pending.pop(0)
            bid, ask = (
                router.venues["A"].book(IID).best_bid(),
                router.venues["A"].book(IID).best_ask(),
            )
            if kind == "cancel":
                if sent:
                    victim = sorted(sent)[(qty + off) % len(sent)]
                    out.extend(ex.on_order(CancelOrder(victim, 1, IID, now, now), now))
                continue
            coid = 1000 + k
            ref = ask[0] if side == BUY else bid[0]
            px = 0 if kind == "market" else ref + off * side
            tif = {"market": IOC, "gtc": GTC, "ioc": IOC, "fok": FOK}[kind]
            o = order(coid, side, qty, px, tif=tif)
            sent[coid] = o
            out.extend(ex.on_order(o, now))
    out.extend(ex.cancel_all(now))
    until(now + 10 * lat + 1_000_000)

    assert ex.anomalies == {}
    position = 0
    for coid, o in sent.items():
        evs = [e for e in out if getattr(e, "client_order_id", None) == coid]
        acks = [e for e in evs if type(e) is OrderAccepted]
        fl = [e for e in evs if isinstance(e, OrderPartiallyFilled)]
        ends = [e for e in evs if type(e) in (OrderFilled, OrderCanceled, OrderRejected)]
        assert len(ends) == 1, evs
        assert len(acks) <= 1 and (acks or type(ends[0]) is OrderRejected)
        assert len({f.fill_id for f in fl}) == len(fl)
        cum = 0
        for f in fl:
            cum += f.fill_qty
            assert f.cum_qty == cum and f.cum_qty + f.leaves_qty == o.qty
        if type(ends[0]) is OrderCanceled:
            assert ends[0].leaves_qty == o.qty - cum
        elif type(ends[0]) is OrderFilled:
            assert cum == o.qty
        position += o.side * cum
    assert router.positions().get(IID, 0) == position
    assert router.open_orders() == []


def test_reduce_only_is_checked_against_the_position_over_all_venues() -> None:
    router, a, b = two_venues(([(99, 50)], [(100, 5)]), ([(98, 50)], [(101, 5)]))
    router.submit(order(71, BUY, 10), 5)  # long 5 at A and 5 at B
    assert router.positions() == {IID: 10}
    ev = router.submit(order(72, SELL, 11, flags=OrderFlag.REDUCE_ONLY), 6)
    assert type(ev[0]) is OrderRejected and "would increase the position 10" in ev[0].reason
    ev = router.submit(order(73, BUY, 1, flags=OrderFlag.REDUCE_ONLY), 7)
    assert type(ev[0]) is OrderRejected
    # selling 8 reduces the total: A's bid (99) is best, so A takes all 8 (A alone holds only 5)
    ev = router.submit(order(74, SELL, 8, flags=OrderFlag.REDUCE_ONLY), 8)
    assert type(fills(ev)[-1]) is OrderFilled and router.positions() == {IID: 2}
    assert a.positions() == {IID: -3} and b.positions() == {IID: 5}


# --- a long run's memory follows its working orders ---------------------------------------------


def test_finished_orders_are_pruned_yet_stay_known_and_idempotent() -> None:
    router, a, _ = two_venues(([(99, 500)], [(100, 500)]), ([(99, 500)], [(101, 500)]))
    for coid in range(100, 160):  # 60 market orders that fill at once
        ev = router.submit(order(coid, BUY, 2), 5)
        assert type(fills(ev)[-1]) is OrderFilled
    router.submit(order(200, BUY, 5, 90), 5)  # one that rests
    assert router.pruned == 60 and len(router._orders) == 1
    assert all(router.knows_order(c) for c in (100, 159, 200)) and not router.knows_order(99)
    # the same intent again never places a second order, finished or not
    for coid in (100, 200):
        dup = router.submit(order(coid, BUY, 2), 6)
        assert of(dup, OrderRejected) and "duplicate" in dup[0].reason and not fills(dup)
    assert router.positions() == {IID: 120}
    # a finished order's cancel is refused for the right reason, an unknown one for its own
    done = router.cancel(CancelOrder(100, 1, IID, 9, 9), 7)
    (refused,) = of(done, OrderCancelRejected)
    assert refused.reason == CancelRejectReason.NOT_OPEN and "no longer open" in refused.detail
    unknown = router.cancel(CancelOrder(999, 1, IID, 9, 9), 7)
    (refused,) = of(unknown, OrderCancelRejected)
    assert refused.reason == CancelRejectReason.UNKNOWN_ORDER
    assert "unknown client_order_id" in refused.detail
    # the same for replaces, with the request's ts_origin
    (refused,) = of(
        router.replace(ReplaceOrder(100, 1, IID, 99, 1, 11, 11), 7), OrderReplaceRejected
    )
    assert (refused.reason, refused.ts_origin) == (ReplaceRejectReason.NOT_OPEN, 11)
    (refused,) = of(
        router.replace(ReplaceOrder(999, 1, IID, 99, 1, 12, 12), 7), OrderReplaceRejected
    )
    assert (refused.reason, refused.ts_origin) == (ReplaceRejectReason.UNKNOWN_ORDER, 12)
    # a venue repeating an event of a finished order changes nothing and is not forwarded
    late = router._merge([("A", OrderCanceled(100, IID, 0, "late", 1, 1, 1))], 8)
    assert late == [] and router.late_events == 1
    # the resting order is pruned once it ends
    ev = router.cancel(CancelOrder(200, 1, IID, 9, 9), 9)
    assert of(ev, OrderCanceled) and router._orders == {} and router.pruned == 61
    assert router.fills_since(0)[-1].cum_qty == 2 and len(router.fills_since(0)) >= 60
