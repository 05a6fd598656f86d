"""Live execution on Polymarket's CLOB: signed limit orders, the user channel, resolution.

Why it is shaped this way (the rules of engine/venues/ccxt_exec.py, on this venue's protocol):
exec's loop never waits on a network, so ``submit`` / ``cancel`` / ``replace`` only check,
record and enqueue; the requests, the user channel and the REST checks run on the client's
``AsyncBridge`` thread, and what the venue says goes through the in-flight ``OrderTable``
(engine/venues/ccxt_orders.py) as ccxt-shaped dicts, so each order yields its events once.

What is particular to Polymarket:
- An order is an EIP-712 struct signed by the wallet (``polymarket_wire.sign_order``); the
  venue has no client order ids, but its order id is the struct's typed-data hash, known before
  the request leaves. So a submit that times out is UNKNOWN and settled by ``GET
  /data/order/<hash>``, and the (client order id, hash) pairs are journaled next to the venue's
  record (``journal``) so a restarted exec recognises its own orders.
- Time in force: GTC, GTD (``expire_ns``; the venue wants a minute's margin, added), FOK, and
  IOC as the venue's FAK. Limit orders only; no amend: a replace cancels and signs a new order
  for the rest (the order keeps its client order id; ``OrderReplaced`` when the new one stands).
- Fills come from the user channel's ``trade`` messages (ours as taker, or in ``maker_orders``
  as maker), backed by ``GET /data/trades``; a trade the chain later FAILS is counted
  (``stats["failed_trades"]``) and left to reconciliation.
- Resolution: a market our instruments belong to is checked every ``rest_poll_s``; once
  resolved, each position is closed by a ``Settlement`` (RESOLVED, ``px`` the payout in ticks:
  1 or 0, 0.5 for a 50/50, ``outcome`` 1 when it pays, else 0) and its tokens are HALTED.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import random
import threading
import time
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import msgspec

from engine.enums import (
    CancelRejectReason,
    ExchangeStatusKind,
    OrderFlag,
    OrderType,
    ReplaceRejectReason,
    SettlementKind,
    Side,
    TimeInForce,
)
from engine.instruments import Instrument, InstrumentTable
from engine.messages import (
    CancelOrder,
    ExchangeStatus,
    NewOrder,
    OrderCancelRejected,
    OrderPartiallyFilled,
    OrderRejected,
    OrderReplaced,
    OrderReplaceRejected,
    ReplaceOrder,
    Settlement,
)
from engine.venues import polymarket_wire as wire
from engine.venues.base import VenueEvent
from engine.venues.ccxt_markets import VenueMarket, venue_amount, venue_price
from engine.venues.ccxt_orders import OrderTable, Phase, Tracked
from engine.venues.ccxt_session import AsyncBridge
from engine.venues.polymarket_rest import ClobError, ClobRest, RateLimited
from engine.venues.reports import BalanceReport, OrderStatusReport, StatusReports

__all__ = ["PolymarketExecutionClient"]

log = logging.getLogger("gekko.venues.polymarket")

_TIF = {TimeInForce.GTC: "GTC", TimeInForce.GTD: "GTD", TimeInForce.FOK: "FOK"}
_TIF[TimeInForce.IOC] = "FAK"
_STATUS = {"LIVE": "open", "DELAYED": "open", "MATCHED": "closed", "UNMATCHED": "expired"}
_STATUS |= {"CANCELED": "canceled", "CANCELLED": "canceled", "INVALID": "rejected"}
_E6 = Decimal(10**6)


class PolymarketExecutionClient(StatusReports):
    """``engine.venues.base.ExecutionClient`` for the CLOB (see the module docstring).

    Settings: ``rest_url``, ``ws_url``, ``timeout_ms``, ``chain_id``, ``wallet_type``,
    ``ping_s``, ``rest_poll_s``, ``unknown_window_s`` (how long an UNKNOWN submit
    may stay unfound before it is rejected), ``reconnect_min_s`` / ``reconnect_max_s``.
    ``credentials.secret`` is the wallet's private key, ``credentials.api_key`` the address
    holding the funds ("" = the wallet)."""

    live = True

    def __init__(
        self,
        name: str,
        instruments: InstrumentTable,
        markets: Mapping[str, VenueMarket],
        settings: Mapping[str, Any] | None = None,
        credentials: Any = None,
        *,
        journal: Path | None = None,
        start: bool = True,
    ) -> None:
        s = dict(settings or {})
        self.name, self.settings = name, s
        self._insts = [i for i in instruments if i.symbol in markets]
        self._by_id = {i.instrument_id: i for i in self._insts}
        self._market = {i.instrument_id: markets[i.symbol] for i in self._insts}
        self._by_token = {m.venue_symbol: self._by_id[iid] for iid, m in self._market.items()}
        self._cid = {iid: str(m.instrument.get("market_id", "")) for iid, m in self._market.items()}
        self.table = OrderTable(name, "pm", self._insts)
        self._key = str(getattr(credentials, "secret", "") or "")
        # the address holding the funds: the keys' api_key (a proxy or safe wallet's), or the
        # wallet itself ("" or its own address, wallet_type 0)
        wallet_type = int(s.get("wallet_type", 0))
        self._funder = str(getattr(credentials, "api_key", "") or "") if wallet_type else ""
        self._chain = int(s.get("chain_id", wire.CHAIN_ID))
        self._lock = threading.Lock()
        self._out: collections.deque[VenueEvent] = collections.deque()
        self._bridge = AsyncBridge(f"exec-{name}")
        self._rest: ClobRest | None = None
        self._state, self.state_reason = "down", "not started"
        self._hold_until = 0.0  # monotonic: no request before (a 429's Retry-After)
        self._start_lots: dict[int, int] = {}
        self._settled: dict[int, int] = {}
        self.resolved: dict[str, dict[str, Decimal]] = {}
        self._usdc: tuple[float, float] = (0.0, 0.0)
        self._journal = journal.with_suffix(".polymarket-orders") if journal else None
        self._poke = asyncio.Event()
        self._closing = False
        self.stats: collections.Counter[str] = collections.Counter()
        if start:
            self.start()

    # --- life cycle -------------------------------------------------------------------------------
    def start(self, timeout_s: float = 30.0) -> bool:
        """Derive the API key, restore journaled orders, take the venue's view; then the user
        channel and the REST checks run. False (state "down") when the venue did not answer."""
        self._bridge.start()
        ok = True
        try:
            self._bridge.call(self._connect(), timeout_s)
        except Exception as exc:  # the venue is down: the loop keeps trying
            ok, self.state_reason = False, f"start: {exc!r}"
            log.warning("%s: %s", self.name, self.state_reason)
        self._bridge.submit(self._run())
        return ok

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        if self._bridge.running and self._rest is not None:
            with contextlib.suppress(Exception):
                self._bridge.call(self._rest.close(), 5.0)
        self._bridge.stop()
        self._state = "down"

    def state(self) -> str:
        return self._state

    def wait_synced(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._state == "connected":
                return True
            time.sleep(0.01)
        return False

    # --- requests ---------------------------------------------------------------------------------
    def submit(self, order: NewOrder, now_ns: int) -> list[VenueEvent]:
        ins = self._by_id.get(order.instrument_id)
        why = self._refusal(order, ins)
        if why:
            return [OrderRejected.for_order(order, f"{self.name}: {why}", now_ns, now_ns)]
        assert ins is not None
        with self._lock:
            if self.table.get(order.client_order_id) is not None:
                why = f"{self.name}: client order id {order.client_order_id} was used already"
                return [OrderRejected.for_order(order, why, now_ns, now_ns)]
            self.table.add(order, ins, now_ns)
        self._bridge.submit(self._send_new(order.client_order_id))
        return []

    def _refusal(self, o: NewOrder, ins: Instrument | None) -> str:
        if ins is None:
            return f"unknown instrument {o.instrument_id}"
        if self._cid[ins.instrument_id] in self.resolved:
            return f"{ins.symbol}: the market is resolved"
        if o.order_type != OrderType.LIMIT:
            return "limit orders only (a market order is a FOK or IOC limit at your worst price)"
        if o.tif not in _TIF:
            return f"time in force {o.tif}: the CLOB has GTC, GTD, FOK and IOC (FAK)"
        if o.tif == TimeInForce.GTD and o.expire_ns <= 0:
            return "GTD needs expire_ns"
        if o.flags & OrderFlag.POST_ONLY and o.tif not in (TimeInForce.GTC, TimeInForce.GTD):
            return "post-only is for GTC and GTD orders"
        if o.qty <= 0 or not ins.px_in_range(o.px):
            return f"price {o.px} ticks must be inside (0, 1) and qty {o.qty} > 0"
        return ""

    def cancel(self, cancel: CancelOrder, now_ns: int) -> list[VenueEvent]:
        with self._lock:
            t = self.table.get(cancel.client_order_id)
        why = _closed(t)
        if why is not None:
            detail = "unknown order" if why == 1 else "the order is no longer open"
            return [OrderCancelRejected.for_request(cancel, why, detail, now_ns, now_ns)]
        self._bridge.submit(self._cancel(cancel))
        return []

    def replace(self, replace: ReplaceOrder, now_ns: int) -> list[VenueEvent]:
        with self._lock:
            t = self.table.get(replace.client_order_id)
        why = _closed(t)
        R = ReplaceRejectReason
        if why is not None:
            detail = "unknown order" if why == 1 else "the order is no longer open"
            return [OrderReplaceRejected.for_request(replace, why, detail, now_ns, now_ns)]
        assert t is not None
        if replace.new_qty <= 0 or not t.inst.px_in_range(replace.new_px):
            detail = f"new price {replace.new_px} / qty {replace.new_qty} out of range"
            return [OrderReplaceRejected.for_request(replace, R.INVALID, detail, now_ns, now_ns)]
        self._bridge.submit(self._replace(replace))
        return []

    def on_market_data(self, msg: object, now_ns: int) -> list[VenueEvent]:
        if type(msg) is ExchangeStatus and "resolved" in msg.reason:  # type: ignore[attr-defined]
            self._bridge.loop.call_soon_threadsafe(self._poke.set)  # check it now
        return []

    def poll(self, now_ns: int) -> list[VenueEvent]:
        out: list[VenueEvent] = []
        q = self._out
        while q:
            out.append(q.popleft())
        return out

    # --- queries ----------------------------------------------------------------------------------
    def open_orders(self) -> list[NewOrder]:
        with self._lock:
            return [
                msgspec.structs.replace(t.order, px=t.px, qty=t.leaves_lots())
                for t in self.table.open()
            ]

    def fills_since(self, fill_id: int = 0) -> list[OrderPartiallyFilled]:
        with self._lock:
            return self.table.fills_since(fill_id)

    def knows_order(self, client_order_id: int) -> bool:
        with self._lock:
            return self.table.get(client_order_id) is not None

    def query_order(self, client_order_id: int) -> OrderStatusReport | None:
        with self._lock:
            return self.table.report(client_order_id)

    def order_status_reports(self) -> list[OrderStatusReport]:
        with self._lock:
            reps = [self.table.report(t.order.client_order_id) for t in self.table.open()]
        return [r for r in reps if r is not None]

    def positions(self) -> dict[int, int]:
        """Shares held per token in lots: what the venue held at start, plus our fills, less
        what resolution settled."""
        out = dict(self._start_lots)
        with self._lock:
            for f in self.table.fills:
                sign = 1 if f.side == Side.BUY else -1
                out[f.instrument_id] = out.get(f.instrument_id, 0) + sign * f.fill_qty
        for iid, lots in self._settled.items():
            out[iid] = out.get(iid, 0) - lots
        return {k: v for k, v in out.items() if v}

    def balances(self) -> list[BalanceReport]:
        total, free = self._usdc
        return [BalanceReport(venue=self.name, currency=wire.QUOTE, total=total, free=free)]

    # --- the bridge: start, user channel, REST checks ---------------------------------------------
    async def _connect(self) -> None:
        s = self.settings
        self._rest = ClobRest(str(s.get("rest_url") or ""), int(s.get("timeout_ms", 10_000)))
        await self._rest.derive_creds(self._key, self._chain)
        for iid, m in self._market.items():
            bal = await self._rest.request(
                "GET",
                "/balance-allowance",
                params={"asset_type": "CONDITIONAL", "token_id": m.venue_symbol},
                auth=True,
            )
            lots = self._by_id[iid].qty_to_lots(Decimal(str(bal.get("balance", 0))) / _E6)
            if lots:
                self._start_lots[iid] = lots
        self._restore()
        await self._backfill(time.time_ns())
        self._state, self.state_reason = "connected", ""

    async def _run(self) -> None:
        tasks = [asyncio.create_task(self._user_channel()), asyncio.create_task(self._checks())]
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()

    async def _checks(self) -> None:
        """Every ``rest_poll_s`` (or at once when poked): orders, trades, resolutions."""
        every = float(self.settings.get("rest_poll_s", 2.0))
        while not self._closing:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._poke.wait(), every)
            self._poke.clear()
            try:
                await self._wait_hold()
                if self._rest is None or self._rest.creds is None:
                    await self._connect()
                await self._backfill(time.time_ns())
                await self._check_resolutions(time.time_ns())
                if self._state == "down":
                    self._state, self.state_reason = "connected", ""
            except RateLimited as e:
                self._hold_until = time.monotonic() + e.retry_after_s
            except Exception as exc:  # the venue is unreachable: say so, try again
                if self._closing:
                    return
                self._state, self.state_reason = "down", f"REST: {exc!r}"
                log.warning("%s: %s", self.name, self.state_reason)

    async def _wait_hold(self) -> None:
        wait = self._hold_until - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)

    async def _user_channel(self) -> None:
        wait = float(self.settings.get("reconnect_min_s", 0.5))
        most = float(self.settings.get("reconnect_max_s", 30.0))
        while not self._closing:
            started = time.monotonic()
            try:
                await self._user_session()
            except asyncio.CancelledError:
                return
            except Exception as exc:  # reconnect; the REST check fills what was missed
                log.warning("%s: user channel: %r", self.name, exc)
            self.stats["user_reconnects"] += 1
            self._poke.set()
            if time.monotonic() - started >= most:
                wait = float(self.settings.get("reconnect_min_s", 0.5))
            await asyncio.sleep(wait * (0.5 + 0.5 * random.random()))
            wait = min(wait * 2, most)

    async def _user_session(self) -> None:
        if self._rest is None or self._rest.creds is None:
            raise ClobError(401, "no API key yet")
        key, secret, passphrase = self._rest.creds
        url = str(self.settings.get("ws_url") or "").rstrip("/") + "/ws/user"
        stale = float(self.settings.get("stale_after_s", 30.0))
        ping = float(self.settings.get("ping_s", 10.0))
        async with aiohttp.ClientSession() as s, s.ws_connect(url) as ws:
            auth = {"apiKey": key, "secret": secret, "passphrase": passphrase}
            markets = sorted(set(self._cid.values()))
            await ws.send_str(json.dumps({"auth": auth, "markets": markets, "type": "user"}))
            self._poke.set()  # a backfill after every (re)connect
            last_ping = heard = time.monotonic()
            while not self._closing:
                if time.monotonic() - last_ping >= ping:
                    await ws.send_str("PING")
                    last_ping = time.monotonic()
                try:
                    msg = await asyncio.wait_for(ws.receive(), min(ping, stale))
                except TimeoutError:
                    if time.monotonic() - heard > stale:  # not even a PONG: a dead link
                        raise ClobError(0, f"user channel silent for {stale:g} s") from None
                    continue
                heard = time.monotonic()
                if msg.type != aiohttp.WSMsgType.TEXT:
                    raise ClobError(0, f"user channel closed ({msg.type.name})")
                if msg.data not in ("PONG", "PING"):
                    self._on_user(msg.data, time.time_ns())

    def _on_user(self, text: str, now: int) -> None:
        try:
            data = json.loads(text)
        except ValueError:
            return
        for m in data if isinstance(data, list) else [data]:
            if not isinstance(m, dict):
                continue
            if m.get("event_type") == "trade":
                self._apply_trade(m, now)
            elif m.get("event_type") == "order":
                self._apply_order(m, now)

    # --- the venue's word -> the table ------------------------------------------------------------
    def _emit(self, evs: list[object]) -> None:
        self._out.extend(evs)

    def _apply_order(self, o: Mapping[str, Any], now: int) -> None:
        status = _STATUS.get(str(o.get("status") or "").upper(), "open")
        if o.get("type") == "CANCELLATION":
            status = "canceled"
        d = {
            "id": o.get("id"),
            "status": status,
            "filled": o.get("size_matched"),
            "amount": o.get("original_size"),
            "timestamp": _ms(o.get("timestamp") or o.get("created_at")),
        }
        with self._lock:
            if self.table.find(None, d["id"]) is not None:
                self._emit(self.table.on_order(d, now))

    def _apply_trade(self, tr: Mapping[str, Any], now: int) -> None:
        if str(tr.get("status") or "").upper() == "FAILED":
            self.stats["failed_trades"] += 1
            return
        ts = _ms(tr.get("match_time") or tr.get("timestamp"))
        legs = [(str(tr.get("taker_order_id")), tr.get("size"), tr.get("price"), "taker")]
        for mo in tr.get("maker_orders") or []:
            legs.append(
                (str(mo.get("order_id")), mo.get("matched_amount"), mo.get("price"), "maker")
            )
        with self._lock:
            for vid, size, px, role in legs:
                t = self.table.find(None, vid)
                if t is None:
                    continue
                fee = _fee(self._market[t.order.instrument_id], role, px, size)
                d = {
                    "id": f"{tr.get('id')}:{vid}",
                    "order": vid,
                    "amount": size,
                    "price": px,
                    "takerOrMaker": role,
                    "timestamp": ts,
                    "fee": {"cost": fee, "currency": wire.QUOTE},
                }
                self._emit(self.table.on_trade(d, now))

    async def _backfill(self, now: int) -> None:
        """The REST view: our open orders, the ones that closed, every trade of ours."""
        rest = self._rest
        assert rest is not None
        live = await rest.pages("/data/orders", auth=True)
        seen = set()
        for o in live:
            seen.add(str(o.get("id")))
            self._apply_order(o, now)
        with self._lock:
            gone = [t for t in self.table.open() if t.venue_id and t.venue_id not in seen]
        for t in gone:
            o = await rest.request("GET", f"/data/order/{t.venue_id}", auth=True)
            if o:
                self._apply_order(o, now)
            elif t.phase == Phase.UNKNOWN:
                self._unknown_missing(t, now)
        for tr in await rest.pages("/data/trades", auth=True):
            self._apply_trade(tr, now)
        bal = await rest.request(
            "GET", "/balance-allowance", params={"asset_type": "COLLATERAL"}, auth=True
        )
        usdc = float(Decimal(str(bal.get("balance", 0))) / _E6)
        self._usdc = (usdc, usdc)

    def _unknown_missing(self, t: Tracked, now: int) -> None:
        window = float(self.settings.get("unknown_window_s", 10.0)) * 1e9
        if now - t.sent_ns >= window:
            with self._lock:
                why = "the venue never took it (not found after the submit failed)"
                self._emit(self.table.resolve_missing(t.order.client_order_id, why, now))

    async def _check_resolutions(self, now: int) -> None:
        assert self._rest is not None
        for cid in sorted({c for c in self._cid.values() if c and c not in self.resolved}):
            m = await self._rest.request("GET", f"/markets/{cid}")
            pays = wire.resolution_payouts(m) if isinstance(m, dict) else None
            if pays is not None:
                self._settle(cid, pays, now)

    def _settle(self, cid: str, pays: Mapping[str, Decimal], now: int) -> None:
        """Close every position of a resolved market at its payout (see the module docstring)."""
        self.resolved[cid] = dict(pays)
        held = self.positions()
        for iid, m in self._market.items():
            if self._cid[iid] != cid or m.venue_symbol not in pays:
                continue
            ins, pay = self._by_id[iid], pays[m.venue_symbol]
            pos = held.get(iid, 0)
            halted = int(ExchangeStatusKind.HALTED)
            self._emit([ExchangeStatus(iid, halted, f"market resolved: pays {pay}", now, now)])
            if pos:
                self._settled[iid] = self._settled.get(iid, 0) + pos
                px, won = ins.px_to_ticks(pay), int(pay > 0)
                kind = int(SettlementKind.RESOLVED)
                self._emit([Settlement(iid, kind, px, won, pos, now, now, iid)])
                self.stats["settlements"] += 1

    # --- orders out -------------------------------------------------------------------------------
    def _signed(self, t: Tracked, qty: int, px: int) -> tuple[dict[str, Any], str]:
        o, ins = t.order, t.inst
        m = self._market[o.instrument_id]
        expiration = o.expire_ns // 1_000_000_000 + 60 if o.tif == TimeInForce.GTD else 0
        s = self.settings
        d = wire.sign_order(
            self._key,
            self._chain,
            token_id=m.venue_symbol,
            side=o.side,
            price=venue_price(ins, px),
            size=venue_amount(ins, qty),
            tick=m.tick,
            fee_rate_bps=int(m.taker_fee_bps),
            expiration=expiration,
            funder=self._funder,
            signature_type=int(s.get("wallet_type", 0)),
        )
        return d, wire.order_hash(d, self._chain)

    def _journal_add(self, coid: int, vid: str, t: Tracked) -> None:
        """One line per venue order: (client order id, hash) and the order's terms then (a
        replace's new generation, price and total size)."""
        if self._journal is None:
            return
        line = {"coid": coid, "vid": vid, "gen": t.gen, "px": t.px, "amount": str(t.amount)}
        line["order"] = msgspec.to_builtins(t.order)
        with self._journal.open("a") as f:
            f.write(json.dumps(line) + "\n")

    def _restore(self) -> None:
        """Journaled orders back into the table, each at its last generation's terms (their
        state comes from the backfill; no events: exec has them already)."""
        if self._journal is None or not self._journal.exists():
            return
        for line in self._journal.read_text().splitlines():
            with contextlib.suppress(ValueError, KeyError, msgspec.ValidationError):
                e = json.loads(line)
                order = msgspec.convert(e["order"], NewOrder)
                ins = self._by_id.get(order.instrument_id)
                if ins is None:
                    continue
                with self._lock:
                    t = self.table.get(order.client_order_id)
                    if t is None:
                        t = self.table.add(order, ins, 0)
                        self.stats["restored"] += 1
                    t.phase, t.accepted = Phase.OPEN, True
                    t.gen, t.px, t.amount = int(e["gen"]), int(e["px"]), Decimal(e["amount"])
                    self.table.expect_venue_id(order.client_order_id, str(e["vid"]))

    async def _post(self, t: Tracked, d: dict[str, Any]) -> dict[str, Any]:
        assert self._rest is not None and self._rest.creds is not None
        o = t.order
        body = {
            "order": d,
            "owner": self._rest.creds[0],
            "orderType": _TIF[TimeInForce(o.tif)],
            "postOnly": bool(o.flags & OrderFlag.POST_ONLY),
        }
        await self._wait_hold()
        got: dict[str, Any] = await self._rest.request("POST", "/order", body=body, auth=True)
        return got

    async def _send_new(self, coid: int) -> None:
        with self._lock:
            t = self.table.get(coid)
        if t is None or self._rest is None or self._rest.creds is None:
            self._reject(coid, "venue down: no API key")
            return
        d, vid = self._signed(t, t.order.qty, t.order.px)
        with self._lock:
            self.table.expect_venue_id(coid, vid)  # its id before the answer: the stream may win
        self._journal_add(coid, vid, t)
        try:
            got = await self._post(t, d)
        except RateLimited as e:
            self._hold_until = time.monotonic() + e.retry_after_s
            self._reject(coid, f"rate limited by the venue (retry after {e.retry_after_s:g} s)")
            return
        except ClobError as e:
            self._reject(coid, f"refused by the venue: {e.message}")
            return
        except (TimeoutError, aiohttp.ClientError) as e:
            with self._lock:
                self.table.mark_unknown(coid)  # it may be there: the checks settle it
            log.warning("%s: submit %s unknown: %r", self.name, coid, e)
            self._poke.set()
            return
        if not got.get("success", True):
            self._reject(coid, f"refused by the venue: {got.get('errorMsg')}")
            return
        now = time.time_ns()
        d0 = {"id": vid, "status": "open", "filled": 0, "amount": venue_amount(t.inst, t.order.qty)}
        with self._lock:
            self._emit(self.table.on_order(d0, now))
        if str(got.get("status")) != "live":
            self._poke.set()  # matched / unmatched: the checks close it from the venue's view

    def _reject(self, coid: int, why: str) -> None:
        with self._lock:
            self._emit(self.table.reject(coid, f"{self.name}: {why}", time.time_ns()))

    async def _cancel_venue(self, vid: str) -> str:
        """Cancel one venue order: "" when canceled, else the venue's reason."""
        assert self._rest is not None
        await self._wait_hold()
        got = await self._rest.request("DELETE", "/order", body={"orderID": vid}, auth=True)
        if vid in (got.get("canceled") or []):
            return ""
        return str((got.get("not_canceled") or {}).get(vid) or "not canceled")

    async def _cancel(self, c: CancelOrder) -> None:
        with self._lock:
            t = self.table.get(c.client_order_id)
        if t is None:
            return
        for _ in range(50):  # a cancel right after the submit: wait for its answer
            if t.phase != Phase.PENDING:
                break
            await asyncio.sleep(0.02)
        now = time.time_ns()
        try:
            why = await self._cancel_venue(t.venue_id)
        except ClobError as e:
            why = e.message
        if why:
            R = CancelRejectReason
            reason = R.NOT_OPEN if t.phase == Phase.CLOSED else R.REFUSED
            self._emit([OrderCancelRejected.for_request(c, reason, why, now, now)])
            return
        with self._lock:
            self._emit(self.table.on_order({"id": t.venue_id, "status": "canceled"}, now))
        self._poke.set()  # its last fills, if any, from the venue's view

    async def _replace(self, r: ReplaceOrder) -> None:
        """No amend on the CLOB: cancel, then a new signed order for the new terms."""
        with self._lock:
            t = self.table.get(r.client_order_id)
        if t is None:
            return
        now = time.time_ns()
        R = ReplaceRejectReason
        old = t.venue_id
        try:
            why = await self._cancel_venue(old)
        except ClobError as e:
            why = e.message
        if why:
            self._emit([OrderReplaceRejected.for_request(r, R.REFUSED, why, now, now)])
            return
        new_open = Decimal(venue_amount(t.inst, r.new_qty))
        with self._lock:
            before = self.table.new_generation(r.client_order_id, new_open, r.new_px)
        d, vid = self._signed(t, r.new_qty, r.new_px)
        with self._lock:
            self.table.expect_venue_id(r.client_order_id, vid)
        self._journal_add(r.client_order_id, vid, t)
        try:
            got = await self._post(t, d)
            ok, why = bool(got.get("success", True)), str(got.get("errorMsg") or "")
        except ClobError as e:
            ok, why = False, e.message
        now = time.time_ns()
        if not ok:  # the old order is gone: the order ends canceled
            with self._lock:
                self.table.undo_generation(r.client_order_id, before)
                self._emit([OrderReplaceRejected.for_request(r, R.REFUSED, why, now, now)])
                closed = {"id": old, "status": "canceled"}
                self._emit(self.table.on_order(closed, now))
            return
        o = t.order
        self._emit(
            [
                OrderReplaced(
                    o.client_order_id, o.instrument_id, r.new_px, r.new_qty, o.ts_origin, now, now
                )
            ]
        )
        self._poke.set()


def _closed(t: Tracked | None) -> int | None:
    if t is None:
        return int(CancelRejectReason.UNKNOWN_ORDER)
    if t.phase == Phase.CLOSED:
        return int(CancelRejectReason.NOT_OPEN)
    return None


def _ms(v: object) -> int | None:
    """A venue time (s or ms, number or string) in ms; None when it is none."""
    try:
        x = int(float(str(v)))
    except (TypeError, ValueError):
        return None
    return x * 1000 if 0 < x < 10**11 else x if x > 0 else None


def _fee(m: VenueMarket, role: str, px: object, size: object) -> str:
    """The venue's fee in USDC: rate x min(p, 1 - p) x shares (makers pay none)."""
    bps = Decimal(str(m.taker_fee_bps)) if role == "taker" else Decimal(0)
    if not bps:
        return "0"
    p = Decimal(str(px))
    return str(bps / 10_000 * min(p, 1 - p) * Decimal(str(size)))
