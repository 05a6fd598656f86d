"""What a venue says an API key may do: the probe behind refusing a key that can withdraw.

Why ask the venue: a trading engine never needs to move funds off the exchange, so a key that
can is a loss waiting for a leak; what the key may do is the venue's setting, not ours, and it
can change after the key was stored. One call per venue, at a live start (ops/venue_run.py):

- Binance.US: ``GET /sapi/v1/account/apiRestrictions`` (``enableWithdrawals``,
  ``enableSpotAndMarginTrading``); Binance USD-M futures: the same call (``enableFutures``).
- Coinbase Advanced: ``GET /api/v3/brokerage/key_permissions`` (``can_transfer``,
  ``can_trade``).
- Kraken Futures reports no key permissions at all: a key that reads the account (``GET
  /derivatives/api/v3/accounts``) is taken as able to withdraw, so live trading needs
  ``allow_withdraw`` on its keystore entry, said out loud; a key that cannot read it is refused.
- Kraken has no permission query: ``POST /0/private/WithdrawMethods`` needs the key's
  withdraw permission (and Query Funds, which every engine key has: balances need it), so an
  answer means it can withdraw and ``EGeneral:Permission denied`` means it cannot; it moves
  nothing.

Anything else (an error, an answer without the field) is "cannot tell", which the caller
treats as a refusal: fail closed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["KeyAbilities", "probe_key"]


@dataclass(frozen=True)
class KeyAbilities:
    """The venue's answer: ``None`` where it does not say."""

    can_withdraw: bool | None
    can_trade: bool | None
    how: str  # the call that said so, for messages


async def _ask(exchange_id: str, ex: Any) -> KeyAbilities:
    import ccxt.async_support as ccxt_async

    if exchange_id == "binanceus":
        r = await ex.sapiGetAccountApiRestrictions()
        return KeyAbilities(
            _flag(r, "enableWithdrawals"),
            _flag(r, "enableSpotAndMarginTrading"),
            "GET /sapi/v1/account/apiRestrictions",
        )
    if exchange_id == "binanceusdm":  # the same account API answers for a futures key
        r = await ex.sapiGetAccountApiRestrictions()
        return KeyAbilities(
            _flag(r, "enableWithdrawals"),
            _flag(r, "enableFutures"),
            "GET /sapi/v1/account/apiRestrictions",
        )
    if exchange_id == "coinbase":
        r = await ex.v3PrivateGetBrokerageKeyPermissions()
        how = "GET /api/v3/brokerage/key_permissions"
        return KeyAbilities(_flag(r, "can_transfer"), _flag(r, "can_trade"), how)
    if exchange_id == "kraken":
        how = "POST /0/private/WithdrawMethods"
        try:
            await ex.privatePostWithdrawMethods()
        except ccxt_async.PermissionDenied:
            return KeyAbilities(False, None, how)
        return KeyAbilities(True, None, how)
    if exchange_id == "krakenfutures":
        await ex.fetch_balance()  # a key that cannot read the account raises: refused
        how = (
            "Kraken Futures reports no key permissions (GET /derivatives/api/v3/accounts answered)"
        )
        return KeyAbilities(True, None, how)
    return KeyAbilities(None, None, f"{exchange_id}: no permission probe")


def _flag(r: Any, name: str) -> bool | None:
    v = r.get(name) if isinstance(r, Mapping) else None
    return v if isinstance(v, bool) else None


async def _probe(exchange_id: str, settings: Mapping[str, Any], credentials: Any) -> KeyAbilities:
    from engine.venues.ccxt_session import make_exchange

    ex = make_exchange(exchange_id, settings, credentials)
    try:
        return await _ask(exchange_id, ex)
    finally:
        await ex.close()


def probe_key(
    exchange_id: str, settings: Mapping[str, Any], credentials: Any, timeout_s: float = 30.0
) -> KeyAbilities:
    """Ask the venue what ``credentials`` may do (blocking: start-up only). A failed call
    raises (ccxt's error or a timeout): the caller refuses the start."""
    return asyncio.run(asyncio.wait_for(_probe(exchange_id, settings, credentials), timeout_s))
