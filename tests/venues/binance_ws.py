"""The websocket side of the local Binance server: market streams, the user data stream.

Market streams on ``/ws[/<n>]`` (SUBSCRIBE / UNSUBSCRIBE / LIST_SUBSCRIPTIONS, each frame the
raw ``data`` object) and ``/stream?streams=`` (combined: ``{"stream", "data"}``), fed by one
replay task over the server's market feed (started by the first subscription: update ids never
go back) that also moves the matcher's market liquidity and honours the ``gap`` fault. The user
data stream: the WebSocket API ``/ws-api/v3`` ``userDataStream.subscribe.signature`` (what ccxt
4.5.90 uses for spot; events wrapped ``{"subscriptionId", "event"}``) and the legacy listenKey
(``POST /api/v3/userDataStream`` + ``/ws/<listenKey>``, raw events).
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections import deque
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from tests.venues import binance_wire as w
from tests.venues.core import ApiKey, ExchangeServer, Fill, Order, Sock


class BinanceStreams(ExchangeServer):
    """Mixed into ``BinanceServer``: needs its ``market``, ``verify``, ``_api_key``, ``server_ms``."""

    market: Any
    listen_keys: dict[str, str]
    recent_trades: deque[dict[str, Any]]
    frames_sent: int
    gaps: int
    _replay: asyncio.Task[None] | None
    _cancel_cid: str

    def _api_key(self, request: web.Request) -> ApiKey | web.Response:
        raise NotImplementedError

    def verify(self, key: ApiKey, payload: str, params: dict[str, str]) -> web.Response | None:
        raise NotImplementedError

    def server_ms(self) -> int:
        raise NotImplementedError

    async def _listen_key(self, request: web.Request) -> web.Response:
        key = self._api_key(request)
        if isinstance(key, web.Response):
            return key
        if request.method == "POST":
            token = secrets.token_urlsafe(45)[:60]
            self.listen_keys[token] = key.account
            return web.json_response({"listenKey": token})
        body = dict(parse_qsl(await request.text())) | dict(request.query)
        if body.get("listenKey") not in self.listen_keys:
            return w.error(-1125, "This listenKey does not exist.")
        if request.method == "DELETE":
            self.listen_keys.pop(body["listenKey"], None)
        return web.json_response({})

    # -- user events
    def on_order_event(self, event: str, order: Order, fill: Fill | None) -> None:
        report = w.execution_report(event, order, fill, self._cancel_cid)
        self.events.publish(order.account, w.dumps(report))
        acct = self.matcher.accounts[order.account]
        position = w.account_position(acct, [order.spec.base, order.spec.quote])
        self.events.publish(order.account, w.dumps(position), reorderable=False)

    # -- websockets
    async def _ws_market(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info.get("name", "")
        if name in self.listen_keys:
            sock = await self.hub.open(request, "user")
            sock.account = self.listen_keys[name]
            return await self.hub.serve(sock, self._on_market_text)
        sock = await self.hub.open(request, "market")
        if request.path == "/stream":
            sock.state["combined"] = True
            for stream in filter(None, request.query.get("streams", "").split("/")):
                sock.subs.add(_stream_name(stream))
            if sock.subs:
                self._ensure_replay()
        return await self.hub.serve(sock, self._on_market_text)

    async def _on_market_text(self, sock: Sock, text: str) -> None:
        try:
            msg = json.loads(text)
            method, params, req_id = msg["method"], msg.get("params", []), msg.get("id")
        except (ValueError, KeyError, TypeError):
            sock.send(w.dumps({"error": {"code": 2, "msg": "Invalid request"}, "id": None}))
            return
        if method == "SUBSCRIBE":
            sock.subs.update(_stream_name(p) for p in params)
            sock.send(w.dumps({"result": None, "id": req_id}))
            self._ensure_replay()
        elif method == "UNSUBSCRIBE":
            sock.subs.difference_update(_stream_name(p) for p in params)
            sock.send(w.dumps({"result": None, "id": req_id}))
        elif method == "LIST_SUBSCRIPTIONS":
            sock.send(w.dumps({"result": sorted(sock.subs), "id": req_id}))
        else:
            sock.send(
                w.dumps(
                    {
                        "error": {"code": 2, "msg": f"Invalid request: unknown method {method}"},
                        "id": req_id,
                    }
                )
            )

    async def _ws_api(self, request: web.Request) -> web.StreamResponse:
        sock = await self.hub.open(request, "wsapi")
        sock.state["subscription"] = 0
        return await self.hub.serve(sock, self._on_ws_api_text)

    async def _on_ws_api_text(self, sock: Sock, text: str) -> None:
        try:
            msg = json.loads(text)
            method, params, req_id = msg["method"], msg.get("params", {}), msg.get("id")
        except (ValueError, KeyError, TypeError):
            sock.send(
                w.dumps(
                    {
                        "id": None,
                        "status": 400,
                        "error": {"code": -1100, "msg": "Illegal characters found in a parameter."},
                    }
                )
            )
            return

        def answer(
            result: Any = None, error: tuple[int, str] | None = None, status: int = 200
        ) -> None:
            body: dict[str, Any] = {"id": req_id, "status": status if error is None else 400}
            body |= (
                {"result": result}
                if error is None
                else {"error": {"code": error[0], "msg": error[1]}}
            )
            sock.send(w.dumps(body))

        if method == "ping":
            answer({})
        elif method == "time":
            answer({"serverTime": self.server_ms()})
        elif method == "userDataStream.subscribe.signature":
            self._ws_subscribe(sock, params, answer)
        elif method == "userDataStream.unsubscribe":
            sock.kind, sock.wrap = "wsapi", None
            answer({})
        else:
            answer(error=(-1100, f"Unknown method {method}"))

    def _ws_subscribe(
        self, sock: Sock, params: dict[str, Any], answer: Callable[..., None]
    ) -> None:
        key = self.keys.get(str(params.get("apiKey", "")))
        if key is None:
            answer(error=(-2015, "Invalid API-key, IP, or permissions for action."))
            return
        fields = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in params.items()}
        payload = "&".join(f"{k}={fields[k]}" for k in sorted(fields) if k != "signature")
        refused = self.verify(key, payload, fields)
        if refused is not None:
            err = json.loads(refused.text or "{}")
            answer(error=(err.get("code", -1022), err.get("msg", "")))
            return
        sub_id = sock.state["subscription"]
        sock.state["subscription"] = sub_id + 1
        sock.kind, sock.account = "user", key.account
        sock.wrap = lambda payload, sid=sub_id: f'{{"subscriptionId":{sid},"event":{payload}}}'
        answer({"subscriptionId": sub_id})

    # -- market data replay
    def _ensure_replay(self) -> None:
        if self._replay is None:  # once: update ids never go back
            self._replay = asyncio.get_running_loop().create_task(self._run_replay())

    async def _run_replay(self) -> None:
        spec = self.market.spec
        async for stream, data, diff in self.market.frames():
            if diff is not None:
                for side, key in (("buy", "b"), ("sell", "a")):
                    for px, qty in diff[key]:
                        self.matcher.set_level(spec.symbol, side, px, qty)
                if self.faults.take("gap") is not None:
                    self.gaps += 1
                    continue
            elif stream.endswith("@trade"):
                self.recent_trades.append(json.loads(data))
            self._broadcast(stream, data)

    def _broadcast(self, stream: str, data: bytes) -> None:
        text = data.decode()
        for sock in self.hub.select("market"):
            if stream in sock.subs:
                sock.send(
                    f'{{"stream":"{stream}","data":{text}}}' if sock.state.get("combined") else text
                )
                self.frames_sent += 1


def _stream_name(name: object) -> str:
    """Binance stream names: the symbol part is case-insensitive, the rest (bookTicker) is not."""
    symbol, sep, rest = str(name).partition("@")
    return symbol.lower() + sep + rest
