"""MarkPrice (tag 61): a perpetual's venue mark on the market-data ring — the codec, the
simulated venue's marks, the portfolio and risk valuing the perpetual at it, a strategy's
"mark" subscription, the feed's top-of-book table (risk's prices in the process runtime), the
live perp client's stream and the record's ``marks`` table."""

from __future__ import annotations

import msgspec
import pytest

from engine.accounts import Account, next_funding_ns
from engine.codec import MESSAGE_DECODER
from engine.instruments import Instrument, InstrumentTable
from engine.messages import (
    BookDelta,
    BookSnapshot,
    MarkPrice,
    OrderFilled,
    Quote,
    Side,
    Trade,
)
from engine.portfolio import Portfolio
from engine.risk import RiskGate
from engine.risk_limits import RiskLimits
from engine.strategies.base import Strategy, subscriptions_of
from engine.strategy_host import StrategyHost
from engine.venues.sim_data import SimDataClient
from engine.venues.sim_marks import MarkTracker
from tests.test_backtest_kinds import Script

PERP = Instrument(
    instrument_id=1,
    symbol="BTCUSDT-PERP",
    venue="sim",
    kind="perpetual",
    tick_size=0.1,
    lot_size=0.001,
    currency="USDT",
    initial_margin=0.1,
    maintenance_margin=0.05,
    funding_interval_s=28_800,
    funding_rate=0.0001,
)
SPOT = Instrument(instrument_id=2, symbol="AAPL", venue="sim")
H8 = 28_800 * 10**9


def q(iid: int, bid: int, ask: int, t: int = 5) -> Quote:
    return Quote(iid, bid, 1, ask, 1, t, t)


def test_codec_round_trip_and_tag() -> None:
    m = MarkPrice(1, 500_010, 500_000, 0.0001, H8, 7, 8)
    frame = msgspec.msgpack.encode(m)
    assert MESSAGE_DECODER.decode(frame) == m
    assert msgspec.msgpack.decode(frame)[0] == 61  # the ring frame's type


def test_sim_venue_publishes_the_mark_of_its_perpetuals_only() -> None:
    ts = H8 + 5  # just past a funding time: the next is one interval later
    stream = [
        q(1, 500_000, 500_002, ts),  # mark 500_001
        q(1, 500_000, 500_002, ts + 1),  # unchanged: no new mark
        q(2, 100, 102, ts + 2),  # spot: never a mark
        Trade(1, 499_000, 1, 1, ts + 3, ts + 3),  # the mid still marks it
        q(1, 500_010, 500_012, ts + 4),  # mark 500_011
    ]
    client = SimDataClient(InstrumentTable([PERP, SPOT]), lambda: iter(stream))
    client.connect()
    client.subscribe([1, 2])
    got = list(client.updates())
    marks = [m for m in got if type(m) is MarkPrice]
    assert [(m.mark_px, m.ts_event) for m in marks] == [(500_001, ts), (500_011, ts + 4)]
    assert got[1] is marks[0]  # right after the quote that moved it
    m = marks[0]
    assert (m.instrument_id, m.index_px, m.funding_rate) == (1, 500_001, 0.0001)
    assert m.next_funding_ns == 2 * H8 == next_funding_ns(PERP, ts)
    # a venue with no perpetual: the source itself, untouched
    plain = iter([q(2, 100, 102)])
    spot_only = SimDataClient(InstrumentTable([SPOT]), lambda: plain)
    spot_only.connect()
    spot_only.subscribe([2])
    assert spot_only.updates() is plain


def test_sim_mark_follows_the_book_and_falls_back_to_the_last_trade() -> None:
    tr = MarkTracker([PERP])
    assert tr.on_market_data(Trade(1, 499_000, 1, 1, 1, 1)).mark_px == 499_000  # no book yet
    snap = BookSnapshot(1, [500_000], [3], [500_004], [2], 2, 2)
    assert tr.on_market_data(snap).mark_px == 500_002
    # the bid level goes: one side only, the last trade marks again
    assert tr.on_market_data(BookDelta(1, int(Side.BUY), 500_000, 0, 3, 3)).mark_px == 499_000
    assert tr.on_market_data(q(2, 1, 3)) is None  # not a perpetual


def _portfolio() -> Portfolio:
    return Portfolio(
        [PERP, SPOT],
        initial_cash={"USDT": 10_000.0, "USD": 0.0},
        accounts={"sim": Account(kind="margin")},
    )


def test_portfolio_values_a_perpetual_at_the_venue_mark_where_present() -> None:
    p = _portfolio()
    p.on_event(
        OrderFilled((1 << 32) | 1, 1, 1, Side.BUY, 500_000, 1000, 1000, 0, 0.0, 1, 1, 0, 0, 0)
    )
    p.on_market_data(q(1, 500_100, 500_102))  # no venue mark yet: the book's mid
    assert p.positions[1].mark_px == 500_101
    p.on_market_data(MarkPrice(1, 499_500, 499_400, 0.0001, H8, 6, 6))
    assert p.positions[1].mark_px == 499_500
    # 1 BTC bought at 50,000.0, marked at 49,950.0: -50 USDT
    assert p.unrealized() == pytest.approx(-50.0)
    p.on_market_data(q(1, 501_000, 501_002))  # the book moves: the venue's mark stands
    p.on_market_data(Trade(1, 502_000, 1, 1, 7, 7))
    assert p.positions[1].mark_px == 499_500
    p.on_market_data(MarkPrice(1, 500_200, 0, 0.0001, H8, 8, 8))
    assert p.unrealized() == pytest.approx(20.0)


def test_risk_values_a_perpetual_at_the_venue_mark_where_present() -> None:
    g = RiskGate(RiskLimits.off(capital=10_000.0), [PERP, SPOT])
    g.on_market_data(q(1, 500_100, 500_102))
    g.on_market_data(q(2, 100, 102))
    assert g.mark(1) == 500_101.0
    g.on_market_data(MarkPrice(1, 499_500, 0, 0.0, 0, 6, 6))
    assert g.mark(1) == 499_500.0 and g.mark(2) == 101.0
    assert list(g.mids()[1:3]) == [499_500.0, 101.0]
    g.on_market_data(q(1, 501_000, 501_002))
    assert g.mark(1) == 499_500.0  # the book no longer marks it


class _Marks(Strategy):
    def on_start(self) -> None:
        self.seen: list[MarkPrice] = []

    def on_mark(self, m: MarkPrice) -> None:
        self.seen.append(m)


class _Quotes(Strategy):
    def on_quote(self, q: Quote) -> None:
        pass


def test_a_strategy_hears_marks_only_when_it_takes_them() -> None:
    assert "mark" in subscriptions_of(_Marks)
    assert "mark" not in subscriptions_of(_Quotes)  # the base's no-op: never called
    host = StrategyHost([_Marks, _Quotes], [PERP])
    m = MarkPrice(1, 499_500, 499_400, 0.0001, H8, 6, 6)
    host.on_market_data(m, 10)
    marks = host.slots[0].strategy
    assert marks.seen == [m]


def test_feed_table_carries_the_mark_to_risk(engine_id) -> None:
    """The process runtime: the feed writes the mark into the top-of-book table, risk's
    ``Prices`` reads it back into the gate."""
    from types import SimpleNamespace

    from procs.risk import Prices
    from procs.runtime import TOB_DTYPE
    from shm.seqlock import SeqlockTable

    table = SeqlockTable.create(engine_id, "tob", TOB_DTYPE, 1)
    try:
        table.write(0, (1, 500_100, 1, 500_102, 1, 0, 5, 499_500))
        g = RiskGate(RiskLimits.off(capital=10_000.0), [PERP])
        prices = Prices(engine_id, SimpleNamespace(instruments=[PERP]), g)
        try:
            prices.read_all()
            assert g.mark(1) == 499_500.0
            assert int(g.bid[1]) == 500_100
        finally:
            prices.tob.close()
    finally:
        table.close()
        table.unlink()


def test_the_record_keeps_marks(pg_dsn: str) -> None:
    import psycopg

    from ops.store import migrate as mig
    from ops.store.pg import run_tx
    from ops.store.writer import Rows, Writer

    rows = Rows()
    rows.add(9, MarkPrice(1, 499_500, 499_400, 0.0001, H8, H8 + 1, 3))
    rows.add(9, q(1, 1, 3, H8))
    assert rows.marks == [(9, 1, 499_500, 499_400, 0.0001, H8, H8 + 1, 3)]
    assert rows.ignored == 0
    with psycopg.connect(pg_dsn, autocommit=True) as c:
        mig.migrate(c)
    with psycopg.connect(pg_dsn, autocommit=False) as c:
        run_tx(c, lambda conn: Writer().write(conn, rows))
    with psycopg.connect(pg_dsn, autocommit=True) as c:
        got = c.execute(
            "SELECT instrument_id, mark_px, index_px, funding_rate, next_funding_ns, ts_event"
            " FROM marks WHERE run_id = 9"
        ).fetchall()
    assert got == [(1, 499_500, 499_400, 0.0001, H8, H8 + 1)]


def test_the_feed_writes_the_mark_into_its_table_and_quotes_keep_it(engine_id) -> None:
    """The feed is the table's one writer: a MarkPrice sets the row's mark, a later quote
    rewrites the row with it (risk must never read a mark that came and went)."""
    from types import SimpleNamespace

    from procs.feed import _Feed
    from procs.runtime import TOB_DTYPE
    from shm.seqlock import SeqlockTable

    table = SeqlockTable.create(engine_id, "tob", TOB_DTYPE, 1)
    published: list = []
    metrics = SimpleNamespace(inc_i=lambda *a: None)
    feed = object.__new__(_Feed)
    feed.w = SimpleNamespace(metrics=metrics, processed=0)
    feed.tob, feed.rows = table, {1: 0}
    feed.last_px, feed.mark_px = {1: 0}, {1: 0}
    feed.md = SimpleNamespace(publish=published.append)
    feed.h_pub, feed.c_out = SimpleNamespace(record=lambda ns: None), 0
    try:
        feed.publish(q(1, 500_100, 500_102))
        feed.publish(MarkPrice(1, 499_500, 499_400, 0.0001, H8, 6, 0))
        assert table.read_tuple(0)[1:4:2] == (500_100, 500_102)  # the quote stays
        assert table.read_tuple(0)[7] == 499_500
        feed.publish(q(1, 500_200, 500_204))
        row = table.read_tuple(0)
        assert (row[1], row[7]) == (500_200, 499_500)
        assert [type(m) for m in published] == [Quote, MarkPrice, Quote]
        assert published[1].ts_recv > 0  # stamped on the way out
    finally:
        table.close()
        table.unlink()


HEARD: list[MarkPrice] = []


class MarkScript(Script):
    """The backtest kinds' scripted orders, and every mark heard."""

    def on_mark(self, m: MarkPrice) -> None:
        HEARD.append(m)


def test_a_backtest_on_the_sim_venue_marks_its_perpetual(tmp_path, monkeypatch) -> None:
    """``gekko backtest``'s builder: the simulated venue publishes the perpetual's mark, the
    strategy hears it, and the summary's unrealized P&L is at it (the mid, rounded down)."""
    import tests.test_backtest_kinds as kinds

    monkeypatch.setattr(
        kinds,
        "_BASE",
        kinds._BASE.replace("test_backtest_kinds:Script", "test_mark_price:MarkScript"),
    )
    HEARD.clear()
    _, s = kinds._backtest(
        tmp_path,
        [kinds.PERP],
        [
            ("2026-01-05T06:00:00", "BTCUSDT-PERP", 50_000.0, 50_000.2),
            ("2026-01-05T07:00:00", "BTCUSDT-PERP", 50_100.0, 50_100.2),
            ("2026-01-05T07:30:00", "BTCUSDT-PERP", 50_100.0, 50_100.2),  # no new mark
        ],
        [["BTCUSDT-PERP", "buy", 2_000, 0]],
        cash="{ USDT = 20000.0 }",
        sim='account = "margin"',
    )
    assert [m.mark_px for m in HEARD] == [500_001, 501_001]
    assert HEARD[0].next_funding_ns == kinds._ns("2026-01-05T08:00:00")
    assert HEARD[0].funding_rate == 0.0001
    assert s["pnl"]["unrealized"] == pytest.approx(2 * (50_100.1 - 50_000.2))
