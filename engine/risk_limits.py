"""The risk gate's limits: one frozen struct of every pre-trade limit and real-time control.

Its own module so that the configuration (``config.toml``'s ``[risk]`` section) can load into it
without importing the gate, and so the limits read as one list.
"""

from __future__ import annotations

import msgspec


class RiskLimits(msgspec.Struct, frozen=True, kw_only=True):
    """Pre-trade limits and real-time controls. Notional is in the instrument's currency,
    position in lots, every ``*_pct`` in percent (5.0 = 5 %). 0 turns an optional control off
    (and ``max_correlation`` >= 1)."""

    max_order_notional: float
    max_position_lots: int
    max_open_orders: int
    capital: float = 0.0  # starting equity; percentage-of-equity limits need it > 0
    max_position_pct: float = 0.0
    max_sector_pct: float = 0.0
    max_correlation: float = 1.0
    max_var_pct: float = 0.0
    var_method: str = "both"  # historical | parametric | both (the larger)
    var_confidence: float = 0.99
    var_horizon: float = 1.0  # in return intervals
    min_history: int = 20  # return intervals before VaR and correlation apply
    max_orders_per_s: int = 0
    price_band_pct: float = 0.0
    daily_loss_reduce_pct: float = 0.0
    daily_loss_halt_pct: float = 0.0
    drawdown_reduce_pct: float = 0.0
    drawdown_halt_pct: float = 0.0
    stop_loss_pct: float = 0.0
    take_profit_pct: float = 0.0
    flash_band_pct: float = 0.0
    flash_window_ns: int = 1_000_000_000
    flash_cooldown_ns: int = 5_000_000_000
    flash_samples: int = 64  # price samples kept per instrument: window / refresh interval
    max_intent_age_ns: int = 0  # refuse intents whose ts_origin is older than this (0 = off)
