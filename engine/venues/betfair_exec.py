"""Live execution at Betfair: placeOrders / cancelOrders / replaceOrders, the order stream,
listCurrentOrders and listClearedOrders, settlement.

Exec's loop never waits on the network: ``submit`` / ``cancel`` / ``replace`` check and queue
(the checks a bet would fail at the venue — a price off the ladder, an order type or time in
force Betfair has not, a suspended market — are refused here at once); one worker thread sends
the requests in order; the order stream (``orderSubscription`` on a ``StreamWorker``) and the
answers go through ``OrderBook`` (``betfair_orders``), which makes each fill and each end once;
``poll`` hands the events out. A placement that gets no answer is UNKNOWN, never resent: the
periodic check (``rest_poll_s``: listCurrentOrders by our ``customerOrderRef``) settles it, and
also books any fill the stream missed. TOO_MANY_REQUESTS is waited out and the call sent again
(an error answer means the venue did nothing). Each listCurrentOrders also makes
reconciliation's view (``reconcile_snapshot``: our working bets and every fill), so exec wraps
this client in ``engine.venues.reconciled.ReconciledVenue`` like the other live venues.

Mapping (docs/betfair.md): BUY = BACK, SELL = LAY, LIMIT orders only; GTC -> persistence
``persistence`` (LAPSE: the unmatched part lapses when the market turns in-play or closes),
FOK -> timeInForce FILL_OR_KILL, IOC -> FILL_OR_KILL with minFillSize of one lot. A price
change is replaceOrders (a new bet at the new odds for the remainder), a smaller stake
cancelOrders with sizeReduction; a larger stake is refused (Betfair cannot add to a bet).

Suspension: an ``ExchangeStatus`` HALTED for a selection (from the market stream, through
``on_market_data``) refuses new orders and replaces on it until OPEN. Settlement: when the
order stream says a market closed (or its ExchangeStatus says "settled"), listClearedOrders
(SETTLED and VOIDED bets, and the market's commission) becomes the ``Settlement``s of each
selection we hold (``betfair_cleared``: RESOLVED with outcome 1 / 0, VOID for a voided
selection, and one VOID per voided bet of a selection whose other bets settle).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from typing import Any

import msgspec

from engine.betting import betfair_ladder_ok
from engine.enums import ExchangeStatusKind, OrderType, Side, TimeInForce
from engine.instruments import Instrument
from engine.messages import (
    CancelOrder,
    CancelRejectReason,
    ExchangeStatus,
    NewOrder,
    OrderCancelRejected,
    OrderPartiallyFilled,
    OrderRejected,
    OrderReplaced,
    OrderReplaceRejected,
    ReplaceOrder,
    ReplaceRejectReason,
)
from engine.venue_state import external_orders_policy
from engine.venues.base import VenueEvent
from engine.venues.betfair_cleared import settlements
from engine.venues.betfair_orders import BetState, OrderBook, Tracked, order_prefix, parse_ref
from engine.venues.betfair_session import BetfairApi, StreamSocket, StreamWorker, api_error_code
from engine.venues.betfair_wire import odds, settlement_of, split_symbol, stake
from engine.venues.live_view import LiveView
from engine.venues.reports import BalanceReport, OrderStatusReport, StatusReports

__all__ = ["BetfairExecutionClient"]

log = logging.getLogger(__name__)

_D = Decimal


def _bet(d: Mapping[str, Any], complete: bool | None = None) -> BetState:
    """A bet from an order-stream ``uo`` or a listCurrentOrders row."""
    if "sm" in d:  # the order stream's short names
        return BetState(
            str(d["id"]),
            _D(str(d.get("sm", 0))),
            _D(str(d.get("avp", 0))),
            _D(str(d.get("sr", 0))),
            _D(str(d.get("sc", 0))),
            _D(str(d.get("sl", 0))),
            _D(str(d.get("sv", 0))),
            d.get("status") == "EC" if complete is None else complete,
        )
    return BetState(
        str(d["betId"]),
        _D(str(d.get("sizeMatched", 0))),
        _D(str(d.get("averagePriceMatched", 0))),
        _D(str(d.get("sizeRemaining", 0))),
        _D(str(d.get("sizeCancelled", 0))),
        _D(str(d.get("sizeLapsed", 0))),
        _D(str(d.get("sizeVoided", 0))),
        d.get("status") == "EXECUTION_COMPLETE" if complete is None else complete,
    )


class BetfairExecutionClient(StatusReports):
    """``engine.venues.base.ExecutionClient`` for Betfair (see the module docstring).

    Settings: ``rest_url`` / ``stream_url`` / ``stream_ca_file`` (``betfair_session``),
    ``persistence``, ``rest_poll_s``, ``unknown_window_s`` (how long an unanswered placement
    may stay unknown before it is taken as not placed), ``rate_limit_retries``,
    ``start_timeout_s``, ``heartbeat_ms``, ``currency``, ``engine_id`` / ``order_prefix``."""

    live = True
    #: a bet is no holding of an asset: start-up reconciliation compares positions
    #: (``ReconciledVenue.checks_balances``)
    holds_balances = False

    def __init__(
        self,
        name: str,
        instruments: Iterable[Instrument],
        settings: Mapping[str, Any],
        credentials: Any,
        *,
        start: bool = True,
    ) -> None:
        s = dict(settings)
        self.name, self.settings = name, s
        self._insts = {i.instrument_id: i for i in instruments}
        self._by_sel = {split_symbol(i.symbol): i for i in self._insts.values()}
        prefix = s.get("order_prefix") or order_prefix(str(s.get("engine_id") or name))
        # fill ids from the wall clock (us): Betfair gives fills no ids, and reconciliation
        # drops a fill id it has seen, so a restarted client must never reuse one
        self.book = OrderBook(name, str(prefix), first_fill_id=time.time_ns() // 1000)
        self.api = BetfairApi(credentials, s)
        self._lock = threading.RLock()
        self._out: deque[object] = deque()
        self._jobs: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._halted: dict[int, str] = {}
        self._external = external_orders_policy(s)
        self._venue_halt = ""  # why the whole venue is halted ("": it is not)
        self._external_seen: set[str] = set()
        self._positions: dict[int, int] = {}
        self._settled: set[int] = set()
        self._settling: set[str] = set()
        self._balances: list[BalanceReport] = []
        self._view: LiveView | None = None  # reconciliation's (``reconcile_snapshot``)
        self._generation = 0
        self._closing = False
        self._thread = threading.Thread(target=self._work, name=f"betfair-{name}", daemon=True)
        self._stream: StreamWorker | None = None
        self._next_poll = 0.0
        self.synced = threading.Event()
        self.stats = dict.fromkeys(("submits", "unknown", "rate_limited", "external"), 0)
        self.stats["relogins"] = 0
        if start:
            self.start(float(s.get("start_timeout_s", 30.0)))

    # --- life cycle -----------------------------------------------------------------------------
    def start(self, timeout_s: float = 30.0) -> bool:
        """Log in, take the venue's view of our orders and balance, start the order stream
        (blocking: start-up only). False (state "down") if the venue did not answer in time;
        the worker keeps trying every ``rest_poll_s``."""
        self._thread.start()
        self._jobs.put(self._startup)
        return self.synced.wait(timeout_s)

    def _startup(self) -> None:
        self.api.ensure_session()
        self._refresh_balance()
        self._check_orders(all_open=True)
        self._stream = StreamWorker(
            f"{self.name}-orders",
            "ocm",
            self.api,
            self.settings,
            self._subscribe,
            self._on_stream,
        )
        self._stream.start()
        self._stream.connected.wait(float(self.settings.get("start_timeout_s", 30.0)))
        self.synced.set()

    def _subscribe(self, s: StreamSocket, initial_clk: str | None, clk: str | None) -> None:
        s.subscribe_to_orders(
            {"includeOverallPosition": False},
            initial_clk=initial_clk,
            clk=clk,
            conflate_ms=0,
            heartbeat_ms=int(self.settings.get("heartbeat_ms", 5000)),
        )

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        if self._stream is not None:
            self._stream.stop()
        self._jobs.put(None)
        if self._thread.is_alive():
            self._thread.join(5)

    def state(self) -> str:
        """ "halted" (an external bet under ``external_orders = "halt"``), "connected" (the
        order stream is up) or "down"."""
        if self._venue_halt:
            return "halted"
        st = self._stream
        return "connected" if st is not None and st.connected.is_set() else "down"

    # --- the worker -----------------------------------------------------------------------------
    def _work(self) -> None:
        poll_s = float(self.settings.get("rest_poll_s", 5.0))
        while True:
            try:
                job = self._jobs.get(timeout=0.1)
            except queue.Empty:
                job = self._periodic
            if job is None:
                return
            if job is self._periodic and time.monotonic() < self._next_poll:
                continue
            try:
                job()
            except Exception:  # noqa: BLE001 - one failed request must not stop the worker
                log.exception("betfair %s: a request failed", self.name)
            if job is self._periodic:
                self._next_poll = time.monotonic() + poll_s

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn`` with TOO_MANY_REQUESTS waited out (``rate_limit_retries`` times) and, with
        a login, an expired session logged in again once (the venue did nothing either way)."""
        wait, retries = 0.2, int(self.settings.get("rate_limit_retries", 5))
        relogged = False
        for attempt in range(retries + 2):
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                code = api_error_code(exc)
                if code == "INVALID_SESSION_INFORMATION" and self.api.interactive and not relogged:
                    relogged = True
                    self.stats["relogins"] += 1
                    self.api.login_interactive()
                    continue
                if code != "TOO_MANY_REQUESTS" or attempt >= retries:
                    raise
                self.stats["rate_limited"] += 1
                time.sleep(wait)
                wait = min(wait * 2, 5.0)
        raise AssertionError("unreachable")

    def _emit(self, events: Iterable[object]) -> None:
        with self._lock:
            for e in events:
                if isinstance(e, OrderPartiallyFilled):
                    d = e.fill_qty if e.side == Side.BUY else -e.fill_qty
                    self._positions[e.instrument_id] = self._positions.get(e.instrument_id, 0) + d
                self._out.append(e)

    # --- requests -------------------------------------------------------------------------------
    def _refuse(self, order: NewOrder, now_ns: int) -> str:
        ins = self._insts.get(order.instrument_id)
        if ins is None:
            return f"instrument {order.instrument_id} is not listed at {self.name}"
        if order.client_order_id in self.book.orders:
            return f"duplicate client order id {order.client_order_id}"
        if order.order_type != OrderType.LIMIT:
            return "betfair takes LIMIT orders only (back at the best lay odds to take them)"
        if order.tif not in (TimeInForce.GTC, TimeInForce.IOC, TimeInForce.FOK):
            return f"betfair has no time in force {TimeInForce(order.tif).name} (GTC, IOC, FOK)"
        if not betfair_ladder_ok(order.px, ins.tick_size):
            return f"odds {odds(ins, order.px)} are not on Betfair's price ladder"
        if self._venue_halt:
            return f"venue halted: {self._venue_halt}"
        if order.instrument_id in self._halted:
            return f"market {ins.market_id} is {self._halted[order.instrument_id]} at the venue"
        if order.instrument_id in self._settled:
            return f"market {ins.market_id} has settled"
        return ""

    def submit(self, order: NewOrder, now_ns: int) -> list[VenueEvent]:
        why = self._refuse(order, now_ns)
        if why:
            return [OrderRejected.for_order(order, why, now_ns, now_ns)]
        ins = self._insts[order.instrument_id]
        mid, sid = split_symbol(ins.symbol)
        ref = self.book.ref(order.client_order_id)
        t = Tracked(order, ins, mid, sid, ref, order.px, order.qty)
        with self._lock:
            self.book.orders[order.client_order_id] = t
        self.stats["submits"] += 1
        self._jobs.put(lambda: self._place(t))
        return []

    def _instruction(self, t: Tracked) -> dict[str, Any]:
        o, ins = t.order, t.ins
        limit: dict[str, Any] = {"size": stake(ins, o.qty), "price": odds(ins, o.px)}
        if o.tif == TimeInForce.GTC:
            limit["persistenceType"] = str(self.settings.get("persistence", "LAPSE"))
        else:
            limit["timeInForce"] = "FILL_OR_KILL"
            if o.tif == TimeInForce.IOC:
                limit["minFillSize"] = stake(ins, 1)
        return {
            "orderType": "LIMIT",
            "selectionId": t.selection_id,
            "handicap": 0,
            "side": "BACK" if o.side == Side.BUY else "LAY",
            "limitOrder": limit,
            "customerOrderRef": t.ref,
        }

    def _place(self, t: Tracked) -> None:
        now = time.time_ns()
        try:
            r = self._call(
                self.api.betting.place_orders,
                t.market_id,
                [self._instruction(t)],
                customer_ref=t.ref,
            )
        except Exception as exc:
            code = api_error_code(exc)
            if code:  # the venue answered no
                self._reject(t, f"betfair: {code}", now)
            else:  # no answer: it may or may not be placed; settled by query, never resent
                with self._lock:
                    t.phase, t.since = "unknown", time.monotonic()
                self.stats["unknown"] += 1
            return
        rep = (r.get("instructionReports") or [{}])[0]
        if r.get("status") != "SUCCESS" or rep.get("status") != "SUCCESS":
            self._reject(t, f"betfair: {rep.get('errorCode') or r.get('errorCode')}", now)
            return
        bet = str(rep["betId"])
        sm, avp = _D(str(rep.get("sizeMatched") or 0)), _D(str(rep.get("averagePriceMatched") or 0))
        size = _D(str(stake(t.ins, t.order.qty)))
        done = rep.get("orderStatus") == "EXECUTION_COMPLETE"
        with self._lock:
            ev = self.book.accept(t, bet, now)
            whole = done and sm >= size
            state = BetState(bet, sm, avp, size - sm if not done else _D(0), complete=whole)
            ev += self.book.on_bet(t, state, now, now, taker=True)
            if done and not whole:  # a fill or kill's rest: not matched at once, cancelled
                t.leaves = t.order.qty - t.filled
                why = "fill or kill: the rest was not matched at once"
                ev += self.book.end(t, lapsed=False, ts=now, now_ns=now, why=why)
        self._emit(ev)

    def _reject(self, t: Tracked, why: str, now: int) -> None:
        with self._lock:
            t.phase = "rejected"
        self._emit([OrderRejected.for_order(t.order, why, now, now)])

    def cancel(self, cancel: CancelOrder, now_ns: int) -> list[VenueEvent]:
        t = self.book.orders.get(cancel.client_order_id)
        reasons = CancelRejectReason
        if t is None:
            return [self._cancel_rej(cancel, reasons.UNKNOWN_ORDER, "unknown order", now_ns)]
        if t.phase != "open":
            return [self._cancel_rej(cancel, reasons.NOT_OPEN, f"order is {t.phase}", now_ns)]
        self._jobs.put(lambda: self._cancel(t, cancel, None))
        return []

    @staticmethod
    def _cancel_rej(c: CancelOrder, reason: int, detail: str, now: int) -> OrderCancelRejected:
        return OrderCancelRejected(
            c.client_order_id, c.instrument_id, int(reason), detail, c.ts_origin, now, now
        )

    def _cancel(self, t: Tracked, c: CancelOrder | None, reduce_to: int | None) -> bool:
        """Cancel the current bet (``reduce_to``: down to that many lots). True: done."""
        now = time.time_ns()
        ins: dict[str, Any] = {"betId": t.bet_id}
        if reduce_to is not None:
            ins["sizeReduction"] = stake(t.ins, t.leaves - reduce_to)
        try:
            r = self._call(self.api.betting.cancel_orders, t.market_id, [ins])
            rep = (r.get("instructionReports") or [{}])[0]
            ok = r.get("status") == "SUCCESS" and rep.get("status") == "SUCCESS"
            why = str(rep.get("errorCode") or r.get("errorCode") or "")
        except Exception as exc:
            ok, why = False, api_error_code(exc) or f"no answer ({type(exc).__name__})"
        if not ok:
            if c is not None:
                reason = (
                    CancelRejectReason.NOT_OPEN if "TAKEN" in why else CancelRejectReason.REFUSED
                )
                self._emit([self._cancel_rej(c, reason, f"betfair: {why}", now)])
            return False
        if reduce_to is None:
            with self._lock:
                ev = self.book.end(t, lapsed=False, ts=now, now_ns=now)
            self._emit(ev)
        else:
            with self._lock:
                t.leaves = reduce_to
        return True

    def replace(self, replace: ReplaceOrder, now_ns: int) -> list[VenueEvent]:
        t = self.book.orders.get(replace.client_order_id)
        rr = ReplaceRejectReason
        why: tuple[int, str] | None = None
        if t is None:
            why = (rr.UNKNOWN_ORDER, "unknown order")
        elif t.phase != "open":
            why = (rr.NOT_OPEN, f"order is {t.phase}")
        elif replace.new_qty <= 0 or not betfair_ladder_ok(replace.new_px, t.ins.tick_size):
            why = (rr.INVALID, f"odds {odds(t.ins, replace.new_px)} not on the ladder or qty <= 0")
        elif replace.new_qty > t.leaves:
            why = (rr.UNSUPPORTED, "betfair cannot add to a bet's stake: cancel, place anew")
        elif replace.instrument_id in self._halted:
            why = (rr.HALTED, f"market is {self._halted[replace.instrument_id]}")
        if why is not None:
            ev = OrderReplaceRejected.for_request(replace, int(why[0]), why[1], now_ns, now_ns)
            return [ev]
        assert t is not None
        self._jobs.put(lambda: self._replace(t, replace))
        return []

    def _replace(self, t: Tracked, rep: ReplaceOrder) -> None:
        now = time.time_ns()
        if rep.new_qty < t.leaves and not self._cancel(t, None, rep.new_qty):
            self._replace_rej(rep, "betfair refused the stake reduction", now)
            return
        if rep.new_px != t.px:
            with self._lock:
                t.replacing = True
            try:
                r = self._call(
                    self.api.betting.replace_orders,
                    t.market_id,
                    [{"betId": t.bet_id, "newPrice": odds(t.ins, rep.new_px)}],
                )
                rp = (r.get("instructionReports") or [{}])[0]
                placed = rp.get("placeInstructionReport") or {}
                if r.get("status") != "SUCCESS" or placed.get("status") != "SUCCESS":
                    why = rp.get("errorCode") or r.get("errorCode")
                    self._replace_failed(t, rep, f"betfair: {why}", now)
                    return
            except Exception as exc:
                why = f"betfair: {api_error_code(exc) or 'no answer'}"
                self._replace_failed(t, rep, why, now)
                return
            new = str(placed["betId"])
            sm = _D(str(placed.get("sizeMatched") or 0))
            avp = _D(str(placed.get("averagePriceMatched") or 0))
            with self._lock:
                self.book.switch_bet(t, new, rep.new_px)
                ev: list[object] = [
                    OrderReplaced(
                        t.order.client_order_id,
                        t.order.instrument_id,
                        rep.new_px,
                        rep.new_qty,
                        rep.ts_origin,
                        now,
                        now,
                    )
                ]
                size = _D(str(stake(t.ins, rep.new_qty)))
                ev += self.book.on_bet(t, BetState(new, sm, avp, size - sm), now, now, taker=True)
            self._emit(ev)
            return
        self._emit(
            [
                OrderReplaced(
                    t.order.client_order_id,
                    t.order.instrument_id,
                    t.px,
                    rep.new_qty,
                    rep.ts_origin,
                    now,
                    now,
                )
            ]
        )

    def _replace_failed(self, t: Tracked, rep: ReplaceOrder, why: str, now: int) -> None:
        """The old bet stands (or has ended: the next check of the orders says so)."""
        with self._lock:
            t.replacing = False
        self._next_poll = 0.0
        self._replace_rej(rep, why, now)

    def _replace_rej(self, rep: ReplaceOrder, why: str, now: int) -> None:
        reason = int(
            ReplaceRejectReason.NOT_OPEN if "TAKEN" in why else ReplaceRejectReason.INVALID
        )
        self._emit([OrderReplaceRejected.for_request(rep, reason, why, now, now)])

    # --- what the venue says --------------------------------------------------------------------
    def _on_stream(self, msg: dict[str, Any]) -> None:
        if msg.get("op") != "ocm":
            return
        ts = int(msg.get("pt") or 0) * 1_000_000 or time.time_ns()
        now = time.time_ns()
        ev: list[object] = []
        closed: list[str] = []
        with self._lock:
            for oc in msg.get("oc") or []:
                for orc in oc.get("orc") or []:
                    for uo in orc.get("uo") or []:
                        t = self.book.find(str(uo.get("id")), str(uo.get("rfo") or ""))
                        if t is None:
                            if uo.get("status") == "E":
                                ev += self._external_bet(str(oc.get("id")), str(uo["id"]), now)
                            continue
                        ev += self.book.on_bet(t, _bet(uo), ts, now)
                if oc.get("closed"):
                    closed.append(str(oc.get("id")))
        self._emit(ev)
        for mid in closed:
            self._settle_later(mid)

    def _settle_later(self, market_id: str) -> None:
        with self._lock:
            if market_id in self._settling:
                return
            self._settling.add(market_id)
        self._jobs.put(lambda: self._settle(market_id))

    def _periodic(self) -> None:
        if self._stream is None:  # the start failed (the venue did not answer): again
            if not self._closing:
                self._startup()
            return
        self.api.ensure_session()  # keepAlive (or a new login) past half the session's life
        self._check_orders()
        self._refresh_balance()

    def _check_orders(self, all_open: bool = False) -> None:
        """listCurrentOrders: fills the stream missed, ends, and unknown placements settled."""
        with self._lock:
            live = [t for t in self.book.orders.values() if t.phase in ("open", "unknown")]
        if not live and not all_open:
            return
        started = time.monotonic_ns()
        markets = sorted({t.market_id for t in live})
        kwargs: dict[str, Any] = {"order_projection": "ALL"}
        if markets:
            kwargs["market_ids"] = markets
        got = {
            "currentOrders": self._pages(
                self.api.betting.list_current_orders, "currentOrders", **kwargs
            )
        }
        now = time.time_ns()
        seen: set[int] = set()
        working: set[int] = set()  # ours, EXECUTABLE at the venue
        ev: list[object] = []
        window = float(self.settings.get("unknown_window_s", 10.0))
        with self._lock:
            for row in got.get("currentOrders") or []:
                t = self.book.find(str(row["betId"]), str(row.get("customerOrderRef") or ""))
                adopted = t is None
                if t is None:
                    t = self._adopt(row)
                    if t is None:
                        if row.get("status") == "EXECUTABLE":
                            bet = str(row["betId"])
                            ev += self._external_bet(str(row["marketId"]), bet, now)
                        continue
                seen.add(t.order.client_order_id)
                if row.get("status") == "EXECUTABLE":
                    working.add(t.order.client_order_id)
                said = self.book.on_bet(t, _bet(row), now, now)
                if adopted:
                    self._baseline(said)
                else:
                    ev += said
            for t in live:
                late = time.monotonic() - t.since > window
                if t.phase == "unknown" and t.order.client_order_id not in seen and late:
                    t.phase = "rejected"
                    ev.append(OrderRejected.for_order(t.order, "not placed (no answer)", now, now))
        self._emit(ev)  # before the view: what it shows was handed out first
        self._new_view(started, working)

    # --- reconciliation (engine.venues.reconciled wraps this client) -----------------------------
    def _new_view(self, started: int, working: set[int]) -> None:
        """Reconciliation's view after a listCurrentOrders begun at ``started`` (monotonic):
        our bets working there, every fill booked, no balances (a bet is no holding of an
        asset: the money moves at settlement). Bets not ours are this client's to judge
        (``external_orders``), so the view leaves them out."""
        with self._lock:
            opens = [
                msgspec.structs.replace(t.order, px=t.px, qty=t.leaves)
                for coid, t in self.book.orders.items()
                if coid in working and t.phase == "open" and t.leaves > 0
            ]
            self._generation += 1
            self._view = LiveView(self._generation, started, opens, list(self.book.fills), [])

    def reconcile_snapshot(self) -> LiveView | None:
        """The last view (``engine.venue_recon.VenueSnapshot``); a new one after every
        listCurrentOrders: at start, each ``rest_poll_s`` with bets working, on request."""
        return self._view

    def request_reconcile(self) -> None:
        """A fresh view soon (reconciliation asks after the venue was down)."""
        self._jobs.put(lambda: self._check_orders(all_open=True))

    def resume(self) -> None:
        """The operator's resume: new orders go out again after an external bet halted the
        venue (that bet is not judged again)."""
        self._venue_halt = ""

    def _external_bet(self, market_id: str, bet_id: str, now: int) -> list[object]:
        """A working bet this engine did not place (``external_orders``): "adopt" leaves it
        be, "cancel" cancels it, "halt" stops new orders on the whole venue (an
        ``ExchangeStatus`` for instrument -1) until an operator looks."""
        if bet_id in self._external_seen:
            return []
        self._external_seen.add(bet_id)
        self.stats["external"] += 1
        log.warning(
            "betfair %s: bet %s in %s is not ours (%s)",
            self.name,
            bet_id,
            market_id,
            self._external,
        )
        if self._external == "cancel":
            ins = [{"betId": bet_id}]
            self._jobs.put(lambda: self._call(self.api.betting.cancel_orders, market_id, ins))
        elif self._external == "halt" and not self._venue_halt:
            self._venue_halt = f"bet {bet_id} in {market_id} was not placed by this engine"
            halted = int(ExchangeStatusKind.HALTED)
            return [ExchangeStatus(-1, halted, self._venue_halt, now, now)]
        return []

    def _baseline(self, said: list[object]) -> None:
        """An adopted bet's matched stake: the venue's position, not new fills (the record
        has them; a fill made while no exec ran shows as a position the record lacks, which
        reconciliation reports: docs/betfair.md)."""
        for e in said:
            if isinstance(e, OrderPartiallyFilled):
                self.book.fills.remove(e)
                d = e.fill_qty if e.side == Side.BUY else -e.fill_qty
                self._positions[e.instrument_id] = self._positions.get(e.instrument_id, 0) + d

    def _adopt(self, row: Mapping[str, Any]) -> Tracked | None:
        """An order of ours the venue has and we do not (a restarted exec): known again."""
        coid = parse_ref(self.book.prefix, str(row.get("customerOrderRef") or ""))
        ins = self._by_sel.get((str(row["marketId"]), int(row["selectionId"])))
        if coid is None or ins is None:
            return None
        ps = row.get("priceSize") or {}
        side = Side.BUY if row.get("side") == "BACK" else Side.SELL
        px, qty = ins.px_to_ticks(str(ps.get("price"))), ins.qty_to_lots(str(ps.get("size")))
        o = NewOrder(
            coid,
            0,
            ins.instrument_id,
            int(side),
            int(OrderType.LIMIT),
            int(TimeInForce.GTC),
            px,
            qty,
            0,
            0,
        )
        mid, sid = split_symbol(ins.symbol)
        t = Tracked(o, ins, mid, sid, str(row.get("customerOrderRef")), px, qty, phase="pending")
        self.book.orders[coid] = t
        return t

    def _refresh_balance(self) -> None:
        f = self._call(self.api.account.get_account_funds)
        ccy = str(self.settings.get("currency", "GBP"))
        free = float(f.get("availableToBetBalance") or 0.0)
        total = free - float(f.get("exposure") or 0.0)
        with self._lock:
            self._balances = [BalanceReport(venue=self.name, currency=ccy, total=total, free=free)]

    def _pages(self, fn: Callable[..., Any], key: str, **kwargs: Any) -> list[dict[str, Any]]:
        """Every row of a paged listing (``moreAvailable``: the next page from where it ended)."""
        rows: list[dict[str, Any]] = []
        page = int(self.settings.get("page_size", 1000))
        while True:
            got = self._call(fn, from_record=len(rows), record_count=page, **kwargs)
            more = got.get(key) or []
            rows += more
            if not got.get("moreAvailable") or not more:
                return rows

    def _settle(self, market_id: str) -> None:
        """A closed market's Settlement per selection we hold (see the module docstring)."""
        try:
            self._settle_market(market_id)
        finally:
            with self._lock:
                self._settling.discard(market_id)

    def _settle_market(self, market_id: str) -> None:
        bets: list[Mapping[str, Any]] = []
        for status in ("SETTLED", "VOIDED"):
            rows = self._pages(
                self.api.betting.list_cleared_orders,
                "clearedOrders",
                bet_status=status,
                market_ids=[market_id],
            )
            bets += [b | {"_status": status} for b in rows]
        if not bets:
            return  # not cleared yet: the next close notice or check tries again
        fee = 0.0
        grouped = self._call(
            self.api.betting.list_cleared_orders,
            bet_status="SETTLED",
            market_ids=[market_id],
            group_by="MARKET",
        )
        for row in grouped.get("clearedOrders") or []:
            fee += float(row.get("commission") or 0.0)
        ev = settlements(market_id, bets, self._by_sel, fee, time.time_ns(), self._settled)
        with self._lock:
            for e in ev:
                self._settled.add(e.instrument_id)
                self._positions[e.instrument_id] = 0
                self._halted[e.instrument_id] = "settled"
        self._emit(ev)

    # --- the engine's side ----------------------------------------------------------------------
    def on_market_data(self, msg: object, now_ns: int) -> list[VenueEvent]:
        if type(msg) is ExchangeStatus and msg.instrument_id in self._insts:  # type: ignore[attr-defined]
            iid, reason = msg.instrument_id, msg.reason  # type: ignore[attr-defined]
            with self._lock:
                if msg.status == ExchangeStatusKind.OPEN:  # type: ignore[attr-defined]
                    self._halted.pop(iid, None)
                else:
                    self._halted[iid] = reason
            if settlement_of(reason) is not None:
                self._settle_later(self._insts[iid].market_id)
        return []

    def poll(self, now_ns: int) -> list[VenueEvent]:
        with self._lock:
            out = list(self._out)
            self._out.clear()
        return out

    # --- queries --------------------------------------------------------------------------------
    def open_orders(self) -> list[NewOrder]:
        with self._lock:
            return self.book.open_orders()

    def positions(self) -> dict[int, int]:
        with self._lock:
            return {k: v for k, v in self._positions.items() if v}

    def fills_since(self, fill_id: int = 0) -> list[OrderPartiallyFilled]:
        with self._lock:
            return [f for f in self.book.fills if f.fill_id > fill_id]

    def knows_order(self, client_order_id: int) -> bool:
        t = self.book.orders.get(client_order_id)
        return t is not None and t.phase != "rejected"

    def query_order(self, client_order_id: int) -> OrderStatusReport | None:
        t = self.book.orders.get(client_order_id)
        with self._lock:
            return None if t is None else self.book.report(t)

    def order_status_reports(self) -> list[OrderStatusReport]:
        with self._lock:
            reps = [self.book.report(t) for t in self.book.orders.values() if t.phase == "open"]
        return [r for r in reps if r is not None]

    def balances(self) -> list[BalanceReport]:
        with self._lock:
            return list(self._balances)

    def wait_idle(self, timeout_s: float = 5.0) -> bool:
        """Tests: every queued request has been sent and answered."""
        done = threading.Event()
        self._jobs.put(done.set)
        return done.wait(timeout_s)
