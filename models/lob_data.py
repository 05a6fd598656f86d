"""Book-event streams for microstructure models: a LOBSTER day, a Binance capture, or engine
market-data messages, all as the same arrays (``BookEvents``) that ``models.lob_features`` reads.

Why one shape: training reads files, the infer process reads the ``md`` ring; both go through
``EventBuilder`` or produce what it would, so a feature row means the same in both. A LOBSTER
execution is a trade by the side opposite the resting order (its ``direction``); Binance trades
carry the aggressor's side.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.lobster import LobsterEvent, read_lobster
from engine.messages import BookDelta, BookSnapshot, Quote, Trade

LOBSTER_TICK = 100  # one cent in LOBSTER's 1/10,000 dollars


@dataclass
class BookEvents:
    """One instrument's events: the book after each one (levels best first, size 0 = none)
    and the aggressor-signed size traded at it (0: none)."""

    name: str
    ts: np.ndarray  # int64 ns
    bid_px: np.ndarray  # int64 [n, levels]
    bid_sz: np.ndarray
    ask_px: np.ndarray
    ask_sz: np.ndarray
    trade: np.ndarray  # float64
    tick: float
    px_unit: float = 1.0  # currency per price unit (LOBSTER: 1e-4 dollars)
    qty_unit: float = 1.0  # base units per size unit (LOBSTER: a share; Binance: 1e-5 BTC)
    one_per_time: bool = False  # one event per time (``coalesced``): serving must do the same

    def __len__(self) -> int:
        return len(self.ts)

    @property
    def mid(self) -> np.ndarray:
        """The mid after each event (NaN where the book is one-sided)."""
        ok = (self.bid_sz[:, 0] > 0) & (self.ask_sz[:, 0] > 0)
        m = 0.5 * (self.bid_px[:, 0] + self.ask_px[:, 0]).astype(np.float64)
        return np.where(ok, m, np.nan)

    def coalesced(self) -> BookEvents:
        """One event per timestamp: the book after the last message at that time, the sizes
        traded at it summed. A marketable order that takes several resting orders arrives as
        several messages with one time; the states between them were never observable, and a
        model scored on them would 'predict' a move already under way."""
        if len(self.ts) == 0:
            return self
        last = np.flatnonzero(np.r_[self.ts[1:] != self.ts[:-1], True])
        first = np.r_[0, last[:-1] + 1]
        trade = np.add.reduceat(self.trade, first)
        return BookEvents(
            self.name,
            self.ts[last],
            self.bid_px[last],
            self.bid_sz[last],
            self.ask_px[last],
            self.ask_sz[last],
            trade,
            self.tick,
            self.px_unit,
            self.qty_unit,
            True,
        )

    def slice(self, lo: int, hi: int) -> BookEvents:
        return BookEvents(
            self.name,
            self.ts[lo:hi],
            self.bid_px[lo:hi],
            self.bid_sz[lo:hi],
            self.ask_px[lo:hi],
            self.ask_sz[lo:hi],
            self.trade[lo:hi],
            self.tick,
            self.px_unit,
            self.qty_unit,
            self.one_per_time,
        )


def lobster_events(message_path: str | Path, orderbook_path: str | Path) -> BookEvents:
    """A LOBSTER file pair as events: every message row, the book after it."""
    msgs, books = read_lobster(message_path, orderbook_path)
    k = books.shape[1] // 4
    ask_px, ask_sz = books[:, 0::4], books[:, 1::4]
    bid_px, bid_sz = books[:, 2::4], books[:, 3::4]
    prints = (msgs["type"] == LobsterEvent.EXECUTION) | (
        msgs["type"] == LobsterEvent.HIDDEN_EXECUTION
    )
    trade = np.where(prints, -msgs["direction"] * msgs["size"], 0).astype(np.float64)
    name = Path(message_path).name.split("_")[0]
    return BookEvents(
        f"{name}-L{k}",
        msgs["time_ns"].astype(np.int64),
        np.ascontiguousarray(bid_px),
        np.ascontiguousarray(np.maximum(bid_sz, 0)),
        np.ascontiguousarray(ask_px),
        np.ascontiguousarray(np.maximum(ask_sz, 0)),
        trade,
        float(LOBSTER_TICK),
        1e-4,
        1.0,
    )


def lobster_days(data_dir: str | Path) -> dict[str, tuple[Path, Path]]:
    """The full-day LOBSTER pairs in ``data_dir`` (``<TICKER>-L<levels>`` -> paths); the short
    extracts (a thousand rows) are left out: too few events to train on."""
    out: dict[str, tuple[Path, Path]] = {}
    for msg in sorted(Path(data_dir).glob("*_message_*.csv")):
        parts = msg.stem.split("_")  # TICKER, date, start, end, "message", levels
        if parts[2] != "34200000" or parts[3] != "57600000" or msg.stat().st_size < 500_000:
            continue  # not the whole session (an extract of the day's first rows)
        book = msg.with_name(msg.name.replace("_message_", "_orderbook_"))
        if book.exists():
            out[f"{parts[0]}-L{parts[5]}"] = (msg, book)
    return out


class EventBuilder:
    """Engine market-data messages of one instrument into events, as the infer process sees
    them: a quote or a book change is an event with the book after it, a trade an event at the
    current book. ``levels`` of the book are kept (a quote sets the touch only)."""

    def __init__(self, instrument_id: int, levels: int = 1) -> None:
        from engine.book import L2Book

        self.iid = instrument_id
        self.levels = levels
        self.book = L2Book(instrument_id)
        self.bid_px = np.zeros(levels, np.int64)
        self.bid_sz = np.zeros(levels, np.int64)
        self.ask_px = np.zeros(levels, np.int64)
        self.ask_sz = np.zeros(levels, np.int64)

    def on_message(self, msg: Any) -> tuple[int, float] | None:
        """(ts, signed traded size) when ``msg`` makes an event (the arrays hold its book)."""
        if getattr(msg, "instrument_id", None) != self.iid:
            return None
        t = type(msg)
        if t is Trade:
            return msg.ts_event, float(msg.side * msg.qty)
        if t is Quote:
            self.bid_px[0], self.bid_sz[0] = msg.bid_px, msg.bid_qty
            self.ask_px[0], self.ask_sz[0] = msg.ask_px, msg.ask_qty
            return msg.ts_event, 0.0
        if t is BookDelta or t is BookSnapshot:
            self.book.apply(msg)
            self._copy_levels()
            return msg.ts_event, 0.0
        return None

    def _copy_levels(self) -> None:
        for side, px, sz in ((1, self.bid_px, self.bid_sz), (-1, self.ask_px, self.ask_sz)):
            p, q = self.book.depth(side, self.levels)
            px[:] = 0
            sz[:] = 0
            px[: len(p)] = p
            sz[: len(q)] = q


def events_from_messages(
    msgs: Any,
    instrument_id: int,
    tick: float,
    levels: int = 1,
    name: str = "",
    px_unit: float = 1.0,
    qty_unit: float = 1.0,
) -> BookEvents:
    """A message stream (a capture, a replay) as ``BookEvents`` through ``EventBuilder``."""
    b = EventBuilder(instrument_id, levels)
    ts: list[int] = []
    rows: list[np.ndarray] = []
    trade: list[float] = []
    for m in msgs:
        ev = b.on_message(m)
        if ev is None:
            continue
        ts.append(ev[0])
        trade.append(ev[1])
        rows.append(np.concatenate([b.bid_px, b.bid_sz, b.ask_px, b.ask_sz]))
    arr = np.array(rows, np.int64).reshape(len(rows), 4 * levels)
    return BookEvents(
        name,
        np.array(ts, np.int64),
        np.ascontiguousarray(arr[:, :levels]),
        np.ascontiguousarray(arr[:, levels : 2 * levels]),
        np.ascontiguousarray(arr[:, 2 * levels : 3 * levels]),
        np.ascontiguousarray(arr[:, 3 * levels :]),
        np.array(trade, np.float64),
        float(tick),
        px_unit,
        qty_unit,
    )


def binance_events(path: str | Path) -> BookEvents:
    """The Binance BTCUSDT capture's book tickers and trades as top-of-book events (prices in
    cents, sizes in 1e-5 BTC)."""
    from engine.instruments import Instrument
    from engine.sources.binance_capture import capture_messages

    ins = Instrument(instrument_id=1, symbol="BTC/USDT", tick_size=0.01, lot_size=0.00001)
    msgs = (m for m in capture_messages(path, ins) if type(m) in (Quote, Trade))
    return events_from_messages(
        msgs, 1, tick=1.0, name="BTCUSDT-binance", px_unit=0.01, qty_unit=1e-5
    )
