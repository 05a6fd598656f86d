"""How an account event moves a position, and when two of them are the same event.

Every holder of positions (the portfolio, risk, exec's order table, the strategies' contexts,
the record, exec's recovery) applies the venue's account events the same way, so they agree
after a settlement or a liquidation as they do after a fill (docs/instruments-and-accounts.md):

- ``Settlement`` (expiry, resolution, void — of a future, a binary or a betting selection)
  leaves the position flat: the market closed it — except a ``partial`` one (one bet of a
  betting selection voided while its others settle), which takes that bet's stake off;
- ``Liquidation`` moves it like a fill of ``side * qty`` that no order made;
- ``FundingPayment``, ``Financing`` and ``MarginStatus`` move money, never a position.

A venue may deliver an event twice (a reconnect, a replayed statement). The same event is
recognised by (the venue of its instrument, its type, the venue's id on it); an id of 0 means
the venue gave none and the event is never taken for a repeat.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from engine.instruments import Instrument
from engine.messages import Financing, FundingPayment, Liquidation, Settlement

#: account events that carry an instrument and a venue id
INSTRUMENT_EVENTS = (FundingPayment, Financing, Settlement, Liquidation)


def venue_event_id(ev: object) -> int:
    """The venue's id on an account event (0: none, or not an account event)."""
    t = type(ev)
    if t is FundingPayment or t is Financing:
        return int(ev.payment_id)  # type: ignore[attr-defined]
    if t is Settlement:
        return int(ev.settlement_id)  # type: ignore[attr-defined]
    if t is Liquidation:
        return int(ev.liquidation_id)  # type: ignore[attr-defined]
    return 0


def event_key(venue: str, ev: object) -> tuple[str, str, int] | None:
    """What makes ``ev`` one event: (venue, type name, venue id); None when it has no id."""
    vid = venue_event_id(ev)
    return (venue, type(ev).__name__, vid) if vid else None


def moves_position(ev: object) -> bool:
    """Whether ``ev`` changes a position (a settlement or a liquidation)."""
    t = type(ev)
    return t is Settlement or t is Liquidation


def position_after(position: int, ev: object) -> int:
    """The net position in lots after ``ev``: 0 after a settlement (less a voided bet's stake
    after a ``partial`` one), moved by a liquidation's trade (``side * qty``), unchanged by
    anything else."""
    t = type(ev)
    if t is Settlement:
        return position - int(ev.position) if ev.partial else 0  # type: ignore[attr-defined]
    if t is Liquidation:
        return position + int(ev.side) * int(ev.qty)  # type: ignore[attr-defined]
    return position


class SeenEvents:
    """The account events already applied (by ``event_key``): ``first(venue, ev)`` is True
    the first time an event is seen, False for a repeat."""

    __slots__ = ("_seen",)

    def __init__(self) -> None:
        self._seen: set[tuple[str, str, int]] = set()

    def first(self, venue: str, ev: object) -> bool:
        key = event_key(venue, ev)
        if key is None:
            return True
        if key in self._seen:
            return False
        self._seen.add(key)
        return True

    def __len__(self) -> int:
        return len(self._seen)


class AccountGate:
    """Exec's door for account events: a repeat is dropped (never passed upstream, where risk
    and the strategies would apply it again), a first one moves exec's order table's position
    (``OrderTable.apply_account``) and goes on."""

    __slots__ = ("seen", "repeats", "_venue_of")

    def __init__(self, instruments: Iterable[Instrument]) -> None:
        self.seen = SeenEvents()
        self.repeats = 0
        self._venue_of = {i.instrument_id: i.venue for i in instruments}

    def remember(self, ev: object) -> None:
        """An event applied before a restart (exec's journal): a repeat of it is dropped."""
        if type(ev) in INSTRUMENT_EVENTS:
            self.seen.first(self._venue_of.get(ev.instrument_id, ""), ev)  # type: ignore[attr-defined]

    def admit(self, ev: object, table: Any) -> bool:
        """True: ``ev`` is new (applied to ``table``); False: a repeat (counted, dropped)."""
        if type(ev) not in INSTRUMENT_EVENTS:
            return True
        venue = self._venue_of.get(ev.instrument_id, "")  # type: ignore[attr-defined]
        if not self.seen.first(venue, ev):
            self.repeats += 1
            return False
        table.apply_account(ev)
        return True
