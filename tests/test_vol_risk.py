"""The [risk] volatility sigma beyond VaR: a sigma-scaled price band, volatility-target sizing
with the gate's own sigma on the strategy side, and the returns window sampled in a backtest."""

from __future__ import annotations

import math

import msgspec
import numpy as np
import pytest

from engine.backtest import InlineRuntime
from engine.instruments import Instrument
from engine.messages import BookDelta, BookSnapshot, Quote, Side
from engine.risk import RiskGate, RiskLimits
from engine.risk_stats import RiskStats, return_variance
from engine.sizing import SizingLimits, vol_target_lots
from engine.strategies.base import StrategyContext
from engine.strategies.momentum import MomentumTaker
from engine.strategy_host import StrategyHost, StrategySpec
from engine.vol_sigma import SigmaTracker
from tests.test_backtest import FakeVenue
from tests.test_risk_limits import INS, new, ok, rejected


def jump_returns(n: int = 300, calm: float = 0.001, wild: float = 0.004) -> np.ndarray:
    """Four instruments' returns: ``calm`` sigma, then the last 40 rows at ``wild``."""
    rng = np.random.default_rng(3)
    r = rng.normal(0.0, calm, (n, 4))
    r[-40:] = rng.normal(0.0, wild, (40, 4))
    return r


# --- one variance ------------------------------------------------------------------------------
@pytest.mark.parametrize("vol", ["window", "ewma"])
def test_return_variance_is_the_gates_variance(vol: str) -> None:
    r = jump_returns()
    st = RiskStats(4, min_obs=20, volatility=vol)
    st.set_returns(r)
    np.testing.assert_allclose(return_variance(r, vol), st.var, rtol=1e-12)
    if vol == "window":
        np.testing.assert_allclose(st.var, r.var(axis=0, ddof=1), rtol=1e-12)


# --- the price band ----------------------------------------------------------------------------
def band_gate(**kw) -> RiskGate:
    base = RiskLimits.off(
        max_order_notional=1e12, max_position_lots=10**9, max_open_orders=1000, capital=1e6
    )
    g = RiskGate(msgspec.structs.replace(base, price_band_pct=5.0, min_history=20, **kw), INS)
    for i in range(4):  # every mid at $100.00
        g.on_market_data(Quote(i, 9_999, 10, 10_001, 10, 0, 0))
    g.on_prices(1)
    return g


def test_sigma_scaled_band_refuses_past_k_sigmas_and_keeps_the_fixed_band_until_known() -> None:
    g = band_gate(price_band_sigmas=10.0, price_band_min_pct=0.1)
    # sigma unknown: the fixed 5 % band (fail closed to the configured limit), and it says so
    ok(g.on_intent(new(px=10_400), 1))
    assert not g.band_scaled.any() and g.band_pct[0] == 5.0
    ev = rejected(g.on_intent(new(px=10_600), 1), "price band (fixed: sigma unknown)")
    assert ev.limit == 5.0
    r = np.random.default_rng(5).normal(0.0, 0.001, (200, 4))
    g.set_returns(r)
    band = 10.0 * r[:, 0].std(ddof=1) * 100.0  # ~1 %
    assert g.band_scaled[:4].all() and g.band_pct[0] == pytest.approx(band)
    edge = 10_000 * (1 + band / 100.0)
    ok(g.on_intent(new(px=math.floor(edge) - 1), 1))
    ev = rejected(g.on_intent(new(px=math.ceil(edge) + 1), 1), "price band (sigma-scaled)")
    assert ev.limit == pytest.approx(band)
    rejected(g.on_intent(new(px=math.floor(10_000 * (1 - band / 100.0)) - 1, side=Side.SELL), 1),
             "price band")  # fmt: skip
    # fewer returns than min_history: unknown again, the fixed band
    g.set_returns(r[:10])
    assert not g.band_scaled.any()
    ok(g.on_intent(new(px=10_400), 1))


def test_sigma_scaled_band_stays_within_min_and_fixed() -> None:
    r = np.random.default_rng(6).normal(0.0, 0.001, (200, 4))
    r[:, 1] *= 100.0  # 10 % sigma: 10 sigmas is 100 %, capped at the fixed 5 %
    r[:, 2] *= 0.01  # 0.001 %: capped from below at 0.5 %
    r[:, 3] = 0.0  # does not vary: no sigma, the fixed band
    g = band_gate(price_band_sigmas=10.0, price_band_min_pct=0.5)
    g.set_returns(r)
    assert g.band_pct[1] == 5.0 and g.band_pct[2] == 0.5 and g.band_pct[3] == 5.0
    assert list(g.band_scaled[:4]) == [True, True, True, False]
    rejected(g.on_intent(new(iid=2, px=10_060), 1), "price band")  # 0.6 % > 0.5 %
    ok(g.on_intent(new(iid=1, px=10_450), 1))


def test_band_off_by_default_and_ewma_follows_a_jump() -> None:
    r = jump_returns()
    g = band_gate()  # price_band_sigmas = 0: the fixed band whatever the returns
    g.set_returns(r)
    assert not g.band_scaled.any() and (g.band_pct == 5.0).all()
    window = band_gate(price_band_sigmas=6.0, volatility="window")
    ewma = band_gate(price_band_sigmas=6.0, volatility="ewma")
    window.set_returns(r)
    ewma.set_returns(r)
    # after the jump the EWMA sigma is near the new 0.4 %; the window's lags at ~0.2 %
    assert (ewma.band_pct[:4] > 1.5 * window.band_pct[:4]).all()
    np.testing.assert_allclose(ewma.band_pct[:4], 600.0 * np.sqrt(ewma.stats.var), rtol=1e-12)


@pytest.mark.parametrize(
    "kw",
    [{"price_band_sigmas": -1.0}, {"price_band_sigmas": math.nan}, {"price_band_min_pct": 6.0}],
)
def test_band_settings_are_checked(kw) -> None:
    with pytest.raises(ValueError, match=next(iter(kw))):
        RiskLimits(**kw)


# --- sizing ------------------------------------------------------------------------------------
def test_vol_target_lots_and_its_caps() -> None:
    # $1,000 of one-interval sigma at 1 %: $100,000 of notional; 1 lot at 100.00 is $100
    assert vol_target_lots(0.01, 1_000.0, 10_000, 0.01) == 1_000
    assert vol_target_lots(0.02, 1_000.0, 10_000, 0.01) == 500  # twice the sigma, half the size
    assert vol_target_lots(0.01, 1_000.0, 10_000, 0.01, direction=-1) == -1_000
    assert vol_target_lots(0.01, 1_000.0, 10_000, 0.01, direction=0) == 0
    for sigma in (math.nan, 0.0, -0.01):  # no sigma, no position
        assert vol_target_lots(sigma, 1_000.0, 10_000, 0.01) == 0
    lim = SizingLimits(max_weight=0.05, max_position_lots=300)
    assert vol_target_lots(0.01, 1_000.0, 10_000, 0.01, limits=lim) == 300
    assert vol_target_lots(0.01, 1_000.0, 10_000, 0.01, limits=lim, equity=4e5) == 200  # 5 %
    with pytest.raises(ValueError):
        vol_target_lots(0.01, -1.0, 10_000, 0.01)


def test_sigma_tracker_holds_the_gates_window_from_mids() -> None:
    rng = np.random.default_rng(8)
    mids = 10_000 * np.cumprod(1 + rng.normal(0, 0.002, 120))
    tr = SigmaTracker(2, interval_ns=1_000, window=50, volatility="ewma", min_obs=30)
    for k, m in enumerate(mids):
        # three updates inside each interval: the grid takes the last before it
        for j, f in enumerate((1.001, 0.999, 1.0)):
            tr.observe(0, m * f, k * 1_000 + 100 + j * 300)
        assert math.isnan(tr.sigma(1))  # never a mid: never a sigma
        if k < 31:
            assert math.isnan(tr.sigma(0))  # fewer than min_obs returns
    tr.observe(0, mids[-1], 120 * 1_000 + 100)  # closes the last interval
    r = mids[1:] / mids[:-1] - 1.0
    st = RiskStats(2, min_obs=30, volatility="ewma")
    st.set_returns(np.column_stack([r[-50:], np.zeros(50)]))
    assert tr.sigma(0) == pytest.approx(math.sqrt(st.var[0]), rel=1e-9)
    # a silent stretch: each grid time passed is a 0 return, as the gate's sampler has it
    tr.observe(0, mids[-1], 125 * 1_000 + 100)
    assert (tr.sampler.matrix()[-4:, 0] == 0.0).all()


def test_context_sizes_with_the_risk_sigma_from_the_host() -> None:
    ins = [Instrument(instrument_id=3, symbol="XOM", tick_size=0.01)]
    calm = np.full(200, 0.001) * np.where(np.arange(200) % 2, 1.0, -1.0)
    path = np.concatenate([calm, 4 * calm[:30]])  # a jump in volatility for the last 30
    sizes = {}
    for vol in ("window", "ewma"):
        host = StrategyHost([StrategySpec(MomentumTaker, {"fast": 2, "slow": 3})], ins)
        limits = RiskLimits(returns_interval_s=1.0, min_history=30, volatility=vol)
        host.set_risk_limits(limits)
        ctx: StrategyContext = host.slots[0].ctx
        assert ctx.vol_target_lots(3, 1_000.0) == 0  # no mid, no sigma
        px = 10_000.0
        for k, rr in enumerate(np.append(path, 0.0)):
            ctx.quotes[3] = Quote(3, int(round(px)) - 1, 10, int(round(px)) + 1, 10, 0, 0)
            ctx.now_ns = k * 1_000_000_000
            ctx.observe_volatility(3)
            px *= 1 + rr
        assert ctx.sigma(3) > 0
        sizes[vol] = ctx.vol_target_lots(3, 100.0)  # under max_position_lots (2,000)
        assert sizes[vol] == int(100.0 / ctx.sigma(3) / (ctx.mid(3) * 0.01))
    # the EWMA sees the jump: a smaller position than the window's sigma gives
    assert 0 < sizes["ewma"] < 0.75 * sizes["window"]
    assert StrategyContext(1, ins).vol_target_lots(3, 1_000.0) == 0  # no tracker: no size


# --- the backtest samples returns when asked -------------------------------------------------
def walk(n: int = 3_000, step_ns: int = 1_000):
    rng = np.random.default_rng(11)
    px = 10_000 + np.cumsum(rng.choice([-3, 3], n))
    for k, b in enumerate(px):
        yield Quote(1, int(b), 5, int(b) + 2, 5, ts_event=(k + 1) * step_ns, ts_recv=0)


def test_backtest_risk_returns_makes_var_apply() -> None:
    limits = RiskLimits.off(
        max_order_notional=1e9,
        max_position_lots=10**6,
        max_open_orders=20,
        capital=1e6,
        max_var_pct=0.0005,  # $5: any position of a few lots is over it
        returns_interval_s=10e-6,  # ten quotes an interval
        refresh_interval_ms=0.001,
        min_history=20,
    )
    ins = [Instrument(instrument_id=1, symbol="AAA")]
    spec = StrategySpec(
        MomentumTaker, {"fast": 4, "slow": 16, "size": 20, "long_only": True}, instruments=[1]
    )
    off = InlineRuntime(ins, [spec], limits, FakeVenue(), walk())
    on = InlineRuntime(ins, [spec], limits, FakeVenue(), walk(), risk_returns=True)
    s_off, s_on = off.run(), on.run()
    assert off.risk.stats.t == 0 and off.risk.skipped_stats > 0  # never sampled: VaR skipped
    assert on.risk.stats.t == limits.returns_window or on.risk.stats.t > 250
    assert not [e for e in off.risk_events if "VaR" in e.reason]
    assert [e for e in on.risk_events if "VaR" in e.reason]
    assert s_on["fills"] < s_off["fills"]


def test_momentum_vol_target_sizes_entries_with_the_risk_sigma() -> None:
    limits = RiskLimits.off(
        max_order_notional=1e9,
        max_position_lots=10**6,
        max_open_orders=20,
        returns_interval_s=10e-6,
        min_history=20,
    )
    ins = [Instrument(instrument_id=1, symbol="AAA")]
    params = {"fast": 4, "slow": 16, "vol_target": 50.0, "order": "market"}
    spec = StrategySpec(MomentumTaker, params, instruments=[1])
    rt = InlineRuntime(ins, [spec], limits, FakeVenue(), walk())
    rt.run()
    orders = [o for o in rt.orders_sent if type(o).__name__ == "NewOrder"]
    assert orders
    # nothing before min_history intervals (200 quotes): no sigma, no position
    assert min(o.ts_origin for o in orders) > 20 * 10_000
    # every entry is vol_target / (sigma x one lot's value); flips are twice a size
    ctx = rt.host.slots[0].ctx
    sizes = {o.qty for o in orders}
    assert len(sizes) > 2  # sized anew at each entry as sigma moves
    assert max(sizes) < 2.5 * 50.0 / ctx.sigma(1) / (10_000 * 0.01)


def test_backtest_risk_returns_read_the_book_on_a_delta_only_feed() -> None:
    """A LOBSTER-like feed: one snapshot, then book deltas only. The gate takes no price from a
    delta, so the window is sampled from the runtime's books (what the feed's table shows)."""
    limits = RiskLimits.off(
        max_order_notional=1e9,
        max_position_lots=100,
        max_open_orders=20,
        returns_interval_s=10e-6,
        refresh_interval_ms=0.001,
        min_history=20,
    )

    def book_walk(n: int = 1_000):
        yield BookSnapshot(1, [10_000], [5], [10_002], [5], 1_000, 1_000, 0)
        bid, rng = 10_000, np.random.default_rng(4)
        for k in range(1, n):
            t = (k + 1) * 1_000
            new = bid + int(rng.choice([-2, 2]))
            if new > bid:  # the ask moves up first: never crossed
                yield BookDelta(1, Side.SELL, new + 2, 5, t, t, 4 * k)
                yield BookDelta(1, Side.SELL, bid + 2, 0, t, t, 4 * k + 1)
                yield BookDelta(1, Side.BUY, new, 5, t, t, 4 * k + 2)
                yield BookDelta(1, Side.BUY, bid, 0, t, t, 4 * k + 3)
            else:
                yield BookDelta(1, Side.BUY, new, 5, t, t, 4 * k)
                yield BookDelta(1, Side.BUY, bid, 0, t, t, 4 * k + 1)
                yield BookDelta(1, Side.SELL, new + 2, 5, t, t, 4 * k + 2)
                yield BookDelta(1, Side.SELL, bid + 2, 0, t, t, 4 * k + 3)
            bid = new

    ins = [Instrument(instrument_id=1, symbol="AAA")]
    rt = InlineRuntime(ins, [], limits, FakeVenue(), book_walk(), risk_returns=True)
    rt.run()
    assert rt.risk.mids()[1] == 10_001.0  # the gate's own mid: still the snapshot's
    r = rt.risk_stage.returns.matrix()[:, 1]
    assert len(r) > 90 and r.std() > 0  # the book's mids moved, and the window saw it
    assert np.abs(r).max() < 2 * 20 / 10_000  # at most ten 2-tick steps an interval


def test_gekko_backtest_risk_returns_from_the_config(tmp_path) -> None:
    """[backtest] risk_returns reaches `gekko backtest`'s runtime: a columnar replay that would
    run fast runs exact, says why, and its gate holds a sampled window at the end."""
    from pathlib import Path

    from ops.backtest_build import build_backtest
    from ops.config import parse_config

    rng = np.random.default_rng(4)
    lines = ["ts_event,symbol,bid_px,bid_qty,ask_px,ask_qty"]
    t, mid = 1_700_000_000_000_000_000, 150.0
    for _ in range(2_000):
        t += int(rng.integers(100_000, 3_000_000))
        mid += 0.01 * int(rng.integers(-1, 2))
        lines.append(f"{t},AAPL,{mid:.2f},{int(rng.integers(1, 900))},{mid + 0.01:.2f},7")
    quotes_csv = tmp_path / "q.csv"
    quotes_csv.write_text("\n".join(lines) + "\n")
    base = (Path(__file__).resolve().parents[1] / "config.toml").read_text()
    for a, b in (
        ('source = "synthetic"', 'source = "replay"'),
        ('replay_quotes = ""', f'replay_quotes = "{quotes_csv.as_posix()}"'),
        ('var_dir = "var"', f'var_dir = "{tmp_path}"'),
        ("returns_interval_s = 60.0", "returns_interval_s = 0.02"),
        ("risk_returns = false", "risk_returns = true"),
    ):
        assert a in base, a
        base = base.replace(a, b, 1)
    rt = build_backtest(parse_config(base, tmp_path / "c.toml")).runtime
    assert rt.replay_engine == "exact" and "risk_returns" in rt.replay_note
    rt.run()
    assert rt.risk.stats.t > 100 and rt.risk.stats.ready


def test_momentum_vol_target_fast_replay_equals_exact() -> None:
    """The strategy-side sigma is fed by the strategy's own updates, which the fast replay makes
    as the exact path does: the same volatility-sized orders and fills on both."""
    from tests.test_replay_fast import LIMITS as RLIMITS
    from tests.test_replay_fast import Rows, assert_same, both, momentum, quotes

    limits = msgspec.structs.replace(RLIMITS, returns_interval_s=0.05, min_history=20)
    sizes = {}
    for vol in ("window", "ewma", "har"):
        lim = msgspec.structs.replace(limits, volatility=vol)
        params = {"fast": 5, "slow": 20, "vol_target": 2.0}
        ex, a, fa, b = both(lambda: Rows(quotes(8_000)), momentum(params), limits=lim)
        assert_same(ex, a, fa, b)
        assert a["orders"] > 5 and len({o.qty for o in ex.orders_sent}) > 2
        sizes[vol] = [o.qty for o in ex.orders_sent]
    assert len({tuple(q) for q in sizes.values()}) == 3  # each sigma sized its own orders
