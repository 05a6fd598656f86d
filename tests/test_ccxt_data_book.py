"""``engine.venues.ccxt_book``: ccxt books → BookSnapshot / BookDelta / Quote, ccxt trades →
Trade. Driven by ccxt's own order-book class over the real Binance capture (where present), the
published book equals Binance's documented reconstruction at every update id."""

from __future__ import annotations

from decimal import Decimal

import pytest
from ccxt.async_support.base.ws.order_book import OrderBook

from engine.book import L2Book
from engine.instruments import Instrument
from engine.messages import BookDelta, BookSnapshot, Quote, Side, Trade
from engine.venues.ccxt_book import BookTracker, TradeTracker
from engine.venues.data import SequenceGuard
from tests.venues import binance_capture as bc

BTC = Instrument(
    instrument_id=7, symbol="BTC/USDT", venue="binanceus", tick_size=0.01, lot_size=0.00001
)


def _book(bids, asks, nonce=None, ts=None) -> OrderBook:
    ob = OrderBook(
        {
            "bids": [[float(p), float(q)] for p, q in bids],
            "asks": [[float(p), float(q)] for p, q in asks],
        }
    )
    ob["nonce"], ob["timestamp"] = nonce, ts
    return ob


def _apply(mirror: tuple[dict, dict], msgs) -> None:
    for m in msgs:
        if type(m) is BookSnapshot:
            mirror[0].clear()
            mirror[1].clear()
            mirror[0].update(zip(m.bid_px, m.bid_qty, strict=True))
            mirror[1].update(zip(m.ask_px, m.ask_qty, strict=True))
        elif type(m) is BookDelta:
            side = mirror[0] if m.side == Side.BUY else mirror[1]
            if m.qty:
                side[m.px] = m.qty
            else:
                side.pop(m.px, None)


def test_snapshot_then_deltas_then_quote_with_contiguous_seq():
    tr = BookTracker(BTC, depth=0, marks=10)
    snapshot = _book([("100.01", "1"), ("100.00", "2")], [("100.02", "0.5")], nonce=10)
    assert tr.on_book(snapshot) == [] and tr.held  # no venue time at all yet: held
    first = tr.on_book(snapshot, venue_ns=3_000_000)  # a time seen elsewhere (a trade)
    assert not tr.held and [type(m) for m in first] == [BookSnapshot, Quote]
    snap = first[0]
    assert snap.ts_event == 3_000_000 and first[1].ts_event == 3_000_000
    assert (snap.bid_px, snap.bid_qty, snap.ask_px, snap.ask_qty, snap.seq) == (
        [10001, 10000],
        [100000, 200000],
        [10002],
        [50000],
        1,
    )
    msgs = tr.on_book(
        _book([("100.00", "3")], [("100.01", "0.5"), ("100.02", "0.5")], nonce=14, ts=5)
    )
    deltas = [m for m in msgs if type(m) is BookDelta]
    # removals first (never a crossed intermediate book), then changes; seq contiguous
    assert [(d.side, d.px, d.qty, d.seq) for d in deltas] == [
        (Side.BUY, 10001, 0, 2),
        (Side.BUY, 10000, 300000, 3),
        (Side.SELL, 10001, 50000, 4),
    ]
    assert all(d.ts_event == 5_000_000 for d in deltas)
    q = msgs[-1]
    assert type(q) is Quote and (q.bid_px, q.bid_qty, q.ask_px, q.ask_qty, q.seq) == (
        10000,
        300000,
        10001,
        50000,
        4,
    )
    assert list(tr.marks) == [(1, 10), (4, 14)]
    # venue time never goes back: an older book time keeps the last one
    older = tr.on_book(_book([("100.00", "4")], [("100.01", "0.5"), ("100.02", "0.5")], ts=1))
    assert {m.ts_event for m in older} == {5_000_000}
    tr.on_book(_book([("100.00", "3")], [("100.01", "0.5"), ("100.02", "0.5")], ts=5))
    # the same book again: nothing to say
    assert (
        tr.on_book(_book([("100.00", "3")], [("100.01", "0.5"), ("100.02", "0.5")], nonce=15, ts=6))
        == []
    )
    # after a drop the next book is published whole, with the next seq
    tr.drop()
    again = tr.on_book(_book([("99", "1")], [("101", "1")], nonce=40, ts=7))
    assert type(again[0]) is BookSnapshot and again[0].seq == 7
    guard, book = SequenceGuard(), L2Book(7)
    for m in first + msgs + again:
        assert guard.accept(m)
        if type(m) in (BookDelta, BookSnapshot):
            book.apply(m)
    assert guard.gaps == 0 and book.gap_count == 0


def test_depth_limits_the_published_view_and_lots_below_one_are_absent():
    tr = BookTracker(BTC, depth=2)
    tr.on_book(
        _book([("10", "1"), ("9", "1"), ("8", "1")], [("11", "1"), ("12", "0.000001")], ts=1)
    )
    assert tr.levels() == ([(1000, 100000), (900, 100000)], [(1100, 100000)])
    msgs = tr.on_book(_book([("9", "1"), ("8", "1")], [("11", "1"), ("12", "0.000001")], ts=2))
    # the best bid left: the third level enters the top two
    assert [(d.px, d.qty) for d in msgs if type(d) is BookDelta] == [(1000, 0), (800, 100000)]


def test_trades_once_each_with_the_aggressor_side():
    tt = TradeTracker(BTC)
    t1 = {
        "id": "3735683259",
        "price": 61837.63,
        "amount": 0.02,
        "side": "sell",
        "timestamp": 1723161255342,
    }
    t2 = {
        "id": "3735683260",
        "price": 61837.64,
        "amount": 0.001,
        "side": "buy",
        "timestamp": 1723161255343,
    }
    out = tt.on_trades([t1])
    assert out == [
        Trade(7, 6183763, 2000, Side.SELL, 1723161255342_000_000, out[0].ts_recv, 3735683259)
    ]
    out = tt.on_trades([t1, t2])  # ccxt's rolling cache hands t1 back again
    assert [(t.trade_id, t.side, t.qty) for t in out] == [(3735683260, Side.BUY, 100)]


@pytest.mark.skipif(not bc.available(), reason=bc.SKIP_REASON)
def test_published_book_equals_binances_procedure_at_every_update_id():
    """ccxt's own OrderBook fed the capture's diffs as ccxt's Binance handler applies them; our
    messages, applied in order, give Binance's documented book at every update id."""
    cap = bc.load()
    snap = cap.snapshot
    ob = OrderBook(
        {
            "bids": [[float(p), float(q)] for p, q in snap["bids"]],
            "asks": [[float(p), float(q)] for p, q in snap["asks"]],
        }
    )
    ob["nonce"] = cap.last_update_id
    tr = BookTracker(BTC, depth=0, marks=0)
    ours: tuple[dict, dict] = ({}, {})
    _apply(ours, tr.on_book(ob, venue_ns=1))
    ref = bc.ReferenceBook(snap)
    mirror: tuple[dict, dict] = ({}, {})
    for side, levels in ((mirror[0], ref.bids), (mirror[1], ref.asks)):
        side.update((BTC.px_to_ticks(p), BTC.qty_to_lots(q)) for p, q in levels.items())
    assert ours == mirror
    compared = 0
    for diff in cap.depth_diffs():
        if not ref.apply(diff):
            continue
        for side, mside, levels in (
            (ob["bids"], mirror[0], diff["b"]),
            (ob["asks"], mirror[1], diff["a"]),
        ):
            for p, q in levels:
                side.store(float(p), float(q))
                t, n = BTC.px_to_ticks(p), BTC.qty_to_lots(q)
                if n:
                    mside[t] = n
                else:
                    mside.pop(t, None)
        ob["nonce"], ob["timestamp"] = ref.update_id, diff["E"]
        _apply(ours, tr.on_book(ob))
        assert ours == mirror, f"book differs at update id {ref.update_id}"
        compared += 1
    assert compared == 3449
    # and the reference's own Decimal book agrees with the tick mirror at the end
    assert {BTC.px_to_ticks(p): BTC.qty_to_lots(q) for p, q in ref.bids.items()} == mirror[0]
    assert Decimal(max(ref.bids)) < Decimal(min(ref.asks))


def test_sizes_convert_exactly_as_the_instrument_rounds():
    from engine.venues.ccxt_book import _Units

    u = _Units(BTC)
    for qty in (0.3, 3.78826, 0.00001, 1234.56789, 0.123456, 0.000025, 0.000015, 0.0, 1e-9):
        assert u.lots(qty) == BTC.qty_to_lots(qty), qty
    assert u.lots("0.000025") == 2  # half-even, through the instrument
