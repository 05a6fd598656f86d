"""The Betfair Exchange Stream API of the local server: TLS on 127.0.0.1, CRLF-delimited JSON.

A connection gets ``{"op": "connection"}`` at once, must send ``authentication`` (appKey +
session) before anything else, then ``marketSubscription`` / ``orderSubscription`` /
``heartbeat``. Each subscription is answered with a ``status`` and a full image (``ct``
"SUB_IMAGE", or "RESYNC" when the client resubscribes with its ``initialClk`` / ``clk``: this
server never replays deltas, it sends the image again), then deltas (``mcm`` / ``ocm`` without
``ct``) and a ``HEARTBEAT`` after ``heartbeatMs`` of silence. Market changes are diffs against
what this connection was last sent: a ladder level ``[price, size]`` with size 0 is gone.

Faults (``tests.venues.core.Faults``): ``disconnect`` drops every stream connection;
``stall`` sends nothing (no heartbeat either) while armed: a stale stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import ssl
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from tests.venues.betfair_market import Bet, Exchange, Market, now_ms
from tests.venues.core import Faults

CRLF = b"\r\n"


def num(d: Decimal) -> float | int:
    return int(d) if d == d.to_integral_value() else float(d)


def market_definition(m: Market) -> dict[str, Any]:
    active = sum(1 for s in m.selections.values() if s.status == "ACTIVE")
    return {
        "betDelay": 5 if m.in_play else 0,
        "bspReconciled": False,
        "crossMatching": True,
        "discountAllowed": True,
        "marketTime": "2026-12-08T20:00:00.000Z",
        "openDate": "2026-12-08T20:00:00.000Z",
        "suspendTime": "2026-12-08T20:00:00.000Z",
        "numberOfActiveRunners": active if m.status != "CLOSED" else 0,
        "regulators": ["MR_INT"],
        "runnersVoidable": False,
        "timezone": "Europe/London",
        "countryCode": "GB",
        "bspMarket": False,
        "turnInPlayEnabled": True,
        "persistenceEnabled": True,
        "marketBaseRate": 5.0,
        "eventId": m.event,
        "eventTypeId": "1",
        "numberOfWinners": 1,
        "bettingType": "ODDS",
        "marketType": "MATCH_ODDS",
        "status": m.status,
        "inPlay": m.in_play,
        "complete": True,
        "version": m.version,
        "runners": [
            {"id": s.selection_id, "sortPriority": k + 1, "status": s.status}
            for k, s in enumerate(m.selections.values())
        ],
    }


def market_state(m: Market) -> dict[str, Any]:
    """What a connection is sent of a market: its definition and each runner's ladders."""
    runners = {}
    for s in m.selections.values():
        runners[s.selection_id] = {
            "atb": s.ladder("atb"),
            "atl": s.ladder("atl"),
            "trd": dict(s.traded),
            "ltp": s.last_traded,
            "tv": sum(s.traded.values(), Decimal(0)),
        }
    return {"def": market_definition(m), "runners": runners}


def _levels(new: dict[Decimal, Decimal], old: dict[Decimal, Decimal]) -> list[list[float | int]]:
    out = [[num(p), num(v)] for p, v in sorted(new.items()) if old.get(p) != v]
    out += [[num(p), 0] for p in sorted(old) if p not in new]
    return out


def market_change(m: Market, new: dict[str, Any], old: dict[str, Any] | None) -> dict | None:
    """The ``mc`` entry taking a client from ``old`` to ``new`` (None: nothing changed)."""
    mc: dict[str, Any] = {"id": m.market_id}
    if old is None:
        mc["img"] = True
        old = {"def": None, "runners": {}}
    if new["def"] != old["def"]:
        mc["marketDefinition"] = new["def"]
    rc = []
    for sid, r in new["runners"].items():
        o = old["runners"].get(sid, {"atb": {}, "atl": {}, "trd": {}, "ltp": None, "tv": None})
        ch: dict[str, Any] = {"id": sid}
        for key in ("atb", "atl", "trd"):
            lv = _levels(r[key], o[key])
            if lv:
                ch[key] = lv
        if r["ltp"] and r["ltp"] != o["ltp"]:
            ch["ltp"] = num(r["ltp"])
        if r["tv"] != o["tv"] and (r["tv"] or o["tv"] is not None):
            ch["tv"] = num(r["tv"])
        if len(ch) > 1 or mc.get("img"):
            rc.append(ch)
    if rc:
        mc["rc"] = rc
    return mc if len(mc) > 1 else None


def order_json(b: Bet) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": b.bet_id,
        "p": num(b.price),
        "s": num(b.size),
        "side": "B" if b.side == "BACK" else "L",
        "status": "E" if b.status == "EXECUTABLE" else "EC",
        "pt": {"LAPSE": "L", "PERSIST": "P", "MARKET_ON_CLOSE": "MOC"}[b.persistence],
        "ot": "L",
        "pd": b.placed_ms,
        "sm": num(b.matched),
        "sr": num(b.remaining),
        "sl": num(b.lapsed),
        "sc": num(b.cancelled),
        "sv": num(b.voided),
        "rfo": b.ref,
        "rfs": "",
    }
    if b.matched:
        out["avp"] = num(b.avg_price)
        out["md"] = b.matched_ms
    return out


@dataclass
class Conn:
    writer: asyncio.StreamWriter
    account: str = ""
    market_sub: int = 0  # the subscription's id; 0 = none
    markets: set[str] | None = None  # None: every market
    order_sub: int = 0
    heartbeat_ms: int = 5000
    sent: dict[str, dict[str, Any]] = field(default_factory=dict)  # market id -> last state
    clk: itertools.count = field(default_factory=lambda: itertools.count(1))
    last_send: float = 0.0


class StreamServer:
    """The TLS stream endpoint over an ``Exchange`` (runs on the local server's loop)."""

    def __init__(
        self, exchange: Exchange, faults: Faults, sessions: dict[str, tuple[str, str]]
    ) -> None:
        self.ex, self.faults, self.sessions = exchange, faults, sessions
        self.conns: list[Conn] = []
        self.port = 0
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.connections = 0  # accepted so far (a test counts reconnects)

    async def start(self, ctx: ssl.SSLContext, port: int = 0) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", port, ssl=ctx)
        self.port = self._server.sockets[0].getsockname()[1]
        t = asyncio.get_running_loop().create_task(self._heartbeats())
        self._tasks.add(t)

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        self.drop_all()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    def drop_all(self) -> int:
        n = len(self.conns)
        for c in self.conns:
            with contextlib.suppress(Exception):
                c.writer.transport.abort()
        self.conns.clear()
        return n

    # --- one connection -------------------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        c = Conn(writer)
        self.connections += 1
        self.conns.append(c)
        self._send(c, {"op": "connection", "connectionId": f"002-{self.connections:06d}"})
        try:
            while True:
                line = await reader.readuntil(CRLF)
                msg = json.loads(line)
                if not self._handle(c, msg):
                    break
        except (asyncio.IncompleteReadError, ConnectionError, ValueError, ssl.SSLError):
            pass
        finally:
            if c in self.conns:
                self.conns.remove(c)
            with contextlib.suppress(Exception):
                writer.close()

    def _status(
        self, c: Conn, mid: int, code: str = "", why: str = "", close: bool = False
    ) -> None:
        msg: dict[str, Any] = {"op": "status", "id": mid, "statusCode": "SUCCESS"}
        if code:
            msg |= {"statusCode": "FAILURE", "errorCode": code, "errorMessage": why}
        msg["connectionClosed"] = close
        self._send(c, msg)

    def _handle(self, c: Conn, msg: dict[str, Any]) -> bool:
        op, mid = msg.get("op"), int(msg.get("id") or 0)
        if op == "authentication":
            got = self.sessions.get(str(msg.get("session")))
            if got is None or got[1] != msg.get("appKey"):
                self._status(c, mid, "INVALID_SESSION_INFORMATION", "bad session", close=True)
                return False
            c.account = got[0]
            self._status(c, mid)
            return True
        if not c.account:
            self._status(c, mid, "NO_SESSION", "authenticate first", close=True)
            return False
        if op == "heartbeat":
            self._status(c, mid)
        elif op == "marketSubscription":
            ids = (msg.get("marketFilter") or {}).get("marketIds")
            c.market_sub, c.markets, c.sent = mid, set(ids) if ids else None, {}
            c.heartbeat_ms = int(msg.get("heartbeatMs") or 5000)
            self._status(c, mid)
            resync = bool(msg.get("clk"))
            self._push_markets(c, ct="RESYNC" if resync else "SUB_IMAGE")
        elif op == "orderSubscription":
            c.order_sub = mid
            c.heartbeat_ms = int(msg.get("heartbeatMs") or 5000)
            self._status(c, mid)
            mine = [b for b in self.ex.bets.values() if b.account == c.account]
            self._push_orders(c, mine, ct="RESYNC" if msg.get("clk") else "SUB_IMAGE")
        else:
            self._status(c, mid, "INVALID_REQUEST", f"unknown op {op!r}")
        return True

    # --- pushing --------------------------------------------------------------------------------
    def _send(self, c: Conn, msg: dict[str, Any]) -> None:
        stalled = self.faults.active("stall") is not None
        if stalled and msg.get("op") not in ("connection", "status"):
            return
        c.last_send = asyncio.get_running_loop().time()
        with contextlib.suppress(Exception):
            c.writer.write(json.dumps(msg).encode() + CRLF)

    def _clk(self, c: Conn, msg: dict[str, Any], ct: str) -> dict[str, Any]:
        msg |= {"clk": f"AAA{next(c.clk)}", "pt": now_ms()}
        if ct in ("SUB_IMAGE", "RESYNC"):
            msg |= {"initialClk": f"INIT{id(c) % 100000}", "conflateMs": 0}
            msg["heartbeatMs"] = c.heartbeat_ms
        if ct:
            msg["ct"] = ct
        return msg

    def _push_markets(self, c: Conn, ct: str = "", only: str | None = None) -> None:
        mcs = []
        for m in self.ex.markets.values():
            if (c.markets is not None and m.market_id not in c.markets) or (
                only is not None and m.market_id != only
            ):
                continue
            state = market_state(m)
            old = None if ct else c.sent.get(m.market_id)
            mc = market_change(m, state, old)
            c.sent[m.market_id] = state
            if mc is not None:
                mcs.append(mc)
        if mcs or ct:
            self._send(c, self._clk(c, {"op": "mcm", "id": c.market_sub, "mc": mcs}, ct))

    def _push_orders(self, c: Conn, bets: list[Bet], ct: str = "") -> None:
        by_market: dict[str, dict[int, list[dict[str, Any]]]] = {}
        for b in bets:
            by_market.setdefault(b.market_id, {}).setdefault(b.selection_id, []).append(
                order_json(b)
            )
        oc = []
        for mid, sels in by_market.items():
            entry: dict[str, Any] = {"id": mid}
            entry["orc"] = [
                {"id": sid, "uo": uo} | ({"fullImage": True} if ct else {})
                for sid, uo in sels.items()
            ]
            if self.ex.markets[mid].status == "CLOSED":
                entry["closed"] = True
            oc.append(entry)
        if oc or ct:
            self._send(c, self._clk(c, {"op": "ocm", "id": c.order_sub, "oc": oc}, ct))

    def market_changed(self, market_id: str) -> None:
        for c in list(self.conns):
            if c.market_sub:
                self._push_markets(c, only=market_id)

    def orders_changed(self, bets: list[Bet]) -> None:
        for c in list(self.conns):
            mine = [b for b in bets if b.account == c.account]
            if c.order_sub and mine:
                self._push_orders(c, mine)

    async def _heartbeats(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(0.05)
            now = loop.time()
            for c in list(self.conns):
                if now - c.last_send < c.heartbeat_ms / 1000:
                    continue
                for sub, op in ((c.market_sub, "mcm"), (c.order_sub, "ocm")):
                    if sub:
                        self._send(c, self._clk(c, {"op": op, "id": sub}, "HEARTBEAT"))
