"""The fast replay (engine/replay_fast.py) gives the exact path's orders, fills, positions, P&L
and equity curve on the same data; strategies get only what they subscribed to, in both."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from engine import md_columns as mc
from engine.backtest import InlineRuntime
from engine.book import L2Book
from engine.instruments import Instrument
from engine.messages import (
    BookSnapshot,
    Control,
    ControlCommand,
    Forecast,
    OrderType,
    Quote,
    TimeInForce,
    Trade,
)
from engine.risk import RiskLimits
from engine.sources.synthetic import InstrumentSpec, SyntheticMarket
from engine.strategies.base import Strategy
from engine.strategies.market_maker import MarketMaker
from engine.strategies.momentum import MomentumTaker
from engine.strategy_host import StrategyHost, StrategySpec
from engine.venues.sim import SimExchange

INS = [
    Instrument(instrument_id=1, symbol="AAA", tick_size=0.01),
    Instrument(instrument_id=2, symbol="BBB", tick_size=0.01),
]
LIMITS = RiskLimits.off(max_order_notional=1e9, max_position_lots=200, max_open_orders=50)
T0 = 1_700_000_000_000_000_000
LOBSTER = Path(__file__).resolve().parents[2] / "shared" / "data" / "lobster"


class Rows:
    """A columnar source over fixed rows (and messages before them), in batches of ``size``."""

    def __init__(self, rows: np.ndarray, pre: list[object] | None = None, size: int = 4096):
        self.rows, self.pre, self.size = rows, list(pre or ()), size

    def preamble(self) -> list[object]:
        return list(self.pre)

    def batches(self):
        for i in range(0, len(self.rows), self.size):
            yield self.rows[i : i + self.size]

    def __iter__(self):
        yield from self.pre
        yield from mc.to_messages(self.rows)


def quotes(n: int, seed: int = 1, iids: tuple[int, ...] = (1,)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = mc.empty(n)
    rows["ts_event"] = T0 + np.cumsum(rng.integers(1, 2_000_000, n))
    rows["instrument_id"] = rng.choice(iids, n)
    rows["kind"] = mc.MdKind.QUOTE
    mid = 10_000 + np.cumsum(rng.choice([-1, 0, 0, 1], n))
    rows["bid_px"] = mid
    rows["ask_px"] = mid + 1 + (rng.random(n) < 0.3)
    rows["bid_qty"] = rng.integers(1, 50, n)
    rows["ask_qty"] = rng.integers(1, 50, n)
    rows["seq"] = np.arange(1, n + 1)
    return rows


def synthetic(n: int, seed: int = 3) -> tuple[list[object], np.ndarray]:
    """The synthetic market's L2 stream (snapshots, then deltas, trades and quotes) as rows."""
    specs = [
        InstrumentSpec.from_instrument(i, p, vol=3e-4)
        for i, p in zip(INS, (100.0, 50.0), strict=True)
    ]
    msgs = list(itertools.islice(iter(SyntheticMarket(specs, 0.5, seed=seed)), n))
    pre = [m for m in msgs if isinstance(m, BookSnapshot)]
    assert msgs[: len(pre)] == pre  # the snapshots open the stream
    return pre, mc.from_messages(msgs[len(pre) :])


def venue(latency_ns: int = 50_000) -> SimExchange:
    return SimExchange(
        INS,
        latency_ns=latency_ns,
        jitter_ns=10_000,
        response_latency_ns=latency_ns,
        maker_fee_bps=-0.5,
        taker_fee_bps=2.0,
        seed=1,
    )


def both(make_source, specs, *, latency_ns: int = 50_000, limits=LIMITS, **kw) -> tuple:
    """The same run on the exact and the fast path (an equity point every 20 ms)."""
    kw.setdefault("equity_interval_ns", 20_000_000)
    out = []
    for engine in ("exact", "fast"):
        rt = InlineRuntime(
            INS, specs, limits, venue(latency_ns), make_source(), engine=engine, **kw
        )
        out.append((rt, rt.run()))
    (ex, a), (fa, b) = out
    assert a["replay_engine"] == "exact" and b["replay_engine"] == "fast", b["replay_note"]
    return ex, a, fa, b


def assert_same(ex: InlineRuntime, a: dict, fa: InlineRuntime, b: dict) -> None:
    for k in (
        "orders_sent",
        "ticks",
        "intents",
        "fills",
        "rejects",
        "positions",
        "risk_positions",
        "venue_positions",
        "pnl",
        "pnl_by_strategy",
        "analytics",
        "risk_events",
        "trading_state",
        "open_orders",
        "sim_start_ns",
        "sim_end_ns",
        "tick_to_order_ns",
    ):
        assert a[k] == b[k], k
    assert ex.fill_log == fa.fill_log
    for x, y in zip(ex.portfolio.equity_curve(), fa.portfolio.equity_curve(), strict=True):
        assert np.array_equal(x, y)
    assert ex.venue.ignored_market_data == fa.venue.ignored_market_data
    for iid in (1, 2):  # the venue's and the strategies' books end the same
        assert np.array_equal(ex.venue.book(iid)._buf, fa.venue.book(iid)._buf)
        assert np.array_equal(ex.host.books[iid]._buf, fa.host.books[iid]._buf)
        assert ex.host.quotes.get(iid) == fa.host.quotes.get(iid)
    assert ex.venue.fills == fa.venue.fills
    # risk's own state: equity, peak, marks, exposures, the flash guard's samples
    g, h = ex.risk, fa.risk
    assert (g.equity, g.peak_equity, int(g.state)) == (h.equity, h.peak_equity, int(h.state))
    for name in ("marks", "exposure", "sector_gross", "bid", "ask", "last", "position"):
        assert np.array_equal(getattr(g, name), getattr(h, name)), name
    for name in ("_px", "_ts", "_head", "flash_halted"):
        assert np.array_equal(getattr(g.guard, name), getattr(h.guard, name)), name


def momentum(params: dict, iid: int = 1) -> list[StrategySpec]:
    return [StrategySpec(MomentumTaker, params, instruments=[iid])]


def test_quotes_never_trading_all_rows_fast():
    ex, a, fa, b = both(lambda: Rows(quotes(6_000)), momentum({"threshold_ticks": 1e9}))
    assert_same(ex, a, fa, b)
    assert a["orders"] == 0 and b["ticks"] == 6_000
    assert fa._fast.exact_rows == 1  # the first row starts the strategies; the rest is fast
    assert len(fa.portfolio.equity_curve()[0]) > 100


def test_quotes_trading_heavily():
    # with risk's defaults (breakers, the flash guard): its refreshes are the exact path's
    limits = RiskLimits(max_position_lots=200, max_order_notional=1e9, capital=1e6)
    ex, a, fa, b = both(
        lambda: Rows(quotes(6_000), size=500), momentum({"fast": 3, "slow": 8}), limits=limits
    )
    assert_same(ex, a, fa, b)
    assert a["orders"] > 500 and a["fills"] > 500
    assert fa._fast.fast_rows > 1_000 and fa._fast.exact_rows > 500


def test_two_instruments_market_orders_and_tiny_batches():
    specs = momentum({"fast": 5, "slow": 20, "order": "market", "size": 3}, 1)
    specs.append(StrategySpec(MomentumTaker, {"fast": 4, "slow": 9}, instruments=[2]))
    ex, a, fa, b = both(lambda: Rows(quotes(4_000, 2, (1, 2)), size=7), specs, hop_latency_ns=3_000)
    assert_same(ex, a, fa, b)
    assert a["orders"] > 100


def test_l2_stream_with_resting_orders_and_trades():
    pre, rows = synthetic(8_000)
    specs = [
        StrategySpec(
            MarketMaker,
            {"half_spread_ticks": 2, "size": 3, "max_inventory": 20, "skew_ticks_per_lot": 0.1},
            instruments=[1],
        ),
        StrategySpec(MomentumTaker, {"fast": 20, "slow": 100, "size": 5}, instruments=[2]),
    ]
    ex, a, fa, b = both(lambda: Rows(rows, pre, 1000), specs, poll_interval_ns=20_000)
    assert_same(ex, a, fa, b)
    assert a["fills"] > 20 and a["replaces"] > 0  # (quotes always rest: all of it is exact)


def test_l2_stream_taker_only_mostly_fast():
    pre, rows = synthetic(8_000, seed=5)
    ex, a, fa, b = both(lambda: Rows(rows, pre), momentum({"fast": 10, "slow": 40}, 2))
    assert_same(ex, a, fa, b)
    assert a["orders"] > 5 and fa._fast.fast_rows > fa._fast.exact_rows


class TimerBuyer(Strategy):
    """Buys one lot (IOC through the ask) on every 40th timer tick."""

    n = 0

    def on_timer(self, now_ns: int) -> None:
        self.n += 1
        ask = self.ctx.best_ask(1)
        if self.n % 40 == 0 and ask is not None:
            self.ctx.buy(1, 1, ask[0] + 1, OrderType.LIMIT, TimeInForce.IOC)


def test_timers_and_controls_between_fast_rows():
    rows = quotes(5_000)
    t_kill = int(rows["ts_event"][3_000])
    controls = [
        Control(command=ControlCommand.KILL, ts=t_kill + 1, arg="test"),
        Control(command=ControlCommand.RESUME, ts=t_kill + 50_000_000),
    ]
    ex, a, fa, b = both(
        lambda: Rows(rows),
        [StrategySpec(TimerBuyer, instruments=[1])],
        timer_interval_ns=5_000_000,
        controls=controls,
    )
    assert_same(ex, a, fa, b)
    assert a["orders"] > 3 and a["risk_events"] > 0


class Overlay:
    """Stands in for procs.infer.ForecastOverlay: a forecast after every 500th row."""

    enabled = True

    def on_rows(self, rows: np.ndarray) -> list[Forecast]:
        idx = np.flatnonzero(rows["seq"] % 500 == 0)
        self.after = idx
        return [
            Forecast(1, "m1", int(t), int(t), [float(rows["seq"][i] % 3 - 1)])
            for i, t in zip(idx.tolist(), rows["ts_event"][idx].tolist(), strict=True)
        ]


class ForecastTaker(Strategy):
    subscriptions = frozenset({"forecast"})

    def on_forecast(self, f: Forecast) -> None:
        bid, ask = self.ctx.best_bid(1), self.ctx.best_ask(1)
        if f.point[0] > 0 and ask:
            self.ctx.buy(1, 2, ask[0] + 2, OrderType.LIMIT, TimeInForce.IOC)
        elif f.point[0] < 0 and bid:
            self.ctx.sell(1, 2, bid[0] - 2, OrderType.LIMIT, TimeInForce.IOC)


def test_forecasts_merged_like_the_interleaved_stream():
    rows = quotes(5_000)
    specs = [StrategySpec(ForecastTaker, instruments=[1])]

    def interleaved():
        ov = Overlay()
        fcs = ov.on_rows(rows)
        after = dict(zip(ov.after.tolist(), fcs, strict=True))
        for i, m in enumerate(mc.to_messages(rows)):
            yield m
            if i in after:
                yield after[i]

    ex = InlineRuntime(INS, specs, LIMITS, venue(), interleaved(), engine="exact")
    a = ex.run()
    fa = InlineRuntime(INS, specs, LIMITS, venue(), Rows(rows, size=777), overlay=Overlay())
    b = fa.run()
    assert b["replay_engine"] == "fast"
    assert_same(ex, a, fa, b)
    assert a["orders"] >= 5


# --- subscriptions -----------------------------------------------------------------------------


class Counts(Strategy):
    subscriptions = frozenset({"trade", "top"})

    def __init__(self, ctx, params):
        super().__init__(ctx, params)
        self.seen: list[tuple[str, int]] = []

    def on_quote(self, q: Quote) -> None:
        self.seen.append(("quote", q.ts_event))

    def on_trade(self, t: Trade) -> None:
        self.seen.append(("trade", t.ts_event))

    def on_book(self, instrument_id: int) -> None:
        top = self.ctx.best_bid(instrument_id), self.ctx.best_ask(instrument_id)
        self.seen.append(("book", hash(top)))


def test_subscriptions_honoured_on_both_paths():
    pre, rows = synthetic(4_000, seed=9)
    # what a "top" subscriber must see: one callback per change of the best levels
    books = {i: L2Book(i) for i in (1, 2)}
    for s in pre:
        books[s.instrument_id].apply(s)
    want_books = 0
    for m in mc.to_messages(rows):
        if m.instrument_id == 1 and type(m).__name__ == "BookDelta":
            before = books[1].best_bid(), books[1].best_ask()
            books[1].apply(m)
            want_books += (books[1].best_bid(), books[1].best_ask()) != before
    trades = int(np.sum((rows["kind"] == mc.MdKind.TRADE) & (rows["instrument_id"] == 1)))
    seen = []
    for engine in ("exact", "fast"):
        rt = InlineRuntime(
            INS, [StrategySpec(Counts, instruments=[1])], LIMITS, venue(), Rows(rows, pre, 333),
            engine=engine,
        )  # fmt: skip
        rt.run()
        # quotes no strategy takes still become the host's last quote
        seen.append((rt.host.strategy(1).seen, dict(rt.host.quotes)))
    assert seen[0] == seen[1] and len(seen[0][1]) == 2
    seen = [s for s, _ in seen]
    kinds = [k for k, _ in seen[0]]
    assert "quote" not in kinds
    assert kinds.count("trade") == trades > 0
    # the opening snapshot is one top change too
    assert kinds.count("book") == want_books + 1 > 10


def test_unknown_subscription_is_refused():
    class Bad(Strategy):
        subscriptions = frozenset({"quotes"})

    with pytest.raises(ValueError, match="unknown"):
        InlineRuntime(INS, [Bad], LIMITS, venue(), Rows(quotes(10)))


def test_exact_forced_and_what_the_fast_path_does_not_take():
    rows = quotes(200)
    rt = InlineRuntime(INS, momentum({}), LIMITS, venue(), Rows(rows), engine="exact")
    assert rt.run()["replay_engine"] == "exact"
    rt = InlineRuntime(INS, momentum({}), LIMITS, venue(), list(mc.to_messages(rows)))
    s = rt.run()
    assert s["replay_engine"] == "exact" and "not columnar" in s["replay_note"]
    rt = InlineRuntime(INS, momentum({}), LIMITS, venue(), Rows(rows), feed_latency_ns=5)
    assert "feed latency" in rt.run()["replay_note"]
    with pytest.raises(ValueError, match="engine"):
        InlineRuntime(INS, momentum({}), LIMITS, venue(), Rows(rows), engine="turbo")


def test_max_ticks_counts_rows_and_preamble():
    pre, rows = synthetic(3_000)
    ex, a, fa, b = both(lambda: Rows(rows, pre, 256), momentum({"fast": 5, "slow": 20}, 2),
                        max_ticks=1_234)  # fmt: skip
    assert a["ticks"] == b["ticks"] == 1_234
    assert_same(ex, a, fa, b)


@pytest.mark.skipif(not LOBSTER.is_dir(), reason="no LOBSTER sample in ../shared/data/lobster")
def test_lobster_day_same_orders_and_fills():
    from engine.sources.replay import ReplaySource

    msgs = ReplaySource.from_lobster(
        LOBSTER / "GOOG_2012-06-21_34200000_57600000_message_5.csv",
        LOBSTER / "GOOG_2012-06-21_34200000_57600000_orderbook_5.csv",
        5,
        1,
        price_divisor=100,
        instruments=INS,
    )
    msgs = list(msgs)  # the whole day: 133,489 events (13,102 of them heal deltas)
    pre = [m for m in msgs[:1] if isinstance(m, BookSnapshot)]
    rows = mc.from_messages(msgs[len(pre) :])
    ex, a, fa, b = both(lambda: Rows(rows, pre, 8192), momentum({"fast": 10, "slow": 40}))
    assert_same(ex, a, fa, b)
    assert a["orders"] > 500 and a["fills"] > 300


def test_gekko_backtest_quote_file_fast_equals_exact(tmp_path):
    """`gekko backtest`'s runtime on a quote file with bad rows in it: the same orders, fills
    and rejected rows by reason on both paths."""
    from ops.backtest_build import build_backtest
    from ops.config import parse_config

    rng = np.random.default_rng(4)
    lines = ["ts_event,symbol,bid_px,bid_qty,ask_px,ask_qty"]
    t, mid = T0, 150.0
    for k in range(3_000):
        t += int(rng.integers(100_000, 3_000_000))
        mid += 0.01 * int(rng.integers(-1, 2))
        bad = k % 500 == 7  # a crossed row now and then: rejected, counted
        bid, ask = (mid + 0.05, mid) if bad else (mid, mid + 0.01 * int(rng.integers(1, 3)))
        lines.append(f"{t},AAPL,{bid:.2f},{int(rng.integers(1, 900))},{ask:.2f},7")
    quotes_csv = tmp_path / "q.csv"
    quotes_csv.write_text("\n".join(lines) + "\n")
    root = Path(__file__).resolve().parents[1]
    base = (root / "config.toml").read_text()
    base = base.replace('source = "synthetic"', 'source = "replay"', 1)
    base = base.replace('replay_quotes = ""', f'replay_quotes = "{quotes_csv.as_posix()}"')
    base = base.replace('var_dir = "var"', f'var_dir = "{tmp_path}"')
    out = []
    for engine in ("exact", "fast"):
        text = base.replace('engine = "fast"', f'engine = "{engine}"', 1)
        bt = build_backtest(parse_config(text, tmp_path / f"{engine}.toml"))
        out.append((bt.runtime, bt.runtime.run(), dict(bt.rejects.counts)))
    (ex, a, ra), (fa, b, rb) = out
    assert b["replay_engine"] == "fast", b["replay_note"]
    assert ra == rb and sum(ra.values()) >= 5
    for k in ("orders_sent", "ticks", "fills", "positions", "pnl", "analytics", "risk_events"):
        assert a[k] == b[k], k
    assert a["orders"] > 10


@pytest.mark.skipif(not LOBSTER.is_dir(), reason="no LOBSTER sample in ../shared/data/lobster")
def test_gekko_backtest_default_config_fast_equals_exact(tmp_path):
    """`gekko backtest`'s runtime (ops/backtest_build.py) on a LOBSTER replay with the default
    strategies and inference: [backtest] engine = "fast" gives what "exact" gives."""
    from ops.backtest_build import build_backtest
    from ops.config import parse_config

    root = Path(__file__).resolve().parents[1]
    base = (root / "config.toml").read_text()
    pair = LOBSTER / "AAPL_2012-06-21_34200000_57600000_{}_10.csv"
    base = base.replace('source = "synthetic"', 'source = "replay"', 1)
    base = base.replace(
        'replay_lobster_messages = ""',
        f'replay_lobster_messages = "{pair.as_posix().format("message")}"',
    )
    base = base.replace(
        'replay_lobster_orderbook = ""',
        f'replay_lobster_orderbook = "{pair.as_posix().format("orderbook")}"',
    )
    base = base.replace('var_dir = "var"', f'var_dir = "{tmp_path}"')
    out = []
    for engine in ("exact", "fast"):
        text = base.replace('engine = "fast"', f'engine = "{engine}"', 1)
        cfg = parse_config(text, tmp_path / f"{engine}.toml")
        bt = build_backtest(cfg)
        out.append((bt.runtime, bt.runtime.run(), bt.rejects.counts))
    (ex, a, ra), (fa, b, rb) = out
    assert a["replay_engine"] == "exact" and b["replay_engine"] == "fast", b["replay_note"]
    assert ra == rb
    for k in ("orders_sent", "ticks", "fills", "positions", "pnl", "analytics", "risk_events"):
        assert a[k] == b[k], k
    assert ex.fill_log == fa.fill_log
    assert a["ticks"] > 900


class Breaks(MomentumTaker):
    """The momentum taker until its 700th quote, which it cannot take."""

    seen = 0

    def on_quote(self, q: Quote) -> None:
        self.seen += 1
        if self.seen == 700:
            raise RuntimeError("boom")
        super().on_quote(q)


def test_a_failing_strategy_is_contained_alike():
    specs = [StrategySpec(Breaks, {"fast": 3, "slow": 8}, instruments=[1])]
    specs.append(StrategySpec(MomentumTaker, {"fast": 4, "slow": 9}, instruments=[1]))
    ex, a, fa, b = both(lambda: Rows(quotes(3_000), size=256), specs, on_error="disable")
    assert_same(ex, a, fa, b)
    assert a["strategy_errors"] == b["strategy_errors"] and len(a["strategy_errors"]) == 1
    assert not fa.host.slots[0].enabled and fa.host.slots[1].enabled


class BuyOnce(Strategy):
    """Buys once on the first quote, then only watches: the fast path's refreshes while a
    position is open and nothing else happens."""

    subscriptions = frozenset({"quote"})

    def on_quote(self, q: Quote) -> None:
        if not self.ctx.position(q.instrument_id) and not getattr(self, "sent", False):
            self.sent = True
            self.ctx.buy(q.instrument_id, 5)


def test_refreshes_while_a_position_is_open_keep_the_equity_peak():
    """Risk's refreshes over a long quiet stretch with a position open (the fast path computes
    them when something reads risk): the same peak equity, reached in the middle of it."""
    rows = quotes(6_000)
    up = np.minimum(np.arange(6_000), 6_000 - np.arange(6_000)) // 10  # up, then down again
    rows["bid_px"] = 10_000 + up
    rows["ask_px"] = 10_001 + up
    ex, a, fa, b = both(lambda: Rows(rows), [StrategySpec(BuyOnce, {}, instruments=[1])])
    assert_same(ex, a, fa, b)
    assert a["orders"] == 1 and a["fills"] == 1
    assert fa.risk.peak_equity > fa.risk.equity + 10  # the peak is an intermediate refresh


class CountingTaker(MomentumTaker):
    """The momentum taker, counting its updates."""

    updates = 0

    def update(self, instrument_id: int) -> None:
        type(self).updates += 1
        super().update(instrument_id)


def test_momentum_updating_on_the_top_only_is_called_for_top_changes_alike():
    """``updates_on = "top"``: the taker hears quotes and best bid / ask changes only, on both
    paths (the fast one skips the deeper deltas without calling it), and trades alike."""
    pre, rows = synthetic(8_000, seed=5)
    counts = {}
    for mode in ("book", "top"):
        CountingTaker.updates = 0
        specs = [
            StrategySpec(
                CountingTaker, {"fast": 10, "slow": 40, "updates_on": mode}, instruments=[2]
            )
        ]
        ex, a, fa, b = both(lambda: Rows(rows, pre), specs)
        assert_same(ex, a, fa, b)
        counts[mode] = CountingTaker.updates // 2  # both runs counted
        assert a["orders"] > 5
    mine = rows[(rows["instrument_id"] == 2) & (rows["kind"] != mc.MdKind.TRADE)]
    snaps = sum(m.instrument_id == 2 for m in pre)
    assert counts["book"] == len(mine) + snaps  # every snapshot, quote and delta of its own
    assert 0 < counts["top"] < counts["book"] // 2  # most deltas are below the top


def test_updates_on_is_checked():
    from engine.strategies.params import ParamError

    with pytest.raises(ParamError, match="updates_on"):
        StrategyHost([StrategySpec(MomentumTaker, {"updates_on": "depth"}, instruments=[1])], INS)


@pytest.mark.skipif(not LOBSTER.is_dir(), reason="no LOBSTER sample in ../shared/data/lobster")
def test_lobster_day_top_subscriber_same_orders_and_fills():
    from engine.sources.replay import ReplaySource

    msgs = list(
        ReplaySource.from_lobster(
            LOBSTER / "GOOG_2012-06-21_34200000_57600000_message_5.csv",
            LOBSTER / "GOOG_2012-06-21_34200000_57600000_orderbook_5.csv",
            5,
            1,
            price_divisor=100,
            instruments=INS,
        )
    )
    pre = [m for m in msgs[:1] if isinstance(m, BookSnapshot)]
    rows = mc.from_messages(msgs[len(pre) :])
    specs = momentum({"fast": 10, "slow": 40, "updates_on": "top"})
    ex, a, fa, b = both(lambda: Rows(rows, pre, 8192), specs)
    assert_same(ex, a, fa, b)
    assert a["orders"] > 100 and a["fills"] > 50
