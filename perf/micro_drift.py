"""Do the micro model's drift monitors fire when they should, and only then? On real LOBSTER days.

For each whole-day L1 file: the all-feature logit is fitted on the first 70 % of the day's
events (``gekko micro-train --train-frac 0.7``'s model and meta.json references), then the
later 30 % is served through ``MicroForecaster`` with its monitors on, as the infer process
does (a Trade then the Quote per LOBSTER row, batches of 256 messages), four ways:

- honest: the feed as it was;
- flipped: bid and ask sizes swapped and trade signs reversed (the imbalance turned against it);
- other ticks: prices doubled (a feed in half the model's tick: spread_ticks, microprice x2);
- no trades: the Trade messages dropped (a feed without its trade channel).

Printed per day and way: the log loss over every change served (against the held-out one
micro-train recorded), the range of the monitor's z after each batch (window ``--window``
changes), the share of those checks in drift, and the worst feature's PSI (window ``--rows``).

    .venv/bin/python -m perf.micro_drift [--data ../shared/data/lobster]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from engine.messages import Quote, Trade
from models.lob_data import BookEvents, lobster_days, lobster_events
from models.lob_drift import monitor_meta
from models.lob_eval import expected_move, samples
from models.lob_export import export_micro
from models.lob_features import FEATURES
from models.lob_models import LinearLogit
from models.lob_serving import MicroForecaster

WAYS = ("honest", "flipped", "other ticks", "no trades")


def feed(raw: BookEvents, rows: np.ndarray, way: str) -> list:
    """The engine messages of ``rows`` of a raw (uncoalesced) LOBSTER day, altered per ``way``."""
    per_tick = 100  # LOBSTER prices are 1e-4 dollars: engine ticks of 0.01
    mult = 2 if way == "other ticks" else 1
    flip = way == "flipped"
    out: list = []
    for i in rows.tolist():
        t = int(raw.ts[i])
        b, a = int(raw.bid_sz[i, 0]), int(raw.ask_sz[i, 0])
        if flip:
            b, a = a, b
        bid, ask = (
            int(raw.bid_px[i, 0]) // per_tick * mult,
            int(raw.ask_px[i, 0]) // per_tick * mult,
        )
        if raw.trade[i] and way != "no trades":
            side = (1 if raw.trade[i] > 0 else -1) * (-1 if flip else 1)
            out.append(Trade(1, ask, int(abs(raw.trade[i])), side, t, t))
        out.append(Quote(1, bid, b, ask, a, t, t))
    return out


def fit(ev: BookEvents, split: int, out: Path) -> Path:
    x, y, group, idx = samples(ev)
    keep = (idx < split) & (group < split)
    f = LinearLogit().fit(x[keep], y[keep])
    meta = {
        "stream": ev.name,
        "tick": ev.tick,
        "px_unit": ev.px_unit,
        "levels": 1,
        "coalesce": ev.one_per_time,
        "expected_move": expected_move(ev, idx[keep], group[keep]),
        **monitor_meta(f.predict, x, y, group, keep, idx >= split),
    }
    return export_micro(f, out, meta)


def serve(model: Path, msgs: list, window: int, rows: int) -> dict:
    fc = MicroForecaster(model, {1: 1.0}, 0.05)
    fc.monitor(window=window, psi=1.0, psi_window=rows)
    assert fc.loss is not None and fc.inputs is not None
    losses: list[float] = []
    zs: list[float] = []
    drifting: list[bool] = []
    psi = 0.0
    worst = ""
    psi_on: list[bool] = []
    for k in range(0, len(msgs), 256):
        fc.on_messages(msgs[k : k + 256], 0)
        losses += fc._loss  # every change, before checks() hands them to the monitor
        fc.checks()
        if fc.loss.samples >= window:
            zs.append(fc.loss.z())
            drifting.append(fc.loss.drifting)
        if fc.inputs.samples >= rows:
            p = fc.inputs.psi()
            psi_on.append(fc.inputs.drifting)
            if p.max() > psi:
                psi, worst = float(p.max()), FEATURES[int(np.argmax(p))]
    return {
        "loss": float(np.mean(losses)),
        "changes": len(losses),
        "z": (min(zs), max(zs)) if zs else (np.nan, np.nan),
        "drift": float(np.mean(drifting)) if drifting else np.nan,
        "psi": psi,
        "worst": worst,
        "psi_drift": float(np.mean(psi_on)) if psi_on else np.nan,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/lobster")
    )
    ap.add_argument("--window", type=int, default=500, help="changes in the log loss window")
    ap.add_argument("--rows", type=int, default=10_000, help="event rows in the PSI window")
    args = ap.parse_args(argv)
    days = {k: v for k, v in lobster_days(args.data).items() if k.endswith("-L1")}
    print(
        "| day | way | log loss (held-out) | changes | z min … max | in drift | max PSI (feature) |"
    )
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, (msg, book) in sorted(days.items()):
            raw = lobster_events(msg, book)
            ev = raw.coalesced()
            split = int(len(ev) * 0.7)
            model = fit(ev, split, Path(tmp) / name)
            import json

            ref = json.loads((model / "meta.json").read_text())["holdout"]["log_loss"]
            rows = np.flatnonzero(raw.ts >= ev.ts[split])
            for way in WAYS:
                r = serve(model, feed(raw, rows, way), args.window, args.rows)
                print(
                    f"| {name} | {way} | {r['loss']:.4f} ({ref:.4f}) | {r['changes']} | "
                    f"{r['z'][0]:.1f} … {r['z'][1]:.1f} | {r['drift']:.0%} | "
                    f"{r['psi']:.2f} ({r['worst']}) | {r['psi_drift']:.0%} |",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
