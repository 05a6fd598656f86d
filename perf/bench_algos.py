"""pyperf suite: execution algorithms and smart order routing — what they add to exec's path.

Benchmarks (one process; time per unit named in ``unit_of_loop``), each beside its baseline:

- ``algo-child-fill`` vs ``oms-fill``: one child fill through ``AlgoEngine.on_child_event``
  (child and parent bookkeeping, the parent's fill event and its ``AlgoProgress``) beside the
  same fill applied to an order in ``OrderTable`` (what exec does for any order's fill anyway).
- ``exec-md-algos-idle`` vs ``exec-md-no-algos``: one quote through ``ExecEngine.on_market_data``
  with an AlgoEngine that has no parent working, beside exec without one: what having the
  algorithms costs the per-tick path when nobody uses them.
- ``route-plan`` vs ``route-bruteforce``: planning a 150-lot marketable order over two venues of
  ten levels each (``engine.routing.plan_take``) beside the brute force over every split that
  the tests compare it with.
- ``router-order`` vs ``sim-order``: a marketable IOC order through ``SmartRouter`` over two
  simulated exchanges (plan, two legs, merged events) beside the same order sent to one
  simulated exchange.

Run ``python perf/bench_algos.py --fast`` (``make perf`` runs every suite); ``--only REGEX`` runs a
subset. The main process prints the medians and each ratio to its baseline.
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

from engine.algos.engine import AlgoEngine  # noqa: E402
from engine.exec_engine import ExecEngine  # noqa: E402
from engine.instruments import Instrument  # noqa: E402
from engine.messages import (  # noqa: E402
    AlgoKind,
    BookSnapshot,
    NewOrder,
    OrderPartiallyFilled,
    OrderType,
    Quote,
    Side,
    TimeInForce,
)
from engine.oms import OrderTable  # noqa: E402
from engine.routing import SmartRouter, VenueQuote, plan_take, take_cost  # noqa: E402
from engine.venues.sim import SimExchange  # noqa: E402

IID = 1
INS = [Instrument(instrument_id=IID, symbol="AAA")]
POOL = 20_000  # work items built before timing; a fresh session after this many
BIG = 10**12


def _fills(coid: int) -> list[OrderPartiallyFilled]:
    return [
        OrderPartiallyFilled(coid, 1, IID, 1, 100, 1, k, BIG - k, 0.0, 1, k, 5, 8, 8)
        for k in range(1, POOL + 1)
    ]


def bench_child_fill(algo: bool) -> Any:
    parent = NewOrder(1, 1, IID, Side.BUY, OrderType.LIMIT, TimeInForce.GTC, 100, BIG, 5, 5)
    parent.algo = int(AlgoKind.ICEBERG)
    parent.algo_params = {"display_qty": float(BIG)}

    def session() -> tuple[Any, list[OrderPartiallyFilled]]:
        if algo:
            ids = iter(range(1000, 10**9))
            eng = AlgoEngine(INS, lambda: next(ids))
            out = eng.submit(parent, 1)
            child = next(o for o in out if type(o) is NewOrder)
            on = eng.on_child_event
            return (lambda ev: on(ev, 9)), _fills(child.client_order_id)
        t = OrderTable()
        t.add(NewOrder(2, 1, IID, 1, OrderType.LIMIT, TimeInForce.GTC, 100, BIG, 5, 5), 1)
        return t.apply, _fills(2)

    def func(loops: int) -> float:
        elapsed, done = 0.0, 0
        while done < loops:
            n = min(loops - done, POOL)
            call, fills = session()
            chunk = fills[:n]
            t0 = perf_counter()
            for ev in chunk:
                call(ev)
            elapsed += perf_counter() - t0
            done += n
        return elapsed

    return func


class _NullVenue:
    name = "null"

    def __getattr__(self, attr: str) -> Any:
        return lambda *a, **k: [] if attr != "positions" else {}


def bench_exec_md(algos: bool) -> Any:
    quotes = [Quote(IID, 99 + k % 2, 100, 101 + k % 2, 100, k, k) for k in range(POOL)]

    def func(loops: int) -> float:
        elapsed, done = 0.0, 0
        while done < loops:
            n = min(loops - done, POOL)
            e = ExecEngine(_NullVenue(), INS, algo_engine="auto" if algos else None)
            assert (e.algo is not None) == algos
            on = e.on_market_data
            chunk = quotes[:n]
            t0 = perf_counter()
            for q in chunk:
                on(q, q.ts_event)
            elapsed += perf_counter() - t0
            done += n
        return elapsed

    return func


def _two_books() -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    a = [(1000 + 2 * k, 10 + (7 * k) % 13) for k in range(10)]
    b = [(1001 + 2 * k, 12 + (5 * k) % 11) for k in range(10)]
    return a, b


def bench_plan(brute: bool) -> Any:
    a, b = _two_books()
    quotes = [VenueQuote("A", a, 3.0), VenueQuote("B", b, 0.5)]
    qty = 150

    def brute_force() -> tuple[int, int]:
        avail_a, avail_b = sum(q for _, q in a), sum(q for _, q in b)
        best: tuple[float, int] | None = None
        for qa in range(0, min(qty, avail_a) + 1):
            qb = qty - qa
            if qb > avail_b:
                continue
            c = take_cost(a, Side.BUY, 3.0, qa) + take_cost(b, Side.BUY, 0.5, qb)
            if best is None or c < best[0]:
                best = (c, qa)
        assert best is not None
        return best[1], qty - best[1]

    def func(loops: int) -> float:
        t0 = perf_counter()
        if brute:
            for _ in range(loops):
                brute_force()
        else:
            for _ in range(loops):
                plan_take(quotes, Side.BUY, qty)
        return perf_counter() - t0

    return func


def bench_router(router: bool) -> Any:
    a, b = _two_books()
    orders = [
        NewOrder(k, 1, IID, Side.BUY, OrderType.LIMIT, TimeInForce.IOC, 1003, 30, 5, 5)
        for k in range(1, POOL + 1)
    ]

    def snap(levels: list[tuple[int, int]], t: int) -> BookSnapshot:
        return BookSnapshot(IID, [990], [10], [p for p, _ in levels], [q for _, q in levels], t, t)

    def func(loops: int) -> float:
        elapsed, done = 0.0, 0
        while done < loops:
            n = min(loops - done, POOL)
            va, vb = SimExchange(INS, name="A", taker_fee_bps=3.0), SimExchange(INS, name="B")
            venue: Any = SmartRouter({"A": va, "B": vb}) if router else va
            t0 = perf_counter()
            for k, o in enumerate(orders[:n]):
                if k % 8 == 0:  # fresh books now and then, outside what is compared
                    elapsed += perf_counter() - t0
                    va.on_market_data(snap(a, k), k)
                    vb.on_market_data(snap(b, k), k)
                    t0 = perf_counter()
                venue.submit(o, k)
            elapsed += perf_counter() - t0
            done += n
        return elapsed

    return func


BENCHMARKS: list[tuple[str, str, Any]] = [
    ("oms-fill", "fill", lambda: bench_child_fill(False)),
    ("algo-child-fill", "fill", lambda: bench_child_fill(True)),
    ("exec-md-no-algos", "quote", lambda: bench_exec_md(False)),
    ("exec-md-algos-idle", "quote", lambda: bench_exec_md(True)),
    ("route-bruteforce", "plan", lambda: bench_plan(True)),
    ("route-plan", "plan", lambda: bench_plan(False)),
    ("sim-order", "order", lambda: bench_router(False)),
    ("router-order", "order", lambda: bench_router(True)),
]

PAIRS = [
    ("algo-child-fill", "oms-fill"),
    ("exec-md-algos-idle", "exec-md-no-algos"),
    ("route-plan", "route-bruteforce"),
    ("router-order", "sim-order"),
]


def print_summary(results: dict[str, pyperf.Benchmark]) -> None:
    med = {n: b.median() for n, b in results.items()}
    print()
    print("Algos / routing summary (medians; 2-core VM figures are noisy: trust ratios)")
    for n, s in med.items():
        print(f"  {n:20s} {s * 1e9:10.0f} ns   {1 / s:12,.0f} /s")
    for new, base in PAIRS:
        if new in med and base in med:
            print(f"  {new} / {base}: x{med[new] / med[base]:.2f}")


def _add_cmdline_args(cmd: list[str], args: Any) -> None:
    """Workers must see ``--only`` too: pyperf numbers a worker's task by its position among the
    benchmarks it registers, so a worker running the unfiltered list would time another one."""
    if args.only:
        cmd.extend(("--only", args.only))


def main() -> None:
    runner = pyperf.Runner(processes=4, values=3, add_cmdline_args=_add_cmdline_args)
    runner.metadata["description"] = "execution algorithms and smart routing beside baselines"
    runner.argparser.add_argument(
        "--only", metavar="REGEX", default=None, help="run only the benchmarks matching REGEX"
    )
    args = runner.parse_args()
    results: dict[str, pyperf.Benchmark] = {}
    for name, unit, make in BENCHMARKS:
        if args.only and not re.search(args.only, name):
            continue
        bench = runner.bench_time_func(name, make(), metadata={"unit_of_loop": unit})
        if bench is not None:
            results[name] = bench
    if not args.worker and results:
        print_summary(results)


if __name__ == "__main__":
    main()
