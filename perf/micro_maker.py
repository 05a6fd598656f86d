"""Can a maker be paid for the order-book signal a taker cannot? ``LeaningMarketMaker`` on the
held-out part of real LOBSTER days, leaning on the micro model, beside the same maker leaning on
a reversed and a random signal and not leaning at all.

Same set-up as ``perf.micro_controls`` (model trained on each day's first 70 % of events by
``gekko micro-train``, the rest replayed by ``gekko backtest``'s own build with the model served
on every event), with ``LeaningMarketMaker`` as the only strategy: quotes of about
``--notional`` each, ``--half-spread`` ticks either side of the microprice, leaned by
``--lean`` x (2 P(up) - 1) ticks, inventory skew ``--skew`` ticks per quote held and at most
``--max-quotes`` quotes' worth of inventory. The simulated exchange queues our quotes behind the
displayed size and fills them from the market's own prints (engine/venues/sim.py).

    .venv/bin/python -m perf.micro_maker --lobster <data>/lobster [--days AAPL-L1]
        [--half-spread 4] [--lean 4] [--maker-fee 0] [--random-seeds 1 2 3] [--json out.json]

Prints one markdown row per run: forecasts, orders, fills, P&L before fees (the position left at
the end marked to the market), fees, net and the max drawdown of equity.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from perf.micro_controls import config_text, first_mid, held_out_pair, train


def run_one(text: str, tmp: Path) -> dict:
    from ops.backtest_build import build_backtest
    from ops.config import parse_config

    bt = build_backtest(parse_config(text, tmp / "config.toml"), 10**9)
    summary = bt.runtime.run()
    strat = bt.runtime.host.slots[0].strategy
    pnl, an = summary["pnl"], summary["analytics"]
    return {
        "forecasts": strat.forecasts,
        "fills": summary["fills"],
        "orders": summary["new_orders"],
        "gross": pnl["realized"] + pnl["unrealized"],
        "fees": pnl["fees"],
        "net": pnl["net"],
        "max_dd": an["max_drawdown"] * an["start_equity"],
        "position": summary["positions"],
    }


def main(argv: list[str] | None = None) -> int:
    from models.lob_data import lobster_days

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lobster", type=Path, required=True, help="a directory of LOBSTER pairs")
    ap.add_argument("--days", nargs="*", default=[], help="e.g. AAPL-L1 GOOG-L5 (default: all)")
    ap.add_argument("--train-frac", type=float, default=0.7)
    ap.add_argument("--notional", type=float, default=20_000.0, help="about this much a quote")
    ap.add_argument("--half-spread", type=float, default=4.0, help="ticks from fair to a quote")
    ap.add_argument("--lean", type=float, default=4.0, help="ticks of lean at P(up) = 1")
    ap.add_argument("--skew", type=float, default=2.0, help="ticks of skew per quote held")
    ap.add_argument("--max-quotes", type=int, default=3, help="inventory cap, in quotes")
    ap.add_argument("--maker-fee", type=float, default=0.0, help="[sim] maker_fee_bps")
    ap.add_argument("--taker-fee", type=float, default=0.2, help="[sim] taker_fee_bps")
    ap.add_argument("--random-seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--json", default="")
    a = ap.parse_args(argv)
    days = lobster_days(a.lobster)
    runs = [("model", 0), ("reversed", 0), ("none", 0)] + [("random", r) for r in a.random_seeds]
    head = "| day | signal | forecasts | orders | fills | P&L before fees | fees | net | max DD |"
    print(head)
    print("| --- " * (head.count("|") - 1) + "|")
    rows = []
    for name in a.days or list(days):
        message, book = days[name]
        ticker, levels = name.split("-L")[0], int(name.split("-L")[1])
        with tempfile.TemporaryDirectory(prefix="micromm-") as t:
            tmp = Path(t)
            train(message, tmp / "model", a.train_frac)
            pair = held_out_pair(message, book, a.train_frac, tmp / "day")
            size = max(1, round(a.notional / first_mid(pair[1])))
            for signal, rseed in runs:
                params = {
                    "size": size, "half_spread_ticks": a.half_spread, "lean_ticks": a.lean,
                    "skew_ticks_per_lot": a.skew / size, "max_inventory": a.max_quotes * size,
                    "signal": signal, "seed": rseed,
                }  # fmt: skip
                text = config_text(
                    pair[:2], levels, ticker, tmp / "model", tmp, params, a.taker_fee,
                    "engine.strategies.leaning_maker:LeaningMarketMaker", a.maker_fee,
                )  # fmt: skip
                r = run_one(text, tmp)
                label = signal if signal != "random" else f"random({rseed})"
                r.update(day=name, signal=label, size=size)
                rows.append(r)
                print(
                    f"| {name} | {label} | {r['forecasts']} | {r['orders']} | {r['fills']} "
                    f"| {r['gross']:+.2f} | {r['fees']:.2f} | {r['net']:+.2f} | {r['max_dd']:.2f} |",
                    flush=True,
                )
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
