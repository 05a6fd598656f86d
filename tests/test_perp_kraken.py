"""The krakenfutures kind against the local Kraken Futures server: its registration and
[[venues]] keys, its contract markets (hourly funding, public margin brackets), Kraken's
request signature, and the live client (``KrakenPerpExecutionClient``, REST polling) through
an order, a fill, an hourly funding payment, the account's margin and a liquidation, every
number worked by hand (docs/perpetuals.md).

The book the server seeds: bids 59999..59995, asks 60001..60005 (2 BTC each), so the mark
(the mid) is 60000; taker fee 0.05 %; margins 2 % initial / 1 % maintenance.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import urllib.request
from collections.abc import Callable

import pytest

from engine.instruments import Instrument, InstrumentTable
from engine.messages import (
    FundingPayment,
    Liquidation,
    MarginStatus,
    NewOrder,
    OrderFilled,
    OrderType,
    Side,
)
from engine.venues.ccxt_perp_markets import load_perp_markets
from engine.venues.ccxt_session import Credentials
from engine.venues.kraken_perp import KrakenPerpExecutionClient
from engine.venues.registry import live_kinds, lookup, real_kinds
from ops.config import parse_config
from tests.venues.kraken_futures import PERP_SYMBOL, KrakenFuturesServer

KEY = "kf-test-key"
SECRET = base64.b64encode(b"made-up kraken futures secret").decode()
PERP = Instrument(
    instrument_id=1,
    symbol=PERP_SYMBOL,
    venue="kf",
    tick_size=1.0,
    lot_size=0.0001,
    kind="perpetual",
    funding_interval_s=3600,
    initial_margin=0.1,
    maintenance_margin=0.01,
)


@pytest.fixture
def srv():
    s = KrakenFuturesServer().start()
    s.add_key(KEY, SECRET, balances={"USD": "10000"})
    yield s
    s.stop()


def _where(s: KrakenFuturesServer, **extra) -> dict:
    return {"rest_url": s.rest_url, "ws_url": s.ws_url, "timeout_ms": 3000, **extra}


def test_registered_with_its_venue_keys() -> None:
    assert "krakenfutures" in real_kinds() and "krakenfutures" in live_kinds()
    assert lookup("krakenfutures").markets is not None
    one = (
        '[engine]\nid = "t"\n[[instruments]]\ninstrument_id = 1\nsymbol = "BTC/USD:USD"\n'
        'venue = "kf"\ntick_size = 1.0\nlot_size = 0.0001\n'
    )
    cfg = parse_config(one + '[[venues]]\nname = "kf"\nkind = "krakenfutures"\n', "t.toml")
    (v,) = cfg.venues
    assert v.kind == "krakenfutures" and v.symbols == ["BTC/USD:USD"] and v.perp_poll_s == 5.0


def test_contract_markets_hourly_funding_and_public_margins(srv) -> None:
    got = load_perp_markets("krakenfutures", _where(srv))
    m = got[PERP_SYMBOL]
    assert (m.venue_symbol, m.tick, m.lot) == ("PF_XBTUSD", "1", "0.0001")
    # marginLevels[0] (public): 2 % initial = 1 / 50x, 1 % maintenance; funding every hour;
    # the ticker's absolute rate 0.6 USD / contract at mark 60000 is 0.00001 relative
    assert m.instrument == {
        "contract_size": 1.0,
        "kind": "perpetual",
        "funding_interval_s": 3600,
        "initial_margin": 0.02,
        "maintenance_margin": 0.01,
        "funding_rate": pytest.approx(0.00001),
    }
    lev = load_perp_markets("krakenfutures", _where(srv, leverage=10))[PERP_SYMBOL]
    assert lev.instrument["initial_margin"] == pytest.approx(0.1)  # 1 / 10x
    with pytest.raises(ValueError, match="above the venue's 50"):
        load_perp_markets("krakenfutures", _where(srv, leverage=60))


def _signed_get(s: KrakenFuturesServer, path: str, query: str, nonce: str, secret: str) -> dict:
    """A request signed by hand the way Kraken documents it (not through ccxt)."""
    digest = hashlib.sha256((query + nonce + path).encode()).digest()
    sig = hmac.new(base64.b64decode(secret), digest, hashlib.sha512).digest()
    req = urllib.request.Request(
        f"{s.rest_url}/derivatives{path}?{query}",
        headers={"APIKey": KEY, "Nonce": nonce, "Authent": base64.b64encode(sig).decode()},
    )
    with urllib.request.urlopen(req, timeout=5) as r:  # noqa: S310 - the loopback server
        return json.loads(r.read())


def test_requests_are_signed_the_kraken_way(srv) -> None:
    path, query = "/api/v3/openpositions", "x=1"
    assert _signed_get(srv, path, query, "1700000000000", SECRET)["result"] == "success"
    other = base64.b64encode(b"not the secret").decode()
    bad = _signed_get(srv, path, query, "1700000000000", other)
    assert bad == {
        "result": "error",
        "error": "authenticationError",
        "serverTime": bad["serverTime"],
    }


# --- live -------------------------------------------------------------------------------------
@pytest.fixture
def live(srv):
    made: list[KrakenPerpExecutionClient] = []

    def make() -> KrakenPerpExecutionClient:
        settings = _where(
            srv,
            engine_id="kft",
            rest_poll_s=0.3,
            perp_poll_s=0.3,
            funding_poll_s=0.3,
            start_timeout_s=20,
            leverage=10,
            margin_report_pct=0.0,  # every move of the account's totals is reported
            ccxt_options={"fetchCurrencies": False},
        )
        c = KrakenPerpExecutionClient(
            "krakenfutures", "kf", InstrumentTable([PERP]), settings, Credentials(KEY, SECRET)
        )
        made.append(c)
        assert c.state() == "connected", c.state_reason
        return c

    yield make
    for c in made:
        c.close()


def _collect(c, out: list, until: Callable[[], bool], limit_s: float = 15.0) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        out.extend(c.poll(time.monotonic_ns()))
        if until():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out; got {[type(e).__name__ for e in out]}")


def _of(out: list, kind: type) -> list:
    return [e for e in out if type(e) is kind]


def _market_buy(c, coid: int, lots: int) -> None:
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
    )
    assert c.submit(o, time.monotonic_ns()) == []


def test_live_order_fill_funding_margin_and_liquidation(srv, live) -> None:
    c = live()
    out: list = []
    _collect(c, out, lambda: bool(_of(out, MarginStatus)))
    assert srv.requests["PUT /derivatives/api/v3/leveragepreferences"] == 1
    assert srv.leverage[("main", "PF_XBTUSD")] == 10
    first = _of(out, MarginStatus)[0]
    assert (first.equity, first.initial_margin, first.maintenance_margin) == (10000.0, 0.0, 0.0)

    # 0.01 BTC = 100 lots bought at the best ask 60001; fee 0.05 % of 600.01 = 0.300005
    _market_buy(c, 1, 100)
    _collect(c, out, lambda: bool(_of(out, OrderFilled)) and c.positions() == {1: 100})
    filled = _of(out, OrderFilled)[0]
    assert (filled.fill_px, filled.fill_qty, filled.leaves_qty) == (60001, 100, 0)
    assert filled.fee == pytest.approx(0.300005)

    # one hour's funding at 0.0001: the long pays 0.01 * 60000 * 0.0001 = 0.06 USD
    srv.call(srv.pay_funding, "0.0001")
    _collect(c, out, lambda: bool(_of(out, FundingPayment)))
    (fp,) = _of(out, FundingPayment)
    assert fp.amount == pytest.approx(-0.06) and fp.rate == pytest.approx(0.0001)
    assert (fp.mark_px, fp.position, fp.currency) == (60000, 100, "USD")

    # the account: collateral 10000 - 0.300005 - 0.06 = 9999.639995, unrealized
    # (60000 - 60001) * 0.01 = -0.01, so equity 9999.629995; margins 2 % and 1 % of 600
    _collect(c, out, lambda: _of(out, MarginStatus)[-1].equity < 9999.65)
    m = _of(out, MarginStatus)[-1]
    assert m == c.margin()
    assert m.equity == pytest.approx(9999.629995)
    assert (m.initial_margin, m.maintenance_margin) == (pytest.approx(12.0), pytest.approx(6.0))
    assert not m.margin_call

    # the venue liquidates the long at 59000: a sell of 100 lots, fee 0.75 % of 590 = 4.425
    srv.call(srv.liquidate, "main", PERP_SYMBOL, "59000")
    _collect(c, out, lambda: bool(_of(out, Liquidation)) and c.positions() == {})
    (liq,) = _of(out, Liquidation)
    assert (liq.side, liq.px, liq.qty) == (int(Side.SELL), 59000, 100)
    assert liq.fee == pytest.approx(4.425)
    assert c.perp_stats["funding"] == 1 and c.perp_stats["liquidations"] == 1


def test_a_live_key_is_taken_as_able_to_withdraw_and_needs_allow_withdraw(srv) -> None:
    """Kraken Futures says nothing of a key's rights: one that reads the account is treated as
    able to withdraw (refused unless its keystore entry allows it); a wrong one is refused."""
    from engine.venues.ccxt_permissions import probe_key

    settings = _where(srv, ccxt_options={"fetchCurrencies": False})
    got = probe_key("krakenfutures", settings, Credentials(KEY, SECRET), timeout_s=20)
    assert got.can_withdraw is True and "reports no key permissions" in got.how
    bad = base64.b64encode(b"not the secret").decode()
    with pytest.raises(Exception):  # noqa: B017 - ccxt's authentication error, whichever class
        probe_key("krakenfutures", settings, Credentials(KEY, bad), timeout_s=20)
