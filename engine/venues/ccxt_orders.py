"""The in-flight order table of a real venue: ccxt order and trade dicts → engine events, once.

Why it exists (Hummingbot's in-flight order tracker, in our event vocabulary): a real venue tells
us about an order several times and in any order — the REST answer to the submit, the user
stream's order updates and trades, and the REST backfill after a reconnect. This table turns all
of them into exactly one sequence of engine events per order, and it is pure logic (no network,
no clock: ``now_ns`` comes in), so every rule below is tested without a server.

The rules, each the fix of a failure reported against other engines:
- Client order ids survive restarts: the venue's id is derived from our engine-wide
  ``client_order_id`` and a per-engine prefix (``venue_client_id``), so a restarted exec
  recognises its own orders at the venue (``parse_client_id``) and never sends one twice.
- A submit that timed out is UNKNOWN, never rejected: only a query, the user stream or
  reconciliation resolves it (``resolve_missing`` once the venue provably does not have it).
- Fills come from trades, deduplicated by trade id; an order update only raises the order's
  cumulative ``filled`` (monotonic: an older update never lowers it) and closes the order once
  the trades account for it. Leaves are ``amount - filled``, never the venue's ``remaining``.
- A fee charged in the asset received (the base on a buy) is not ours: the fill's quantity is
  the net lots received (rounded down), so "sell everything bought" sells what we hold. Every
  fee is kept with its currency; the event's ``fee`` is its quote-currency value.
- Fill ids survive restarts too: ``fill_id`` = venue time in ms x 1e6 + a hash of the venue's
  trade id, so ids grow with time and the same trade has the same id after a restart.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal
from enum import IntEnum
from typing import Any

from engine.instruments import Instrument
from engine.messages import (
    Liquidity,
    NewOrder,
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderFilled,
    OrderPartiallyFilled,
    OrderRejected,
    OrderType,
    Side,
    TimeInForce,
)
from engine.order_states import OrderStatus
from engine.venues.reports import OrderStatusReport

__all__ = [
    "FeeRecord",
    "OrderTable",
    "Phase",
    "Tracked",
    "fill_id_for",
    "order_prefix",
    "parse_client_id",
    "venue_client_id",
    "venue_order_int",
]

_ZERO = Decimal(0)
_INT64 = 1 << 63
_MAX_MS = (_INT64 - 1) // 1_000_000  # the last venue millisecond an int64 of ns holds
_B36 = "0123456789abcdefghijklmnopqrstuvwxyz"
_CLOSED = {"closed", "canceled", "cancelled", "expired", "rejected"}


# --- ids --------------------------------------------------------------------------------------
def _b36(n: int) -> str:
    if n < 0:
        raise ValueError(f"client order id must be >= 0, got {n}")
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = _B36[r] + out
        if not n:
            return out


def order_prefix(engine_id: str) -> str:
    """Four letters/digits that mark this engine's orders at a venue (a hash of the engine id:
    the same engine always gets the same prefix; another engine on the account a different one
    with odds 1 in 36^4). Starts with a letter, so no venue takes it for a number."""
    h = zlib.crc32(engine_id.encode()) % (26 * 36**3)
    return _B36[10 + h // 36**3] + _b36(h % 36**3).rjust(3, "0")


def venue_client_id(prefix: str, client_order_id: int, gen: int = 0) -> str:
    """The venue's client order id: prefix + base-36 id (+ ``_`` + generation for the new order
    of a cancel-replace). At most 18 characters for ids below 2^63 (Kraken's limit; Binance
    allows 36), letters, digits and ``_`` only (every venue's allowed set)."""
    base = prefix + _b36(client_order_id)
    return base if gen == 0 else f"{base}_{_b36(gen)}"


def parse_client_id(prefix: str, cid: object) -> tuple[int, int] | None:
    """(client_order_id, generation) of one of our venue ids; None for anyone else's."""
    if not isinstance(cid, str) or not cid.startswith(prefix) or len(cid) <= len(prefix):
        return None
    body, _, gen = cid[len(prefix) :].partition("_")
    if not _b36_word(body) or (gen and not _b36_word(gen)):
        return None  # int(..., 36) would take " 7", "+7" or "1_0" too: never ours
    coid, g = int(body, 36), int(gen, 36) if gen else 0
    return (coid, g) if coid < _INT64 and g < _INT64 else None  # ours are int64 on the wire


def _b36_word(s: str) -> bool:
    return 0 < len(s) <= 13 and s.isascii() and s.isalnum()  # 13 digits hold any int64


def venue_order_int(venue_order_id: object) -> int:
    """The venue's order id as the int events carry: itself when numeric, else a stable hash."""
    s = str(venue_order_id or "")
    if s.isdigit() and int(s) < 2**63:
        return int(s)
    return int.from_bytes(zlib.crc32(s.encode()).to_bytes(4, "big"), "big") if s else 0


def fill_id_for(ts_ms: int, trade_id: str) -> int:
    """A fill id that grows with venue time and is the same for the same trade after a
    restart (see the module docstring; ``OrderTable.fills_since`` compares by millisecond)."""
    return max(ts_ms, 0) * 1_000_000 + zlib.crc32(trade_id.encode()) % 1_000_000


class Malformed(ValueError):
    """A venue's dict with a number that is no number (counted in ``malformed``, ignored)."""


def _dec(v: object) -> Decimal:
    """A venue's number as a finite Decimal (None and "" are 0); ``Malformed`` otherwise."""
    if v is None or v == "":
        return _ZERO
    if isinstance(v, bool):
        raise Malformed(f"not a number: {v!r}")
    try:
        d = v if isinstance(v, Decimal) else Decimal(str(v))
    except ArithmeticError:  # decimal.InvalidOperation: "abc"
        raise Malformed(f"not a number: {v!r}") from None
    if not d.is_finite():
        raise Malformed(f"not a finite number: {v!r}")
    return d


# --- the table ------------------------------------------------------------------------------
class Phase(IntEnum):
    """Where an order stands between us and the venue."""

    PENDING = 1  # the submit is on its way, not answered
    UNKNOWN = 2  # the submit timed out or failed on the network: the venue may have it
    OPEN = 3  # the venue acknowledged it (it may be partly filled)
    CLOSED = 4  # filled, canceled, expired or rejected: no event follows


@dataclass(slots=True)
class FeeRecord:
    """One fee in its own currency (``quote_value`` what it is worth in the quote currency,
    0 when charged in a third currency we cannot value here)."""

    trade_id: str
    currency: str
    cost: Decimal
    quote_value: Decimal


@dataclass(slots=True)
class Tracked:
    """One order of ours. ``amount`` is the venue's total size in base units across
    cancel-replace generations (filled + open); ``filled`` the part our applied trades account
    for, ``venue_filled`` the most any order update said, per venue order id."""

    order: NewOrder
    inst: Instrument
    base: str
    quote: str
    cid: str
    phase: Phase
    amount: Decimal
    px: int
    sent_ns: int = 0
    gen: int = 0
    venue_ids: list[str] = field(default_factory=list)
    vid_gen: dict[str, int] = field(default_factory=dict)  # venue order id -> our generation
    venue_filled: dict[str, Decimal] = field(default_factory=dict)
    trade_filled: dict[str, Decimal] = field(default_factory=dict)
    filled: Decimal = _ZERO
    fee_base: Decimal = _ZERO
    fee_unreported: Decimal = _ZERO
    net_lots: int = 0
    trade_ids: set[str] = field(default_factory=set)
    fees: list[FeeRecord] = field(default_factory=list)
    close_status: str = ""  # the venue closed it; the close event waits for its fills
    close_reason: str = ""
    final: str = ""  # what closed it, once CLOSED: filled / canceled / expired / rejected
    accepted: bool = False
    queried_at: float = 0.0  # monotonic s of the last query of an UNKNOWN order

    @property
    def venue_id(self) -> str:
        return self.venue_ids[-1] if self.venue_ids else ""

    def leaves_lots(self) -> int:
        if self.phase == Phase.CLOSED:
            return 0
        return max(0, self.inst.qty_to_lots(self.amount - self.filled))

    def missing(self) -> Decimal:
        """What order updates say is filled that no applied trade accounts for yet."""
        return max(_ZERO, sum(self.venue_filled.values(), _ZERO) - self.filled)


def _symbol_parts(symbol: str) -> tuple[str, str]:
    base, _, quote = symbol.partition("/")
    return base, quote.split(":")[0]


class OrderTable:
    """Our orders at one venue (see the module docstring). Every ``on_*`` returns the engine
    events the input caused, in order; the caller hands them out from ``poll``."""

    def __init__(self, venue: str, prefix: str, instruments: Iterable[Instrument]) -> None:
        self.venue = venue
        self.prefix = prefix
        self.by_symbol = {i.symbol: i for i in instruments}
        self.orders: dict[int, Tracked] = {}
        self.by_vid: dict[str, int] = {}
        #: every fill event, in the order applied (``fills_since``)
        self.fills: list[OrderPartiallyFilled] = []
        #: orders / trades at the venue that are not ours (for reconciliation)
        self.external_orders: dict[str, dict[str, Any]] = {}
        self.external_trades: dict[str, dict[str, Any]] = {}
        #: open venue orders of ours the table will not track (venue order id -> symbol): an
        #: UNKNOWN submit given up as rejected that turned up after all, or a cancel-replace's
        #: new order after the replace was given up. The client cancels them (fail closed).
        self.strays: dict[str, str] = {}
        #: counters (``stats``)
        self.duplicate_trades = 0
        self.stale_updates = 0
        self.late_trades = 0
        self.incomplete_trades = 0  # trades without an id or amount (ignored)
        self.malformed = 0  # orders / trades with a number that is none (ignored)
        self.unknown_resolved = 0
        self.fee_rounding_closes = 0

    # --- our requests -------------------------------------------------------------------------
    def add(self, order: NewOrder, inst: Instrument, now_ns: int) -> Tracked:
        """Track a new order before its submit leaves (PENDING)."""
        base, quote = _symbol_parts(inst.symbol)
        t = Tracked(
            order=order,
            inst=inst,
            base=base,
            quote=quote,
            cid=venue_client_id(self.prefix, order.client_order_id),
            phase=Phase.PENDING,
            amount=Decimal(order.qty) * Decimal(str(inst.lot_size)),
            px=order.px,
            sent_ns=now_ns,
        )
        self.orders[order.client_order_id] = t
        return t

    def get(self, coid: int) -> Tracked | None:
        return self.orders.get(coid)

    def mark_unknown(self, coid: int) -> None:
        t = self.orders.get(coid)
        if t is not None and t.phase == Phase.PENDING:
            t.phase = Phase.UNKNOWN

    def reject(self, coid: int, reason: str, now_ns: int) -> list[object]:
        """The venue refused the submit outright (only a PENDING order: an UNKNOWN one may
        still be at the venue, ``resolve_missing`` decides that)."""
        t = self.orders.get(coid)
        if t is None or t.phase != Phase.PENDING:
            return []
        return [self._close_rejected(t, reason, now_ns)]

    def resolve_missing(self, coid: int, reason: str, now_ns: int) -> list[object]:
        """An UNKNOWN order the venue provably never took (not found after the venue's own
        window for accepting it): rejected, once."""
        t = self.orders.get(coid)
        if t is None or t.phase != Phase.UNKNOWN:
            return []
        self.unknown_resolved += 1
        return [self._close_rejected(t, reason, now_ns)]

    def _close_rejected(self, t: Tracked, reason: str, now_ns: int) -> OrderRejected:
        t.phase, t.final = Phase.CLOSED, "rejected"
        return OrderRejected.for_order(t.order, reason, now_ns, now_ns)

    def new_generation(self, coid: int, new_open: Decimal, px: int) -> tuple[int, Decimal, int]:
        """A cancel-replace is about to send a new venue order: the order's next client id,
        size and price, taken before the request leaves (the stream may tell of the new order
        before the request's answer does). Returns what to pass ``undo_generation``."""
        t = self.orders[coid]
        before = (t.gen, t.amount, t.px)
        t.gen += 1
        t.cid = venue_client_id(self.prefix, coid, t.gen)
        t.amount = t.filled + new_open
        t.px = px
        return before

    def undo_generation(self, coid: int, before: tuple[int, Decimal, int]) -> None:
        """The cancel-replace was refused: the order keeps its terms."""
        t = self.orders[coid]
        t.gen, t.amount, t.px = before
        t.cid = venue_client_id(self.prefix, coid, t.gen)

    def amended(self, coid: int, new_open: Decimal, px: int) -> None:
        """An amend in place (or a cancel-replace) took effect: the order's new terms."""
        t = self.orders[coid]
        t.amount = t.filled + new_open
        t.px = px

    # --- the venue's word -----------------------------------------------------------------------
    def find(self, cid: object, vid: object) -> Tracked | None:
        """Ours by venue order id, else by our client id."""
        coid = self.by_vid.get(str(vid)) if vid else None
        if coid is None:
            parsed = parse_client_id(self.prefix, cid)
            coid = parsed[0] if parsed else None
        return self.orders.get(coid) if coid is not None else None

    def on_order(self, o: Mapping[str, Any], now_ns: int) -> list[object]:
        """A ccxt order dict (REST answer, user stream or backfill). One whose ``filled`` is no
        number changes nothing (``malformed``): every number is read before anything changes."""
        cid, vid = o.get("clientOrderId"), str(o.get("id") or "")
        t = self.find(cid, vid)
        if t is None:
            if vid:
                self.external_orders[vid] = dict(o)
            return []
        try:
            filled = _dec(o.get("filled"))
        except Malformed:
            self.malformed += 1
            return []
        parsed = parse_client_id(self.prefix, cid)
        gen = t.vid_gen.get(vid, parsed[1] if parsed else t.gen)
        current = gen == t.gen
        if vid:
            self._register(t, vid, gen)
        status = str(o.get("status") or "open")
        if status not in _CLOSED and vid and (gen > t.gen or t.final == "rejected"):
            self.strays[vid] = str(o.get("symbol") or t.inst.symbol)  # see ``strays``
        evs: list[object] = []
        if t.phase in (Phase.PENDING, Phase.UNKNOWN):
            if status == "rejected":
                return [self._close_rejected(t, _reason(o, "rejected by the venue"), now_ns)]
            evs.append(self._accept(t, vid, o, now_ns))
        if t.phase == Phase.CLOSED:
            return evs
        if vid:
            if filled < t.venue_filled.get(vid, _ZERO):
                self.stale_updates += 1
            t.venue_filled[vid] = max(filled, t.venue_filled.get(vid, _ZERO))
        if current and status in _CLOSED:
            t.close_status, t.close_reason = status, _reason(o, status)
        evs += self._maybe_close(t, now_ns, _ts_ns(o, now_ns))
        return evs

    def _accept(self, t: Tracked, vid: str, o: Mapping[str, Any], now_ns: int) -> OrderAccepted:
        t.phase, t.accepted = Phase.OPEN, True
        if vid:
            self._register(t, vid, t.gen)
        ts = _ts_ns(o, now_ns)
        return OrderAccepted.for_order(t.order, venue_order_int(vid), ts, now_ns)

    def expect_venue_id(self, coid: int, vid: str) -> None:
        """The venue order id of ``coid``'s current generation, known before the venue answers
        (a venue whose order id is the hash of what we sign: Polymarket). Its updates find the
        order from then on, a timed-out submit included."""
        t = self.orders[coid]
        self._register(t, vid, t.gen)

    def _register(self, t: Tracked, vid: str, gen: int) -> None:
        """Map a venue order id to ours; only the current generation's becomes ``venue_id``
        (an older one's trades still count)."""
        if vid not in self.by_vid:
            self.by_vid[vid] = t.order.client_order_id
            t.vid_gen[vid] = gen
            if gen == t.gen:
                t.venue_ids.append(vid)

    def on_trade(self, tr: Mapping[str, Any], now_ns: int) -> list[object]:
        """A ccxt trade dict of ours (user stream or backfill): one fill, once."""
        tid, vid = str(tr.get("id") or ""), str(tr.get("order") or "")
        t = self.find(tr.get("clientOrderId"), vid)
        if t is None:
            self.external_trades[tid] = dict(tr)
            return []
        if tid in t.trade_ids:
            self.duplicate_trades += 1
            return []
        try:  # every number first: a malformed trade changes nothing
            amt, px, fees = _dec(tr.get("amount")), _dec(tr.get("price")), _fees_of(tr)
            t.inst.px_to_ticks(px), t.inst.qty_to_lots(t.filled + amt)  # they fit the wire
        except ValueError:  # Malformed, or beyond an int64 of ticks / lots
            self.malformed += 1  # not marked seen: a well-formed copy may follow (REST)
            return []
        if amt <= 0 or not tid:
            self.incomplete_trades += 1  # not marked seen: a complete copy may follow (REST)
            return []
        t.trade_ids.add(tid)
        if t.phase == Phase.CLOSED:
            self.late_trades += 1  # reconciliation sees it in the fees/fills it compares
            return []
        evs: list[object] = []
        if t.phase in (Phase.PENDING, Phase.UNKNOWN):
            evs.append(self._accept(t, vid, tr, now_ns))
        key = vid or t.venue_id
        t.trade_filled[key] = t.trade_filled.get(key, _ZERO) + amt
        t.venue_filled[key] = max(t.venue_filled.get(key, _ZERO), t.trade_filled[key])
        t.filled += amt
        self._fees(t, tid, fees, px)
        ev = self._fill_event(t, tid, tr, px, now_ns)
        if ev is not None:
            evs.append(ev)
        elif t.filled >= t.amount:  # the last trade vanished in the fee's rounding: close it
            t.close_status, t.close_reason = "closed", "filled (the rest went to the fee)"
        evs += self._maybe_close(t, now_ns, _ts_ns(tr, now_ns))
        return evs

    def _fees(self, t: Tracked, tid: str, fees: list[tuple[Decimal, str]], px: Decimal) -> None:
        for cost, cur in fees:
            if not cost:
                continue
            value = cost * px if cur == t.base else cost if cur == t.quote else _ZERO
            if cur == t.base and t.order.side == Side.BUY:
                t.fee_base += cost
            t.fees.append(FeeRecord(tid, cur, cost, value))
            t.fee_unreported += value

    def _fill_event(
        self, t: Tracked, tid: str, tr: Mapping[str, Any], px: Decimal, now_ns: int
    ) -> OrderPartiallyFilled | None:
        lot = Decimal(str(t.inst.lot_size))
        net = ((t.filled - t.fee_base) / lot).to_integral_value(rounding=ROUND_DOWN)
        qty = int(net) - t.net_lots
        done = t.filled >= t.amount
        if qty <= 0:
            return None  # within the fee's rounding: the next fill (or the close) carries it
        t.net_lots += qty
        ts = _ts_ns(tr, now_ns)
        cls = OrderFilled if done else OrderPartiallyFilled
        liq = Liquidity.MAKER if tr.get("takerOrMaker") == "maker" else Liquidity.TAKER
        fee, t.fee_unreported = float(t.fee_unreported), _ZERO
        o = t.order
        ev = cls(
            o.client_order_id,
            venue_order_int(tr.get("order") or t.venue_id),
            o.instrument_id,
            o.side,
            t.inst.px_to_ticks(px),
            qty,
            t.net_lots,
            t.leaves_lots() if not done else 0,
            fee,
            int(liq),
            fill_id_for(ts // 1_000_000, tid),
            o.ts_origin,
            ts,
            now_ns,
        )
        if done:
            t.phase, t.final = Phase.CLOSED, "filled"
        self.fills.append(ev)
        return ev

    def _maybe_close(self, t: Tracked, now_ns: int, ts: int) -> list[object]:
        """Close an order the venue closed once its trades are all applied."""
        if t.phase == Phase.CLOSED or not t.close_status or t.missing() > 0:
            return []
        o, leaves = t.order, t.leaves_lots()
        t.phase = Phase.CLOSED
        if t.close_status == "expired":
            t.final = "expired"
            return [
                OrderExpired(o.client_order_id, o.instrument_id, leaves, o.ts_origin, ts, now_ns)
            ]
        if t.close_status == "closed" and t.filled >= t.amount:
            self.fee_rounding_closes += 1  # the last trade was inside the fee's rounding
        t.final = "canceled"
        why = t.close_reason
        return [
            OrderCanceled(o.client_order_id, o.instrument_id, leaves, why, o.ts_origin, ts, now_ns)
        ]

    def synthesize_missing(
        self, coid: int, px: Decimal, now_ns: int, ts_ms: int | None = None
    ) -> list[object]:
        """The venue's order says more is filled than any trade it lists (a venue without
        per-trade history, or trades aged out): one fill for the difference at ``px`` (the
        order's average), under an id derived from the order, its cumulative fill and the
        venue's time of its last update ``ts_ms`` (so a restarted exec derives the same)."""
        t = self.orders.get(coid)
        if t is None or t.phase == Phase.CLOSED or t.missing() <= 0:
            return []
        total = sum(t.venue_filled.values(), _ZERO)
        tid = f"{t.venue_id}:filled:{total}"
        tr = {"id": tid, "order": t.venue_id, "amount": t.missing(), "price": px}
        tr["timestamp"] = ts_ms
        return self.on_trade(tr, now_ns)

    # --- queries --------------------------------------------------------------------------------
    def open(self) -> list[Tracked]:
        """Orders that may be working at the venue (UNKNOWN ones included: they may be)."""
        return [t for t in self.orders.values() if t.phase != Phase.CLOSED]

    def fills_since(self, fill_id: int = 0) -> list[OrderPartiallyFilled]:
        """Fills after ``fill_id``: every fill in its millisecond or later, except itself
        (ids in one millisecond are hash-ordered; the caller drops the ones it has)."""
        if not fill_id:
            return list(self.fills)
        ms = fill_id // 1_000_000
        return [f for f in self.fills if f.fill_id // 1_000_000 >= ms and f.fill_id != fill_id]

    def report(self, coid: int) -> OrderStatusReport | None:
        t = self.orders.get(coid)
        if t is None:
            return None
        o = t.order
        return OrderStatusReport(
            venue=self.venue,
            client_order_id=coid,
            instrument_id=o.instrument_id,
            side=o.side,
            order_type=o.order_type,
            status=int(_status(t)),
            px=t.px,
            open_qty=t.leaves_lots(),
            filled_qty=t.net_lots,
            venue_order_id=venue_order_int(t.venue_id),
        )

    def adopt(self, o: Mapping[str, Any], now_ns: int) -> Tracked | None:
        """Rebuild one of OUR orders from the venue's dict (a restarted exec): tracked as
        acknowledged, nothing emitted; its trades and updates then apply as usual."""
        parsed = parse_client_id(self.prefix, o.get("clientOrderId"))
        inst = self.by_symbol.get(str(o.get("symbol")))
        if parsed is None or inst is None or parsed[0] in self.orders:
            return None
        coid, gen = parsed
        side = Side.BUY if o.get("side") == "buy" else Side.SELL
        try:
            px = inst.px_to_ticks(_dec(o.get("price"))) if o.get("price") else 0
            amount = _dec(o.get("amount"))
            qty = inst.qty_to_lots(amount)
        except ValueError:  # Malformed, or beyond an int64 of ticks / lots
            self.malformed += 1
            return None
        order = NewOrder(
            client_order_id=coid,
            strategy_id=coid >> 32,
            instrument_id=inst.instrument_id,
            side=int(side),
            order_type=int(OrderType.LIMIT if px else OrderType.MARKET),
            tif=int(TimeInForce.GTC),
            px=px,
            qty=qty,
            ts_origin=now_ns,
            ts_approved=now_ns,
        )
        t = self.add(order, inst, now_ns)
        t.gen, t.cid = gen, str(o.get("clientOrderId"))
        t.phase, t.accepted = Phase.OPEN, True
        vid = str(o.get("id") or "")
        if vid:
            self._register(t, vid, gen)
        return t


def _fees_of(tr: Mapping[str, Any]) -> list[tuple[Decimal, str]]:
    """(cost, currency) of each fee of a ccxt trade (``Malformed`` if one is no fee)."""
    fees = tr.get("fees") or ([tr["fee"]] if tr.get("fee") else [])
    if not isinstance(fees, list) or not all(isinstance(f, Mapping) for f in fees):
        raise Malformed(f"fees {fees!r}")
    return [(_dec(f.get("cost")), str(f.get("currency") or "")) for f in fees]


def _status(t: Tracked) -> OrderStatus:
    if t.phase == Phase.CLOSED:
        return {
            "filled": OrderStatus.FILLED,
            "expired": OrderStatus.EXPIRED,
            "rejected": OrderStatus.REJECTED,
        }.get(t.final, OrderStatus.CANCELED)
    if t.phase == Phase.OPEN:
        return OrderStatus.PARTIALLY_FILLED if t.net_lots else OrderStatus.ACCEPTED
    return OrderStatus.SUBMITTED


def _reason(o: Mapping[str, Any], default: str) -> str:
    info = o.get("info")
    if isinstance(info, Mapping):
        for k in ("reject_reason", "cancel_reason", "reason", "r"):
            v = info.get(k)
            if v and v != "NONE":
                return f"{default}: {v}"
    return default


def _ts_ns(d: Mapping[str, Any], now_ns: int) -> int:
    ts = d.get("lastUpdateTimestamp") or d.get("timestamp")
    ok = isinstance(ts, (int, float)) and not isinstance(ts, bool) and 0 < ts <= _MAX_MS
    return int(ts) * 1_000_000 if ok else now_ns  # NaN, inf and beyond int64 ns: not a time
