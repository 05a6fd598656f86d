"""One real venue's ccxt session: the exchange object, where it points, and the thread it lives on.

Why a thread of its own: ccxt (REST) and ccxt.pro (websockets) are asyncio libraries, and every
engine process runs a synchronous hot loop that must never wait on a network. Each venue client
therefore owns an ``AsyncBridge`` — one event loop on one daemon thread — submits coroutines to
it and collects what they produced later, from thread-safe queues, in its ``poll``.

Why ``rebase_urls``: tests (and a venue's own testnet) point ccxt somewhere else by swapping the
scheme and host of every address ccxt knows for that exchange, keeping the paths. A local server
that serves the exchange's real paths on one port then receives exactly what the exchange would.
The exchange's real hosts stay inside ccxt; nothing here names one.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import re
import threading
from collections.abc import Callable, Coroutine, Mapping
from typing import Any
from urllib.parse import urlsplit

__all__ = ["AsyncBridge", "Credentials", "make_exchange", "rebase_urls"]

_HTTP = re.compile(r"^https?://[^/]+")
_WS = re.compile(r"^wss?://[^/]+")


class Credentials:
    """An API key set. Kept out of reprs, logs and every store: the ops side also registers the
    values with ``ops.secrets`` so any text that would carry them is masked."""

    __slots__ = ("api_key", "password", "secret", "uid")

    def __init__(self, api_key: str, secret: str, password: str = "", uid: str = "") -> None:
        self.api_key, self.secret, self.password, self.uid = api_key, secret, password, uid

    def __repr__(self) -> str:
        return "Credentials(***)"

    __str__ = __repr__

    def values(self) -> list[str]:
        """Every secret value, for masking."""
        return [v for v in (self.api_key, self.secret, self.password, self.uid) if v]


def rebase_urls(urls: Any, rest_url: str = "", ws_url: str = "") -> Any:
    """A copy of ccxt's ``urls["api"]`` tree with every ``http(s)://host`` swapped for
    ``rest_url`` and every ``ws(s)://host[:port]`` for ``ws_url`` (an empty one: left as is)."""
    if isinstance(urls, str):
        if rest_url and _HTTP.match(urls):
            return _HTTP.sub(rest_url.rstrip("/"), urls, count=1)
        if ws_url and _WS.match(urls):
            return _WS.sub(ws_url.rstrip("/"), urls, count=1)
        return urls
    if isinstance(urls, Mapping):
        return {k: rebase_urls(v, rest_url, ws_url) for k, v in urls.items()}
    if isinstance(urls, list):
        return [rebase_urls(v, rest_url, ws_url) for v in urls]
    return urls


def make_exchange(
    exchange_id: str, settings: Mapping[str, Any], credentials: Credentials | None = None
) -> Any:
    """A ``ccxt.pro`` exchange (async REST + websockets) for ``exchange_id``, configured from a
    venue's settings: ``rest_url`` / ``ws_url`` (rebased addresses), ``timeout_ms``,
    ``recv_window_ms`` and ``ccxt_options`` (merged into ccxt's ``options``). ccxt's own rate
    limiter is off: the venue's weight budget (``engine.venues.ccxt_guard``) decides instead.
    Call it on the bridge's loop thread (``AsyncBridge.call(make_exchange_async(...))``) or
    before the loop runs: aiohttp sessions bind to the loop that first uses them."""
    import ccxt.pro as ccxtpro

    try:
        cls = getattr(ccxtpro, exchange_id)
    except AttributeError:
        raise ValueError(f"ccxt has no websocket exchange {exchange_id!r}") from None
    config: dict[str, Any] = {
        "enableRateLimit": False,
        "timeout": int(settings.get("timeout_ms", 10_000)),
        "verify": True,  # TLS: certificates and host names checked (docs/security.md "TLS")
    }
    if credentials is not None:
        config |= {"apiKey": credentials.api_key, "secret": credentials.secret}
        if credentials.password:
            config["password"] = credentials.password
        if credentials.uid:
            config["uid"] = credentials.uid
    exchange = cls(config)
    fix = _ADDRESS_FIXES.get(exchange_id)
    if fix is not None:
        fix(exchange)
    rest_url, ws_url = settings.get("rest_url", ""), settings.get("ws_url", "")
    if rest_url or ws_url:
        exchange.urls["api"] = rebase_urls(exchange.urls["api"], rest_url, ws_url)
    if "recv_window_ms" in settings:
        exchange.options["recvWindow"] = int(settings["recv_window_ms"])
    options = settings.get("ccxt_options") or {}
    exchange.options.update(dict(options))
    if exchange.verify is not True or not exchange.validateServerSsl:
        raise ValueError(f"{exchange_id}: TLS verification must stay on")  # fail closed
    return exchange


def _binanceus_user_stream(exchange: Any) -> None:
    """ccxt 4.5.90's ``binanceus`` inherits Binance.com's WebSocket-API address, where ccxt
    subscribes spot user streams (orders, fills): a live Binance.US run would sign in at the
    wrong exchange. Point it at the WebSocket API of the domain its REST API is on."""
    host = urlsplit(exchange.urls["api"]["public"]).hostname or ""
    domain = host.split(".", 1)[1] if "." in host else host
    ws = exchange.urls["api"]["ws"]
    ws["ws-api"] = dict(ws.get("ws-api") or {}) | {"spot": f"wss://ws-api.{domain}:443/ws-api/v3"}


#: per exchange id, what ccxt gets wrong about where that exchange is
_ADDRESS_FIXES: dict[str, Callable[[Any], None]] = {"binanceus": _binanceus_user_stream}


class AsyncBridge:
    """One asyncio loop on one daemon thread. The engine side never awaits: it ``submit``s a
    coroutine and reads the resulting ``concurrent.futures.Future`` (or the queues the coroutine
    fills) later. ``call`` blocks: for start-up and tests only, never on a hot loop."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=f"venue-{name}", daemon=True)
        self._started = False

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()
        # stopped: let what was cancelled finish its cancellation, then close
        pending = asyncio.all_tasks(self.loop)
        for task in pending:
            task.cancel()
        if pending:
            self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()

    def start(self) -> AsyncBridge:
        if not self._started:
            self._started = True
            self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def submit(self, coro: Coroutine[Any, Any, Any]) -> concurrent.futures.Future[Any]:
        """Run ``coro`` on the bridge's loop; returns at once."""
        if not self._started:
            self.start()
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def call(self, coro: Coroutine[Any, Any, Any], timeout_s: float = 30.0) -> Any:
        """Run ``coro`` and wait for its result (start-up and tests only)."""
        return self.submit(coro).result(timeout_s)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Cancel what runs, stop the loop, join the thread (idempotent)."""
        if not self._started or not self._thread.is_alive():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout_s)
