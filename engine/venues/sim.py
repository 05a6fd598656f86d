"""The simulated exchange: matches OUR orders against a market book it learns from market data.

Why it is built this way (DESIGN §6, the default venue):

- The market's orders are not ours to match: the venue only sees the market as L2 levels
  (:class:`engine.book.L2Book`, one per instrument, fed by ``on_market_data``). Our orders are
  *virtual*: they never enter that book. They trade against it, and the market's flow (trades,
  size changes, prices moving through ours) fills them.
- Taking liquidity (a market order, or a limit order that crosses) walks the opposite side level
  by level, filling at each level's price up to its displayed size. What we took is remembered
  per level (``consumed``) until the market next updates that level, so two orders sent against
  the same book state cannot both take the same displayed size.
- A resting order joins the back of its price level: ``queue ahead`` = the size displayed at its
  price when it arrives. Market volume at that level eats the queue ahead first, then fills us
  (maker, at our price): a Trade at our price does, and so does a size *decrease* at our level
  when the feed has no trades (see ``fill_on_decrease``). A market that moves *through* our price
  fills us at our price: a trade at a worse price than ours, or the opposite side of the book
  reaching ours.
- Among our own orders at one price, earlier orders are ahead (price-time priority): a later
  order's queue ahead includes everything that was ahead of the earlier one, and volume is
  handed out in that order.
- Latency: a request sent at ``t`` reaches the venue at ``t + latency_ns + jitter`` (jitter
  uniform in ``[0, jitter_ns]`` from a seeded numpy Generator) and is matched against the book
  the venue has *then*. Requests keep their sending order (one ordered session, as over TCP),
  so jitter never lets a cancel overtake its order. Events are stamped ``ts_event`` = venue time
  and come back when due (``ts_event + response_latency_ns``) from any call, ``poll`` included.
  With no latency at all a call returns its own events at once.
- Everything is deterministic given the inputs and the seed; time only comes in as ``now_ns``.

Semantics shared with the rest of the engine: ``ReplaceOrder.new_qty`` and ``OrderReplaced.qty``
are the new *open* (leaves) quantity, as the OMS and strategies read them. Events caused by a
cancel or replace request carry that request's ``ts_origin``; every other event carries the
order's. A cancel or replace that cannot be done is answered with ``OrderCancelRejected`` /
``OrderReplaceRejected`` (the reason an enum, the detail for humans); the order itself is
unchanged.

Self-trade prevention: an incoming order (or a replace) that would trade with one of our own
resting orders on the other side is rejected, as exchanges with "cancel newest" STP do.

Reduce-only: an order flagged REDUCE_ONLY is refused unless it is opposite to the venue's
position and no larger; while it rests, its fills are capped at what is left of the position
(other fills may have reduced it), so it never grows a position.

Trading status (halts, the exchange's circuit breaker): an ``ExchangeStatus`` in the market data
(``engine.sources.halts`` decides them and inserts them into the stream) halts one instrument, or
with instrument id -1 the whole venue, until an OPEN for the same id. While halted the venue
refuses new orders and replaces for the instrument with a reason that starts with ``"trading
halted"`` and does not match: resting orders stay on the book untouched (cancels still work),
the market book keeps following the feed. At the reopening, resting orders the book has moved
through are filled at their price, as a reopening cross would. Statuses are part of the venue's
durable record, so a reloaded venue is still halted.
"""

from __future__ import annotations

import heapq
import os
from collections import deque
from collections.abc import Iterable, Mapping

import msgspec
import numpy as np

from engine.book import L2Book
from engine.instruments import Instrument, InstrumentTable
from engine.messages import (
    BookDelta,
    BookSnapshot,
    CancelOrder,
    CancelRejectReason,
    ExchangeStatus,
    Liquidity,
    NewOrder,
    OrderAccepted,
    OrderCanceled,
    OrderCancelRejected,
    OrderExpired,
    OrderFilled,
    OrderFlag,
    OrderPartiallyFilled,
    OrderRejected,
    OrderReplaced,
    OrderReplaceRejected,
    OrderType,
    Quote,
    ReplaceOrder,
    ReplaceRejectReason,
    Side,
    TimeInForce,
    Trade,
)
from engine.order_states import OrderStatus
from engine.venues.base import VenueEvent
from engine.venues.reports import OrderStatusReport, StatusReports
from engine.venues.sim_accounts import SimAccounts
from engine.venues.sim_flow import MarketFlow
from engine.venues.sim_hedging import Legs, reduce_only_refusal, reducible
from engine.venues.sim_record import SimRecord, prune_records, restore
from engine.venues.sim_state import DAY_NS, SimInstrument, SimOrder, SimRequest

__all__ = ["DAY_NS", "SimExchange", "prune_records"]

_SUPPORTED_TIF = frozenset(
    {TimeInForce.GTC, TimeInForce.IOC, TimeInForce.FOK, TimeInForce.DAY, TimeInForce.GTD}
)


def _enum_name(enum: type, value: int) -> str:
    try:
        return enum(value).name
    except ValueError:
        return str(value)


class SimExchange(MarketFlow, StatusReports):
    """A deterministic simulated venue: an :class:`engine.venues.base.ExecutionClient`.

    Parameters
    ----------
    instruments:
        An :class:`InstrumentTable`, a list of :class:`Instrument`, or a mapping
        ``instrument_id -> Instrument | (tick_size, lot_size)``: fees need the notional.
        Orders for other instruments are rejected; their market data is ignored.
    maker_fee_bps, taker_fee_bps:
        Fee = notional x bps / 1e4, notional = px * tick_size * qty * lot_size. A negative
        maker fee is a rebate (a negative fee on the fill).
    latency_ns, jitter_ns, seed:
        Request latency: fixed part plus uniform ``[0, jitter_ns]`` jitter from
        ``numpy.random.default_rng(seed)``.
    response_latency_ns:
        Time from the venue's event to its delivery (``ts_recv``).
    fill_on_decrease:
        Whether a size decrease at our level that no Trade explains, after eating the queue
        ahead, fills us. ``None`` (default) decides per instrument: yes until the first Trade
        is seen for it (a trade-less feed has no other signal of executions), no afterwards
        (with trades in the feed, an unexplained decrease is a cancel, and cancels behind us
        do not fill us). Decreases always shorten the queue ahead first, which is the
        conservative assumption for queue position.
    session_close_ns:
        DAY orders expire at this offset from UTC midnight (default: midnight).
    balance, commission_pct, liquidation_buffer, leverage:
        The account (``engine.venues.sim_accounts``): starting cash per currency, a betting
        market's commission on its net winnings (%), liquidation below maintenance margin x
        the buffer, the leverage cap. The accounts exist only when an instrument is not plain
        spot.
    """

    def __init__(
        self,
        instruments: InstrumentTable
        | Iterable[Instrument]
        | Mapping[int, Instrument | tuple[float, float]],
        *,
        name: str = "sim",
        maker_fee_bps: float = 0.0,
        taker_fee_bps: float = 0.0,
        latency_ns: int = 0,
        jitter_ns: int = 0,
        response_latency_ns: int = 0,
        seed: int = 0,
        fill_on_decrease: bool | None = None,
        session_close_ns: int = DAY_NS,
        max_levels: int = 256,
        record_path: str | os.PathLike[str] | None = None,
        balance: Mapping[str, float] | None = None,
        commission_pct: float = 0.0,
        liquidation_buffer: float = 1.0,
        leverage: float = 0.0,
        position_mode: str = "netting",
    ) -> None:
        if position_mode not in ("netting", "hedging"):
            raise ValueError(f"position_mode must be netting or hedging, not {position_mode!r}")
        if not isinstance(instruments, InstrumentTable | Mapping):
            instruments = list(instruments)  # read twice: specs, then the accounts
        if latency_ns < 0 or jitter_ns < 0 or response_latency_ns < 0:
            raise ValueError("latencies must be >= 0")
        if not 0 < session_close_ns <= DAY_NS:
            raise ValueError("session_close_ns must be in (0, 1 day]")
        self.name = name
        self.maker_fee_bps = float(maker_fee_bps)
        self.taker_fee_bps = float(taker_fee_bps)
        self.latency_ns = int(latency_ns)
        self.jitter_ns = int(jitter_ns)
        self.response_latency_ns = int(response_latency_ns)
        self.fill_on_decrease = fill_on_decrease
        self.session_close_ns = int(session_close_ns)
        self._rng = np.random.default_rng(seed)
        self._insts: dict[int, SimInstrument] = {}
        for iid, tick, lot in self._instrument_specs(instruments):
            self._insts[iid] = SimInstrument(tick, lot, L2Book(iid, max_levels))
        #: every fill the venue generated, in order (its own record, for reconciliation)
        self.fills: list[OrderPartiallyFilled] = []
        #: market-data messages ignored (unknown instrument or type, or rejected by the book)
        self.ignored_market_data = 0
        self._orders: dict[int, SimOrder] = {}  # client_order_id -> order, open or closed
        self._seen_ids: set[int] = set()
        self._positions: dict[int, int] = {}
        #: hedging mode (``engine.venues.sim_hedging``): a long and a short leg per instrument
        self.position_mode = position_mode
        self._legs: Legs | None = Legs() if position_mode == "hedging" else None
        self._requests: deque[SimRequest] = deque()
        self._expiries: list[tuple[int, int, int]] = []  # (expire_ns, prio, client_order_id)
        self._outbox: list[tuple[int, int, object]] = []  # (due_ns, seq, event)
        self._clock = 0
        self._last_arrival = 0
        self._next_req = 0
        self._next_out = 0
        self._next_prio = 0
        self._next_vid = 0
        self._next_fill = 0
        #: the venue's own durable record (``engine.venues.sim_record``): None = memory only
        self._record: SimRecord | None = None
        #: resting orders rebuilt from the record
        self.reloaded_orders = 0
        #: trading status per instrument id (-1: the whole venue): (status, reason) while halted
        self._halts: dict[int, tuple[int, str]] = {}
        #: new orders and replaces refused because the instrument was halted
        self.halt_rejects = 0
        defs = SimAccounts.of(instruments)
        #: funding, financing, expiry, resolution, margin (None: every instrument is spot)
        self._accounts: SimAccounts | None = None
        if SimAccounts.needed(defs):
            self._accounts = SimAccounts(
                defs,
                venue=name,
                balance=balance,
                commission_pct=commission_pct,
                liquidation_buffer=liquidation_buffer,
                leverage=leverage,
            )
        if record_path is not None:
            self._record = SimRecord(record_path)
            restore(self, self._record.frames)
            self._record.frames = []

    @staticmethod
    def _instrument_specs(
        instruments: InstrumentTable
        | Iterable[Instrument]
        | Mapping[int, Instrument | tuple[float, float]],
    ) -> list[tuple[int, float, float]]:
        if isinstance(instruments, Mapping):
            out = []
            for iid, spec in instruments.items():
                if isinstance(spec, Instrument):
                    out.append((int(iid), spec.tick_size, spec.lot_size))
                else:
                    tick, lot = spec
                    if not (tick > 0 and lot > 0):
                        raise ValueError(f"instrument {iid}: tick and lot size must be > 0")
                    out.append((int(iid), float(tick), float(lot)))
            return out
        return [(i.instrument_id, i.tick_size, i.lot_size) for i in instruments]

    # --- the Venue interface ------------------------------------------------------------------
    def submit(self, order: NewOrder, now_ns: int) -> list[VenueEvent]:
        """Send a new order; it is matched when it reaches the venue (``now_ns`` + latency)."""
        self._send(order, now_ns)
        return self.poll(now_ns)

    def cancel(self, cancel: CancelOrder, now_ns: int) -> list[VenueEvent]:
        """Cancel an order's open quantity (answered when it reaches the venue)."""
        self._send(cancel, now_ns)
        return self.poll(now_ns)

    def replace(self, replace: ReplaceOrder, now_ns: int) -> list[VenueEvent]:
        """Change price and open quantity; a new price or a larger quantity loses priority."""
        self._send(replace, now_ns)
        return self.poll(now_ns)

    def trades_instrument(self, instrument_id: int) -> bool:
        """Whether this venue lists the instrument (``engine.routing`` routes by it: beside a
        real venue, the simulator does not trade that venue's instruments)."""
        return instrument_id in self._insts

    def on_market_data(self, msg: object, now_ns: int) -> list[VenueEvent]:
        """Apply a Quote / BookSnapshot / BookDelta / Trade at venue time ``now_ns``.

        Requests that reached the venue by ``now_ns`` are matched first, against the book as
        it was before this message; so are the accounts' events (funding, settlements, ...)
        whose market time the message's ``ts_event`` has passed.
        """
        if self._accounts is not None:  # spot alone: nothing scheduled, nothing to look up
            ts = getattr(msg, "ts_event", None)
            if ts is not None:
                self._accounts.run_due(self, ts, now_ns - ts)
        self._advance(now_ns)
        t = max(self._clock, now_ns)
        self._clock = t
        if type(msg) is ExchangeStatus:
            self._on_status(msg, t)
            return self._drain(now_ns)
        inst = self._insts.get(getattr(msg, "instrument_id", -1))
        if inst is None:
            self.ignored_market_data += 1
        elif type(msg) is BookDelta:
            self._on_delta(inst, msg, t)
        elif type(msg) is Trade:
            self._on_trade(inst, msg, t)
            if self._accounts is not None:
                self._accounts.on_trade(msg.instrument_id, msg.px)
        elif type(msg) is Quote:
            self._on_quote(inst, msg, t)
        elif type(msg) is BookSnapshot:
            self._on_snapshot(inst, msg, t)
        else:
            self.ignored_market_data += 1
        return self._drain(now_ns)

    def poll(self, now_ns: int) -> list[VenueEvent]:
        """Process what has reached the venue by ``now_ns``; return the events due by then."""
        self._advance(now_ns)
        return self._drain(now_ns)

    def open_orders(self) -> list[NewOrder]:
        """Resting orders, in priority order per instrument and side, as NewOrders whose
        ``px`` is the current price and ``qty`` the open (leaves) quantity."""
        out: list[NewOrder] = []
        for iid in sorted(self._insts):
            inst = self._insts[iid]
            for side in (Side.BUY, Side.SELL):
                for o in self._side_orders(inst, side):
                    out.append(msgspec.structs.replace(o.order, px=o.px, qty=o.leaves))
        return out

    def fills_since(self, fill_id: int = 0) -> list[OrderPartiallyFilled]:
        """Every fill the venue made after ``fill_id`` (venue fill ids increase), in order."""
        fills = self.fills
        lo, hi = 0, len(fills)
        while lo < hi:  # ids are increasing: binary search for the first newer one
            mid = (lo + hi) // 2
            if fills[mid].fill_id <= fill_id:
                lo = mid + 1
            else:
                hi = mid
        return fills[lo:]

    def knows_order(self, client_order_id: int) -> bool:
        """Whether this client order id ever reached the venue (accepted or refused)."""
        return client_order_id in self._seen_ids

    def positions(self) -> dict[int, int]:
        """Net position in lots per instrument that has traded (hedging: long + short)."""
        return dict(self._positions)

    def positions_by_side(self) -> dict[int, tuple[int, int]]:
        """(long, short) lots per instrument: a hedging venue's legs (netting: one is 0)."""
        if self._legs is not None:
            return self._legs.sides()
        return {i: (max(p, 0), min(p, 0)) for i, p in self._positions.items()}

    def query_order(self, client_order_id: int) -> OrderStatusReport | None:
        """The order as the venue holds it (None: never accepted; an expired order reads as
        CANCELED)."""
        rec = self._orders.get(client_order_id)
        if rec is None:
            return None
        if rec.is_open:
            status = OrderStatus.PARTIALLY_FILLED if rec.cum else OrderStatus.ACCEPTED
        else:
            status = OrderStatus.FILLED if rec.cum >= rec.qty else OrderStatus.CANCELED
        o = rec.order
        return OrderStatusReport(
            venue=self.name,
            client_order_id=client_order_id,
            instrument_id=o.instrument_id,
            side=o.side,
            order_type=o.order_type,
            status=int(status),
            px=rec.px,
            open_qty=rec.leaves if rec.is_open else 0,
            filled_qty=rec.cum,
            venue_order_id=rec.venue_order_id,
        )

    def close(self) -> None:
        """The protocol's close: the record file (the venue's state is in it)."""
        self.close_record()

    # --- inspection (tests, tools) --------------------------------------------------------------
    def book(self, instrument_id: int) -> L2Book:
        """The market book the venue matches against."""
        return self._insts[instrument_id].book

    def takeable(
        self, instrument_id: int, side: int, max_levels: int = 64
    ) -> list[tuple[int, int]]:
        """(px, qty) levels an order of ``side`` could take now, best first, net of what our own
        earlier takers consumed: what a smart router (``engine.routing``) plans a split on."""
        inst = self._insts.get(instrument_id)
        if inst is None or side not in (Side.BUY, Side.SELL):
            return []
        out: list[tuple[int, int]] = []
        for i in range(max_levels):
            px, qty = inst.book.level(-side, i)
            if qty == 0:
                break
            left = qty - inst.consumed.get((-side, px), 0)
            if left > 0:
                out.append((px, left))
        return out

    # --- the venue's own settlements (a paper venue hears them from the real one) ---------------
    def resolve(self, instrument_id: int, resolution: str, now_ns: int) -> list[VenueEvent]:
        """Resolve a binary or betting instrument now ("1", "0", "void", a binary's "0.5"), as
        a configured ``resolves_ns`` would; again: nothing. Contract: ``SimAccounts.resolve``."""
        acc = self._accounts
        if acc is None or instrument_id not in acc.books:
            raise ValueError(f"instrument {instrument_id}: not a binary or betting instrument here")
        self._advance(now_ns)
        self._clock = max(self._clock, now_ns)
        acc.resolve(self, instrument_id, resolution, self._clock)
        return self._drain(now_ns)

    def halted(self, instrument_id: int) -> str:
        """Why trading in the instrument is stopped ("" when it is open)."""
        inst = self._insts.get(instrument_id)
        return inst.halt_reason if inst is not None else ""

    def queue_ahead(self, client_order_id: int) -> int | None:
        """Market size ahead of a resting order at its price (None if not resting)."""
        o = self._orders.get(client_order_id)
        return o.ahead if o is not None and o.is_open else None

    # --- time ----------------------------------------------------------------------------------
    def _send(self, msg: object, now_ns: int) -> None:
        delay = self.latency_ns
        if self.jitter_ns:
            delay += int(self._rng.integers(0, self.jitter_ns + 1))
        arrival = max(now_ns + delay, self._last_arrival)  # one ordered session
        self._last_arrival = arrival
        self._next_req += 1
        self._requests.append(SimRequest(arrival, self._next_req, msg))

    def _advance(self, now_ns: int) -> None:
        """Process arrivals and expiries due by ``now_ns``, in time order."""
        reqs = self._requests
        exps = self._expiries
        while True:
            t_req = reqs[0].arrival_ns if reqs else None
            t_exp = exps[0][0] if exps else None
            if t_exp is not None and t_exp <= now_ns and (t_req is None or t_exp <= t_req):
                _, _, coid = heapq.heappop(exps)
                self._clock = max(self._clock, t_exp)
                self._expire(coid, self._clock)
            elif t_req is not None and t_req <= now_ns:
                req = reqs.popleft()
                self._clock = max(self._clock, t_req)
                msg = req.msg
                if type(msg) is NewOrder:
                    self._on_new(msg, self._clock)
                elif type(msg) is CancelOrder:
                    self._on_cancel(msg, self._clock)
                else:
                    self._on_replace(msg, self._clock)
            else:
                return

    def close_record(self) -> None:
        """Flush and close the venue's record file (a later SimExchange can reload it)."""
        if self._record is not None:
            self._record.close()
            self._record = None

    def _emit(self, ev: object, t: int) -> None:
        if self._record is not None:
            self._record.append(ev)
        self._next_out += 1
        heapq.heappush(self._outbox, (t + self.response_latency_ns, self._next_out, ev))

    def _drain(self, now_ns: int) -> list[VenueEvent]:
        if self._accounts is not None:  # margin after what moved the market or our positions
            self._accounts.check_margin(self, self._clock)
        rec = self._record
        if rec is not None and rec.buf:
            rec.flush()
        out: list[VenueEvent] = []
        box = self._outbox
        while box and box[0][0] <= now_ns:
            out.append(heapq.heappop(box)[2])
        return out

    # --- requests ------------------------------------------------------------------------------
    def book_fill(
        self, iid: int, side: int, px: int, q: int, fee: float, reduce_only: bool
    ) -> None:
        """A fill of ours (live or from the record) moves the position, its leg, the account."""
        self._positions[iid] = self._positions.get(iid, 0) + side * q
        if self._legs is not None:
            self._legs.trade(iid, side, q, px, reduce_only)
        if self._accounts is not None:
            self._accounts.on_fill(iid, side, px, q, fee, reduce_only)

    def _reject(self, coid: int, iid: int, reason: str, ts_origin: int, t: int) -> None:
        self._emit(OrderRejected(coid, iid, reason, ts_origin, t, t + self.response_latency_ns), t)

    def _validate(self, o: NewOrder, t: int) -> str:
        """Why the venue refuses ``o`` ("" if it does not)."""
        if o.client_order_id in self._seen_ids:
            return f"duplicate client_order_id {o.client_order_id}"
        if o.instrument_id not in self._insts:
            return f"unknown instrument {o.instrument_id}"
        if self._accounts is not None:
            why = self._accounts.refuse(self, o)
            if why:
                return why
        halt = self._insts[o.instrument_id].halt_reason
        if halt:
            self.halt_rejects += 1
            return halt
        if o.order_type not in (OrderType.MARKET, OrderType.LIMIT):
            return (
                f"unsupported order type {_enum_name(OrderType, o.order_type)}: "
                "the simulated exchange supports MARKET and LIMIT"
            )
        if o.tif not in _SUPPORTED_TIF:
            return f"unsupported time in force {_enum_name(TimeInForce, o.tif)}"
        if o.flags & ~(OrderFlag.POST_ONLY | OrderFlag.REDUCE_ONLY):
            return f"unsupported order flags {o.flags:#x}: only POST_ONLY and REDUCE_ONLY"
        if o.flags & OrderFlag.REDUCE_ONLY and (
            why := reduce_only_refusal(self._legs, self._positions, o)
        ):
            return why
        if o.side not in (Side.BUY, Side.SELL):
            return f"invalid side {o.side}"
        if o.qty <= 0:
            return f"qty must be > 0, got {o.qty}"
        if o.order_type == OrderType.LIMIT and o.px <= 0:
            return f"limit price must be > 0, got {o.px}"
        if o.flags & OrderFlag.POST_ONLY:
            if o.order_type == OrderType.MARKET:
                return "POST_ONLY market order: a market order always takes"
            if o.tif in (TimeInForce.IOC, TimeInForce.FOK):
                return "POST_ONLY with IOC/FOK: an order that may not take can never fill"
        if o.tif == TimeInForce.GTD and o.expire_ns <= t:
            return f"GTD expire_ns {o.expire_ns} is not after arrival {t}"
        return ""

    def _on_new(self, o: NewOrder, t: int) -> None:
        reason = self._validate(o, t)
        self._seen_ids.add(o.client_order_id)
        if reason:
            self._reject(o.client_order_id, o.instrument_id, reason, o.ts_origin, t)
            return
        inst = self._insts[o.instrument_id]
        market = o.order_type == OrderType.MARKET
        px = 0 if market else o.px
        if self._own_cross(inst, o.side, px):
            self._reject(
                o.client_order_id,
                o.instrument_id,
                "self-trade prevention: would trade with our own resting order",
                o.ts_origin,
                t,
            )
            return
        if o.flags & OrderFlag.POST_ONLY and self._available(inst, o.side, px, o.qty) > 0:
            self._reject(
                o.client_order_id,
                o.instrument_id,
                "POST_ONLY order would take liquidity",
                o.ts_origin,
                t,
            )
            return
        self._next_vid += 1
        rec = SimOrder(o, self._next_vid, o.side, px, o.qty, leaves=o.qty)
        self._orders[o.client_order_id] = rec
        if self._record is not None:
            self._record.append(o)  # the order itself, before its ack
        self._emit(
            OrderAccepted.for_order(o, rec.venue_order_id, t, t + self.response_latency_ns),
            t,
        )
        if o.tif == TimeInForce.FOK and self._available(inst, o.side, px, o.qty) < o.qty:
            self._cancel_rec(rec, "FOK: not fully fillable against the book", o.ts_origin, t)
            return
        rec.is_open = True
        self._take(inst, rec, t)
        if not rec.is_open:
            return
        if market or o.tif in (TimeInForce.IOC, TimeInForce.FOK):
            why = "market order: no more liquidity" if market else "IOC: remainder canceled"
            self._cancel_rec(rec, why, o.ts_origin, t)
            return
        if o.tif == TimeInForce.DAY:
            day_start = t - t % DAY_NS
            exp = day_start + self.session_close_ns
            rec.expire_ns = exp if exp > t else exp + DAY_NS
        elif o.tif == TimeInForce.GTD:
            rec.expire_ns = o.expire_ns
        self._rest(inst, rec)
        if rec.expire_ns:
            heapq.heappush(self._expiries, (rec.expire_ns, rec.prio, o.client_order_id))

    def _on_cancel(self, c: CancelOrder, t: int) -> None:
        rec = self._orders.get(c.client_order_id)
        if rec is not None and rec.is_open:
            self._cancel_rec(rec, "canceled", c.ts_origin, t)
            return
        why, detail = CancelRejectReason.NOT_OPEN, "order is no longer open"
        if rec is None:
            why = CancelRejectReason.UNKNOWN_ORDER
            detail = f"unknown client_order_id {c.client_order_id}"
        ev = OrderCancelRejected.for_request(c, why, detail, t, t + self.response_latency_ns)
        self._emit(ev, t)

    def _on_replace(self, r: ReplaceOrder, t: int) -> None:
        rec = self._orders.get(r.client_order_id)
        R = ReplaceRejectReason
        why, reason = R.INVALID, ""
        if rec is None:
            why, reason = R.UNKNOWN_ORDER, f"unknown client_order_id {r.client_order_id}"
        elif not rec.is_open:
            why, reason = R.NOT_OPEN, "order is no longer open"
        elif r.new_qty <= 0:
            reason = f"new qty must be > 0, got {r.new_qty}"
        elif r.new_px <= 0:
            reason = f"new price must be > 0, got {r.new_px}"
        elif self._insts[rec.order.instrument_id].halt_reason:
            self.halt_rejects += 1
            why, reason = R.HALTED, self._insts[rec.order.instrument_id].halt_reason
        else:
            inst = self._insts[rec.order.instrument_id]
            if r.new_px != rec.px and self._own_cross(inst, rec.side, r.new_px):
                why = R.SELF_TRADE
                reason = "self-trade prevention: would trade with our own resting order"
            elif (
                rec.order.flags & OrderFlag.POST_ONLY
                and self._available(inst, rec.side, r.new_px, 1) > 0
            ):
                why, reason = R.POST_ONLY, "POST_ONLY order would take liquidity"
        if reason:
            ev = OrderReplaceRejected.for_request(r, why, reason, t, t + self.response_latency_ns)
            self._emit(ev, t)
            return
        assert rec is not None
        inst = self._insts[rec.order.instrument_id]
        loses_priority = r.new_px != rec.px or r.new_qty > rec.leaves
        if loses_priority:
            self._unrest(inst, rec)
        rec.px = r.new_px
        rec.leaves = r.new_qty
        rec.qty = rec.cum + r.new_qty
        self._emit(
            OrderReplaced(
                r.client_order_id,
                r.instrument_id,
                rec.px,
                rec.leaves,
                r.ts_origin,
                t,
                t + self.response_latency_ns,
            ),
            t,
        )
        if loses_priority:
            self._take(inst, rec, t)  # a new price may cross the book
            if rec.is_open:
                self._rest(inst, rec)

    def _expire(self, coid: int, t: int) -> None:
        rec = self._orders.get(coid)
        if rec is None or not rec.is_open or rec.expire_ns > t:
            return  # closed meanwhile (the heap entry is stale)
        inst = self._insts[rec.order.instrument_id]
        leaves = rec.leaves
        self._close(inst, rec)
        o = rec.order
        self._emit(
            OrderExpired(
                o.client_order_id,
                o.instrument_id,
                leaves,
                o.ts_origin,
                t,
                t + self.response_latency_ns,
            ),
            t,
        )

    # --- order book of our own orders -------------------------------------------------------
    def _rest(self, inst: SimInstrument, rec: SimOrder) -> None:
        """Join the back of the queue at our price (size displayed there is ahead of us)."""
        self._next_prio += 1
        rec.prio = self._next_prio
        rec.ahead = inst.book.qty_at(rec.side, rec.px)
        inst.resting.setdefault((rec.side, rec.px), []).append(rec)

    def _unrest(self, inst: SimInstrument, rec: SimOrder) -> None:
        key = (rec.side, rec.px)
        lst = inst.resting.get(key)
        if lst is not None and rec in lst:
            lst.remove(rec)
            if not lst:
                del inst.resting[key]

    def _close(self, inst: SimInstrument, rec: SimOrder) -> None:
        rec.is_open = False
        self._unrest(inst, rec)

    def _cancel_rec(self, rec: SimOrder, reason: str, ts_origin: int, t: int) -> None:
        leaves = rec.leaves
        self._close(self._insts[rec.order.instrument_id], rec)
        self._emit(
            OrderCanceled(
                rec.order.client_order_id,
                rec.order.instrument_id,
                leaves,
                reason,
                ts_origin,
                t,
                t + self.response_latency_ns,
            ),
            t,
        )

    def _side_orders(self, inst: SimInstrument, side: int) -> list[SimOrder]:
        """Our resting orders on ``side``, best price first, then time priority."""
        keys = sorted((k for k in inst.resting if k[0] == side), key=lambda k: -side * k[1])
        return [o for k in keys for o in inst.resting[k]]

    def _own_cross(self, inst: SimInstrument, side: int, px: int) -> bool:
        """Whether an order (px 0 = market) would trade with our own resting opposite order."""
        for s, p in inst.resting:
            if s == -side and (px == 0 or (p <= px if side == Side.BUY else p >= px)):
                return True
        return False

    # --- matching --------------------------------------------------------------------------------
    def _available(self, inst: SimInstrument, side: int, px: int, want: int) -> int:
        """Opposite-side size an order of ``side`` limited at ``px`` (0 = market) could take
        now, counted up to ``want``."""
        book = inst.book
        opp = -side
        total = 0
        i = 0
        while total < want:
            lpx, lqty = book.level(opp, i)
            i += 1
            if lqty == 0 or (px and (lpx > px if side == Side.BUY else lpx < px)):
                break
            total += max(0, lqty - inst.consumed.get((opp, lpx), 0))
        return total

    def _take(self, inst: SimInstrument, rec: SimOrder, t: int) -> None:
        """Take liquidity level by level, filling at each level's price (taker)."""
        book = inst.book
        opp = -rec.side
        buy = rec.side == Side.BUY
        i = 0
        while rec.leaves > 0:
            lpx, lqty = book.level(opp, i)
            i += 1
            if lqty == 0 or (rec.px and (lpx > rec.px if buy else lpx < rec.px)):
                return
            used = inst.consumed.get((opp, lpx), 0)
            q = min(lqty - used, rec.leaves)
            if q <= 0:
                continue
            inst.consumed[(opp, lpx)] = used + q
            self._fill(inst, rec, lpx, q, Liquidity.TAKER, t)

    def _fill(self, inst: SimInstrument, rec: SimOrder, px: int, q: int, liq: int, t: int) -> None:
        reduce_only = bool(rec.order.flags & OrderFlag.REDUCE_ONLY)
        if reduce_only:
            # other fills may have shrunk the position since it arrived: never grow it
            q = min(q, reducible(self._legs, self._positions, rec.order.instrument_id, rec.side))
            if q <= 0:
                return
        rec.cum += q
        rec.leaves -= q
        bps = self.maker_fee_bps if liq == Liquidity.MAKER else self.taker_fee_bps
        fee = px * inst.tick_size * q * inst.lot_size * bps / 1e4
        self._next_fill += 1
        o = rec.order
        cls = OrderFilled if rec.leaves == 0 else OrderPartiallyFilled
        ev = cls(
            o.client_order_id,
            rec.venue_order_id,
            o.instrument_id,
            rec.side,
            px,
            q,
            rec.cum,
            rec.leaves,
            fee,
            liq,
            self._next_fill,
            o.ts_origin,
            t,
            t + self.response_latency_ns,
        )
        self.fills.append(ev)
        self.book_fill(o.instrument_id, rec.side, px, q, fee, reduce_only)
        if rec.leaves == 0:
            self._close(inst, rec)
        self._emit(ev, t)
