"""Conformance of every registered venue kind to the two venue interfaces (engine/venues/).

Parametrized by ``engine.venues.registry.known_kinds()``: a new kind (a real exchange) runs these
same tests against its local protocol server by adding an entry to ``SETUPS``; a kind without
one fails ``test_every_kind_has_a_conformance_setup``. The real kinds (engine/venues/ccxt_kinds.py)
run against the local servers of tests/venues, paper (their execution side is the simulated
exchange matching against the venue's real book); a live client's conformance is
tests/test_ccxt_exec*.py's.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from engine.instruments import InstrumentTable
from engine.messages import (
    Bar,
    BookDelta,
    BookSnapshot,
    CancelOrder,
    ExchangeStatus,
    NewOrder,
    OrderAccepted,
    OrderPartiallyFilled,
    OrderRejected,
    OrderType,
    Quote,
    ReplaceOrder,
    Side,
    TimeInForce,
    Trade,
)
from engine.order_states import OrderStatus
from engine.venues.base import ExecutionClient
from engine.venues.data import InstrumentRules, MarketDataClient, SequenceGuard
from engine.venues.registry import (
    UnknownVenueKind,
    VenueConfig,
    VenueKind,
    known_kinds,
    lookup,
    register,
)
from engine.venues.reports import BalanceReport, FillReport, OrderStatusReport, PositionReport
from ops.config import parse_config
from procs.build import venue_configs
from tests.conftest import ROOT

SETTLE_NS = 10_000_000_000  # past any latency the venue models: its answers are all due
MD_TYPES = (BookSnapshot, BookDelta, Quote, Trade, Bar, ExchangeStatus)


@dataclass
class Setup:
    """One venue kind under test: its config, the instruments it lists, and what to stop
    after the test (a local server)."""

    config: VenueConfig
    instruments: InstrumentTable
    close: Callable[[], None] | None = None


def _sim_setup(tmp_path: Path) -> Setup:
    cfg = parse_config((ROOT / "config.toml").read_text())
    vc = venue_configs(cfg, record_path=tmp_path / "sim.venue")[0]
    return Setup(vc, cfg.instrument_table())


_SERVED: dict[str, tuple[object, object]] = {}  # kind -> (local server, resolved config)


def _real_setup(
    kind: str, server_kind: str, extra: str | Callable[[Any, Path], str] = ""
) -> Callable[[Path], Setup]:
    """A real kind, paper, against the local server of ``server_kind``: config.toml's
    ``[[venues]]`` entry → the run's pre-flight (markets loaded from the server over ccxt) →
    ``venue_configs``, as `gekko run --venue` builds it. One server and pre-flight per kind for
    the module (``_stop_servers``); each test builds its own clients."""

    def make(tmp_path: Path) -> Setup:
        from tests.test_venue_wiring import local_server, venue_run_config

        pytest.importorskip("engine.venues.ccxt_data", reason="the ccxt market-data client")
        if kind not in _SERVED:
            server = local_server(server_kind)
            try:
                text = extra(server, tmp_path) if callable(extra) else extra  # its address
                _SERVED[kind] = (server, venue_run_config(kind, server, text))
            except BaseException:
                server.stop()
                raise
        cfg: Any = _SERVED[kind][1]
        vc = venue_configs(cfg, record_path=tmp_path / f"{kind}.venue")[0]
        return Setup(vc, cfg.instrument_table())

    return make


def _oanda_keys(tmp_path: Path) -> str:
    """OANDA's prices need the account's keys (a 0600 file) and its id."""
    from tests.venues.oanda import ACCOUNT, write_credentials

    return f'account_id = "{ACCOUNT}"\ncredentials_file = "{write_credentials(tmp_path)}"\n'


@pytest.fixture(scope="module", autouse=True)
def _stop_servers() -> Iterator[None]:
    yield
    while _SERVED:
        server: Any = _SERVED.popitem()[1][0]
        server.stop()


SETUPS: dict[str, Callable[[Path], Setup]] = {
    "sim": _sim_setup,
    "binanceus": _real_setup("binanceus", "binanceus"),
    "coinbase": _real_setup("coinbase", "coinbase"),
    "kraken": _real_setup("kraken", "kraken"),
    "ccxt": _real_setup("ccxt", "binanceus", 'exchange = "binanceus"\nsymbols = ["BTC/USDT"]\n'),
    "oanda": lambda tmp: _real_setup("oanda", "oanda", _oanda_keys(tmp))(tmp),
    "polymarket": _real_setup(
        "polymarket", "polymarket", 'symbols = ["will-it-rain-in-lisbon-YES/USDC"]\n'
    ),
    "betfair": _real_setup("betfair", "betfair", lambda srv, tmp: _betfair_extra(srv, tmp)),
    "binanceusdm": _real_setup("binanceusdm", "binanceusdm"),
    "krakenfutures": _real_setup("krakenfutures", "krakenfutures"),
}


def _betfair_extra(server: Any, tmp_path: Path) -> str:
    """Betfair's stream address and certificate, and the keys even its market data needs."""
    from tests.venues.betfair import venue_extra

    return venue_extra(server, tmp_path)


@pytest.fixture(params=known_kinds())
def setup(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Setup]:
    if request.param not in SETUPS:
        pytest.fail(f"venue kind {request.param!r} has no conformance setup")
    s = SETUPS[request.param](tmp_path)
    yield s
    if s.close is not None:
        s.close()


def test_every_kind_has_a_conformance_setup() -> None:
    assert set(known_kinds()) <= set(SETUPS)


# --- market data ----------------------------------------------------------------------------------
LIVE_WAIT_S = 5.0  # a live client: the longest wait for its first message
LIVE_TAKE_S = 0.5  # ... and how long it is read after that


def _take(
    md: MarketDataClient, n: int, enough: Callable[[list[object]], bool] | None = None
) -> list[object]:
    """Up to ``n`` messages: a finite source's first ``n``; a live client's (``live``,
    ``poll_updates``: engine/venues/data.py) arrivals for ``LIVE_TAKE_S`` after its first, or
    until ``enough(what came)``."""
    if not getattr(md, "live", False):
        return list(itertools.islice(md.updates(), n))
    out: list[object] = []
    deadline = time.monotonic() + LIVE_WAIT_S
    while len(out) < n and time.monotonic() < deadline:
        got = md.poll_updates(n - len(out))  # type: ignore[attr-defined]
        if got and not out:
            deadline = min(deadline, time.monotonic() + LIVE_TAKE_S)
        out += got
        if enough is not None and enough(out):
            break
        if not got:
            time.sleep(0.005)
    return out


def _connected(s: Setup, ids: list[int] | None = None) -> MarketDataClient:
    md = lookup(s.config.kind).market_data(s.config)
    assert isinstance(md, MarketDataClient)
    md.connect()
    md.subscribe(ids if ids is not None else [i.instrument_id for i in s.instruments])
    return md


def test_data_client_lists_the_instruments_with_their_rules(setup: Setup) -> None:
    md = _connected(setup)
    rules = {r.instrument.instrument_id: r for r in md.instruments()}
    assert all(isinstance(r, InstrumentRules) for r in rules.values())
    for ins in setup.instruments:
        r = rules[ins.instrument_id]
        assert (r.instrument.tick_size, r.instrument.lot_size) == (ins.tick_size, ins.lot_size)
        assert r.min_qty_lots >= 1 and r.check(r.min_qty_lots, 0) == ""
        assert r.check(r.min_qty_lots - 1, 0) != ""
    md.close()


def test_data_client_streams_market_structs_snapshot_first_in_sequence(setup: Setup) -> None:
    md = _connected(setup)
    msgs = _take(md, 3000)
    assert msgs and all(isinstance(m, MD_TYPES) for m in msgs)
    first: dict[int, type] = {}
    for m in msgs:
        if isinstance(m, (BookSnapshot, BookDelta)):
            first.setdefault(m.instrument_id, type(m))
    assert first and set(first.values()) == {BookSnapshot}  # a book starts with a snapshot
    guard = SequenceGuard()
    assert all(guard.accept(m) for m in msgs) and guard.gaps == 0
    assert md.gaps == 0
    md.close()


def test_data_client_sends_only_what_is_subscribed(setup: Setup) -> None:
    one = setup.instruments.ids[0]
    md = _connected(setup, [one])
    msgs = _take(md, 2000)
    assert msgs and {getattr(m, "instrument_id", -1) for m in msgs} <= {one, -1}
    md.close()


# --- execution ------------------------------------------------------------------------------------
class Driven:
    """An execution client fed from the same kind's market data, with the last quote kept.
    Sizes are in ``unit``s: the smallest order the venue's rules take near the market (1 lot
    on the simulator; a real venue's minimum quantity and notional, with room to move)."""

    def __init__(self, s: Setup) -> None:
        self.ex = lookup(s.config.kind).execution(s.config)
        self.md = _connected(s)
        self.now = 0
        self.quotes: dict[int, Quote] = {}
        self.iid = s.instruments.ids[0]
        self.events: list[object] = []
        self.advance(2000, self._quoted)
        deadline = time.monotonic() + LIVE_WAIT_S
        while self.iid not in self.quotes and time.monotonic() < deadline:
            self.advance(2000, self._quoted)  # a live venue: until its book has both sides
        r = {r.instrument.instrument_id: r for r in self.md.instruments()}[self.iid]
        ins, q = r.instrument, self.quotes[self.iid]
        lot_value = max(q.bid_px - 60, 1) * ins.tick_size * ins.lot_size
        self.unit = max(r.min_qty_lots, math.ceil(r.min_notional / lot_value))

    def q(self, units: int) -> int:
        return units * self.unit

    def _quoted(self, msgs: list[object]) -> bool:
        return any(isinstance(m, Quote) and m.instrument_id == self.iid for m in msgs)

    def advance(self, n: int, enough: Callable[[list[object]], bool] | None = None) -> None:
        for m in _take(self.md, n, enough):
            self.now = max(self.now, getattr(m, "ts_event", self.now))
            if isinstance(m, Quote):
                self.quotes[m.instrument_id] = m
            self.events += self.ex.on_market_data(m, self.now)

    def settle(self) -> list[object]:
        self.now += SETTLE_NS
        self.events += self.ex.poll(self.now)
        return self.events

    def order(self, coid: int, side: int, px: int, units: int) -> NewOrder:
        qty = self.q(units)
        return NewOrder(coid, 1, self.iid, side, OrderType.LIMIT, TimeInForce.GTC, px, qty, 0, 0)

    def submit(self, o: NewOrder) -> None:
        self.events += self.ex.submit(o, self.now)

    def close(self) -> None:
        self.ex.close()
        self.md.close()


@pytest.fixture
def driven(setup: Setup) -> Iterator[Driven]:
    if setup.instruments.by_id(setup.instruments.ids[0]).kind == "betting":
        # a BUY (back) takes the bid side on decimal odds, the inverse of what these tests
        # drive: tests/test_betfair_exec.py holds the same contract on a betting book
        pytest.skip("betting orientation: tests/test_betfair_exec.py")
    d = Driven(setup)
    yield d
    d.close()


def _of(events: list[object], t: type, coid: int) -> list:
    return [e for e in events if isinstance(e, t) and e.client_order_id == coid]


def test_execution_client_implements_the_protocol(driven: Driven) -> None:
    assert isinstance(driven.ex, ExecutionClient)
    assert all(isinstance(b, BalanceReport) for b in driven.ex.balances())
    assert driven.ex.knows_order(424242) is False
    assert driven.ex.query_order(424242) is None


def test_resting_order_is_reported_replaced_and_canceled(driven: Driven) -> None:
    q = driven.quotes[driven.iid]
    px = q.bid_px - 50  # far below the market: rests
    driven.submit(driven.order(7, Side.BUY, px, 3))
    ev = driven.settle()
    assert len(_of(ev, OrderAccepted, 7)) == 1
    assert driven.ex.knows_order(7)
    three = driven.q(3)
    assert [(o.client_order_id, o.px, o.qty) for o in driven.ex.open_orders()] == [(7, px, three)]
    (rep,) = driven.ex.order_status_reports()
    assert isinstance(rep, OrderStatusReport)
    assert (rep.client_order_id, rep.status, rep.px, rep.open_qty, rep.filled_qty) == (
        7,
        OrderStatus.ACCEPTED,
        px,
        three,
        0,
    )
    one = driven.ex.query_order(7)
    assert one is not None
    assert (one.status, one.px, one.open_qty, one.filled_qty) == (
        OrderStatus.ACCEPTED,
        px,
        three,
        0,
    )
    two = driven.q(2)
    driven.events += driven.ex.replace(
        ReplaceOrder(7, 1, driven.iid, px - 1, two, 0, 0), driven.now
    )
    driven.settle()
    assert [(o.px, o.qty) for o in driven.ex.open_orders()] == [(px - 1, two)]

    driven.events += driven.ex.cancel(CancelOrder(7, 1, driven.iid, 0, 0), driven.now)
    driven.settle()
    assert driven.ex.open_orders() == [] and driven.ex.order_status_reports() == []
    gone = driven.ex.query_order(7)
    assert gone is None or gone.status == OrderStatus.CANCELED and gone.open_qty == 0
    driven.events += driven.ex.cancel(CancelOrder(7, 1, driven.iid, 0, 0), driven.now)
    driven.settle()  # a second cancel is refused, the order stays gone
    assert driven.ex.open_orders() == []


def test_fills_positions_and_their_reports_agree(driven: Driven) -> None:
    q = driven.quotes[driven.iid]
    driven.submit(driven.order(9, Side.BUY, q.ask_px + 20, 1))  # crosses: takes the ask
    ev = driven.settle()
    fills = driven.ex.fills_since(0)
    assert fills and fills == [e for e in ev if isinstance(e, OrderPartiallyFilled)]
    one = driven.q(1)
    assert sum(f.fill_qty for f in fills if f.client_order_id == 9) == one
    assert driven.ex.fills_since(fills[-1].fill_id) == []
    assert driven.ex.fill_reports() == [FillReport.from_fill(driven.ex.name, f) for f in fills]
    pos = driven.ex.positions()
    assert pos == {driven.iid: one}
    assert driven.ex.position_reports() == [
        PositionReport(venue=driven.ex.name, instrument_id=driven.iid, qty=one)
    ]
    done = driven.ex.query_order(9)
    assert done is not None and done.status == OrderStatus.FILLED and done.filled_qty == one


def test_a_reused_client_order_id_is_refused(driven: Driven) -> None:
    q = driven.quotes[driven.iid]
    driven.submit(driven.order(11, Side.SELL, q.ask_px + 50, 1))
    driven.settle()
    driven.submit(driven.order(11, Side.SELL, q.ask_px + 60, 1))
    ev = driven.settle()
    assert len(_of(ev, OrderRejected, 11)) == 1
    assert [o.px for o in driven.ex.open_orders()] == [q.ask_px + 50]


# --- the registry and the sequence guard ----------------------------------------------------------
def test_unknown_kind_is_refused_naming_the_known_ones() -> None:
    known = "known kinds: " + ", ".join(repr(k) for k in known_kinds())
    assert {"binanceus", "ccxt", "coinbase", "kraken", "sim"} <= set(known_kinds())
    with pytest.raises(UnknownVenueKind, match=f"'binance'.*{known}"):
        lookup("binance")
    sim = lookup("sim")
    with pytest.raises(ValueError, match="registered twice"):
        register(VenueKind("sim", sim.execution, sim.market_data))


def test_unknown_kind_in_config_exits_2_naming_the_known_kinds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ops.cli import main

    cfg = tmp_path / "gekko.toml"
    text = (ROOT / "config.toml").read_text()
    cfg.write_text(text + '\n[[venues]]\nname = "bn"\nkind = "binance"\n')
    assert main(["backtest", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "venues[0].kind" in err and "'binance'" in err
    assert "known kinds: " + ", ".join(repr(k) for k in known_kinds()) in err


def _delta(seq: int, iid: int = 1) -> BookDelta:
    return BookDelta(iid, Side.BUY, 100, 5, 0, 0, seq)


def _snap(seq: int, iid: int = 1) -> BookSnapshot:
    return BookSnapshot(iid, [100], [5], [101], [5], 0, 0, seq)


def test_sequence_guard_drops_a_gapped_instrument_until_its_next_snapshot() -> None:
    g = SequenceGuard()
    assert [g.accept(m) for m in (_snap(0), _delta(1), _delta(2))] == [True] * 3
    assert g.accept(_delta(2)) is False and g.gaps == 0  # a duplicate, not a gap
    assert g.accept(_delta(4)) is False and g.gaps == 1 and g.needs_snapshot == {1}
    assert g.accept(_delta(5)) is False  # still waiting for a snapshot
    assert g.accept(_delta(7, iid=2)) is True  # other instruments go on
    assert g.accept(_snap(5)) is True and g.needs_snapshot == set()
    assert g.accept(_delta(6)) is True and g.gaps == 1
    assert g.accept(_delta(0)) is True  # an unnumbered delta always passes


def test_instrument_rules_check_size_and_notional() -> None:
    from engine.instruments import Instrument

    r = InstrumentRules(
        instrument=Instrument(instrument_id=1, symbol="X", tick_size=0.01, lot_size=1.0),
        min_qty_lots=2,
        max_qty_lots=10,
        min_notional=5.0,
    )
    assert r.check(2, 1000) == ""  # 2 x 10.00
    assert "below the venue minimum 2" in r.check(1, 1000)
    assert "above the venue maximum 10" in r.check(11, 1000)
    assert "notional 2 is below" in r.check(2, 100)
    assert r.check(2, 0) == ""  # a market order: no price to check


def test_a_router_over_several_venues_is_an_execution_client(tmp_path: Path) -> None:
    """``[[venues]]`` with several entries: exec gets a SmartRouter, reports included."""
    from procs.build import build_data_client, build_venue

    text = (ROOT / "config.toml").read_text()
    text += '\n[[venues]]\nname = "a"\n\n[[venues]]\nname = "b"\npx_offset_ticks = 1\n'
    cfg = parse_config(text)
    ex = build_venue(cfg)
    assert isinstance(ex, ExecutionClient) and set(ex.venues) == {"a", "b"}
    assert all(isinstance(v, ExecutionClient) for v in ex.venues.values())
    md = build_data_client(cfg)
    md.connect()
    md.subscribe(cfg.instrument_table().ids)
    now, quote = 0, None
    iid = cfg.instrument_table().ids[0]
    for m in itertools.islice(md.updates(), 2000):
        now = max(now, getattr(m, "ts_event", now))
        quote = m if isinstance(m, Quote) and m.instrument_id == iid else quote
        ex.on_market_data(m, now)
    assert quote is not None
    o = NewOrder(5, 1, iid, Side.SELL, OrderType.LIMIT, TimeInForce.GTC, quote.bid_px - 20, 1, 0, 0)
    ev = ex.submit(o, now) + ex.poll(now + SETTLE_NS)
    assert sum(f.fill_qty for f in ev if isinstance(f, OrderPartiallyFilled)) == 1
    assert ex.position_reports() == [PositionReport(venue=ex.name, instrument_id=iid, qty=-1)]
    assert [r.qty for r in ex.fill_reports()] == [f.fill_qty for f in ex.fills_since(0)]
    done = ex.query_order(5)
    assert done is not None and done.status == OrderStatus.FILLED and done.filled_qty == 1
    ex.close()
    md.close()
