"""pyperf suite: what tax lots cost per fill, against the average-cost book they replaced.

The exec process applies every fill to a ``Portfolio`` right after handing the order to the venue,
so its cost per fill is time that process is not reading the next order. Benchmarks, time per fill:

- ``fill-avgcost`` (baseline): one average-cost position update — the portfolio's arithmetic
  before tax lots (position, average price, realized P&L, cash), reproduced here;
- ``fill-lots-fifo`` / ``fill-lots-hifo``: ``Portfolio.on_fill`` with tax lots (that method),
  per-strategy attribution (a second lot book per strategy) and wash-sale bookkeeping;
- ``equity-sample``: ``Portfolio.sample`` (equity of three instruments + benchmark) — the
  per-sample cost of the equity curve;
- ``analytics-10k``: ``engine.analytics.summarize`` of a 10 000-point curve with a benchmark
  (time per curve; the run summary computes it once).

The fills are a fixed, seeded stream over three instruments and two strategies whose positions
wander between about ±60 lots and return to flat at the end of the stream, so the lot books stay
a realistic size however many times pyperf cycles through it.

Run ``python perf/bench_portfolio.py --fast`` (``make perf`` runs every suite); the main process
prints time per fill and the lots / average-cost ratio.
"""

from __future__ import annotations

import sys
from itertools import cycle
from pathlib import Path
from time import perf_counter

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pyperf  # noqa: E402

from engine.analytics import summarize  # noqa: E402
from engine.instruments import Instrument  # noqa: E402
from engine.messages import OrderFilled, OrderPartiallyFilled  # noqa: E402
from engine.portfolio import Portfolio  # noqa: E402

INS = [Instrument(instrument_id=i, symbol=s) for i, s in ((1, "AAA"), (2, "BBB"), (3, "CCC"))]
N_FILLS = 20_000


def make_fills(n: int = N_FILLS, seed: int = 5) -> list[OrderPartiallyFilled]:
    rng = np.random.default_rng(seed)
    pos = {(sid, iid): 0 for sid in (1, 2) for iid in (1, 2, 3)}
    px = {1: 19_000, 2: 41_000, 3: 11_000}
    out: list[OrderPartiallyFilled] = []
    k = 0

    def add(sid: int, iid: int, signed: int) -> None:
        nonlocal k
        k += 1
        side = 1 if signed > 0 else -1
        coid = (sid << 32) | k
        out.append(
            OrderFilled(
                coid, k, iid, side, px[iid], abs(signed), abs(signed), 0, 0.01, 2, k, 0, k, k
            )
        )
        pos[(sid, iid)] += signed

    for _ in range(n):
        sid, iid = int(rng.integers(1, 3)), int(rng.integers(1, 4))
        px[iid] = max(1, px[iid] + int(rng.integers(-5, 6)))
        q = int(rng.integers(1, 20))
        p = pos[(sid, iid)]
        side = -1 if p > 60 else 1 if p < -60 else (1 if rng.random() < 0.5 else -1)
        add(sid, iid, side * q)
    for (sid, iid), p in list(pos.items()):
        if p:
            add(sid, iid, -p)
    return out


class AvgCostBook:
    """The baseline: the average-cost arithmetic of one instrument's position."""

    __slots__ = ("position", "avg_px", "realized", "fees", "cash", "multiplier")

    def __init__(self, multiplier: float) -> None:
        self.position, self.avg_px, self.realized, self.fees, self.cash = 0, 0.0, 0.0, 0.0, 0.0
        self.multiplier = multiplier

    def on_fill(self, ev: OrderPartiallyFilled) -> None:
        qty = ev.fill_qty
        signed = qty if ev.side > 0 else -qty
        px = ev.fill_px
        self.fees += ev.fee
        self.cash -= signed * px * self.multiplier + ev.fee
        pos = self.position
        if pos == 0 or (pos > 0) == (signed > 0):
            new = pos + signed
            self.avg_px = (self.avg_px * abs(pos) + px * qty) / abs(new)
            self.position = new
            return
        closed = min(qty, abs(pos))
        d = 1 if pos > 0 else -1
        self.realized += (px - self.avg_px) * closed * d * self.multiplier
        self.position = pos + signed
        if self.position == 0:
            self.avg_px = 0.0
        elif (self.position > 0) != (pos > 0):
            self.avg_px = float(px)


def bench_avgcost(loops: int) -> float:
    books = {i.instrument_id: AvgCostBook(0.01) for i in INS}
    it = cycle(FILLS)
    t0 = perf_counter()
    for _ in range(loops):
        ev = next(it)
        books[ev.instrument_id].on_fill(ev)
    return perf_counter() - t0


def bench_lots(method: str):
    def run(loops: int) -> float:
        p = Portfolio(INS, 1e6, lot_method=method)
        it = cycle(FILLS)
        t0 = perf_counter()
        for _ in range(loops):
            p.on_fill(next(it))
        return perf_counter() - t0

    return run


def bench_sample(loops: int) -> float:
    p = Portfolio(INS, 1e6, benchmark=1)
    for ev in FILLS[:50]:
        p.on_fill(ev)
    t0 = perf_counter()
    for k in range(loops):
        p.sample(k)
    return perf_counter() - t0


def bench_analytics(loops: int) -> float:
    rng = np.random.default_rng(1)
    eq = 1e6 * np.cumprod(1 + rng.normal(0, 1e-3, 10_000))
    bench = 100 * np.cumprod(1 + rng.normal(0, 1e-3, 10_000))
    ts = np.arange(10_000, dtype=np.int64) * 100_000_000
    t0 = perf_counter()
    for _ in range(loops):
        summarize(ts, eq, bench)
    return perf_counter() - t0


FILLS = make_fills()
BENCHMARKS = [
    ("fill-avgcost", bench_avgcost),
    ("fill-lots-fifo", bench_lots("fifo")),
    ("fill-lots-hifo", bench_lots("hifo")),
    ("equity-sample", bench_sample),
    ("analytics-10k", bench_analytics),
]


def main() -> None:
    runner = pyperf.Runner()
    runner.metadata["description"] = (
        "Portfolio: tax-lot fills vs average cost, equity sampling, analytics"
    )
    args = runner.parse_args()
    benches = {name: runner.bench_time_func(name, fn) for name, fn in BENCHMARKS}
    if args.worker:
        return
    results = {name: b.median() for name, b in benches.items() if b is not None}
    if not results:
        return
    base = results.get("fill-avgcost")
    print("\nbench_portfolio summary (median):")
    for name, t in results.items():
        unit = "per curve" if name == "analytics-10k" else "per call"
        ratio = (
            f"  x{t / base:.1f} the average-cost baseline"
            if base and name.startswith("fill-lots")
            else ""
        )
        print(f"  {name:<16} {t * 1e6:9.2f} µs {unit}{ratio}")


if __name__ == "__main__":
    main()
