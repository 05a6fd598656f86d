"""pyperf suite: the order management system — events per second, and exec's added latency.

Benchmarks (one process; time is per unit named in ``unit_of_loop``):

- ``oms-events``: ``OrderTable`` alone, one order's whole life per loop — ``add``, then the
  venue's ack, a partial fill and the final fill through ``apply`` (4 order events, reported
  per event). The issue's target is 10,000 orders/s (the spec) and 100,000+ events/s on one
  core; the summary prints both ratios.
- ``oms-events-cancel``: the other common life — add, ack, ``request_cancel``, canceled.
- ``exec-null-venue`` vs ``venue-direct``: exec's path from an approved ``NewOrder`` to the
  venue adapter's ``submit`` (idempotency check, order table, type/halt/price-gap checks, the
  venue call) against a venue that returns nothing, beside the bare venue call itself — the
  difference is the latency exec adds. ``exec-null-venue-gap`` is the same for MARKET orders
  with the price-gap check on (a bisect in the mid history).
- ``exec-sim`` vs ``sim-direct``: a marketable limit order through ExecEngine to the simulated
  exchange (accept + fill back through the table) beside the same order sent to the simulated
  exchange directly: the OMS's share of a realistic round.
- ``exec-sim-journal`` vs ``exec-sim``: the same round as exec runs it, appending the order and
  the events it caused to its recovery journal (``procs.exec_journal.ExecJournal``: one
  ``writev``, no fsync; always on) before publishing them: the journal's cost per order.

Run ``python perf/bench_oms.py --fast`` (``make perf`` runs every suite); ``--only REGEX`` runs
a subset. The main process prints a summary: rates, the added latency and the ratios.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from time import perf_counter
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import pyperf  # noqa: E402

from engine.exec_engine import ExecEngine, ExecPolicy  # noqa: E402
from engine.instruments import Instrument  # noqa: E402
from engine.messages import (  # noqa: E402
    NewOrder,
    OrderAccepted,
    OrderCanceled,
    OrderFilled,
    OrderPartiallyFilled,
    OrderType,
    Quote,
    Side,
    TimeInForce,
)
from engine.oms import OrderTable  # noqa: E402
from engine.venues.sim import SimExchange  # noqa: E402

IID = 1
INS = [Instrument(instrument_id=IID, symbol="AAA")]
#: orders built before timing; a table / engine serves at most this many, then a fresh one
POOL = 20_000
SPEC_ORDERS_PER_S = 10_000
GOAL_EVENTS_PER_S = 100_000


def _orders(otype: int = OrderType.LIMIT, px: int = 100) -> list[NewOrder]:
    return [
        NewOrder(k, 1, IID, Side.BUY, otype, TimeInForce.GTC, px, 10, 5, 6)
        for k in range(1, POOL + 1)
    ]


def _life_fill() -> list[tuple[NewOrder, tuple[object, ...]]]:
    out = []
    for o in _orders():
        k = o.client_order_id
        out.append(
            (
                o,
                (
                    OrderAccepted(k, k, IID, 1, 100, 10, 5, 7, 7),
                    OrderPartiallyFilled(k, k, IID, 1, 100, 4, 4, 6, 0.0, 1, 2 * k, 5, 8, 8),
                    OrderFilled(k, k, IID, 1, 100, 6, 10, 0, 0.0, 1, 2 * k + 1, 5, 9, 9),
                ),
            )
        )
    return out


def _life_cancel() -> list[tuple[NewOrder, tuple[object, ...]]]:
    out = []
    for o in _orders():
        k = o.client_order_id
        out.append(
            (
                o,
                (
                    OrderAccepted(k, k, IID, 1, 100, 10, 5, 7, 7),
                    OrderCanceled(k, IID, 10, "canceled", 5, 8, 8),
                ),
            )
        )
    return out


def bench_table(lives: list[tuple[NewOrder, tuple[object, ...]]], cancel: bool) -> Any:
    def func(loops: int) -> float:
        elapsed = 0.0
        done = 0
        while done < loops:
            n = min(loops - done, POOL)
            t = OrderTable()
            add, apply, req = t.add, t.apply, t.request_cancel
            chunk = lives[:n]
            t0 = perf_counter()
            if cancel:
                for o, (a, c) in chunk:
                    add(o, 1)
                    apply(a)
                    req(o.client_order_id)
                    apply(c)
            else:
                for o, evs in chunk:
                    add(o, 1)
                    for ev in evs:
                        apply(ev)
            elapsed += perf_counter() - t0
            done += n
        return elapsed

    return func


class NullVenue:
    """A venue adapter that takes every call and answers nothing (measures exec alone)."""

    name = "null"

    def submit(self, order: Any, now_ns: int) -> list[object]:
        return []

    def cancel(self, cancel: Any, now_ns: int) -> list[object]:
        return []

    def replace(self, replace: Any, now_ns: int) -> list[object]:
        return []

    def on_market_data(self, msg: Any, now_ns: int) -> list[object]:
        return []

    def poll(self, now_ns: int) -> list[object]:
        return []

    def open_orders(self) -> list[NewOrder]:
        return []

    def positions(self) -> dict[int, int]:
        return {}


def _quote(t: int) -> Quote:
    return Quote(IID, 99, 1_000_000, 101, 1_000_000, t, t)


def bench_exec(kind: str) -> Any:
    """exec's order path, or the bare venue call, over POOL-sized fresh sessions."""
    market = kind.endswith("gap") or kind.startswith(("exec-sim", "sim-direct"))
    otype = OrderType.MARKET if kind.endswith("gap") else OrderType.LIMIT
    orders = _orders(otype, 0 if otype == OrderType.MARKET else (101 if market else 100))
    policy = ExecPolicy(price_gap_bps=100 if kind.endswith("gap") else 0)

    journal = _journal() if kind.endswith("journal") else None

    def session() -> tuple[Any, Any]:
        if kind.startswith(("exec-sim", "sim-direct")):
            venue: Any = SimExchange(INS)
        else:
            venue = NullVenue()
        venue.on_market_data(_quote(1), 1)
        if kind.startswith("exec"):
            e = ExecEngine(venue, INS, policy, algo_engine=None)
            for t in range(1, 40):
                e.on_market_data(_quote(t), t)  # a mid history for the gap check
            if journal is not None:
                return _journaled(e.on_order, journal), venue
            return e.on_order, venue
        return venue.submit, venue

    def func(loops: int) -> float:
        elapsed = 0.0
        done = 0
        while done < loops:
            n = min(loops - done, POOL)
            call, venue = session()
            chunk = orders[:n]
            t0 = perf_counter()
            for o in chunk:
                call(o, 50)
            elapsed += perf_counter() - t0
            done += n
        return elapsed

    return func


def _journal() -> Any:
    """A fresh exec journal in a temporary directory (removed at exit)."""
    import atexit
    import shutil
    import tempfile

    from procs.exec_journal import ExecJournal

    d = tempfile.mkdtemp(prefix="gekko-bench-journal-")
    j = ExecJournal(Path(d) / "exec.journal")
    atexit.register(shutil.rmtree, d, True)
    atexit.register(j.close)
    return j


def _journaled(on_order: Any, journal: Any) -> Any:
    """exec's order step: the order, then its events journaled before publishing."""
    seq = [0]

    def call(o: Any, now: int) -> list[Any]:
        evs = on_order(o, now)
        journal.append(o, evs, seq[0])
        seq[0] += len(evs)
        return evs

    return call


BENCHMARKS: list[tuple[str, str, int]] = [
    ("oms-events", "event", 4),
    ("oms-events-cancel", "event", 4),
    ("venue-direct", "order", 1),
    ("exec-null-venue", "order", 1),
    ("exec-null-venue-gap", "order", 1),
    ("sim-direct", "order", 1),
    ("exec-sim", "order", 1),
    ("exec-sim-journal", "order", 1),
]


def make_func(name: str) -> Any:
    if name == "oms-events":
        return bench_table(_life_fill(), cancel=False)
    if name == "oms-events-cancel":
        return bench_table(_life_cancel(), cancel=True)
    return bench_exec(name)


def print_summary(results: dict[str, pyperf.Benchmark]) -> None:
    med = {n: b.median() for n, b in results.items()}
    print()
    print("OMS summary (medians; 2-core VM figures are noisy: trust ratios)")
    for n, s in med.items():
        print(f"  {n:22s} {s * 1e9:9.0f} ns   {1 / s:12,.0f} /s")
    ev = med.get("oms-events")
    if ev:
        eps = 1 / ev
        print(
            f"  order events/s {eps:,.0f}: x{eps / GOAL_EVENTS_PER_S:.1f} the 100,000 events/s goal; "
            f"{eps / 4:,.0f} whole orders/s = x{eps / 4 / SPEC_ORDERS_PER_S:.1f} the spec's 10,000"
        )
    if "exec-null-venue" in med and "venue-direct" in med:
        added = med["exec-null-venue"] - med["venue-direct"]
        print(
            f"  exec's added latency, approved order -> venue call: {added * 1e6:.2f} µs "
            f"(x{med['exec-null-venue'] / med['venue-direct']:.1f} the bare call)"
        )
    if "exec-null-venue-gap" in med and "venue-direct" in med:
        added = med["exec-null-venue-gap"] - med["venue-direct"]
        print(f"  ... MARKET order with the price-gap check: {added * 1e6:.2f} µs")
    if "exec-sim" in med and "sim-direct" in med:
        r = med["exec-sim"] / med["sim-direct"]
        print(f"  marketable order through exec to the sim: x{r:.2f} the sim alone")
    if "exec-sim-journal" in med and "exec-sim" in med:
        added = med["exec-sim-journal"] - med["exec-sim"]
        print(
            f"  exec journal append: +{added * 1e6:.2f} µs per order "
            f"(x{med['exec-sim-journal'] / med['exec-sim']:.2f} exec-sim)"
        )


def _add_cmdline_args(cmd: list[str], args: Any) -> None:
    """Workers must see ``--only`` too: pyperf numbers a worker's task by its position among the
    benchmarks it registers, so a worker running the unfiltered list would time another one."""
    if args.only:
        cmd.extend(("--only", args.only))


def main() -> None:
    runner = pyperf.Runner(processes=4, values=3, add_cmdline_args=_add_cmdline_args)
    runner.metadata["description"] = "order management system: events/s, exec added latency"
    runner.argparser.add_argument(
        "--only", metavar="REGEX", default=None, help="run only the benchmarks matching REGEX"
    )
    args = runner.parse_args()
    results: dict[str, pyperf.Benchmark] = {}
    for name, unit, inner in BENCHMARKS:
        if args.only and not re.search(args.only, name):
            continue
        bench = runner.bench_time_func(
            name, make_func(name), inner_loops=inner, metadata={"unit_of_loop": unit}
        )
        if bench is not None:
            results[name] = bench
    if not args.worker and results:
        print_summary(results)


if __name__ == "__main__":
    main()
