"""The order table: execution's record of every order, moved by the table in ``order_states``.

Each order gets one ``OrderRecord`` keyed by ``client_order_id``. Local actions (``submit``,
``request_cancel``, ``request_replace``) and venue events (``apply``) move it through the legal
transitions of ``engine.order_states.TRANSITIONS`` and nothing else.

Venues and networks misbehave: a fill arrives for an order we never sent, the same fill is
delivered twice after a reconnect, a fill or an ack trails a cancel, a fill exceeds the order.
A trading engine must not crash on that, and must not pass it on either — a duplicated fill
forwarded to risk and the portfolio doubles a position. ``apply`` therefore returns whether an
event is consistent (forward it) or an anomaly (drop it: the order keeps its state, its filled
quantity and the table's positions stay exact). Every anomaly is counted by kind in
``anomalies`` and recorded as an ``OrderAnomaly`` message (``anomaly_log``, and ``on_anomaly``
if set: the exec engine publishes them), which carries what reconciliation with the venue needs
(fill id, price, quantity). Kinds: ``fill_unknown_order``, ``duplicate_fill``,
``fill_after_terminal``, ``overfill``, ``bad_fill``, ``fill_mismatch`` (side or instrument not
the order's), ``event_unknown_order``,
``event_after_terminal``, ``duplicate_ack``, ``illegal_transition``, ``unknown_event``.

A cancel or replace the venue cannot do is answered with an ``OrderCancelRejected`` /
``OrderReplaceRejected`` (its reason an enum). Such a refusal answers the *request*: the order
goes back to its live state. A refusal that arrives after the order ended crossed its fill or
cancel — a normal race — and is dropped and counted in ``late_request_rejects``, not as an
anomaly.

Rebuilding after a restart (persistence, reconciliation): ``snapshot()`` gives one
``OrderSnapshot`` per order (plain msgspec Structs, storable as JSON / MessagePack / rows);
``OrderTable.restore(snapshots)`` rebuilds a table from them — states, filled quantities, fill
ids (so a replayed fill is still recognised as a duplicate) and positions. Or
``OrderTable.rebuild(orders, events)`` replays the stored orders and venue events through the
same transitions. Either way, reconcile the result with the venue's open orders and positions
before trading (DESIGN §7; ``ExecEngine.reconcile``); a refused fill the venue confirms is applied
with ``accept_fill(anomaly)``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import msgspec

from engine import hedge_legs
from engine.account_events import moves_position, position_after
from engine.messages import (
    ACCOUNT_EVENT_TYPES,
    TAG_BY_TYPE,
    CancelOrder,
    NewOrder,
    OrderAccepted,
    OrderAnomaly,
    OrderCanceled,
    OrderCancelRejected,
    OrderExpired,
    OrderFilled,
    OrderFlag,
    OrderPartiallyFilled,
    OrderRejected,
    OrderReplaced,
    OrderReplaceRejected,
    OrderTriggered,
    ReplaceOrder,
)
from engine.order_states import (
    FLAT,
    ILLEGAL,
    LIVE,
    N_EVENTS,
    TERMINAL,
    OrderEvent,
    OrderStatus,
)

#: the life-cycle states (the old name; ``OrderStatus`` is the same enum)
OrderState = OrderStatus

_E = OrderEvent
_S = OrderStatus
_FILL_TYPES = (OrderPartiallyFilled, OrderFilled)
_REDUCE_ONLY = int(OrderFlag.REDUCE_ONLY)
_EVENT_OF_TYPE: dict[type, int] = {
    OrderAccepted: _E.ACK,
    OrderRejected: _E.REJECT,
    OrderCanceled: _E.CANCELED,
    OrderExpired: _E.EXPIRED,
    OrderReplaced: _E.REPLACED,
    OrderTriggered: _E.TRIGGER,
    OrderCancelRejected: _E.CANCEL_REJECT,
    OrderReplaceRejected: _E.REPLACE_REJECT,
}
# terminal-state membership by int value, for the hot path
_TERMINAL = frozenset(int(s) for s in TERMINAL)


@dataclass(slots=True)
class OrderRecord:
    """One order as execution knows it. ``px``/``qty`` follow replaces; ``order`` is the original.

    ``qty`` is the order's current total quantity (filled + open), ``leaves_qty`` what is open.
    """

    order: NewOrder
    state: int
    px: int
    qty: int
    leaves_qty: int
    submitted_ns: int
    cum_qty: int = 0
    notional_ticks: int = 0  # sum of fill_px * fill_qty, for the average price
    fees: float = 0.0
    venue_order_id: int = 0
    fill_ids: set[int] = field(default_factory=set)
    updated_ns: int = 0
    reason: str = ""
    acked: bool = False  # an OrderAccepted was seen (venue or local)
    emulated: bool = False  # exec emulates its type (stop / trailing) from market data
    triggered: bool = False
    stop_px: int = 0  # the trigger level (follows a trailing stop)
    pending_replaces: int = 0  # replaces sent and not yet answered

    @property
    def client_order_id(self) -> int:
        return self.order.client_order_id

    @property
    def instrument_id(self) -> int:
        return self.order.instrument_id

    @property
    def side(self) -> int:
        return self.order.side

    @property
    def is_open(self) -> bool:
        return self.state not in _TERMINAL

    @property
    def status(self) -> OrderStatus:
        return OrderStatus(self.state)

    @property
    def avg_px(self) -> float:
        """Average fill price in ticks (0.0 before the first fill)."""
        return self.notional_ticks / self.cum_qty if self.cum_qty else 0.0

    def snapshot(self) -> OrderSnapshot:
        return OrderSnapshot(
            state=int(self.state),
            fill_ids=sorted(self.fill_ids),
            **{f: getattr(self, f) for f in _COPIED_FIELDS},
        )


class OrderSnapshot(msgspec.Struct, kw_only=True):
    """A stored order (see the module docstring: ``snapshot`` / ``restore``)."""

    order: NewOrder
    state: int
    px: int
    qty: int
    leaves_qty: int
    submitted_ns: int = 0
    cum_qty: int = 0
    notional_ticks: int = 0
    fees: float = 0.0
    venue_order_id: int = 0
    fill_ids: list[int] = []
    updated_ns: int = 0
    reason: str = ""
    acked: bool = False
    emulated: bool = False
    triggered: bool = False
    stop_px: int = 0


#: the snapshot fields copied as they are between an OrderRecord and its OrderSnapshot (the
#: state and the fill-id set/list are converted): one list, so a new field cannot be forgotten
#: on one side of the round trip
_COPIED_FIELDS = tuple(f for f in OrderSnapshot.__struct_fields__ if f not in ("state", "fill_ids"))


class OrderTable:
    """Orders by client_order_id, their states, and the position their fills add up to."""

    def __init__(self, anomaly_log_size: int = 1024) -> None:
        self.orders: dict[int, OrderRecord] = {}
        self._open: dict[int, OrderRecord] = {}
        #: net filled lots per instrument, from the fills this table accepted
        self.positions: dict[int, int] = {}
        #: (long, short) lots per instrument by the hedging rule (``engine.hedge_legs``): what
        #: ``legs`` reads for the instruments in ``hedged`` (those of hedging venues)
        self.leg_lots: dict[int, tuple[int, int]] = {}
        self.hedged: set[int] = set()
        self.anomalies: dict[str, int] = {}
        #: the most recent anomalies (OrderAnomaly), oldest first
        self.anomaly_log: deque[OrderAnomaly] = deque(maxlen=anomaly_log_size)
        #: called with each OrderAnomaly as it is recorded (the exec engine publishes them)
        self.on_anomaly: Callable[[OrderAnomaly], None] | None = None
        #: refusals of cancels/replaces that crossed the order's end (dropped, not anomalies)
        self.late_request_rejects = 0
        #: events applied, anomalies included (the benchmark's unit)
        self.events = 0

    def __len__(self) -> int:
        return len(self.orders)

    def __contains__(self, client_order_id: object) -> bool:
        return client_order_id in self.orders

    def get(self, client_order_id: int) -> OrderRecord | None:
        return self.orders.get(client_order_id)

    def open_orders(self) -> list[OrderRecord]:
        """Orders not yet in a terminal state, in submission order."""
        return list(self._open.values())

    @property
    def open_count(self) -> int:
        """Orders not yet in a terminal state."""
        return len(self._open)

    def state(self, client_order_id: int) -> OrderStatus | None:
        r = self.orders.get(client_order_id)
        return None if r is None else OrderStatus(r.state)

    def position(self, instrument_id: int) -> int:
        return self.positions.get(instrument_id, 0)

    def legs(self, instrument_id: int) -> tuple[int, int]:
        """(long lots, short lots <= 0): both legs on a hedging venue, else the net on its side."""
        net = self.positions.get(instrument_id, 0)
        return hedge_legs.legs_of(self.leg_lots, self.hedged, instrument_id, net)

    def _move(self, o: NewOrder, q: int) -> None:
        """``q`` lots of ``o`` filled: the net position and the legs move."""
        iid = o.instrument_id
        signed = o.side * q
        self.positions[iid] = self.positions.get(iid, 0) + signed
        hedge_legs.move(self.leg_lots, iid, signed, bool(o.flags & _REDUCE_ONLY))

    @property
    def anomaly_count(self) -> int:
        return sum(self.anomalies.values())

    # --- anomalies ---------------------------------------------------------------------------
    def _anomaly(self, kind: str, ev: object, r: OrderRecord | None, detail: str = "") -> bool:
        self.anomalies[kind] = self.anomalies.get(kind, 0) + 1
        is_fill = isinstance(ev, _FILL_TYPES)
        a = OrderAnomaly(
            client_order_id=getattr(ev, "client_order_id", 0),
            instrument_id=getattr(ev, "instrument_id", -1),
            kind=kind,
            state=-1 if r is None else int(r.state),
            event_tag=TAG_BY_TYPE.get(type(ev), 0),  # type: ignore[call-overload]
            ts_recv=getattr(ev, "ts_recv", 0),
            fill_id=ev.fill_id if is_fill else 0,  # type: ignore[attr-defined]
            px=ev.fill_px if is_fill else 0,  # type: ignore[attr-defined]
            qty=ev.fill_qty if is_fill else 0,  # type: ignore[attr-defined]
            detail=detail,
        )
        self.anomaly_log.append(a)
        if self.on_anomaly is not None:
            self.on_anomaly(a)
        return False

    # --- local transitions ---------------------------------------------------------------------
    def add(
        self, order: NewOrder, now_ns: int, *, submitted: bool = True, emulated: bool = False
    ) -> OrderRecord | None:
        """Record a new order — SUBMITTED, or INITIALIZED with ``submitted=False`` (exec then
        calls ``submit`` when it hands it to the venue). None (nothing changed) if the id is
        known: client order ids are idempotent, a resent order is never a second order."""
        coid = order.client_order_id
        if coid in self.orders:
            return None
        qty = order.qty
        # positional: this is the per-order cost of the table (field order of OrderRecord)
        r = OrderRecord(
            order,
            1 if submitted else 0,  # SUBMITTED / INITIALIZED
            order.px,
            qty,
            qty,
            now_ns,
            0,
            0,
            0.0,
            0,
            set(),
            now_ns,
            "",
            False,
            emulated,
            False,
            order.stop_px,
        )
        self.orders[coid] = r
        self._open[coid] = r
        return r

    def _local(self, client_order_id: int, event: int) -> OrderRecord | None:
        """A local action on an order: the record if the table allows it, else None."""
        r = self.orders.get(client_order_id)
        if r is None:
            return None
        t = FLAT[r.state * N_EVENTS + event]
        if t == ILLEGAL:
            return None
        r.state = t
        return r

    def submit(self, client_order_id: int, now_ns: int = 0) -> bool:
        """The order is handed to the venue (INITIALIZED → SUBMITTED, or a TRIGGERED order)."""
        r = self._local(client_order_id, _E.SUBMIT)
        if r is not None:
            r.submitted_ns = now_ns or r.submitted_ns
        return r is not None

    def request_cancel(self, client_order_id: int) -> bool:
        """A cancel is being sent; False if the order's state does not allow one."""
        return self._local(client_order_id, _E.CANCEL_REQUEST) is not None

    def request_replace(self, client_order_id: int) -> bool:
        """A cancel/replace is being sent; False if the order's state does not allow one."""
        r = self._local(client_order_id, _E.REPLACE_REQUEST)
        if r is not None:
            r.pending_replaces += 1
        return r is not None

    # --- venue events ------------------------------------------------------------------------
    def _live(self, r: OrderRecord) -> int:
        if r.pending_replaces > 0:
            return _S.PENDING_REPLACE
        if r.cum_qty:
            return _S.PARTIALLY_FILLED
        if r.acked:
            return _S.ACCEPTED
        return _S.TRIGGERED if r.triggered else _S.SUBMITTED

    def _close(self, r: OrderRecord, state: int) -> None:
        r.state = state
        r.leaves_qty = 0
        self._open.pop(r.order.client_order_id, None)

    def apply(self, ev: object) -> bool:
        """Apply one execution event; True if consistent (forward it), False if an anomaly."""
        self.events += 1
        tp = type(ev)
        if tp is OrderPartiallyFilled or tp is OrderFilled:
            return self._apply_fill(ev)  # type: ignore[arg-type]
        event = _EVENT_OF_TYPE.get(tp)
        if event is None:
            return self._anomaly("unknown_event", ev, None, tp.__name__)
        coid = ev.client_order_id  # type: ignore[attr-defined]
        r = self.orders.get(coid)
        if r is None:
            return self._anomaly("event_unknown_order", ev, None)
        state = r.state
        if state in _TERMINAL:
            if event == _E.CANCEL_REJECT or event == _E.REPLACE_REJECT:
                self.late_request_rejects += 1  # crossed the order's end: a normal race
                return False
            return self._anomaly("event_after_terminal", ev, r)
        t = FLAT[state * N_EVENTS + event]
        if t == ILLEGAL:
            kind = "duplicate_ack" if event == _E.ACK else "illegal_transition"
            return self._anomaly(kind, ev, r, f"{OrderEvent(event).name} in {_S(state).name}")
        r.updated_ns = getattr(ev, "ts_recv", r.updated_ns)
        if event == _E.ACK:
            r.acked = True
            if ev.venue_order_id:  # type: ignore[attr-defined]
                r.venue_order_id = ev.venue_order_id  # type: ignore[attr-defined]
        elif event == _E.REPLACED:
            r.px = ev.px  # type: ignore[attr-defined]
            r.leaves_qty = ev.qty  # type: ignore[attr-defined]
            r.qty = r.cum_qty + ev.qty  # type: ignore[attr-defined]
            if r.pending_replaces > 0:
                r.pending_replaces -= 1
        elif event == _E.REPLACE_REJECT:
            if r.pending_replaces > 0:
                r.pending_replaces -= 1
        elif event == _E.TRIGGER:
            r.triggered = True
            r.stop_px = ev.stop_px  # type: ignore[attr-defined]
        elif event == _E.CANCELED or event == _E.REJECT:
            r.reason = ev.reason  # type: ignore[attr-defined]
        if t == LIVE:
            t = self._live(r)
        if t in _TERMINAL:
            self._close(r, t)
        else:
            r.state = t
        return True

    def _apply_fill(self, ev: OrderPartiallyFilled) -> bool:
        r = self.orders.get(ev.client_order_id)
        if r is None:
            return self._anomaly("fill_unknown_order", ev, None)
        fid = ev.fill_id
        if fid and fid in r.fill_ids:
            return self._anomaly("duplicate_fill", ev, r)
        state = r.state
        if state in _TERMINAL:
            return self._anomaly("fill_after_terminal", ev, r)
        q = ev.fill_qty
        if q <= 0 or ev.fill_px < 0:
            return self._anomaly("bad_fill", ev, r, f"qty {q} px {ev.fill_px}")
        o = r.order
        if ev.side != o.side or ev.instrument_id != o.instrument_id:
            return self._anomaly(
                "fill_mismatch", ev, r, f"side/instrument {ev.side}/{ev.instrument_id}"
            )
        cum = r.cum_qty + q
        if cum > r.qty:
            return self._anomaly("overfill", ev, r, f"cum {cum} > qty {r.qty}")
        done = cum == r.qty or type(ev) is OrderFilled
        t = FLAT[state * N_EVENTS + (_E.FILL if done else _E.PARTIAL_FILL)]
        if t == ILLEGAL:
            return self._anomaly("illegal_transition", ev, r, f"fill in {_S(state).name}")
        if fid:
            r.fill_ids.add(fid)
        r.cum_qty = cum
        r.notional_ticks += ev.fill_px * q
        r.fees += ev.fee
        r.updated_ns = ev.ts_recv
        if ev.venue_order_id:
            r.venue_order_id = ev.venue_order_id
        iid = o.instrument_id  # position and legs inline (``_move``): this runs per fill
        signed = o.side * q
        self.positions[iid] = self.positions.get(iid, 0) + signed
        lg = self.leg_lots.get(iid)
        if o.flags & _REDUCE_ONLY or lg is None:
            hedge_legs.move(self.leg_lots, iid, signed, bool(o.flags & _REDUCE_ONLY))
        else:
            self.leg_lots[iid] = (lg[0] + signed, lg[1]) if signed > 0 else (lg[0], lg[1] + signed)
        if t in _TERMINAL:
            self._close(r, t)  # FILLED (the venue may end it short of qty: nothing is open)
        else:
            r.leaves_qty = r.qty - cum
            r.state = t
        return True

    # --- reconciliation ----------------------------------------------------------------------
    def accept_fill(self, anomaly: OrderAnomaly) -> bool:
        """Apply a fill the table refused, once reconciliation with the venue confirmed it is
        real (a fill that crossed a cancel, an overfill the venue stands by).

        The fill counts towards the order's filled quantity, average price and the position,
        whatever the order's state (a finished order stays finished; an overfilled order's
        quantity grows to what was filled). Its fill id is remembered so the event itself,
        replayed, stays a duplicate. False (nothing changed) for an anomaly that is not a fill
        of a known order, or whose fill id was already applied.
        """
        r = self.orders.get(anomaly.client_order_id)
        if r is None or anomaly.qty <= 0 or anomaly.kind in ("duplicate_fill", "fill_mismatch"):
            return False
        if anomaly.fill_id:
            if anomaly.fill_id in r.fill_ids:
                return False
            r.fill_ids.add(anomaly.fill_id)
        r.cum_qty += anomaly.qty
        r.notional_ticks += anomaly.px * anomaly.qty
        if r.cum_qty > r.qty:
            r.qty = r.cum_qty
        self._move(r.order, anomaly.qty)
        if r.is_open:
            if r.cum_qty >= r.qty:
                self._close(r, _S.FILLED)
            else:
                r.leaves_qty = r.qty - r.cum_qty
                if r.state in (_S.SUBMITTED, _S.ACCEPTED, _S.TRIGGERED):
                    r.state = _S.PARTIALLY_FILLED
        return True

    def apply_account(self, ev: object) -> None:
        """A settlement (flat) or a liquidation (its trade) moves the position like the
        portfolio's (``engine.account_events``); other account events move none."""
        if moves_position(ev):
            iid = ev.instrument_id  # type: ignore[attr-defined]
            self.positions[iid] = position_after(self.positions.get(iid, 0), ev)
            hedge_legs.apply_account(self.leg_lots, ev)

    # --- persistence -------------------------------------------------------------------------
    def snapshot(self) -> list[OrderSnapshot]:
        """Every order as a storable ``OrderSnapshot``, in submission order."""
        return [r.snapshot() for r in self.orders.values()]

    @classmethod
    def restore(cls, snapshots: Iterable[OrderSnapshot]) -> OrderTable:
        """A table rebuilt from stored snapshots (states, fills, fill ids, positions).

        Positions are the sum of the restored orders' fills: restore every order that ever
        filled (not only the open ones) or reconcile positions with the venue afterwards.
        A snapshot whose state is not a valid ``OrderStatus`` raises ``ValueError``.
        """
        t = cls()
        for s in snapshots:
            state = OrderStatus(s.state)  # ValueError on garbage: refuse to guess
            r = OrderRecord(
                state=int(state),
                fill_ids=set(s.fill_ids),
                **{f: getattr(s, f) for f in _COPIED_FIELDS},
            )
            coid = s.order.client_order_id
            t.orders[coid] = r
            if state not in TERMINAL:
                t._open[coid] = r
            if s.cum_qty:
                t._move(s.order, s.cum_qty)
        return t

    @classmethod
    def rebuild(cls, orders: Iterable[NewOrder], events: Iterable[object]) -> OrderTable:
        """A table rebuilt by replaying stored orders (as sent) and venue events, in order.

        The record (and exec's journal) hold the cancel / replace requests exec took among the
        events: they are replayed as the requests exec made (``request_cancel`` /
        ``request_replace``, where the order's state allowed one, as exec checks), not applied
        as venue events — which counted each as an ``unknown_event`` anomaly and lost a cancel
        still pending at the crash (reconciliation cancels such an order at the venue)."""
        t = cls()
        for o in orders:
            t.add(o, o.ts_approved)
        for ev in events:
            tp = type(ev)
            if tp is CancelOrder:
                t.request_cancel(ev.client_order_id)  # type: ignore[attr-defined]
            elif tp is ReplaceOrder:
                t.request_replace(ev.client_order_id)  # type: ignore[attr-defined]
            elif tp in ACCOUNT_EVENT_TYPES:
                t.apply_account(ev)  # journaled account events: positions as exec had them
            else:
                t.apply(ev)
        return t
