"""The binanceusdm live client (``PerpExecutionClient``) against the local USD-M futures server.

One account walks through a perpetual's life with every number computed by hand from the
settled formulas (docs/perpetuals.md): a market buy of 0.1 BTC at 10x leverage, a funding
payment (amount = -position * mark * rate), a margin call when equity falls below 1.25 x
maintenance, and a liquidation at the mark when equity falls below maintenance (clearance fee
1.25 % of the notional). The server's own ledger is checked to agree.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from decimal import Decimal

import pytest

from engine.instruments import Instrument, InstrumentTable
from engine.messages import (
    FundingPayment,
    Liquidation,
    MarginStatus,
    NewOrder,
    OrderFilled,
    OrderPartiallyFilled,
    OrderRejected,
    OrderType,
    Side,
)
from engine.venues.ccxt_perp_exec import PerpExecutionClient
from engine.venues.ccxt_session import Credentials
from tests.venues.binance_futures import BinanceFuturesServer

PERP = Instrument(
    instrument_id=1,
    symbol="BTC/USDT:USDT",
    venue="bf",
    tick_size=0.1,
    lot_size=0.001,
    kind="perpetual",
    funding_interval_s=28800,
    initial_margin=0.1,
    maintenance_margin=0.004,
)
KEY, SECRET = "perp-test-key", "perp-test-secret"


@pytest.fixture
def venue():
    srv = BinanceFuturesServer(mark_interval_s=0.2).start()
    srv.add_key(KEY, SECRET, balances={"USDT": "1000"})
    made: list[PerpExecutionClient] = []

    def make(**extra) -> PerpExecutionClient:
        settings = {
            "rest_url": srv.rest_url,
            "ws_url": srv.ws_url,
            "timeout_ms": 3000,
            "engine_id": "perpt",
            "rest_poll_s": 0.5,
            "perp_poll_s": 0.3,
            "start_timeout_s": 20,
            "leverage": 10,
            "ccxt_options": {"fetchCurrencies": False},
            **extra,
        }
        c = PerpExecutionClient(
            "binanceusdm", "bf", InstrumentTable([PERP]), settings, Credentials(KEY, SECRET)
        )
        made.append(c)
        assert c.state() == "connected", c.state_reason
        return c

    yield srv, make
    for c in made:
        c.close()
    srv.stop()


def _collect(c: PerpExecutionClient, out: list, until: Callable[[], bool], limit_s=15.0) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        out.extend(c.poll(time.monotonic_ns()))
        if until():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out; got {[type(e).__name__ for e in out]}")


def _of(out: list, kind: type) -> list:
    return [e for e in out if type(e) is kind]


def _buy(c: PerpExecutionClient, coid: int, lots: int, flags: int = 0) -> NewOrder:
    now = time.monotonic_ns()
    o = NewOrder(
        client_order_id=coid,
        strategy_id=1,
        instrument_id=PERP.instrument_id,
        side=int(Side.BUY),
        order_type=int(OrderType.MARKET),
        tif=0,
        px=0,
        qty=lots,
        ts_origin=now,
        ts_approved=now,
        flags=flags,
    )
    assert c.submit(o, time.monotonic_ns()) == []
    return o


def test_leverage_set_and_first_margin_report(venue) -> None:
    srv, make = venue
    c = make()
    out: list = []
    _collect(c, out, lambda: bool(_of(out, MarginStatus)))
    assert srv.requests["POST /fapi/v1/leverage"] == 1
    assert srv.ledger.account("main").position(PERP.symbol).leverage == 10
    ms = _of(out, MarginStatus)[0]
    assert (ms.venue, ms.currency, ms.equity, ms.maintenance_margin) == ("bf", "USDT", 1000.0, 0.0)
    assert not ms.margin_call
    assert c.positions() == {}


def test_funding_margin_call_and_liquidation_by_hand(venue) -> None:
    srv, make = venue
    c = make()
    out: list = []
    # 1. buy 0.1 BTC (100 lots of 0.001): initial margin 6000 / 10 = 600 of the 1000 USDT
    _buy(c, 1, 100)
    _collect(c, out, lambda: bool(_of(out, OrderFilled)) and c.positions() == {1: 100})
    fills = [e for e in out if isinstance(e, OrderPartiallyFilled)]
    cost = sum(
        Decimal(f.fill_px) * Decimal("0.1") * Decimal(f.fill_qty) * Decimal("0.001") for f in fills
    )
    entry = cost / Decimal("0.1")  # the average fill price
    fee = (cost * Decimal("0.0005")).quantize(Decimal("0.00000001"))  # taker 5 bps, in USDT
    wallet = Decimal(1000) - fee
    assert srv.ledger.account("main").wallet == wallet

    # 2. funding at mark 60000, rate 0.01 %: the long pays 0.1 * 60000 * 0.0001 = 0.6 USDT
    srv.call(setattr, srv, "mark_override", "60000.0")
    paid = srv.call(srv.pay_funding)
    assert paid == [Decimal("-0.6")]
    _collect(c, out, lambda: bool(_of(out, FundingPayment)))
    (fp,) = _of(out, FundingPayment)
    assert (fp.instrument_id, fp.amount, fp.currency) == (1, -0.6, "USDT")
    assert (fp.rate, fp.mark_px, fp.position) == (0.0001, 600_000, 100)
    assert fp.payment_id > 0
    wallet -= Decimal("0.6")

    # 3. a margin call: equity = wallet + 0.1 (m - entry) below 1.25 x maintenance (0.1 m 0.4 %)
    #    yet above maintenance: m between (0.1 entry - wallet) / (0.1 - 0.0005) and / (0.1 - 0.0004)
    lo = (Decimal("0.1") * entry - wallet) / Decimal("0.0996")  # below it: liquidated
    hi = (Decimal("0.1") * entry - wallet) / Decimal("0.0995")  # below it: margin call
    mark = ((lo + hi) / 2).quantize(Decimal("0.1"))
    assert lo < mark < hi
    srv.call(setattr, srv, "mark_override", str(mark))
    _collect(c, out, lambda: any(m.margin_call for m in _of(out, MarginStatus)))
    call = next(m for m in _of(out, MarginStatus) if m.margin_call)
    equity = wallet + Decimal("0.1") * (mark - entry)
    maint = Decimal("0.1") * mark * Decimal("0.004")
    assert call.equity == pytest.approx(float(equity), abs=1e-6)
    assert call.maintenance_margin == pytest.approx(float(maint), abs=1e-6)
    assert not _of(out, Liquidation)

    # 4. the mark at 50000: equity 0.1 (50000 - entry) + wallet < 20 = maintenance: the venue
    #    sells the 0.1 BTC at the mark, clearance fee 0.1 * 50000 * 1.25 % = 62.5 USDT
    srv.call(setattr, srv, "mark_override", "50000.0")
    _collect(c, out, lambda: bool(_of(out, Liquidation)) and c.positions() == {})
    (liq,) = _of(out, Liquidation)
    assert (liq.instrument_id, liq.side, liq.px, liq.qty) == (1, int(Side.SELL), 500_000, 100)
    assert liq.fee == 62.5
    after = wallet + Decimal("0.1") * (Decimal(50000) - entry) - Decimal("62.5")
    assert srv.ledger.account("main").wallet == after
    _collect(
        c,
        out,
        lambda: any(
            abs(m.equity - float(after)) < 1e-6 and m.maintenance_margin == 0
            for m in _of(out, MarginStatus)
        ),
    )
    # the venue's closing order never reached the order table as an order of someone else's
    assert not c.table.external_orders
    assert len(_of(out, Liquidation)) == 1  # once, whatever the backfill sees later


def test_reduce_only_and_margin_refusals(venue) -> None:
    srv, make = venue
    c = make()
    out: list = []
    _buy(c, 5, 100, flags=2)  # REDUCE_ONLY with no position: the venue refuses it
    _collect(c, out, lambda: bool(_of(out, OrderRejected)))
    assert "ReduceOnly" in _of(out, OrderRejected)[0].reason
    _buy(c, 6, 2000)  # 2 BTC = 12000 USDT notional needs 1200 of margin at 10x: refused
    _collect(c, out, lambda: len(_of(out, OrderRejected)) == 2)
    assert "Margin is insufficient" in _of(out, OrderRejected)[1].reason
    assert c.positions() == {}


def test_a_liquidation_the_stream_missed_is_found_over_rest(venue) -> None:
    """The user stream is down while the venue liquidates: the closing order is found in the
    venue's forceOrders (no fee there), reported once, and reconciliation's view of the
    position (the base asset's balance) is still what our own fills explain."""
    srv, make = venue
    c = make()
    out: list = []
    _buy(c, 1, 100)
    _collect(c, out, lambda: c.positions() == {1: 100})
    btc = lambda: {b.currency: b.total for b in c.balances()}.get("BTC")  # noqa: E731
    _collect(c, out, lambda: btc() == pytest.approx(0.1))
    srv.faults.arm("fill_while_down")  # the user socket dropped, its events withheld
    srv.call(setattr, srv, "mark_override", "50000.0")
    _collect(c, out, lambda: bool(_of(out, Liquidation)))
    srv.faults.clear("fill_while_down")
    (liq,) = _of(out, Liquidation)
    assert (liq.side, liq.px, liq.qty, liq.fee) == (int(Side.SELL), 500_000, 100, 0.0)
    assert srv.call(lambda: srv.events.withheld) > 0  # the stream never said it
    _collect(c, out, lambda: c.positions() == {})
    c.request_reconcile()
    _collect(c, out, lambda: c.reconcile_snapshot().balances.get("BTC", {}).get("total") == 0.1)
    time.sleep(0.5)
    out.extend(c.poll(time.monotonic_ns()))
    assert len(_of(out, Liquidation)) == 1


def test_funding_paid_on_the_venues_schedule(venue) -> None:
    """The venue pays every ``funding_every_s``: each payment reported once, by hand."""
    srv, make = venue
    c = make()
    out: list = []
    _buy(c, 1, 100)
    _collect(c, out, lambda: c.positions() == {1: 100})
    srv.call(setattr, srv, "mark_override", "60000.0")
    srv.call(setattr, srv, "funding_rate", "-0.0002")  # shorts pay: the long receives
    srv.call(setattr, srv, "funding_every_s", 0.4)
    _collect(c, out, lambda: len(_of(out, FundingPayment)) >= 2)
    srv.call(setattr, srv, "funding_every_s", 0.0)
    fps = _of(out, FundingPayment)
    # -0.1 * 60000 * -0.0002 = +1.2 USDT each
    assert {(f.amount, f.rate, f.mark_px, f.position) for f in fps} == {
        (1.2, -0.0002, 600_000, 100)
    }
    assert len({f.payment_id for f in fps}) == len(fps)
