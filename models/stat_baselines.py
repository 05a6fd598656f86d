"""statsforecast's AutoARIMA, AutoETS and Theta as baselines with quantiles (offline only).

Why: the classical models forecasters compare against. Each is fitted once per series and fold
on the fold's training returns (the same target every model here forecasts: log returns),
then applied without refitting (``forward``) to the last ``history`` returns before each test
window's origin, giving the h-step mean and the prediction intervals that make its quantiles:
level τ < ½ is the lower end of the 100·(1 - 2τ) % interval, τ > ½ the upper end of the
100·(2τ - 1) % one, τ = ½ the mean (the models' intervals are symmetric).

statsforecast is an optional extra (``test`` / ``train``): ``missing()`` says why the rows are
absent when it is not installed, and ``gekko eval`` prints that instead of failing.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

STAT_MODELS = ("AutoARIMA", "AutoETS", "Theta")
HISTORY = 512  # returns fed to forward() before each origin: enough for the models' state


def missing() -> str | None:
    """Why the statsforecast baselines cannot run here, or None when they can."""
    try:
        import statsforecast.models  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - not installed, or a dependency of it broken
        return (
            f"statsforecast baselines skipped: {type(exc).__name__}: {exc} "
            "(pip install statsforecast==2.1.1)"
        )
    return None


def _interval_keys(levels: Sequence[float]) -> tuple[list[float | int], list[str]]:
    """The interval levels to ask for and, per quantile level, the output key holding it."""
    asks: list[float | int] = []
    keys = []
    for t in levels:
        if abs(t - 0.5) < 1e-12:
            keys.append("mean")
            continue
        lv = round(100.0 * abs(1.0 - 2.0 * t), 6)
        lv_key: float | int = int(lv) if float(lv).is_integer() else lv
        if lv_key not in asks:
            asks.append(lv_key)
        keys.append(f"{'lo' if t < 0.5 else 'hi'}-{lv_key}")
    return asks, keys


class StatBaselines:
    """The ``extra`` baselines hook of models/evaluate.py; memoised per block ``key`` so several
    seeds of the model pay for the statistical fits once."""

    def __init__(self, names: Sequence[str] = STAT_MODELS, history: int = HISTORY) -> None:
        import statsforecast.models as sm

        self.classes = {n: getattr(sm, n) for n in names}
        self.history = history
        self.cache: dict[tuple, tuple[dict, dict]] = {}
        self.failures: dict[str, int] = {}  # windows whose forward() failed, per model

    def __call__(
        self,
        ret: np.ndarray,
        first: np.ndarray,
        train_end: int,
        horizon: int,
        levels: Sequence[float],
        key: tuple,
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        full = (key, train_end, int(first[0]), len(first), horizon, tuple(levels))
        if full not in self.cache:
            self.cache[full] = self._run(ret.astype(np.float64), first, train_end, horizon, levels)
        return self.cache[full]

    def _run(
        self, ret: np.ndarray, first: np.ndarray, train_end: int, horizon: int, levels
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        asks, keys = _interval_keys(levels)
        points, quants = {}, {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence chatter of the automatic searches
            for name, cls in self.classes.items():
                model = cls()
                model.fit(ret[1:train_end])
                pt = np.zeros((len(first), horizon))
                qs = np.zeros((len(first), horizon, len(keys)))
                for j, ft in enumerate(first):
                    y = ret[max(1, int(ft) - self.history) : int(ft)]
                    try:
                        out = model.forward(y=y, h=horizon, level=asks)
                    except Exception:  # noqa: BLE001 - a window the model cannot filter
                        self.failures[name] = self.failures.get(name, 0) + 1
                        pt[j], qs[j] = (pt[j - 1], qs[j - 1]) if j else (0.0, 0.0)
                        continue
                    pt[j] = np.asarray(out["mean"], dtype=np.float64)
                    qs[j] = np.stack([np.asarray(out[k], dtype=np.float64) for k in keys], -1)
                qs.sort(axis=-1)
                points[name] = pt.astype(np.float32)
                quants[name] = qs
        return points, quants

    def notes(self) -> list[str]:
        """Lines for the report: windows a model could not forecast (last forecast reused)."""
        return [
            f"{n}: forward() failed on {k} windows (the previous window's forecast was used)"
            for n, k in self.failures.items()
        ]
