"""Exec's per-tick path stays off numba's slow argument typing.

Why this exists: the simulated venue inside exec applied every Quote to its book with the
``Side`` IntEnum members as arguments of the jitted ``apply_delta``. Numba types an enum argument
afresh on every call (~20 µs each), which made exec spend ~150 µs of CPU per quote; the fix hands
the book plain ints. These tests pin that, and that the book the venue matches against is the
same as before.
"""

from __future__ import annotations

import engine.book as book_mod
from engine.instruments import Instrument
from engine.messages import (
    BookSnapshot,
    NewOrder,
    OrderAccepted,
    OrderType,
    Quote,
    Side,
    TimeInForce,
)
from engine.venues.sim import SimExchange

IID = 1


def _venue() -> SimExchange:
    inst = Instrument(instrument_id=IID, symbol="TEST", tick_size=0.01, lot_size=1)
    v = SimExchange([inst], latency_ns=0, jitter_ns=0)
    snap = BookSnapshot(IID, [10_000, 9_999], [50, 60], [10_002, 10_003], [40, 70], 1, 1, 1)
    v.on_market_data(snap, 1)
    return v


def _quotes() -> list[Quote]:
    # improve, then worsen both sides (levels better than the quote are removed), then one-sided
    return [
        Quote(IID, 10_001, 5, 10_002, 9, 2, 2, 2),
        Quote(IID, 9_998, 7, 10_004, 3, 3, 3, 3),
        Quote(IID, 9_998, 8, 0, 0, 4, 4, 4),
    ]


def test_quotes_reach_the_jitted_book_with_plain_int_sides(monkeypatch) -> None:
    seen: list[type] = []
    orig = book_mod.L2Book.apply_delta

    def spy(self, side, px, qty, seq=0):  # type: ignore[no-untyped-def]
        seen.append(type(side))
        return orig(self, side, px, qty, seq)

    monkeypatch.setattr(book_mod.L2Book, "apply_delta", spy)
    v = _venue()
    for t, q in enumerate(_quotes(), start=2):
        v.on_market_data(q, t)
    assert seen, "quotes no longer update the book through apply_delta"
    assert set(seen) == {int}


def test_no_enum_specialisation_is_compiled_by_quotes() -> None:
    before = set(book_mod._apply_delta_nb.signatures)
    v = _venue()
    for t, q in enumerate(_quotes(), start=2):
        v.on_market_data(q, t)
    added = set(book_mod._apply_delta_nb.signatures) - before
    assert not any("Enum" in str(sig) for sig in added), added


def test_book_after_quotes_is_the_quoted_top() -> None:
    v = _venue()
    q1, q2, q3 = _quotes()
    v.on_market_data(q1, 2)
    b = v.book(IID)
    assert b.best_bid() == (10_001, 5)
    assert b.best_ask() == (10_002, 9)
    assert b.level(int(Side.BUY), 1) == (10_000, 50)
    v.on_market_data(q2, 3)
    assert b.best_bid() == (9_998, 7)  # 10_001, 10_000 and 9_999 are gone
    assert b.best_ask() == (10_004, 3)  # 10_002 and 10_003 are gone
    # the venue matches against that book: a buy at the ask takes 2 of its 3
    lim, ioc = int(OrderType.LIMIT), int(TimeInForce.IOC)
    evs = v.submit(NewOrder(7, 1, IID, int(Side.BUY), lim, ioc, 10_004, 2, 3, 3), 3)
    assert any(type(e) is OrderAccepted for e in evs)
    assert v.positions().get(IID, 0) == 2
    v.on_market_data(q3, 4)
    assert b.best_bid() == (9_998, 8)
    assert b.best_ask() == (0, 0)  # a quote's empty side empties that side of the book
