"""The strategy stage: market data, forecasts, execution events and risk's refusals in, intents out.

Around ``engine.strategy_host.StrategyHost``. Every intent goes out on ``intents``; a new order
for which its strategy named the lots to close (``designated_lots``, specific identification:
the rebalancer's tax-loss harvest) carries them in ``IntentNew.lots``, so they travel with the
order to the portfolio, which lives with exec (``engine.stages.exec``).
"""

from __future__ import annotations

from typing import Any

from engine.messages import (
    Forecast,
    IntentNew,
    OrderCancelRejected,
    OrderRejected,
    OrderReplaceRejected,
)
from engine.stages import Every, Outbox, Stage
from engine.strategy_host import StrategyHost

#: what risk refuses, handed to the strategy like a venue's refusal
REFUSALS = (OrderRejected, OrderCancelRejected, OrderReplaceRejected)


class StrategyStage(Stage):
    name = "strategy"

    def __init__(self, host: StrategyHost, outbox: Outbox, timer_interval_ns: int = 0) -> None:
        self.host = host
        self.outbox = outbox
        self.intents = 0  # intents published
        self.handlers = {
            "md": self.on_md,
            "forecasts": self.on_forecast,
            "events": self.on_event,
            "risk": self.on_risk,
            "remote": self.on_remote,
        }
        self.timers = (Every(timer_interval_ns, self.on_timer),) if timer_interval_ns > 0 else ()
        # the strategies that name lots (``designated_lots``), by strategy id
        self._naming = {
            s.strategy_id: s.strategy
            for s in host.slots
            if isinstance(getattr(s.strategy, "designated_lots", None), dict)
        }

    def _send(self, out: list[Any]) -> int:
        """Publish a callback's intents; returns how many."""
        if not out:
            return 0
        if self._naming:
            self._attach_lots(out)
        self.outbox.publish_batch("intents", out)
        self.intents += len(out)
        return len(out)

    def _attach_lots(self, out: list[Any]) -> None:
        for it in out:
            if type(it) is IntentNew:
                strat = self._naming.get(it.strategy_id)
                if strat is not None:
                    refs = strat.designated_lots.get(it.client_order_id)
                    if refs:
                        it.lots = [(int(a), int(b)) for a, b in refs]

    # --- handlers (each returns the number of intents it published) ----------------------------
    def on_md(self, msg: Any, now_ns: int) -> int:
        return self._send(self.host.on_market_data(msg, now_ns))

    def dispatch(self, msg: Any, now_ns: int) -> int:
        """Call the strategies on a message whose state is already applied (``host.absorb``)."""
        return self._send(self.host.dispatch(msg, now_ns))

    def on_forecast(self, f: Any, now_ns: int) -> int:
        if type(f) is not Forecast:
            return 0  # model swaps, rejections, drift: the infer process logged them
        return self._send(self.host.on_forecast(f, now_ns))

    def on_event(self, ev: Any, now_ns: int) -> int:
        return self._send(self.host.on_exec_event(ev, now_ns))

    def on_risk(self, ev: Any, now_ns: int) -> int:
        """Risk's refusals reach the strategy as execution events; the rest is for the record."""
        if isinstance(ev, REFUSALS):
            return self._send(self.host.on_exec_event(ev, now_ns))
        return 0

    def on_remote(self, r: Any, now_ns: int) -> int:
        return self._send(self.host.on_remote(r, now_ns))

    def on_timer(self, now_ns: int) -> int:
        return self._send(self.host.on_timer(now_ns))

    def start(self, now_ns: int) -> int:
        return self._send(self.host.start(now_ns))

    def stop(self, now_ns: int) -> int:
        return self._send(self.host.stop(now_ns))
