"""The staleness guard (issue 11, item 4): risk refuses intents built on old data, exec refuses
new orders that waited too long, the strategy process skips a market-data backlog."""

from __future__ import annotations

import pytest

from engine.backtest import InlineRuntime
from engine.exec_engine import ExecEngine, ExecPolicy
from engine.instruments import Instrument
from engine.messages import (
    BookDelta,
    CancelOrder,
    IntentCancel,
    IntentNew,
    IntentReplace,
    NewOrder,
    OrderAccepted,
    OrderRejected,
    OrderType,
    Quote,
    ReplaceOrder,
    RiskEvent,
    Side,
    TimeInForce,
    Trade,
)
from engine.risk import RiskGate, RiskLimits
from engine.strategies.base import Strategy
from engine.strategy_host import StrategyHost
from procs.backlog import BacklogGuard
from tests.test_exec_engine import FakeVenue

MS = 1_000_000
NOW = 10_000 * MS  # a monotonic clock reading
INS = [Instrument(instrument_id=1, symbol="AAA"), Instrument(instrument_id=2, symbol="BBB")]


def gate(max_age_ms: int = 1000) -> RiskGate:
    g = RiskGate(
        RiskLimits.off(
            max_order_notional=1e9,
            max_position_lots=10_000,
            max_open_orders=100,
            max_intent_age_ms=max_age_ms,
        ),
        INS,
    )
    g.on_market_data(Quote(1, 99, 10, 101, 10, 0, 0))
    return g


def new(coid: int, ts_origin: int) -> IntentNew:
    return IntentNew(
        coid, 1, 1, int(Side.BUY), int(OrderType.LIMIT), int(TimeInForce.GTC), 100, 5, ts_origin, 0
    )


# --- risk ----------------------------------------------------------------------------------------


def test_risk_refuses_an_intent_older_than_the_limit_with_its_reason() -> None:
    g = gate()
    out = g.on_intent(new(1, NOW - 1500 * MS), NOW)
    ev = next(o for o in out if isinstance(o, RiskEvent))
    rej = next(o for o in out if isinstance(o, OrderRejected))
    assert not any(isinstance(o, NewOrder) for o in out)
    assert ev.reason == "stale_intent" and ev.value == pytest.approx(1500.0) and ev.limit == 1000
    assert rej.reason == "risk: stale_intent" and rej.client_order_id == 1
    assert g.stale_rejected == 1 and g.rejected == 1 and not g.open_orders


def test_risk_passes_a_fresh_intent_and_one_at_the_limit() -> None:
    g = gate()
    assert isinstance(g.on_intent(new(1, NOW - 5 * MS), NOW)[0], NewOrder)
    assert isinstance(g.on_intent(new(2, NOW - 1000 * MS), NOW)[0], NewOrder)
    assert g.stale_rejected == 0


def test_risk_refuses_data_from_the_future_another_clock() -> None:
    out = gate().on_intent(new(1, NOW + 5000 * MS), NOW)
    assert next(o for o in out if isinstance(o, RiskEvent)).reason == "ts_origin_in_future"


def test_risk_never_refuses_a_cancel_for_age() -> None:
    g = gate()
    assert isinstance(g.on_intent(new(1, NOW), NOW)[0], NewOrder)
    later = NOW + 60_000 * MS
    out = g.on_intent(IntentCancel(1, 1, 1, NOW - 30_000 * MS, later), later)
    assert len(out) == 1 and isinstance(out[0], CancelOrder) and g.stale_rejected == 0


def test_a_stale_replace_cancels_the_order_instead() -> None:
    """A replace built on old data (price or size) is refused; the order it would have moved
    rests on even older data, so it is canceled: the strategy sees an ordinary cancel."""
    g = gate()
    g.on_intent(new(1, NOW), NOW)
    later = NOW + 5000 * MS
    out = g.on_intent(IntentReplace(1, 1, 1, 100, 5, NOW, later), later)
    assert not any(isinstance(o, ReplaceOrder | OrderRejected) for o in out)
    assert next(o for o in out if isinstance(o, RiskEvent)).reason == "stale_intent"
    assert [o.client_order_id for o in out if isinstance(o, CancelOrder)] == [1]
    fresh = g.on_intent(IntentReplace(1, 1, 1, 100, 6, later - MS, later), later)
    assert isinstance(fresh[0], ReplaceOrder)


def test_risk_age_limit_zero_is_off() -> None:
    assert isinstance(gate(0).on_intent(new(1, 1), NOW)[0], NewOrder)


# --- exec ----------------------------------------------------------------------------------------


def order(coid: int, ts_origin: int) -> NewOrder:
    return NewOrder(
        coid, 1, 1, int(Side.BUY), int(OrderType.LIMIT), int(TimeInForce.GTC), 100, 5, ts_origin, 0
    )


def test_exec_refuses_a_new_order_that_waited_past_the_limit() -> None:
    venue = FakeVenue()
    ex = ExecEngine(venue, INS[:1], ExecPolicy(), algo_engine=None, max_order_age_ns=1000 * MS)
    out = ex.on_order(order(7, NOW - 3000 * MS), NOW)
    assert venue.submitted == [] and ex.stale_rejects == 1
    (rej,) = out
    assert isinstance(rej, OrderRejected) and rej.client_order_id == 7
    assert rej.reason.startswith("exec: stale_order")
    # a fresh one goes out; the stale one's resend is a duplicate, never a second reject
    assert isinstance(ex.on_order(order(8, NOW - 10 * MS), NOW)[0], OrderAccepted)
    assert ex.on_order(order(7, NOW - 3000 * MS), NOW) == [] and ex.stale_rejects == 1
    # a cancel is never refused for age
    ex.on_order(CancelOrder(8, 1, 1, NOW - 9000 * MS, NOW), NOW + 9000 * MS)
    assert [c.client_order_id for c in venue.cancels] == [8]


def test_exec_resend_of_a_live_order_is_not_rejected_as_stale() -> None:
    venue = FakeVenue()
    ex = ExecEngine(venue, INS[:1], ExecPolicy(), algo_engine=None, max_order_age_ns=1000 * MS)
    ex.on_order(order(7, NOW), NOW)
    later = NOW + 5000 * MS
    assert ex.on_order(order(7, NOW), later) == [] and ex.duplicates == 1
    assert ex.stale_rejects == 0 and ex.table.get(7).is_open


# --- the strategy host's backlog ------------------------------------------------------------------


class Recorder(Strategy):
    def __init__(self, ctx, params) -> None:
        super().__init__(ctx, params)
        self.seen: list[tuple[str, int]] = []

    def on_quote(self, q: Quote) -> None:
        self.seen.append(("quote", q.bid_px))

    def on_book(self, instrument_id: int) -> None:
        self.seen.append(("book", instrument_id))

    def on_trade(self, t: Trade) -> None:
        self.seen.append(("trade", t.px))


class ListRing:
    def __init__(self, msgs: list[object]) -> None:
        self.msgs = list(msgs)

    def poll_batch(self, n: int) -> list[object]:
        out, self.msgs = self.msgs[:n], self.msgs[n:]
        return out


def backlog(n: int, t0: int) -> list[object]:
    """``n`` ticks per instrument, 1 ms apart from ``t0``: quotes, book deltas, a few trades."""
    out: list[object] = []
    for k in range(n):
        ts = t0 + k * MS
        for iid in (1, 2):
            out.append(Quote(iid, 100 + k, 10, 102 + k, 10, ts, ts))
            out.append(BookDelta(iid, int(Side.BUY), 100 + k, 10 + k % 3, ts, ts))
            if k % 10 == 0:
                out.append(Trade(iid, 101 + k, 1, 1, ts, ts))
    return out


def test_backlog_is_absorbed_and_only_the_newest_state_is_dispatched() -> None:
    msgs = backlog(1000, NOW - 3000 * MS)  # 3 s of ticks, the newest 2 s old
    host = StrategyHost([Recorder], INS, on_error="raise")
    ref = StrategyHost([Recorder], INS, on_error="raise")
    for m in msgs:
        ref.on_market_data(m, NOW)  # the books as if every tick had been handed over
    guard = BacklogGuard(250)
    ring = ListRing(msgs)
    batch, absorbed = guard.check(ring.poll_batch(256), ring, host, NOW)
    assert absorbed and ring.msgs == []
    for m in batch:
        host.dispatch(m, NOW)
    # the newest trade, quote and book update of each instrument, in ring order
    assert host.strategy(1).seen == [
        ("trade", 1091),
        ("trade", 1091),
        ("quote", 1099),
        ("book", 1),
        ("quote", 1099),
        ("book", 2),
    ]
    assert guard.skipped == len(msgs) - 6 and guard.episodes == 1
    for iid in (1, 2):
        assert host.books[iid].best_bid() == ref.books[iid].best_bid()
        assert host.quotes[iid] == ref.quotes[iid]
    # fresh ticks again: handed over one by one, the episode ends
    fresh = [Quote(1, 500, 1, 502, 1, NOW, NOW)]
    batch, absorbed = guard.check(fresh, ListRing([]), host, NOW + MS)
    assert batch == fresh and not absorbed and not guard.behind_now


def test_no_backlog_no_skip_and_zero_is_off() -> None:
    host = StrategyHost([Recorder], INS, on_error="raise")
    msgs = backlog(10, NOW - 20 * MS)
    assert BacklogGuard(250).check(msgs, ListRing([]), host, NOW) == (msgs, False)
    old = backlog(10, NOW - 9000 * MS)
    assert BacklogGuard(0).check(old, ListRing([]), host, NOW) == (old, False)


# --- the inline backtest: the age check runs on its simulated clock -----------------------------


def test_backtest_judges_age_on_the_simulated_clock() -> None:
    """Ticks an hour apart in simulated time: every intent is judged by ``now − ts_origin`` on
    that clock (a few µs of hop latency), never by the wall clock, so nothing is stale."""
    from engine.venues.sim import SimExchange

    ins = INS[:1]
    hour = 3600 * 1_000_000_000
    src = [Quote(1, 99 + k % 2, 10, 101 + k % 2, 10, (k + 1) * hour, 0) for k in range(50)]

    class Quoter(Strategy):
        def on_quote(self, q: Quote) -> None:
            self.ctx.cancel_all()
            self.ctx.buy(q.instrument_id, 1, q.bid_px)

    limits = RiskLimits.off(
        max_order_notional=1e9, max_position_lots=1000, max_open_orders=100,
        max_intent_age_ms=1000.0,
    )  # fmt: skip
    runs = [
        InlineRuntime(
            ins, [Quoter], limits, SimExchange(ins), list(src), hop_latency_ns=5_000
        ).run()
        for _ in range(2)
    ]
    assert runs[0]["new_orders"] == 50 and runs[0]["risk_rejects"] == 0
    assert runs[0]["orders_sent"] == runs[1]["orders_sent"]


# --- a restarted strategy starts from its position; the market maker counts its open orders ------


def fill(coid: int, iid: int, side: int, qty: int, ts_recv: int, leaves: int = 0):  # type: ignore[no-untyped-def]
    from engine.messages import OrderPartiallyFilled

    return OrderPartiallyFilled(coid, 0, iid, side, 100, qty, qty, leaves, 0.0, 1, 1, 0, 0, ts_recv)


def test_restarted_host_seeds_positions_and_never_counts_a_fill_twice() -> None:
    """Exec's table holds every fill up to the read; the events ring delivers again the ones
    the dead incarnation had not read: they are not counted twice, newer ones are."""
    host = StrategyHost(
        [
            {"strategy": Recorder, "instruments": ["AAA"]},
            {"strategy": Recorder, "instruments": ["BBB"]},
            {"strategy": Recorder, "instruments": ["BBB"]},
        ],
        INS,
        on_error="raise",
    )
    assert host.seed_positions({1: -20, 2: 7}, NOW) == [2]  # BBB: whose is it? not seeded
    ctx = host.context(1)
    assert ctx.position(1) == -20 and host.context(2).position(2) == 0
    sid = 1 << 32
    host.on_exec_event(fill(sid | 5, 1, int(Side.SELL), 10, NOW - MS), NOW)  # in the table
    assert ctx.position(1) == -20
    host.on_exec_event(fill(sid | 6, 1, int(Side.SELL), 10, NOW + MS), NOW + MS)  # after it
    assert ctx.position(1) == -30


def test_market_maker_inventory_counts_its_other_open_orders() -> None:
    """The worst case is position + every open order on that side + the quote: an ask is not
    quoted when an order already open on that side would let the two together pass the cap."""
    from engine.strategies.market_maker import MarketMaker

    params = {"size": 10, "max_inventory": 20, "half_spread_ticks": 1}
    host = StrategyHost([{"strategy": MarketMaker, "params": params}], INS[:1], on_error="raise")
    ctx = host.context(1)
    ctx.positions[1] = -5
    ctx.sell(1, 10, 200)  # an order of ours already resting on the sell side
    ctx.take_intents()
    out = host.on_market_data(Quote(1, 99, 10, 101, 10, NOW, NOW), NOW)
    sides = [o.side for o in out if isinstance(o, IntentNew)]
    assert sides == [int(Side.BUY)]  # -5 - 10 - 10 = -25 would pass -20: no new ask


def test_run_summary_counts_risk_refusals_by_reason() -> None:
    from engine.messages import RiskEventKind
    from ops.config import load_config
    from ops.report import RunRecord, format_rejects
    from tests.conftest import ROOT

    rec = RunRecord(load_config(ROOT / "config.toml"))
    for reason in ("stale_intent", "stale_intent", "instrument halted: venue"):
        rec.on_risk(RiskEvent(int(RiskEventKind.ORDER_REJECTED), 1, 1, reason, 1.0, 1.0, 0, 0))
    assert rec.risk_rejects_by_reason == {"stale_intent": 2, "instrument halted": 1}
    line = format_rejects({"risk_rejects_by_reason": rec.risk_rejects_by_reason})
    assert line == ["  risk refusals by reason: stale_intent 2, instrument halted 1"]


def test_config_keys_of_the_guard(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from ops.config import ConfigError, load_config
    from tests.conftest import ROOT

    text = (ROOT / "config.toml").read_text()
    c = load_config(ROOT / "config.toml")
    assert c.risk.max_intent_age_ms == 1000 and c.processes.strategy.max_backlog_ms == 250
    for old, new, key in (
        ("max_intent_age_ms = 1000.0", "max_intent_age_ms = -1.0", "risk.max_intent_age_ms"),
        ("max_backlog_ms = 250.0", "max_backlog_ms = -5.0", "max_backlog_ms"),
        ("[processes.risk]\n", "[processes.risk]\nmax_backlog_ms = 10.0\n", "max_backlog_ms"),
    ):
        p = tmp_path / "c.toml"
        assert old in text
        p.write_text(text.replace(old, new, 1))
        with pytest.raises(ConfigError, match=key):
            load_config(p)


def test_restarted_host_cancels_the_dead_incarnations_orders_when_they_show_up() -> None:
    """A previous incarnation's quotes rest at the venue unknown to the restarted strategy: the
    first event showing one open is answered with a cancel (once); a finished one is left."""
    host = StrategyHost([Recorder], INS, on_error="raise")
    host.cancel_orphans(1 << 24)
    old = (1 << 32) | 17  # strategy 1, counter 17: the first incarnation's
    ack = OrderAccepted(old, 9, 1, int(Side.SELL), 100, 10, NOW - MS, NOW, NOW)
    (c,) = host.on_exec_event(ack, NOW)
    assert isinstance(c, IntentCancel) and c.client_order_id == old and c.ts_origin == NOW
    partial = fill(old, 1, int(Side.SELL), 3, NOW + MS, leaves=7)
    assert host.on_exec_event(partial, NOW) == []  # asked once
    other = (1 << 32) | 18
    from engine.messages import OrderFilled

    done = OrderFilled(other, 0, 1, int(Side.SELL), 100, 10, 0, 0, 0.0, 1, 1, 0, 0, NOW)
    assert host.on_exec_event(done, NOW) == [] and host.context(1).position(1) == -13


def test_backlog_episodes_are_logged_at_most_once_per_interval(caplog) -> None:  # type: ignore[no-untyped-def]
    host = StrategyHost([Recorder], INS, on_error="raise")
    guard = BacklogGuard(250)
    with caplog.at_level("WARNING", logger="gekko.strategy"):
        for k in range(3):  # three stalls within a second: three episodes, one logged
            now = NOW + k * 300 * MS
            guard.check(backlog(5, now - 2000 * MS), ListRing([]), host, now)
            guard.check([Quote(1, 500, 1, 502, 1, now, now)], ListRing([]), host, now)
        later = NOW + 10_000 * MS
        guard.check(backlog(5, later - 2000 * MS), ListRing([]), host, later)
    behind = [r.getMessage() for r in caplog.records if "behind the market" in r.getMessage()]
    assert guard.episodes == 4 and len(behind) == 2
    assert "(2 more episodes since the last line)" in behind[1]
    assert sum("caught up" in r.getMessage() for r in caplog.records) == 1


def test_old_forecasts_are_skipped_to_each_instruments_newest() -> None:
    from engine.messages import Forecast

    def fc(iid: int, origin: int) -> Forecast:
        return Forecast(iid, "v1", origin, origin, [0.0])

    guard = BacklogGuard(250)
    old = [fc(1, NOW - 900 * MS), fc(2, NOW - 800 * MS), fc(1, NOW - 700 * MS)]
    assert guard.newest_forecasts(old, NOW) == old[1:] and guard.skipped == 1
    fresh = [fc(1, NOW - 10 * MS), fc(1, NOW - 5 * MS)]
    assert guard.newest_forecasts(fresh, NOW) == fresh and guard.skipped == 1
