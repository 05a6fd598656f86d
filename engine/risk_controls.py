"""The risk gate's real-time controls: breakers, protective stops, kill switch and flatten.

Off the order path: ``on_prices`` runs every few ms, ``on_control`` when an operator acts. Both
are functions of the gate's ``RiskBook`` (``engine.risk_book``) and return what must be sent or
recorded; the trading state only escalates here (``engine.trading_state``) until an operator's
RESUME.

- ``on_prices`` (the risk process calls it every few ms with the top-of-book table): marks,
  equity, exposures; the daily-loss circuit breaker and drawdown protection (each with a
  REDUCING and a HALTED threshold; they only escalate; REDUCING cancels the orders that would
  add to a position, HALTED cancels every open order); per-position stop loss / take profit (a
  market IOC order closing the position, strategy id 0, after canceling the instrument's open
  orders; none while HALTED); flash-move halts (``engine.market_guard``).
- ``on_control``: KILL halts and cancels every open order; FLATTEN does the same and also sends
  market orders closing every position (sized to the position, so reduce-only by construction;
  best effort: fills racing the cancels may leave a residue — send FLATTEN again); CANCEL_ALL
  cancels without halting; RESUME is the only way back to ACTIVE — a halt never lifts by itself —
  and re-arms the breakers from the current equity; STOP (engine shutdown) blocks new orders and
  cancels, without touching the trading state (a clean stop is not a halt to remember).

Every change of the trading state is a ``TradingStateChanged`` plus a ``RiskEvent`` for the
record.
"""

from __future__ import annotations

import numpy as np

from engine.messages import (
    CancelOrder,
    Control,
    ControlCommand,
    NewOrder,
    OrderFlag,
    OrderType,
    RiskEvent,
    RiskEventKind,
    Side,
    TimeInForce,
    TradingState,
)
from engine.risk_book import RiskBook, RiskOrder, RiskOutput
from engine.risk_margin import margin_controls

#: tolerance (in percent) of the breakers and stops: a figure that lands on its threshold trips
#: it even when binary floating point puts it a hair below
_EPS = 1e-9


def on_prices(book: RiskBook, now_ns: int, wall_ns: int = 0) -> list[RiskOutput]:
    """Marks, equity and exposures from the latest prices, then flash-move halts, the breakers
    and stop loss / take profit."""
    book.refresh_exposure()
    out: list[RiskOutput] = []
    out += book.guard.on_prices(book.marks, now_ns)
    out += breakers(book, now_ns, wall_ns)
    if book.acct.any_margined:  # equity below the maintenance margin (engine.risk_margin)
        out += margin_controls(book, now_ns, wall_ns)
    # (halted means nothing leaves but cancels and an operator's flatten: no stops either)
    if (book.limits.stop_loss_pct > 0 or book.limits.take_profit_pct > 0) and not (
        book.trading.state == TradingState.HALTED or book.stopping
    ):
        out += protective(book, now_ns)
    return out


def breakers(book: RiskBook, now_ns: int, wall_ns: int) -> list[RiskOutput]:
    """Daily loss (from ``day_start_equity``) and drawdown (from ``peak_equity``): each escalates
    to its HALTED threshold, else its REDUCING one."""
    lim = book.limits
    if book.equity > book.peak_equity:
        book.peak_equity = book.equity
    out = _breaker(
        book,
        book.day_start_equity,
        lim.daily_loss_halt_pct,
        lim.daily_loss_reduce_pct,
        "daily loss",
        "daily_loss",
        now_ns,
        wall_ns,
    )
    return out + _breaker(
        book,
        book.peak_equity,
        lim.drawdown_halt_pct,
        lim.drawdown_reduce_pct,
        "drawdown",
        "drawdown",
        now_ns,
        wall_ns,
    )


def _breaker(
    book: RiskBook,
    base: float,
    halt_pct: float,
    reduce_pct: float,
    what: str,
    source: str,
    now_ns: int,
    wall_ns: int,
) -> list[RiskOutput]:
    """One breaker: the fall of equity from ``base``, in percent, against its two thresholds."""
    if base <= 0 or (halt_pct <= 0 and reduce_pct <= 0):
        return []
    fall = (base - book.equity) / base * 100.0
    for pct, st in ((halt_pct, TradingState.HALTED), (reduce_pct, TradingState.REDUCING)):
        if pct > 0 and fall >= pct - _EPS:
            why = f"{what} {fall:.3f}% >= {pct:g}%"
            return escalate(book, st, why, source, now_ns, wall_ns, fall, pct)
    return []


def escalate(
    book: RiskBook,
    state: int,
    reason: str,
    source: str,
    now_ns: int,
    wall_ns: int,
    value: float,
    limit: float,
) -> list[RiskOutput]:
    """Move the trading state up to ``state`` (never down) and pull the orders it forbids."""
    ch = book.trading.escalate(state, reason, source, now_ns, wall_ns, value, limit)
    if ch is None:
        return []
    out: list[RiskOutput] = [
        RiskEvent(int(RiskEventKind.LIMIT_BREACH), -1, 0, reason, value, limit, now_ns, int(state)),
        ch,
    ]
    if state == TradingState.HALTED:
        out += cancel_all(book, now_ns)
    else:  # REDUCING: pull the orders that would add to a position
        out += cancel_increasing(book, now_ns)
    return out


def cancel_increasing(book: RiskBook, now_ns: int) -> list[RiskOutput]:
    """A CancelOrder for every strategy order on the side that would add to its position."""
    out: list[RiskOutput] = []
    for coid, o in book.open_orders.items():
        pos = int(book.position[o.instrument_id])
        if book.hedged[o.instrument_id]:  # a hedging venue: every order but a reduce-only adds
            if o.strategy_id != 0 and not o.reduce_only:
                out.append(CancelOrder(coid, o.strategy_id, o.instrument_id, now_ns, now_ns))
        elif o.strategy_id != 0 and (pos == 0 or (pos > 0) == (o.side > 0)):
            out.append(CancelOrder(coid, o.strategy_id, o.instrument_id, now_ns, now_ns))
    return out


def protective(book: RiskBook, now_ns: int) -> list[RiskOutput]:
    """Stop loss / take profit versus the average entry price: a market IOC closing the
    position (after canceling the instrument's other open orders)."""
    lim = book.limits
    pos = book.position
    avg = book.avg_px
    mk = book.marks
    # not on a hedging venue's instrument: its legs have no one entry price (flatten closes them)
    live = (pos != 0) & (avg > 0) & (mk > 0) & ~book.guard.halted & ~book.hedged
    if not live.any():
        return []
    move = np.zeros_like(mk)
    np.divide(mk - avg, avg, out=move, where=live)
    pnl_pct = move * np.sign(pos) * 100.0  # favourable move, percent of entry
    hit = np.zeros_like(live)
    if lim.stop_loss_pct > 0:
        hit |= live & (pnl_pct <= -lim.stop_loss_pct + _EPS)
    if lim.take_profit_pct > 0:
        hit |= live & (pnl_pct >= lim.take_profit_pct - _EPS)
    out: list[RiskOutput] = []
    for i in np.flatnonzero(hit).tolist():
        if i in book.protect:
            continue  # one protective order at a time per instrument
        stop = bool(pnl_pct[i] < 0)
        kind = "stop loss" if stop else "take profit"
        lim_pct = -lim.stop_loss_pct if stop else lim.take_profit_pct
        out.append(
            RiskEvent(
                int(RiskEventKind.LIMIT_BREACH),
                i,
                0,
                kind,
                float(pnl_pct[i]),
                lim_pct,
                now_ns,
                int(book.state),
            )
        )
        for coid, o in book.open_orders.items():
            if o.instrument_id == i:
                out.append(CancelOrder(coid, o.strategy_id, i, now_ns, now_ns))
        close = own_close(book, i, now_ns)
        out.append(close)
        book.protect[i] = close.client_order_id
    return out


def own_close(book: RiskBook, iid: int, now_ns: int, leg: int = 0) -> NewOrder:
    """A market IOC order of risk's own (strategy 0) closing instrument ``iid``'s position (on
    a hedging venue: the ``leg`` given, REDUCE_ONLY)."""
    pos = leg or int(book.position[iid])
    book.own_counter += 1
    coid = book.own_counter  # strategy_id 0 << 32 | counter
    side = int(Side.SELL if pos > 0 else Side.BUY)
    book.open_orders[coid] = RiskOrder(iid, side, 0, abs(pos), 0, reduce_only=bool(leg))
    book.add_open(iid, side, abs(pos))
    return NewOrder(
        flags=int(OrderFlag.REDUCE_ONLY) if leg else 0,
        client_order_id=coid,
        strategy_id=0,
        instrument_id=iid,
        side=side,
        order_type=int(OrderType.MARKET),
        tif=int(TimeInForce.IOC),
        px=0,
        qty=abs(pos),
        ts_origin=now_ns,
        ts_approved=now_ns,
    )


def on_control(book: RiskBook, ctl: Control, wall_ns: int = 0) -> list[RiskOutput]:
    """Kill switch and friends; ``ctl.ts`` is the time of the command."""
    now = ctl.ts
    cmd = ctl.command
    out: list[RiskOutput] = []
    if cmd in (ControlCommand.KILL, ControlCommand.FLATTEN):
        reason = ctl.arg or ControlCommand(cmd).name.lower()
        ch = book.trading.escalate(TradingState.HALTED, reason, "operator", now, wall_ns)
        out.append(
            RiskEvent(
                kind=int(RiskEventKind.KILL_SWITCH),
                instrument_id=-1,
                client_order_id=0,
                reason=reason,
                value=float(len(book.open_orders)),
                limit=0.0,
                ts=now,
                state=int(book.state),
            )
        )
        if ch is not None:
            out.append(ch)
        out += cancel_all(book, now)
        if cmd == ControlCommand.FLATTEN:
            out += flatten(book, now)
    elif cmd == ControlCommand.STOP:
        book.stopping = True
        out.append(
            RiskEvent(
                int(RiskEventKind.STATE_CHANGE),
                -1,
                0,
                ctl.arg or "stop",
                float(len(book.open_orders)),
                0.0,
                now,
                int(book.state),
            )
        )
        out += cancel_all(book, now)
    elif cmd == ControlCommand.CANCEL_ALL:
        out += cancel_all(book, now)
    elif cmd == ControlCommand.RESUME:
        out += _resume(book, ctl, wall_ns)
    return out


def _resume(book: RiskBook, ctl: Control, wall_ns: int) -> list[RiskOutput]:
    """RESUME: back to ACTIVE, the breakers re-armed from the equity now."""
    ch = book.trading.resume(ctl.arg or "resume", "operator", ctl.ts, wall_ns)
    # re-arm the breakers from here: the operator has seen the loss and chosen to go on
    book.day_start_equity = book.peak_equity = book.equity
    # ... but not the margin call: still below maintenance, it is raised again at the next refresh
    book.acct.called = False
    book.acct.venue_called.clear()
    out: list[RiskOutput] = [
        RiskEvent(
            kind=int(RiskEventKind.RESUMED),
            instrument_id=-1,
            client_order_id=0,
            reason=ctl.arg or "resume",
            value=0.0,
            limit=0.0,
            ts=ctl.ts,
            state=int(book.state),
        )
    ]
    if ch is not None:
        out.append(ch)
    return out


def cancel_all(book: RiskBook, now_ns: int) -> list[RiskOutput]:
    """A CancelOrder for every order risk considers open."""
    return [
        CancelOrder(
            client_order_id=coid,
            strategy_id=o.strategy_id,
            instrument_id=o.instrument_id,
            ts_origin=now_ns,
            ts_approved=now_ns,
        )
        for coid, o in book.open_orders.items()
    ]


def flatten(book: RiskBook, now_ns: int) -> list[RiskOutput]:
    """Market orders closing every filled position (risk's own order ids, strategy 0)."""
    out: list[RiskOutput] = []
    for iid in range(book.n):
        if book.ins[iid] is None:
            continue
        if book.hedged[iid]:  # each leg by a reduce-only order (a plain one opens a leg)
            legs = int(book.long_pos[iid]), int(book.short_pos[iid])
            out += [own_close(book, iid, now_ns, q) for q in legs if q]
        elif int(book.position[iid]):
            out.append(own_close(book, iid, now_ns))
    return out
