"""Order lists (OTO, OCO, OUO, brackets): which orders of a list depend on which, and what
each should be now.

Why a book of its own: exec (``engine.exec_engine``) decides *how* to act on an order (hold it,
send it, amend it, cancel it); this module decides *what* a member of a list should be, from
nothing but the list's shape (the ``contingency`` / ``parent_id`` / ``linked`` fields every
leg carries from the strategy) and the legs' fills and ends as the order table has them. It is
level-triggered on purpose: ``want(coid, rec)`` computes the member's wanted total size from
the facts, exec compares that with the order as it is and closes the gap. So an event seen
twice, a restart (the table rebuilt from the journal and the venue, ``ExecEngine.restore_lists``)
or a fill missed while exec was down all end in the same place: the facts decide, not a history
of actions.

The rules (docs/orders-and-algos.md has them for traders):

- an OTO child (``parent_id`` set) is held by exec until its parent fills; its wanted size is
  ``qty * parent_filled // parent_qty`` (a bracket's children have the entry's qty: they track
  the entry's fills lot for lot), so later fills of the parent grow it;
- a parent that ends (canceled, rejected, expired) with nothing filled ends its children that
  were never released: a child never outlives its cancelled parent; a parent that ends part
  filled leaves them at the size its fills give;
- OCO: once a member with ``contingency = OCO`` has any fill, its linked peers are done: what
  is open of them is canceled (the venue's own race can still fill a peer between the fill and
  the cancel; that is counted, never hidden);
- OUO: a fill of a member with ``contingency = OUO`` reduces its linked peers by as much.

A member is every order that names a contingency, a parent or peers, and every order named as
a parent. Peers are linked both ways whichever of them names the other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from engine.enums import ContingencyType
from engine.messages import NewOrder

OTO, OCO, OUO = int(ContingencyType.OTO), int(ContingencyType.OCO), int(ContingencyType.OUO)


def is_list_order(o: Any) -> bool:
    """Whether an order (NewOrder or IntentNew) belongs to an order list."""
    return bool(o.contingency or o.parent_id or o.linked)


@dataclass(slots=True)
class Leg:
    """One member of a list as exec keeps it."""

    order: NewOrder
    base: int = 0  # its full size (the strategy's qty, or its latest amend's total)
    children: list[int] = field(default_factory=list)
    peers: set[int] = field(default_factory=set)
    waiting: bool = False  # an OTO child exec holds until its parent fills
    native: bool = False  # the venue runs the list itself (``submit_list``): exec only watches
    raced: bool = False  # an OCO member that filled after a peer had (the venue's race)


class Facts:
    """What ``want`` reads of one order: filled lots, whether it is over, its size as sent
    by the strategy (``orig``: what a child's share of its parent's fills is measured by)."""

    __slots__ = ("filled", "open", "orig")

    def __init__(self, filled: int, is_open: bool, orig: int) -> None:
        self.filled = filled
        self.open = is_open
        self.orig = orig


#: how the book asks about an order (None: exec does not know it)
Lookup = Callable[[int], Facts | None]


class ContingentBook:
    """The lists exec works: their legs and the rules above."""

    def __init__(self) -> None:
        self.legs: dict[int, Leg] = {}
        self._named_by: dict[int, set[int]] = {}  # a peer not yet here -> who named it
        #: fills of an OCO peer that arrived after the first fill of the group: the venue's race
        #: (a peer filled between our cancel being decided and the venue taking it)
        self.oco_races = 0
        self.oco_race_qty = 0

    def __contains__(self, coid: object) -> bool:
        return coid in self.legs

    def __len__(self) -> int:
        return len(self.legs)

    def admit(self, order: NewOrder, lookup: Lookup) -> str:
        """Register a new member; returns why it is refused ("" = admitted).

        A child whose parent exec does not know is refused: risk refused the parent (the legs of
        a list arrive in the order the strategy sent them, parent first), or it was never sent.
        A child of a parent that ended with nothing filled is refused too."""
        coid = order.client_order_id
        pid = order.parent_id
        if pid:
            if pid == coid:
                return "contingent: an order cannot be its own parent"
            facts = lookup(pid)
            if facts is None:
                return f"contingent: parent {pid} unknown to exec (refused, or never sent)"
            if not facts.open and facts.filled == 0:
                return f"contingent: parent {pid} ended with nothing filled"
        if coid in order.linked:
            return "contingent: an order cannot be linked to itself"
        self.register(order, lookup)
        return ""

    def register(self, order: NewOrder, lookup: Lookup) -> None:
        """Add a member without checks (``admit`` checks; a restart registers what was)."""
        coid = order.client_order_id
        pid = order.parent_id
        known = self.legs.get(coid)
        leg = Leg(order, order.qty, waiting=bool(pid))
        if known is not None:  # named as a parent before it was registered itself
            leg.children, leg.peers = known.children, known.peers
        self.legs[coid] = leg
        if pid:
            parent = self.legs.get(pid)
            if parent is None:  # a plain order named as a parent: a member from now on
                pf = lookup(pid)
                parent = Leg(_placeholder(pid, order), pf.orig if pf is not None else 0)
                self.legs[pid] = parent
            parent.children.append(coid)
        for p in order.linked:
            leg.peers.add(p)
            other = self.legs.get(p)
            if other is not None:
                other.peers.add(coid)
            else:
                self._named_by.setdefault(p, set()).add(coid)
        leg.peers |= self._named_by.pop(coid, set())  # peers that named it before it came

    def forget(self, coids: list[int]) -> None:
        for c in coids:
            self.legs.pop(c, None)

    def affected(self, coid: int) -> list[int]:
        """The members whose wanted size a change of ``coid`` may move: its children, its
        peers, and itself."""
        leg = self.legs.get(coid)
        if leg is None:
            return []
        return [*leg.children, *sorted(leg.peers), coid]

    def parent_of(self, coid: int) -> int:
        leg = self.legs.get(coid)
        return leg.order.parent_id if leg is not None else 0

    # --- the rules -------------------------------------------------------------------------------
    def dead(self, coid: int, lookup: Lookup) -> str:
        """Why a member must end now whatever its size ("" = it lives)."""
        leg = self.legs[coid]
        pid = leg.order.parent_id
        if pid and leg.waiting:
            pf = lookup(pid)
            if pf is not None and not pf.open and pf.filled == 0:
                return f"contingent: parent {pid} ended with nothing filled"
        for p in sorted(leg.peers):
            other = self.legs.get(p)
            if other is None or other.order.contingency != OCO:
                continue
            pf = lookup(p)
            if pf is not None and pf.filled > 0:
                return f"contingent: OCO peer {p} filled"
        return ""

    def want(self, coid: int, lookup: Lookup) -> int:
        """The member's wanted total size (filled lots included): never below what it filled."""
        leg = self.legs[coid]
        o = leg.order
        me = lookup(coid)
        filled = me.filled if me is not None else 0
        if self.dead(coid, lookup):
            return filled
        size = leg.base
        pid = o.parent_id
        if pid:
            pf = lookup(pid)
            if pf is None or pf.orig <= 0:
                size = 0
            else:
                size = min(leg.base, leg.base * pf.filled // pf.orig)
        return max(filled, size - self.reduction(coid, lookup))

    def reduction(self, coid: int, lookup: Lookup) -> int:
        """What the fills of OUO peers took off a member."""
        red = 0
        for p in self.legs[coid].peers:
            other = self.legs.get(p)
            if other is not None and other.order.contingency == OUO:
                pf = lookup(p)
                if pf is not None:
                    red += pf.filled
        return red

    def governed(self, coid: int) -> bool:
        """Whether the list sets the member's size (an OTO child, an OUO peer's target): else
        only an OCO fill can end it, and its size is the strategy's."""
        leg = self.legs[coid]
        if leg.order.parent_id:
            return True
        return any(
            (o := self.legs.get(p)) is not None and o.order.contingency == OUO for p in leg.peers
        )

    def set_base(self, coid: int, full: int) -> None:
        """The strategy amended a list-governed member: for such a leg an amend's quantity is
        its full size (filled lots included; a child's at its parent's full fill, before OUO
        peers' fills), so the journaled request alone says it after a restart."""
        leg = self.legs.get(coid)
        if leg is not None:
            leg.base = max(0, full)

    def note_fill(self, coid: int, qty: int, lookup: Lookup) -> None:
        """Count a fill of an OCO member that filled second: its first fill came when a peer of
        its OCO group had filled already (the venue filled it between that fill and our cancel:
        the venue's race). Every fill of such a member counts; the first member's never do.
        Call after the fill is applied to ``coid``."""
        leg = self.legs.get(coid)
        me = lookup(coid)
        if leg is None or me is None:
            return
        if me.filled == qty:  # its first fill: did a peer of its OCO group fill before?
            for p in leg.peers:
                other = self.legs.get(p)
                pf = lookup(p)
                if other is None or pf is None or pf.filled <= 0:
                    continue
                if other.order.contingency == OCO or leg.order.contingency == OCO:
                    leg.raced = True
                    break
        if leg.raced:
            self.oco_races += 1
            self.oco_race_qty += qty

    # --- views -----------------------------------------------------------------------------------
    def state(self) -> dict[int, tuple[Any, ...]]:
        """A comparable picture: per member (waiting, native, base, children, peers)."""
        return {
            c: (leg.waiting, leg.native, leg.base, tuple(leg.children), tuple(sorted(leg.peers)))
            for c, leg in sorted(self.legs.items())
        }


def _placeholder(coid: int, child: NewOrder) -> NewOrder:
    """A parent exec learns of only as a child's ``parent_id`` (it was admitted before as a
    plain order): replaced by the real order when exec registers it (``ExecEngine``)."""
    return NewOrder(coid, child.strategy_id, child.instrument_id, 0, 0, 0, 0, 0, 0, 0)
