"""Instrument definitions and the one place where ticks/lots meet decimals.

Everything inside the engine counts prices in ticks and quantities in lots (int64). Humans,
config files and venues speak decimals; converting here, and only here, means a rounding rule is
decided once and a float never leaks into a comparison.
"""

from __future__ import annotations

import math
from decimal import ROUND_HALF_EVEN, Decimal

import msgspec

from engine.enums import InstrumentKind
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
    currency: str = "USD"  # the quote and settlement currency: P&L, fees, funding in it
    # --- what kind of contract (engine.enums.InstrumentKind; docs/instruments-and-accounts.md) -
    kind: str = InstrumentKind.SPOT
    base_currency: str = ""  # spot / FX: the currency bought (EUR of EUR/USD)
    contract_size: float = 1.0  # units of the underlying per lot-quantity 1 (futures, perps)
    initial_margin: float = 0.0  # fraction of notional to open (0: fully funded, no leverage)
    maintenance_margin: float = 0.0  # fraction of notional to keep; below it: margin call
    funding_interval_s: int = 0  # perpetual: seconds between funding payments (8 h: 28800)
    funding_rate: float = 0.0  # perpetual: the simulated venue's rate per interval
    expiry_ns: int = 0  # future: expiry (UTC ns); settles at the mark then
    pip_size: float = 0.0  # FX: a pip (0.0001; 0.01 for JPY quotes)
    financing_long_rate: float = 0.0  # FX: annual rate paid (< 0) or received on a long
    financing_short_rate: float = 0.0  # ... on a short
    market_id: str = ""  # binary / betting: the market (event) this outcome belongs to
    outcome: str = ""  # binary: the outcome token ("Yes"); betting: the selection's name
    resolves_ns: int = 0  # binary / betting: when the simulated venue resolves it (0: never)
    resolution: str = ""  # the simulated venue's result: "1" / "0" / "void" / "0.5" (binary 50/50)
    session_tz: str = ""  # a venue with sessions: IANA zone of session_open / session_close
    session_open: str = ""  # "HH:MM" local; at-the-open orders work then
    session_close: str = ""  # "HH:MM" local; at-the-close orders work then

    def __post_init__(self) -> None:
        # the keys of an [[instruments]] table (config.toml loads into a subclass of this)
        need(self.instrument_id >= 0, "instrument_id", f"must be >= 0 (instrument {self.symbol})")
        need(bool(self.symbol), "symbol", "must not be empty")
        for key in ("tick_size", "lot_size"):
            v = getattr(self, key)
            need(v > 0 and math.isfinite(v), key, f"must be > 0 (instrument {self.symbol})")
        self._check_kind()

    def _check_kind(self) -> None:
        """What each kind needs to be modelled at all; refused rather than approximated."""
        sym, kind = self.symbol, self.kind
        need(kind in InstrumentKind.ALL, "kind", f"must be one of {', '.join(InstrumentKind.ALL)}")
        need(self.contract_size > 0, "contract_size", f"must be > 0 (instrument {sym})")
        im, mm = self.initial_margin, self.maintenance_margin
        need(
            0 <= im < 1 and 0 <= mm <= im,
            "maintenance_margin",
            f"must satisfy 0 <= maintenance_margin <= initial_margin < 1 (instrument {sym})",
        )
        if kind == InstrumentKind.PERPETUAL:
            need(self.funding_interval_s > 0, "funding_interval_s", f"a perpetual needs it ({sym})")
        if kind == InstrumentKind.FUTURE:
            need(self.expiry_ns > 0, "expiry", f"a dated future needs its expiry ({sym})")
        if kind == InstrumentKind.FX:
            need(self.pip_size > 0, "pip_size", f"an FX pair needs its pip size ({sym})")
            need(bool(self.base_currency), "base_currency", f"an FX pair needs it ({sym})")
        if kind in (InstrumentKind.BINARY, InstrumentKind.BETTING):
            need(bool(self.market_id), "market_id", f"a {kind} instrument needs its market ({sym})")
            # a binary's 50/50 pays half a share (Polymarket); a betting selection wins or loses
            ok = (
                ("", "1", "0", "void", "0.5")
                if kind == InstrumentKind.BINARY
                else ("", "1", "0", "void")
            )
            need(
                self.resolution in ok,
                "resolution",
                f"must be one of {', '.join(repr(r) for r in ok)} (instrument {sym})",
            )
        if kind == InstrumentKind.BINARY:
            need(self.tick_size < 1, "tick_size", f"a binary contract prices in (0, 1) ({sym})")
        if self.session_open or self.session_close:
            need(bool(self.session_tz), "session_tz", f"sessions need their time zone ({sym})")

    @property
    def is_margined(self) -> bool:
        """Whether positions post margin rather than pay in full (perpetuals, futures, FX)."""
        return self.initial_margin > 0

    def px_in_range(self, px_ticks: int) -> bool:
        """Whether a price can exist for this kind: > 0 always; a binary contract's below 1;
        decimal odds of a betting selection from 1.01 to 1000 (Betfair's ladder ends)."""
        if px_ticks <= 0:
            return False
        if self.kind == InstrumentKind.BINARY:
            return px_ticks * self.tick_size < 1.0 - 1e-12
        if self.kind == InstrumentKind.BETTING:
            return 1.01 - 1e-9 <= px_ticks * self.tick_size <= 1000.0 + 1e-9
        return True

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
