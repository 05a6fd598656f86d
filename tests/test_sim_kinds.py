"""The simulated exchange lists every instrument kind: what the market does to a position on its
own (engine/venues/sim_accounts.py), each with hand-computed money: a perpetual's funding, a
margin account's liquidation, an FX rollover (Wednesday x3), a future's expiry, a binary
contract resolved 1, 0 and voided, back and lay bets settled with commission (matched on the
odds ladder through engine/venues/sim_odds.py), and the venue's record bringing it all back."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import pytest

from engine.instruments import Instrument
from engine.messages import (
    Financing,
    FundingPayment,
    Liquidation,
    MarginStatus,
    NewOrder,
    OrderAccepted,
    OrderExpired,
    OrderFilled,
    OrderPartiallyFilled,
    OrderRejected,
    OrderReplaced,
    OrderType,
    Quote,
    ReplaceOrder,
    Settlement,
    SettlementKind,
    Side,
    TimeInForce,
    Trade,
)
from engine.venues.sim import SimExchange
from engine.venues.sim_odds import OddsVenue, odds_pivots

H = 3_600 * 10**9


def _ns(iso: str) -> int:
    return int(datetime.fromisoformat(iso).replace(tzinfo=UTC).timestamp()) * 10**9


def _quote(ins: Instrument, bid: float, ask: float, t: int, qty: int = 10**9) -> Quote:
    return Quote(ins.instrument_id, ins.px_to_ticks(bid), qty, ins.px_to_ticks(ask), qty, t, t)


def _md(venue, ins: Instrument, bid: float, ask: float, t: int) -> list:
    return venue.on_market_data(_quote(ins, bid, ask, t), t)


_COID = [0]


def _order(ins: Instrument, side: int, qty: int, t: int, px: float = 0.0) -> NewOrder:
    _COID[0] += 1
    limit = px > 0
    return NewOrder(
        client_order_id=_COID[0],
        strategy_id=1,
        instrument_id=ins.instrument_id,
        side=side,
        order_type=OrderType.LIMIT if limit else OrderType.MARKET,
        tif=TimeInForce.GTC if limit else TimeInForce.IOC,
        px=ins.px_to_ticks(px) if limit else 0,
        qty=qty,
        ts_origin=t,
        ts_approved=t,
    )


def _of(events: list, tp: type) -> list:
    return [e for e in events if type(e) is tp]


def _fills(events: list) -> list:
    return [e for e in events if isinstance(e, OrderPartiallyFilled)]


PERP = Instrument(
    instrument_id=1,
    symbol="BTCUSDT-PERP",
    kind="perpetual",
    currency="USDT",
    base_currency="BTC",
    tick_size=0.1,
    lot_size=0.001,
    funding_interval_s=8 * 3600,
    funding_rate=0.0001,
    initial_margin=0.1,
    maintenance_margin=0.05,
)


def test_perpetual_pays_funding_at_its_schedule_at_the_mark():
    sim = SimExchange([PERP], balance={"USDT": 20_000.0})  # 10% of 2 x 50000 to open
    t0 = _ns("2026-01-05T06:00:00")
    _md(sim, PERP, 50_000.0, 50_000.2, t0)
    ev = sim.submit(_order(PERP, Side.BUY, 2_000, t0), t0)  # 2 BTC at the ask, 50000.2
    assert _fills(ev)[0].fill_px == 500_002
    # the 08:00 UTC funding: the mark then is the mid rounded down, 50100.1 (501001 ticks)
    ev = _md(sim, PERP, 50_100.0, 50_100.2, t0 + H)
    assert _of(ev, FundingPayment) == []  # 07:00: nothing due yet
    ev = _md(sim, PERP, 50_200.0, 50_200.2, t0 + 3 * H)  # 09:00
    (fp,) = _of(ev, FundingPayment)
    assert fp.ts_event == _ns("2026-01-05T08:00:00")
    assert fp.mark_px == 501_001 and fp.position == 2_000 and fp.currency == "USDT"
    # longs pay a positive rate: 2 BTC x 50100.1 x 0.0001 = 10.02002
    assert fp.amount == pytest.approx(-2 * 50_100.1 * 0.0001)
    base = fp.payment_id - 1  # the venue's name in the top bits: ids differ between venues
    assert base >> 40 and SimExchange([PERP], name="other")._accounts._next_id >> 40 != base >> 40
    # 16:00 at the 09:00 mark (50200.1): the same formula, a second payment
    ev = _md(sim, PERP, 50_200.0, 50_200.2, _ns("2026-01-05T16:00:00"))
    (fp2,) = _of(ev, FundingPayment)
    assert fp2.amount == pytest.approx(-2 * 50_200.1 * 0.0001) and fp2.payment_id == base + 2
    # the venue's cash: 10000 - 2 x 50000.2 + both payments (positions are not cash)
    cash = 20_000 - 2 * 50_000.2 - 2 * 50_100.1 * 0.0001 - 2 * 50_200.1 * 0.0001
    assert sim._accounts.cash["USDT"] == pytest.approx(cash)


def test_flat_perpetual_pays_no_funding():
    sim = SimExchange([PERP])
    t0 = _ns("2026-01-05T06:00:00")
    _md(sim, PERP, 50_000.0, 50_000.2, t0)
    assert _of(_md(sim, PERP, 50_000.0, 50_000.2, t0 + 30 * H), FundingPayment) == []


def test_margin_account_is_liquidated_below_maintenance():
    sim = SimExchange([PERP], balance={"USDT": 1_000.0}, taker_fee_bps=4.0)
    t0 = _ns("2026-01-05T01:00:00")
    _md(sim, PERP, 49_999.9, 50_000.0, t0)
    ev = sim.submit(_order(PERP, Side.BUY, 200, t0), t0)  # 0.2 BTC at 50000: 10000 notional
    (f,) = _fills(ev)
    assert f.fee == pytest.approx(10_000 * 4e-4)  # 4.0
    (ms,) = _of(ev, MarginStatus)
    assert not ms.margin_call and ms.initial_margin == pytest.approx(0.2 * 49_999.9 * 0.1)
    # mark 47400: equity = 1000 - 4 - 0.2 x 2600 = 476 >= maintenance 0.2 x 47400 x 5% = 474
    ev = _md(sim, PERP, 47_399.9, 47_400.1, t0 + 1)
    assert _of(ev, Liquidation) == [] and _of(ev, MarginStatus) == []
    # mark 47300: equity 456 < 473: margin call, liquidated at the mark with the taker fee
    ev = _md(sim, PERP, 47_299.9, 47_300.1, t0 + 2)
    call, after = _of(ev, MarginStatus)
    assert call.margin_call and call.equity == pytest.approx(456.0)
    assert call.maintenance_margin == pytest.approx(473.0)
    (liq,) = _of(ev, Liquidation)
    assert (liq.side, liq.px, liq.qty) == (Side.SELL, 473_000, 200)
    assert liq.fee == pytest.approx(0.2 * 47_300 * 4e-4)  # 3.784
    assert not after.margin_call and after.maintenance_margin == 0
    # what is left: 1000 - 4 - 540 - 3.784
    assert after.equity == pytest.approx(452.216)
    assert sim.positions()[1] == 0


def test_liquidation_cancels_open_orders_of_the_instrument():
    sim = SimExchange([PERP], balance={"USDT": 1_100.0})
    t0 = _ns("2026-01-05T01:00:00")
    _md(sim, PERP, 49_999.9, 50_000.0, t0)
    sim.submit(_order(PERP, Side.BUY, 200, t0), t0)
    sim.submit(_order(PERP, Side.BUY, 10, t0, px=40_000.0), t0)
    # mark 46500: equity 1100 - 0.2 x 3500 = 400 < maintenance 0.2 x 46500 x 5% = 465
    ev = _md(sim, PERP, 46_499.9, 46_500.1, t0 + 1)
    assert [e.reason for e in ev if type(e).__name__ == "OrderCanceled"] == ["liquidation"]
    assert sim.open_orders() == []


EURUSD = Instrument(
    instrument_id=2,
    symbol="EUR/USD",
    kind="fx",
    currency="USD",
    base_currency="EUR",
    tick_size=0.00001,
    lot_size=1.0,
    pip_size=0.0001,
    financing_long_rate=-0.02,
    financing_short_rate=0.01,
)


def test_fx_position_is_financed_at_the_new_york_rollover_wednesday_three_days():
    sim = SimExchange([EURUSD])
    t0 = _ns("2026-01-06T12:00:00")  # a Tuesday; 17:00 New York = 22:00 UTC in January
    _md(sim, EURUSD, 1.09999, 1.10001, t0)
    sim.submit(_order(EURUSD, Side.BUY, 100_000, t0), t0)
    ev = _md(sim, EURUSD, 1.19999, 1.20001, _ns("2026-01-06T21:59:59"))
    assert _of(ev, Financing) == []
    ev = _md(sim, EURUSD, 1.19999, 1.20001, _ns("2026-01-06T22:00:01"))
    (tue,) = _of(ev, Financing)
    assert tue.ts_event == _ns("2026-01-06T22:00:00") and tue.days == 1
    # 100000 EUR x 1.2 x -2% / 365: paid on the long
    assert tue.amount == pytest.approx(100_000 * 1.2 * -0.02 / 365) and tue.currency == "USD"
    # Wednesday's rollover counts the weekend
    ev = _md(sim, EURUSD, 1.19999, 1.20001, _ns("2026-01-07T23:00:00"))
    (wed,) = _of(ev, Financing)
    assert wed.days == 3 and wed.amount == pytest.approx(100_000 * 1.2 * -0.02 / 365 * 3)
    # short: the short rate (received); Saturday and Sunday have no rollover
    sim.submit(_order(EURUSD, Side.SELL, 150_000, wed.ts_event + 1), wed.ts_event + 1)
    ev = _md(sim, EURUSD, 1.19999, 1.20001, _ns("2026-01-12T12:00:00"))  # Thu, Fri only
    days = [e.days for e in _of(ev, Financing)]
    assert days == [1, 1]
    assert _of(ev, Financing)[0].amount == pytest.approx(50_000 * 1.2 * 0.01 / 365)


ES = Instrument(
    instrument_id=3,
    symbol="ESH6",
    kind="future",
    tick_size=0.25,
    lot_size=1.0,
    contract_size=50.0,
    initial_margin=0.06,
    maintenance_margin=0.05,
    expiry_ns=_ns("2026-03-20T13:30:00"),
)


def test_future_settles_at_the_mark_at_expiry_and_its_orders_expire():
    sim = SimExchange([ES], balance={"USD": 100_000.0})
    t0 = _ns("2026-03-20T12:00:00")
    _md(sim, ES, 5_000.0, 5_000.25, t0)
    sim.submit(_order(ES, Side.BUY, 2, t0), t0)  # 2 contracts at 5000.25
    resting = _order(ES, Side.BUY, 1, t0, px=4_900.0)
    sim.submit(resting, t0)
    ev = _md(sim, ES, 5_009.75, 5_010.25, _ns("2026-03-20T13:30:05"))
    (st,) = _of(ev, Settlement)
    assert st.kind == SettlementKind.EXPIRY and st.ts_event == ES.expiry_ns
    # the mark at expiry: the 13:00 quote's mid is gone; at 13:30 the book was 5000 / 5000.25
    assert st.px == (20_000 + 20_001) // 2 and st.position == 2
    (exp,) = _of(ev, OrderExpired)
    assert exp.client_order_id == resting.client_order_id
    # cash: 100000 - 2 x 50 x 5000.25 + 2 x 50 x 5000.0 (the mark, in ticks of 0.25)
    assert sim._accounts.cash["USD"] == pytest.approx(100_000 - 2 * 50 * 0.25)
    assert sim.positions()[3] == 0
    ev = sim.submit(_order(ES, Side.BUY, 1, st.ts_event + 10**10), st.ts_event + 10**10)
    assert "no longer trades: expired" in _of(ev, OrderRejected)[0].reason


def _binary(resolution: str) -> Instrument:
    return Instrument(
        instrument_id=4,
        symbol="RAIN-YES",
        kind="binary",
        tick_size=0.01,
        market_id="rain-tomorrow",
        outcome="Yes",
        resolves_ns=_ns("2026-06-01T00:00:00"),
        resolution=resolution,
    )


@pytest.mark.parametrize(
    ("resolution", "kind", "px", "outcome", "cash"),
    [
        ("1", SettlementKind.RESOLVED, 100, 1, 10_000 - 40 + 100),  # 100 shares pay 1 each
        ("0", SettlementKind.RESOLVED, 0, 0, 10_000 - 40),
        ("void", SettlementKind.VOID, 40, -1, 10_000),  # unwound at the average cost, 0.40
    ],
)
def test_binary_contract_resolves(resolution, kind, px, outcome, cash):
    ins = _binary(resolution)
    sim = SimExchange([ins], balance={"USD": 10_000.0})
    t0 = _ns("2026-05-31T12:00:00")
    _md(sim, ins, 0.39, 0.40, t0)
    sim.submit(_order(ins, Side.BUY, 100, t0), t0)
    ev = _md(sim, ins, 0.98, 0.99, _ns("2026-06-01T00:00:01"))
    (st,) = _of(ev, Settlement)
    assert (st.kind, st.px, st.outcome, st.position) == (kind, px, outcome, 100)
    assert sim._accounts.cash["USD"] == pytest.approx(cash)


def test_binary_prices_outside_zero_one_are_refused():
    ins = _binary("")
    sim = SimExchange([ins])
    ev = sim.submit(_order(ins, Side.BUY, 1, 1, px=1.0), 1)
    assert "outside" in _of(ev, OrderRejected)[0].reason


def _selection(iid: int, name: str, resolution: str) -> Instrument:
    return Instrument(
        instrument_id=iid,
        symbol=name,
        kind="betting",
        currency="GBP",
        tick_size=0.01,
        lot_size=1.0,
        market_id="1.2345",
        outcome=name,
        resolves_ns=_ns("2026-04-01T16:00:00"),
        resolution=resolution,
    )


def _betting(res_a: str, res_b: str) -> tuple[OddsVenue, Instrument, Instrument]:
    a, b = _selection(5, "Arsenal", res_a), _selection(6, "Chelsea", res_b)
    sim = SimExchange([a, b], balance={"GBP": 1_000.0}, commission_pct=5.0)
    return OddsVenue(sim, odds_pivots([a, b])), a, b


def test_back_and_lay_match_on_the_odds_ladder_and_settle_with_commission():
    venue, a, b = _betting("1", "0")
    t0 = _ns("2026-04-01T14:00:00")
    # bids: odds available to back (best = highest), asks: odds available to lay
    _md(venue, a, 3.0, 3.05, t0)
    _md(venue, b, 1.98, 2.0, t0)
    # a back at 2.9 or better takes the 3.0 offered to back (a backer gets the higher odds)
    (f,) = _fills(venue.submit(_order(a, Side.BUY, 10, t0, px=2.9), t0))
    assert (f.fill_px, f.fill_qty) == (300, 10)
    # a lay at 2.02 or lower takes the 2.0 offered to lay
    (g,) = _fills(venue.submit(_order(b, Side.SELL, 10, t0, px=2.02), t0))
    assert g.fill_px == 200
    # a back at 3.1 (above the best back odds) rests; off the ladder is refused
    assert _fills(venue.submit(_order(a, Side.BUY, 5, t0, px=3.1), t0)) == []
    rej = _of(venue.submit(_order(a, Side.BUY, 5, t0, px=3.03), t0), OrderRejected)
    assert "ladder" in rej[0].reason
    ev = _md(venue, a, 3.0, 3.05, _ns("2026-04-01T16:00:00"))
    st = {s.instrument_id: s for s in _of(ev, Settlement)}
    assert st[5].outcome == 1 and st[6].outcome == 0
    # back 10 @ 3.0 won: +20; lay 10 @ 2.0, the selection lost: +10; 5% of the net 30
    assert st[5].fee + st[6].fee == pytest.approx(1.5)
    assert venue._accounts.cash["GBP"] == pytest.approx(1_000 + 20 + 10 - 1.5)
    assert [e.client_order_id for e in _of(ev, OrderExpired)] == [_COID[0] - 1]


def test_lost_back_and_won_lay_pay_no_commission_and_void_returns_stakes():
    venue, a, b = _betting("0", "1")
    t0 = _ns("2026-04-01T14:00:00")
    _md(venue, a, 3.0, 3.05, t0)
    _md(venue, b, 1.98, 2.0, t0)
    venue.submit(_order(a, Side.BUY, 10, t0, px=3.0), t0)  # back 10 @ 3.0: loses 10
    venue.submit(_order(b, Side.SELL, 10, t0, px=2.0), t0)  # lay 10 @ 2.0: liability 10
    ev = _md(venue, a, 3.0, 3.05, _ns("2026-04-01T17:00:00"))
    assert sum(s.fee for s in _of(ev, Settlement)) == 0
    assert venue._accounts.cash["GBP"] == pytest.approx(1_000 - 10 - 10)
    venue, a, b = _betting("void", "void")
    _md(venue, a, 3.0, 3.05, t0)
    venue.submit(_order(a, Side.BUY, 10, t0, px=3.0), t0)
    ev = _md(venue, a, 3.0, 3.05, _ns("2026-04-01T17:00:00"))
    assert {s.kind for s in _of(ev, Settlement)} == {SettlementKind.VOID}
    assert venue._accounts.cash["GBP"] == pytest.approx(1_000)


def test_record_brings_back_settled_positions_and_cash(tmp_path):
    path = tmp_path / "sim.rec"
    sim = SimExchange([ES, PERP], balance={"USD": 100_000.0}, record_path=path)
    t0 = _ns("2026-03-20T12:00:00")
    _md(sim, ES, 5_000.0, 5_000.25, t0)
    sim.submit(_order(ES, Side.BUY, 2, t0), t0)
    _md(sim, ES, 5_010.0, 5_010.25, _ns("2026-03-20T14:00:00"))
    cash = sim._accounts.cash["USD"]
    sim.close_record()
    again = SimExchange([ES, PERP], balance={"USD": 100_000.0}, record_path=path)
    assert again.positions()[3] == 0 and again._accounts.books[3].settled
    assert again._accounts.cash["USD"] == pytest.approx(cash)
    again.close_record()


def test_spot_only_venue_has_no_accounts():
    spot = Instrument(instrument_id=9, symbol="AAPL")
    assert SimExchange([spot])._accounts is None
    with pytest.raises(ValueError, match="position_mode"):
        SimExchange([spot], position_mode="pooled")  # netting or hedging (test_sim_hedging)


def test_fill_types_are_unchanged_for_kinds():
    # a filled order on a perpetual is an ordinary OrderFilled (the portfolio books it)
    sim = SimExchange([PERP], balance={"USDT": 100.0})
    t0 = _ns("2026-01-05T01:00:00")
    _md(sim, PERP, 49_999.9, 50_000.0, t0)
    assert type(_fills(sim.submit(_order(PERP, Side.BUY, 1, t0), t0))[0]) is OrderFilled


def test_synthetic_market_prices_each_kind_within_its_bounds():
    from engine.betting import betfair_ladder_ok
    from engine.messages import BookDelta, BookSnapshot, Trade
    from engine.sources.synthetic import InstrumentSpec, SyntheticMarket

    specs = [  # wild volatility: the walk pushes against the bounds
        InstrumentSpec(1, 0.01, 1.0, 0.5, annual_vol=5_000.0, kind="binary"),
        InstrumentSpec(2, 0.01, 1.0, 3.0, annual_vol=5_000.0, kind="betting"),
        InstrumentSpec(3, 0.00001, 1_000.0, 1.085, annual_vol=0.08, kind="fx"),
    ]
    pxs: dict[int, list[int]] = {1: [], 2: [], 3: []}
    for m in SyntheticMarket(specs, seed=3, mean_interval_ns=10**9).events(20_000):
        if isinstance(m, Quote):
            assert m.bid_px < m.ask_px
            pxs[m.instrument_id] += [m.bid_px, m.ask_px]
        elif isinstance(m, BookDelta | Trade):
            pxs[m.instrument_id].append(m.px)
        elif isinstance(m, BookSnapshot):
            pxs[m.instrument_id] += m.bid_px + m.ask_px
    assert min(pxs[1]) >= 1 and max(pxs[1]) <= 99 and max(pxs[1]) - min(pxs[1]) > 50
    assert all(betfair_ladder_ok(p, 0.01) for p in pxs[2]) and max(pxs[2]) > 1_000
    assert min(pxs[3]) > 100_000 and max(pxs[3]) < 120_000  # EUR/USD stays near 1.085


def test_betting_orders_read_back_in_odds():
    """Resting, replaced, reported and filled: every price the venue says is decimal odds."""
    venue, a, _ = _betting("", "")
    t0 = _ns("2026-04-01T14:00:00")
    _md(venue, a, 3.0, 3.2, t0)
    # a lay at 3.1 (no lay offered that low: the best is 3.2) rests, the new best back odds
    o = _order(a, Side.SELL, 10, t0, px=3.1)
    ev = venue.submit(o, t0)
    assert [e.px for e in _of(ev, OrderAccepted)] == [310] and _fills(ev) == []
    assert [x.px for x in venue.open_orders()] == [310]
    assert venue.query_order(o.client_order_id).px == 310
    rep = ReplaceOrder(o.client_order_id, 1, a.instrument_id, 315, 10, t0, t0)
    assert [e.px for e in _of(venue.replace(rep, t0), OrderReplaced)] == [315]
    # a backer takes 4 at 3.15 (more than the market's 3.0): ours, the only lay there
    ev = venue.on_market_data(Trade(a.instrument_id, 315, 4, Side.BUY, t0 + 1, t0 + 1, 1), t0 + 1)
    assert [(f.fill_px, f.fill_qty) for f in _fills(ev)] == [(315, 4)]
    assert [f.fill_px for f in venue.fills_since(0)][-1] == 315
    # a lay takes the market's lay offer at 3.2
    assert venue.takeable(a.instrument_id, Side.SELL)[0][0] == 320


def test_margin_call_before_liquidation_with_a_buffer():
    sim = SimExchange([PERP], balance={"USDT": 1_000.0}, liquidation_buffer=0.5)
    t0 = _ns("2026-01-05T01:00:00")
    _md(sim, PERP, 49_999.9, 50_000.0, t0)
    sim.submit(_order(PERP, Side.BUY, 200, t0), t0)
    # mark 47300: equity 460 < maintenance 473 (call) but >= 473 x 0.5 (no liquidation yet)
    ev = _md(sim, PERP, 47_299.9, 47_300.1, t0 + 1)
    assert [m.margin_call for m in _of(ev, MarginStatus)] == [True] and not _of(ev, Liquidation)
    ev = _md(sim, PERP, 47_299.9, 47_300.1, t0 + 2)
    assert _of(ev, MarginStatus) == []  # no news while still called
    # mark 46000: equity 200 < 460 x 0.5 = 230: liquidated
    ev = _md(sim, PERP, 45_999.9, 46_000.1, t0 + 3)
    assert [(x.px, x.qty) for x in _of(ev, Liquidation)] == [(460_000, 200)]
    assert sim._accounts.cash["USDT"] == pytest.approx(1_000 - 0.2 * 4_000)


def test_schedule_runs_on_market_time_when_the_venue_clock_differs():
    """In a process the venue's clock is the monotonic one and the market's is its own (the
    synthetic market's from 0, a live venue's UTC): funding and resolution follow the market's
    ts_event and are delivered at once."""
    perp = msgspec.structs.replace(PERP, funding_interval_s=1)
    coin = msgspec.structs.replace(_binary("1"), resolves_ns=3 * 10**9)
    sim = SimExchange([perp, coin], balance={"USDT": 10_000.0, "USD": 100.0})
    mono = 50_000 * 10**9  # the venue's clock, far ahead of the market's

    def md(ins: Instrument, bid: float, ask: float, market_t: int, lag: int = 0) -> list:
        return sim.on_market_data(_quote(ins, bid, ask, market_t), mono + market_t + lag)

    md(perp, 49_999.9, 50_000.1, 10)
    assert _of(md(coin, 0.39, 0.40, 20), Settlement) == []  # not resolved at market time 0
    sim.submit(_order(perp, Side.BUY, 1_000, mono + 30), mono + 30)
    sim.submit(_order(coin, Side.BUY, 10, mono + 30), mono + 30)
    ev = md(perp, 49_999.9, 50_000.1, 2 * 10**9 + 5, lag=7 * 10**9)  # market 2 s, clock later
    assert [f.ts_event for f in _of(ev, FundingPayment)] == [10**9, 2 * 10**9]
    assert all(f.amount == pytest.approx(-50_000 * 0.0001) for f in _of(ev, FundingPayment))
    ev = md(coin, 0.39, 0.40, 3 * 10**9 + 1, lag=7 * 10**9)
    (st,) = _of(ev, Settlement)
    assert st.ts_event == 3 * 10**9 and st.outcome == 1 and st.position == 10


_PAPER = """
[engine]
id = "{eid}"
var_dir = "{var}"
[inference]
enabled = false
[report]
html = false
[metrics]
listen = "127.0.0.1:0"
[storage.postgres]
mode = "off"
[sim]
account = "margin"
maker_fee_bps = 0.0
taker_fee_bps = 0.0
[exec]
price_gap_bps = 0.0
[portfolio]
cash = {{ USD = 100000.0, USDT = 100000.0 }}
benchmark = ""
[risk]
max_position_pct = 100.0
max_sector_pct = 100.0
flash_band_pct = 50.0
price_band_pct = 50.0
[[instruments]]
instrument_id = 1
symbol = "BTC-PERP"
kind = "perpetual"
currency = "USDT"
tick_size = 0.1
lot_size = 0.001
initial_margin = 0.05
maintenance_margin = 0.025
funding_interval_s = 1
funding_rate = 0.0001
initial_price = 60000.0
annual_vol = 0.6
[[instruments]]
instrument_id = 2
symbol = "RAIN-YES"
kind = "binary"
market_id = "rain"
tick_size = 0.01
initial_price = 0.35
annual_vol = 1.0
resolves_ns = 300000000
resolution = "1"
[[strategies]]
id = 1
path = "tests.test_backtest_kinds:Script"
instruments = ["BTC-PERP", "RAIN-YES"]
[strategies.params]
orders = [["BTC-PERP", "buy", 100, 0], ["RAIN-YES", "buy", 50, 0]]
"""


@pytest.mark.timeout(240)
def test_paper_run_on_the_simulator_pays_funding_and_resolves_a_binary(tmp_path):
    """`gekko run` (paper, real processes, the synthetic market's clock from 0): a binary that
    resolves at market time 0.3 s pays 1 a share, a perpetual pays funding every market second;
    exec's portfolio, the run's record and the venue's own record agree, by hand."""
    import json
    import os
    import sys
    import time

    from engine.venues.sim_record import read_frames
    from tests.test_engine_e2e import counter
    from tests.venue_e2e import engine, stop, summary, wait_for

    eid = "sk" + os.urandom(4).hex()
    cfg = tmp_path / "gekko.toml"
    cfg.write_text(_PAPER.format(eid=eid, var=(tmp_path / "var").as_posix()))
    cmd = [sys.executable, "-m", "ops.cli", "run", "--config", str(cfg), "--quiet"]
    with engine(cmd, dict(os.environ)) as proc:
        assert wait_for(lambda: counter(eid, "exec", "fills") >= 2, 120, proc)
        time.sleep(6)  # the market's clock passes 0.3 s (it runs at ~0.1-0.25x wall time)
        _, err = stop(proc)
    assert proc.returncode == 0, err[-3000:]
    s = summary(tmp_path)
    assert s["consistent"] is True and s["account"]["settlements"] == 1, s["account"]
    fills = (tmp_path / "var" / "last_run" / "fills.jsonl").read_text().splitlines()
    coin = [f for f in map(json.loads, fills) if f["instrument_id"] == 2]
    cost = sum(f["fill_px"] * 0.01 * f["fill_qty"] for f in coin)
    assert sum(f["fill_qty"] for f in coin) == 50
    assert s["positions"]["RAIN-YES"]["position"] == 0
    assert s["positions"]["RAIN-YES"]["realized"] == pytest.approx(50 * 1.0 - cost)
    (rec,) = (tmp_path / "var" / "venue").iterdir()
    frames, _ = read_frames(rec.read_bytes())
    paid = [f for f in frames if type(f) is FundingPayment]
    assert [f.ts_event for f in paid] == [k * 10**9 for k in range(1, len(paid) + 1)]
    funding = sum(-f.position * f.mark_px * 0.1 * 0.001 * 0.0001 for f in paid)
    assert s["funding"] == pytest.approx(funding)
    assert [type(f) for f in frames if type(f) is Settlement] == [Settlement]


def test_orders_adding_to_a_margined_position_need_the_initial_margin():
    sim = SimExchange([PERP], balance={"USDT": 1_000.0})
    t0 = _ns("2026-01-05T01:00:00")
    _md(sim, PERP, 49_999.9, 50_000.0, t0)
    # 0.21 BTC at the mark 49999.9: 10% = 1050 > equity 1000
    (rej,) = _of(sim.submit(_order(PERP, Side.BUY, 210, t0), t0), OrderRejected)
    assert rej.reason.startswith("insufficient margin: 1050.00 USDT")
    assert _fills(sim.submit(_order(PERP, Side.BUY, 200, t0), t0))  # 999.99: fits
    # a limit buy adds 0.01 x 40000 x 10% = 40 more: refused; a sell reducing it always passes
    assert _of(sim.submit(_order(PERP, Side.BUY, 10, t0, px=40_000.0), t0), OrderRejected)
    assert _fills(sim.submit(_order(PERP, Side.SELL, 150, t0), t0))
