"""[risk] volatility = window vs ewma vs har in a backtest on a real day: drawdown, fills, refusals.

Why this script and not `gekko backtest`: the day is a LOBSTER pair, and the replay's own book
(``ReplaySource.from_lobster``) is crossed most of the day on the whole-day files (a level
deeper than the visible window that existed before the first message is never removed: see
docs/risk.md "Volatility in a backtest"). Here the market is LOBSTER's *reference* top of book —
one ``Quote`` per message that changes it — so every price is the exchange's. The runtime is
`gekko backtest`'s (``InlineRuntime``, exact path, ``risk_returns=True``: the gate samples its
returns window every ``returns_interval_s`` as the risk process does) on the simulated exchange.

Two ways the switch reaches the trades, each run with window, ewma and har sigma (and once with
no returns sampled, as every backtest ran before ``risk_returns``; har's realised variance sums
the squared mid changes the gate sees at its refreshes between two samples):

- ``var``: a long-only momentum taker of fixed size under a VaR limit that binds at times;
- ``vol_target``: the taker sized by volatility targeting (``MomentumParams.vol_target``), its
  sigma the gate's (``engine.vol_sigma``).

    .venv/bin/python perf/vol_risk_backtest.py [--symbol GOOG] [--levels 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.backtest import InlineRuntime  # noqa: E402
from engine.instruments import Instrument  # noqa: E402
from engine.lobster import read_lobster  # noqa: E402
from engine.messages import Quote  # noqa: E402
from engine.risk import RiskLimits  # noqa: E402
from engine.strategies.momentum import MomentumTaker  # noqa: E402
from engine.strategy_host import StrategySpec  # noqa: E402
from engine.venues.sim import SimExchange  # noqa: E402

LOBSTER = ROOT.parent / "shared" / "data" / "lobster"


def top_quotes(msg_path: Path, book_path: Path, iid: int) -> list[Quote]:
    """One Quote per LOBSTER message that changes the reference top (prices /100: 1e-4 $ to
    cents, the instrument's ticks), at the message's time."""
    msgs, books = read_lobster(msg_path, book_path)
    top = books[:, :4]  # ask px, ask size, bid px, bid size
    keep = np.ones(len(top), dtype=bool)
    keep[1:] = (top[1:] != top[:-1]).any(axis=1)
    out = []
    for k in np.flatnonzero(keep):
        a, asz, b, bsz = (int(x) for x in top[k])
        if asz <= 0 or bsz <= 0 or b >= a:
            continue
        t = int(msgs["time_ns"][k])
        out.append(Quote(iid, b // 100, bsz, a // 100, asz, t, t))
    return out


def run(
    quotes: list[Quote], ins: Instrument, limits: RiskLimits, params: dict[str, Any], rr: bool
) -> dict[str, Any]:
    venue = SimExchange([ins], taker_fee_bps=0.5, seed=1)
    spec = StrategySpec(MomentumTaker, params, instruments=[ins.instrument_id])
    rt = InlineRuntime(
        [ins],
        [spec],
        limits,
        venue,
        iter(quotes),
        risk_returns=rr,
        equity_interval_ns=10**9,
        initial_cash={"USD": limits.capital},  # the gate's equity is the portfolio's
    )
    t0 = time.perf_counter()
    s = rt.run()
    a = rt.analytics()
    refusals = Counter(e.reason.split(":")[0] for e in rt.risk_events)
    st, iid = rt.risk.stats, ins.instrument_id
    return {
        "fills": s["fills"],
        "refusals": dict(refusals),
        "max_drawdown_pct": 100 * float(a["max_drawdown"] or 0.0),
        "net_pnl": round(float(s["pnl"]["net"]), 2),
        "returns_sampled": int(rt.risk.stats.t),
        # volatility = "har": intervals on the window's sigma, and from finer prices
        "har_fallbacks": int(st.har.fallbacks[iid]) if st.har else 0,
        "rv_fine_rows": int(st.rv_fine[iid]) if st.har else 0,
        "wall_s": round(time.perf_counter() - t0, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--symbol", default="GOOG")
    ap.add_argument("--levels", type=int, default=5)
    ap.add_argument("--var-pct", type=float, default=0.08, help="max_var_pct of the var runs")
    ap.add_argument("--size", type=int, default=20)
    ap.add_argument("--vol-target", type=float, default=5.0, help="$ of one-interval sigma")
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    pair = [
        next(LOBSTER.glob(f"{args.symbol}_*_{kind}_{args.levels}.csv"))
        for kind in ("message", "orderbook")
    ]
    ins = Instrument(instrument_id=1, symbol=args.symbol, tick_size=0.01, lot_size=1.0)
    quotes = top_quotes(pair[0], pair[1], 1)
    # config.toml's [risk] (60 s returns, a window of 500, min_history 30), on $1M
    base = RiskLimits(capital=1e6, max_intent_age_ms=0.0)
    common = {"fast": 10, "slow": 40, "order": "market", "long_only": True}
    cases = {
        "var": ({"max_var_pct": args.var_pct}, common | {"size": args.size}),
        "vol_target": ({}, common | {"vol_target": args.vol_target}),
    }
    rows = []
    for name, (risk_kw, params) in cases.items():
        for vol, rr in (("window", False), ("window", True), ("ewma", True), ("har", True)):
            lim = msgspec.structs.replace(base, volatility=vol, **risk_kw)
            r = run(quotes, ins, lim, params, rr)
            rows.append({"case": name, "volatility": vol, "risk_returns": rr} | r)
    print(f"{args.symbol} {pair[0].name.split('_')[1]}: {len(quotes):,} top-of-book quotes\n")
    print("| case | volatility | returns sampled | fills | refusals | max drawdown | net P&L |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        vol = r["volatility"] if r["risk_returns"] else "(none sampled)"
        ref = ", ".join(f"{k} {v}" for k, v in r["refusals"].items()) or "-"
        print(
            f"| {r['case']} | {vol} | {r['returns_sampled']} | {r['fills']} | {ref} "
            f"| {r['max_drawdown_pct']:.4f} % | {r['net_pnl']:,.2f} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
