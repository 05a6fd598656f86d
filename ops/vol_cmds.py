"""``gekko vol-eval``: out-of-sample volatility forecasts against GARCH, EGARCH and EWMA.

Prints markdown tables (mean QLIKE / MSE per model on the best variance proxy and on squared
returns; a Diebold–Mariano test of each HAR candidate against each baseline) and optionally
writes them as JSON. The numbers in docs/forecasting.md ("Volatility") come from this command.
``arch`` is imported only inside the run (offline code, the test / train extras).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from models.volatility import (
    CANDIDATES,
    VolEval,
    VolSeries,
    block_ratios,
    compare,
    run_models,
    series_from_daily,
    series_from_intraday,
)

PROXIES = (("rv", "proxy"), ("sq", "r^2"))


def add_parsers(sub: argparse._SubParsersAction, with_config) -> None:
    """Register ``vol-eval`` on the ``gekko`` sub-parser (needs no config)."""
    ve = sub.add_parser(
        "vol-eval", help="score volatility forecasts (HAR-RV vs GARCH / EGARCH / EWMA)"
    )
    ve.add_argument(
        "--source",
        default="arch:sp500",
        help="arch:sp500 | arch:nasdaq | tsd:btc15m | tsd:btc1d | a CSV/Parquet bar file",
    )
    ve.add_argument(
        "--period-s",
        type=int,
        default=86_400,
        help="intraday bars: seconds of one realised-variance period (default 86400, a day)",
    )
    ve.add_argument(
        "--train",
        type=int,
        default=0,
        help="periods before the first forecast (default: min(1000, half the periods))",
    )
    ve.add_argument("--refit", type=int, default=20, help="re-estimate every N periods")
    ve.add_argument("--window", type=int, default=0, help="rolling window (0: expanding)")
    ve.add_argument(
        "--calibrate",
        choices=("auto", "on", "off"),
        default="auto",
        help="rescale a daily range proxy to the training mean squared return: auto (when "
        "the training periods show a significant bias), on, off",
    )
    ve.add_argument(
        "--var-budget-pct",
        type=float,
        default=2.0,
        help="VaR-budget backtest: one-period 99%% parametric VaR held at this %% of equity",
    )
    ve.add_argument("--no-arch", action="store_true", help="leave out GARCH and EGARCH")
    ve.add_argument("--json", default="", help="also write the tables to this JSON file")
    ve.set_defaults(func=cmd_vol_eval)


def load_series(source: str, period_s: int) -> VolSeries:
    """A data source's bars as per-period returns and a variance proxy: intraday bars give
    realised variance over ``period_s``; daily bars give the range proxy."""
    from models.data import BUILTIN, load_builtin, load_table

    bars = load_builtin(source) if source in BUILTIN else load_table(source)
    if len(bars) != 1:
        raise ValueError(f"{source}: vol-eval takes one instrument, got {len(bars)}")
    b = bars[0]
    if b.bar_seconds() < 0.5 * 86_400:
        return series_from_intraday(b, period_s)
    return series_from_daily(b)


def var_backtests(ev: VolEval, budget_pct: float) -> list[dict]:
    """Each forecaster's σ (the gate's among them, :func:`add_gate_forecasts`) holding a long
    position at the VaR budget over the test periods."""
    from models.vol_backtest import var_budget_backtest

    s = ev.series
    years = (int(s.ts_ns[-1]) - int(s.ts_ns[0])) / (365.25 * 86_400 * 1e9)
    per_year = (len(s) - 1) / years if years > 0 else 252.0
    ret = s.ret[ev.start :]
    return [
        var_budget_backtest(m, ret, f, budget_pct=budget_pct, periods_per_year=per_year).to_dict()
        for m, f in ev.forecasts.items()
    ]


GATE_HAR_SQ = "gate: volatility=har, RV=r^2"
GATE_HAR_PROXY = "gate: volatility=har, RV=proxy"


def add_gate_forecasts(ev: VolEval) -> None:
    """What ``[risk] volatility`` makes of the same periods, scored and backtested beside the
    models: window, ewma, and har twice — on the squared period return (all a gate gets from
    period closes alone, e.g. a daily history file) and on the target proxy as its realised
    variance (a stand-in for what a gate that refreshes through the period sums; the gate puts
    it in squared-return units itself)."""
    s = ev.series
    for mode in ("window", "ewma"):
        ev.forecasts[f"gate: volatility={mode}"] = gate_variance(s.ret, ev.start, mode)
    ev.forecasts[GATE_HAR_SQ] = gate_variance(s.ret, ev.start, "har")
    ev.forecasts[GATE_HAR_PROXY] = gate_variance(s.ret, ev.start, "har", rv_pct2=s.rv)


def gate_variance(
    ret_pct: np.ndarray,
    start: int,
    mode: str,
    window: int = 500,
    rv_pct2: np.ndarray | None = None,
) -> np.ndarray:
    """The risk gate's own variance (``engine.risk_stats.RiskStats`` with ``[risk] volatility
    = mode``, config.toml's window, λ and ``har_refit``) of the simple returns of the last
    ``window`` periods, before each period from ``start``, in percent²: one ``set_returns``
    a period, as the gate samples. ``rv_pct2``: each period's realised variance (percent²)
    handed to the gate as measured from finer prices; without it the gate's RV is the squared
    return."""
    from engine.risk_limits import RiskLimits
    from engine.risk_stats import RiskStats

    lim = RiskLimits()
    simple = np.expm1(ret_pct / 100.0)
    stats = RiskStats(1, 0.99, 1.0, 3, mode, lim.volatility_lambda, lim.har_refit)
    rv = None if rv_pct2 is None else (np.asarray(rv_pct2) / 1e4)[:, None]
    out = np.empty(len(ret_pct) - start)
    for t in range(start, len(ret_pct)):
        lo = max(0, t - window)
        if rv is None:
            stats.set_returns(simple[lo:t, None])
        else:
            stats.set_returns(simple[lo:t, None], rv[lo:t], np.ones((t - lo, 1), dtype=np.bool_))
        out[t - start] = float(stats.var[0]) * 1e4
    return out


def report(ev: VolEval, budget_pct: float = 2.0) -> dict:
    """The evaluation as plain data (what ``--json`` writes and the tables show)."""
    s = ev.series
    day = np.datetime_as_string(s.ts_ns[[ev.start, -1]].astype("datetime64[ns]"), unit="D")
    out: dict = {
        "series": s.label,
        "proxy": s.proxy,
        "proxy_scale": s.scale,
        "periods": len(s),
        "dropped": s.dropped,
        "train": ev.start,
        "test_periods": len(s) - ev.start,
        "test_from": str(day[0]),
        "test_to": str(day[1]),
        "refit": ev.refit,
        "window": ev.window,
        "notes": ev.notes,
        "var_budget_pct": budget_pct,
        "models": {m: {} for m in ev.forecasts},
        "tests": [],
        "blocks": {},
    }
    out["var_backtest"] = var_backtests(ev, budget_pct)
    candidates = CANDIDATES + tuple(m for m in (GATE_HAR_SQ, GATE_HAR_PROXY) if m in ev.forecasts)
    if "GARCH(1,1)" in ev.forecasts:  # the yardstick, quarter by quarter of the test
        for c in candidates:
            out["blocks"][c] = {n: block_ratios(ev, c, "GARCH(1,1)", p) for p, n in PROXIES}
    for proxy, name in PROXIES:
        means, comps = compare(ev, proxy, candidates)
        for m, d in means.items():
            out["models"][m].update({f"{k}_{name}": v for k, v in d.items()})
        for c in comps:
            out["tests"].append(
                {
                    "candidate": c.candidate,
                    "baseline": c.baseline,
                    "loss": c.loss,
                    "proxy": name,
                    "ratio": c.ratio,
                    "dm_stat": c.dm.stat,
                    "p_value": c.dm.p_value,
                    "n": c.dm.n,
                    "verdict": c.dm.verdict(),
                }
            )
    return out


def print_tables(rep: dict) -> None:
    """The report as two markdown tables: mean losses, then each candidate against each
    baseline (loss ratio and Diebold–Mariano p-value per loss and target)."""
    print(
        f"### {rep['series']}: test {rep['test_from']} .. {rep['test_to']} "
        f"({rep['test_periods']} periods after {rep['train']}; refit every {rep['refit']}, "
        f"{'rolling ' + str(rep['window']) if rep['window'] else 'expanding'} window)\n"
    )
    print(f"proxy: {rep['proxy']}; r^2: squared return")
    for note in rep["notes"]:
        print(f"note: {note}")
    print("\n| model | QLIKE (proxy) | MSE (proxy) | QLIKE (r^2) | MSE (r^2) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for m, d in rep["models"].items():
        cells = [d[k] for k in ("qlike_proxy", "mse_proxy", "qlike_r^2", "mse_r^2")]
        print(f"| {m} | " + " | ".join(f"{v:.4g}" for v in cells) + " |")
    print(
        "\n| candidate | baseline | QLIKE proxy | QLIKE r^2 | MSE proxy | MSE r^2 |\n"
        "| --- | --- | ---: | ---: | ---: | ---: |"
    )
    cells: dict[tuple[str, str], dict[str, str]] = {}
    for t in rep["tests"]:
        cell = f"{t['ratio']:.3g} (p={t['p_value']:.2g})"
        cells.setdefault((t["candidate"], t["baseline"]), {})[f"{t['loss']} {t['proxy']}"] = cell
    order = ("qlike proxy", "qlike r^2", "mse proxy", "mse r^2")
    for (cand, base), got in cells.items():
        print(f"| {cand} | {base} | " + " | ".join(got.get(k, "") for k in order) + " |")
    print("\nratio: candidate's mean loss / baseline's (< 1: lower); p: Diebold-Mariano, two-sided")
    print(
        f"\nVaR budget: long at the exposure whose 99% one-period parametric VaR is "
        f"{rep['var_budget_pct']:g}% of equity (at most 2x), sigma from each forecast\n\n"
        "| sigma from | mean exposure | return %/yr | vol %/yr | max drawdown % | VaR breaches "
        "| breach rate (1% nominal) | Kupiec p |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    )
    for b in rep["var_backtest"]:
        print(
            f"| {b['model']} | {b['mean_exposure']:.2f} | {b['ann_return_pct']:.1f} | "
            f"{b['ann_vol_pct']:.1f} | {b['max_drawdown_pct']:.1f} | {b['breaches']} | "
            f"{100 * b['breach_rate']:.2f}% | {b['breach_p']:.2g} |"
        )
    if rep["blocks"]:
        print("\n| QLIKE / GARCH(1,1)'s, by test quarter | target | Q1 | Q2 | Q3 | Q4 |")
        print("| --- | --- | ---: | ---: | ---: | ---: |")
        for c, by in rep["blocks"].items():
            for name, ratios in by.items():
                print(f"| {c} | {name} | " + " | ".join(f"{r:.3f}" for r in ratios) + " |")


def cmd_vol_eval(args: argparse.Namespace) -> int:
    try:
        s = load_series(args.source, args.period_s)
        start = args.train or min(1000, len(s) // 2)
        ev = run_models(
            s,
            start,
            refit=args.refit,
            window=args.window,
            with_arch=not args.no_arch,
            calibrate=args.calibrate,
        )
    except (ValueError, FileNotFoundError) as exc:
        print(f"vol-eval: {exc}", file=sys.stderr)
        return 2
    ev.series.label = f"{args.source} ({ev.series.label})"
    add_gate_forecasts(ev)
    rep = report(ev, args.var_budget_pct)
    print_tables(rep)
    if args.json:
        Path(args.json).write_text(json.dumps(rep, indent=2) + "\n")
    return 0
