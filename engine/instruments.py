"""Instrument definitions and the one place where ticks/lots meet decimals.

Everything inside the engine counts prices in ticks and quantities in lots (int64). Humans,
config files and venues speak decimals; converting here, and only here, means a rounding rule is
decided once and a float never leaks into a comparison.
"""

from __future__ import annotations

import math
from decimal import ROUND_HALF_EVEN, Decimal

import msgspec

from engine.settings import need


class Instrument(msgspec.Struct, frozen=True, kw_only=True):
    """A tradable instrument. ``instrument_id`` is the small integer used on every ring."""

    instrument_id: int
    symbol: str
    venue: str = "sim"
    asset_class: str = "equity"
    sector: str = "unknown"
    tick_size: float = 0.01
    lot_size: float = 1.0
    currency: str = "USD"

    def __post_init__(self) -> None:
        # the keys of an [[instruments]] table (config.toml loads into a subclass of this)
        need(self.instrument_id >= 0, "instrument_id", f"must be >= 0 (instrument {self.symbol})")
        need(bool(self.symbol), "symbol", "must not be empty")
        for key in ("tick_size", "lot_size"):
            v = getattr(self, key)
            need(v > 0 and math.isfinite(v), key, f"must be > 0 (instrument {self.symbol})")

    # --- conversions ---------------------------------------------------------------------------
    def px_to_ticks(self, price: float | Decimal | str) -> int:
        """Decimal price -> integer ticks, rounded half-even to the nearest tick."""
        return _to_units(price, self.tick_size)

    def ticks_to_px(self, ticks: int) -> float:
        return float(Decimal(ticks) * Decimal(str(self.tick_size)))

    def qty_to_lots(self, qty: float | Decimal | str) -> int:
        """Decimal quantity -> integer lots, rounded half-even."""
        return _to_units(qty, self.lot_size)

    def lots_to_qty(self, lots: int) -> float:
        return float(Decimal(lots) * Decimal(str(self.lot_size)))

    def notional(self, px_ticks: int, qty_lots: int) -> float:
        """Notional value in the instrument's currency of ``qty_lots`` at ``px_ticks``."""
        return px_ticks * self.tick_size * qty_lots * self.lot_size


_INT64 = 1 << 63


def _to_units(value: float | Decimal | str, unit: float) -> int:
    d = value if isinstance(value, Decimal) else Decimal(str(value))
    if not d.is_finite():
        raise ValueError(f"not a finite number: {value!r}")
    try:  # quantize refuses a result of more digits than the context holds (28)
        n = int((d / Decimal(str(unit))).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))
    except ArithmeticError:
        n = _INT64
    if not -_INT64 <= n < _INT64:  # ticks and lots travel as int64 (engine.messages)
        raise ValueError(f"{value!r} is beyond an int64 count of {unit}")
    return n


class InstrumentTable:
    """Instruments by id and by symbol; rejects duplicates so ids on the rings stay unambiguous."""

    def __init__(self, instruments: list[Instrument]) -> None:
        self._by_id: dict[int, Instrument] = {}
        self._by_symbol: dict[str, Instrument] = {}
        for ins in instruments:
            if ins.instrument_id in self._by_id:
                raise ValueError(f"duplicate instrument_id {ins.instrument_id}")
            if ins.symbol in self._by_symbol:
                raise ValueError(f"duplicate symbol {ins.symbol}")
            self._by_id[ins.instrument_id] = ins
            self._by_symbol[ins.symbol] = ins

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self):
        return iter(sorted(self._by_id.values(), key=lambda i: i.instrument_id))

    def __contains__(self, instrument_id: object) -> bool:
        return instrument_id in self._by_id

    def get(self, instrument_id: int) -> Instrument | None:
        return self._by_id.get(instrument_id)

    def by_id(self, instrument_id: int) -> Instrument:
        try:
            return self._by_id[instrument_id]
        except KeyError:
            raise KeyError(f"unknown instrument id {instrument_id}") from None

    def by_symbol(self, symbol: str) -> Instrument:
        try:
            return self._by_symbol[symbol]
        except KeyError:
            raise KeyError(f"unknown instrument {symbol!r}") from None

    @property
    def ids(self) -> list[int]:
        return sorted(self._by_id)
