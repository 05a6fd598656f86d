"""Market data that must not reach the engine: why, how many, and what to do about it.

Why one module: a replayed CSV, a LOBSTER pair, a Parquet file and the feed's own checks of
live data all drop bad input, and an operator needs one vocabulary of reasons (the keys of
``summary.json``'s ``md_rejected_by_reason`` and of the feed's ``md_rej_<reason>`` counters),
one logging rule (the first few rejections with file and row, then counts only: a dirty file
of a million rows must not write a million log lines) and one policy, ``[market] on_bad_row``:
``"skip"`` (count and go on) or ``"fail"`` (the first bad row stops the replay with a
:class:`BadRowError` naming file, row and reason).

:class:`MdValidator` holds the checks every market message passes before it is published (the
feed in ``gekko run``, the same wrapper in ``gekko backtest``, so both drop the same messages);
:func:`validate_rows` makes the same checks over columnar rows (``engine.md_columns``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from engine.md_columns import MdKind
from engine.messages import (
    Bar,
    BookDelta,
    BookSnapshot,
    ExchangeStatus,
    ExchangeStatusKind,
    MarkPrice,
    Quote,
    Trade,
)

__all__ = [
    "ON_BAD_ROW",
    "REASONS",
    "BadRowError",
    "MdValidator",
    "RejectCounter",
    "validate_rows",
    "validated",
]

log = logging.getLogger("gekko.md")

#: what ``[market] on_bad_row`` may say
ON_BAD_ROW = ("skip", "fail")

#: every reason a market-data row or message is rejected (fixed: each has a shm counter)
REASONS: dict[str, str] = {
    "malformed_row": "wrong number of fields",
    "missing_value": "an empty cell where a value is required",
    "bad_time": "timestamp not parseable or negative",
    "unparsable": "a number that is not one, or beyond int64 ticks/lots",
    "nan_value": "NaN or infinite price or size",
    "non_positive_price": "price <= 0, or rounds to 0 ticks",
    "bad_size": "negative size (zero for a trade)",
    "crossed": "bid >= ask (crossed or locked)",
    "unknown_instrument": "symbol or id not in [[instruments]]",
    "bad_side": "trade side not buy/sell/unknown",
    "bad_ohlc": "bar high/low inconsistent with open/close",
    "out_of_order_time": "earlier than data already published (stale)",
    "truncated": "file cut short: a torn last line, or rows missing from one of a pair",
    "bad_message": "LOBSTER message or book row that cannot be applied",
    "bad_status": "unknown exchange status",
}

_MIN_TS = -(2**63)

#: the first rejections are logged one per line, with file and row; the rest are only counted
LOG_FIRST = 5


class BadRowError(ValueError):
    """``on_bad_row = "fail"``: a bad row stopped the replay (the message names all three)."""

    def __init__(self, where: str, row: int, reason: str, detail: str = "") -> None:
        self.where, self.row, self.reason, self.detail = where, row, reason, detail
        at = f"{where} row {row}" if row >= 0 else where
        why = f"{reason} ({detail})" if detail else f"{reason} ({REASONS.get(reason, '')})"
        super().__init__(f'{at}: {why}; [market] on_bad_row = "fail" stops the replay here')


class RejectCounter:
    """Rejected market data counted by reason, logged sparingly, or fatal (``policy="fail"``).

    ``sink(reason, n)`` is told of each count (the feed turns it into shm counters); sources
    call :meth:`reject` with where the row came from (a file path, ``"feed"``) and its row
    number (the line number for a CSV file, -1 when there is none).
    """

    def __init__(
        self,
        policy: str = "skip",
        *,
        log_first: int = LOG_FIRST,
        sink: Callable[[str, int], None] | None = None,
    ) -> None:
        if policy not in ON_BAD_ROW:
            raise ValueError(f"on_bad_row must be one of {ON_BAD_ROW}, not {policy!r}")
        self.policy = policy
        self.log_first = log_first
        self.sink = sink
        self.counts: dict[str, int] = {}
        self.total = 0
        #: what a source repaired rather than rejected, as running totals by kind (a LOBSTER
        #: replay's ``lobster_heals``: levels re-aligned with the reference rows): not rejections
        self.repairs: dict[str, int] = {}
        #: no log lines while set (a restarted feed re-reading rows it already reported)
        self.quiet = False

    def reject(self, reason: str, where: str = "", row: int = -1, detail: str = "") -> None:
        """Count one rejected row; raises :class:`BadRowError` under ``policy="fail"``."""
        if reason not in REASONS:
            raise KeyError(f"unknown market-data reject reason {reason!r}")
        if self.policy == "fail":
            raise BadRowError(where, row, reason, detail)
        self.counts[reason] = self.counts.get(reason, 0) + 1
        self.total += 1
        if self.sink is not None:
            self.sink(reason, 1)
        if self.total <= self.log_first and not self.quiet:
            at = f"{where} row {row}" if row >= 0 else where
            log.warning(
                "market data rejected: %s: %s%s", at, reason, f" ({detail})" if detail else ""
            )
            if self.total == self.log_first:
                log.warning("market data rejected: further rejections are counted, not logged")

    def summary(self) -> str:
        """``"7 (crossed 2, nan_value 5)"``: the total and its reasons, for a closing log line."""
        parts = ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items()))
        return f"{self.total}" + (f" ({parts})" if parts else "")


class MdValidator:
    """The checks a market message passes before it is published (stateful: per-instrument
    time of the last quote, so a quote older than one already published is dropped as stale).

    ``check`` returns the reason to reject, or None. Messages it does not know (forecasts,
    controls) pass.
    """

    def __init__(self, instrument_ids: Iterable[int]) -> None:
        self.ids = frozenset(int(i) for i in instrument_ids)
        self._last_quote_ts: dict[int, int] = {}

    def check(self, msg: Any) -> str | None:
        t = type(msg)
        if t is ExchangeStatus:
            if msg.instrument_id != -1 and msg.instrument_id not in self.ids:
                return "unknown_instrument"
            return None if msg.status in tuple(ExchangeStatusKind) else "bad_status"
        if t not in (Quote, Trade, BookDelta, BookSnapshot, Bar, MarkPrice):
            return None
        if msg.instrument_id not in self.ids:
            return "unknown_instrument"
        if t is MarkPrice:
            return "non_positive_price" if msg.mark_px <= 0 else None
        if t is Quote:
            return self._quote(msg)
        if t is Trade:
            if msg.px <= 0:
                return "non_positive_price"
            return "bad_size" if msg.qty <= 0 else None
        if t is BookDelta:
            if msg.px <= 0:
                return "non_positive_price"
            return "bad_size" if msg.qty < 0 else None
        if t is Bar and min(msg.open, msg.high, msg.low, msg.close) <= 0:
            return "non_positive_price"
        return None

    def _quote(self, q: Quote) -> str | None:
        if q.bid_px < 0 or q.ask_px < 0:
            return "non_positive_price"
        if q.bid_qty < 0 or q.ask_qty < 0:
            return "bad_size"
        if q.bid_px > 0 and q.ask_px > 0 and q.bid_px >= q.ask_px:
            return "crossed"
        last = self._last_quote_ts.get(q.instrument_id)
        if last is not None and q.ts_event < last:
            return "out_of_order_time"
        self._last_quote_ts[q.instrument_id] = q.ts_event
        return None


def validated(
    source: Iterable[Any], validator: MdValidator, rejects: RejectCounter
) -> Iterator[Any]:
    """``source`` without the messages ``validator`` rejects (counted in ``rejects`` as row
    ``k`` of ``"feed"``): what the feed publishes, for the inline runtime of a backtest."""
    for k, msg in enumerate(source):
        reason = validator.check(msg)
        if reason is None:
            yield msg
        else:
            rejects.reject(reason, "feed", k)


# --- the same checks over columnar rows (engine.md_columns) ---------------------------------------

#: reasons a row can get, indexed by the codes of :func:`_row_reasons` (0: passes)
_ROW_REASONS = (
    "",
    "unknown_instrument",
    "non_positive_price",
    "bad_size",
    "crossed",
    "out_of_order_time",
    "bad_message",
)
_RC = {r: i for i, r in enumerate(_ROW_REASONS)}


def validate_rows(
    rows: np.ndarray,
    known_ids: Iterable[int],
    counter: RejectCounter,
    *,
    last_quote_ts: dict[int, int] | None = None,
    where: str = "feed",
    offset: int = 0,
) -> np.ndarray:
    """The ``MD_DTYPE`` rows :class:`MdValidator` would pass, vectorised.

    Each rejected row is counted in ``counter`` in row order (``where``, row ``offset + i``)
    with the validator's reason (a row of no known kind: ``bad_message``), so ``on_bad_row =
    "fail"`` raises the same :class:`BadRowError`. ``last_quote_ts`` carries the stale-quote
    check across batches: pass the same dict with each batch of one stream."""
    ids = np.fromiter((int(i) for i in known_ids), np.int64)
    code = _row_reasons(rows, ids)
    _stale_quotes(rows, code, {} if last_quote_ts is None else last_quote_ts)
    bad = np.flatnonzero(code)
    for i in bad.tolist():
        counter.reject(_ROW_REASONS[code[i]], where, offset + i)
    return rows if len(bad) == 0 else rows[code == 0]


def _row_reasons(rows: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """A reason code per row (0 = passes), the first failing check in MdValidator's order;
    the stale-quote check is :func:`_stale_quotes`'s."""
    code = np.zeros(len(rows), np.int8)
    kind, px, qty = rows["kind"], rows["px"], rows["qty"]
    quote, trade, delta = kind == MdKind.QUOTE, kind == MdKind.TRADE, kind == MdKind.DELTA
    bpx, apx = rows["bid_px"], rows["ask_px"]
    checks = (
        (~(quote | trade | delta), "bad_message"),
        (~np.isin(rows["instrument_id"], ids), "unknown_instrument"),
        (quote & ((bpx < 0) | (apx < 0)), "non_positive_price"),
        (quote & ((rows["bid_qty"] < 0) | (rows["ask_qty"] < 0)), "bad_size"),
        (quote & (bpx > 0) & (apx > 0) & (bpx >= apx), "crossed"),
        ((trade | delta) & (px <= 0), "non_positive_price"),
        (trade & (qty <= 0), "bad_size"),
        (delta & (qty < 0), "bad_size"),
    )
    for bad, reason in checks:
        code[bad & (code == 0)] = _RC[reason]
    return code


def _stale_quotes(rows: np.ndarray, code: np.ndarray, last: dict[int, int]) -> None:
    """Mark quotes older than the newest quote before them of their instrument (the running
    maximum: a stale quote lies below it, so counting it in does not move it), and record the
    newest per instrument in ``last``."""
    ok = (code == 0) & (rows["kind"] == MdKind.QUOTE)
    if not ok.any():
        return
    iid, ts = rows["instrument_id"], rows["ts_event"]
    for i in np.unique(iid[ok]).tolist():
        idx = np.flatnonzero(ok & (iid == i))
        t = ts[idx]
        before = np.maximum.accumulate(np.concatenate(([last.get(i, _MIN_TS)], t[:-1])))
        code[idx[t < before]] = _RC["out_of_order_time"]
        last[i] = max(int(before[-1]), int(t[-1]))
