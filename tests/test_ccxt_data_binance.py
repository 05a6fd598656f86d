"""CcxtDataClient against the local Binance.US server replaying the real capture byte for byte.

The book our client publishes (snapshot + deltas, applied in order) equals the book Binance's
documented snapshot + diff procedure builds (``tests/venues/binance_capture.py``) at every
update id the client emits, before and after each fault (a skipped diff, a silent stream, a
dropped connection); trades and top of book match the capture.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable

import pytest

from engine.instruments import Instrument, InstrumentTable
from engine.messages import BookDelta, BookSnapshot, Quote, Side, Trade
from engine.venues.ccxt_data import CcxtDataClient
from engine.venues.data import InstrumentRules, is_live
from tests.venues import binance_capture as bc

pytestmark = pytest.mark.skipif(not bc.available(), reason=bc.SKIP_REASON)

BTC = Instrument(
    instrument_id=3, symbol="BTC/USDT", venue="binanceus", tick_size=0.01, lot_size=0.00001
)


@pytest.fixture
def venue():
    """A server replaying the capture at 40x (about 9 s of data) and a client on it."""
    from tests.venues.binance import BinanceServer, CaptureMarket

    made: list = []

    def make(**settings) -> tuple:
        srv = BinanceServer(market=CaptureMarket(speed=40)).start()
        made.append(srv)
        base = {"rest_url": srv.rest_url, "ws_url": srv.ws_url, "marks": 100_000}
        client = CcxtDataClient("binanceus", "binanceus", InstrumentTable([BTC]), base | settings)
        made.append(client)
        client.connect()
        client.subscribe([BTC.instrument_id])
        return srv, client

    yield make
    for thing in reversed(made):
        if isinstance(thing, CcxtDataClient):
            thing.close()
        else:
            thing.stop()


def _drain(
    client: CcxtDataClient, msgs: list, until: Callable[[], bool], limit_s: float = 20
) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        msgs.extend(client.poll_updates(4096))
        if until():
            msgs.extend(client.poll_updates(1_000_000))
            return
        time.sleep(0.01)
    raise AssertionError(
        f"timed out: state {client.state()} ({client.state_reason}), {client.counters()}"
    )


def _books_after(msgs: list, n: int) -> int:
    """How many venue updates came after the ``n``-th snapshot (1-based)."""
    seen = 0
    after = 0
    for m in msgs:
        if type(m) is BookSnapshot:
            seen += 1
        elif seen >= n and type(m) is Quote:
            after += 1
    return after


class _Mirror:
    """The reference book in ticks/lots, stepped through the capture's diffs by update id."""

    def __init__(self) -> None:
        cap = bc.load()
        self.ref = bc.ReferenceBook(cap.snapshot)
        self.diffs = iter(cap.depth_diffs())
        self.sides: tuple[dict[int, int], dict[int, int]] = ({}, {})
        for side, levels in zip(self.sides, (self.ref.bids, self.ref.asks), strict=True):
            side.update((BTC.px_to_ticks(p), BTC.qty_to_lots(q)) for p, q in levels.items())

    def at(self, update_id: int) -> tuple[dict[int, int], dict[int, int]]:
        while self.ref.update_id < update_id:
            diff = next(self.diffs)
            if not self.ref.apply(diff):
                continue
            for side, levels in zip(self.sides, (diff["b"], diff["a"]), strict=True):
                for p, q in levels:
                    t, n = BTC.px_to_ticks(p), BTC.qty_to_lots(q)
                    if n:
                        side[t] = n
                    else:
                        side.pop(t, None)
        assert self.ref.update_id == update_id, f"no reference book at update id {update_id}"
        return self.sides

    def top(self, update_id: int, depth: int) -> tuple[dict[int, int], dict[int, int]]:
        bids, asks = self.at(update_id)
        if not depth:
            return bids, asks
        return (
            {p: bids[p] for p in heapq.nlargest(depth, bids)},
            {p: asks[p] for p in heapq.nsmallest(depth, asks)},
        )


def _check_books(msgs: list, client: CcxtDataClient, depth: int) -> int:
    """Apply our messages in order; at the end of every venue update compare with the
    reference at that update id; every quote is the top of the book it follows. Returns how
    many update ids were compared."""
    marks = dict(client.books[BTC.instrument_id].marks)
    mirror = _Mirror()
    ours: tuple[dict[int, int], dict[int, int]] = ({}, {})
    compared = 0
    for m in msgs:
        t = type(m)
        if t is BookSnapshot:
            ours[0].clear()
            ours[1].clear()
            ours[0].update(zip(m.bid_px, m.bid_qty, strict=True))
            ours[1].update(zip(m.ask_px, m.ask_qty, strict=True))
            seq = m.seq
        elif t is BookDelta:
            side = ours[0] if m.side == Side.BUY else ours[1]
            if m.qty:
                side[m.px] = m.qty
            else:
                side.pop(m.px, None)
            seq = m.seq
        elif t is Quote:
            bp, ap = max(ours[0]), min(ours[1])
            assert (m.bid_px, m.bid_qty, m.ask_px, m.ask_qty) == (bp, ours[0][bp], ap, ours[1][ap])
            continue
        else:
            continue
        if seq in marks:
            update_id = marks[seq]
            assert ours == mirror.top(update_id, depth), f"book differs at update id {update_id}"
            compared += 1
    return compared


def _capture_trades() -> dict[int, tuple[int, int, int, int]]:
    out = {}
    for f in bc.load().by_stream(bc.TRADE_STREAM):
        d = f.json()
        side = Side.SELL if d["m"] else Side.BUY  # the buyer made: the seller took
        out[d["t"]] = (BTC.px_to_ticks(d["p"]), BTC.qty_to_lots(d["q"]), side, d["T"] * 1_000_000)
    return out


def test_book_equals_binances_procedure_at_every_update_id_and_trades_match(venue):
    # the whole book: ccxt keeps at most `limit` levels a side (default 1000, the snapshot's
    # depth), Binance's procedure keeps every level a diff adds
    srv, client = venue(book_depth=0, snapshot_limit=5000)
    assert is_live(client) and client.live
    rules = client.instruments()
    assert isinstance(rules[0], InstrumentRules) and rules[0].instrument == BTC
    msgs: list = []
    _drain(client, msgs, lambda: sum(type(m) is Quote for m in msgs) >= 150)
    assert client.state() == "connected"
    client.close()  # the book stops here: what it published is all in msgs
    msgs.extend(client.poll_updates(10**7))
    assert client.counters() == {
        "gaps": 0,
        "resyncs": 0,
        "reconnects": 0,
    }
    snaps = [m for m in msgs if type(m) is BookSnapshot]
    assert len(snaps) == 1 and snaps[0].seq == 1
    # the captured REST snapshot carries no time: it goes out with the first diff's, as one
    # snapshot of the book at that diff's update id
    seq, update_id = client.books[BTC.instrument_id].marks[0]
    diff = next(d for d in bc.load().depth_diffs() if d["u"] == update_id)
    assert seq == 1 and snaps[0].ts_event == diff["E"] * 1_000_000
    seqs = [m.seq for m in msgs if type(m) in (BookSnapshot, BookDelta)]
    assert seqs == list(range(1, len(seqs) + 1))  # contiguous: the feed's book never gaps
    assert _check_books(msgs, client, depth=0) >= 150
    # and the final book equals the reference at the last update id, whole
    tracker = client.books[BTC.instrument_id]
    bids, asks = tracker.levels()
    ref_bids, ref_asks = _Mirror().at(tracker.venue_nonce)
    assert dict(bids) == ref_bids and dict(asks) == ref_asks
    # trades: each once, in order, exactly as captured
    trades = [m for m in msgs if type(m) is Trade]
    assert len(trades) >= 50
    ids = [t.trade_id for t in trades]
    assert ids == list(range(ids[0], ids[0] + len(ids)))
    captured = _capture_trades()
    assert [(t.px, t.qty, t.side, t.ts_event) for t in trades] == [captured[i] for i in ids]


def _after_fault(client, msgs, fault_done: Callable[[], bool]) -> None:
    """Wait until the fault was handled and the book came back and moved on."""
    _drain(
        client,
        msgs,
        lambda: fault_done() and client.state() == "connected" and _books_after(msgs, 2) >= 20,
    )


def test_gap_is_counted_resynced_and_the_book_is_right_again(venue):
    srv, client = venue(book_depth=100)
    msgs: list = []
    _drain(client, msgs, lambda: sum(type(m) is Quote for m in msgs) >= 20)
    srv.faults.arm("gap")
    _after_fault(client, msgs, lambda: client.resyncs >= 1)
    assert srv.gaps == 1
    assert client.gaps >= 1 and client.resyncs >= 1 and client.reconnects == 0
    assert sum(type(m) is BookSnapshot for m in msgs) == 1 + client.resyncs
    assert _check_books(msgs, client, depth=100) >= 40


def test_stall_reconnects_and_resyncs(venue):
    srv, client = venue(book_depth=100, stale_after_s=0.4, reconnect_min_s=0.05)
    msgs: list = []
    _drain(client, msgs, lambda: sum(type(m) is Quote for m in msgs) >= 20)
    srv.faults.arm("stall", seconds=1.0)
    states: set[str] = set()

    def done() -> bool:
        states.add(client.state())
        return client.reconnects >= 1

    _after_fault(client, msgs, done)
    assert "down" in states or "resyncing" in states
    # no frame, not even a pong, within stale_after_s: ccxt's keepalive failed the link
    assert client.resyncs >= 1 and "keepalive" in _reasons(client, msgs)
    assert _check_books(msgs, client, depth=100) >= 40


def test_disconnect_reconnects_and_resyncs(venue):
    srv, client = venue(book_depth=100, reconnect_min_s=0.05)
    msgs: list = []
    _drain(client, msgs, lambda: sum(type(m) is Quote for m in msgs) >= 20)
    accepted = srv.hub.accepted["market"]
    srv.faults.arm("disconnect")
    _after_fault(client, msgs, lambda: client.reconnects >= 1)
    assert srv.hub.accepted["market"] > accepted  # a new connection, subscribed again
    assert client.resyncs >= 1
    assert _check_books(msgs, client, depth=100) >= 40


def _reasons(client: CcxtDataClient, msgs: list) -> str:
    return " ".join(client.reasons)
