"""The search: which trials a sweep runs, in what order, and what it concludes from them.

- **grid**: every point of ``[sweep.params]`` on every window, all submitted at once (the
  executor runs as many at a time as it has cores).
- **optuna**: one study per searched window (TPE, seeded by ``[sweep] seed``), asked for a new
  point whenever a core is free and told each result as it comes back, ``[sweep] trials`` per
  window; a trial that is not ``ok`` is told as failed, so the sampler avoids its region.
- **walk-forward** (``[sweep] walk_forward``): fold k optimises on window k and runs the best
  parameters on window k+1 — out of sample, reported beside the in-sample figure. With a grid
  that trial already ran (the grid covers every window); with Optuna it is one more trial, and
  the last window is not searched at all (it is only ever out of sample).

Per searched window: the deflated Sharpe ratio of its best trial among the window's completed
trials, and the probability of backtest overfitting by CSCV over their equity curves
(ops/sweep_stats.py). The best trial is the one with the highest objective; ties go to the
earlier trial.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ops.sweep_stats import Deflated, Overfitting, deflated_sharpe, pbo_cscv
from ops.sweep_trial import TrialResult, TrialSpec, Window, returns_of
from ops.sweep_windows import grid_points, suggest


@dataclass
class WindowStats:
    window: int
    searched: int  # trials of the search on this window
    ok: int
    best: TrialResult | None
    dsr: Deflated | None
    pbo: Overfitting | None
    note: str = ""  # why a figure is missing


@dataclass
class Fold:
    fold: int
    is_trial: TrialResult
    oos_trial: TrialResult | None  # the best's trial on window k+1, ok or not


@dataclass
class SweepOutcome:
    method: str
    objective: str
    windows: list[Window]
    trials: list[TrialResult]
    stats: list[WindowStats]
    folds: list[Fold]
    wall_s: float
    parallelism: int
    extra: dict[str, Any] = field(default_factory=dict)


def objective_of(r: TrialResult, objective: str) -> float | None:
    v = r.metrics.get(objective) if r.ok else None
    return float(v) if isinstance(v, int | float) and math.isfinite(v) else None


class _WindowSearch:
    """The candidates of one window: a fixed list (grid) or an Optuna study."""

    def __init__(self, window: Window, sw: Any, points: list[dict[str, Any]] | None) -> None:
        self.window, self.sw = window, sw
        self.points = list(points) if points is not None else None
        self.study: Any = None
        self.asked: dict[int, Any] = {}  # our trial number -> Optuna trial
        self.total = len(self.points) if self.points is not None else sw.trials
        self.submitted = self.returned = 0
        if self.points is None:
            import optuna

            optuna.logging.set_verbosity(optuna.logging.WARNING)
            sampler = optuna.samplers.TPESampler(seed=sw.seed + window.index)
            self.study = optuna.create_study(direction="maximize", sampler=sampler)

    def has_next(self) -> bool:
        return self.submitted < self.total

    def next_params(self, trial_no: int) -> dict[str, Any]:
        self.submitted += 1
        if self.points is not None:
            return self.points[self.submitted - 1]
        t = self.study.ask()
        self.asked[trial_no] = t
        return suggest(t, self.sw.params)

    def told(self, r: TrialResult) -> None:
        self.returned += 1
        t = self.asked.pop(r.trial, None)
        if t is None:
            return
        import optuna

        v = objective_of(r, self.sw.objective)
        if v is None:
            self.study.tell(t, state=optuna.trial.TrialState.FAIL)
        else:
            self.study.tell(t, v)

    def done(self) -> bool:
        return self.returned == self.total


def run_search(
    cfg: Any,
    windows: list[Window],
    make_spec: Callable[..., TrialSpec],
    executor: Any,
    progress: Callable[[TrialResult, int, int], None] | None = None,
) -> SweepOutcome:
    """Every trial of the sweep through ``executor``; ``make_spec(trial, window, params, role,
    fold)`` builds a trial. Returns the results with the per-window figures and the folds."""
    sw = cfg.sweep
    t0 = time.perf_counter()
    wf = sw.walk_forward and len(windows) >= 2
    grid = sw.method == "grid"
    points = grid_points(sw.params) if grid else None
    searched = windows if grid or not wf else windows[:-1]
    searches = {w.index: _WindowSearch(w, sw, points) for w in searched}
    expected = sum(s.total for s in searches.values()) + (0 if grid or not wf else len(windows) - 1)
    results: list[TrialResult] = []
    queue: list[TrialSpec] = []  # out-of-sample trials, once their fold's search is done
    n = 0
    while True:
        while executor.pending() < executor.parallelism:
            if queue:
                executor.submit(queue.pop(0))
                continue
            open_ = [s for s in searches.values() if s.has_next()]
            if not open_:
                break
            s = min(open_, key=lambda x: (x.submitted, x.window.index))  # windows in turn
            n += 1
            executor.submit(make_spec(n, s.window, s.next_params(n), "search", None))
        if executor.pending() == 0:
            break
        for r in executor.next_done():
            results.append(r)
            if progress:
                progress(r, len(results), expected)
            s = searches.get(r.window) if r.role == "search" else None
            if s is None:
                continue
            s.told(r)
            if s.done() and wf and not grid and r.window + 1 < len(windows):
                best = best_of(
                    [x for x in results if x.role == "search" and x.window == r.window],
                    sw.objective,
                )
                if best is not None:
                    n += 1
                    queue.append(make_spec(n, windows[r.window + 1], best.params, "oos", r.window))
    results.sort(key=lambda r: r.trial)
    stats = [window_stats(w, results, sw) for w in searched]
    folds = make_folds(results, stats, grid) if wf else []
    return SweepOutcome(
        sw.method, sw.objective, windows, results, stats, folds,
        time.perf_counter() - t0, executor.parallelism,
    )  # fmt: skip


def best_of(trials: list[TrialResult], objective: str) -> TrialResult | None:
    scored = [(objective_of(t, objective), t) for t in trials]
    scored = [(v, t) for v, t in scored if v is not None]
    if not scored:
        return None
    return max(scored, key=lambda vt: (vt[0], -vt[1].trial))[1]


def common_returns(trials: list[TrialResult]) -> np.ndarray:
    """The trials' returns on one time grid (T x N): each equity curve read at the same times
    (its last value at or before each), over the span they all cover."""
    t0 = max(int(t.curve_ts[0]) for t in trials)
    t1 = min(int(t.curve_ts[-1]) for t in trials)
    points = min(t.curve_ts.size for t in trials)
    if t1 <= t0 or points < 3:
        return np.zeros((0, len(trials)))
    grid = np.linspace(t0, t1, points).astype(np.int64)
    cols = []
    for t in trials:
        k = np.clip(np.searchsorted(t.curve_ts, grid, side="right") - 1, 0, t.curve_ts.size - 1)
        cols.append(returns_of(t.curve_eq[k]))
    if any(c.size != points - 1 for c in cols):  # an equity curve that went non-positive
        return np.zeros((0, len(trials)))
    return np.column_stack(cols)


def window_stats(w: Window, results: list[TrialResult], sw: Any) -> WindowStats:
    mine = [r for r in results if r.role == "search" and r.window == w.index]
    ok = [r for r in mine if r.ok and r.curve_ts.size >= 2]
    best = best_of(ok, sw.objective)
    if best is None:
        return WindowStats(w.index, len(mine), len(ok), None, None, None, "no trial completed")
    dsr = deflated_sharpe(returns_of(best.curve_eq), [r.metrics["sharpe"] for r in ok])
    notes, pbo = [], None
    if len(ok) < 2:
        notes.append("PBO needs two completed trials")
    else:
        m = common_returns(ok)
        try:
            pbo = pbo_cscv(m, sw.cscv_blocks)
        except ValueError as exc:
            notes.append(f"PBO: {exc}")
    return WindowStats(w.index, len(mine), len(ok), best, dsr, pbo, "; ".join(notes))


def make_folds(results: list[TrialResult], stats: list[WindowStats], grid: bool) -> list[Fold]:
    """Fold k: window k's best, and the same parameters' trial on window k+1 (whatever its
    status; None only if there is none: window k had no completed trial to take on)."""
    folds = []
    by_window = {s.window: s for s in stats}
    last = max((r.window for r in results), default=-1)
    for k in range(last):
        s = by_window.get(k)
        if s is None or s.best is None:
            continue
        if grid:
            oos = next(
                (r for r in results
                 if r.role == "search" and r.window == k + 1 and r.params == s.best.params),
                None,
            )  # fmt: skip
        else:
            oos = next((r for r in results if r.role == "oos" and r.fold == k), None)
        folds.append(Fold(k, s.best, oos))
    return folds
