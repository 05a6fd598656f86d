"""The strategy plug-in API: what a user strategy sees and what it may do.

A strategy is a single-threaded state machine like every other engine component (DESIGN §5): the
host calls one callback per message, with the time already set on the context, and collects the
intents the callback appended. A strategy never talks to risk, exec or a venue directly, never
reads a clock and never does I/O; that is what makes the same strategy give the same orders in the
multi-process runtime and in the inline backtest.

What a strategy gets (``StrategyContext``):

- the instruments it trades, the current time ``now_ns``, the L2 book and the last quote of each of
  its instruments (maintained by the host, shared read-only between strategies);
- its own positions (from its fills) and its own open orders (from its intents and the execution
  events routed back to it);
- order helpers ``buy`` / ``sell`` / ``cancel`` / ``replace`` / ``cancel_all`` that append
  ``IntentNew`` / ``IntentCancel`` / ``IntentReplace`` structs. Each intent carries ``ts_origin``,
  the ``ts_recv`` of the message being processed, so tick-to-order latency is measured on every
  order, and a ``client_order_id`` of ``strategy_id << 32 | counter``: unique across strategies
  without coordination, and the host routes execution events back by its top bits alone;
- order lists ``bracket`` / ``oto`` / ``oco`` (``OrderSpec`` legs): each leg its own intent,
  tied by ``contingency`` / ``parent_id`` / ``linked`` (rules: ``engine.contingent``).

Strategies are loaded from config by dotted path (``load_strategy``), the shipped ones and a
user's alike; a module in the directory ``gekko`` is started from imports in ``gekko run`` and
``gekko backtest`` alike (``ops/preflight.py``).

Subscriptions (``Strategy.subscriptions``): which market callbacks the host makes — "quote"
(``on_quote``), "trade" (``on_trade``), "book" (``on_book`` after every book change), "top"
(``on_book`` only when the best bid or ask price or size changed), "bar", "forecast", "mark"
(``on_mark``: a perpetual's mark price, index and funding rate from its venue), "account"
(``on_account_event``: a settlement, liquidation, funding or financing payment on one of its
instruments, a venue's margin status; ``engine.strategy_accounts``). The default
is everything; a callback the class leaves as this base class's no-op is never called either
(``subscriptions_of``), which changes nothing a strategy can see and lets the fast replay
(``engine.replay_fast``) skip the rows nobody listens to.

Parameters (``[strategies.params]``) are declared, not read ad hoc: a strategy class sets
``Params`` to a ``engine.strategies.params.StrategyParams`` subclass (a msgspec Struct that
refuses unknown fields) or a dataclass, one typed field with a default per parameter, range
checks in its ``__post_init__`` (``params.check``). The base ``__init__`` parses the table into
``self.p``; ``gekko run`` / ``gekko backtest`` do the same before anything starts, so a misspelt
or mistyped parameter is a config error (exit 2) naming ``[[strategies]] id=N params.<key>``.
A subclass that adds parameters extends its parent's ``Params``. A class without ``Params``
still loads (its raw table is ``self.params``), with a warning at start that nothing checks it.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar, Protocol

from engine import hedge_legs
from engine.book import L2Book
from engine.contingent import OCO, OTO, OUO
from engine.instruments import Instrument
from engine.messages import (
    AlgoKind,
    AlgoProgress,
    Bar,
    Forecast,
    IntentCancel,
    IntentNew,
    IntentReplace,
    MarkPrice,
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
    Side,
    TimeInForce,
    Trade,
)
from engine.sizing import SizingLimits, kelly_lots, vol_target_lots
from engine.strategies.params import parse_params
from engine.vol_sigma import SigmaTracker

Intent = IntentNew | IntentCancel | IntentReplace
OrderEvent = (
    OrderAccepted
    | OrderRejected
    | OrderCanceled
    | OrderExpired
    | OrderReplaced
    | OrderCancelRejected
    | OrderReplaceRejected
)
FillEvent = OrderPartiallyFilled | OrderFilled

#: order ids are ``strategy_id << 32 | counter``; both halves must fit so the id stays a
#: positive int64 on the wire
MAX_STRATEGY_ID = (1 << 31) - 1
_COUNTER_MASK = (1 << 32) - 1


#: what a strategy may subscribe to (``Strategy.subscriptions``)
SUBSCRIPTIONS = frozenset({"quote", "trade", "book", "top", "bar", "forecast", "mark", "account"})
#: the default: every market callback (today's dispatch)
ALL_MARKET = frozenset({"quote", "trade", "book", "bar", "forecast", "mark", "account"})
_CALLBACK = {
    "quote": "on_quote",
    "trade": "on_trade",
    "book": "on_book",
    "top": "on_book",
    "bar": "on_bar",
    "forecast": "on_forecast",
    "mark": "on_mark",
    "account": "on_account_event",
}


def subscriptions_of(cls: type, strategy: object = None) -> frozenset[str]:
    """What the host dispatches to a strategy class: its declared ``subscriptions`` (the
    instance's, when ``strategy`` set its own from a parameter) less the callbacks it leaves as
    ``Strategy``'s no-ops ("book" covers "top"). ValueError for a name that is none of
    ``SUBSCRIPTIONS``."""
    subs = frozenset(
        getattr(strategy if strategy is not None else cls, "subscriptions", ALL_MARKET)
    )
    unknown = subs - SUBSCRIPTIONS
    if unknown:
        raise ValueError(
            f"{cls.__name__}.subscriptions: unknown {sorted(unknown)} (known: {sorted(SUBSCRIPTIONS)})"
        )
    out = {s for s in subs if getattr(cls, _CALLBACK[s]) is not getattr(Strategy, _CALLBACK[s])}
    if "book" in out:
        out.discard("top")
    return frozenset(out)


def strategy_id_of(client_order_id: int) -> int:
    """The strategy that owns ``client_order_id`` (the inverse of the id scheme)."""
    return client_order_id >> 32


class BookView(Protocol):
    """What a strategy may read from an L2 book (``engine.book.L2Book`` satisfies it)."""

    def best_bid(self) -> Any: ...

    def best_ask(self) -> Any: ...


@dataclass(slots=True)
class OpenOrder:
    """A strategy's view of one of its live orders.

    ``accepted`` is False until the venue acknowledged it; ``pending_cancel`` / ``pending_replace``
    are set when the strategy asked and cleared by the answer, so helpers can refuse to send a
    second request for the same thing while the first is in flight.
    """

    client_order_id: int
    instrument_id: int
    side: int
    order_type: int
    tif: int
    px: int
    qty: int
    leaves_qty: int
    cum_qty: int = 0
    accepted: bool = False
    pending_cancel: bool = False
    pending_replace: bool = False
    venue_order_id: int = 0
    flags: int = 0  # OrderFlag bits (REDUCE_ONLY moves the opposite leg on a hedging venue)


@dataclass(frozen=True)
class OrderSpec:
    """One leg of an order list (``StrategyContext.oto`` / ``oco``), as ``buy`` / ``sell``
    take it: ``px=None`` is a market order; ``order_type`` / ``tif`` default as there."""

    instrument_id: int
    side: int
    qty: int
    px: int | None = None
    order_type: int | None = None
    tif: int | None = None
    stop_px: int = 0
    flags: int = 0
    expire_ns: int = 0


@dataclass(frozen=True)
class _Link:
    """A leg's place in its list: its id and the ``contingency`` fields of its IntentNew."""

    coid: int
    contingency: int
    parent_id: int
    linked: list[int]
    list_id: int

    def fields(self) -> dict[str, Any]:
        return {
            "contingency": int(self.contingency),
            "parent_id": self.parent_id,
            "linked": list(self.linked),
            "list_id": self.list_id,
        }


def _top(level: Any) -> tuple[int, int] | None:
    """Normalise a book's best level to ``(px, qty)`` or None when that side is empty."""
    if level is None:
        return None
    px, qty = level
    if qty is None or qty <= 0 or px is None:
        return None
    return int(px), int(qty)


class StrategyContext:
    """Everything a strategy may see and do. One per strategy, owned and updated by the host.

    The host sets ``now_ns`` and ``ts_origin`` before each callback, keeps ``books`` / ``quotes``
    current and applies execution events to ``positions`` / ``open_orders`` *before* the callback
    runs, so a strategy always reacts to a state that already includes the message it is handed.
    """

    def __init__(
        self,
        strategy_id: int,
        instruments: Iterable[Instrument],
        books: dict[int, Any] | None = None,
        quotes: dict[int, Quote] | None = None,
    ) -> None:
        if not 0 <= strategy_id <= MAX_STRATEGY_ID:
            raise ValueError(f"strategy_id must be in [0, {MAX_STRATEGY_ID}], got {strategy_id}")
        self.strategy_id = strategy_id
        self.instruments: dict[int, Instrument] = {i.instrument_id: i for i in instruments}
        self.books: dict[int, Any] = books if books is not None else {}
        self.quotes: dict[int, Quote] = quotes if quotes is not None else {}
        self.now_ns: int = 0
        self.ts_origin: int = 0
        self.positions: dict[int, int] = {iid: 0 for iid in self.instruments}
        #: (long, short) lots by the hedging rule (``engine.hedge_legs``); ``legs`` reads them
        #: for the instruments in ``hedged`` (those of hedging venues, set by the host)
        self.leg_lots: dict[int, tuple[int, int]] = {}
        self.hedged: frozenset[int] = frozenset()
        self.open_orders: dict[int, OpenOrder] = {}
        #: latest AlgoProgress per parent order (execution algorithms)
        self.algo_progress: dict[int, AlgoProgress] = {}
        self._outbox: list[Intent] = []
        self._counter = 0

    # --- market state ------------------------------------------------------------------------
    @property
    def instrument_ids(self) -> list[int]:
        return sorted(self.instruments)

    def instrument(self, instrument_id: int) -> Instrument:
        try:
            return self.instruments[instrument_id]
        except KeyError:
            raise ValueError(
                f"strategy {self.strategy_id} does not trade instrument {instrument_id}"
            ) from None

    def book(self, instrument_id: int) -> Any | None:
        """The host's L2 book for the instrument (None when only quotes are available)."""
        return self.books.get(instrument_id)

    def quote(self, instrument_id: int) -> Quote | None:
        """The last top-of-book quote received for the instrument."""
        return self.quotes.get(instrument_id)

    def best_bid(self, instrument_id: int) -> tuple[int, int] | None:
        """Best bid ``(px_ticks, qty_lots)``: from the L2 book when it has a bid, else the quote."""
        book = self.books.get(instrument_id)
        if book is not None:
            top = _top(book.best_bid())
            if top is not None:
                return top
        q = self.quotes.get(instrument_id)
        if q is not None and q.bid_qty > 0 and q.bid_px > 0:
            return q.bid_px, q.bid_qty
        return None

    def best_ask(self, instrument_id: int) -> tuple[int, int] | None:
        """Best ask ``(px_ticks, qty_lots)``: from the L2 book when it has an ask, else the quote."""
        book = self.books.get(instrument_id)
        if book is not None:
            top = _top(book.best_ask())
            if top is not None:
                return top
        q = self.quotes.get(instrument_id)
        if q is not None and q.ask_qty > 0 and q.ask_px > 0:
            return q.ask_px, q.ask_qty
        return None

    def mid(self, instrument_id: int) -> float | None:
        """Mid price in ticks (float: a mid may fall between ticks), None if a side is empty."""
        book = self.books.get(instrument_id)
        if type(book) is L2Book:  # the host's book: the same answer, without the tuples
            m = book.mid()
            if m == m:  # both sides in the book
                return m
            if book.is_empty:  # no book: the last quote
                q = self.quotes.get(instrument_id)
                if q is None or q.bid_qty <= 0 or q.bid_px <= 0 or q.ask_qty <= 0 or q.ask_px <= 0:
                    return None
                return (q.bid_px + q.ask_px) / 2.0
        bid = self.best_bid(instrument_id)
        ask = self.best_ask(instrument_id)
        if bid is None or ask is None:
            return None
        return (bid[0] + ask[0]) / 2.0

    def microprice(self, instrument_id: int) -> float | None:
        """Size-weighted mid in ticks: leans toward the side with less size (where price goes)."""
        bid = self.best_bid(instrument_id)
        ask = self.best_ask(instrument_id)
        if bid is None or ask is None:
            return None
        (bp, bq), (ap, aq) = bid, ask
        return (bp * aq + ap * bq) / (bq + aq)

    # --- own state ---------------------------------------------------------------------------
    def position(self, instrument_id: int) -> int:
        """Net position in lots from this strategy's own fills."""
        return self.positions.get(instrument_id, 0)

    def legs(self, instrument_id: int) -> tuple[int, int]:
        """(long lots, short lots <= 0) from this strategy's own fills: on a hedging venue its
        two legs (a ``REDUCE_ONLY`` order closes the opposite one), else the net on its side."""
        net = self.positions.get(instrument_id, 0)
        return hedge_legs.legs_of(self.leg_lots, self.hedged, instrument_id, net)

    def orders_for(self, instrument_id: int, side: int | None = None) -> list[OpenOrder]:
        """Open orders on an instrument (optionally one side), oldest first."""
        return [
            o
            for o in self.open_orders.values()
            if o.instrument_id == instrument_id and (side is None or o.side == side)
        ]

    #: caps for ``kelly_lots`` (a strategy or its host may replace them with the risk limits)
    sizing_limits: SizingLimits = SizingLimits()
    #: each instrument's taker fee (bps) at its venue, as the host configured it
    #: (``procs.build.set_venue_fees``); empty where the host does not know it
    taker_fees_bps: Mapping[int, float] = MappingProxyType({})

    def kelly_lots(
        self,
        instrument_id: int,
        expected_return: float,
        variance: float,
        equity: float,
        fraction: float = 0.5,
    ) -> int:
        """Fractional-Kelly target position in lots at the current mid, capped by
        ``sizing_limits`` (``engine.sizing``); 0 without a mid or a usable forecast."""
        mid = self.mid(instrument_id)
        if mid is None:
            return 0
        ins = self.instrument(instrument_id)
        return kelly_lots(
            expected_return,
            variance,
            equity,
            mid,
            ins.tick_size * ins.lot_size,
            fraction=fraction,
            limits=self.sizing_limits,
            instrument_id=instrument_id,
        )

    #: each instrument's sigma as the risk gate measures it (``engine.vol_sigma``), fed by
    #: ``observe_volatility``; the host sets one from ``[risk]`` (None: no sigma, sizes 0)
    volatility: SigmaTracker | None = None

    def observe_volatility(self, instrument_id: int) -> None:
        """Feed the current mid to ``volatility``: a strategy sizing by volatility calls it on
        every update of the instrument (each quote or top-of-book change)."""
        vol = self.volatility
        if vol is not None:
            mid = self.mid(instrument_id)
            if mid is not None:
                vol.observe(instrument_id, mid, self.now_ns)

    def sigma(self, instrument_id: int) -> float:
        """Sigma of one ``[risk]`` return interval (a fraction, window or EWMA per ``[risk]
        volatility``); NaN until ``min_history`` returns were observed."""
        vol = self.volatility
        return float("nan") if vol is None else vol.sigma(instrument_id)

    def vol_target_lots(
        self, instrument_id: int, risk: float, direction: int = 1, equity: float | None = None
    ) -> int:
        """Target position in lots whose sigma over one return interval is ``risk`` (currency)
        at the current mid, capped by ``sizing_limits`` (``engine.sizing.vol_target_lots``);
        0 without a mid or a sigma."""
        mid = self.mid(instrument_id)
        if mid is None:
            return 0
        ins = self.instrument(instrument_id)
        return vol_target_lots(
            self.sigma(instrument_id),
            risk,
            mid,
            ins.tick_size * ins.lot_size,
            direction=direction,
            equity=equity,
            limits=self.sizing_limits,
            instrument_id=instrument_id,
        )

    # --- order helpers -----------------------------------------------------------------------
    def reserve_order_ids(self, base: int) -> None:
        """Number the next orders from ``base`` on (a restarted process must not reuse ids)."""
        if base < 0 or base > _COUNTER_MASK:
            raise ValueError(f"order id base {base} out of range")
        self._counter = max(self._counter, base)

    def next_client_order_id(self) -> int:
        self._counter += 1
        if self._counter > _COUNTER_MASK:
            raise RuntimeError(f"strategy {self.strategy_id}: client_order_id space exhausted")
        return (self.strategy_id << 32) | self._counter

    def buy(
        self,
        instrument_id: int,
        qty: int,
        px: int | None = None,
        order_type: int | None = None,
        tif: int | None = None,
        flags: int = 0,
        stop_px: int = 0,
        expire_ns: int = 0,
    ) -> int:
        """Ask for a buy order; returns its client_order_id.

        ``px=None`` means a market order (IOC by default); with a price it is a limit order (GTC
        by default). Nothing is checked here beyond the instrument being one the strategy trades:
        limits are the risk gate's job, and it answers with an ``OrderRejected``.
        """
        return self._new(
            Side.BUY, instrument_id, qty, px, order_type, tif, flags, stop_px, expire_ns
        )

    def sell(
        self,
        instrument_id: int,
        qty: int,
        px: int | None = None,
        order_type: int | None = None,
        tif: int | None = None,
        flags: int = 0,
        stop_px: int = 0,
        expire_ns: int = 0,
    ) -> int:
        """Ask for a sell order; returns its client_order_id (see ``buy``)."""
        return self._new(
            Side.SELL, instrument_id, qty, px, order_type, tif, flags, stop_px, expire_ns
        )

    def _new(
        self,
        side: int,
        instrument_id: int,
        qty: int,
        px: int | None,
        order_type: int | None,
        tif: int | None,
        flags: int,
        stop_px: int,
        expire_ns: int,
        algo: int = 0,
        algo_params: dict[str, float] | None = None,
        link: _Link | None = None,
    ) -> int:
        self.instrument(instrument_id)  # raises for an instrument the strategy does not trade
        if order_type is None:
            order_type = OrderType.MARKET if px is None else OrderType.LIMIT
        if tif is None:
            tif = TimeInForce.IOC if order_type == OrderType.MARKET else TimeInForce.GTC
        ipx = 0 if px is None else int(px)
        coid = link.coid if link is not None else self.next_client_order_id()
        self._outbox.append(
            IntentNew(
                client_order_id=coid,
                strategy_id=self.strategy_id,
                instrument_id=instrument_id,
                side=int(side),
                order_type=int(order_type),
                tif=int(tif),
                px=ipx,
                qty=int(qty),
                ts_origin=self.ts_origin,
                ts_created=self.now_ns,
                stop_px=int(stop_px),
                flags=int(flags),
                expire_ns=int(expire_ns),
                algo=int(algo),
                algo_params=algo_params or {},
                **(link.fields() if link is not None else {}),
            )
        )
        self.open_orders[coid] = OpenOrder(
            client_order_id=coid,
            instrument_id=instrument_id,
            side=int(side),
            order_type=int(order_type),
            tif=int(tif),
            px=ipx,
            qty=int(qty),
            leaves_qty=int(qty),
            flags=int(flags),
        )
        return coid

    def algo(
        self,
        kind: int,
        instrument_id: int,
        side: int,
        qty: int,
        params: dict[str, float],
        px: int | None = None,
        tif: int | None = None,
    ) -> int:
        """Ask for a parent order worked by an execution algorithm: ``kind`` is an ``AlgoKind``
        (TWAP, VWAP, ICEBERG, POV), ``params`` its parameters (``engine.algos``: e.g. TWAP
        ``{"duration_s": 60, "slices": 12}``). ``px=None`` lets the children take at any price;
        with a price none trades through it. Risk sees the parent's full quantity; this context
        sees one order (its fills, its end); ``ctx.algo_progress`` keeps the latest
        ``AlgoProgress`` of each parent. Bad parameters come back as an ``OrderRejected``."""
        if int(kind) == AlgoKind.NONE:
            raise ValueError("algo: kind must be an execution algorithm, not AlgoKind.NONE")
        fields = {str(k): float(v) for k, v in params.items()}
        return self._new(side, instrument_id, qty, px, None, tif, 0, 0, 0, int(kind), fields)

    # --- order lists (engine.contingent; docs/orders-and-algos.md) -------------------------------
    def bracket(
        self,
        instrument_id: int,
        side: int,
        qty: int,
        entry_px: int | None,
        take_profit_px: int,
        stop_loss_px: int,
        *,
        stop_limit_px: int = 0,
        entry_tif: int | None = None,
    ) -> tuple[int, int, int]:
        """An entry with its exits: the entry (``entry_px=None``: a market order) and, on the
        other side, a take-profit LIMIT at ``take_profit_px`` and a stop-loss STOP at
        ``stop_loss_px`` (a STOP_LIMIT at ``stop_limit_px`` if given), one-cancels-other. Exec
        holds the exits until the entry fills and sizes them to its fills. Each leg is an order
        of its own (risk approves each; this context sees each). Returns (entry, tp, sl) ids."""
        exit_side = -int(side)
        e, tp, sl = (self.next_client_order_id() for _ in range(3))
        self._new(
            side, instrument_id, qty, entry_px, None, entry_tif, 0, 0, 0,
            link=_Link(e, OTO, 0, [], e),
        )  # fmt: skip
        self._new(
            exit_side, instrument_id, qty, take_profit_px, OrderType.LIMIT, TimeInForce.GTC, 0,
            0, 0, link=_Link(tp, OCO, e, [sl], e),
        )  # fmt: skip
        sl_type = OrderType.STOP_LIMIT if stop_limit_px else OrderType.STOP
        self._new(
            exit_side, instrument_id, qty, stop_limit_px or None, sl_type, TimeInForce.GTC, 0,
            stop_loss_px, 0, link=_Link(sl, OCO, e, [tp], e),
        )  # fmt: skip
        return e, tp, sl

    def oto(self, parent: OrderSpec, *children: OrderSpec) -> list[int]:
        """One-triggers-other: ``parent`` goes out; exec holds each child until the parent
        fills and sizes it to the parent's filled share (a child of the parent's size tracks
        its fills lot for lot); a parent that ends unfilled ends them. Returns the ids,
        parent first."""
        ids = [self.next_client_order_id() for _ in range(1 + len(children))]
        pid = ids[0]
        self._spec(parent, _Link(pid, OTO, 0, [], pid))
        for coid, c in zip(ids[1:], children, strict=True):
            self._spec(c, _Link(coid, 0, pid, [], pid))
        return ids

    def oco(self, *legs: OrderSpec, reduce: bool = False) -> list[int]:
        """One-cancels-other (``reduce=True``: one-updates-other): a fill of any leg cancels
        what is open of the others (OUO: reduces each by the quantity filled). Returns the ids."""
        if len(legs) < 2:
            raise ValueError("oco: an order list needs at least two legs")
        kind = OUO if reduce else OCO
        ids = [self.next_client_order_id() for _ in legs]
        for coid, leg in zip(ids, legs, strict=True):
            self._spec(leg, _Link(coid, kind, 0, [c for c in ids if c != coid], ids[0]))
        return ids

    def _spec(self, o: OrderSpec, link: _Link) -> int:
        return self._new(
            o.side, o.instrument_id, o.qty, o.px, o.order_type, o.tif, o.flags, o.stop_px,
            o.expire_ns, link=link,
        )  # fmt: skip

    def cancel(self, client_order_id: int) -> bool:
        """Ask to cancel one of our open orders. False (and no intent) if it is not open or a
        cancel is already in flight: a second cancel could only be rejected."""
        o = self.open_orders.get(client_order_id)
        if o is None or o.pending_cancel:
            return False
        o.pending_cancel = True
        self._outbox.append(
            IntentCancel(
                client_order_id=client_order_id,
                strategy_id=self.strategy_id,
                instrument_id=o.instrument_id,
                ts_origin=self.ts_origin,
                ts_created=self.now_ns,
            )
        )
        return True

    def replace(self, client_order_id: int, px: int, qty: int) -> bool:
        """Ask to change price and quantity (``qty`` = the new open quantity) of an open order.

        False (and no intent) if the order is not open or is being canceled. The strategy's view
        of the order changes only when ``OrderReplaced`` arrives.
        """
        o = self.open_orders.get(client_order_id)
        if o is None or o.pending_cancel:
            return False
        o.pending_replace = True
        self._outbox.append(
            IntentReplace(
                client_order_id=client_order_id,
                strategy_id=self.strategy_id,
                instrument_id=o.instrument_id,
                new_px=int(px),
                new_qty=int(qty),
                ts_origin=self.ts_origin,
                ts_created=self.now_ns,
            )
        )
        return True

    def cancel_all(self, instrument_id: int | None = None) -> int:
        """Cancel every open order (of one instrument, if given); returns how many were asked."""
        n = 0
        for coid in list(self.open_orders):
            o = self.open_orders[coid]
            if (instrument_id is None or o.instrument_id == instrument_id) and self.cancel(coid):
                n += 1
        return n

    # --- host side ---------------------------------------------------------------------------
    def take_intents(self) -> list[Intent]:
        """Hand the intents appended since the last call to the host (and forget them)."""
        out = self._outbox
        self._outbox = []
        return out

    def apply_exec_event(self, ev: object) -> None:
        """Update positions and open orders from one of our execution events (host calls this)."""
        coid = ev.client_order_id  # type: ignore[attr-defined]
        o = self.open_orders.get(coid)
        if isinstance(ev, OrderPartiallyFilled):  # OrderFilled is a subclass
            self.positions[ev.instrument_id] = (
                self.positions.get(ev.instrument_id, 0) + ev.side * ev.fill_qty
            )
            ro = o is not None and bool(o.flags & OrderFlag.REDUCE_ONLY)
            hedge_legs.move(self.leg_lots, ev.instrument_id, ev.side * ev.fill_qty, ro)
            if o is not None:
                o.cum_qty += ev.fill_qty
                o.leaves_qty = ev.leaves_qty
                o.accepted = True
                if isinstance(ev, OrderFilled) or ev.leaves_qty <= 0:
                    del self.open_orders[coid]
        elif isinstance(ev, OrderAccepted):
            if o is not None:
                o.accepted = True
                o.venue_order_id = ev.venue_order_id
        elif isinstance(ev, OrderReplaced):
            if o is not None:
                o.px = ev.px
                o.leaves_qty = ev.qty
                o.qty = o.cum_qty + ev.qty
                o.pending_replace = False
                o.accepted = True
        elif isinstance(ev, OrderCancelRejected):
            if o is not None:  # a refused cancel: the order lives on, as it was
                o.pending_cancel = False
        elif isinstance(ev, OrderReplaceRejected):
            if o is not None:  # a refused replace: the order lives on, as it was
                o.pending_replace = False
        elif isinstance(ev, OrderRejected | OrderCanceled | OrderExpired):
            self.open_orders.pop(coid, None)
        elif isinstance(ev, AlgoProgress):
            self.algo_progress[coid] = ev


class Strategy:
    """Base class of every strategy: override the callbacks you need; all default to no-ops.

    ``__init__`` receives the context and the ``params`` table from config and parses it into
    ``self.p``, an instance of the class's ``Params`` (a ``ParamError``, a ValueError, for an
    unknown key, a wrong type or a value out of range); ``self.params`` keeps the raw table.
    Subclasses must not send orders before ``on_start`` (the host is not ready yet).
    """

    #: the declared parameters (module docstring); None: undeclared, the table is not checked
    Params: ClassVar[type | None] = None
    #: the market callbacks this strategy wants (module docstring, ``SUBSCRIPTIONS``)
    subscriptions: ClassVar[frozenset[str]] = ALL_MARKET

    def __init__(self, ctx: StrategyContext, params: dict[str, Any]) -> None:
        self.ctx = ctx
        self.params = dict(params)
        declared = type(self).Params
        self.p: Any = None if declared is None else parse_params(declared, self.params)

    def on_start(self) -> None:
        """Called once before any market data."""

    def on_quote(self, q: Quote) -> None:
        """A new top-of-book quote for one of our instruments (``ctx.quotes`` already updated)."""

    def on_trade(self, t: Trade) -> None:
        """A print on the venue (someone else's trade, not our fill)."""

    def on_book(self, instrument_id: int) -> None:
        """The L2 book of an instrument changed (after a delta or snapshot was applied)."""

    def on_bar(self, bar: Bar) -> None:
        """A bar closed."""

    def on_forecast(self, f: Forecast) -> None:
        """A model forecast for one of our instruments."""

    def on_mark(self, m: MarkPrice) -> None:
        """The venue's mark of one of our perpetuals (``MarkPrice``: mark, index, funding rate,
        next funding time)."""

    def on_account_event(self, ev: Any) -> None:
        """A venue's account event on one of our instruments (``Settlement``, ``Liquidation``,
        ``FundingPayment``, ``Financing``) or a venue's ``MarginStatus`` ("account"
        subscription; ``ctx.positions`` already moved: 0 after a settlement)."""

    def on_order_event(self, ev: OrderEvent) -> None:
        """Accepted / rejected / canceled / expired / replaced for one of our orders, a refused
        cancel or replace (``OrderCancelRejected`` / ``OrderReplaceRejected``: the order is
        unchanged), and ``AlgoProgress`` for a parent order worked by an execution algorithm."""

    def on_fill(self, ev: FillEvent) -> None:
        """A (partial) fill of one of our orders (``ctx.positions`` already updated)."""

    def on_timer(self, now_ns: int) -> None:
        """Periodic wake-up, if the runtime is configured with a timer."""

    def on_remote(self, source_engine: str, msg: Any, ctx: StrategyContext) -> None:
        """A message from another engine (``[bridge] subscribe``), e.g. its fills — each once, in
        that engine's order. It is information, not our own state: ``ctx`` (this strategy's
        context, the same as ``self.ctx``) is not updated by it; intents sent here go out as
        usual. Default: ignore."""

    def on_stop(self) -> None:
        """Called once at shutdown; the host cancels whatever is still open afterwards."""


def load_strategy(dotted_path: str) -> type[Strategy]:
    """Resolve ``"package.module:ClassName"`` or ``"package.module.ClassName"`` to a Strategy
    subclass. Every failure is a ValueError naming the path, because it surfaces as a config
    error and the path is what the user has to fix."""
    if not isinstance(dotted_path, str) or not dotted_path.strip():
        raise ValueError(f"strategy path {dotted_path!r}: expected 'package.module:ClassName'")
    path = dotted_path.strip()
    if ":" in path:
        module_name, _, attr = path.partition(":")
    else:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise ValueError(f"strategy path {dotted_path!r}: expected 'package.module:ClassName'")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or an error raised while importing the module
        raise ValueError(
            f"strategy path {dotted_path!r}: cannot import module {module_name!r}: {exc}"
        ) from exc
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(
                f"strategy path {dotted_path!r}: module {module_name!r} has no {attr!r}"
            ) from None
    if not (isinstance(obj, type) and issubclass(obj, Strategy)):
        raise ValueError(f"strategy path {dotted_path!r}: {obj!r} is not a Strategy subclass")
    return obj
