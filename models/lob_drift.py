"""Output drift of a served micro model: is its P(up) still as good as on its held-out block?

Why: the serving side sees what the model forecast. Every scored event's P(up) is a forecast of
the direction of the instrument's next mid change, and that change arrives: the next event whose
mid differs. So each change closes a group, the events scored since the last change, and gives
one sample, the group's mean log loss (and its mean hit: P(up) on the side that happened), as
``gekko micro-eval`` scores (rows of one change are one sample: they share their label, so they
are not independent).

``LogLossMonitor`` keeps the last ``window`` samples (all instruments) and flags drift when their
mean is significantly worse than the model's held-out log loss (meta.json ``holdout``, written by
``gekko micro-train``): ``z = (mean - (1 + margin) x reference) / (sd / sqrt(n)) > z_crit``.
A model that lost its signal scores about
ln 2 = 0.693 against a held-out 0.630 (AAPL) / 0.635 (AMZN) on the LOBSTER days; served on a
flipped imbalance it scores 0.80-0.84, z up to 13-15 over 500 changes (``perf/micro_drift.py``).
It fires once on entering and once on leaving its state. A model without ``holdout`` is not
monitored (said once).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.messages import DriftEvent
from models.input_drift import training_stats
from models.lob_features import FEATURES


@dataclass(frozen=True)
class LossStatus:
    """A change of the micro model's output drift state, with the figures that decided it."""

    drifting: bool
    loss: float  # mean log loss per change over the window
    reference: float  # the held-out block's
    hit: float  # mean hit rate per change over the window
    reference_hit: float
    z: float
    z_crit: float
    margin: float
    samples: int


class LogLossMonitor:
    """Rolling per-change log loss of the served P(up) against its held-out reference."""

    def __init__(self, window: int = 500, margin: float = 0.0, z_crit: float = 3.0) -> None:
        if window <= 1:
            raise ValueError("log loss window must be > 1")
        self.window = window
        self.margin = margin
        self.z_crit = z_crit
        self._loss = np.zeros(window)
        self._hit = np.zeros(window)
        self._i = 0
        self.samples = 0
        self.enabled = False
        self.drifting = False
        self.reference = math.nan
        self.reference_hit = math.nan

    def set_reference(self, meta: dict[str, Any]) -> str:
        """The served model's held-out scores (meta.json ``holdout``); starts over. Returns why
        it is not monitored ("" when it is)."""
        self.reset()
        h = meta.get("holdout") or {}
        try:
            self.reference = float(h["log_loss"])
            self.reference_hit = float(h.get("hit_rate", math.nan))
        except (KeyError, TypeError, ValueError):
            self.enabled = False
            return "its meta.json has no holdout log loss (trained before it was recorded)"
        self.enabled = math.isfinite(self.reference) and self.reference > 0
        return "" if self.enabled else f"its holdout log loss {self.reference!r} is not > 0"

    def on_changes(self, loss: np.ndarray, hit: np.ndarray) -> None:
        """Samples of closed changes (each: its group's mean log loss and hit rate), in order."""
        if not self.enabled or len(loss) == 0:
            return
        m = min(len(loss), self.window)
        at = (self._i + np.arange(m)) % self.window
        self._loss[at] = loss[-m:]
        self._hit[at] = hit[-m:]
        self._i = int((self._i + m) % self.window)
        self.samples = min(self.window, self.samples + m)

    def z(self) -> float:
        n = self.samples
        if n < 2:
            return math.nan
        x = self._loss[:n]
        sd = float(x.std(ddof=1))
        d = float(x.mean()) - (1.0 + self.margin) * self.reference
        if sd <= 1e-12:
            return 0.0 if d == 0 else math.copysign(math.inf, d)
        return d / (sd / math.sqrt(n))

    def check(self) -> LossStatus | None:
        """A ``LossStatus`` when the state changes (full window only), else None."""
        if not self.enabled or self.samples < self.window:
            return None
        z = self.z()
        now = z > self.z_crit
        if now == self.drifting:
            return None
        self.drifting = now
        return LossStatus(
            now,
            float(self._loss.mean()),
            self.reference,
            float(self._hit.mean()),
            self.reference_hit,
            z,
            self.z_crit,
            self.margin,
            self.samples,
        )

    def reset(self) -> None:
        self._i = 0
        self.samples = 0
        self.drifting = False


def loss_event(version: str, st: LossStatus, ts: int) -> DriftEvent:
    """The ``DriftEvent`` of a change of state (kind "logloss": ``stat`` the z, ``threshold``
    the critical z, ``model_mae`` / ``naive_mae`` the live and held-out log loss)."""
    return DriftEvent(
        version, int(st.drifting), st.loss, st.reference, st.margin, st.samples, ts,
        "logloss", st.z, st.z_crit, f"hit {st.hit:.3f} (held-out {st.reference_hit:.3f})",
    )  # fmt: skip


def monitor_meta(
    predict: Callable[[np.ndarray], np.ndarray],
    x: np.ndarray,
    y: np.ndarray,
    group: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
) -> dict[str, Any]:
    """What ``gekko micro-train`` writes for the monitors (meta.json ``feature_stats`` and
    ``holdout``): the training rows' feature distribution, and the log loss and hit rate per
    mid change on the held-out block ``test`` (with under 1000 rows there, the training
    block's, said in ``holdout.block``). ``x, y, group``: ``models.lob_eval.samples``."""
    block = "held-out" if test.sum() >= 1000 else "training"
    use = test if block == "held-out" else train
    return {
        "feature_stats": training_stats(x[train], FEATURES),
        "holdout": {"block": block, **holdout_scores(predict(x[use]), y[use], group[use])},
    }


def holdout_scores(p: np.ndarray, y: np.ndarray, group: np.ndarray) -> dict[str, Any]:
    """meta.json ``holdout`` of a block's P(up), labels and change groups: per-change mean log
    loss and hit rate (mean and sd over changes), as ``LogLossMonitor`` scores live."""
    loss, hit = row_scores(p, y)
    _, inv = np.unique(group, return_inverse=True)
    n = np.bincount(inv)
    gl, gh = np.bincount(inv, weights=loss) / n, np.bincount(inv, weights=hit) / n
    return {
        "log_loss": float(gl.mean()),
        "log_loss_sd": float(gl.std(ddof=1)) if len(gl) > 1 else 0.0,
        "hit_rate": float(gh.mean()),
        "changes": len(gl),
        "rows": len(p),
    }


def row_scores(p: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's log loss and hit (1 on the side that happened, 0.5 at P(up) = 0.5)."""
    q = np.clip(p, CLIP, 1 - CLIP)
    loss = -(y * np.log(q) + (1 - y) * np.log(1 - q))
    hit = np.where(p == 0.5, 0.5, ((p > 0.5) == (y > 0.5)).astype(np.float64))
    return loss, hit


#: probabilities are clipped here before a log (as ``models.lob_eval`` scores them)
CLIP = 1e-7
