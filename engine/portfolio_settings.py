"""The ``[portfolio]`` section: the account's starting cash, tax-lot method and analytics.

``config.toml``'s ``[portfolio]`` loads straight into ``PortfolioSettings`` (``engine/settings.py``);
``portfolio_kwargs`` / ``backtest_kwargs`` are the one place its keys meet the arguments of
``engine.portfolio.Portfolio`` and ``engine.backtest.InlineRuntime``. config.toml's comments
document each key.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import msgspec

from engine.lots import LOT_METHODS, WASH_SALE_DAYS
from engine.settings import Settings, need


class PortfolioSettings(Settings):
    """Starting cash per currency, the base currency and FX, the tax-lot method, the benchmark
    and the analytics' parameters."""

    cash: dict[str, float] = msgspec.field(default_factory=lambda: {"USD": 1_000_000.0})
    base_currency: str = "USD"
    fx_rates: dict[str, float] = {}  # currency -> value in base_currency (1.0 when absent)
    lot_method: str = "fifo"
    benchmark: str = ""  # an [[instruments]] symbol ("" = none: no beta / excess return)
    equity_interval_s: float = 0.1  # equity-curve sampling period (simulated time in backtests)
    risk_free_rate: float = 0.0  # annual
    var_level: float = 0.95
    wash_sale_days: float = float(WASH_SALE_DAYS)

    equity_interval_ns: ClassVar[int]  # derived once (engine/settings.py)

    def derived(self) -> dict[str, Any]:
        return {"equity_interval_ns": int(self.equity_interval_s * 1e9)}

    def check(self) -> None:
        for ccy, v in self.cash.items():
            need(math.isfinite(v), f"cash.{ccy}", "must be a finite number")
        for ccy, v in self.fx_rates.items():
            need(math.isfinite(v) and v > 0, f"fx_rates.{ccy}", "must be > 0")
        need(
            self.lot_method in LOT_METHODS, "lot_method", f"must be one of {', '.join(LOT_METHODS)}"
        )
        need(
            math.isfinite(self.equity_interval_s) and self.equity_interval_s > 0,
            "equity_interval_s",
            "must be > 0",
        )
        need(
            math.isfinite(self.risk_free_rate) and -1 < self.risk_free_rate < 1,
            "risk_free_rate",
            "must be within (-1, 1)",
        )
        need(0 < self.var_level < 1, "var_level", "must be within (0, 1)")
        need(
            math.isfinite(self.wash_sale_days) and self.wash_sale_days >= 0,
            "wash_sale_days",
            "must be >= 0",
        )

    def portfolio_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``engine.portfolio.Portfolio`` (after the instruments)."""
        return {
            "initial_cash": dict(self.cash),
            "lot_method": self.lot_method,
            "base_currency": self.base_currency,
            "fx_rates": dict(self.fx_rates),
            "wash_sale_days": self.wash_sale_days,
        }

    def backtest_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``engine.backtest.InlineRuntime`` for this section."""
        return self.portfolio_kwargs() | {
            "benchmark": self.benchmark or None,
            "equity_interval_ns": self.equity_interval_ns,
            "risk_free": self.risk_free_rate,
            "var_level": self.var_level,
        }
