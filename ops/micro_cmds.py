"""``gekko micro-eval``: how well the next mid-price change's direction is forecast from the
order book, out of sample, beside the baselines (coin, last move, imbalance logit).

Prints one markdown table per event stream (docs/forecasting.md, "Order-book microstructure",
shows them with this command); ``--json`` writes them too. The MLP needs the train extra (torch).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path


def add_parsers(sub: argparse._SubParsersAction, with_config) -> None:
    """Register ``micro-eval`` on the ``gekko`` sub-parser (needs no config)."""
    me = sub.add_parser(
        "micro-eval", help="score next-mid-change direction forecasts on order-book data"
    )
    me.add_argument(
        "--lobster",
        action="append",
        default=[],
        help="a LOBSTER message file (its orderbook file beside it) or a directory of "
        "whole-day pairs; repeatable",
    )
    me.add_argument("--binance", action="append", default=[], help="a Binance capture (.jsonl.gz)")
    me.add_argument("--seeds", default="0,1,2", help="MLP seeds (results: mean ± spread)")
    me.add_argument(
        "--train-frac", type=float, default=0.7, help="the earlier share of each stream fitted on"
    )
    me.add_argument(
        "--horizons",
        default="10,100,1000ms",
        help="down / flat / up over these horizons too: N events or Nms (empty: none)",
    )
    me.add_argument(
        "--fee-bps", type=float, default=0.2, help="taker fee of the trading simulation (bp)"
    )
    me.add_argument(
        "--latency-ms",
        type=float,
        default=0.0,
        help="from the event a decision is made on to the order reaching the venue",
    )
    me.add_argument("--json", default="", help="also write the reports to this JSON file")
    me.set_defaults(func=cmd_micro_eval)

    mt = sub.add_parser(
        "micro-train", help="fit a next-mid-change direction model and export it to ONNX"
    )
    mt.add_argument("--lobster", action="append", default=[], help="as micro-eval (one stream)")
    mt.add_argument("--binance", action="append", default=[], help="as micro-eval (one stream)")
    mt.add_argument("--model", choices=("logit", "mlp"), default="logit")
    mt.add_argument("--seed", type=int, default=0, help="the MLP's seed")
    mt.add_argument(
        "--train-frac", type=float, default=1.0, help="fit on this earlier share (default all)"
    )
    mt.add_argument("--out", required=True, help="model directory to write")
    mt.add_argument(
        "--instrument",
        action="append",
        default=[],
        help="an engine symbol the model is for (repeatable; none: any instrument of its tick)",
    )
    mt.set_defaults(func=cmd_micro_train)


def streams(args: argparse.Namespace) -> list:
    """The event streams the arguments name (LOBSTER: same-time messages coalesced)."""
    from models.lob_data import binance_events, lobster_days, lobster_events

    out = []
    for item in args.lobster:
        p = Path(item)
        if p.is_dir():
            pairs = list(lobster_days(p).values())
            if not pairs:
                raise ValueError(f"{p}: no whole-day LOBSTER message/orderbook pairs")
        else:
            book = p.with_name(p.name.replace("_message_", "_orderbook_"))
            if book == p or not book.exists():
                raise ValueError(f"{p}: not a LOBSTER message file with its orderbook file beside")
            pairs = [(p, book)]
        out += [lobster_events(m, b).coalesced() for m, b in pairs]
    out += [binance_events(b) for b in args.binance]
    return out


def parse_horizons(text: str) -> list[tuple[int, int]]:
    """ "10,100,1000ms" -> [(10, 0), (100, 0), (0, 1_000_000_000)]: (events, ns)."""
    out = []
    for item in (t.strip() for t in text.split(",") if t.strip()):
        ms = item.endswith("ms")
        value = int(item[:-2] if ms else item)
        if value <= 0:
            raise ValueError(f"--horizons: {item!r} is not a positive horizon")
        out.append((0, value * 1_000_000) if ms else (value, 0))
    return out


def cmd_micro_eval(args: argparse.Namespace) -> int:
    from models.lob_eval import evaluate_stream, format_report
    from models.lob_horizon import evaluate_horizon, format_horizon
    from models.lob_size import evaluate_horizon_change, evaluate_next_size, format_size

    if not args.lobster and not args.binance:
        print("gekko micro-eval: name data with --lobster and/or --binance", file=sys.stderr)
        return 2
    try:
        seeds = tuple(int(s) for s in args.seeds.split(",") if s.strip())
        horizons = parse_horizons(args.horizons)
        evs = streams(args)
    except (ValueError, OSError) as exc:
        print(f"gekko micro-eval: {exc}", file=sys.stderr)
        return 2
    reports: list = []
    extra: list = []
    sizes: list = []
    for ev in evs:
        r = evaluate_stream(
            ev,
            seeds=seeds,
            train_frac=args.train_frac,
            fee_bps=args.fee_bps,
            latency_ns=int(args.latency_ms * 1e6),
        )
        reports.append(r)
        print(format_report(r), end="\n\n", flush=True)
        sizes.append(evaluate_next_size(ev, train_frac=args.train_frac))
        print(format_size(sizes[-1]), end="\n\n", flush=True)
        for events, dt_ns in horizons:
            h = evaluate_horizon(ev, events=events, dt_ns=dt_ns, train_frac=args.train_frac)
            extra.append(h)
            print(format_horizon(h), end="\n\n", flush=True)
            sizes.append(evaluate_horizon_change(ev, events, dt_ns, train_frac=args.train_frac))
            print(format_size(sizes[-1]), end="\n\n", flush=True)
    if args.json:
        out = {
            "next_change": [asdict(r) for r in reports],
            "horizons": [asdict(h) for h in extra],
            "sizes": [asdict(z) for z in sizes],
        }
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


def cmd_micro_train(args: argparse.Namespace) -> int:
    from models.lob_drift import monitor_meta
    from models.lob_eval import expected_move, samples
    from models.lob_export import MicroModelError, export_micro
    from models.lob_models import MLP, LinearLogit

    try:
        evs = streams(args)
    except (ValueError, OSError) as exc:
        print(f"gekko micro-train: {exc}", file=sys.stderr)
        return 2
    if len(evs) != 1:
        print("gekko micro-train: name exactly one stream", file=sys.stderr)
        return 2
    ev = evs[0]
    x, y, group, idx = samples(ev)
    split = int(len(ev) * args.train_frac)
    keep = (idx < split) & (group < split)
    if keep.sum() < 1000:
        print(f"gekko micro-train: {int(keep.sum())} training rows: too few", file=sys.stderr)
        return 2
    f = LinearLogit() if args.model == "logit" else MLP(seed=args.seed)
    f.fit(x[keep], y[keep])
    move = expected_move(ev, idx[keep], group[keep])
    meta = {
        **monitor_meta(f.predict, x, y, group, keep, idx >= split),
        "stream": ev.name,
        "events": len(ev),
        "train_rows": int(keep.sum()),
        "train_frac": args.train_frac,
        "tick": ev.tick,
        "levels": int(ev.bid_px.shape[1]),
        "coalesce": ev.one_per_time,
        "px_unit": ev.px_unit,
        "expected_move": move,
        "expected_move_ticks": move / ev.tick,
        "seed": args.seed,
        **({"instruments": list(args.instrument)} if args.instrument else {}),
        "command": " ".join(
            ["gekko micro-train"]
            + [f"--lobster {p}" for p in args.lobster]
            + [f"--binance {p}" for p in args.binance]
            + [f"--model {args.model} --seed {args.seed} --train-frac {args.train_frac}"]
            + [f"--out {args.out}"]
            + [f"--instrument {s}" for s in args.instrument]
        ),
    }
    try:
        out = export_micro(f, args.out, meta)
    except MicroModelError as exc:
        print(f"gekko micro-train: {exc}", file=sys.stderr)
        return 1
    print(f"{f.name} on {ev.name}: {meta['train_rows']} rows -> {out}")
    return 0
