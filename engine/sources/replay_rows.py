"""Quote and trade files of a ``ReplaySource`` as MD rows, converted per distinct cell.

Why: the message form converts each row in Python (an instrument lookup, four memoised
Decimal conversions, a Quote, a heap merge): about 10 µs a row, more than the fast replay
spends on the row afterwards. Recorded prices and sizes repeat endlessly, so here each
*distinct* (instrument, cell) is converted once by the source's own ``_units`` (the one place
decimals become ticks and lots, same rounding, same reasons) and the rows take their values by
index; the checks, the merge order (time, then bars / streams / trades / quotes, then file,
then row) and the numbering (quote ``seq`` and missing trade ids per instrument) are the
message form's, in numpy. ``tests/test_replay_columnar.py`` compares both forms on dirty files.

Rejections are counted per file (bad lines, then bad times, then bad rows in file order), not
interleaved in merge order as the message form counts them: the counts are the same, the first
few logged lines may differ. Under ``on_bad_row = "fail"`` the caller uses the message form,
whose first error is the row the replay reaches first.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.md_columns import MdKind, empty

if TYPE_CHECKING:
    from engine.sources.replay import ReplaySource, _File

__all__ = ["file_rows"]

_INT64_LIMIT = 1 << 63
_REASONS: list[str] = [""]  # reason code -> name (0: good); grows as reasons appear
_CODE: dict[str, int] = {}


def _code(reason: str) -> int:
    if reason not in _CODE:
        _CODE[reason] = len(_REASONS)
        _REASONS.append(reason)
    return _CODE[reason]


def _encoded(arr: pa.ChunkedArray) -> tuple[np.ndarray, list[Any]]:
    """(index per row, distinct values; None last for the empty cells) of a column: the
    values are what ``to_pylist`` gives cell by cell, so each converts exactly as before."""
    try:
        d = arr.combine_chunks().dictionary_encode()
        values = d.dictionary.to_pylist()
        idx = d.indices.fill_null(len(values)).to_numpy(zero_copy_only=False)
        return idx.astype(np.int64), [*values, None]
    except (pa.ArrowException, TypeError, ValueError):  # a type pyarrow cannot hash (null)
        seen: dict[Any, int] = {}
        cells = arr.to_pylist()
        idx = np.fromiter((seen.setdefault(v, len(seen)) for v in cells), np.int64, len(cells))
        return idx, list(seen)


def _convert(keys: list[Any], convert: Callable[[Any], int]) -> tuple[np.ndarray, np.ndarray]:
    """(value, reason code) of each key: ``convert`` raises the replay's ``_Reject``."""
    from engine.sources.replay import _Reject

    vals = np.zeros(len(keys), np.int64)
    codes = np.zeros(len(keys), np.int16)
    for j, k in enumerate(keys):
        try:
            vals[j] = convert(k)
        except _Reject as r:
            codes[j] = _code(r.reason)
    return vals, codes


def _mapped(arr: pa.ChunkedArray, convert: Callable[[Any], int]) -> tuple[np.ndarray, ...]:
    """(value, reason code) per row, ``convert`` called once per distinct cell."""
    idx, values = _encoded(arr)
    vals, codes = _convert(values, convert)
    return vals[idx], codes[idx]


def _first(reason: np.ndarray, bad: np.ndarray | None, code: np.ndarray | int) -> None:
    """Set ``code`` where ``bad`` (all rows when None) and no reason is set yet."""
    free = reason == 0
    if bad is not None:
        free &= bad
    reason[free] = code[free] if isinstance(code, np.ndarray) else code


def _instruments(src: ReplaySource, f: _File) -> tuple[np.ndarray, np.ndarray]:
    """(instrument id, reason code) per row, as ``ReplaySource._instrument`` decides."""
    from engine.sources.replay import _Reject

    def by_key(k: Any) -> int:
        ins = src._instrument(_One(f, k), 0)
        if ins is None:  # pragma: no cover - _instrument raises instead
            raise _Reject("unknown_instrument")
        return ins.instrument_id

    for col in ("symbol", "instrument_id"):
        if col in f.arrays:
            return _mapped(f.arrays[col], by_key)
    assert src.default_symbol is not None
    iid = src.instruments.by_symbol(src.default_symbol).instrument_id
    return np.full(f.n, iid, np.int64), np.zeros(f.n, np.int16)


class _One:
    """A one-row stand-in for a file, so ``_instrument`` judges a single cell."""

    def __init__(self, f: _File, value: Any) -> None:
        self.cols = {c: [value] for c in ("symbol", "instrument_id") if c in f.arrays}


def _units(
    src: ReplaySource, iid: np.ndarray, arr: pa.ChunkedArray, unit: str
) -> tuple[np.ndarray, ...]:
    """(ticks or lots, reason code) per row: each distinct (instrument, cell) converted once
    by the source's ``_units``."""
    table = src.instruments
    idx, values = _encoded(arr)
    pair = iid * (len(values) + 1) + idx
    uniq, inv = np.unique(pair, return_inverse=True)
    keys = [(int(p) // (len(values) + 1), values[int(p) % (len(values) + 1)]) for p in uniq]
    vals, codes = _convert(
        keys, lambda k: src._units(table.by_id(k[0]), unit, k[1]) if k[0] in table else 0
    )
    return vals[inv], codes[inv]


# long because: the quote and trade checks in _quote_rows' / _trade_rows' order, one per line
def _file(src: ReplaySource, f: _File) -> tuple[np.ndarray, np.ndarray]:
    """(good rows as MD rows, reason code per row) of one quote or trade file."""
    from engine.sources.replay import _int, _side

    c = f.arrays
    iid, reason = _instruments(src, f)
    rows = empty(f.n)
    rows["instrument_id"] = np.where(reason == 0, iid, 0)
    if f.kind == "quotes":
        bid, r_bid = _units(src, iid, c["bid_px"], "px")
        ask, r_ask = _units(src, iid, c["ask_px"], "px")
        _first(reason, None, r_bid)
        _first(reason, None, r_ask)
        _first(reason, (bid <= 0) | (ask <= 0), _code("non_positive_price"))
        _first(reason, bid >= ask, _code("crossed"))
        rows["bid_px"], rows["ask_px"] = bid, ask
        for name in ("bid_qty", "ask_qty"):
            q, r_q = _units(src, iid, c[name], "qty")
            _first(reason, None, r_q)
            rows[name] = q
        rows["kind"] = MdKind.QUOTE
    else:
        px, r_px = _units(src, iid, c["px"], "px")
        _first(reason, None, r_px)
        _first(reason, px <= 0, _code("non_positive_price"))
        qty, r_qty = _units(src, iid, c["qty"], "qty")
        _first(reason, None, r_qty)
        _first(reason, qty <= 0, _code("bad_size"))
        side, r_side = _mapped(c["side"], _side)
        _first(reason, None, r_side)
        rows["px"], rows["qty"], rows["side"], rows["kind"] = px, qty, side, MdKind.TRADE
        if "trade_id" in c:
            tid, r_tid = _mapped(c["trade_id"], lambda v: 0 if v is None else _int(v))
            _first(reason, None, r_tid)
            rows["seq"] = tid
    return rows, reason


def _times(f: _File) -> np.ndarray:
    """The time column in int ns, -1 where it is no time: int64 cells at C speed (a CSV's
    text cast whole), anything else through the message form's parser."""
    arr = f.arrays["ts_event"]
    if pa.types.is_integer(arr.type) or pa.types.is_string(arr.type):
        try:
            ts = pc.cast(arr, pa.int64()).fill_null(-1).to_numpy(zero_copy_only=False)
            return np.where(ts >= 0, ts, -1).astype(np.int64)
        except (pa.ArrowException, ValueError):
            pass
    return np.fromiter(
        (t if t is not None and 0 <= t < _INT64_LIMIT else -1 for t in f.cols["ts_event"]),
        np.int64,
        f.n,
    )


def _cumcount(keys: np.ndarray) -> np.ndarray:
    """1, 2, 3, ... per distinct key, in array order."""
    order = np.argsort(keys, kind="stable")
    ks = keys[order]
    starts = np.flatnonzero(np.r_[True, ks[1:] != ks[:-1]])
    run = np.arange(len(ks)) - np.repeat(starts, np.diff(np.r_[starts, len(ks)]))
    out = np.empty(len(ks), np.int64)
    out[order] = run + 1
    return out


def file_rows(src: ReplaySource, batch_rows: int) -> Iterator[np.ndarray]:
    """Every quote and trade of ``src``'s files as time-ordered MD row batches (rejected rows
    counted in ``src``): what its message form yields, as rows."""
    from engine.sources.replay import _PRIO_QUOTE, _PRIO_TRADE

    for f in src._files:
        for line in f.bad_lines:
            src.reject("malformed_row", f.where, line)
    parts, keys = [], []
    for k, f in enumerate(src._files):
        ts = _times(f)
        for i in np.flatnonzero(ts < 0).tolist():
            src.reject("bad_time", f.where, f.lines[i])
        rows, reason = _file(src, f)
        reason[ts < 0] = 0
        order = np.argsort(ts, kind="stable")  # rows in time order, as the message form
        for i in order[reason[order] > 0].tolist():
            src.reject(_REASONS[reason[i]], f.where, f.lines[i])
        good = np.flatnonzero((reason == 0) & (ts >= 0))
        rows = rows[good]
        rows["ts_event"] = ts[good]
        parts.append(rows)
        prio = _PRIO_QUOTE if f.kind == "quotes" else _PRIO_TRADE
        keys.append((ts[good], np.full(len(good), prio), np.full(len(good), k), good))
    if not parts:
        return
    rows = np.concatenate(parts)
    ts, prio, file_k, row_i = (np.concatenate([kk[j] for kk in keys]) for j in range(4))
    rows = rows[np.lexsort((row_i, file_k, prio, ts))]
    quote = rows["kind"] == MdKind.QUOTE
    rows["seq"][quote] = _cumcount(rows["instrument_id"][quote])
    unnumbered = (rows["kind"] == MdKind.TRADE) & (rows["seq"] == 0)
    rows["seq"][unnumbered] = _cumcount(rows["instrument_id"][unnumbered])
    for i in range(0, len(rows), batch_rows):
        yield rows[i : i + batch_rows]
