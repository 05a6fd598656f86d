"""``[sweep]``: what ``gekko sweep`` searches, over which data windows, and how it runs.

Its own module because ops/config.py holds only the sections no other module owns and this one
is read by the sweep modules alone (ops/sweep*.py); the meaning of each key is in
config.toml beside it and in docs/sweeps.md.

``[sweep.params]`` maps a parameter of the swept strategy to its values: a list (every value on
a grid; a categorical choice for Optuna) or a table ``{ low, high, step, log }`` (a range:
``step`` is needed on a grid; Optuna samples it, ints when low/high/step are ints).
"""

from __future__ import annotations

import math
from typing import Any

import msgspec

from engine.settings import need

METHODS = ("grid", "optuna")
OBJECTIVES = ("sharpe", "net_pnl", "strategy_net_pnl")
_RANGE_KEYS = frozenset({"low", "high", "step", "log"})


def _num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def check_param(name: str, spec: Any) -> None:
    """A list of values or a range table; raises ``SettingError`` naming ``params.<name>``."""
    key = f"params.{name}"
    if isinstance(spec, list):
        need(len(spec) > 0, key, "needs at least one value")
        return
    need(isinstance(spec, dict), key, "must be a list of values or a table {low, high, step}")
    unknown = set(spec) - _RANGE_KEYS
    need(not unknown, key, f"unknown keys {sorted(unknown)} (low, high, step, log)")
    need("low" in spec and "high" in spec, key, "a range needs low and high")
    lo, hi, step = spec["low"], spec["high"], spec.get("step")
    need(_num(lo) and _num(hi) and lo <= hi, key, "low and high must be numbers, low <= high")
    need(step is None or (_num(step) and step > 0), key, "step must be a number > 0")
    need(not spec.get("log") or lo > 0, key, "log needs low > 0")
    need(not (spec.get("log") and step is not None), key, "log and step exclude each other")


class SweepSection(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[sweep]`` (config.toml documents each key; docs/sweeps.md the whole)."""

    method: str = "grid"  # grid | optuna
    strategy: str = ""  # the [[strategies]] entry swept: its name, id or class ("" = the first)
    objective: str = "sharpe"  # what the search maximises (OBJECTIVES)
    trials: int = 20  # optuna: trials per searched window
    windows: int = 3  # data windows (walk-forward folds = windows - 1)
    walk_forward: bool = True  # optimise on window k, test its best on k+1
    window_events: int = 0  # market events per window at most (0 = [backtest] events)
    start: str = ""  # time windows: the span split into `windows` (ISO or ns; "" = see docs)
    end: str = ""
    max_retries: int = 2  # a crashed or failing trial is run again this many times
    trial_timeout_s: float = 0.0  # a trial running longer is cancelled and reported (0 = never)
    address: str = ""  # a Ray cluster ("" = a local Ray runtime on this host's cores)
    num_cpus: int = 0  # local runtime: cores to use (0 = all)
    seed: int = 7  # Optuna's sampler seed (same seed, same trials)
    cscv_blocks: int = 8  # PBO: blocks the window's returns are cut into (even, >= 2)
    html: bool = True  # write the HTML report
    params: dict[str, Any] = {}

    def __post_init__(self) -> None:
        need(self.method in METHODS, "method", f"must be one of {', '.join(METHODS)}")
        need(self.objective in OBJECTIVES, "objective", f"must be one of {', '.join(OBJECTIVES)}")
        need(self.trials >= 1, "trials", "must be >= 1")
        need(self.windows >= 1, "windows", "must be >= 1")
        need(not self.walk_forward or self.windows >= 2, "walk_forward", "needs windows >= 2")
        need(self.window_events >= 0, "window_events", "must be >= 0 (0 = [backtest] events)")
        need(self.max_retries >= 0, "max_retries", "must be >= 0")
        need(
            math.isfinite(self.trial_timeout_s) and self.trial_timeout_s >= 0,
            "trial_timeout_s",
            "must be >= 0 (0 = no limit)",
        )
        need(self.num_cpus >= 0, "num_cpus", "must be >= 0 (0 = all cores)")
        need(
            self.cscv_blocks >= 2 and self.cscv_blocks % 2 == 0,
            "cscv_blocks",
            "must be even and >= 2",
        )
        for name, spec in self.params.items():
            check_param(name, spec)
            if self.method == "grid" and isinstance(spec, dict):
                need(
                    spec.get("step") is not None,
                    f"params.{name}",
                    "a grid needs a step (or a list of values)",
                )
