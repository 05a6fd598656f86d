"""A local Betfair Exchange: identity (login / keepAlive), API-NG JSON-RPC and the Stream API.

The subset betfairlightweight 2.24.0 uses, spoken the Betfair way: ``POST /api/login`` (form
``username`` / ``password``, header ``X-Application``) answers a session token; every JSON-RPC
call (``POST /exchange/betting/json-rpc/v1``, ``/exchange/account/json-rpc/v1``) must carry a
known ``X-Application`` app key and a live ``X-Authentication`` session, else an
``APINGException`` (INVALID_APP_KEY / INVALID_SESSION_INFORMATION). Errors are JSON-RPC errors
with the APINGException's ``errorCode``; order errors are execution reports with status FAILURE
and the instruction's ``errorCode`` (INVALID_ODDS, MARKET_SUSPENDED, ...), as the API documents.
The stream (``tests.venues.betfair_stream``) runs TLS on its own port with a self-signed
certificate made at start (``ca_file``: what a client must trust).

Test controls (call through ``server.call`` or the methods below, thread-safe): ``offer``
(house liquidity), ``take`` (a house taker crossing our resting bets), ``suspend`` /
``resume``, ``settle(market, winner, void_bets=())`` (some bets voided, the rest settled),
``void(market)``; faults via ``faults.arm``:
``disconnect``, ``stall`` (stale stream), ``rate_limit`` (TOO_MANY_REQUESTS).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import ssl
import tempfile
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.venues.betfair_market import MIN_STAKE, Bet, Exchange, Fill, on_ladder
from tests.venues.betfair_stream import StreamServer, num
from tests.venues.core import Faults, LocalServer

#: the markets a fresh server lists: a football match (three selections) and a two-runner market
MARKETS = {
    "1.200000001": (
        "Match Odds",
        "30000001",
        {47972: "Arsenal", 48351: "Chelsea", 58805: "The Draw"},
    ),
    "1.200000002": ("Over/Under 2.5 Goals", "30000001", {47973: "Under 2.5", 47974: "Over 2.5"}),
}
APP_KEY, USERNAME, PASSWORD = "test-app-key-1", "gekko-test", "not-a-real-password"


class ApiError(Exception):
    def __init__(self, code: str, detail: str = "") -> None:
        super().__init__(code)
        self.code, self.detail = code, detail


def _dec(v: Any, what: str) -> Decimal:
    try:
        d = Decimal(str(v))
    except (InvalidOperation, ValueError):
        raise ApiError("INVALID_INPUT_DATA", f"{what} {v!r} is not a number") from None
    if not d.is_finite():
        raise ApiError("INVALID_INPUT_DATA", f"{what} {v!r} is not a number")
    return d


class BetfairServer:
    """The local exchange (see the module docstring)."""

    def __init__(self, port: int = 0, stream_port: int = 0, liquidity: bool = True) -> None:
        self.ex = Exchange()
        self.faults = Faults()
        self.faults.on_arm(self._fault_armed)
        self.app_keys: set[str] = set()
        self.users: dict[str, tuple[str, str]] = {}  # username -> (password, account)
        self.sessions: dict[str, tuple[str, str]] = {}  # token -> (account, app key)
        self.requests: list[str] = []  # methods called, in order
        self.page_size = 1000  # rows listCurrentOrders / listClearedOrders answer at most
        self._tokens = itertools.count(1)
        from tests._tls_proxy import self_signed

        self._tmp = tempfile.TemporaryDirectory(prefix="betfair-tls-")
        cert, key = self_signed(Path(self._tmp.name), ["127.0.0.1"])  # made for this server
        self.ca_file, self._key_file = str(cert), str(key)
        self.stream = StreamServer(self.ex, self.faults, self.sessions)
        self._stream_port = stream_port
        for mid, (name, event, runners) in MARKETS.items():
            self.ex.add_market(mid, name, event, runners)
            if liquidity:
                for k, sid in enumerate(runners):
                    base = Decimal("2.0") + Decimal(k)
                    step = Decimal("0.02") if base < 3 else Decimal("0.05")
                    for lvl in range(3):
                        self.ex.place(mid, sid, "LAY", base - lvl * step, Decimal(100), None)
                        self.ex.place(mid, sid, "BACK", base + (lvl + 1) * step, Decimal(100), None)
        self.add_key(APP_KEY, USERNAME, password=PASSWORD, balances={"GBP": "1000"})
        app = web.Application()
        app.router.add_post("/api/login", self._login)
        app.router.add_post("/api/keepAlive", self._keep_alive)
        app.router.add_post("/api/logout", self._logout)
        app.router.add_post("/exchange/betting/json-rpc/v1", self._rpc)
        app.router.add_post("/exchange/account/json-rpc/v1", self._rpc)
        app.router.add_get("/__control/stream", self._ctl_stream)
        self.local = LocalServer(app, port)

    # --- life -----------------------------------------------------------------------------------
    def start(self) -> BetfairServer:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.ca_file, self._key_file)
        self.local.start()
        self.local.run(self.stream.start(ctx, self._stream_port))
        return self

    def stop(self) -> None:
        if self.local.loop is not None:
            with contextlib.suppress(Exception):
                self.local.run(self.stream.stop(), 5)
        self.local.stop()
        self._tmp.cleanup()

    def __enter__(self) -> BetfairServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self.local.port

    @property
    def rest_url(self) -> str:
        return self.local.rest_url

    @property
    def ws_url(self) -> str:
        return ""  # the stream is TLS over TCP, not a websocket: ``stream_url``

    @property
    def stream_url(self) -> str:
        return f"tls://127.0.0.1:{self.stream.port or self._stream_port}"

    def call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        return self.local.call(fn, *args, **kwargs)

    def add_key(
        self,
        api_key: str,
        secret: str,
        password: str = "",
        balances: dict[str, str] | None = None,
        **_: Any,
    ) -> None:
        """An app key with a user: ``secret`` is the username when ``password`` is given
        (interactive login), else a session token issued already."""
        self.app_keys.add(api_key)
        account = secret
        if password:
            self.users[secret] = (password, account)
        else:
            self.sessions[secret] = (account, api_key)
        gbp = (balances or {}).get("GBP", "1000")
        self.ex.balance.setdefault(account, Decimal(gbp))

    def _fault_armed(self, name: str, args: dict[str, Any]) -> None:
        if name == "disconnect" and self.local.loop is not None:
            self.local.loop.call_soon_threadsafe(self.stream.drop_all)

    # --- controls for tests ---------------------------------------------------------------------
    def offer(self, market: str, selection: int, side: str, price: str, size: str) -> None:
        """House liquidity: a resting ``side`` ("BACK" / "LAY") bet of no account."""
        self.call(self._house, market, selection, side, Decimal(price), Decimal(size), False)

    def take(self, market: str, selection: int, side: str, price: str, size: str) -> None:
        """A house taker: matches resting bets (ours among them), never rests."""
        self.call(self._house, market, selection, side, Decimal(price), Decimal(size), True)

    def _house(self, m: str, sid: int, side: str, px: Decimal, size: Decimal, taker: bool) -> None:
        fills = (
            self.ex.take(m, sid, side, px, size)
            if taker
            else self.ex.place(m, sid, side, px, size, None)[1]
        )
        self._changed(m, fills)

    def suspend(self, market: str) -> None:
        self.call(self._set_status, market, "SUSPENDED")

    def resume(self, market: str) -> None:
        self.call(self._set_status, market, "OPEN")

    def _set_status(self, market: str, status: str) -> None:
        m = self.ex.markets[market]
        m.status, m.version = status, m.version + 1
        self.stream.market_changed(market)

    def settle(self, market: str, winner: int | None, void_bets: Any = ()) -> None:
        """Close ``market`` with ``winner`` (None: void) and clear every bet on it; the bets
        of ``void_bets`` (bet ids) are voided while the others settle."""
        self.call(self._settle, market, winner, frozenset(str(b) for b in void_bets))

    def void(self, market: str) -> None:
        self.settle(market, None)

    def _settle(
        self, market: str, winner: int | None, void_bets: frozenset[str] = frozenset()
    ) -> None:
        touched = self.ex.settle(market, winner, void_bets)
        self.stream.market_changed(market)
        self.stream.orders_changed(touched)

    def _changed(self, market: str, fills: list[Fill], bets: list[Bet] | None = None) -> None:
        self.stream.market_changed(market)
        mine = {f.bet.bet_id: f.bet for f in fills if f.bet.account is not None}
        for b in bets or []:
            mine[b.bet_id] = b
        if mine:
            self.stream.orders_changed(list(mine.values()))

    async def _ctl_stream(self, request: web.Request) -> web.Response:
        """Where the stream is and what to trust (a client of ``python -m tests.venues``)."""
        return web.json_response({"stream_url": self.stream_url, "ca_file": self.ca_file})

    # --- identity -------------------------------------------------------------------------------
    async def _login(self, request: web.Request) -> web.Response:
        form = await request.post()
        if request.headers.get("X-Application") not in self.app_keys:
            return web.json_response(
                {"token": "", "product": "", "status": "FAIL", "error": "INVALID_APP_KEY"}
            )
        user = self.users.get(str(form.get("username")))
        if user is None or user[0] != form.get("password"):
            return web.json_response(
                {
                    "token": "",
                    "product": "",
                    "status": "FAIL",
                    "error": "INVALID_USERNAME_OR_PASSWORD",
                }
            )
        token = f"session-{next(self._tokens):08d}"
        self.sessions[token] = (user[1], request.headers["X-Application"])
        return web.json_response(
            {
                "token": token,
                "product": request.headers["X-Application"],
                "status": "SUCCESS",
                "error": "",
            }
        )

    async def _keep_alive(self, request: web.Request) -> web.Response:
        token = request.headers.get("X-Authentication", "")
        ok = token in self.sessions
        return web.json_response(
            {
                "token": token,
                "product": request.headers.get("X-Application", ""),
                "status": "SUCCESS" if ok else "FAIL",
                "error": "" if ok else "NO_SESSION",
            }
        )

    async def _logout(self, request: web.Request) -> web.Response:
        token = request.headers.get("X-Authentication", "")
        self.sessions.pop(token, None)
        return web.json_response({"token": "", "product": "", "status": "SUCCESS", "error": ""})

    # --- JSON-RPC -------------------------------------------------------------------------------
    async def _rpc(self, request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        rid, method = body.get("id"), str(body.get("method", ""))
        try:
            self._auth(request)
            if self.faults.take("rate_limit") is not None:
                raise ApiError("TOO_MANY_REQUESTS", "too many requests")
            delay = self.faults.take("delay_ack") if "Orders" in method else None
            if delay is not None:  # an order request answered late
                await asyncio.sleep(float(delay.get("delay_s", 0.5)))
            name = method.rpartition("/")[2]
            self.requests.append(name)
            handler = getattr(self, f"_m_{name}", None)
            if handler is None:
                raise ApiError("INVALID_INPUT_DATA", f"no method {method}")
            result = handler(
                self.sessions[request.headers["X-Authentication"]][0], body.get("params") or {}
            )
        except ApiError as e:
            err = {
                "APINGException": {
                    "errorCode": e.code,
                    "errorDetails": e.detail,
                    "requestUUID": "local",
                }
            }
            err["exceptionname"] = "APINGException"  # type: ignore[assignment]
            return web.json_response(
                {
                    "jsonrpc": "2.0",
                    "error": {"code": -32099, "message": e.code, "data": err},
                    "id": rid,
                }
            )
        return web.json_response({"jsonrpc": "2.0", "result": result, "id": rid})

    def _auth(self, request: web.Request) -> None:
        if request.headers.get("X-Application") not in self.app_keys:
            raise ApiError("INVALID_APP_KEY", "unknown X-Application")
        got = self.sessions.get(request.headers.get("X-Authentication", ""))
        if got is None or got[1] != request.headers.get("X-Application"):
            raise ApiError("INVALID_SESSION_INFORMATION", "no session")

    def _m_listMarketCatalogue(self, acct: str, p: dict[str, Any]) -> list[dict[str, Any]]:
        want = set((p.get("filter") or {}).get("marketIds") or [])
        out = []
        for m in self.ex.markets.values():
            if (want and m.market_id not in want) or m.status == "CLOSED":
                continue
            out.append(
                {
                    "marketId": m.market_id,
                    "marketName": m.name,
                    "totalMatched": 0.0,
                    "event": {
                        "id": m.event,
                        "name": "Arsenal v Chelsea",
                        "countryCode": "GB",
                        "timezone": "Europe/London",
                        "openDate": "2026-12-08T20:00:00.000Z",
                    },
                    "eventType": {"id": "1", "name": "Soccer"},
                    "description": {
                        "bettingType": "ODDS",
                        "marketType": "MATCH_ODDS",
                        "persistenceEnabled": True,
                        "marketBaseRate": 5.0,
                        "bspMarket": False,
                        "turnInPlayEnabled": True,
                        "marketTime": "2026-12-08T20:00:00.000Z",
                        "suspendTime": "2026-12-08T20:00:00.000Z",
                        "regulator": "MALTA LOTTERIES AND GAMBLING AUTHORITY",
                        "discountAllowed": True,
                        "wallet": "UK wallet",
                    },
                    "runners": [
                        {
                            "selectionId": s.selection_id,
                            "runnerName": s.name,
                            "handicap": 0.0,
                            "sortPriority": k + 1,
                        }
                        for k, s in enumerate(m.selections.values())
                    ],
                }
            )
        return out[: int(p.get("maxResults") or 1000)]

    def _m_listMarketBook(self, acct: str, p: dict[str, Any]) -> list[dict[str, Any]]:
        out = []
        for mid in p.get("marketIds") or []:
            m = self.ex.markets.get(mid)
            if m is None:
                continue
            runners = []
            for s in m.selections.values():
                atb = sorted(s.ladder("atb").items(), reverse=True)
                atl = sorted(s.ladder("atl").items())
                runners.append(
                    {
                        "selectionId": s.selection_id,
                        "handicap": 0.0,
                        "status": s.status,
                        "lastPriceTraded": num(s.last_traded) if s.last_traded else None,
                        "ex": {
                            "availableToBack": [{"price": num(a), "size": num(b)} for a, b in atb],
                            "availableToLay": [{"price": num(a), "size": num(b)} for a, b in atl],
                            "tradedVolume": [
                                {"price": num(a), "size": num(b)}
                                for a, b in sorted(s.traded.items())
                            ],
                        },
                    }
                )
            out.append(
                {
                    "marketId": mid,
                    "isMarketDataDelayed": False,
                    "status": m.status,
                    "inplay": m.in_play,
                    "version": m.version,
                    "runners": runners,
                }
            )
        return out

    # --- orders ---------------------------------------------------------------------------------
    def _m_placeOrders(self, acct: str, p: dict[str, Any]) -> dict[str, Any]:
        mid = str(p.get("marketId"))
        m = self.ex.markets.get(mid)
        head = {"customerRef": p.get("customerRef"), "marketId": mid}
        reports, fills_all, placed = [], [], []
        market_error = ""
        if m is None:
            market_error = "MARKET_NOT_OPEN_FOR_BETTING"
        elif m.status == "SUSPENDED":
            market_error = "MARKET_SUSPENDED"
        elif m.status != "OPEN":
            market_error = "MARKET_NOT_OPEN_FOR_BETTING"
        instructions = list(p.get("instructions") or [])
        errors = [market_error or self._check(acct, m, ins) for ins in instructions]
        if any(errors):  # the API places all of a request's instructions or none of them
            for ins, err in zip(instructions, errors, strict=True):
                rep = {"status": "FAILURE", "instruction": ins}
                reports.append(rep | ({"errorCode": err} if err else {}))
            code = market_error or (
                next(e for e in errors if e) if len(errors) == 1 else "BET_ACTION_ERROR"
            )
            return head | {"status": "FAILURE", "errorCode": code, "instructionReports": reports}
        for ins in instructions:
            lo = ins["limitOrder"]
            price, size = _dec(lo["price"], "price"), _dec(lo["size"], "size")
            fok = lo.get("timeInForce") == "FILL_OR_KILL"
            sel = m.selections[int(ins["selectionId"])]  # type: ignore[union-attr]
            need = _dec(lo.get("minFillSize") or size, "minFillSize")
            bet, fills = self.ex.place(
                mid,
                int(ins["selectionId"]),
                ins["side"],
                price,
                size,
                acct,
                ref=str(ins.get("customerOrderRef") or ""),
                persistence=str(lo.get("persistenceType") or "LAPSE"),
                match=not fok or self._available(sel, ins["side"], price) >= need,
            )
            if fok:  # what did not match at once lapses (all of it when too little was there)
                bet.lapsed += bet.remaining
                self.ex.cancel(bet.bet_id, Decimal(0))
            fills_all += fills
            placed.append(bet)
            reports.append(
                {
                    "status": "SUCCESS",
                    "instruction": ins,
                    "betId": bet.bet_id,
                    "placedDate": "2026-12-07T21:00:00.000Z",
                    "averagePriceMatched": num(bet.avg_price),
                    "sizeMatched": num(bet.matched),
                    "orderStatus": bet.status,
                }
            )
        if placed:
            self._changed(mid, fills_all, placed)
        return head | {"status": "SUCCESS", "instructionReports": reports}

    def _check(self, acct: str, m: Any, ins: dict[str, Any]) -> str:
        if ins.get("orderType") != "LIMIT" or "limitOrder" not in ins:
            return "INVALID_ORDER_TYPE"
        if ins.get("side") not in ("BACK", "LAY"):
            return "INVALID_INPUT_DATA"
        sel = m.selections.get(int(ins.get("selectionId", 0)))
        if sel is None or sel.status != "ACTIVE":
            return "INVALID_RUNNER" if sel is None else "RUNNER_REMOVED"
        lo = ins["limitOrder"]
        price, size = _dec(lo.get("price"), "price"), _dec(lo.get("size"), "size")
        if not on_ladder(price):
            return "INVALID_ODDS"
        if size < MIN_STAKE or size != size.quantize(Decimal("0.01")):
            return "INVALID_BET_SIZE"
        if lo.get("persistenceType", "LAPSE") not in ("LAPSE", "PERSIST", "MARKET_ON_CLOSE"):
            return "INVALID_PERSISTENCE_TYPE"
        liability = size if ins["side"] == "BACK" else size * (price - 1)
        if liability + self.ex.exposure(acct) > self.ex.balance.get(acct, Decimal(0)):
            return "INSUFFICIENT_FUNDS"
        return ""

    @staticmethod
    def _available(sel: Any, side: str, price: Decimal) -> Decimal:
        """What a ``side`` bet at ``price`` could match now."""
        if side == "BACK":
            return sum((v for p, v in sel.ladder("atb").items() if p >= price), Decimal(0))
        return sum((v for p, v in sel.ladder("atl").items() if p <= price), Decimal(0))

    def _mine(self, acct: str, mid: str, bet_id: str) -> Bet | None:
        b = self.ex.bets.get(str(bet_id))
        return b if b is not None and b.account == acct and b.market_id == mid else None

    def _m_cancelOrders(self, acct: str, p: dict[str, Any]) -> dict[str, Any]:
        mid = str(p.get("marketId"))
        reports, bets = [], []
        for ins in p.get("instructions") or []:
            b = self._mine(acct, mid, ins.get("betId"))
            if b is None or b.remaining <= 0:
                reports.append(
                    {"status": "FAILURE", "errorCode": "BET_TAKEN_OR_LAPSED", "instruction": ins}
                )
                continue
            red = ins.get("sizeReduction")
            qty = self.ex.cancel(b.bet_id, None if red is None else _dec(red, "sizeReduction"))
            bets.append(b)
            reports.append(
                {
                    "status": "SUCCESS",
                    "instruction": ins,
                    "sizeCancelled": num(qty),
                    "cancelledDate": "2026-12-07T21:00:00.000Z",
                }
            )
        if bets:
            self._changed(mid, [], bets)
        ok = all(r["status"] == "SUCCESS" for r in reports)
        out = {
            "customerRef": p.get("customerRef"),
            "marketId": mid,
            "status": "SUCCESS" if ok else "FAILURE",
            "instructionReports": reports,
        }
        if not ok:
            out["errorCode"] = "BET_ACTION_ERROR"
        return out

    def _m_replaceOrders(self, acct: str, p: dict[str, Any]) -> dict[str, Any]:
        """A cancel of the bet's unmatched part and a new bet of that size at ``newPrice``."""
        mid = str(p.get("marketId"))
        m = self.ex.markets.get(mid)
        reports, bets, fills_all = [], [], []
        for ins in p.get("instructions") or []:
            b = self._mine(acct, mid, ins.get("betId"))
            price = _dec(ins.get("newPrice"), "newPrice")
            err = ""
            if m is None or m.status != "OPEN":
                err = (
                    "MARKET_SUSPENDED"
                    if m is not None and m.status == "SUSPENDED"
                    else "MARKET_NOT_OPEN_FOR_BETTING"
                )
            elif b is None or b.remaining <= 0:
                err = "BET_TAKEN_OR_LAPSED"
            elif not on_ladder(price):
                err = "INVALID_ODDS"
            if err:
                failed = {"status": "FAILURE", "errorCode": err}
                reports.append(
                    failed
                    | {
                        "cancelInstructionReport": failed | {"instruction": ins},
                        "placeInstructionReport": failed,
                    }
                )
                continue
            assert b is not None
            qty = self.ex.cancel(b.bet_id)
            new, fills = self.ex.place(
                mid, b.selection_id, b.side, price, qty, acct, ref=b.ref, persistence=b.persistence
            )
            bets += [b, new]
            fills_all += fills
            reports.append(
                {
                    "status": "SUCCESS",
                    "cancelInstructionReport": {
                        "status": "SUCCESS",
                        "instruction": {"betId": b.bet_id},
                        "sizeCancelled": num(qty),
                    },
                    "placeInstructionReport": {
                        "status": "SUCCESS",
                        "betId": new.bet_id,
                        "averagePriceMatched": num(new.avg_price),
                        "sizeMatched": num(new.matched),
                        "orderStatus": new.status,
                        "instruction": {
                            "selectionId": b.selection_id,
                            "side": b.side,
                            "orderType": "LIMIT",
                            "limitOrder": {
                                "price": num(price),
                                "size": num(qty),
                                "persistenceType": b.persistence,
                            },
                        },
                    },
                }
            )
        if bets:
            self._changed(mid, fills_all, bets)
        ok = all(r["status"] == "SUCCESS" for r in reports)
        out = {
            "customerRef": p.get("customerRef"),
            "marketId": mid,
            "status": "SUCCESS" if ok else "FAILURE",
            "instructionReports": reports,
        }
        if not ok:
            out["errorCode"] = reports[0]["errorCode"] if len(reports) == 1 else "BET_ACTION_ERROR"
        return out

    def _m_listCurrentOrders(self, acct: str, p: dict[str, Any]) -> dict[str, Any]:
        ids, mids = set(p.get("betIds") or []), set(p.get("marketIds") or [])
        refs = set(p.get("customerOrderRefs") or [])
        proj = p.get("orderProjection") or "ALL"
        out = []
        for b in self.ex.bets.values():
            if (
                b.account != acct
                or b.cleared
                or (ids and b.bet_id not in ids)
                or (mids and b.market_id not in mids)
                or (refs and b.ref not in refs)
            ):
                continue
            if proj != "ALL" and b.status != proj:
                continue
            out.append(
                {
                    "betId": b.bet_id,
                    "marketId": b.market_id,
                    "selectionId": b.selection_id,
                    "handicap": 0.0,
                    "priceSize": {"price": num(b.price), "size": num(b.size)},
                    "bspLiability": 0.0,
                    "side": b.side,
                    "status": b.status,
                    "persistenceType": b.persistence,
                    "orderType": "LIMIT",
                    "placedDate": "2026-12-07T21:00:00.000Z",
                    "averagePriceMatched": num(b.avg_price),
                    "sizeMatched": num(b.matched),
                    "sizeRemaining": num(b.remaining),
                    "sizeLapsed": num(b.lapsed),
                    "sizeCancelled": num(b.cancelled),
                    "sizeVoided": num(b.voided),
                    "customerOrderRef": b.ref,
                }
            )
        return self._page(p, "currentOrders", out)

    def _m_listClearedOrders(self, acct: str, p: dict[str, Any]) -> dict[str, Any]:
        status = p.get("betStatus") or "SETTLED"
        mids = set(p.get("marketIds") or [])
        if p.get("groupBy") == "MARKET":
            return {"clearedOrders": self._by_market(acct, status, mids), "moreAvailable": False}
        out = []
        for b in self.ex.bets.values():
            if b.account != acct or b.cleared != status or (mids and b.market_id not in mids):
                continue
            row = {
                "eventTypeId": "1",
                "marketId": b.market_id,
                "selectionId": b.selection_id,
                "handicap": 0.0,
                "betId": b.bet_id,
                "placedDate": "2026-12-07T21:00:00.000Z",
                "persistenceType": b.persistence,
                "orderType": "LIMIT",
                "side": b.side,
                "priceRequested": num(b.price),
                "settledDate": "2026-12-07T22:00:00.000Z",
                "betCount": 1,
                "priceMatched": num(b.avg_price),
                "sizeSettled": num(
                    b.matched
                    if status == "SETTLED"
                    else b.voided
                    if status == "VOIDED"
                    else Decimal(0)
                ),
                "profit": num(b.profit),
                "customerOrderRef": b.ref,
            }
            if b.outcome:
                row["betOutcome"] = b.outcome
            out.append(row)
        return self._page(p, "clearedOrders", out)

    def _page(self, p: dict[str, Any], key: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
        """``fromRecord`` / ``recordCount``, at most ``page_size`` rows a call (the API caps
        a listing's page too; a test lowers it to see the pages)."""
        start = int(p.get("fromRecord") or 0)
        count = min(int(p.get("recordCount") or self.page_size), self.page_size)
        return {key: rows[start : start + count], "moreAvailable": start + count < len(rows)}

    def _by_market(self, acct: str, status: str, mids: set[str]) -> list[dict[str, Any]]:
        """Cleared bets summed per market, with the commission on its net winnings."""
        out = []
        for mid in self.ex.markets:
            mine = [
                b
                for b in self.ex.bets.values()
                if b.account == acct and b.market_id == mid and b.cleared == status
            ]
            if not mine or (mids and mid not in mids):
                continue
            profit = sum((b.profit for b in mine), Decimal(0))
            commission = self.ex.commission.get((acct, mid), Decimal(0))
            out.append(
                {
                    "eventTypeId": "1",
                    "marketId": mid,
                    "betCount": len(mine),
                    "profit": num(profit),
                    "commission": num(commission),
                    "settledDate": "2026-12-07T22:00:00.000Z",
                }
            )
        return out

    def _m_getAccountFunds(self, acct: str, p: dict[str, Any]) -> dict[str, Any]:
        bal = self.ex.balance.get(acct, Decimal(0))
        exp = self.ex.exposure(acct)
        return {
            "availableToBetBalance": num(bal - exp),
            "exposure": num(-exp),
            "retainedCommission": 0.0,
            "exposureLimit": -10000.0,
            "discountRate": 0.0,
            "pointsBalance": 0,
            "wallet": "UK",
        }


# --- helpers the tests share ----------------------------------------------------------------------
#: the selections a test venue trades: Arsenal and Chelsea in the match odds market
SYMBOLS = ("1.200000001/47972", "1.200000001/48351")


def write_credentials(directory: Path, login: bool = True) -> Path:
    """A 0600 credentials file: the made-up app key, and the test user (a login) or a session
    token issued already (``login`` False: the server must know it, ``add_key``)."""
    path = Path(directory) / "betfair-keys.toml"
    secret = f'api_secret = "{USERNAME}"\napi_password = "{PASSWORD}"\n'
    if not login:
        secret = 'api_secret = "made-up-session-token"\n'
    path.write_text(f'api_key = "{APP_KEY}"\n{secret}')
    path.chmod(0o600)
    return path


def venue_extra(server: BetfairServer, directory: Path, symbols: tuple[str, ...] = SYMBOLS) -> str:
    """The ``[[venues]]`` keys that point a betfair venue at ``server`` (besides rest_url)."""
    syms = ", ".join(f'"{s}"' for s in symbols)
    return (
        f'stream_url = "{server.stream_url}"\nstream_ca_file = "{server.ca_file}"\n'
        f'credentials_file = "{write_credentials(directory)}"\nsymbols = [{syms}]\n'
        "heartbeat_ms = 500\nstale_after_s = 2.0\nreconnect_min_s = 0.1\nrest_poll_s = 0.5\n"
    )
