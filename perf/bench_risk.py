"""pyperf suite: the pre-trade risk check and the VaR recompute for a book of 1,000 instruments.

The book: 1,000 instruments in 10 sectors, a position held in every one of them, 500 intervals of
returns (seeded, a common factor plus noise). The gate has every limit on — position and sector
% of equity, correlation 0.70 with every held position, historical + parametric 99 % VaR — set
so that the benchmarked order passes them all (every check runs to the end).

Benchmarks:

- ``pretrade-gate``: ``RiskGate.on_intent`` for a new limit order (time per order; each is
  canceled again outside the timing so the book stays the same);
- ``pretrade-pandas`` (baseline): the same decision recomputed per order the plain way —
  exposures into a pandas Series, VaR after the order from the returns DataFrame
  (``DataFrame.dot``, ``quantile``, ``std``) and the instrument's correlation with every held one
  (``DataFrame.corrwith``);
- ``var-full-gate``: the full VaR recompute after new marks — ``RiskStats.set_exposure`` (P&L
  series and its covariance with every instrument: O(n·T) + O(n²)) plus historical and
  parametric VaR;
- ``var-full-pandas`` (baseline): the same two VaR figures from the DataFrame;
- ``returns-window``: ``RiskStats.set_returns`` — a new returns window (covariance and
  correlation matrices, 1,000 × 1,000, over 500 rows), done once per returns interval;
- ``seed-window``: what seeding the window at start adds in the process (``procs/risk_history``):
  ``ReturnSampler.seed`` of 501 sampled mids × 1,000 instruments, then ``set_returns`` — beside
  ``returns-window`` (its baseline: the recompute every live sample does anyway);
- with ``--seed-db`` only (it starts an embedded PostgreSQL and records 1,000 instruments × 502
  intervals × 2 quotes first, ~10 s): ``seed-db-probe``, reading those 501 samples per
  instrument from the record as risk does at start (``load_record``: one index probe per
  instrument and sample), and ``seed-db-scan`` (baseline): reading every quote of the window
  and resampling in numpy.

Run ``python perf/bench_risk.py --fast`` (``make perf`` runs every suite; add ``--seed-db`` for
the two PostgreSQL cases; ``--age-ab`` times only the staleness check: the gate with
``max_intent_age_ns`` on and off, alternated in one process). The main process also
times 20,000 single checks with ``perf_counter_ns`` and prints their p50 / p99 beside the spec
(under 10 ms) and the aim (p99 under 20 µs), and the gate / baseline ratios.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections.abc import Callable
from itertools import count
from pathlib import Path
from time import perf_counter, perf_counter_ns

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pyperf  # noqa: E402
from scipy.stats import norm  # noqa: E402

from engine.instruments import Instrument  # noqa: E402
from engine.messages import (  # noqa: E402
    IntentNew,
    NewOrder,
    OrderCanceled,
    OrderFilled,
    OrderType,
    Quote,
    Side,
    TimeInForce,
)
from engine.risk import RiskGate, RiskLimits  # noqa: E402
from engine.risk_stats import RiskStats  # noqa: E402

N, T = 1_000, 500
MID = 10_000  # ticks: $100.00
_ids = count(1)


def make_returns(seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    common = rng.normal(0, 0.01, (T, 1))
    return common * rng.uniform(0.1, 0.6, N) + rng.normal(0, 0.015, (T, N))


R = make_returns()
INS = [Instrument(instrument_id=i, symbol=f"S{i:04d}", sector=f"sector{i % 10}") for i in range(N)]
LIMITS = RiskLimits.off(
    max_order_notional=1e9,
    max_position_lots=10**6,
    max_open_orders=10_000,
    capital=1e9,
    max_position_pct=5.0,
    max_sector_pct=15.0,
    max_correlation=0.70,
    max_var_pct=2.0,
    var_method="both",
    min_history=20,
    max_orders_per_s=0,
    price_band_pct=5.0,
    max_intent_age_ms=1000.0,  # the staleness check runs (and passes) on every order
)
HELD = np.where(np.arange(N) % 2 == 0, 100, -80)  # lots, long and short


def make_gate() -> RiskGate:
    g = RiskGate(LIMITS, INS)
    for i in range(N):
        g.on_market_data(Quote(i, MID - 1, 10, MID + 1, 10, 0, 0))
        side = Side.BUY if HELD[i] > 0 else Side.SELL
        q = int(abs(HELD[i]))
        g.on_exec_event(OrderFilled(next(_ids), 1, i, side, MID, q, q, 0, 0.0, 1, 1, 0, 1, 1))
    g.on_prices(1)
    g.set_returns(R)
    return g


def order(iid: int) -> IntentNew:
    return IntentNew(
        next(_ids), 1, iid, int(Side.BUY), int(OrderType.LIMIT), int(TimeInForce.GTC), MID, 10, 0, 0
    )


def bench_gate(loops: int) -> float:
    g = GATE
    total = 0.0
    for k in range(loops):
        it = order((k * 7) % N)
        t0 = perf_counter()
        out = g.on_intent(it, 2)
        total += perf_counter() - t0
        g.on_exec_event(OrderCanceled(out[0].client_order_id, it.instrument_id, 10, "", 0, 3, 3))
    return total


class PandasCheck:
    """The baseline: the same exposure, correlation and VaR decision, recomputed per order."""

    def __init__(self) -> None:
        self.df = pd.DataFrame(R, columns=[i.symbol for i in INS])
        self.pos = pd.Series(HELD.astype(float), index=self.df.columns)
        self.px = pd.Series(float(MID) * 0.01, index=self.df.columns)
        self.sector = pd.Series([i.sector for i in INS], index=self.df.columns)
        self.equity = LIMITS.capital
        self.z = norm.ppf(LIMITS.var_confidence)

    def check(self, iid: int, qty: int) -> bool:
        sym = self.df.columns[iid]
        pos = self.pos.copy()
        pos[sym] += qty
        w = pos * self.px
        if abs(w[sym]) > self.equity * LIMITS.max_position_pct / 100:
            return False
        if (
            w.abs()[self.sector == self.sector[sym]].sum()
            > self.equity * LIMITS.max_sector_pct / 100
        ):
            return False
        held = self.pos[(self.pos != 0) & (self.pos.index != sym)]
        corr = self.df[held.index].corrwith(self.df[sym]) * np.sign(held) * np.sign(pos[sym])
        if corr.max() > LIMITS.max_correlation:
            return False
        pnl = self.df.dot(w)
        var = max(-pnl.quantile(0.01), self.z * pnl.std() - pnl.mean())
        return var <= self.equity * LIMITS.max_var_pct / 100


def bench_pandas(loops: int) -> float:
    b = PANDAS
    t0 = perf_counter()
    for k in range(loops):
        b.check((k * 7) % N, 10)
    return perf_counter() - t0


def bench_var_gate(loops: int) -> float:
    s = RiskStats(N, 0.99, 1.0)
    s.set_returns(R)
    w = HELD * MID * 0.01
    t0 = perf_counter()
    for _ in range(loops):
        s.set_exposure(w)
        s.hist_var()
        s.param_var()
    return perf_counter() - t0


def bench_var_pandas(loops: int) -> float:
    df = PANDAS.df
    z = PANDAS.z
    w = pd.Series(HELD * MID * 0.01, index=df.columns)
    t0 = perf_counter()
    for _ in range(loops):
        pnl = df.dot(w)
        max(-pnl.quantile(0.01), z * pnl.std() - pnl.mean())
    return perf_counter() - t0


def bench_returns_window(loops: int) -> float:
    s = RiskStats(N, 0.99, 1.0)
    t0 = perf_counter()
    for _ in range(loops):
        s.set_returns(R)
    return perf_counter() - t0


def seed_prices() -> np.ndarray:
    """501 sampled mids per instrument whose returns are ``R`` (what the record would give)."""
    return 100.0 * np.vstack([np.ones(N), np.cumprod(1.0 + R, axis=0)])


SEED_PX = seed_prices()


def bench_seed_window(loops: int) -> float:
    from engine.risk_stats import ReturnSampler

    s = RiskStats(N, 0.99, 1.0)
    t0 = perf_counter()
    for _ in range(loops):
        smp = ReturnSampler(N, T)
        smp.seed(SEED_PX)
        s.set_returns(smp.matrix())
    return perf_counter() - t0


# --- seeding from PostgreSQL (--seed-db) ---------------------------------------------------
SEED_STEP = 60 * 10**9
SEED_END = 1_790_000_000 * 10**9
SEED_RUN = SEED_END - (T + 2) * SEED_STEP
SYMBOLS = [i.symbol for i in INS]


def populate(dsn: str) -> None:
    """1,000 instruments, two quotes at random times in each of 502 one-minute intervals."""
    import psycopg

    from ops.store.migrate import migrate
    from ops.store.pg import run_tx
    from ops.store.writer import Rows, Writer
    from procs.risk_history import record_run_instruments

    rng = np.random.default_rng(5)
    with psycopg.connect(dsn, autocommit=True) as conn:
        migrate(conn)
    with psycopg.connect(dsn) as conn:
        run_tx(conn, lambda c: record_run_instruments(c, SEED_RUN, INS))
        for k in range(T + 2):
            rows = Rows()
            t_end = SEED_END - (T + 1 - k) * SEED_STEP
            for i in range(N):
                for t in t_end - rng.integers(0, SEED_STEP, 2):
                    ask = MID + 1 + int(rng.integers(0, 5))
                    rows.add(SEED_RUN, Quote(i, MID - 1, 1, ask, 1, int(t), int(t), 0))
            run_tx(conn, lambda c, rows=rows: Writer().write(c, rows))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("ANALYZE")


def bench_seed_db_probe(dsn: str) -> Callable[[int], float]:
    import psycopg

    from procs.risk_history import load_record

    def run(loops: int) -> float:
        with psycopg.connect(dsn, autocommit=True) as conn:
            t0 = perf_counter()
            for _ in range(loops):
                rec = load_record(conn, SYMBOLS, SEED_STEP, T, SEED_END - 2 * T * SEED_STEP)
            dt = perf_counter() - t0
        assert rec.grid is not None and bool((rec.prices > 0).all())
        return dt

    return run


def bench_seed_db_scan(dsn: str) -> Callable[[int], float]:
    """Baseline: every quote of the window (and the one before it), resampled in numpy."""
    import psycopg

    from engine.risk_history import last_at_or_before, sample_grid

    def run(loops: int) -> float:
        with psycopg.connect(dsn, autocommit=True) as conn:
            t0 = perf_counter()
            for _ in range(loops):
                grid = sample_grid(SEED_END, SEED_STEP, T)
                rows = conn.execute(
                    "SELECT instrument_id, ts_event, (bid_px + ask_px) / 2.0 FROM quotes"
                    " WHERE run_id = %s AND ts_event >= %s AND ts_event <= %s"
                    " ORDER BY instrument_id, ts_event",
                    (SEED_RUN, int(grid[0]) - SEED_STEP, SEED_END),
                ).fetchall()
                a = np.array(rows, dtype=np.float64)
                iid = a[:, 0].astype(np.int64)
                cuts = np.searchsorted(iid, np.arange(N + 1))
                out = np.zeros((T + 1, N))
                for i in range(N):
                    lo, hi = cuts[i], cuts[i + 1]
                    out[:, i] = last_at_or_before(a[lo:hi, 1].astype(np.int64), a[lo:hi, 2], grid)
            dt = perf_counter() - t0
        assert bool((out > 0).all())
        return dt

    return run


GATE = make_gate()
PANDAS = PandasCheck()
BENCHMARKS = [
    ("pretrade-gate", bench_gate),
    ("pretrade-pandas", bench_pandas),
    ("var-full-gate", bench_var_gate),
    ("var-full-pandas", bench_var_pandas),
    ("returns-window", bench_returns_window),
    ("seed-window", bench_seed_window),
]
SEED_DB_BENCHMARKS = [("seed-db-probe", bench_seed_db_probe), ("seed-db-scan", bench_seed_db_scan)]


def percentiles(n: int = 20_000) -> tuple[float, float, float]:
    """p50 / p99 / max of single pre-trade checks, in µs (the gate must approve every one)."""
    lat = _check_latencies(make_gate(), n)
    p50, p99, mx = np.percentile(lat[n // 10 :], [50, 99, 100]) / 1e3
    return float(p50), float(p99), float(mx)


def _check_latencies(g: object, n: int) -> np.ndarray:
    """ns of each of ``n`` single pre-trade checks; each approved order is canceled again so
    the book stays the same size."""
    lat = np.empty(n, dtype=np.int64)
    for k in range(n):
        it = order((k * 7) % N)
        t0 = perf_counter_ns()
        out = g.on_intent(it, 2)  # type: ignore[attr-defined]
        lat[k] = perf_counter_ns() - t0
        assert isinstance(out[0], NewOrder), out
        g.on_exec_event(  # type: ignore[attr-defined]
            OrderCanceled(out[0].client_order_id, it.instrument_id, 10, "", 0, 3, 3)
        )
    return lat


def age_ab(rounds: int = 30, n: int = 2_000) -> None:
    """What the staleness check (``max_intent_age_ns``) costs: the same book with the limit on
    and off, alternated round by round in this process (each round's median per check)."""
    import statistics

    import msgspec

    gates = {"on": make_gate(), "off": make_gate()}
    gates["off"].limits = msgspec.structs.replace(LIMITS, max_intent_age_ms=0.0)
    med: dict[str, list[float]] = {"on": [], "off": []}
    for r in range(rounds):
        for name in ("on", "off") if r % 2 else ("off", "on"):
            med[name].append(float(np.median(_check_latencies(gates[name], n))))
    on, off = statistics.median(med["on"]), statistics.median(med["off"])
    diff = statistics.median(a - b for a, b in zip(med["on"], med["off"], strict=True))
    print(f"staleness check A/B ({rounds} alternated rounds x {n} checks, median of medians):")
    print(f"  on {on / 1e3:.2f} µs  off {off / 1e3:.2f} µs  on - off {diff:+.0f} ns per check")


def _add_cmdline_args(cmd: list[str], args: argparse.Namespace) -> None:
    if args.seed_db:
        cmd.extend(("--seed-db", "--dsn", args.dsn))


def main() -> None:
    runner = pyperf.Runner(add_cmdline_args=_add_cmdline_args)
    runner.metadata["description"] = "Risk: pre-trade check and VaR recompute, 1,000 instruments"
    runner.argparser.add_argument(
        "--seed-db", action="store_true", help="also time seeding from an embedded PostgreSQL"
    )
    runner.argparser.add_argument("--dsn", default="", help=argparse.SUPPRESS)
    runner.argparser.add_argument(
        "--age-ab", action="store_true", help="only the staleness check's A/B (on vs off)"
    )
    args = runner.parse_args()
    if args.age_ab:
        age_ab()
        return
    server, base = None, ""
    if args.seed_db and not args.worker and not args.dsn:
        import pgserver

        base = tempfile.mkdtemp(prefix="gkrisk", dir="/tmp")
        server = pgserver.get_server(Path(base) / "pg", cleanup_mode="delete")
        args.dsn = server.get_uri()
        t0 = perf_counter()
        populate(args.dsn)
        took = perf_counter() - t0
        print(f"recorded {N} instruments x {T + 2} intervals x 2 quotes in {took:.1f}s")
    try:
        benches = {name: runner.bench_time_func(name, fn) for name, fn in BENCHMARKS}
        if args.seed_db:
            for name, factory in SEED_DB_BENCHMARKS:
                fn = factory(args.dsn) if args.worker else (lambda loops: 0.0)
                benches[name] = runner.bench_time_func(name, fn)
    finally:
        if server is not None:
            server.cleanup()
            shutil.rmtree(base, ignore_errors=True)
    if args.worker:
        return
    res = {name: b.median() for name, b in benches.items() if b is not None}
    if not res:
        return
    assert PANDAS.check(0, 10), "the baseline must reach the same decision (approve)"
    print(f"\nbench_risk summary (median; {N} instruments x {T} returns):")
    for name, t in res.items():
        print(f"  {name:<16} {t * 1e6:12.2f} µs")
    if "pretrade-gate" in res and "pretrade-pandas" in res:
        r = res["pretrade-pandas"] / res["pretrade-gate"]
        print(f"  pre-trade check: gate x{r:,.0f} faster than the per-order pandas recomputation")
    if "var-full-gate" in res and "var-full-pandas" in res:
        r = res["var-full-pandas"] / res["var-full-gate"]
        print(f"  full VaR recompute: gate x{r:,.1f} faster than pandas")
    if "seed-window" in res and "returns-window" in res:
        r = res["seed-window"] / res["returns-window"]
        print(f"  seeding the window in the process: x{r:.2f} one live window recompute")
    if "seed-db-probe" in res:
        line = f"  seeding from PostgreSQL: {res['seed-db-probe']:.2f} s for {N} x {T + 1} samples"
        if "seed-db-scan" in res:
            line += f" (reading every quote: {res['seed-db-scan']:.2f} s,"
            line += f" x{res['seed-db-scan'] / res['seed-db-probe']:.2f})"
        print(line)
    p50, p99, mx = percentiles()
    verdict = "met" if p99 < 20 else "NOT met"
    print(
        f"  single checks: p50 {p50:.1f} µs  p99 {p99:.1f} µs  max {mx:.0f} µs"
        f"  (spec < 10,000 µs: {'met' if p99 < 10_000 else 'NOT met'}; aim p99 < 20 µs: {verdict})"
    )


if __name__ == "__main__":
    main()
