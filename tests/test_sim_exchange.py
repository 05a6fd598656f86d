"""SimExchange: unit tests of matching, queue position, fees, latency; hypothesis properties."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.instruments import Instrument, InstrumentTable
from engine.messages import (
    BookDelta,
    BookSnapshot,
    CancelOrder,
    CancelRejectReason,
    Liquidity,
    NewOrder,
    OrderAccepted,
    OrderCanceled,
    OrderCancelRejected,
    OrderExpired,
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
from engine.venues.base import Venue
from engine.venues.sim import DAY_NS, SimExchange

IID = 1
TABLE = InstrumentTable(
    [
        Instrument(instrument_id=IID, symbol="AAA", tick_size=0.01, lot_size=1.0),
        Instrument(instrument_id=2, symbol="BBB", tick_size=0.5, lot_size=0.1),
    ]
)
MKT, LMT = OrderType.MARKET, OrderType.LIMIT
GTC, IOC, FOK, DAY = TimeInForce.GTC, TimeInForce.IOC, TimeInForce.FOK, TimeInForce.DAY
BUY, SELL = 1, -1


def new(
    coid: int,
    side: int,
    px: int,
    qty: int,
    *,
    typ: int = LMT,
    tif: int = GTC,
    flags: int = 0,
    iid: int = IID,
    expire_ns: int = 0,
) -> NewOrder:
    return NewOrder(
        client_order_id=coid,
        strategy_id=1,
        instrument_id=iid,
        side=side,
        order_type=typ,
        tif=tif,
        px=px,
        qty=qty,
        ts_origin=1000 + coid,
        ts_approved=0,
        flags=flags,
        expire_ns=expire_ns,
    )


def cancel(coid: int, ts_origin: int = 7) -> CancelOrder:
    return CancelOrder(coid, 1, IID, ts_origin, 0)


def replace(coid: int, px: int, qty: int, ts_origin: int = 9) -> ReplaceOrder:
    return ReplaceOrder(coid, 1, IID, px, qty, ts_origin, 0)


def snap(bids: list[tuple[int, int]], asks: list[tuple[int, int]], seq: int = 0) -> BookSnapshot:
    return BookSnapshot(
        IID,
        [p for p, _ in bids],
        [q for _, q in bids],
        [p for p, _ in asks],
        [q for _, q in asks],
        0,
        0,
        seq,
    )


def delta(side: int, px: int, qty: int, seq: int = 0) -> BookDelta:
    return BookDelta(IID, side, px, qty, 0, 0, seq)


def trade(px: int, qty: int, aggressor: int) -> Trade:
    return Trade(IID, px, qty, aggressor, 0, 0)


def fills_of(events: list) -> list[OrderPartiallyFilled]:
    return [e for e in events if isinstance(e, OrderPartiallyFilled)]


def venue(**kw) -> SimExchange:
    v = SimExchange(TABLE, **kw)
    v.on_market_data(snap([(100, 50), (99, 20), (98, 10)], [(101, 10), (102, 20), (103, 5)]), 0)
    return v


def test_implements_the_venue_protocol() -> None:
    v: Venue = SimExchange(TABLE)
    assert v.name == "sim" and v.positions() == {} and v.open_orders() == []


# --- taking liquidity ---------------------------------------------------------------------------


def test_market_order_walks_the_book_with_taker_fees() -> None:
    v = venue(taker_fee_bps=5.0, maker_fee_bps=-1.0)
    ev = v.submit(new(1, BUY, 0, 25, typ=MKT), 10)
    assert isinstance(ev[0], OrderAccepted) and ev[0].ts_event == 10 and ev[0].ts_origin == 1001
    f = fills_of(ev)
    assert [(x.fill_px, x.fill_qty, x.cum_qty, x.leaves_qty) for x in f] == [
        (101, 10, 10, 15),
        (102, 15, 25, 0),
    ]
    assert type(f[0]) is OrderPartiallyFilled and type(f[1]) is OrderFilled
    assert all(x.liquidity == Liquidity.TAKER and x.ts_origin == 1001 for x in f)
    assert f[0].fill_id < f[1].fill_id
    assert f[0].fee == pytest.approx(101 * 0.01 * 10 * 5 / 1e4)
    assert f[1].fee == pytest.approx(102 * 0.01 * 15 * 5 / 1e4)
    assert v.positions() == {IID: 25} and v.fills == f and v.open_orders() == []


def test_liquidity_is_not_consumed_twice_until_the_level_updates() -> None:
    v = venue()
    v.submit(new(1, BUY, 0, 25, typ=MKT), 1)  # 10@101, 15@102
    f = fills_of(v.submit(new(2, BUY, 0, 10, typ=MKT), 2))
    assert [(x.fill_px, x.fill_qty) for x in f] == [(102, 5), (103, 5)]
    ev = v.submit(new(3, BUY, 0, 10, typ=MKT), 3)
    assert not fills_of(ev)
    assert isinstance(ev[-1], OrderCanceled) and ev[-1].leaves_qty == 10
    assert "liquidity" in ev[-1].reason
    # the market re-states level 101: a new book state, its size may be taken again
    v.on_market_data(delta(SELL, 101, 4), 4)
    f = fills_of(v.submit(new(4, BUY, 0, 10, typ=MKT, tif=IOC), 5))
    assert [(x.fill_px, x.fill_qty) for x in f] == [(101, 4)]


def test_marketable_limit_takes_then_rests() -> None:
    v = venue()
    ev = v.submit(new(1, BUY, 102, 40), 1)
    assert [(x.fill_px, x.fill_qty) for x in fills_of(ev)] == [(101, 10), (102, 20)]
    assert not any(isinstance(e, OrderCanceled) for e in ev)
    (oo,) = v.open_orders()
    assert oo.client_order_id == 1 and oo.px == 102 and oo.qty == 10
    assert v.queue_ahead(1) == 0


def test_sell_side_and_instrument_fees_use_tick_and_lot() -> None:
    v = SimExchange(TABLE, taker_fee_bps=10)
    v.on_market_data(BookSnapshot(2, [200, 199], [7, 9], [201], [3], 0, 0), 0)
    f = fills_of(v.submit(new(1, SELL, 199, 10, iid=2, tif=IOC), 1))
    assert [(x.fill_px, x.fill_qty) for x in f] == [(200, 7), (199, 3)]
    assert f[0].fee == pytest.approx(200 * 0.5 * 7 * 0.1 * 10 / 1e4)
    assert v.positions() == {2: -10}


def test_ioc_and_fok() -> None:
    v = venue()
    ev = v.submit(new(1, BUY, 101, 15, tif=IOC), 1)
    assert [(x.fill_px, x.fill_qty) for x in fills_of(ev)] == [(101, 10)]
    assert isinstance(ev[-1], OrderCanceled) and ev[-1].leaves_qty == 5 and "IOC" in ev[-1].reason
    ev = v.submit(new(2, BUY, 102, 25, tif=FOK), 2)  # only 20 left at <= 102
    assert not fills_of(ev)
    assert [type(e) for e in ev] == [OrderAccepted, OrderCanceled] and ev[1].leaves_qty == 25
    ev = v.submit(new(3, BUY, 103, 25, tif=FOK), 3)
    assert sum(x.fill_qty for x in fills_of(ev)) == 25 and type(ev[-1]) is OrderFilled
    assert v.open_orders() == []


def test_post_only() -> None:
    v = venue()
    ev = v.submit(new(1, BUY, 101, 5, flags=OrderFlag.POST_ONLY), 1)
    assert [type(e) for e in ev] == [OrderRejected] and "POST_ONLY" in ev[0].reason
    ev = v.submit(new(2, BUY, 100, 5, flags=OrderFlag.POST_ONLY), 2)
    assert [type(e) for e in ev] == [OrderAccepted] and v.queue_ahead(2) == 50
    ev = v.replace(replace(2, 101, 5), 3)
    assert [type(e) for e in ev] == [OrderReplaceRejected]
    assert ev[0].reason == ReplaceRejectReason.POST_ONLY and "POST_ONLY" in ev[0].detail
    assert v.open_orders()[0].px == 100 and v.queue_ahead(2) == 50  # unchanged


@pytest.mark.parametrize(
    ("order", "needle"),
    [
        (new(1, BUY, 100, 5, typ=OrderType.STOP), "STOP"),
        (new(1, BUY, 100, 5, typ=OrderType.STOP_LIMIT), "STOP_LIMIT"),
        (new(1, BUY, 100, 5, typ=OrderType.TRAILING_STOP), "TRAILING_STOP"),
        (new(1, BUY, 100, 5, tif=99), "time in force"),
        (new(1, BUY, 100, 5, flags=OrderFlag.REDUCE_ONLY), "REDUCE_ONLY"),  # nothing to reduce
        (new(1, BUY, 100, 5, flags=8), "flags"),
        (new(1, BUY, 100, 0), "qty"),
        (new(1, BUY, 0, 5), "price"),
        (new(1, 0, 100, 5), "side"),
        (new(1, BUY, 100, 5, iid=77), "unknown instrument"),
        (new(1, BUY, 0, 5, typ=MKT, flags=OrderFlag.POST_ONLY), "POST_ONLY"),
        (new(1, BUY, 99, 5, tif=IOC, flags=OrderFlag.POST_ONLY), "POST_ONLY"),
        (new(1, BUY, 99, 5, tif=TimeInForce.GTD, expire_ns=5), "GTD"),
    ],
)
def test_unsupported_or_invalid_orders_are_rejected_with_a_reason(
    order: NewOrder, needle: str
) -> None:
    v = venue()
    ev = v.submit(order, 10)
    assert [type(e) for e in ev] == [OrderRejected]
    assert needle in ev[0].reason and ev[0].ts_origin == order.ts_origin and ev[0].ts_event == 10
    assert v.open_orders() == [] and v.fills == []


def test_duplicate_client_order_id_rejected() -> None:
    v = venue()
    v.submit(new(1, BUY, 99, 5), 1)
    ev = v.submit(new(1, SELL, 105, 5), 2)
    assert [type(e) for e in ev] == [OrderRejected] and "duplicate" in ev[0].reason
    assert [o.side for o in v.open_orders()] == [BUY]


def test_self_trade_prevention() -> None:
    v = venue()
    v.submit(new(1, SELL, 104, 5), 1)
    ev = v.submit(new(2, BUY, 104, 50), 2)
    assert [type(e) for e in ev] == [OrderRejected] and "self-trade" in ev[0].reason
    assert [type(e) for e in v.submit(new(3, BUY, 103, 5, tif=IOC), 3)][0] is OrderAccepted


# --- resting orders and queue position ------------------------------------------------------------


def test_queue_position_trades_then_fill_as_maker_with_rebate() -> None:
    v = venue(maker_fee_bps=-2.0)
    v.submit(new(1, BUY, 100, 10), 1)
    assert v.queue_ahead(1) == 50  # displayed size at 100 when we arrived
    assert not fills_of(v.on_market_data(trade(100, 30, SELL), 2))
    assert v.queue_ahead(1) == 20
    # the book catches up with the trade: that decrease was the trade, not more volume
    assert not fills_of(v.on_market_data(delta(BUY, 100, 20), 3))
    assert v.queue_ahead(1) == 20
    ev = v.on_market_data(trade(100, 25, SELL), 4)
    (f,) = fills_of(ev)
    assert (f.fill_px, f.fill_qty, f.leaves_qty, f.liquidity) == (100, 5, 5, Liquidity.MAKER)
    assert f.fee == pytest.approx(-100 * 0.01 * 5 * 2 / 1e4) and f.fee < 0
    assert f.ts_event == 4 and f.ts_origin == 1001
    assert v.queue_ahead(1) == 0
    (f,) = fills_of(v.on_market_data(trade(100, 9, SELL), 5))
    assert type(f) is OrderFilled and f.fill_qty == 5 and v.positions() == {IID: 10}


def test_trade_on_the_other_side_does_not_touch_our_queue() -> None:
    v = venue()
    v.submit(new(1, BUY, 100, 10), 1)
    assert not fills_of(v.on_market_data(trade(100, 30, BUY), 2))  # buyer-initiated: hits asks
    assert v.queue_ahead(1) == 50


def test_cancels_shorten_the_queue_but_do_not_fill_when_the_feed_has_trades() -> None:
    v = venue()
    v.submit(new(1, BUY, 100, 10), 1)
    v.on_market_data(trade(101, 1, BUY), 2)  # the feed has trades
    v.on_market_data(delta(BUY, 100, 45), 3)  # unexplained decrease: a cancel
    assert v.queue_ahead(1) == 45
    assert not fills_of(v.on_market_data(delta(BUY, 100, 0), 4))  # everyone ahead cancelled
    assert v.queue_ahead(1) == 0 and v.open_orders()[0].qty == 10


def test_trade_less_feed_decreases_eat_the_queue_then_fill_us() -> None:
    v = venue()
    v.submit(new(1, BUY, 100, 10), 1)
    v.on_market_data(delta(BUY, 100, 60), 2)  # 10 joined behind us
    assert v.queue_ahead(1) == 50
    assert not fills_of(v.on_market_data(delta(BUY, 100, 20), 3))
    assert v.queue_ahead(1) == 10
    (f,) = fills_of(v.on_market_data(delta(BUY, 100, 5), 4))  # 15 left the front: 10 + 5 of us
    assert (f.fill_px, f.fill_qty, f.liquidity) == (100, 5, Liquidity.MAKER)
    w = venue(fill_on_decrease=False)
    w.submit(new(1, BUY, 100, 10), 1)
    assert not fills_of(w.on_market_data(delta(BUY, 100, 0), 2))
    assert w.queue_ahead(1) == 0


def test_price_time_priority_among_our_orders() -> None:
    v = venue()
    v.submit(new(1, BUY, 100, 5), 1)  # ahead 50
    v.on_market_data(delta(BUY, 100, 70), 2)  # 20 more behind order 1
    v.submit(new(2, BUY, 100, 5), 3)  # ahead 70
    v.submit(new(3, BUY, 100, 5), 4)  # ahead 70, after order 2
    assert [o.client_order_id for o in v.open_orders()] == [1, 2, 3]
    f = fills_of(v.on_market_data(trade(100, 52, SELL), 5))
    assert [(x.client_order_id, x.fill_qty) for x in f] == [(1, 2)]
    f = fills_of(v.on_market_data(trade(100, 30, SELL), 6))
    # 3 more for order 1, then the 20 that were between order 1 and order 2, then order 2, 3
    assert [(x.client_order_id, x.fill_qty) for x in f] == [(1, 3), (2, 5), (3, 2)]


def test_market_moving_through_our_price_fills_at_our_price() -> None:
    v = venue()
    v.submit(new(1, BUY, 100, 10), 1)
    (f,) = fills_of(v.on_market_data(trade(99, 1, SELL), 2))  # sold below our bid
    assert (f.fill_px, f.fill_qty, f.liquidity) == (100, 10, Liquidity.MAKER)
    v.submit(new(2, SELL, 103, 10), 3)
    v.on_market_data(delta(BUY, 103, 4), 4)  # a bid reaches our offer: 4 there
    v.on_market_data(delta(BUY, 104, 3), 5)  # and through it
    f = v.fills[1:]
    assert [(x.client_order_id, x.fill_px, x.fill_qty) for x in f] == [(2, 103, 4), (2, 103, 3)]
    assert all(x.liquidity == Liquidity.MAKER for x in f)
    assert v.open_orders()[0].qty == 3


def test_quote_updates_top_of_book() -> None:
    v = venue()
    v.on_market_data(Quote(IID, 100, 40, 102, 7, 0, 0), 1)  # 101 ask gone, 102 now 7
    assert v.book(IID).best_ask() == (102, 7) and v.book(IID).best_bid() == (100, 40)
    v.submit(new(1, SELL, 103, 5), 2)
    (f,) = fills_of(v.on_market_data(Quote(IID, 104, 2, 105, 1, 0, 0), 3))
    assert (f.fill_px, f.fill_qty) == (103, 2)
    # a quote that summarises deltas the book already has is not applied twice
    w = venue()
    w.on_market_data(delta(SELL, 101, 3, seq=8), 1)
    w.on_market_data(Quote(IID, 100, 1, 101, 3, 0, 0, seq=8), 2)
    assert w.book(IID).best_bid() == (100, 50)


# --- cancel / replace -----------------------------------------------------------------------------


def test_cancel() -> None:
    v = venue()
    v.submit(new(1, BUY, 99, 5), 1)
    ev = v.cancel(cancel(1, ts_origin=77), 2)
    assert [type(e) for e in ev] == [OrderCanceled]
    assert ev[0].leaves_qty == 5 and ev[0].ts_origin == 77 and v.open_orders() == []
    ev = v.cancel(cancel(1), 3)
    assert [type(e) for e in ev] == [OrderCancelRejected]
    assert ev[0].reason == CancelRejectReason.NOT_OPEN and ev[0].ts_origin == 7
    ev = v.cancel(cancel(555, ts_origin=78), 4)
    assert [type(e) for e in ev] == [OrderCancelRejected] and ev[0].ts_origin == 78
    assert ev[0].reason == CancelRejectReason.UNKNOWN_ORDER
    assert "unknown client_order_id" in ev[0].detail


def test_replace_priority_rules() -> None:
    v = venue()
    v.submit(new(1, BUY, 100, 10), 1)
    v.on_market_data(delta(BUY, 100, 60), 2)
    v.submit(new(2, BUY, 100, 10), 3)
    # smaller quantity, same price: keeps its place
    ev = v.replace(replace(1, 100, 4, ts_origin=55), 4)
    assert [type(e) for e in ev] == [OrderReplaced]
    assert (ev[0].px, ev[0].qty, ev[0].ts_origin) == (100, 4, 55)
    assert v.queue_ahead(1) == 50 and [o.client_order_id for o in v.open_orders()] == [1, 2]
    # larger quantity: to the back of the queue (behind our order 2, everything displayed ahead)
    v.replace(replace(1, 100, 8), 5)
    assert v.queue_ahead(1) == 60 and [o.client_order_id for o in v.open_orders()] == [2, 1]
    # new price: new queue at that price
    v.replace(replace(2, 99, 10), 6)
    assert v.queue_ahead(2) == 20
    # new price that crosses: takes, and the rest rests at the new price
    ev = v.replace(replace(2, 101, 15), 7)
    assert type(ev[0]) is OrderReplaced and ev[0].qty == 15
    assert [(x.fill_px, x.fill_qty, x.liquidity) for x in fills_of(ev)] == [
        (101, 10, Liquidity.TAKER)
    ]
    o2 = next(o for o in v.open_orders() if o.client_order_id == 2)
    assert (o2.px, o2.qty) == (101, 5)
    ev = v.replace(replace(2, 101, 0), 8)
    assert [type(e) for e in ev] == [OrderReplaceRejected]
    assert ev[0].reason == ReplaceRejectReason.INVALID
    ev = v.replace(replace(42, 101, 1), 8)
    assert [type(e) for e in ev] == [OrderReplaceRejected] and "unknown" in ev[0].detail
    assert ev[0].reason == ReplaceRejectReason.UNKNOWN_ORDER


def test_replace_after_partial_fill_keeps_quantities_consistent() -> None:
    v = venue()
    v.submit(new(1, BUY, 100, 10), 1)
    v.on_market_data(trade(100, 53, SELL), 2)  # 3 filled
    v.replace(replace(1, 100, 4), 3)  # open qty 7 -> 4
    (f,) = fills_of(v.on_market_data(trade(100, 10, SELL), 4))
    assert (f.cum_qty, f.leaves_qty, type(f)) == (7, 0, OrderFilled)


# --- latency, expiry --------------------------------------------------------------------------------


def test_latency_orders_match_the_book_at_arrival() -> None:
    v = venue(latency_ns=1_000)
    assert v.submit(new(1, BUY, 0, 5, typ=MKT), 0) == []
    assert v.on_market_data(delta(SELL, 101, 0), 500) == []  # the ask at 101 leaves in flight
    assert v.poll(999) == []
    ev = v.poll(1_000)
    assert [type(e) for e in ev] == [OrderAccepted, OrderFilled]
    assert ev[1].fill_px == 102 and ev[1].ts_event == 1_000 and ev[1].ts_recv == 1_000
    # a cancel sent right after its order arrives after it (one ordered session)
    v.submit(new(2, BUY, 99, 5), 2_000)
    v.cancel(cancel(2), 2_000)
    ev = v.poll(3_000)
    assert [type(e) for e in ev] == [OrderAccepted, OrderCanceled]


def test_response_latency_and_jitter_are_deterministic() -> None:
    def run(seed: int) -> list:
        v = venue(latency_ns=100, jitter_ns=50, response_latency_ns=30, seed=seed)
        out = []
        for i in range(20):
            out += v.submit(new(i + 1, BUY if i % 2 else SELL, 0, 1, typ=MKT), i * 10)
        out += v.poll(10_000)
        return out

    a, b, c = run(1), run(1), run(2)
    assert msgspec.msgpack.encode(a) == msgspec.msgpack.encode(b)
    assert msgspec.msgpack.encode(a) != msgspec.msgpack.encode(c)
    acc = [e for e in a if isinstance(e, OrderAccepted)]
    assert [e.client_order_id for e in acc] == list(range(1, 21))  # never reordered
    for e in acc:
        t_sent = (e.client_order_id - 1) * 10
        assert t_sent + 100 <= e.ts_event and e.ts_recv == e.ts_event + 30


def test_day_and_gtd_orders_expire() -> None:
    day0 = 19_000 * DAY_NS
    close = 16 * 3600 * 10**9
    v = SimExchange(TABLE, session_close_ns=close)
    v.on_market_data(snap([(100, 5)], [(101, 5)]), day0)
    v.submit(new(1, BUY, 99, 5, tif=DAY), day0 + 10)
    v.submit(new(2, BUY, 98, 5, tif=TimeInForce.GTD, expire_ns=day0 + 500), day0 + 20)
    v.submit(new(3, BUY, 97, 5), day0 + 30)  # GTC stays
    (ev,) = v.poll(day0 + 500)
    assert type(ev) is OrderExpired and ev.client_order_id == 2 and ev.leaves_qty == 5
    assert v.poll(day0 + close - 1) == []
    (ev,) = v.poll(day0 + close)
    assert type(ev) is OrderExpired and ev.client_order_id == 1 and ev.ts_event == day0 + close
    assert [o.client_order_id for o in v.open_orders()] == [3]
    v.submit(new(4, BUY, 97, 5, tif=DAY), day0 + close + 1)  # after the close: next day's
    assert v.poll(day0 + DAY_NS) == []
    assert [e.client_order_id for e in v.poll(day0 + DAY_NS + close)] == [4]


def test_market_data_for_unknown_instruments_is_ignored() -> None:
    v = venue()
    v.on_market_data(Trade(99, 100, 1, 1, 0, 0), 1)
    v.on_market_data(object(), 2)
    v.on_market_data(delta(7, 100, 1), 3)
    assert v.ignored_market_data == 3


# --- properties ------------------------------------------------------------------------------------

PX = st.integers(95, 106)
OPS = st.lists(
    st.one_of(
        st.tuples(
            st.just("new"),
            st.sampled_from([BUY, SELL]),
            st.sampled_from([MKT, LMT, LMT, LMT]),
            st.sampled_from([GTC, IOC, FOK, DAY]),
            PX,
            st.integers(1, 40),
            st.booleans(),
        ),
        st.tuples(st.just("cancel"), st.integers(0, 25)),
        st.tuples(st.just("replace"), st.integers(0, 25), PX, st.integers(1, 40)),
        st.tuples(st.just("delta"), st.sampled_from([BUY, SELL]), PX, st.integers(0, 60)),
        st.tuples(st.just("trade"), PX, st.integers(1, 60), st.sampled_from([BUY, SELL, 0])),
    ),
    max_size=40,
)
PROPS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class Checker:
    """Drives a SimExchange with latency 0 and checks every event against the spec."""

    def __init__(self, v: SimExchange) -> None:
        self.v = v
        self.t = 0
        self.coids: list[int] = []
        self.orders: dict[int, NewOrder] = {}
        self.qty: dict[int, int] = {}  # current total qty (cum + leaves)
        self.px: dict[int, int] = {}
        self.cum: dict[int, int] = {}
        self.closed: set[int] = set()
        self.taken: dict[tuple[int, int], int] = {}  # taker size per level since its update
        self.position = 0
        self.last_fill_id = 0

    def run(self, op: tuple) -> None:
        v, book = self.v, self.v.book(IID)
        self.t += 1
        bids = dict(zip(*(a.tolist() for a in book.bids()), strict=True))
        asks = dict(zip(*(a.tolist() for a in book.asks()), strict=True))
        prio: dict[tuple[int, int], list[int]] = {}
        for o in v.open_orders():
            prio.setdefault((o.side, o.px), []).append(o.client_order_id)
        kind = op[0]
        if kind == "new":
            _, side, typ, tif, px, qty, post = op
            coid = len(self.coids) + 1
            self.coids.append(coid)
            o = new(coid, side, px, qty, typ=typ, tif=tif, flags=OrderFlag.POST_ONLY * post)
            self.orders[coid] = o
            ev = v.submit(o, self.t)
        elif kind == "cancel":
            coid = self.coids[op[1]] if op[1] < len(self.coids) else 10_000 + op[1]
            ev = v.cancel(cancel(coid), self.t)
        elif kind == "replace":
            coid = self.coids[op[1]] if op[1] < len(self.coids) else 10_000 + op[1]
            ev = v.replace(replace(coid, op[2], op[3]), self.t)
        elif kind == "delta":
            ev = v.on_market_data(delta(op[1], op[2], op[3]), self.t)
            self.taken.pop((op[1], op[2]), None)
        else:
            ev = v.on_market_data(trade(op[1], op[2], op[3]), self.t)
        self.check(ev, bids, asks, prio)

    def check(self, ev: list, bids: dict, asks: dict, prio: dict) -> None:
        makers: list[OrderPartiallyFilled] = []
        for e in ev:
            assert e.ts_event == self.t
            coid = e.client_order_id
            if isinstance(e, OrderAccepted):
                o = self.orders[coid]
                assert coid not in self.qty
                self.qty[coid], self.cum[coid] = o.qty, 0
                self.px[coid] = 0 if o.order_type == MKT else o.px  # a market order has no limit
                assert e.ts_origin == o.ts_origin
            elif isinstance(e, OrderReplaced):
                assert coid not in self.closed
                self.px[coid] = e.px
                self.qty[coid] = self.cum[coid] + e.qty
            elif isinstance(e, OrderPartiallyFilled):
                o = self.orders[coid]
                assert coid not in self.closed, "fill after a terminal event"
                assert e.fill_id > self.last_fill_id
                self.last_fill_id = e.fill_id
                assert e.fill_qty > 0 and e.side == o.side and e.ts_origin == o.ts_origin
                self.cum[coid] += e.fill_qty
                assert e.cum_qty == self.cum[coid] <= self.qty[coid]
                assert e.cum_qty + e.leaves_qty == self.qty[coid]
                assert (type(e) is OrderFilled) == (e.leaves_qty == 0)
                limit = self.px[coid]
                if e.liquidity == Liquidity.TAKER:
                    assert not o.flags & OrderFlag.POST_ONLY, "post-only took liquidity"
                    levels = asks if o.side == BUY else bids
                    # only prices the book showed, best first, within the limit
                    assert e.fill_px in levels
                    if o.side == BUY:
                        assert e.fill_px >= min(levels) and (not limit or e.fill_px <= limit)
                    else:
                        assert e.fill_px <= max(levels) and (not limit or e.fill_px >= limit)
                    key = (-o.side, e.fill_px)
                    self.taken[key] = self.taken.get(key, 0) + e.fill_qty
                    assert self.taken[key] <= levels[e.fill_px], "liquidity consumed twice"
                else:
                    assert o.order_type == LMT and e.fill_px == limit  # makers fill at their price
                    makers.append(e)
                self.position += o.side * e.fill_qty
                if e.leaves_qty == 0:
                    self.closed.add(coid)
            elif isinstance(e, OrderCanceled | OrderExpired):
                assert e.leaves_qty == self.qty[coid] - self.cum[coid]
                self.closed.add(coid)
            elif isinstance(e, OrderRejected) and coid in self.orders and coid not in self.qty:
                self.closed.add(coid)  # a rejected new order
        open_now = {o.client_order_id: o for o in self.v.open_orders()}
        # price-time priority: a maker fill for an order means every order ahead of it at
        # that price (before this step) was filled completely
        for f in makers:
            q = prio.get((f.side, f.fill_px), [])
            if f.client_order_id in q:
                for earlier in q[: q.index(f.client_order_id)]:
                    assert earlier not in open_now, (earlier, f.client_order_id)
        for coid, o in self.orders.items():
            if o.order_type == MKT or o.tif in (IOC, FOK):
                assert coid not in open_now  # never rests
            if o.tif == FOK and coid in self.cum:
                assert self.cum[coid] in (0, o.qty)
        for coid, o in open_now.items():
            assert o.qty == self.qty[coid] - self.cum[coid] > 0 and o.px == self.px[coid]
        assert self.v.positions().get(IID, 0) == self.position


def make_venue() -> SimExchange:
    v = SimExchange(TABLE, maker_fee_bps=-1, taker_fee_bps=3)
    v.on_market_data(snap([(100, 30), (99, 20), (97, 40)], [(101, 25), (102, 10), (104, 30)]), 0)
    return v


@PROPS
@given(OPS)
def test_property_invariants(ops: list[tuple]) -> None:
    c = Checker(make_venue())
    for op in ops:
        c.run(op)


@PROPS
@given(OPS, st.sampled_from([None, True, False]))
def test_property_invariants_all_decrease_models(ops: list[tuple], model: bool | None) -> None:
    v = SimExchange(TABLE, fill_on_decrease=model)
    v.on_market_data(snap([(100, 5), (98, 5)], [(102, 5), (103, 5)]), 0)
    c = Checker(v)
    for op in ops:
        c.run(op)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(OPS, st.integers(0, 2**32))
def test_property_deterministic_with_latency(ops: list[tuple], seed: int) -> None:
    def run() -> tuple[bytes, dict, list]:
        v = SimExchange(TABLE, latency_ns=5, jitter_ns=7, response_latency_ns=2, seed=seed)
        v.on_market_data(snap([(100, 30), (99, 20)], [(101, 25), (102, 10)]), 0)
        out: list = []
        for i, op in enumerate(ops):
            t = 3 * (i + 1)
            if op[0] == "new":
                _, side, typ, tif, px, qty, post = op
                o = new(i + 1, side, px, qty, typ=typ, tif=tif, flags=OrderFlag.POST_ONLY * post)
                out += v.submit(o, t)
            elif op[0] == "cancel":
                out += v.cancel(cancel(op[1] + 1), t)
            elif op[0] == "replace":
                out += v.replace(replace(op[1] + 1, op[2], op[3]), t)
            elif op[0] == "delta":
                out += v.on_market_data(delta(op[1], op[2], op[3]), t)
            else:
                out += v.on_market_data(trade(op[1], op[2], op[3]), t)
        out += v.poll(10**9)
        return msgspec.msgpack.encode(out), v.positions(), v.open_orders()

    a, b = run(), run()
    assert a == b
    events = msgspec.msgpack.decode(a[0])
    assert len(events) >= sum(1 for op in ops if op[0] in ("new", "cancel", "replace"))
