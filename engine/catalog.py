"""The market-data catalog: a Parquet dataset of ``MD_DTYPE`` rows, partitioned by venue,
instrument and date, and the writer that fills it.

Why: replaying months of ticks from CSV means parsing every decimal again on every run, and a
backtest of one instrument over one week should read that week of that instrument, not the
whole archive. The catalog stores the rows once, typed (ns timestamps, int64 ticks and lots),
in hive directories ``venue=<v>/instrument=<symbol>/date=<YYYY-MM-DD>/`` that a reader prunes
by path and row-group statistics (``engine.catalog_read``). Contract and layout in full:
docs/data-catalog.md.

Ticks and lots mean nothing without their tick and lot size, so the catalog keeps each
instrument's in ``_instruments.json`` and refuses to mix two sizes under one symbol. Snapshot
rows (``SNAPSHOT``, catalog-only) open a book instrument's day: a day's file of book rows can be
read without the days before it. Within one part file rows are in time order (the writer
refuses a row older than the part's last, counted as ``out_of_order_time``).
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from engine.instruments import Instrument
from engine.md_columns import BATCH_ROWS, MD_DTYPE
from engine.md_rejects import RejectCounter

__all__ = [
    "DAY_NS",
    "FILE_SCHEMA",
    "META_FILE",
    "PARTITION_SCHEMA",
    "SNAPSHOT",
    "CatalogUnits",
    "CatalogWriter",
    "day_of",
    "concat_rows",
    "list_catalog",
    "load_units",
    "part_priority",
    "partition_dir",
    "pick_rows",
    "to_table",
]

DAY_NS = 86_400 * 10**9
#: catalog-only row kind: one level of a book snapshot (side, px, qty; ``seq`` the snapshot's).
#: A snapshot of an empty book is one row with side 0. Readers turn these into a BookSnapshot.
SNAPSHOT = 4
META_FILE = "_instruments.json"
TS_TYPE = pa.timestamp("ns", tz="UTC")

#: the columns of every part file: MD_DTYPE's, ``ts_event`` as a UTC ns timestamp
FILE_SCHEMA = pa.schema(
    [
        pa.field(name, TS_TYPE if name == "ts_event" else pa.from_numpy_dtype(MD_DTYPE[name]))
        for name in MD_DTYPE.names
    ]
)
#: the hive directories above the files
PARTITION_SCHEMA = pa.schema(
    [("venue", pa.string()), ("instrument", pa.string()), ("date", pa.date32())]
)


@dataclass(frozen=True, slots=True)
class CatalogUnits:
    """What the ticks and lots of one instrument's rows mean."""

    tick_size: float
    lot_size: float

    def matches(self, ins: Instrument) -> bool:
        return self.tick_size == ins.tick_size and self.lot_size == ins.lot_size


def day_of(ts_ns: int) -> date:
    """The UTC date of a time in ns (the ``date`` partition of its row)."""
    return datetime.fromtimestamp(ts_ns // DAY_NS * 86_400, UTC).date()


def partition_dir(root: Path, venue: str, symbol: str, day: date) -> Path:
    """``root/venue=<v>/instrument=<symbol>/date=<day>`` (values URI-escaped: ``BTC/USDT``)."""
    esc = quote(symbol, safe="")
    return root / f"venue={quote(venue, safe='')}" / f"instrument={esc}" / f"date={day}"


def part_priority(name: str) -> int:
    """Merge order of part files at equal times, as the replay orders its inputs: book streams
    (a LOBSTER trade comes before the delta it caused: one file keeps that order) first, then
    trades, then quotes."""
    base = Path(name).name
    return 2 if base.startswith("quotes") else 1 if base.startswith("trades") else 0


def load_units(root: Path) -> dict[str, dict[str, CatalogUnits]]:
    """``{venue: {symbol: units}}`` from the catalog's ``_instruments.json`` ({} when none)."""
    path = Path(root) / META_FILE
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text())
        return {
            str(v): {
                str(s): CatalogUnits(float(u["tick_size"]), float(u["lot_size"]))
                for s, u in syms.items()
            }
            for v, syms in raw.items()
        }
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as e:
        raise ValueError(f"catalog {path}: not a catalog index ({type(e).__name__})") from None


def _save_units(root: Path, units: Mapping[str, Mapping[str, CatalogUnits]]) -> None:
    body = {
        v: {s: {"tick_size": u.tick_size, "lot_size": u.lot_size} for s, u in sorted(m.items())}
        for v, m in sorted(units.items())
    }
    tmp = root / f".{META_FILE}.{secrets.token_hex(4)}"
    tmp.write_text(json.dumps(body, indent=1) + "\n")
    os.replace(tmp, root / META_FILE)


#: MD rows as opaque records: numpy copies a packed structured dtype field by field (~15x
#: slower to concatenate, index or mask); these views copy whole records
_RECORD = np.dtype((np.void, MD_DTYPE.itemsize))


def concat_rows(parts: list[np.ndarray]) -> np.ndarray:
    """``np.concatenate`` of MD row arrays, as whole records."""
    if not parts:
        return np.zeros(0, MD_DTYPE)
    return np.concatenate([p.view(_RECORD) for p in parts]).view(MD_DTYPE)


def pick_rows(rows: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``rows[index]`` (an int or bool index), as whole records."""
    return rows.view(_RECORD)[index].view(MD_DTYPE)


def to_table(rows: np.ndarray) -> pa.Table:
    """Rows (``MD_DTYPE``, ``SNAPSHOT`` kinds included) as a table of ``FILE_SCHEMA``."""
    cols = [pa.array(rows[f.name], type=f.type) for f in FILE_SCHEMA]
    return pa.Table.from_arrays(cols, schema=FILE_SCHEMA)


class _PartFile:
    """One part file being written: a temporary name until the import completes."""

    def __init__(self, final: Path) -> None:
        self.final = final
        self.tmp = final.with_name(f".tmp-{final.name}")
        self.writer: pq.ParquetWriter | None = None


class CatalogWriter:
    """Writes one import's rows into the catalog under part name ``part``.

    An import replaces, in every partition it writes, the files of the same part name that an
    earlier import left there (re-importing a file does not double it); the new files appear
    only when :meth:`close` succeeds (until then they are hidden ``.tmp-`` files, which readers
    skip). Use it as a context manager: an exception discards what this import wrote.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        venue: str,
        part: str,
        instruments: Iterable[Instrument],
        *,
        rejects: RejectCounter | None = None,
        row_group_rows: int = BATCH_ROWS,
    ) -> None:
        if not venue or not part.replace("_", "").isalnum():
            raise ValueError(f"venue and part must be names (part: letters, digits, _): {part!r}")
        self.root = Path(root)
        self.venue = venue
        self.part = part
        self.rejects = rejects if rejects is not None else RejectCounter()
        self.row_group_rows = int(row_group_rows)
        self._token = secrets.token_hex(4)
        self._symbols: dict[int, str] = {}
        self._open: dict[tuple[int, int], _PartFile] = {}  # by (instrument id, day)
        self._closed: list[_PartFile] = []  # written, published at close()
        self._numbers: dict[tuple[int, int], int] = {}  # files so far per partition
        self._last_ts: dict[tuple[int, int], int] = {}  # per partition: rows never go back
        self._max_day = 0
        #: rows written per (symbol, date)
        self.written: dict[tuple[str, date], int] = {}
        self.root.mkdir(parents=True, exist_ok=True)
        units = load_units(self.root)
        mine = units.setdefault(venue, {})
        for ins in instruments:
            have = mine.get(ins.symbol)
            if have is not None and not have.matches(ins):
                raise ValueError(
                    f"catalog {self.root}: {venue}/{ins.symbol} is stored with tick_size "
                    f"{have.tick_size} / lot_size {have.lot_size}, not {ins.tick_size} / "
                    f"{ins.lot_size}: one symbol's rows must have one unit"
                )
            mine[ins.symbol] = CatalogUnits(ins.tick_size, ins.lot_size)
            self._symbols[ins.instrument_id] = ins.symbol
        _save_units(self.root, units)

    def __enter__(self) -> CatalogWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def write(self, rows: np.ndarray) -> int:
        """Append rows (any instruments and days, each instrument's in time order); returns
        how many were written. A row of an instrument the writer was not given is rejected as
        ``unknown_instrument``, one older than its part's last as ``out_of_order_time``."""
        if len(rows) == 0:
            return 0
        days = rows["ts_event"] // DAY_NS
        iids = rows["instrument_id"].astype(np.int64)
        keys = iids * (1 << 32) + days  # one key per (instrument, day)
        order = np.argsort(keys, kind="stable")
        bounds = np.flatnonzero(np.diff(keys[order])) + 1
        done = 0
        for idx in np.split(order, bounds):
            iid, day = int(iids[idx[0]]), int(days[idx[0]])
            done += self._write_group(iid, day, pick_rows(rows, np.sort(idx)))
        return done

    def _write_group(self, iid: int, day: int, rows: np.ndarray) -> int:
        sym = self._symbols.get(iid)
        where = f"catalog import {self.venue}/{sym or iid}"
        if sym is None:
            for _ in range(len(rows)):
                self.rejects.reject("unknown_instrument", where)
            return 0
        ts = rows["ts_event"]
        last = self._last_ts.get((iid, day), -(1 << 63))
        late = ts < np.maximum.accumulate(np.concatenate(([last], ts)))[:-1]
        if late.any():  # older than a row already written to this partition
            for _ in range(int(late.sum())):
                self.rejects.reject("out_of_order_time", where)
            rows = pick_rows(rows, ~late)
            if len(rows) == 0:
                return 0
        f = self._file(iid, day, sym)
        f.writer.write_table(to_table(rows), row_group_size=self.row_group_rows)  # type: ignore[union-attr]
        self._last_ts[(iid, day)] = int(rows["ts_event"][-1])
        key = (sym, day_of(day * DAY_NS))
        self.written[key] = self.written.get(key, 0) + len(rows)
        return len(rows)

    def _file(self, iid: int, day: int, sym: str) -> _PartFile:
        """The open file of a partition; a time-ordered import is done with a day once it is
        two days on, so those files are closed (an import of years keeps few files open)."""
        if day > self._max_day:
            self._max_day = day
            for key in [k for k in self._open if k[1] < day - 1]:
                self._retire(key)
        f = self._open.get((iid, day))
        if f is None:
            n = self._numbers.get((iid, day), 0)
            self._numbers[(iid, day)] = n + 1
            name = f"{self.part}-{self._token}-{n:04d}.parquet"
            final = partition_dir(self.root, self.venue, sym, day_of(day * DAY_NS)) / name
            f = self._open[(iid, day)] = _PartFile(final)
            f.tmp.parent.mkdir(parents=True, exist_ok=True)
            f.writer = pq.ParquetWriter(f.tmp, FILE_SCHEMA, compression="zstd")
        return f

    def _retire(self, key: tuple[int, int]) -> None:
        f = self._open.pop(key)
        if f.writer is not None:
            f.writer.close()
        self._closed.append(f)

    def close(self) -> dict[tuple[str, date], int]:
        """Publish this import: close its files, move them in, drop the files of the same part
        name earlier imports left in those partitions. Returns rows per (symbol, date)."""
        for key in list(self._open):
            self._retire(key)
        for f in self._closed:  # the new files first: a crash here leaves both, never neither
            os.replace(f.tmp, f.final)
        mine = {f.final for f in self._closed}
        for d in {f.final.parent for f in self._closed}:
            for old in d.glob(f"{self.part}-*.parquet"):
                if old not in mine:
                    old.unlink()
        self._closed.clear()
        return self.written

    def abort(self) -> None:
        """Discard what this import wrote (the catalog is as it was before)."""
        for key in list(self._open):
            self._retire(key)
        for f in self._closed:
            f.tmp.unlink(missing_ok=True)
        self._closed.clear()
        self.written.clear()


def list_catalog(root: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """What the catalog holds, one entry per venue and instrument: first and last date, days,
    rows (from the files' footers: no data read), bytes, part names."""
    import pyarrow.dataset as ds

    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"catalog {root}: no such directory")
    dset = ds.dataset(
        root, format="parquet", partitioning=ds.partitioning(PARTITION_SCHEMA, flavor="hive")
    )
    acc: dict[tuple[str, str], dict[str, Any]] = {}
    for frag in dset.get_fragments():
        keys = ds.get_partition_keys(frag.partition_expression)
        e = acc.setdefault(
            (keys["venue"], keys["instrument"]),
            {"days": set(), "rows": 0, "bytes": 0, "parts": set()},
        )
        e["days"].add(keys["date"])
        e["rows"] += frag.metadata.num_rows
        e["bytes"] += os.path.getsize(frag.path)
        e["parts"].add(Path(frag.path).name.split("-", 1)[0])
    units = load_units(root)
    out = []
    for (venue, sym), e in sorted(acc.items()):
        u = units.get(venue, {}).get(sym)
        out.append(
            {
                "venue": venue,
                "instrument": sym,
                "first": str(min(e["days"])),
                "last": str(max(e["days"])),
                "days": len(e["days"]),
                "rows": e["rows"],
                "bytes": e["bytes"],
                "parts": sorted(e["parts"]),
                "tick_size": u.tick_size if u else None,
                "lot_size": u.lot_size if u else None,
            }
        )
    return out
