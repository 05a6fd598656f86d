"""Real venues wired into config, CLI and workers (issue 13): keys, gates, markets, order rules.

What is proved here, without a network beyond 127.0.0.1: a real ``[[venues]]`` entry takes only
its own keys, API keys never come from config.toml, live needs all three gates (each missing one
is named, exit 2) and a live run's first line says LIVE, configured instruments are checked
against the venue's markets (exit 2 naming the instrument), an order the venue would refuse is
refused first and counted, and the run's resolution reaches every worker (the overlay).
The real-process paper runs against the local servers are in tests/test_venue_e2e.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec
import pytest

from engine.instruments import Instrument
from engine.messages import (
    NewOrder,
    OrderRejected,
    OrderReplaceRejected,
    OrderType,
    Quote,
    ReplaceOrder,
    Side,
    TimeInForce,
)
from engine.venues.ccxt_markets import (
    MarketMismatch,
    OrderRulesGate,
    VenueMarket,
    parse_market,
    resolve_instruments,
    rules_for,
    venue_amount,
    venue_price,
)
from engine.venues.registry import VenueConfig, lookup
from ops.config import Config, ConfigError, parse_config
from ops.secrets import redact
from ops.venue_config import BinanceUsVenue
from ops.venue_keys import load_credentials
from ops.venue_run import pick_venue, read_overlay, resolve_run, write_overlay
from tests.conftest import ROOT

BASE = (ROOT / "config.toml").read_text()
ONE = '[[instruments]]\ninstrument_id = 1\nsymbol = "A"\n'
BTC = VenueMarket(
    symbol="BTC/USDT",
    venue_symbol="BTCUSDT",
    base="BTC",
    quote="USDT",
    tick="0.01",
    lot="0.00001",
    min_qty="0.00001",
    max_qty="9000",
    min_notional="5",
    maker_fee_bps=10.0,
    taker_fee_bps=10.0,
)
ETH = msgspec.structs.replace(
    BTC, symbol="ETH/USDT", venue_symbol="ETHUSDT", base="ETH", lot="0.0001", status="break"
)
MARKETS = {"BTC/USDT": BTC, "ETH/USDT": ETH}


def fake_loader(markets: Mapping[str, VenueMarket] = MARKETS) -> Any:
    seen: list[tuple[str, Any]] = []

    def load(exchange_id: str, settings: Mapping[str, Any], creds: Any) -> dict[str, VenueMarket]:
        seen.append((exchange_id, creds))
        return dict(markets)

    load.seen = seen  # type: ignore[attr-defined]
    return load


# --- helpers the conformance suite and the e2e tests share -----------------------------------------
def local_server(kind: str) -> Any:
    """A started local exchange server of ``kind`` (tests/venues), or a skip while its module
    is not in the tree."""
    from tests.venues import server_class

    try:
        cls = server_class(kind)
    except ImportError as exc:
        pytest.skip(f"the local {kind} server is not there yet ({exc})")
    return cls().start()


def venue_toml(kind: str, server: Any, extra: str = "", name: str = "") -> str:
    """A ``[[venues]]`` entry of ``kind`` pointed at ``server``."""
    return (
        f'\n[[venues]]\nname = "{name or kind}"\nkind = "{kind}"\n'
        f'rest_url = "{server.rest_url}"\nws_url = "{server.ws_url}"\n{extra}'
    )


def venue_run_config(kind: str, server: Any, extra: str = "") -> Config:
    """config.toml with a venue of ``kind`` at ``server``, through `gekko run --venue`'s
    pre-flight: markets loaded from the server, its default symbols created."""
    cfg = parse_config(BASE + venue_toml(kind, server, extra), "gekko.toml")
    cfg, only = pick_venue(cfg, kind)
    return resolve_run(cfg, only=only)


# --- config: a real venue's keys ------------------------------------------------------------------
def test_a_real_venue_takes_its_keys_with_documented_defaults() -> None:
    cfg = parse_config(ONE + '[[venues]]\nname = "bn"\nkind = "binanceus"\n')
    (v,) = cfg.venues
    assert v.kind == "binanceus" and v.live is False and v.external_orders == "halt"
    assert v.symbols == ["BTC/USDT"] and v.rest_url == "" and v.credentials_file == ""
    s = v.venue_settings()
    assert s["live"] is False  # the key alone never makes a run live
    assert s["latency_ns"] == 20_000_000 and s["timeout_ms"] == 10_000
    # the names the adapters read: the guard's budget (published, less 10 %), the backoff cap
    assert (s["rate_limit_weight"], s["rate_limit_window_s"]) == (1080.0, 60.0)
    assert s["backoff_max_s"] == 30.0 and s["stale_after_s"] == 10.0
    own = parse_config(ONE + '[[venues]]\nname = "k"\nkind = "kraken"\nrate_limit_weight = 8.0\n')
    assert own.venues[0].venue_settings()["rate_limit_weight"] == pytest.approx(7.2)
    sim = parse_config(ONE + '[[venues]]\nname = "a"\n').venues[0]  # kind left out: sim
    assert sim.kind == "sim" and sim.venue_settings()["maker_fee_bps"] == -0.5


def test_market_data_keys_reach_the_client_and_kraken_asks_for_a_deeper_book() -> None:
    kraken = parse_config(f'{ONE}[[venues]]\nname = "k"\nkind = "kraken"\nbook_depth = 20\n')
    s = kraken.venues[0].venue_settings()
    assert (s["book_depth"], s["snapshot_limit"], s["reconnect_min_s"]) == (20, 100, 0.5)
    bn = parse_config(f'{ONE}[[venues]]\nname = "b"\nkind = "binanceus"\n').venues[0]
    assert "snapshot_limit" not in bn.venue_settings()  # 0: ccxt's own default, not a limit of 0


@pytest.mark.parametrize(
    ("entry", "key", "problem"),
    [
        ('kind = "binanceus"\nmaker_fee_bps = 1.0', "venues[0].maker_fee_bps", "unknown key"),
        ('kind = "kraken"\npx_offset_ticks = 1', "venues[0].px_offset_ticks", "unknown key"),
        ('kind = "binanceus"\nexchange = "kraken"', "venues[0].exchange", 'only for kind "ccxt"'),
        ('kind = "ccxt"', "venues[0].exchange", "needs exchange"),
        ('kind = "ccxt"\nexchange = "nosuchex"', "venues[0].exchange", "no exchange 'nosuchex'"),
        ('kind = "kraken"\nexternal_orders = "ignore"', "venues[0].external_orders", "adopt"),
        ('kind = "kraken"\nrest_url = "http://127.0.0.1:1/x"', "venues[0].rest_url", "no path"),
        ('kind = "kraken"\nws_url = "http://127.0.0.1:1"', "venues[0].ws_url", "ws(s)://"),
        ('kind = "kraken"\nsymbols = ["XBTUSD"]', "venues[0].symbols[0]", "like 'BTC/USDT'"),
        ('kind = "kraken"\nstale_after_s = 0.0', "venues[0].stale_after_s", "> 0"),
        ('kind = "kraken"\nrecv_window_ms = 70000', "venues[0].recv_window_ms", "60000"),
        (
            'kind = "kraken"\nreconnect_min_s = 40.0',
            "venues[0].reconnect_min_s",
            "<= reconnect_max",
        ),
        ('kind = "kraken"\nbook_depth = -1', "venues[0].book_depth", "0..5000"),
        ('kind = "coinbase"\nbook_hold_s = -1.0', "venues[0].book_hold_s", ">= 0"),
        ('kind = "kraken"\nlive = "yes"', "venues[0].live", "Expected `bool`"),
        ('kind = "binance"', "venues[0].kind", "'binanceus', 'binanceusdm', 'ccxt'"),
    ],
)
def test_a_bad_real_venue_key_names_itself(entry: str, key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(f'{ONE}[[venues]]\nname = "v"\n{entry}\n', "my.toml")
    assert err.value.key == key and problem in err.value.problem, str(err.value)


@pytest.mark.parametrize(
    ("entry", "key"),
    [
        ('api_key = "abcd1234abcd1234"', "venues[0].api_key"),
        ('secret = "${SOME_ENV}"', "venues[0].secret"),  # not even from the environment
        ('apiKey = "abcd"', "venues[0].apiKey"),
        ('api_key_file = "/tmp/k"', "venues[0].api_key_file"),
        ('ccxt_options = { password = "pw123456" }', "venues[0].ccxt_options.password"),
        ('ccxt_options = { privateKey = "0xabc" }', "venues[0].ccxt_options.privateKey"),
        # a value that looks like a key, whatever its name: pasted where it does not belong
        (
            'credentials_file = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A"',
            "venues[0].credentials_file",
        ),
        (
            'ccxt_options = { broker = "abcd1234abcd1234abcd1234ab" }',
            "venues[0].ccxt_options.broker",
        ),
    ],
)
def test_a_key_in_config_toml_is_refused_naming_the_environment(entry: str, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(f'{ONE}[[venues]]\nname = "bn-us"\nkind = "binanceus"\n{entry}\n', "c.toml")
    assert err.value.key == key
    assert "GEKKO_BN_US_API_KEY / GEKKO_BN_US_API_SECRET" in err.value.problem
    assert "abcd1234" not in str(err.value) and "pw123456" not in str(err.value)
    assert "vmPUZE6mv9" not in str(err.value)


def test_ordinary_values_are_not_taken_for_keys() -> None:
    entry = (
        'credentials_file = "~/.config/gekko/binanceus-keys.toml"\n'
        'ccxt_options = { defaultType = "spot", adjustForTimeDifference = true }\n'
    )
    parse_config(f'{ONE}[[venues]]\nname = "bn"\nkind = "binanceus"\n{entry}')


def test_the_run_section_is_never_read_from_the_file() -> None:
    with pytest.raises(ConfigError, match="resolved: unknown key"):
        parse_config(ONE + '[resolved]\nlive = ["bn"]\n')


def test_config_toml_ships_the_sim_and_commented_examples_that_parse() -> None:
    cfg = parse_config(BASE)
    assert cfg.venues == [] and cfg.real_venues() == []  # the simulator, unchanged
    start = BASE.index("# [[venues]]  # Binance.US")
    end = BASE.index("# (end of the real venue examples)")
    lines = [ln[2:] if ln.startswith("# ") else ln for ln in BASE[start:end].splitlines()]
    examples = "\n".join(ln for ln in lines if not ln.startswith("#"))
    cfg = parse_config(BASE[:start] + examples + "\n" + BASE[end:])
    assert [(v.name, v.kind) for v in cfg.venues] == [
        ("binanceus", "binanceus"),
        ("coinbase", "coinbase"),
        ("kraken", "kraken"),
        ("okx", "ccxt"),
        ("oanda", "oanda"),
        ("polymarket", "polymarket"),
        ("betfair", "betfair"),
        ("binanceusdm", "binanceusdm"),
    ]
    assert cfg.venues[0] == BinanceUsVenue(name="binanceus")  # the example states the defaults
    fields = set(cfg.venues[0].__struct_fields__)
    documented = {ln.split("=")[0].strip() for ln in lines if "=" in ln and not ln.startswith("[")}
    assert fields <= documented  # every key of a real venue has its documented line
    # the other kinds' examples: each states its own keys (and the account it has) in its block
    blocks = examples.split("[[venues]]")[1:]
    common = set(BinanceUsVenue.__struct_fields__)
    for v, block in zip(cfg.venues[4:], blocks[4:], strict=True):
        own = set(type(v).__struct_fields__) - common
        keys = {ln.split("=")[0].strip() for ln in block.splitlines() if "=" in ln}
        assert own | {"account"} <= keys, (v.kind, own - keys)
        defaults = msgspec.structs.asdict(type(v)(name=v.name, **_required(v.kind)))
        assert {k: getattr(v, k) for k in own} == {k: defaults[k] for k in own}, v.kind


def _required(kind: str) -> dict[str, str]:
    """The keys a kind cannot do without (its example's placeholders)."""
    return {
        "oanda": {"rest_url": "https://HOST"},
        "polymarket": {"rest_url": "https://HOST", "ws_url": "wss://HOST"},
    }.get(kind, {})


# --- keys -------------------------------------------------------------------------------------------
def _venue(extra: str = "") -> Any:
    return parse_config(f'{ONE}[[venues]]\nname = "bn"\nkind = "binanceus"\n{extra}').venues[0]


def test_keys_come_from_the_environment_and_are_masked_everywhere() -> None:
    key, secret = "k" + uuid.uuid4().hex, "s" + uuid.uuid4().hex
    env = {"GEKKO_BN_API_KEY": key, "GEKKO_BN_API_SECRET": secret}
    creds = load_credentials(_venue(), env=env)
    assert creds is not None and (creds.api_key, creds.secret) == (key, secret)
    assert key not in repr(creds) and secret not in str(creds)
    assert redact(f"sent {key} signed with {secret}") == "sent *** signed with ***"
    assert load_credentials(_venue(), env={}) is None


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"GEKKO_BN_API_KEY": "kkkkkkkk"}, "GEKKO_BN_API_SECRET is not set"),
        ({"GEKKO_BN_API_SECRET": "ssssssss"}, "GEKKO_BN_API_KEY is not set"),
        ({"GEKKO_BN_API_PASSWORD": "pppppppp"}, "GEKKO_BN_API_PASSWORD is set but"),
    ],
)
def test_half_a_key_set_is_an_error_naming_the_variable(env: dict[str, str], problem: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_credentials(_venue(), "c.toml", env=env)
    assert err.value.key == "venues[bn]" and problem in err.value.problem


def test_a_credentials_file_must_be_private(tmp_path: Path) -> None:
    f = tmp_path / "bn.keys"
    f.write_text('api_key = "file-key-123"\napi_secret = "file-secret-456"\n')
    f.chmod(0o644)
    v = _venue(f'credentials_file = "{f}"\n')
    with pytest.raises(ConfigError, match="accessible by group or others.*chmod 600"):
        load_credentials(v, env={})
    f.chmod(0o600)
    creds = load_credentials(v, env={})
    assert creds is not None and creds.api_key == "file-key-123"
    assert redact("file-secret-456") == "***"
    with pytest.raises(ConfigError, match="both the environment"):
        load_credentials(v, env={"GEKKO_BN_API_KEY": "x" * 8, "GEKKO_BN_API_SECRET": "y" * 8})
    f.write_text('api_key = "file-key-123"\n')
    with pytest.raises(ConfigError, match="needs api_key and api_secret"):
        load_credentials(v, env={})
    rel = _venue('credentials_file = "bn.keys"\n')  # relative: to the config file
    f.write_text('api_key = "file-key-123"\napi_secret = "file-secret-456"\n')
    assert load_credentials(rel, tmp_path / "config.toml", env={}) is not None


# --- markets ----------------------------------------------------------------------------------------
def test_ccxt_markets_become_exact_rules() -> None:
    raw = {
        "symbol": "BTC/USDT",
        "id": "BTCUSDT",
        "base": "BTC",
        "quote": "USDT",
        "active": True,
        "maker": 0.001,
        "taker": 0.002,
        "precision": {"price": 0.01, "amount": 1e-05},
        "limits": {"amount": {"min": 1e-05, "max": 9000.0}, "cost": {"min": 5.0}},
        "info": {"status": "TRADING"},
    }
    m = parse_market(raw)
    assert (m.tick, m.lot, m.min_qty, m.max_qty, m.min_notional) == (
        "0.01",
        "0.00001",
        "0.00001",
        "9000",
        "5",
    )
    assert (m.status, m.maker_fee_bps, m.taker_fee_bps) == ("trading", 10.0, 20.0)
    tier = parse_market(raw, fee={"maker": 0.0, "taker": 0.0004})  # the account's fee tier
    assert (tier.maker_fee_bps, tier.taker_fee_bps) == (0.0, 4.0)
    places = parse_market({**raw, "precision": {"price": 2, "amount": 5}}, precision_mode=2)
    assert (places.tick, places.lot) == ("0.01", "0.00001")
    halted = parse_market({**raw, "active": False, "info": {"status": "BREAK"}})
    assert halted.status == "break"
    ins = Instrument(instrument_id=3, symbol="BTC/USDT", tick_size=0.01, lot_size=0.00001)
    r = rules_for(ins, m)
    assert (r.min_qty_lots, r.max_qty_lots, r.min_notional) == (1, 900_000_000, 5.0)
    assert venue_price(ins, 6412345) == "64123.45" and venue_amount(ins, 150) == "0.0015"


def _ins(symbol: str = "BTC/USDT", tick: float = 0.01, lot: float = 0.00001) -> Instrument:
    return Instrument(instrument_id=1, symbol=symbol, venue="bn", tick_size=tick, lot_size=lot)


@pytest.mark.parametrize(
    ("ins", "problem"),
    [
        (_ins("DOGE/USDT"), "the venue does not list it"),
        (_ins("BTCUSDT"), "does not list it (its symbol there is 'BTC/USDT')"),
        (_ins(tick=0.1), "tick_size 0.1 disagrees with the venue's 0.01"),
        (_ins(lot=0.001), "lot_size 0.001 disagrees with the venue's 0.00001"),
        (_ins("ETH/USDT", lot=0.0001), "status is 'break', not trading"),
    ],
)
def test_a_configured_instrument_the_venue_disagrees_with_is_named(
    ins: Instrument, problem: str
) -> None:
    with pytest.raises(MarketMismatch) as err:
        resolve_instruments("bn", [ins], [], MARKETS, 10)
    assert err.value.symbol == ins.symbol and problem in str(err.value)


def test_symbols_are_created_from_the_markets_after_the_configured_ids() -> None:
    rules = resolve_instruments("bn", [_ins()], ["BTC/USDT"], MARKETS, 10)
    assert [r.instrument.instrument_id for r in rules] == [1]  # configured: not created twice
    added = resolve_instruments("bn", [], ["BTC/USDT"], MARKETS, 10)[0].instrument
    assert (added.instrument_id, added.venue, added.currency) == (10, "bn", "USDT")
    assert (added.tick_size, added.lot_size, added.asset_class) == (0.01, 0.00001, "crypto")
    with pytest.raises(MarketMismatch, match="not trading"):
        resolve_instruments("bn", [], ["ETH/USDT"], MARKETS, 10)


# --- refusing what the venue would refuse -----------------------------------------------------------
class _Inner:
    name = "bn"

    def __init__(self) -> None:
        self.sent: list[Any] = []

    def submit(self, order: NewOrder, now_ns: int) -> list[Any]:
        self.sent.append(order)
        return []

    def replace(self, rep: ReplaceOrder, now_ns: int) -> list[Any]:
        self.sent.append(rep)
        return []

    def on_market_data(self, msg: object, now_ns: int) -> list[Any]:
        return []

    def poll(self, now_ns: int) -> list[Any]:
        return ["polled"]


def _order(coid: int, qty: int, px: int, kind: OrderType = OrderType.LIMIT) -> NewOrder:
    return NewOrder(coid, 1, 1, Side.BUY, kind, TimeInForce.GTC, px, qty, 0, 0)


def test_orders_the_venue_would_refuse_are_refused_first_and_counted() -> None:
    ins = _ins()
    inner = _Inner()
    gate = OrderRulesGate(inner, [rules_for(ins, BTC)])
    px = ins.px_to_ticks("60000")
    assert gate.submit(_order(1, 100, px), 5) == [] and inner.sent  # 0.001 BTC = $60: passes
    (rej,) = gate.submit(_order(2, 5, px), 5)  # 0.00005 BTC = $3 < $5
    assert isinstance(rej, OrderRejected) and rej.client_order_id == 2
    assert rej.reason == "venue rules: min_notional: notional 3 is below the venue minimum 5"
    (rej,) = gate.submit(_order(3, 0, px), 5)
    assert "below the venue minimum 1" in rej.reason
    (rej,) = gate.submit(_order(4, 900_000_001, px), 5)
    assert "above the venue maximum" in rej.reason
    assert gate.submit(_order(5, 5, 0, OrderType.MARKET), 5) == []  # no price known yet
    gate.on_market_data(Quote(1, px - 1, 3, px + 1, 3, 0, 0, 0), 6)
    (rej,) = gate.submit(_order(6, 5, 0, OrderType.MARKET), 7)  # $3 at the mid
    assert "notional 3 is below" in rej.reason
    (rr,) = gate.replace(ReplaceOrder(1, 1, 1, px, 5, 0, 0), 8)
    assert isinstance(rr, OrderReplaceRejected) and rr.text.startswith("invalid: venue rules")
    assert gate.rejected == {"min_notional": 3, "min_qty": 1, "max_qty": 1}
    assert [o.client_order_id for o in inner.sent] == [1, 5]  # nothing refused left
    from ops.report import RunRecord, format_rejects

    record = RunRecord(parse_config(BASE))
    for e in [rej, gate.submit(_order(7, 0, px), 9)[0]]:
        record.on_event(e)
    assert record.venue_rules_rejects_by_reason == {"min_notional": 1, "min_qty": 1}
    line = format_rejects({"venue_rules_rejects_by_reason": record.venue_rules_rejects_by_reason})
    assert line == ["  refused before the venue would have (its rules): min_notional 1, min_qty 1"]
    assert gate.poll(9) == ["polled"] and gate.name == "bn"  # the rest is the venue's


def test_paper_execution_is_the_simulator_with_the_venues_fees_and_rules() -> None:
    cfg = _resolved("binanceus")
    from procs.build import venue_configs

    (vc,) = venue_configs(cfg)
    assert vc.settings["live"] is False and vc.credentials is None
    ex = lookup("binanceus").execution(vc)
    assert isinstance(ex, OrderRulesGate) and type(ex.inner).__name__ == "SimExchange"
    assert (ex.inner.maker_fee_bps, ex.inner.taker_fee_bps) == (10.0, 10.0)
    assert ex.inner.latency_ns == 20_000_000
    ex.close()


def _picked(arg: str, extra: str = "", base: str = BASE) -> tuple[Config, str]:
    return pick_venue(parse_config(base + extra, "gekko.toml"), arg)


def _resolved(arg: str, extra: str = "") -> Config:
    cfg, only = _picked(arg, extra)
    return resolve_run(cfg, only=only, loader=fake_loader())


# --- --venue and the run's instruments --------------------------------------------------------------
def test_venue_kind_without_an_entry_gets_one_and_its_symbols(
    caplog: pytest.LogCaptureFixture,
) -> None:
    load = fake_loader()
    cfg = resolve_run(*_picked("binanceus")[:1], only="binanceus", loader=load)
    assert load.seen == [("binanceus", None)]
    assert [(v.name, v.kind) for v in cfg.venues] == [("binanceus", "binanceus")]
    assert [(i.symbol, i.venue, i.instrument_id) for i in cfg.instruments] == [
        ("BTC/USDT", "binanceus", 4)
    ]
    # the shipped strategies trade the simulator's equities only: the venue gets the default
    # one (ops/venue_run.default_strategy), sized above the venue's minimum notional
    (s,) = cfg.strategies
    assert (s.path, s.name, s.instruments) == (
        "engine.strategies.momentum:MomentumTaker",
        "default",
        ["BTC/USDT"],
    )
    assert s.params["long_only"] is True and s.params["notional"] >= 2 * float(BTC.min_notional)
    assert "the default strategy trades BTC/USDT" in caplog.text
    live = resolve_run(
        *_picked("binanceus")[:1],
        only="binanceus",
        live={"binanceus": object()},
        loader=fake_loader(),
    )
    assert live.strategies == []  # never a default strategy with real money
    assert cfg.portfolio.benchmark == "" and list(cfg.resolved.markets) == ["binanceus"]


def test_a_configured_instrument_of_the_venue_is_checked_and_kept(tmp_path: Path) -> None:
    extra = (
        '\n[[instruments]]\ninstrument_id = 9\nsymbol = "BTC/USDT"\nvenue = "bn"\n'
        "tick_size = 0.01\nlot_size = 0.00001\n"
        '\n[[venues]]\nname = "bn"\nkind = "binanceus"\n'
    )
    base = BASE.replace('instruments = ["AAPL"]       # a sep', "instruments = []       # a sep", 1)
    cfg, only = _picked("bn", extra, base)
    cfg = resolve_run(cfg, only=only, loader=fake_loader())
    assert [(i.instrument_id, i.symbol) for i in cfg.instruments] == [(9, "BTC/USDT")]
    assert [s.path.rsplit(":")[1] for s in cfg.strategies] == ["MomentumTaker"]
    wrong = extra.replace("tick_size = 0.01", "tick_size = 0.1")
    with pytest.raises(ConfigError) as err:
        _resolved("bn", wrong)
    assert err.value.key == "instruments[BTC/USDT]"
    assert "tick_size 0.1 disagrees with the venue's 0.01" in err.value.problem


def test_the_overlay_gives_every_worker_the_same_run(tmp_path: Path) -> None:
    cfg = resolve_run(*_picked("binanceus")[:1], only="binanceus", loader=fake_loader())
    path = write_overlay(cfg, tmp_path / "run" / "venues.json")
    assert path is not None and path.is_file()
    again = parse_config(BASE, "gekko.toml", overlay=read_overlay(path))
    assert again == cfg and again.instrument_table().by_symbol("BTC/USDT").instrument_id == 4
    assert write_overlay(parse_config(BASE), tmp_path / "none.json") is None  # sim: nothing


@pytest.mark.parametrize(
    ("argv", "extra", "expected"),
    [
        (
            ["--venue", "nosuch"],
            "",
            "--venue: no venue 'nosuch'; known: betfair, binanceus, binanceusdm, ccxt",
        ),
        (["--venue", "ccxt"], "", 'kind "ccxt" needs a [[venues]] entry with exchange'),
        (["--live"], "", "--live: needs a real venue"),
        (
            ["--venue", "bn", "--live"],
            '\n[[venues]]\nname = "bn"\nkind = "binanceus"\n',
            "venues[bn]: live trading needs all three of live = true, API keys and --live; "
            "missing: live = true for venue 'bn' in {cfg}; API keys in the environment "
            "variables GEKKO_BN_API_KEY and GEKKO_BN_API_SECRET",
        ),
        (
            ["--venue", "bn", "--live"],
            '\n[[venues]]\nname = "bn"\nkind = "binanceus"\nlive = true\n',
            "missing: API keys in the environment variables GEKKO_BN_API_KEY",
        ),
        (
            ["--venue", "ok", "--live"],
            '\n[[venues]]\nname = "ok"\nkind = "ccxt"\nexchange = "okx"\nlive = true\n',
            "venues[ok]: kind 'ccxt' is market data and paper only, never live",
        ),
    ],
)
def test_run_refuses_with_exit_2_saying_which_gate(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    extra: str,
    expected: str,
) -> None:
    from ops.cli import main

    for name in ("GEKKO_BN_API_KEY", "GEKKO_BN_API_SECRET"):
        monkeypatch.delenv(name, raising=False)
    cfg = _tmp_config(tmp_path, extra)
    assert main(["run", "--config", str(cfg), *argv, "--duration", "1"]) == 2
    out = capsys.readouterr()
    assert expected.format(cfg=cfg) in out.err, out.err
    assert "LIVE" not in out.out and not (tmp_path / "var").exists()  # nothing started


def test_a_live_run_says_live_first_even_when_the_venue_is_down(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """All three gates pass: the first line printed says LIVE with the venue's name; the
    venue then cannot be reached (nothing listens): exit 2 naming it, nothing started."""
    from ops.cli import main

    key, secret = "live-key-" + uuid.uuid4().hex[:8], "live-secret-" + uuid.uuid4().hex[:8]
    monkeypatch.setenv("GEKKO_BN_API_KEY", key)
    monkeypatch.setenv("GEKKO_BN_API_SECRET", secret)
    extra = (
        '\n[[venues]]\nname = "bn"\nkind = "binanceus"\nlive = true\ntimeout_ms = 2000\n'
        'rest_url = "http://127.0.0.1:9"\nws_url = "ws://127.0.0.1:9"\n'
    )
    cfg = _tmp_config(tmp_path, extra)
    assert main(["run", "--config", str(cfg), "--venue", "bn", "--live", "--duration", "1"]) == 2
    out = capsys.readouterr()
    assert out.out.splitlines()[0] == "LIVE trading on bn: real orders with real money"
    assert "venues[bn]: markets not loaded" in out.err
    assert key not in out.out + out.err and secret not in out.out + out.err
    capsys.readouterr()
    assert main(["run", "--config", str(cfg), "--duration", "1"]) == 2  # its one venue: bn
    assert capsys.readouterr().out.splitlines()[0].startswith("PAPER trading on bn")


def test_backtest_refuses_a_real_venue(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ops.cli import main

    cfg = _tmp_config(tmp_path, '\n[[venues]]\nname = "bn"\nkind = "binanceus"\n')
    assert main(["backtest", "--config", str(cfg)]) == 2
    assert "backtest runs the simulator only; bn" in capsys.readouterr().err


def _tmp_config(tmp_path: Path, extra: str) -> Path:
    eid = "w" + uuid.uuid4().hex[:7]
    text = BASE.replace('id = "gekko"', f'id = "{eid}"', 1)
    text = text.replace('var_dir = "var"', f'var_dir = "{tmp_path / "var"}"', 1)
    cfg = tmp_path / "gekko.toml"
    cfg.write_text(text + extra)
    return cfg


def test_a_live_venue_config_carries_its_keys_to_the_execution_side(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GEKKO_BN_API_KEY", "kkkk-1234")
    monkeypatch.setenv("GEKKO_BN_API_SECRET", "ssss-5678")
    from ops.venue_run import live_gates
    from procs.build import venue_configs

    cfg, only = _picked("bn", '\n[[venues]]\nname = "bn"\nkind = "binanceus"\nlive = true\n')
    keys = live_gates(cfg, True)
    load = fake_loader()
    cfg = resolve_run(cfg, only=only, live=keys, loader=load)
    assert cfg.resolved.live == ["bn"] and load.seen[0][1] is keys["bn"]
    (vc,) = venue_configs(cfg, record_path=Path("/nonexistent"))
    assert isinstance(vc, VenueConfig) and vc.settings["live"] is True
    assert vc.credentials.api_key == "kkkk-1234" and vc.record_path is None
    assert "kkkk-1234" not in repr(vc)
    # the client ids it sends carry this engine's prefix, not the venue name's (two engines
    # trading one account under the same venue name must not claim each other's orders)
    from engine.venues.ccxt_orders import order_prefix

    assert vc.settings["engine_id"] == cfg.engine.id
    assert order_prefix(cfg.engine.id) != order_prefix(cfg.engine.id + "x")
