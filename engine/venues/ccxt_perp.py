"""What a perpetual venue says about the account, as engine events: funding payments,
liquidations, margin status. Pure translations (no I/O): ``engine.venues.ccxt_perp_exec`` feeds
them what the venue sent, and tests feed them the venue's documented shapes.

Why each is built the way it is (docs/perpetuals.md has the numbers):

- a ``FundingPayment`` takes its amount from the venue's income record (what was actually paid,
  ``FUNDING_FEE``, once per ``tranId``) and its rate and mark from the funding-rate record of
  the same funding time; the position it was paid on is what the settled formula
  ``amount = -position * contract_size * lot_size * mark * rate`` gives back, so the portfolio
  can check one against the other;
- a ``Liquidation`` comes from the venue's own closing order (Binance: an
  ``ORDER_TRADE_UPDATE`` whose order type is ``LIQUIDATION``, client id ``autoclose-...``): it
  is no order of ours, so it is applied as a fill no order made, once per venue order;
- a ``MarginStatus`` carries the venue's own totals (equity = wallet + unrealized, initial and
  maintenance margin of the whole cross account); ``margin_call`` when equity is below
  maintenance or the venue sent a margin call.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from engine.enums import Side
from engine.instruments import Instrument
from engine.messages import FundingPayment, Liquidation, MarginStatus

__all__ = [
    "funding_payment",
    "is_liquidation",
    "liquidation_from_update",
    "margin_status",
    "position_lots",
]

#: how a venue marks its own closing orders (Binance's liquidation engine)
_LIQ_TYPES = frozenset({"LIQUIDATION", "ADL"})
_LIQ_PREFIXES = ("autoclose-", "adl_autoclose")


def _d(v: Any) -> Decimal:
    return Decimal(str(v)) if v not in (None, "") else Decimal(0)


def is_liquidation(raw_order: Mapping[str, Any]) -> bool:
    """Whether a venue order (raw user-stream ``o`` or REST row) is the venue's closing order."""
    kind = str(raw_order.get("o") or raw_order.get("type") or raw_order.get("origType") or "")
    cid = str(raw_order.get("c") or raw_order.get("clientOrderId") or "")
    return kind.upper() in _LIQ_TYPES or cid.startswith(_LIQ_PREFIXES)


def position_lots(ins: Instrument, contracts: Any, side: str | None = None) -> int:
    """A venue position (contracts, ccxt's ``side`` "long"/"short" where unsigned) in lots."""
    amount = _d(contracts)
    if side == "short" and amount > 0:
        amount = -amount
    return ins.qty_to_lots(amount)


def funding_payment(
    ins: Instrument,
    income: Mapping[str, Any],
    rate_row: Mapping[str, Any] | None,
    fallback_position: int,
    now_ns: int,
) -> FundingPayment:
    """One ``FUNDING_FEE`` income record (Binance's raw keys: ``income``, ``asset``, ``time``,
    ``tranId``) with the funding-rate record of its time (``fundingRate``, ``markPrice``)."""
    amount = _d(income.get("income"))
    rate = _d((rate_row or {}).get("fundingRate"))
    mark = _d((rate_row or {}).get("markPrice"))
    unit = Decimal(str(ins.contract_size)) * Decimal(str(ins.lot_size))
    if rate and mark:
        position = int((-amount / (mark * rate * unit)).to_integral_value())
    else:
        position = fallback_position
    ts = int(income.get("time") or 0) * 1_000_000 or now_ns
    return FundingPayment(
        instrument_id=ins.instrument_id,
        rate=float(rate),
        mark_px=ins.px_to_ticks(mark) if mark else 0,
        position=position,
        amount=float(amount),
        currency=str(income.get("asset") or ins.currency),
        ts_event=ts,
        ts_recv=now_ns,
        payment_id=int(income.get("tranId") or 0),
    )


def liquidation_from_update(
    ins: Instrument, o: Mapping[str, Any], ts_ms: int, now_ns: int
) -> Liquidation | None:
    """The venue's closing trade from a raw ``ORDER_TRADE_UPDATE`` order (``o``): side ``S``,
    last fill ``l`` at ``L`` (the average ``ap`` where ``L`` is absent), fee ``n``; None for an
    update that filled nothing."""
    qty = _d(o.get("l"))
    if qty <= 0:
        return None
    px = _d(o.get("L")) or _d(o.get("ap"))
    return Liquidation(
        instrument_id=ins.instrument_id,
        side=int(Side.BUY if str(o.get("S")).upper() == "BUY" else Side.SELL),
        px=ins.px_to_ticks(px),
        qty=ins.qty_to_lots(qty),
        fee=float(_d(o.get("n"))),
        ts_event=int(o.get("T") or ts_ms) * 1_000_000,
        ts_recv=now_ns,
        liquidation_id=int(o.get("t") or o.get("i") or 0),
    )


def margin_status(
    venue: str, account: Mapping[str, Any], now_ns: int, called: bool = False
) -> MarginStatus:
    """The cross account's totals (Binance ``GET /fapi/v2|v3/account``)."""
    equity = float(_d(account.get("totalMarginBalance")))
    maint = float(_d(account.get("totalMaintMargin")))
    assets = account.get("assets") or []
    ccy = str(assets[0].get("asset")) if assets and isinstance(assets[0], Mapping) else "USDT"
    return MarginStatus(
        venue=venue,
        currency=ccy,
        equity=equity,
        initial_margin=float(_d(account.get("totalInitialMargin"))),
        maintenance_margin=maint,
        ts_event=now_ns,
        margin_call=called or (maint > 0 and equity < maint),
    )
