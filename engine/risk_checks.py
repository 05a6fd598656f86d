"""The pre-trade checks: every intent becomes an order or is refused, in a few µs.

Functions of the gate's ``RiskBook`` (``engine.risk_book``), not methods of a class of their own:
the state is read as ``book.position[iid]``, at the cost of an attribute of ``self``, and the
pass path allocates nothing but the order it returns.

Checks on a new order, in order (every limit configurable; 0 turns the optional ones off):

1. trading state: HALTED (or the engine stopping) rejects; cancels always pass;
   staleness: an intent built on data older than ``max_intent_age_ns`` (``now_ns −
   ts_origin``, both on the runtime's clock: monotonic in the processes, simulated in a
   backtest) is refused with reason ``stale_intent`` (one with a ``ts_origin`` more than the
   limit in the future: ``ts_origin_in_future``, a clock mix-up). A stale *replace* is refused
   like any refused replace — the original is canceled — whether it would add exposure or
   only move the price: a price computed from old data is as wrong as a new order from it,
   and canceling is always safe. Cancels are never refused for age;
2. well-formed: known instrument, qty > 0, price > 0 for priced orders (LIMIT, STOP_LIMIT,
   LIMIT_IF_TOUCHED: the limit exec sends), a trigger > 0 for STOP, STOP_LIMIT, MARKET_IF_TOUCHED
   and LIMIT_IF_TOUCHED, a trail for TRAILING_STOP / TRAILING_STOP_LIMIT, a session for an
   AT_THE_OPEN / AT_THE_CLOSE order (exec's own refusals, made before anything is counted
   open), side (a replace:
   ``new_qty`` is the new open quantity, > 0; ``new_px`` > 0, except that a market order or
   parent replaced at px 0 stays market and is checked as a new market order of that size);
3. instrument halted (venue halt, exchange circuit breaker, flash move: ``engine.market_guard``);
4. duplicate id, max open orders, max orders per second (new orders and replaces, sliding 1 s);
5. max order notional (market orders valued at the opposite best, else the last trade: so are
   the types exec sends at the market — stops and market-if-touched when they fire,
   market-to-limit at the touch, a trailing-stop-limit's limit; a session order is valued at
   today's prices);
6. price band (fat finger): a limit price more than ``price_band_pct`` from the mid (with
   ``price_band_sigmas`` > 0 a spot price's band is that many return-interval sigmas, within
   ``price_band_min_pct`` .. ``price_band_pct``, the fixed band while sigma is unknown:
   ``RiskBook.set_bands``; a binary
   also more than ``price_band_ticks`` ticks, a betting selection ``price_band_ladder_ticks``
   ladder ticks: the wider band of the two, as a tick at 0.03 is 33 %);
7. max position in lots, worst case: the filled position plus every open order on the same side
   plus this one;
8. reduce-only, when the trading state is REDUCING or the order carries the REDUCE_ONLY flag:
   the worst case must not be larger, nor on the other side of zero, than the position now;
9. for an order that *increases* the instrument's exposure (|worst case| > |position|), valued at
   the mark (mid, else last, else the order's reference price):
   single position ≤ ``max_position_pct`` of equity; sector gross exposure ≤ ``max_sector_pct``;
   correlation with every held position (signed by direction: long/short of two correlated
   instruments is a hedge) ≤ ``max_correlation``; portfolio VaR after the order ≤
   ``max_var_pct`` of equity (an order that lowers VaR always passes). VaR and correlation need
   ``min_history`` return intervals; before that they are skipped (counted in ``skipped_stats``);
10. the account (``engine.risk_margin``): a betting market's liability and a binary market's
   exposure after the order, open orders counted (any order that makes them worse); for a
   margined instrument's exposure-increasing order, initial margin in use (% of equity) and
   gross leverage.
"""

from __future__ import annotations

from engine.messages import (
    CancelOrder,
    IntentCancel,
    IntentNew,
    IntentReplace,
    NewOrder,
    OrderFlag,
    OrderRejected,
    OrderType,
    ReplaceOrder,
    RiskEvent,
    RiskEventKind,
    Side,
    TradingState,
)
from engine.risk_book import RiskBook, RiskOrder, RiskOutput
from engine.risk_margin import margin_check, market_check
from engine.sessions import SESSION_TIFS, session_refusal

#: order types whose ``px`` is the limit price exec sends (must be > 0): valued and banded at
#: it. The others go out at the market — a MARKET, a stop / market-if-touched when it fires, a
#: market-to-limit at the touch, a trailing-stop-limit at an offset from a stop level that does
#: not exist yet — and are valued at the opposite best (``ref_px``).
_PRICED = (int(OrderType.LIMIT), int(OrderType.STOP_LIMIT), int(OrderType.LIMIT_IF_TOUCHED))
#: a sigma-scaled band's refusals say which band judged: k sigmas, or the fixed one (no sigma)
_BAND_SIGMA = "price band (sigma-scaled)"
_BAND_NO_SIGMA = "price band (fixed: sigma unknown)"
#: order types that need a trigger price (``stop_px`` > 0)
_STOPPED = (
    int(OrderType.STOP),
    int(OrderType.STOP_LIMIT),
    int(OrderType.MARKET_IF_TOUCHED),
    int(OrderType.LIMIT_IF_TOUCHED),
)
#: trailing types: a trail in ticks (``stop_px`` > 0) or ``algo_params["trail_pct"]`` in (0, 100)
_TRAILING = (int(OrderType.TRAILING_STOP), int(OrderType.TRAILING_STOP_LIMIT))
_REDUCE_ONLY = int(OrderFlag.REDUCE_ONLY)

#: a refusal: (reason, the offending value, the limit)
Refusal = tuple[str, float, float]


def reject(
    book: RiskBook,
    intent: IntentNew | IntentReplace | IntentCancel,
    reason: str,
    value: float,
    limit: float,
    now_ns: int,
    notify_strategy: bool = True,
) -> list[RiskOutput]:
    """A RiskEvent for the record and (unless ``notify_strategy`` is False) an OrderRejected
    for the strategy that asked."""
    book.rejected += 1
    out: list[RiskOutput] = [
        RiskEvent(
            kind=int(RiskEventKind.ORDER_REJECTED),
            instrument_id=intent.instrument_id,
            client_order_id=intent.client_order_id,
            reason=reason,
            value=float(value),
            limit=float(limit),
            ts=now_ns,
            state=int(book.state),
        )
    ]
    if notify_strategy:
        out.append(OrderRejected.for_order(intent, f"risk: {reason}", now_ns, now_ns))
    return out


def stale(book: RiskBook, ts_origin: int, now_ns: int) -> Refusal | None:
    """(reason, age ms, limit ms) when an intent's data is older than ``max_intent_age_ns``
    (or as far in the future: another clock), else None. Two integer comparisons on the pass
    path; the tuple is built only for a refusal."""
    max_age = book.limits.max_intent_age_ns
    age = now_ns - ts_origin
    if max_age <= 0 or -max_age <= age <= max_age:
        return None
    book.stale_rejected += 1
    reason = "stale_intent" if age > 0 else "ts_origin_in_future"
    return reason, age / 1e6, max_age / 1e6


def _trail_pct_ok(it: IntentNew) -> bool:
    """A trailing order's trail by percent (exec's emulator takes 0 < trail_pct < 100)."""
    pct = float(it.algo_params.get("trail_pct", 0.0) or 0.0) if it.algo_params else 0.0
    return 0.0 < pct < 100.0


def ref_px(book: RiskBook, iid: int, side: int, order_type: int, px: int) -> int:
    """Price used to value an order: its limit, or for a market order the price it would
    most likely trade at (opposite best, else last trade); 0 if unknown."""
    if order_type in _PRICED:
        return px
    ref = int(book.ask[iid] if side == Side.BUY else book.bid[iid])
    return ref if ref > 0 else int(book.last[iid])


def rate_ok(book: RiskBook, now_ns: int) -> bool:
    """Fewer than ``max_orders_per_s`` orders approved in the last second (O(1): the ring
    holds the times of the last N approvals; the oldest must be over a second old)."""
    return (
        book.limits.max_orders_per_s <= 0
        or now_ns - int(book.rate[book.rate_i]) >= 1_000_000_000
        or (book.rate[book.rate_i] == 0)
    )


def rate_note(book: RiskBook, now_ns: int) -> None:
    if book.limits.max_orders_per_s > 0:
        book.rate[book.rate_i] = now_ns
        book.rate_i = (book.rate_i + 1) % book.rate.shape[0]


def check_new(book: RiskBook, it: IntentNew, now_ns: int) -> list[RiskOutput]:
    """A new order: approved (→ ``NewOrder``, counted open) or refused (``reject``)."""
    lim = book.limits
    if book.trading.state == TradingState.HALTED:
        return reject(book, it, "trading halted", book.state, TradingState.ACTIVE, now_ns)
    if book.stopping:
        return reject(book, it, "engine stopping", 0, 0, now_ns)
    max_age = lim.max_intent_age_ns  # inline on the pass path: no call, no allocation
    if max_age > 0 and not -max_age <= now_ns - it.ts_origin <= max_age:
        old = stale(book, it.ts_origin, now_ns)
        assert old is not None
        return reject(book, it, old[0], old[1], old[2], now_ns)
    iid = it.instrument_id
    ins = book.known(iid)
    if ins is None:
        return reject(book, it, f"unknown instrument {iid}", iid, 0, now_ns)
    if it.qty <= 0:
        return reject(book, it, "qty must be > 0", it.qty, 0, now_ns)
    if it.order_type in _PRICED and it.px <= 0:
        return reject(book, it, "price must be > 0", it.px, 0, now_ns)
    if it.order_type in _STOPPED and it.stop_px <= 0:
        return reject(book, it, "stop price must be > 0", it.stop_px, 0, now_ns)
    if it.order_type in _TRAILING and it.stop_px <= 0 and not _trail_pct_ok(it):
        why = (
            "trailing stop needs stop_px (trail in ticks) > 0 or algo_params trail_pct in (0, 100)"
        )
        return reject(book, it, why, it.stop_px, 0, now_ns)
    if it.tif in SESSION_TIFS and (why := session_refusal(ins, it.tif)):
        return reject(book, it, why, it.tif, 0, now_ns)
    if it.side not in (Side.BUY, Side.SELL):
        return reject(book, it, "side must be BUY or SELL", it.side, 0, now_ns)
    if book.guard.halted[iid]:
        return reject(book, it, f"instrument halted: {book.guard.reason[iid]}", iid, 0, now_ns)
    if it.client_order_id in book.open_orders:
        why = "duplicate client_order_id"  # the original is live: the strategy must not hear
        return reject(book, it, why, it.client_order_id, 0, now_ns, notify_strategy=False)
    if len(book.open_orders) >= lim.max_open_orders:
        n_open = len(book.open_orders) + 1
        return reject(book, it, "max open orders", n_open, lim.max_open_orders, now_ns)
    if not rate_ok(book, now_ns):
        cap = lim.max_orders_per_s
        return reject(book, it, "max orders per second", cap + 1, cap, now_ns)
    ref = ref_px(book, iid, it.side, it.order_type, it.px)
    if ref <= 0:
        cap = lim.max_order_notional
        return reject(book, it, "no price to value market order", 0, cap, now_ns)
    notional = ins.notional(ref, it.qty)
    if notional > lim.max_order_notional:
        return reject(book, it, "max order notional", notional, lim.max_order_notional, now_ns)
    priced = it.order_type in _PRICED
    reduce_only = bool(it.flags & _REDUCE_ONLY)
    bad = order_checks(book, iid, it.side, it.qty, ref, it.px, priced, reduce_only)
    if bad is not None:
        return reject(book, it, bad[0], bad[1], bad[2], now_ns)

    book.approved += 1
    rate_note(book, now_ns)
    book.open_orders[it.client_order_id] = RiskOrder(
        iid, it.side, it.px, it.qty, it.strategy_id, reduce_only=reduce_only
    )
    book.add_open(iid, it.side, it.qty)
    # every field as the strategy asked: an algo parent stays one (exec works it, never sends
    # it whole), the lots its strategy named travel with it (engine.stages.exec designates them)
    return [NewOrder.from_intent(it, now_ns)]


def check_replace(book: RiskBook, it: IntentReplace, now_ns: int) -> list[RiskOutput]:
    """A replace of an open order: approved (→ ``ReplaceOrder``; a larger size counted open
    until the venue confirms) or refused — the RiskEvent plus a ``CancelOrder`` of the original
    (see ``engine.risk``: a stale quote left resting is the larger risk)."""
    o = book.open_orders.get(it.client_order_id)
    if o is None:
        # nothing open to replace (already filled/canceled, or never approved): tell the
        # recorder only; the strategy learns the order's fate from its own events
        why, coid = "replace of unknown order", it.client_order_id
        return reject(book, it, why, coid, 0, now_ns, notify_strategy=False)
    bad = _replace_refusal(book, it, o, now_ns)
    if bad is not None:
        out = reject(book, it, bad[0], bad[1], bad[2], now_ns, notify_strategy=False)
        out.append(
            CancelOrder(
                client_order_id=it.client_order_id,
                strategy_id=it.strategy_id,
                instrument_id=o.instrument_id,
                ts_origin=it.ts_origin,
                ts_approved=now_ns,
            )
        )
        return out
    # until the venue confirms, count the larger of old and new open quantity
    if it.new_qty > o.leaves:
        extra = it.new_qty - o.leaves
        book.add_open(o.instrument_id, o.side, extra)
        o.leaves += extra
        o.reserved += extra
    book.approved += 1
    rate_note(book, now_ns)
    return [
        ReplaceOrder(
            client_order_id=it.client_order_id,
            strategy_id=it.strategy_id,
            instrument_id=o.instrument_id,
            new_px=it.new_px,
            new_qty=it.new_qty,
            ts_origin=it.ts_origin,
            ts_approved=now_ns,
        )
    ]


def _replace_refusal(
    book: RiskBook, it: IntentReplace, o: RiskOrder, now_ns: int
) -> Refusal | None:
    """Why a replace of open order ``o`` is refused, or None to approve it."""
    lim = book.limits
    iid = o.instrument_id
    ins = book.known(iid)
    assert ins is not None
    # a market order (an algo parent, mostly: a plain one rarely stays open) approved at px 0
    # and replaced at px 0 stays market: sized and valued as a new market order would be
    market = o.px == 0 and it.new_px == 0
    if book.trading.state == TradingState.HALTED:
        return "trading halted", book.state, TradingState.ACTIVE
    if book.stopping:
        return "engine stopping", 0.0, 0.0
    if (old := stale(book, it.ts_origin, now_ns)) is not None:
        return old  # the original is canceled: it rests on old data too
    if book.guard.halted[iid]:
        return f"instrument halted: {book.guard.reason[iid]}", 0.0, 0.0
    if it.new_qty <= 0:
        return "qty must be > 0", it.new_qty, 0.0
    if it.new_px <= 0 and not market:
        return "price must be > 0", it.new_px, 0.0
    if not rate_ok(book, now_ns):
        return "max orders per second", lim.max_orders_per_s + 1, lim.max_orders_per_s
    kind = int(OrderType.MARKET) if market else int(OrderType.LIMIT)
    ref = ref_px(book, iid, o.side, kind, it.new_px)
    notional = ins.notional(ref, it.new_qty)
    if ref <= 0:
        return "no price to value market order", 0.0, lim.max_order_notional
    if notional > lim.max_order_notional:
        return "max order notional", notional, lim.max_order_notional
    # new_qty is the new OPEN quantity (as the venue's); a REDUCE_ONLY order on a hedging
    # venue is checked as it was approved: against the opposite leg, the one it closes
    ro = o.reduce_only and bool(book.hedged[iid])
    return order_checks(book, iid, o.side, it.new_qty - o.leaves, ref, it.new_px, not market, ro)


def order_checks(
    book: RiskBook,
    iid: int,
    side: int,
    extra: int,
    ref: int,
    px: int,
    priced: bool,
    reduce_only: bool,
) -> Refusal | None:
    """The checks a new order and a replace share: price band, position, reduce-only and
    exposure. ``extra`` is the additional open quantity on ``side``. Returns (reason, value,
    limit) for a rejection, None to approve."""
    lim = book.limits
    if priced and book.guard.bounded[iid]:  # a binary in ticks, a betting selection in ladder ticks
        b, a = int(book.bid[iid]), int(book.ask[iid])
        band = lim.price_band_ticks if book.guard.in_ticks(iid) else lim.price_band_ladder_ticks
        if b > 0 and a > 0 and band > 0:
            mid = (b + a) / 2.0
            rel = lim.price_band_pct  # the wider of the two bands: past both is refused
            if not rel > 0 or abs(px - mid) / mid * 100.0 > rel:
                dev = book.guard.steps(iid, float(px), mid)
                if dev > band:
                    return "price band", dev, band
    elif priced and lim.price_band_pct > 0:
        b, a = int(book.bid[iid]), int(book.ask[iid])
        if b > 0 and a > 0:
            mid = (b + a) / 2.0
            dev = abs(px - mid) / mid * 100.0
            band = lim.price_band_pct
            why = "price band"
            if lim.price_band_sigmas > 0:  # sigma-scaled where sigma is known (set_bands)
                band = float(book.band_pct[iid])
                why = _BAND_SIGMA if book.band_scaled[iid] else _BAND_NO_SIGMA
            if dev > band:
                return why, dev, band
    pos = int(book.position[iid])
    if book.hedged[iid]:  # a hedging venue: the leg it moves (reduce-only: the opposite one)
        pos = int(book.long_pos[iid] if (side == Side.BUY) != reduce_only else book.short_pos[iid])
    if side == Side.BUY:
        proj = pos + int(book.open_buy[iid]) + extra
    else:
        proj = pos - int(book.open_sell[iid]) - extra
    worst = proj if side == Side.BUY else -proj
    if extra > 0:
        if worst > book.max_lots[iid]:
            return "max position", worst, int(book.max_lots[iid])
        cap = book.max_notional[iid]
        if cap > 0 and worst * ref * book.mult[iid] > cap:
            return "max position notional", worst * ref * float(book.mult[iid]), float(cap)
    increases = abs(proj) > abs(pos)
    reducing = reduce_only or book.trading.state == TradingState.REDUCING
    if reducing and extra > 0 and (increases or proj * pos < 0):
        why = "reduce-only order" if reduce_only else "reduce-only (trading state REDUCING)"
        return why, proj, pos
    acct = book.acct
    if acct.market and extra > 0 and iid in acct.market:  # a betting or binary market
        bad = market_check(book, iid, side, extra, px if priced else ref)
        if bad is not None or iid in acct.betting:
            return bad  # a bet's size is its liability: not a holding in % of equity
    if not increases or extra <= 0:
        return None
    if acct.any_margined and acct.margined[iid]:
        # hedging: the other leg posts its margin too (the legs' gross, not their net)
        o = abs(int(book.long_pos[iid] + book.short_pos[iid]) - pos) if book.hedged[iid] else 0
        bad = margin_check(book, iid, abs(pos) + o, abs(proj) + o, ref)
        if bad is not None:
            return bad
    return exposure_checks(book, iid, proj, ref)


def exposure_checks(book: RiskBook, iid: int, proj: int, ref: int) -> Refusal | None:
    """Position and sector % of equity, correlation and VaR of an exposure-increasing order
    whose worst-case position is ``proj`` lots."""
    lim = book.limits
    mark = float(book.marks[iid])
    val = (mark if mark > 0 else float(ref)) * float(book.mult[iid])
    new_w = proj * val
    equity = book.equity
    pct_limits = lim.max_position_pct > 0 or lim.max_sector_pct > 0 or lim.max_var_pct > 0
    if pct_limits and not equity > 0:
        return "no equity", equity, 0.0
    if lim.max_position_pct > 0:
        cap = equity * lim.max_position_pct / 100.0
        if abs(new_w) > cap:
            return "position % of equity", abs(new_w) / equity * 100.0, lim.max_position_pct
    if lim.max_sector_pct > 0:
        s = int(book.sector_of[iid])
        gross = float(book.sector_gross[s]) - abs(float(book.exposure[iid])) + abs(new_w)
        if gross > equity * lim.max_sector_pct / 100.0:
            name = book.sector_names[s] if book.sector_names else "?"
            return f"sector exposure ({name})", gross / equity * 100.0, lim.max_sector_pct
    need_stats = lim.max_correlation < 1.0 or lim.max_var_pct > 0
    if not need_stats:
        return None
    st = book.stats
    if not st.ready:
        book.skipped_stats += 1
        return None
    if lim.max_correlation < 1.0:
        c, j = st.max_corr(iid, 1.0 if proj > 0 else -1.0, book.signs)
        if c > lim.max_correlation:
            other = book.ins[j]
            return f"correlation with {other.symbol if other else j}", c, lim.max_correlation
    if lim.max_var_pct > 0:
        d = new_w - float(book.exposure[iid])
        after = st.var_after(iid, d, book.var_kind)
        cap = equity * lim.max_var_pct / 100.0
        if after > cap and after > st.var_after(iid, 0.0, book.var_kind):
            return "VaR", after, cap
    return None
