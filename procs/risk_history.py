"""Seed the risk process's returns window at start, so VaR and correlation apply from the
first order instead of ``min_history`` intervals later (and again after every restart).

Where the prices come from, in order:

1. **The record** (storage on): the mids (two-sided quotes; bar closes for a symbol a run has
   no quotes of) of the configured symbols, over the last ``returns_window`` x
   ``returns_interval_s``. Runs are matched by *symbol* through ``run_instruments`` (ids may be
   reassigned between runs; ticks become prices with that run's tick size). Times are the
   venue's (``ts_event``, ns since the epoch). The runs are read newest first; at each sample
   time the newest run with a price there wins (a run's data is bounded by the start of the run
   after it, so a simulated clock that restarts at 0 in every run is never stitched onto
   another run's). Each sample is the last mid at or before its time: one index probe per
   instrument and sample, so the cost does not grow with the quote rate.
2. **``[risk] history_file``** (CSV or Parquet: ``timestamp``, ``symbol``, ``price``): for a
   symbol the record gives fewer than ``min_history`` returns, e.g. daily closes from elsewhere
   for ``returns_interval_s = 86400``. Bad rows are counted by reason and logged; a file that
   cannot be read at all is logged naming the key; neither stops risk.

Only points younger than ``history_max_age_s`` (< 0: twice the window span; 0: any age) count:
yesterday's intraday history must not pass for today's. Age is measured from the wall clock at
a run's first start, and from the run's own newest recorded price after a restart (``run_clock``:
the market's clock, which for the simulated market starts at 0 in every run). The sample grid ends at the newest
usable point. Whatever fails (a dead database, the statement timeout, a bad file) is logged and
risk starts with what it has, at worst unseeded, as before: seeding never stops the gate.

Why the query lives here and not in ``ops``: ``procs`` may not import ``ops``; it only needs a
DSN (``procs.storage``'s recovery source knows it) and psycopg.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.risk_history import (
    fill_newest_first,
    last_at_or_before,
    returns_available,
    sample_grid,
)

log = logging.getLogger("gekko.risk")

KEY_FILE = "risk.history_file"
MAX_RUNS = 32  # runs read back at most (newest first): a bound on start-up work
PROBES_PER_STATEMENT = 50_000  # index probes (instruments x samples) per statement (~0.3 s)
_INT64_MAX = 2**63 - 1

# --- SQL: one round trip per run and step; column names are fixed, never user input ----------

_TWO_SIDED = "q.bid_px > 0 AND q.ask_px > 0 AND q.bid_qty > 0 AND q.ask_qty > 0"

_NEWEST_QUOTE = f"""
SELECT m.col, (SELECT q.ts_event FROM quotes q
               WHERE q.instrument_id = m.iid AND q.run_id = %(run)s
                 AND q.ts_event >= %(lo)s AND q.ts_event <= %(hi)s AND {_TWO_SIDED}
               ORDER BY q.ts_event DESC LIMIT 1)
FROM unnest(%(iids)s::int[], %(cols)s::int[]) AS m(iid, col)
"""

_NEWEST_BAR = """
SELECT m.col, (SELECT b.end_ns FROM bars b
               WHERE b.instrument_id = m.iid AND b.run_id = %(run)s
                 AND b.start_ns >= %(lo)s AND b.start_ns <= %(hi)s AND b.end_ns <= %(hi)s
                 AND b.close > 0
               ORDER BY b.start_ns DESC LIMIT 1)
FROM unnest(%(iids)s::int[], %(cols)s::int[]) AS m(iid, col)
"""

_PROBE_QUOTE = f"""
SELECT m.col, g.k, p.px
FROM unnest(%(iids)s::int[], %(cols)s::int[]) AS m(iid, col)
CROSS JOIN generate_series(0, %(w)s) AS g(k)
CROSS JOIN LATERAL (
    SELECT (q.bid_px + q.ask_px) / 2.0 AS px FROM quotes q
    WHERE q.instrument_id = m.iid AND q.run_id = %(run)s AND q.ts_event >= %(lo)s
      AND q.ts_event <= LEAST(%(g0)s::bigint + g.k * %(step)s::bigint, %(hi)s::bigint)
      AND {_TWO_SIDED}
    ORDER BY q.ts_event DESC LIMIT 1) p
"""

_PROBE_BAR = """
SELECT m.col, g.k, p.px
FROM unnest(%(iids)s::int[], %(cols)s::int[]) AS m(iid, col)
CROSS JOIN generate_series(0, %(w)s) AS g(k)
CROSS JOIN LATERAL (
    SELECT b.close::float8 AS px FROM bars b
    WHERE b.instrument_id = m.iid AND b.run_id = %(run)s AND b.start_ns >= %(lo)s
      AND b.start_ns <= LEAST(%(g0)s::bigint + g.k * %(step)s::bigint, %(hi)s::bigint)
      AND b.end_ns <= LEAST(%(g0)s::bigint + g.k * %(step)s::bigint, %(hi)s::bigint)
      AND b.close > 0
    ORDER BY b.start_ns DESC LIMIT 1) p
"""


def record_run_instruments(conn: Any, run_id: int, instruments: Iterable[Any]) -> None:
    """Note which symbol (and tick size) each instrument id means in ``run_id``: what lets a
    later run find this run's market data by symbol. Idempotent (a restart writes it again)."""
    rows = [(run_id, int(i.instrument_id), str(i.symbol), float(i.tick_size)) for i in instruments]
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO run_instruments (run_id, instrument_id, symbol, tick_size)"
            " VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
            rows,
        )


def run_clock(conn: Any, run_id: int, instruments: Iterable[Any]) -> int:
    """The newest two-sided quote time this run has recorded (0: none yet, a first start).

    Ages are measured on the market's clock: after a restart that is the run's own newest
    price, which for a live feed is about the wall clock and for the simulated market (whose
    clock starts at 0 in every run) is the only "now" that makes its minutes-old prices fresh."""
    ids = [int(i.instrument_id) for i in instruments]
    args = {"run": run_id, "lo": 0, "hi": _INT64_MAX, "iids": ids, "cols": list(range(len(ids)))}
    times = [t for _, t in conn.execute(_NEWEST_QUOTE, args).fetchall() if t is not None]
    return int(max(times)) if times else 0


@dataclass
class RecordHistory:
    """Sample prices (window + 1 rows × one column per requested symbol, 0 = none) and their
    grid; ``grid`` is None when the record has nothing usable (``why`` says what)."""

    grid: np.ndarray | None
    prices: np.ndarray
    runs: list[int] = field(default_factory=list)  # the runs that contributed, newest first
    why: str = ""


def load_record(
    conn: Any,
    symbols: Sequence[str],
    interval_ns: int,
    window: int,
    lo_ns: int,
    *,
    deadline: float | None = None,
    beat: Callable[[], Any] | None = None,
) -> RecordHistory:
    """The record's mids of ``symbols`` on the live sampler's grid (see the module doc).
    ``lo_ns``: points older than this are not used (0: any age). ``deadline`` (monotonic
    seconds): no further run is read after it (what was read is kept)."""
    n = len(symbols)
    empty = np.zeros((window + 1, n))
    runs = _runs_of(conn, symbols)
    if not runs:
        return RecordHistory(None, empty, why="no recorded run lists these symbols")
    order = list(runs)  # newest first
    grid: np.ndarray | None = None
    layers: list[np.ndarray] = []
    used: list[int] = []
    for p, run in enumerate(order):
        if deadline is not None and time.monotonic() > deadline and layers:
            log.warning("risk: history: out of time after %d runs: seeding from those", len(used))
            break
        if beat is not None:
            beat()
        # a run's market data ends where the next run begins (run ids are start times, ns)
        hi = order[p - 1] - 1 if p > 0 else _INT64_MAX
        if hi < lo_ns:
            break  # this run and every older one ended before the freshness limit
        pairs = runs[run]
        args = {
            "run": run,
            "lo": lo_ns,
            "hi": hi,
            "iids": [a for a, _, _ in pairs],
            "cols": [c for _, c, _ in pairs],
        }
        q_pairs, b_pairs, newest = _newest_of_run(conn, args, pairs)
        if not newest:
            continue
        if grid is None:  # the newest run with usable data sets the end of the window
            grid = sample_grid(max(newest), interval_ns, window)
        if int(grid[0]) > hi:
            continue  # this run ended before the window began: nothing in it is sampled
        probe = {"w": window, "g0": int(grid[0]), "step": interval_ns}
        layer = np.zeros((window + 1, n))
        late = _probe_run(conn, dict(args, **probe), pairs, q_pairs, b_pairs, layer, deadline, beat)
        layers.append(layer)
        used.append(run)
        if late:
            log.warning("risk: history: out of time: some instruments are left unseeded")
            break
        if bool(np.all(fill_newest_first(layers)[0] > 0)):
            break  # every symbol has a price from the first sample on: older runs add nothing
    if grid is None or not layers:
        age = "" if lo_ns <= 0 else " (within history_max_age_s)"
        return RecordHistory(None, empty, why=f"no recorded prices of these symbols{age}")
    return RecordHistory(grid, fill_newest_first(layers), used)


_Pair = tuple[int, int, float]  # (instrument id in that run, column, tick size)


def _runs_of(conn: Any, symbols: Sequence[str]) -> dict[int, list[_Pair]]:
    """The newest ``MAX_RUNS`` runs that list any of ``symbols``, newest first, with their pairs."""
    col_of = {s: k for k, s in enumerate(symbols)}
    runs: dict[int, list[_Pair]] = {}
    for run_id, iid, sym, tick in conn.execute(
        "SELECT run_id, instrument_id, symbol, tick_size FROM run_instruments"
        " WHERE symbol = ANY(%(s)s) AND run_id IN (SELECT DISTINCT run_id FROM run_instruments"
        "  WHERE symbol = ANY(%(s)s) ORDER BY run_id DESC LIMIT %(n)s)"
        " ORDER BY run_id DESC, instrument_id",
        {"s": list(symbols), "n": MAX_RUNS},
    ).fetchall():
        if tick is not None and math.isfinite(tick) and tick > 0:
            runs.setdefault(int(run_id), []).append((int(iid), col_of[sym], float(tick)))
    return runs


def _newest_of_run(
    conn: Any, args: dict[str, Any], pairs: list[_Pair]
) -> tuple[list[_Pair], list[_Pair], list[int]]:
    """The pairs sampled from quotes, those sampled from bar closes (no quotes in the run), and
    the newest usable time of each (empty: nothing usable in this run)."""
    newest_q = {c: t for c, t in conn.execute(_NEWEST_QUOTE, args).fetchall() if t is not None}
    bar_pairs = [x for x in pairs if x[1] not in newest_q]
    newest_b: dict[int, int] = {}
    if bar_pairs:
        bargs = dict(args, iids=[a for a, _, _ in bar_pairs], cols=[c for _, c, _ in bar_pairs])
        newest_b = {c: t for c, t in conn.execute(_NEWEST_BAR, bargs).fetchall() if t is not None}
    q_pairs = [x for x in pairs if x[1] in newest_q]
    b_pairs = [x for x in bar_pairs if x[1] in newest_b]
    return q_pairs, b_pairs, [*newest_q.values(), *newest_b.values()]


def _probe_run(
    conn: Any,
    args: dict[str, Any],
    pairs: list[_Pair],
    q_pairs: list[_Pair],
    b_pairs: list[_Pair],
    layer: np.ndarray,
    deadline: float | None,
    beat: Callable[[], Any] | None,
) -> bool:
    """Fill ``layer`` (samples x columns) with this run's prices at each grid time, in short
    statements; True when the deadline cut it short."""
    tick = {c: t for _, c, t in pairs}
    chunk = max(1, PROBES_PER_STATEMENT // (int(args["w"]) + 1))
    for sql, sel in ((_PROBE_QUOTE, q_pairs), (_PROBE_BAR, b_pairs)):
        for j in range(0, len(sel), chunk):  # short statements: each well inside the timeout
            if deadline is not None and time.monotonic() > deadline:
                return True
            part = sel[j : j + chunk]
            a = dict(args, iids=[i for i, _, _ in part], cols=[c for _, c, _ in part])
            for c, k, px in conn.execute(sql, a).fetchall():
                layer[int(k), int(c)] = float(px) * tick[int(c)]
            if beat is not None:
                beat()
    return False


# --- the history file ------------------------------------------------------------------------


class HistoryFileError(ValueError):
    """A history file that cannot be used at all; the message names the key and the file."""

    def __init__(self, path: str | Path, problem: str) -> None:
        super().__init__(f"{KEY_FILE}: {path}: {problem}")


_TS_NAMES = ("timestamp", "ts", "ts_event", "time", "datetime", "date")
_PX_NAMES = ("price", "close", "px", "mid")


@dataclass
class FileHistory:
    """Per symbol: times (ns, ascending) and prices; ``rejected`` counts bad rows by reason."""

    series: dict[str, tuple[np.ndarray, np.ndarray]]
    rejected: Counter[str]
    rows: int = 0


def parse_ts(v: Any) -> int | None:
    """Nanoseconds since the epoch from an integer (ns), an ISO 8601 date or date-time string
    (UTC unless it names its zone) or a datetime / date; None if it is none of these."""
    if v is None or isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, float):
        return int(v) if math.isfinite(v) and v.is_integer() else None
    if isinstance(v, dt.datetime):
        d = v if v.tzinfo is not None else v.replace(tzinfo=dt.UTC)
        delta = d - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
        return (delta.days * 86_400 + delta.seconds) * 10**9 + delta.microseconds * 1_000
    if isinstance(v, dt.date):
        return parse_ts(dt.datetime(v.year, v.month, v.day, tzinfo=dt.UTC))
    s = str(v).strip()
    if not s:
        return None
    if s.lstrip("-").isdigit():
        return int(s)
    try:
        return parse_ts(dt.datetime.fromisoformat(s.replace("z", "Z").replace("Z", "+00:00")))
    except ValueError:
        return None


def _price(v: Any) -> float | None:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x


def load_history_file(path: str | Path, symbols: Iterable[str] | None = None) -> FileHistory:
    """Read ``timestamp, symbol, price`` rows (column names case-insensitive; ``ts``/``date``
    and ``close``/``px`` are accepted too). Rows of symbols not in ``symbols`` are skipped
    (counted as ``other_symbol``); malformed rows are counted by reason (``missing_value``,
    ``bad_ts``, ``bad_price``: not a number, NaN/inf or <= 0). HistoryFileError when the file
    cannot be used at all (missing, unreadable, a needed column absent)."""
    import pyarrow as pa

    p = Path(path)
    table, skipped = _read_table(p)
    cols = {c.strip().lower(): c for c in table.column_names}
    ts_col = next((cols[c] for c in _TS_NAMES if c in cols), None)
    px_col = next((cols[c] for c in _PX_NAMES if c in cols), None)
    sym_col = cols.get("symbol")
    missing = [
        name
        for name, c in (("timestamp", ts_col), ("symbol", sym_col), ("price", px_col))
        if c is None
    ]
    if missing:
        raise HistoryFileError(p, f"missing column(s) {missing} (have {table.column_names})")
    ts_arr = table.column(ts_col)
    if pa.types.is_timestamp(ts_arr.type) or pa.types.is_date(ts_arr.type):
        ts_vals = ts_arr.cast(pa.timestamp("ns")).cast(pa.int64()).to_pylist()
    else:
        ts_vals = ts_arr.to_pylist()
    rejected: Counter[str] = Counter()
    if skipped:
        rejected["bad_row"] += skipped
    rows = zip(
        ts_vals, table.column(sym_col).to_pylist(), table.column(px_col).to_pylist(), strict=True
    )
    series = _series(rows, set(symbols) if symbols is not None else None, rejected)
    return FileHistory(series, rejected, table.num_rows)


def _read_table(p: Path) -> tuple[Any, int]:
    """The file as a pyarrow table (CSV columns as strings) and the CSV rows pyarrow could not
    split (0 for Parquet)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    if not p.is_file():
        raise HistoryFileError(p, "no such file")
    suffix = p.suffix.lower()
    skipped = 0
    try:
        if suffix in (".parquet", ".pq"):
            return pq.read_table(p), 0
        if suffix != ".csv":
            raise HistoryFileError(p, "must be a .csv or .parquet file")

        def skip(_row: object) -> str:
            nonlocal skipped
            skipped += 1
            return "skip"

        with open(p, "rb") as f:
            head = f.readline().decode("utf-8-sig", errors="replace")
        names = [h.strip() for h in head.strip().split(",")]
        table = pacsv.read_csv(
            p,
            parse_options=pacsv.ParseOptions(invalid_row_handler=skip),
            convert_options=pacsv.ConvertOptions(column_types=dict.fromkeys(names, pa.string())),
        )
    except HistoryFileError:
        raise
    except (OSError, pa.ArrowException, UnicodeDecodeError) as exc:
        raise HistoryFileError(p, f"unreadable ({exc})") from exc
    return table, skipped


def _series(
    rows: Iterable[tuple[Any, Any, Any]], want: set[str] | None, rejected: Counter[str]
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per symbol, times (ascending) and prices of the good rows; bad ones counted by reason."""
    acc: dict[str, tuple[list[int], list[float]]] = {}
    for t, s, x in rows:
        if t is None or s is None or x is None or str(s).strip() == "" or str(x).strip() == "":
            rejected["missing_value"] += 1
            continue
        sym = str(s).strip()
        if want is not None and sym not in want:
            rejected["other_symbol"] += 1
            continue
        ts = parse_ts(t)
        if ts is None:
            rejected["bad_ts"] += 1
            continue
        px = _price(x)
        if px is None or not math.isfinite(px) or px <= 0:
            rejected["bad_price"] += 1
            continue
        a = acc.setdefault(sym, ([], []))
        a[0].append(ts)
        a[1].append(px)
    series = {}
    for sym, (ts_l, px_l) in acc.items():
        ts_a = np.asarray(ts_l, dtype=np.int64)
        order = np.argsort(ts_a, kind="stable")  # equal times: the later row wins
        series[sym] = (ts_a[order], np.asarray(px_l, dtype=np.float64)[order])
    return series


# --- the whole seeding step --------------------------------------------------------------------


@dataclass
class SeedResult:
    """What seeding did, per configured symbol (config order)."""

    symbols: list[str]
    counts: np.ndarray  # returns seeded per symbol
    sources: list[str]  # "record", "file" or "" per symbol
    grid: np.ndarray | None = None
    why: str = ""  # why nothing was seeded (or what went wrong on the way)
    notes: list[str] = field(default_factory=list)
    #: something failed (the record unreachable, the file unreadable, a bug): a warning. An
    #: empty or stale record is a first start, or a synthetic market whose clock starts at 1970
    #: in every run: an INFO line, not a warning on every demo run
    failed: bool = False

    @property
    def seeded(self) -> bool:
        return bool(self.counts.size and self.counts.max() > 0)

    def summary(self) -> str:
        """The one log line."""
        if not self.seeded:
            return (
                f"risk: returns window not seeded: {self.why or 'no history'}"
                + (f" ({'; '.join(self.notes)})" if self.notes else "")
                + "; VaR and correlation start from this run's own prices"
            )
        assert self.grid is not None
        span = (
            f"{_iso(int(self.grid[0]))} .. {_iso(int(self.grid[-1]))}"
            f" ({len(self.grid) - 1} x {_secs(int(self.grid[1] - self.grid[0]))})"
        )
        parts = [
            f"{s} {int(c)}" + (" (file)" if src == "file" else "")
            for s, c, src in zip(self.symbols, self.counts, self.sources, strict=True)
        ]
        shown = ", ".join(parts[:20]) + (
            f", ... ({len(parts) - 20} more)" if len(parts) > 20 else ""
        )
        extra = f"; {'; '.join(self.notes)}" if self.notes else ""
        return (
            f"risk: returns window seeded, returns per instrument: {shown}; samples {span}{extra}"
        )


def _iso(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _secs(ns: int) -> str:
    return f"{ns / 1e9:g}s"


def max_age_ns(rc: Any) -> int:
    """``history_max_age_s`` in ns: < 0 means twice the window span, 0 any age (returns 0)."""
    age = float(rc.history_max_age_s)
    if age < 0:
        age = 2.0 * rc.returns_window * rc.returns_interval_s
    return int(age * 1e9)


def _record_dsn(cfg: Any) -> str:
    """The DSN of the record, '' when storage is off (``procs.storage``'s recovery source)."""
    from procs import storage

    source = storage.open_recovery_source(cfg)
    if source is None:
        return ""
    try:
        return str(getattr(source, "dsn", "") or "")
    finally:
        source.close()


def _connect(dsn: str, cfg: Any) -> Any:
    import psycopg

    p = cfg.storage.postgres
    return psycopg.connect(
        dsn,
        connect_timeout=max(1, int(math.ceil(p.connect_timeout_s))),
        options=f"-c statement_timeout={int(p.statement_timeout_s * 1000)}",
        autocommit=True,
    )


def collect_history(
    cfg: Any,
    *,
    now_ns: int | None = None,
    run_id: int = 0,
    dsn: str | None = None,
    beat: Callable[[], Any] | None = None,
) -> tuple[np.ndarray, SeedResult]:
    """Sample prices (window + 1 rows × configured instruments, config order) from the record
    and the history file. Never raises: what fails is in the result's ``why`` / ``notes``."""
    rc = cfg.risk
    symbols = [i.symbol for i in cfg.instruments]
    n = len(symbols)
    window = int(rc.returns_window)
    interval_ns = rc.returns_interval_ns
    now = time.time_ns() if now_ns is None else int(now_ns)
    age = max_age_ns(rc)
    lo = max(0, now - age) if age > 0 else 0
    result = SeedResult(symbols, np.zeros(n, dtype=np.int64), [""] * n)
    prices = np.zeros((window + 1, n))
    grid: np.ndarray | None = None
    why: list[str] = []
    dsn = _record_dsn(cfg) if dsn is None else dsn
    if dsn:
        t0 = time.monotonic()
        # the whole read: twice one statement's timeout (1,000 instruments x 500 samples take
        # about 3 s on a 2-core VM); past it, what was read is used and the rest goes unseeded
        budget = max(1.0, 2.0 * float(cfg.storage.postgres.statement_timeout_s))
        try:
            with _connect(dsn, cfg) as conn:
                if run_id:
                    lo = _note_run(conn, cfg, run_id, lo, age, now_ns is None, result.notes)
                rec = load_record(
                    conn, symbols, interval_ns, window, lo, deadline=t0 + budget, beat=beat
                )
            if rec.grid is None:
                why.append(f"record: {rec.why}")
            else:
                grid, prices = rec.grid, rec.prices
                got = returns_available(prices)
                for k in range(n):
                    if got[k] > 0:
                        result.sources[k] = "record"
        except Exception as exc:  # dead database, timeout, missing table: start unseeded
            why.append(f"record unavailable ({type(exc).__name__}: {str(exc).strip()[:200]})")
            result.failed = True
    else:
        off = cfg.storage.postgres.mode == "off"
        why.append('no record ([storage.postgres] mode = "off")' if off else "no record DSN given")
    need = [k for k in range(n) if returns_available(prices)[k] < rc.min_history]
    if rc.history_file and need:
        grid = _fill_from_file(
            rc.history_file, symbols, need, lo, grid, prices, interval_ns, window, result, why
        )
    result.grid = grid
    if grid is None:
        result.why = "; ".join(why) or "no history"
    elif why:
        result.notes.extend(why)
    return prices, result


def _note_run(
    conn: Any, cfg: Any, run_id: int, lo: int, age: int, use_run_clock: bool, notes: list[str]
) -> int:
    """Record this run's instruments; on a restart (the run has prices already, and no
    ``now_ns`` was given) return the freshness limit measured on the run's market clock."""
    try:
        record_run_instruments(conn, run_id, cfg.instruments)
    except Exception as exc:  # a read-only replica still serves the history
        notes.append(f"run_instruments not written ({exc})")
    clock = run_clock(conn, run_id, cfg.instruments) if use_run_clock else 0
    if clock > 0:  # a restart: age is measured on this run's market clock
        return max(0, clock - age) if age > 0 else 0
    return lo


def _fill_from_file(
    path: str,
    symbols: list[str],
    need: list[int],
    lo: int,
    grid: np.ndarray | None,
    prices: np.ndarray,
    interval_ns: int,
    window: int,
    result: SeedResult,
    why: list[str],
) -> np.ndarray | None:
    """Fill the columns ``need`` of ``prices`` (in place) from the history file where it gives
    more returns than the record did; returns the grid (set from the file if the record had none)."""
    try:
        fh = load_history_file(path, [symbols[k] for k in need])
    except HistoryFileError as exc:
        why.append(str(exc))
        result.failed = True
        return grid
    bad = {r: c for r, c in fh.rejected.items() if r != "other_symbol"}
    if bad:
        result.notes.append(f"{KEY_FILE}: rows rejected {dict(sorted(bad.items()))}")
        log.warning("risk: %s %s: %s rows rejected", KEY_FILE, path, bad)
    fresh = {
        s: (ts[ts >= lo], px[ts >= lo])
        for s, (ts, px) in fh.series.items()
        if bool(np.any(ts >= lo))
    }
    if grid is None and fresh:
        grid = sample_grid(max(int(ts[-1]) for ts, _ in fresh.values()), interval_ns, window)
    if grid is not None:
        for k in need:
            s = symbols[k]
            if s not in fresh:
                continue
            col = last_at_or_before(*fresh[s], grid)
            if returns_available(col[:, None])[0] > returns_available(prices[:, [k]])[0]:
                prices[:, k] = col
                result.sources[k] = "file"
    elif fh.series:
        why.append(f"{KEY_FILE}: no prices within history_max_age_s")
    return grid


def seed_history(
    cfg: Any,
    gate: Any,
    sampler: Any,
    *,
    now_ns: int | None = None,
    run_id: int | None = None,
    dsn: str | None = None,
    beat: Callable[[], Any] | None = None,
) -> SeedResult:
    """Seed ``sampler`` (an ``engine.risk_stats.ReturnSampler`` indexed by instrument id) and
    ``gate`` (its returns window) from history, and log one line saying how many returns per
    instrument came from where and over what span, or why none. Never raises."""
    from procs.storage import run_id as current_run_id

    rid = current_run_id() if run_id is None else run_id
    try:
        if dsn is None:
            dsn = _record_dsn(cfg)
        prices, result = collect_history(cfg, now_ns=now_ns, run_id=rid, dsn=dsn, beat=beat)
        if result.grid is not None:
            by_id = np.zeros((prices.shape[0], sampler.last.shape[0]))
            ids = [i.instrument_id for i in cfg.instruments]
            # in this run's ticks, as the live loop samples them (``RiskGate.mids``): its first
            # return is measured from the last seeded price
            ticks = np.array([float(i.tick_size) for i in cfg.instruments])
            by_id[:, ids] = prices / ticks
            counts = sampler.seed(by_id)
            result.counts = counts[ids]
            if sampler.count:
                gate.set_returns(sampler.matrix())
    except Exception as exc:  # a bug here must not keep the gate from starting
        log.exception("risk: seeding the returns window failed")
        result = SeedResult(
            [i.symbol for i in cfg.instruments],
            np.zeros(len(cfg.instruments), dtype=np.int64),
            [""] * len(cfg.instruments),
            why=f"error: {type(exc).__name__}: {exc}",
            failed=True,
        )
    # a warning when something failed, or a history file was given and seeded nothing
    if result.failed or (cfg.risk.history_file and not result.seeded):
        log.warning(result.summary())
    else:
        log.info(result.summary())
    return result
