"""The risk gate's returns window seeded at start from recorded prices (procs/risk_history.py):
VaR and correlation apply from the very first order, on the figures an independent numpy
computation gives from the same resampled mids; stale history, the history file and a dead
database behave as documented."""

from __future__ import annotations

import bisect
import logging
import time
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from engine.messages import (
    Bar,
    IntentNew,
    NewOrder,
    OrderFilled,
    OrderRejected,
    OrderType,
    Quote,
    RiskEvent,
    Side,
    TimeInForce,
)
from engine.risk import RiskGate
from engine.risk_history import fill_newest_first, last_at_or_before, sample_grid
from engine.risk_stats import ReturnSampler
from engine.strategies.base import Strategy, StrategyContext
from ops.config import ConfigError, parse_config
from ops.store import migrate as mig
from ops.store.pg import run_tx
from ops.store.writer import Rows, Writer
from procs.risk_history import (
    HistoryFileError,
    load_history_file,
    record_run_instruments,
    seed_history,
)

S = 1_000_000_000
INTERVAL_S = 60
WINDOW = 40
NOW = 1_790_000_000 * S  # a fixed "now" (2026-09): ages are measured from it


def config(tmp_path: Path | None = None, **risk: object) -> object:
    """Two instruments, AAA and BBB, ids 0 and 1 in *this* run; [risk] overrides as TOML."""
    base = {
        "returns_interval_s": float(INTERVAL_S),
        "returns_window": WINDOW,
        "min_history": 30,
        "capital": 1_000_000.0,
        "max_position_pct": 0.0,
        "max_sector_pct": 0.0,
        "max_correlation": 1.0,
        "max_var_pct": 2.0,
        "var_method": "historical",
        "var_horizon_days": float(INTERVAL_S),
        "trading_day_s": 1.0,  # horizon = var_horizon_days * trading_day_s / interval = 1
        "price_band_pct": 0.0,
        "max_order_notional": 1e12,
        "max_position_lots": 10**9,
    }
    base.update(risk)

    def lit(v: object) -> str:
        if isinstance(v, str):
            return f'"{v}"'
        return str(v).lower() if isinstance(v, bool) else repr(v)

    lines = ["[risk]"] + [f"{k} = {lit(v)}" for k, v in base.items()]
    lines += [
        "[storage.postgres]",
        'mode = "off"',
        "statement_timeout_s = 2.0",
        "connect_timeout_s = 1.0",
        "[[instruments]]",
        "instrument_id = 0",
        'symbol = "AAA"',
        'sector = "tech"',
        "tick_size = 0.01",
        "[[instruments]]",
        "instrument_id = 1",
        'symbol = "BBB"',
        'sector = "tech"',
        "tick_size = 0.01",
    ]
    return parse_config("\n".join(lines) + "\n")


@pytest.fixture
def db(pg_dsn: str) -> str:
    with psycopg.connect(pg_dsn, autocommit=True) as c:
        mig.migrate(c)
    return pg_dsn


class _Ins:
    def __init__(self, iid: int, symbol: str, tick: float) -> None:
        self.instrument_id, self.symbol, self.tick_size = iid, symbol, tick


def record(dsn: str, run_id: int, ids: dict[str, int], tick: float, points: list) -> None:
    """A run's instrument mapping and its quotes: points are (symbol, ts_ns, price in $)."""
    rows = Rows()
    for k, (sym, ts, px) in enumerate(points):
        mid = int(round(px / tick))  # ticks; a one-tick spread around it (mid exact)
        rows.add(run_id, Quote(ids[sym], mid - 1, 10, mid + 1, 10, ts, ts, k + 1))
    with psycopg.connect(dsn, autocommit=False) as c:
        run_tx(c, lambda conn: Writer().write(conn, rows))
        run_tx(
            c,
            lambda conn: record_run_instruments(
                conn, run_id, [_Ins(i, s, tick) for s, i in ids.items()]
            ),
        )


def market(t0: int, t1: int, seed: int, rho: float = 0.8) -> list:
    """Correlated random walks of AAA and BBB with quotes at irregular times in [t0, t1)."""
    rng = np.random.default_rng(seed)
    out = []
    px = {"AAA": 100.0, "BBB": 50.0}
    t = t0
    while t < t1:
        z = rng.normal(size=2)
        za, zb = z[0], rho * z[0] + np.sqrt(1 - rho**2) * z[1]
        px["AAA"] *= 1 + 0.004 * za
        px["BBB"] *= 1 + 0.004 * zb
        for sym in ("AAA", "BBB"):
            if rng.random() < 0.8:  # not every instrument quotes every time
                out.append((sym, t + int(rng.integers(0, 5 * S)), round(px[sym], 2)))
        t += int(rng.integers(10, 50)) * S  # several quotes per interval, at random times
    return out


def numpy_returns(points: list, end: int, symbols=("AAA", "BBB")) -> np.ndarray:
    """The independent computation: the last mid at or before each sample time, simple
    returns between consecutive samples (0 where a sample has no price yet)."""
    grid = [end - (WINDOW - k) * INTERVAL_S * S for k in range(WINDOW + 1)]
    cols = []
    for sym in symbols:
        pts = sorted((ts, px) for s, ts, px in points if s == sym)
        times = [p[0] for p in pts]
        samples = []
        for g in grid:
            j = bisect.bisect_right(times, g) - 1
            samples.append(pts[j][1] if j >= 0 else 0.0)
        cols.append(samples)
    p = np.array(cols).T
    r = np.zeros((WINDOW, len(symbols)))
    for k in range(1, WINDOW + 1):
        ok = (p[k] > 0) & (p[k - 1] > 0)
        r[k - 1, ok] = p[k, ok] / p[k - 1, ok] - 1
    first = int(np.argmax((p > 0).any(axis=1)))  # rows start after the first priced sample
    return r[first:]


def fresh_gate(cfg) -> tuple[RiskGate, ReturnSampler]:
    g = RiskGate(cfg.risk, cfg.instrument_table())
    for iid, mid in ((0, 10_000), (1, 5_000)):  # AAA at $100, BBB at $50
        g.on_market_data(Quote(iid, mid - 1, 10, mid + 1, 10, 0, 0))
    g.on_prices(1)
    return g, ReturnSampler(len(g.position), cfg.risk.returns_window)


def buy(iid: int, qty: int, px: int) -> IntentNew:
    return IntentNew(
        qty * 10 + iid, 1, iid, Side.BUY, OrderType.LIMIT, TimeInForce.GTC, px, qty, 0, 0
    )


def hist_var(pnl: np.ndarray, conf: float = 0.99) -> float:
    return float(-np.quantile(pnl, 1 - conf))


# --- the record ------------------------------------------------------------------------------


def test_seeded_from_two_runs_var_and_correlation_equal_numpy_and_apply_at_once(db: str) -> None:
    """Two earlier runs with different instrument ids and tick sizes; the seeded gate's
    figures equal numpy's on the same resampled mids, and the very first intent just over the
    VaR limit is refused while one just under passes."""
    end = NOW - 600 * S  # the newest quote: ten minutes ago
    start = end - (WINDOW + 5) * INTERVAL_S * S
    run_old, run_new = start - 1, start + 20 * INTERVAL_S * S  # run ids are start times
    pts_old = market(start, run_new - 100 * S, seed=1)
    pts_new = market(run_new, end, seed=2)
    pts_new.append(("AAA", end, pts_new[-1][2]))
    record(db, run_old, {"AAA": 7, "BBB": 3}, 0.01, pts_old)  # other ids, cents
    record(db, run_new, {"BBB": 0, "AAA": 1}, 0.001, pts_new)  # swapped ids, tenths of cents
    cfg = config()
    r = numpy_returns(pts_old + pts_new, end)
    assert r.shape[0] == WINDOW and (r != 0).sum(axis=0).min() > 30  # a real window
    g, smp = fresh_gate(cfg)
    res = seed_history(cfg, g, smp, dsn=db, now_ns=NOW, run_id=0)
    assert res.seeded and list(res.sources) == ["record", "record"]
    assert res.grid is not None and int(res.grid[-1]) == end
    np.testing.assert_allclose(g.stats.rt.T, r, rtol=1e-12, atol=1e-15)
    assert g.stats.ready
    np.testing.assert_allclose(g.stats.corr[0, 1], np.corrcoef(r, rowvar=False)[0, 1], rtol=1e-9)
    # the live sampler goes on from the last seeded mids, in this run's ticks
    last = {
        s: max((p for p in pts_new if p[0] == s), key=lambda p: p[1])[2] for s in ("AAA", "BBB")
    }
    np.testing.assert_allclose(smp.last[:2], [last["AAA"] / 0.01, last["BBB"] / 0.01], rtol=1e-12)
    assert smp.sample(g.mids())
    np.testing.assert_allclose(
        smp.matrix()[-1, :2], [100.0 / last["AAA"] - 1, 50.0 / last["BBB"] - 1], rtol=1e-9
    )
    # VaR of a long AAA position of q lots ($100 each): q * 100 * (-quantile of AAA's returns)
    unit = hist_var(r[:, 0] * 100.0)
    assert unit > 0
    q_ok = 150
    limit_pct = (unit * (q_ok + 0.5)) / 1_000_000.0 * 100.0
    cfg = config(max_var_pct=limit_pct)
    g, smp = fresh_gate(cfg)
    seed_history(cfg, g, smp, dsn=db, now_ns=NOW, run_id=0)
    out = g.on_intent(buy(0, q_ok + 1, 10_000), 10)
    assert [type(o) for o in out] == [RiskEvent, OrderRejected], out
    assert out[0].reason == "VaR"
    assert out[0].value == pytest.approx(unit * (q_ok + 1), rel=1e-9)
    assert out[0].limit == pytest.approx(1_000_000.0 * limit_pct / 100.0)
    assert isinstance(g.on_intent(buy(0, q_ok, 10_000), 11)[0], NewOrder)
    assert g.skipped_stats == 0


def test_seeded_correlation_refuses_the_first_correlated_order(db: str) -> None:
    end = NOW - 60 * S
    start = end - (WINDOW + 2) * INTERVAL_S * S
    pts = market(start, end, seed=3, rho=0.95)
    record(db, start, {"AAA": 0, "BBB": 1}, 0.01, pts)
    cfg = config(max_correlation=0.7, max_var_pct=0.0)
    g, smp = fresh_gate(cfg)
    seed_history(cfg, g, smp, dsn=db, now_ns=NOW, run_id=0)
    rho = np.corrcoef(numpy_returns(pts, max(p[1] for p in pts)), rowvar=False)[0, 1]
    assert rho > 0.7
    g.on_exec_event(OrderFilled(1, 1, 0, Side.BUY, 10_000, 100, 100, 0, 0.0, 1, 1, 0, 2, 2))
    g.on_prices(3)
    out = g.on_intent(buy(1, 10, 5_000), 4)
    assert isinstance(out[0], RiskEvent) and out[0].reason == "correlation with AAA"
    assert out[0].value == pytest.approx(rho, rel=1e-9)


def test_stale_history_is_not_used(db: str, caplog: pytest.LogCaptureFixture) -> None:
    span = WINDOW * INTERVAL_S * S
    end = NOW - 3 * span  # default max age is twice the window span: too old
    pts = market(end - span - 10 * INTERVAL_S * S, end, seed=4)
    record(db, end - span - 10 * INTERVAL_S * S - 1, {"AAA": 0, "BBB": 1}, 0.01, pts)
    cfg = config()
    g, smp = fresh_gate(cfg)
    with caplog.at_level(logging.INFO, logger="gekko.risk"):
        res = seed_history(cfg, g, smp, dsn=db, now_ns=NOW, run_id=0)
    assert not res.seeded and not g.stats.ready and smp.count == 0
    assert "not seeded" in caplog.text and "history_max_age_s" in caplog.text
    # VaR is skipped (not applied) for the first order, as before seeding existed
    assert isinstance(g.on_intent(buy(0, 10**6, 10_000), 5)[0], NewOrder)
    assert g.skipped_stats == 1
    # a max age that covers it (or 0 = any age) takes the same data
    for age in (4.0 * span / S, 0.0):
        cfg2 = config(history_max_age_s=age)
        g2, smp2 = fresh_gate(cfg2)
        assert seed_history(cfg2, g2, smp2, dsn=db, now_ns=NOW, run_id=0).seeded
        assert g2.stats.ready
    # only the fresh part of a history counts: with a max age reaching half way back, the
    # samples before the limit have no price and give no return
    cfg3 = config(history_max_age_s=(NOW - end + span // 2) / S)
    g3, smp3 = fresh_gate(cfg3)
    res3 = seed_history(cfg3, g3, smp3, dsn=db, now_ns=NOW, run_id=0)
    assert 0 < res3.counts.max() <= WINDOW // 2


def test_a_restart_measures_age_on_its_runs_market_clock(db: str) -> None:
    """The simulated market's clock starts near 0 in every run: after a restart, the run's own
    newest price is "now", so its minutes-old prices are fresh under the default max age; a
    first start (no price of its own yet) measures from the wall clock and takes none of them."""
    t0 = 10_000 * S  # 1970, as the synthetic market's clock
    pts = market(t0, t0 + (WINDOW + 5) * INTERVAL_S * S, seed=11)
    run = NOW + 10**15  # newer than every other run in the shared database
    record(db, run, {"AAA": 0, "BBB": 1}, 0.01, pts)
    cfg = config()  # default history_max_age_s: twice the window span
    g, smp = fresh_gate(cfg)
    res = seed_history(cfg, g, smp, dsn=db, run_id=run)  # no now_ns: the clock decides
    end = max(p[1] for p in pts)
    assert res.seeded and res.grid is not None and int(res.grid[-1]) == end
    assert list(res.counts) == [WINDOW, WINDOW] and g.stats.ready
    first = config()
    g2, smp2 = fresh_gate(first)
    res2 = seed_history(first, g2, smp2, dsn=db, run_id=run + 1)  # a new run, nothing recorded
    assert not res2.seeded and smp2.count == 0


def test_a_newer_run_on_an_overlapping_clock_wins_and_is_not_stitched(db: str) -> None:
    """Simulated clocks restart at 0 in every run: the older run, which ran longer, must not
    decide the window's end nor mix its prices into the newer run's."""
    t0 = 100_000 * S
    old = market(t0 - 30 * INTERVAL_S * S, t0 + (WINDOW + 50) * INTERVAL_S * S, seed=5)
    new = market(t0, t0 + (WINDOW // 2) * INTERVAL_S * S, seed=6)
    record(db, NOW - 10**12, {"AAA": 0, "BBB": 1}, 0.01, old)
    record(db, NOW - 10**9, {"AAA": 0, "BBB": 1}, 0.01, new)
    cfg = config(history_max_age_s=0.0)
    g, smp = fresh_gate(cfg)
    res = seed_history(cfg, g, smp, dsn=db, now_ns=NOW, run_id=0)
    end = max(p[1] for p in new)
    assert res.grid is not None and int(res.grid[-1]) == end
    # each sample: the newer run's last price once it has one, the older run's before that
    first_new = {s: min(p[1] for p in new if p[0] == s) for s in ("AAA", "BBB")}
    merged = [p for p in old if p[1] < first_new[p[0]]] + new
    r = numpy_returns(merged, end)
    assert r.shape[0] == WINDOW
    np.testing.assert_allclose(g.stats.rt.T, r, rtol=1e-12, atol=1e-15)


def test_bar_closes_where_a_run_kept_no_quotes_in_short_statements(
    db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run that recorded bars only is read from its closes (known at the bar's end); the
    probes go out one instrument per statement here, with the same result."""
    import procs.risk_history as rh

    monkeypatch.setattr(rh, "PROBES_PER_STATEMENT", 1)
    end = NOW - 120 * S
    bar = 20 * S
    start = end - (WINDOW + 3) * INTERVAL_S * S
    rng = np.random.default_rng(10)
    rows, points = Rows(), []
    for iid, sym, p0 in ((0, "AAA", 100.0), (1, "BBB", 50.0)):
        px = p0
        for t in range(start, end - bar + 1, bar):
            px *= 1 + rng.normal(0, 0.003)
            close = int(round(px / 0.01))
            rows.add(start, Bar(iid, t, t + bar, close, close, close, close, 10, 1))
            points.append((sym, t + bar, close * 0.01))
    with psycopg.connect(db, autocommit=False) as c:
        run_tx(c, lambda conn: Writer().write(conn, rows))
        ins = [_Ins(0, "AAA", 0.01), _Ins(1, "BBB", 0.01)]
        run_tx(c, lambda conn: record_run_instruments(conn, start, ins))
    cfg = config()
    g, smp = fresh_gate(cfg)
    res = seed_history(cfg, g, smp, dsn=db, now_ns=NOW, run_id=0)
    assert list(res.sources) == ["record", "record"] and list(res.counts) == [WINDOW, WINDOW]
    np.testing.assert_allclose(g.stats.rt.T, numpy_returns(points, end), rtol=1e-12, atol=1e-15)


def test_this_runs_mapping_is_recorded_once_per_run(db: str) -> None:
    cfg = config(history_max_age_s=0.0)
    g, smp = fresh_gate(cfg)
    for _ in range(2):  # a restart writes it again: stored once
        res = seed_history(cfg, g, smp, dsn=db, now_ns=NOW, run_id=77)
    assert not res.seeded and "no recorded prices" in res.why
    with psycopg.connect(db) as c:
        rows = c.execute(
            "SELECT instrument_id, symbol, tick_size FROM run_instruments WHERE run_id = 77"
            " ORDER BY instrument_id"
        ).fetchall()
    assert rows == [(0, "AAA", 0.01), (1, "BBB", 0.01)]


def test_a_dead_database_starts_unseeded_with_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    cfg = config()
    g, smp = fresh_gate(cfg)
    t0 = time.monotonic()
    with caplog.at_level(logging.INFO, logger="gekko.risk"):
        res = seed_history(cfg, g, smp, dsn="postgresql://gekko@127.0.0.1:9/none", now_ns=NOW)
    assert time.monotonic() - t0 < 10.0  # bounded by connect_timeout_s, not a hang
    assert not res.seeded and not g.stats.ready
    assert "not seeded" in caplog.text and "record unavailable" in caplog.text
    assert isinstance(g.on_intent(buy(0, 10, 10_000), 1)[0], NewOrder)  # the gate works


# --- the history file -------------------------------------------------------------------------


def daily_closes(n: int, seed: int) -> dict[str, list[tuple[int, float]]]:
    rng = np.random.default_rng(seed)
    day = 86_400 * S
    last = NOW - NOW % day - day  # yesterday's close (midnight UTC stamps)
    out: dict[str, list[tuple[int, float]]] = {}
    for sym, p0 in (("AAA", 100.0), ("BBB", 50.0)):
        px = p0 * np.cumprod(1 + rng.normal(0, 0.015, n))
        out[sym] = [(last - (n - 1 - k) * day, round(float(px[k]), 4)) for k in range(n)]
    return out


def test_daily_closes_from_a_csv_file_with_bad_rows(tmp_path: Path) -> None:
    closes = daily_closes(WINDOW + 10, seed=7)
    lines = ["Date,Symbol,Close"]
    for sym, rows in closes.items():
        for ts, px in rows:
            iso = np.datetime_as_string(np.datetime64(ts, "ns"), unit="D")
            lines.append(f"{iso},{sym},{px}")
    lines += [
        "not-a-date,AAA,100",  # bad_ts
        "2026-01-05,AAA,nan",  # bad_price
        "2026-01-06,BBB,-3",  # bad_price
        "2026-01-07,,5",  # missing_value
        "2026-01-08,ZZZ,5",  # another symbol: skipped, not an error
        "2026-01-09,AAA",  # a short row: bad_row
    ]
    f = tmp_path / "closes.csv"
    f.write_text("\n".join(lines) + "\n")
    fh = load_history_file(f, ["AAA", "BBB"])
    assert dict(fh.rejected) == {
        "bad_ts": 1,
        "bad_price": 2,
        "missing_value": 1,
        "other_symbol": 1,
        "bad_row": 1,
    }
    cfg = config(
        returns_interval_s=86_400.0,
        var_horizon_days=1.0,
        trading_day_s=86_400.0,
        min_history=20,
        history_file=str(f),
    )
    g, smp = fresh_gate(cfg)
    res = seed_history(cfg, g, smp, dsn="", now_ns=NOW)  # storage off: the file alone
    assert res.seeded and list(res.sources) == ["file", "file"]
    assert list(res.counts) == [WINDOW, WINDOW]
    assert any("rows rejected" in n for n in res.notes)
    p = np.array([[px for _, px in closes[s][-(WINDOW + 1) :]] for s in ("AAA", "BBB")]).T
    expect = p[1:] / p[:-1] - 1
    np.testing.assert_allclose(g.stats.rt.T, expect, rtol=1e-12)
    w = np.array([1e5, -4e4])
    pnl = expect @ w
    g.stats.set_exposure(w)
    assert g.stats.hist_var() == pytest.approx(hist_var(pnl), rel=1e-9)
    expect_param = sps.norm.ppf(0.99) * pnl.std(ddof=1) - pnl.mean()
    assert g.stats.param_var() == pytest.approx(expect_param, rel=1e-9)


def test_the_file_fills_in_only_what_the_record_lacks(db: str, tmp_path: Path) -> None:
    end = NOW - 60 * S
    start = end - (WINDOW + 2) * INTERVAL_S * S
    pts = market(start, end, seed=8)
    # the record has BBB for the last 10 minutes only: fewer than min_history returns
    pts = [p for p in pts if p[0] == "AAA" or p[1] > end - 10 * INTERVAL_S * S]
    record(db, start, {"AAA": 0, "BBB": 1}, 0.01, pts)
    rng = np.random.default_rng(9)
    times = [start + k * 30 * S for k in range(2 * WINDOW + 6)]
    bbb = 50 * np.cumprod(1 + rng.normal(0, 0.003, len(times)))
    import pyarrow as pa
    import pyarrow.parquet as pq

    f = tmp_path / "bbb.parquet"
    pq.write_table(
        pa.table(
            {
                "timestamp": pa.array(times, pa.int64()).cast(pa.timestamp("ns")),
                "symbol": ["BBB"] * len(times),
                "price": bbb,
            }
        ),
        f,
    )
    cfg = config(history_file=str(f))
    g, smp = fresh_gate(cfg)
    res = seed_history(cfg, g, smp, dsn=db, now_ns=NOW, run_id=0)
    assert list(res.sources) == ["record", "file"]
    end_rec = max(p[1] for p in pts)
    r_aaa = numpy_returns(pts, end_rec)[:, 0]
    r_bbb = numpy_returns([("BBB", t, float(x)) for t, x in zip(times, bbb, strict=True)], end_rec)
    np.testing.assert_allclose(g.stats.rt[0], r_aaa, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(g.stats.rt[1], r_bbb[:, 1], rtol=1e-12, atol=1e-15)


def test_a_history_file_that_cannot_be_used_is_an_error_naming_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("when,ticker,close\n2026-01-01,AAA,1\n")
    with pytest.raises(HistoryFileError, match=r"risk\.history_file: .*missing column"):
        load_history_file(bad)
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"not parquet at all")
    with pytest.raises(HistoryFileError, match=r"risk\.history_file: .*unreadable"):
        load_history_file(garbage)
    with pytest.raises(ConfigError, match=r"risk\.history_file: .*no such file"):
        config(history_file=str(tmp_path / "missing.csv"))
    with pytest.raises(ConfigError, match=r"risk\.history_file: .*\.csv or \.parquet"):
        config(history_file=str(tmp_path / "closes.xlsx"))
    with pytest.raises(ConfigError, match=r"risk\.history_max_age_s"):
        config(history_max_age_s=float("nan"))
    # in the process, an unusable file is logged and risk starts without it
    cfg = config(history_file=str(bad))
    g, smp = fresh_gate(cfg)
    res = seed_history(cfg, g, smp, dsn="", now_ns=NOW)
    assert not res.seeded and "risk.history_file" in res.why


# --- the pure parts ---------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.lists(st.sampled_from([0.0, 0.0, 90.0, 100.0, 101.5, 110.0]), min_size=3, max_size=3),
        min_size=0,
        max_size=30,
    ),
    st.integers(2, 12),
)
def test_seeding_equals_sampling_the_same_rows_live(rows: list, window: int) -> None:
    """A seeded sampler holds exactly what the live sampler holds after the same samples."""
    p = np.array(rows, dtype=np.float64).reshape(-1, 3)
    live = ReturnSampler(3, window)
    for row in p:
        live.sample(row)
    seeded = ReturnSampler(3, window)
    counts = seeded.seed(p)
    np.testing.assert_array_equal(seeded.matrix(), live.matrix())
    np.testing.assert_array_equal(seeded.last, live.last)
    # counts: the returns in the window measured between two prices of that instrument
    filled = np.zeros_like(p)
    last = np.zeros(3)
    for k, row in enumerate(p):
        last = np.where(row > 0, row, last)
        filled[k] = last
    both = (filled[1:] > 0) & (p[1:] > 0) & (filled[:-1] > 0)
    start = int(np.argmax((p > 0).any(axis=1))) if (p > 0).any() else len(p)
    expect = both[start:][-live.count :].sum(axis=0) if live.count else np.zeros(3)
    np.testing.assert_array_equal(counts, expect)


def test_grid_resampling_and_newest_first() -> None:
    g = sample_grid(1_000, 100, 4)
    assert g.tolist() == [600, 700, 800, 900, 1_000]
    ts = np.array([650, 700, 905, 500])
    px = np.array([2.0, 3.0, 4.0, 1.0])
    assert last_at_or_before(ts, px, g).tolist() == [1.0, 3.0, 3.0, 3.0, 4.0]
    assert last_at_or_before(ts[:0], px[:0], g).tolist() == [0.0] * 5
    newest, older = np.array([0.0, 0.0, 5.0]), np.array([1.0, 2.0, 3.0])
    assert fill_newest_first([newest, older]).tolist() == [1.0, 2.0, 5.0]
    with pytest.raises(ValueError):
        sample_grid(0, 0, 3)


def test_defaults_load_and_max_age_follows_the_window() -> None:
    from procs.risk_history import max_age_ns

    cfg = config()
    assert cfg.risk.history_file == "" and cfg.risk.history_max_age_s < 0
    assert max_age_ns(cfg.risk) == 2 * WINDOW * INTERVAL_S * S
    assert max_age_ns(msgspec.structs.replace(cfg.risk, history_max_age_s=0.0)) == 0


# --- the whole engine: a risk crash ----------------------------------------------------------


class BigBuys(Strategy):
    """A test strategy: every ``probe_s`` one buy of ``qty`` lots resting 4 % under the bid —
    an order whose VaR is far over the (tiny) limit, so risk must refuse it whenever VaR
    applies and can only approve it while VaR is skipped for lack of history."""

    def __init__(self, ctx: StrategyContext, params: dict[str, Any]) -> None:
        super().__init__(ctx, params)
        self.qty = int(params.get("qty", 100))
        self.every_ns = int(float(params.get("probe_s", 0.1)) * 1e9)
        self.next_ns = 0

    def on_quote(self, q: Any) -> None:
        bid = self.ctx.best_bid(q.instrument_id)
        now = time.monotonic_ns()
        if bid is None or now < self.next_ns:
            return
        self.next_ns = now + self.every_ns
        self.ctx.buy(q.instrument_id, self.qty, max(1, int(bid[0] * 0.96)))


@pytest.mark.timeout(240)
def test_a_restarted_risk_is_seeded_and_refuses_a_var_breach_at_once(
    tmp_path: Path, pg_dsn: str
) -> None:
    import os
    import re
    import signal
    import uuid

    from engine.messages import RiskEventKind
    from tests.test_engine_e2e import (
        _wait_for,
        counter,
        health,
        is_ready,
        running_engine,
        set_key,
        wait_counter,
        write_config,
    )
    from tests.test_risk_e2e import records

    eid = "h" + uuid.uuid4().hex[:7]
    cfg = write_config(
        tmp_path,
        eid,
        strategies=(
            '[[strategies]]\nid = 9\npath = "tests.test_risk_history:BigBuys"\n'
            'instruments = ["MSFT"]\n[strategies.params]\nqty = 100\nprobe_s = 0.1\n'
        ),
    )
    text = cfg.read_text()
    for section, key, value in (
        ("risk", "max_open_orders", "10000"),
        ("risk", "max_position_lots", "1000000000"),
        ("risk", "max_position_pct", "0.0"),
        ("risk", "max_sector_pct", "0.0"),
        ("risk", "max_var_pct", "0.0001"),  # $10 of VaR on $10M: 100 lots of MSFT breach it
        ("risk", "returns_interval_s", "0.05"),
        ("risk", "returns_window", "40"),
        ("risk", "min_history", "20"),
        ("risk", "history_max_age_s", "0.0"),  # the synthetic clock starts at 1970 every run
        ("storage.postgres", "mode", f'"{pg_dsn}"'),
        ("inference", "enabled", "false"),
    ):
        text = set_key(text, section, key, value)
    cfg.write_text(text)
    with running_engine(cfg, tmp_path, eid) as proc:

        def check(ok: bool, what: str) -> None:
            if not ok:
                proc.send_signal(signal.SIGTERM)
                _, err = proc.communicate(timeout=90)
                raise AssertionError(f"{what}\n{err[-4000:]}")

        # live VaR applies after min_history samples: the big buys are refused from then on
        check(wait_counter(eid, "risk", "rejected", 3), "no VaR refusal before the crash")

        def recorded_span_s() -> float:  # of the recorded quotes, on the venue's clock
            with psycopg.connect(pg_dsn) as c:
                lo, hi = c.execute("SELECT min(ts_event), max(ts_event) FROM quotes").fetchone()
            return 0.0 if lo is None else (hi - lo) / 1e9

        # more than the window (40 x 0.05 s) is in the record before risk dies
        check(_wait_for(lambda: recorded_span_s() > 2.5, 60), "the recorder wrote too little")
        old_pid = health(eid)["risk"][0]
        t_kill = time.monotonic_ns()
        os.kill(old_pid, signal.SIGKILL)
        check(_wait_for(lambda: is_ready(eid, "risk", not_pid=old_pid), 120), "risk not back")
        n = max(counter(eid, "risk", "rejected"), 0)
        check(wait_counter(eid, "risk", "rejected", n + 3), "no refusal after the restart")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=90)
    assert proc.returncode == 0, err[-3000:]
    assert re.search(r"returns window seeded, returns per instrument: .*MSFT 40", err), err[-3000:]
    with psycopg.connect(pg_dsn) as c:
        after = c.execute(
            "SELECT reason FROM risk_events WHERE kind = %s AND ts >= %s AND client_order_id >> 32 = 9",
            (int(RiskEventKind.ORDER_REJECTED), t_kill),
        ).fetchall()
    # every big buy the restarted risk judged was refused: none slipped through while history
    # was being rebuilt (unseeded, VaR would be skipped for 20 x 0.05 s). Those queued while risk
    # was down are refused for their age before VaR is asked; every fresh one is refused for VaR
    reasons = [r for (r,) in after]
    assert reasons.count("VaR") >= 3 and set(reasons) <= {"VaR", "stale_intent"}, after
    ours = [o for o in records(tmp_path, "orders.jsonl") if o.get("strategy_id") == 9]
    assert not [o for o in ours if o["type"] == "NewOrder" and o["ts_approved"] >= t_kill]
