"""Order life cycle: the states, the events that move an order, and every legal transition.

Why a table: an order management system is judged by what it does with the event nobody
expected (a fill after a cancel, an ack after a fill, a cancel-reject for a finished order).
Writing the life cycle as ``if`` chains spread over a class hides which pairs are legal; here
every legal ``(state, event) -> state`` is written once, in ``TRANSITIONS``, and anything not
listed is illegal by construction: ``engine.oms.OrderTable`` records it as an anomaly and
leaves the order as it was.

States::

    INITIALIZED ─submit─► SUBMITTED ─ack─► ACCEPTED ─fill─► PARTIALLY_FILLED ─fill─► FILLED
         │  (held, or an emulated       │         │  ▲ │                 │
         │   stop waiting locally)      │   cancel/replace requests: PENDING_CANCEL,
         │                              │   PENDING_REPLACE (fills may still arrive)
         └─ack (emulated)─► ACCEPTED ─trigger─► TRIGGERED ─ack─► ACCEPTED ...
    terminal: FILLED, CANCELED, REJECTED, EXPIRED

``LIVE`` is not a state but a target: "back to the live state the order is in", i.e.
PARTIALLY_FILLED if anything filled, else ACCEPTED once acknowledged, else SUBMITTED (or
TRIGGERED for a triggered stop not yet acknowledged). It is where a refused cancel/replace, or
an answered replace, returns the order.

A fill event is classified by the table's caller as ``FILL`` when it completes the order (no
quantity left, or the venue says so with ``OrderFilled``) and ``PARTIAL_FILL`` otherwise.
"""

from __future__ import annotations

from enum import IntEnum


class OrderStatus(IntEnum):
    """Where an order is in its life cycle (also ``OrderAnomaly.state``)."""

    INITIALIZED = 0  # known to exec, not sent: held (halt) or an emulated order not triggered
    SUBMITTED = 1  # sent to the venue, no answer yet
    ACCEPTED = 2  # acknowledged (by the venue, or locally for an emulated order)
    PARTIALLY_FILLED = 3
    FILLED = 4
    CANCELED = 5
    REJECTED = 6
    EXPIRED = 7
    PENDING_CANCEL = 8  # a cancel was sent, not yet answered
    PENDING_REPLACE = 9  # a cancel/replace (amend) was sent, not yet answered
    TRIGGERED = 10  # a stop's trigger fired; the resulting order is on its way to the venue


class OrderEvent(IntEnum):
    """What happens to an order: local actions and venue answers."""

    SUBMIT = 0  # exec hands the order to the venue
    ACK = 1  # OrderAccepted (from the venue, or exec's own for an emulated order)
    REJECT = 2  # OrderRejected of the order itself
    PARTIAL_FILL = 3  # a fill that leaves quantity open
    FILL = 4  # the fill that completes the order
    CANCEL_REQUEST = 5  # exec sends a cancel
    CANCELED = 6  # OrderCanceled
    CANCEL_REJECT = 7  # OrderCancelRejected: the venue refused the cancel
    REPLACE_REQUEST = 8  # exec sends a cancel/replace
    REPLACED = 9  # OrderReplaced
    REPLACE_REJECT = 10  # OrderReplaceRejected: the venue refused the replace
    EXPIRED = 11  # OrderExpired (GTD, DAY)
    TRIGGER = 12  # a stop's trigger fired (emulated locally, or reported by the venue)


#: pseudo-target: the order's live state (see the module docstring)
LIVE = -1

S = OrderStatus
E = OrderEvent

#: every legal transition, and nothing else
TRANSITIONS: dict[OrderStatus, dict[OrderEvent, int]] = {
    S.INITIALIZED: {
        E.SUBMIT: S.SUBMITTED,
        E.ACK: S.ACCEPTED,  # an emulated order, accepted by exec itself
        E.REJECT: S.REJECTED,  # refused by exec before it reached a venue
        E.CANCELED: S.CANCELED,  # a held order canceled locally
        E.EXPIRED: S.EXPIRED,
        E.REPLACED: S.INITIALIZED,  # a held order amended locally
        E.REPLACE_REJECT: S.INITIALIZED,  # ... or an amend refused locally
    },
    S.SUBMITTED: {
        E.ACK: S.ACCEPTED,
        E.REJECT: S.REJECTED,
        E.PARTIAL_FILL: S.PARTIALLY_FILLED,  # some venues fill before they ack
        E.FILL: S.FILLED,
        E.CANCELED: S.CANCELED,  # IOC / FOK / market remainder
        E.EXPIRED: S.EXPIRED,
        E.CANCEL_REQUEST: S.PENDING_CANCEL,
        E.REPLACE_REQUEST: S.PENDING_REPLACE,
    },
    S.ACCEPTED: {
        E.PARTIAL_FILL: S.PARTIALLY_FILLED,
        E.FILL: S.FILLED,
        E.CANCELED: S.CANCELED,
        E.EXPIRED: S.EXPIRED,
        E.REJECT: S.REJECTED,  # a venue that acks, then refuses (e.g. a later risk check)
        E.CANCEL_REQUEST: S.PENDING_CANCEL,
        E.REPLACE_REQUEST: S.PENDING_REPLACE,
        E.REPLACED: S.ACCEPTED,  # a local amend of an emulated order, or an unsolicited one
        E.TRIGGER: S.TRIGGERED,
    },
    S.PARTIALLY_FILLED: {
        E.PARTIAL_FILL: S.PARTIALLY_FILLED,
        E.FILL: S.FILLED,
        E.CANCELED: S.CANCELED,
        E.EXPIRED: S.EXPIRED,
        E.CANCEL_REQUEST: S.PENDING_CANCEL,
        E.REPLACE_REQUEST: S.PENDING_REPLACE,
        E.REPLACED: S.PARTIALLY_FILLED,
    },
    S.PENDING_CANCEL: {
        E.ACK: S.PENDING_CANCEL,  # the order's ack trailing our cancel
        E.PARTIAL_FILL: S.PENDING_CANCEL,  # fills race a cancel: they are real
        E.FILL: S.FILLED,
        E.CANCELED: S.CANCELED,
        E.CANCEL_REJECT: LIVE,
        E.REPLACED: S.PENDING_CANCEL,  # a replace sent before the cancel, answered now
        E.REPLACE_REJECT: S.PENDING_CANCEL,
        E.EXPIRED: S.EXPIRED,
        E.REJECT: S.REJECTED,  # the order itself was refused before the cancel arrived
        E.CANCEL_REQUEST: S.PENDING_CANCEL,
    },
    S.PENDING_REPLACE: {
        E.ACK: S.PENDING_REPLACE,
        E.PARTIAL_FILL: S.PENDING_REPLACE,
        E.FILL: S.FILLED,
        E.REPLACED: LIVE,
        E.REPLACE_REJECT: LIVE,
        E.CANCELED: S.CANCELED,
        E.EXPIRED: S.EXPIRED,
        E.REJECT: S.REJECTED,
        E.CANCEL_REQUEST: S.PENDING_CANCEL,
        E.REPLACE_REQUEST: S.PENDING_REPLACE,
    },
    S.TRIGGERED: {
        E.SUBMIT: S.TRIGGERED,  # the triggered order handed to the venue
        E.ACK: S.ACCEPTED,
        E.REJECT: S.REJECTED,
        E.PARTIAL_FILL: S.PARTIALLY_FILLED,
        E.FILL: S.FILLED,
        E.CANCELED: S.CANCELED,
        E.EXPIRED: S.EXPIRED,
        E.CANCEL_REQUEST: S.PENDING_CANCEL,
        E.REPLACED: S.TRIGGERED,  # held by a halt, amended locally
        E.REPLACE_REJECT: S.TRIGGERED,
    },
    S.FILLED: {},
    S.CANCELED: {},
    S.REJECTED: {},
    S.EXPIRED: {},
}

TERMINAL: frozenset[OrderStatus] = frozenset(s for s, moves in TRANSITIONS.items() if not moves)
OPEN: frozenset[OrderStatus] = frozenset(S) - TERMINAL

N_STATES = len(OrderStatus)
N_EVENTS = len(OrderEvent)
#: marks an illegal pair in the flat lookup table
ILLEGAL = -2

#: the same table flattened for the hot path: ``FLAT[state * N_EVENTS + event]`` is the target
#: (an OrderStatus value, ``LIVE``, or ``ILLEGAL``). A tuple index beats a dict-of-dicts lookup.
FLAT: tuple[int, ...] = tuple(
    int(TRANSITIONS[S(s)].get(E(e), ILLEGAL)) for s in range(N_STATES) for e in range(N_EVENTS)
)


def target(state: int, event: int) -> int:
    """The state ``event`` moves an order in ``state`` to (``LIVE`` or ``ILLEGAL`` possible)."""
    return FLAT[state * N_EVENTS + event]


def _check() -> None:
    """The table is complete and closed (import-time: a broken table must not load)."""
    assert set(TRANSITIONS) == set(OrderStatus), "every state needs a row"
    for s, moves in TRANSITIONS.items():
        for e, t in moves.items():
            assert isinstance(e, OrderEvent), (s, e)
            assert t == LIVE or t in OrderStatus.__members__.values(), (s, e, t)
    assert [s.value for s in OrderStatus] == list(range(N_STATES))
    assert [e.value for e in OrderEvent] == list(range(N_EVENTS))


_check()
