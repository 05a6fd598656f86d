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


class _PublicOnly:
    """A simulated exchange seen through its public settlement API only: a paper venue that
    reached into the simulator's private state would fail on it."""

    def __init__(self, sim: SimExchange) -> None:
        self._sim = sim
        self.name = sim.name
        self.resolved: list[tuple[int, str, int]] = []

    def on_market_data(self, msg: object, now_ns: int) -> list:
        return self._sim.on_market_data(msg, now_ns)

    def poll(self, now_ns: int) -> list:
        return self._sim.poll(now_ns)

    def trades_instrument(self, iid: int) -> bool:
        return self._sim.trades_instrument(iid)

    def resolve(self, iid: int, resolution: str, now_ns: int) -> list:
        self.resolved.append((iid, resolution, now_ns))
        return self._sim.resolve(iid, resolution, now_ns)


def test_the_polymarket_paper_venue_settles_a_50_50_through_the_public_api():
    """10 YES bought at 0.41 (-4.10); the market channel says 50/50: pays 0.50 a share (+5)."""
    from decimal import Decimal

    from engine.enums import ExchangeStatusKind
    from engine.messages import ExchangeStatus
    from engine.venues.polymarket_paper import ResolvingPaper, resolved_reason

    ins = _binary()
    sim = SimExchange([ins], balance={"USD": 100.0})
    paper = ResolvingPaper(_PublicOnly(sim))
    paper.on_market_data(_quote_msg(ins, 0.40, 0.41, T0), T0)
    sim.submit(_order(ins, Side.BUY, 10, T0), T0)
    why = resolved_reason("50-50", Decimal("0.5"))
    t1 = T0 + 10**9
    ev = paper.on_market_data(ExchangeStatus(4, ExchangeStatusKind.HALTED, why, t1, t1), t1)
    (st,) = _of(ev, Settlement)
    assert (st.px, st.outcome, st.position) == (50, 1, 10)
    assert paper.inner.resolved == [(4, "0.5", t1)]
    assert sim._accounts.cash["USD"] == pytest.approx(100 - 4.10 + 5.0)
    again = paper.on_market_data(ExchangeStatus(4, ExchangeStatusKind.HALTED, why, t1, t1), t1)
    assert not _of(again, Settlement) and len(paper.inner.resolved) == 1


def test_the_betfair_paper_venue_settles_through_the_public_api():
    """Back Arsenal 10 @ 3.0, the stream says "settled: winner": +20, resolved once."""
    from engine.enums import ExchangeStatusKind
    from engine.messages import ExchangeStatus
    from engine.venues.betfair_paper import BetfairPaper

    a, b = _selection(5, "Arsenal"), _selection(6, "Chelsea")
    sim = SimExchange([a, b], balance={"GBP": 1_000.0})
    venue = OddsVenue(sim, odds_pivots([a, b]))
    _md(venue, a, 3.0, 3.05, T0)
    venue.submit(_order(a, Side.BUY, 10, T0, px=3.0), T0)
    public = _PublicOnly(venue)  # type: ignore[arg-type]
    paper = BetfairPaper(public, public)
    t1 = T0 + 10**9
    msg = ExchangeStatus(5, ExchangeStatusKind.HALTED, "settled: winner", t1, t1)
    (st,) = _of(paper.on_market_data(msg, t1), Settlement)
    assert (st.outcome, st.position) == (1, 10)
    assert public.resolved == [(5, "1", t1)]
    assert sim._accounts.cash["GBP"] == pytest.approx(1_000 + 20)
    paper.on_market_data(msg, t1 + 1)
    assert len(public.resolved) == 1


def _quote_msg(ins: Instrument, bid: float, ask: float, t: int):
    from engine.messages import Quote

    return Quote(ins.instrument_id, ins.px_to_ticks(bid), 10**6, ins.px_to_ticks(ask), 10**6, t, t)
