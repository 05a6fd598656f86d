"""Book integrity checks that ccxt 4.5.90 does not make, installed on a ccxt.pro exchange object.

Why: a lost book update must be seen, or our book silently diverges from the venue's. ccxt
checks Binance's update ids itself (``ChecksumError`` on a break), but

- Kraken: its websocket book carries a CRC32 of the top 10 levels of each side; ccxt's check is
  switched off (and would fail on its own float prices). We compute it from the book ccxt
  built, with the market's price and quantity decimals as Kraken writes them, BEFORE ccxt hands
  the book out; a mismatch drops the book exactly as ccxt's own check would (subscription and
  book deleted, ``ChecksumError`` to the watcher, which resubscribes for a fresh snapshot);
- Coinbase Advanced: every message on a connection carries ``sequence_num``, counted across all
  its channels, and ccxt ignores it. A skipped number is a lost message of an unknown channel,
  so the connection is no longer trustworthy: nothing more from it is applied and
  ``on_break(reason)`` asks the session to reconnect (every book is resynced).

``install(exchange, on_break)`` wraps the exchange's handlers on the instance (before it opens
a connection: ccxt binds ``handle_message`` when it creates a client). Other exchanges: nothing.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from decimal import Decimal
from typing import Any

__all__ = ["install", "kraken_checksum"]


def install(exchange: Any, on_break: Callable[[str], None]) -> None:
    if exchange.id == "kraken":
        _install_kraken(exchange)
    elif exchange.id == "coinbase":
        _install_coinbase(exchange, on_break)


# --- Kraken: CRC32 of the top of the book ---------------------------------------------------------
def _decimals(step: Any) -> int:
    """Decimal places of a ccxt precision given as a step (0.1 → 1, 1e-08 → 8)."""
    if step is None:
        return 8
    exp = Decimal(str(step)).normalize().as_tuple().exponent
    return max(0, -int(exp))


def _digits(value: float, places: int) -> str:
    return f"{value:.{places}f}".replace(".", "").lstrip("0")


def kraken_checksum(book: Any, px_places: int, qty_places: int) -> int:
    """Kraken's CRC32 over the top 10 asks (low to high) then the top 10 bids (high to low):
    price then quantity, each written with the pair's decimals, '.' and leading zeros removed."""
    parts = [
        _digits(px, px_places) + _digits(qty, qty_places)
        for side in (book["asks"], book["bids"])
        for px, qty, *_ in side[:10]
    ]
    return zlib.crc32("".join(parts).encode()) & 0xFFFFFFFF


def _install_kraken(ex: Any) -> None:
    import ccxt

    handle = ex.handle_order_book

    def checked(client: Any, message: dict[str, Any]) -> None:
        data = message.get("data") if isinstance(message, dict) else None
        first = data[0] if isinstance(data, list) and data and isinstance(data[0], dict) else {}
        symbol, expected = first.get("symbol"), first.get("checksum")
        symbol = symbol if isinstance(symbol, str) else None
        held: list[tuple[Any, Any]] = []
        resolve = client.resolve
        client.resolve = lambda result, h=None: held.append((result, h))  # hold until checked
        try:
            handle(client, message)
        finally:
            del client.resolve
        book = ex.orderbooks.get(symbol) if symbol else None
        if expected is not None and book is not None:
            market = ex.markets.get(symbol) or {}
            prec = market.get("precision") or {}
            got = kraken_checksum(book, _decimals(prec.get("price")), _decimals(prec.get("amount")))
            if got != _int_or_none(expected):  # a checksum that is no number fails it too
                key = ex.get_message_hash("orderbook", None, symbol)
                client.subscriptions.pop(key, None)
                ex.orderbooks.pop(symbol, None)
                err = f"{ex.id} {symbol} book checksum {got} != {expected}: an update was lost"
                client.reject(ccxt.ChecksumError(err), key)
                return
        for result, h in held:
            resolve(result, h)

    ex.handle_order_book = checked


# --- Coinbase: one sequence per connection --------------------------------------------------------
def _install_coinbase(ex: Any, on_break: Callable[[str], None]) -> None:
    handle = ex.handle_message

    def checked(client: Any, message: Any) -> Any:
        state = client.__dict__.setdefault("_gekko_seq", [None, False])  # [last seq, broken]
        if state[1]:
            return None  # a connection that lost a message: nothing more from it counts
        seq = message.get("sequence_num") if isinstance(message, dict) else None
        if seq is not None:
            seq, prev = _int_or_none(seq), state[0]
            if seq is None:  # a garbled sequence number: the count can no longer be trusted
                state[1] = True
                on_break(f"{ex.id} sequence_num {message.get('sequence_num')!r:.40} is no number")
                return None
            if prev is not None and seq > prev + 1:
                state[1] = True
                on_break(f"{ex.id} sequence_num {prev} -> {seq}: {seq - prev - 1} lost")
                return None
            if prev is None or seq > prev:
                state[0] = seq
        return handle(client, message)

    ex.handle_message = checked


def _int_or_none(v: Any) -> int | None:
    """A venue's integer field as an int; None where it is none (text, NaN, inf, a bool)."""
    if isinstance(v, bool):
        return None
    try:
        return int(v)
    except (TypeError, ValueError, OverflowError):
        return None
