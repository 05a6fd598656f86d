"""The ``[risk]`` section: every pre-trade limit and real-time control, in config units.

``config.toml``'s ``[risk]`` loads straight into ``RiskLimits`` (``engine/settings.py``): the
field names are the keys, in the units the file documents (ms, s, percent, days); the ns and
per-interval values the gate needs are derived once, below. Its own module so the configuration
can load into it without importing the gate. config.toml's comments document each key.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar

from engine.settings import Settings, need

#: every control that is a percentage within 0..100 (0 = off)
_PCT_KEYS = (
    "max_position_pct",
    "max_sector_pct",
    "max_var_pct",
    "price_band_pct",
    "daily_loss_reduce_pct",
    "daily_loss_halt_pct",
    "drawdown_reduce_pct",
    "drawdown_halt_pct",
    "stop_loss_pct",
    "take_profit_pct",
    "flash_band_pct",
    "max_margin_pct",
)

#: the values ``off()`` gives: every optional control off, a VaR horizon of one return interval
_OFF: dict[str, Any] = {k: 0.0 for k in _PCT_KEYS} | {
    "capital": 0.0,
    "max_correlation": 1.0,
    "max_orders_per_s": 0,
    "max_intent_age_ms": 0.0,
    "flash_band_ticks": 0.0,
    "price_band_ticks": 0.0,
    "price_band_ladder_ticks": 0.0,
    "flash_band_ladder_ticks": 0.0,
    "trading_day_s": 60.0,  # = returns_interval_s: var_horizon_days counts return intervals
}


class RiskLimits(Settings):
    """Pre-trade limits and real-time controls. Notional is in the instrument's currency,
    position in lots, every ``*_pct`` in percent (5.0 = 5 %). 0 turns an optional control off
    (and ``max_correlation`` 1)."""

    max_order_notional: float = 250_000.0
    max_position_lots: int = 2_000
    #: a real venue's instruments: the position limit in notional (instrument's currency) instead
    #: of lots, their lot being the venue's quantity step (1e-8 BTC: a count of lots is no size)
    max_position_notional: float = 100_000.0
    max_open_orders: int = 100
    capital: float = 10_000_000.0  # starting equity; percentage-of-equity limits need it > 0
    max_position_pct: float = 5.0
    max_sector_pct: float = 15.0
    max_correlation: float = 0.70
    max_var_pct: float = 2.0
    var_method: str = "both"  # historical | parametric | both (the larger)
    var_confidence: float = 0.99
    var_horizon_days: float = 1.0
    returns_interval_s: float = 60.0
    returns_window: int = 500
    min_history: int = 30  # return intervals before VaR and correlation apply
    volatility: str = "window"  # VaR's sigma: window (equal weights) | ewma (RiskMetrics) | har
    volatility_lambda: float = 0.94  # the EWMA's decay per return interval
    har_refit: int = 20  # volatility = "har": re-estimate the HAR fit every this many intervals
    trading_day_s: float = 23_400.0
    max_orders_per_s: int = 1_000
    price_band_pct: float = 5.0
    # > 0: a spot price's band is this many return-interval sigmas (the [risk] volatility
    # sigma), within price_band_min_pct..price_band_pct; the fixed band while sigma is unknown
    price_band_sigmas: float = 0.0
    price_band_min_pct: float = 0.5
    # a binary's price band in ticks, a betting selection's in ladder ticks: refused past these
    # and price_band_pct both (the wider band wins); 0 = off for that kind
    price_band_ticks: float = 5.0
    price_band_ladder_ticks: float = 10.0
    daily_loss_reduce_pct: float = 1.0
    daily_loss_halt_pct: float = 2.0
    drawdown_reduce_pct: float = 3.0
    drawdown_halt_pct: float = 5.0
    stop_loss_pct: float = 0.0
    take_profit_pct: float = 0.0
    flash_band_pct: float = 3.0
    # a bounded price moves in steps (engine.market_guard): a binary's band in ticks, a betting
    # selection's in ladder ticks (2.00 -> 1.60 is 40), past flash_band_pct too; 0 = off for it
    flash_band_ticks: float = 10.0
    flash_band_ladder_ticks: float = 50.0
    flash_window_s: float = 1.0
    flash_cooldown_s: float = 5.0
    refresh_interval_ms: float = 20.0
    max_intent_age_ms: float = 1000.0  # refuse intents whose ts_origin is older (0 = off)
    # the account (engine/risk_margin.py): margined instruments, betting and binary markets
    max_margin_pct: float = 100.0  # initial margin in use after an order, % of equity (0 = off)
    max_leverage: float = 0.0  # gross notional of margined positions / equity (0 = off)
    max_market_liability: float = 0.0  # a betting market's worst-case loss, currency (0 = off)
    max_binary_exposure: float = 0.0  # a binary market's worst loss at resolution (0 = off)
    # the risk process's own settings (procs/risk.py, procs/risk_history.py)
    start_halted: bool = False
    state_file: str = ""
    open_orders_timeout_s: float = 10.0
    history_max_age_s: float = -1.0
    history_file: str = ""

    @classmethod
    def off(cls, **overrides: Any) -> RiskLimits:
        """Every optional control off, with ``overrides``: a gate that checks only the hard
        limits and what the caller names (tests, benchmarks, what-if backtests)."""
        return cls(**(_OFF | overrides))

    # -- derived once (engine/settings.py): the units the gate works in --
    var_horizon: ClassVar[float]  # the VaR horizon in return intervals
    flash_window_ns: ClassVar[int]
    flash_cooldown_ns: ClassVar[int]
    flash_samples: ClassVar[int]  # prices kept per instrument: the window / the refresh interval
    max_intent_age_ns: ClassVar[int]
    refresh_interval_ns: ClassVar[int]
    returns_interval_ns: ClassVar[int]

    def derived(self) -> dict[str, Any]:
        return {
            "var_horizon": self.var_horizon_days * self.trading_day_s / self.returns_interval_s,
            "flash_window_ns": int(self.flash_window_s * 1e9),
            "flash_cooldown_ns": int(self.flash_cooldown_s * 1e9),
            "flash_samples": min(
                4096, int(self.flash_window_s * 1000 / self.refresh_interval_ms) + 2
            ),
            "max_intent_age_ns": int(self.max_intent_age_ms * 1_000_000),
            "refresh_interval_ns": int(self.refresh_interval_ms * 1_000_000),
            "returns_interval_ns": max(1, round(self.returns_interval_s * 1e9)),
        }

    def check(self) -> None:
        self._check_orders()
        self._check_exposure()
        self._check_account()
        self._check_process()

    def _check_orders(self) -> None:
        need(self.max_order_notional > 0, "max_order_notional", "must be > 0")
        need(self.max_position_lots > 0, "max_position_lots", "must be > 0")
        need(
            math.isfinite(self.max_position_notional) and self.max_position_notional > 0,
            "max_position_notional",
            "must be > 0",
        )
        need(self.max_open_orders > 0, "max_open_orders", "must be > 0")
        need(self.max_orders_per_s >= 0, "max_orders_per_s", "must be >= 0 (0 = off)")
        need(
            math.isfinite(self.max_intent_age_ms) and self.max_intent_age_ms >= 0,
            "max_intent_age_ms",
            "must be >= 0 milliseconds (0 = off)",
        )
        for k in _PCT_KEYS:
            v = getattr(self, k)
            need(
                math.isfinite(v) and 0 <= v <= 100,
                k,
                "must be a percentage within 0..100 (0 = off)",
            )
        need(
            not self.daily_loss_halt_pct or self.daily_loss_reduce_pct <= self.daily_loss_halt_pct,
            "daily_loss_reduce_pct",
            "must not exceed daily_loss_halt_pct",
        )
        need(
            not self.drawdown_halt_pct or self.drawdown_reduce_pct <= self.drawdown_halt_pct,
            "drawdown_reduce_pct",
            "must not exceed drawdown_halt_pct",
        )
        for k in (
            "flash_band_ticks",
            "flash_band_ladder_ticks",
            "price_band_ticks",
            "price_band_ladder_ticks",
        ):
            v = getattr(self, k)
            need(math.isfinite(v) and v >= 0, k, "must be >= 0 (0 = off)")
        need(
            math.isfinite(self.price_band_sigmas) and self.price_band_sigmas >= 0,
            "price_band_sigmas",
            "must be >= 0 (0 = the fixed price_band_pct)",
        )
        need(
            math.isfinite(self.price_band_min_pct)
            and self.price_band_min_pct >= 0
            and (not self.price_band_pct or self.price_band_min_pct <= self.price_band_pct),
            "price_band_min_pct",
            "must be within 0..price_band_pct",
        )
        for k in ("flash_window_s", "flash_cooldown_s", "refresh_interval_ms"):
            v = getattr(self, k)
            need(math.isfinite(v) and v > 0, k, "must be > 0")

    def _check_exposure(self) -> None:
        need(math.isfinite(self.capital) and self.capital >= 0, "capital", "must be >= 0")
        pct_on = self.max_position_pct or self.max_sector_pct or self.max_var_pct
        need(
            not pct_on or self.capital > 0, "capital", "must be > 0 when a % of equity limit is on"
        )
        need(0 < self.max_correlation <= 1, "max_correlation", "must be within (0, 1] (1 = off)")
        need(
            self.var_method in ("historical", "parametric", "both"),
            "var_method",
            "must be 'historical', 'parametric' or 'both'",
        )
        need(0.5 < self.var_confidence < 1, "var_confidence", "must be within (0.5, 1), e.g. 0.99")
        need(
            self.volatility in ("window", "ewma", "har"),
            "volatility",
            "must be 'window', 'ewma' or 'har'",
        )
        need(
            self.har_refit >= 1,
            "har_refit",
            "must be >= 1 return interval (the HAR fit is re-estimated that often), e.g. 20",
        )
        need(
            0 < self.volatility_lambda < 1, "volatility_lambda", "must be within (0, 1), e.g. 0.94"
        )
        for k in ("var_horizon_days", "returns_interval_s", "trading_day_s"):
            v = getattr(self, k)
            need(math.isfinite(v) and v > 0, k, "must be > 0")
        need(self.returns_window >= 3, "returns_window", "must be >= 3")
        need(
            3 <= self.min_history <= self.returns_window,
            "min_history",
            "must be within 3..returns_window",
        )

    def _check_account(self) -> None:
        for k in ("max_leverage", "max_market_liability", "max_binary_exposure"):
            v = getattr(self, k)
            need(math.isfinite(v) and v >= 0, k, "must be >= 0 (0 = off)")

    def _check_process(self) -> None:
        need(
            math.isfinite(self.open_orders_timeout_s) and self.open_orders_timeout_s > 0,
            "open_orders_timeout_s",
            "must be > 0 seconds",
        )
        need(
            math.isfinite(self.history_max_age_s),
            "history_max_age_s",
            "must be a number of seconds (0 = any age, < 0 = twice the window span)",
        )
        if self.history_file:
            hp = Path(self.history_file)
            need(
                hp.suffix.lower() in (".csv", ".parquet", ".pq"),
                "history_file",
                f"{self.history_file!r}: must be a .csv or .parquet file",
            )
            need(hp.is_file(), "history_file", f"{self.history_file!r}: no such file")
