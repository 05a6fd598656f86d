"""The ``gekko`` command.

- ``gekko run [--config PATH] [--duration S] [--until-feed-done]`` — the whole engine, supervised.
- ``gekko backtest [--config PATH] [--events N]`` — the same components inline, simulated clock.
- ``gekko kill [--flatten]`` / ``gekko resume`` — the kill switch of a running engine (signals its
  supervisor); ``gekko status`` — the trading state risk recorded, and why.
- ``gekko train`` / ``gekko eval`` / ``gekko export`` / ``gekko models list`` — forecasting models
  (``ops/model_cmds.py``).

Exit codes: 0 success, 1 runtime failure, 2 bad configuration or usage.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

from ops.config import Config, ConfigError, load_config
from ops.logs import setup_logging

DEFAULT_CONFIG = "config.toml"


def _load(path: str) -> Config:
    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"gekko: config error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def cmd_run(args: argparse.Namespace) -> int:
    from ops.supervisor import Supervisor

    cfg = _load(args.config)
    setup_logging("supervisor", cfg.engine.log_level, cfg.engine.log_format)
    if args.duration is not None and args.duration <= 0:
        print("gekko: --duration must be > 0", file=sys.stderr)
        return 2
    sup = Supervisor(
        cfg,
        args.config,
        duration_s=args.duration,
        until_feed_done=args.until_feed_done,
        status=not args.quiet,
    )
    return sup.run()


def cmd_backtest(args: argparse.Namespace) -> int:
    import itertools

    from engine.backtest import InlineRuntime
    from procs.build import (
        build_exec_policy,
        build_limits,
        build_market,
        build_strategy_host,
        build_venue,
        with_exchange_status,
    )
    from procs.infer import with_forecasts

    cfg = _load(args.config)
    setup_logging("backtest", cfg.engine.log_level, cfg.engine.log_format)
    events = args.events or cfg.backtest.events
    build_strategy_host(cfg)  # fail early, with a clear message, on a broken strategy path
    instruments = cfg.instrument_table()
    rt = InlineRuntime(
        instruments,
        cfg.strategy_specs(),
        build_limits(cfg),
        build_venue(cfg, instruments),
        # the market, with the forecasts the infer process would publish interleaved at their
        # simulated time (procs.infer.with_forecasts; unchanged when [inference] is off), and
        # the venue's halts where [sim] schedules them (procs.build.with_exchange_status)
        with_forecasts(cfg, itertools.islice(with_exchange_status(cfg, build_market(cfg)), events)),
        exec_policy=build_exec_policy(cfg),
        **cfg.portfolio.backtest_kwargs(),
    )
    t = time.perf_counter()
    summary = rt.run()
    wall = time.perf_counter() - t
    print(format_backtest(summary, cfg, wall))
    if args.json:
        out = {k: v for k, v in summary.items() if k != "orders_sent"}
        Path(args.json).write_text(json.dumps(out, indent=2, default=str))
    return 0


def format_backtest(s: dict, cfg: Config, wall_s: float) -> str:
    symbols = {i.instrument_id: i.symbol for i in cfg.instruments}
    lines = ["", f"Gekko backtest — {s.get('ticks', 0)} ticks in {wall_s:.2f}s wall"]
    keys = ("ticks", "intents", "new_orders", "fills", "risk_rejects", "venue_rejects")
    lines.append("  " + "   ".join(f"{k} {s.get(k, 0)}" for k in keys))
    pf = s.get("portfolio") or {}
    per = pf.get("instruments") or pf.get("positions") or {}
    if per:
        lines.append(
            f"  {'instrument':<10} {'position':>9} {'fills':>6} {'realized':>11} {'unrealized':>11} {'fees':>9}"
        )
        for iid, v in per.items():
            sym = symbols.get(int(iid), str(iid))
            lines.append(
                f"  {sym:<10} {v.get('position', 0):>9d} {v.get('fills', 0):>6d} {v.get('realized', 0.0):>11.2f} "
                f"{v.get('unrealized', 0.0):>11.2f} {v.get('fees', 0.0):>9.2f}"
            )
    for k in ("realized", "unrealized", "fees", "equity"):
        if k in pf:
            lines.append(f"  {k}: {pf[k]:.2f}")
    from ops.report import format_analytics

    lines += format_analytics(s.get("analytics") or {}, s.get("pnl_by_strategy") or {}, cfg)
    wall = s.get("wall_ns_per_tick") or {}
    if isinstance(wall, dict) and wall:
        lines.append(
            f"  inline cost per tick: p50 {wall.get('p50', float('nan')) / 1000:.1f}µs  "
            f"p99 {wall.get('p99', float('nan')) / 1000:.1f}µs  (target 50µs, max 100µs)"
        )
    return "\n".join(lines)


def _signal_engine(args: argparse.Namespace, sig: int, what: str) -> int:
    cfg = _load(args.config)
    pidfile = Path(cfg.engine.var_dir) / f"gekko-{cfg.engine.id}.pid"
    try:
        pid = int(pidfile.read_text().strip())
        os.kill(pid, sig)
    except (FileNotFoundError, ValueError, ProcessLookupError):
        print(
            f"gekko: no running engine {cfg.engine.id!r} (no live pid in {pidfile})",
            file=sys.stderr,
        )
        return 1
    print(f"gekko: {what} sent to engine {cfg.engine.id!r} (supervisor pid {pid})")
    return 0


def _operator_request(args: argparse.Namespace, kind: str, command: str) -> Path:
    """Tell the supervisor who sends the signal that follows (its audit row's actor)."""
    from ops.operator import write_request
    from ops.store.audit import os_user

    cfg = _load(args.config)
    return write_request(cfg.engine.var_dir, cfg.engine.id, kind, command, os_user())


def cmd_kill(args: argparse.Namespace) -> int:
    if getattr(args, "flatten", False):  # the supervisor reads this flag when the signal arrives
        cfg = _load(args.config)
        flag = Path(cfg.engine.var_dir) / f"gekko-{cfg.engine.id}.flatten"
        flag.parent.mkdir(parents=True, exist_ok=True)
        flag.write_text("flatten\n")
        req = _operator_request(args, "flatten", "gekko kill --flatten")
        rc = _signal_engine(args, signal.SIGUSR1, "kill switch (flatten)")
        if rc != 0:
            flag.unlink(missing_ok=True)
            req.unlink(missing_ok=True)
        return rc
    req = _operator_request(args, "kill", "gekko kill")
    rc = _signal_engine(args, signal.SIGUSR1, "kill switch")
    if rc != 0:
        req.unlink(missing_ok=True)
    return rc


def cmd_status(args: argparse.Namespace) -> int:
    """The trading state as risk last recorded it (running or not), and whether the engine runs."""
    import datetime as dt

    from procs.risk import load_state, state_path

    cfg = _load(args.config)
    path = state_path(cfg)
    snap = load_state(path)
    pidfile = Path(cfg.engine.var_dir) / f"gekko-{cfg.engine.id}.pid"
    running = False
    try:
        pid = int(pidfile.read_text().strip())
        os.kill(pid, 0)
        running = True
    except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
        pass
    if args.json:
        print(
            json.dumps(
                {"engine": cfg.engine.id, "running": running, "risk": snap, "state_file": str(path)}
            )
        )
        return 0
    print(f"engine {cfg.engine.id!r}: {'running' if running else 'not running'}")
    if snap is None:
        print(f"trading state: ACTIVE (no state recorded yet in {path})")
        return 0
    since = int(snap.get("since_wall_ns") or 0)
    when = (
        dt.datetime.fromtimestamp(since / 1e9, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        if since
        else "start"
    )
    print(
        f"trading state: {snap.get('state')} since {when} ({snap.get('source')}: {snap.get('reason')})"
    )
    for iid, why in (snap.get("instrument_halts") or {}).items():
        print(f"  instrument {iid} halted: {why}")
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    cfg = _load(args.config)
    pidfile = Path(cfg.engine.var_dir) / f"gekko-{cfg.engine.id}.pid"
    try:
        os.kill(int(pidfile.read_text().strip()), 0)
    except (FileNotFoundError, ValueError, ProcessLookupError):
        # not running: clear the recorded halt so the next `gekko run` starts ACTIVE
        from procs.risk import load_state, save_state, state_path

        path = state_path(cfg)
        snap = load_state(path)
        if snap is not None and snap.get("state") != "ACTIVE":
            snap.update(
                state="ACTIVE",
                reason="gekko resume (engine not running)",
                source="operator",
                since_ns=0,
                since_wall_ns=time.time_ns(),
            )
            save_state(path, snap)
            print(
                f"gekko: engine {cfg.engine.id!r} is not running; its recorded trading state is now ACTIVE"
            )
            from ops.store.audit import audit_event, os_user, record_outside_run

            ev = audit_event(
                os_user(),
                "operator.resume",
                command="gekko resume",
                engine_id=cfg.engine.id,
                engine_running=False,
                pid=os.getpid(),
            )
            record_outside_run(cfg, [ev], "the resume")
            return 0
    req = _operator_request(args, "resume", "gekko resume")
    rc = _signal_engine(args, signal.SIGUSR2, "resume")
    if rc != 0:
        req.unlink(missing_ok=True)
    return rc


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="gekko", description="Gekko low-latency trading engine")
    sub = ap.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument(
            "--config", default=DEFAULT_CONFIG, help="config file (default: ./config.toml)"
        )
        return p

    run = with_config(sub.add_parser("run", help="run the engine (supervisor + workers)"))
    run.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    run.add_argument(
        "--until-feed-done",
        action="store_true",
        help="stop once the feed has finished and every ring is drained",
    )
    run.add_argument("--quiet", action="store_true", help="no status line")
    run.set_defaults(func=cmd_run)

    bt = with_config(sub.add_parser("backtest", help="inline backtest on a simulated clock"))
    bt.add_argument(
        "--events", type=int, default=0, help="market events to replay (default: [backtest] events)"
    )
    bt.add_argument("--json", default="", help="also write the summary to this JSON file")
    bt.set_defaults(func=cmd_backtest)

    kill = with_config(sub.add_parser("kill", help="engage the kill switch of a running engine"))
    kill.add_argument(
        "--flatten", action="store_true", help="also close every position with market orders"
    )
    kill.set_defaults(func=cmd_kill)
    status = with_config(
        sub.add_parser("status", help="trading state (ACTIVE / REDUCING / HALTED) and why")
    )
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(func=cmd_status)
    resume = with_config(sub.add_parser("resume", help="resume trading after a kill"))
    resume.set_defaults(func=cmd_resume)

    from ops.model_cmds import add_parsers as add_model_parsers  # train, eval, export, models

    add_model_parsers(sub, with_config)
    from ops.store.db_cmds import add_parsers as add_db_parsers  # db migrate, db status

    add_db_parsers(sub, with_config)
    from ops.redis_cmds import add_parsers as add_redis_parsers  # state (latest state in Redis)

    add_redis_parsers(sub, with_config)
    return ap


def main(argv: list[str] | None = None) -> int:
    from ops.secrets import masked_std_streams

    args = build_parser().parse_args(argv)
    try:
        with masked_std_streams():  # whatever a command prints, secrets are masked in it
            return int(args.func(args))
    except SystemExit as exc:
        return int(exc.code or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
