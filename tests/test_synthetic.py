"""SyntheticMarket: reproducibility, feed consistency (what a book consumer relies on), and the
statistical properties the generator promises (correlation, volatility clustering, jumps)."""

from __future__ import annotations

import math

import msgspec
import numpy as np
import pytest

from engine.instruments import Instrument
from engine.messages import BookDelta, BookSnapshot, Quote, Side, Trade
from engine.sources.synthetic import (
    SECONDS_PER_YEAR,
    GarchParams,
    InstrumentSpec,
    JumpParams,
    SyntheticMarket,
)


def _two(vol: float = 1e-3, price: float = 100.0, **kw) -> SyntheticMarket:
    specs = [
        InstrumentSpec(1, 0.01, 1.0, price, vol=vol),
        InstrumentSpec(2, 0.01, 1.0, price / 2, vol=vol),
    ]
    return SyntheticMarket(specs, kw.pop("correlation", 0.6), **kw)


def _mid_returns(m: SyntheticMarket, steps: int) -> np.ndarray:
    """Per-step log returns of each instrument's quoted mid (forward filled between quotes)."""
    ids = m.instrument_ids
    mids: dict[int, float] = {}
    for msg in m.step():
        assert isinstance(msg, BookSnapshot)
        mids[msg.instrument_id] = (msg.bid_px[0] + msg.ask_px[0]) / 2
    path = np.empty((steps + 1, len(ids)))
    path[0] = [mids[i] for i in ids]
    for k in range(1, steps + 1):
        for msg in m.step():
            if type(msg) is Quote:
                mids[msg.instrument_id] = (msg.bid_px + msg.ask_px) / 2
        path[k] = [mids[i] for i in ids]
    return np.diff(np.log(path), axis=0)


def _acf(x: np.ndarray, lag: int) -> float:
    x = x - x.mean()
    return float((x[:-lag] * x[lag:]).sum() / (x * x).sum())


class _Consumer:
    """A reference L2 consumer: applies the feed and checks every promise of the generator."""

    def __init__(self, levels: int) -> None:
        self.levels = levels
        self.books: dict[int, tuple[dict[int, int], dict[int, int]]] = {}
        self.seq: dict[int, int] = {}
        self.quote_seq: dict[int, int] = {}
        self.trade_id: dict[int, int] = {}
        self.last_quote: dict[int, tuple[int, int, int, int]] = {}
        self.last_ts = -1
        self.counts = {BookSnapshot: 0, BookDelta: 0, Trade: 0, Quote: 0}

    def top(self, iid: int) -> tuple[int, int, int, int]:
        bids, asks = self.books[iid]
        bb, ba = max(bids), min(asks)
        return bb, bids[bb], ba, asks[ba]

    def check_book(self, iid: int) -> None:
        bids, asks = self.books[iid]
        assert bids and asks
        assert max(bids) < min(asks), "crossed or locked book"
        assert min(bids) > 0, "non-positive price"
        assert len(bids) <= self.levels and len(asks) <= self.levels
        assert all(q > 0 for q in bids.values()) and all(q > 0 for q in asks.values())

    def apply(self, msg: object) -> None:
        self.counts[type(msg)] += 1
        assert msg.ts_event > self.last_ts, "ts_event not strictly increasing"
        assert msg.ts_recv == msg.ts_event
        self.last_ts = msg.ts_event
        iid = msg.instrument_id
        if type(msg) is BookSnapshot:
            assert msg.bid_px == sorted(msg.bid_px, reverse=True)
            assert msg.ask_px == sorted(msg.ask_px)
            self.books[iid] = (
                dict(zip(msg.bid_px, msg.bid_qty, strict=True)),
                dict(zip(msg.ask_px, msg.ask_qty, strict=True)),
            )
            self.seq[iid] = msg.seq
            self.trade_id[iid] = 0
            self.last_quote[iid] = self.top(iid)
            self.check_book(iid)
            return
        if type(msg) is Trade:
            bb, bq, ba, aq = self.top(iid)
            assert msg.qty > 0
            if msg.side == Side.BUY:
                assert msg.px == ba and msg.qty <= aq
            else:
                assert msg.side == Side.SELL and msg.px == bb and msg.qty <= bq
            assert msg.trade_id == self.trade_id[iid] + 1
            self.trade_id[iid] = msg.trade_id
            return
        if type(msg) is BookDelta:
            assert msg.seq == self.seq[iid] + 1, f"seq gap on {iid}: {self.seq[iid]} -> {msg.seq}"
            self.seq[iid] = msg.seq
            bids, asks = self.books[iid]
            book = bids if msg.side == Side.BUY else asks
            if msg.qty == 0:
                assert msg.px in book, "removal of a level that does not exist"
                del book[msg.px]
            else:
                book[msg.px] = msg.qty
            # at least one level per side survives every delta (removals precede additions
            # only within a side's move; the touch itself is always re-added)
            if bids and asks:
                assert max(bids) < min(asks), "crossed book between deltas"
                assert min(bids) > 0
            return
        assert type(msg) is Quote
        assert msg.seq == self.seq[iid], "a Quote carries the seq of the book it summarises"
        assert msg.seq > self.quote_seq.get(iid, 0)
        self.quote_seq[iid] = msg.seq
        assert (msg.bid_px, msg.bid_qty, msg.ask_px, msg.ask_qty) == self.top(iid)
        assert msg.bid_px < msg.ask_px
        self.last_quote[iid] = self.top(iid)

    def end_of_step(self) -> None:
        for iid in self.books:
            self.check_book(iid)
            assert self.last_quote[iid] == self.top(iid), "top changed without a Quote"


def _run_consumer(m: SyntheticMarket, steps: int) -> _Consumer:
    c = _Consumer(m.levels)
    for _ in range(steps):
        for msg in m.step():
            c.apply(msg)
        c.end_of_step()
    return c


# --- reproducibility ---------------------------------------------------------------------------


def test_same_seed_same_sequence() -> None:
    a = list(_two(seed=7, jumps=JumpParams(rate_per_s=20, std=0.01)).events(20_000))
    b = list(_two(seed=7, jumps=JumpParams(rate_per_s=20, std=0.01)).events(20_000))
    assert a == b
    c = list(_two(seed=8, jumps=JumpParams(rate_per_s=20, std=0.01)).events(20_000))
    assert a != c


def test_events_chunks_equal_steps() -> None:
    m1, m2, m3 = _two(seed=3), _two(seed=3), _two(seed=3)
    steps: list[object] = []
    while len(steps) < 5_000:
        steps.extend(m1.step())
    one = list(m2.events(5_000))
    chunks: list[object] = []
    for n in (1, 7, 999, 3, 3990):
        chunks.extend(m3.events(n))
    assert one == steps[:5_000] == chunks
    assert m2.now_ns >= one[-1].ts_event  # the rest of the step is buffered, already stamped


def test_first_step_is_one_snapshot_per_instrument() -> None:
    m = _two(seed=1, levels=5, start_ns=1_000)
    first = m.step()
    assert [type(x) for x in first] == [BookSnapshot, BookSnapshot]
    assert [x.instrument_id for x in first] == [1, 2]
    assert first[0].ts_event == 1_000 and all(x.seq == 0 for x in first)
    assert all(len(x.bid_px) == 5 and len(x.ask_px) == 5 for x in first)
    assert first[0].ask_px[0] - first[0].bid_px[0] >= 1


def test_messages_encode_as_plain_msgpack() -> None:
    msgs = list(_two(seed=2).events(2_000))
    enc = msgspec.msgpack.Encoder()
    for t in (BookSnapshot, BookDelta, Trade, Quote):
        sample = [x for x in msgs if type(x) is t]
        assert sample, t
        dec = msgspec.msgpack.Decoder(t)
        for x in sample[:50]:
            assert dec.decode(enc.encode(x)) == x
            assert type(x.instrument_id) is int
            if hasattr(x, "side"):
                assert type(x.side) is int  # not an IntEnum: cheap on the consumer side


# --- feed consistency --------------------------------------------------------------------------


def test_feed_is_consistent_realistic_params() -> None:
    specs = [
        InstrumentSpec.from_instrument(
            Instrument(instrument_id=i, symbol=f"S{i}", tick_size=0.01),
            20.0 * (i + 1),
            annual_vol=0.6,
        )
        for i in range(3)
    ]
    m = SyntheticMarket(
        specs,
        0.3,
        seed=11,
        mean_interval_ns=50_000_000,
        jumps=JumpParams(rate_per_s=0.05, std=0.005),
    )
    c = _run_consumer(m, 20_000)
    assert all(c.counts[t] > 1_000 for t in (BookDelta, Trade, Quote))
    for iid in m.instrument_ids:
        snap = m.snapshot(iid)
        bids, asks = c.books[iid]
        assert dict(zip(snap.bid_px, snap.bid_qty, strict=True)) == bids
        assert dict(zip(snap.ask_px, snap.ask_qty, strict=True)) == asks
        assert snap.seq == c.seq[iid]


def test_feed_is_consistent_violent_params_prices_stay_positive() -> None:
    # a few ticks of price, huge vol and downward jumps: the book is pushed against zero
    specs = [
        InstrumentSpec(5, 0.01, 1.0, 0.08, vol=0.05),
        InstrumentSpec(6, 0.5, 0.1, 3.0, vol=0.02),
    ]
    m = SyntheticMarket(
        specs,
        -0.4,
        seed=5,
        levels=4,
        level_gap_ticks=2,
        jumps=JumpParams(rate_per_s=100, mean=-0.05, std=0.2),
    )
    c = _run_consumer(m, 5_000)
    assert c.counts[Trade] > 100
    assert min(min(b) for b, _ in c.books.values()) >= 1


def test_engine_l2book_sees_no_gaps() -> None:
    """The engine's own book (if present in this tree) applies the feed without a gap or cross."""
    book_mod = pytest.importorskip("engine.book")
    m = _two(vol=3e-4, seed=12, jumps=JumpParams(rate_per_s=5, std=0.003))
    books = {iid: book_mod.L2Book(iid) for iid in m.instrument_ids}
    n_quotes = 0
    for msg in m.events(30_000):
        if type(msg) in (BookSnapshot, BookDelta):
            books[msg.instrument_id].apply(msg)
        elif type(msg) is Quote:
            b = books[msg.instrument_id]
            assert b.best_bid() == (msg.bid_px, msg.bid_qty)
            assert b.best_ask() == (msg.ask_px, msg.ask_qty)
            assert b.last_seq == msg.seq
            n_quotes += 1
    assert n_quotes > 1_000
    for b in books.values():
        assert (b.gap_count, b.crossed_count, b.locked_count, b.rejected_count) == (0, 0, 0, 0)


def test_level_gap_and_spread() -> None:
    m = _two(vol=2e-4, seed=4, level_gap_ticks=5, spread_probs=(0, 0, 1), levels=6)
    spreads = set()
    for _ in range(3_000):
        for msg in m.step():
            if type(msg) is Quote:
                spreads.add(msg.ask_px - msg.bid_px)
    assert spreads == {3}
    snap = m.snapshot(1)
    assert all(p % 5 == 0 for p in snap.bid_px[1:] + snap.ask_px[1:])
    assert all(a - b >= 1 for a, b in zip(snap.bid_px, snap.bid_px[1:], strict=False))


# --- statistics --------------------------------------------------------------------------------


def test_return_correlation_matches_configuration() -> None:
    # default GARCH: CCC model, sample correlation a hair below the conditional one
    r = _mid_returns(_two(vol=1e-3, seed=21, levels=2, correlation=0.6), 10_000)
    rho = np.corrcoef(r[:, 0], r[:, 1])[0, 1]
    assert abs(rho - 0.6) < 0.05, rho
    # constant volatility: the sample correlation is the configured one, up to sampling error
    flat = GarchParams(0.0, 0.0)
    r = _mid_returns(_two(vol=1e-3, seed=22, levels=2, correlation=0.6, garch=flat), 10_000)
    assert abs(np.corrcoef(r[:, 0], r[:, 1])[0, 1] - 0.6) < 0.03
    r0 = _mid_returns(_two(vol=1e-3, seed=21, levels=2, correlation=0.0), 10_000)
    assert abs(np.corrcoef(r0[:, 0], r0[:, 1])[0, 1]) < 0.05


def test_correlation_matrix_three_instruments() -> None:
    corr = [[1.0, 0.8, -0.5], [0.8, 1.0, -0.3], [-0.5, -0.3, 1.0]]
    specs = [InstrumentSpec(i, 0.01, 1.0, 100.0, vol=1e-3) for i in range(3)]
    r = _mid_returns(SyntheticMarket(specs, corr, seed=9, levels=2), 8_000)
    assert np.allclose(np.corrcoef(r.T), corr, atol=0.06)


def test_volatility_clusters() -> None:
    garch = GarchParams(alpha=0.1, beta=0.85)
    r = _mid_returns(_two(vol=1e-3, seed=13, levels=2, garch=garch), 15_000)[:, 0]
    acf = [_acf(np.abs(r), k) for k in range(1, 11)]
    assert min(acf[:3]) > 0.05 and np.mean(acf) > 0.05, acf
    flat = GarchParams(alpha=0.0, beta=0.0)
    r0 = _mid_returns(_two(vol=1e-3, seed=13, levels=2, garch=flat), 15_000)[:, 0]
    assert abs(np.mean([_acf(np.abs(r0), k) for k in range(1, 11)])) < 0.03
    # GARCH keeps the configured unconditional variance
    assert r.std() == pytest.approx(1e-3, rel=0.15)
    assert r0.std() == pytest.approx(1e-3, rel=0.05)


def test_jumps_present_only_when_configured() -> None:
    kw = dict(vol=1e-4, price=1000.0, seed=17, levels=3, garch=GarchParams(0.0, 0.0))
    r = _mid_returns(_two(**kw), 10_000)
    rj = _mid_returns(_two(jumps=JumpParams(rate_per_s=20, std=0.01), **kw), 10_000)
    big = 10 * 1e-4
    assert (np.abs(r) > big).sum() == 0
    # 20/s at 1 ms per step: ~0.02 jumps per step per instrument, ~200 each over 10k steps
    n_jumps = (np.abs(rj) > big).sum(axis=0)
    assert (n_jumps > 100).all() and (n_jumps < 350).all(), n_jumps
    kurt = ((rj - rj.mean(0)) ** 4).mean(0) / rj.var(0) ** 2
    assert (kurt > 10).all()


def test_annual_vol_converts_with_mean_interval() -> None:
    spec = InstrumentSpec(1, 0.0001, 1.0, 50.0, annual_vol=0.4)
    m = SyntheticMarket([spec], seed=3, mean_interval_ns=10**9, garch=GarchParams(0.0, 0.0))
    m.step()
    x = [math.log(m.mid_ticks(1))]
    for _ in range(5_000):
        m.step()
        x.append(math.log(m.mid_ticks(1)))
    expected = 0.4 * math.sqrt(1.0 / SECONDS_PER_YEAR)
    assert np.diff(x).std() == pytest.approx(expected, rel=0.05)


def test_clock_advances_at_mean_interval() -> None:
    m = _two(seed=6, mean_interval_ns=2_000_000)
    m.step()
    for _ in range(5_000):
        m.step()
    assert m.now_ns / 5_000 == pytest.approx(2_000_000, rel=0.05)


def test_long_run_yields_exactly_n_events_in_time_order() -> None:
    """200k events from four instruments with jumps: the count asked for, clocks never go back."""
    specs = [InstrumentSpec(i, 0.01, 1.0, 100.0, annual_vol=0.3) for i in range(4)]
    m = SyntheticMarket(specs, 0.5, seed=1, jumps=JumpParams(rate_per_s=1, std=0.002))
    n = 200_000
    count, last = 0, -1
    for ev in m.events(n):
        ts = ev.ts_event
        assert ts >= last
        last = ts
        count += 1
    assert count == n


# --- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(vol=None, annual_vol=None),
        dict(vol=0.01, annual_vol=0.2),
        dict(vol=-0.01),
        dict(vol=0.01, price=0.0),
        dict(vol=0.01, tick_size=0.0),
    ],
)
def test_bad_spec_rejected(kwargs: dict) -> None:
    base = dict(instrument_id=1, tick_size=0.01, lot_size=1.0, price=10.0)
    base.update(kwargs)
    with pytest.raises(ValueError):
        InstrumentSpec(**base)


def test_bad_market_arguments_rejected() -> None:
    specs = [
        InstrumentSpec(1, 0.01, 1.0, 10.0, vol=0.01),
        InstrumentSpec(2, 0.01, 1.0, 10.0, vol=0.01),
    ]
    with pytest.raises(ValueError, match="positive definite"):
        SyntheticMarket(
            specs + [InstrumentSpec(3, 0.01, 1, 10.0, vol=0.01)],
            [[1, 0.9, -0.9], [0.9, 1, 0.9], [-0.9, 0.9, 1]],
        )
    with pytest.raises(ValueError, match="2x2"):
        SyntheticMarket(specs, [[1.0]])
    with pytest.raises(ValueError):
        SyntheticMarket(specs, 1.0)
    with pytest.raises(ValueError, match="duplicate"):
        SyntheticMarket([specs[0], specs[0]])
    with pytest.raises(ValueError):
        GarchParams(alpha=0.5, beta=0.5)
    with pytest.raises(ValueError):
        SyntheticMarket([])
    with pytest.raises(KeyError):
        SyntheticMarket(specs).snapshot(99)
