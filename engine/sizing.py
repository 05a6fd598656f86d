"""Position sizing: fractional Kelly from a forecast, capped by the risk limits.

For a return with expected value μ (per horizon, over the risk-free rate r) and variance σ², the
growth-optimal fraction of equity to hold is f* = (μ − r) / σ² (the Gaussian / continuous-time
Kelly criterion). Full Kelly is far too aggressive for estimated μ and σ — an overestimated μ
overbets, and overbetting loses growth faster than underbetting — so strategies use a fraction
of it (half Kelly by default), and the result is then capped by the same limits the risk gate
enforces, so a Kelly-sized order is not one risk has to reject:

- ``max_weight``: a single position's value ≤ this fraction of equity (5 % by default);
- ``max_position_lots``: the per-instrument position limit, in lots (a real venue's
  instruments: ``max_position_notional`` in notional instead, as risk enforces it);
- ``max_order_notional``: one order's value (applies to the *change* of position, see
  ``order_lots``).

Everything returns whole lots, truncated toward zero (never rounded up past a cap). A forecast
that is not usable (NaN, non-positive variance, no price) sizes to zero: no view, no position.

Volatility targeting (``vol_target_lots``) sizes a position so its sigma over one return
interval is a set amount of money: notional = risk / sigma, under the same caps. With sigma from
``engine.vol_sigma.SigmaTracker`` it is the risk gate's sigma (``[risk] volatility`` = window |
ewma | har): a volatility jump the EWMA (or HAR) sees within tens of intervals shrinks the
position that soon.
An unknown sigma sizes to zero as well (docs/risk.md, "Volatility").
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from statistics import NormalDist

from engine.messages import Forecast
from engine.risk_limits import RiskLimits


@dataclass(frozen=True, slots=True)
class SizingLimits:
    """Caps applied after Kelly; ``None`` means no cap of that kind."""

    max_weight: float = 0.05
    max_position_lots: int | None = None
    max_order_notional: float | None = None
    #: the instruments whose position cap is ``max_position_notional`` instead of lots
    notional_ids: frozenset[int] = frozenset()
    max_position_notional: float | None = None

    def __post_init__(self) -> None:
        if not (0 < self.max_weight <= 1e6 and math.isfinite(self.max_weight)):
            raise ValueError(f"max_weight must be a positive number, not {self.max_weight!r}")
        if self.max_position_lots is not None and self.max_position_lots < 0:
            raise ValueError("max_position_lots must be >= 0")
        if self.max_order_notional is not None and not self.max_order_notional > 0:
            raise ValueError("max_order_notional must be > 0")

    @classmethod
    def from_risk(cls, limits: RiskLimits, notional_ids: Iterable[int] = ()) -> SizingLimits:
        """The caps the risk gate enforces: ``max_position_pct`` (percent of equity; 0 = off,
        then no leverage: 100 %), ``max_position_lots`` (``max_position_notional`` for
        ``notional_ids``: a real venue's instruments), ``max_order_notional``."""
        pct = limits.max_position_pct
        ids = frozenset(notional_ids)
        return cls(
            max_weight=pct / 100.0 if pct > 0 else 1.0,
            max_position_lots=int(limits.max_position_lots),
            max_order_notional=float(limits.max_order_notional),
            notional_ids=ids,
            max_position_notional=float(limits.max_position_notional) if ids else None,
        )


def kelly_fraction(
    expected_return: float, variance: float, fraction: float = 0.5, risk_free: float = 0.0
) -> float:
    """Signed fraction of equity to hold: ``fraction × (μ − r) / σ²`` (0 when unusable)."""
    if not (math.isfinite(expected_return) and math.isfinite(variance) and variance > 0):
        return 0.0
    if not (math.isfinite(fraction) and fraction >= 0):
        raise ValueError(f"fraction must be >= 0, not {fraction!r}")
    return fraction * (expected_return - risk_free) / variance


def kelly_lots(
    expected_return: float,
    variance: float,
    equity: float,
    price: float,
    lot_value: float,
    *,
    fraction: float = 0.5,
    risk_free: float = 0.0,
    limits: SizingLimits | None = None,
    instrument_id: int = -1,
) -> int:
    """Target position in lots (signed) for ``equity`` in currency at ``price`` (ticks).

    ``lot_value`` is the currency value of one lot per tick of price (``tick_size × lot_size``),
    so one lot is worth ``price × lot_value``; ``instrument_id`` picks its position cap."""
    lim = limits or SizingLimits()
    if not (equity > 0 and price > 0 and lot_value > 0 and math.isfinite(equity)):
        return 0
    w = kelly_fraction(expected_return, variance, fraction, risk_free)
    w = max(-lim.max_weight, min(lim.max_weight, w))
    lots = int(w * equity / (price * lot_value))  # int() truncates toward zero
    cap = lim.max_position_lots
    if instrument_id in lim.notional_ids:
        notional = lim.max_position_notional
        cap = None if notional is None else int(notional / (price * lot_value))
    if cap is not None:
        lots = max(-cap, min(cap, lots))
    return lots


def vol_target_lots(
    sigma: float,
    risk: float,
    price: float,
    lot_value: float,
    *,
    direction: int = 1,
    equity: float | None = None,
    limits: SizingLimits | None = None,
    instrument_id: int = -1,
) -> int:
    """Position in lots (signed by ``direction``) whose sigma over one return interval is
    ``risk`` in currency: ``risk / (sigma × price × lot_value)``, truncated, then capped like
    ``kelly_lots`` (``max_weight`` of ``equity`` when given, the position cap of
    ``instrument_id``). 0 when ``sigma`` is unknown (NaN, <= 0) or there is no price."""
    lim = limits or SizingLimits()
    if not (math.isfinite(sigma) and sigma > 0 and price > 0 and lot_value > 0):
        return 0
    if not (math.isfinite(risk) and risk >= 0):
        raise ValueError(f"risk must be >= 0, not {risk!r}")
    value = risk / sigma
    if equity is not None:
        value = min(value, lim.max_weight * max(equity, 0.0))
    lots = int(value / (price * lot_value))
    cap = lim.max_position_lots
    if instrument_id in lim.notional_ids:
        notional = lim.max_position_notional
        cap = None if notional is None else int(notional / (price * lot_value))
    if cap is not None:
        lots = min(cap, lots)
    return lots if direction > 0 else -lots if direction < 0 else 0


def order_lots(
    target: int, current: int, price: float, lot_value: float, limits: SizingLimits | None = None
) -> int:
    """The signed order that moves ``current`` toward ``target``, no larger than one order may
    be (``max_order_notional``); the rest is left for later orders."""
    lim = limits or SizingLimits()
    delta = target - current
    if delta == 0 or lim.max_order_notional is None or not (price > 0 and lot_value > 0):
        return delta
    cap = int(lim.max_order_notional / (price * lot_value))
    return max(-cap, min(cap, delta))


def forecast_moments(f: Forecast) -> tuple[float, float]:
    """(expected return, variance) at the forecast's horizon, from its point path and quantiles.

    The point path holds log returns versus the last close, so its last element is the horizon's
    expected log return. The variance comes from the widest symmetric pair of quantile levels
    (e.g. 0.1 / 0.9), read as a normal distribution: σ = (q_hi − q_lo) / (z_hi − z_lo). Without
    quantiles the variance is NaN, which ``kelly_fraction`` sizes to zero."""
    if not f.point:
        return float("nan"), float("nan")
    mu = float(f.point[-1])
    levels = list(f.levels)
    pairs = []
    for i, lo in enumerate(levels):
        if not 0 < lo < 0.5:
            continue
        for j, hi in enumerate(levels):
            if abs(hi - (1 - lo)) < 1e-9 and i < len(f.quantiles) and j < len(f.quantiles):
                pairs.append((lo, i, j))
    if not pairs:
        return mu, float("nan")
    lo, i, j = min(pairs)
    q_lo, q_hi = f.quantiles[i], f.quantiles[j]
    if not q_lo or not q_hi:
        return mu, float("nan")
    z = NormalDist().inv_cdf(1 - lo) - NormalDist().inv_cdf(lo)
    sigma = (float(q_hi[-1]) - float(q_lo[-1])) / z
    return mu, sigma * sigma if sigma > 0 else float("nan")
