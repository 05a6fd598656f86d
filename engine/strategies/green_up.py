"""GreenUp: back a selection, then cash out with the opposite bet — a betting exchange's exit.

A betting position cannot be sold: it is closed by betting the other way. After a back of stake
S at odds O_b, a lay at odds O_l of S x O_b / O_l makes the result the same whichever way the
selection goes (``engine.betting.green_up``): "greening up", the exchange's cash-out. When the
odds have shortened (O_l < O_b) the locked result is a profit, when they drifted a loss. This
strategy is the smallest one that does it and shows how::

    [[strategies]]
    id = 4
    path = "engine.strategies.green_up:GreenUp"
    instruments = ["1.200000001/47972"]     # a betting selection (docs/betfair.md)
    [strategies.params]
    stake = 2000          # lots of the account currency (0.01 GBP): a 20.00 back
    cash_out_at = 1.60    # lay odds at or below which to green up (0: on the next quote)

It backs ``stake`` at the best odds available to back (the quote's bid: on a betting book a
BUY takes the bid side), keeps its P&L per outcome from its fills (win / lose), and once the
best odds available to lay (the ask) reach ``cash_out_at`` sends the one bet that evens the two
at that price. Nothing here is Betfair's own: it trades any betting instrument, the simulated
exchange's included.
"""

from __future__ import annotations

from typing import Any

from engine.betting import green_up
from engine.messages import Quote, Side
from engine.strategies.base import FillEvent, Strategy, StrategyContext
from engine.strategies.params import StrategyParams, check


class GreenUpParams(StrategyParams):
    """``[strategies.params]`` of ``GreenUp``."""

    stake: int = 1000  # lots of the instrument's currency to back
    cash_out_at: float = 0.0  # green up once the lay odds are at or below this (0: at once)

    def __post_init__(self) -> None:
        check(self.stake > 0, "stake", "must be > 0 lots")
        check(self.cash_out_at == 0 or self.cash_out_at >= 1.01, "cash_out_at", "odds >= 1.01")


class GreenUp(Strategy):
    Params = GreenUpParams

    def __init__(self, ctx: StrategyContext, params: dict[str, Any]) -> None:
        super().__init__(ctx, params)
        p: GreenUpParams = self.p
        self.iid = ctx.instrument_ids[0]
        ins = ctx.instrument(self.iid)
        self.tick, self.lot = ins.tick_size, ins.lot_size
        self.stake, self.cash_out_at = p.stake, p.cash_out_at
        self.back_id = 0
        self.lay_id = 0
        self.backed = 0  # lots of the back matched
        self.win = 0.0  # our P&L, in currency, if the selection wins ...
        self.lose = 0.0  # ... and if it loses

    def on_quote(self, q: Quote) -> None:
        if q.instrument_id != self.iid:
            return
        if not self.back_id:
            if q.bid_px > 0:  # the best odds available to back
                self.back_id = self.ctx.buy(self.iid, self.stake, px=q.bid_px)
            return
        if self.lay_id or self.backed < self.stake or q.ask_px <= 0:
            return
        odds = q.ask_px * self.tick  # the best odds available to lay
        if self.cash_out_at and odds > self.cash_out_at + 1e-9:
            return
        side, stake = green_up(self.win, self.lose, odds)
        lots = round(stake / self.lot)
        if lots <= 0:
            return
        if side < 0:
            self.lay_id = self.ctx.sell(self.iid, lots, px=q.ask_px)
        else:  # the odds drifted past a lay's reach: even it with a back at the bid
            self.lay_id = self.ctx.buy(self.iid, lots, px=q.bid_px)

    def on_fill(self, ev: FillEvent) -> None:
        if ev.instrument_id != self.iid:
            return
        stake, odds = ev.fill_qty * self.lot, ev.fill_px * self.tick
        if ev.side == Side.BUY:  # a back: wins S(O-1) or loses S
            self.win += stake * (odds - 1)
            self.lose -= stake
        else:  # a lay: loses S(O-1) or wins S
            self.win -= stake * (odds - 1)
            self.lose += stake
        if ev.client_order_id == self.back_id:
            self.backed += ev.fill_qty
