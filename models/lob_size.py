"""How far the mid moves, out of sample: the size half of the microstructure target.

A taker's expected move is (P(up) - P(down)) times the size of the move, and serving took that
size to be the training mean. Two questions, each against its baselines on the held-out block:

- **the size of the next mid change** (ticks), from the event's features: a ridge regression on
  the log size, back-transformed with the smearing factor (the mean of exp(residual), so the
  forecast is a mean, not a median); baselines the training mean and the size of the last change;
- **the signed change of the mid over a horizon** (next k events / next Δt, ticks): a ridge
  regression on every feature; baselines zero (the random walk: always no change) and the same
  regression on the touch imbalance alone.

Scores: MSE and MAE, 95 % intervals of the MSE by a bootstrap over groups (the next-change
target: one group per change, as ``models.lob_eval``; the horizon: blocks of consecutive events,
as ``models.lob_horizon``), and a Diebold–Mariano test of group-mean squared errors against the
first baseline.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from models.lob_data import BookEvents
from models.lob_eval import group_means, next_change, samples
from models.lob_features import FEATURES, features_of_events
from models.lob_horizon import horizon_labels
from models.lob_models import Standardizer
from models.stat_tests import diebold_mariano

_IMB = FEATURES.index("imbalance_1")


def _filled(mid: np.ndarray) -> np.ndarray:
    """The mid with one-sided books carrying the last good one (as ``next_change`` does)."""
    m = mid.astype(np.float64).copy()
    good = np.isfinite(m)
    if not good.any():
        return m
    idx = np.where(good, np.arange(len(m)), 0)
    np.maximum.accumulate(idx, out=idx)
    m = m[idx]
    m[: np.argmax(good)] = m[np.argmax(good)]
    return m


def change_sizes(ev: BookEvents) -> tuple[np.ndarray, np.ndarray]:
    """(next, last) per event, in ticks: the size of the next mid change (NaN where none
    follows) and of the last one at or before the event (NaN before the first)."""
    m = _filled(ev.mid)
    _, at = next_change(ev.mid)
    nxt = np.where(at >= 0, np.abs(m[np.maximum(at, 0)] - m), np.nan) / ev.tick
    starts = np.flatnonzero(np.diff(m) != 0) + 1
    sizes = np.abs(m[starts] - m[starts - 1]) / ev.tick
    k = np.searchsorted(starts, np.arange(len(m)), side="right") - 1
    last = np.where(k >= 0, sizes[np.maximum(k, 0)], np.nan)
    return nxt, last


class Ridge:
    """Ridge regression on standardised features (the intercept not penalised)."""

    def __init__(self, l2: float = 1e-3, columns: list[int] | None = None) -> None:
        self.l2, self.columns = l2, columns

    def fit(self, x: np.ndarray, y: np.ndarray) -> Ridge:
        x = x if self.columns is None else x[:, self.columns]
        self.std = Standardizer.fit(x)
        z = np.c_[self.std(x), np.ones(len(x))]
        reg = self.l2 * len(x) * np.eye(z.shape[1])
        reg[-1, -1] = 0.0
        self.w = np.linalg.solve(z.T @ z + reg, z.T @ y)
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        x = x if self.columns is None else x[:, self.columns]
        return np.c_[self.std(x), np.ones(len(x))] @ self.w


class LogSize:
    """E[size] from a ridge regression on log size, times the smearing factor."""

    name = "ridge on log size"

    def fit(self, x: np.ndarray, size: np.ndarray) -> LogSize:
        self.r = Ridge().fit(x, np.log(size))
        self.smear = float(np.mean(np.exp(np.log(size) - self.r.predict(x))))
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.exp(self.r.predict(x)) * self.smear


@dataclass
class SizeRow:
    name: str
    mse: float
    ci: tuple[float, float]  # of the MSE
    mae: float
    dm: str  # vs the first baseline


@dataclass
class SizeReport:
    stream: str
    target: str
    n_test: int
    mean_test: float  # mean |target| on the test block (ticks)
    rows: list[SizeRow] = field(default_factory=list)


def _bootstrap_mse(se: np.ndarray, group: np.ndarray, reps: int = 500) -> tuple[float, float]:
    _, inv = np.unique(group, return_inverse=True)
    tot, cnt = np.bincount(inv, weights=se), np.bincount(inv).astype(np.float64)
    rng = np.random.default_rng(0)
    est = np.empty(reps)
    for r in range(reps):
        pick = rng.integers(0, len(cnt), len(cnt))
        est[r] = tot[pick].sum() / cnt[pick].sum()
    lo, hi = np.percentile(est, [2.5, 97.5])
    return float(lo), float(hi)


def _score(
    rep: SizeReport, preds: list[tuple[str, np.ndarray]], y: np.ndarray, group: np.ndarray
) -> None:
    ref = group_means((preds[0][1] - y) ** 2, group)
    for k, (name, f) in enumerate(preds):
        se = (f - y) ** 2
        dm = "-" if k == 0 else diebold_mariano(group_means(se, group), ref).verdict()
        rep.rows.append(
            SizeRow(
                name, float(se.mean()), _bootstrap_mse(se, group), float(np.abs(f - y).mean()), dm
            )
        )


def evaluate_next_size(ev: BookEvents, train_frac: float = 0.7) -> SizeReport:
    """The size of the next mid change: ridge on log size vs the training mean and the last
    change's size (split and purge as ``models.lob_eval.evaluate_stream``)."""
    x, _, group, idx = samples(ev)
    nxt, last = change_sizes(ev)
    size, prev = nxt[idx], last[idx]
    split = int(len(ev) * train_frac)
    ok = np.isfinite(size) & (size > 0)
    train = ok & (idx < split) & (group < split)
    test = ok & (idx >= split)
    y = size[test]
    rep = SizeReport(ev.name, "size of the next mid change", int(test.sum()), float(y.mean()))
    mean = float(size[train].mean())
    carried = np.where(np.isfinite(prev[test]), prev[test], mean)
    model = LogSize().fit(x[train], size[train])
    preds = [
        ("training mean", np.full(len(y), mean)),
        ("last change's size", carried),
        (model.name, model.predict(x[test])),
    ]
    _score(rep, preds, y, group[test])
    return rep


def evaluate_horizon_change(
    ev: BookEvents, events: int = 0, dt_ns: int = 0, train_frac: float = 0.7
) -> SizeReport:
    """The signed mid change over a horizon (ticks): ridge on every feature vs zero and the
    imbalance-only ridge (split, purge and blocks as ``models.lob_horizon``)."""
    x, valid = features_of_events(
        ev.ts, ev.bid_px, ev.bid_sz, ev.ask_px, ev.ask_sz, ev.trade, ev.tick
    )
    _, ok = horizon_labels(ev.mid, ev.ts, events, dt_ns)
    m = _filled(ev.mid)
    n = len(m)
    j = np.arange(n) + events if events else np.searchsorted(ev.ts, ev.ts + dt_ns, side="right") - 1
    change = (m[np.minimum(j, n - 1)] - m) / ev.tick
    keep = np.flatnonzero(valid & ok & np.isfinite(x).all(axis=1))
    split = int(len(ev) * train_frac)
    reach = np.minimum(j[keep], n - 1)
    train, test = keep[(keep < split) & (reach < split)], keep[keep >= split]
    y = change[test]
    what = (
        f"mid change over the next {events} events"
        if events
        else f"mid change over the next {dt_ns / 1e6:g} ms"
    )
    rep = SizeReport(ev.name, what, len(test), float(np.abs(y).mean()))
    blocks = (test - split) // max(events, 50)
    preds = [("zero (no change)", np.zeros(len(y)))]
    for name, r in (("imbalance ridge", Ridge(columns=[_IMB])), ("ridge, all features", Ridge())):
        preds.append((name, r.fit(x[train], change[train]).predict(x[test])))
    _score(rep, preds, y, blocks)
    return rep


def format_size(r: SizeReport) -> str:
    lines = [
        f"{r.stream}, {r.target}: {r.n_test} test events (mean |change| {r.mean_test:.3f} ticks)",
        "",
        "| forecaster | MSE (95% CI) | MAE | vs the first |",
        "|---|---|---|---|",
    ]
    for x in r.rows:
        lines.append(
            f"| {x.name} | {x.mse:.4f} [{x.ci[0]:.4f}, {x.ci[1]:.4f}] | {x.mae:.4f} | {x.dm} |"
        )
    return "\n".join(lines)
