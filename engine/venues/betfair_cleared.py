"""A closed Betfair market's cleared bets (listClearedOrders) as the engine's ``Settlement``s.

Betfair clears each bet on its own: SETTLED (``betOutcome`` WON / LOST, its profit) or VOIDED
(stake back, no profit, no commission). A selection's bets usually clear alike, but Betfair
voids single bets of a market it settles — bets matched after a goal the referee disallowed,
bets on a late non-runner's market struck before the off — so a selection may have some bets
voided and the others settled. Its ``Settlement``s, in the order they apply:

- every bet voided while others of the selection settle: ``kind`` VOID with ``px`` = the bet's
  average odds matched (ticks) and ``position`` its signed stake (back > 0, lay < 0),
  ``settlement_id`` its bet id, ``partial`` — this bet alone is undone
  (``engine.account_events``);
- then the settled bets: RESOLVED, ``outcome`` 1 / 0 (did the selection win), ``position``
  their net stake, ``px`` 0 (each bet's P&L comes from its own odds);
- a selection whose bets were all voided: one VOID with ``px`` 0 (the whole selection undone).

The market's commission (on its net winnings, ``group_by="MARKET"``) rides on the market's last
Settlement; a voided bet's never carries it. After the last one the selection is flat.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from engine.enums import SettlementKind
from engine.instruments import Instrument
from engine.messages import Settlement

__all__ = ["settlements"]

Row = Mapping[str, Any]  # a listClearedOrders row, with "_status" SETTLED / VOIDED


def _signed(ins: Instrument, b: Row) -> int:
    return ins.qty_to_lots(str(b.get("sizeSettled") or 0)) * (1 if b["side"] == "BACK" else -1)


def _selection(ins: Instrument, mine: list[Row], now: int) -> list[Settlement]:
    """One selection's Settlements, the commission left out (``settlements`` adds it)."""
    iid = ins.instrument_id
    settled = [b for b in mine if b["_status"] == "SETTLED"]
    voided = [b for b in mine if b["_status"] == "VOIDED"]
    if not settled:
        pos = sum(_signed(ins, b) for b in voided)
        void = int(SettlementKind.VOID)
        return [Settlement(iid, void, 0, -1, pos, now, now, settlement_id=int(voided[0]["betId"]))]
    out = [
        Settlement(
            iid,
            int(SettlementKind.VOID),
            ins.px_to_ticks(str(b.get("priceMatched") or 0)),
            -1,
            _signed(ins, b),
            now,
            now,
            settlement_id=int(b["betId"]),
            partial=True,
        )
        for b in voided
        if _signed(ins, b)
    ]
    b = settled[0]
    won = (b.get("betOutcome") == "WON") == (b["side"] == "BACK")
    pos = sum(_signed(ins, x) for x in settled)
    kind = int(SettlementKind.RESOLVED)
    return [*out, Settlement(iid, kind, 0, int(won), pos, now, now, settlement_id=int(b["betId"]))]


def settlements(
    market_id: str,
    bets: Iterable[Row],
    by_selection: Mapping[tuple[str, int], Instrument],
    fee: float,
    now: int,
    skip: Iterable[int] = (),
) -> list[Settlement]:
    """The ``Settlement``s of ``market_id``'s cleared ``bets`` on the selections we list
    (``by_selection``: (market id, selection id) -> instrument), none for those in ``skip``
    (settled already); ``fee`` (the market's commission) on the last one."""
    done = set(skip)
    per: dict[int, tuple[Instrument, list[Row]]] = {}
    for b in bets:
        ins = by_selection.get((market_id, int(b["selectionId"])))
        if ins is not None and ins.instrument_id not in done:
            per.setdefault(ins.instrument_id, (ins, []))[1].append(b)
    out: list[Settlement] = []
    for iid in sorted(per):
        ins, mine = per[iid]
        out += _selection(ins, mine, now)
    if out and fee:
        last = out[-1]
        out[-1] = Settlement(
            last.instrument_id,
            last.kind,
            last.px,
            last.outcome,
            last.position,
            last.ts_event,
            last.ts_recv,
            settlement_id=last.settlement_id,
            fee=fee,
            partial=last.partial,
        )
    return out
