"""Hosts user strategies: routes market data, forecasts and execution events to them and collects
the intents they produce.

It is the strategy process's state machine (DESIGN §2): message in, intents out, time passed in.
The host owns one L2 book and one last quote per instrument and shares them read-only with every
strategy trading that instrument, so N strategies on one instrument cost one book update, not N.

Routing:
- market data goes to the strategies subscribed to its instrument, in the order they were
  configured (deterministic: the same data gives the same intents in both runtimes), and only
  to those whose ``subscriptions`` take its kind (``engine.strategies.base.subscriptions_of``:
  a "top" subscriber's ``on_book`` runs only when the best bid or ask changed since its last
  book callback);
- execution events go to the one strategy that owns the order, found from the top 32 bits of the
  ``client_order_id`` (``strategy_id << 32 | counter``) — no lookup table to keep in sync;
- the venue's account events (a settlement, a liquidation, a payment) go to every strategy
  trading the instrument: their positions follow, and "account" subscribers hear them
  (``engine.strategy_accounts``);
- messages from other engines (``Remote`` envelopes from the bridge) go to every enabled strategy's
  ``on_remote``, in delivery order, after the envelope's dedupe (delivery is at-least-once);
- a strategy that raises is, by default, disabled and its open orders canceled, so one buggy
  plug-in cannot take the others down (``on_error="raise"`` re-raises instead, for tests).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from engine import strategy_accounts
from engine.book import BookFlag, L2Book
from engine.instruments import Instrument, InstrumentTable
from engine.messages import (
    ACCOUNT_EVENT_TYPES,
    Bar,
    BookDelta,
    BookSnapshot,
    Forecast,
    IntentCancel,
    IntentNew,
    MarkPrice,
    OrderAccepted,
    OrderFilled,
    OrderPartiallyFilled,
    OrderReplaced,
    Quote,
    Remote,
    Trade,
)
from engine.risk_limits import RiskLimits
from engine.sizing import SizingLimits
from engine.strategies.base import (
    MAX_STRATEGY_ID,
    Intent,
    Strategy,
    StrategyContext,
    load_strategy,
    strategy_id_of,
    subscriptions_of,
)
from engine.vol_sigma import SigmaTracker

#: the subscription that takes each market callback
_KIND = {
    "on_quote": "quote",
    "on_trade": "trade",
    "on_book": "book",
    "on_bar": "bar",
    "on_forecast": "forecast",
    "on_mark": "mark",
}


@dataclass
class StrategySpec:
    """One configured strategy: what to load, its params, which instruments, which id.

    ``strategy`` is a dotted path (``"pkg.mod:Class"``) or a Strategy subclass. ``instruments``
    holds ids or symbols (None = every instrument). ``strategy_id`` defaults to the 1-based
    position in the spec list; 0 is left free for orders the engine itself originates.
    """

    strategy: str | type[Strategy]
    params: dict[str, Any] = field(default_factory=dict)
    instruments: list[int | str] | None = None
    strategy_id: int | None = None
    name: str | None = None

    @classmethod
    def coerce(cls, spec: StrategySpec | Mapping[str, Any] | str | type[Strategy]) -> StrategySpec:
        """Accept a spec, a config table (``path``/``strategy``/``class`` key), a path or a class."""
        if isinstance(spec, StrategySpec):
            return spec
        if isinstance(spec, str | type):
            return cls(strategy=spec)
        if isinstance(spec, Mapping):
            target = spec.get("strategy", spec.get("path", spec.get("class")))
            if target is None:
                raise ValueError(f"strategy spec {dict(spec)!r}: missing 'path'")
            unknown = set(spec) - {
                "strategy",
                "path",
                "class",
                "params",
                "instruments",
                "strategy_id",
                "name",
            }
            if unknown:
                raise ValueError(f"strategy spec {dict(spec)!r}: unknown keys {sorted(unknown)}")
            return cls(
                strategy=target,
                params=dict(spec.get("params") or {}),
                instruments=spec.get("instruments"),
                strategy_id=spec.get("strategy_id"),
                name=spec.get("name"),
            )
        raise ValueError(f"not a strategy spec: {spec!r}")


@dataclass
class _Slot:
    """A hosted strategy and its bookkeeping."""

    strategy_id: int
    name: str
    strategy: Strategy
    ctx: StrategyContext
    enabled: bool = True
    #: the market callbacks it takes (``subscriptions_of`` its class)
    subs: frozenset[str] = frozenset()


class StrategyHost:
    """Runs strategies; every entry point returns the intents produced, in order."""

    def __init__(
        self,
        strategies: Iterable[StrategySpec | Mapping[str, Any] | str | type[Strategy]],
        instruments: InstrumentTable | Iterable[Instrument],
        *,
        on_error: str = "disable",
    ) -> None:
        if on_error not in ("disable", "raise"):
            raise ValueError(f"on_error must be 'disable' or 'raise', got {on_error!r}")
        self.on_error = on_error
        self.instruments = (
            instruments
            if isinstance(instruments, InstrumentTable)
            else InstrumentTable(list(instruments))
        )
        # one book per instrument, shared read-only by every strategy; a strategy fed only
        # quotes sees an empty book and falls back to the last quote (StrategyContext.best_bid)
        self.books: dict[int, L2Book] = {
            ins.instrument_id: L2Book(ins.instrument_id) for ins in self.instruments
        }
        self.quotes: dict[int, Quote] = {}
        self.slots: list[_Slot] = []
        self._by_id: dict[int, _Slot] = {}
        self._by_instrument: dict[int, list[_Slot]] = {iid: [] for iid in self.instruments.ids}
        #: (strategy name, callback, exception repr) for every strategy that raised
        self.errors: list[tuple[str, str, str]] = []
        #: execution events whose client_order_id belongs to no hosted strategy
        self.unrouted = 0
        #: remote messages handed to the strategies (``on_remote``)
        self.remote_in = 0
        self.started = False
        self.stopped = False
        #: instrument -> the time its seeded position was read (``seed_positions``)
        self._seeded: dict[int, int] = {}
        #: order ids (their counter part) up to this were a previous incarnation's
        self._orphans_upto = 0
        self._orphans_canceled: set[int] = set()
        #: instruments whose best bid/ask changed since the last book callback ("top")
        self._top_moved: set[int] = set()

        for pos, raw in enumerate(strategies, start=1):
            spec = StrategySpec.coerce(raw)
            cls = spec.strategy if isinstance(spec.strategy, type) else load_strategy(spec.strategy)
            if not (isinstance(cls, type) and issubclass(cls, Strategy)):
                raise ValueError(f"strategy {spec.strategy!r} is not a Strategy subclass")
            sid = pos if spec.strategy_id is None else int(spec.strategy_id)
            if not 1 <= sid <= MAX_STRATEGY_ID:
                raise ValueError(f"strategy {spec.strategy!r}: strategy_id {sid} out of range")
            if sid in self._by_id:
                raise ValueError(f"duplicate strategy_id {sid}")
            ins = self._resolve_instruments(spec)
            ctx = StrategyContext(sid, ins, books=self.books, quotes=self.quotes)
            name = spec.name or f"{cls.__name__}#{sid}"
            strategy = cls(ctx, dict(spec.params))
            slot = _Slot(sid, name, strategy, ctx, subs=subscriptions_of(cls, strategy))
            self.slots.append(slot)
            self._by_id[sid] = slot
            for i in ins:
                self._by_instrument[i.instrument_id].append(slot)

    def _resolve_instruments(self, spec: StrategySpec) -> list[Instrument]:
        if spec.instruments is None:
            return list(self.instruments)
        out = []
        for ref in spec.instruments:
            try:
                out.append(
                    self.instruments.by_symbol(ref)
                    if isinstance(ref, str)
                    else self.instruments.by_id(int(ref))
                )
            except KeyError as exc:
                raise ValueError(f"strategy {spec.strategy!r}: {exc.args[0]}") from None
        return out

    # --- lookups -----------------------------------------------------------------------------
    def strategy(self, strategy_id: int) -> Strategy:
        return self._by_id[strategy_id].strategy

    def context(self, strategy_id: int) -> StrategyContext:
        return self._by_id[strategy_id].ctx

    # --- dispatch ----------------------------------------------------------------------------
    def _call(self, slot: _Slot, now_ns: int, ts_origin: int, fn: str, *args: Any) -> list[Intent]:
        """Run one callback with the context's clock set and collect its intents."""
        ctx = slot.ctx
        ctx.now_ns = now_ns
        ctx.ts_origin = ts_origin
        try:
            getattr(slot.strategy, fn)(*args)
        except Exception as exc:
            if self.on_error == "raise":
                raise
            return self._disable(slot, fn, exc)
        return ctx.take_intents()

    def _disable(self, slot: _Slot, fn: str, exc: Exception) -> list[Intent]:
        """Contain a failing strategy: drop what it half-produced, cancel what it has open."""
        self.errors.append((slot.name, fn, repr(exc)))
        slot.enabled = False
        ctx = slot.ctx
        for intent in ctx.take_intents():  # never sent: undo their effect on the context
            o = ctx.open_orders.get(intent.client_order_id)
            if isinstance(intent, IntentNew):
                ctx.open_orders.pop(intent.client_order_id, None)
            elif o is not None and isinstance(intent, IntentCancel):
                o.pending_cancel = False
            elif o is not None:
                o.pending_replace = False
        ctx.cancel_all()
        return ctx.take_intents()

    def start(self, now_ns: int = 0) -> list[Intent]:
        """Call every strategy's ``on_start`` (once)."""
        if self.started:
            return []
        self.started = True
        out: list[Intent] = []
        for slot in self.slots:
            out += self._call(slot, now_ns, now_ns, "on_start")
        return out

    def on_market_data(self, msg: object, now_ns: int) -> list[Intent]:
        """Update the book / last quote, then call the subscribed strategies."""
        if self.stopped:
            return []
        if not self.started:
            self.start(now_ns)
        self.absorb(msg)
        return self.dispatch(msg, now_ns)

    def absorb(self, msg: object) -> bool:
        """Apply a market-data message to the state the strategies read — the shared L2 book,
        the last quote — without calling any strategy. True if it was such a message.

        ``on_market_data`` is ``absorb`` + ``dispatch``; the strategy process absorbs the
        ticks of a backlog it skips (``procs.backlog``) so the books stay exact, then
        dispatches only the newest message of each instrument."""
        iid = getattr(msg, "instrument_id", None)
        if iid not in self._by_instrument:
            return False  # an instrument we do not know: nobody can trade it
        if isinstance(msg, Quote):
            self.quotes[iid] = msg  # type: ignore[index]
            return True
        if isinstance(msg, BookDelta | BookSnapshot):
            book = self.books.get(iid)  # type: ignore[arg-type]
            if book is not None and book.apply(msg) & BookFlag.TOP_CHANGED:
                self._top_moved.add(iid)  # type: ignore[arg-type]
            return True
        return False

    def subscribers(self, iid: int, kind: str) -> list[_Slot]:
        """The slots that take ``kind`` ("quote", "trade", "book", "top", "bar", "forecast")
        on instrument ``iid``, in configured order (enabled or not: check ``slot.enabled``)."""
        return [s for s in self._by_instrument.get(iid, ()) if kind in s.subs]

    def dispatch(self, msg: object, now_ns: int) -> list[Intent]:
        """Call the strategies subscribed to ``msg``'s instrument; the state it carries must
        already be applied (``absorb``)."""
        if self.stopped:
            return []
        if not self.started:
            self.start(now_ns)
        iid = msg.instrument_id  # type: ignore[attr-defined]
        slots = self._by_instrument.get(iid)
        if slots is None:
            return []  # an instrument we do not know: nobody can trade it
        top = False
        if isinstance(msg, Quote):
            fn, args, origin = "on_quote", (msg,), msg.ts_recv
        elif isinstance(msg, BookDelta | BookSnapshot):
            fn, args, origin = "on_book", (iid,), msg.ts_recv
            top = iid in self._top_moved
            self._top_moved.discard(iid)
        elif isinstance(msg, Trade):
            fn, args, origin = "on_trade", (msg,), msg.ts_recv
        elif isinstance(msg, Forecast):
            # a forecast's own ts_origin is the tick it was computed from: keep that, so the
            # latency of an order includes inference
            fn, args, origin = "on_forecast", (msg,), msg.ts_origin
        elif isinstance(msg, Bar):
            fn, args, origin = "on_bar", (msg,), now_ns
        elif isinstance(msg, MarkPrice):
            fn, args, origin = "on_mark", (msg,), msg.ts_recv
        else:
            return []
        kind = _KIND[fn]
        out: list[Intent] = []
        for slot in slots:
            subs = slot.subs
            if slot.enabled and (kind in subs or (top and "top" in subs)):
                out += self._call(slot, now_ns, origin, fn, *args)
        return out

    def on_forecast(self, f: Forecast, now_ns: int) -> list[Intent]:
        return self.on_market_data(f, now_ns)

    def on_exec_event(self, ev: object, now_ns: int) -> list[Intent]:
        """Apply an execution event to its owner's context, then call on_fill/on_order_event.

        Intents produced in reaction carry the event's ``ts_recv`` as ``ts_origin``: the event,
        not a market tick, is what caused them.
        """
        coid = getattr(ev, "client_order_id", None)  # a venue notice (ExchangeStatus) has none
        if coid is None and isinstance(ev, ACCOUNT_EVENT_TYPES):  # settled, liquidated, paid
            return strategy_accounts.on_account_event(self, ev, now_ns)
        slot = self._by_id.get(strategy_id_of(coid)) if coid is not None else None
        if slot is None:
            self.unrouted += 1
            return []
        orphan = self._orphans_upto and self._is_orphan(slot, ev, coid)
        slot.ctx.apply_exec_event(ev)
        if self._seeded and isinstance(ev, OrderPartiallyFilled):
            self._unseed(slot, ev)
        if orphan:
            self._orphans_canceled.add(coid)
            return [IntentCancel(coid, slot.strategy_id, ev.instrument_id, ev.ts_recv, now_ns)]  # type: ignore[attr-defined]
        if not slot.enabled or self.stopped:
            return []  # a stopped strategy keeps its books straight but may not act
        fn = "on_fill" if isinstance(ev, OrderPartiallyFilled) else "on_order_event"
        return self._call(slot, now_ns, getattr(ev, "ts_recv", now_ns), fn, ev)

    def set_risk_limits(self, limits: RiskLimits, notional_ids: Iterable[int] = ()) -> None:
        """What sizing takes from ``[risk]``: Kelly and volatility-target sizes capped by the
        gate's limits (``notional_ids``: a real venue's instruments, capped in notional), and
        each context's sigma tracker with the gate's volatility settings (``engine.vol_sigma``)."""
        sizing = SizingLimits.from_risk(limits, notional_ids)
        n = max(self.instruments.ids, default=-1) + 1
        for slot in self.slots:
            slot.ctx.sizing_limits = sizing
            slot.ctx.volatility = SigmaTracker.from_risk(limits, n)

    def set_hedged(self, instrument_ids: Iterable[int]) -> None:
        """The instruments of hedging venues: their contexts' ``legs`` are the two legs."""
        hedged = frozenset(int(i) for i in instrument_ids)
        for s in self.slots:
            s.ctx.hedged = hedged

    def seed_positions(
        self,
        positions: Mapping[int, int],
        as_of_ns: int,
        legs: Mapping[int, tuple[int, int]] | None = None,
    ) -> list[int]:
        """After a restart of the strategy process: the position of each instrument (exec's
        positions table, read at ``as_of_ns``) becomes the position of the one strategy that
        trades it (``legs``: its (long, short) legs, exec's table's for a hedging venue), so
        an inventory limit counts what the previous incarnation bought (a
        strategy restarted flat would trade up to its limit again from there). Fills up to
        ``as_of_ns`` that the events ring delivers again are in the table already: they are
        not counted twice. Returns the instruments with a position that several strategies
        trade: not seeded (the table cannot tell whose it is)."""
        shared: list[int] = []
        for iid, pos in positions.items():
            slots = self._by_instrument.get(iid)
            if not slots:
                continue
            if len(slots) > 1:
                if pos:
                    shared.append(iid)
                continue
            slots[0].ctx.positions[iid] = int(pos)
            lg = (legs or {}).get(iid)
            slots[0].ctx.leg_lots[iid] = lg if lg is not None else (max(pos, 0), min(pos, 0))
            self._seeded[iid] = as_of_ns
        return shared

    def cancel_orphans(self, upto_counter: int) -> None:
        """After a restart: orders numbered up to ``upto_counter`` (a previous incarnation's
        block) are unknown to the strategies but may rest at the venue. The first event that
        shows one open (ack, replace, partial fill) is answered with a cancel, once; its fills
        still move the position (``seed_positions``)."""
        self._orphans_upto = upto_counter

    def _is_orphan(self, slot: _Slot, ev: object, coid: int) -> bool:
        if coid in slot.ctx.open_orders or coid in self._orphans_canceled:
            return False
        if (coid & 0xFFFFFFFF) > self._orphans_upto:
            return False
        if isinstance(ev, OrderFilled):
            return False
        if isinstance(ev, OrderPartiallyFilled):
            return ev.leaves_qty > 0
        return isinstance(ev, OrderAccepted | OrderReplaced)

    def _unseed(self, slot: _Slot, ev: OrderPartiallyFilled) -> None:
        """Take a re-delivered fill the seeded position holds back out (exec publishes in
        ``ts_recv`` order: after the first newer fill of an instrument, none is left)."""
        t = self._seeded.get(ev.instrument_id)
        if t is None:
            return
        if ev.ts_recv <= t:
            slot.ctx.positions[ev.instrument_id] -= ev.side * ev.fill_qty
            long, short = slot.ctx.leg_lots.get(ev.instrument_id, (0, 0))  # as applied: plain
            q = ev.side * ev.fill_qty
            slot.ctx.leg_lots[ev.instrument_id] = (long - q, short) if q > 0 else (long, short - q)
        else:
            del self._seeded[ev.instrument_id]

    def on_remote(self, r: Remote, now_ns: int) -> list[Intent]:
        """Hand another engine's message to every enabled strategy (``Strategy.on_remote``).

        The caller drops re-delivered envelopes first (``procs.bridge.RemoteFilter``). Intents
        sent in reaction carry the envelope's delivery time as ``ts_origin``.
        """
        if self.stopped:
            return []
        if not self.started:
            self.start(now_ns)
        self.remote_in += 1
        out: list[Intent] = []
        for slot in self.slots:
            if slot.enabled:
                out += self._call(
                    slot, now_ns, r.ts_recv or now_ns, "on_remote", r.source, r.msg, slot.ctx
                )
        return out

    def on_timer(self, now_ns: int) -> list[Intent]:
        if self.stopped:
            return []
        out: list[Intent] = []
        for slot in self.slots:
            if slot.enabled:
                out += self._call(slot, now_ns, now_ns, "on_timer", now_ns)
        return out

    def stop(self, now_ns: int) -> list[Intent]:
        """``on_stop`` for every strategy, then a cancel for every order still open."""
        if self.stopped:
            return []
        self.stopped = True
        out: list[Intent] = []
        for slot in self.slots:
            if slot.enabled:
                out += self._call(slot, now_ns, now_ns, "on_stop")
            slot.ctx.now_ns = now_ns
            slot.ctx.ts_origin = now_ns
            slot.ctx.cancel_all()
            out += slot.ctx.take_intents()
        return out

    def open_orders(self) -> dict[int, Any]:
        """Every hosted strategy's open orders by client_order_id."""
        out: dict[int, Any] = {}
        for slot in self.slots:
            out.update(slot.ctx.open_orders)
        return out
