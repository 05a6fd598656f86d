"""``gekko sweep``: a grid or Optuna search over a strategy's parameters x data windows, each
trial one backtest in a Ray task, walk-forward, with the deflated Sharpe ratio and the
probability of backtest overfitting; results into PostgreSQL, a terminal table, an HTML report.

The parts, one job each: ``[sweep]`` (ops/sweep_config.py), windows and parameter points
(ops/sweep_windows.py), one trial (ops/sweep_trial.py, built as ``gekko backtest`` builds its
run: ops/backtest_build.py), where trials run (ops/sweep_exec.py), the search and its verdicts
(ops/sweep_search.py, ops/sweep_stats.py), the database (ops/sweep_store.py), the reports
(ops/sweep_report.py). The whole story: docs/sweeps.md.

Exit codes: 0 the sweep ran (trials that were not ok are listed, and counted in the database);
1 no trial completed or Ray could not start; 2 bad configuration or usage.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import msgspec

from ops.config import Config, ConfigError

#: command-line options that override a [sweep] key of the same name
_OVERRIDES = ("method", "trials", "windows", "address", "num_cpus", "max_retries", "strategy")


def _swept(cfg: Config, args: argparse.Namespace) -> Config:
    """``cfg`` with the command line's [sweep] overrides, validated as the file's keys are."""
    from engine.settings import SettingError
    from ops.sweep_config import SweepSection

    raw = msgspec.to_builtins(cfg.sweep)
    for k in _OVERRIDES:
        v = getattr(args, k, None)
        if v is not None:
            raw[k] = v
    if args.no_walk_forward:
        raw["walk_forward"] = False
    try:
        sw = msgspec.convert(raw, SweepSection)
    except (msgspec.ValidationError, SettingError) as exc:
        inner = exc.__context__ if isinstance(exc.__context__, SettingError) else exc
        key = getattr(inner, "key", "")
        why = str(getattr(inner, "problem", inner))
        raise ConfigError(cfg.source_path, f"sweep.{key}" if key else "sweep", why) from None
    return msgspec.structs.replace(cfg, sweep=sw)


def _executor(cfg: Config, inline: bool) -> Any:
    from ops.sweep_exec import InlineExecutor, RayExecutor

    sw = cfg.sweep
    if inline:
        return InlineExecutor(max_retries=sw.max_retries)
    try:
        import ray  # noqa: F401
    except ImportError:
        raise SystemExit(
            "gekko: sweep needs Ray: pip install 'gekko[sweep]' (or run it with --inline)"
        ) from None
    return RayExecutor(
        address=sw.address,
        num_cpus=sw.num_cpus,
        max_retries=sw.max_retries,
        timeout_s=sw.trial_timeout_s,
    )


def _check_first(cfg: Config, make_spec: Any, windows: list[Any]) -> None:
    """The first trial's config through the backtest pre-flight: a parameter the strategy does
    not have stops the sweep here (exit 2), not in every trial."""
    from ops.preflight import check_strategies
    from ops.sweep_trial import trial_config
    from ops.sweep_windows import grid_points

    first = grid_points(cfg.sweep.params)[0] if cfg.sweep.method == "grid" else {}
    spec = make_spec(0, windows[0], first, "search", None)
    check_strategies(trial_config(spec)[0])


def prepare(cfg: Config, config_text: str) -> tuple[list[Any], Any]:
    """(windows, make_spec) of the sweep ``cfg`` describes; raises ConfigError / SweepError."""
    from ops.sweep_trial import TrialSpec, trial_tables
    from ops.sweep_windows import SweepError, make_windows, strategy_index

    if not cfg.sweep.params:
        raise SweepError("sweep.params: nothing to sweep (give [sweep.params] name = [values])")
    windows = make_windows(cfg)
    idx, cwd, path = strategy_index(cfg), os.getcwd(), str(cfg.source_path)
    tables = trial_tables(config_text)

    def make_spec(trial: int, window: Any, params: dict, role: str, fold: int | None) -> TrialSpec:
        return TrialSpec(trial, window, params, role, fold, tables, path, cwd, idx)

    _check_first(cfg, make_spec, windows)
    return windows, make_spec


def cmd_sweep(args: argparse.Namespace) -> int:
    from ops.cli_common import load_config_or_exit
    from ops.logs import setup_logging
    from ops.preflight import preflight
    from ops.sweep_windows import SweepError

    cfg = load_config_or_exit(args.config)
    setup_logging("sweep", cfg.engine.log_level, cfg.engine.log_format, engine_id=cfg.engine.id)
    if cfg.real_venues():
        print("gekko: sweep runs the simulator only, like gekko backtest", file=sys.stderr)
        return 2
    if args.json and not Path(args.json).resolve().parent.is_dir():
        print(f"gekko: --json {args.json}: no such directory", file=sys.stderr)
        return 2
    config_text = Path(args.config).read_text(encoding="utf-8")
    try:
        preflight(cfg, "backtest")
        cfg = _swept(cfg, args)
        windows, make_spec = prepare(cfg, config_text)
    except (ConfigError, SweepError) as exc:
        print(f"gekko: config error: {exc}", file=sys.stderr)
        return 2
    return _run(cfg, args, windows, make_spec)


def _progress(quiet: bool) -> Any:
    def show(r: Any, done: int, total: int) -> None:
        if not quiet:
            flag = "" if r.ok else f"  {r.status}: {r.error[:80]}"
            print(f"  trial {r.trial:>4} window {r.window} [{done}/{total}]{flag}", flush=True)

    return show


def _run(cfg: Config, args: argparse.Namespace, windows: list[Any], make_spec: Any) -> int:
    from ops.report_data import config_text as masked_config
    from ops.sweep_report import format_sweep, shown_trials, write_html
    from ops.sweep_search import run_search
    from ops.sweep_store import record_sweep, summary_of

    try:
        ex = _executor(cfg, args.inline)
    except SystemExit as exc:
        print(exc.code, file=sys.stderr)
        return 1
    except Exception as exc:  # Ray that cannot start or reach its cluster
        print(f"gekko: cannot start Ray: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    try:
        out = run_search(cfg, windows, make_spec, ex, _progress(args.quiet))
    finally:
        ex.close()
    summary = summary_of(out)
    print(format_sweep(summary, shown_trials(out)))
    masked = masked_config(cfg)
    if not args.no_store:
        sweep_id = record_sweep(cfg, msgspec.to_builtins(cfg.sweep), out, masked)
        if sweep_id is not None:
            summary["sweep_id"] = sweep_id
            print(f"  recorded: sweep {sweep_id} in PostgreSQL (tables sweeps, sweep_trials)")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2, default=str))
    if cfg.sweep.html:
        path = Path(args.report or Path(cfg.engine.var_dir) / "last_sweep" / "report.html")
        print(f"  report: {write_html(out, summary, masked, path)}")
    return 0 if any(t.ok for t in out.trials) else 1


def add_parsers(sub: Any, with_config: Any) -> None:
    """``gekko sweep`` (hooked into ops/cli.py's parser)."""
    p = with_config(sub.add_parser("sweep", help="parameter sweep / walk-forward on Ray"))
    p.add_argument("--method", choices=("grid", "optuna"), default=None, help="[sweep] method")
    p.add_argument("--trials", type=int, default=None, help="optuna trials per window")
    p.add_argument("--windows", type=int, default=None, help="data windows ([sweep] windows)")
    p.add_argument("--strategy", default=None, help="the [[strategies]] entry swept")
    p.add_argument(
        "--address", default=None, help="a Ray cluster's address (default: a local Ray runtime)"
    )
    p.add_argument("--num-cpus", type=int, default=None, help="local Ray: cores (0 = all)")
    p.add_argument("--max-retries", type=int, default=None, help="[sweep] max_retries")
    p.add_argument("--no-walk-forward", action="store_true", help="search every window alone")
    p.add_argument("--inline", action="store_true", help="no Ray: trials one by one, here")
    p.add_argument("--no-store", action="store_true", help="do not record in PostgreSQL")
    p.add_argument("--json", default="", help="also write the summary to this JSON file")
    p.add_argument("--report", default="", help="the HTML report's path")
    p.add_argument("--quiet", action="store_true", help="no line per finished trial")
    p.set_defaults(func=cmd_sweep)
