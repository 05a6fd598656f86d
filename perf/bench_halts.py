"""pyperf suite: what the simulated exchange's status rules add to the feed, per market message.

With ``[sim] halts`` or a circuit breaker configured, the feed runs every market-data message
through ``engine.sources.halts.ExchangeRules`` (``with_exchange_status``) before publishing it.
Benchmarks, time per message over a fixed, seeded synthetic stream (20 000 messages, three
instruments: quotes, trades, book deltas):

- ``plain`` (baseline): iterating the stream as the feed does without rules (nothing configured:
  ``procs.build.with_exchange_status`` returns the source itself);
- ``halts``: two scheduled halts (one instrument, the venue), breaker off — the timer check and
  the withheld prints;
- ``halts+breaker``: the same plus the limit-up/limit-down breaker (a sliding max/min of every
  quote mid and trade price), with a band wide enough that it never trips, so the measured path
  is the steady state.

Run ``python perf/bench_halts.py --fast`` (``make perf`` runs every suite); the main process
prints time per message and the added cost against the baseline.
"""

from __future__ import annotations

import sys
from itertools import islice
from pathlib import Path
from time import perf_counter

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import pyperf  # noqa: E402

from engine.instruments import Instrument  # noqa: E402
from engine.sources.halts import (  # noqa: E402
    VENUE_WIDE,
    ExchangeRules,
    ScheduledHalt,
    with_exchange_status,
)
from engine.sources.synthetic import InstrumentSpec, SyntheticMarket  # noqa: E402

N = 20_000
S = 1_000_000_000
INS = [
    Instrument(instrument_id=i, symbol=s, tick_size=0.01, lot_size=1.0)
    for i, s in ((1, "AAA"), (2, "BBB"), (3, "CCC"))
]
STREAM = list(
    islice(
        SyntheticMarket(
            [
                InstrumentSpec.from_instrument(i, 100.0 + 50 * k, annual_vol=0.3)
                for k, i in enumerate(INS)
            ],
            seed=3,
        ),
        N,
    )
)
HALTS = [ScheduledHalt(1, S // 2, S // 2), ScheduledHalt(VENUE_WIDE, S + S // 2, S // 4)]


def bench(breaker: float | None):
    """Time ``loops`` passes over the stream; returns seconds (pyperf divides by inner_loops)."""

    def run(loops: int) -> float:
        t0 = perf_counter()
        for _ in range(loops):
            if breaker is None:
                for _m in STREAM:
                    pass
            else:
                rules = ExchangeRules([1, 2, 3], HALTS, breaker_pct=breaker)
                for _m in with_exchange_status(STREAM, rules):
                    pass
        return perf_counter() - t0

    return run


BENCHMARKS = [
    ("plain", bench(None)),
    ("halts", bench(0.0)),
    ("halts+breaker", bench(50.0)),
]


def main() -> None:
    runner = pyperf.Runner()
    runner.metadata["description"] = "simulated exchange status rules: cost per market message"
    args = runner.parse_args()
    benches = {
        name: runner.bench_time_func(name, fn, inner_loops=N, metadata={"unit_of_loop": "message"})
        for name, fn in BENCHMARKS
    }
    if args.worker:
        return
    results = {name: b.median() for name, b in benches.items() if b is not None}
    if not results:
        return
    base = results.get("plain")
    print("\nbench_halts summary (median, per market message):")
    for name, t in results.items():
        extra = (
            f"  +{(t - base) * 1e9:6.0f} ns over plain iteration"
            if base and name != "plain"
            else ""
        )
        print(f"  {name:<14} {t * 1e9:8.0f} ns{extra}")


if __name__ == "__main__":
    main()
