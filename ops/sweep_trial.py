"""One trial of a sweep: one backtest of the config with the swept strategy's parameters set and
the market cut to one data window; what it returns is all the sweep needs of it.

It runs in a Ray worker (or inline, ``gekko sweep --inline``), so everything it takes and
gives is plain, picklable data: the config's tables as decoded TOML (validated again here, with
the trial's changes to ``[[strategies]]`` / ``[market]``), the window, the parameters; back
come the figures and the equity curve (thinned to ``CURVE_POINTS``). The tables a backtest never
reads (storage, bridge, audit, keystore, security, metrics: ``NOT_FOR_TRIALS``) are left out
before the config travels: no database address or key goes to the workers, and a worker needs
none of the environment they name.

Failures, told apart because only one kind is worth running again:
- ``invalid``: the trial cannot be built (parameters the strategy refuses, a window the
  source cannot serve): the same inputs fail the same way, so it is reported, never retried;
- ``failed``: the run ended with a bad market-data row under ``on_bad_row = "fail"`` or a
  strategy error (the engine disables a strategy that raises): reported, not retried;
- anything else raised while running (and a worker that dies) propagates to the executor,
  which retries it up to ``[sweep] max_retries`` times and then reports it failed
  (ops/sweep_exec.py).
"""

from __future__ import annotations

import copy
import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: the most equity-curve points a trial sends back (the report's chart and CSCV use them)
CURVE_POINTS = 4096
#: config tables a backtest never reads: not sent to the workers (module docstring)
NOT_FOR_TRIALS = ("storage", "bridge", "audit", "keystore", "security", "metrics")


@dataclass(frozen=True)
class Window:
    """A slice of the market: a synthetic market's seed, or a time range of a replay/catalog."""

    index: int
    label: str
    seed: int | None = None
    start_ns: int | None = None
    end_ns: int | None = None
    events: int = 0  # at most this many market events (0: [backtest] events)


@dataclass(frozen=True)
class TrialSpec:
    trial: int  # the trial's number within its sweep (from 1)
    window: Window
    params: dict[str, Any]
    role: str  # "search" (a candidate on its window) or "oos" (a fold's best, on the next one)
    fold: int | None  # walk-forward fold of an "oos" trial
    config: dict[str, Any]  # the config's tables (``trial_tables``)
    config_path: str
    cwd: str  # relative paths of the config resolve here (when it exists on the worker)
    strategy_index: int  # the [[strategies]] entry swept


@dataclass
class TrialResult:
    trial: int
    window: int
    params: dict[str, Any]
    role: str
    fold: int | None
    status: str  # ok | invalid | failed | timeout
    error: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    curve_ts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    curve_eq: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))
    wall_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def result_of(spec: TrialSpec, status: str, error: str = "", **kw: Any) -> TrialResult:
    return TrialResult(
        spec.trial, spec.window.index, dict(spec.params), spec.role, spec.fold, status, error, **kw
    )


def trial_tables(config_text: str) -> dict[str, Any]:
    """The tables of a config file that its trials get (all but ``NOT_FOR_TRIALS``)."""
    import msgspec

    raw = msgspec.toml.decode(config_text)
    return {k: v for k, v in raw.items() if k not in NOT_FOR_TRIALS}


def trial_config(spec: TrialSpec) -> tuple[Any, tuple[int, int] | None]:
    """The trial's validated Config and the time window the builder cuts (None: the source's
    own keys do it). Raises ``ConfigError``."""
    from ops.config import parse_config

    raw = spec.config
    strategies = copy.deepcopy(raw.get("strategies", []))
    entry = strategies[spec.strategy_index]
    entry["params"] = {**entry.get("params", {}), **spec.params}
    market = dict(raw.get("market", {}))
    w, cut = spec.window, None
    if w.seed is not None:
        market["seed"] = w.seed
    elif w.start_ns is not None and w.end_ns is not None:
        if market.get("source") == "catalog":  # pushed down to the files (engine/catalog.py)
            market["catalog_start"], market["catalog_end"] = str(w.start_ns), str(w.end_ns)
        else:
            cut = (w.start_ns, w.end_ns)
    overlay = {
        **raw,
        "strategies": strategies,
        "market": market,
        "report": {**raw.get("report", {}), "html": False},
    }
    return parse_config("", spec.config_path, overlay=overlay), cut


def run_trial(spec: TrialSpec) -> TrialResult:
    """Build and run the trial's backtest; its figures, or why there are none (module doc)."""
    from engine.md_rejects import BadRowError
    from ops.backtest_build import MarketUnavailable, build_backtest
    from ops.config import ConfigError

    if spec.cwd and os.path.isdir(spec.cwd):
        os.chdir(spec.cwd)
    t0 = time.perf_counter()
    try:
        cfg, cut = trial_config(spec)
        bt = build_backtest(cfg, spec.window.events, cut)
    except (ConfigError, MarketUnavailable, ValueError) as exc:
        return result_of(spec, "invalid", f"{type(exc).__name__}: {exc}")
    try:
        summary = bt.runtime.run()
    except BadRowError as exc:
        return result_of(spec, "failed", f"bad market-data row: {exc}")
    wall = time.perf_counter() - t0
    errors = summary.get("strategy_errors") or []
    if errors:
        return result_of(spec, "failed", f"strategy error: {errors[0]}", wall_s=wall)
    ts, eq, _ = bt.runtime.portfolio.equity_curve()
    metrics = figures(summary, eq, cfg)
    mine = summary["pnl_by_strategy"].get(
        cfg.strategies[spec.strategy_index].id or spec.strategy_index + 1
    )
    metrics["strategy_net_pnl"] = float(mine["net"]) if mine else 0.0  # the swept one's own
    metrics["md_rejected"] = bt.rejects.total
    if ts.size > CURVE_POINTS:
        keep = np.linspace(0, ts.size - 1, CURVE_POINTS).astype(np.int64)
        ts, eq = ts[keep], eq[keep]
    return result_of(spec, "ok", metrics=metrics, curve_ts=ts, curve_eq=eq, wall_s=wall)


def returns_of(eq: np.ndarray) -> np.ndarray:
    """Simple period returns of an equity curve (none once equity is not positive)."""
    eq = np.asarray(eq, dtype=np.float64)
    if eq.size < 2 or np.any(eq[:-1] <= 0):
        return np.zeros(0)
    return eq[1:] / eq[:-1] - 1.0


def figures(summary: dict[str, Any], eq: np.ndarray, cfg: Any) -> dict[str, Any]:
    """P&L, Sharpe (per sample period and, when the run is long enough, annualised), drawdown,
    turnover (traded notional over starting equity), the moments the deflated Sharpe ratio
    needs, and the counts."""
    from ops.sweep_stats import moments, sharpe

    r = returns_of(eq)
    skew, kurt = moments(r)
    an = summary.get("analytics") or {}
    start = float(eq[0]) if eq.size else 0.0
    traded = sum(float(v.get("notional", 0.0)) for v in summary["pnl_by_strategy"].values())
    return {
        "net_pnl": float(summary["pnl"]["net"]),
        "fees": float(summary["pnl"]["fees"]),
        "sharpe": sharpe(r),
        "sharpe_annual": an.get("sharpe"),
        "max_drawdown": an.get("max_drawdown"),
        "total_return": an.get("total_return"),
        "turnover": traded / start if start > 0 else None,
        "n_returns": int(r.size),
        "skew": skew,
        "kurtosis": kurt,
        "fills": int(summary["fills"]),
        "orders": int(summary["new_orders"]),
        "ticks": int(summary["ticks"]),
        "sample_period_s": cfg.portfolio.equity_interval_ns / 1e9,
    }
