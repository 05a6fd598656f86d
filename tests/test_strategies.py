"""Strategy API, StrategyHost routing, and the two built-in strategies (behaviour, not internals)."""

from __future__ import annotations

import math
import random

import pytest

from engine.instruments import Instrument
from engine.messages import (
    BookDelta,
    BookSnapshot,
    CancelRejectReason,
    Forecast,
    IntentCancel,
    IntentNew,
    IntentReplace,
    OrderAccepted,
    OrderCanceled,
    OrderCancelRejected,
    OrderFilled,
    OrderPartiallyFilled,
    OrderRejected,
    OrderReplaced,
    OrderReplaceRejected,
    OrderType,
    Quote,
    ReplaceRejectReason,
    Side,
    TimeInForce,
    Trade,
)
from engine.strategies.base import Strategy, StrategyContext, load_strategy, strategy_id_of
from engine.strategies.market_maker import MarketMaker
from engine.strategies.momentum import MomentumTaker
from engine.strategy_host import StrategyHost, StrategySpec

INS = [Instrument(instrument_id=1, symbol="AAA"), Instrument(instrument_id=2, symbol="BBB")]


def quote(iid: int, bid: int, ask: int, ts: int, bq: int = 10, aq: int = 10) -> Quote:
    return Quote(iid, bid, bq, ask, aq, ts_event=ts, ts_recv=ts)


def accept(intent: IntentNew, ts: int) -> OrderAccepted:
    return OrderAccepted(
        intent.client_order_id,
        99,
        intent.instrument_id,
        intent.side,
        intent.px,
        intent.qty,
        intent.ts_origin,
        ts,
        ts,
    )


def fill(intent: IntentNew, qty: int, leaves: int, ts: int, px: int | None = None, fid: int = 1):
    cls = OrderFilled if leaves == 0 else OrderPartiallyFilled
    return cls(
        intent.client_order_id,
        99,
        intent.instrument_id,
        intent.side,
        intent.px if px is None else px,
        qty,
        intent.qty - leaves,
        leaves,
        0.0,
        2,
        fid,
        intent.ts_origin,
        ts,
        ts,
    )


class Recorder(Strategy):
    """Records every callback; buys 1 lot at bid on every quote when params say so."""

    def __init__(self, ctx: StrategyContext, params: dict) -> None:
        super().__init__(ctx, params)
        self.calls: list[tuple] = []

    def on_start(self) -> None:
        self.calls.append(("start",))

    def on_quote(self, q: Quote) -> None:
        self.calls.append(("quote", q.instrument_id))
        if self.params.get("buy_on_quote"):
            self.ctx.buy(q.instrument_id, 1, q.bid_px)

    def on_trade(self, t: Trade) -> None:
        self.calls.append(("trade", t.instrument_id))

    def on_book(self, instrument_id: int) -> None:
        self.calls.append(("book", instrument_id))

    def on_forecast(self, f: Forecast) -> None:
        self.calls.append(("forecast", f.instrument_id))
        self.ctx.buy(f.instrument_id, 1)

    def on_order_event(self, ev) -> None:
        self.calls.append(("order_event", type(ev).__name__))

    def on_fill(self, ev) -> None:
        self.calls.append(("fill", ev.fill_qty))

    def on_timer(self, now_ns: int) -> None:
        self.calls.append(("timer", now_ns))

    def on_stop(self) -> None:
        self.calls.append(("stop",))


class Exploder(Strategy):
    def on_quote(self, q: Quote) -> None:
        self.ctx.buy(q.instrument_id, 1, q.bid_px)  # placed, then the callback fails
        if q.ts_recv >= 2:
            raise RuntimeError("boom")


class NotAStrategy:
    pass


# --- load_strategy -------------------------------------------------------------------------


def test_load_strategy_both_path_forms():
    assert load_strategy("engine.strategies.market_maker:MarketMaker") is MarketMaker
    assert load_strategy("engine.strategies.momentum.MomentumTaker") is MomentumTaker
    assert load_strategy(f"{__name__}:Recorder") is Recorder


@pytest.mark.parametrize(
    "path",
    [
        "no.such.module:Thing",
        "engine.strategies.market_maker:NoSuchClass",
        f"{__name__}:NotAStrategy",
        "engine.strategies.base:StrategyContext",
        "justaname",
        "",
    ],
)
def test_load_strategy_errors_name_the_path(path):
    with pytest.raises(ValueError) as exc:
        load_strategy(path)
    assert repr(path) in str(exc.value)


# --- context -------------------------------------------------------------------------------


def test_order_helpers_build_intents_with_unique_ids_and_origin():
    host = StrategyHost([StrategySpec(Recorder, {"buy_on_quote": True}, strategy_id=7)], INS)
    intents = host.on_market_data(quote(1, 100, 102, ts=1_000), now_ns=1_500)
    assert len(intents) == 1
    it = intents[0]
    assert isinstance(it, IntentNew)
    assert it.strategy_id == 7 and strategy_id_of(it.client_order_id) == 7
    assert it.client_order_id == (7 << 32) | 1
    assert (it.side, it.px, it.qty) == (Side.BUY, 100, 1)
    assert (it.order_type, it.tif) == (OrderType.LIMIT, TimeInForce.GTC)
    assert it.ts_origin == 1_000 and it.ts_created == 1_500

    ctx = host.context(7)
    ids = {ctx.sell(1, 2) for _ in range(5)}
    assert len(ids) == 5
    out = ctx.take_intents()
    assert all(i.order_type == OrderType.MARKET and i.tif == TimeInForce.IOC for i in out)
    assert all(i.side == Side.SELL and i.px == 0 for i in out)
    with pytest.raises(ValueError):
        ctx.buy(99, 1, 100)  # an instrument the strategy does not trade


def test_cancel_and_replace_only_for_open_orders():
    ctx = StrategyContext(3, INS)
    coid = ctx.buy(1, 5, 100)
    assert ctx.replace(coid, 101, 5)
    assert ctx.cancel(coid)
    assert not ctx.cancel(coid)  # already in flight
    assert not ctx.cancel(12345)
    assert not ctx.replace(12345, 1, 1)
    kinds = [type(i) for i in ctx.take_intents()]
    assert kinds == [IntentNew, IntentReplace, IntentCancel]
    ctx.apply_exec_event(OrderCanceled(coid, 1, 5, "user", 0, 1, 1))
    assert coid not in ctx.open_orders
    a, b = ctx.buy(1, 1, 99), ctx.sell(2, 1, 200)
    ctx.take_intents()
    assert ctx.cancel_all() == 2
    assert {i.client_order_id for i in ctx.take_intents()} == {a, b}


# --- host routing --------------------------------------------------------------------------


def test_host_routes_market_data_by_instrument_and_callbacks_in_order():
    host = StrategyHost(
        [
            {"path": f"{__name__}:Recorder", "instruments": ["AAA"]},
            {"path": f"{__name__}:Recorder", "instruments": [1, 2]},
        ],
        INS,
    )
    host.on_market_data(quote(2, 50, 51, 1), 1)
    host.on_market_data(Trade(1, 100, 3, Side.BUY, 2, 2), 2)
    host.on_market_data(BookDelta(1, Side.BUY, 100, 5, 3, 3), 3)
    host.on_timer(4)
    a, b = host.strategy(1), host.strategy(2)
    assert a.calls == [("start",), ("trade", 1), ("book", 1), ("timer", 4)]
    assert b.calls == [("start",), ("quote", 2), ("trade", 1), ("book", 1), ("timer", 4)]


def test_books_from_deltas_and_quotes_alone_both_work():
    host = StrategyHost([Recorder], INS)
    ctx = host.context(1)
    # quotes only: the (empty) book falls back to the last quote
    host.on_market_data(quote(2, 50, 52, 1, bq=3, aq=1), 1)
    assert ctx.best_bid(2) == (50, 3) and ctx.best_ask(2) == (52, 1)
    assert ctx.mid(2) == 51.0
    assert ctx.microprice(2) == pytest.approx((50 * 1 + 52 * 3) / 4)
    # L2 from a snapshot then deltas
    host.on_market_data(BookSnapshot(1, [100, 99], [4, 5], [101, 102], [6, 7], 2, 2), 2)
    assert ctx.best_bid(1) == (100, 4) and ctx.best_ask(1) == (101, 6)
    host.on_market_data(BookDelta(1, Side.SELL, 101, 0, 3, 3), 3)
    assert ctx.best_ask(1) == (102, 7)
    assert ctx.book(1) is host.books[1]


def test_exec_events_routed_to_owner_and_update_positions():
    host = StrategyHost([Recorder, Recorder], INS)
    c1, c2 = host.context(1), host.context(2)
    o1 = c1.buy(1, 5, 100)
    c1.take_intents()
    it = IntentNew(o1, 1, 1, Side.BUY, OrderType.LIMIT, TimeInForce.GTC, 100, 5, 10, 10)
    host.on_exec_event(accept(it, 11), 11)
    assert c1.open_orders[o1].accepted
    host.on_exec_event(fill(it, 2, 3, 12), 12)
    host.on_exec_event(fill(it, 3, 0, 13, fid=2), 13)
    assert c1.position(1) == 5 and c2.position(1) == 0
    assert o1 not in c1.open_orders
    assert host.strategy(1).calls[-3:] == [
        ("order_event", "OrderAccepted"),
        ("fill", 2),
        ("fill", 3),
    ]
    assert ("fill", 2) not in host.strategy(2).calls
    # an id owned by nobody is counted, not crashed on
    host.on_exec_event(OrderCanceled((77 << 32) | 1, 1, 0, "x", 0, 1, 1), 14)
    assert host.unrouted == 1


def test_replaced_and_rejected_update_open_orders():
    host = StrategyHost([Recorder], INS)
    ctx = host.context(1)
    a = ctx.buy(1, 5, 100)
    b = ctx.sell(1, 5, 110)
    ctx.take_intents()
    ctx.replace(a, 101, 4)
    host.on_exec_event(OrderReplaced(a, 1, 101, 4, 0, 5, 5), 5)
    assert (ctx.open_orders[a].px, ctx.open_orders[a].leaves_qty) == (101, 4)
    assert not ctx.open_orders[a].pending_replace
    ctx.replace(b, 111, 5)
    ctx.cancel(a)
    stp = ReplaceRejectReason.SELF_TRADE
    host.on_exec_event(OrderReplaceRejected(b, 1, stp, "self-trade prevention", 0, 6, 6), 6)
    assert not ctx.open_orders[b].pending_replace and ctx.open_orders[b].px == 110
    assert ctx.open_orders[a].pending_cancel  # a refused replace says nothing of the cancel
    host.on_exec_event(OrderCancelRejected(a, 1, CancelRejectReason.REFUSED, "busy", 0, 6, 6), 6)
    assert not ctx.open_orders[a].pending_cancel and a in ctx.open_orders
    calls = host.strategy(1).calls[-2:]
    assert calls == [
        ("order_event", "OrderReplaceRejected"),
        ("order_event", "OrderCancelRejected"),
    ]
    host.on_exec_event(OrderRejected(b, 1, "risk: max position", 0, 6, 6), 6)
    assert b not in ctx.open_orders


def test_forecast_intents_carry_the_forecast_origin():
    host = StrategyHost([Recorder], INS)
    out = host.on_market_data(Forecast(1, "v1", ts_origin=111, ts_recv=222, point=[0.1]), 333)
    assert len(out) == 1 and out[0].ts_origin == 111 and out[0].ts_created == 333


def test_stop_calls_on_stop_then_cancels_every_open_order():
    host = StrategyHost([{"strategy": Recorder, "params": {"buy_on_quote": True}}, Recorder], INS)
    host.on_market_data(quote(1, 100, 101, 1), 1)
    host.on_market_data(quote(2, 100, 101, 2), 2)
    ids = set(host.open_orders())
    assert len(ids) == 2
    out = host.stop(10)
    assert all(isinstance(i, IntentCancel) and i.ts_created == 10 for i in out)
    assert {i.client_order_id for i in out} == ids
    assert host.strategy(1).calls[-1] == ("stop",)
    assert host.stop(11) == []


def test_failing_strategy_is_disabled_and_its_orders_canceled():
    host = StrategyHost([Exploder, {"strategy": Recorder, "params": {"buy_on_quote": True}}], INS)
    out1 = host.on_market_data(quote(1, 100, 101, 1), 1)
    assert len(out1) == 2
    first = out1[0].client_order_id
    out2 = host.on_market_data(quote(1, 100, 101, 2), 2)
    # the exploder's half-made order is dropped, its live one canceled; the other goes on
    cancels = [i for i in out2 if isinstance(i, IntentCancel)]
    news = [i for i in out2 if isinstance(i, IntentNew)]
    assert [c.client_order_id for c in cancels] == [first]
    assert len(news) == 1 and news[0].strategy_id == 2
    assert len(host.errors) == 1 and "boom" in host.errors[0][2]
    assert len(host.context(1).open_orders) == 1  # the canceled-but-unconfirmed one
    out3 = host.on_market_data(quote(1, 100, 101, 3), 3)
    assert all(i.strategy_id == 2 for i in out3)

    strict = StrategyHost([Exploder], INS, on_error="raise")
    strict.on_market_data(quote(1, 100, 101, 1), 1)
    with pytest.raises(RuntimeError):
        strict.on_market_data(quote(1, 100, 101, 2), 2)


def test_bad_specs_rejected():
    with pytest.raises(ValueError):
        StrategyHost([{"params": {}}], INS)
    with pytest.raises(ValueError, match="no.such"):
        StrategyHost(["no.such:Thing"], INS)
    with pytest.raises(ValueError, match="duplicate strategy_id"):
        StrategyHost(
            [StrategySpec(Recorder, strategy_id=3), StrategySpec(Recorder, strategy_id=3)], INS
        )
    with pytest.raises(ValueError, match="ZZZ"):
        StrategyHost([StrategySpec(Recorder, instruments=["ZZZ"])], INS)


# --- MarketMaker ---------------------------------------------------------------------------


def mm_host(**params) -> StrategyHost:
    spec = StrategySpec(MarketMaker, {"use_microprice": False, **params}, instruments=[1])
    return StrategyHost([spec], INS, on_error="raise")


def ack_all(host: StrategyHost, intents, ts: int) -> None:
    for it in intents:
        if isinstance(it, IntentNew):
            host.on_exec_event(accept(it, ts), ts)
        elif isinstance(it, IntentReplace):
            host.on_exec_event(
                OrderReplaced(
                    it.client_order_id, it.instrument_id, it.new_px, it.new_qty, 0, ts, ts
                ),
                ts,
            )


def test_market_maker_quotes_both_sides_around_mid():
    host = mm_host(half_spread_ticks=3, size=2)
    out = host.on_market_data(quote(1, 1000, 1002, 1), 1)  # mid 1001
    bid = next(i for i in out if i.side == Side.BUY)
    ask = next(i for i in out if i.side == Side.SELL)
    assert (bid.px, bid.qty, ask.px, ask.qty) == (998, 2, 1004, 2)
    assert bid.order_type == OrderType.LIMIT and bid.tif == TimeInForce.GTC
    # the same market again: nothing to do
    ack_all(host, out, 2)
    assert host.on_market_data(quote(1, 1000, 1002, 3), 3) == []


def test_market_maker_never_crosses_the_market():
    host = mm_host(half_spread_ticks=0)
    out = host.on_market_data(quote(1, 1000, 1001, 1), 1)
    px = {i.side: i.px for i in out}
    assert px[Side.BUY] <= 1000 and px[Side.SELL] >= 1001


def test_market_maker_requotes_only_when_fair_moves_enough():
    host = mm_host(half_spread_ticks=2, requote_ticks=3)
    out = host.on_market_data(quote(1, 1000, 1002, 1), 1)
    ack_all(host, out, 1)
    assert host.on_market_data(quote(1, 1002, 1004, 2), 2) == []  # moved 2 < 3
    out = host.on_market_data(quote(1, 1003, 1005, 3), 3)  # moved 3
    assert sorted(type(i).__name__ for i in out) == ["IntentReplace", "IntentReplace"]
    assert {i.new_px for i in out} == {1002, 1006}


def test_market_maker_waits_for_ack_before_replacing():
    host = mm_host(half_spread_ticks=1, requote_ticks=1)
    host.on_market_data(quote(1, 1000, 1002, 1), 1)  # not acknowledged yet
    assert host.on_market_data(quote(1, 1010, 1012, 2), 2) == []


def test_market_maker_inventory_skew_and_max_inventory():
    host = mm_host(half_spread_ticks=2, size=1, skew_ticks_per_lot=1.0, max_inventory=2)
    out = host.on_market_data(quote(1, 1000, 1002, 1), 1)
    ack_all(host, out, 1)
    bid = next(i for i in out if i.side == Side.BUY)
    # long 1: the fill re-quotes at once, both sides one tick lower
    out = host.on_exec_event(fill(bid, 1, 0, 2), 2)
    new_bid = next(i for i in out if isinstance(i, IntentNew) and i.side == Side.BUY)
    rep_ask = next(i for i in out if isinstance(i, IntentReplace))
    assert new_bid.px == 998 and rep_ask.new_px == 1002
    ack_all(host, out, 3)
    out = host.on_exec_event(fill(new_bid, 1, 0, 4), 4)  # long 2 = max: no bid any more
    out += host.on_market_data(quote(1, 1000, 1002, 5), 5)
    assert not any(isinstance(i, IntentNew) and i.side == Side.BUY for i in out)
    assert host.context(1).position(1) == 2
    assert not host.context(1).orders_for(1, Side.BUY)


def test_market_maker_cancels_side_when_over_inventory():
    host = mm_host(half_spread_ticks=2, max_inventory=1)
    out = host.on_market_data(quote(1, 1000, 1002, 1), 1)
    ack_all(host, out, 1)
    ask = next(i for i in out if i.side == Side.SELL)
    bid = next(i for i in out if i.side == Side.BUY)
    host.on_exec_event(fill(ask, 1, 0, 2, fid=9), 2)  # short 1 = -max
    # the fill re-quotes: the ask side is not replaced, and a resting bid is kept
    ctx = host.context(1)
    assert ctx.position(1) == -1
    assert (
        not ctx.orders_for(1, Side.SELL)
        and ctx.orders_for(1, Side.BUY)[0].client_order_id == bid.client_order_id
    )


# --- MomentumTaker -------------------------------------------------------------------------


def trend_quotes(n: int = 400, seed: int = 7) -> list[Quote]:
    """A random walk with a slow up-then-down drift: crossings in both directions."""
    rng = random.Random(seed)
    mid, out = 10_000.0, []
    for k in range(n):
        mid += (2.0 if k < n // 2 else -2.0) * math.sin(k / 25.0) ** 2 + rng.gauss(0, 3)
        b = int(mid)
        out.append(quote(1, b, b + 2, ts=1_000 * (k + 1)))
    return out


def run_momentum(quotes: list[Quote], fill_delay: int | None, params: dict) -> list:
    """Feed quotes; when ``fill_delay`` is set, fill each order that many ticks later."""
    host = StrategyHost(
        [StrategySpec(MomentumTaker, params, instruments=[1])], INS, on_error="raise"
    )
    pending: list[tuple[int, IntentNew]] = []
    intents: list = []
    for k, q in enumerate(quotes):
        if fill_delay is not None:
            due = [p for p in pending if p[0] <= k]
            pending = [p for p in pending if p[0] > k]
            for _, it in due:
                host.on_exec_event(accept(it, q.ts_recv), q.ts_recv)
                host.on_exec_event(fill(it, it.qty, 0, q.ts_recv, px=q.ask_px), q.ts_recv)
        new = host.on_market_data(q, q.ts_recv)
        intents += new
        pending += [(k + (fill_delay or 0), it) for it in new]
    return intents


@pytest.mark.parametrize("order", ["ioc", "market"])
def test_momentum_same_market_data_same_intents_whatever_latency(order):
    params = {"fast": 5, "slow": 20, "size": 3, "order": order}
    qs = trend_quotes()
    base = run_momentum(qs, None, params)
    assert len(base) >= 2
    for delay in (0, 1, 7, 50):
        assert run_momentum(qs, delay, params) == base


def test_momentum_goes_long_then_reverses_short():
    qs = trend_quotes()
    out = run_momentum(qs, None, {"fast": 5, "slow": 20, "size": 3, "slippage_ticks": 1})
    first = out[0]
    assert first.qty == 3 and first.tif == TimeInForce.IOC and first.order_type == OrderType.LIMIT
    # subsequent orders flip the full target: 2 x size
    assert all(i.qty == 6 for i in out[1:])
    assert all(a.side != b.side for a, b in zip(out, out[1:], strict=False))
    by_ts = {q.ts_recv: q for q in qs}
    for i in out:  # marketable: through the opposite best by the slippage
        q = by_ts[i.ts_origin]
        assert i.px == (q.ask_px + 1 if i.side == Side.BUY else q.bid_px - 1)
    host = StrategyHost(
        [StrategySpec(MomentumTaker, {"fast": 5, "slow": 20}, instruments=[1])], INS
    )
    for q in qs:
        host.on_market_data(q, q.ts_recv)
    target = host.strategy(1).target(1)
    assert target == (1 if out[-1].side == Side.BUY else -1)


def test_momentum_sized_in_notional_long_only():
    """A real venue's default strategy: sized in the quote currency (its lot is 0.00001 BTC),
    flat instead of short when the market falls."""
    qs = trend_quotes()
    params = {"fast": 5, "slow": 20, "notional": 750.0, "long_only": True}
    # nothing filled: nothing to sell (selling the target's size would go short)
    assert all(i.side == Side.BUY for i in run_momentum(qs, None, params))
    out = run_momentum(qs, 0, params)  # every order filled on the next quote
    per_lot = INS[0].notional((qs[0].bid_px + qs[0].ask_px) // 2, 1)
    lots = math.ceil(750.0 / per_lot)
    assert lots > 1 and out and all(i.qty == lots for i in out)  # at the first mid, whole lots
    assert [i.side for i in out[:2]] == [Side.BUY, Side.SELL]  # long, then flat (not short)
    assert sum(i.qty if i.side == Side.BUY else -i.qty for i in out) in (0, lots)
    with pytest.raises(ValueError):
        StrategyHost([StrategySpec(MomentumTaker, {"notional": -1.0})], INS)


def test_momentum_warmup_and_param_validation():
    qs = trend_quotes(30)
    assert run_momentum(qs, None, {"fast": 5, "slow": 20, "warmup": 30}) == []
    with pytest.raises(ValueError):
        StrategyHost([StrategySpec(MomentumTaker, {"fast": 20, "slow": 5})], INS)
    with pytest.raises(ValueError):
        StrategyHost([StrategySpec(MomentumTaker, {"order": "twap"})], INS)
