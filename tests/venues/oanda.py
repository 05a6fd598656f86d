"""A local OANDA v20 server: the REST API and the two HTTP chunked streams, on 127.0.0.1.

What it checks the way v20 does: ``Authorization: Bearer <token>`` on every request (401
otherwise) and that the account id in the path belongs to that token (403). What it speaks:
``/v3/accounts/{id}/instruments``, ``/summary``, ``/pricing``, ``/pricing/stream`` (PRICE lines
and a HEARTBEAT every ``heartbeat_s``), ``/orders`` (MARKET, LIMIT, STOP, MARKET_IF_TOUCHED with
takeProfitOnFill / stopLossOnFill), ``/orders/{id|@clientID}`` (get, replace) and ``/cancel``,
``/pendingOrders``, ``/openTrades``, ``/openPositions``, ``/transactions/sinceid`` and
``/transactions/stream`` (each transaction, HEARTBEATs with ``lastTransactionID``). The account
model is tests/venues/oanda_book.py.

Faults (``srv.faults.arm(name, ...)`` or ``POST /__control/fault``): ``disconnect`` (every
stream's TCP connection dropped), ``stall`` (streams send nothing, heartbeats neither, and stay
open), ``rate_limit`` (429 + Retry-After for the next ``times`` REST requests),
``fill_while_down`` (transactions kept off the stream; REST still has them), ``delay_ack``
(an order made, its answer ``delay_s`` late). Control:
``/__control/price``, ``/__control/tradeable``, ``/__control/rollover``, ``/__control/state``. Prices walk on their own
every ``tick_s`` (0 = only when told) so that a paper run sees a market move.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.venues.core import Faults, LocalServer
from tests.venues.oanda_book import DEFAULT_SPECS, Account, Reject, Spec, V20Book, now_rfc3339

__all__ = ["OandaServer"]

TOKEN = "local-oanda-token-0001"  # made-up credentials the tests use
ACCOUNT = "101-001-1234567-001"


_ACCT = web.RequestKey("acct", Account)


class _Stream:
    """One open chunked stream: its queue of lines and what it wants."""

    def __init__(self, kind: str, account: str, instruments: set[str]) -> None:
        self.kind, self.account, self.instruments = kind, account, instruments
        self.queue: asyncio.Queue[str] = asyncio.Queue()
        self.transport: Any = None


class OandaServer:
    """``with OandaServer() as srv:``; ``srv.add_key(token, account_id)``; ``srv.rest_url``."""

    kind = "oanda"
    settable = ("heartbeat_s", "tick_s")

    def __init__(
        self,
        specs: tuple[Spec, ...] = DEFAULT_SPECS,
        *,
        port: int = 0,
        heartbeat_s: float = 5.0,
        tick_s: float = 0.05,
        seed: int = 7,
    ) -> None:
        self.faults = Faults()
        self.book = V20Book(specs)
        self.heartbeat_s, self.tick_s = heartbeat_s, tick_s
        self._rng = random.Random(seed)
        self.streams: set[_Stream] = set()
        self.requests: dict[str, int] = {}
        self.withheld = 0
        self.book.listeners.append(self._on_tx)
        self.book.price_listeners.append(self._on_price)
        self.faults.on_arm(self._fault_armed)
        self.server = LocalServer(self._app(), port)
        self._ticker: asyncio.Task[None] | None = None
        self.add_key()  # the made-up account every test uses (TOKEN, ACCOUNT)

    # --- set-up and running ------------------------------------------------------------------------
    def add_key(
        self,
        api_key: str = TOKEN,
        secret: str = ACCOUNT,
        balances: dict[str, Any] | None = None,
        **_: Any,
    ) -> Account:
        """An account ``secret`` reached with token ``api_key`` (the venue's key mapping:
        api_key = the token, api_secret = the account id)."""
        cash = (balances or {}).get("USD", "100000")
        return self.book.account(secret, api_key, cash)

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def rest_url(self) -> str:
        return self.server.rest_url

    @property
    def ws_url(self) -> str:  # unused by OANDA (its streams are HTTP: stream_url)
        return self.server.ws_url

    def venue_toml(self, directory: Path, name: str = "oanda", extra: str = "") -> str:
        """A ``[[venues]]`` entry for this server, its keys in a 0600 credentials file."""
        return f'[[venues]]\nname = "{name}"\nkind = "oanda"\n{self.venue_keys(directory)}{extra}'

    def venue_keys(self, directory: Path) -> str:
        """The keys of a ``[[venues]]`` entry of kind oanda that point it at this server."""
        return (
            f'rest_url = "{self.rest_url}"\nstream_url = "{self.rest_url}"\n'
            f'account_id = "{ACCOUNT}"\ncredentials_file = "{write_credentials(directory)}"\n'
        )

    def start(self) -> OandaServer:
        self.server.start()
        self.server.run(self._start_ticker())
        return self

    async def _start_ticker(self) -> None:
        self._ticker = asyncio.get_running_loop().create_task(self._tick_loop())

    def stop(self) -> None:
        self.server.stop()

    def __enter__(self) -> OandaServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return self.server.call(fn, *args, **kwargs)

    def set_price(self, name: str, bid: Any, ask: Any) -> None:
        self.call(self.book.set_price, name, bid, ask)

    def set_tradeable(self, name: str, tradeable: bool) -> None:
        """The market closes (the weekend, a halt) or opens again: prices say so."""

        def flip() -> None:
            self.book.tradeable[name] = tradeable
            bid, ask = self.book.prices[name]
            self.book.set_price(name, bid, ask)

        loop = self.server.loop
        if loop is not None and _on(loop):
            flip()
        else:
            self.call(flip)

    def rollover(self, account: str = ACCOUNT, when_ns: int | None = None) -> Any:
        return self.call(self.book.rollover, self.book.accounts[account], when_ns)

    def state(self) -> dict[str, Any]:
        accts = {
            a.id: {
                "balance": str(a.balance),
                "positions": self.book.positions(a),
                "orders": [o.json() for o in a.orders.values()],
                "last_id": self.book.last_id(a),
            }
            for a in self.book.accounts.values()
        }
        streams = {
            k: sum(1 for s in self.streams if s.kind == k) for k in ("pricing", "transactions")
        }
        return {
            "accounts": accts,
            "fired": dict(self.faults.fired),
            "requests": dict(self.requests),
            "streams": streams,
        }

    # --- the app -----------------------------------------------------------------------------------
    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._mw])
        acct = "/v3/accounts/{account}"
        r = app.router
        r.add_get(acct + "/instruments", self._instruments)
        r.add_get(acct + "/summary", self._summary)
        r.add_get(acct + "/pricing", self._pricing)
        r.add_get(acct + "/pricing/stream", self._pricing_stream)
        r.add_post(acct + "/orders", self._create)
        r.add_get(acct + "/orders/{spec}", self._get_order)
        r.add_put(acct + "/orders/{spec}", self._replace)
        r.add_put(acct + "/orders/{spec}/cancel", self._cancel)
        r.add_get(acct + "/pendingOrders", self._pending)
        r.add_get(acct + "/openTrades", self._trades)
        r.add_get(acct + "/openPositions", self._positions)
        r.add_get(acct + "/transactions/sinceid", self._since)
        r.add_get(acct + "/transactions/stream", self._tx_stream)
        r.add_post("/__control/fault", self._ctl_fault)
        r.add_delete("/__control/fault", self._ctl_clear)
        r.add_post("/__control/price", self._ctl_price)
        r.add_post("/__control/rollover", self._ctl_rollover)
        r.add_post("/__control/tradeable", self._ctl_tradeable)
        r.add_post("/__control/settings", self._ctl_settings)
        r.add_get("/__control/state", self._ctl_state)
        app.on_shutdown.append(self._on_shutdown)
        return app

    @web.middleware
    async def _mw(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.path.startswith("/__control"):
            return await handler(request)
        key = f"{request.method} {request.path.split('/v3/accounts/')[-1].partition('/')[2] or request.path}"
        self.requests[key] = self.requests.get(key, 0) + 1
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            return _err(401, "Insufficient authorization to perform request.")
        acct = self.book.accounts.get(request.match_info.get("account", ""))
        if acct is None or acct.token != auth[7:]:
            tokens = {a.token for a in self.book.accounts.values()}
            if auth[7:] not in tokens:
                return _err(401, "Insufficient authorization to perform request.")
            return _err(403, "The provided request was forbidden.")
        if not request.path.endswith("/stream"):
            limit = self.faults.take("rate_limit")
            if limit is not None:
                resp = _err(429, "Requests are being rate limited.")
                resp.headers["Retry-After"] = str(limit.get("retry_after", 0.2))
                return resp
        request[_ACCT] = acct
        return await handler(request)

    def _ok(self, acct: Account, body: dict[str, Any], status: int = 200) -> web.Response:
        body.setdefault("lastTransactionID", self.book.last_id(acct))
        return web.json_response(body, status=status)

    async def _instruments(self, request: web.Request) -> web.Response:
        want = set(filter(None, request.query.get("instruments", "").split(",")))
        ins = [s.json() for s in self.book.specs.values() if not want or s.name in want]
        return self._ok(request[_ACCT], {"instruments": ins})

    async def _summary(self, request: web.Request) -> web.Response:
        acct = request[_ACCT]
        return self._ok(acct, {"account": self.book.summary(acct)})

    async def _pricing(self, request: web.Request) -> web.Response:
        names = [n for n in request.query.get("instruments", "").split(",") if n]
        bad = [n for n in names if n not in self.book.specs]
        if not names or bad:
            return _err(400, f"Invalid value specified for 'instruments': {bad}")
        return self._ok(
            request[_ACCT],
            {"prices": [self.book.price_json(n) for n in names], "time": now_rfc3339()},
        )

    async def _create(self, request: web.Request) -> web.Response:
        acct = request[_ACCT]
        body = (await request.json()).get("order") or {}
        late = self.faults.take("delay_ack")  # the order is made; its answer comes late
        try:
            out = self.book.create(acct, body)
        except Reject as e:
            return self._reject(acct, e, body)
        if late is not None:
            await asyncio.sleep(float(late.get("delay_s", 1.0)))
        return self._ok(acct, {**out, "relatedTransactionIDs": _ids(out)}, 201)

    def _reject(self, acct: Account, e: Reject, body: dict[str, Any]) -> web.Response:
        out: dict[str, Any] = {"errorCode": e.code, "errorMessage": e.message}
        if e.reject_type:
            key = (
                "orderCancelRejectTransaction"
                if "CANCEL" in e.reject_type
                else "orderRejectTransaction"
            )
            tx = self.book._tx(
                acct,
                e.reject_type,
                rejectReason=e.code,
                **{k: v for k, v in body.items() if k in ("instrument", "units", "price")},
            )
            out[key] = tx
            out["relatedTransactionIDs"] = [tx["id"]]
        return self._ok(acct, out, e.status)

    async def _get_order(self, request: web.Request) -> web.Response:
        acct = request[_ACCT]
        o = self.book.find(acct, request.match_info["spec"])
        if o is None:
            return _err(404, "The Order specified does not exist", "ORDER_DOESNT_EXIST")
        return self._ok(acct, {"order": o.json()})

    async def _replace(self, request: web.Request) -> web.Response:
        acct = request[_ACCT]
        body = (await request.json()).get("order") or {}
        try:
            out = self.book.replace(acct, request.match_info["spec"], body)
        except Reject as e:
            return self._reject(acct, e, body)
        return self._ok(acct, {**out, "relatedTransactionIDs": _ids(out)}, 201)

    async def _cancel(self, request: web.Request) -> web.Response:
        acct = request[_ACCT]
        try:
            tx = self.book.cancel(acct, request.match_info["spec"])
        except Reject as e:
            return self._reject(acct, e, {})
        return self._ok(acct, {"orderCancelTransaction": tx, "relatedTransactionIDs": [tx["id"]]})

    async def _pending(self, request: web.Request) -> web.Response:
        acct = request[_ACCT]
        orders = [o.json() for o in acct.orders.values() if o.state == "PENDING"]
        return self._ok(acct, {"orders": orders})

    async def _trades(self, request: web.Request) -> web.Response:
        acct = request[_ACCT]
        return self._ok(acct, {"trades": [t.json() for t in acct.trades.values() if t.current]})

    async def _positions(self, request: web.Request) -> web.Response:
        acct = request[_ACCT]
        return self._ok(acct, {"positions": self.book.positions(acct)})

    async def _since(self, request: web.Request) -> web.Response:
        acct = request[_ACCT]
        since = request.query.get("id", "")
        if not since.isdigit():
            return _err(400, "Invalid value specified for 'id'")
        txs = [t for t in acct.transactions if int(t["id"]) > int(since)]
        return self._ok(acct, {"transactions": txs})

    # --- streams -----------------------------------------------------------------------------------
    async def _pricing_stream(self, request: web.Request) -> web.StreamResponse:
        names = {n for n in request.query.get("instruments", "").split(",") if n}
        if not names or names - set(self.book.specs):
            return _err(400, "Invalid value specified for 'instruments'")
        st = _Stream("pricing", request[_ACCT].id, names)
        for n in sorted(names):  # the current price of each first, as v20 does
            st.queue.put_nowait(json.dumps(self.book.price_json(n)))
        return await self._serve(request, st, lambda: {"type": "HEARTBEAT", "time": now_rfc3339()})

    async def _tx_stream(self, request: web.Request) -> web.StreamResponse:
        acct = request[_ACCT]
        st = _Stream("transactions", acct.id, set())

        def beat() -> dict[str, Any]:
            last = self.book.last_id(acct)
            return {"type": "HEARTBEAT", "lastTransactionID": last, "time": now_rfc3339()}

        return await self._serve(request, st, beat)

    async def _serve(
        self, request: web.Request, st: _Stream, beat: Callable[[], dict[str, Any]]
    ) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        st.transport = request.transport
        self.streams.add(st)
        try:
            while True:
                try:
                    line = await asyncio.wait_for(st.queue.get(), self.heartbeat_s)
                except TimeoutError:
                    line = json.dumps(beat())
                if self._stalled():
                    continue
                await resp.write(line.encode() + b"\n")
        except (ConnectionResetError, asyncio.CancelledError, RuntimeError):
            pass
        finally:
            self.streams.discard(st)
        return resp

    def _stalled(self) -> bool:
        return self.faults.active("stall") is not None

    def _on_price(self, name: str) -> None:
        line = json.dumps(self.book.price_json(name))
        for st in list(self.streams):
            if st.kind == "pricing" and name in st.instruments:
                st.queue.put_nowait(line)

    def _on_tx(self, account: str, tx: dict[str, Any]) -> None:
        if self.faults.active("fill_while_down") is not None:
            self.withheld += 1
            return
        line = json.dumps(tx)
        for st in list(self.streams):
            if st.kind == "transactions" and st.account == account:
                st.queue.put_nowait(line)

    async def _tick_loop(self) -> None:
        """Prices walk a tick or two at a time, each instrument in turn."""
        while True:
            await asyncio.sleep(self.tick_s if self.tick_s > 0 else 0.2)
            if self.tick_s <= 0:
                continue
            for name, spec in self.book.specs.items():
                step = Decimal(1).scaleb(-spec.display_precision) * self._rng.choice((-2, -1, 1, 2))
                bid, ask = self.book.prices[name]
                if bid + step > 0:
                    self.book.set_price(name, bid + step, ask + step)

    def _fault_armed(self, name: str, args: dict[str, Any]) -> None:
        if name not in ("disconnect", "fill_while_down"):
            return
        loop = self.server.loop
        if loop is not None:
            loop.call_soon_threadsafe(self._drop_streams, args.get("stream", "all"))

    def _drop_streams(self, which: str) -> None:
        for st in list(self.streams):
            if which in ("all", st.kind) and st.transport is not None:
                st.transport.abort()
                self.streams.discard(st)

    async def _on_shutdown(self, app: web.Application) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        self._drop_streams("all")

    # --- control -----------------------------------------------------------------------------------
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

    async def _ctl_price(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.book.set_price(body["instrument"], body["bid"], body["ask"])
        return web.json_response({"ok": True})

    async def _ctl_tradeable(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.set_tradeable(body["instrument"], bool(body["tradeable"]))
        return web.json_response({"ok": True})

    async def _ctl_rollover(self, request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else {}
        acct = self.book.accounts[body.get("account", ACCOUNT)]
        tx = self.book.rollover(acct, body.get("when_ns"))
        return web.json_response({"ok": True, "transaction": tx})

    async def _ctl_settings(self, request: web.Request) -> web.Response:
        body = await request.json()
        unknown = sorted(set(body) - set(self.settable))
        if unknown:
            return web.json_response({"ok": False, "error": f"not settable: {unknown}"}, status=400)
        for k, v in body.items():
            setattr(self, k, v)
        return web.json_response({"ok": True})

    async def _ctl_state(self, request: web.Request) -> web.Response:
        return web.json_response(self.state())


def _on(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def write_credentials(directory: Path, token: str = TOKEN, account: str = ACCOUNT) -> Path:
    """A 0600 credentials file with the made-up token (api_key) and account id (api_secret)."""
    path = Path(directory) / "oanda-keys.toml"
    path.write_text(f'api_key = "{token}"\napi_secret = "{account}"\n')
    path.chmod(0o600)
    return path


def _err(status: int, message: str, code: str = "") -> web.Response:
    body = {"errorMessage": message}
    if code:
        body["errorCode"] = code
    return web.json_response(body, status=status)


def _ids(out: dict[str, Any]) -> list[str]:
    return [str(tx["id"]) for tx in out.values() if isinstance(tx, dict) and "id" in tx]
