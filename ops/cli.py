"""The ``gekko`` command.

- ``gekko run [--config PATH] [--duration S] [--until-feed-done] [--venue V] [--live]`` — the
  whole engine, supervised; on a real venue paper unless ``--live`` (ops/venue_run.py).
- ``gekko backtest [--config PATH] [--events N]`` — the same components inline, simulated clock.
- ``gekko kill [--flatten]`` / ``gekko resume`` — the kill switch of a running engine (over its
  supervisor's control socket, ops/operator.py); ``gekko status`` — the trading state risk
  recorded, and why.
- ``gekko train`` / ``gekko eval`` / ``gekko export`` / ``gekko models list`` — forecasting models
  (``ops/model_cmds.py``).
- ``gekko data import KIND PATH...`` / ``gekko data ls`` — the Parquet market-data catalog
  (``ops/data_cmds.py``).
- ``gekko sweep`` — a grid / Optuna search of a strategy's parameters over data windows on Ray,
  walk-forward, deflated Sharpe ratio and PBO (``ops/sweep.py``).

Exit codes: 0 success, 1 runtime failure, 2 bad configuration or usage.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from ops.cli_common import load_config_or_exit
from ops.config import Config, ConfigError
from ops.fsperm import PRIVATE_UMASK
from ops.logs import setup_logging

DEFAULT_CONFIG = "config.toml"


def _preflight(cfg: Config, command: str) -> None:
    """Every check that needs nothing started (ops/preflight.py), before anything starts."""
    from ops.preflight import preflight

    try:
        preflight(cfg, command)
    except ConfigError as exc:
        print(f"gekko: config error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def cmd_run(args: argparse.Namespace) -> int:
    from ops.supervisor import Supervisor

    cfg = load_config_or_exit(args.config, args.venue)
    setup_logging(
        "supervisor",
        cfg.engine.log_level,
        cfg.engine.log_format,
        engine_id=cfg.engine.id,
        stdout=True,  # json: the status lines and the summary are JSON lines too
    )
    cfg = _venue_run(cfg, args.venue, args.live)
    _preflight(cfg, "run")
    sup = Supervisor(
        cfg,
        args.config,
        duration_s=args.duration,
        until_feed_done=args.until_feed_done,
        status=not args.quiet,
    )
    return sup.run()


def _venue_run(cfg: Config, venue: str, live: bool) -> Config:
    """``--venue`` / ``--live`` (ops/venue_run.py): the venue, the three live gates, its markets.
    The first line a run on a real venue prints says LIVE or PAPER, naming the venue. The
    venue's keys are used here and forgotten after (``ops.secrets.transient``): exec loads its
    own; the supervisor keeps none."""
    from ops.secrets import transient

    with transient():
        return _venue_preflight(cfg, venue, live)


def _venue_preflight(cfg: Config, venue: str, live: bool) -> Config:
    from ops.venue_run import KeyRefused, check_keys, live_gates, pick_venue, resolve_run

    try:
        only = ""
        real = cfg.real_venues()
        if not venue and len(cfg.venues) == 1 and real:  # the one venue configured
            venue = real[0].name
        if venue:
            cfg, only = pick_venue(cfg, venue)
        rules: dict = {}
        keys = live_gates(cfg, live, rules)
        real = [v.name for v in cfg.real_venues()]
        if keys:
            print(f"LIVE trading on {', '.join(keys)}: real orders with real money", flush=True)
            logging.getLogger("gekko").warning("LIVE trading on %s", ", ".join(keys))
        elif real:
            print(
                f"PAPER trading on {', '.join(real)}: live market data, simulated fills", flush=True
            )
        cfg = resolve_run(cfg, only=only, live=keys)
        check_keys(cfg, keys, rules)  # none that can withdraw (the venue is asked)
        del keys
    except ConfigError as exc:
        print(f"gekko: config error: {exc}", file=sys.stderr)
        if isinstance(exc, KeyRefused):  # a security refusal: on the audit record too
            from ops.store.audit import audit_event, os_user, record_outside_run

            ev = audit_event(
                os_user(), "keys.refused", engine_id=cfg.engine.id, key=exc.key, reason=str(exc)
            )
            record_outside_run(cfg, [ev], "the refusal")
        raise SystemExit(2) from None
    from ops.venue_run import DEFAULT_NAME, DEFAULT_STRATEGY

    for s in cfg.strategies:  # the run's first lines say what trades
        if s.name == DEFAULT_NAME and s.path == DEFAULT_STRATEGY:
            sym = s.instruments[0]
            cur = next((i.currency for i in cfg.instruments if i.symbol == sym), "")
            print(
                f"default strategy on {sym}: momentum taker, long only, {s.params['notional']:g}"
                f" {cur} a trade (no [[strategies]] trades {only}'s symbols)",
                flush=True,
            )
    return cfg


def cmd_backtest(args: argparse.Namespace) -> int:
    from engine.md_rejects import BadRowError
    from ops.backtest_build import MarketUnavailable, build_backtest

    cfg = load_config_or_exit(args.config)
    setup_logging("backtest", cfg.engine.log_level, cfg.engine.log_format, engine_id=cfg.engine.id)
    _preflight(cfg, "backtest")
    if cfg.real_venues():  # a backtest replays the simulator's market, not a venue's
        names = ", ".join(v.name for v in cfg.real_venues())
        print(
            f"gekko: backtest runs the simulator only; {names}: use gekko run --venue",
            file=sys.stderr,
        )
        return 2
    if args.json and not Path(args.json).resolve().parent.is_dir():
        print(f"gekko: --json {args.json}: no such directory", file=sys.stderr)
        return 2
    try:  # built as every sweep trial builds its backtest (ops/backtest_build.py)
        bt = build_backtest(cfg, args.events or cfg.backtest.events)
    except MarketUnavailable as exc:
        print(f"gekko: cannot replay: {exc}", file=sys.stderr)
        return 2
    rt, rejects = bt.runtime, bt.rejects
    t = time.perf_counter()
    try:
        summary = rt.run()
    except BadRowError as exc:
        print(f"gekko: backtest stopped: {exc}", file=sys.stderr)
        return 1
    wall = time.perf_counter() - t
    summary["md_rejected"] = rejects.total
    summary["md_rejected_by_reason"] = dict(sorted(rejects.counts.items()))
    if rejects.repairs:  # repaired, not rejected (a LOBSTER day's healed levels)
        summary["md_repaired"] = dict(sorted(rejects.repairs.items()))
    if bt.overlay is not None and bt.overlay.enabled:  # what the forecasts cost (of `wall`)
        summary["forecasts"] = bt.overlay.eng.counts["forecasts_out"]
        summary["inference_s"] = bt.overlay.busy_ns / 1e9
    micro = bt.overlay.micro if bt.overlay is not None else None
    if micro is not None:
        summary["micro_forecasts"] = micro.forecasts
        summary["micro_inference_s"] = micro.busy_ns / 1e9
    print(format_backtest(summary, cfg, wall))
    if args.json:
        out = {k: v for k, v in summary.items() if k != "orders_sent"}
        Path(args.json).write_text(json.dumps(out, indent=2, default=str))
    if cfg.report.html:  # after the run: nothing of it is on the backtest's clock
        from ops.html_report import after_backtest, backtest_path

        path = after_backtest(rt, summary, cfg, backtest_path(cfg, args.report, args.json))
        print(f"  report: {path}")
    return 0


def format_backtest(s: dict, cfg: Config, wall_s: float) -> str:
    symbols = {i.instrument_id: i.symbol for i in cfg.instruments}
    lines = ["", f"Gekko backtest — {s.get('ticks', 0)} ticks in {wall_s:.2f}s wall"]
    keys = ("ticks", "intents", "new_orders", "fills", "risk_rejects", "venue_rejects")
    lines.append("  " + "   ".join(f"{k} {s.get(k, 0)}" for k in keys))
    if "inference_s" in s:
        inf = s["inference_s"]
        share = f" ({100 * inf / wall_s:.1f}% of the run)" if wall_s > 0 else ""
        lines.append(f"  forecasts {s['forecasts']}   inference {inf:.2f}s{share}")
    if "micro_inference_s" in s:
        inf = s["micro_inference_s"]
        share = f" ({100 * inf / wall_s:.1f}% of the run)" if wall_s > 0 else ""
        lines.append(f"  micro forecasts {s['micro_forecasts']}   inference {inf:.2f}s{share}")
    from ops.report import format_md_rejected

    lines += format_md_rejected(s)
    if s.get("md_repaired"):
        rep = ", ".join(f"{k} {v}" for k, v in s["md_repaired"].items())
        lines.append(f"  market data repaired: {rep}")
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
    # the P&L components apart: funding, financing and commission where the portfolio has them
    for k in ("realized", "unrealized", "fees", "funding", "financing", "commission", "equity"):
        if isinstance(pf.get(k), int | float):
            lines.append(f"  {k}: {pf[k]:.2f}")
    acct = s.get("account_events") or {}
    if acct:  # what the market did to the positions (docs/backtesting.md, instrument kinds)
        lines.append("  account events: " + ", ".join(f"{k} {n}" for k, n in sorted(acct.items())))
    from ops.report import format_analytics

    lines += format_analytics(s.get("analytics") or {}, s.get("pnl_by_strategy") or {}, cfg)
    if s.get("replay_engine"):  # which path replayed it (docs/backtesting.md)
        note = f" ({s['replay_note']})" if s.get("replay_note") else ""
        lines.append(f"  replay: {s['replay_engine']}{note}")
    wall = s.get("wall_ns_per_tick") or {}
    if isinstance(wall, dict) and wall:
        lines.append(
            f"  inline cost per tick: p50 {wall.get('p50', float('nan')) / 1000:.1f}µs  "
            f"p99 {wall.get('p99', float('nan')) / 1000:.1f}µs  (target 50µs, max 100µs)"
        )
    return "\n".join(lines)


def _operate(cfg: Config, kind: str, command: str, args: argparse.Namespace | None = None) -> int:
    """Deliver an operator command over the supervisor's control socket (ops/operator.py), or,
    with ``--remote``, signed over the Redis bus (ops/remote_cmds.py)."""
    from ops.operator import CommandRefused, EngineNotRunning, operate
    from ops.store.audit import os_user

    engine = cfg.engine.id
    if getattr(args, "remote", False):
        engine = args.engine or engine
        from ops.remote_cmds import RemoteError, send_remote

        try:
            print(f"gekko: {send_remote(cfg, engine, kind, command + ' --remote')}")
        except RemoteError as exc:
            print(f"gekko: {exc}", file=sys.stderr)
            return 1
        return 0
    try:
        line = operate(
            cfg.engine.var_dir,
            engine,
            kind,
            command,
            os_user(),
            socket_dir=cfg.security.control_socket_dir,
        )
    except (EngineNotRunning, CommandRefused) as exc:
        print(f"gekko: {exc}", file=sys.stderr)
        return 1
    print(f"gekko: {line}")
    return 0


def cmd_kill(args: argparse.Namespace) -> int:
    if args.engine and not args.remote:
        print("gekko: --engine goes with --remote (locally: --config)", file=sys.stderr)
        return 2
    cfg = load_config_or_exit(args.config)
    if getattr(args, "flatten", False):
        return _operate(cfg, "flatten", "gekko kill --flatten", args)
    return _operate(cfg, "kill", "gekko kill", args)


def _denied(path: Path) -> bool:
    """This user may not read ``path`` (an OSError other than a permission is load_state's)."""
    try:
        with path.open("rb"):
            return False
    except PermissionError:
        return True
    except OSError:
        return False


def cmd_status(args: argparse.Namespace) -> int:
    """The trading state as risk last recorded it (running or not), and whether the engine runs."""
    import datetime as dt

    from ops.operator import probe
    from procs.risk import load_state, state_path

    cfg = load_config_or_exit(args.config)
    path = state_path(cfg)
    denied = _denied(path)  # another user's (a [security.roles] viewer): var/ is private
    snap = None if denied else load_state(path)
    # the control socket; a pid only if proven
    p = probe(cfg.engine.var_dir, cfg.engine.id, socket_dir=cfg.security.control_socket_dir)
    if args.json:
        out = {"engine": cfg.engine.id, "running": p.running, "risk": snap, "state_file": str(path)}
        out.update(supervisor=p.answer, stale_pid_file=p.stale)
        print(json.dumps(out))
        return 0
    if p.answer is not None:
        a = p.answer
        print(
            f"engine {cfg.engine.id!r}: running (supervisor pid {a.get('pid')}, "
            f"run {a.get('run_id')}, {a.get('phase')})"
        )
        for v in a.get("venues") or []:  # live venues (procs/venue_status.py)
            why = f": {v.get('reason')}" if v.get("reason") else ""
            print(f"  venue {v.get('venue')}: {v.get('state')}{why}")
        if a.get("market_data"):
            print(f"  market data: {a.get('market_data')}")
    elif p.verified is not None:
        print(
            f"engine {cfg.engine.id!r}: running (supervisor pid {p.verified.pid}), "
            f"but its control socket does not answer: {p.why}"
        )
    else:
        print(f"engine {cfg.engine.id!r}: not running")
        if p.stale:
            print(f"  stale pid file: {p.stale}")
    if denied:  # not HALTED, not ACTIVE: unknown to this user ([security.roles] viewers)
        print(f"trading state: not readable by this user ({path})")
        return 0
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
    from ops.operator import probe

    if args.engine and not args.remote:
        print("gekko: --engine goes with --remote (locally: --config)", file=sys.stderr)
        return 2
    cfg = load_config_or_exit(args.config)
    if args.remote:
        return _operate(cfg, "resume", "gekko resume", args)
    socket_dir = cfg.security.control_socket_dir
    if not probe(cfg.engine.var_dir, cfg.engine.id, socket_dir=socket_dir).running:
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
    return _operate(cfg, "resume", "gekko resume", args)


def _remote_args(p: argparse.ArgumentParser) -> None:
    """``--remote`` and ``--engine`` of kill / resume (docs/security.md, "Remote control")."""
    p.add_argument(
        "--remote",
        action="store_true",
        help="send it over the Redis bus, signed with [security.remote_control] key_file",
    )
    p.add_argument(
        "--engine", default="", help="with --remote: the engine's id (default: [engine] id)"
    )


def _positive_seconds(text: str) -> float:
    """argparse type: a finite number of seconds > 0 (a bad one is a usage error, exit 2)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not (v > 0 and v != float("inf")):
        raise argparse.ArgumentTypeError(f"must be > 0 seconds, not {text}")
    return v


def _non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, not {v}")
    return v


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="gekko", description="Gekko low-latency trading engine")
    sub = ap.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument(
            "--config", default=DEFAULT_CONFIG, help="config file (default: ./config.toml)"
        )
        return p

    run = with_config(sub.add_parser("run", help="run the engine (supervisor + workers)"))
    run.add_argument(
        "--duration", type=_positive_seconds, default=None, help="stop after this many seconds"
    )
    run.add_argument(
        "--until-feed-done",
        action="store_true",
        help="stop once the feed has finished and every ring is drained",
    )
    run.add_argument("--quiet", action="store_true", help="no status line")
    run.add_argument(
        "--venue",
        default="",
        help="trade on this venue only: a [[venues]] name or a kind (binanceus, coinbase, kraken); "
        "paper unless --live",
    )
    run.add_argument(
        "--live",
        action="store_true",
        help="trade live: also needs live = true for the venue and its API keys",
    )
    run.set_defaults(func=cmd_run)

    bt = with_config(sub.add_parser("backtest", help="inline backtest on a simulated clock"))
    bt.add_argument(
        "--events",
        type=_non_negative_int,
        default=0,
        help="market events to replay (default, or 0: [backtest] events)",
    )
    bt.add_argument("--json", default="", help="also write the summary to this JSON file")
    bt.add_argument(
        "--report",
        default="",
        help="the HTML report's path (default: beside --json, else var_dir/last_backtest/)",
    )
    bt.set_defaults(func=cmd_backtest)

    kill = with_config(sub.add_parser("kill", help="engage the kill switch of a running engine"))
    kill.add_argument(
        "--flatten", action="store_true", help="also close every position with market orders"
    )
    _remote_args(kill)
    kill.set_defaults(func=cmd_kill)
    status = with_config(
        sub.add_parser("status", help="trading state (ACTIVE / REDUCING / HALTED) and why")
    )
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(func=cmd_status)
    resume = with_config(sub.add_parser("resume", help="resume trading after a kill"))
    _remote_args(resume)
    resume.set_defaults(func=cmd_resume)

    from ops.model_cmds import add_parsers as add_model_parsers  # train, eval, export, models

    add_model_parsers(sub, with_config)
    from ops.vol_cmds import add_parsers as add_vol_parsers  # vol-eval (volatility forecasts)

    add_vol_parsers(sub, with_config)
    from ops.micro_cmds import add_parsers as add_micro_parsers  # micro-eval (order books)

    add_micro_parsers(sub, with_config)
    from ops.store.db_cmds import add_parsers as add_db_parsers  # db migrate, db status

    add_db_parsers(sub, with_config)
    from ops.redis_cmds import add_parsers as add_redis_parsers  # state (latest state in Redis)

    add_redis_parsers(sub, with_config)
    from ops.top import add_parsers as add_top_parsers  # top (live console)

    add_top_parsers(sub, with_config)
    from ops.html_report import add_parsers as add_report_parsers  # report RUN_ID

    add_report_parsers(sub, with_config)
    from ops.doctor import add_parsers as add_doctor_parsers  # doctor (host checks)

    add_doctor_parsers(sub, with_config)
    from ops.keys_cmds import add_parsers as add_keys_parsers  # keys add|list|rotate|remove

    add_keys_parsers(sub, with_config)
    from ops.remote_cmds import add_parsers as add_remote_parsers  # remote keygen

    add_remote_parsers(sub, with_config)
    from ops.data_cmds import add_parsers as add_data_parsers  # data import|ls (the catalog)

    add_data_parsers(sub, with_config)
    from ops.sweep import add_parsers as add_sweep_parsers  # sweep (grid / optuna on Ray)

    add_sweep_parsers(sub, with_config)
    return ap


def main(argv: list[str] | None = None) -> int:
    from ops.secrets import masked_std_streams

    args = build_parser().parse_args(argv)
    # what gekko and its workers write (var/: journals, records, state) is private to this OS
    # user: files 0600, directories 0700 (ops/fsperm.py); restored for in-process callers
    old_umask = os.umask(PRIVATE_UMASK)
    try:
        with masked_std_streams():  # whatever a command prints, secrets are masked in it
            return int(args.func(args))
    except SystemExit as exc:
        return int(exc.code or 0)
    except KeyboardInterrupt:
        return 130
    finally:
        os.umask(old_umask)


# the long runs leave without the interpreter's teardown (ops/fast_exit.py); others exit plainly
_FAST_EXIT = ("run", "backtest")


def entry() -> None:
    """The ``gekko`` console script."""
    code = main()
    if len(sys.argv) > 1 and sys.argv[1] in _FAST_EXIT:
        from ops.fast_exit import exit_now

        exit_now(code)
    sys.exit(code)


if __name__ == "__main__":
    entry()
