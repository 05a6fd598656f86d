"""A perpetual venue's execution client: the spot client's order life cycle, plus the account
a margined contract has — leverage, positions, funding, margin calls and liquidation.

Why a subclass with hooks rather than a second client: orders, fills, the guard, the user
stream and its REST backfill are the same on a futures account (``CcxtExecutionClient``). What
differs hangs off the spot client's methods: ``_initial_sync`` (set the venue's ``leverage`` on every traded
symbol, then the first positions / account / funding view), ``_install_hook`` (every raw
user-stream message is read here before ccxt parses it: ccxt has no event for a margin call, and
a liquidation must not reach the order table as an order of someone else's), ``_apply_stream``
(the venue's closing orders are kept out of the order table) and ``_keep_house`` (positions
and account totals over REST every ``perp_poll_s``, the venue's closing orders when a position
moved, funding income every ``funding_poll_s`` and at once after the stream says funding was
paid), ``_fetch_balances`` (each base asset's position as reconciliation counts a balance)
and ``_create_args`` (reduce-only). The translations are ``engine.venues.ccxt_perp``.

Settings besides the spot client's: ``leverage`` (the venue key: set at start; 0 = leave the
venue's), ``perp_poll_s`` (default 5), ``funding_poll_s`` (income looked at without the
stream's word, default 60), ``funding_lookback_s`` (income fetched at start;
default 0: only what is paid from now on), ``margin_report_pct`` (a MarginStatus goes out when
equity or a margin total moves this much, default 1 %, and on every margin call).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from engine.instruments import Instrument, InstrumentTable
from engine.messages import Liquidation, MarginStatus, OrderFlag, Side
from engine.venue_recon import base_asset
from engine.venues.ccxt_exec import CcxtExecutionClient
from engine.venues.ccxt_orders import Tracked
from engine.venues.ccxt_perp import (
    funding_payment,
    is_liquidation,
    liquidation_from_update,
    margin_status,
    position_lots,
)
from engine.venues.ccxt_session import Credentials

__all__ = ["PerpExecutionClient"]

log = logging.getLogger("gekko.venues.perp")

_FUNDING_MATCH_MS = 60_000  # an income record and the rate record of its funding time


class PerpExecutionClient(CcxtExecutionClient):
    """``CcxtExecutionClient`` on a linear-perpetual account (module docstring)."""

    def __init__(
        self,
        exchange_id: str,
        name: str,
        instruments: InstrumentTable,
        settings: Mapping[str, Any] | None = None,
        credentials: Credentials | None = None,
        **kw: Any,
    ) -> None:
        start = kw.pop("start", True)
        s = dict(settings or {})
        self._pos: dict[int, int] = {}
        self._seen_funding: set[int] = set()
        self._liq_orders: set[int] = set()  # the venue's closing orders already reported
        self._liq_units: dict[str, Decimal] = {}  # per base asset: what they moved, signed
        self._liq_primed = False  # the closing orders listed before the start: not ours to report
        self._perp_due = 0.0
        self._funding_due = 0.0
        self._funding_next = 0.0  # the next funding-income look without the stream's word
        self._rest_pos: dict[int, int] = {}  # positions at the last REST look
        self._margin: MarginStatus | None = None
        self._funding_from_ms = int((time.time() - float(s.get("funding_lookback_s", 0))) * 1000)
        self.perp_stats: dict[str, int] = dict.fromkeys(
            ("funding", "liquidations", "margin_calls", "margin_reports"), 0
        )
        super().__init__(exchange_id, name, instruments, s, credentials, start=False, **kw)
        self._by_venue_id: dict[str, Instrument] = {}
        if start:
            self.start(float(s.get("start_timeout_s", 30.0)))

    # --- queries ----------------------------------------------------------------------------
    def positions(self) -> dict[int, int]:
        """Net contracts per instrument in lots, signed (long > 0), as the venue reported."""
        return {iid: q for iid, q in self._pos.items() if q}

    def margin(self) -> MarginStatus | None:
        """The last account totals the venue gave (None before the first)."""
        return self._margin

    # --- hooks ------------------------------------------------------------------------------
    async def _initial_sync(self) -> None:
        await super()._initial_sync()
        markets = self._ex.markets or {}
        self._by_venue_id = {
            str(markets[i.symbol]["id"]): i for i in self._insts if i.symbol in markets
        }
        lev = int(float(self.settings.get("leverage") or 0))
        if lev > 0:
            for ins in self._insts:
                await self._request("set_leverage", lev, ins.symbol)
        await self._perp_refresh()

    def _install_hook(self) -> None:
        super()._install_hook()
        ex, orig = self._ex, self._ex.handle_message

        def hook(client: Any, message: Any) -> Any:
            if isinstance(message, Mapping):
                try:
                    self._on_raw(message)
                except Exception as e:  # noqa: BLE001 - a malformed event must not stop ccxt
                    log.warning("%s: user event not read: %r", self.name, e)
            return orig(client, message)

        ex.handle_message = hook

    def _apply_stream(self, method: str, items: list[dict[str, Any]]) -> None:
        mine = [it for it in items if not is_liquidation(it.get("info") or {})]
        super()._apply_stream(method, mine)

    def _create_args(self, t: Tracked) -> tuple[tuple[Any, ...], dict[str, Any]]:
        args, params = super()._create_args(t)
        if t.order.flags & OrderFlag.REDUCE_ONLY:
            params["reduceOnly"] = True
        return args, params

    async def _keep_house(self) -> None:
        await super()._keep_house()
        now = time.monotonic()
        if self.guard.banned(now):
            return
        if now >= self._perp_due or (self._funding_due and now >= self._funding_due):
            await self._perp_refresh()

    # --- the raw user stream (bridge thread) ------------------------------------------------
    def _on_raw(self, msg: Mapping[str, Any]) -> None:
        kind = msg.get("e")
        if kind == "ORDER_TRADE_UPDATE":
            o = msg.get("o") or {}
            if is_liquidation(o):
                self._on_liquidation(o, int(msg.get("T") or msg.get("E") or 0))
        elif kind == "MARGIN_CALL":
            self._on_margin_call(msg)
        elif kind == "ACCOUNT_UPDATE":
            a = msg.get("a") or {}
            for p in a.get("P") or []:
                ins = self._by_venue_id.get(str(p.get("s")))
                if ins is not None and str(p.get("ps", "BOTH")) == "BOTH":
                    self._pos[ins.instrument_id] = position_lots(ins, p.get("pa"))
            if a.get("m") == "FUNDING_FEE":
                self._funding_due = time.monotonic()
            self._perp_due = min(self._perp_due, time.monotonic() + 0.2)

    def _on_liquidation(self, o: Mapping[str, Any], ts_ms: int) -> None:
        ins = self._by_venue_id.get(str(o.get("s")))
        oid = int(o.get("i") or 0)
        if ins is None or oid in self._liq_orders:
            return
        ev = liquidation_from_update(ins, o, ts_ms, self._clock())
        if ev is None:
            return
        if str(o.get("X")) == "FILLED":
            self._liq_orders.add(oid)  # a partly filled one: its later trades still count
        self._count_liquidation(ins, ev)

    def _count_liquidation(self, ins: Instrument, ev: Liquidation) -> None:
        units = Decimal(ev.qty) * Decimal(str(ins.lot_size)) * Decimal(str(ins.contract_size))
        base = base_asset(ins) or ins.symbol
        sign = 1 if ev.side == int(Side.BUY) else -1
        self._liq_units[base] = self._liq_units.get(base, Decimal(0)) + sign * units
        self.perp_stats["liquidations"] += 1
        log.warning("%s: liquidated %s lots of %s at %s", self.name, ev.qty, ins.symbol, ev.px)
        self._emit([ev])
        self._perp_due = time.monotonic()

    def _on_margin_call(self, msg: Mapping[str, Any]) -> None:
        """Binance's MARGIN_CALL: cross wallet ``cw`` and per position unrealized ``up`` and
        maintenance ``mm``; the initial margin is the last the account reported."""
        rows = msg.get("p") or []
        equity = float(msg.get("cw") or 0) + sum(float(r.get("up") or 0) for r in rows)
        maint = sum(float(r.get("mm") or 0) for r in rows)
        last = self._margin
        ev = MarginStatus(
            venue=self.name,
            currency=last.currency if last else "USDT",
            equity=equity,
            initial_margin=last.initial_margin if last else 0.0,
            maintenance_margin=maint,
            ts_event=int(msg.get("E") or 0) * 1_000_000 or self._clock(),
            margin_call=True,
        )
        self.perp_stats["margin_calls"] += 1
        self._margin = ev
        self._emit([ev])
        self._perp_due = time.monotonic()

    # --- REST: positions, account, funding ----------------------------------------------------
    async def _fetch_balances(self) -> None:
        """The account's balances, and each base asset's position as reconciliation counts a
        spot balance (``engine.venue_recon``): the venue's net contracts in base units, less
        what the venue's own closing orders moved (each reported as a ``Liquidation``, found
        here over REST too when the stream missed it), so our fills alone must explain it."""
        await super()._fetch_balances()
        await self._liquidations_backfill()
        rows = await self._request("fetch_positions", [i.symbol for i in self._insts])
        by_sym = {i.symbol: i for i in self._insts}
        units: dict[str, Decimal] = {}
        for p in rows or []:
            ins = by_sym.get(str(p.get("symbol")))
            if ins is None:
                continue
            base = base_asset(ins) or ins.symbol
            lots = position_lots(ins, p.get("contracts") or 0, p.get("side"))
            size = Decimal(lots) * Decimal(str(ins.lot_size)) * Decimal(str(ins.contract_size))
            units[base] = units.get(base, Decimal(0)) + size
        for base in {base_asset(i) or i.symbol for i in self._insts}:
            net = units.get(base, Decimal(0)) - self._liq_units.get(base, Decimal(0))
            self._balances[base] = {"total": float(net), "free": float(net)}

    async def _liquidations_backfill(self) -> None:
        """The venue's closing orders of our symbols (Binance ``forceOrders``) the stream did
        not bring: each a ``Liquidation`` at its average price (no fee: the venue lists none).
        Those listed at the first look (before this start) are only marked seen."""
        primed, self._liq_primed = self._liq_primed, True
        for ins in self._insts:
            venue_id = self._ex.market(ins.symbol)["id"]
            rows = await self._request("fapiPrivateGetForceOrders", {"symbol": venue_id})
            for r in rows or []:
                oid = int(r.get("orderId") or 0)
                if oid in self._liq_orders or str(r.get("status")) != "FILLED":
                    continue
                self._liq_orders.add(oid)
                if not primed:  # before this start: in the position the baseline takes
                    continue
                o = {
                    "S": r.get("side"),
                    "l": r.get("executedQty"),
                    "ap": r.get("avgPrice"),
                    "n": "0",
                    "T": r.get("updateTime"),
                    "i": oid,
                }
                ev = liquidation_from_update(ins, o, int(r.get("time") or 0), self._clock())
                if ev is not None:
                    self._count_liquidation(ins, ev)

    async def _perp_refresh(self) -> None:
        """Positions and account totals every ``perp_poll_s``; the venue's closing orders when
        a position moved since the last look; funding income when the stream said it was paid
        or every ``funding_poll_s`` (the income and forceOrders calls weigh 30 and 20)."""
        now = time.monotonic()
        self._perp_due = now + float(self.settings.get("perp_poll_s", 5.0))
        funding = bool(self._funding_due) or now >= self._funding_next
        self._funding_due = 0.0
        symbols = [i.symbol for i in self._insts]
        rows = await self._request("fetch_positions", symbols)
        by_sym = {i.symbol: i for i in self._insts}
        seen: dict[int, int] = {}
        for p in rows or []:
            ins = by_sym.get(str(p.get("symbol")))
            if ins is not None:
                seen[ins.instrument_id] = seen.get(ins.instrument_id, 0) + position_lots(
                    ins, p.get("contracts") or 0, p.get("side")
                )
        if seen != self._rest_pos:
            await self._liquidations_backfill()
        self._pos = dict(seen)
        self._rest_pos = seen
        bal = await self._request("fetch_balance")
        self._report_margin(bal.get("info") or {})
        if funding:
            self._funding_next = now + float(self.settings.get("funding_poll_s", 60.0))
            await self._funding_round()

    def _report_margin(self, account: Mapping[str, Any]) -> None:
        if "totalMarginBalance" not in account:
            return
        ev = margin_status(self.name, account, self._clock())
        last = self._margin
        pct = float(self.settings.get("margin_report_pct", 1.0)) / 100
        if last is not None and ev.margin_call == last.margin_call and not ev.margin_call:
            moved = any(
                abs(a - b) > pct * max(abs(b), 1e-9)
                for a, b in (
                    (ev.equity, last.equity),
                    (ev.initial_margin, last.initial_margin),
                    (ev.maintenance_margin, last.maintenance_margin),
                )
            )
            if not moved:
                return
        self._margin = ev
        self.perp_stats["margin_reports"] += 1
        self._emit([ev])

    async def _funding_round(self) -> None:
        """Funding income since the last one seen, each with its funding-rate record."""
        for ins in self._insts:
            rows = await self._request("fetch_funding_history", ins.symbol, self._funding_from_ms)
            fresh = [
                r["info"]
                for r in rows or []
                if isinstance(r.get("info"), Mapping)
                and int(r["info"].get("tranId") or 0) not in self._seen_funding
            ]
            if not fresh:
                continue
            first = min(int(r.get("time") or 0) for r in fresh)
            rates = await self._request(
                "fetch_funding_rate_history", ins.symbol, first - _FUNDING_MATCH_MS
            )
            evs = []
            for r in sorted(fresh, key=lambda r: int(r.get("time") or 0)):
                rate = _rate_at(rates or [], int(r.get("time") or 0))
                pos = self._pos.get(ins.instrument_id, 0)
                evs.append(funding_payment(ins, r, rate, pos, self._clock()))
                self._seen_funding.add(int(r.get("tranId") or 0))
            self.perp_stats["funding"] += len(evs)
            self._emit(evs)


def _rate_at(rates: list[Mapping[str, Any]], ms: int) -> Mapping[str, Any] | None:
    """The funding-rate record nearest ``ms`` (within ``_FUNDING_MATCH_MS``)."""
    best, gap = None, _FUNDING_MATCH_MS + 1
    for r in rates:
        info = r.get("info") if isinstance(r.get("info"), Mapping) else r
        t = int(info.get("fundingTime") or r.get("timestamp") or 0)
        if abs(t - ms) < gap:
            best, gap = info, abs(t - ms)
    return best
