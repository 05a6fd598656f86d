"""The exec stage: orders and market data in, execution events out on ``events``.

Around ``engine.exec_engine.ExecEngine`` (the OMS over a venue) and the portfolio that lives
with it: the portfolio learns each new order (its strategy, for P&L attribution, and the lots
its strategy named for it, ``NewOrder.lots``), marks from market data, and applies every event
exec publishes. ``journal``, when set, sees what exec took and what it publishes before it is
published (the exec process's recovery journal, ``procs.exec_journal``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engine.exec_engine import ExecEngine
from engine.messages import NewOrder, OpenOrdersRequest
from engine.portfolio import Portfolio
from engine.stages import Outbox, Stage


class ExecStage(Stage):
    name = "exec"

    def __init__(self, engine: ExecEngine, portfolio: Portfolio, outbox: Outbox) -> None:
        self.engine = engine
        self.portfolio = portfolio
        self.outbox = outbox
        self.journal: Callable[[Any, list[Any]], Any] | None = None
        self.handlers = {"orders": self.on_order, "md": self.on_md}

    def emit(self, evs: list[Any], taken: Any = None) -> None:
        """Publish exec's events (journaled first, when there is a journal) and apply them to
        the portfolio."""
        if self.journal is not None and (evs or taken is not None):
            self.journal(taken, evs)
        if not evs:
            return
        self.outbox.publish_batch("events", evs)
        on_event = self.portfolio.on_event
        for ev in evs:
            on_event(ev)

    def on_order(self, o: Any, now_ns: int) -> None:
        t = type(o)
        if t is NewOrder:
            p = self.portfolio
            p.on_order(o)  # its strategy (P&L attribution)
            if o.lots:  # the lots its strategy named (specific identification)
                p.designate_lots(o.client_order_id, o.lots)
        elif t is OpenOrdersRequest:  # a restarted risk without a record asks what is open
            self.emit(self.engine.open_order_snapshot(o, now_ns))
            return
        self.emit(self.engine.on_order(o, now_ns), o)

    def on_md(self, msg: Any, now_ns: int) -> None:
        """The market: marks the portfolio, matches at the (simulated) venue, triggers what
        exec emulates."""
        self.portfolio.on_market_data(msg)
        self.emit(self.engine.on_market_data(msg, now_ns))

    def poll(self, now_ns: int) -> None:
        """What the venue, retries, emulated expiries and algo slices made due by now."""
        self.emit(self.engine.poll(now_ns))

    def cancel_all(self, now_ns: int) -> None:
        self.emit(self.engine.cancel_all(now_ns))
