"""Input drift: are the features the model sees live distributed as the ones it was trained on?

Why: the output monitors (``models.drift``) see a problem only once returns have been realised
and only through the model's errors; a shift of the inputs (a volume regime the model never saw,
a bar length that is not the one it learned, a time of day outside its training hours) is visible
at once, feature by feature, and says *what* changed.

At training time ``training_stats`` stores, per feature, the deciles of the training rows as bin
edges and the share of training rows in each bin (meta.json ``feature_stats``). Live, the monitor
keeps the bins of the last ``window`` feature rows (all instruments) and computes each feature's
population stability index, PSI = sum over bins of (live - train) x ln(live / train), and flags
input drift when the worst feature's PSI exceeds ``threshold`` (0.25: the usual "significant
shift" level; under no shift a 500-row window gives PSI about 0.02). A model whose meta.json has
no ``feature_stats`` (those trained before it, the shipped one) is not monitored: said once.

``replay`` is the batch form for backtests (a numba kernel stops where the state may change;
``check`` decides there), as in ``models.drift``; both call the same numba PSI.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import njit

BINS = 10
#: a bin's share is never taken below this (an empty training bin must not make PSI infinite)
_FLOOR = 1e-4


def training_stats(rows: np.ndarray, features: Sequence[str], bins: int = BINS) -> dict[str, Any]:
    """meta.json ``feature_stats`` of training feature rows ``[n, F]``: per feature the interior
    bin edges (quantiles, duplicates dropped) and the share of rows in each bin."""
    x = np.asarray(rows, dtype=np.float64).reshape(-1, len(features))
    edges: list[list[float]] = []
    shares: list[list[float]] = []
    for f in range(x.shape[1]):
        col = x[:, f][np.isfinite(x[:, f])]
        e = np.unique(np.quantile(col, np.arange(1, bins) / bins)) if len(col) else np.zeros(0)
        counts = np.bincount(np.searchsorted(e, col, side="right"), minlength=len(e) + 1)
        edges.append([float(v) for v in e])
        shares.append([float(v) for v in counts / max(1, len(col))])
    return {
        "rows": int(x.shape[0]),
        "features": list(features),
        "edges": edges,
        "shares": shares,
    }


@dataclass(frozen=True)
class InputDriftStatus:
    """A change of the input drift state: the worst feature and its PSI."""

    drifting: bool
    feature: str
    psi: float
    threshold: float
    samples: int


class InputDriftMonitor:
    """Rolling PSI of each feature against its training distribution (see module doc)."""

    def __init__(self, window: int = 500, threshold: float = 0.25) -> None:
        if window <= 1:
            raise ValueError("input drift window must be > 1")
        if not (threshold >= 0 and math.isfinite(threshold)):
            raise ValueError("input drift threshold must be >= 0 (0 = off)")
        self.window = window
        self.threshold = threshold
        self.features: list[str] = []
        self.enabled = False
        self.drifting = False
        self.samples = 0
        self._i = 0

    def set_stats(self, stats: dict[str, Any] | None, features: Sequence[str]) -> str:
        """The served model's ``feature_stats`` (None: not monitored); starts over. Returns why
        it is not monitored ("" when it is)."""
        self.enabled = False
        self.reset()
        if not self.threshold:
            return "[inference] input_drift_psi = 0"
        if not stats:
            return "its meta.json has no feature_stats (trained before they were recorded)"
        if list(stats.get("features", [])) != list(features):
            return "its feature_stats are for other features"
        nb = max(len(e) for e in stats["edges"]) + 1
        F = len(features)
        self._edges = np.full((F, nb - 1), np.inf)
        self._shares = np.full((F, nb), _FLOOR)
        self._nbins = np.zeros(F, dtype=np.int64)
        for f in range(F):
            e, sh = stats["edges"][f], stats["shares"][f]
            self._edges[f, : len(e)] = e
            self._shares[f, : len(sh)] = np.maximum(sh, _FLOOR)
            self._nbins[f] = len(sh)
        self._bins = np.zeros((self.window, F), dtype=np.int16)
        self._counts = np.zeros((F, nb), dtype=np.int64)
        self.features = list(features)
        self.enabled = True
        return ""

    def on_rows(self, rows: np.ndarray) -> None:
        """Feature rows ``[k, F]`` of bars that closed (in order)."""
        if not self.enabled or len(rows) == 0:
            return
        st = np.array([self._i, self.samples, int(self.drifting)], dtype=np.int64)
        ends = np.array([len(rows)], dtype=np.int64)
        _psi_kernel(
            np.ascontiguousarray(rows, dtype=np.float32), ends, 0, self._edges, self._bins,
            self._counts, self._shares, self._nbins, st, np.inf, True,
        )  # fmt: skip
        self._i, self.samples = int(st[0]), int(st[1])

    def psi(self) -> np.ndarray:
        """Each feature's PSI over the window (NaN until it is full)."""
        if not self.enabled or self.samples < self.window:
            return np.full(len(self.features), np.nan)
        out = np.zeros(len(self.features))
        _psi_all(self._counts, self.window, self._shares, self._nbins, out)
        return out

    def check(self) -> InputDriftStatus | None:
        """An ``InputDriftStatus`` when the state changes (full window only), else None."""
        if not self.enabled or self.samples < self.window:
            return None
        p = self.psi()
        worst = int(np.argmax(p))
        now = bool(p[worst] > self.threshold)
        if now == self.drifting:
            return None
        self.drifting = now
        return InputDriftStatus(
            now, self.features[worst], float(p[worst]), self.threshold, self.samples
        )

    def replay(self, rows: np.ndarray, ends: np.ndarray, start: int = 0) -> int:
        """Closes ``start..`` of a batch: ``rows`` ``[R, F]`` in order, close b's rows ending at
        ``ends[b]``. Returns the first close after which the state may change, or len(ends)."""
        if not self.enabled:
            return len(ends)
        st = np.array([self._i, self.samples, int(self.drifting)], dtype=np.int64)
        b = _psi_kernel(
            np.ascontiguousarray(rows, dtype=np.float32), ends, start, self._edges, self._bins,
            self._counts, self._shares, self._nbins, st, self.threshold, False,
        )  # fmt: skip
        self._i, self.samples = int(st[0]), int(st[1])
        return int(b)

    def reset(self) -> None:
        self._i = 0
        self.samples = 0
        self.drifting = False
        if self.enabled:
            self._counts[:] = 0


@njit(cache=True, nogil=True)
def _psi_all(counts, n, shares, nbins, out):  # pragma: no cover - compiled
    """Each feature's PSI of the window's bin counts against its training shares."""
    for f in range(counts.shape[0]):
        p = 0.0
        for k in range(nbins[f]):
            a = max(counts[f, k] / n, 1e-4)
            e = shares[f, k]
            p += (a - e) * math.log(a / e)
        out[f] = p


@njit(cache=True, nogil=True)
def _psi_kernel(
    rows, ends, start, edges, bins, counts, shares, nbins, st, threshold, no_stop
):  # pragma: no cover - compiled
    """Push each close's rows into the window (bin, count); after each close with a full
    window, stop where the worst PSI's side of ``threshold`` differs from the state."""
    window, F = bins.shape[0], bins.shape[1]
    i, samples, drifting = st[0], st[1], st[2] != 0
    psi = np.zeros(F)
    r = 0 if start == 0 else ends[start - 1]
    b = start
    while b < ends.shape[0]:
        while r < ends[b]:
            for f in range(F):
                x = rows[r, f]
                k = 0
                while k < nbins[f] - 1 and x >= edges[f, k]:
                    k += 1
                if samples >= window:
                    counts[f, bins[i, f]] -= 1
                bins[i, f] = k
                counts[f, k] += 1
            i = i + 1 if i + 1 < window else 0
            if samples < window:
                samples += 1
            r += 1
        if not no_stop and samples >= window:
            _psi_all(counts, window, shares, nbins, psi)
            if (psi.max() > threshold) != drifting:
                break
        b += 1
    st[0], st[1] = i, samples
    return b
