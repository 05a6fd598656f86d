"""Warm a worker's hot path before it reports ready.

The first call of each numba kernel with a new signature, each msgspec decoder and each lazily
built table costs milliseconds; without a warm-up those land on the first real ticks and show as
a p99 of hundreds of milliseconds. Each worker runs its components once, on throwaway copies fed
from a throwaway synthetic market, before it stamps READY — so the supervisor's "ready" means
ready to trade at speed, and no real state is touched.
"""

from __future__ import annotations

import itertools
from typing import Any

import msgspec

from engine.messages import IntentNew, Message, OrderType, Quote, Side, TimeInForce
from procs.build import build_market, build_strategy_host, build_venue

WARMUP_EVENTS = 2000


def _market(cfg: Any, n: int = WARMUP_EVENTS) -> list[Any]:
    # always a synthetic market of the configured instruments: a replay's files may be large
    synthetic = msgspec.structs.replace(
        cfg, market=msgspec.structs.replace(cfg.market, source="synthetic")
    )
    # every instrument, a real venue's too (its strategies and risk warm up the same way)
    msgs = list(itertools.islice(build_market(synthetic, None, cfg.instrument_table()), n))
    enc = msgspec.msgpack.Encoder()
    dec = msgspec.msgpack.Decoder(Message)
    for m in msgs[:200]:  # the ring's codec path too
        dec.decode(enc.encode(m))
    return msgs


def warm_strategy(cfg: Any) -> None:
    host = build_strategy_host(cfg)
    host.start(0)
    for t, m in enumerate(_market(cfg)):
        host.on_market_data(m, t)
    host.on_timer(10**9)


def warm_risk(cfg: Any) -> None:
    from engine.risk import RiskGate
    from procs.build import real_venue_instrument_ids

    gate = RiskGate(
        cfg.risk, cfg.instrument_table(), notional_limited=real_venue_instrument_ids(cfg)
    )
    iid = cfg.instruments[0].instrument_id
    gate.on_market_data(Quote(iid, 100, 1, 101, 1, 0, 0))
    for k in range(1, 50):
        gate.on_intent(
            IntentNew(
                k, 1, iid, int(Side.BUY), int(OrderType.LIMIT), int(TimeInForce.IOC), 100, 1, 0, 0
            ),
            k,
        )
    # the periodic refresh and the VaR / correlation / flash-move kernels (numba)
    import numpy as np

    gate.on_prices(10**9)
    gate.set_returns(
        np.random.default_rng(0).normal(0, 0.01, (max(gate.stats.min_obs, 3), len(gate.position)))
    )
    gate.stats.hist_var(iid, 1.0)
    gate.stats.max_corr(iid, 1.0, gate.signs)
    from engine.risk_stats import ReturnSampler  # the realised variance's kernel ("har")

    ReturnSampler(len(gate.position), 3).observe(gate.mids())


def _warm_venue(cfg: Any, instruments: Any) -> Any:
    """The venue the warm-up trades on: the configured one only when every venue is simulated.
    A real venue's client would connect to the exchange, reconcile it (adopting or canceling
    what it finds there) and send the warm-up's orders for real: the simulator warms instead."""
    if any(getattr(v, "kind", "sim") != "sim" for v in getattr(cfg, "venues", None) or []):
        from engine.venues.sim import SimExchange

        return SimExchange(instruments)
    return build_venue(cfg, instruments)


def warm_exec(cfg: Any) -> None:
    from engine.exec_engine import ExecEngine
    from engine.messages import NewOrder
    from engine.portfolio import Portfolio

    instruments = cfg.instrument_table()
    engine = ExecEngine(_warm_venue(cfg, instruments), instruments)
    portfolio = Portfolio(instruments)
    msgs = _market(cfg)
    for t, m in enumerate(msgs):
        portfolio.on_market_data(m)
        engine.on_market_data(m, t)
    iid = cfg.instruments[0].instrument_id
    t = len(msgs)
    for k in range(1, 20):
        engine.on_order(
            NewOrder(
                k, 0, iid, int(Side.BUY), int(OrderType.MARKET), int(TimeInForce.IOC), 0, 1, t, t
            ),
            t,
        )
        engine.poll(t + 10**9)
    engine.cancel_all(t + 2 * 10**9)
    engine.poll(t + 3 * 10**9)
