"""Reconciliation with a live venue while the engine runs: our record against its REST view.

A websocket user stream loses what happens while it is down, and a venue's account can be
touched behind our back (an order placed by hand, coins moved). So after every (re)connect the
live client fetches the venue's open orders, recent fills and balances (``VenueSnapshot``) and
``compare`` sets them against what this venue's record says (``VenueRecord``: every order sent
or adopted there, every fill passed on, by fill id). What it finds:

- ``missing``: fills of our orders the record never saw (they happened while disconnected):
  applied once — a fill id is never applied twice, whichever of the stream and REST says it first;
- ``ended``: orders open in the record, sent before the snapshot began, not open at the venue,
  with no fill left to explain it: they ended unheard (canceled there) and are closed;
- ``external``: orders open at the venue that the record does not know: adopted, canceled or a
  halt, by ``[venues.X] external_orders``;
- ``stale_open``: orders the record had closed that the venue still has open: canceled there;
- ``balances``: for a spot venue, each base asset's balance against the baseline taken at the
  first reconciliation plus our fills since. A fee may be charged in the received asset (a buy
  pays it in the base asset on Binance without BNB), so a balance up to the fills' fees below
  the expectation is explained; and a client that states such a buy net of its fee in whole
  lots (``engine.venues.ccxt_orders``) leaves up to a lot per fill above it as dust. Anything
  else is not explained, and its text says by how much.

Pure: no I/O, no clock; ``engine.venues.reconciled.ReconciledVenue`` acts on the findings.
Start-up reconciliation against the exec journal is ``engine.reconcile``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec

from engine.instruments import Instrument
from engine.messages import NewOrder, OrderFilled, OrderPartiallyFilled

__all__ = [
    "Findings",
    "VenueRecord",
    "VenueSnapshot",
    "base_asset",
    "compare",
]


class VenueSnapshot(Protocol):
    """The live client's REST view after a (re)connect (``reconcile_snapshot()``).

    ``generation`` increases with every refresh; ``ts_ns`` is ``time.monotonic_ns()`` when the
    refresh began (orders sent after it may not be in it); ``open_orders`` as
    ``ExecutionClient.open_orders`` (``px`` current, ``qty`` open); ``fills`` the recent fills
    with the same ``fill_id`` the user stream gives the same trade; ``balances`` the account's
    ``BalanceReport``s (empty: the venue keeps no cash we can see; the balance check is off)."""

    generation: int
    ts_ns: int
    open_orders: Sequence[NewOrder]
    fills: Sequence[OrderPartiallyFilled]
    balances: Sequence[Any]


@dataclass(slots=True)
class _Ours:
    order: NewOrder
    qty: int  # total quantity (follows replaces)
    filled: int = 0
    is_open: bool = True
    sent_ns: int = 0


@dataclass
class VenueRecord:
    """What this venue has been sent and has told us, as the engine saw it."""

    orders: dict[int, _Ours] = field(default_factory=dict)
    seen_fills: set[int] = field(default_factory=set)
    net_lots: dict[int, int] = field(default_factory=dict)  # per instrument, from our fills
    fee_quote: dict[int, float] = field(default_factory=dict)  # per instrument, fees paid
    fee_base: dict[int, float] = field(default_factory=dict)  # the same fees in base units
    fill_count: dict[int, int] = field(default_factory=dict)  # per instrument
    #: every fill as the balance check counts it: (ts_recv, instrument, signed lots, base fee)
    log: list[tuple[int, int, int, float]] = field(default_factory=list)
    #: the log's entries every later snapshot counts, summed: instrument -> (lots, fee, fills)
    folded: dict[int, tuple[int, float, int]] = field(default_factory=dict)
    baseline: dict[str, float] | None = None  # per asset: the balance our fills do not explain

    def sent(self, order: NewOrder, now_ns: int) -> None:
        if order.client_order_id not in self.orders:
            self.orders[order.client_order_id] = _Ours(order, order.qty, sent_ns=now_ns)

    def fill(self, f: OrderPartiallyFilled, tick_size: float) -> bool:
        """Record a fill; False if its fill id was seen already (drop it: applied once)."""
        if f.fill_id in self.seen_fills:
            return False
        self.seen_fills.add(f.fill_id)
        o = self.orders.get(f.client_order_id)
        if o is not None:
            o.filled += f.fill_qty
            if type(f) is OrderFilled or o.filled >= o.qty:
                o.is_open = False
        iid = f.instrument_id
        self.net_lots[iid] = self.net_lots.get(iid, 0) + f.side * f.fill_qty
        self.fill_count[iid] = self.fill_count.get(iid, 0) + 1
        fee_base = 0.0
        if f.fee:
            self.fee_quote[iid] = self.fee_quote.get(iid, 0.0) + f.fee
            px = f.fill_px * tick_size
            if px > 0:
                fee_base = abs(f.fee) / px
                self.fee_base[iid] = self.fee_base.get(iid, 0.0) + fee_base
        self.log.append((f.ts_recv, iid, f.side * f.fill_qty, fee_base))
        return True

    def close(self, coid: int) -> bool:
        """The order ended; False if it was not open."""
        o = self.orders.get(coid)
        if o is None or not o.is_open:
            return False
        o.is_open = False
        return True

    def replaced(self, coid: int, px: int, open_qty: int) -> None:
        o = self.orders.get(coid)
        if o is not None and o.is_open:
            o.qty = o.filled + open_qty
            o.order = msgspec.structs.replace(o.order, px=px)

    def open_ids(self) -> list[int]:
        return [c for c, o in self.orders.items() if o.is_open]


@dataclass
class Findings:
    missing: list[OrderPartiallyFilled] = field(default_factory=list)
    ended: list[int] = field(default_factory=list)  # coids closed as canceled
    external: list[NewOrder] = field(default_factory=list)
    stale_open: list[NewOrder] = field(default_factory=list)
    foreign_fills: list[OrderPartiallyFilled] = field(default_factory=list)  # not our orders
    balance_errors: list[str] = field(default_factory=list)

    @property
    def differences(self) -> int:
        return len(self.missing) + len(self.ended) + len(self.external) + len(self.stale_open)


def base_asset(ins: Instrument) -> str | None:
    """``BTC`` of ``BTC/USDT`` (a ccxt unified symbol); None for a symbol without a base."""
    sym = ins.symbol
    return sym.split("/", 1)[0] if "/" in sym else None


def compare(
    rec: VenueRecord,
    snap: VenueSnapshot,
    instruments: Iterable[Instrument],
    in_flight: set[int] = frozenset(),  # type: ignore[assignment]
) -> Findings:
    """What differs between ``rec`` and ``snap`` (see the module docstring). ``in_flight``:
    our orders whose submit is not yet answered (left alone: the venue may not show them yet).
    Balances are compared as if the missing fills were applied."""
    out = Findings()
    fresh = sorted((f for f in snap.fills if f.fill_id not in rec.seen_fills), key=_fid)
    for f in fresh:
        (out.missing if f.client_order_id in rec.orders else out.foreign_fills).append(f)
    venue_open = {o.client_order_id: o for o in snap.open_orders}
    filled_now: dict[int, int] = {}
    for f in out.missing:
        filled_now[f.client_order_id] = filled_now.get(f.client_order_id, 0) + f.fill_qty
    for coid, o in rec.orders.items():
        if not o.is_open or coid in venue_open or coid in in_flight or o.sent_ns > snap.ts_ns:
            continue
        if o.filled + filled_now.get(coid, 0) >= o.qty:
            continue  # the missing fills end it
        out.ended.append(coid)
    for coid, v in venue_open.items():
        mine = rec.orders.get(coid)
        if mine is None:
            out.external.append(v)
        elif not mine.is_open and coid not in filled_now:
            out.stale_open.append(v)
    if snap.balances:
        out.balance_errors = _balances(rec, snap, list(instruments), out.missing)
    return out


def _fid(f: OrderPartiallyFilled) -> int:
    return f.fill_id


def _balances(
    rec: VenueRecord,
    snap: VenueSnapshot,
    instruments: list[Instrument],
    missing: list[OrderPartiallyFilled],
) -> list[str]:
    """The base assets whose venue balance our fills do not explain (sets the baseline the
    first time). Fills are counted in base units (lots x lot size), those the record received
    by the time the snapshot began (``ts_recv <= ts_ns``: a later one is not in its balances)
    and the missing ones it shows."""
    totals = {str(b.currency).upper(): float(b.total) for b in snap.balances}
    asset = {i.instrument_id: (base_asset(i) or "").upper() for i in instruments}
    lot = {i.instrument_id: i.lot_size for i in instruments}
    tick = {i.instrument_id: i.tick_size for i in instruments}
    expect: dict[str, float] = {}
    fees: dict[str, float] = {}
    dust: dict[str, float] = {}
    tol: dict[str, float] = {}
    for iid, a in asset.items():
        if a:
            expect.setdefault(a, 0.0)
            fees.setdefault(a, 0.0)
            dust.setdefault(a, 0.0)
            tol[a] = min(tol.get(a, lot[iid] / 2), lot[iid] / 2)  # rounding: half a lot
    _fold(rec, snap.ts_ns)  # snapshots only move forward: what this one counts, all later do
    counted = [(iid, lots, fee, n) for iid, (lots, fee, n) in rec.folded.items()] + [
        (f.instrument_id, f.side * f.fill_qty, _fee_base(f, tick), 1) for f in missing
    ]
    for iid, lots, fee, n in counted:
        a = asset.get(iid)
        if not a:
            continue
        expect[a] += lots * lot[iid]
        fees[a] += fee
        # a client that states a buy net of its base-asset fee rounds it down to whole lots:
        # up to one lot per fill stays at the venue as dust
        dust[a] += n * lot[iid]
    if rec.baseline is None:
        rec.baseline = {a: totals.get(a, 0.0) - e for a, e in expect.items()}
        return []
    errors = []
    for a, e in sorted(expect.items()):
        have = totals.get(a, 0.0)
        base = rec.baseline.get(a, 0.0)
        diff = have - base - e  # what our fills do not explain
        if -fees[a] - tol[a] <= diff <= dust[a] + tol[a] + 1e-12:
            continue
        errors.append(
            f"{a}: {have:.8g} at the venue, {base + e:.8g} expected "
            f"(baseline {base:.8g} + our fills {e:+.8g}; fees up to {fees[a]:.8g} in {a}): "
            f"{diff:+.8g} unexplained"
        )
    return errors


def _fold(rec: VenueRecord, upto_ns: int) -> None:
    """Sum the log's entries received by ``upto_ns`` into ``folded`` (a long run's record
    stays the size of its instruments, not of its fills)."""
    keep = []
    for e in rec.log:
        if e[0] > upto_ns:
            keep.append(e)
            continue
        lots, fee, n = rec.folded.get(e[1], (0, 0.0, 0))
        rec.folded[e[1]] = (lots + e[2], fee + e[3], n + 1)
    rec.log = keep


def _fee_base(f: OrderPartiallyFilled, tick: dict[int, float]) -> float:
    px = f.fill_px * tick.get(f.instrument_id, 0.0)
    return abs(f.fee) / px if f.fee and px > 0 else 0.0
