"""The ccxt execution adapter's pure parts: the in-flight order table and the venue guard."""

from __future__ import annotations

from decimal import Decimal

import pytest

from engine.instruments import Instrument
from engine.messages import (
    NewOrder,
    OrderAccepted,
    OrderCanceled,
    OrderFilled,
    OrderPartiallyFilled,
    OrderRejected,
    OrderType,
    Side,
    TimeInForce,
)
from engine.order_states import OrderStatus
from engine.venues.ccxt_guard import ClockSync, Guard, WeightBudget, retry_after_s
from engine.venues.ccxt_orders import (
    OrderTable,
    Phase,
    fill_id_for,
    order_prefix,
    parse_client_id,
    venue_client_id,
)

BTC = Instrument(instrument_id=1, symbol="BTC/USDT", venue="bn", tick_size=0.01, lot_size=0.00001)
NOW = 1_700_000_000_000_000_000


def _order(
    coid: int = 7, side: int = Side.BUY, qty: int = 100_000, px: int = 5_000_000
) -> NewOrder:
    return NewOrder(
        client_order_id=coid,
        strategy_id=1,
        instrument_id=1,
        side=int(side),
        order_type=int(OrderType.LIMIT),
        tif=int(TimeInForce.GTC),
        px=px,
        qty=qty,
        ts_origin=11,
        ts_approved=12,
    )


def _table() -> OrderTable:
    return OrderTable("bn", order_prefix("eng1"), [BTC])


def _odict(t, status="open", filled="0", vid="900", cid=None):
    return {
        "id": vid,
        "clientOrderId": cid or t.cid,
        "status": status,
        "filled": filled,
        "amount": "1",
        "symbol": "BTC/USDT",
        "timestamp": 1_700_000_000_000,
    }


def _trade(tid, amount, price="50000", vid="900", fee=None, ts=1_700_000_000_001):
    return {
        "id": tid,
        "order": vid,
        "amount": amount,
        "price": price,
        "timestamp": ts,
        "takerOrMaker": "taker",
        "fee": fee,
    }


# --- ids ----------------------------------------------------------------------------------------
def test_client_ids_round_trip_and_fit_every_venue() -> None:
    p = order_prefix("eng1")
    assert p == order_prefix("eng1") and p != order_prefix("eng2")
    assert len(p) == 4 and p[0].isalpha()
    for coid, gen in [(0, 0), (7, 0), (1 << 40 | 5, 3), (2**63 - 1, 0)]:
        cid = venue_client_id(p, coid, gen)
        assert parse_client_id(p, cid) == (coid, gen)
        assert cid.replace("_", "").isalnum() and len(cid) <= 18 + (2 if gen else 0)
    assert parse_client_id(p, "x-ccxt123") is None
    assert parse_client_id(p, None) is None
    assert parse_client_id(order_prefix("eng2"), venue_client_id(p, 5)) is None


def test_fill_ids_grow_with_time_and_are_stable() -> None:
    assert fill_id_for(2, "a") > fill_id_for(1, "zzz")
    assert fill_id_for(5, "abc") == fill_id_for(5, "abc")


# --- the table ----------------------------------------------------------------------------------
def test_ack_then_partial_fills_from_trades_then_filled() -> None:
    tb = _table()
    t = tb.add(_order(), BTC, NOW)
    evs = tb.on_order(_odict(t), NOW)
    assert [type(e) for e in evs] == [OrderAccepted] and evs[0].venue_order_id == 900
    evs = tb.on_trade(_trade("t1", "0.4"), NOW)
    assert type(evs[0]) is OrderPartiallyFilled
    assert (evs[0].fill_qty, evs[0].cum_qty, evs[0].leaves_qty) == (40_000, 40_000, 60_000)
    assert evs[0].fill_px == 5_000_000
    evs = tb.on_trade(_trade("t2", "0.6", ts=1_700_000_000_002), NOW)
    assert type(evs[0]) is OrderFilled and evs[0].leaves_qty == 0 and evs[0].cum_qty == 100_000
    assert t.phase == Phase.CLOSED
    assert tb.report(7).status == OrderStatus.FILLED
    # the closing order update after the fill says nothing new
    assert tb.on_order(_odict(t, "closed", "1"), NOW) == []


def test_duplicate_and_out_of_order_events_apply_once() -> None:
    tb = _table()
    t = tb.add(_order(), BTC, NOW)
    tb.on_order(_odict(t), NOW)
    # an update saying 0.5 filled arrives before the trade: no fill invented, none lost
    assert tb.on_order(_odict(t, filled="0.5"), NOW) == []
    # then an OLDER update (filled 0.2): the cumulative never goes back
    assert tb.on_order(_odict(t, filled="0.2"), NOW) == []
    assert tb.stale_updates == 1 and t.venue_filled["900"] == Decimal("0.5")
    first = tb.on_trade(_trade("t1", "0.5"), NOW)
    assert [e.fill_qty for e in first] == [50_000]
    assert tb.on_trade(_trade("t1", "0.5"), NOW) == []  # the same trade again
    assert tb.duplicate_trades == 1
    assert len(tb.fills) == 1


def test_cancel_waits_for_the_trades_the_update_reports() -> None:
    tb = _table()
    t = tb.add(_order(), BTC, NOW)
    tb.on_order(_odict(t), NOW)
    # canceled with 0.3 filled, the trade not seen yet: the cancel must not close it short
    assert tb.on_order(_odict(t, "canceled", "0.3"), NOW) == []
    assert t.phase == Phase.OPEN and t.missing() == Decimal("0.3")
    evs = tb.on_trade(_trade("t1", "0.3"), NOW)
    assert [type(e) for e in evs] == [OrderPartiallyFilled, OrderCanceled]
    assert evs[1].leaves_qty == 70_000 and t.phase == Phase.CLOSED


def test_missing_trades_can_be_synthesized_once() -> None:
    tb = _table()
    t = tb.add(_order(), BTC, NOW)
    tb.on_order(_odict(t, "canceled", "0.25"), NOW)
    evs = tb.synthesize_missing(7, Decimal("50000"), NOW, ts_ms=1_700_000_000_500)
    assert [type(e) for e in evs] == [OrderPartiallyFilled, OrderCanceled]
    assert evs[0].fill_qty == 25_000
    # a restarted table derives the same fill id from the same order
    tb2 = _table()
    t2 = tb2.add(_order(), BTC, NOW + 1)
    tb2.on_order(_odict(t2, "canceled", "0.25"), NOW + 1)
    again = tb2.synthesize_missing(7, Decimal("50000"), NOW + 1, ts_ms=1_700_000_000_500)
    assert again[0].fill_id == evs[0].fill_id
    assert tb.synthesize_missing(7, Decimal("50000"), NOW) == []


def test_unknown_is_never_rejected_by_a_failure_only_by_resolution() -> None:
    tb = _table()
    t = tb.add(_order(), BTC, NOW)
    tb.mark_unknown(7)
    assert tb.reject(7, "timeout", NOW) == []  # an UNKNOWN order is not refused by a failure
    assert t.phase == Phase.UNKNOWN and tb.report(7).status == OrderStatus.SUBMITTED
    # the user stream (or a query) finds it: accepted, late
    evs = tb.on_order(_odict(t), NOW)
    assert [type(e) for e in evs] == [OrderAccepted]
    assert tb.resolve_missing(7, "never arrived", NOW) == []  # resolved already


def test_unknown_resolved_as_missing_is_rejected_once() -> None:
    tb = _table()
    tb.add(_order(), BTC, NOW)
    tb.mark_unknown(7)
    evs = tb.resolve_missing(7, "not at the venue after its window", NOW)
    assert [type(e) for e in evs] == [OrderRejected]
    assert tb.resolve_missing(7, "again", NOW) == []
    assert tb.unknown_resolved == 1


def test_a_trade_before_the_ack_acknowledges_the_order() -> None:
    tb = _table()
    tb.add(_order(), BTC, NOW)
    tb.mark_unknown(7)
    tr = _trade("t1", "1")
    tr["clientOrderId"] = tb.get(7).cid
    evs = tb.on_trade(tr, NOW)
    assert [type(e) for e in evs] == [OrderAccepted, OrderFilled]


def test_a_base_asset_fee_makes_the_fill_the_net_amount_received() -> None:
    tb = _table()
    t = tb.add(_order(), BTC, NOW)
    tb.on_order(_odict(t), NOW)
    fee = {"cost": "0.001", "currency": "BTC"}
    evs = tb.on_trade(_trade("t1", "1", fee=fee), NOW)
    ev = evs[0]
    assert type(ev) is OrderFilled
    assert ev.fill_qty == 99_900  # 1 BTC bought, 0.001 BTC kept by the venue
    assert ev.fee == pytest.approx(50.0)  # its value in USDT at the fill price
    assert t.fees[0].currency == "BTC" and t.fees[0].cost == Decimal("0.001")


def test_a_quote_fee_on_a_sell_leaves_the_quantity_alone() -> None:
    tb = _table()
    t = tb.add(_order(side=Side.SELL), BTC, NOW)
    tb.on_order(_odict(t), NOW)
    ev = tb.on_trade(_trade("t1", "1", fee={"cost": "5", "currency": "USDT"}), NOW)[0]
    assert ev.fill_qty == 100_000 and ev.fee == pytest.approx(5.0)


def test_cancel_replace_generations_share_one_order() -> None:
    tb = _table()
    t = tb.add(_order(), BTC, NOW)
    tb.on_order(_odict(t), NOW)
    tb.on_trade(_trade("t1", "0.4"), NOW)
    tb.new_generation(7, Decimal("0.3"), 4_900_000)
    cid = t.cid
    assert parse_client_id(tb.prefix, cid) == (7, 1)
    # the old venue order's cancel does not close ours
    assert tb.on_order(_odict(t, "canceled", "0.4", cid=venue_client_id(tb.prefix, 7)), NOW) == []
    assert t.phase == Phase.OPEN
    tb.on_order(_odict(t, "open", "0", vid="901", cid=cid), NOW)
    evs = tb.on_trade(_trade("t2", "0.3", vid="901"), NOW)
    assert type(evs[0]) is OrderFilled and evs[0].cum_qty == 70_000


def test_adopt_rebuilds_our_order_and_ignores_others() -> None:
    tb = _table()
    cid = venue_client_id(tb.prefix, 42)
    o = {"id": "77", "clientOrderId": cid, "symbol": "BTC/USDT", "side": "sell", "price": 50000.0}
    o |= {"amount": 0.5, "status": "open", "filled": 0.1}
    t = tb.adopt(o, NOW)
    assert t is not None and t.order.qty == 50_000 and t.order.side == Side.SELL
    assert tb.find(None, "77") is t
    assert tb.adopt({**o, "clientOrderId": "web_123", "id": "78"}, NOW) is None
    tb.on_order({**o, "clientOrderId": "web_123", "id": "78"}, NOW)
    assert "78" in tb.external_orders


def test_fills_since_compares_by_millisecond() -> None:
    tb = _table()
    t = tb.add(_order(), BTC, NOW)
    tb.on_order(_odict(t), NOW)
    tb.on_trade(_trade("a", "0.1", ts=5), NOW)
    tb.on_trade(_trade("b", "0.1", ts=5), NOW)
    tb.on_trade(_trade("c", "0.1", ts=6), NOW)
    first = tb.fills[0].fill_id
    got = {f.fill_id for f in tb.fills_since(first)}
    assert first not in got and got == {f.fill_id for f in tb.fills[1:]}


# --- the guard ----------------------------------------------------------------------------------
def test_weight_budget_waits_for_the_window() -> None:
    b = WeightBudget(10, 60)
    b.take(6, 0.0)
    b.take(4, 30.0)
    assert b.delay(1, 31.0) == pytest.approx(29.0)  # the first 6 leave the window at 60
    assert b.delay(5, 31.0) == pytest.approx(29.0)
    assert b.delay(7, 31.0) == pytest.approx(59.0)
    assert b.delay(1, 60.0) == 0.0
    b.observe_used(10, 60.0)  # the venue counts more than we do
    assert b.delay(1, 60.0) > 0


def test_krakens_budget_is_a_counter_that_decays() -> None:
    g = Guard("kraken")  # 15, losing 15 / 45 s = one point every 3 s
    assert g.budget.decaying and g.weight("load_markets") == 0 and g.weight("fetch_time") == 0
    b = g.budget
    b.take(15, 0.0)
    assert b.delay(1, 0.0) == pytest.approx(3.0)  # a window would hold it for 45 s
    assert b.delay(2, 1.5) == pytest.approx(4.5)
    assert b.delay(1, 3.0) == 0.0 and b.used(30.0) == pytest.approx(5.0)
    b.observe_used(15, 30.0)  # the venue counts more than we do
    assert b.delay(1, 30.0) == pytest.approx(3.0)
    assert not Guard("binanceus").budget.decaying


def test_retry_after_header_forms() -> None:
    assert retry_after_s({"Retry-After": "3"}, 1.0) == 3.0
    assert retry_after_s({"retry-after": "junk"}, 1.5) == 1.5
    assert retry_after_s({}, 2.0) == 2.0


def test_429_blocks_until_retry_after_and_418_bans_order_entry() -> None:
    g = Guard("binanceus")
    g.on_response(429, {"Retry-After": "2"}, 100.0)
    assert g.wait_s("create_order", 100.0) == pytest.approx(2.0)
    assert "rate limit" in g.refusal(100.5) and g.refusal(102.0) == ""
    assert not g.banned(100.0)
    g.on_response(418, {"Retry-After": "60"}, 200.0)
    assert g.banned(230.0) and "banned" in g.refusal(230.0) and g.reason(230.0)
    assert g.wait_s("fetch_time", 230.0) == pytest.approx(30.0)  # nothing goes into the ban
    assert not g.banned(260.0) and g.refusal(260.0) == ""


def test_guard_weights_and_settings() -> None:
    g = Guard("binanceus", {"rate_limit_weight": 25, "request_weights": {"create_order": 5}})
    assert g.weight("fetch_balance") == 20 and g.weight("create_order") == 5
    g.spend("fetch_balance", 0.0)
    assert g.wait_s("create_order", 0.0) == 0.0
    g.spend("create_order", 0.0)
    assert g.wait_s("create_order", 1.0) == pytest.approx(59.0)
    g.on_response(200, {"X-MBX-USED-WEIGHT-1M": "30"}, 2.0)
    assert g.budget.used(2.0) == 30


def test_clock_offset_is_the_midpoint() -> None:
    c = ClockSync(every_s=10)
    assert c.due(0.0)
    assert c.update(server_ms=1_000_500, sent_ms=1_000_000, recv_ms=1_000_200, now=0.0) == 400
    assert not c.due(5.0) and c.due(10.0)


def test_rate_limit_answers_without_a_status_still_block_or_ban() -> None:
    g = Guard("kraken", {"retry_after_default_s": 3, "ban_default_s": 50})
    g.on_limit_error("kraken EAPI:Rate limit exceeded", 10.0)
    assert "rate limit" in g.refusal(11.0) and g.refusal(13.0) == ""
    g.on_limit_error("kraken EGeneral:Temporary lockout", 20.0)
    assert g.banned(60.0) and not g.banned(70.0)
    # a 429 with its own Retry-After is not doubled by the exception that follows it
    g.on_response(429, {"Retry-After": "1"}, 100.0)
    g.on_limit_error("429 Too many requests", 100.1)
    assert g.rate_limited == 2 and g.refusal(101.2) == ""


def test_a_refused_replace_keeps_the_terms_and_its_stray_order_is_flagged() -> None:
    tb = _table()
    t = tb.add(_order(), BTC, NOW)
    tb.on_order(_odict(t), NOW)
    old_cid = t.cid
    before = tb.new_generation(7, Decimal("0.3"), 4_900_000)
    tb.undo_generation(7, before)
    assert (t.cid, t.gen, t.amount, t.px) == (old_cid, 0, Decimal("1"), 5_000_000)
    # the venue placed the new order after all (a lost answer): ours, but not tracked
    new = venue_client_id(tb.prefix, 7, 1)
    assert tb.on_order(_odict(t, "open", vid="950", cid=new), NOW) == []
    assert tb.strays == {"950": "BTC/USDT"} and t.venue_id == "900"


def test_an_unknown_order_given_up_that_turns_up_is_a_stray() -> None:
    tb = _table()
    t = tb.add(_order(), BTC, NOW)
    tb.mark_unknown(7)
    tb.resolve_missing(7, "not there", NOW)
    assert tb.on_order(_odict(t), NOW) == []
    assert tb.strays == {"900": "BTC/USDT"}


def test_a_trade_without_its_amount_does_not_hide_the_complete_one() -> None:
    tb = _table()
    t = tb.add(_order(), BTC, NOW)
    tb.on_order(_odict(t), NOW)
    assert tb.on_trade(_trade("t1", None), NOW) == []  # a stream message ccxt half parsed
    assert tb.incomplete_trades == 1
    evs = tb.on_trade(_trade("t1", "1"), NOW)  # the REST copy
    assert [type(e) for e in evs] == [OrderFilled]


def test_guard_takes_zero_as_the_published_limit() -> None:
    g = Guard("binanceus", {"rate_limit_weight": 0.0, "rate_limit_window_s": 0.0})
    assert (g.budget.limit, g.budget.window_s) == (1200.0, 60.0)
    assert Guard("nosuch", {"rate_limit_weight": 0.0}).budget.limit > 0
