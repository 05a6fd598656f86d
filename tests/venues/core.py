"""The exchange-neutral core of the local exchange servers.

Every local server (Binance.US, Coinbase Advanced, Kraken) needs the same machinery under its
wire format: matching and balances (:mod:`tests.venues.matching`, re-exported here), a fan-out
of order/fill changes to the connected user-stream websockets with fault hooks, a registry of
faults a test arms (in-process or by ``POST /__control/fault`` from another process), and an
aiohttp app run on 127.0.0.1 in a daemon thread. Nothing here knows an exchange.

Threading: the matcher, the events and every websocket live on the server's loop thread.
Tests on another thread go through ``ExchangeServer.call(fn, ...)`` (or the ``/__control``
routes); ``Faults`` alone is thread-safe by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from aiohttp import WSMsgType, web

from tests.venues.matching import (
    D0,
    MARKET,
    Account,
    Book,
    Fill,
    Matcher,
    Order,
    Reject,
    SymbolSpec,
    dec,
    fmt,
    now_ms,
    round_down,
)

__all__ = [
    "D0",
    "MARKET",
    "Account",
    "Book",
    "ExchangeServer",
    "Faults",
    "Fill",
    "LocalServer",
    "Matcher",
    "Order",
    "Reject",
    "Sock",
    "SymbolSpec",
    "UserEvents",
    "WsHub",
    "dec",
    "fmt",
    "now_ms",
    "round_down",
]

# ---------------------------------------------------------------------------------------------
# faults

FAULT_NAMES = (
    "disconnect",  # action: drop the TCP connection of the ``stream`` sockets (close code 1006)
    "stall",  # stop sending on ``stream`` sockets (pongs too), keep them open
    "gap",  # skip one book sequence number / update-id range
    "rate_limit",  # 429 + Retry-After (``retry_after`` s) for the next ``times`` requests
    "ban",  # 418 + Retry-After: every request refused for ``retry_after`` s
    "timestamp",  # the next ``times`` signed requests fail with the venue's time/nonce error
    "delay_ack",  # answer the next ``times`` order entries after ``delay_s`` s
    "dup_events",  # each user event sent twice (``times`` events, or until cleared)
    "reorder_events",  # user events delivered out of order (pairs swapped)
    "partial_fill",  # the next taking order fills in ``parts`` trades
    "fill_while_down",  # action + state: drop user sockets; events withheld until cleared
)
# faults that apply once unless ``times`` says otherwise; the others last until cleared/expired
_ONE_SHOT = {"gap", "rate_limit", "timestamp", "delay_ack", "partial_fill"}
_ACTIONS = {"disconnect"}  # fire their listeners and are not kept


@dataclass
class _Armed:
    args: dict[str, Any]
    times: int | None  # uses left; None = unlimited
    until: float | None  # time.monotonic() deadline; None = until cleared


class Faults:
    """Armed faults by name. ``arm(name, times=, seconds=, **args)``; servers ``take`` or peek
    (``active``) them where they apply. ``fired[name]`` counts each time one took effect."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._armed: dict[str, _Armed] = {}
        self.fired: Counter[str] = Counter()
        self._listeners: list[Callable[[str, dict[str, Any]], None]] = []

    def on_arm(self, listener: Callable[[str, dict[str, Any]], None]) -> None:
        """``listener(name, args)`` runs (on the arming thread) each time a fault is armed."""
        self._listeners.append(listener)

    def arm(
        self, name: str, *, times: int | None = None, seconds: float | None = None, **args: Any
    ) -> None:
        if name not in FAULT_NAMES:
            raise ValueError(f"unknown fault {name!r} (known: {', '.join(FAULT_NAMES)})")
        if name == "ban" and seconds is None:
            seconds = float(args.setdefault("retry_after", 5))
        if times is None and name in _ONE_SHOT:
            times = 1
        with self._lock:
            if name in _ACTIONS:
                self.fired[name] += 1
            else:
                until = None if seconds is None else time.monotonic() + float(seconds)
                self._armed[name] = _Armed(dict(args), times, until)
        for listener in list(self._listeners):
            listener(name, dict(args))

    def clear(self, name: str | None = None) -> None:
        with self._lock:
            if name is None:
                self._armed.clear()
            else:
                self._armed.pop(name, None)

    def _live(self, name: str) -> _Armed | None:
        armed = self._armed.get(name)
        if armed is None:
            return None
        if (armed.until is not None and time.monotonic() >= armed.until) or armed.times == 0:
            del self._armed[name]
            return None
        return armed

    def active(self, name: str) -> dict[str, Any] | None:
        """The args of ``name`` if armed (not consumed)."""
        with self._lock:
            armed = self._live(name)
            return None if armed is None else dict(armed.args)

    def remaining_s(self, name: str) -> float:
        """Seconds until a timed fault expires (0 when not armed or untimed)."""
        with self._lock:
            armed = self._live(name)
            if armed is None or armed.until is None:
                return 0.0
            return max(armed.until - time.monotonic(), 0.0)

    def take(self, name: str) -> dict[str, Any] | None:
        """Consume one use of ``name``; its args, or None when not armed."""
        with self._lock:
            armed = self._live(name)
            if armed is None:
                return None
            if armed.times is not None:
                armed.times -= 1
            self.fired[name] += 1
            return dict(armed.args)


# ---------------------------------------------------------------------------------------------
# websockets


class Sock:
    """One server-side websocket: an ordered send queue, its kind ("market" | "user" | ...),
    the account it serves (user streams) and free-form subscription state."""

    def __init__(
        self, hub: WsHub, request: web.Request, ws: web.WebSocketResponse, kind: str
    ) -> None:
        self.hub = hub
        self.request = request
        self.ws = ws
        self.kind = kind
        self.account: str | None = None
        self.subs: set[str] = set()
        self.state: dict[str, Any] = {}
        self.wrap: Callable[[str], str] | None = None  # user events: the venue's envelope
        self.sent = 0
        self._queue: asyncio.Queue[str | bytes | None] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()
        self._writer = self._loop.create_task(self._write())
        self.closed = False

    def send(self, payload: str | bytes) -> None:
        """Queue ``payload`` in order; safe from another thread (then it hops to the loop)."""
        if self.closed:
            return
        try:
            on_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            self._queue.put_nowait(payload)
        else:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, payload)

    def stalled(self) -> bool:
        args = self.hub.faults.active("stall")
        return args is not None and args.get("stream", "all") in ("all", self.kind)

    async def _write(self) -> None:
        with contextlib.suppress(Exception):
            while True:
                payload = await self._queue.get()
                if payload is None or self.ws.closed:
                    return
                if self.stalled():
                    continue
                if isinstance(payload, bytes):
                    await self.ws.send_bytes(payload)
                else:
                    await self.ws.send_str(payload)
                self.sent += 1

    def abort(self) -> None:
        """Drop the TCP connection without a close frame: the client sees code 1006."""
        self.closed = True
        transport = self.request.transport
        if transport is not None:
            transport.abort()
        self._writer.cancel()

    async def close(self) -> None:
        self.closed = True
        self._writer.cancel()
        with contextlib.suppress(Exception):
            await self.ws.close()


class WsHub:
    """The open websockets of one server; serves each one's reader loop."""

    def __init__(self, faults: Faults) -> None:
        self.faults = faults
        self.socks: set[Sock] = set()
        self.accepted: Counter[str] = Counter()

    async def open(self, request: web.Request, kind: str) -> Sock:
        ws = web.WebSocketResponse(autoping=False, max_msg_size=0)
        await ws.prepare(request)
        sock = Sock(self, request, ws, kind)
        self.socks.add(sock)
        self.accepted[kind] += 1
        return sock

    async def serve(
        self, sock: Sock, on_text: Callable[[Sock, str], Awaitable[None]]
    ) -> web.WebSocketResponse:
        """Read until the peer goes; answers pings (unless stalled) and hands text on."""
        try:
            async for msg in sock.ws:
                if msg.type == WSMsgType.TEXT:
                    await on_text(sock, msg.data)
                elif msg.type == WSMsgType.PING:
                    if not sock.stalled():
                        await sock.ws.pong(msg.data)
                elif msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                    break
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.socks.discard(sock)
            sock.closed = True
            sock._writer.cancel()
        return sock.ws

    def select(self, kind: str | None = None, account: str | None = None) -> list[Sock]:
        return [
            s
            for s in list(self.socks)
            if not s.closed
            and (kind in (None, "all") or s.kind == kind)
            and (account is None or s.account == account)
        ]

    def abort(self, kind: str | None = None) -> int:
        socks = self.select(kind)
        for sock in socks:
            self.socks.discard(sock)
            sock.abort()
        return len(socks)

    def broadcast(self, kind: str, payload: str, sub: str | None = None) -> None:
        for sock in self.select(kind):
            if sub is None or sub in sock.subs:
                sock.send(payload)


class UserEvents:
    """Formatted user events → the account's user-stream sockets, through the fault hooks:
    ``fill_while_down`` withholds (the REST view is then the only truth), ``dup_events`` sends
    twice, ``reorder_events`` swaps an event with the next one (held at most ``hold_s``)."""

    def __init__(self, hub: WsHub, faults: Faults, hold_s: float = 0.3) -> None:
        self.hub = hub
        self.faults = faults
        self.hold_s = hold_s
        self.withheld = 0
        self.published = 0
        self._held: dict[str, str] = {}

    def publish(self, account: str, payload: str, reorderable: bool = True) -> None:
        """Send ``payload`` to the account's user sockets. Only ``reorderable`` events (order
        events, not balance snapshots) take part in ``reorder_events``."""
        self.published += 1
        if self.faults.active("fill_while_down") is not None:
            self.withheld += 1
            return
        held = self._held.get(account)
        if held is not None and reorderable:
            del self._held[account]
            self._send(account, payload)
            self._send(account, held)
            return
        if reorderable and held is None and self.faults.take("reorder_events") is not None:
            self._held[account] = payload
            asyncio.get_running_loop().call_later(self.hold_s, self._flush, account, payload)
            return
        self._send(account, payload)
        if self.faults.take("dup_events") is not None:
            self._send(account, payload)

    def _flush(self, account: str, payload: str) -> None:
        if self._held.get(account) is payload:
            del self._held[account]
            self._send(account, payload)

    def _send(self, account: str, payload: str) -> None:
        for sock in self.hub.select("user", account):
            sock.send(payload if sock.wrap is None else sock.wrap(payload))


# ---------------------------------------------------------------------------------------------
# the server thread


async def _cancel_other_tasks() -> None:
    """Cancel what still runs on the server's loop (replays, writers) before it closes."""
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


class LocalServer:
    """Runs an aiohttp app on 127.0.0.1 in a daemon thread (port 0 → a free port)."""

    def __init__(self, app: web.Application, port: int = 0, host: str = "127.0.0.1") -> None:
        self.app = app
        self.host = host
        self.port = port
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    @property
    def rest_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    def start(self) -> LocalServer:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="local-venue", daemon=True
        )
        self._thread.start()
        self.run(self._start(), timeout_s=10)
        return self

    async def _start(self) -> None:
        self._runner = web.AppRunner(
            self.app, handle_signals=False, access_log=None, shutdown_timeout=0.5
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        self.port = self._runner.addresses[0][1]

    def run(self, coro: Awaitable[Any], timeout_s: float = 10) -> Any:
        """Run a coroutine on the server's loop from another thread; its result."""
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)  # type: ignore[arg-type]

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``fn(*args, **kwargs)`` on the server's loop thread; its result (or exception)."""

        async def _call() -> Any:
            return fn(*args, **kwargs)

        return self.run(_call())

    def stop(self) -> None:
        if self.loop is None:
            return
        if self._runner is not None:
            with contextlib.suppress(Exception):
                self.run(self._runner.cleanup(), timeout_s=5)
        with contextlib.suppress(Exception):
            self.run(_cancel_other_tasks(), timeout_s=5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        if self._thread is not None:
            self._thread.join(5)
        self.loop.close()
        self.loop = None

    def __enter__(self) -> LocalServer:
        return self.start() if self.loop is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---------------------------------------------------------------------------------------------
# the base of every exchange server


@dataclass
class ApiKey:
    api_key: str
    secret: str
    account: str = "main"
    password: str = ""
    withdraw: bool = False  # the key may withdraw (what the venue's permission probe reports)


class ExchangeServer:
    """Matcher + faults + websockets + control routes; a subclass adds its exchange's routes
    (``add_routes``) and formats order events (``on_order_event``).

    ``with BinanceServer() as srv:`` starts it; ``srv.rest_url`` / ``srv.ws_url`` point ccxt at
    it. ``srv.call(srv.matcher.take, "BTC/USDT", "sell", "0.1")`` acts on its thread.
    """

    kind = "local"
    settable: tuple[str, ...] = ()  # attributes ``POST /__control/settings`` may change
    default_specs: tuple[SymbolSpec, ...] = (SymbolSpec(),)

    def __init__(
        self,
        specs: Iterable[SymbolSpec] | None = None,
        *,
        maker_fee: str = "0.001",
        taker_fee: str = "0.001",
        port: int = 0,
    ) -> None:
        self.faults = Faults()
        self.matcher = Matcher(
            specs or self.default_specs, maker_fee, taker_fee, faults=self.faults
        )
        self.matcher.listeners.append(self._on_order_event)
        self.hub = WsHub(self.faults)
        self.events = UserEvents(self.hub, self.faults)
        self.keys: dict[str, ApiKey] = {}
        self.requests: Counter[str] = Counter()  # "METHOD /path" -> count (all requests seen)
        self.server = LocalServer(self.build_app(), port)
        self.faults.on_arm(self._fault_armed)

    # -- set-up
    def add_key(
        self,
        api_key: str,
        secret: str,
        account: str = "main",
        password: str = "",
        balances: dict[str, Any] | None = None,
        withdraw: bool = False,
    ) -> ApiKey:
        key = self.keys[api_key] = ApiKey(api_key, secret, account, password, withdraw)
        self.matcher.account(account, balances)
        return key

    def build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._count_mw], client_max_size=4 * 1024 * 1024)
        app.router.add_post("/__control/fault", self._ctl_fault)
        app.router.add_delete("/__control/fault", self._ctl_clear)
        app.router.add_post("/__control/trade", self._ctl_trade)
        app.router.add_post("/__control/fill", self._ctl_fill)
        app.router.add_post("/__control/deposit", self._ctl_deposit)
        app.router.add_get("/__control/state", self._ctl_state)
        app.router.add_post("/__control/settings", self._ctl_settings)
        app.on_shutdown.append(self._on_shutdown)
        self.add_routes(app)
        return app

    def add_routes(self, app: web.Application) -> None:
        """The exchange's REST and websocket routes (subclasses)."""

    def on_order_event(self, event: str, order: Order, fill: Fill | None) -> None:
        """Format an order change and ``self.events.publish(order.account, text)`` (subclasses)."""

    def _on_order_event(self, event: str, order: Order, fill: Fill | None) -> None:
        self.on_order_event(event, order, fill)

    # -- running
    @property
    def port(self) -> int:
        return self.server.port

    @property
    def rest_url(self) -> str:
        return self.server.rest_url

    @property
    def ws_url(self) -> str:
        return self.server.ws_url

    def start(self) -> ExchangeServer:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def __enter__(self) -> ExchangeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return self.server.call(fn, *args, **kwargs)

    def state(self) -> dict[str, Any]:
        """A JSON-able view for tests in other processes (balances, orders, counters)."""
        accounts = {
            name: {
                a: {"free": fmt(acct.free.get(a, D0)), "locked": fmt(acct.locked.get(a, D0))}
                for a in acct.assets()
            }
            for name, acct in self.matcher.accounts.items()
            if name != MARKET
        }
        orders = [
            {
                "id": o.order_id,
                "client_id": o.client_id,
                "account": o.account,
                "symbol": o.symbol,
                "side": o.side,
                "status": o.status,
                "amount": fmt(o.amount),
                "filled": fmt(o.filled),
            }
            for o in self.matcher.orders.values()
            if o.account != MARKET
        ]
        return {
            "accounts": accounts,
            "orders": orders,
            "fired": dict(self.faults.fired),
            "requests": dict(self.requests),
            "ws_accepted": dict(self.hub.accepted),
            "withheld": self.events.withheld,
            "submitted": dict(self.matcher.submitted),
            "trades": len(self.matcher.trades),
        }

    # -- internals
    def _fault_armed(self, name: str, args: dict[str, Any]) -> None:
        if name not in ("disconnect", "fill_while_down"):
            return
        stream = args.get("stream", "all" if name == "disconnect" else "user")
        loop = self.server.loop
        if loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self.hub.abort(stream)
        else:
            loop.call_soon_threadsafe(self.hub.abort, stream)

    @web.middleware
    async def _count_mw(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if not request.path.startswith("/__control"):
            self.requests[f"{request.method} {request.path}"] += 1
        return await handler(request)

    async def _on_shutdown(self, app: web.Application) -> None:
        for sock in list(self.hub.socks):
            await sock.close()

    async def _ctl_fault(self, request: web.Request) -> web.Response:
        body = await request.json()
        name = body.pop("name")
        try:
            self.faults.arm(name, **body)
        except (ValueError, TypeError) as e:
            return web.json_response({"ok": False, "error": str(e)}, status=400)
        return web.json_response({"ok": True})

    async def _ctl_clear(self, request: web.Request) -> web.Response:
        self.faults.clear(request.query.get("name") or None)
        return web.json_response({"ok": True})

    async def _ctl_trade(self, request: web.Request) -> web.Response:
        body = await request.json()
        fills = self.matcher.take(body["symbol"], body["side"], body["qty"], body.get("price"))
        return web.json_response({"ok": True, "fills": len(fills)})

    async def _ctl_fill(self, request: web.Request) -> web.Response:
        body = await request.json()
        account = body.get("account", "main")
        order = self.matcher.find(account, body.get("order_id"), body.get("client_id"))
        fill = self.matcher.fill_resting(order, body.get("qty"))
        return web.json_response({"ok": True, "trade_id": fill.trade_id})

    async def _ctl_deposit(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.matcher.account(body.get("account", "main"), {body["asset"]: body["amount"]})
        return web.json_response({"ok": True})

    async def _ctl_settings(self, request: web.Request) -> web.Response:
        body = await request.json()
        unknown = sorted(set(body) - set(self.settable))
        if unknown:
            return web.json_response({"ok": False, "error": f"not settable: {unknown}"}, status=400)
        for name, value in body.items():
            setattr(self, name, value)
        return web.json_response({"ok": True})

    async def _ctl_state(self, request: web.Request) -> web.Response:
        return web.json_response(self.state())
