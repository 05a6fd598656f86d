"""The simulated exchange's own trading status: halts, its circuit breaker, and who obeys them.

Unit tests of the rules that decide the status (``engine.sources.halts``) and of the simulated
exchange obeying it (refuses orders, does not match, resumes); the ``[sim]`` config keys; and a
backtest through the inline runtime where a scheduled halt stops one instrument's orders only.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from engine.backtest import InlineRuntime
from engine.instruments import Instrument, InstrumentTable
from engine.messages import (
    BookSnapshot,
    CancelOrder,
    ExchangeStatus,
    ExchangeStatusKind,
    NewOrder,
    OrderAccepted,
    OrderCanceled,
    OrderFilled,
    OrderRejected,
    OrderReplaceRejected,
    OrderType,
    Quote,
    ReplaceOrder,
    ReplaceRejectReason,
    RiskEventKind,
    TimeInForce,
    Trade,
)
from engine.sources.halts import VENUE_WIDE, ExchangeRules, ScheduledHalt, with_exchange_status
from engine.venues.sim import SimExchange
from ops.config import ConfigError, parse_config
from procs.build import (
    build_exchange_rules,
    build_market,
    build_venue,
)

A, B = 1, 2
TABLE = InstrumentTable(
    [
        Instrument(instrument_id=A, symbol="AAA", tick_size=0.01, lot_size=1.0),
        Instrument(instrument_id=B, symbol="BBB", tick_size=0.01, lot_size=1.0),
    ]
)
OPEN = ExchangeStatusKind.OPEN
HALTED = ExchangeStatusKind.HALTED
BREAKER = ExchangeStatusKind.CIRCUIT_BREAKER
S = 1_000_000_000


def order(coid: int, side: int, px: int, qty: int = 5, iid: int = A) -> NewOrder:
    return NewOrder(
        client_order_id=coid,
        strategy_id=1,
        instrument_id=iid,
        side=side,
        order_type=OrderType.LIMIT,
        tif=TimeInForce.GTC,
        px=px,
        qty=qty,
        ts_origin=coid,
        ts_approved=0,
    )


def status(iid: int, kind: int, t: int, reason: str = "news pending") -> ExchangeStatus:
    return ExchangeStatus(iid, int(kind), reason, t, t)


def book(iid: int, bid: int, ask: int, t: int = 1, qty: int = 10) -> BookSnapshot:
    return BookSnapshot(iid, [bid], [qty], [ask], [qty], t, t)


def venue(**kw) -> SimExchange:
    v = SimExchange(TABLE, **kw)
    v.on_market_data(book(A, 99, 101), 1)
    v.on_market_data(book(B, 49, 51), 1)
    return v


# --- the simulated exchange obeys its status -------------------------------------------------------
def test_halted_instrument_refuses_new_orders_and_replaces_with_the_reason() -> None:
    v = venue()
    [ack] = v.submit(order(1, 1, 98), 2)  # rests before the halt
    assert isinstance(ack, OrderAccepted)
    assert v.on_market_data(status(A, HALTED, 3), 3) == []
    assert v.halted(A) == "trading halted: venue halt (news pending)"
    assert v.halted(B) == ""
    [rej] = v.submit(order(2, 1, 98), 4)
    assert isinstance(rej, OrderRejected)
    assert rej.reason == "trading halted: venue halt (news pending)"
    [rep] = v.replace(ReplaceOrder(1, 1, A, 97, 5, 5, 0), 5)
    assert isinstance(rep, OrderReplaceRejected) and rep.reason == ReplaceRejectReason.HALTED
    assert rep.detail.startswith("trading halted")
    # the other instrument trades on; cancels of the halted one still work
    [ok] = v.submit(order(3, 1, 48, iid=B), 6)
    assert isinstance(ok, OrderAccepted)
    [cxl] = v.cancel(CancelOrder(1, 1, A, 7, 0), 7)
    assert isinstance(cxl, OrderCanceled)
    assert v.halt_rejects == 2


def test_halted_instrument_does_not_match_and_resumes_at_open() -> None:
    v = venue()
    v.submit(order(1, 1, 100), 2)  # a bid at 100, inside the spread: rests
    v.on_market_data(status(A, BREAKER, 3, "limit down"), 3)
    # prints through our price and an ask that reaches it: no fill while halted
    assert v.on_market_data(Trade(A, 99, 50, -1, 4, 4), 4) == []
    assert v.on_market_data(Quote(A, 98, 10, 100, 7, 5, 5), 5) == []
    assert v.open_orders()[0].qty == 5
    assert v.book(A).level(-1, 0) == (100, 7)  # the book still follows the feed
    [rej] = v.submit(order(2, -1, 99), 6)
    assert rej.reason.startswith("trading halted: exchange circuit breaker (limit down)")
    # the reopening: the ask is at our price, so we are crossed at our price
    out = v.on_market_data(status(A, OPEN, 7, ""), 7)
    assert [type(e) for e in out] == [OrderFilled]
    assert (out[0].fill_px, out[0].fill_qty) == (100, 5)
    assert v.halted(A) == ""
    [ok] = v.submit(order(3, -1, 102), 8)
    assert isinstance(ok, OrderAccepted)


def test_venue_wide_halt_and_an_instrument_halt_end_separately() -> None:
    v = venue()
    v.on_market_data(status(A, HALTED, 2, "pending news"), 2)
    v.on_market_data(status(VENUE_WIDE, HALTED, 3, "market-wide"), 3)
    assert v.halted(B) == "trading halted: venue-wide halt (market-wide)"
    assert v.halted(A).startswith("trading halted: venue halt (pending news)")
    v.on_market_data(status(VENUE_WIDE, OPEN, 4, ""), 4)
    assert v.halted(B) == ""
    assert v.halted(A) != ""  # its own halt still holds
    [rej] = v.submit(order(1, 1, 98), 5)
    assert isinstance(rej, OrderRejected)
    v.on_market_data(status(A, OPEN, 6, ""), 6)
    [ok] = v.submit(order(2, 1, 98), 7)
    assert isinstance(ok, OrderAccepted)


def test_bad_statuses_are_ignored_and_counted() -> None:
    v = venue()
    before = v.ignored_market_data
    v.on_market_data(status(99, HALTED, 2), 2)  # unknown instrument
    v.on_market_data(ExchangeStatus(A, 42, "?", 3, 3), 3)  # unknown status
    assert v.ignored_market_data == before + 2
    assert v.halted(A) == ""


def test_a_reloaded_venue_is_still_halted(tmp_path: Path) -> None:
    path = tmp_path / "x.venue"
    v = venue(record_path=path)
    v.submit(order(1, 1, 98), 2)
    v.on_market_data(status(A, HALTED, 3), 3)
    v.close_record()
    again = SimExchange(TABLE, record_path=path)
    again.on_market_data(book(A, 99, 101), 4)
    assert again.reloaded_orders == 1
    assert again.halted(A).startswith("trading halted")
    [rej] = again.submit(order(2, 1, 98), 5)
    assert isinstance(rej, OrderRejected)


# --- the rules that decide the status -----------------------------------------------------------
def q(iid: int, t: int, mid: int) -> Quote:
    return Quote(iid, mid - 1, 10, mid + 1, 10, t, t)


def statuses(out: list[object]) -> list[tuple[int, int, int]]:
    return [(m.instrument_id, m.status, m.ts_event) for m in out if type(m) is ExchangeStatus]


def test_scheduled_halt_starts_and_ends_on_the_market_clock_and_withholds_prints() -> None:
    rules = ExchangeRules([A, B], [ScheduledHalt(A, 2 * S, 3 * S)])
    t0 = 10 * S
    stream = [q(A, t0, 1000)]
    stream += [Trade(iid, 1000, 1, 1, t0 + k * S // 2, 0) for k in range(1, 14) for iid in (A, B)]
    out = list(with_exchange_status(stream, rules))
    assert statuses(out) == [(A, HALTED, t0 + 2 * S), (A, OPEN, t0 + 5 * S)]
    a_prints = [m.ts_event for m in out if type(m) is Trade and m.instrument_id == A]
    assert a_prints and not [t for t in a_prints if t0 + 2 * S <= t < t0 + 5 * S]
    assert len([m for m in out if type(m) is Trade and m.instrument_id == B]) == 13
    assert rules.suppressed_trades == 13 - len(a_prints)
    # statuses come out in time order, before the message that passed their due time
    times = [m.ts_event for m in out]  # type: ignore[attr-defined]
    assert times == sorted(times)


def test_breaker_trips_on_a_fast_move_not_on_a_slow_drift_and_reopens() -> None:
    rules = ExchangeRules([A, B], breaker_pct=5.0, breaker_window_ns=S, breaker_halt_ns=4 * S)
    out: list[object] = []
    # a slow drift: +2 % per second, 20 % in all, never 5 % within a second
    mid = 10_000
    for k in range(10):
        mid = mid * 102 // 100
        out += rules.process(q(A, k * S, mid))
    assert statuses(out) == [] and rules.trips == 0
    # a fast move: -6 % within 0.3 s
    out += rules.process(q(A, 10 * S, mid))
    out += rules.process(q(A, 10 * S + 300_000_000, mid * 94 // 100))
    out += rules.process(q(B, 10 * S + 400_000_000, 500))
    [trip] = [m for m in out if type(m) is ExchangeStatus]
    assert (trip.instrument_id, trip.status) == (A, BREAKER)
    assert trip.reason.startswith("limit down: -6.0")
    assert "within 1s (band 5.00%), halted 4s" in trip.reason
    assert rules.halted(A) and not rules.halted(B)
    out = rules.process(q(B, 15 * S, 500))
    assert statuses(out) == [(A, OPEN, 14 * S + 300_000_000)]


def test_venue_wide_halt_composes_with_an_instrument_halt() -> None:
    rules = ExchangeRules(
        [A, B], [ScheduledHalt(VENUE_WIDE, 1 * S, 2 * S), ScheduledHalt(A, 2 * S, 4 * S)]
    )
    out: list[object] = []
    for k in range(8):
        out += rules.process(q(B, k * S, 500))
    assert statuses(out) == [
        (VENUE_WIDE, HALTED, 1 * S),
        (A, HALTED, 2 * S),
        (VENUE_WIDE, OPEN, 3 * S),
        (A, HALTED, 3 * S),  # announced again: the venue's OPEN does not lift it
        (A, OPEN, 6 * S),
    ]


def test_rules_refuse_bad_settings() -> None:
    with pytest.raises(ValueError):
        ScheduledHalt(A, 0, 0)
    with pytest.raises(ValueError):
        ExchangeRules([A], [ScheduledHalt(7, 0, S)])
    with pytest.raises(ValueError):
        ExchangeRules([A], breaker_pct=-1)


# --- config --------------------------------------------------------------------------------------
CFG = Path(__file__).resolve().parent.parent / "config.toml"


def _cfg(extra_sim: str) -> str:
    """The shipped config with ``key = value`` lines replacing those keys' lines in ``[sim]``."""
    return sim_keys(CFG.read_text(), extra_sim)


def sim_keys(text: str, lines: str) -> str:
    start = text.index("\n[sim]\n")
    for line in filter(None, lines.splitlines()):
        key = line.split("=")[0].strip()
        at = text.index(f"\n{key} = ", start) + 1
        text = text[:at] + line + text[text.index("\n", at) :]
    return text


def test_config_keys_build_the_rules_and_errors_name_the_key() -> None:
    cfg = parse_config(
        _cfg(
            'halts = [{instrument = "AAPL", at_s = 5, duration_s = 3}, '
            '{instrument = "*", at_s = 9, duration_s = 1, reason = "market-wide"}]\n'
            "circuit_breaker_pct = 7.5\ncircuit_breaker_window_s = 2\ncircuit_breaker_halt_s = 30"
        )
    )
    rules = build_exchange_rules(cfg)
    aapl = next(i.instrument_id for i in cfg.instruments if i.symbol == "AAPL")
    assert [(h.instrument_id, h.at_ns, h.duration_ns) for h in rules.halts] == [
        (aapl, 5 * S, 3 * S),
        (VENUE_WIDE, 9 * S, 1 * S),
    ]
    assert (rules.breaker, rules.window_ns, rules.halt_ns) == (0.075, 2 * S, 30 * S)
    assert build_exchange_rules(parse_config(CFG.read_text())) is None  # default: none
    for extra, key in (
        ('halts = [{instrument = "NOPE", at_s = 1, duration_s = 1}]', "sim.halts[0].instrument"),
        ('halts = [{instrument = "AAPL", at_s = -1, duration_s = 1}]', "sim.halts[0].at_s"),
        ('halts = [{instrument = "AAPL", at_s = 1, duration_s = 0}]', "sim.halts[0].duration_s"),
        ('halts = [{instrument = "AAPL", at_s = 1}]', "sim.halts[0]"),
        ("circuit_breaker_pct = -1", "sim.circuit_breaker_pct"),
        ("circuit_breaker_window_s = 0", "sim.circuit_breaker_window_s"),
        ("circuit_breaker_halt_s = 0", "sim.circuit_breaker_halt_s"),
    ):
        with pytest.raises(ConfigError) as err:
            parse_config(_cfg(extra))
        assert err.value.key.startswith(key), (extra, err.value)


# --- a backtest: a scheduled halt stops one instrument's orders only -----------------------------
def test_backtest_scheduled_halt_stops_only_that_instrument_and_trading_resumes() -> None:
    cfg = parse_config(_cfg('halts = [{instrument = "AAPL", at_s = 0.4, duration_s = 0.4}]'))
    ids = {i.symbol: i.instrument_id for i in cfg.instruments}
    aapl, msft = ids["AAPL"], ids["MSFT"]
    instruments = cfg.instrument_table()
    from procs.build import with_exchange_status as wrap

    source = list(itertools.islice(wrap(cfg, build_market(cfg)), 12_000))
    halt = [m for m in source if type(m) is ExchangeStatus]
    assert [(m.instrument_id, m.status) for m in halt] == [(aapl, HALTED), (aapl, OPEN)]
    start, end = halt[0].ts_event, halt[1].ts_event
    assert end - start == 400_000_000
    rt = InlineRuntime(
        instruments,
        cfg.strategy_specs(),
        cfg.risk,
        build_venue(cfg, instruments),
        source,
        exec_policy=cfg.exec,
    )
    s = rt.run()
    news = [o for o in s["orders_sent"] if isinstance(o, NewOrder)]

    def orders(iid: int, lo: int, hi: int) -> list[NewOrder]:
        return [o for o in news if o.instrument_id == iid and lo <= o.ts_origin < hi]

    # no AAPL order leaves risk during the halt (ts_origin is the tick that caused it)...
    assert orders(aapl, start, end) == []
    # ...its intents are refused with the venue's reason, while MSFT trades on...
    halted = [
        e
        for e in rt.risk_events
        if e.kind == RiskEventKind.ORDER_REJECTED
        and e.reason.startswith("instrument halted: venue halted: scheduled halt")
    ]
    assert halted and {e.instrument_id for e in halted} == {aapl}
    assert all(start <= e.ts <= end + 1 for e in halted)
    assert orders(msft, start, end)
    # ...and AAPL trades again after the reopening
    assert orders(aapl, 0, start) and orders(aapl, end, 1 << 62)
    assert not rt.exec.halted


def test_feed_lets_statuses_through_and_drops_malformed_ones() -> None:
    from engine.md_rejects import MdValidator

    check = MdValidator([A, B]).check  # the feed's checks (and the backtest's)
    assert check(status(A, HALTED, 1)) is None
    assert check(status(VENUE_WIDE, OPEN, 1)) is None  # the whole venue
    assert check(status(9, HALTED, 1)) == "unknown_instrument"
    assert check(ExchangeStatus(A, 42, "", 1, 1)) == "bad_status"
