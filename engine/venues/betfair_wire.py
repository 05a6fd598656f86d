"""Betfair Exchange wire <-> engine: selections as instruments, odds as ticks, stream changes.

One Betfair selection (a runner of a market) is one engine instrument of kind "betting",
named ``"<marketId>/<selectionId>"`` ("1.200000001/47972"): price = decimal odds (tick 0.01,
only prices on Betfair's ladder), quantity = stake in lots of 0.01 of the account currency.
BUY = back, SELL = lay (docs/betfair.md; docs/instruments-and-accounts.md has the P&L).

The book is published as Betfair shows it, "back | lay": the bid side is "available to back"
(``atb``: resting lays; a back takes them at odds >= its limit), the ask side "available to
lay" (``atl``: resting backs). So bid < ask, and a BUY (back) takes the bid side.

``MarketStream`` turns ``mcm`` messages (images and deltas) into BookSnapshot / BookDelta /
Quote / Trade / ExchangeStatus per subscribed selection. Market status: SUSPENDED is HALTED
("suspended"), OPEN again is OPEN; CLOSED is HALTED with a ``SETTLED_PREFIX`` reason naming
what the selection came to (winner / loser / void: a removed runner or a market closed with no
result), which ``settlement_of`` reads back.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from engine.enums import ExchangeStatusKind, InstrumentKind, SettlementKind, Side
from engine.instruments import Instrument
from engine.messages import BookDelta, BookSnapshot, ExchangeStatus, Quote, Trade
from engine.venues.ccxt_markets import VenueMarket

__all__ = [
    "SETTLED_PREFIX",
    "MarketStream",
    "markets_from_catalogue",
    "odds",
    "settlement_of",
    "split_symbol",
    "stake",
]

SETTLED_PREFIX = "settled: "
BID, ASK = 1, -1  # BookDelta.side: the bid side (available to back) and the ask side


def odds(ins: Instrument, px_ticks: int) -> float:
    """The decimal odds the wire takes ("2.02" -> 2.02)."""
    return float(Decimal(px_ticks) * Decimal(str(ins.tick_size)))


def stake(ins: Instrument, qty_lots: int) -> float:
    return float(Decimal(qty_lots) * Decimal(str(ins.lot_size)))


def split_symbol(symbol: str) -> tuple[str, int]:
    """``"1.200000001/47972"`` -> ("1.200000001", 47972)."""
    mid, _, sid = symbol.partition("@")[0].partition("/")
    if not mid or not sid.isdigit():
        raise ValueError(f"{symbol!r} is not a Betfair selection (<marketId>/<selectionId>)")
    return mid, int(sid)


def markets_from_catalogue(
    catalogue: Iterable[Mapping[str, Any]], currency: str, min_stake: str
) -> dict[str, VenueMarket]:
    """listMarketCatalogue's markets -> one ``VenueMarket`` per selection."""
    out: dict[str, VenueMarket] = {}
    for m in catalogue:
        mid = str(m["marketId"])
        for r in m.get("runners") or []:
            sym = f"{mid}/{int(r['selectionId'])}"
            out[sym] = VenueMarket(
                symbol=sym,
                venue_symbol=sym,
                base=str(r["selectionId"]),
                quote=currency,
                tick="0.01",
                lot="0.01",
                min_qty=min_stake,
                asset_class="betting",
                instrument={
                    "kind": InstrumentKind.BETTING,
                    "market_id": mid,
                    "outcome": str(r.get("runnerName") or r["selectionId"]),
                },
            )
    return out


def settlement_of(reason: str) -> tuple[int, int] | None:
    """(``SettlementKind``, outcome) an ExchangeStatus reason says, or None."""
    if not reason.startswith(SETTLED_PREFIX):
        return None
    what = reason[len(SETTLED_PREFIX) :]
    if what == "winner":
        return int(SettlementKind.RESOLVED), 1
    if what == "loser":
        return int(SettlementKind.RESOLVED), 0
    return int(SettlementKind.VOID), -1


class _Sel:
    """One selection's published state."""

    __slots__ = ("asks", "bids", "ins", "quote", "seq", "status", "traded")

    def __init__(self, ins: Instrument) -> None:
        self.ins = ins
        self.bids: dict[int, int] = {}
        self.asks: dict[int, int] = {}
        self.traded: dict[int, int] = {}
        self.seq = 0
        self.status = ""
        self.quote: tuple[int, int, int, int] | None = None


class MarketStream:
    """``mcm`` messages -> engine market-data structs for the instruments in ``instruments``
    (see the module docstring). ``on_mcm(msg, ts_recv)`` returns what to publish."""

    def __init__(self, instruments: Iterable[Instrument]) -> None:
        self._sel: dict[tuple[str, int], _Sel] = {}
        for ins in instruments:
            self._sel[split_symbol(ins.symbol)] = _Sel(ins)

    def market_ids(self) -> list[str]:
        return sorted({mid for mid, _ in self._sel})

    def on_mcm(self, msg: Mapping[str, Any], ts_recv: int) -> list[object]:
        out: list[object] = []
        ts = int(msg.get("pt") or 0) * 1_000_000 or ts_recv
        for mc in msg.get("mc") or []:
            mid = str(mc.get("id"))
            image = bool(mc.get("img"))
            md = mc.get("marketDefinition")
            if md is not None:  # a suspension is said before the book changes it brings
                self._definition(mid, md, ts, ts_recv, out)
            changed: set[tuple[str, int]] = set()
            for rc in mc.get("rc") or []:
                key = (mid, int(rc["id"]))
                s = self._sel.get(key)
                if s is None:
                    continue
                changed.add(key)
                self._runner(s, rc, image, ts, ts_recv, out)
            if image:  # a selection the image does not mention has an empty book
                for key, s in self._sel.items():
                    if key[0] == mid and key not in changed:
                        self._runner(s, {}, True, ts, ts_recv, out)
                        changed.add(key)
            for key in changed:
                self._quote(self._sel[key], ts, ts_recv, out)
        return out

    def _runner(
        self, s: _Sel, rc: Mapping[str, Any], image: bool, ts: int, recv: int, out: list[object]
    ) -> None:
        ins = s.ins
        if image:
            s.bids = {ins.px_to_ticks(p): ins.qty_to_lots(v) for p, v in rc.get("atb") or [] if v}
            s.asks = {ins.px_to_ticks(p): ins.qty_to_lots(v) for p, v in rc.get("atl") or [] if v}
            s.seq += 1
            bids, asks = sorted(s.bids.items(), reverse=True), sorted(s.asks.items())
            out.append(
                BookSnapshot(
                    ins.instrument_id,
                    [p for p, _ in bids],
                    [q for _, q in bids],
                    [p for p, _ in asks],
                    [q for _, q in asks],
                    ts,
                    recv,
                    s.seq,
                )
            )
        else:
            for key, book, side in (("atb", s.bids, BID), ("atl", s.asks, ASK)):
                for p, v in rc.get(key) or []:
                    px, qty = ins.px_to_ticks(p), ins.qty_to_lots(v)
                    if qty:
                        book[px] = qty
                    else:
                        book.pop(px, None)
                    s.seq += 1
                    out.append(BookDelta(ins.instrument_id, side, px, qty, ts, recv, s.seq))
        for p, v in rc.get("trd") or []:
            px, cum = ins.px_to_ticks(p), ins.qty_to_lots(v)
            was = s.traded.get(px)
            s.traded[px] = cum
            if was is not None and cum > was and not image:
                out.append(Trade(ins.instrument_id, px, cum - was, int(Side.NONE), ts, recv))

    @staticmethod
    def _quote(s: _Sel, ts: int, recv: int, out: list[object]) -> None:
        bid = max(s.bids) if s.bids else 0
        ask = min(s.asks) if s.asks else 0
        q = (bid, s.bids.get(bid, 0), ask, s.asks.get(ask, 0))
        if q != s.quote:
            s.quote = q
            out.append(Quote(s.ins.instrument_id, q[0], q[1], q[2], q[3], ts, recv, s.seq))

    def _definition(
        self, mid: str, md: Mapping[str, Any], ts: int, recv: int, out: list[object]
    ) -> None:
        market = str(md.get("status") or "OPEN")
        runners = {int(r["id"]): str(r.get("status") or "ACTIVE") for r in md.get("runners") or []}
        for (m, sid), s in self._sel.items():
            if m != mid:
                continue
            runner = runners.get(sid, "ACTIVE")
            if market == "CLOSED":
                what = {"WINNER": "winner", "LOSER": "loser"}.get(runner, "void")
                status, reason = ExchangeStatusKind.HALTED, SETTLED_PREFIX + what
            elif runner == "REMOVED":
                status, reason = ExchangeStatusKind.HALTED, "removed"
            elif market == "SUSPENDED":
                status, reason = ExchangeStatusKind.HALTED, "suspended"
            else:
                status, reason = ExchangeStatusKind.OPEN, "open"
            if reason != s.status:
                first = not s.status
                s.status = reason
                if first and reason == "open":
                    continue  # an open market says nothing new
                out.append(ExchangeStatus(s.ins.instrument_id, int(status), reason, ts, recv))
