"""A real venue's instruments and order rules, taken from its ccxt markets.

Why in one place: prices and quantities travel as integer ticks and lots, so the engine's tick
and lot for an instrument must be the venue's exactly. At start the venue's markets are loaded
once (``load_markets``, a blocking call: the supervisor's pre-flight, never a hot loop) into
plain ``VenueMarket`` records; ``resolve_instruments`` checks every configured instrument
against them (not listed, tick or lot disagreeing, not trading: ``MarketMismatch`` naming it,
which the CLI turns into exit 2) and creates the venue's ``symbols``. ``OrderRulesGate`` then
refuses, before it leaves, any order the venue would refuse (size, notional, price), with the
venue's reason, counted per reason: paper and live runs see the same refusals the venue gives.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Iterable, Mapping
from decimal import Decimal, localcontext
from typing import Any

import msgspec

from engine.instruments import Instrument, InstrumentTable
from engine.messages import NewOrder, OrderRejected, OrderReplaceRejected, Quote, ReplaceOrder
from engine.venues.data import InstrumentRules

__all__ = [
    "MarketMismatch",
    "MarketRules",
    "RULES_PREFIX",
    "OrderRulesGate",
    "VenueMarket",
    "load_markets",
    "parse_market",
    "resolve_instruments",
    "venue_amount",
    "venue_price",
]

log = logging.getLogger("gekko.venues")

# ccxt's precision modes (ccxt.base.decimal_to_precision): what market["precision"] counts
_DECIMAL_PLACES, _SIGNIFICANT_DIGITS, _TICK_SIZE = 2, 3, 4
_INT64_MAX = (1 << 63) - 1  # lots travel as int64


class VenueMarket(msgspec.Struct, frozen=True, kw_only=True):
    """One market as the venue lists it: decimals as strings (exact), fees in bps."""

    symbol: str  # ccxt's unified symbol, our ``Instrument.symbol``: "BTC/USDT"
    venue_symbol: str  # the venue's own id: "BTCUSDT", "BTC-USD", "XXBTZUSD"
    base: str
    quote: str
    tick: str
    lot: str
    min_qty: str = "0"
    max_qty: str = "0"  # 0 = no limit
    min_notional: str = "0"
    status: str = "trading"  # "trading", or the venue's word for why not
    maker_fee_bps: float = 0.0
    taker_fee_bps: float = 0.0
    asset_class: str = "crypto"
    # what kind of contract it is, as ``engine.instruments.Instrument`` keys ("kind",
    # "contract_size", "initial_margin", "pip_size", "market_id", ...): {} = spot
    instrument: dict[str, Any] = {}


class MarketRules(InstrumentRules, frozen=True, kw_only=True):
    """``InstrumentRules`` plus what a real venue adds: its own symbol, status and fees."""

    venue_symbol: str = ""
    status: str = "trading"
    maker_fee_bps: float = 0.0
    taker_fee_bps: float = 0.0


class MarketMismatch(ValueError):
    """A configured instrument the venue cannot trade as configured; names both."""

    def __init__(self, venue: str, symbol: str, problem: str) -> None:
        self.venue, self.symbol, self.problem = venue, symbol, problem
        super().__init__(f"instrument {symbol!r} on venue {venue!r}: {problem}")


# --- ccxt market -> VenueMarket -------------------------------------------------------------------
def _dec(value: Any) -> Decimal | None:
    """A market's number; None where it has none (absent, NaN, inf). A value that is no number,
    or one beyond 1e-30..1e30 (whose plain spelling would run to a billion digits), is a
    ``ValueError``: the market is skipped, never read wrong."""
    if value is None:
        return None
    try:
        d = Decimal(str(value))
    except ArithmeticError:  # decimal.InvalidOperation
        raise ValueError(f"not a number: {str(value)[:40]!r}") from None
    if not d.is_finite():
        return None
    if d and not -30 <= d.adjusted() <= 30:
        raise ValueError(f"{str(value)[:40]!r} is out of range")
    return d


def _step(value: Any, mode: int, what: str, symbol: str) -> str:
    """A precision entry as a step ("0.01"), whatever ccxt's precision mode."""
    d = _dec(value)
    if d is None:
        raise ValueError(f"market {symbol!r} has no {what} precision")
    if mode == _DECIMAL_PLACES:
        if d != int(d) or not 0 <= d <= 30:
            raise ValueError(f"market {symbol!r}: {what} precision {d} is not 0..30 decimals")
        return str(Decimal(1).scaleb(-int(d)))
    if mode == _SIGNIFICANT_DIGITS:
        raise ValueError(f"market {symbol!r}: significant-digit precision has no fixed {what} step")
    if d <= 0:
        raise ValueError(f"market {symbol!r}: {what} step {d} is not > 0")
    return _plain(d)


def _plain(d: Decimal) -> str:
    """``Decimal`` as a plain string without exponent or trailing zeros ("0.00001", "5")."""
    s = format(d.normalize(), "f")
    return s


def _field(d: Any, *path: str) -> Any:
    """``d[path[0]][path[1]]...``, None where absent; a ValueError where a level is no table."""
    for key in path:
        if d is None:
            return None
        if not isinstance(d, Mapping):
            raise ValueError(f"{key!r} is inside a {type(d).__name__}, not a table")
        d = d.get(key)
    return d


def _limit(market: Mapping[str, Any], kind: str, bound: str) -> str:
    d = _dec(_field(market, "limits", kind, bound))
    return _plain(d) if d is not None and d > 0 else "0"


def _bps(fraction: Any) -> float:
    d = _dec(fraction)
    return float(d * 10_000) if d is not None else 0.0


def market_status(market: Mapping[str, Any]) -> str:
    """'trading', or the venue's own status word (ccxt's ``active`` False, or a raw status)."""
    info = market.get("info") or {}
    raw = info.get("status") if isinstance(info, Mapping) else None
    if market.get("active") is False:
        return str(raw or "inactive").lower()
    if isinstance(raw, str) and raw.lower() not in ("trading", "online", "open", "enabled", ""):
        return raw.lower()
    return "trading"


def parse_market(
    market: Mapping[str, Any],
    precision_mode: int = _TICK_SIZE,
    fee: Mapping[str, Any] | None = None,
) -> VenueMarket:
    """ccxt's market structure (and its fee-tier entry, when fetched) as a ``VenueMarket``."""
    if not isinstance(market.get("symbol"), str):
        raise ValueError(f"market without a symbol: {str(market.get('id'))[:40]!r}")
    symbol = market["symbol"]
    precision = {k: _field(market, "precision", k) for k in ("price", "amount")}
    if not isinstance(fee or {}, Mapping):
        raise ValueError(f"market {symbol!r}: fee entry {fee!r} is no table")
    fee = fee or {}
    return VenueMarket(
        symbol=symbol,
        venue_symbol=str(market.get("id") or symbol),
        base=str(market.get("base") or ""),
        quote=str(market.get("quote") or ""),
        tick=_step(precision.get("price"), precision_mode, "price", symbol),
        lot=_step(precision.get("amount"), precision_mode, "amount", symbol),
        min_qty=_limit(market, "amount", "min"),
        max_qty=_limit(market, "amount", "max"),
        min_notional=_limit(market, "cost", "min"),
        status=market_status(market),
        maker_fee_bps=_bps(fee.get("maker", market.get("maker"))),
        taker_fee_bps=_bps(fee.get("taker", market.get("taker"))),
        instrument=contract_keys(market),
    )


#: a perpetual's funding interval where the venue lists none (Binance, Bybit, OKX: 8 h)
DEFAULT_FUNDING_INTERVAL_S = 8 * 3600


def contract_keys(market: Mapping[str, Any]) -> dict[str, Any]:
    """The ``Instrument`` keys of a contract market ({} for spot): a linear perpetual (ccxt
    ``swap``) or dated future with its contract size and, where the venue's market lists them
    (Binance's ``requiredMarginPercent`` / ``maintMarginPercent``), its margins. An inverse or
    option contract is a ``ValueError``: not modelled (the market is skipped)."""
    if market.get("spot") is not False or not market.get("contract"):
        return {}
    symbol = market.get("symbol")
    if not market.get("linear") or market.get("option"):
        raise ValueError(f"market {symbol!r}: only linear perpetuals and futures are modelled")
    size = _dec(market.get("contractSize")) or Decimal(1)
    out: dict[str, Any] = {"contract_size": float(size)}
    if market.get("swap"):
        out |= {"kind": "perpetual", "funding_interval_s": DEFAULT_FUNDING_INTERVAL_S}
    elif market.get("future") and market.get("expiry"):
        out |= {"kind": "future", "expiry_ns": int(market["expiry"]) * 1_000_000}
    else:
        raise ValueError(f"market {symbol!r}: a contract that is neither a swap nor a future")
    info = market.get("info") if isinstance(market.get("info"), Mapping) else {}
    im, mm = _dec(info.get("requiredMarginPercent")), _dec(info.get("maintMarginPercent"))
    if im is not None and mm is not None and 0 <= mm <= im < 100:
        out |= {"initial_margin": float(im / 100), "maintenance_margin": float(mm / 100)}
    return out


def load_markets(
    exchange_id: str,
    settings: Mapping[str, Any],
    credentials: Any = None,
    timeout_s: float = 30.0,
) -> dict[str, VenueMarket]:
    """Every spot market the venue lists, by unified symbol (blocking: start-up only).

    With credentials, the account's fee tier (``fetch_trading_fees``) replaces the markets'
    published fees; a venue that will not answer that call keeps the published ones (logged)."""
    return asyncio.run(asyncio.wait_for(_load(exchange_id, settings, credentials), timeout_s))


async def _load(
    exchange_id: str, settings: Mapping[str, Any], credentials: Any
) -> dict[str, VenueMarket]:
    import ccxt.async_support as ccxt_async

    from engine.venues.ccxt_session import make_exchange

    ex = make_exchange(exchange_id, settings, credentials)
    try:
        markets = await ex.load_markets()
        fees: Mapping[str, Any] = {}
        if credentials is not None and ex.has.get("fetchTradingFees"):
            try:
                fees = await ex.fetch_trading_fees()
            except ccxt_async.BaseError as exc:
                log.warning(
                    "%s: fee tier not loaded (%s); the published fees apply", exchange_id, exc
                )
        out: dict[str, VenueMarket] = {}
        for sym, m in markets.items():
            if m.get("spot") is False:
                continue  # derivatives: not traded here
            try:
                out[sym] = parse_market(m, int(ex.precisionMode), fees.get(sym))
            except ValueError as exc:
                log.debug("%s: market skipped: %s", exchange_id, exc)
        return out
    finally:
        await ex.close()


# --- configured instruments vs the venue ----------------------------------------------------------
def _same(a: float, b: str) -> bool:
    return Decimal(str(a)) == Decimal(b)


def market_symbol(name: str) -> str:
    """The ccxt symbol of an instrument named ``name``: "BTC/USDT" for "BTC/USDT" and for
    "BTC/USDT@kraken" (the name of a symbol several venues list: ``@`` and the venue's name keep
    the engine's instrument names unique; the venue knows it by its own symbol)."""
    return name.partition("@")[0]


def venue_view(instruments: Iterable[Instrument]) -> InstrumentTable:
    """``instruments`` under their ccxt symbols, for the clients that talk to the venue (ids,
    ticks and lots unchanged: the engine's messages never carry a symbol)."""
    return InstrumentTable(
        [
            msgspec.structs.replace(i, symbol=market_symbol(i.symbol)) if "@" in i.symbol else i
            for i in instruments
        ]
    )


def check_instrument(
    venue: str, ins: Instrument, markets: Mapping[str, VenueMarket]
) -> VenueMarket:
    """The venue's market for ``ins``, or ``MarketMismatch`` saying what disagrees."""
    sym, at, named = ins.symbol.partition("@")
    if at and named != venue:
        raise MarketMismatch(venue, ins.symbol, f"its name says venue {named!r}, not {venue!r}")
    m = markets.get(sym)
    if m is None:
        alias = next((v.symbol for v in markets.values() if v.venue_symbol == ins.symbol), "")
        hint = f" (its symbol there is {alias!r})" if alias else ""
        raise MarketMismatch(venue, ins.symbol, f"the venue does not list it{hint}")
    if not _same(ins.tick_size, m.tick):
        raise MarketMismatch(
            venue, ins.symbol, f"tick_size {ins.tick_size:g} disagrees with the venue's {m.tick}"
        )
    if not _same(ins.lot_size, m.lot):
        raise MarketMismatch(
            venue, ins.symbol, f"lot_size {ins.lot_size:g} disagrees with the venue's {m.lot}"
        )
    if m.status != "trading":
        raise MarketMismatch(venue, ins.symbol, f"the venue's status is {m.status!r}, not trading")
    kind = str(m.instrument.get("kind", "spot"))
    if ins.kind != kind:
        raise MarketMismatch(
            venue, ins.symbol, f"kind {ins.kind!r} disagrees with the venue's {kind!r}"
        )
    size = m.instrument.get("contract_size")
    if size is not None and not _same(ins.contract_size, str(size)):
        raise MarketMismatch(
            venue,
            ins.symbol,
            f"contract_size {ins.contract_size:g} disagrees with the venue's {size}",
        )
    return m


def instrument_for(iid: int, venue: str, m: VenueMarket, name: str = "") -> Instrument:
    """An instrument created from a venue's market (a ``symbols`` entry), named ``name`` (default:
    the market's symbol)."""
    return Instrument(
        instrument_id=iid,
        symbol=name or m.symbol,
        venue=venue,
        asset_class=m.asset_class,
        sector=m.asset_class,
        tick_size=float(m.tick),
        lot_size=float(m.lot),
        currency=m.quote or "USD",
        **m.instrument,
    )


def rules_for(ins: Instrument, m: VenueMarket) -> MarketRules:
    """The venue's rules for ``ins`` in lots (a minimum rounds up: the venue's is a floor)."""
    lot = Decimal(m.lot)
    with localcontext() as ctx:
        ctx.prec = 80  # parse_market keeps every number within 1e-30..1e30: exact here
        min_lots = max(1, math.ceil(Decimal(m.min_qty) / lot))
        max_lots = int(Decimal(m.max_qty) // lot) if Decimal(m.max_qty) > 0 else 0
    min_lots = min(min_lots, _INT64_MAX)  # beyond int64: no order meets it (refused, not wrapped)
    max_lots = 0 if max_lots > _INT64_MAX else max_lots  # beyond int64: no order reaches it
    return MarketRules(
        instrument=ins,
        min_qty_lots=min_lots,
        max_qty_lots=max_lots,
        min_notional=float(m.min_notional),
        venue_symbol=m.venue_symbol,
        status=m.status,
        maker_fee_bps=m.maker_fee_bps,
        taker_fee_bps=m.taker_fee_bps,
    )


def resolve_instruments(
    venue: str,
    configured: Iterable[Instrument],
    symbols: Iterable[str],
    markets: Mapping[str, VenueMarket],
    first_id: int,
    names: Mapping[str, str] | None = None,
) -> list[MarketRules]:
    """The venue's instruments: each configured one checked (``MarketMismatch``), then each of
    ``symbols`` not configured created from its market with ids from ``first_id`` on, named
    ``names[symbol]`` where given (``market_symbol``)."""
    out = [rules_for(ins, check_instrument(venue, ins, markets)) for ins in configured]
    have = {market_symbol(r.instrument.symbol) for r in out}
    iid = first_id
    for sym in symbols:
        if sym in have:
            continue
        probe = Instrument(instrument_id=iid, symbol=sym, venue=venue)
        m = markets.get(sym)
        if m is None:
            check_instrument(venue, probe, markets)  # raises: not listed (with a hint)
            raise AssertionError("unreachable")
        ins = instrument_for(iid, venue, m, (names or {}).get(sym, ""))
        check_instrument(venue, ins, markets)  # its status
        out.append(rules_for(ins, m))
        have.add(sym)
        iid += 1
    return out


# --- decimals for the wire ------------------------------------------------------------------------
def venue_price(ins: Instrument, px_ticks: int) -> str:
    """``px_ticks`` as the exact decimal the venue takes ("64123.45")."""
    return _plain(Decimal(px_ticks) * Decimal(str(ins.tick_size)))


def venue_amount(ins: Instrument, qty_lots: int) -> str:
    """``qty_lots`` as the exact decimal the venue takes ("0.00150")."""
    return _plain(Decimal(qty_lots) * Decimal(str(ins.lot_size)))


# --- refusing what the venue would refuse ---------------------------------------------------------
#: how a refusal by ``OrderRulesGate`` starts: "venue rules: <reason key>: <text>"
RULES_PREFIX = "venue rules: "


class OrderRulesGate:
    """Wraps an execution client: a new order or a replace the venue's rules would refuse is
    refused here (``OrderRejected`` / ``OrderReplaceRejected`` INVALID, the venue's reason after
    ``RULES_PREFIX`` and the reason key) and counted in ``rejected`` by reason key; everything else is the wrapped client's. A market order's
    notional is checked at the last mid seen (the venue checks it at its own price)."""

    def __init__(self, inner: Any, rules: Iterable[InstrumentRules]) -> None:
        self.inner = inner
        self.name = inner.name
        self.rules: dict[int, InstrumentRules] = {r.instrument.instrument_id: r for r in rules}
        self.rejected: dict[str, int] = {}
        self._mid: dict[int, int] = {}

    def why(self, iid: int, qty_lots: int, px_ticks: int) -> tuple[str, str]:
        """(reason key, text) the venue would refuse this order for; ("", "") if none."""
        r = self.rules.get(iid)
        if r is None:
            return "", ""  # not this gate's instrument: the venue itself decides
        if isinstance(r, MarketRules) and r.status != "trading":
            return "status", f"{r.instrument.symbol} is not trading at the venue ({r.status})"
        if px_ticks < 0:
            return "price", f"price {px_ticks} ticks is not > 0"
        if qty_lots < r.min_qty_lots:
            return "min_qty", f"qty {qty_lots} lots is below the venue minimum {r.min_qty_lots}"
        if r.max_qty_lots and qty_lots > r.max_qty_lots:
            return "max_qty", f"qty {qty_lots} lots is above the venue maximum {r.max_qty_lots}"
        ref = px_ticks or self._mid.get(iid, 0)
        if ref and r.min_notional > 0:
            notional = r.instrument.notional(ref, qty_lots)
            if notional < r.min_notional - 1e-12:
                return "min_notional", (
                    f"notional {notional:g} is below the venue minimum {r.min_notional:g}"
                )
        return "", ""

    def _refuse(self, key: str) -> None:
        self.rejected[key] = self.rejected.get(key, 0) + 1

    def submit(self, order: NewOrder, now_ns: int) -> list[Any]:
        key, text = self.why(order.instrument_id, order.qty, order.px)
        if key:
            self._refuse(key)
            reason = f"{RULES_PREFIX}{key}: {text}"
            return [OrderRejected.for_order(order, reason, now_ns, now_ns)]
        return self.inner.submit(order, now_ns)

    def submit_list(self, orders: list[NewOrder], now_ns: int) -> list[Any]:
        """A native order list (``supports_contingency``): every leg refused when one would
        be (a list is sent whole or not at all)."""
        for o in orders:
            key, text = self.why(o.instrument_id, o.qty, o.px)
            if key:
                self._refuse(key)
                reason = f"{RULES_PREFIX}{key}: order {o.client_order_id} of the list: {text}"
                return [OrderRejected.for_order(x, reason, now_ns, now_ns) for x in orders]
        return self.inner.submit_list(orders, now_ns)

    def replace(self, replace: ReplaceOrder, now_ns: int) -> list[Any]:
        key, text = self.why(replace.instrument_id, replace.new_qty, replace.new_px)
        if key:
            self._refuse(key)
            invalid = OrderReplaceRejected.REASONS.INVALID  # type: ignore[attr-defined]
            ev = OrderReplaceRejected.for_request(
                replace, int(invalid), f"{RULES_PREFIX}{key}: {text}", now_ns, now_ns
            )
            return [ev]
        return self.inner.replace(replace, now_ns)

    def on_market_data(self, msg: object, now_ns: int) -> list[Any]:
        if type(msg) is Quote and msg.bid_px and msg.ask_px:  # type: ignore[attr-defined]
            self._mid[msg.instrument_id] = (msg.bid_px + msg.ask_px) // 2  # type: ignore[attr-defined]
        return self.inner.on_market_data(msg, now_ns)

    def __getattr__(self, attr: str) -> Any:  # cancel, poll, queries, reports, close, state ...
        return getattr(self.inner, attr)


def rules_table(rules: Iterable[InstrumentRules]) -> InstrumentTable:
    return InstrumentTable([r.instrument for r in rules])
