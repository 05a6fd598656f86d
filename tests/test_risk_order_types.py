"""Risk knows every order type and time in force exec takes: each is checked and valued the way
exec will send it (engine.risk_checks: _PRICED, _STOPPED, _TRAILING, session orders)."""

from __future__ import annotations

import msgspec
import pytest

from engine.instruments import Instrument
from engine.messages import (
    IntentNew,
    NewOrder,
    OrderRejected,
    OrderType,
    Quote,
    RiskEvent,
    Side,
    TimeInForce,
)
from engine.risk import RiskGate, RiskLimits

# tick 0.01, lot 1: notional = px_ticks * qty / 100; instrument 2 has a session
INS = [
    Instrument(instrument_id=1, symbol="AAA"),
    Instrument(
        instrument_id=2,
        symbol="BBB",
        session_tz="America/New_York",
        session_open="09:30",
        session_close="16:00",
    ),
]
LIMITS = RiskLimits.off(max_order_notional=1_000.0, max_position_lots=1_000, max_open_orders=50)
_n = 0


def new(otype, *, px=0, stop_px=0, qty=1, iid=1, tif=TimeInForce.GTC, params=None, side=Side.BUY):
    global _n
    _n += 1
    return IntentNew(
        client_order_id=(1 << 32) | _n,
        strategy_id=1,
        instrument_id=iid,
        side=side,
        order_type=otype,
        tif=tif,
        px=px,
        qty=qty,
        ts_origin=5,
        ts_created=6,
        stop_px=stop_px,
        algo_params=params or {},
    )


def gate(**kw) -> RiskGate:
    g = RiskGate(msgspec.structs.replace(LIMITS, **kw), INS)
    for iid in (1, 2):  # bid 99.00, ask 101.00
        g.on_market_data(Quote(iid, 9_900, 5, 10_100, 5, 1, 1))
    return g


def approved(out) -> NewOrder:
    assert len(out) == 1 and isinstance(out[0], NewOrder), out
    return out[0]


def refused(out, reason: str) -> RiskEvent:
    ev = [m for m in out if isinstance(m, RiskEvent)]
    assert len(ev) == 1 and reason in ev[0].reason, out
    assert any(isinstance(m, OrderRejected) for m in out)
    return ev[0]


@pytest.mark.parametrize(
    "intent, reason",
    [
        (new(OrderType.MARKET_IF_TOUCHED), "stop price must be > 0"),
        (new(OrderType.LIMIT_IF_TOUCHED, stop_px=9_800), "price must be > 0"),
        (new(OrderType.LIMIT_IF_TOUCHED, px=9_800), "stop price must be > 0"),
        (new(OrderType.TRAILING_STOP), "trailing stop needs"),
        (new(OrderType.TRAILING_STOP_LIMIT), "trailing stop needs"),
        (new(OrderType.TRAILING_STOP_LIMIT, params={"trail_pct": 100.0}), "trailing stop needs"),
        (new(OrderType.MARKET, tif=TimeInForce.AT_THE_OPEN), "at-the-open needs a session"),
        (new(OrderType.LIMIT, px=9_900, tif=TimeInForce.AT_THE_CLOSE), "at-the-close needs"),
    ],
)
def test_malformed_orders_of_the_new_types_are_refused(intent, reason):
    refused(gate().on_intent(intent, 10), reason)


@pytest.mark.parametrize(
    "intent",
    [
        new(OrderType.MARKET_IF_TOUCHED, stop_px=9_800),
        new(OrderType.LIMIT_IF_TOUCHED, px=9_800, stop_px=9_800),
        new(OrderType.TRAILING_STOP, stop_px=50),
        new(OrderType.TRAILING_STOP_LIMIT, params={"trail_pct": 1.0, "limit_offset": 5}),
        new(OrderType.MARKET_TO_LIMIT),
        new(OrderType.MARKET, iid=2, tif=TimeInForce.AT_THE_OPEN),
        new(OrderType.LIMIT, px=9_900, iid=2, tif=TimeInForce.AT_THE_CLOSE),
    ],
)
def test_well_formed_orders_of_the_new_types_pass_as_sent(intent):
    o = approved(gate().on_intent(intent, 10))
    assert (o.order_type, o.tif, o.px, o.stop_px) == (
        intent.order_type,
        intent.tif,
        intent.px,
        intent.stop_px,
    )


def test_a_limit_if_touched_is_valued_and_banded_at_its_limit():
    """It goes out as a LIMIT at px: 9 lots at 120.00 = 1080 > 1000, though at the ask (101.00)
    it would be 909; and 120.00 is 20 % from the mid (band 10 %)."""
    ev = refused(
        gate().on_intent(new(OrderType.LIMIT_IF_TOUCHED, px=12_000, stop_px=9_800, qty=9), 10),
        "max order notional",
    )
    assert ev.value == pytest.approx(1_080.0)
    g = gate(price_band_pct=10.0)
    refused(
        g.on_intent(new(OrderType.LIMIT_IF_TOUCHED, px=12_000, stop_px=9_800), 10), "price band"
    )


@pytest.mark.parametrize(
    "otype, kw",
    [
        (OrderType.MARKET_IF_TOUCHED, {"stop_px": 1}),
        (OrderType.MARKET_TO_LIMIT, {}),
        (OrderType.TRAILING_STOP_LIMIT, {"stop_px": 10, "px": 1}),
    ],
)
def test_types_sent_at_the_market_are_valued_at_the_opposite_best(otype, kw):
    """A market-if-touched fires a MARKET, a market-to-limit takes the touch, a trailing-stop-
    limit's limit hangs off a stop level that does not exist yet: each is valued at the ask
    (101.00), not at its px / stop_px, and never price-banded."""
    g = gate(price_band_pct=1.0)
    approved(g.on_intent(new(otype, qty=9, **kw), 10))  # 909 at the ask
    ev = refused(g.on_intent(new(otype, qty=10, **kw), 10), "max order notional")
    assert ev.value == pytest.approx(1_010.0)
