"""Engine components built from the config, the same way for both runtimes.

The multi-process runtime (``procs/*``) and the inline backtest (``gekko backtest``) must run the
*same* market, venue, strategies and limits for "same data + same strategy ⇒ same orders" to hold,
so both build them here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from engine.instruments import InstrumentTable
from engine.risk import RiskLimits
from engine.strategy_host import StrategyHost

#: the validated configuration (``ops.config.Config``); procs sits below ops and only reads it
Config = Any

SECONDS_PER_YEAR = 252 * 6.5 * 3600  # trading seconds: annual vol is quoted over trading time


def build_market(cfg: Config) -> Iterator[Any]:
    """The market-data source: the seeded synthetic market or a replay of files."""
    instruments = cfg.instrument_table()
    m = cfg.market
    if m.source == "replay":
        from engine.venues.replay import ReplaySource

        if m.replay_lobster_messages:
            sym = m.replay_lobster_symbol or cfg.instruments[0].symbol
            ins = instruments.by_symbol(sym)
            divisor = round(100 * 0.01 / ins.tick_size) if ins.tick_size else 100
            return iter(
                ReplaySource.from_lobster(
                    m.replay_lobster_messages,
                    m.replay_lobster_orderbook,
                    m.replay_lobster_levels,
                    ins.instrument_id,
                    price_divisor=divisor,
                    instruments=instruments,
                )
            )
        return iter(
            ReplaySource(instruments, quotes=m.replay_quotes or None, trades=m.replay_trades or None)
        )
    from engine.venues.synthetic import InstrumentSpec, JumpParams, SyntheticMarket

    specs = [
        InstrumentSpec.from_instrument(
            instruments.by_id(i.instrument_id), i.initial_price, annual_vol=i.annual_vol
        )
        for i in cfg.instruments
    ]
    jumps = JumpParams(rate_per_s=m.jump_rate_per_s, std=m.jump_std) if m.jump_rate_per_s > 0 else None
    market = SyntheticMarket(
        specs,
        correlation=m.correlation,
        seed=m.seed,
        mean_interval_ns=int(m.event_interval_us * 1000),
        levels=m.book_levels,
        jumps=jumps,
    )
    return iter(market)


def build_venue(cfg: Config, instruments: InstrumentTable | None = None) -> Any:
    """The simulated exchange with the configured latency and fees."""
    from engine.venues.sim import SimExchange

    s = cfg.sim
    return SimExchange(
        instruments or cfg.instrument_table(),
        latency_ns=int(s.latency_us * 1000),
        jitter_ns=int(s.jitter_us * 1000),
        maker_fee_bps=s.maker_fee_bps,
        taker_fee_bps=s.taker_fee_bps,
        seed=cfg.market.seed,
    )


def build_limits(cfg: Config) -> RiskLimits:
    r = cfg.risk
    return RiskLimits(
        max_order_notional=r.max_order_notional,
        max_position_lots=r.max_position_lots,
        max_open_orders=r.max_open_orders,
    )


def build_strategy_host(cfg: Config, instruments: InstrumentTable | None = None) -> StrategyHost:
    return StrategyHost(cfg.strategy_specs(), instruments or cfg.instrument_table())
