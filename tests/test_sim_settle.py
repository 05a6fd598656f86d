"""The simulated exchange's public settlement (``SimExchange.resolve``, what the Polymarket and
Betfair paper venues call when the real venue settles) and a binary's 50/50 resolution ("0.5":
half a share), each with the money by hand."""

from __future__ import annotations

import pytest

from engine.instruments import Instrument
from engine.messages import OrderExpired, OrderRejected, Settlement, SettlementKind, Side
from engine.settings import SettingError
from engine.venues.sim import SimExchange
from engine.venues.sim_odds import OddsVenue, odds_pivots
from tests.test_sim_kinds import _md, _ns, _of, _order

T0 = _ns("2026-05-31T12:00:00")


def _binary(resolution: str = "", resolves_ns: int = 0) -> Instrument:
    return Instrument(
        instrument_id=4,
        symbol="RAIN-YES",
        kind="binary",
        tick_size=0.01,
        market_id="rain-tomorrow",
        outcome="Yes",
        resolves_ns=resolves_ns,
        resolution=resolution,
    )


def test_a_binary_configured_to_resolve_half_pays_half_a_share():
    """100 YES bought at 0.40 (-40); a 50/50 pays 0.50 a share (+50): cash 10,010."""
    ins = _binary("0.5", _ns("2026-06-01T00:00:00"))
    sim = SimExchange([ins], balance={"USD": 10_000.0})
    _md(sim, ins, 0.39, 0.40, T0)
    sim.submit(_order(ins, Side.BUY, 100, T0), T0)
    (st,) = _of(_md(sim, ins, 0.60, 0.61, _ns("2026-06-01T00:00:01")), Settlement)
    assert (st.kind, st.px, st.outcome, st.position) == (SettlementKind.RESOLVED, 50, 1, 100)
    assert sim._accounts.cash["USD"] == pytest.approx(10_000 - 40 + 50)
    assert sim.positions()[4] == 0


def test_only_a_binary_may_resolve_half():
    with pytest.raises(SettingError, match="resolution"):
        Instrument(
            instrument_id=5,
            symbol="ARS",
            kind="betting",
            tick_size=0.01,
            market_id="1.1",
            resolution="0.5",
        )
    with pytest.raises(SettingError, match="resolution"):
        _binary("0.3")


def test_public_resolve_settles_now_expires_orders_and_happens_once():
    """Short 100 at 0.60 (+60), a bid resting; the venue says 50/50 now: the short pays 0.50
    a share (-50), the bid expires, the token no longer trades; resolving again does nothing."""
    ins = _binary()
    sim = SimExchange([ins], balance={"USD": 1_000.0})
    _md(sim, ins, 0.60, 0.61, T0)
    sim.submit(_order(ins, Side.SELL, 100, T0), T0)
    resting = _order(ins, Side.BUY, 10, T0, px=0.30)
    sim.submit(resting, T0)
    t1 = T0 + 10**9
    ev = sim.resolve(4, "0.5", t1)
    (st,) = _of(ev, Settlement)
    assert (st.px, st.outcome, st.position, st.ts_event) == (50, 1, -100, t1)
    assert [e.client_order_id for e in _of(ev, OrderExpired)] == [resting.client_order_id]
    assert sim._accounts.cash["USD"] == pytest.approx(1_000 + 60 - 50)
    assert sim.positions()[4] == 0 and sim._accounts.books[4].settled == "market resolved"
    assert sim.resolve(4, "1", t1 + 1) == []
    rej = _of(sim.submit(_order(ins, Side.BUY, 1, t1 + 2), t1 + 2), OrderRejected)
    assert "no longer trades" in rej[0].reason
    with pytest.raises(ValueError, match="binary or betting"):
        sim.resolve(99, "1", t1)


def _selection(iid: int, name: str) -> Instrument:
    return Instrument(
        instrument_id=iid,
        symbol=name,
        kind="betting",
        currency="GBP",
        tick_size=0.01,
        market_id="1.2345",
        outcome=name,
    )


def test_public_resolve_of_a_betting_market_charges_commission_on_its_net_once_all_settle():
    """Back Arsenal 10 @ 3.0 (wins: +20), lay Chelsea 10 @ 2.0 (loses: +10); neither has a
    configured resolution. The first selection resolved charges nothing yet (the venue settles
    the whole market); the last charges 5% of the net 30 = 1.50."""
    a, b = _selection(5, "Arsenal"), _selection(6, "Chelsea")
    sim = SimExchange([a, b], balance={"GBP": 1_000.0}, commission_pct=5.0)
    venue = OddsVenue(sim, odds_pivots([a, b]))
    _md(venue, a, 3.0, 3.05, T0)
    _md(venue, b, 1.98, 2.0, T0)
    venue.submit(_order(a, Side.BUY, 10, T0, px=3.0), T0)
    venue.submit(_order(b, Side.SELL, 10, T0, px=2.0), T0)
    (sa,) = _of(sim.resolve(5, "1", T0 + 1), Settlement)
    assert (sa.outcome, sa.fee) == (1, 0.0)
    (sb,) = _of(sim.resolve(6, "0", T0 + 2), Settlement)
    assert sb.outcome == 0 and sb.fee == pytest.approx(1.5)
    assert sim._accounts.cash["GBP"] == pytest.approx(1_000 + 20 + 10 - 1.5)
    assert sim.positions() == {5: 0, 6: 0}
