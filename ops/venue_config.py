"""``[[venues]]`` entries of the real kinds (binanceus, coinbase, kraken, ccxt): their keys.

Why a struct of their own: a simulated venue's keys (fees, latency, a shifted view of the book)
mean nothing for a real exchange, whose fees come from its fee schedule and whose book is its
own. ``[[venues]]`` is a union tagged by ``kind`` (``"sim"`` when left out): each entry takes
only its kind's keys, and a sim key on a real venue is an unknown key (exit 2).

API keys never live in config.toml: an entry holding anything named like a key (``api_key``,
``secret``, ``password``, ``token``, ...; in ``ccxt_options`` too) is refused naming the
environment variables to use instead (``ops/venue_keys.py``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import msgspec

from engine.settings import need
from engine.venues.ccxt_guard import DEFAULT_LIMITS
from engine.venues.ccxt_markets import VenueMarket
from ops.account_config import AccountKeys
from ops.tls import plaintext_to_remote

_STRICT = {"forbid_unknown_fields": True, "kw_only": True}
EXTERNAL_ORDERS = ("adopt", "cancel", "halt")
_SECRET_KEY = re.compile(
    r"(?i)(api[_-]?key|apikey|secret|passw|passphrase|private[_-]?key|token|^uid$|signature)"
)


class RealVenueKeys(AccountKeys, tag_field="kind", **_STRICT):
    """The keys of a real venue (docs: config.toml, docs/venues.md); the account keys
    (``account``, ``position_mode``, ``leverage``): ops/account_config.py ``VENUE_ACCOUNTS``."""

    name: str
    live: bool = False  # one of live trading's three gates (with keys and `gekko run --live`)
    exchange: str = ""  # kind "ccxt" only: the ccxt exchange id
    symbols: list[str] = []  # ccxt unified symbols ("BTC/USDT") traded besides [[instruments]]
    rest_url: str = ""  # "" = the exchange's own; a test points it at a local server
    ws_url: str = ""
    allow_plaintext: bool = False  # http:// / ws:// to another host: refused unless true
    external_orders: str = (
        "halt"  # an order at the venue the engine did not send: adopt | cancel | halt
    )
    credentials_file: str = ""  # a 0600 TOML file with api_key / api_secret / api_password
    keystore_entry: str = ""  # the [keystore] entry holding its keys (`gekko keys add`)
    stale_after_s: float = 10.0  # a connection that receives nothing (not even a pong) this
    # long is reconnected; a quiet market is not (ccxt pings every third of it)
    book_stale_after_s: float = 0.0  # a book with no update this long: reconnect (0 = off)
    trade_stale_after_s: float = 0.0  # no trade print this long: reconnect (0 = off)
    reconnect_min_s: float = 0.5  # first reconnect wait; doubles (with jitter) ...
    reconnect_max_s: float = 30.0  # ... up to this
    book_depth: int = 100  # levels per side published from the venue's book (0 = all)
    snapshot_limit: int = 0  # levels the venue's snapshot is asked for (0 = ccxt's default)
    book_hold_s: float = 1.0  # a snapshot with no venue time waits this long for one
    timeout_ms: int = 10_000  # one REST request
    recv_window_ms: int = 5_000  # Binance: how late a signed request may arrive
    rate_limit_weight: float = 0.0  # request weight per window (0 = the exchange's published)
    rate_limit_window_s: float = 0.0  # that window (0 = the exchange's published)
    weight_headroom_pct: float = 10.0  # kept unused below that budget
    paper_latency_us: float = 20_000.0  # paper: our order's one-way latency to the simulated match
    paper_jitter_us: float = 5_000.0
    ccxt_options: dict[str, Any] = {}  # merged into ccxt's exchange options

    @property
    def kind(self) -> str:
        return type(self).__struct_config__.tag  # type: ignore[return-value]

    def __post_init__(self) -> None:
        need(
            bool(re.fullmatch(r"[A-Za-z0-9_-]{1,32}", self.name)),
            "name",
            "must be 1-32 letters, digits, _ or -",
        )
        self.check_account(self.kind)
        if self.kind == "ccxt":
            need(
                bool(self.exchange), "exchange", 'kind "ccxt" needs exchange = "<ccxt exchange id>"'
            )
            need(
                self.exchange in _ccxt_ids(), "exchange", f"ccxt has no exchange {self.exchange!r}"
            )
        else:
            need(
                not self.exchange,
                "exchange",
                f'only for kind "ccxt" (kind {self.kind!r} is its own)',
            )
        for k, sym in enumerate(self.symbols):
            need(
                bool(re.fullmatch(r"[A-Za-z0-9.\-]+/[A-Za-z0-9.\-]+(:\w+)?", sym)),
                f"symbols[{k}]",
                f"must be a ccxt symbol like 'BTC/USDT', not {sym!r}",
            )
        need(len(set(self.symbols)) == len(self.symbols), "symbols", "a symbol is listed twice")
        need(
            not self.rest_url or bool(re.fullmatch(r"https?://[^/\s]+/?", self.rest_url)),
            "rest_url",
            "must be http(s)://host[:port] (no path)",
        )
        need(
            not self.ws_url or bool(re.fullmatch(r"wss?://[^/\s]+/?", self.ws_url)),
            "ws_url",
            "must be ws(s)://host[:port] (no path)",
        )
        for key in ("rest_url", "ws_url"):
            host = plaintext_to_remote(getattr(self, key))
            need(
                host is None or self.allow_plaintext,
                key,
                f"plain text to {host} (not this host): use https:// / wss://, "
                "or write allow_plaintext = true to accept it",
            )
        need(
            self.external_orders in EXTERNAL_ORDERS,
            "external_orders",
            f"must be one of {', '.join(EXTERNAL_ORDERS)}",
        )
        for key in ("stale_after_s", "reconnect_min_s", "reconnect_max_s"):
            v = getattr(self, key)
            need(math.isfinite(v) and v > 0, key, "must be > 0 seconds")
        need(
            self.reconnect_min_s <= self.reconnect_max_s,
            "reconnect_min_s",
            "must be <= reconnect_max_s",
        )
        for key in ("book_stale_after_s", "trade_stale_after_s", "book_hold_s"):
            v = getattr(self, key)
            need(math.isfinite(v) and v >= 0, key, "must be >= 0 seconds (0 = off)")
        need(0 <= self.book_depth <= 5000, "book_depth", "must be within 0..5000 (0 = all)")
        need(0 <= self.snapshot_limit <= 5000, "snapshot_limit", "must be within 0..5000")
        need(1 <= self.timeout_ms <= 120_000, "timeout_ms", "must be within 1..120000")
        need(
            1 <= self.recv_window_ms <= 60_000,
            "recv_window_ms",
            "must be within 1..60000 (Binance's maximum)",
        )
        for key in ("rate_limit_weight", "rate_limit_window_s"):
            v = getattr(self, key)
            need(math.isfinite(v) and v >= 0, key, "must be >= 0 (0 = the published limit)")
        need(0 <= self.weight_headroom_pct < 100, "weight_headroom_pct", "must be in [0, 100)")
        for key in ("paper_latency_us", "paper_jitter_us"):
            v = getattr(self, key)
            need(math.isfinite(v) and v >= 0, key, "must be >= 0")

    def venue_settings(self) -> dict[str, Any]:
        """``engine.venues.registry.VenueConfig.settings`` (the paper latency in ns)."""
        out = msgspec.structs.asdict(self)
        out["latency_ns"] = int(self.paper_latency_us * 1000)
        out["jitter_ns"] = int(self.paper_jitter_us * 1000)
        out["live"] = False  # the run decides (three gates), not this key alone
        if not self.snapshot_limit:
            del out["snapshot_limit"]  # ccxt's own default for the exchange
        out["backoff_max_s"] = self.reconnect_max_s  # engine.venues.ccxt_exec's name for it
        # engine.venues.ccxt_guard's budget: the published limit (or ours), less the headroom
        ex = self.exchange if self.kind == "ccxt" else self.kind
        limit, window = DEFAULT_LIMITS.get(ex, (0.0, 0.0))
        weight, window = self.rate_limit_weight or limit, self.rate_limit_window_s or window
        if weight and window:  # else: the guard's own fallback for an exchange it does not know
            out["rate_limit_weight"] = weight * (1 - self.weight_headroom_pct / 100)
            out["rate_limit_window_s"] = window
        return out


class BinanceUsVenue(RealVenueKeys, tag="binanceus", **_STRICT):
    """``kind = "binanceus"``: Binance.US spot. ``symbols`` defaults to what ``gekko run
    --venue binanceus`` trades out of the box."""

    symbols: list[str] = msgspec.field(default_factory=lambda: ["BTC/USDT"])


class CoinbaseVenue(RealVenueKeys, tag="coinbase", **_STRICT):
    """``kind = "coinbase"``: Coinbase Advanced Trade. ``symbols`` defaults to what ``gekko run
    --venue coinbase`` trades out of the box."""

    symbols: list[str] = msgspec.field(default_factory=lambda: ["BTC/USD"])


class KrakenVenue(RealVenueKeys, tag="kraken", **_STRICT):
    """``kind = "kraken"``: Kraken spot. ``symbols`` defaults to what ``gekko run
    --venue kraken`` trades out of the box."""

    symbols: list[str] = msgspec.field(default_factory=lambda: ["BTC/USD"])
    snapshot_limit: int = 100  # Kraken's websocket book is 10 levels unless asked for more


class CcxtVenue(RealVenueKeys, tag="ccxt", **_STRICT):
    """``kind = "ccxt"``: any exchange ccxt supports, market data and paper only."""


class OandaVenue(RealVenueKeys, tag="oanda", **_STRICT):
    """``kind = "oanda"``: OANDA v20 (FX); docs/oanda.md. ``rest_url`` is required (the REST
    host of the account's environment, practice or live), ``stream_url`` the streaming host
    ("" = ``rest_url``); ``account_id`` the v20 account (or ``api_secret`` of its keys)."""

    symbols: list[str] = msgspec.field(default_factory=lambda: ["EUR/USD"])
    stream_url: str = ""  # OANDA's streaming host for the pricing and transaction streams
    account_id: str = ""  # the v20 account id ("101-001-1234567-001")

    def __post_init__(self) -> None:
        super().__post_init__()
        need(bool(self.rest_url), "rest_url", "OANDA needs its REST host (docs/oanda.md)")
        need(
            not self.stream_url or bool(re.fullmatch(r"https?://[^/\s]+/?", self.stream_url)),
            "stream_url",
            "must be http(s)://host[:port] (no path)",
        )
        host = plaintext_to_remote(self.stream_url)
        need(
            host is None or self.allow_plaintext,
            "stream_url",
            f"plain text to {host} (not this host): use https://, or allow_plaintext = true",
        )
        need(
            not self.account_id or bool(re.fullmatch(r"[A-Za-z0-9-]{1,64}", self.account_id)),
            "account_id",
            "must be a v20 account id (letters, digits and -)",
        )


class PolymarketVenue(RealVenueKeys, tag="polymarket", **_STRICT):
    """``kind = "polymarket"``: Polymarket's CLOB (binary outcome tokens; docs/polymarket.md).
    ``rest_url`` and ``ws_url`` must be set (no venue address is built in). Keys:
    ``api_secret`` = the wallet's private key (hex), ``api_key`` = the address holding the
    funds (the wallet's own for ``wallet_type`` 0); the CLOB API key is derived from them."""

    chain_id: int = 137  # the chain the venue's signatures are bound to (137 = Polygon)
    wallet_type: int = 0  # the order's signature type: 0 = the key's own wallet (EOA),
    # 1 = a Polymarket proxy wallet, 2 = a Gnosis safe (the funds at the keys' api_key address)
    market_ids: list[str] = []  # condition ids to list ([] = every market of the CLOB)
    ping_s: float = 10.0  # "PING" on the channels this often (the venue drops silent ones)
    rest_poll_s: float = 2.0  # live: open orders, trades and resolutions checked this often

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("rest_url", "ws_url"):
            need(bool(getattr(self, key)), key, "Polymarket needs the CLOB's (docs/polymarket.md)")
        need(self.wallet_type in (0, 1, 2), "wallet_type", "must be 0, 1 or 2")
        for key in ("ping_s", "rest_poll_s"):
            v = getattr(self, key)
            need(math.isfinite(v) and v > 0, key, "must be > 0 seconds")


class BetfairVenue(RealVenueKeys, tag="betfair", **_STRICT):
    """``kind = "betfair"``: the Betfair Exchange (back / lay on selections; docs/betfair.md).
    ``symbols`` are selections, "<marketId>/<selectionId>". Keys: ``api_key`` = the app key,
    ``api_secret`` = a session token, or the username when ``api_password`` is set (login)."""

    stream_url: str = ""  # the Exchange Stream API, "tls://host:port" ("" = Betfair's own)
    stream_ca_file: str = ""  # a PEM the stream's certificate is checked against ("" = system)
    market_ids: list[str] = []  # markets whose every selection is listed (besides `symbols`)
    catalogue_max: int = 100  # markets listed when neither market_ids nor symbols name one
    currency: str = "GBP"  # the account's currency: stakes, P&L and commission in it
    min_stake: float = 1.0  # the smallest stake the venue takes, in `currency`
    commission_pct: float = 5.0  # paper: the commission on a market's net winnings (%)
    persistence: str = "LAPSE"  # a GTC bet's persistence: LAPSE | PERSIST | MARKET_ON_CLOSE
    heartbeat_ms: int = 5000  # the stream's heartbeat (500-5000); stale_after_s must exceed it
    rest_poll_s: float = 5.0  # live: listCurrentOrders / account funds checked this often
    unknown_window_s: float = 10.0  # live: an unanswered placement not found by then: not placed

    def __post_init__(self) -> None:
        super().__post_init__()
        need(
            not self.stream_url or bool(re.fullmatch(r"tls://[^/:]+:\d{1,5}", self.stream_url)),
            "stream_url",
            'must be "tls://host:port"',
        )
        need(not self.ws_url, "ws_url", "betfair's stream is not a websocket: use stream_url")
        need(
            self.persistence in ("LAPSE", "PERSIST", "MARKET_ON_CLOSE"),
            "persistence",
            "must be LAPSE, PERSIST or MARKET_ON_CLOSE",
        )
        need(500 <= self.heartbeat_ms <= 5000, "heartbeat_ms", "must be 500-5000 (Betfair's)")
        need(
            self.stale_after_s * 1000 > self.heartbeat_ms,
            "stale_after_s",
            "must be longer than heartbeat_ms",
        )
        need(bool(re.fullmatch(r"[A-Z]{3}", self.currency)), "currency", "must be like GBP")
        for key in ("min_stake", "rest_poll_s", "unknown_window_s"):
            v = getattr(self, key)
            need(math.isfinite(v) and v > 0, key, "must be > 0")
        need(0 <= self.commission_pct < 100, "commission_pct", "must be in [0, 100)")
        for k, m in enumerate(self.market_ids):
            need(bool(re.fullmatch(r"\d+\.\d+", m)), f"market_ids[{k}]", "must be like 1.2345")


class BinanceUsdmVenue(RealVenueKeys, tag="binanceusdm", **_STRICT):
    """``kind = "binanceusdm"``: Binance USD-M perpetual futures through ccxt (linear
    perpetuals, one-way positions, cross margin: docs/perpetuals.md)."""

    symbols: list[str] = msgspec.field(default_factory=lambda: ["BTC/USDT:USDT"])
    perp_poll_s: float = 5.0  # live: positions, account and funding income over REST this often
    funding_poll_s: float = 60.0  # live: funding income looked at this often besides the
    # stream's word that it was paid (the income call weighs 30)
    funding_lookback_s: float = 0.0  # live: funding paid this long before the start is reported
    margin_report_pct: float = 1.0  # live: a MarginStatus when equity or margin moves this much
    # paper: the simulated account's starting balance per currency ({} = [portfolio] cash, a
    # USD amount also counted as USDT / USDC)
    paper_balance: dict[str, float] = {}

    def __post_init__(self) -> None:
        super().__post_init__()
        need(self.perp_poll_s > 0, "perp_poll_s", "must be > 0")
        need(self.funding_poll_s > 0, "funding_poll_s", "must be > 0")
        need(self.funding_lookback_s >= 0, "funding_lookback_s", "must be >= 0")
        need(self.margin_report_pct >= 0, "margin_report_pct", "must be >= 0")
        need(all(v >= 0 for v in self.paper_balance.values()), "paper_balance", "must be >= 0")


class KrakenFuturesVenue(BinanceUsdmVenue, tag="krakenfutures", **_STRICT):
    """``kind = "krakenfutures"``: Kraken Futures' linear (flex, USD-settled) perpetuals through
    ccxt; funding hourly; the live client polls REST (docs/perpetuals.md). The keys are
    ``binanceusdm``'s (``perp_poll_s`` also paces the account log: funding, liquidations)."""

    symbols: list[str] = msgspec.field(default_factory=lambda: ["BTC/USD:USD"])


REAL_VENUE_STRUCTS: dict[str, type[RealVenueKeys]] = {
    "binanceus": BinanceUsVenue,
    "coinbase": CoinbaseVenue,
    "kraken": KrakenVenue,
    "ccxt": CcxtVenue,
    "oanda": OandaVenue,
    "polymarket": PolymarketVenue,
    "betfair": BetfairVenue,
    "binanceusdm": BinanceUsdmVenue,
    "krakenfutures": KrakenFuturesVenue,
}


def instrument_names(
    venues: list[RealVenueKeys], configured: Mapping[str, str]
) -> dict[str, dict[str, str]]:
    """venue -> each ``symbols`` entry it creates (one no ``[[instruments]]`` of that venue
    covers) -> the instrument's name: the symbol itself, or "<symbol>@<venue>" where another real
    venue creates it too or an ``[[instruments]]`` table (``configured``: name -> venue) is named
    so. Instrument names are unique in the engine; the venue is asked by its own symbol."""
    own = {
        v.name: {n.partition("@")[0] for n, at in configured.items() if at == v.name}
        for v in venues
    }
    created = {v.name: [s for s in v.symbols if s not in own[v.name]] for v in venues}
    count: dict[str, int] = {}
    for syms in created.values():
        for sym in syms:
            count[sym] = count.get(sym, 0) + 1
    return {
        venue: {s: f"{s}@{venue}" if count[s] > 1 or s in configured else s for s in syms}
        for venue, syms in created.items()
    }


def _ccxt_ids() -> set[str]:
    import ccxt.pro

    return set(ccxt.pro.exchanges)


class ResolvedVenues(msgspec.Struct, **_STRICT):
    """What `gekko run`'s pre-flight decided about the real venues (ops/venue_run.py); not a
    config.toml section: the workers get it from the supervisor with the run's instruments."""

    live: list[str] = []  # venues trading live: all three gates passed
    markets: dict[str, dict[str, VenueMarket]] = {}  # venue -> symbol -> its market


def key_env_names(venue: str) -> tuple[str, str, str]:
    """The environment variables that hold ``venue``'s API key, secret and password."""
    stem = re.sub(r"[^A-Za-z0-9]", "_", venue).upper()
    return f"GEKKO_{stem}_API_KEY", f"GEKKO_{stem}_API_SECRET", f"GEKKO_{stem}_API_PASSWORD"


def looks_like_key(value: Any) -> bool:
    """A long token of letters and digits with no path or URL shape: what an API key or secret
    looks like (base64, hex, a Binance key), not a file name or an address."""
    return (
        isinstance(value, str)
        and len(value) >= 24
        and bool(_KEY_VALUE.fullmatch(value))
        and any(c.isdigit() for c in value)
        and any(c.isalpha() for c in value)
    )


_KEY_VALUE = re.compile(r"[A-Za-z0-9+=_\-]+")
_PLAIN_KEYS = (
    "name",
    "kind",
    "exchange",
    "external_orders",
    "rest_url",
    "ws_url",
    "symbols",
    "keystore_entry",
)


def secret_keys_in(entry: dict[str, Any], where: str) -> list[str]:
    """Keys of a raw ``[[venues]]`` entry (and its ``ccxt_options``) named like credentials, or
    holding a value that looks like one (``looks_like_key``)."""
    out = []
    for k, v in entry.items():
        if not isinstance(k, str) or k in _PLAIN_KEYS:
            continue
        named = k != "credentials_file" and _SECRET_KEY.search(k)
        if named or looks_like_key(v):
            out.append(f"{where}.{k}")
    opts = entry.get("ccxt_options")
    if isinstance(opts, dict):
        out += secret_keys_in(opts, f"{where}.ccxt_options")
    return out


def add_venue_entry(raw: dict[str, Any], venue: str) -> None:
    """`--venue <kind>` with no entry of that name or kind: one with the kind's defaults."""
    venues = raw.setdefault("venues", [])
    if not isinstance(venues, list) or venue not in REAL_VENUE_STRUCTS or venue == "ccxt":
        return
    if any(isinstance(v, dict) and venue in (v.get("name"), v.get("kind")) for v in venues):
        return
    venues.append({"name": venue, "kind": venue})
