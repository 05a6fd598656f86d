"""The risk gate: the only door from strategies to execution (DESIGN §2).

``RiskGate`` is the risk process's state machine. Every intent either becomes an order (the same
fields, ``ts_approved = now_ns``, ``ts_origin`` kept so tick-to-order latency spans the gate) or
is rejected. A rejection returns **two** messages, because two parties need to know:

- a ``RiskEvent`` (kind ``ORDER_REJECTED``, the reason, the offending value and the limit) for the
  recorder, dashboards and the audit trail;
- an ``OrderRejected`` execution event for the strategy that asked, so its view of its open orders
  stays right (the order will never exist) — the runtime routes it like any execution event.

Exceptions, both chosen so that a strategy's order book view never diverges from the venue's:

- a *duplicate* ``client_order_id`` (a resend of an order that is already open) gets the RiskEvent
  only: an ``OrderRejected`` would tell the strategy its live original is dead;
- a rejected *replace* (of an order that is open) gets the RiskEvent and a ``CancelOrder`` for the
  original, not an ``OrderRejected``: the order is still resting, the strategy no longer wants it
  at the old terms, and a stale quote left in the book is the larger risk. The strategy sees an
  ordinary ``OrderCanceled``.

The gate is thin: one module per job, each a set of functions of the state they share.

- ``engine.risk_limits``: ``RiskLimits``, every limit (``config.toml``'s ``[risk]``);
- ``engine.risk_book``: ``RiskBook``, the state — positions, open orders, prices, equity — kept
  from execution events and market data; ``RiskGate`` *is* one, so the checks read its arrays
  with no extra indirection;
- ``engine.risk_checks``: the pre-trade checks, in order (the hot path: allocation-free numpy);
- ``engine.risk_controls``: breakers, stop loss / take profit, kill switch, flatten, cancel-all;
- ``engine.risk_margin``: margin, leverage, betting liability and binary exposure; margin calls
  and liquidations;
- ``engine.risk_state``: what the risk process persists and rebuilds after a restart of itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from engine import risk_controls, risk_margin, risk_state
from engine.messages import (
    CancelOrder,
    Control,
    ExchangeStatus,
    IntentCancel,
    IntentNew,
    IntentReplace,
)
from engine.risk_book import RiskBook, RiskOrder, RiskOutput
from engine.risk_checks import check_new, check_replace
from engine.risk_limits import RiskLimits

__all__ = ["RiskBook", "RiskGate", "RiskLimits", "RiskOrder", "RiskOutput"]


class RiskGate(RiskBook):
    """Pre-trade risk checks and real-time controls over the gate's ``RiskBook`` (see the
    module docstring). Execution events and prices go to the book's ``on_exec_event`` /
    ``on_market_data``; ``mark`` / ``mids`` read it."""

    # --- intents (the hot path) -----------------------------------------------------------------
    def on_intent(
        self, intent: IntentNew | IntentCancel | IntentReplace, now_ns: int
    ) -> list[RiskOutput]:
        """Approve an intent (→ order) or reject it (→ RiskEvent + OrderRejected)."""
        if isinstance(intent, IntentNew):
            return check_new(self, intent, now_ns)
        if isinstance(intent, IntentCancel):
            # always allowed, whatever the state or the age of its data: reducing exposure is
            # never blocked (a cancel is always safe)
            return [CancelOrder.from_intent(intent, now_ns)]
        if isinstance(intent, IntentReplace):
            return check_replace(self, intent, now_ns)
        raise TypeError(f"not an intent: {type(intent).__name__}")

    # --- real-time controls -----------------------------------------------------------------
    def set_returns(
        self, returns: np.ndarray, rv: np.ndarray | None = None, fine: np.ndarray | None = None
    ) -> None:
        """A new window of returns (T × n by instrument id) for VaR, correlation and a
        sigma-scaled price band; ``rv``/``fine``: each interval's realised variance and where
        it came from finer prices (``ReturnSampler.window_rv``; ``[risk] volatility = "har"``)."""
        self.stats.set_returns(returns, rv, fine)
        self.set_bands()  # a sigma-scaled price band follows the new sigma

    def on_prices(self, now_ns: int, wall_ns: int = 0) -> list[RiskOutput]:
        """Off the order path, every few ms: marks, equity and exposures from the latest prices
        (``on_market_data`` or the top-of-book table), then the breakers, stop loss / take
        profit and flash-move halts. Returns what must be sent or recorded."""
        return risk_controls.on_prices(self, now_ns, wall_ns)

    def on_account_event(self, ev: object, now_ns: int) -> list[RiskOutput]:
        """Funding, financing, a settlement, a liquidation or a venue's margin status
        (``engine.risk_margin``): cash and positions, and MARGIN_CALL / LIQUIDATION events."""
        return risk_margin.on_account_event(self, ev, now_ns)

    def on_status(self, msg: ExchangeStatus, now_ns: int) -> list[RiskOutput]:
        """A venue's status for an instrument (or the whole venue)."""
        return list(self.guard.on_status(msg, now_ns))

    def new_day(self) -> None:
        """Start a new trading day: the daily P&L is measured from the equity now."""
        self.day_start_equity = self.equity

    def on_control(self, ctl: Control, wall_ns: int = 0) -> list[RiskOutput]:
        """Kill switch and friends (``engine.risk_controls``); ``ctl.ts`` is the time of the
        command."""
        return risk_controls.on_control(self, ctl, wall_ns)

    def cancel_all(self, now_ns: int) -> list[RiskOutput]:
        """A CancelOrder for every order risk considers open."""
        return risk_controls.cancel_all(self, now_ns)

    # --- persistence and restart (the process stores; ``engine.risk_state``) --------------------
    def persistent_state(self) -> dict[str, Any]:
        """What must outlive the risk process: the trading state and the breakers' baselines."""
        return risk_state.persistent_state(self)

    def restore_state(self, snap: dict[str, Any]) -> None:
        """Put back ``persistent_state()`` (ValueError if it is not one)."""
        risk_state.restore_state(self, snap)

    def seed_positions(
        self,
        rows: Iterable[tuple[int, int, float, float, float]],
        legs: Mapping[int, tuple[int, int, float, float]] | None = None,
    ) -> None:
        """Positions (and a hedging venue's legs) from exec's positions table after a restart
        of the risk process."""
        risk_state.seed_positions(self, rows, legs)

    def restore(self, orders: Iterable[Any], events: Iterable[Any]) -> int:
        """The orders that were open, rebuilt from this run's record; how many are open."""
        return risk_state.restore(self, orders, events)

    def restore_open(self, snapshots: Iterable[Any]) -> list[int]:
        """The orders exec holds open (storage off); the ids restored."""
        return risk_state.restore_open(self, snapshots)
