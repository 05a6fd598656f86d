"""The risk stage: intents in, approved orders out on ``orders``, everything else on ``risk``.

Around ``engine.risk.RiskGate``. Execution events keep the gate's positions and open orders
exact; a venue's ``ExchangeStatus`` among them halts or resumes instruments; a ``Control``
(kill, flatten, resume, cancel-all) goes to the gate. Prices come from the feed's top-of-book
table (``tob`` in ``engine.topology.TABLES``): the risk process reads the table itself, the
inline runtime hands each market-data message to ``on_price``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from engine.messages import (
    ACCOUNT_EVENT_TYPES,
    CancelOrder,
    Control,
    ExchangeStatus,
    IntentNew,
    NewOrder,
    OpenOrderSnapshot,
    OrderRejected,
    ReplaceOrder,
    RiskEvent,
    RiskEventKind,
)
from engine.risk_stats import ReturnSampler
from engine.stages import Outbox, Stage

log = logging.getLogger("gekko.risk")

_ORDERS = (NewOrder, CancelOrder, ReplaceOrder)

#: how often the controls (marks, breakers, stops) run on prices, in the inline runtime
REFRESH_NS = 20_000_000


class RiskStage(Stage):
    name = "risk"

    def __init__(
        self,
        gate: Any,
        outbox: Outbox,
        *,
        refresh_ns: int = REFRESH_NS,
        contain_errors: bool = False,
    ) -> None:
        self.gate = gate
        self.outbox = outbox
        self.refresh_ns = int(refresh_ns)
        #: a malformed intent (or a bug) is refused instead of raised: the door must not stop
        self.contain_errors = contain_errors
        #: fills received before this time are already in the seeded positions (a restart)
        self.seeded_ns = 0
        #: exec's answer to a restarted risk's question (``procs.risk.AskExec``)
        self.on_snapshot: Callable[[OpenOrderSnapshot], Any] | None = None
        self._refresh_at = 0
        #: the returns window behind VaR, correlation and a sigma-scaled band, sampled here in
        #: the inline runtime when asked (``sample_returns``); the risk process samples its own
        self.returns: ReturnSampler | None = None
        self.returns_ns = 0
        self.returns_mids: Callable[[], Any] | None = None
        self._sample_at = 0
        self.handlers = {
            "intents": self.on_intent,
            "events": self.on_event,
            "control": self.on_control,
            "tob": self.on_price,
        }

    def route(self, out: list[Any]) -> None:
        """Approved orders to exec, the rest (refusals, state changes, risk events) on ``risk``."""
        for o in out:
            self.outbox.publish("orders" if isinstance(o, _ORDERS) else "risk", o)

    def on_intent(self, it: Any, now_ns: int) -> None:
        if not self.contain_errors:
            self.route(self.gate.on_intent(it, now_ns))
            return
        try:
            out = self.gate.on_intent(it, now_ns)
        except Exception as exc:
            log.exception("risk: intent %r refused: %s", it, exc)
            out = refused(it, f"risk error: {type(exc).__name__}", self.gate.state, now_ns)
        self.route(out)

    def on_event(self, ev: Any, now_ns: int) -> None:
        t = type(ev)
        if t is ExchangeStatus:  # the venue's status, forwarded by exec: risk obeys
            self.route(self.gate.on_status(ev, now_ns))
        elif t is OpenOrderSnapshot:
            if self.on_snapshot is not None:
                self.on_snapshot(ev)
        else:
            seeded = self.seeded_ns
            counted = seeded and getattr(ev, "ts_recv", seeded + 1) <= seeded
            if t in ACCOUNT_EVENT_TYPES:  # funding, settlement, liquidation, margin status
                if not counted:  # (else: already in the seeded positions)
                    self.route(self.gate.on_account_event(ev, now_ns))
                return
            self.gate.on_exec_event(ev, count_fill=not counted)

    def on_control(self, ctl: Control, now_ns: int, wall_ns: int = 0) -> None:
        self.route(self.gate.on_control(ctl, wall_ns))

    def on_price(self, msg: Any, now_ns: int) -> None:
        """A market-data message as the top-of-book table would show it; the controls run on
        the prices every ``refresh_ns`` (due on a price only: nothing moves in between)."""
        self.gate.on_market_data(msg)
        if now_ns >= self._refresh_at:
            self._refresh_at = now_ns + self.refresh_ns
            self.refresh(now_ns)

    def refresh(self, now_ns: int, wall_ns: int = 0) -> None:
        """Marks, equity, breakers, stop loss / take profit, flash-move halts on the latest
        prices; then, every ``returns_ns`` when sampling, a row of the returns window."""
        self.route(self.gate.on_prices(now_ns, wall_ns))
        if self.returns is None:
            return
        har = self.gate.stats.har is not None
        if now_ns >= self._sample_at or har:
            mids = self.gate.mids() if self.returns_mids is None else self.returns_mids()
            if now_ns < self._sample_at:  # between samples: the realised variance's prices
                self.returns.observe(mids)
                return
            self._sample_at = now_ns + self.returns_ns
            if self.returns.sample(mids):
                self.gate.set_returns(*self.returns.window_rv())

    def sample_returns(
        self, interval_ns: int, window: int, mids: Callable[[], Any] | None = None
    ) -> None:
        """Sample the mids into returns every ``interval_ns`` (a ``window`` of them) at the
        refreshes, as the risk process's ``Refresher`` does, so VaR, correlation and a
        sigma-scaled price band apply in a backtest ([backtest] risk_returns). The window
        starts empty: they apply after ``min_history`` intervals (live seeds it from history).
        ``mids``: where the prices come from (by instrument id), if not the gate's own."""
        self.returns = ReturnSampler(len(self.gate.position), window)
        self.returns_ns = int(interval_ns)
        self.returns_mids = mids
        self._sample_at = 0


def refused(it: Any, reason: str, state: int, now_ns: int) -> list[Any]:
    """The refusal of an intent the gate could not judge (never an order)."""
    coid = int(getattr(it, "client_order_id", 0) or 0)
    iid = int(getattr(it, "instrument_id", -1) or 0)
    out: list[Any] = [
        RiskEvent(
            int(RiskEventKind.ORDER_REJECTED), iid, coid, reason, 0.0, 0.0, now_ns, int(state)
        )
    ]
    if type(it) is IntentNew:
        origin = int(getattr(it, "ts_origin", 0))
        out.append(OrderRejected(coid, iid, f"risk: {reason}", origin, now_ns, now_ns))
    return out
