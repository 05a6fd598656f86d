"""A perpetual venue's contract markets: what ``parse_market`` reads, refined by what only the
venue's other endpoints say.

Why a loader of its own: a spot market is all in ccxt's market structure, a contract is not.
Its funding interval is 8 h unless the venue lists another (Binance ``fundingInfo`` names
the symbols whose interval was changed; Kraken's funding rates say "1h"), and its margins
depend on the account: maintenance is the first notional bracket's ``maintMarginRatio``
(``fetch_leverage_tiers``, signed: with keys only; Kraken's are public: ``PUBLIC_TIERS``),
initial is ``1 / leverage`` where the venue's ``leverage`` key sets one (the client sets it at
the venue at start), else the bracket's highest leverage. Without keys the market's own
published percents stay (``contract_keys``). The current funding rate (``premiumIndex``) becomes
the instrument's ``funding_rate``: the rate a paper run's simulated venue charges. Only linear perpetuals are kept: the venue's spot,
inverse and option markets are not this kind's (blocking: the pre-flight, never a hot loop).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from engine.venues.ccxt_markets import VenueMarket, parse_market

__all__ = ["load_perp_markets", "refine"]

log = logging.getLogger("gekko.venues")

#: venues whose margin brackets are public (Kraken Futures: the instruments' ``marginLevels``)
PUBLIC_TIERS = frozenset({"krakenfutures"})

#: ccxt options every perp session gets: no spot wallet endpoints on a futures-only key
PERP_CCXT_OPTIONS: dict[str, Any] = {"fetchCurrencies": False}


def perp_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """``settings`` with ``PERP_CCXT_OPTIONS`` under the venue's own ``ccxt_options``."""
    return dict(settings) | {
        "ccxt_options": PERP_CCXT_OPTIONS | dict(settings.get("ccxt_options") or {})
    }


def load_perp_markets(
    exchange_id: str, settings: Mapping[str, Any], credentials: Any = None, timeout_s: float = 30.0
) -> dict[str, VenueMarket]:
    """Every linear perpetual the venue lists, by unified symbol ("BTC/USDT:USDT")."""
    return asyncio.run(
        asyncio.wait_for(_load(exchange_id, perp_settings(settings), credentials), timeout_s)
    )


async def _load(
    exchange_id: str, settings: Mapping[str, Any], credentials: Any
) -> dict[str, VenueMarket]:
    import ccxt.async_support as ccxt_async

    from engine.venues.ccxt_session import make_exchange

    ex = make_exchange(exchange_id, settings, credentials)
    try:
        markets = await ex.load_markets()
        intervals: dict[str, int] = {}
        tiers: Mapping[str, Any] = {}
        if ex.has.get("fetchFundingIntervals"):
            try:
                got = await ex.fetch_funding_intervals()
                intervals = {s: _interval_s(v) for s, v in got.items() if _interval_s(v)}
            except ccxt_async.BaseError as exc:
                log.warning("%s: funding intervals not loaded (%s): 8 h", exchange_id, exc)
        rates: Mapping[str, Any] = {}
        if ex.has.get("fetchFundingRates"):
            try:
                rates = await ex.fetch_funding_rates()
            except ccxt_async.BaseError as exc:
                log.warning("%s: funding rates not loaded (%s)", exchange_id, exc)
        if ex.has.get("fetchLeverageTiers") and (
            credentials is not None or exchange_id in PUBLIC_TIERS
        ):
            try:
                tiers = await ex.fetch_leverage_tiers()
            except ccxt_async.BaseError as exc:
                log.warning("%s: leverage brackets not loaded (%s)", exchange_id, exc)
        out: dict[str, VenueMarket] = {}
        for sym, m in markets.items():
            if not (m.get("swap") and m.get("linear")):
                continue
            try:
                vm = parse_market(m, int(ex.precisionMode))
            except ValueError as exc:
                log.debug("%s: market skipped: %s", exchange_id, exc)
                continue
            rate = (rates.get(sym) or {}).get("fundingRate")
            interval = intervals.get(sym) or _interval_s(rates.get(sym)) or None
            out[sym] = refine(vm, interval, tiers.get(sym), settings, rate)  # may refuse
        return out
    finally:
        await ex.close()


def _interval_s(entry: Any) -> int:
    """ccxt's funding interval ("8h", "4h") in seconds; 0 where it is none."""
    raw = str((entry or {}).get("interval") or "") if isinstance(entry, Mapping) else ""
    if raw.endswith("h") and raw[:-1].isdigit():
        return int(raw[:-1]) * 3600
    return 0


def refine(
    m: VenueMarket,
    interval_s: int | None,
    tiers: Any,
    settings: Mapping[str, Any],
    funding_rate: Any = None,
) -> VenueMarket:
    """``m`` with its funding interval, the current funding rate (what a paper run's simulated
    venue charges at each funding time) and the account's margins (module docstring)."""
    keys = dict(m.instrument)
    if funding_rate is not None:
        keys["funding_rate"] = float(funding_rate)
    if interval_s:
        keys["funding_interval_s"] = int(interval_s)
    first = tiers[0] if isinstance(tiers, list) and tiers else None
    if isinstance(first, Mapping) and first.get("maintenanceMarginRate") is not None:
        keys["maintenance_margin"] = float(first["maintenanceMarginRate"])
        if first.get("maxLeverage"):
            keys["initial_margin"] = 1.0 / float(first["maxLeverage"])
    leverage = float(settings.get("leverage") or 0)
    top = float(first.get("maxLeverage") or 0) if isinstance(first, Mapping) else 0.0
    if leverage != int(leverage):
        raise ValueError(
            f"market {m.symbol!r}: leverage {leverage:g} — the venue sets whole numbers"
        )
    if leverage > 0 and top and leverage > top:
        raise ValueError(f"market {m.symbol!r}: leverage {leverage:g} is above the venue's {top:g}")
    if leverage > 0:
        keys["initial_margin"] = 1.0 / leverage
    im, mm = keys.get("initial_margin"), keys.get("maintenance_margin")
    if im is not None and mm is not None and mm > im:
        raise ValueError(
            f"market {m.symbol!r}: leverage {leverage:g} needs an initial margin "
            f"{im:g} below the venue's maintenance margin {mm:g}"
        )
    return VenueMarket(**{**_fields(m), "instrument": keys})


def _fields(m: VenueMarket) -> dict[str, Any]:
    return {f: getattr(m, f) for f in m.__struct_fields__}
