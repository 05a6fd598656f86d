"""The engine's whole vocabulary: every message that crosses a ring or a component boundary.

Why it looks like this (DESIGN §4):
- msgspec Structs with ``array_like=True`` and a small integer tag: MessagePack arrays are the
  smallest and fastest encoding msgspec has, and the tag doubles as the ring frame's type so a
  consumer can filter frames without decoding them.
- Prices and quantities are int64 counts of the instrument's tick and lot size; conversion to
  decimals happens in one place (``engine.instruments``). No float is ever compared for equality.
- Times are int64 nanoseconds: ``ts_event`` is the venue's time, ``ts_recv`` our monotonic receive
  time. Every intent, order and order event carries ``ts_origin``: the ``ts_recv`` of the market
  data tick that caused it, so tick-to-order latency is measurable on every single order.

Enumerations are plain ``int`` fields on the wire (decoding an IntEnum costs a lookup on the hot
path); the ``IntEnum`` classes in ``engine.enums`` (re-exported here) name the values for humans.
What a message means is its type, never a prefix of its text: a refused cancel or replace is an
``OrderCancelRejected`` / ``OrderReplaceRejected`` with a reason enum. A message built from
another has a constructor on its struct (``NewOrder.from_intent``, ``OrderAccepted.for_order``).
"""

from __future__ import annotations

from collections.abc import Callable
from enum import IntEnum
from typing import Any, ClassVar, Self

import msgspec

from engine.enums import (  # noqa: F401 - re-exported: each message names its values here
    AlgoKind,
    AlgoState,
    CancelRejectReason,
    ContingencyType,
    ControlCommand,
    ExchangeStatusKind,
    Liquidity,
    OrderFlag,
    OrderType,
    ReconciliationKind,
    ReplaceRejectReason,
    RiskEventKind,
    SettlementKind,
    Side,
    TimeInForce,
    TradingState,
)

_S = {"array_like": True, "frozen": False, "gc": False}


# --- market data -----------------------------------------------------------------------------


class Quote(msgspec.Struct, tag=1, **_S):
    """Top of book for one instrument."""

    instrument_id: int
    bid_px: int
    bid_qty: int
    ask_px: int
    ask_qty: int
    ts_event: int
    ts_recv: int
    seq: int = 0


class Trade(msgspec.Struct, tag=2, **_S):
    """A print on the venue (not our fill). ``side`` is the aggressor's side."""

    instrument_id: int
    px: int
    qty: int
    side: int
    ts_event: int
    ts_recv: int
    trade_id: int = 0


class BookDelta(msgspec.Struct, tag=3, **_S):
    """One L2 level changed: ``qty`` is the new total at ``px`` (0 removes the level)."""

    instrument_id: int
    side: int
    px: int
    qty: int
    ts_event: int
    ts_recv: int
    seq: int = 0


class BookSnapshot(msgspec.Struct, tag=4, **_S):
    """Full L2 book: levels best first."""

    instrument_id: int
    bid_px: list[int]
    bid_qty: list[int]
    ask_px: list[int]
    ask_qty: list[int]
    ts_event: int
    ts_recv: int
    seq: int = 0


class Bar(msgspec.Struct, tag=5, **_S):
    """An OHLCV bar over [start_ns, end_ns)."""

    instrument_id: int
    start_ns: int
    end_ns: int
    open: int
    high: int
    low: int
    close: int
    volume: int
    trades: int = 0


class Forecast(msgspec.Struct, tag=6, **_S):
    """A model's forecast of future returns/prices for one instrument.

    ``point`` holds the horizon's point forecast (log returns versus the last close);
    ``quantiles`` maps each level in ``levels`` to a horizon-long path.

    Its age: ``ts_origin`` is when the tick that closed the bar arrived (host clock), ``ts_event``
    that tick's venue time — the forecast knows the market up to then — and ``bar_ns`` the bar
    length (venue clock; 0: tick bars). Frames from before these two fields decode with 0
    (unknown). A strategy reads a forecast as stale by these (``engine.strategies.forecast``).
    """

    instrument_id: int
    model_version: str
    ts_origin: int
    ts_recv: int
    point: list[float]
    levels: list[float] = []
    quantiles: list[list[float]] = []
    ts_event: int = 0
    bar_ns: int = 0
    #: a direction model's P(the mid's next change is up) (models.lob_serving); -1: none
    p_up: float = -1.0


# --- order intents (strategy -> risk) --------------------------------------------------------


class IntentNew(msgspec.Struct, tag=10, **_S):
    """A strategy asks for a new order. ``client_order_id`` is chosen by the strategy and unique."""

    client_order_id: int
    strategy_id: int
    instrument_id: int
    side: int
    order_type: int
    tif: int
    px: int
    qty: int
    ts_origin: int
    ts_created: int
    stop_px: int = 0
    flags: int = 0
    expire_ns: int = 0
    algo: int = 0  # AlgoKind: 0 = a plain order
    algo_params: dict[str, float] = {}  # the algorithm's parameters (engine.algos)
    # the lots its fills close first, (client_order_id, fill_id) of their opening fills:
    # specific identification named by the strategy (engine.portfolio.Portfolio.designate_lots)
    lots: list[tuple[int, int]] = []
    # order lists (engine.enums.ContingencyType): OTO children name their ``parent_id``; OCO /
    # OUO peers name each other in ``linked``; every order of one list shares ``list_id``
    contingency: int = 0
    parent_id: int = 0
    linked: list[int] = []
    list_id: int = 0


class IntentCancel(msgspec.Struct, tag=11, **_S):
    client_order_id: int
    strategy_id: int
    instrument_id: int
    ts_origin: int
    ts_created: int


class IntentReplace(msgspec.Struct, tag=12, **_S):
    client_order_id: int
    strategy_id: int
    instrument_id: int
    new_px: int
    new_qty: int
    ts_origin: int
    ts_created: int


# --- orders (risk -> exec): approved intents ------------------------------------------------


class NewOrder(msgspec.Struct, tag=20, **_S):
    """An approved order. ``from_intent`` builds it from the strategy's ``IntentNew``."""

    client_order_id: int
    strategy_id: int
    instrument_id: int
    side: int
    order_type: int
    tif: int
    px: int
    qty: int
    ts_origin: int
    ts_approved: int
    stop_px: int = 0
    flags: int = 0
    expire_ns: int = 0
    algo: int = 0  # AlgoKind: 0 = a plain order
    algo_params: dict[str, float] = {}  # the algorithm's parameters (engine.algos)
    # the lots its fills close first, (client_order_id, fill_id) of their opening fills:
    # specific identification named by the strategy (engine.portfolio.Portfolio.designate_lots)
    lots: list[tuple[int, int]] = []
    # order lists (engine.enums.ContingencyType): OTO children name their ``parent_id``; OCO /
    # OUO peers name each other in ``linked``; every order of one list shares ``list_id``
    contingency: int = 0
    parent_id: int = 0
    linked: list[int] = []
    list_id: int = 0

    @classmethod
    def from_intent(cls, intent: IntentNew, ts_approved: int) -> NewOrder:
        """The order for an approved intent: every field the two share, by name (a field added
        to both later is carried with no edit here), stamped ``ts_approved``."""
        return _NEW_FROM_INTENT(intent, ts_approved)


class CancelOrder(msgspec.Struct, tag=21, **_S):
    client_order_id: int
    strategy_id: int
    instrument_id: int
    ts_origin: int
    ts_approved: int

    @classmethod
    def from_intent(cls, intent: IntentCancel, ts_approved: int) -> CancelOrder:
        """The cancel for an approved ``IntentCancel`` (shared fields by name)."""
        return _CANCEL_FROM_INTENT(intent, ts_approved)


class ReplaceOrder(msgspec.Struct, tag=22, **_S):
    client_order_id: int
    strategy_id: int
    instrument_id: int
    new_px: int
    new_qty: int
    ts_origin: int
    ts_approved: int


# --- execution events (exec -> strategy, risk, recorder) ------------------------------------


class OrderAccepted(msgspec.Struct, tag=30, **_S):
    client_order_id: int
    venue_order_id: int
    instrument_id: int
    side: int
    px: int
    qty: int
    ts_origin: int
    ts_event: int
    ts_recv: int

    @classmethod
    def for_order(
        cls, order: NewOrder, venue_order_id: int, ts_event: int, ts_recv: int
    ) -> OrderAccepted:
        """The acknowledgement of ``order`` as sent (its id, instrument, side, price, quantity
        and ts_origin), under ``venue_order_id``."""
        o = order
        return cls(
            o.client_order_id,
            venue_order_id,
            o.instrument_id,
            o.side,
            o.px,
            o.qty,
            o.ts_origin,
            ts_event,
            ts_recv,
        )


class OrderRejected(msgspec.Struct, tag=31, **_S):
    """The order itself was refused (by risk, exec, an algorithm or the venue): it is over.
    A refused cancel or replace is not this: see ``OrderCancelRejected``."""

    client_order_id: int
    instrument_id: int
    reason: str
    ts_origin: int
    ts_event: int
    ts_recv: int

    @classmethod
    def for_order(
        cls,
        order: NewOrder | IntentNew | IntentReplace | IntentCancel,
        reason: str,
        ts_event: int,
        ts_recv: int,
    ) -> OrderRejected:
        """The refusal of ``order`` (or of the intent for it): its id, instrument, ts_origin."""
        o = order
        return cls(o.client_order_id, o.instrument_id, reason, o.ts_origin, ts_event, ts_recv)


class OrderPartiallyFilled(msgspec.Struct, tag=32, **_S):
    """A fill that leaves quantity open. ``fee`` is in the quote currency (positive = paid)."""

    client_order_id: int
    venue_order_id: int
    instrument_id: int
    side: int
    fill_px: int
    fill_qty: int
    cum_qty: int
    leaves_qty: int
    fee: float
    liquidity: int
    fill_id: int
    ts_origin: int
    ts_event: int
    ts_recv: int


class OrderFilled(OrderPartiallyFilled, tag=33, **_S):
    """The fill that completes the order (``leaves_qty`` is 0)."""


class OrderCanceled(msgspec.Struct, tag=34, **_S):
    client_order_id: int
    instrument_id: int
    leaves_qty: int
    reason: str
    ts_origin: int
    ts_event: int
    ts_recv: int


class OrderExpired(msgspec.Struct, tag=35, **_S):
    client_order_id: int
    instrument_id: int
    leaves_qty: int
    ts_origin: int
    ts_event: int
    ts_recv: int


class OrderReplaced(msgspec.Struct, tag=36, **_S):
    client_order_id: int
    instrument_id: int
    px: int
    qty: int
    ts_origin: int
    ts_event: int
    ts_recv: int


class _RequestRefusal(msgspec.Struct, **_S):
    """What a refused cancel and a refused replace share (each is its own tagged type below):
    the order is unchanged; ``reason`` is the type's enum, ``detail`` for humans; ``ts_origin``
    is the request's, like every event a request causes."""

    REASONS: ClassVar[type[IntEnum]]

    client_order_id: int
    instrument_id: int
    reason: int
    detail: str
    ts_origin: int
    ts_event: int
    ts_recv: int

    @classmethod
    def for_request(cls, req: Any, reason: int, detail: str, ts_event: int, ts_recv: int) -> Self:
        """The refusal of ``req`` (its order, instrument and ts_origin)."""
        return cls(
            req.client_order_id, req.instrument_id, reason, detail, req.ts_origin, ts_event, ts_recv
        )

    @property
    def text(self) -> str:
        """For humans (logs, the record's reason column): ``not_open: <detail>``."""
        return _reason_text(self.REASONS, self.reason, self.detail)


class OrderCancelRejected(_RequestRefusal, tag=39, **_S):
    """A ``CancelOrder`` was refused: the order is still working, or already over when
    ``reason`` is NOT_OPEN (``CancelRejectReason``)."""

    REASONS: ClassVar[type[IntEnum]] = CancelRejectReason


class OrderReplaceRejected(_RequestRefusal, tag=29, **_S):
    """A ``ReplaceOrder`` (amend) was refused: the order keeps its terms
    (``ReplaceRejectReason``)."""

    REASONS: ClassVar[type[IntEnum]] = ReplaceRejectReason


def _reason_text(kind: type[IntEnum], reason: int, detail: str) -> str:
    try:
        name = kind(reason).name.lower()
    except ValueError:
        name = f"reason {reason}"
    return f"{name}: {detail}" if detail else name


# --- risk, control, health ------------------------------------------------------------------


class RiskEvent(msgspec.Struct, tag=40, **_S):
    kind: int
    instrument_id: int
    client_order_id: int
    reason: str
    value: float
    limit: float
    ts: int
    state: int = 0


class Control(msgspec.Struct, tag=41, **_S):
    command: int
    ts: int
    arg: str = ""


class Heartbeat(msgspec.Struct, tag=42, **_S):
    process: str
    pid: int
    seq: int
    ts: int


class TradingStateChanged(msgspec.Struct, tag=43, **_S):
    """The engine-wide trading state moved (``TradingState``): who, why, when.

    ``ts`` is monotonic ns (comparable with order stamps), ``wall_ns`` UNIX time for humans and
    the record; ``source`` is ``operator``, ``daily_loss``, ``drawdown``, ``restore``, ...
    """

    state: int
    prev_state: int
    reason: str
    source: str
    ts: int
    wall_ns: int
    value: float = 0.0
    limit: float = 0.0


class InstrumentHalted(msgspec.Struct, tag=44, **_S):
    """Risk stopped new orders in one instrument (a venue halt or a flash move)."""

    instrument_id: int
    reason: str
    ts: int
    ref_px: int = 0
    px: int = 0


class InstrumentResumed(msgspec.Struct, tag=45, **_S):
    """The market in an instrument is sane again: orders may resume."""

    instrument_id: int
    reason: str
    ts: int


class ExchangeStatus(msgspec.Struct, tag=46, **_S):
    """A venue's trading status for one instrument (``instrument_id`` -1: the whole venue).

    ``status`` is an ``ExchangeStatusKind``. Venue adapters publish it with their execution
    events; risk halts the instrument until the venue says OPEN again.
    """

    instrument_id: int
    status: int
    reason: str
    ts_event: int
    ts_recv: int


# --- execution algorithms (exec -> strategy, recorder) ---------------------------------------


class AlgoProgress(msgspec.Struct, tag=50, **_S):
    """Where a parent order run by an execution algorithm stands (``engine.algos``).

    Published on every change: a child filled, a slice sent, the parent ended. ``filled_qty`` +
    ``remaining_qty`` is the parent's quantity; ``state`` is an ``AlgoState``.
    """

    client_order_id: int  # the parent's
    instrument_id: int
    algo: int
    filled_qty: int
    remaining_qty: int
    children_open: int
    state: int
    ts: int
    target_qty: int = 0  # what the schedule wanted filled by ``ts`` (TWAP/VWAP/POV; 0 otherwise)


# --- order management (exec -> strategy, risk, recorder) -------------------------------------


class OrderAnomaly(msgspec.Struct, tag=37, **_S):
    """A venue event the order table refused (``engine.oms``): a fill after a cancel, a
    duplicate fill id, an event for an unknown order, an overfill, ...

    The offending event is NOT applied (the order keeps a consistent state); this record
    carries what reconciliation needs to decide: the kind, the order's state at the time
    (``state``: an ``engine.order_states.OrderStatus``, -1 for an unknown order), the frame tag
    of the event and, for fills, its id, price and quantity.
    """

    client_order_id: int
    instrument_id: int
    kind: str
    state: int
    event_tag: int
    ts_recv: int
    fill_id: int = 0
    px: int = 0
    qty: int = 0
    detail: str = ""


class OrderTriggered(msgspec.Struct, tag=38, **_S):
    """A stop, stop-limit or trailing-stop order's trigger fired: it goes to the venue now as
    ``order_type`` (MARKET or LIMIT at ``px``). ``emulated`` says exec emulated the trigger
    from market data because the venue lacks the order type (``engine.emulation``)."""

    client_order_id: int
    instrument_id: int
    side: int
    stop_px: int  # the trigger level at the time it fired
    trigger_px: int  # the market price that fired it
    order_type: int
    px: int
    qty: int
    emulated: bool
    ts_origin: int
    ts_event: int
    ts_recv: int


# --- models (infer -> strategy, monitors) ----------------------------------------------------


class DriftEvent(msgspec.Struct, tag=7, **_S):
    """A live monitor of the served model changed state: ``drifting`` = 1 on entering, 0 on
    leaving (``models.drift``, ``models.input_drift``). ``kind``:

    - "error": its one-step error is significantly worse than its trained ratio to the naive
      forecast (``stat`` the paired z, ``threshold`` the critical z; MAEs of log returns);
    - "coverage": its band's coverage (``stat``) is off the nominal level (``threshold``) by more
      than ``margin`` and by more than the critical z;
    - "input": a feature (``detail``) is distributed unlike training: PSI ``stat`` > ``threshold``;
    - "logloss": a micro model's log loss per mid change (``model_mae``) is significantly worse
      than on its held-out block (``naive_mae``): ``stat`` the z, ``threshold`` the critical z.

    ``samples``: the window. Frames from before ``kind`` decode as "error"."""

    model_version: str
    drifting: int
    model_mae: float
    naive_mae: float
    margin: float
    samples: int
    ts: int
    kind: str = "error"
    stat: float = 0.0
    threshold: float = 0.0
    detail: str = ""


class ModelSwapped(msgspec.Struct, tag=8, **_S):
    """The infer process now serves ``new_version`` (``old_version`` empty: the first model)."""

    model_name: str
    old_version: str
    new_version: str
    path: str
    ts: int


class ModelRejected(msgspec.Struct, tag=9, **_S):
    """A model version failed validation; the infer process keeps the last good one (if any)."""

    path: str
    version: str
    reason: str
    ts: int


class ReconciliationEvent(msgspec.Struct, tag=60, **_S):
    """One difference found by start-up reconciliation and how it was resolved (toward the
    venue's truth). ``stored``/``venue`` are the compared values (quantities, positions)."""

    kind: int
    client_order_id: int
    instrument_id: int
    stored: int
    venue: int
    action: str
    ts: int


class Remote(msgspec.Struct, tag=48, **_S):
    """A message from another engine, delivered by the bridge (procs/bridge.py) into the local
    ``remote`` ring. It lives here, not in the bridge, so engine code (strategies: the hook
    ``Strategy.on_remote``) can type it; ``msg`` is any engine message, e.g. a remote fill.

    Delivery is at-least-once: ``stream_id`` increases per (``source``, ``ring``), and a reader
    drops one that is not past the last it saw (``procs.bridge.RemoteFilter``)."""

    source: str  # the engine id that produced it
    ring: str  # its ring there (e.g. "events")
    stream_id: str  # its Redis Streams id "<ms>-<seq>": the dedupe key
    ts_recv: int  # our monotonic ns when the bridge delivered it
    msg: Message


class OpenOrdersRequest(msgspec.Struct, tag=49, **_S):
    """Risk → exec on the ``orders`` ring: "tell me every order you hold open". Sent by a risk
    process restarted without a record (storage off). It travels behind every order risk
    approved before it died, so exec's answer (``OpenOrderSnapshot``) covers those too."""

    request_id: int  # echoed in the answer: a later restart ignores an earlier one's answer
    ts: int  # monotonic ns when risk sent it


class OpenOrderSnapshot(msgspec.Struct, tag=47, **_S):
    """Exec → risk on the ``events`` ring, answering ``OpenOrdersRequest``: one per order open
    in exec (plain orders, held and emulated ones, algo parents with what the parent has left),
    then one with ``end=True`` and ``count`` = how many came before it.

    The id field is ``order_id``, not ``client_order_id``: readers of the events ring that route
    by ``client_order_id`` (strategies, the record) see a message that is about no order of
    theirs and ignore it."""

    request_id: int
    order_id: int  # the client_order_id risk approved (0 on the end marker)
    strategy_id: int
    instrument_id: int
    side: int
    px: int
    leaves_qty: int  # still open, lots
    end: bool = False
    count: int = 0  # on the end marker: the snapshots sent for this request
    ts: int = 0  # monotonic ns when exec answered


# --- the audit trail and the model registry (-> recorder -> PostgreSQL) -----------------------


class AuditEvent(msgspec.Struct, tag=53, **_S):
    """Who did what, when: one ``audit_log`` row. Published by the supervisor on ``control``
    (run start, worker restarts, operator commands) so the recorder journals and writes it, and
    never a database call on a trading process. ``detail`` is a JSON object, as text (a Struct
    field must have one type; the detail's keys differ per action). ``wall_ns``: time.time_ns()."""

    wall_ns: int
    actor: str
    action: str
    detail: str = "{}"


class ModelRegistered(msgspec.Struct, tag=54, **_S):
    """A model version to upsert into ``models`` (by name and version), with its audit row:
    infer publishes one on ``forecasts`` when it starts serving a model or swaps one in.
    ``params`` and ``metrics`` are JSON objects as text (hyper-parameters + training block;
    the walk-forward evaluation), ``created`` the ISO time from meta.json."""

    name: str
    version: str
    artifact: str
    created: str
    params: str
    metrics: str
    action: str  # "serve", "swap", "train", "export": the audit row's action is model.<action>
    actor: str
    wall_ns: int
    old_version: str = ""


# --- account events (venue -> exec -> portfolio, risk, recorder): money that moves without a fill


class FundingPayment(msgspec.Struct, tag=55, **_S):
    """A perpetual's funding at the venue's schedule: ``amount`` in ``currency``, signed as the
    account sees it (> 0 received). ``rate`` is the interval's rate, ``mark_px`` the mark in
    ticks it was charged at, ``position`` the lots held then."""

    instrument_id: int
    rate: float
    mark_px: int
    position: int
    amount: float
    currency: str
    ts_event: int
    ts_recv: int
    payment_id: int = 0  # the venue's id: a payment is applied once


class Financing(msgspec.Struct, tag=56, **_S):
    """An FX position carried over the daily rollover: ``amount`` in ``currency`` (> 0 received),
    ``days`` the days it paid for (3 over a weekend's value dates)."""

    instrument_id: int
    position: int
    amount: float
    currency: str
    days: int
    ts_event: int
    ts_recv: int
    payment_id: int = 0


class Settlement(msgspec.Struct, tag=57, **_S):
    """A position closed by the market itself (``SettlementKind``): a future's expiry at ``px``,
    a binary contract or betting selection resolved (``outcome`` 1 won / 0 lost; ``px`` the
    payout in ticks), or a voided market (``outcome`` -1: trades undone). ``position`` is the
    lots the venue settled. ``fee``: a betting market's commission on its net winnings, on the
    settlement that closes the market (its other selections' settlements carry 0). ``partial``:
    one bet of a betting selection voided while its others settle — only ``position`` lots
    (back > 0, lay < 0) at ``px`` odds are undone, the rest of the position stays for the
    selection's own Settlement (engine/venues/betfair_cleared.py)."""

    instrument_id: int
    kind: int
    px: int
    outcome: int
    position: int
    ts_event: int
    ts_recv: int
    settlement_id: int = 0
    fee: float = 0.0  # charged at settlement, in the instrument's currency
    partial: bool = False  # VOID of one bet only (see above)


class Liquidation(msgspec.Struct, tag=58, **_S):
    """The venue closed ``qty`` lots (side: the closing trade's) at ``px`` for want of margin;
    applied like a fill that no order of ours made, ``fee`` in the instrument's currency."""

    instrument_id: int
    side: int
    px: int
    qty: int
    fee: float
    ts_event: int
    ts_recv: int
    liquidation_id: int = 0


class MarginStatus(msgspec.Struct, tag=59, **_S):
    """One margin account's state, published when it changes materially and on a margin call.
    Money in ``currency`` (the account's)."""

    venue: str
    currency: str
    equity: float
    initial_margin: float
    maintenance_margin: float
    ts_event: int
    margin_call: bool = False


ACCOUNT_EVENT_TYPES = (FundingPayment, Financing, Settlement, Liquidation, MarginStatus)


class MarkPrice(msgspec.Struct, tag=61, **_S):
    """A perpetual's mark from its venue (market data: feed -> strategy, exec, risk's prices,
    recorder). ``mark_px`` / ``index_px`` in ticks (``index_px`` 0: unknown), ``funding_rate``
    the current interval's rate, ``next_funding_ns`` the next funding time (ns since the epoch;
    0 unknown). Where one is present the portfolio and risk value the perpetual at ``mark_px``
    rather than the book's mid (docs/perpetuals.md)."""

    instrument_id: int
    mark_px: int
    index_px: int
    funding_rate: float
    next_funding_ns: int
    ts_event: int
    ts_recv: int


Message = (
    Quote
    | Trade
    | BookDelta
    | BookSnapshot
    | Bar
    | Forecast
    | IntentNew
    | IntentCancel
    | IntentReplace
    | NewOrder
    | CancelOrder
    | ReplaceOrder
    | OrderAccepted
    | OrderRejected
    | OrderPartiallyFilled
    | OrderFilled
    | OrderCanceled
    | OrderExpired
    | OrderReplaced
    | OrderCancelRejected
    | OrderReplaceRejected
    | RiskEvent
    | Control
    | Heartbeat
    | AlgoProgress
    | TradingStateChanged
    | InstrumentHalted
    | InstrumentResumed
    | ExchangeStatus
    | OrderAnomaly
    | OrderTriggered
    | DriftEvent
    | ModelSwapped
    | ModelRejected
    | ReconciliationEvent
    | Remote
    | OpenOrdersRequest
    | OpenOrderSnapshot
    | AuditEvent
    | ModelRegistered
    | FundingPayment
    | Financing
    | Settlement
    | Liquidation
    | MarginStatus
    | MarkPrice
)

ALL_TYPES: tuple[type[msgspec.Struct], ...] = Message.__args__  # type: ignore[attr-defined]

#: frame type tag -> Struct class
TYPE_BY_TAG: dict[int, type[msgspec.Struct]] = {t.__struct_config__.tag: t for t in ALL_TYPES}

#: Struct class -> frame type tag
TAG_BY_TYPE: dict[type[msgspec.Struct], int] = {t: tag for tag, t in TYPE_BY_TAG.items()}

FILL_TYPES = (OrderPartiallyFilled, OrderFilled)


def tag_of(msg_type: type[msgspec.Struct]) -> int:
    """The ring frame type of a message class."""
    return TAG_BY_TYPE[msg_type]


def _copier(src: type[msgspec.Struct], dst: type[msgspec.Struct], *extra: str) -> Callable:
    """A function ``(s, *extra) -> dst`` that copies every field ``src`` and ``dst`` share, by
    name, and takes the ``extra`` fields as arguments; ``dst``'s other fields keep defaults.

    Generated once at import, as ``dataclasses`` generates ``__init__``: a call costs what a
    hand-written positional constructor does (these are on risk's hot path), with no per-call
    reflection, and a field later added to both structs is carried without an edit. A ``dst``
    field with no default that neither side supplies fails the import."""
    have = set(src.__struct_fields__) | set(extra)
    fields = dst.__struct_fields__
    required = fields[: len(fields) - len(dst.__struct_defaults__)]
    lacking = [f for f in required if f not in have]
    if lacking:
        raise TypeError(f"{dst.__name__} from {src.__name__}: nothing supplies {lacking}")
    args: list[str] = []
    by_name = False  # positional until a field is skipped (left to its default)
    for f in fields:
        if f not in have:
            by_name = True
            continue
        v = f if f in extra else f"s.{f}"
        args.append(f"{f}={v}" if by_name else v)
    code = f"def copy(s, {', '.join(extra)}):\n    return dst({', '.join(args)})\n"
    ns: dict[str, Any] = {"dst": dst}
    exec(code, ns)  # noqa: S102 - generated from the structs' own field names
    fn = ns["copy"]
    fn.__qualname__ = fn.__name__ = f"{dst.__name__}_from_{src.__name__}"
    return fn


_NEW_FROM_INTENT = _copier(IntentNew, NewOrder, "ts_approved")
_CANCEL_FROM_INTENT = _copier(IntentCancel, CancelOrder, "ts_approved")
