"""The one definition of the model's input features, computed from bars.

Training (vectorised here) and serving (streaming ring windows in ``models/windows.py``) must
produce exactly the same rows, so every rule lives in this file: the feature names and order,
the time-of-day encoding, and what an invalid bar turns into. A model trained on one definition
and served on another silently forecasts garbage, which is why there is only one.

Rules (the model contract):

- ``ret``        = log(close_t / close_{t-1}); 0 for the first bar and whenever either close is
  invalid (non-positive or not finite).
- ``range``      = log(high / low); 0 when high or low is invalid or high < low.
- ``log_volume`` = log1p(volume); 0 when volume is negative or not finite.
- ``tod_sin``, ``tod_cos`` = sin / cos of 2π·(seconds since UTC midnight of ts)/86400.

Every invalid input is replaced (never NaN/inf in the output) and counted, so callers can log
how much of the data was bad. All arithmetic is float64 then rounded once to float32, which keeps
the vectorised and the per-bar streaming versions bit-identical.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FEATURES: tuple[str, ...] = ("ret", "range", "log_volume", "tod_sin", "tod_cos")
TARGET = "ret"
TARGET_INDEX = 0
N_FEATURES = len(FEATURES)

NS_PER_DAY = 86_400 * 1_000_000_000
_TWO_PI = 2.0 * np.pi


@dataclass
class FeatureStats:
    """Counts of inputs that had to be replaced while computing features."""

    bad_close: int = 0
    bad_range: int = 0
    bad_volume: int = 0


def valid_price(x: float) -> bool:
    """A price usable in a log: finite and strictly positive."""
    return bool(np.isfinite(x) and x > 0.0)


def time_of_day(ts_ns: int) -> tuple[float, float]:
    """(sin, cos) of the UTC time of day of one timestamp in ns; the streaming path uses this."""
    phase = _TWO_PI * (float(int(ts_ns) % NS_PER_DAY) / 1e9) / 86400.0
    return float(np.sin(phase)), float(np.cos(phase))


def feature_row(
    prev_close: float, high: float, low: float, close: float, volume: float, ts_ns: int
) -> np.ndarray:
    """One bar's feature row (float32), given the previous bar's close (NaN for the first bar).

    The scalar twin of :func:`compute_features`, for streaming callers; both apply the same rules
    in the same float64 arithmetic, so their rows are identical.
    """
    out = np.empty(N_FEATURES, dtype=np.float32)
    feature_row_into(out, prev_close, high, low, close, volume, ts_ns)
    return out


def feature_row_into(
    out: np.ndarray,
    prev_close: float,
    high: float,
    low: float,
    close: float,
    volume: float,
    ts_ns: int,
) -> int:
    """Write one bar's features into ``out`` (float32, length N_FEATURES); return #replaced."""
    bad = 0
    if valid_price(prev_close) and valid_price(close):
        ret = float(np.log(np.float64(close) / np.float64(prev_close)))
    else:
        ret = 0.0
        bad += int(not valid_price(close))
    if valid_price(high) and valid_price(low) and high >= low:
        rng = float(np.log(np.float64(high) / np.float64(low)))
    else:
        rng = 0.0
        bad += 1
    if np.isfinite(volume) and volume >= 0.0:
        lv = float(np.log1p(np.float64(volume)))
    else:
        lv = 0.0
        bad += 1
    s, c = time_of_day(ts_ns)
    out[0] = ret
    out[1] = rng
    out[2] = lv
    out[3] = s
    out[4] = c
    return bad


def compute_features(
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    volume: np.ndarray,
    ts_ns: np.ndarray,
    stats: FeatureStats | None = None,
) -> np.ndarray:
    """Feature matrix ``[n, N_FEATURES]`` float32 for a series of bars of ONE instrument.

    ``open_`` is accepted for the contract's signature (bars are OHLCV) but no feature uses it.
    Invalid bars yield zeros in the affected features and are counted in ``stats``.
    """
    del open_  # part of the bar, not of any feature
    h = np.asarray(high, dtype=np.float64)
    lo = np.asarray(low, dtype=np.float64)
    c = np.asarray(close, dtype=np.float64)
    v = np.asarray(volume, dtype=np.float64)
    ts = np.asarray(ts_ns, dtype=np.int64)
    n = c.shape[0]
    if not (h.shape[0] == lo.shape[0] == v.shape[0] == ts.shape[0] == n):
        raise ValueError("compute_features: all bar columns must have the same length")
    out = np.zeros((n, N_FEATURES), dtype=np.float32)
    if n == 0:
        return out
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        c_ok = np.isfinite(c) & (c > 0.0)
        prev_ok = np.zeros(n, dtype=bool)
        prev_ok[1:] = c_ok[:-1]
        ok = c_ok & prev_ok
        ret = np.zeros(n, dtype=np.float64)
        idx = np.nonzero(ok)[0]
        ret[idx] = np.log(c[idx] / c[idx - 1])
        r_ok = np.isfinite(h) & (h > 0.0) & np.isfinite(lo) & (lo > 0.0) & (h >= lo)
        rng = np.where(r_ok, np.log(np.where(r_ok, h, 1.0) / np.where(r_ok, lo, 1.0)), 0.0)
        v_ok = np.isfinite(v) & (v >= 0.0)
        lv = np.where(v_ok, np.log1p(np.where(v_ok, v, 0.0)), 0.0)
    phase = _TWO_PI * ((ts % NS_PER_DAY).astype(np.float64) / 1e9) / 86400.0
    out[:, 0] = ret
    out[:, 1] = rng
    out[:, 2] = lv
    out[:, 3] = np.sin(phase)
    out[:, 4] = np.cos(phase)
    if stats is not None:
        stats.bad_close += int(n - np.count_nonzero(c_ok))
        stats.bad_range += int(n - np.count_nonzero(r_ok))
        stats.bad_volume += int(n - np.count_nonzero(v_ok))
    return out
