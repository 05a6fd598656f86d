"""Smart order routing: one Venue made of several named venues.

``SmartRouter`` implements the Venue protocol (``engine.venues.base``), so the exec engine stays a
one-venue engine while orders are spread over several venues:

- **Marketable orders** (market orders, and limit orders that cross some venue's book) are split
  by the best *effective* price after taker fees, walking every venue's visible book: each lot
  is bought where ``px * (1 + taker_bps / 1e4)`` is lowest (sold where ``px * (1 - taker_bps /
  1e4)`` is highest). Within one venue that per-lot cost only worsens level by level, so taking
  the cheapest lots first across all venues (``plan_take``) is the optimal split — the tests
  check it against a brute force over every split.
- **Resting quantity** (what is left of a limit order once the marketable part is planned, or a
  post-only order) goes to the one venue with the best expected fill: first the price relative
  to that venue's touch (joining or improving the best level beats sitting behind it), then the
  smallest queue ahead at our price, then the lowest maker fee (the biggest rebate).
- FOK keeps its all-or-nothing meaning: it is split only when the visible books can fill all of
  it, otherwise it goes whole to one venue (which kills it).

Each venue gets at most one leg of an order, under the order's own ``client_order_id`` (venues
have separate id spaces, so nothing needs renaming). The legs' events are merged back onto the
original order: one ``OrderAccepted``; fills with the order's ``cum_qty`` / ``leaves_qty``
(``cum + leaves = qty`` on every fill), ``fill_id`` numbered by the router (each venue numbers its
own fills from 1) and the router's ``venue_order_id``; and one terminal event once every leg has
closed — ``OrderFilled`` when filled, ``OrderRejected`` when every leg was rejected before any
acceptance, otherwise ``OrderCanceled`` / ``OrderExpired`` with the quantity that never filled.
A cancel goes to every open leg; a replace only to an order working at a single venue (moving
quantity between venues is a cancel and a new order). REDUCE_ONLY is about the position over all
venues: checked when the order arrives, then its legs go without the flag.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from engine.enums import ContingencyType, InstrumentKind
from engine.messages import (
    CancelOrder,
    CancelRejectReason,
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
    ReplaceOrder,
    ReplaceRejectReason,
    Side,
    TimeInForce,
)
from engine.venue_state import AdoptedOrder, VenueState, state_of
from engine.venues.base import Venue, VenueEvent
from engine.venues.reports import StatusReports

__all__ = ["SmartRouter", "VenueQuote", "plan_take", "take_cost"]


@dataclass(frozen=True, slots=True)
class VenueQuote:
    """One venue's takeable liquidity for one order: levels best first, and its taker fee."""

    name: str
    levels: Sequence[tuple[int, int]]
    taker_fee_bps: float


def _unit(px: int, side: int, bps: float) -> float:
    """Cost per lot in ticks (buy: paid incl. fee; sell: minus the proceeds, so lower is better)."""
    return px * (1.0 + bps / 1e4) if side == Side.BUY else -px * (1.0 - bps / 1e4)


def take_cost(levels: Sequence[tuple[int, int]], side: int, bps: float, qty: int) -> float:
    """What taking ``qty`` lots by walking ``levels`` costs (``_unit`` convention)."""
    cost = 0.0
    left = qty
    for px, q in levels:
        if left <= 0:
            break
        n = min(q, left)
        cost += n * _unit(px, side, bps)
        left -= n
    if left > 0:
        raise ValueError(f"only {qty - left} of {qty} lots available")
    return cost


def plan_take(
    quotes: Sequence[VenueQuote], side: int, qty: int, limit_px: int = 0
) -> dict[str, int]:
    """The cheapest split of ``qty`` lots over the venues' levels (``limit_px`` 0 = no limit).

    Greedy by per-lot effective price, ties to the earlier venue: optimal because each lot's cost
    depends only on its own level and a venue's levels get worse further down its book.
    Returns lots per venue (only venues with a take); may sum to less than ``qty``.
    """
    cands: list[tuple[float, int, int, int]] = []  # (unit cost, venue idx, level idx, qty)
    for vi, vq in enumerate(quotes):
        for li, (px, q) in enumerate(vq.levels):
            if q <= 0:
                continue
            if limit_px and (px > limit_px if side == Side.BUY else px < limit_px):
                break
            cands.append((_unit(px, side, vq.taker_fee_bps), vi, li, q))
    cands.sort()
    out: dict[str, int] = {}
    left = qty
    for _, vi, _, q in cands:
        if left <= 0:
            break
        n = min(q, left)
        name = quotes[vi].name
        out[name] = out.get(name, 0) + n
        left -= n
    return out


@dataclass(slots=True, eq=False)
class _Leg:
    venue: str
    qty: int
    leaves: int
    cum: int = 0
    is_open: bool = True
    accepted: bool = False


@dataclass(slots=True, eq=False)
class _Routed:
    order: NewOrder
    qty: int  # total quantity (follows replaces)
    px: int
    venue_order_id: int
    legs: dict[str, _Leg] = field(default_factory=dict)
    cum: int = 0
    accepted: bool = False
    closed: bool = False
    reasons: list[str] = field(default_factory=list)

    def open_legs(self) -> list[_Leg]:
        return [leg for leg in self.legs.values() if leg.is_open]


class SmartRouter(StatusReports):
    """A Venue over several named venues (see the module docstring).

    ``venues`` maps a name to a venue, or is a sequence of venues named by their ``name``.
    Fees come from each venue's ``maker_fee_bps`` / ``taker_fee_bps`` attributes unless ``fees``
    gives ``name -> (maker_bps, taker_bps)``. The visible book of a venue is read through its
    ``takeable(instrument_id, side)`` (``SimExchange``) or ``book(instrument_id)``; a venue with
    neither only receives resting orders when it is the only choice.
    """

    def __init__(
        self,
        venues: Mapping[str, Venue] | Sequence[Venue],
        *,
        name: str = "smart",
        fees: Mapping[str, tuple[float, float]] | None = None,
        instruments: Any = None,
    ) -> None:
        if isinstance(venues, Mapping):
            items = list(venues.items())
        else:
            items = [(getattr(v, "name", f"venue{k}"), v) for k, v in enumerate(venues)]
        if not items:
            raise ValueError("SmartRouter needs at least one venue")
        names = [n for n, _ in items]
        if len(set(names)) != len(names):
            raise ValueError(f"venue names must be unique, got {names}")
        self.name = name
        self.venues: dict[str, Venue] = dict(items)
        #: the instruments (``.get(iid)``), to know a betting selection; None: none is refused
        self.instruments = instruments
        self.fees: dict[str, tuple[float, float]] = {}
        for n, v in items:
            if fees is not None and n in fees:
                maker, taker = fees[n]
            else:
                maker = float(getattr(v, "maker_fee_bps", 0.0))
                taker = float(getattr(v, "taker_fee_bps", 0.0))
            self.fees[n] = (float(maker), float(taker))
        self._orders: dict[int, _Routed] = {}  # working orders only (finished ones are pruned)
        #: client order ids of finished orders: kept for idempotency and ``knows_order``; a
        #: finished order's bookkeeping (legs, reasons) is dropped once no leg can still speak
        self._finished: set[int] = set()
        #: orders pruned, and late leg events of pruned orders dropped (both for the status line)
        self.pruned = 0
        self.late_events = 0
        self._next_vid = 0
        self._next_fill = 0
        #: orders routed, and legs sent per venue (for the status line / tests)
        self.routed = 0
        self.legs_sent: dict[str, int] = {n: 0 for n in names}
        #: venue events that matched no routed order or leg (forwarded untouched)
        self.unmatched_events = 0
        #: every merged fill, in order (router fill ids increase): the router's own record
        self.fills: list[OrderPartiallyFilled] = []
        #: venues with a state (live ones, ``engine.venue_state``): asked before each new order;
        #: one that is not ``connected`` gets no new order, the others trade on
        self._stateful = [
            n
            for n, v in items
            if callable(getattr(v, "venue_status", None)) or callable(getattr(v, "state", None))
        ]
        self._up: frozenset[str] | None = None  # for the order being planned (None: all)
        self._by_iid: dict[int, list[str]] = {}  # instrument -> the venues that trade it
        self._items = list(self.venues.items())

    # --- the Venue interface ------------------------------------------------------------------
    def submit(self, order: NewOrder, now_ns: int) -> list[VenueEvent]:
        coid = order.client_order_id
        if coid in self._orders or coid in self._finished:
            why = f"duplicate client_order_id {coid}"
            return [OrderRejected.for_order(order, why, now_ns, now_ns)]
        if order.flags & OrderFlag.REDUCE_ONLY and order.qty > 0:
            # reduce-only means the position over all venues: checked here, and the legs go
            # without the flag (one venue's leg may open a position there while the total shrinks)
            pos = self.positions().get(order.instrument_id, 0)
            if order.side * pos >= 0 or order.qty > abs(pos):
                self._finished.add(coid)
                why = f"REDUCE_ONLY order of {order.qty} would increase the position {pos}"
                return [OrderRejected.for_order(order, why, now_ns, now_ns)]
            order = msgspec.structs.replace(order, flags=order.flags & ~OrderFlag.REDUCE_ONLY)
        why = self.unroutable(order.instrument_id)
        if why:
            self._finished.add(coid)
            return [OrderRejected.for_order(order, why, now_ns, now_ns)]
        names = self.trading(order.instrument_id)
        down = self.down_venues(names)
        if len(down) == len(names):
            why = "no venue takes orders: " + "; ".join(down.values())
            if not names:
                why = f"unknown instrument {order.instrument_id}: no venue trades it"
            self._finished.add(coid)
            return [OrderRejected.for_order(order, why, now_ns, now_ns)]
        if down or len(names) < len(self.venues):
            self._up = frozenset(n for n in names if n not in down)
        self._next_vid += 1
        rec = _Routed(order, order.qty, order.px, self._next_vid)
        self._orders[coid] = rec
        self.routed += 1
        try:
            plan = self.plan(order) if order.qty > 0 else {self._first_up(): order.qty}
        finally:
            self._up = None
        pairs: list[tuple[str, object]] = []
        for vname, q in plan.items():
            rec.legs[vname] = _Leg(vname, q, q)
            self.legs_sent[vname] += 1
            leg_order = order if q == order.qty else msgspec.structs.replace(order, qty=q)
            pairs += self._tag(vname, self.venues[vname].submit(leg_order, now_ns))
        return self._merge(pairs, now_ns)

    def supports_contingency(self, kind: int) -> bool:
        """Whether some venue runs order lists of ``kind`` (which one takes a given list:
        ``list_venue``)."""
        return any(_supports(v, kind) for v in self.venues.values())

    def list_venue(self, instrument_ids: Iterable[int], kinds: Iterable[int]) -> str | None:
        """The first venue, up now, that trades every instrument and runs every contingency
        kind of a list (None: no single venue takes it; exec emulates the list)."""
        iids, ks = set(instrument_ids), set(kinds)
        if any(self.unroutable(i) for i in iids):
            return None
        for n, v in self._items:
            if not callable(getattr(v, "submit_list", None)):
                continue
            if not all(n in self.trading(i) for i in iids) or n in self.down_venues([n]):
                continue
            if all(_supports(v, k) for k in ks):
                return n
        return None

    def submit_list(self, orders: list[NewOrder], now_ns: int) -> list[VenueEvent]:
        """A native order list, whole to the one venue that takes it (``list_venue``); every
        leg refused when none does or a leg's id is not new."""
        kinds = {o.contingency for o in orders if o.contingency} | {
            int(ContingencyType.OTO) for o in orders if o.parent_id
        }
        vname = self.list_venue([o.instrument_id for o in orders], kinds)
        dup = [o.client_order_id for o in orders if self.knows_order(o.client_order_id)]
        if vname is None or dup:
            why = (
                f"duplicate client_order_id {dup[0]}"
                if dup
                else "no single venue takes this order list (its instruments and contingency "
                "kinds at one venue that is up)"
            )
            for o in orders:
                if o.client_order_id not in dup:
                    self._finished.add(o.client_order_id)
            return [OrderRejected.for_order(o, why, now_ns, now_ns) for o in orders]
        for o in orders:
            self._next_vid += 1
            rec = _Routed(o, o.qty, o.px, self._next_vid)
            rec.legs[vname] = _Leg(vname, o.qty, o.qty)
            self._orders[o.client_order_id] = rec
            self.routed += 1
            self.legs_sent[vname] += 1
        venue: Any = self.venues[vname]
        return self._merge(self._tag(vname, venue.submit_list(orders, now_ns)), now_ns)

    def unroutable(self, instrument_id: int) -> str:
        """Why the router refuses an instrument ("" = it routes): a betting selection that
        several venues trade (odds are not prices: see the module docstring)."""
        ins = self.instruments.get(instrument_id) if self.instruments is not None else None
        if ins is None or ins.kind != InstrumentKind.BETTING:
            return ""
        names = self.trading(instrument_id)
        if len(names) < 2:
            return ""
        return (
            f"betting instrument {instrument_id} trades at {len(names)} venues "
            f"({', '.join(names)}): odds are not prices, the router does not compare or split "
            "them; trade it at one venue"
        )

    def cancel(self, cancel: CancelOrder, now_ns: int) -> list[VenueEvent]:
        rec = self._orders.get(cancel.client_order_id)
        legs = rec.open_legs() if rec is not None and not rec.closed else []
        if not legs:
            if self._known(cancel):
                why, detail = CancelRejectReason.NOT_OPEN, "order is no longer open"
            else:
                why, detail = CancelRejectReason.UNKNOWN_ORDER, "unknown client_order_id"
            return [OrderCancelRejected.for_request(cancel, why, detail, now_ns, now_ns)]
        pairs: list[tuple[str, object]] = []
        for leg in legs:
            pairs += self._tag(leg.venue, self.venues[leg.venue].cancel(cancel, now_ns))
        return self._merge(pairs, now_ns)

    def replace(self, replace: ReplaceOrder, now_ns: int) -> list[VenueEvent]:
        rec = self._orders.get(replace.client_order_id)
        legs = rec.open_legs() if rec is not None and not rec.closed else []
        if len(legs) != 1:
            R = ReplaceRejectReason
            if not self._known(replace):
                why, detail = R.UNKNOWN_ORDER, "unknown client_order_id"
            elif not legs:
                why, detail = R.NOT_OPEN, "order is no longer open"
            else:
                why = R.SPLIT
                detail = f"order is working at {len(legs)} venues; cancel it and send a new one"
            return [OrderReplaceRejected.for_request(replace, why, detail, now_ns, now_ns)]
        v = legs[0].venue
        return self._merge(self._tag(v, self.venues[v].replace(replace, now_ns)), now_ns)

    def on_market_data(self, msg: object, now_ns: int) -> list[VenueEvent]:
        """Every venue sees the market (each through its own view: ``engine.venues.multi``)."""
        pairs: list[tuple[str, object]] = []
        for n, v in self.venues.items():
            pairs += self._tag(n, v.on_market_data(msg, now_ns))
        return self._merge(pairs, now_ns)

    def poll(self, now_ns: int) -> list[VenueEvent]:
        pairs: list[tuple[str, object]] = []
        for n, v in self.venues.items():
            pairs += self._tag(n, v.poll(now_ns))
        return self._merge(pairs, now_ns)

    def open_orders(self) -> list[NewOrder]:
        """Open orders as the engine sent them, ``qty`` = open quantity over all venues."""
        out = []
        for rec in self._orders.values():
            if rec.closed:
                continue
            leaves = sum(leg.leaves for leg in rec.open_legs())
            if leaves > 0:
                out.append(msgspec.structs.replace(rec.order, px=rec.px, qty=leaves))
        return out

    def positions(self) -> dict[int, int]:
        total: dict[int, int] = {}
        for v in self.venues.values():
            for iid, pos in v.positions().items():
                total[iid] = total.get(iid, 0) + pos
        return total

    def fills_since(self, fill_id: int = 0) -> list[OrderPartiallyFilled]:
        """Merged fills after the router fill id ``fill_id`` (0 = all), oldest first."""
        return [f for f in self.fills if f.fill_id > fill_id]

    def knows_order(self, client_order_id: int) -> bool:
        """Whether this client order id was routed (to any venue), working or finished."""
        return client_order_id in self._orders or client_order_id in self._finished

    def close(self) -> None:
        """Close every venue."""
        for v in self.venues.values():
            v.close()

    def _known(self, req: Any) -> bool:
        return self.knows_order(req.client_order_id)

    def next_event_ns(self) -> int | None:
        """The earliest event any venue has due (venues that cannot say are skipped)."""
        best: int | None = None
        for v in self.venues.values():
            f = getattr(v, "next_event_ns", None)
            t = f() if callable(f) else None
            if t is not None and (best is None or t < best):
                best = t
        return best

    # --- routing decisions ----------------------------------------------------------------------
    def trading(self, instrument_id: int) -> list[str]:
        """The venues an instrument trades at: those whose ``trades_instrument`` says so (a live
        venue trades its own symbols only: BTC/USDT is not at a venue quoting BTC/USD), and
        every venue without one (a simulated venue trades them all)."""
        names = self._by_iid.get(instrument_id)
        if names is None:
            names = [
                n
                for n, v in self.venues.items()
                if not callable(f := getattr(v, "trades_instrument", None)) or f(instrument_id)
            ]
            self._by_iid[instrument_id] = names
        return names

    def down_venues(self, names: Iterable[str] | None = None) -> dict[str, str]:
        """Venues (of ``names``; None: all) that take no new order now: name ->
        ``"<name> <state> (<reason>)"``."""
        out: dict[str, str] = {}
        if not self._stateful:
            return out  # simulated venues only: always up (the per-order path stays cheap)
        among = None if names is None else set(names)
        for n in self._stateful:
            if among is not None and n not in among:
                continue
            st, why = state_of(self.venues[n])
            if st != VenueState.CONNECTED:
                out[n] = f"{n} {st.word}" + (f" ({why})" if why else "")
        return out

    def _candidates(self) -> list[tuple[str, Venue]]:
        up = self._up
        if up is None:
            return self._items
        return [(n, v) for n, v in self._items if n in up]

    def _first_up(self) -> str:
        return self._candidates()[0][0]

    def quotes(self, instrument_id: int, side: int) -> list[VenueQuote]:
        """Every venue's takeable levels for an order of ``side``, with its taker fee."""
        return [
            VenueQuote(n, self._levels(v, instrument_id, side), self.fees[n][1])
            for n, v in self._candidates()
        ]

    def plan(self, order: NewOrder) -> dict[str, int]:
        """Lots per venue for ``order`` (see the module docstring)."""
        side, qty = order.side, order.qty
        market = order.order_type == OrderType.MARKET
        post_only = bool(order.flags & OrderFlag.POST_ONLY)
        quotes = self.quotes(order.instrument_id, side)
        takes: dict[str, int] = {}
        if not post_only and (market or order.px > 0):
            takes = plan_take(quotes, side, qty, 0 if market else order.px)
        rest = qty - sum(takes.values())
        if rest <= 0:
            return takes
        if order.tif == TimeInForce.FOK:
            # all or nothing cannot be split when the books cannot fill it all
            return {self._best_top(quotes, side) or self._rest_venue(order): qty}
        if market or order.tif == TimeInForce.IOC:
            # nothing more is visible: the rest goes where the order already takes (or to the
            # best top), to be filled if liquidity arrives in flight, else canceled there
            target = max(takes, key=lambda n: takes[n]) if takes else None
            target = target or self._best_top(quotes, side) or self._first_up()
        else:
            target = self._rest_venue(order)
        takes[target] = takes.get(target, 0) + rest
        return takes

    def _rest_venue(self, order: NewOrder) -> str:
        """The venue where resting at ``order.px`` has the best expected fill."""
        best: tuple[Any, ...] | None = None
        best_name = self._first_up()
        side, px = order.side, order.px
        post_only = bool(order.flags & OrderFlag.POST_ONLY)
        for k, (n, v) in enumerate(self._candidates()):
            book = _book(v, order.instrument_id)
            if book is None:
                key: tuple[Any, ...] = (1, 0, 0, self.fees[n][0], k)
            else:
                same_px, same_qty = book.level(side, 0)
                behind = (same_px - px) * side if same_qty else 0  # ticks behind the touch
                opp_px, opp_qty = book.level(-side, 0)
                crosses = opp_qty > 0 and (opp_px <= px if side == Side.BUY else opp_px >= px)
                if crosses:
                    # post-only would be refused there; anything else takes the crossing size
                    # first (the plan already counted it) and then rests at the front
                    key = (int(post_only), 0, 0, self.fees[n][0], k)
                else:
                    ahead = book.qty_at(side, px) if behind >= 0 else 0
                    key = (0, max(0, behind), ahead, self.fees[n][0], k)
            if best is None or key < best:
                best, best_name = key, n
        return best_name

    def _best_top(self, quotes: Sequence[VenueQuote], side: int) -> str | None:
        best: tuple[float, int] | None = None
        name = None
        for k, q in enumerate(quotes):
            if q.levels:
                key = (_unit(q.levels[0][0], side, q.taker_fee_bps), k)
                if best is None or key < best:
                    best, name = key, q.name
        return name

    @staticmethod
    def _levels(venue: Venue, iid: int, side: int) -> list[tuple[int, int]]:
        f = getattr(venue, "takeable", None)
        if callable(f):
            return list(f(iid, side))
        book = _book(venue, iid)
        if book is None:
            return []
        out = []
        for i in range(book.n_levels(-side)):
            px, q = book.level(-side, i)
            if q > 0:
                out.append((int(px), int(q)))
        return out

    # --- merging the legs' events -------------------------------------------------------------
    @staticmethod
    def _tag(name: str, events: Iterable[object]) -> list[tuple[str, object]]:
        return [(name, ev) for ev in events]

    def _merge(self, pairs: list[tuple[str, object]], now_ns: int) -> list[VenueEvent]:
        out: list[VenueEvent] = []
        for vname, ev in pairs:
            coid = getattr(ev, "client_order_id", -1)
            if type(ev) is AdoptedOrder:
                self._adopt(vname, ev)
                out.append(ev)
                continue
            rec = self._orders.get(coid)
            leg = rec.legs.get(vname) if rec is not None else None
            if rec is None and coid in self._finished:
                # a leg speaking after its order finished (a venue's late duplicate): the order
                # had every leg closed, where such an event changes nothing, so it is dropped
                self.late_events += 1
                continue
            if rec is None or leg is None:
                self.unmatched_events += 1
                out.append(ev)
                continue
            self._on_leg_event(rec, leg, ev, out)
            if rec.closed and not rec.open_legs():
                self._prune(coid)
        return out

    def _adopt(self, vname: str, ev: AdoptedOrder) -> None:
        """An order open at ``vname`` that we did not route (``external_orders = "adopt"``):
        a one-leg order from now on, so its fills merge and its cancel reaches the venue."""
        o = ev.order
        if o.client_order_id in self._orders or o.client_order_id in self._finished:
            return
        self._next_vid += 1
        rec = _Routed(o, o.qty, o.px, self._next_vid, accepted=True)
        rec.legs[vname] = _Leg(vname, o.qty, o.qty, accepted=True)
        self._orders[o.client_order_id] = rec

    def _prune(self, coid: int) -> None:
        """Forget a finished order's bookkeeping so a long run's memory follows its working
        orders, not its history (the fills stay in ``fills``, the router's record)."""
        del self._orders[coid]
        self._finished.add(coid)
        self.pruned += 1

    def _on_leg_event(self, rec: _Routed, leg: _Leg, ev: object, out: list[VenueEvent]) -> None:
        o = rec.order
        coid = o.client_order_id
        if isinstance(ev, OrderPartiallyFilled):  # and OrderFilled
            if not leg.is_open:
                self.unmatched_events += 1
                return
            leg.cum += ev.fill_qty
            leg.leaves = max(0, ev.leaves_qty)
            rec.cum += ev.fill_qty
            if isinstance(ev, OrderFilled) or leg.leaves == 0:
                leg.is_open = False
            if not rec.accepted:  # a venue always acks first; keep the order of events anyway
                self._accept(rec, ev, out)
            leaves = max(0, rec.qty - rec.cum)
            self._next_fill += 1
            cls = OrderFilled if leaves == 0 else OrderPartiallyFilled
            merged = cls(
                coid,
                rec.venue_order_id,
                o.instrument_id,
                ev.side,
                ev.fill_px,
                ev.fill_qty,
                rec.cum,
                leaves,
                ev.fee,
                ev.liquidity,
                self._next_fill,
                ev.ts_origin,
                ev.ts_event,
                ev.ts_recv,
            )
            self.fills.append(merged)
            out.append(merged)
            if leaves == 0:
                rec.closed = True
            else:
                self._maybe_close(rec, ev, out)
        elif isinstance(ev, OrderAccepted):
            leg.accepted = True
            if not rec.accepted:
                self._accept(rec, ev, out)
        elif isinstance(ev, OrderCancelRejected | OrderReplaceRejected):
            # a refused cancel/replace: meaningful upstream only when the order is one leg
            if len(rec.legs) == 1 and not rec.closed:
                out.append(ev)
        elif isinstance(ev, OrderRejected):
            if leg.is_open:
                leg.is_open = False
                leg.leaves = 0
                rec.reasons.append(f"{leg.venue}: {ev.reason}")
                self._maybe_close(rec, ev, out)
        elif isinstance(ev, OrderCanceled | OrderExpired):
            if leg.is_open:
                leg.is_open = False
                leg.leaves = 0
                reason = getattr(ev, "reason", "expired")
                rec.reasons.append(reason if len(rec.legs) == 1 else f"{leg.venue}: {reason}")
                self._maybe_close(rec, ev, out)
        elif isinstance(ev, OrderReplaced):
            if leg.is_open and not rec.closed:
                leg.leaves = ev.qty
                rec.px = ev.px
                rec.qty = rec.cum + sum(lg.leaves for lg in rec.open_legs())
                out.append(
                    OrderReplaced(
                        coid,
                        o.instrument_id,
                        ev.px,
                        rec.qty - rec.cum,
                        ev.ts_origin,
                        ev.ts_event,
                        ev.ts_recv,
                    )
                )
        else:
            self.unmatched_events += 1
            out.append(ev)

    def _accept(self, rec: _Routed, ev: Any, out: list[VenueEvent]) -> None:
        rec.accepted = True
        out.append(OrderAccepted.for_order(rec.order, rec.venue_order_id, ev.ts_event, ev.ts_recv))

    def _maybe_close(self, rec: _Routed, ev: Any, out: list[VenueEvent]) -> None:
        """Once every leg has closed: the order's one terminal event."""
        if rec.closed or rec.open_legs():
            return
        rec.closed = True
        o = rec.order
        leaves = max(0, rec.qty - rec.cum)
        reason = "; ".join(rec.reasons)
        if not rec.accepted:
            out.append(
                OrderRejected(
                    o.client_order_id,
                    o.instrument_id,
                    reason,
                    ev.ts_origin,
                    ev.ts_event,
                    ev.ts_recv,
                )
            )
        elif isinstance(ev, OrderExpired):
            out.append(
                OrderExpired(
                    o.client_order_id,
                    o.instrument_id,
                    leaves,
                    ev.ts_origin,
                    ev.ts_event,
                    ev.ts_recv,
                )
            )
        else:
            out.append(
                OrderCanceled(
                    o.client_order_id,
                    o.instrument_id,
                    leaves,
                    reason,
                    ev.ts_origin,
                    ev.ts_event,
                    ev.ts_recv,
                )
            )


def _supports(venue: Any, kind: int) -> bool:
    f = getattr(venue, "supports_contingency", None)
    return bool(callable(f) and f(kind))


def _book(venue: Venue, iid: int) -> Any | None:
    f = getattr(venue, "book", None)
    if not callable(f):
        return None
    try:
        return f(iid)
    except (KeyError, ValueError):
        return None
