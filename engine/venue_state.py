"""Where a venue stands, in one word and a reason: what exec, the router and the operator share.

A real venue comes and goes: its connection drops, it resyncs, it bans us for a while, or our
own reconciliation finds its balances disagree with our fills and stops trading there. Each of
these must stop new orders to *that* venue only, and be visible to the operator (status line,
``gekko status``, audit log). One small vocabulary, so every layer says the same thing:

- ``connected``: orders go out;
- ``resyncing``: (re)connected, its open orders, fills and balances are being reconciled; no
  new orders until that is done;
- ``banned``: the venue refused us (418 / a ban's Retry-After); nothing is sent until it ends;
- ``halted``: reconciliation found a difference it cannot explain (the reason says which);
  only an operator's resume lifts it;
- ``down``: not connected, reconnecting with backoff.

A venue without a ``state()`` method (the simulated exchange) is always ``connected``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any

__all__ = [
    "EXTERNAL_ORDER_POLICIES",
    "AdoptedOrder",
    "VenueState",
    "VenueStatus",
    "external_orders_policy",
    "state_of",
]


class VenueState(IntEnum):
    """The state codes the shm ``venues`` table carries (0: no live venue in that row)."""

    CONNECTED = 1
    RESYNCING = 2
    BANNED = 3
    HALTED = 4
    DOWN = 5

    @property
    def word(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> VenueState:
        """A state from its word (``"connected"``...); anything else is ``DOWN``: fail closed."""
        try:
            return cls[str(text).strip().upper()]
        except KeyError:
            return cls.DOWN


#: ``[venues.X] external_orders``: what to do with an order open at the venue that our record
#: does not know (placed by hand, by another program, or lost from the record)
EXTERNAL_ORDER_POLICIES = ("adopt", "cancel", "halt")


def external_orders_policy(settings: Any) -> str:
    """The venue's ``external_orders`` setting (default ``"halt"``: fail closed)."""
    v = str((settings or {}).get("external_orders", "halt")).strip().lower()
    if v not in EXTERNAL_ORDER_POLICIES:
        raise ValueError(
            f"external_orders must be one of {', '.join(EXTERNAL_ORDER_POLICIES)}, got {v!r}"
        )
    return v


@dataclass(frozen=True, slots=True)
class VenueStatus:
    """One venue's state, why, and since when (``time.monotonic_ns``)."""

    venue: str
    state: VenueState
    reason: str = ""
    since_ns: int = 0

    @property
    def accepts_orders(self) -> bool:
        return self.state == VenueState.CONNECTED

    def line(self) -> str:
        """``binanceus halted (BTC: 0.0123 at the venue, 0.0100 expected)``."""
        why = f" ({self.reason})" if self.reason and self.state != VenueState.CONNECTED else ""
        return f"{self.venue} {self.state.word}{why}"


def state_of(venue: Any) -> tuple[VenueState, str]:
    """A venue client's state and reason: its ``venue_status()`` (``ReconciledVenue``), else its
    ``state()`` / ``state_reason`` (a live client), else connected (the simulated exchange)."""
    vs = getattr(venue, "venue_status", None)
    if callable(vs):
        s = vs()
        return s.state, s.reason
    st = getattr(venue, "state", None)
    if not callable(st):
        return VenueState.CONNECTED, ""
    return VenueState.parse(st()), str(getattr(venue, "state_reason", "") or "")


@dataclass(frozen=True, slots=True)
class AdoptedOrder:
    """Not a wire message: a venue client's word that ``order``, open at the venue and unknown
    to our record, is ours from now on (``external_orders = "adopt"``). The router registers it
    as a one-leg order at ``venue``; ``ExecEngine`` enters it in its order table and publishes
    its ``OrderAccepted`` — from then on its fills count and a kill switch cancels it."""

    order: Any  # engine.messages.NewOrder: px current, qty open
    venue: str
    venue_order_id: int = 0

    @property
    def client_order_id(self) -> int:
        return int(self.order.client_order_id)
