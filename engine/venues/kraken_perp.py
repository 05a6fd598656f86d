"""Kraken Futures (``krakenfutures``) as a perpetual venue: its account's words as engine
events, and the execution client that reads them.

Why its own client over ``PerpExecutionClient``: the order life cycle and the REST housekeeping
are the same, but Kraken's account speaks otherwise. There is no Binance-style user stream to
hook: this client polls REST (ccxt's ``watch_orders`` / ``watch_my_trades`` are switched off;
orders, fills and positions come from ``openorders`` / ``fills`` / ``openpositions`` every
``rest_poll_s`` / ``perp_poll_s``). Funding is an account-log row ("funding rate change":
``realized_funding`` paid, ``funding_rate`` the absolute rate in USD per contract per hour,
``mark_price``), so its relative rate is ``funding_rate / mark_price`` and the position it was
paid on is ``-realized_funding / funding_rate``. The account's totals are the multi-collateral
``flex`` account's (``marginEquity``, ``initialMargin``, ``maintenanceMargin``). A liquidation
is an account-log row "futures liquidation" whose ``asset`` is the contract: its position went
from ``old_balance`` to ``new_balance`` at ``trade_price`` (fee ``fee`` + ``liquidation_fee``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from engine.enums import Side
from engine.instruments import Instrument
from engine.messages import FundingPayment, Liquidation, MarginStatus
from engine.venues.ccxt_perp_exec import PerpExecutionClient

__all__ = [
    "KrakenPerpExecutionClient",
    "funding_payment",
    "liquidation",
    "margin_status",
]

FUNDING_INFO = "funding rate change"
LIQUIDATION_INFO = "futures liquidation"


def _d(v: Any) -> Decimal:
    return Decimal(str(v)) if v not in (None, "") else Decimal(0)


def _ms(iso: Any) -> int:
    """Kraken's ``2026-12-07T22:44:00.893Z`` in ms since the epoch (0 where absent)."""
    if not iso:
        return 0
    return int(datetime.fromisoformat(str(iso).replace("Z", "+00:00")).timestamp() * 1000)


def funding_payment(ins: Instrument, row: Mapping[str, Any], now_ns: int) -> FundingPayment:
    """One account-log row "funding rate change" (module docstring)."""
    amount = _d(row.get("realized_funding"))
    absolute = _d(row.get("funding_rate"))
    mark = _d(row.get("mark_price"))
    unit = Decimal(str(ins.contract_size)) * Decimal(str(ins.lot_size))
    position = int((-amount / (absolute * unit)).to_integral_value()) if absolute else 0
    return FundingPayment(
        instrument_id=ins.instrument_id,
        rate=float(absolute / mark) if mark else 0.0,
        mark_px=ins.px_to_ticks(mark) if mark else 0,
        position=position,
        amount=float(amount),
        currency=str(row.get("asset") or ins.currency).upper(),
        ts_event=_ms(row.get("date")) * 1_000_000 or now_ns,
        ts_recv=now_ns,
        payment_id=int(row.get("id") or 0),
    )


def liquidation(ins: Instrument, row: Mapping[str, Any], now_ns: int) -> Liquidation | None:
    """One account-log row "futures liquidation" (module docstring); None where the position
    did not move."""
    moved = _d(row.get("new_balance")) - _d(row.get("old_balance"))
    if not moved:
        return None
    return Liquidation(
        instrument_id=ins.instrument_id,
        side=int(Side.BUY if moved > 0 else Side.SELL),
        px=ins.px_to_ticks(_d(row.get("trade_price"))),
        qty=ins.qty_to_lots(abs(moved)),
        fee=float(_d(row.get("fee")) + _d(row.get("liquidation_fee"))),
        ts_event=_ms(row.get("date")) * 1_000_000 or now_ns,
        ts_recv=now_ns,
        liquidation_id=int(row.get("id") or 0),
    )


def margin_status(venue: str, flex: Mapping[str, Any], now_ns: int) -> MarginStatus:
    """The ``flex`` (multi-collateral) account's totals from ``GET /accounts``."""
    equity = float(_d(flex.get("marginEquity") or flex.get("portfolioValue")))
    maint = float(_d(flex.get("maintenanceMargin")))
    return MarginStatus(
        venue=venue,
        currency="USD",
        equity=equity,
        initial_margin=float(_d(flex.get("initialMargin"))),
        maintenance_margin=maint,
        ts_event=now_ns,
        margin_call=maint > 0 and equity < maint,
    )


class KrakenPerpExecutionClient(PerpExecutionClient):
    """``PerpExecutionClient`` on a Kraken Futures flex account, polling REST (module
    docstring)."""

    def _install_hook(self) -> None:
        super(PerpExecutionClient, self)._install_hook()  # the guard's; no user stream to read
        for name in ("watchOrders", "watchMyTrades"):
            self._ex.has[name] = False  # REST polling: ccxt's private feed is not this client's

    async def _log(self, info: str) -> list[Mapping[str, Any]]:
        got = await self._request(
            "historyGetAccountLog", {"info": info, "since": self._funding_from_ms, "sort": "asc"}
        )
        return [r for r in (got or {}).get("logs") or [] if isinstance(r, Mapping)]

    def _by_contract(self, row: Mapping[str, Any], key: str) -> Instrument | None:
        return self._by_venue_id.get(str(row.get(key) or "").upper())

    async def _liquidations_backfill(self) -> None:
        """The account log's liquidations of our contracts; those before the first look are
        only marked seen (they are in the position the baseline takes)."""
        primed, self._liq_primed = self._liq_primed, True
        for row in await self._log(LIQUIDATION_INFO):
            ins = self._by_contract(row, "asset") or self._by_contract(row, "contract")
            lid = int(row.get("id") or 0)
            if ins is None or lid in self._liq_orders:
                continue
            self._liq_orders.add(lid)
            ev = liquidation(ins, row, self._clock())
            if primed and ev is not None:
                self._count_liquidation(ins, ev)

    def _report_margin(self, account: Mapping[str, Any]) -> None:
        flex = (account.get("accounts") or {}).get("flex")
        if not isinstance(flex, Mapping):
            return
        ev = margin_status(self.name, flex, self._clock())
        last = self._margin
        pct = float(self.settings.get("margin_report_pct", 1.0)) / 100
        if last is not None and not ev.margin_call and not last.margin_call:
            pairs = (
                (ev.equity, last.equity),
                (ev.initial_margin, last.initial_margin),
                (ev.maintenance_margin, last.maintenance_margin),
            )
            if all(abs(a - b) <= pct * max(abs(b), 1e-9) for a, b in pairs):
                return
        if ev.margin_call:
            self.perp_stats["margin_calls"] += 1
        self._margin = ev
        self.perp_stats["margin_reports"] += 1
        self._emit([ev])

    async def _funding_round(self) -> None:
        """Funding the account log lists since the start, each once."""
        evs = []
        for row in await self._log(FUNDING_INFO):
            ins = self._by_contract(row, "contract")
            pid = int(row.get("id") or 0)
            if ins is None or pid in self._seen_funding:
                continue
            self._seen_funding.add(pid)
            evs.append(funding_payment(ins, row, self._clock()))
        if evs:
            self.perp_stats["funding"] += len(evs)
            self._emit(evs)
