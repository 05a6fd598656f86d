"""Parent/child bookkeeping shared by every execution algorithm.

Why it is split this way: an execution algorithm is two things that change for different reasons.
The *schedule* (when to send how much, at what price) differs per algorithm; the *bookkeeping*
(which children belong to which parent, what the parent has filled, turning child fills into
parent fills, cancelling children when the parent is canceled, deciding when the parent is over)
is the same for all of them and is where quantity bugs hide. So the bookkeeping lives here once,
and an algorithm (``Algo`` subclass) only says ``send(qty)`` / ``finish(reason)`` from its
callbacks.

Quantity invariants the bookkeeping keeps, whatever an algorithm asks for:

- a child is never sent for more than ``parent.qty - filled - open``: the children's quantity
  that can still fill never exceeds what the parent has left, so the children always sum to at
  most the parent (and exactly to it when the parent fills);
- parent ``cum_qty`` is the sum of child fills and ``cum_qty + leaves_qty == qty`` on every parent
  event;
- a parent ends exactly once: ``OrderFilled`` when the children filled it, otherwise one
  ``OrderCanceled`` after the last open child has closed (cancel requested, window over, or the
  algorithm gave up), carrying the quantity that will never fill;
- an amend (``AlgoEngine.amend``) changes ``parent.qty`` (never to or below ``filled``) and
  first fits the open children to it (shrunk or canceled), so the first rule holds again once
  the venue has answered; a fill that races the cut at the venue is the only way past it, and it
  is counted.

Parameters arrive as ``dict[str, float]`` (``NewOrder.algo_params``): a fixed, typed wire shape
that every algorithm reads with the helpers below, which turn any bad value into an
``AlgoParamError`` whose message names the key; the engine answers it with a parent-level
``OrderRejected`` (never an exception out of the engine).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from engine.messages import AlgoKind, AlgoState, NewOrder, OrderType, Side, TimeInForce

if TYPE_CHECKING:  # the engine is passed in at run time; no import cycle
    from engine.algos.engine import AlgoEngine

NS_PER_S = 1_000_000_000


class AlgoParamError(ValueError):
    """A parent order the algorithm cannot run; the message is the rejection reason."""


@dataclass(slots=True, eq=False)
class Child:
    """One child order as the algorithm knows it."""

    client_order_id: int
    qty: int
    px: int
    sent_ns: int
    leaves: int
    cum: int = 0
    is_open: bool = True
    accepted: bool = False
    cancel_sent: bool = False
    #: set when the child closed: "filled", "canceled", "expired", "rejected"
    outcome: str = ""
    fill_ids: set[int] = field(default_factory=set)
    #: a LIMIT child with a resting time in force: an amend reprices it with a ReplaceOrder
    #: (an IOC/market child is only ever canceled: it is gone before a replace could land)
    resting: bool = False
    #: a ReplaceOrder to this child is on its way (``want_px`` / ``want_qty``: what it asks)
    replace_sent: bool = False
    want_px: int = 0
    want_qty: int = 0


@dataclass(slots=True, eq=False)
class Parent:
    """A parent order and its children. ``filled`` + what is open + what is left = ``qty``."""

    order: NewOrder
    algo: int
    qty: int
    state: int = AlgoState.WORKING
    filled: int = 0
    notional_ticks: int = 0
    fees: float = 0.0
    open_qty: int = 0  # leaves of the open children
    children: dict[int, Child] = field(default_factory=dict)
    open_children: int = 0
    #: why the parent is winding down (cancel requested, window over, gave up); "" while working
    ending: str = ""
    target_qty: int = 0  # what the schedule wants filled by now (scheduled algorithms)
    child_rejects: int = 0  # consecutive child rejections
    impl: Algo | None = None
    #: exec's clock when the parent was accepted: the algorithm's schedule is rebuilt from it
    #: after a restart (``AlgoEngine.restore``)
    start_ns: int = 0
    #: the parent as accepted, once an amend has changed ``order`` (a restart rebuilds from it)
    original: NewOrder | None = None
    #: the amends applied, oldest first (``engine.algos.recovery.AmendSnapshot``)
    amends: list[Any] = field(default_factory=list)
    #: the volume profile a VWAP on recorded volume was scheduled on, as
    #: ``(weights, period_ns, origin_ns)``: logged with the parent so a restart resumes it
    saved_profile: tuple[list[float], int, int] | None = None

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
    def remaining(self) -> int:
        """Quantity neither filled nor working in an open child: what may still be sent."""
        return self.qty - self.filled - self.open_qty

    @property
    def is_working(self) -> bool:
        return self.state == AlgoState.WORKING and not self.ending

    @property
    def avg_px(self) -> float:
        return self.notional_ticks / self.filled if self.filled else 0.0


# --- parameter helpers ---------------------------------------------------------------------------


def check_keys(params: dict[str, float], allowed: frozenset[str], algo: str) -> None:
    """Unknown keys are mistakes (a misspelt ``duraton_s`` would silently run a default)."""
    unknown = sorted(k for k in params if k not in allowed)
    if unknown:
        raise AlgoParamError(
            f"{algo}: unknown parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(allowed))}"
        )


def num(
    params: dict[str, float],
    key: str,
    algo: str,
    default: float | None = None,
    *,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    hi_open: bool = False,
) -> float:
    """A finite number from ``params`` within ``[lo, hi]`` (open ends if asked)."""
    if key not in params:
        if default is None:
            raise AlgoParamError(f"{algo}: parameter {key} is required")
        return default
    raw = params[key]
    try:
        v = float(raw)
    except (TypeError, ValueError):
        raise AlgoParamError(f"{algo}: {key} must be a number, got {raw!r}") from None
    if not math.isfinite(v):
        raise AlgoParamError(f"{algo}: {key} must be finite, got {v}")
    if lo is not None and (v <= lo if lo_open else v < lo):
        raise AlgoParamError(f"{algo}: {key} must be {'>' if lo_open else '>='} {lo}, got {v}")
    if hi is not None and (v >= hi if hi_open else v > hi):
        raise AlgoParamError(f"{algo}: {key} must be {'<' if hi_open else '<='} {hi}, got {v}")
    return v


def window(params: dict[str, float], now_ns: int, algo: str) -> tuple[int, int]:
    """``(start_ns, end_ns)`` from ``start_ns`` (default now) and ``end_ns`` or ``duration_s``.

    A start in the past is moved to now (the time already gone cannot be traded)."""
    start = int(num(params, "start_ns", algo, float(now_ns), lo=0))
    start = max(start, now_ns)
    if "end_ns" in params and "duration_s" in params:
        raise AlgoParamError(f"{algo}: give end_ns or duration_s, not both")
    if "end_ns" in params:
        end = int(num(params, "end_ns", algo, lo=0))
    elif "duration_s" in params:
        end = start + int(num(params, "duration_s", algo, lo=0, lo_open=True) * NS_PER_S)
    else:
        raise AlgoParamError(f"{algo}: parameter duration_s (or end_ns) is required")
    if end <= start:
        raise AlgoParamError(f"{algo}: the window ends ({end}) before it starts ({start})")
    return start, end


# --- the algorithm interface ---------------------------------------------------------------------


class Algo:
    """One running algorithm instance, bound to one parent. Subclasses override the callbacks;
    from them they call ``send`` (a child) and ``finish`` (give up / window over)."""

    kind: int = AlgoKind.NONE
    name: str = "algo"
    #: parameter keys this algorithm accepts
    keys: frozenset[str] = frozenset()
    #: consecutive child rejections after which the parent is stopped
    max_child_rejects: int = 3

    def __init__(self, engine: AlgoEngine, parent: Parent, now_ns: int) -> None:
        self.engine = engine
        self.parent = parent
        check_keys(parent.order.algo_params, self.keys, self.name)
        #: next time ``on_time`` wants to be called (None: no timer needed)
        self.wakeup_ns: int | None = None

    # callbacks -----------------------------------------------------------------------------------
    def on_start(self, now_ns: int) -> None:
        """The parent was accepted."""

    def on_time(self, now_ns: int) -> None:
        """``now_ns`` reached ``wakeup_ns``."""

    def on_market_data(self, msg: object, now_ns: int) -> None:
        """Market data for the parent's instrument."""

    def on_child_fill(self, child: Child, qty: int, now_ns: int) -> None:
        """A child filled ``qty`` (parent bookkeeping already updated)."""

    def on_child_closed(self, child: Child, now_ns: int) -> None:
        """A child ended (filled, canceled, expired or rejected)."""

    def on_resume(self, now_ns: int) -> None:
        """Called instead of ``on_start`` when the parent is rebuilt after an exec restart
        (``AlgoEngine.restore``): the bookkeeping (filled, open children) is already restored;
        the schedule itself was rebuilt by the constructor from the parent's original start."""

    def check_amend(self, new_qty: int, new_px: int) -> str:
        """Why this algorithm cannot take the amend ("" = it can). The engine has already checked
        what holds for every parent (working, above the filled quantity, a valid limit)."""
        return ""

    def rebase_for(self, new_qty: int, now_ns: int) -> tuple[int, int]:
        """Pure: how the remaining schedule would be rebased for ``new_qty`` (written to the
        algo log with the amend, before it takes effect, so a restart rebuilds the same
        schedule); ``(0, 0)`` for an algorithm without a schedule."""
        return 0, 0

    def set_rebase(self, from_slice: int, base: int) -> None:
        """Apply a rebase made by ``rebase_for`` (live, or replayed after a restart)."""

    def reprice(self, child: Child, px: int, old_limit: int) -> int:
        """The price a resting child at ``px`` should have under the parent's new limit
        (``parent.order.px``). Default: one priced beyond the new limit, or at the old one
        (it rested at the limit: an iceberg, a capped passive child), moves to the new limit."""
        new = self.parent.order.px
        buy = self.parent.order.side == Side.BUY
        if px == old_limit or (px > new if buy else px < new):
            return new
        return px

    def on_amend(self, now_ns: int) -> None:
        """The parent's quantity and/or limit changed (``parent.qty`` / ``parent.order``); the
        engine has already shrunk or repriced its open children to fit."""

    def window_end_ns(self) -> int | None:
        """When the algorithm's window ends (None: it has none). A parent whose window ended
        while exec was down is not resumed (see ``AlgoEngine.restore``)."""
        end = getattr(self, "end_ns", None)
        return int(end) if end is not None else None

    # actions -------------------------------------------------------------------------------------
    def send(
        self,
        qty: int,
        now_ns: int,
        *,
        order_type: int | None = None,
        tif: int | None = None,
        px: int | None = None,
    ) -> Child | None:
        """Send a child of up to ``qty`` lots (clipped to what the parent has left).

        Defaults: the parent's order type and price with IOC — a marketable slice that takes what
        the book has within the parent's limit and never rests (schedule-driven algorithms).
        """
        return self.engine._send_child(self.parent, qty, now_ns, order_type, tif, px)

    def finish(self, reason: str, now_ns: int) -> None:
        """Stop working: cancel open children; the parent ends once they have closed."""
        self.engine._wind_down(self.parent, reason, now_ns)

    def cancel_children(self, now_ns: int) -> int:
        """Ask to cancel every open child (the parent goes on); returns how many were asked."""
        return self.engine._cancel_children(self.parent, now_ns)

    # helpers -------------------------------------------------------------------------------------
    def aggressive_style(self) -> tuple[int, int, int]:
        """(order_type, tif, px) of a marketable child within the parent's limit."""
        o = self.parent.order
        if o.order_type == OrderType.MARKET:
            return int(OrderType.MARKET), int(TimeInForce.IOC), 0
        return int(OrderType.LIMIT), int(TimeInForce.IOC), o.px


class ScheduledAlgo(Algo):
    """An algorithm that follows a target: at each decision it sends a child for ``target -
    filled - open`` (so a slice that did not fill is caught up by the next one).

    Children are marketable (IOC at the parent's limit) unless ``passive``: then each rests at
    the near touch (the best bid for a buy, capped by the parent's limit), is canceled at the
    next decision and its unfilled part re-posted at the touch of then."""

    #: smallest child worth sending (lots); smaller shortfalls wait for the next decision
    min_child: int = 1
    passive: bool = False

    def target(self, now_ns: int) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def child_style(self) -> tuple[int, int, int]:
        """(order_type, tif, px) of the next child: passive at the touch, else marketable."""
        if self.passive:
            top = self.engine.top(self.parent.instrument_id)
            o = self.parent.order
            if top is not None:
                buy = o.side == Side.BUY
                touch = top[0] if buy else top[2]
                if touch > 0:
                    if o.order_type == OrderType.LIMIT:
                        touch = min(touch, o.px) if buy else max(touch, o.px)
                    return int(OrderType.LIMIT), int(TimeInForce.GTC), touch
        return self.aggressive_style()

    def reprice(self, child: Child, px: int, old_limit: int) -> int:
        """A passive child goes where a new one would rest (the touch, capped by the new limit)
        when it was capped by the old limit or is beyond the new one: a higher limit must not
        turn a passive child into one that takes."""
        moved = super().reprice(child, px, old_limit)
        if moved == px or not self.passive:
            return moved
        otype, _, touch = self.child_style()
        return touch if otype == OrderType.LIMIT and touch > 0 else moved

    def catch_up(
        self, now_ns: int, target: int | None = None, *, aggressive: bool = False
    ) -> Child | None:
        p = self.parent
        t = min(p.qty, self.target(now_ns) if target is None else target)
        p.target_qty = t
        self.engine._touch(p)
        want = t - p.filled - p.open_qty
        if want < self.min_child and not (want > 0 and t == p.qty):
            return None
        order_type, tif, px = self.aggressive_style() if aggressive else self.child_style()
        return self.send(want, now_ns, order_type=order_type, tif=tif, px=px)
