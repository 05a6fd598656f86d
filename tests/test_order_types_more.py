"""The order types issue 17 adds, through ExecEngine on the simulated exchange (which has none
of them natively): market-if-touched, limit-if-touched, trailing-stop-limit, market-to-limit,
at-the-open / at-the-close (held until the instrument's session time, refused without one)."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from engine.exec_engine import ExecEngine, ExecPolicy
from engine.instruments import Instrument
from engine.messages import (
    CancelOrder,
    NewOrder,
    OrderAccepted,
    OrderCanceled,
    OrderFilled,
    OrderPartiallyFilled,
    OrderRejected,
    OrderTriggered,
    OrderType,
    Quote,
    Side,
    TimeInForce,
)
from engine.oms import OrderState
from engine.sessions import next_session_ns
from engine.venues.sim import SimExchange

IID, IID_S = 1, 2
INS = [
    Instrument(instrument_id=IID, symbol="AAA"),
    Instrument(
        instrument_id=IID_S,
        symbol="SPY",
        session_tz="America/New_York",
        session_open="09:30",
        session_close="16:00",
    ),
]
BUY, SELL = Side.BUY, Side.SELL
NY = ZoneInfo("America/New_York")


def new(coid, side, px, qty, typ, *, stop_px=0, tif=TimeInForce.GTC, iid=IID, params=None):
    return NewOrder(
        coid, 1, iid, side, typ, tif, px, qty, 0, 0, stop_px, 0, 0, algo_params=params or {}
    )


def quote(bid, ask, t, bq=10, aq=10, iid=IID):
    return Quote(iid, bid, bq, ask, aq, t, t)


def types(evs):
    return [type(e).__name__ for e in evs]


@pytest.fixture
def ex():
    venue = SimExchange(INS)
    e = ExecEngine(venue, INS, ExecPolicy(max_retries=0), algo_engine=None)
    e.on_market_data(quote(99, 101, 1), 1)
    return e, venue


def test_market_if_touched_buys_when_the_price_comes_down_to_it(ex):
    e, v = ex
    assert types(e.on_order(new(1, BUY, 0, 5, OrderType.MARKET_IF_TOUCHED, stop_px=95), 2)) == [
        "OrderAccepted"
    ]
    assert e.on_market_data(quote(97, 99, 3), 3) == []  # above the touch: nothing
    out = e.on_market_data(quote(94, 95, 4), 4)
    assert types(out) == ["OrderTriggered", "OrderAccepted", "OrderFilled"]
    assert out[0].emulated and out[0].order_type == OrderType.MARKET and out[0].trigger_px == 95
    assert out[2].fill_px == 95 and e.position(IID) == 5 == v.positions()[IID]


def test_limit_if_touched_sells_at_its_limit_when_the_price_rises_to_it(ex):
    e, v = ex
    e.on_order(new(1, SELL, 106, 4, OrderType.LIMIT_IF_TOUCHED, stop_px=105), 2)
    assert e.on_market_data(quote(104, 106, 3), 3) == []
    out = e.on_market_data(quote(105, 107, 4), 4)
    assert types(out)[:2] == ["OrderTriggered", "OrderAccepted"]
    assert out[0].order_type == OrderType.LIMIT and out[0].px == 106
    assert not any(isinstance(x, OrderPartiallyFilled) for x in out)  # rests at 106
    assert [o.px for o in v.open_orders()] == [106]
    fill = e.on_market_data(quote(106, 108, 5), 5)
    assert types(fill) == ["OrderFilled"] and fill[0].fill_px == 106


def test_limit_if_touched_needs_a_limit(ex):
    e, _ = ex
    out = e.on_order(new(1, SELL, 0, 4, OrderType.LIMIT_IF_TOUCHED, stop_px=105), 2)
    assert types(out) == ["OrderRejected"] and "limit price" in out[0].reason


def test_trailing_stop_limit_sends_a_limit_offset_from_the_stop(ex):
    e, v = ex
    o = new(1, SELL, 0, 3, OrderType.TRAILING_STOP_LIMIT, stop_px=4, params={"limit_offset": 2})
    e.on_order(o, 2)
    assert e.emulator.stop_px(1) == 95  # bid 99 - 4
    e.on_market_data(quote(104, 105, 3), 3)  # the mark rises: the stop follows to 100
    assert e.emulator.stop_px(1) == 100
    e.on_market_data(quote(102, 103, 4), 4)  # falls back: the stop stays
    assert e.emulator.stop_px(1) == 100
    out = e.on_market_data(quote(100, 101, 5, bq=1), 5)
    trig = next(x for x in out if isinstance(x, OrderTriggered))
    assert trig.stop_px == 100 and trig.order_type == OrderType.LIMIT and trig.px == 98
    # a sell limit at 98: whatever it takes, it takes at 98 or better
    fills = [x for x in out if isinstance(x, OrderPartiallyFilled)]
    assert fills and all(f.fill_px >= 98 for f in fills)


def test_market_to_limit_takes_the_touch_and_rests_the_rest_there(ex):
    e, v = ex
    out = e.on_order(new(1, BUY, 0, 15, OrderType.MARKET_TO_LIMIT), 2)
    assert types(out) == ["OrderAccepted", "OrderPartiallyFilled"]
    assert out[1].fill_px == 101 and out[1].fill_qty == 10
    assert [(o.px, o.qty) for o in v.open_orders()] == [(101, 5)]  # the rest, at the touch
    assert e.table.get(1).px == 101 and e.state(1) == OrderState.PARTIALLY_FILLED
    e.on_market_data(quote(102, 104, 6), 6)  # the market moves away: it rests at 101
    assert e.table.get(1).leaves_qty == 5


def test_market_to_limit_without_a_quote_is_refused():
    venue = SimExchange(INS)
    e = ExecEngine(venue, INS, ExecPolicy(max_retries=0), algo_engine=None)
    out = e.on_order(new(1, BUY, 0, 5, OrderType.MARKET_TO_LIMIT), 2)
    assert types(out) == ["OrderRejected"] and "needs a quote" in out[0].reason


def _ns(y, mo, d, h, mi):
    return int(datetime(y, mo, d, h, mi, tzinfo=NY).timestamp()) * 1_000_000_000


def test_next_session_time_skips_weekends_and_follows_the_zone():
    fri_eve = _ns(2026, 3, 6, 17, 0)  # a Friday after the close
    assert next_session_ns(fri_eve, "America/New_York", "09:30") == _ns(2026, 3, 9, 9, 30)
    # across the March DST change the local time stays 09:30
    assert next_session_ns(_ns(2026, 3, 6, 8, 0), "America/New_York", "09:30") == _ns(
        2026, 3, 6, 9, 30
    )


def test_at_the_open_is_held_until_the_open_then_takes_the_market_as_ioc():
    venue = SimExchange(INS)
    e = ExecEngine(venue, INS, ExecPolicy(max_retries=0), algo_engine=None)
    t0 = _ns(2026, 3, 4, 8, 0)  # a Wednesday, before the 09:30 open
    e.on_market_data(quote(99, 101, t0, aq=4, iid=IID_S), t0)
    out = e.on_order(
        new(1, BUY, 0, 6, OrderType.MARKET, tif=TimeInForce.AT_THE_OPEN, iid=IID_S), t0
    )
    assert types(out) == ["OrderAccepted"] and out[0].venue_order_id == 0
    assert e.next_event_ns() == _ns(2026, 3, 4, 9, 30)
    assert e.poll(_ns(2026, 3, 4, 9, 29)) == [] and not venue.knows_order(1)
    out = e.poll(_ns(2026, 3, 4, 9, 30))
    assert types(out) == [
        "OrderTriggered",
        "OrderAccepted",
        "OrderPartiallyFilled",
        "OrderCanceled",
    ]
    assert out[2].fill_qty == 4 and out[3].leaves_qty == 2  # what the open did not give: gone


def test_at_the_close_can_be_canceled_while_held():
    venue = SimExchange(INS)
    e = ExecEngine(venue, INS, ExecPolicy(max_retries=0), algo_engine=None)
    t0 = _ns(2026, 3, 4, 10, 0)
    o = new(1, SELL, 100, 2, OrderType.LIMIT, tif=TimeInForce.AT_THE_CLOSE, iid=IID_S)
    e.on_order(o, t0)
    assert e.next_event_ns() == _ns(2026, 3, 4, 16, 0)
    out = e.on_order(CancelOrder(1, 1, IID_S, t0 + 1, t0 + 1), t0 + 1)
    assert types(out) == ["OrderCanceled"] and e.state(1) == OrderState.CANCELED
    assert e.poll(_ns(2026, 3, 4, 16, 0)) == [] and not venue.knows_order(1)


def test_session_orders_are_refused_where_the_instrument_has_no_session(ex):
    e, v = ex
    for tif in (TimeInForce.AT_THE_OPEN, TimeInForce.AT_THE_CLOSE):
        out = e.on_order(new(int(tif), BUY, 0, 1, OrderType.MARKET, tif=tif), 2)
        assert types(out) == ["OrderRejected"]
        assert "needs a session" in out[0].reason and "AAA" in out[0].reason
    assert not v.open_orders()


def test_the_session_clock_is_the_wall_clock_in_a_process():
    """The exec process runs on the monotonic clock: ``wall_offset_ns`` maps it to the wall."""
    venue = SimExchange(INS)
    e = ExecEngine(venue, INS, ExecPolicy(max_retries=0), algo_engine=None)
    wall0 = _ns(2026, 3, 4, 9, 0)
    e.wall_offset_ns = wall0 - 1_000  # monotonic 1_000 is 09:00 New York
    e.on_order(new(1, BUY, 0, 1, OrderType.MARKET, tif=TimeInForce.AT_THE_OPEN, iid=IID_S), 1_000)
    assert e.next_event_ns() == 1_000 + 30 * 60 * 1_000_000_000


def test_new_types_are_refused_when_emulation_is_off():
    venue = SimExchange(INS)
    e = ExecEngine(venue, INS, ExecPolicy(max_retries=0, emulate=False), algo_engine=None)
    for k, typ in enumerate(
        (OrderType.MARKET_IF_TOUCHED, OrderType.TRAILING_STOP_LIMIT, OrderType.MARKET_TO_LIMIT), 1
    ):
        out = e.on_order(new(k, BUY, 100, 1, typ, stop_px=3), 2)
        assert isinstance(out[0], OrderRejected) and "emulation off" in out[0].reason


def test_a_filled_if_touched_order_ends_filled(ex):
    e, _ = ex
    e.on_order(new(1, SELL, 0, 2, OrderType.MARKET_IF_TOUCHED, stop_px=100), 2)
    out = e.on_market_data(quote(100, 102, 3), 3)
    assert isinstance(out[-1], OrderFilled) and e.state(1) == OrderState.FILLED
    assert not any(isinstance(x, OrderCanceled | OrderAccepted) for x in out[2:])


def _restarted(e: ExecEngine, venue: SimExchange, orders, events, now: int) -> ExecEngine:
    """A new exec over the same venue from what its journal would hold (as procs.recovery)."""
    from engine.exec_lists import held_by_exec
    from engine.reconcile import reconcile

    local = {
        o.client_order_id
        for o in orders
        if held_by_exec(o) and not venue.knows_order(o.client_order_id)
    }
    res = reconcile(orders, events, venue, now, local_ids=local)
    e2 = ExecEngine(venue, INS, ExecPolicy(max_retries=0), algo_engine=None, id_block=1)
    e2.table = res.table
    assert res.publish == []
    e2.out = e2.restore_lists(now, local)  # type: ignore[attr-defined]
    return e2


def test_a_session_order_is_held_again_after_a_restart():
    venue = SimExchange(INS)
    e = ExecEngine(venue, INS, ExecPolicy(max_retries=0), algo_engine=None)
    t0 = _ns(2026, 3, 4, 8, 0)
    o = new(1, BUY, 0, 2, OrderType.MARKET, tif=TimeInForce.AT_THE_OPEN, iid=IID_S)
    o = NewOrder(**{**{f: getattr(o, f) for f in o.__struct_fields__}, "ts_approved": t0})
    evs = e.on_order(o, t0)
    e2 = _restarted(e, venue, [o], evs, t0 + 60_000_000_000)
    assert e2.out == [] and e2.next_event_ns() == _ns(2026, 3, 4, 9, 30)
    out = e2.poll(_ns(2026, 3, 4, 9, 30))
    assert types(out)[:2] == ["OrderTriggered", "OrderAccepted"]


def test_a_session_time_missed_while_exec_was_down_cancels_the_order():
    venue = SimExchange(INS)
    e = ExecEngine(venue, INS, ExecPolicy(max_retries=0), algo_engine=None)
    t0 = _ns(2026, 3, 4, 8, 0)
    o = new(1, BUY, 0, 2, OrderType.MARKET, tif=TimeInForce.AT_THE_OPEN, iid=IID_S)
    o = NewOrder(**{**{f: getattr(o, f) for f in o.__struct_fields__}, "ts_approved": t0})
    evs = e.on_order(o, t0)
    e2 = _restarted(e, venue, [o], evs, _ns(2026, 3, 4, 10, 0))  # back after the open
    assert types(e2.out) == ["OrderCanceled"] and "session time passed" in e2.out[0].reason
    assert e2.state(1) == OrderState.CANCELED and e2.next_event_ns() is None
